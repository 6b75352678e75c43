"""Reading the files the leaderboard and `check` are given: every way a file can be wrong is one named line.

A path that is missing, a folder, unreadable, not JSON or not a result with the fields these commands use becomes a
`UserError` (exit 2), so that it is never mistaken for a regression (`check`'s exit 1) or shown as a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..results import validate_result

KINDS = ("run", "oracle")  # a result without "kind" is a run; "oracle" scores real images (the metrics' floor)


def read_text(path: Path, what: str = "file") -> str:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UserError(f"{path} is a folder, expected a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_result(path: Path, what: str = "result file") -> dict:
    """A validated result document, or a one-line UserError naming the file."""
    text = read_text(path, what)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is corrupt (not valid JSON: {exc})") from exc
    validate_result(doc, str(path))
    check_fields(doc, str(path))
    return doc


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_fields(doc: dict, source: str) -> None:
    """The fields aggregation and comparison index into, with their types: a wrong one is named, not a KeyError."""
    def fail(problem: str):
        raise UserError(f"{source}: {problem}")

    for key in ("suite", "config", "metrics", "cost"):
        if not isinstance(doc[key], dict):
            fail(f"{key!r} must be an object")
    if not isinstance(doc["tasks"], list):
        fail("'tasks' must be a list")
    cfg = doc["config"]
    for key, kind in (("strategy", str), ("stream", str), ("seed", int), ("budget", dict)):
        if not isinstance(cfg.get(key), kind) or isinstance(cfg.get(key), bool):
            fail(f"config.{key} is missing or not a {kind.__name__}")
    if not isinstance(cfg["budget"].get("profile"), str):
        fail("config.budget.profile is missing or not a string")
    if "version" not in doc["suite"]:
        fail("suite.version is missing")
    if doc.get("kind", "run") not in KINDS:
        fail(f"unknown result kind {doc.get('kind')!r} (known: {', '.join(KINDS)})")
    for name, values in doc["metrics"].items():
        if not all(v is None or _number(v) for v in values):
            fail(f"metric {name!r} holds a value that is not a number")
    if not isinstance(doc["cost"].get("counts", {}), dict):
        fail("cost.counts must be an object")
