"""A plugin strategy whose loss turns NaN at task 1, iteration 2: for testing how runs stop on divergence."""
import torch

from cldiff_bench.registry import hookimpl
from cldiff_bench.strategy import Strategy


class Diverging(Strategy):
    name = "diverging"
    description = "naive, until its loss becomes NaN at task 1, iteration 2 (test plugin)"

    def batch_loss(self, batch):
        terms = super().batch_loss(batch)
        if batch.task == 1 and batch.iteration == 2:
            terms.total = terms.total * torch.tensor(float("nan"))
        return terms


@hookimpl
def cldiff_bench_strategies():
    return [Diverging]
