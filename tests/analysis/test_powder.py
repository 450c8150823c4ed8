"""Powder patterns vs pymatgen's XRDCalculator (live oracle), profiles, similarity metrics, gradients.

Structures: Materials Project entries shipped with pymatgen (``pymatgen/util/structures``), written as
symmetric CIFs into ``tests/data/sf_*.cif``; pymatgen reads the very same CIF files.

Like with like: pymatgen's XRDCalculator uses its own atomic scattering factors
f(s) = Z − 41.78214 s² Σ a_k exp(−b_k s²) (s = sin θ/λ, ``ATOMIC_SCATTERING_PARAMS``), no Debye-Waller
factor unless given, LP = (1 + cos² 2θ)/(sin² θ cos θ), sums all hkl of the full sphere and merges peaks
whose 2θ round to the same 1e-5°. The parity tests feed pymatgen's form factors into our code through
``form_factors_fn``; a separate test bounds the difference of the IT92 table (our default) from pymatgen's.
"""

from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import powder, symmetry
from analysis.structure_io import read_structure

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
STRUCTURES = ["Si", "CsCl", "LiFePO4", "SiO2", "Graphite", "VO2", "K2O2"]


def _pymatgen():
    warnings.filterwarnings("ignore")
    from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS, XRDCalculator
    from pymatgen.core import Element, Structure

    def ff(symbols, inv_d2):
        s2 = np.asarray(inv_d2) / 4  # (sin θ/λ)²
        rows = []
        for sym in symbols:
            c = np.asarray(ATOMIC_SCATTERING_PARAMS[sym])
            rows.append(Element(sym).Z - 41.78214 * s2 * np.sum(c[:, 0] * np.exp(-c[:, 1] * s2[:, None]), axis=1))
        return np.array(rows)

    return XRDCalculator, Structure, ff


def _ours(name, **kw):
    xs = read_structure(os.path.join(DATA, f"sf_{name}.cif"))
    st = powder.powder_sticks(xs, wavelength="CuKa", two_theta_range=(10, 90), **kw)
    tt, inten = powder.merge_sticks(st.two_theta, st.intensity, tol=1e-5)
    inten = inten / inten.max() * 100
    keep = inten > 1e-3  # pymatgen's SCALED_INTENSITY_TOL
    return tt[keep], inten[keep], st


@pytest.mark.parametrize("name", STRUCTURES)
def test_stick_pattern_matches_pymatgen(name):
    XRDCalculator, Structure, ff = _pymatgen()
    pat = XRDCalculator("CuKa").get_pattern(
        Structure.from_file(os.path.join(DATA, f"sf_{name}.cif")), scaled=True, two_theta_range=(10, 90)
    )
    tt, inten, _ = _ours(name, form_factors_fn=ff)
    assert len(tt) == len(pat.x)  # same peaks, absences and merges
    assert np.abs(tt - np.asarray(pat.x)).max() < 1e-4  # acceptance: ≤ 1e-4° 2θ (measured ~1e-13)
    assert np.abs(inten - np.asarray(pat.y)).max() < 1.0  # acceptance: ≤ 1% of the strongest (measured ≤ 2e-7)


def test_multiplicities_match_pymatgen_families():
    XRDCalculator, Structure, ff = _pymatgen()
    pat = XRDCalculator("CuKa").get_pattern(
        Structure.from_file(os.path.join(DATA, "sf_Si.cif")), scaled=True, two_theta_range=(10, 90)
    )
    _, _, st = _ours("Si", form_factors_fn=ff)
    ours = {tuple(sorted(np.abs(h))): int(m) for h, m in zip(st.hkl, st.multiplicity, strict=False)}
    for fams in pat.hkls:
        for fam in fams:
            key = tuple(sorted(abs(v) for v in fam["hkl"]))
            assert ours[key] == fam["multiplicity"]  # cubic families: 8 (111), 12 (220), 24 (311), …


def test_it92_differs_from_pymatgen_table_only_slightly():
    """Our default IT92 form factors vs pymatgen's table: same peaks; intensities within a few percent."""
    XRDCalculator, Structure, ff = _pymatgen()
    worst = 0.0
    for name in ("Si", "LiFePO4", "VO2"):
        tt_p, i_p, _ = _ours(name, form_factors_fn=ff)
        tt_i, i_i, _ = _ours(name)
        common, ia, ib = np.intersect1d(np.round(tt_p, 6), np.round(tt_i, 6), return_indices=True)
        assert len(common) >= 0.95 * len(tt_p)  # near-zero peaks may cross the 1e-3 threshold
        worst = max(worst, float(np.abs(i_p[ia] - i_i[ib]).max()))
    assert worst < 5.0  # measured ≈ 1–2 % of the strongest peak: two fits of the same Hartree-Fock f(s)


def test_profile_area_width_and_similarity_metrics():
    grid = np.arange(10.0, 90.0, 0.005)
    pos = np.array([30.0, 55.0])
    inten = np.array([2.0, 1.0])
    U, V, W = 0.02, -0.01, 0.01
    for shape, area_tol in (("gaussian", 1e-6), ("pseudo-voigt", 0.02)):
        y = np.asarray(powder.profile(grid, pos, inten, U=U, V=V, W=W, eta=0.5, shape=shape))
        area = np.trapezoid(y, grid)
        # Gaussian area is exact; Lorentzian tails beyond the grid lose ~ (2/π)·HWHM/distance of the area
        assert abs(area - 3.0) / 3.0 < area_tol
    yg = np.asarray(powder.profile(grid, pos[:1], inten[:1], U=U, V=V, W=W, shape="gaussian"))
    fwhm = float(powder.caglioti_fwhm(30.0, U, V, W))
    above = grid[yg >= yg.max() / 2]
    assert abs((above[-1] - above[0]) - fwhm) < 2 * 0.005  # grid spacing bounds the measured width
    # metrics: identical → perfect; a shift by δ of one narrow peak → W1 = δ (analytic limit)
    yp = np.asarray(powder.profile(grid, pos, inten, W=0.01, shape="gaussian"))
    assert abs(float(powder.cosine_similarity(yp, yp)) - 1) < 1e-12
    assert abs(float(powder.pearson_similarity(yp, yp)) - 1) < 1e-12
    assert float(powder.rwp(yp, yp, two_theta_grid=grid)) < 1e-12
    y_shift = np.asarray(powder.profile(grid, pos + 0.3, inten, W=0.01, shape="gaussian"))
    assert abs(float(powder.wasserstein_distance(yp, y_shift, grid)) - 0.3) < 1e-3  # discretization 0.005°
    assert float(powder.rwp(yp, y_shift, two_theta_grid=grid)) > 0.5
    assert float(powder.cosine_similarity(yp, y_shift)) < 0.5


def test_pattern_gradients_in_cell_and_coordinates_match_finite_differences():
    xs = read_structure(os.path.join(DATA, "sf_VO2.cif"))
    p1 = xs.expand_to_p1()
    lam = 1.54184
    hkl, mult = powder.powder_hkl(xs.cell, "P 1", lam, (15, 80), margin=0.05)  # P1: coordinates free
    grid = jnp.arange(15.0, 80.0, 0.05)
    target = powder.profile(
        grid,
        *(lambda d: (d["two_theta"], d["intensity"]))(
            powder.stick_pattern(hkl, mult, p1.pos_frac, xs.cell, p1.elements, wavelength=lam)
        ),
        W=0.05,
        shape="pseudo-voigt",
    )

    @jax.jit
    def loss(cell, pos):
        d = powder.stick_pattern(hkl, mult, pos, cell, p1.elements, wavelength=lam)
        y = powder.profile(grid, d["two_theta"], d["intensity"], W=0.05, shape="pseudo-voigt")
        return powder.rwp(target, y, two_theta_grid=grid) + powder.wasserstein_distance(target, y, grid)

    rng = np.random.default_rng(0)
    cell0 = jnp.asarray(xs.cell) + jnp.asarray([0.01, -0.02, 0.015, 0, 0.1, 0])
    pos0 = jnp.asarray(p1.pos_frac) + 0.003 * rng.normal(size=p1.pos_frac.shape)
    gc, gp = jax.grad(loss, argnums=(0, 1))(cell0, pos0)
    for k, (direction, eps) in enumerate(
        ((rng.normal(size=6) * np.array([1, 1, 1, 0, 1, 0]), 1e-5), (rng.normal(size=pos0.shape), 1e-6))
    ):
        args_p = [cell0, pos0]
        args_m = [cell0, pos0]
        args_p[k] = args_p[k] + eps * direction
        args_m[k] = args_m[k] - eps * direction
        fd = (float(loss(*args_p)) - float(loss(*args_m))) / (2 * eps)
        an = float(jnp.sum((gc, gp)[k] * direction))
        assert abs(fd - an) <= 1e-5 * max(1.0, abs(an))  # float64 central differences: O(eps²) ≈ 1e-9


def test_powder_hkl_respects_absences_and_range():
    xs = read_structure(os.path.join(DATA, "sf_Si.cif"))
    hkl, mult = powder.powder_hkl(xs.cell, xs.spacegroup, 1.54184, (20, 120))
    assert not symmetry.is_absent(hkl, xs.spacegroup).any()
    families = {tuple(sorted(h)) for h in np.abs(hkl)}
    assert {(1, 1, 1), (0, 2, 2), (1, 1, 3)} <= families and (0, 0, 2) not in families  # d-glide: 200 absent
    tt = 2 * np.degrees(np.arcsin(1.54184 / (2 * xs.cell[0] / np.sqrt((hkl**2).sum(1)))))
    assert tt.min() >= 20 and tt.max() <= 120
    with pytest.raises(ValueError, match="wavelength"):
        powder.wavelength_of("CuKz")
