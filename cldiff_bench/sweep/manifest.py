"""A sweep's manifest (SWEEP_DIR/manifest.json): its grid, its cells, and every submission into the directory
(when, the command, the executor, which cells were run and under which job ids, which were skipped and why).
Submitting again into the same directory adds a submission; sweeps sharing the directory take turns (a lock)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from .. import __version__
from ..errors import UserError
from .files import MANIFEST_NAME, read_json_or_none, write_json

MANIFEST_FORMAT = 1


def manifest_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / MANIFEST_NAME


@contextlib.contextmanager
def _locked(sweep_dir: Path):
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(sweep_dir) / ".manifest.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update(sweep_dir: Path, change) -> dict:
    """Read, change (in place) and write the manifest, under the directory's lock."""
    with _locked(sweep_dir):
        manifest = read_json_or_none(manifest_path(sweep_dir)) or {
            "format": MANIFEST_FORMAT, "suite_version": __version__, "created": _now(), "grid": [], "cells": {},
            "submissions": []}
        change(manifest)
        manifest["updated"] = _now()
        write_json(manifest_path(sweep_dir), manifest)
        return manifest


def load(sweep_dir: Path) -> dict:
    path = manifest_path(sweep_dir)
    if not Path(sweep_dir).is_dir():
        raise UserError(f"{sweep_dir} does not exist (a sweep directory holds {MANIFEST_NAME})")
    manifest = read_json_or_none(path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{sweep_dir} holds no sweep manifest ({MANIFEST_NAME} of format {MANIFEST_FORMAT}): is "
                        f"it a sweep directory?")
    return manifest


def new_submission(command: str, executor: dict) -> dict:
    return {"at": _now(), "t": time.time(), "command": command, "executor": executor, "host": socket.gethostname(),
            "pid": os.getpid(), "cells": {}, "jobs": {}}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
