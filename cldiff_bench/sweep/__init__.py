"""`cldiff-bench sweep`: a grid of runs on this machine or a Slurm cluster, through submitit (the `cluster` extra).

plan.py reads the grid (command line or TOML) into cells, cell.py is one cell as a submitit job, executors.py
submits them (local, slurm, debug), the run lock (../runlock.py) keeps two sweeps from running one cell, status.py
says where a sweep stands, manifest.py and files.py hold what the sweep directory keeps. Nothing here imports submitit or torch at
import time.
"""
from __future__ import annotations

from .command import SWEEP

__all__ = ["SWEEP"]
