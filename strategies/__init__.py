"""The built-in strategies, one module each, registered through the same plugin hook a third party uses.

Installed as `cldiff_bench_strategies` (see docs/layout.md) so no generic top-level name is taken.
"""
from cldiff_bench.registry import hookimpl

from .gaussian import GaussianDistillation
from .gd import GenerativeDistillation
from .gr import GenerativeReplay
from .joint import Joint
from .lwf import LearningWithoutForgetting
from .naive import Naive


@hookimpl
def cldiff_bench_strategies():
    return [Naive, Joint, GenerativeReplay, GenerativeDistillation, LearningWithoutForgetting, GaussianDistillation]
