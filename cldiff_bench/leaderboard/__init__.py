"""Leaderboards and regression checks, built only from result files."""
from .aggregate import METRICS, build_tables, load_results, mean_and_standard_error
from .check import compare, parse_tolerances, report
from .render import format_cell, parse_cell, parse_markdown_table, render, table_markdown

__all__ = ["METRICS", "build_tables", "load_results", "mean_and_standard_error", "compare", "parse_tolerances",
           "report", "format_cell", "parse_cell", "parse_markdown_table", "render", "table_markdown"]
