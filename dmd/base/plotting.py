"""Figures: one place that picks the non-interactive backend and saves PNGs atomically.

Every plot in dmd, analysis and fitting is made with :func:`new_figure` (or after :func:`pyplot`) and written with
:func:`save_figure`, so no module calls ``matplotlib.use`` itself and no figure is half-written on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dmd.base.io import atomic_path


def pyplot():
    """Return ``matplotlib.pyplot`` with the non-interactive Agg backend selected (idempotent)."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``plt.subplots`` on the Agg backend; returns ``(fig, axes)``."""
    return pyplot().subplots(nrows, ncols, **kwargs)


def save_figure(fig, path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically and close it.

    Args:
      fig: the figure.
      path: destination (``.png``).
      inputs: the run's input files, which the figure must never overwrite.
      dpi: resolution.
    """
    plt = pyplot()
    with atomic_path(path, inputs) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


__all__ = ["new_figure", "pyplot", "save_figure"]
