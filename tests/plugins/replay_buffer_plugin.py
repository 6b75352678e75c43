"""A third-party-style plugin: experience replay with a small buffer of real images (not part of the suite).

Registered in tests with `--plugin tests.plugins.replay_buffer_plugin`, exactly as a user's module would be.
"""
import torch
import torch.nn.functional as F

from cldiff_bench.registry import hookimpl
from cldiff_bench.strategy import PURPOSE_DATA_NOISE, LossTerms, Option, Strategy


class BufferReplay(Strategy):
    name = "buffer-replay"
    description = "experience replay from a buffer of real images (test plugin)"
    options = {"buffer_per_task": Option(8, "images kept per task", minimum=1)}

    def __init__(self, core, options=None):
        super().__init__(core, options)
        self.buffer = torch.empty(0, *core.image_shape)

    def batch_loss(self, batch):
        x0 = batch.x0
        if len(self.buffer):
            g = batch.generator(99)
            x0 = torch.cat([x0, self.buffer[torch.randint(0, len(self.buffer), (len(x0),), generator=g)]])
        x_t, t, noise = self.core.training_targets(x0, batch.generator(PURPOSE_DATA_NOISE))
        loss = F.mse_loss(self.core.model(x_t, t), noise)
        self._last = batch.x0[: self.option_values["buffer_per_task"]].detach()
        return LossTerms(total=loss, data=loss)

    def end_task(self, k):
        self.buffer = torch.cat([self.buffer, self._last])

    def state_dict(self):
        return {**super().state_dict(), "buffer": self.buffer}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.buffer = state["buffer"]


@hookimpl
def cldiff_bench_strategies():
    return [BufferReplay]
