"""The sweep directory's files, with no heavy imports: a cell's job (a small process that waits on its run) reads
and writes them too.

    SWEEP_DIR/manifest.json        the grid, the cells, every submission (command, executor, job ids)
    SWEEP_DIR/cells/<cell>.json    how each cell's last attempt went, written by the cell's job
    SWEEP_DIR/logs/<cell>.log      the output of the cell's runs (every attempt appended)
    SWEEP_DIR/jobs/                submitit's files: pickled cells, job logs, sbatch scripts
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

MANIFEST_NAME = "manifest.json"


def slug(key: str) -> str:
    """A file name for a cell key (`digits-5/tiny/gd/seed0` -> `digits-5__tiny__gd__seed0`)."""
    return "__".join(part for part in Path(key).parts if part not in ("/", "..", "."))


def state_path(sweep_dir: Path, key: str) -> Path:
    return Path(sweep_dir) / "cells" / f"{slug(key)}.json"


def log_path(sweep_dir: Path, key: str) -> Path:
    return Path(sweep_dir) / "logs" / f"{slug(key)}.log"


def jobs_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / "jobs"


def write_json(path: Path, obj) -> None:
    """Atomically (a reader sees the old file or the new one, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_or_none(path: Path):
    """The file's JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def last_line(path: Path, limit: int = 16384) -> str | None:
    """The last non-empty line of a log (progress bars' carriage returns count as line ends)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    return lines[-1] if lines else None
