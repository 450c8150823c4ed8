"""Direct-sum structure factors F(h) = Σ_j occ_j f_j(s) exp(−B_j s²/4) exp(2πi h·x_j), chunked over hkl
(the reference route; equation and conventions in :mod:`analysis.structure_factors`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import analysis.structure_factors.common as common
from analysis import cell as cell_mod
from analysis.formfactors import form_factor

__all__ = ["structure_factors_direct"]


@partial(jax.jit, static_argnames=("chunk", "frame_batch"))
def _direct(hkl, pos, cell, types, a, b, c, b_iso, occ, ff, *, chunk: int, frame_batch: int):
    dt = pos.dtype
    m = hkl.shape[0]
    n_chunks = -(-m // chunk)
    pad = n_chunks * chunk - m
    hkl_p = jnp.concatenate([hkl, jnp.zeros((pad, 3), hkl.dtype)]).astype(dt).reshape(n_chunks, chunk, 3)
    if ff is not None:  # caller-supplied form factors [T, M] replace IT92
        ff_p = jnp.pad(ff, ((0, 0), (0, pad))).reshape(ff.shape[0], n_chunks, chunk).transpose(1, 0, 2)
    else:
        ff_p = jnp.zeros((n_chunks, 0, chunk), dt)

    def frame(args):
        x, cl = args
        gstar = cell_mod.reciprocal_metric(cl)

        def one_chunk(hf):
            h, f_given = hf
            inv_d2 = jnp.einsum("ci,ij,cj->c", h, gstar, h)  # [C] 1/d², Å⁻²
            f = f_given if ff is not None else form_factor(inv_d2, a, b, c)  # [T, C]
            w = occ[None, :] * f.T[:, types] * jnp.exp(-b_iso[None, :] * inv_d2[:, None] / 4)  # [C, N]
            t = h @ x.T  # [C, N] cycles
            t = t - jnp.round(t)  # reduce before 2π: keeps float32 phases accurate
            ph = 2 * jnp.pi * t
            return jax.lax.complex(jnp.sum(w * jnp.cos(ph), axis=1), jnp.sum(w * jnp.sin(ph), axis=1))

        return jax.lax.map(one_chunk, (hkl_p, ff_p)).reshape(-1)[:m]

    return common.map_frames(frame, (pos, cell), frame_batch).astype(common.complex_dtype(dt))


def structure_factors_direct(
    hkl,
    pos_frac,
    cell,
    elements,
    b_iso=None,
    occ=None,
    *,
    chunk: int | None = None,
    frame_batch: int = 1,
    form_factors=None,
):
    """Direct-sum structure factors (the equation of :mod:`analysis.structure_factors`).

    Args:
      hkl: int ``[M, 3]`` Miller indices of ``cell`` (float indices allowed: fractional grids).
      pos_frac: ``[..., N, 3]`` fractional coordinates; leading axes are frames.
      cell: ``[6]`` or ``[..., 6]`` (a, b, c Å; α, β, γ degrees).
      elements: N element symbols, or a :class:`~analysis.formfactors.FormFactorTable`.
      b_iso: ``[N]`` isotropic B (Å²), default 0. occ: ``[N]`` occupancies, default 1.
      chunk: reflections per chunk (memory ≈ 6 · chunk · N floats); default keeps ≈ 4 M terms per chunk.
      frame_batch: frames vmapped together inside the sequential map over frames.
      form_factors: optional ``[n_types, M]`` form factors (electrons) per type of ``elements`` (a
        FormFactorTable's type order) replacing IT92, e.g. another table for comparisons; fixed for the
        given reflections (not recomputed when the cell changes).

    Returns:
      ``[..., M]`` complex (complex64 for float32 inputs, complex128 for float64), electrons.
    """
    table = common.as_table(elements)
    pos, cl, b, o, lead = common.prepare_frames(pos_frac, cell, b_iso, occ, len(table.types))
    hkl = jnp.asarray(hkl)
    if hkl.ndim != 2 or hkl.shape[1] != 3:
        raise ValueError(f"hkl must have shape [M, 3], got {hkl.shape}")
    # pad atoms (occupancy 0), types and reflections to power-of-two buckets so that systems of
    # similar size share one compiled function (no recompilation per structure or per hkl list)
    n, m, n_types = pos.shape[1], hkl.shape[0], len(table.symbols)
    n_b, m_b, t_b = common.bucket(n), common.bucket(m), common.bucket(n_types, 4)
    dt = pos.dtype
    pos = jnp.pad(pos, ((0, 0), (0, n_b - n), (0, 0)))
    b = jnp.pad(b, (0, n_b - n))
    o = jnp.pad(o, (0, n_b - n))
    types = np.pad(table.types, (0, n_b - n))
    a_, b_, c_ = (np.pad(x, [(0, t_b - n_types)] + [(0, 0)] * (x.ndim - 1)) for x in (table.a, table.b, table.c))
    hkl = jnp.pad(hkl, ((0, m_b - m), (0, 0)))
    ff = None
    if form_factors is not None:
        ff = jnp.asarray(form_factors, dt)
        if ff.shape != (n_types, m):
            raise ValueError(f"form_factors must have shape [n_types={n_types}, M={m}], got {ff.shape}")
        ff = jnp.pad(ff, ((0, t_b - n_types), (0, m_b - m)))
    chunk = int(chunk or max(8, min(4096, common.bucket(4_000_000 // n_b) // 2)))
    chunk = max(1, min(chunk, m_b))
    out = _direct(
        hkl,
        pos,
        cl,
        jnp.asarray(types),
        jnp.asarray(a_, dt),
        jnp.asarray(b_, dt),
        jnp.asarray(c_, dt),
        b,
        o,
        ff,
        chunk=chunk,
        frame_batch=frame_batch,
    )[:, :m]
    return out.reshape(lead + (m,))
