"""A board from a folder of results: read and checked first, then written, so a bad input leaves the output folder
as it was. What the page shows comes from the folder (its results and produced-by.txt), never from where it is
written, so building it again anywhere gives the same bytes."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from .aggregate import build_tables, load_results
from .claims import DEFAULT_CLAIMS, DEFAULT_CLAIMS_NAME, check_claims, load_claims
from .formats import publish
from .measurements import find_measurements
from .provenance import read_produced_by


def build_leaderboard(results: Sequence[Path], out: Path, fmt: str = "markdown", claims_file: Path | None = None,
                      with_claims: bool = True, strict: bool = False, allow_mixed: bool = False,
                      produced_by: Sequence[str] = ()) -> list[Path]:
    """Write the board of these result files or folders into `out`; the paths written."""
    claims = load_claims(claims_file or DEFAULT_CLAIMS) if with_claims else None
    loaded, skipped = load_results(results, strict=strict)
    for line in skipped:
        print(f"cldiff-bench: skipped {line}", file=sys.stderr)
    if not loaded:
        raise UserError("no valid result files to build a leaderboard from")
    tables = build_tables(loaded, allow_mixed=allow_mixed)
    findings = None if claims is None else check_claims(
        tables, claims, f"`{claims_file}`" if claims_file else DEFAULT_CLAIMS_NAME, find_measurements(results))
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} exists and is not a folder")
    command = ("cldiff-bench leaderboard " + " ".join(map(str, results))
               + (f" --claims {claims_file}" if claims_file else "") + ("" if with_claims else " --no-claims"))
    try:
        paths = publish(fmt, tables, out, skipped, findings, command, read_produced_by(results) + list(produced_by))
    except OSError as exc:
        raise UserError(f"cannot write the leaderboard into {out}: {exc.strerror or exc}") from exc
    if findings is not None:
        print("cldiff-bench: findings: " + ", ".join(f"{n} {v}" for v, n in findings.counts().items()),
              file=sys.stderr)
    return paths
