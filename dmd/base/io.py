"""Atomic file output shared by every writer in dmd, analysis and fitting (base layer).

Outputs are written to a temporary file in the destination folder and renamed
into place, so an interrupted run never leaves a half-written file, and a
writer refuses to overwrite one of the run's inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Args:
      path: final destination.
      inputs: files that must not be overwritten (the run's inputs).

    Raises:
      UserInputError: if ``path`` is one of ``inputs``.
    """
    from dmd.base.errors import UserInputError

    dest = Path(path).resolve()
    for inp in inputs:
        if inp is not None and Path(inp).exists() and Path(inp).resolve() == dest:
            raise UserInputError(f"{path}: output would overwrite an input file; choose another --out path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=dest.suffix or ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files: give outputs the permissions a plain open() would (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def to_jsonable(obj):
    """``obj`` with numpy/jax arrays and scalars as lists and numbers, paths as strings, NaN as None and ±inf
    as ``"inf"``/``"-inf"`` (what :func:`write_json` writes; ``dmd --json`` prints the same)."""
    return _to_jsonable(obj)


def write_json(path: str | os.PathLike, data: dict, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``data`` as indented JSON atomically (numpy/jax arrays become lists)."""
    with atomic_path(path, inputs) as tmp:
        tmp.write_text(json.dumps(_to_jsonable(data), indent=2) + "\n")
    return Path(path)


def savez(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), **arrays) -> Path:
    """``np.savez`` atomically."""
    with atomic_path(path, inputs) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)
