"""User-facing errors: the CLI prints them as one line and exits with status 2 (no traceback unless --debug)."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Something the user can fix: a bad option, missing data, a refused mix of results."""


class DataNotFoundError(UserError):
    """A data set is not under the data root and cannot be downloaded here."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UserError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}")
