"""A distillation's state, as its checkpoints hold it: everything to continue exactly where it stood. Between
rounds (and once finished) only the round, the update, the weights and the records are kept; within a round also
its teacher, optimizer, EMA, chains (a data-anchored round has none), loss sum and the cost meter's reading at its
start.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Distillation


def distillation_state(engine: Distillation) -> dict:
    active = not engine.finished and engine.optimizer is not None
    average = engine.ema.state_dict() if active and engine.ema is not None else {"weights": None, "updates": 0}
    z, pos = engine.chains.z, engine.chains.pos
    return {"round": engine.round_index, "update": engine.update_index, "model": engine.model.state_dict(),
            "teacher": engine.teacher.state_dict() if active and engine.teacher is not None else None,
            "optimizer": engine.optimizer.state_dict() if active else None,
            "ema": average["weights"], "ema_updates": average["updates"],
            "z": z.cpu() if active and z is not None else None,
            "pos": pos.clone() if active and pos is not None else None, "loss_sum": engine.losses.total,
            "round_start_cost": engine.round_start_cost if active else None,
            "records_json": json.dumps(engine.records)}


def restore_distillation(engine: Distillation, state: dict) -> None:
    engine.round_index, engine.update_index = int(state["round"]), int(state["update"])
    engine.records = json.loads(state["records_json"])
    engine.model.load_state_dict(state["model"])
    if engine.finished or state["optimizer"] is None:
        return
    engine.begin_round(fresh=False)
    if engine.teacher is not None:
        engine.teacher.load_state_dict(state["teacher"])
    engine.optimizer.load_state_dict(state["optimizer"])
    if engine.ema is not None:
        engine.ema.load_state_dict({"weights": state["ema"], "updates": state["ema_updates"]})
    if state["z"] is not None:
        engine.chains.z, engine.chains.pos = state["z"].to(engine.core.device), state["pos"].clone()
    engine.losses.total = float(state["loss_sum"])
    engine.round_start_cost = state["round_start_cost"]
