"""Every registered sampler, FID feature extractor, distillation method and stream, built-in or from a plugin,
satisfies its kind's contract (as tests/test_strategy_contract.py checks every strategy's)."""
from dataclasses import replace

import pytest
import torch

from cldiff_bench.core import DiffusionCore
from cldiff_bench.diffusion.samplers import SamplerSpec
from cldiff_bench.diffusion.seeding import per_sample_normal
from cldiff_bench.distill import DistillMethod, DistillOptions
from cldiff_bench.distill.base import Round
from cldiff_bench.distill.engine import Distillation
from cldiff_bench.distill.objective import student_config
from cldiff_bench.evaluation import EvalSettings
from cldiff_bench.evaluation.classifier import CLASSIFIER_ARCHS
from cldiff_bench.registry import ExtractorSpec, StreamSpec, load_registry
from cldiff_bench.streams.base import Stream
from tests.helpers import MICRO_UNET

PLUGINS = ["tests.plugins.image_stats_extractor_plugin", "tests.plugins.halving_plugin",
           "tests.plugins.ancestral_sampler_plugin"]
REGISTRY = load_registry(PLUGINS)
SHAPE = (1, 16, 16)


def entries(kind: str) -> list:
    return sorted(REGISTRY.entries(kind).items())


def test_the_plugins_are_among_the_registered():
    assert {"image-stats", "classifier"} <= set(REGISTRY.entries("extractor"))
    assert {"halving", "pd"} <= set(REGISTRY.entries("distiller"))
    assert {"ancestral", "ddim"} <= set(REGISTRY.entries("sampler"))


def described(name: str, entry, spec_type) -> None:
    """Of the declared type, registered under its own name, with a description `list` can show."""
    obj = entry.obj
    assert isinstance(obj, spec_type) or (isinstance(obj, type) and issubclass(obj, spec_type)), entry.source
    assert obj.name == name
    assert isinstance(obj.description, str) and obj.description.strip()


@pytest.mark.parametrize("name, entry", entries("sampler"))
def test_sampler_contract(name, entry):
    described(name, entry, SamplerSpec)
    schedule = DiffusionCore(MICRO_UNET, SHAPE, torch.device("cpu")).schedule
    sampler = entry.obj.build(schedule, 3, 0.0)
    assert sampler.num_steps == 3 and isinstance(sampler.settings, dict) and sampler.settings
    # What a step needs of a model: its output for (x_t, t). A constant one keeps this a test of the sampler.
    images = sampler.sample(lambda x, t: torch.zeros_like(x), [1, 2], SHAPE)
    assert images.shape == (2, *SHAPE) and torch.isfinite(images).all()
    # (tests/test_samplers.py checks every registered sampler draws image i from seeds[i] alone.)


@pytest.mark.parametrize("name, entry", entries("extractor"))
def test_extractor_contract(name, entry):
    described(name, entry, ExtractorSpec)
    spec = entry.obj
    assert callable(spec.build)
    settings = EvalSettings(extractor=name)
    classifier_info = {"version": "ruler-cnn-e12-0123abcd"} if spec.needs_classifier else None
    identity = spec.identity(settings, classifier_info)
    assert isinstance(identity, str) and identity  # the key of cached real statistics
    assert isinstance(spec.describe(settings), dict)


@pytest.mark.parametrize("name, entry", entries("distiller"))
def test_distillation_method_contract(name, entry):
    described(name, entry, DistillMethod)
    method = entry.obj
    rounds = method.rounds(8, 2, "v")
    assert rounds and all(isinstance(r, Round) for r in rounds)
    assert rounds[0].teacher_steps == 8 and rounds[-1].sampled_steps == 2
    # One halving round's updates cost what the method declares: forwards_per_update per image, as counted.
    teacher = replace(MICRO_UNET, prediction="v")
    core = DiffusionCore(student_config(MICRO_UNET), SHAPE, torch.device("cpu"))
    anchor = (lambda seeds: per_sample_normal(seeds, SHAPE).clamp(-1, 1)) if method.needs_data else None
    options = DistillOptions(method=name, target_steps=2, from_steps=8, updates=2, batch_size=3)
    engine = Distillation(core, method, options, teacher, core.model, keys=(0,), anchor=anchor)
    engine.begin_round()
    before = core.meter.snapshot()["counts"]
    engine.step()
    after = core.meter.snapshot()["counts"]
    forwards = sum(after[k] - before[k] for k in ("teacher_forward", "student_forward"))
    assert forwards == method.forwards_per_update * 3


@pytest.mark.parametrize("name, entry", entries("stream"))
def test_stream_contract(name, entry, tmp_path):
    described(name, entry, StreamSpec)
    spec = entry.obj
    assert callable(spec.build)
    assert spec.paper_model in REGISTRY.entries("model preset") and spec.evaluator_arch in CLASSIFIER_ARCHS
    assert min(spec.fid_steps, spec.paper_epochs, spec.paper_batch_size, spec.evaluator_epochs) >= 1
    assert 0 <= spec.evaluator_holdout < 1
    if not spec.needs_data:  # the others need their data set at hand
        stream = spec.build(tmp_path, 0, tmp_path)
        assert isinstance(stream, Stream) and stream.name == name and stream.num_tasks >= 1
        assert len(stream.class_names) == stream.num_classes and stream.image_shape[1:] == (32, 32)
