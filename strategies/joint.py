"""Joint training: task k trains on the union of tasks 0..k for the same number of epochs (the upper bound)."""
from cldiff_bench.strategy import Strategy


class Joint(Strategy):
    name = "joint"
    description = "train on the union of all tasks so far (upper bound)"
    solver_mode = "joint"

    def training_data(self, stream, k):
        return stream.train_union(k)
