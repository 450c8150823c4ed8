"""Process settings numba reads when it is first imported: where its compiled kernels are cached, and how its
OpenMP threads wait. Every dmd module that imports numba calls :func:`prepare_numba` first."""

from __future__ import annotations

import os

from dmd.base.paths import user_cache_dir

__all__ = ["numba_cache_dir", "prepare_numba"]


def numba_cache_dir() -> str:
    """``$XDG_CACHE_HOME/dmd/numba`` (default ``~/.cache/dmd/numba``): numba's cache index keys each kernel by the
    CPU's name and features, so one directory serves every kind of CPU that shares a home directory."""
    return user_cache_dir("numba")


def prepare_numba() -> None:
    """Set numba's defaults before ``import numba`` (settings the user made win; no effect once numba is imported).

    - ``NUMBA_CACHE_DIR`` = :func:`numba_cache_dir`. numba's own default writes the ``cache=True`` machine code
      beside the source, i.e. into ``site-packages/dmd/forces/__pycache__``; ``pip uninstall dmd`` leaves those files,
      and the leftover ``site-packages/dmd`` directory then shadows a later editable install (``import dmd`` became
      an empty namespace package on the reference machine after a CI install).
    - ``OMP_WAIT_POLICY=PASSIVE``: numba's OpenMP threads wait for work without spinning; spinning ones cost 3× the
      pair kernel's CPU on a loaded machine (villin at load 13: 53-60 against 17-18 CPU ms; docs/engine.md "Numba
      pair force in the engine") and nothing measurable on a quiet one. Read when the OpenMP runtime loads.
    """
    os.environ.setdefault("NUMBA_CACHE_DIR", numba_cache_dir())
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
