"""Where caches live: $CLDIFF_BENCH_CACHE, else $XDG_CACHE_HOME/cldiff-bench, else ~/.cache/cldiff-bench."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("CLDIFF_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cldiff-bench"
