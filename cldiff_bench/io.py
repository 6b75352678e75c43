"""Atomic writes and safe loads: a partially written file is never read as valid, and no file unpickles code."""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import UserError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is corrupt (not valid JSON: {exc})") from exc


def load_tensors(path: Path, map_location="cpu") -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never code. A file it cannot read is
    one line: torch's own message runs over several lines and suggests weights_only=False, which is not advice to
    give about a file that may not be trusted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says what matters
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise UserError(f"{path} is corrupt or not a torch weights file ({type(exc).__name__}: "
                        f"{_first_sentence(exc)})") from exc


def _first_sentence(exc: Exception) -> str:
    text = str(exc).strip()
    # torch's weights-only refusal puts its reason after its advice; keep the reason.
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    return text.split("\n")[0].split(". ")[0].rstrip(".") or type(exc).__name__


def sha256_of_arrays(*arrays) -> str:
    """sha256 over the raw bytes (with dtype and shape) of tensors / arrays: independent of how they are serialised."""
    import hashlib

    import numpy as np
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_writable_dir(path: Path, what: str) -> Path:
    """Refuse, before any work, a directory that cannot be created or written: a file in the way, a read-only or
    missing-permission parent. Creates nothing (the first write creates it)."""
    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise UserError(f"{what} {path} {where}")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise UserError(f"{what} {path} {where}")
    return path
