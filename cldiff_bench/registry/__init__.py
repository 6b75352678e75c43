"""Plugin registry: pluggy hooks, entry-point discovery and typed look-ups of strategies, streams, presets and
FID feature extractors."""
from .hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
from .manager import Entry, Registry, load_registry
from .specs import ExtractorSpec, StreamSpec

__all__ = ["ENTRY_POINT_GROUP", "hookimpl", "hookspec", "Entry", "Registry", "load_registry", "StreamSpec",
           "ExtractorSpec"]
