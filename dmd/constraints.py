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
  rigid three-site water analytically (:func:`settle_positions`): in a frame built from the old
  molecular plane, the new O–H–H triangle is placed by three angles (φ, ψ about the in-plane axes,
  θ about the normal) with closed-form sines, keeping the centre of mass of the unconstrained move.
  Its velocity stage (:func:`settle_velocities`) solves the 3 × 3 RATTLE system of each water exactly.
  Both give the converged SHAKE/RATTLE answer (tested to 1e-10 in float64) without iterating.

Everything is pure jax (``lax.while_loop``), so it runs inside jitted, scanned steps and supports
forward-mode differentiation.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dmd.system import Constraints

__all__ = [
    "ConstraintFns",
    "constraint_anchors",
    "make_constraint_fns",
    "n_constraint_dof",
    "settle_positions",
    "settle_velocities",
]


@dataclasses.dataclass(frozen=True)
class ConstraintFns:
    """``positions(x, x_ref) -> x_c`` and ``velocities(v, x) -> v_c``, plus the constraint count."""

    positions: object
    velocities: object
    n_constraints: int


def n_constraint_dof(constraints: Constraints | None) -> int:
    """Degrees of freedom removed by ``constraints`` (one per distance)."""
    return 0 if constraints is None else constraints.n_constraints


def constraint_anchors(constraints: Constraints | None, n_atoms: int) -> np.ndarray:
    """``[n_atoms]`` int: for each atom, the lowest-indexed atom of its constraint cluster (itself if unconstrained).

    Constraints (SHAKE pairs and SETTLE triples) only couple atoms of one cluster, so the solvers are translation
    invariant per cluster: an integrator may solve them in coordinates relative to the anchor (a few Å instead of
    a few nm), where float32 resolves a step's displacement ~100× better (docs/engine.md, "NVE drift in float32").
    """
    parent = np.arange(n_atoms)
    groups = [] if constraints is None else [np.asarray(constraints.pairs, np.int64).reshape(-1, 2)]
    if constraints is not None and constraints.settle is not None and len(constraints.settle):
        w = np.asarray(constraints.settle, np.int64).reshape(-1, 3)
        groups += [w[:, [0, 1]], w[:, [0, 2]]]
    edges = np.concatenate(groups) if groups else np.zeros((0, 2), np.int64)
    while True:  # label propagation: every atom takes the least label on its edges until nothing changes
        lo = np.minimum(parent[edges[:, 0]], parent[edges[:, 1]])
        new = parent.copy()
        np.minimum.at(new, edges[:, 0], lo)
        np.minimum.at(new, edges[:, 1], lo)
        new = new[new]
        if np.array_equal(new, parent):
            return parent
        parent = new


def _unit(v):
    """``[..., 3]`` → unit vectors, each component divided by the norm separately: XLA rewrites a division by a
    broadcast ``[..., 1]`` norm into a multiplication by its rounded reciprocal, which in float32 shortens every unit
    vector by 9e-9 on average; SETTLE's frame built from such vectors lost 2.3e-8 of a free water's kinetic energy
    per step (docs/engine.md, "NVE drift in float32"). Elementwise division of equal shapes is correctly rounded."""
    n = jnp.linalg.norm(v, axis=-1)
    return jnp.stack([v[..., k] / n for k in range(v.shape[-1])], axis=-1)


def settle_positions(old, new, m_o: float, m_h: float, d_oh: float, d_hh: float):
    """SETTLE: rigid-water positions after an unconstrained move (Miyamoto & Kollman 1992).

    Args:
      old: ``[W, 3, 3]`` nm, (O, H1, H2) positions before the move (satisfying the constraints).
      new: ``[W, 3, 3]`` nm, positions after the unconstrained move.
      m_o, m_h: masses, amu. d_oh, d_hh: constrained O–H and H–H distances, nm.

    Returns:
      ``[W, 3, 3]`` nm: the constrained positions (same centre of mass as ``new``).
    """
    m_tot = m_o + 2.0 * m_h
    rc = 0.5 * d_hh
    height = math.sqrt(d_oh**2 - rc**2)
    ra = 2.0 * m_h * height / m_tot  # O to the centre of mass, along the bisector
    rb = height - ra  # centre of mass to the H–H midpoint
    a0, b0, c0 = old[:, 0], old[:, 1], old[:, 2]
    com = (m_o * new[:, 0] + m_h * new[:, 1] + m_h * new[:, 2]) / m_tot
    a1, b1, c1 = new[:, 0] - com, new[:, 1] - com, new[:, 2] - com
    b0r, c0r = b0 - a0, c0 - a0
    ez = _unit(jnp.cross(b0r, c0r))  # normal of the old plane
    ex = _unit(jnp.cross(a1, ez))
    ey = jnp.cross(ez, ex)

    def proj(v):
        return jnp.sum(v * ex, -1), jnp.sum(v * ey, -1), jnp.sum(v * ez, -1)

    xb0, yb0, _ = proj(b0r)
    xc0, yc0, _ = proj(c0r)
    _, _, za1 = proj(a1)
    xb1, yb1, zb1 = proj(b1)
    xc1, yc1, zc1 = proj(c1)
    sinphi = za1 / ra
    cosphi = jnp.sqrt(1.0 - sinphi**2)
    sinpsi = (zb1 - zc1) / (2.0 * rc * cosphi)
    cospsi = jnp.sqrt(1.0 - sinpsi**2)
    ya2 = ra * cosphi
    xb2 = -rc * cospsi
    t1 = -rb * cosphi
    t2 = rc * sinpsi * sinphi
    yb2, yc2 = t1 - t2, t1 + t2
    alpha = xb2 * (xb0 - xc0) + yb0 * yb2 + yc0 * yc2
    beta = xb2 * (yc0 - yb0) + xb0 * yb2 + xc0 * yc2
    gamma = xb0 * yb1 - xb1 * yb0 + xc0 * yc1 - xc1 * yc0
    al2be2 = alpha**2 + beta**2
    sinthe = (alpha * gamma - beta * jnp.sqrt(al2be2 - gamma**2)) / al2be2
    costhe = jnp.sqrt(1.0 - sinthe**2)
    a3 = (-ya2 * sinthe, ya2 * costhe, za1)
    b3 = (xb2 * costhe - yb2 * sinthe, xb2 * sinthe + yb2 * costhe, zb1)
    c3 = (-xb2 * costhe - yc2 * sinthe, -xb2 * sinthe + yc2 * costhe, zc1)

    def back(v):
        return com + v[0][:, None] * ex + v[1][:, None] * ey + v[2][:, None] * ez

    return jnp.stack([back(a3), back(b3), back(c3)], axis=1)


_WATER_BONDS = ((0, 1), (0, 2), (1, 2))


def settle_velocities(v, x, m_o: float, m_h: float):
    """Remove the velocity components along a rigid water's three distances (RATTLE, solved exactly).

    With constraint gradients G (3 × 9, rows s_k at atom i_k and −s_k at atom j_k, s_k = x_i − x_j) and
    masses M, v' = v − M⁻¹Gᵀλ with (G M⁻¹ Gᵀ) λ = G v, so that G v' = 0.

    Args:
      v: ``[W, 3, 3]`` nm/ps; x: ``[W, 3, 3]`` nm constrained positions; m_o, m_h: amu.
    """
    inv_m = jnp.asarray([1.0 / m_o, 1.0 / m_h, 1.0 / m_h], x.dtype)
    sel = np.zeros((3, 3))
    for k, (i, j) in enumerate(_WATER_BONDS):
        sel[k, i], sel[k, j] = 1.0, -1.0
    sel = jnp.asarray(sel, x.dtype)  # [bond, atom]
    s = jnp.einsum("ka,wad->wkd", sel, x)  # [W, 3 bonds, 3]
    g = sel[None, :, :, None] * s[:, :, None, :]  # [W, bond, atom, xyz]
    a = jnp.einsum("wkad,a,wlad->wkl", g, inv_m, g)
    rhs = jnp.einsum("wkad,wad->wk", g, v)
    # 3 × 3 solved by the adjugate (Cramer), elementwise: jnp.linalg.solve lowers to a batched LAPACK LU custom
    # call, whose lowering imports scipy.linalg (~0.6 s of every start-up, cached or not) and which runs one tiny
    # getrf per water per step; a = G M⁻¹ Gᵀ of a water triangle is well conditioned, so Cramer loses nothing
    r0, r1, r2 = a[:, 0], a[:, 1], a[:, 2]
    cols = jnp.stack([jnp.cross(r1, r2), jnp.cross(r2, r0), jnp.cross(r0, r1)], axis=-1)  # adj(a) = det · a⁻¹
    det = jnp.sum(r0 * cols[:, :, 0], axis=-1)
    lam = jnp.einsum("wkl,wl->wk", cols, rhs) / det[:, None]
    return v - inv_m[None, :, None] * jnp.einsum("wkad,wk->wad", g, lam)


def make_constraint_fns(
    constraints: Constraints | None, masses, *, tol: float | None = None, max_iter: int = 500, box=None
) -> ConstraintFns | None:
    """Constraint solvers for ``constraints`` (None if there are none): SHAKE/RATTLE iteration for the
    distance pairs, analytic SETTLE for the rigid waters (``constraints.settle``).

    Args:
      constraints: :class:`dmd.system.Constraints`.
      masses: ``[n_atoms]`` amu.
      tol: SHAKE/RATTLE relative tolerance on |s|² − d² (default 1e-10 in float64, 1e-5 in float32 = OpenMM's
        default constraint tolerance; float32 rounding of nm-scale coordinates stalls near 2e-6).
      max_iter: iteration cap. Iteration also stops when the error no longer decreases (rounding
        floor reached), so a too-tight tolerance costs a few iterations, not ``max_iter``.
      box: unused (constraints are between atoms of one molecule, never across the box).

    Returns:
      :class:`ConstraintFns` or None.

    Over 100 lines: the SHAKE and RATTLE iterations (with SETTLE for the waters) are closures over the same index
    arrays, inverse masses and tolerance, which jit needs as constants; split, each would take those as arguments.
    """
    if constraints is None or constraints.n_constraints == 0:
        return None
    pairs = np.asarray(constraints.pairs, dtype=np.int64).reshape(-1, 2)
    lengths = np.asarray(constraints.lengths, dtype=float).reshape(-1)
    # set-up in numpy, in the dtype jax gives the masses (the same IEEE float32/64 results): op by op in jax, each
    # line would compile a small XLA program at start-up (docs/engine.md, "Start-up")
    dtype = jnp.asarray(masses).dtype
    masses = np.asarray(masses, dtype)
    if tol is None:
        tol = 1e-10 if dtype == jnp.float64 else 1e-5
    i = jnp.asarray(pairs[:, 0], jnp.int32)
    j = jnp.asarray(pairs[:, 1], jnp.int32)
    d2 = jnp.asarray(np.asarray(lengths, dtype) ** 2)
    inv_np_m = (1.0 / masses).astype(dtype)
    inv_m = jnp.asarray(inv_np_m)
    w_ij = jnp.asarray(inv_np_m[pairs[:, 0]] + inv_np_m[pairs[:, 1]])
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
    floor = 1e3 * float(np.finfo(dtype).eps)

    def shake(x, x_ref):
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

    def rattle(v, x):
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

    waters = None
    if constraints.settle is not None and len(constraints.settle):
        if constraints.settle_geometry is None:
            raise ValueError("Constraints.settle given without settle_geometry (d_OH, d_HH)")
        waters = np.asarray(constraints.settle, dtype=np.int64).reshape(-1, 3)
        m_w = m_np[waters]
        if np.ptp(m_w[:, 0]) > 0 or np.ptp(m_w[:, 1:]) > 0 or np.any(m_w[:, 1] != m_w[:, 2]):
            raise ValueError("SETTLE needs every rigid water to have the same O and H masses")
        m_o, m_h = float(m_w[0, 0]), float(m_w[0, 1])
        d_oh, d_hh = (float(d) for d in constraints.settle_geometry)
        w_idx = jnp.asarray(waters, jnp.int32)
    has_pairs = len(pairs) > 0

    def positions(x, x_ref):
        if has_pairs:
            x = shake(x, x_ref)
        if waters is not None:
            x = x.at[w_idx].set(settle_positions(x_ref[w_idx], x[w_idx], m_o, m_h, d_oh, d_hh))
        return x

    def velocities(v, x):
        if has_pairs:
            v = rattle(v, x)
        if waters is not None:
            v = v.at[w_idx].set(settle_velocities(v[w_idx], x[w_idx], m_o, m_h))
        return v

    return ConstraintFns(positions, velocities, int(constraints.n_constraints))
