"""Powder X-ray diffraction patterns: sticks, profiles and pattern similarity (differentiable in JAX).

Stick pattern (Bragg-Brentano, unpolarized beam, no monochromator by default)::

    I(h) = m(h) · |F(h)|² · LP(θ),       LP(θ) = (1 + cos² 2θ) / (sin² θ · cos θ)
    λ = 2 d sin θ,  d = 1/sqrt(hᵀ G* h)

with ``m`` the multiplicity (orbit size under the Laue group, Friedel mates included), F from
:func:`analysis.structure_factors.structure_factors_direct` (IT92 form factors; Debye-Waller factor
exp(−B s²/4) from the structure's B, none when B = 0). With a monochromator at 2θ_M the polarization
term becomes (1 + cos² 2θ_M cos² 2θ) / (1 + cos² 2θ_M).

Profile: each stick is spread with a unit-area Gaussian or pseudo-Voigt of full width at half maximum
from the Caglioti, Paoletti & Ricci (1958, Nucl. Instrum. 3, 223) model::

    FWHM²(θ) = U tan² θ + V tan θ + W          (degrees² of 2θ)
    pV(x) = η L(x; FWHM) + (1 − η) G(x; FWHM)

Similarity of two patterns on the same 2θ grid, each normalized to unit area first: cosine, Pearson,
Rwp = sqrt(Σ w (y_o − y_c)² / Σ w y_o²) (w = 1 unless given), and the 1-D Wasserstein (earth mover's)
distance W₁ = ∫ |CDF_o − CDF_c| d2θ in degrees.

Everything is differentiable with ``jax.grad`` in the cell, the fractional coordinates, B and occupancy
for a fixed list of reflections (choose it once with a margin: :func:`powder_hkl`).

API::

    xs = analysis.structure_io.read_structure("NaCl.cif")
    sticks = powder_sticks(xs, wavelength=1.5406, two_theta_range=(10, 90))     # StickPattern (numpy)
    grid = np.arange(10, 90, 0.02); y = profile(grid, sticks.two_theta, sticks.intensity, U=0.01, V=-0.005, W=0.005)
    hkl, mult = powder_hkl(cell, "F m -3 m", 1.5406, (10, 90))                  # fixed reflection list
    st = stick_pattern(hkl, mult, pos_frac_p1, cell, elements, b_iso, occ, wavelength=1.5406)  # jax
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.structure_factors import structure_factors_direct

__all__ = [
    "WAVELENGTHS",
    "StickPattern",
    "wavelength_of",
    "powder_hkl",
    "lorentz_polarization",
    "stick_pattern",
    "powder_sticks",
    "merge_sticks",
    "caglioti_fwhm",
    "profile",
    "normalize_pattern",
    "cosine_similarity",
    "pearson_similarity",
    "rwp",
    "wasserstein_distance",
]

# Common anode wavelengths (Å), weighted Kα means as in pymatgen's XRDCalculator table.
WAVELENGTHS = {
    "CuKa": 1.54184,
    "CuKa1": 1.54056,
    "CuKa2": 1.54439,
    "CuKb1": 1.39222,
    "MoKa": 0.71073,
    "MoKa1": 0.70930,
    "MoKa2": 0.71359,
    "CrKa": 2.29100,
    "FeKa": 1.93735,
    "CoKa": 1.79026,
    "AgKa": 0.560885,
}


class StickPattern(NamedTuple):
    """One entry per unique reflection: hkl ``[M, 3]``, two_theta (degrees), d (Å), f2 = |F|² (e²),
    multiplicity, lp (Lorentz-polarization), intensity = multiplicity · f2 · lp (arbitrary units)."""

    hkl: np.ndarray
    two_theta: np.ndarray
    d: np.ndarray
    f2: np.ndarray
    multiplicity: np.ndarray
    lp: np.ndarray
    intensity: np.ndarray


def wavelength_of(value) -> float:
    """Å from a number or an anode name in :data:`WAVELENGTHS` (e.g. "CuKa")."""
    if isinstance(value, str):
        if value in WAVELENGTHS:
            return WAVELENGTHS[value]
        try:
            value = float(value)
        except ValueError as exc:
            raise ValueError(
                f"unknown wavelength {value!r}; give Å (e.g. 1.5406) or one of {', '.join(WAVELENGTHS)}"
            ) from exc
    lam = float(value)
    if not (0.01 < lam < 20):
        raise ValueError(f"wavelength {lam} Å is outside 0.01–20 Å; X-ray wavelengths are given in Å")
    return lam


def powder_hkl(cell, sg, wavelength: float, two_theta_range=(0.0, 180.0), *, margin: float = 0.0):
    """Unique reflections (Laue-group ASU, systematic absences removed) inside the 2θ range.

    Args:
      cell: ``[6]`` Å/deg. sg: space group. wavelength: Å. two_theta_range: (min, max) degrees.
      margin: extra relative range in 1/d (e.g. 0.05) so that the list stays valid while the cell is refined.

    Returns:
      hkl int32 ``[M, 3]`` sorted by 2θ, multiplicity int32 ``[M]``.
    """
    lo, hi = (float(v) for v in two_theta_range)
    if not (0 <= lo < hi <= 180):
        raise ValueError(f"two_theta_range must satisfy 0 ≤ min < max ≤ 180 degrees, got {two_theta_range}")
    s_max = 2 * np.sin(np.radians(hi) / 2) / wavelength * (1 + margin)
    s_min = 2 * np.sin(np.radians(lo) / 2) / wavelength * (1 - margin)
    s_max = min(s_max, 2 / wavelength)
    hkl = symmetry.generate_hkl(np.asarray(cell, float), 1 / s_max, sg, unique=True)
    if s_min > 0:
        inv_d2 = cell_mod.inv_d2(hkl.astype(float), np.asarray(cell, float))
        hkl = hkl[inv_d2 >= s_min**2]
    hkl = hkl[~symmetry.is_absent(hkl, sg)]
    return hkl.astype(np.int32), symmetry.multiplicities(hkl, sg)


def lorentz_polarization(two_theta_deg, monochromator_two_theta: float | None = None):
    """LP factor (module equation); ``two_theta_deg`` array in degrees (numpy or jax)."""
    xp = jnp if not isinstance(two_theta_deg, np.ndarray) else np
    tt = xp.deg2rad(two_theta_deg)
    th = tt / 2
    c2 = xp.cos(tt) ** 2
    if monochromator_two_theta is None:
        pol = 1 + c2
    else:
        cm = np.cos(np.radians(monochromator_two_theta)) ** 2
        pol = (1 + cm * c2) / (1 + cm)
    return pol / (xp.sin(th) ** 2 * xp.cos(th))


def stick_pattern(
    hkl,
    multiplicity,
    pos_frac,
    cell,
    elements,
    b_iso=None,
    occ=None,
    *,
    wavelength: float = 1.54184,
    monochromator_two_theta: float | None = None,
    form_factors=None,
):
    """Differentiable stick pattern for a fixed reflection list (module equations).

    Args:
      hkl: int ``[M, 3]``; multiplicity: ``[M]``.
      pos_frac: ``[N, 3]`` fractional coordinates of *all* atoms in the cell (P1 expansion).
      cell: ``[6]`` Å/deg (jax array for gradients). elements: N symbols or FormFactorTable.
      b_iso: ``[N]`` Å² (default 0: no Debye-Waller factor). occ: ``[N]``.
      form_factors: optional ``[n_types, M]`` override of IT92 (see structure_factors_direct).

    Returns:
      dict of jax arrays ``two_theta`` (deg), ``d`` (Å), ``f2``, ``lp``, ``intensity`` (``[M]``); reflections
      beyond 2θ = 180° get NaN angles and zero intensity.
    """
    cell = jnp.asarray(cell)
    inv_d2 = cell_mod.inv_d2(jnp.asarray(hkl, cell.dtype), cell)
    sin_th = wavelength * jnp.sqrt(inv_d2) / 2
    ok = sin_th < 1
    two_theta = 2 * jnp.rad2deg(jnp.arcsin(jnp.where(ok, sin_th, 0.5)))
    F = structure_factors_direct(hkl, pos_frac, cell, elements, b_iso, occ, form_factors=form_factors)
    f2 = jnp.real(F) ** 2 + jnp.imag(F) ** 2
    lp = lorentz_polarization(two_theta, monochromator_two_theta)
    inten = jnp.where(ok, jnp.asarray(multiplicity, f2.dtype) * f2 * lp, 0.0)
    return {
        "two_theta": jnp.where(ok, two_theta, jnp.nan),
        "d": 1 / jnp.sqrt(inv_d2),
        "f2": f2,
        "lp": lp,
        "intensity": inten,
    }


def powder_sticks(
    structure,
    *,
    wavelength=1.54184,
    two_theta_range=(5.0, 90.0),
    monochromator_two_theta: float | None = None,
    form_factors_fn=None,
    min_relative_intensity: float = 0.0,
) -> StickPattern:
    """Stick pattern of a :class:`analysis.structure_io.CrystalStructure` (numpy, sorted by 2θ).

    Args:
      form_factors_fn: optional ``fn(symbols, inv_d2 [M]) -> [n_types, M]`` replacing IT92 (comparisons).
      min_relative_intensity: drop sticks below this fraction of the strongest.
    """
    from analysis.formfactors import form_factor_table

    lam = wavelength_of(wavelength)
    hkl, mult = powder_hkl(structure.cell, structure.spacegroup, lam, two_theta_range)
    if len(hkl) == 0:
        raise ValueError(f"no reflections in 2θ {two_theta_range} at λ = {lam} Å; widen --two-theta")
    p1 = structure.expand_to_p1()
    table = form_factor_table(p1.elements)
    ff = None
    if form_factors_fn is not None:
        inv_d2 = cell_mod.inv_d2(hkl.astype(float), np.asarray(p1.cell, float))
        ff = np.asarray(form_factors_fn(table.symbols, inv_d2), float)
    out = stick_pattern(
        hkl,
        mult,
        np.asarray(p1.pos_frac, float),
        np.asarray(p1.cell, float),
        table,
        np.asarray(p1.b_iso, float),
        np.asarray(p1.occ, float),
        wavelength=lam,
        monochromator_two_theta=monochromator_two_theta,
        form_factors=ff,
    )
    out = {k: np.asarray(v) for k, v in out.items()}
    keep = (
        np.isfinite(out["two_theta"])
        & (out["two_theta"] >= two_theta_range[0])
        & (out["two_theta"] <= two_theta_range[1])
    )
    if min_relative_intensity > 0 and keep.any():
        keep &= out["intensity"] >= min_relative_intensity * out["intensity"][keep].max()
    order = np.argsort(out["two_theta"][keep], kind="stable")
    sel = np.nonzero(keep)[0][order]
    return StickPattern(
        hkl[sel], out["two_theta"][sel], out["d"][sel], out["f2"][sel], mult[sel], out["lp"][sel],
        out["intensity"][sel],
    )  # fmt: skip


def merge_sticks(two_theta, intensity, tol: float = 1e-5):
    """Sum sticks whose 2θ agree within ``tol`` degrees (binning 2θ/tol to integers, as pymatgen does).

    Returns:
      (two_theta ``[P]``, intensity ``[P]``) numpy, sorted.
    """
    tt = np.asarray(two_theta, float)
    key = np.round(tt / tol).astype(np.int64)
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return tt[first], np.bincount(inv.ravel(), weights=np.asarray(intensity, float))


def caglioti_fwhm(two_theta_deg, U, V, W):
    """FWHM (degrees 2θ) = sqrt(U tan²θ + V tanθ + W), clipped at 1e-6° for invalid parameter sets."""
    t = jnp.tan(jnp.deg2rad(jnp.asarray(two_theta_deg)) / 2)
    return jnp.sqrt(jnp.maximum(U * t * t + V * t + W, 1e-12))


@partial(jax.jit, static_argnames=("shape",))
def profile(two_theta_grid, two_theta, intensity, *, U=0.0, V=0.0, W=0.01, eta=0.5, shape: str = "pseudo-voigt"):
    """Profiled pattern on ``two_theta_grid [G]`` (degrees) from sticks (``[M]``, NaN sticks ignored).

    Args:
      U, V, W: Caglioti parameters (degrees²). eta: Lorentzian fraction of the pseudo-Voigt (0…1).
      shape: "gaussian" or "pseudo-voigt".

    Returns:
      ``[G]`` intensity (each stick contributes its intensity as peak area, per degree).
    """
    if shape not in ("gaussian", "pseudo-voigt"):
        raise ValueError(f"shape must be 'gaussian' or 'pseudo-voigt', got {shape!r}")
    x = jnp.asarray(two_theta_grid)
    ok = jnp.isfinite(two_theta)
    pos = jnp.where(ok, two_theta, 0.0)
    inten = jnp.where(ok, intensity, 0.0)
    fwhm = caglioti_fwhm(pos, U, V, W)
    dx = x[:, None] - pos[None, :]
    sigma = fwhm / (2 * jnp.sqrt(2 * jnp.log(2.0)))
    gauss = jnp.exp(-0.5 * (dx / sigma) ** 2) / (sigma * jnp.sqrt(2 * jnp.pi))
    if shape == "gaussian":
        peak = gauss
    else:
        gam = fwhm / 2
        lor = gam / (jnp.pi * (dx * dx + gam * gam))
        peak = eta * lor + (1 - eta) * gauss
    return peak @ inten


@jax.jit
def normalize_pattern(y, two_theta_grid=None):
    """Pattern scaled to unit area (trapezoid rule on the grid; unit spacing when no grid)."""
    y = jnp.asarray(y)
    if two_theta_grid is None:
        area = jnp.sum(y)
    else:
        area = jnp.trapezoid(y, jnp.asarray(two_theta_grid))
    return y / jnp.where(area != 0, area, 1.0)


@jax.jit
def cosine_similarity(a, b):
    """a·b / (|a||b|) (1 = identical shape)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    den = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
    return jnp.sum(a * b) / jnp.where(den > 0, den, 1.0)


def pearson_similarity(a, b):
    """Pearson CC of two patterns (:func:`analysis.stats.pearson_cc`)."""
    from analysis.stats import pearson_cc

    return pearson_cc(jnp.asarray(a), jnp.asarray(b))


@jax.jit
def rwp(observed, calculated, weights=None, two_theta_grid=None):
    """Weighted-profile R factor of unit-area-normalized patterns (module equation)."""
    yo = normalize_pattern(observed, two_theta_grid)
    yc = normalize_pattern(calculated, two_theta_grid)
    w = jnp.ones_like(yo) if weights is None else jnp.asarray(weights)
    num = jnp.sum(w * (yo - yc) ** 2)
    den = jnp.sum(w * yo * yo)
    return jnp.sqrt(num / jnp.where(den > 0, den, 1.0))


@jax.jit
def wasserstein_distance(a, b, two_theta_grid):
    """1-D Wasserstein-1 distance (degrees 2θ) between unit-area-normalized patterns on one grid."""
    x = jnp.asarray(two_theta_grid)
    pa = jnp.maximum(jnp.asarray(a), 0.0)
    pb = jnp.maximum(jnp.asarray(b), 0.0)
    pa = pa / jnp.sum(pa)
    pb = pb / jnp.sum(pb)
    cdf_diff = jnp.cumsum(pa - pb)[:-1]
    return jnp.sum(jnp.abs(cdf_diff) * jnp.diff(x))
