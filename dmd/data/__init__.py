"""Bundled example data (alanine dipeptide, amber14, for ``dmd quickstart``)."""

__all__: list[str] = []  # data files only, read by path (e.g. dmd/cli/commands/quickstart.py)
