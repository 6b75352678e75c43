"""The plugin hooks. A plugin is any module or object with functions of these names marked with `hookimpl`."""
from __future__ import annotations

import pluggy

PROJECT = "cldiff_bench"
ENTRY_POINT_GROUP = "cldiff_bench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginSpecs:
    @hookspec
    def cldiff_bench_strategies(self):
        """Return a list of Strategy subclasses (each with a unique `name`)."""

    @hookspec
    def cldiff_bench_streams(self):
        """Return a list of `StreamSpec`s."""

    @hookspec
    def cldiff_bench_model_presets(self):
        """Return a dict {preset name: UNetConfig keyword arguments}."""

    @hookspec
    def cldiff_bench_extractors(self):
        """Return a list of `ExtractorSpec`s: FID feature extractors (`--extractor NAME`)."""

    @hookspec
    def cldiff_bench_samplers(self):
        """Return a list of `SamplerSpec`s (diffusion/samplers.py): samplers a model can be drawn with by name."""

    @hookspec
    def cldiff_bench_distillers(self):
        """Return a list of `DistillMethod` subclasses (distill/base.py), each with a unique `name`: the methods of
        `cldiff-bench distill` and of the teacher strategies' option teacher_accel."""

    @hookspec
    def cldiff_bench_commands(self):
        """Return a list of `CommandSpec`s (commands/__init__.py): subcommands of `cldiff-bench`, each with a unique
        `name`."""
