"""Compute cost, counted where it happens: network evaluations, images generated, wall time by phase, memory.

Network function evaluations (NFEs) are counted in images: one image through the U-Net once is one NFE, so a
forward over a batch of 2B images is 2B student forwards. On a GPU a phase is timed with CUDA events, read when the
times are asked for: timing it by synchronising at every phase boundary would stall the host several times per
training iteration. On a CPU it is wall time.
"""
from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections import Counter

import torch
from torch import nn

# teacher_distillation: a teacher strategy's teacher accelerator (option teacher_accel) and `cldiff-bench distill`.
PHASES = ("train", "replay_generation", "evaluation", "teacher_distillation")
TRAINING_COUNTERS = ("student_forward", "student_backward", "teacher_forward", "images_generated")
# Work done while evaluating is kept apart, so training NFEs compare across evaluation settings.
COUNTERS = TRAINING_COUNTERS + ("evaluation_forward", "evaluation_images_generated")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _reset_rss_high_water_mark() -> bool:
    """Linux can restart the process's peak-RSS count (VmHWM) from its current size; elsewhere there is no way."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_high_water_mark() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PhaseClock:
    """Seconds by phase, each nested phase charged to itself and taken from the phase around it."""

    def __init__(self, device: torch.device):
        self.device = device
        self._seconds: Counter = Counter()
        # On a GPU: (phase, the phase it is nested in or None, start event, end event) of phases not yet read,
        # in the order their end events were recorded, which is the order the GPU reaches them.
        self._pending: list[tuple[str, str | None, torch.cuda.Event, torch.cuda.Event]] = []

    def now(self):
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def charge(self, name: str, outer: str | None, start, end) -> None:
        """Charge phase `name`, nested in `outer`, with the time from `start` to `end` (two `now()`s)."""
        if isinstance(start, float):
            self._charge(name, outer, end - start)
        else:
            self._pending.append((name, outer, start, end))
            self._read_events(wait=False)

    def _charge(self, name: str, outer: str | None, seconds: float) -> None:
        self._seconds[name] += seconds
        if outer is not None:
            self._seconds[outer] -= seconds

    def _read_events(self, wait: bool) -> None:
        """Charge the phases whose end the GPU has reached (with `wait`, all of them, waiting for the last)."""
        while self._pending:
            name, outer, start, end = self._pending[0]
            if wait:
                end.synchronize()
            elif not end.query():
                return
            self._pending.pop(0)
            self._charge(name, outer, start.elapsed_time(end) / 1000.0)

    @property
    def seconds(self) -> Counter:
        self._read_events(wait=True)
        return self._seconds

    @seconds.setter
    def seconds(self, value) -> None:
        self._pending = []
        self._seconds = Counter(value)


class PhaseMemory:
    """Memory peaks by phase: the counters restart at every phase boundary, so a phase nested in another does not
    inherit the peak of the one around it."""

    def __init__(self, device: torch.device):
        self.device = device
        self._phase_peaks: dict[str, dict[str, int]] = {}
        self._rss_resettable = _reset_rss_high_water_mark()

    def close(self, phase: str) -> None:
        """Charge the memory peak since the last boundary to `phase`, then restart the peak counters."""
        peaks = self._phase_peaks.setdefault(phase, {})
        if self._rss_resettable:
            rss = _rss_high_water_mark()
            if rss is not None:
                peaks["rss_bytes"] = max(peaks.get("rss_bytes", 0), rss)
            _reset_rss_high_water_mark()
        if self.device.type == "cuda":
            peaks["gpu_allocated_bytes"] = max(peaks.get("gpu_allocated_bytes", 0),
                                               int(torch.cuda.max_memory_allocated(self.device)))
            torch.cuda.reset_peak_memory_stats(self.device)

    def reset(self) -> None:
        self._phase_peaks = {}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if self._rss_resettable:
            _reset_rss_high_water_mark()

    def report(self) -> dict:
        out = {"peak_rss_bytes": peak_rss_bytes(),
               "peak_memory_by_phase": {p: dict(v) for p, v in self._phase_peaks.items() if v}}
        if self.device.type == "cuda":
            by_phase = [v.get("gpu_allocated_bytes", 0) for v in self._phase_peaks.values()]
            out["peak_gpu_allocated_bytes"] = max(by_phase + [int(torch.cuda.max_memory_allocated(self.device))])
        return out


class CostMeter:
    """Counts NFEs through forward hooks on the networks it watches, wall time and memory by phase."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.counts: Counter = Counter()
        self._active: list[str] = []
        self._clock = PhaseClock(self.device)
        self._memory = PhaseMemory(self.device)

    def watch(self, module: nn.Module, role: str):
        """Count every forward of `module` as `role`_forward (and, for the student under autograd, a backward)."""
        if role not in ("student", "teacher"):
            raise ValueError(role)

        def hook(_module, args):
            n = int(args[0].shape[0])
            if "evaluation" in self._active:
                self.counts["evaluation_forward"] += n
                return
            self.counts[f"{role}_forward"] += n
            if role == "student" and torch.is_grad_enabled():
                self.counts["student_backward"] += n

        return module.register_forward_pre_hook(hook)

    def add_generated(self, n: int) -> None:
        key = "evaluation_images_generated" if "evaluation" in self._active else "images_generated"
        self.counts[key] += int(n)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time a phase. A phase nested in another (replay generation inside training, say) is charged to the
        inner phase only, so the phases add up to the wall time."""
        if name not in PHASES:
            raise ValueError(name)
        if self._active:
            self._memory.close(self._active[-1])
        outer = self._active[-1] if self._active else None
        start = self._clock.now()
        self._active.append(name)
        try:
            yield
        finally:
            end = self._clock.now()
            self._memory.close(name)
            self._active.pop()
            self._clock.charge(name, outer, start, end)

    @property
    def seconds(self) -> Counter:
        """Seconds by phase (on a GPU this waits until the phases timed so far have finished on it)."""
        return self._clock.seconds

    @seconds.setter
    def seconds(self, value) -> None:
        self._clock.seconds = value

    def reset_peak_memory(self) -> None:
        self._memory.reset()

    def peak_memory(self) -> dict:
        """The process's peak RSS, and each phase's own peak since the last reset: RSS where the OS lets the peak
        be restarted (Linux), GPU memory allocated by tensors on a GPU."""
        return self._memory.report()

    def snapshot(self) -> dict:
        seconds = self.seconds
        return {"counts": {k: int(self.counts.get(k, 0)) for k in COUNTERS},
                "seconds": {k: float(seconds.get(k, 0.0)) for k in PHASES}}

    @staticmethod
    def difference(after: dict, before: dict) -> dict:
        return {"counts": {k: after["counts"][k] - before["counts"][k] for k in COUNTERS},
                # .get: a snapshot checkpointed before a phase existed has none of its time
                "seconds": {k: after["seconds"].get(k, 0.0) - before["seconds"].get(k, 0.0) for k in PHASES}}

    def state_dict(self) -> dict:
        return self.snapshot()

    def load_state_dict(self, state: dict) -> None:
        self.counts = Counter(state["counts"])
        self.seconds = state["seconds"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    threads = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'' if threads == 1 else 's'})"
