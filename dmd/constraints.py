"""Holonomic distance constraints inside the integrators: SHAKE/RATTLE for bonds, SETTLE for rigid water.

For constraint k between atoms i, j with length d_k (nm), positions must satisfy
|x_i − x_j| = d_k and velocities (x_i − x_j)·(v_i − v_j) = 0.

* SHAKE (Ryckaert, Ciccotti & Berendsen 1977, J. Comput. Phys. 23, 327,
  doi:10.1016/0021-9991(77)90098-5): after an unconstrained move x_ref → x, move atoms along the
  *reference* bond vectors r_k = x_i^ref − x_j^ref until every |s_k|² = d_k² (s_k = x_i − x_j)::

      g_k = (d_k² − |s_k|²) / (2 (s_k·r_k)(1/m_i + 1/m_j));  x_i += g_k r_k / m_i;  x_j −= g_k r_k / m_j

  iterated (all constraints at once, Jacobi style, vectorized) to a relative tolerance.
* RATTLE velocity stage (Andersen 1983, J. Comput. Phys. 52, 24, doi:10.1016/0021-9991(83)90014-1)::

      k = (v_i − v_j)·s_k / (|s_k|² (1/m_i + 1/m_j));  v_i −= k s_k / m_i;  v_j += k s_k / m_j

* SETTLE (Miyamoto & Kollman 1992, J. Comput. Chem. 13, 952, doi:10.1002/jcc.540130805) solves a
  rigid three-site water analytically; here rigid waters (``Constraints.settle``) are solved with the
  same SHAKE/RATTLE iteration on their three distances, to the same tolerance (see
  :func:`make_constraint_fns`).

Everything is pure jax (``lax.while_loop``), so it runs inside jitted, scanned steps and supports
forward-mode differentiation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dmd.system import Constraints

__all__ = ["ConstraintFns", "make_constraint_fns", "n_constraint_dof"]


@dataclasses.dataclass(frozen=True)
class ConstraintFns:
    """``positions(x, x_ref) -> x_c`` and ``velocities(v, x) -> v_c``, plus the constraint count."""

    positions: object
    velocities: object
    n_constraints: int


def n_constraint_dof(constraints: Constraints | None) -> int:
    """Degrees of freedom removed by ``constraints`` (one per distance)."""
    return 0 if constraints is None else constraints.n_constraints


def _all_pairs(constraints: Constraints) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.asarray(constraints.pairs, dtype=np.int64).reshape(-1, 2)
    lengths = np.asarray(constraints.lengths, dtype=float).reshape(-1)
    if constraints.settle is not None and len(constraints.settle):
        if constraints.settle_geometry is None:
            raise ValueError("Constraints.settle given without settle_geometry (d_OH, d_HH)")
        w = np.asarray(constraints.settle, dtype=np.int64).reshape(-1, 3)
        d_oh, d_hh = constraints.settle_geometry
        extra = np.concatenate([w[:, [0, 1]], w[:, [0, 2]], w[:, [1, 2]]])
        extra_len = np.concatenate([np.full(len(w), d_oh), np.full(len(w), d_oh), np.full(len(w), d_hh)])
        pairs = np.concatenate([pairs, extra])
        lengths = np.concatenate([lengths, extra_len])
    return pairs, lengths


def make_constraint_fns(
    constraints: Constraints | None, masses, *, tol: float | None = None, max_iter: int = 500, box=None
) -> ConstraintFns | None:
    """SHAKE/RATTLE solvers for ``constraints`` (None if there are none).

    Args:
      constraints: :class:`dmd.system.Constraints`.
      masses: ``[n_atoms]`` amu.
      tol: relative tolerance on |s|² − d² (default 1e-10 in float64, 1e-5 in float32 = OpenMM's
        default constraint tolerance; float32 rounding of nm-scale coordinates stalls near 2e-6).
      max_iter: iteration cap. Iteration also stops when the error no longer decreases (rounding
        floor reached), so a too-tight tolerance costs a few iterations, not ``max_iter``.
      box: unused (constraints are between atoms of one molecule, never across the box).

    Returns:
      :class:`ConstraintFns` or None.
    """
    if constraints is None or constraints.n_constraints == 0:
        return None
    pairs, lengths = _all_pairs(constraints)
    masses = jnp.asarray(masses)
    dtype = masses.dtype
    if tol is None:
        tol = 1e-10 if dtype == jnp.float64 else 1e-5
    i = jnp.asarray(pairs[:, 0], jnp.int32)
    j = jnp.asarray(pairs[:, 1], jnp.int32)
    d2 = jnp.asarray(lengths, dtype) ** 2
    inv_m = 1.0 / masses
    w_ij = inv_m[i] + inv_m[j]
    # Jacobi (simultaneous) updates overshoot where constraints share an atom: damp constraint k by
    # 1/(1 + Σ coupling), coupling = (1/m_a)/(1/m_i + 1/m_j) summed over the other constraints at each
    # shared atom a. X–H bonds get ≈ 0.9 (light H, heavy X), a rigid water's distances ≈ 0.5.
    m_np = np.asarray(masses, float)
    inv_np = 1.0 / m_np
    w_np = inv_np[pairs[:, 0]] + inv_np[pairs[:, 1]]
    load = np.bincount(pairs.ravel(), minlength=len(m_np))  # constraints per atom
    coupling = ((load[pairs[:, 0]] - 1) * inv_np[pairs[:, 0]] + (load[pairs[:, 1]] - 1) * inv_np[pairs[:, 1]]) / w_np
    relax = jnp.asarray(1.0 / (1.0 + coupling), dtype)
    n_atoms = int(masses.shape[0])
    # below this error a non-decreasing step means the rounding floor is reached: stop there
    floor = 1e3 * float(jnp.finfo(dtype).eps)

    def positions(x, x_ref):
        r = x_ref[i] - x_ref[j]

        def cond(c):
            it, _, err, prev = c
            return (it < max_iter) & (err > tol) & ((err < prev) | (err > floor))

        def body(c):
            it, x, err_in, _ = c
            s = x[i] - x[j]
            diff = d2 - jnp.sum(s * s, -1)
            g = relax * diff / (2 * jnp.sum(s * r, -1) * w_ij)
            dx = jnp.zeros((n_atoms, x.shape[1]), x.dtype)
            dx = dx.at[i].add((g * inv_m[i])[:, None] * r).at[j].add(-(g * inv_m[j])[:, None] * r)
            x = x + dx
            s = x[i] - x[j]
            err = jnp.max(jnp.abs(jnp.sum(s * s, -1) - d2) / d2)
            return it + 1, x, err, err_in

        s0 = x[i] - x[j]
        err0 = jnp.max(jnp.abs(jnp.sum(s0 * s0, -1) - d2) / d2)
        inf = jnp.asarray(jnp.inf, err0.dtype)
        _, x, _, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, err0, inf))
        return x

    def velocities(v, x):
        s = x[i] - x[j]
        s2 = jnp.sum(s * s, -1)
        scale = jnp.sqrt(s2 / d2)  # relative velocity tolerance scale

        def rel(v):
            return jnp.sum((v[i] - v[j]) * s, -1)

        def cond(c):
            it, v, err, prev = c
            return (it < max_iter) & (err > tol) & ((err < prev) | (err > floor))

        def body(c):
            it, v, err_in, _ = c
            k = relax * rel(v) / (s2 * w_ij)
            dv = jnp.zeros((n_atoms, v.shape[1]), v.dtype)
            dv = dv.at[i].add(-(k * inv_m[i])[:, None] * s).at[j].add((k * inv_m[j])[:, None] * s)
            v = v + dv
            vmag = jnp.sqrt(jnp.sum((v[i] - v[j]) ** 2, -1) + 1e-30)
            err = jnp.max(jnp.abs(rel(v)) / (vmag * jnp.sqrt(s2) * scale + 1e-30))
            return it + 1, v, err, err_in

        big = jnp.asarray(jnp.finfo(v.dtype).max, v.dtype)
        inf = jnp.asarray(jnp.inf, v.dtype)
        _, v, _, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), v, big, inf))
        return v

    return ConstraintFns(positions, velocities, int(len(pairs)))
