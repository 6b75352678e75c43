"""The accuracy "solver": a small classifier trained along the stream, the study's downstream-use probe.

With generative replay the solver learns each new task from its real data while a frozen copy of itself (taken
when the task starts) labels images from the previous diffusion model with soft targets; so its accuracy on all
seen classes measures how useful the generated replay is, not only how it looks.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..diffusion.seeding import derive_seed, derive_seeds, generator, keyed_global_rng
from ..errors import unknown_name
from ..streams.base import Stream, to_uint8, to_uint8_truncated
from .classifier import accuracy, classifier_input, predict_logits
from .networks import build_network

SOLVER_MODES = ("replay", "none", "joint")
KD_DIRECTIONS = ("standard", "original-reversed")
# "simple-cnn" is the study's solver network; "small-cnn" a BatchNorm CNN that learns faster from the few images a
# CPU profile gives it.
SOLVER_ARCHS = ("small-cnn", "simple-cnn")
# KD is multiplied by T^2 (Hinton et al.), so its gradient scale does not shrink as the temperature grows and the
# 1/(k+1) weighting against the cross-entropy means the same at any temperature.
KD_SCALE_T2 = True

# How generated images become uint8 for the metrics (EvalSettings.generated_to_uint8).
UINT8_CONVERSIONS = {"round": to_uint8, "truncate": to_uint8_truncated}
_PURPOSE_INIT = 0xE201
_PURPOSE_SHUFFLE = 0xE202
_PURPOSE_REPLAY = 0xE203
_PURPOSE_DROPOUT = 0xE204
_PURPOSE_FLIP = 0xE205


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            direction: str = "standard", scale_t2: bool = KD_SCALE_T2) -> torch.Tensor:
    """Batch mean of the distillation loss between temperature-softened distributions.

    standard:           -sum_c p_teacher(c) log p_student(c)   (cross-entropy to the teacher's soft labels)
    original-reversed:  -sum_c p_student(c) log p_teacher(c)   (the study's original code)
    times T^2 when `scale_t2`.
    """
    if direction not in KD_DIRECTIONS:
        raise unknown_name("KD direction", direction, KD_DIRECTIONS)
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
    if direction == "standard":
        per_sample = -(log_p_teacher.exp() * log_p_student).sum(1)
    else:
        per_sample = -(log_p_student.exp() * log_p_teacher).sum(1)
    loss = per_sample.mean()
    return loss * (t * t) if scale_t2 else loss


class Solver:
    """The replay-trained classifier; one per run, carried across tasks (and through `state_dict`)."""

    def __init__(self, num_classes: int, seed: int, device: torch.device, settings, in_channels: int = 3):
        self.seed = int(seed)
        self.device = torch.device(device)
        self.settings = settings
        self.model = build_network(settings.solver_arch, num_classes, derive_seed(self.seed, _PURPOSE_INIT),
                                   in_channels=in_channels).to(self.device)
        self.tasks_trained = 0

    def train_task(self, stream: Stream, k: int, mode: str,
                   generate_previous: Callable[[list[int]], torch.Tensor] | None,
                   meter=None, progress: bool = True) -> dict:
        if mode not in SOLVER_MODES:
            raise unknown_name("solver mode", mode, SOLVER_MODES)
        if k != self.tasks_trained:
            raise ValueError(f"the solver has been trained on {self.tasks_trained} task(s); cannot train task {k} "
                             f"(tasks must come in order, each once)")
        s = self.settings
        data = stream.train_union(k) if mode == "joint" else stream.tasks[k].train
        replay = mode == "replay" and k >= 1
        if replay and generate_previous is None:
            raise ValueError("solver mode 'replay' needs generate_previous from task 1 on")
        teacher = copy.deepcopy(self.model).eval().requires_grad_(False) if replay else None
        bs = int(s.solver_batch_size)
        # CPU profiles cap the images per epoch: replay generation (one sample per image) dominates their cost.
        n = min(len(data), s.solver_max_images) if s.solver_max_images else len(data)
        # A fresh optimiser per task: what the original does, and resuming then needs only the weights.
        opt = torch.optim.Adam(self.model.parameters(), lr=s.solver_lr)
        w_current = 1.0 / (k + 1)
        steps = int(s.solver_epochs) * math.ceil(n / bs)
        losses = []
        # The study's SimpleCNN has dropout: its draws are keyed too, so a resumed run trains the same solver.
        with tqdm(total=steps, desc=f"solver task {k}", unit="batch", disable=not progress, leave=False) as bar, \
                keyed_global_rng(self.device, self.seed, k, _PURPOSE_DROPOUT):
            for epoch in range(int(s.solver_epochs)):
                order = torch.randperm(len(data), generator=generator(self.seed, k, _PURPOSE_SHUFFLE, epoch))[:n]
                # The study's solver learns from the generator's randomly flipped experience (CIFAR-10, paper
                # profile): which images are mirrored is keyed by (seed, task, epoch), so a resumed run agrees.
                mirrored = (torch.rand(n, generator=generator(self.seed, k, _PURPOSE_FLIP, epoch)) < 0.5
                            if s.solver_flip else None)
                if replay and (epoch == 0 or not s.solver_replay_once):
                    # One replay image per real image, generated for the whole epoch up front (each used once).
                    seeds = derive_seeds(n, self.seed, k, _PURPOSE_REPLAY, epoch)
                    replay_u8 = generate_images(generate_previous, seeds, int(s.batch_size), stream.image_shape,
                                                progress, f"solver replay task {k}")
                    teacher_logits = predict_logits(teacher, replay_u8, int(s.batch_size), self.device)
                self.model.train()
                for start in range(0, n, bs):
                    idx = order[start:start + bs]
                    images = data.images[idx]
                    if mirrored is not None:
                        flip = mirrored[start:start + len(idx)]
                        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
                    x = classifier_input(images, self.device)
                    y = data.labels[idx].to(self.device)
                    if replay:
                        x = torch.cat([x, classifier_input(replay_u8[start:start + len(idx)], self.device)])
                    logits = self.model(x)
                    loss = F.cross_entropy(logits[:len(idx)], y)
                    if replay:
                        kd = kd_loss(logits[len(idx):], teacher_logits[start:start + len(idx)].to(self.device),
                                     s.kd_temperature, s.kd_direction)
                        loss = w_current * loss + (1.0 - w_current) * kd
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.item()))
                    bar.update(1)
        self.model.eval()
        self.tasks_trained = k + 1
        return {"solver_steps": steps, "solver_final_loss": losses[-1] if losses else float("nan"),
                "solver_replay_images": (n if s.solver_replay_once else n * int(s.solver_epochs)) if replay else 0}

    def accuracy(self, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
        return accuracy(self.model, images_u8, labels, batch_size, self.device)

    def state_dict(self) -> dict:
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "tasks_trained": self.tasks_trained}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.tasks_trained = int(state["tasks_trained"])


def generate_images(generate: Callable[[list[int]], torch.Tensor], seeds: list[int], batch_size: int,
                    image_shape, progress: bool = False, desc: str = "generating",
                    convert: Callable[[torch.Tensor], torch.Tensor] = to_uint8) -> torch.Tensor:
    """Call `generate` on `seeds` in batches; returns uint8 images on the CPU (rounded by `to_uint8` unless
    `convert` says otherwise).

    Images are counted where they are drawn (the core's `generate`), not here, so each is counted once."""
    out = []
    for start in tqdm(range(0, len(seeds), batch_size), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        chunk = seeds[start:start + batch_size]
        with torch.no_grad():
            x = generate(chunk)
        if tuple(x.shape) != (len(chunk), *image_shape):
            raise ValueError(f"generate returned shape {tuple(x.shape)}, expected {(len(chunk), *image_shape)}")
        out.append(convert(x.detach()).cpu())
    return torch.cat(out) if out else torch.empty((0, *image_shape), dtype=torch.uint8)
