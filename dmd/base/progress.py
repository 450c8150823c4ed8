"""The one progress-bar factory: tqdm on stderr, switched by a single ``enabled`` flag.

Library functions take ``progress: bool`` and pass it here; the CLI maps ``--no-progress``/``-q`` onto it. Bars
go to stderr so that ``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import sys

_SHOWN = {"bars": True}  # the process-wide switch: ``dmd -q`` turns every bar off (set_progress)


def set_progress(enabled: bool) -> None:
    """Turn every progress bar of this process on or off (``dmd -q`` calls it with False); a bar also needs its
    own ``enabled`` to be shown."""
    _SHOWN["bars"] = bool(enabled)


def progress_enabled() -> bool:
    """Whether bars are on process-wide (see :func:`set_progress`)."""
    return _SHOWN["bars"]


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
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and _SHOWN["bars"]), **kwargs)


def track(iterable, *, desc: str = "", unit: str = "it", enabled: bool = True, total: int | None = None, **kwargs):
    """Wrap an iterable in a progress bar (see :func:`progress_bar`)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not (enabled and _SHOWN["bars"]), **kwargs)


def close_all() -> None:
    """Close every bar still open (the CLI calls it before printing an error, so the message starts on a line of
    its own instead of being glued onto a bar)."""
    from tqdm.auto import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


__all__ = ["close_all", "progress_bar", "progress_enabled", "set_progress", "track"]
