"""User-facing errors: the CLI prints them as one line and exits with status 2 (no traceback unless --debug)."""
from __future__ import annotations

import difflib
import sys
from typing import Callable, Iterable


class UserError(Exception):
    """Something the user can fix: a bad option, missing data, a refused mix of results."""


# Exit statuses: 0 done, 1 a regression found by `check`, 2 bad input, 130 interrupted (as shells report SIGINT).
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class Interrupted(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM from a scheduler) and stopped cleanly at a checkpoint."""


class DataNotFoundError(UserError):
    """A data set is not under the data root and cannot be downloaded here."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UserError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}")


def exit_status(command: Callable[[], int], debug: bool = False) -> int:
    """Run a command and return its exit status: a UserError is one line and status 2, an interruption status 130
    (with a traceback only when `debug`)."""
    try:
        return command()
    except UserError as exc:
        if debug:
            raise
        print(f"cldiff-bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as exc:
        print(f"cldiff-bench: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if debug:
            raise
        print("cldiff-bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
