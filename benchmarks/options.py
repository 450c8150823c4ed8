"""Command-line options of the benchmark scripts from one table (``python benchmarks/bench_*.py`` puts this folder
on the path)."""

from __future__ import annotations


def add_options(parser, rows) -> None:
    """Add one ``--flag`` per row of ``rows``: ``(flag, type, default)`` or ``(flag, type, default, help)``.

    A benchmark's sizes and knobs are plain typed values with a default; one table keeps them readable at a glance
    (flags with choices or actions are added by the caller)."""
    for flag, kind, default, *text in rows:
        parser.add_argument(flag, type=kind, default=default, help=text[0] if text else None)
