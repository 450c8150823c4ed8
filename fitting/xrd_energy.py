"""A simple, element-parameterized crystal energy for guiding powder-XRD refinement.

Choice and why: the refinement needs a *smooth* physical prior that keeps atoms at sensible contact
distances and away from each other, for any composition, without fitted force fields. We use a pair
"contact" potential whose length scales are tabulated ionic/atomic radii, summed under periodic boundary
conditions over all lattice images within a real-space cutoff, plus an optional Ewald-free Coulomb term
(damped shifted force, DSF). It is not meant to predict structures on its own; near the XRD optimum its
weight is small (or annealed to zero, see :mod:`fitting.xrd_refine`).

Pair energy, for atoms i, j at distance r (Å), in eV::

    attractive pairs (cation–anion, or any pair in a neutral/metallic crystal):
        φ_ij(r) = ε [ (r_ij/r)¹² − 2 (r_ij/r)⁶ ]                 (Lennard-Jones, minimum −ε at r = r_ij)
    like-charged ion pairs (cation–cation, anion–anion): purely repulsive (Weeks–Chandler–Andersen)
        φ_ij(r) = ε [ (r'_ij/r)¹² − 2 (r'_ij/r)⁶ + 1 ]  for r < r'_ij, else 0;   r'_ij = like_scale · r_ij
    r_ij = R_i + R_j,  R = Shannon crystal radius of the ion (pymatgen ``Species.ionic_radius``) when the
        composition has a charge-balanced oxidation-state guess whose ions are all tabulated; otherwise every
        atom is neutral and R = metallic radius (or the empirical atomic radius when there is none).

    E = (1/N) Σ_{i, j, n; (j, n) ≠ (i, 0)} ½ S(r) φ_ij(r) + E_coul / N,    r = |A (x_j + n − x_i)|

with S the C²-smooth switch from ``r_on`` to ``cutoff`` (S = 1 − 10t³ + 15t⁴ − 6t⁵, t = (r − r_on)/(r_c − r_on)),
n ∈ ℤ³ the lattice images and N the number of atoms (E is per atom, eV/atom). The optional DSF Coulomb
(Fennell & Gezelter, J. Chem. Phys. 124, 234104 (2006), doi:10.1063/1.2206581) with formal charges q scaled by
``charge_scale``::

    V_ij(r) = k q_i q_j [erfc(αr)/r − erfc(αR_c)/R_c + (erfc(αR_c)/R_c² + 2α/√π · exp(−α²R_c²)/R_c)(r − R_c)]
    E_self  = −(erfc(αR_c)/(2R_c) + α/√π) · k Σ_i q_i²,        k = 14.399645 eV·Å/e²

Core: for r < r_core = 0.3 r_ij (``CORE_FRACTION``; φ there is already ≥ 10⁶ ε) the pair term continues
linearly in r² from r_core (C¹: same value and slope there, same radial push) and the Coulomb r is held at r_core.
Without it, nearly coincident atoms overflow float32 ((r_ij/r)¹² → inf, inf − inf = NaN), and a NaN energy
spoils the gradient even where its weight is 0 (0 · NaN = NaN), e.g. in a batch whose other starts use it.

Units: Å, eV, elementary charges. Positions are fractional ``[n_atoms, 3]``, the cell ``[6]`` (Å, degrees).
The image set is fixed ahead of ``jit`` from a reference cell with a safety margin (``margin``): cells that
shrink by more than that margin would miss images; :func:`EnergyModel.covers` checks it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from dmd.forces.nonbonded import switch_factor

__all__ = ["EnergyModel", "element_parameters", "make_energy_model"]

COULOMB_K = 14.399645  # eV·Å / e²
CORE_FRACTION = 0.3  # r_core / r_ij below which the pair term is continued linearly in r²


def element_parameters(elements) -> tuple[np.ndarray, np.ndarray, bool]:
    """Radii (Å) and formal charges (e) per atom, and whether the crystal is treated as ionic.

    Args:
      elements: ``[n_atoms]`` element symbols (the composition is taken from them).

    Returns:
      radius ``[n_atoms]`` Å, charge ``[n_atoms]`` e, ionic flag.
    """
    from pymatgen.core import Composition, Element, Species

    elements = [str(e) for e in elements]
    comp = Composition({e: elements.count(e) for e in set(elements)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guesses = comp.oxi_state_guesses(max_sites=-50)
        oxi = guesses[0] if guesses else {}
        ionic = bool(oxi) and all(abs(v) > 0 for v in oxi.values())
        ion_radius = {}
        if ionic:
            for el, v in oxi.items():
                r = None
                if float(v).is_integer():
                    r = Species(el, int(v)).ionic_radius
                if r is None:
                    ionic = False
                    break
                ion_radius[el] = float(r)
        if ionic:
            radius = np.array([ion_radius[e] for e in elements])
            charge = np.array([float(oxi[e]) for e in elements])
        else:
            radius = []
            for e in elements:
                el = Element(e)
                r = el.metallic_radius if el.is_metal else None
                radius.append(float(r if r else el.atomic_radius))
            radius = np.array(radius)
            charge = np.zeros(len(elements))
    return radius, charge, ionic


@dataclass(frozen=True)
class EnergyModel:
    """Pair contact potential + optional DSF Coulomb (module docstring), per atom, eV.

    Attributes (numpy, fixed ahead of ``jit``):
      r_pair: ``[n, n]`` contact distance r_ij (like-charged pairs already scaled), Å.
      attract: ``[n, n]`` bool, True for LJ pairs, False for WCA (repulsive-only) pairs.
      charge: ``[n]`` formal charges × charge_scale, e.
      shifts: ``[n_images, 3]`` integer lattice images covering the cutoff for the reference cell.
    """

    r_pair: np.ndarray
    attract: np.ndarray
    charge: np.ndarray
    shifts: np.ndarray
    epsilon: float = 0.1
    cutoff: float = 6.0
    r_on: float = 5.0
    alpha: float = 0.2
    use_coulomb: bool = False

    def covers(self, cell) -> bool:
        """True when the fixed image set contains every image within the cutoff for ``cell``."""
        need = _image_extent(cell, self.cutoff)
        have = np.abs(self.shifts).max(axis=0)
        return bool(np.all(have >= need))

    def __call__(self, cell, pos_frac):
        """Energy per atom (eV/atom) of ``pos_frac [n, 3]`` in ``cell [6]`` (differentiable in both)."""
        pos = jnp.asarray(pos_frac)
        dt = pos.dtype
        amat = cell_mod.orthogonalization_matrix(jnp.asarray(cell, dt))
        d = pos[None, :, :] - pos[:, None, :]  # [n, n, 3] x_j − x_i
        d = d - jnp.round(d)
        dn = d[:, :, None, :] + jnp.asarray(self.shifts, dt)[None, None]  # [n, n, S, 3]
        rvec = jnp.einsum("ij,abkj->abki", amat, dn)
        r2 = jnp.sum(rvec**2, axis=-1)
        n = pos.shape[0]
        self_pair = (jnp.eye(n, dtype=bool)[:, :, None]) & jnp.all(jnp.asarray(self.shifts) == 0, axis=-1)[None, None]
        valid = (~self_pair) & (r2 < self.cutoff**2)
        r2_safe = jnp.where(valid, r2, 1.0)  # double-where: no inf/NaN gradients from masked pairs
        rp = jnp.asarray(self.r_pair, dt)[:, :, None]
        att = jnp.asarray(self.attract)[:, :, None]
        # core: below r_core = CORE_FRACTION · r_ij the pair term continues linearly in r² (module docstring)
        r2_core = (CORE_FRACTION * rp) ** 2
        r2c = jnp.maximum(r2_safe, r2_core)
        r = jnp.sqrt(r2c)
        x6 = (rp * rp / r2c) ** 3
        lj = self.epsilon * (x6 * x6 - 2 * x6)
        slope = -6.0 * self.epsilon * x6 * (x6 - 1) / r2c  # dφ/d(r²) at r_core
        lj = lj + jnp.where(r2_safe < r2_core, slope * (r2_safe - r2_core), 0.0)
        wca = jnp.where(r2_safe < rp * rp, lj + self.epsilon, 0.0)
        phi = jnp.where(att, lj, wca) * switch_factor(r, self.cutoff, self.r_on)
        e = 0.5 * jnp.sum(jnp.where(valid, phi, 0.0))
        if self.use_coulomb:
            q = jnp.asarray(self.charge, dt)
            rc, a = self.cutoff, self.alpha
            erfc_rc = jax.scipy.special.erfc(a * rc)
            shift_f = erfc_rc / rc**2 + 2 * a / np.sqrt(np.pi) * np.exp(-((a * rc) ** 2)) / rc
            v = jax.scipy.special.erfc(a * r) / r - erfc_rc / rc + shift_f * (r - rc)
            qq = (q[:, None] * q[None, :])[:, :, None]
            e = e + 0.5 * COULOMB_K * jnp.sum(jnp.where(valid, qq * v, 0.0))
            e = e - (erfc_rc / (2 * rc) + a / np.sqrt(np.pi)) * COULOMB_K * jnp.sum(q * q)
        return e / n


def _image_extent(cell, cutoff) -> np.ndarray:
    """Images needed per axis: floor(r_c / d_k + ½) with d_k the interplanar spacing of the cell axis k.

    Why this bound is complete: fractional differences are wrapped to |Δx_k| ≤ ½, and any vector's length is at
    least its fractional component along axis k times d_k (|r| ≥ |r·a*_k| / |a*_k|), so an image n can be within
    r_c only if |n_k| − ½ ≤ |Δx_k + n_k| < r_c / d_k. (A looser ceil(r_c/d_k) + 1 costs up to 13× more pairs.)
    """
    gstar = cell_mod.reciprocal_metric(np.asarray(cell, float))
    d = 1.0 / np.sqrt(np.diag(gstar))
    return np.floor(cutoff / d + 0.5).astype(int)


def make_energy_model(
    elements,
    cell_ref,
    *,
    epsilon: float = 0.1,
    cutoff: float = 6.0,
    r_on: float | None = None,
    like_scale: float = 0.8,
    charge_scale: float = 0.0,
    alpha: float = 0.2,
    margin: float = 1.25,
    radius=None,
    charge=None,
) -> EnergyModel:
    """Build the :class:`EnergyModel` for a P1 atom list.

    Args:
      elements: ``[n_atoms]`` element symbols.
      cell_ref: ``[6]`` reference cell (Å, degrees) for the image set; images cover ``margin × cutoff``.
      epsilon: well depth ε (eV) of every pair.
      cutoff: real-space cutoff R_c (Å); ``r_on`` start of the switch (default cutoff − 1 Å).
      like_scale: like-charged contact distance as a fraction of R_i + R_j (ions only).
      charge_scale: multiplies the formal charges in the DSF Coulomb term; 0 disables it (the default: the
        contact potential alone is enough to keep atoms apart, and full formal charges over-bind).
      alpha: DSF damping α (Å⁻¹).
      radius, charge: optional ``[n_atoms]`` overrides of :func:`element_parameters` (Å, e); given together,
        pymatgen is not needed (charges nonzero → the crystal is treated as ionic).
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive (Å), got {cutoff}")
    if radius is not None and charge is not None:
        radius, charge = np.asarray(radius, float), np.asarray(charge, float)
        ionic = bool(np.any(charge != 0))
    else:
        radius, charge, ionic = element_parameters(elements)
    r_pair = radius[:, None] + radius[None, :]
    if ionic:
        like = np.sign(charge)[:, None] * np.sign(charge)[None, :] > 0
    else:
        like = np.zeros_like(r_pair, bool)
    r_pair = np.where(like, like_scale * r_pair, r_pair)
    ext = _image_extent(cell_ref, margin * cutoff)
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in ext], indexing="ij")
    shifts = np.stack([g.ravel() for g in grids], axis=-1).astype(float)
    return EnergyModel(
        r_pair=r_pair,
        attract=~like,
        charge=charge * charge_scale,
        shifts=shifts,
        epsilon=float(epsilon),
        cutoff=float(cutoff),
        r_on=float(cutoff - 1.0 if r_on is None else r_on),
        alpha=float(alpha),
        use_coulomb=charge_scale != 0.0,
    )
