"""Teacher-based strategies: generative replay, generative distillation, LwF and Gaussian distillation.

They differ along exactly two axes, which are the two methods a subclass provides:

    replay_inputs(batch, x_t, t)   where the extra inputs come from (None: the current noisy batch itself)
    replay_target(x_r, t_r, noise) what the student is trained to match on them

Everything else is shared: the frozen teacher taken at the start of every task from the second on, one student
forward over the concatenated real + replay batch, and the study's loss weighting for task k (0-based)

    (1 / (k + 1)) * data_loss + (1 - 1 / (k + 1)) * lambda * replay_loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .strategy import PURPOSE_DATA_NOISE, PURPOSE_REPLAY_NOISE, PURPOSE_REPLAY_SAMPLES, Batch, LossTerms, Option, Strategy

LAMBDA_HELP = "weight of the replay loss relative to the data loss"
TEACHER_STEPS = Option(2, "DDIM steps of the teacher's replay samples (study: 2 on Fashion-MNIST, 10 on CIFAR-10)",
                       per_stream={"cifar10-5": 10}, minimum=1)
TEACHER_ETA = Option(0.0, "DDIM eta of the teacher's replay samples (0 = deterministic)", minimum=0.0)


def loss_weights(k: int, lam: float) -> tuple[float, float]:
    """(data weight, replay weight) for task k (0-based)."""
    w = 1.0 / (k + 1)
    return w, (1.0 - w) * lam


class TeacherStrategy(Strategy):
    """Base of the strategies that learn from a frozen copy of the model as it was after the previous task."""

    def __init__(self, core, options=None):
        super().__init__(core, options)
        self.teacher: torch.nn.Module | None = None
        self._replay_queue: dict[int, torch.Tensor] = {}  # iteration -> its teacher samples drawn ahead

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
        """This iteration's B teacher samples (n-step DDIM), image i determined by the iteration's seed i.

        With the speed option replay_ahead = A they are drawn in one teacher batch with those of the next A - 1
        iterations (never past the task's end) and kept until their iteration comes; a batch smaller than the one
        drawn for (the last of an epoch) takes the first images, which are exactly its own seeds' samples.
        """
        n = batch.x0.shape[0]
        queued = self._replay_queue.pop(batch.iteration, None)
        if queued is not None and len(queued) >= n:
            return queued[:n]
        self._replay_queue.clear()
        end = batch.iteration + self.core.speed.replay_ahead
        if batch.iterations is not None:
            end = max(batch.iteration + 1, min(end, batch.iterations))
        iterations = range(batch.iteration, end)
        seeds = [s for i in iterations for s in batch.sample_seeds(n, PURPOSE_REPLAY_SAMPLES, iteration=i)]
        with self.core.meter.phase("replay_generation"):
            images = self.core.generate(self.teacher, seeds, self.option_values["teacher_steps"], self.option_values["teacher_eta"])
        chunks = images.split(n)
        self._replay_queue.update(zip(iterations[1:], chunks[1:]))
        return chunks[0]

    def renoised_teacher_samples(self, batch: Batch):
        """B fresh teacher samples (n-step DDIM), noised again with fresh noise at fresh t'."""
        return self.core.training_targets(self.teacher_samples(batch), batch.generator(PURPOSE_REPLAY_NOISE))

    # --- protocol ------------------------------------------------------------------------------------------------
    def begin_task(self, k: int) -> None:
        super().begin_task(k)
        self.teacher = None  # release the previous teacher before copying the new one
        self._replay_queue.clear()
        if k > 0:
            self.teacher = self.core.make_teacher()

    def batch_loss(self, batch: Batch) -> LossTerms:
        model = self.core.model
        x_t, t, noise = self.core.training_targets(batch.x0, batch.generator(PURPOSE_DATA_NOISE))
        if self.teacher is None:
            data_loss = F.mse_loss(model(x_t, t), noise)
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
        data_loss = F.mse_loss(pred_data, noise)
        replay_loss = F.mse_loss(pred_replay, target)
        w_data, w_replay = loss_weights(self.task, self.option_values["lambda"])
        return LossTerms(total=w_data * data_loss + w_replay * replay_loss, data=data_loss, replay=replay_loss)

    def end_task(self, k: int) -> None:
        self.teacher = None
        self._replay_queue.clear()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher = None
        self._replay_queue.clear()  # samples drawn ahead are not saved: their seeds draw them again
        if "teacher" in state:
            self.teacher = self.core.make_teacher()
            self.teacher.load_state_dict(state["teacher"])
