"""Naive fine-tuning: train on each task in turn with nothing against forgetting (the lower bound)."""
from cldiff_bench.strategy import Strategy


class Naive(Strategy):
    name = "naive"
    description = "fine-tune on each task in turn (lower bound)"
    solver_mode = "none"
