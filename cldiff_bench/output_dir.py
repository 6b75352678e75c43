"""An output directory of one configuration: config.json records it (its hash is the directory's identity, so work
only continues in a directory of its own configuration), a checkpoint while the work runs, the result once it is
done. A run's directory (rundir.RunDir) and a distillation's (distill.runner.DistillDir) are such directories."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from . import __version__
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .errors import UserError
from .io import atomic_write_json, read_json

CONFIG_NAME = "config.json"
# Settings of how fast a run goes, not of what it computes (beyond rounding): a run may be resumed with others.
SPEED_KEYS = ("speed",)


def config_hash(resolved: dict) -> str:
    defining = {k: v for k, v in resolved.items() if k not in SPEED_KEYS}
    return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


class OutputDir:
    """A subclass names its result file, the outputs `clear` removes besides the checkpoint and the result, and how
    the refusals of `prepare` call what the directory holds."""

    RESULT_NAME: str
    OUTPUTS: tuple[str, ...] = ()
    OTHER_CONFIGURATION: str  # "a run with another configuration"
    UNFINISHED: str  # "an unfinished run of this configuration"
    NOTHING: str  # "no cldiff-bench run"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config_digest: str | None = None  # set by `prepare`

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def result_path(self) -> Path:
        return self.path / self.RESULT_NAME

    def prepare(self, resolved: dict, force: bool, resume: bool) -> bool:
        """Make the directory ready for the work of `resolved`; True when it already holds that work's result."""
        cfg_file = self.path / CONFIG_NAME
        digest = self.config_digest = config_hash(resolved)
        if cfg_file.is_file():
            # Hashed again rather than trusted, so directories written before the speed settings were left out of
            # the hash are still recognised.
            theirs = config_hash(read_json(cfg_file).get("config") or {})
            same = theirs == digest
            if not same and not force:
                raise UserError(f"{self.path} holds {self.OTHER_CONFIGURATION} ({theirs} != {digest}); use another "
                                f"--out or --force")
            if force or not same:
                self.clear()
            elif self.result_path.is_file():
                return True
            elif self.checkpoint_path.is_file() and not resume:
                raise UserError(f"{self.path} holds {self.UNFINISHED}; continue it with --resume or start over "
                                f"with --force")
        elif self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise UserError(f"{self.path} is not empty and holds {self.NOTHING}; use --force")
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_file, {"config_hash": digest, "config": resolved})
        return False

    def clear(self) -> None:
        for name in (CHECKPOINT_NAME, self.RESULT_NAME, *self.OUTPUTS):
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    @property
    def identity(self) -> dict:
        """What a checkpoint must hold to be continued here: the suite's version and this configuration's hash."""
        return {"suite_version": __version__, "config_hash": self.config_digest}

    def write_checkpoint(self, state: dict) -> None:
        save_checkpoint(self.checkpoint_path, {**self.identity, **state})

    def read_checkpoint(self, **expect) -> dict:
        """The checkpoint, refused unless it holds this directory's identity and the values of `expect`."""
        return load_checkpoint(self.checkpoint_path, expect={**self.identity, **expect})
