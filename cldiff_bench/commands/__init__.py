"""The subcommands of `cldiff-bench`, each a `CommandSpec` registered through the `cldiff_bench_commands` hook:
the suite's own (here, and `sweep` and `distill` in their packages) exactly as a plugin's.

A command module imports what its work needs inside its `run` function, so the command line starts without torch.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..registry import Registry


@dataclass(frozen=True)
class CommandSpec:
    """`cldiff-bench NAME ...`: `add_arguments(parser)` declares its arguments, `run(args, registry)` does the work
    and returns the exit status (a UserError it raises is one line and status 2)."""
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, "Registry"], int]
    description: str | None = None


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit status 2, like every other bad input (usage: --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_command(subparsers, spec: CommandSpec) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(spec.name, help=spec.help, description=spec.description)
    spec.add_arguments(parser)
    parser.set_defaults(_command=spec)
    return parser


def command_parser(spec: CommandSpec, prog: str = "cldiff-bench") -> argparse.ArgumentParser:
    """A parser of this one command's arguments (what `cldiff-bench NAME` parses after its name)."""
    parser = OneLineParser(prog=f"{prog} {spec.name}", description=spec.description)
    spec.add_arguments(parser)
    return parser
