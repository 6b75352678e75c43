"""`cldiff-bench sweep`: a grid of runs on this machine or a Slurm cluster, through submitit (issue #17)."""
from __future__ import annotations


def add_sweep_parser(sub) -> None:
    sub.add_parser("sweep", help="run a grid of cells (strategies x streams x seeds) locally or on Slurm")


def cmd_sweep(args, registry) -> int:
    from ..errors import UserError
    raise UserError("cldiff-bench sweep is not finished yet")
