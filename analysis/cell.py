"""Unit-cell and reciprocal-metric primitives, written once and used everywhere.

Conventions (shared with gemmi):

* ``cell``: ``[6]`` = (a, b, c) in Å and (α, β, γ) in degrees.
* Real metric ``G = Aᵀ A`` (Å²), with ``A`` the orthogonalization matrix whose
  columns are the cell vectors in Cartesian Å (PDB convention: **a** along x,
  **b** in the xy plane; identical to ``gemmi.UnitCell.orth``).
* Reciprocal metric ``G* = G⁻¹`` (Å⁻²).
* ``inv_d2`` = q² = 1/d² = hᵀ G* h (Å⁻²); ``s = 1/d`` (Å⁻¹).

Linear form of q² (the "q² = H·x" of powder indexing)::

    q²(hkl) = h²·A + k²·B + l²·C + hk·D + hl·E + kl·F
    A = a*², B = b*², C = c*², D = 2a*b*cosγ*, E = 2a*c*cosβ*, F = 2b*c*cosα*

Each lattice system keeps a subset (or a fixed combination) of these, so that
``inv_d2 = design_matrix(hkl, system) @ x`` with ``x = reciprocal_params(cell, system)``:

===============  ===============================  ===================================
system           x                                H row for (h, k, l)
===============  ===============================  ===================================
cubic            [A]                              [h²+k²+l²]
tetragonal       [A, C]                           [h²+k², l²]
hexagonal        [A, C]                           [h²+k²+hk, l²]  (also hR, hex axes)
rhombohedral     [A, D]                           [h²+k²+l², hk+hl+kl]  (rhombohedral axes)
orthorhombic     [A, B, C]                        [h², k², l²]
monoclinic       [A, B, C, E]                     [h², k², l², hl]  (unique axis b)
triclinic        [A, B, C, D, E, F]               [h², k², l², hk, hl, kl]
===============  ===============================  ===================================

Every function here works on numpy and jax arrays alike and is differentiable
with ``jax.grad`` (cell in, metric out) where it uses ``jnp``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = [
    "array_module",
    "LATTICE_SYSTEMS",
    "BRAVAIS_LATTICES",
    "BRAVAIS_TO_SYSTEM",
    "metric",
    "reciprocal_metric",
    "cell_from_metric",
    "cell_from_reciprocal_metric",
    "reciprocal_cell",
    "orthogonalization_matrix",
    "fractionalization_matrix",
    "volume",
    "inv_d2",
    "d_spacing",
    "design_matrix",
    "reciprocal_params",
    "cell_from_reciprocal_params",
    "reciprocal_metric_from_params",
    "reciprocal_params_from_metric",
    "n_reciprocal_params",
    "frac_to_cart",
    "cart_to_frac",
    "two_theta_from_inv_d2",
    "inv_d2_from_two_theta",
    "inv_d2_slope_two_theta",
]

LATTICE_SYSTEMS = (
    "cubic",
    "tetragonal",
    "hexagonal",
    "rhombohedral",
    "orthorhombic",
    "monoclinic",
    "triclinic",
)

# The 14 Bravais lattices (Pearson symbols); hR is indexed on hexagonal axes.
BRAVAIS_LATTICES = ("cP", "cI", "cF", "tP", "tI", "hP", "hR", "oP", "oC", "oI", "oF", "mP", "mC", "aP")
BRAVAIS_TO_SYSTEM = {
    "cP": "cubic", "cI": "cubic", "cF": "cubic",
    "tP": "tetragonal", "tI": "tetragonal",
    "hP": "hexagonal", "hR": "hexagonal",
    "oP": "orthorhombic", "oC": "orthorhombic", "oI": "orthorhombic", "oF": "orthorhombic",
    "mP": "monoclinic", "mC": "monoclinic",
    "aP": "triclinic",
}  # fmt: skip

_N_PARAMS = {
    "cubic": 1,
    "tetragonal": 2,
    "hexagonal": 2,
    "rhombohedral": 2,
    "orthorhombic": 3,
    "monoclinic": 4,
    "triclinic": 6,
}


def array_module(*arrays):
    """numpy for numpy inputs (keeps float64 without x64), jax.numpy otherwise (jax arrays, tracers)."""
    return np if all(isinstance(a, (np.ndarray, list, tuple, float, int)) for a in arrays) else jnp


_xp = array_module


def _check_system(system: str) -> str:
    if system not in _N_PARAMS:
        raise ValueError(f"unknown lattice system {system!r}; expected one of {', '.join(LATTICE_SYSTEMS)}")
    return system


def metric(cell):
    """Real-space metric tensor.

    Args:
      cell: ``[..., 6]`` (a, b, c Å; α, β, γ degrees).

    Returns:
      ``[..., 3, 3]`` G (Å²), G_ij = a_i · a_j.
    """
    xp = _xp(cell)
    cell = xp.asarray(cell)
    a, b, c = cell[..., 0], cell[..., 1], cell[..., 2]
    ca, cb, cg = (xp.cos(xp.deg2rad(cell[..., i])) for i in (3, 4, 5))
    row0 = xp.stack([a * a, a * b * cg, a * c * cb], axis=-1)
    row1 = xp.stack([a * b * cg, b * b, b * c * ca], axis=-1)
    row2 = xp.stack([a * c * cb, b * c * ca, c * c], axis=-1)
    return xp.stack([row0, row1, row2], axis=-2)


def reciprocal_metric(cell):
    """Reciprocal metric ``G* = G⁻¹`` (Å⁻²), shape ``[..., 3, 3]``."""
    xp = _xp(cell)
    return xp.linalg.inv(metric(cell))


def cell_from_metric(g):
    """Inverse of :func:`metric`: ``[..., 3, 3]`` (Å²) → ``[..., 6]`` cell."""
    xp = _xp(g)
    g = xp.asarray(g)
    a = xp.sqrt(g[..., 0, 0])
    b = xp.sqrt(g[..., 1, 1])
    c = xp.sqrt(g[..., 2, 2])
    alpha = xp.rad2deg(xp.arccos(g[..., 1, 2] / (b * c)))
    beta = xp.rad2deg(xp.arccos(g[..., 0, 2] / (a * c)))
    gamma = xp.rad2deg(xp.arccos(g[..., 0, 1] / (a * b)))
    return xp.stack([a, b, c, alpha, beta, gamma], axis=-1)


def cell_from_reciprocal_metric(gstar):
    """Real cell from the reciprocal metric ``G*`` (Å⁻²)."""
    xp = _xp(gstar)
    return cell_from_metric(xp.linalg.inv(xp.asarray(gstar)))


def reciprocal_cell(cell):
    """(a*, b*, c* in Å⁻¹; α*, β*, γ* in degrees), shape ``[..., 6]``."""
    return cell_from_metric(reciprocal_metric(cell))


def volume(cell):
    """Cell volume (Å³) = sqrt(det G)."""
    xp = _xp(cell)
    return xp.sqrt(xp.linalg.det(metric(cell)))


def orthogonalization_matrix(cell):
    """Fractional → Cartesian matrix ``A`` (Å), ``[..., 3, 3]``; ``x_cart = A @ x_frac``.

    Same convention as ``gemmi.UnitCell.orth`` (PDB/ITC: **a** ∥ x, **b** in xy).
    """
    xp = _xp(cell)
    cell = xp.asarray(cell)
    a, b, c = cell[..., 0], cell[..., 1], cell[..., 2]
    al, be, ga = (xp.deg2rad(cell[..., i]) for i in (3, 4, 5))
    ca, cb, cg, sg = xp.cos(al), xp.cos(be), xp.cos(ga), xp.sin(ga)
    v = xp.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg)
    zero = xp.zeros_like(a)
    row0 = xp.stack([a, b * cg, c * cb], axis=-1)
    row1 = xp.stack([zero, b * sg, c * (ca - cb * cg) / sg], axis=-1)
    row2 = xp.stack([zero, zero, c * v / sg], axis=-1)
    return xp.stack([row0, row1, row2], axis=-2)


def fractionalization_matrix(cell):
    """Cartesian → fractional matrix ``A⁻¹`` (Å⁻¹), ``[..., 3, 3]``."""
    xp = _xp(cell)
    return xp.linalg.inv(orthogonalization_matrix(cell))


def frac_to_cart(pos_frac, cell):
    """``pos_frac [..., n, 3]`` → Cartesian Å ``[..., n, 3]``."""
    xp = _xp(pos_frac, cell)
    return xp.einsum("...ij,...nj->...ni", orthogonalization_matrix(cell), xp.asarray(pos_frac))


def cart_to_frac(pos_cart, cell):
    """Cartesian Å ``[..., n, 3]`` → fractional ``[..., n, 3]``."""
    xp = _xp(pos_cart, cell)
    return xp.einsum("...ij,...nj->...ni", fractionalization_matrix(cell), xp.asarray(pos_cart))


def inv_d2(hkl, cell):
    """q² = 1/d² = hᵀ G* h (Å⁻²).

    Args:
      hkl: ``[n, 3]`` Miller indices (int, or float for supercell/fractional grids).
      cell: ``[6]`` cell, or ``[..., 6]`` for a batch of cells (result ``[..., n]``).
    """
    xp = _xp(cell)
    hkl = xp.asarray(hkl, dtype=xp.asarray(cell).dtype if xp is jnp else float)
    gstar = reciprocal_metric(cell)
    return xp.einsum("ni,...ij,nj->...n", hkl, gstar, hkl)


def d_spacing(hkl, cell):
    """d = 1/sqrt(q²) in Å, ``[..., n]`` (inf for 000)."""
    xp = _xp(cell)
    return 1.0 / xp.sqrt(inv_d2(hkl, cell))


def n_reciprocal_params(system: str) -> int:
    """Number of free reciprocal-metric parameters x for a lattice system."""
    return _N_PARAMS[_check_system(system)]


def design_matrix(hkl, system: str):
    """Design matrix H with ``inv_d2 = H @ x`` for the lattice system (see module table).

    Args:
      hkl: ``[..., n, 3]`` Miller indices.
      system: one of :data:`LATTICE_SYSTEMS`.

    Returns:
      ``[..., n, n_params]`` float array.
    """
    _check_system(system)
    xp = _xp(hkl)
    hkl = xp.asarray(hkl)
    hkl = hkl.astype(hkl.dtype if xp.issubdtype(hkl.dtype, xp.floating) else float)
    h, k, l = hkl[..., 0], hkl[..., 1], hkl[..., 2]
    cols = {
        "cubic": [h * h + k * k + l * l],
        "tetragonal": [h * h + k * k, l * l],
        "hexagonal": [h * h + k * k + h * k, l * l],
        "rhombohedral": [h * h + k * k + l * l, h * k + h * l + k * l],
        "orthorhombic": [h * h, k * k, l * l],
        "monoclinic": [h * h, k * k, l * l, h * l],
        "triclinic": [h * h, k * k, l * l, h * k, h * l, k * l],
    }[system]
    return xp.stack(cols, axis=-1)


def _full_params(x, system: str, xp):
    """(A, B, C, D, E, F) of q² = Ah² + Bk² + Cl² + Dhk + Ehl + Fkl from x ``[..., n_params]``."""
    z = xp.zeros_like(x[..., 0])
    if system == "cubic":
        return (x[..., 0], x[..., 0], x[..., 0], z, z, z)
    if system == "tetragonal":
        return (x[..., 0], x[..., 0], x[..., 1], z, z, z)
    if system == "hexagonal":
        return (x[..., 0], x[..., 0], x[..., 1], x[..., 0], z, z)
    if system == "rhombohedral":
        return (x[..., 0], x[..., 0], x[..., 0], x[..., 1], x[..., 1], x[..., 1])
    if system == "orthorhombic":
        return (x[..., 0], x[..., 1], x[..., 2], z, z, z)
    if system == "monoclinic":
        return (x[..., 0], x[..., 1], x[..., 2], z, x[..., 3], z)
    return tuple(x[..., i] for i in range(6))


def reciprocal_metric_from_params(x, system: str):
    """Reciprocal metric G* ``[..., 3, 3]`` (Å⁻²) from x ``[..., n_params]`` (Å⁻²), the one x → G* map.

    G* = [[A, D/2, E/2], [D/2, B, F/2], [E/2, F/2, C]] with (A..F) from the module table.
    """
    _check_system(system)
    xp = _xp(x)
    A, B, C, D, E, F = _full_params(xp.asarray(x), system, xp)
    row0 = xp.stack([A, D / 2, E / 2], axis=-1)
    row1 = xp.stack([D / 2, B, F / 2], axis=-1)
    row2 = xp.stack([E / 2, F / 2, C], axis=-1)
    return xp.stack([row0, row1, row2], axis=-2)


def reciprocal_params_from_metric(gstar, system: str):
    """x ``[..., n_params]`` (Å⁻²) of a reciprocal metric G* ``[..., 3, 3]``, the one G* → x map.

    Only the independent entries of ``system`` are read (A = G*₁₁, D = 2G*₁₂, ...); G* is assumed
    to have the system's form (callers that need the check compare with the triclinic x).
    """
    _check_system(system)
    xp = _xp(gstar)
    gstar = xp.asarray(gstar)
    A, B, C = gstar[..., 0, 0], gstar[..., 1, 1], gstar[..., 2, 2]
    D, E, F = 2 * gstar[..., 0, 1], 2 * gstar[..., 0, 2], 2 * gstar[..., 1, 2]
    sel = {
        "cubic": [A],
        "tetragonal": [A, C],
        "hexagonal": [A, C],
        "rhombohedral": [A, D],
        "orthorhombic": [A, B, C],
        "monoclinic": [A, B, C, E],
        "triclinic": [A, B, C, D, E, F],
    }[system]
    return xp.stack(sel, axis=-1)


def reciprocal_params(cell, system: str):
    """x such that ``inv_d2(hkl, cell) == design_matrix(hkl, system) @ x`` (Å⁻²).

    The cell must already have the symmetry of ``system`` (e.g. a = b, γ = 120°
    for hexagonal); only the independent entries are returned.
    """
    return reciprocal_params_from_metric(reciprocal_metric(cell), system)


def cell_from_reciprocal_params(x, system: str):
    """Cell ``[..., 6]`` from reciprocal-metric parameters ``x [..., n_params]`` (Å⁻²).

    Invalid x (non positive-definite G*) gives NaN entries; callers mask them.
    """
    return cell_from_reciprocal_metric(reciprocal_metric_from_params(x, system))


def two_theta_from_inv_d2(inv_d2_values, wavelength):
    """2θ in degrees from q² = 1/d² (Å⁻²) and wavelength λ (Å): sin θ = λ/(2d)."""
    xp = _xp(inv_d2_values)
    return 2 * xp.rad2deg(xp.arcsin(wavelength * xp.sqrt(inv_d2_values) / 2))


def inv_d2_slope_two_theta(two_theta_deg, wavelength):
    """∂(1/d²)/∂(2θ) in Å⁻² per degree at 2θ (degrees), wavelength λ (Å): 1/d² = 4 sin²θ/λ², so
    ∂(1/d²)/∂θ = 4 sin 2θ/λ² and one degree of 2θ is π/360 rad of θ (the zero-shift column of powder fits)."""
    xp = _xp(two_theta_deg)
    return 4 * xp.sin(xp.deg2rad(xp.asarray(two_theta_deg))) / wavelength**2 * (xp.pi / 360)


def inv_d2_from_two_theta(two_theta_deg, wavelength):
    """q² = 1/d² (Å⁻²) from 2θ (degrees) and wavelength λ (Å)."""
    xp = _xp(two_theta_deg)
    return (2 * xp.sin(xp.deg2rad(xp.asarray(two_theta_deg)) / 2) / wavelength) ** 2
