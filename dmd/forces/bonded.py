"""Bonded terms, as OpenMM's Reference platform computes them.

Units: positions nm, angles rad, energies kJ/mol. Every function is a pure
function of (parameters, positions); atom indices are static numpy arrays.

Equations (names as in OpenMM's theory guide):

* HarmonicBondForce:   E = Σ ½ k (r − r0)²,                r = |x_j − x_i|
* HarmonicAngleForce:  E = Σ ½ k (θ − θ0)²,                θ = ∠(x_i − x_j, x_k − x_j)
* PeriodicTorsionForce: E = Σ k (1 + cos(n φ − φ0)),       φ = dihedral(i, j, k, l)
* CHARMM improper (CustomTorsionForce ``k*(theta-theta0)^2``): E = Σ k (φ − φ0)²
* CMAPTorsionForce:    E = Σ bicubic patch of the (φ, ψ) map, coefficients from
  periodic-spline derivatives of the map (OpenMM ``CMAPTorsionForceImpl::calcMapDerivatives``).

The dihedral follows the IUPAC sign convention OpenMM uses:
b1 = x_j − x_i, b2 = x_k − x_j, b3 = x_l − x_k,
φ = atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3)) ∈ (−π, π].
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = [
    "bond_lengths",
    "bond_angles",
    "dihedral_angles",
    "harmonic_bond_energy",
    "harmonic_angle_energy",
    "periodic_torsion_energy",
    "harmonic_torsion_energy",
    "cmap_energy",
    "cmap_coefficients",
    "cmap_spline_operator",
]


def _norm(v):
    # sqrt with a finite gradient at 0 (double-where): never hit for real geometries.
    s = jnp.sum(v * v, axis=-1)
    safe = jnp.where(s > 0, s, 1.0)
    return jnp.where(s > 0, jnp.sqrt(safe), 0.0)


def bond_lengths(pos, idx):
    """|x_j − x_i| for ``idx: [n, 2]`` int; returns ``[n]`` nm."""
    return _norm(pos[idx[:, 1]] - pos[idx[:, 0]])


def bond_angles(pos, idx):
    """Angle at the middle atom for ``idx: [n, 3]``; returns ``[n]`` rad in [0, π]."""
    a = pos[idx[:, 0]] - pos[idx[:, 1]]
    b = pos[idx[:, 2]] - pos[idx[:, 1]]
    # atan2(|a×b|, a·b) keeps a finite gradient near 0 and π (arccos does not).
    return jnp.arctan2(_norm(jnp.cross(a, b)), jnp.sum(a * b, axis=-1))


def dihedral_angles(pos, idx):
    """Dihedral φ for ``idx: [n, 4]`` (IUPAC sign, as OpenMM); returns ``[n]`` rad in (−π, π]."""
    b1 = pos[idx[:, 1]] - pos[idx[:, 0]]
    b2 = pos[idx[:, 2]] - pos[idx[:, 1]]
    b3 = pos[idx[:, 3]] - pos[idx[:, 2]]
    n1 = jnp.cross(b1, b2)
    n2 = jnp.cross(b2, b3)
    y = _norm(b2) * jnp.sum(b1 * n2, axis=-1)
    x = jnp.sum(n1 * n2, axis=-1)
    return jnp.arctan2(y, x)


def harmonic_bond_energy(k, length, pos, idx):
    """E = Σ ½ k (r − r0)²; ``k: [n]`` kJ/mol/nm², ``length: [n]`` nm (r0)."""
    r = bond_lengths(pos, idx)
    return jnp.sum(0.5 * k * (r - length) ** 2)


def harmonic_angle_energy(k, angle, pos, idx):
    """E = Σ ½ k (θ − θ0)²; ``k: [n]`` kJ/mol/rad², ``angle: [n]`` rad (θ0)."""
    theta = bond_angles(pos, idx)
    return jnp.sum(0.5 * k * (theta - angle) ** 2)


def periodic_torsion_energy(k, phase, periodicity, pos, idx):
    """E = Σ k (1 + cos(n φ − φ0)); ``k: [n]`` kJ/mol, ``phase: [n]`` rad, ``periodicity: [n]`` int (static)."""
    phi = dihedral_angles(pos, idx)
    return jnp.sum(k * (1.0 + jnp.cos(periodicity * phi - phase)))


def harmonic_torsion_energy(k, theta0, pos, idx):
    """CHARMM improper, OpenMM ``CustomTorsionForce('k*(theta-theta0)^2')``: E = Σ k (φ − φ0)²."""
    phi = dihedral_angles(pos, idx)
    return jnp.sum(k * (phi - theta0) ** 2)


def cmap_spline_operator(size: int) -> np.ndarray:
    """``[size, size]`` matrix D with dE/dφ at the knots = D @ E for a periodic cubic spline.

    The periodic cubic interpolant through equally spaced knots (spacing h = 2π/size)
    is unique, so this equals OpenMM's ``SplineFitter::createPeriodicSpline`` +
    ``evaluateSplineDerivative`` at the knots. With M the knot second derivatives,
    M_{j−1} + 4 M_j + M_{j+1} = 6 (y_{j+1} − 2 y_j + y_{j−1}) / h² (cyclic), and
    y'_j = (y_{j+1} − y_j)/h − h (2 M_j + M_{j+1}) / 6.
    """
    h = 2 * np.pi / size
    eye = np.eye(size)
    shift = np.roll(eye, 1, axis=1)  # (shift @ y)_j = y_{j+1}
    a = 4 * eye + shift + shift.T
    lap = (shift - 2 * eye + shift.T) * 6 / h**2
    m = np.linalg.solve(a, lap)
    return (shift - eye) / h - h * (2 * eye + shift) @ m / 6


def _bicubic_inverse() -> np.ndarray:
    """``[16, 16]`` matrix W with c = W @ rhs for one bicubic patch.

    c[4 a + b] multiplies u^a v^b (u, v ∈ [0, 1) patch coordinates); rhs holds, at the
    corners (0,0), (1,0), (1,1), (0,1): values, ∂/∂u, ∂/∂v, ∂²/∂u∂v (OpenMM's order).
    """
    corners = [(0, 0), (1, 0), (1, 1), (0, 1)]
    rows = []
    for deriv in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        for u, v in corners:
            row = np.zeros(16)
            for a in range(4):
                for b in range(4):
                    if a < deriv[0] or b < deriv[1]:
                        continue
                    ca = 1.0 if deriv[0] == 0 else a
                    cb = 1.0 if deriv[1] == 0 else b
                    ua = u ** (a - deriv[0]) if a - deriv[0] > 0 else 1.0
                    vb = v ** (b - deriv[1]) if b - deriv[1] > 0 else 1.0
                    row[4 * a + b] = ca * cb * ua * vb
            rows.append(row)
    return np.linalg.inv(np.array(rows))


_BICUBIC_W = _bicubic_inverse()


def cmap_coefficients(maps, spline_op):
    """Bicubic patch coefficients from CMAP energy maps (linear in the maps, so differentiable).

    Args:
      maps: ``[n_maps, size, size]`` kJ/mol, ``maps[m, i, j]`` = E(φ = i·2π/size, ψ = j·2π/size)
        (OpenMM's ``energy[i + size*j]``).
      spline_op: ``[size, size]`` from :func:`cmap_spline_operator`.

    Returns:
      ``[n_maps, size, size, 16]``: coefficients of patch (i, j).
    """
    size = maps.shape[-1]
    delta = 2 * np.pi / size
    d_op = jnp.asarray(spline_op, maps.dtype)
    d1 = jnp.einsum("ik,mkj->mij", d_op, maps)  # ∂E/∂φ
    d2 = jnp.einsum("jk,mik->mij", d_op, maps)  # ∂E/∂ψ
    d12 = jnp.einsum("ik,mkj->mij", d_op, d2)  # ∂²E/∂φ∂ψ

    def corners(a):  # values at (i,j), (i+1,j), (i+1,j+1), (i,j+1)
        a_i1 = jnp.roll(a, -1, axis=1)
        return jnp.stack([a, a_i1, jnp.roll(a_i1, -1, axis=2), jnp.roll(a, -1, axis=2)], axis=-1)

    rhs = jnp.concatenate([corners(maps), corners(d1) * delta, corners(d2) * delta, corners(d12) * delta**2], axis=-1)
    return jnp.einsum("kl,mijl->mijk", jnp.asarray(_BICUBIC_W, maps.dtype), rhs)


def cmap_energy(maps, map_index, spline_op, pos, idx_a, idx_b):
    """CMAP energy. ``maps: [n_maps, size, size]`` kJ/mol; ``map_index: [n]`` int; ``idx_a, idx_b: [n, 4]``.

    φ, ψ are taken modulo 2π into [0, 2π) and located in patch (s, t) = (⌊φ/δ⌋, ⌊ψ/δ⌋), δ = 2π/size;
    E = Σ_{a,b} c[s,t][4a+b] u^a v^b with u = φ/δ − s, v = ψ/δ − t.
    """
    size = maps.shape[-1]
    delta = 2 * np.pi / size
    coeff = cmap_coefficients(maps, spline_op)
    phi = jnp.mod(dihedral_angles(pos, idx_a) + 2 * np.pi, 2 * np.pi)
    psi = jnp.mod(dihedral_angles(pos, idx_b) + 2 * np.pi, 2 * np.pi)
    s = jnp.clip(jnp.floor(phi / delta).astype(jnp.int32), 0, size - 1)
    t = jnp.clip(jnp.floor(psi / delta).astype(jnp.int32), 0, size - 1)
    u = phi / delta - s
    v = psi / delta - t
    c = coeff[map_index, s, t].reshape(-1, 4, 4)
    # explicit powers (u**0 via pow would give a NaN gradient at u = 0)
    up = jnp.stack([jnp.ones_like(u), u, u * u, u * u * u], axis=-1)
    vp = jnp.stack([jnp.ones_like(v), v, v * v, v * v * v], axis=-1)
    return jnp.sum(jnp.einsum("na,nab,nb->n", up, c, vp))
