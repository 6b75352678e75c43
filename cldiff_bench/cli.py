"""The `cldiff-bench` command line: its subcommands are the registered commands (`cldiff-bench list`), the suite's
own and the plugins', so the plugins are loaded before the full parser is built. Nothing imports this module."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import OneLineParser, add_command
from .errors import exit_status


def _top_level(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="also load plugins from this importable module (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return parser


def build_parser(registry) -> argparse.ArgumentParser:
    parser = _top_level(OneLineParser(prog="cldiff-bench", description="Continual learning of diffusion models: "
                                      "train strategies on class-incremental streams and compare them."))
    parser.add_argument("--version", action="version", version=f"cldiff-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for entry in registry.entries("command").values():
        add_command(sub, entry.obj)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # --plugin and --debug first: a plugin's commands must be known before the arguments can be parsed.
    early, _ = _top_level(argparse.ArgumentParser(add_help=False, allow_abbrev=False)).parse_known_args(argv)
    return exit_status(lambda: _parse_and_run(argv, early.plugin), debug=early.debug)


def _parse_and_run(argv: list[str], plugins: list[str]) -> int:
    from .registry import load_registry
    registry = load_registry(plugins)
    for line in registry.load_errors:
        print(f"cldiff-bench: warning: {line}", file=sys.stderr)
    try:
        args = build_parser(registry).parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad argument (already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    return args._command.run(args, registry)


if __name__ == "__main__":
    sys.exit(main())
