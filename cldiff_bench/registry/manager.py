"""Discovering plugins and building typed registries from their hooks.

Plugins come only from installed entry points of the `cldiff_bench` group or from modules the user names
explicitly (`--plugin module`); nothing is imported from result or data directories. A plugin that fails to import
is reported with its distribution name and skipped; the others still work. Two plugins registering one name are
both named and refused.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
from dataclasses import dataclass
from typing import Any, Iterable

import pluggy

from ..commands import CommandSpec
from ..errors import UserError, unknown_name
from .hookspecs import ENTRY_POINT_GROUP, PROJECT, PluginSpecs
from ..diffusion.samplers import SamplerSpec
from .specs import ExtractorSpec

# What an uninstalled checkout registers (the same modules the package's entry points name).
BUILTIN_PLUGIN_MODULES = ("cldiff_bench.builtin_plugin", "cldiff_bench_strategies")
OWN_DISTRIBUTION = "cldiff-bench"
# How a kind is named in messages, where it differs from its key.
KIND_NAMES = {"extractor": "FID feature extractor", "distiller": "distillation method"}


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    source: str  # "cldiff-bench (builtin)", "my-dist 1.0 (entry point x)", "--plugin my.module"


class Registry:
    def __init__(self):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(PluginSpecs)
        self.sources: dict[int, str] = {}
        self.load_errors: list[str] = []
        self._cache: dict[str, dict[str, Entry]] | None = None

    # --- loading -------------------------------------------------------------------------------------------------
    def register(self, plugin: Any, source: str, name: str | None = None) -> None:
        if self.pm.is_registered(plugin):
            return
        self.pm.register(plugin, name=name)
        self.sources[id(plugin)] = source
        self._cache = None

    def load_entry_points(self) -> None:
        own_found = False
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            version = ep.dist.version if ep.dist is not None else ""
            own = dist.replace("_", "-").lower() == OWN_DISTRIBUTION
            own_found |= own
            source = "builtin" if own else f"{dist} {version} (entry point {ep.name!r})".replace("  ", " ")
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the suite down
                self.load_errors.append(f"plugin {ep.name!r} from distribution {dist!r} failed to import: "
                                        f"{type(exc).__name__}: {exc}")
                continue
            self.register(plugin, source, name=f"{dist}:{ep.name}")
        if not own_found:
            for module in BUILTIN_PLUGIN_MODULES:
                self.register(importlib.import_module(module), "builtin (uninstalled checkout)", name=module)

    def load_module(self, module_name: str) -> None:
        """A module the user named with --plugin; errors here are the user's to see."""
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise UserError(f"--plugin {module_name}: failed to import: {type(exc).__name__}: {exc}") from exc
        self.register(module, f"--plugin {module_name}", name=f"--plugin:{module_name}")

    # --- typed views ---------------------------------------------------------------------------------------------
    def _collect(self, hook_name: str, items_of) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            source = self.sources.get(id(impl.plugin), impl.plugin_name)
            try:
                result = impl.function()
            except Exception as exc:
                self.load_errors.append(f"{source}: {hook_name} raised {type(exc).__name__}: {exc}")
                continue
            for name, obj in items_of(result or []):
                if name in entries:
                    raise UserError(f"two plugins register the {hook_name.removeprefix('cldiff_bench_')[:-1]} "
                                    f"{name!r}: {entries[name].source} and {source}; uninstall one of them")
                entries[name] = Entry(name, obj, source)
        return entries

    def _views(self) -> dict[str, dict[str, Entry]]:
        if self._cache is None:
            self._cache = {
                "strategy": self._collect("cldiff_bench_strategies", lambda r: [(s.name, s) for s in r]),
                "stream": self._collect("cldiff_bench_streams", lambda r: [(s.name, s) for s in r]),
                "model preset": self._collect("cldiff_bench_model_presets", lambda r: list(dict(r).items())),
                "extractor": self._collect("cldiff_bench_extractors",
                                           _specs(ExtractorSpec, "cldiff_bench_extractors")),
                "sampler": self._collect("cldiff_bench_samplers", _specs(SamplerSpec, "cldiff_bench_samplers")),
                "distiller": self._collect("cldiff_bench_distillers", lambda r: [(d.name, d) for d in r]),
                "command": self._collect("cldiff_bench_commands", _specs(CommandSpec, "cldiff_bench_commands")),
            }
        return self._cache

    def entries(self, kind: str) -> dict[str, Entry]:
        return self._views()[kind]

    def get(self, kind: str, name: str) -> Any:
        entries = self.entries(kind)
        if name not in entries:
            raise unknown_name(KIND_NAMES.get(kind, kind), name, entries)
        return entries[name].obj

    def strategy(self, name: str):
        return self.get("strategy", name)

    def stream(self, name: str):
        return self.get("stream", name)

    def model_preset(self, name: str) -> dict:
        return self.get("model preset", name)

    def extractor(self, name: str) -> ExtractorSpec:
        return self.get("extractor", name)

    def samplers(self) -> dict[str, SamplerSpec]:
        """{name: SamplerSpec} of every registered sampler (what `DiffusionCore(samplers=)` takes)."""
        return {name: entry.obj for name, entry in self.entries("sampler").items()}

    def command(self, name: str):
        return self.get("command", name)

    def distiller(self, name: str):
        return self.get("distiller", name)

    def extractors(self) -> dict[str, ExtractorSpec]:
        """{name: ExtractorSpec} of every registered FID feature extractor (what `Evaluator(extractors=)` takes)."""
        return {name: entry.obj for name, entry in self.entries("extractor").items()}


def _specs(spec_type: type, hook_name: str):
    """What a hook returning `spec_type`s registers: (name, spec) pairs, anything else refused by name."""
    def items(result) -> list[tuple[str, Any]]:
        result = list(result)
        for spec in result:
            if not isinstance(spec, spec_type):
                raise UserError(f"{hook_name} must return {spec_type.__name__}s, got {type(spec).__name__} "
                                f"{spec!r:.80}")
        return [(spec.name, spec) for spec in result]
    return items


def load_registry(plugin_modules: Iterable[str] = ()) -> Registry:
    registry = Registry()
    registry.load_entry_points()
    for module in plugin_modules:
        registry.load_module(module)
    return registry
