"""The one progress-bar factory: tqdm on stderr, switched by a single ``enabled`` flag.

Library functions take ``progress: bool`` and pass it here; the CLI maps ``--no-progress``/``-q`` onto it. Bars
go to stderr so that ``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import os
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

    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and _SHOWN["bars"]), **_stream(kwargs))


def track(iterable, *, desc: str = "", unit: str = "it", enabled: bool = True, total: int | None = None, **kwargs):
    """Wrap an iterable in a progress bar (see :func:`progress_bar`)."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=not (enabled and _SHOWN["bars"]), **_stream(kwargs)
    )


def _stream(kwargs: dict) -> dict:
    """``kwargs`` with the bar's stream (stderr) and width: the terminal's width, followed as it changes, when the
    stream is a terminal; else ``COLUMNS`` - 1 (tqdm's width on a terminal) when set, as ``dmd``'s fd-2 filter
    (:mod:`dmd.cli.native_stderr`) does while stderr goes through its pipe; else tqdm's default."""
    kwargs.setdefault("file", sys.stderr)
    if "ncols" in kwargs or "dynamic_ncols" in kwargs:
        return kwargs
    try:
        tty = kwargs["file"].isatty()
    except (AttributeError, OSError, ValueError):
        tty = False
    cols = os.environ.get("COLUMNS", "")
    if not tty and cols.isdigit() and int(cols) > 1:
        kwargs["ncols"] = int(cols) - 1
    else:
        kwargs["dynamic_ncols"] = True
    return kwargs


def close_all() -> None:
    """Close every bar still open (the CLI calls it before printing an error, so the message starts on a line of
    its own instead of being glued onto a bar)."""
    from tqdm.auto import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


__all__ = ["close_all", "progress_bar", "progress_enabled", "set_progress", "track"]
