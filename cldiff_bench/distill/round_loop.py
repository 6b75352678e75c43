"""A distillation's remaining updates, round by round, with its progress bar, checkpoints and stop requests."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from tqdm import tqdm

from ..errors import Interrupted

if TYPE_CHECKING:
    from .engine import Distillation


def run_rounds(engine: Distillation, progress: bool = False, checkpoint: Callable[[], None] | None = None,
               checkpoint_every: int = 0, on_round_end: Callable[[dict], None] | None = None, stop=None,
               desc: str = "distill") -> None:
    """Every remaining update of every round. `checkpoint()` is called every `checkpoint_every` updates, at a stop
    request (then Interrupted is raised) and at every round boundary; `on_round_end(record)` once the round's
    weights are in the engine's model."""
    per_round = [engine.options.updates_in(r) for r in engine.rounds]
    bar = tqdm(total=sum(per_round), initial=sum(per_round[:engine.round_index]) + engine.update_index,
               desc=desc, unit="update", disable=not progress, dynamic_ncols=True, mininterval=1)
    try:
        while not engine.finished:
            if engine.optimizer is None:
                engine.begin_round()
            bar.set_description(f"{desc} {engine.round.teacher_steps}->{engine.round.student_steps} steps")
            updates = per_round[engine.round_index]
            while engine.update_index < updates:
                engine.step()
                bar.update(1)
                periodic = checkpoint_every and engine.update_index % checkpoint_every == 0
                stopping = stop is not None and stop.requested
                if checkpoint is not None and (stopping or (periodic and engine.update_index < updates)):
                    engine.read_losses()
                    checkpoint()
                if stopping:
                    raise Interrupted(f"{stop.signal_name} in round {engine.round_index}, update "
                                      f"{engine.update_index}; continue with --resume")
            record = engine.end_round()
            if on_round_end is not None:
                on_round_end(record)
            if not engine.finished:
                engine.begin_round()
            if checkpoint is not None:
                checkpoint()
    finally:
        bar.close()
