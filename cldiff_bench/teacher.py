"""Teacher-based strategies: generative replay, generative distillation, LwF and Gaussian distillation.

They differ along exactly two axes, which are the two methods a subclass provides:

    replay_inputs(batch, x_t, t)   where the extra inputs come from (None: the current noisy batch itself)
    replay_target(x_r, t_r, noise) what the student is trained to match on them

Everything else is shared: the frozen teacher taken at the start of every task from the second on, one student
forward over the concatenated real + replay batch, and the study's loss weighting for task k (0-based)

    (1 / (k + 1)) * data_loss + (1 - 1 / (k + 1)) * lambda * replay_loss.

Teacher accelerators (option teacher_accel, gr and gd): before the first replay of a task, the frozen teacher is
distilled down to teacher_steps by a data-free distillation method of the run's registry (pd, dsd or a plugin's;
cldiff_bench/distill), and the replay samples are drawn from the distilled copy. Targets that ask the teacher's
prediction (gd) still ask the frozen teacher itself: a distilled model's output at a timestep is a jump to the next
of its few steps, not the denoiser the student learns. The distillation is data-free (no earlier task's images)
and its cost is the run's: the phase teacher_distillation and teacher NFEs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .errors import UserError, unknown_name
from .strategy import PURPOSE_DATA_NOISE, PURPOSE_REPLAY_NOISE, PURPOSE_REPLAY_SAMPLES, Batch, LossTerms, Option, Strategy

if TYPE_CHECKING:
    from .distill import DistillMethod
    from .registry import Registry

LAMBDA_HELP = "weight of the replay loss relative to the data loss"
TEACHER_STEPS = Option(2, "DDIM steps of the teacher's replay samples (study: 2 on Fashion-MNIST, 10 on CIFAR-10)",
                       per_stream={"cifar10-5": 10}, minimum=1)
TEACHER_ETA = Option(0.0, "DDIM eta of the teacher's replay samples (0 = deterministic)", minimum=0.0)
# The accelerator's options, recorded only when one is used (so runs without it keep their configurations).
# Its values are checked against the run's registry (`accelerator_method`), not a fixed list: a plugin's method
# accelerates a teacher as the built-in ones do.
TEACHER_ACCEL = Option("none", "distil the teacher down to teacher_steps before replay: none, or a registered "
                       "data-free distillation method (pd: progressive distillation, dsd: direct self-distillation, "
                       "a plugin's; `cldiff-bench list`)", omit_default=True, names_variant=True)
# One halving round from twice the teacher's steps, at 600 updates and learning rate 1e-3: measured on fmnist-5's
# task-0 model (seed 0), 2-step FID 26 against plain DDIM's 42, in 132 s on one thread. Longer chains lose it: from
# 16 down to 2 the student's FID was 42-44 at every step count, the error made where the epsilon teacher's first
# steps (alpha_bar = 0 at t = 999) are turned into a v student's.
TEACHER_ACCEL_FROM = Option(4, "teacher_accel: the teacher's steps its first round starts from (teacher_steps "
                            "times a power of two; 20 on CIFAR-10, one round to its 10)", per_stream={"cifar10-5": 20},
                            minimum=1, omit_default=True)
TEACHER_ACCEL_UPDATES = Option(600, "teacher_accel: updates per round (batch: the run's batch size)", minimum=1,
                               omit_default=True)
TEACHER_ACCEL_CONVERT = Option(0, "teacher_accel: updates of a conversion round of its own, turning the epsilon "
                               "teacher into a v model before the halving (0: within the first round, as pd does)",
                               minimum=0, omit_default=True)
# 1e-3, not distill's 1e-4 (Salimans & Ho's, for rounds of tens of thousands of updates): rounds of a few hundred
# updates at 1e-4 leave the student far from its teacher (fmnist-5 task 0: FID 81 at 8 steps against DDIM's 18).
TEACHER_ACCEL_LEARNING_RATE = Option(1e-3, "teacher_accel: Adam's learning rate of every round", minimum=0.0,
                                     omit_default=True)
TEACHER_ACCEL_OPTIONS = {"teacher_accel": TEACHER_ACCEL, "teacher_accel_from": TEACHER_ACCEL_FROM,
                         "teacher_accel_updates": TEACHER_ACCEL_UPDATES,
                         "teacher_accel_convert_updates": TEACHER_ACCEL_CONVERT,
                         "teacher_accel_learning_rate": TEACHER_ACCEL_LEARNING_RATE}
PURPOSE_TEACHER_ACCEL = 4  # keys the accelerator's noise with (seed, task); after strategy.py's replay purposes


def accelerator_method(registry: Registry | None, name: str) -> type[DistillMethod]:
    """The distillation method `name` (option teacher_accel) among those `registry` holds that need no images: a
    teacher strategy keeps none of an earlier task's."""
    if registry is None:
        raise ValueError("this strategy was built without the run's registry (see strategy.build_strategy)")
    methods = registry.entries("distiller")
    data_free = sorted(n for n, entry in methods.items() if not entry.obj.needs_data)
    if name in methods and name not in data_free:
        raise UserError(f"option teacher_accel: the distillation method {name!r} learns from images, which a teacher "
                        f"strategy has none of; data-free ones: none, {', '.join(data_free)}")
    if name not in data_free:
        raise unknown_name("teacher accelerator (option teacher_accel)", name, ["none", *data_free])
    return methods[name].obj


def loss_weights(k: int, lam: float) -> tuple[float, float]:
    """(data weight, replay weight) for task k (0-based)."""
    w = 1.0 / (k + 1)
    return w, (1.0 - w) * lam


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
        self._replay_queue: dict[int, torch.Tensor] = {}  # iteration -> its teacher samples drawn ahead
        self.replay_x0: torch.Tensor | None = None  # this iteration's replay samples (renoised_teacher_samples)
        # The distilled copy replay samples are drawn from (teacher_accel), made before the task's first replay.
        self.replay_teacher: torch.nn.Module | None = None
        self.teacher_accel = self.option("teacher_accel") if "teacher_accel" in self.options else "none"
        if self.teacher_accel != "none":
            from .distill import halving_rounds
            try:
                halving_rounds(self.option("teacher_accel_from"), self.option("teacher_steps"))
            except UserError as exc:
                raise UserError(f"teacher_accel {self.teacher_accel}: {exc} (options teacher_accel_from and "
                                f"teacher_steps)") from None
            if self.option("teacher_eta") != 0:
                raise UserError("teacher_accel distils deterministic DDIM steps: teacher_eta must be 0")
            if not self.option("teacher_accel_learning_rate") > 0:
                raise UserError("option teacher_accel_learning_rate must be positive")

    @classmethod
    def check_registered(cls, options, registry):
        super().check_registered(options, registry)
        if options.get("teacher_accel", "none") != "none":
            accelerator_method(registry, options["teacher_accel"])

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
        source = self.accelerated_teacher(batch) if self.teacher_accel != "none" else self.teacher
        with self.core.meter.phase("replay_generation"):
            images = self.core.generate(source, seeds, self.option_values["teacher_steps"], self.option_values["teacher_eta"])
        chunks = images.split(n)
        self._replay_queue.update(zip(iterations[1:], chunks[1:]))
        return chunks[0]

    def accelerated_teacher(self, batch: Batch) -> torch.nn.Module:
        """The teacher distilled down to teacher_steps (made at the task's first replay, then kept)."""
        if self.replay_teacher is None:
            from .distill import DistillOptions, accelerate_teacher
            options = DistillOptions(method=self.teacher_accel, target_steps=self.option("teacher_steps"),
                                     from_steps=self.option("teacher_accel_from"),
                                     updates=self.option("teacher_accel_updates"), batch_size=len(batch.x0),
                                     learning_rate=self.option("teacher_accel_learning_rate"),
                                     convert_updates=self.option("teacher_accel_convert_updates") or None)
            state = {k: v.float() for k, v in self.teacher.state_dict().items()}
            self.replay_teacher, record = accelerate_teacher(
                self.core, state, self.teacher.config, accelerator_method(self.registry, self.teacher_accel), options,
                keys=(batch.seed, PURPOSE_TEACHER_ACCEL, self.task))
            tqdm.write(f"task {self.task}: teacher distilled with {self.teacher_accel}, "
                       + ", ".join(f"{r['teacher_steps']}->{r['student_steps']} steps (loss {r['mean_loss']:.4g})"
                                   for r in record["rounds"]))
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
            from .distill.objective import student_config
            self.replay_teacher = self.core.frozen_copy(state["replay_teacher"], role="teacher",
                                                        config=student_config(self.core.config))
