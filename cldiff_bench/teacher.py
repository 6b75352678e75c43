"""Teacher-based strategies: generative replay, generative distillation, LwF and Gaussian distillation.

They differ along exactly two axes, which are the two methods a subclass provides:

    replay_inputs(batch, x_t, t)   where the extra inputs come from (None: the current noisy batch itself)
    replay_target(x_r, t_r, noise) what the student is trained to match on them

Everything else is shared: the frozen teacher taken at the start of every task from the second on, one student
forward over the concatenated real + replay batch, and the study's loss weighting for task k (0-based)

    (1 / (k + 1)) * data_loss + (1 - 1 / (k + 1)) * lambda * replay_loss.

Teacher accelerators (option teacher_accel, gr and gd) distil the frozen teacher before replay: teacher_accel.py.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .strategy import PURPOSE_DATA_NOISE, PURPOSE_REPLAY_NOISE, PURPOSE_REPLAY_SAMPLES, Batch, LossTerms, Option, Strategy
# The accelerator's names are imported from here too (gr's and gd's options, plugins', the profile table).
from .teacher_accel import (  # noqa: F401
    PURPOSE_TEACHER_ACCEL, TEACHER_ACCEL, TEACHER_ACCEL_CONVERT, TEACHER_ACCEL_FROM, TEACHER_ACCEL_LEARNING_RATE,
    TEACHER_ACCEL_OPTIONS, TEACHER_ACCEL_UPDATES, accelerator_method, accelerator_options, check_accelerator_settings,
    distil_teacher, restored_distilled_teacher)

LAMBDA_HELP = "weight of the replay loss relative to the data loss"
TEACHER_STEPS = Option(2, "DDIM steps of the teacher's replay samples (study: 2 on Fashion-MNIST, 10 on CIFAR-10)",
                       per_stream={"cifar10-5": 10}, minimum=1)
TEACHER_ETA = Option(0.0, "DDIM eta of the teacher's replay samples (0 = deterministic)", minimum=0.0)


def loss_weights(k: int, lam: float) -> tuple[float, float]:
    """(data weight, replay weight) for task k (0-based)."""
    w = 1.0 / (k + 1)
    return w, (1.0 - w) * lam


class ReplayQueue:
    """Teacher samples drawn ahead of their iterations (speed option replay_ahead), kept until their iteration comes."""

    def __init__(self):
        self._samples: dict[int, torch.Tensor] = {}  # iteration -> its teacher samples

    def __len__(self) -> int:
        return len(self._samples)

    def clear(self) -> None:
        self._samples.clear()

    def take(self, batch: Batch, ahead: int, draw: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """The teacher samples of `batch`'s iteration: queued, else `draw`n from their seeds in one teacher batch
        with those of the next `ahead` - 1 iterations (never past the task's end), which are queued. A batch smaller
        than the one drawn for (the last of an epoch) takes the first images, which are exactly its own seeds'."""
        n = batch.x0.shape[0]
        queued = self._samples.pop(batch.iteration, None)
        if queued is not None and len(queued) >= n:
            return queued[:n]
        self._samples.clear()
        end = batch.iteration + ahead
        if batch.iterations is not None:
            end = max(batch.iteration + 1, min(end, batch.iterations))
        iterations = range(batch.iteration, end)
        seeds = [s for i in iterations for s in batch.sample_seeds(n, PURPOSE_REPLAY_SAMPLES, iteration=i)]
        chunks = draw(seeds).split(n)
        self._samples.update(zip(iterations[1:], chunks[1:]))
        return chunks[0]


class TeacherStrategy(Strategy):
    """Base of the strategies that learn from a frozen copy of the model as it was after the previous task."""
    # What one iteration from task 1 on costs beside the real batch (iteration_images): replayed inputs the student
    # also trains on, the teacher's samples drawn for them, the teacher's prediction as their target.
    extra_inputs: bool = True
    draws_teacher_samples: bool = False
    teacher_target: bool = True

    @classmethod
    def iteration_images(cls, options, k, batch_size):
        if k == 0:
            return batch_size, 0
        teacher = batch_size * ((options["teacher_steps"] if cls.draws_teacher_samples else 0) + cls.teacher_target)
        return batch_size * (1 + cls.extra_inputs), teacher

    def __init__(self, core, options=None):
        super().__init__(core, options)
        self.teacher: torch.nn.Module | None = None
        self._replay_queue = ReplayQueue()
        self.replay_x0: torch.Tensor | None = None  # this iteration's replay samples (renoised_teacher_samples)
        # The distilled copy replay samples are drawn from (teacher_accel), made before the task's first replay.
        self.replay_teacher: torch.nn.Module | None = None
        self.teacher_accel = self.option("teacher_accel") if "teacher_accel" in self.options else "none"
        if self.teacher_accel != "none":
            check_accelerator_settings(self)

    @classmethod
    def registered_options(cls, options, registry):
        return accelerator_options(super().registered_options(options, registry), registry)

    # --- the two axes --------------------------------------------------------------------------------------------
    def replay_inputs(self, batch: Batch, x_t: torch.Tensor, t: torch.Tensor):
        """(x_r, t_r, noise_r) fed to the student beside the real batch, or None to reuse the real batch."""
        raise NotImplementedError

    def replay_target(self, x_r: torch.Tensor, t_r: torch.Tensor, noise_r: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    # --- shared building blocks ----------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with self.core.autocast():  # the runner's already; also when a plugin calls this outside a training step
            return self.teacher(x, t)

    def teacher_samples(self, batch: Batch) -> torch.Tensor:
        """This iteration's B teacher samples (n-step DDIM), image i determined by the iteration's seed i; drawn
        ahead in one teacher batch with those of the next iterations under the speed option replay_ahead."""
        def draw(seeds: list[int]) -> torch.Tensor:
            source = self.accelerated_teacher(batch) if self.teacher_accel != "none" else self.teacher
            with self.core.meter.phase("replay_generation"):
                return self.core.generate(source, seeds, self.option_values["teacher_steps"],
                                          self.option_values["teacher_eta"])

        return self._replay_queue.take(batch, self.core.speed.replay_ahead, draw)

    def accelerated_teacher(self, batch: Batch) -> torch.nn.Module:
        """The teacher distilled down to teacher_steps (made at the task's first replay, then kept)."""
        if self.replay_teacher is None:
            self.replay_teacher = distil_teacher(self, batch)
        return self.replay_teacher

    def renoised_teacher_samples(self, batch: Batch):
        """B fresh teacher samples (n-step DDIM), noised again with fresh noise at fresh t'; the samples are kept
        as `replay_x0` for a target that needs them (a v or x0 student's)."""
        self.replay_x0 = self.teacher_samples(batch)
        return self.core.training_targets(self.replay_x0, batch.generator(PURPOSE_REPLAY_NOISE))

    # --- protocol ------------------------------------------------------------------------------------------------
    def begin_task(self, k: int) -> None:
        super().begin_task(k)
        self.teacher = self.replay_teacher = None  # release the previous teachers before copying the new one
        self._replay_queue.clear()
        if k > 0:
            self.teacher = self.core.make_teacher()

    def batch_loss(self, batch: Batch) -> LossTerms:
        model = self.core.model
        x_t, t, noise = self.core.training_targets(batch.x0, batch.generator(PURPOSE_DATA_NOISE))
        data_target = self.regression_target(batch.x0, noise, t)
        if self.teacher is None:
            data_loss = F.mse_loss(model(x_t, t), data_target)
            return LossTerms(total=data_loss, data=data_loss)
        extra = self.replay_inputs(batch, x_t, t)
        if extra is None:
            pred = model(x_t, t)
            pred_data, pred_replay = pred, pred
            target = self.replay_target(x_t, t, noise)
        else:
            x_r, t_r, noise_r = extra
            pred = model(torch.cat([x_t, x_r]), torch.cat([t, t_r]))
            pred_data, pred_replay = pred[: len(x_t)], pred[len(x_t):]
            target = self.replay_target(x_r, t_r, noise_r)
        data_loss = F.mse_loss(pred_data, data_target)
        replay_loss = F.mse_loss(pred_replay, target)
        w_data, w_replay = loss_weights(self.task, self.option_values["lambda"])
        return LossTerms(total=w_data * data_loss + w_replay * replay_loss, data=data_loss, replay=replay_loss)

    def end_task(self, k: int) -> None:
        self.teacher = self.replay_teacher = None
        self._replay_queue.clear()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        if self.replay_teacher is not None:
            state["replay_teacher"] = self.replay_teacher.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher = None
        self._replay_queue.clear()  # samples drawn ahead are not saved: their seeds draw them again
        if "teacher" in state:
            self.teacher = self.core.make_teacher()
            self.teacher.load_state_dict(state["teacher"])
        self.replay_teacher = None
        if "replay_teacher" in state:
            self.replay_teacher = restored_distilled_teacher(self.core, state["replay_teacher"])
