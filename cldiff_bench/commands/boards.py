"""`cldiff-bench leaderboard` (a board from result files) and `cldiff-bench check` (a result against a reference)."""
from __future__ import annotations

from pathlib import Path

from ..arguments import retire_output_spellings
from . import CommandSpec


def add_leaderboard_arguments(parser) -> None:
    parser.add_argument("results", nargs="+", type=Path, help="result files or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("leaderboard"), help="output folder (default ./leaderboard)")
    retire_output_spellings(parser)
    parser.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"],
                        help="markdown: README.md + plots/ (default); csv: leaderboard.csv + findings.csv; "
                             "latex: leaderboard.tex (booktabs)")
    claims = parser.add_mutually_exclusive_group()
    claims.add_argument("--claims", type=Path, default=None, metavar="FILE",
                        help="check the claims in this TOML file (default: the study's, shipped with the suite)")
    claims.add_argument("--no-claims", action="store_true", help="no findings")
    parser.add_argument("--strict", action="store_true",
                        help="a malformed result file is an error (default: skipped)")
    parser.add_argument("--produced-by", action="append", default=None, metavar="COMMAND",
                        help="also quote this command as one that produced the result files (repeatable); the "
                             "lasting way is a line in produced-by.txt beside them, which sweeps write and every "
                             "build reads")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="rank results of different versions or evaluation settings together, flagged")


def leaderboard_command(args, registry) -> int:
    from ..leaderboard.build import build_leaderboard
    for path in build_leaderboard(args.results, args.out, args.format, args.claims, not args.no_claims, args.strict,
                                  args.allow_mixed, args.produced_by or ()):
        print(path)
    return 0


def add_check_arguments(parser) -> None:
    parser.add_argument("result", type=Path)
    parser.add_argument("--against", type=Path, required=True, help="the reference result file")
    parser.add_argument("--tolerance", action="append", default=[], metavar="METRIC=ABS[+REL%]",
                        help="one-sided tolerance, e.g. fid=0+25%% (repeatable; defaults per metric)")
    parser.add_argument("--all-tasks", action="store_true", help="check every task, not only the last")


def check_command(args, registry) -> int:
    from ..leaderboard import compare, parse_tolerances, read_result, report
    result = read_result(args.result, "result file")
    reference = read_result(args.against, "reference file")
    findings = compare(result, reference, parse_tolerances(args.tolerance), args.all_tasks)
    print(report(findings))
    return 0 if all(f.ok for f in findings) else 1


LEADERBOARD = CommandSpec("leaderboard", "build the leaderboard (markdown and plots, csv or latex) from result files, "
                          "with findings: claims checked against its numbers", add_leaderboard_arguments,
                          leaderboard_command)
CHECK = CommandSpec("check", "compare a result to a reference; exit 1 when a metric got worse", add_check_arguments,
                    check_command)
