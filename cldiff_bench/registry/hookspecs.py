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
