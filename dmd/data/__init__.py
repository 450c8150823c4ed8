"""Bundled example data (alanine dipeptide, amber14, for ``dmd quickstart``)."""
