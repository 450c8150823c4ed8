"""Synthetic powder peak lists with a realistic error model (training data and benchmarks).

A pattern is drawn as: a random conventional cell for a Bravais lattice → a random
space group of that lattice from gemmi's table (its systematic absences remove lines)
→ all allowed reflections, grouped into distinct lines → optional errors → the first
``n_peaks`` observed lines.

Error model (seed "ML-Index Methods"; docs/powder.md "Powder indexing")::

    σ(inv_d2) = k · (8.7e-5 + 9.2e-4 · inv_d2)  (Å⁻²; k = ``ErrorModel.k``; errors.sigma_inv_d2)
    2θ_obs = 2θ_true + Δ2θ₀                      (zero shift, degrees)
    lines closer than ``resolution_deg`` in 2θ merge (intensity-weighted mean),
    each line is missed with probability ``p_missing``,
    ``n_impurity`` extra lines are placed uniformly inside the observed range.

Cell distributions (documented because success rates depend on them): axis lengths
log-uniform in [``length_min``, ``length_max``] Å; monoclinic β uniform in [90, 125]°;
triclinic angles uniform in [65, 115]° and the cell Niggli-reduced (gemmi);
hexagonal/rhombohedral c in [4, 25] Å on hexagonal axes.
"""

from __future__ import annotations

import dataclasses
import functools

import gemmi
import numpy as np

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.indexing.errors import sigma_inv_d2

__all__ = ["ErrorModel", "SyntheticPattern", "spacegroups_for", "random_cell", "synthetic_pattern", "sigma_q2"]

CU_KALPHA1 = 1.5406  # Å


@dataclasses.dataclass(frozen=True)
class ErrorModel:
    """Observation errors; ``ErrorModel.clean()`` turns everything off."""

    k: float = 1.0
    p_missing: float = 0.1
    n_impurity: int = 1
    zero_shift_deg: float = 0.03
    resolution_deg: float = 0.02
    wavelength: float = CU_KALPHA1

    @staticmethod
    def clean(wavelength: float = CU_KALPHA1) -> ErrorModel:
        return ErrorModel(
            k=0.0, p_missing=0.0, n_impurity=0, zero_shift_deg=0.0, resolution_deg=0.0, wavelength=wavelength
        )


sigma_q2 = sigma_inv_d2  # the earlier name of analysis.indexing.errors.sigma_inv_d2


@dataclasses.dataclass(frozen=True)
class SyntheticPattern:
    """A generated peak list and its ground truth.

    Attributes:
      inv_d2: ``[n]`` observed q² (Å⁻²), ascending.
      intensity: ``[n]`` relative intensities.
      two_theta: ``[n]`` observed 2θ (degrees) at ``wavelength``.
      wavelength: Å.
      cell: ``[6]`` true conventional cell.
      spacegroup: HM symbol (gemmi xhm).
      bravais: Pearson symbol, e.g. "mC".
      system: lattice system (hexagonal for hR, which uses hexagonal axes).
      hkl: ``[n, 3]`` true indices of each observed line (zeros for impurities).
      impurity: ``[n]`` bool, line is an impurity.
      zero_shift: applied 2θ zero shift (degrees).
    """

    inv_d2: np.ndarray
    intensity: np.ndarray
    two_theta: np.ndarray
    wavelength: float
    cell: np.ndarray
    spacegroup: str
    bravais: str
    system: str
    hkl: np.ndarray
    impurity: np.ndarray
    zero_shift: float


_SYSTEM_OF_GEMMI = {
    "cubic": "cubic",
    "tetragonal": "tetragonal",
    "hexagonal": "hexagonal",
    "trigonal": "hexagonal",
    "orthorhombic": "orthorhombic",
    "monoclinic": "monoclinic",
    "triclinic": "triclinic",
}


def _bravais_of(sg: gemmi.SpaceGroup) -> str | None:
    system = sg.crystal_system_str()
    c = sg.centring_type()
    if system in ("trigonal", "hexagonal"):
        if sg.ext == "R":  # rhombohedral axes: generated on hexagonal axes instead
            return None
        if c == "R":
            return "hR" if sg.ext == "H" else None  # hexagonal axes only
        return "hP"
    letter = {"cubic": "c", "tetragonal": "t", "orthorhombic": "o", "monoclinic": "m", "triclinic": "a"}[system]
    if system == "monoclinic":
        if sg.monoclinic_unique_axis() != "b" or c == "B":  # B-centred b-unique cells are mP in disguise
            return None
        return "mP" if c == "P" else "mC"
    if system == "orthorhombic" and c in "ABC":
        return "oC"
    return letter + c


@functools.lru_cache(maxsize=1)
def _spacegroup_index() -> dict:
    out: dict[str, list[str]] = {}
    for sg in gemmi.spacegroup_table():
        br = _bravais_of(sg)
        if br is not None:
            out.setdefault(br, []).append(sg.xhm())
    return out


def spacegroups_for(bravais: str) -> list[str]:
    """gemmi space-group symbols (b-unique monoclinic, hexagonal axes for R) of a Bravais lattice."""
    index = _spacegroup_index()
    if bravais not in index:
        raise ValueError(f"unknown Bravais lattice {bravais!r}; expected one of {', '.join(sorted(index))}")
    return index[bravais]


def random_cell(bravais: str, rng: np.random.Generator, length_min: float = 4.0, length_max: float = 20.0):
    """Random conventional cell ``[6]`` (Å, degrees) for a Bravais lattice (distributions in module docstring)."""
    system = cell_mod.BRAVAIS_TO_SYSTEM[bravais]

    def length(n=1):
        return np.exp(rng.uniform(np.log(length_min), np.log(length_max), n))

    if system == "cubic":
        a = length()[0]
        return np.array([a, a, a, 90.0, 90.0, 90.0])
    if system == "tetragonal":
        a, c = length(2)
        return np.array([a, a, c, 90.0, 90.0, 90.0])
    if system == "hexagonal":
        a = length()[0]
        c = np.exp(rng.uniform(np.log(4.0), np.log(25.0)))
        return np.array([a, a, c, 90.0, 90.0, 120.0])
    if system == "orthorhombic":
        return np.concatenate([length(3), [90.0, 90.0, 90.0]])
    if system == "monoclinic":
        return np.concatenate([length(3), [90.0, rng.uniform(90.0, 125.0), 90.0]])
    while True:  # triclinic: random angles, reject flat cells, Niggli-reduce
        cell = np.concatenate([length(3), rng.uniform(65.0, 115.0, 3)])
        ca, cb, cg = np.cos(np.deg2rad(cell[3:]))
        v2 = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
        if v2 > 0.35:
            gv = gemmi.GruberVector(gemmi.UnitCell(*cell), "P", False)
            gv.niggli_reduce()
            red = np.array(gv.cell_parameters())
            if red[:3].max() / red[:3].min() <= length_max / length_min:
                return red


def _distinct_lines(inv_d2: np.ndarray, hkl: np.ndarray, rel_tol: float):
    """Group reflections into lines: returns (line q², multiplicity, representative hkl)."""
    order = np.argsort(inv_d2, kind="stable")
    inv_d2, hkl = inv_d2[order], hkl[order]
    new = np.concatenate([[True], np.diff(inv_d2) > rel_tol * inv_d2[1:]])
    group = np.cumsum(new) - 1
    n = group[-1] + 1
    mult = np.bincount(group, minlength=n)
    qline = np.bincount(group, weights=inv_d2, minlength=n) / mult
    # representative: non-negative indices where possible
    score = (hkl < 0).sum(1) * 1000 + np.abs(hkl).sum(1)
    rep = np.zeros((n, 3), np.int32)
    best = np.full(n, np.inf)
    for i in range(inv_d2.size):  # small (≲ few thousand reflections), done once per pattern
        g = group[i]
        if score[i] < best[g]:
            best[g], rep[g] = score[i], hkl[i]
    return qline, mult, rep


def synthetic_pattern(
    bravais: str,
    rng: np.random.Generator,
    *,
    n_peaks: int = 20,
    errors: ErrorModel | None = None,
    cell=None,
    spacegroup: str | None = None,
) -> SyntheticPattern:
    """Draw one synthetic peak list (see module docstring).

    Args:
      bravais: Pearson symbol ("cP", ..., "aP"; "hR" on hexagonal axes).
      rng: numpy Generator (the only source of randomness).
      n_peaks: observed lines to keep.
      errors: :class:`ErrorModel`; None = clean (exact positions, exact coincidences merged).
      cell, spacegroup: fix the cell / space group instead of drawing them.
    """
    errors = errors or ErrorModel.clean()
    lam = errors.wavelength
    system = cell_mod.BRAVAIS_TO_SYSTEM[bravais]
    fixed_cell = cell is not None
    need = n_peaks + 4 + int(3 * n_peaks * errors.p_missing) + 8
    q_limit = 0.999 * 2 / lam  # 2θ < 180°
    while True:
        cell = np.asarray(cell if fixed_cell else random_cell(bravais, rng), float)
        sg_name = spacegroup or str(rng.choice(spacegroups_for(bravais)))
        vol = float(cell_mod.volume(cell))
        # expected line count ~ (4π/3) V q³ / m_eff: start low and grow until enough lines
        q_max = min((need * 48 * 3 / (4 * np.pi * vol)) ** (1 / 3) * 0.6, q_limit)
        while True:
            hkl = symmetry.generate_hkl(cell, 1.0 / q_max, sg_name)
            n_lines = 0
            if hkl.shape[0] > 0:
                inv_d2 = cell_mod.inv_d2(hkl.astype(float), cell)
                qline, mult, rep = _distinct_lines(inv_d2, hkl, 1e-9)
                n_lines = qline.size
            if n_lines >= need or q_max >= q_limit:
                break
            q_max = min(q_max * 1.3, q_limit)
        if n_lines >= need:
            break
        if fixed_cell:
            raise ValueError(f"cell {cell} gives only {n_lines} lines below 2θ=180° at λ={lam}; need {need}")
    inten = mult * rng.exponential(1.0, qline.size) * np.exp(-2.0 * qline)
    tth = cell_mod.two_theta_from_inv_d2(qline, lam)
    zero = float(rng.uniform(-errors.zero_shift_deg, errors.zero_shift_deg)) if errors.zero_shift_deg > 0 else 0.0
    tth = tth + zero
    if errors.resolution_deg > 0:  # merge unresolved lines (intensity-weighted)
        group = np.concatenate([[0], np.cumsum(np.diff(tth) > errors.resolution_deg)])
        n = group[-1] + 1
        w = np.bincount(group, weights=inten, minlength=n)
        tth_m = np.bincount(group, weights=inten * tth, minlength=n) / w
        first = np.searchsorted(group, np.arange(n))
        rep = rep[first]
        tth, inten = tth_m, w
    keep = rng.uniform(size=tth.size) >= errors.p_missing
    tth, inten, rep = tth[keep], inten[keep], rep[keep]
    inv_d2_obs = cell_mod.inv_d2_from_two_theta(tth, lam)
    if errors.k > 0:
        inv_d2_obs = inv_d2_obs + rng.normal(size=inv_d2_obs.size) * sigma_inv_d2(inv_d2_obs, errors.k)
    impurity = np.zeros(inv_d2_obs.size, bool)
    if errors.n_impurity > 0:
        hi = inv_d2_obs[min(n_peaks, inv_d2_obs.size) - 1]
        imp = rng.uniform(inv_d2_obs[0] * 0.5, hi, errors.n_impurity)
        inv_d2_obs = np.concatenate([inv_d2_obs, imp])
        inten = np.concatenate([inten, rng.exponential(0.3 * np.median(inten), errors.n_impurity)])
        rep = np.concatenate([rep, np.zeros((errors.n_impurity, 3), np.int32)])
        impurity = np.concatenate([impurity, np.ones(errors.n_impurity, bool)])
    order = np.argsort(inv_d2_obs, kind="stable")
    inv_d2_obs, inten, rep, impurity = inv_d2_obs[order], inten[order], rep[order], impurity[order]
    # drop accidental duplicates created by noise so the list passes validation
    ok = np.concatenate([[True], np.diff(inv_d2_obs) > 1e-12])
    inv_d2_obs, inten, rep, impurity = inv_d2_obs[ok], inten[ok], rep[ok], impurity[ok]
    sl = slice(0, n_peaks)
    inv_d2_obs = inv_d2_obs[sl]
    return SyntheticPattern(
        inv_d2=inv_d2_obs,
        intensity=100.0 * inten[sl] / inten[sl].max(),
        two_theta=cell_mod.two_theta_from_inv_d2(inv_d2_obs, lam),
        wavelength=lam,
        cell=cell,
        spacegroup=sg_name,
        bravais=bravais,
        system=system,
        hkl=rep[sl],
        impurity=impurity[sl],
        zero_shift=zero,
    )
