"""Differentiable crystal-structure parameterizations for powder-XRD refinement.

Every parameterization maps a parameter pytree to a P1 structure with a **fixed atom order**::

    crystal(params) -> (cell [6] (Å, degrees), pos_frac [n_atoms, 3] fractional)

so that the powder pattern, the energy and the structure matcher all see the same atoms. Three kinds:

* :class:`P1Param` — free lattice (6 parameters) and free fractional coordinates ``[n_atoms, 3]``.
* :class:`FamilyParam` — lattice restricted to a crystal family (cubic: a; tetragonal/hexagonal: a, c;
  orthorhombic: a, b, c; monoclinic: a, b, c, β (unique axis b); rhombohedral axes: a, α; triclinic: all six),
  coordinates free.
* :class:`SpaceGroupParam` — lattice restricted to the space group's family and one free-parameter vector per
  Wyckoff site. For a site with representative x₀ and stabilizer (site-symmetry) group S = {(R, t) : R x₀ + t ≡ x₀},
  the positions keeping that site symmetry are x = x₀ + B u, where the columns of B span the fixed space of the
  linear parts, i.e. the range of the projector P = (1/|S|) Σ_{R∈S} R (a group average is the projector onto
  the invariant subspace). The orbit is R_k x + t_k over one coset representative (R_k, t_k) per distinct
  image of x₀. So the space group is kept exactly for every value of the parameters.

Lattice parameters are internal, well-scaled variables: lengths as ln(a/Å), angles in radians. This keeps one
optimizer learning rate meaningful for all of them (0.01 = 1 % in length, 0.57° in angle, 0.01 in fraction).

All ``crystal`` functions are pure ``jnp`` and differentiable; ``init`` (projection of a P1 structure onto the
parameterization) is numpy bookkeeping done once, outside ``jit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis import symmetry

__all__ = [
    "FAMILIES",
    "lattice_params_from_cell",
    "cell_from_lattice_params",
    "family_of_spacegroup",
    "family_of_cell",
    "P1Param",
    "FamilyParam",
    "SpaceGroupParam",
    "WyckoffSite",
    "wyckoff_site",
    "make_param",
    "perturb_structure",
]

FAMILIES = ("cubic", "tetragonal", "hexagonal", "rhombohedral", "orthorhombic", "monoclinic", "triclinic")
# free lattice parameters per family = free reciprocal-metric parameters of that lattice system
_N_LAT = {fam: cell_mod.n_reciprocal_params(fam) for fam in FAMILIES}


def _check_family(family: str) -> str:
    if family not in _N_LAT:
        raise ValueError(f"unknown crystal family {family!r}; expected one of {', '.join(FAMILIES)}")
    return family


def lattice_params_from_cell(cell, family: str) -> np.ndarray:
    """Project a cell onto a family and return the internal lattice parameters (numpy).

    The projection averages what the family ties together (e.g. cubic a = geometric mean of a, b, c; tetragonal
    a = mean of a and b) and drops angles it fixes.

    Args:
      cell: ``[6]`` (Å, degrees).
      family: one of :data:`FAMILIES`.

    Returns:
      ``[n_lat]`` float: ln lengths (ln Å) then angles (radians), per the module docstring.
    """
    _check_family(family)
    cell = np.asarray(cell, float)
    ln = np.log(cell[:3])
    ang = np.deg2rad(cell[3:])
    if family == "cubic":
        return np.array([ln.mean()])
    if family in ("tetragonal", "hexagonal"):
        return np.array([ln[:2].mean(), ln[2]])
    if family == "rhombohedral":
        return np.array([ln.mean(), ang.mean()])
    if family == "orthorhombic":
        return ln.copy()
    if family == "monoclinic":
        return np.concatenate([ln, ang[1:2]])
    return np.concatenate([ln, ang])


def cell_from_lattice_params(p, family: str):
    """Cell ``[6]`` (Å, degrees) from internal lattice parameters ``p [n_lat]`` (differentiable)."""
    _check_family(family)
    p = jnp.asarray(p)
    right = jnp.full((), np.pi / 2, p.dtype)
    if family == "cubic":
        lengths = jnp.stack([p[0], p[0], p[0]])
        angles = jnp.stack([right, right, right])
    elif family == "tetragonal":
        lengths = jnp.stack([p[0], p[0], p[1]])
        angles = jnp.stack([right, right, right])
    elif family == "hexagonal":
        lengths = jnp.stack([p[0], p[0], p[1]])
        angles = jnp.stack([right, right, jnp.full((), 2 * np.pi / 3, p.dtype)])
    elif family == "rhombohedral":
        lengths = jnp.stack([p[0], p[0], p[0]])
        angles = jnp.stack([p[1], p[1], p[1]])
    elif family == "orthorhombic":
        lengths = p[:3]
        angles = jnp.stack([right, right, right])
    elif family == "monoclinic":
        lengths = p[:3]
        angles = jnp.stack([right, p[3], right])
    else:
        lengths, angles = p[:3], p[3:6]
    return jnp.concatenate([jnp.exp(lengths), jnp.rad2deg(angles)])


def family_of_spacegroup(sg) -> str:
    """Crystal family of a space group as used here (trigonal → hexagonal axes, or rhombohedral for ``:R``).

    Raises:
      ValueError: for monoclinic settings other than unique axis b (not supported).
    """
    group = symmetry.spacegroup(sg)
    system = group.crystal_system_str()
    if system == "trigonal":
        return "rhombohedral" if group.ext == "R" else "hexagonal"
    if system == "monoclinic":
        rot, _ = symmetry.symmetry_operations(group)
        b_unique = any(np.array_equal(np.abs(np.diag(r)), [1, 1, 1]) and r[1, 1] * r[0, 0] < 0 for r in rot) and all(
            r[0, 1] == r[1, 0] == r[1, 2] == r[2, 1] == 0 for r in rot
        )
        if not b_unique:
            raise ValueError(f"space group {group.xhm()}: only the unique-axis-b monoclinic setting is supported")
    return system


def family_of_cell(cell, tol_len: float = 1e-3, tol_ang: float = 0.05) -> str:
    """The highest family a cell's metric allows (lengths equal within ``tol_len`` relative, angles in degrees)."""
    a, b, c, al, be, ga = np.asarray(cell, float)

    def eq(x, y):
        return abs(x - y) <= tol_len * max(x, y)

    def ang(x, v):
        return abs(x - v) <= tol_ang

    right = ang(al, 90) and ang(be, 90) and ang(ga, 90)
    if right and eq(a, b) and eq(b, c):
        return "cubic"
    if right and eq(a, b):
        return "tetragonal"
    if ang(al, 90) and ang(be, 90) and ang(ga, 120) and eq(a, b):
        return "hexagonal"
    if eq(a, b) and eq(b, c) and ang(al, be) and ang(be, ga):
        return "rhombohedral"
    if right:
        return "orthorhombic"
    if ang(al, 90) and ang(ga, 90):
        return "monoclinic"
    return "triclinic"


def _wrap(d):
    """Wrap fractional differences to [-0.5, 0.5)."""
    return d - np.floor(d + 0.5)


@dataclass(frozen=True)
class P1Param:
    """Free lattice and free fractional coordinates.

    params: ``{"lattice": [6] (ln Å ×3, radians ×3), "frac": [n_atoms, 3]}``.
    """

    elements: tuple[str, ...]
    kind: str = "p1"

    @property
    def family(self) -> str:
        return "triclinic"

    def init(self, cell, pos_frac) -> dict:
        """Parameters representing a P1 structure (cell ``[6]``, ``pos_frac [n_atoms, 3]``)."""
        pos_frac = np.asarray(pos_frac, float)
        if pos_frac.shape != (len(self.elements), 3):
            raise ValueError(f"pos_frac has shape {pos_frac.shape}; expected ({len(self.elements)}, 3)")
        return {"lattice": lattice_params_from_cell(cell, self.family), "frac": pos_frac.copy()}

    def crystal(self, params):
        """``(cell [6], pos_frac [n_atoms, 3])`` from parameters (differentiable)."""
        return cell_from_lattice_params(params["lattice"], self.family), jnp.asarray(params["frac"])

    def n_free(self) -> int:
        return 6 + 3 * len(self.elements)


@dataclass(frozen=True)
class FamilyParam(P1Param):
    """Lattice restricted to a crystal family; coordinates free.

    params: ``{"lattice": [n_lat], "frac": [n_atoms, 3]}`` with ``n_lat`` from the family (module docstring).
    """

    crystal_family: str = "triclinic"
    kind: str = "family"

    def __post_init__(self):
        _check_family(self.crystal_family)

    @property
    def family(self) -> str:
        return self.crystal_family

    def n_free(self) -> int:
        return _N_LAT[self.crystal_family] + 3 * len(self.elements)


@dataclass(frozen=True)
class WyckoffSite:
    """One Wyckoff site: representative ``x0 [3]``, free directions ``basis [3, m]`` and the coset operations.

    ``orbit_rot [k, 3, 3]`` int and ``orbit_trans [k, 3]`` give the k = site multiplicity positions
    R_i (x0 + basis @ u) + t_i.
    """

    x0: np.ndarray
    basis: np.ndarray
    orbit_rot: np.ndarray
    orbit_trans: np.ndarray

    @property
    def n_free(self) -> int:
        return self.basis.shape[1]

    @property
    def multiplicity(self) -> int:
        return self.orbit_rot.shape[0]


def wyckoff_site(sg, x0, tol: float = 1e-4) -> WyckoffSite:
    """Site symmetry, free directions and orbit of a representative position ``x0`` (fractional).

    The stabilizer is {(R, t): R x0 + t − x0 ∈ ℤ³ (within ``tol``)}; P = mean of its R is the projector onto
    the directions that keep the site symmetry; an orthonormal basis of range(P) comes from its SVD.
    """
    rot, trans = symmetry.symmetry_operations(sg)
    x0 = np.asarray(x0, float)
    images = np.einsum("oij,j->oi", rot, x0) + trans
    stab = np.all(np.abs(_wrap(images - x0)) < tol, axis=1)
    proj = rot[stab].astype(float).mean(axis=0)
    u, s, _ = np.linalg.svd(proj)
    basis = u[:, s > 0.5]
    keep: list[int] = []
    for i, img in enumerate(images):
        if not any(np.all(np.abs(_wrap(img - images[j])) < tol) for j in keep):
            keep.append(i)
    return WyckoffSite(x0=x0, basis=basis, orbit_rot=rot[keep], orbit_trans=trans[keep])


@dataclass(frozen=True)
class SpaceGroupParam:
    """Space-group-constrained lattice and Wyckoff free parameters (see module docstring).

    Built from an asymmetric unit: ``site_elements`` and ``site_frac [n_sites, 3]`` (one representative per
    Wyckoff site) in space group ``spacegroup``. The P1 atom order is site-major, then orbit order.

    params: ``{"lattice": [n_lat], "wyckoff": [n_wyckoff]}``; ``wyckoff`` holds the displacements u of every
    site's representative along its free directions (fractional units; 0 = the reference ``site_frac``).
    """

    spacegroup: str
    site_elements: tuple[str, ...]
    site_frac: np.ndarray
    tol: float = 1e-4
    kind: str = "spacegroup"
    sites: tuple[WyckoffSite, ...] = field(init=False, repr=False)
    _atom_rot: np.ndarray = field(init=False, repr=False)
    _atom_trans: np.ndarray = field(init=False, repr=False)
    _atom_x0: np.ndarray = field(init=False, repr=False)
    _atom_basis: np.ndarray = field(init=False, repr=False)
    _atom_site: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        site_frac = np.asarray(self.site_frac, float).reshape(-1, 3)
        if len(self.site_elements) != site_frac.shape[0]:
            raise ValueError(f"{len(self.site_elements)} site elements but {site_frac.shape[0]} site positions")
        object.__setattr__(self, "site_frac", site_frac)
        sites = tuple(wyckoff_site(self.spacegroup, x, self.tol) for x in site_frac)
        n_free = sum(s.n_free for s in sites)
        rot, trans, x0, basis, which = [], [], [], [], []
        col = 0
        for k, s in enumerate(sites):
            b_full = np.zeros((3, n_free))
            b_full[:, col : col + s.n_free] = s.basis
            col += s.n_free
            for r, t in zip(s.orbit_rot, s.orbit_trans, strict=True):
                rot.append(r)
                trans.append(t)
                x0.append(s.x0)
                basis.append(b_full)
                which.append(k)
        object.__setattr__(self, "sites", sites)
        object.__setattr__(self, "_atom_rot", np.array(rot, float))
        object.__setattr__(self, "_atom_trans", np.array(trans))
        object.__setattr__(self, "_atom_x0", np.array(x0))
        object.__setattr__(self, "_atom_basis", np.array(basis).reshape(len(rot), 3, n_free))
        object.__setattr__(self, "_atom_site", np.array(which, int))
        family_of_spacegroup(self.spacegroup)  # validates the setting

    @property
    def family(self) -> str:
        return family_of_spacegroup(self.spacegroup)

    @property
    def elements(self) -> tuple[str, ...]:
        """P1 element symbols, ``[n_atoms]``."""
        return tuple(self.site_elements[k] for k in self._atom_site)

    @property
    def n_wyckoff(self) -> int:
        return self._atom_basis.shape[2]

    def n_free(self) -> int:
        return _N_LAT[self.family] + self.n_wyckoff

    def crystal(self, params):
        """``(cell [6], pos_frac [n_atoms, 3])``: pos = R_a (x0_a + B_a u) + t_a (differentiable)."""
        u = jnp.asarray(params["wyckoff"])
        dtype = u.dtype
        site = jnp.asarray(self._atom_x0, dtype) + jnp.einsum("aij,j->ai", jnp.asarray(self._atom_basis, dtype), u)
        pos = jnp.einsum("aij,aj->ai", jnp.asarray(self._atom_rot, dtype), site) + jnp.asarray(self._atom_trans, dtype)
        return cell_from_lattice_params(params["lattice"], self.family), pos

    def init(self, cell, pos_frac=None) -> dict:
        """Parameters for a P1 structure in this atom order, projected onto the space group.

        Each atom a is mapped back to its site, R_a⁻¹(x_a − t_a), the displacement from x0 is wrapped and
        averaged over the orbit, then projected onto the site's free directions. ``pos_frac=None`` gives u = 0.
        """
        lat = lattice_params_from_cell(cell, self.family)
        if pos_frac is None:
            return {"lattice": lat, "wyckoff": np.zeros(self.n_wyckoff)}
        pos_frac = np.asarray(pos_frac, float)
        if pos_frac.shape != (len(self._atom_site), 3):
            raise ValueError(f"pos_frac has shape {pos_frac.shape}; expected ({len(self._atom_site)}, 3)")
        rinv = np.linalg.inv(self._atom_rot)
        back = np.einsum("aij,aj->ai", rinv, pos_frac - self._atom_trans)
        disp = _wrap(back - self._atom_x0)
        u = np.zeros(self.n_wyckoff)
        for k in range(len(self.sites)):
            mean = disp[self._atom_site == k].mean(axis=0)
            b_full = self._atom_basis[np.flatnonzero(self._atom_site == k)[0]]
            u += b_full.T @ mean
        return {"lattice": lat, "wyckoff": u}

    def asymmetric_unit(self, params) -> np.ndarray:
        """Representative site positions ``[n_sites, 3]`` (fractional, wrapped to [0, 1)) for given parameters."""
        u = np.asarray(params["wyckoff"], float)
        out = []
        for k, s in enumerate(self.sites):
            b_full = self._atom_basis[np.flatnonzero(self._atom_site == k)[0]]
            out.append(s.x0 + b_full @ u)
        return np.mod(np.array(out), 1.0)


def make_param(kind: str, *, elements=None, family=None, spacegroup=None, site_elements=None, site_frac=None):
    """Factory: ``kind`` in {"p1", "family", "spacegroup"} with the arguments that kind needs."""
    if kind == "p1":
        return P1Param(tuple(elements))
    if kind == "family":
        return FamilyParam(tuple(elements), crystal_family=family)
    if kind == "spacegroup":
        return SpaceGroupParam(spacegroup, tuple(site_elements), np.asarray(site_frac, float))
    raise ValueError(f"unknown parameterization {kind!r}; expected p1, family or spacegroup")


def perturb_structure(rng: np.random.Generator, cell, pos_frac, *, strain: float, displacement: float):
    """A distorted copy of a P1 structure (numpy), the starting point of a refinement.

    Lengths are scaled by (1 + U(−strain, strain)) each, angles shifted by U(−30·strain, 30·strain) degrees
    each (so strain 0.05 ↔ ±1.5°), and every atom is displaced by a Cartesian Gaussian of standard deviation
    ``displacement`` Å per axis.

    Returns:
      cell ``[6]``, pos_frac ``[n_atoms, 3]``.
    """
    cell = np.asarray(cell, float).copy()
    cell[:3] *= 1 + rng.uniform(-strain, strain, 3)
    cell[3:] += rng.uniform(-30 * strain, 30 * strain, 3)
    pos_frac = np.asarray(pos_frac, float)
    d_cart = rng.normal(0.0, displacement, pos_frac.shape)
    d_frac = np.einsum("ij,nj->ni", cell_mod.fractionalization_matrix(cell), d_cart)
    return cell, pos_frac + d_frac
