"""Per-user directories dmd writes outside a run's own folder (standard library only: imported before jax)."""

from __future__ import annotations

import os

__all__ = ["user_cache_dir"]


def user_cache_dir(*parts: str) -> str:
    """``$XDG_CACHE_HOME/dmd/<parts…>`` (default ``~/.cache/dmd/<parts…>``): compiled XLA programs, numba kernels."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "dmd", *parts)
