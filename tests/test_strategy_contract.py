"""Every registered strategy, built-in or from a plugin, survives a checkpoint round-trip bit for bit."""
import io

import pytest
import torch

from cldiff_bench.registry import load_registry

from .helpers import batch, micro_core

PLUGIN = "tests.plugins.replay_buffer_plugin"
REGISTRY = load_registry([PLUGIN])
ALL_STRATEGIES = sorted(REGISTRY.entries("strategy"))


def roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def step(strategy, core, optimizer, b):
    terms = strategy.batch_loss(b)
    optimizer.zero_grad()
    terms.total.backward()
    optimizer.step()
    return terms.total.item()


def test_plugin_strategy_is_registered_with_its_source():
    entry = REGISTRY.entries("strategy")["buffer-replay"]
    assert entry.source == f"--plugin {PLUGIN}"
    assert REGISTRY.entries("strategy")["gd"].source.startswith("builtin")


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_checkpoint_reload_continues_identically(name):
    cls = REGISTRY.strategy(name)
    options = cls.resolve_options("digits-5", {})
    core = micro_core()
    strategy = cls(core, options)
    opt = torch.optim.Adam(core.model.parameters(), lr=2e-4)
    strategy.begin_task(0)
    for it in range(2):
        step(strategy, core, opt, batch(0, it))
    strategy.end_task(0)
    strategy.begin_task(1)
    opt = torch.optim.Adam(core.model.parameters(), lr=2e-4)
    step(strategy, core, opt, batch(1, 0))

    saved = roundtrip({"model": core.model.state_dict(), "strategy": strategy.state_dict(),
                       "optimizer": opt.state_dict()})
    reloaded_core = micro_core(seed=123)  # different initial weights: everything must come from the checkpoint
    reloaded = cls(reloaded_core, options)
    reloaded_core.model.load_state_dict(saved["model"])
    reloaded.load_state_dict(saved["strategy"])
    reloaded_opt = torch.optim.Adam(reloaded_core.model.parameters(), lr=2e-4)
    reloaded_opt.load_state_dict(saved["optimizer"])

    loss_a = step(strategy, core, opt, batch(1, 1))
    loss_b = step(reloaded, reloaded_core, reloaded_opt, batch(1, 1))
    assert loss_a == loss_b
    for (k, a), (_, b) in zip(core.model.state_dict().items(), reloaded_core.model.state_dict().items()):
        assert torch.equal(a, b), k
