"""The one progress-bar factory: tqdm on stderr, switched by a single ``enabled`` flag.

Library functions take ``progress: bool`` and pass it here; the CLI maps ``--no-progress``/``-q`` onto it. Bars
go to stderr so that ``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import sys


def progress_bar(total: int | None = None, *, desc: str = "", unit: str = "it", enabled: bool = True, **kwargs):
    """Return a tqdm bar (a silent one when ``enabled`` is false).

    Args:
      total: number of units, or None when unknown.
      desc: label shown before the bar.
      unit: unit name (``"step"``, ``"frame"``, ``"round"`` ...).
      enabled: show the bar; False gives a bar object whose ``update``/``close`` do nothing visible.
      **kwargs: passed to tqdm (``initial``, ``leave`` ...).
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, **kwargs)


def track(iterable, *, desc: str = "", unit: str = "it", enabled: bool = True, total: int | None = None, **kwargs):
    """Wrap an iterable in a progress bar (see :func:`progress_bar`)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, **kwargs)


__all__ = ["progress_bar", "track"]
