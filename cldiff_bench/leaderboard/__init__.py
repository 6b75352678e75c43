"""Leaderboards and regression checks, built only from result files."""
from .aggregate import METRICS, build_tables, load_results, mean_and_standard_error
from .check import compare, parse_tolerances, report
from .claims import DEFAULT_CLAIMS, Claim, Findings, check_claims, load_claims
from .formats import FORMATS, parse_tex_cell, parse_tex_tabulars, publish
from .inputs import read_result
from .render import format_cell, parse_cell, parse_markdown_table, render, table_markdown

__all__ = ["METRICS", "build_tables", "load_results", "mean_and_standard_error", "compare", "parse_tolerances",
           "report", "DEFAULT_CLAIMS", "Claim", "Findings", "check_claims", "load_claims", "FORMATS",
           "parse_tex_cell", "parse_tex_tabulars", "publish", "read_result", "format_cell", "parse_cell",
           "parse_markdown_table", "render", "table_markdown"]
