"""Shared helpers of the structure-factor routes: form-factor tables, frame/cell/B/occupancy broadcasting
(float dtype of the positions kept), power-of-two buckets, the sequential map over frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from analysis.formfactors import FormFactorTable, form_factor_table

__all__ = ["as_table", "complex_dtype", "prepare_frames", "bucket", "map_frames"]


def as_table(elements) -> FormFactorTable:
    if isinstance(elements, FormFactorTable):
        return elements
    return form_factor_table(list(elements))


def complex_dtype(dt):
    return jnp.complex128 if jnp.dtype(dt) == jnp.float64 else jnp.complex64


def prepare_frames(pos_frac, cell, b_iso, occ, n_atoms_expected=None):
    """Flatten frames; broadcast cell, B and occupancy; keep the float dtype of ``pos_frac``."""
    pos = jnp.asarray(pos_frac)
    if not jnp.issubdtype(pos.dtype, jnp.floating):
        pos = pos.astype(jnp.result_type(float))
    if pos.ndim < 2 or pos.shape[-1] != 3:
        raise ValueError(f"pos_frac must have shape [..., n_atoms, 3], got {pos.shape}")
    dt = pos.dtype
    lead = pos.shape[:-2]
    n = pos.shape[-2]
    if n_atoms_expected is not None and n != n_atoms_expected:
        raise ValueError(f"pos_frac has {n} atoms but the elements/plan describe {n_atoms_expected}")
    pos = pos.reshape((-1, n, 3))
    n_frames = pos.shape[0]
    cell = jnp.asarray(cell, dt)
    if cell.shape[-1] != 6:
        raise ValueError(f"cell must have shape [..., 6] (a, b, c Å; α, β, γ degrees), got {cell.shape}")
    cell = (
        jnp.broadcast_to(cell, lead + (6,)).reshape((n_frames, 6))
        if cell.ndim > 1
        else jnp.broadcast_to(cell, (n_frames, 6))
    )
    b = jnp.zeros(n, dt) if b_iso is None else jnp.broadcast_to(jnp.asarray(b_iso, dt), (n,))
    o = jnp.ones(n, dt) if occ is None else jnp.broadcast_to(jnp.asarray(occ, dt), (n,))
    return pos, cell, b, o, lead


def bucket(n: int, minimum: int = 8) -> int:
    """Next power of two ≥ max(n, minimum)."""
    return 1 << max(int(n), minimum, 1).__sub__(1).bit_length()


def map_frames(fn, xs, frame_batch: int):
    if frame_batch <= 1:
        return jax.lax.map(fn, xs)
    return jax.lax.map(fn, xs, batch_size=frame_batch)
