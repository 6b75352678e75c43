"""Run locks: at most one process trains in a run directory at a time, across runs, sweeps and machines that
share the output folder.

A lock is an exclusive `flock` on a hidden file beside the run directory (`.seed0.lock` next to `seed0/`:
inside it, `run` would find a file it does not know and refuse the directory). A bare `run` takes it itself; a
sweep's cell takes it before it starts the run, and the run inherits the descriptor (and is told so through
HELD_LOCK_ENV), so the lock lasts until both are gone.
The kernel drops the lock when they end, however they end (an error, SIGKILL, a crash; on NFS the server drops a
dead client's locks when its lease runs out), so a stale lock never blocks: a lock file a dead process left
behind is lockable at once. The file names its holder for `sweep status`, and is removed on release.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

# Set by a sweep's cell for the run it starts: the lock file the run's inherited descriptor holds.
HELD_LOCK_ENV = "CLDIFF_BENCH_HELD_LOCK"
_held_here: set[str] = set()  # lock files this process holds (a cell that runs its run in-process)


def lock_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


class RunLock:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, holder: dict, tries: int = 20, delay_s: float = 0.1) -> bool:
        """Take the lock; False when another live process holds it. Tried for a moment (`tries` x `delay_s`),
        so that a `sweep status` looking at the lock just then is not taken for a holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(tries):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                time.sleep(delay_s)
                continue
            # Released (and removed) between our open and our lock: the lock is on a file no one else will see.
            if not _same_file(fd, self.path):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder).encode())
            self.fd = fd
            _held_here.add(str(self.path.resolve()))
            return True
        return False

    def release(self) -> None:
        if self.fd is None:
            return
        _held_here.discard(str(self.path.resolve()))
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock (looked at without taking it for longer than a moment)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we took
    return False


def lock_holder(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


def held_for_us(path: Path) -> bool:
    """Whether this process already holds the lock `path`, itself or through the cell that started it."""
    resolved = str(Path(path).resolve())
    return resolved in _held_here or os.environ.get(HELD_LOCK_ENV) == resolved


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process"
    who = f"pid {holder.get('pid')} on {holder.get('host')}"
    if holder.get("cell"):
        who += f", cell {holder['cell']} of the sweep in {holder.get('sweep_dir')}"
    elif holder.get("command"):
        who += f", `{holder['command']}`"
    return who + (f", since {holder['since']}" if holder.get("since") else "")
