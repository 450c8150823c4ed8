"""One search program for every lattice system (issue 21 item 1): the system as a traced code, x padded to six.

The batch programs (batch.py) take reciprocal-metric parameters x padded to :data:`P_MAX` = 6 entries (the system's
own first, zeros after), design rows padded with zero columns (``rows @ x`` is then the same sums) and to a common
row count, and the lattice system as an integer code (:func:`system_code`, an index into :data:`SYSTEMS`) that selects
the per-system reduction, volume and random cell with ``lax.switch``: under ``vmap`` the code is not batched, so only
the selected branch runs. One compilation then serves all six systems (a cold ``dmd index`` compiled ~11 programs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis.cell import reciprocal_metric_from_params as gstar_from_x
from analysis.indexing.candidates import random_x
from analysis.indexing.reduce import reduce_x

__all__ = [
    "SYSTEMS",
    "N_PARAMS",
    "P_MAX",
    "system_code",
    "active",
    "pad_columns",
    "pad_rows",
    "reduce6",
    "volume_from_x",
    "volume6",
    "random6",
]

SYSTEMS = ("cubic", "tetragonal", "hexagonal", "orthorhombic", "monoclinic", "triclinic")
N_PARAMS = {"cubic": 1, "tetragonal": 2, "hexagonal": 2, "orthorhombic": 3, "monoclinic": 4, "triclinic": 6}
P_MAX = 6


def system_code(system):
    """The integer code of a lattice system (a traced code passes through)."""
    return SYSTEMS.index(system) if isinstance(system, str) else system


def active(code, n: int = P_MAX):
    """``[n]`` bool: which of the padded parameters the system ``code`` has (its first p)."""
    p = jnp.asarray([N_PARAMS[s] for s in SYSTEMS], jnp.int32)[code]
    return jnp.arange(n) < p


def pad_columns(a, n: int = P_MAX):
    """Pad the last axis of ``a`` (numpy or jax) with zeros to ``n``."""
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, n - a.shape[-1])])


def pad_rows(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Design rows ``[R, p]`` → ``[n_rows, P_MAX]`` (zero rows after R; the programs skip them, ``n_rows`` traced)."""
    out = np.zeros((max(n_rows, rows.shape[0]), P_MAX), rows.dtype)
    out[: rows.shape[0], : rows.shape[1]] = rows
    return out


def _switch(code, branch, *args):
    if isinstance(code, str):
        return branch(code, *args)
    return jax.lax.switch(code, [lambda *a, s=s: branch(s, *a) for s in SYSTEMS], *args)


def reduce6(x, code):
    """:func:`reduce.reduce_x` of one padded candidate ``[6]`` of system ``code`` (padded entries stay 0)."""
    return _switch(code, lambda s, x: pad_columns(reduce_x(x[: N_PARAMS[s]], s)), x)


def volume_from_x(x, system: str):
    """Cell volume (Å³) = 1/sqrt(det G*); NaN where G* is not positive definite."""
    g = gstar_from_x(x, system)
    det = jnp.linalg.det(g)
    m1 = g[..., 0, 0]
    m2 = g[..., 0, 0] * g[..., 1, 1] - g[..., 0, 1] ** 2
    ok = (m1 > 0) & (m2 > 0) & (det > 0)
    return jnp.where(ok, 1.0 / jnp.sqrt(jnp.where(ok, det, 1.0)), jnp.nan)


def volume6(x, code):
    """:func:`volume_from_x` of one padded candidate ``[6]`` of system ``code``."""
    return _switch(code, lambda s, x: volume_from_x(x[: N_PARAMS[s]], s), x)


def random6(key, code, vlo, vhi, dtype):
    """:func:`candidates.random_x` of system ``code``, padded to ``[6]``."""
    return _switch(code, lambda s, k, lo, hi: pad_columns(random_x(k, s, lo, hi, dtype).astype(dtype)), key, vlo, vhi)
