"""What every subcommand's arguments share: comma-separated lists read one way, and the retired spellings refused
with a line that names the new one. Imported by the command line and by the subcommands that plugins of it add."""
from __future__ import annotations

import argparse

from .errors import UserError


def comma_separated_ints(text: str, what: str, minimum: int = 0) -> list[int]:
    """`0,1,2` -> [0, 1, 2]; an empty item (`0,,1`), a repeated one, a non-integer or one below `minimum` is
    refused (UserError), never skipped: a typo must not quietly change what runs."""
    items = [s.strip() for s in str(text).split(",")]
    if not all(items):
        raise UserError(f"{what} must be comma-separated integers with none left empty, got {text!r}")
    try:
        values = [int(s) for s in items]
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got {text!r}") from None
    if any(v < minimum for v in values):
        raise UserError(f"{what} must be integers >= {minimum}, got {text!r}")
    if len(set(values)) != len(values):
        raise UserError(f"{what} lists a value twice: {text!r}")
    return values


def int_list_type(what: str, minimum: int = 0):
    """An argparse `type` for comma_separated_ints (a bad list is argparse's one-line usage error)."""
    def parse(text: str) -> list[int]:
        try:
            return comma_separated_ints(text, what, minimum)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


class RetiredFlag(argparse.Action):
    """A spelling the suite no longer uses: one line naming the one that replaced it. `-o` always means --option
    and the output is always --out, in every command."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", help=argparse.SUPPRESS, default=None)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not an option of this command any more: {self.new}")


def retire_output_spellings(parser: argparse.ArgumentParser, takes_options: bool = False) -> None:
    """Refuse the old spellings of the output flag (--output; -o where the command has no strategy options)."""
    parser.add_argument("--output", action=RetiredFlag, new="the output is --out PATH")
    if not takes_options:
        parser.add_argument("-o", action=RetiredFlag, new="the output is --out PATH (-o means --option KEY VALUE)")
