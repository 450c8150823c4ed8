"""Unit-cell primitives (analysis/cell.py) against gemmi and analytic invariants (symmetry: test_symmetry.py)."""

from __future__ import annotations

import gemmi
import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis import symmetry


def test_metric_orthogonalization_and_inv_d2_match_gemmi(family, family_cells):
    system = family
    c = np.array(family_cells[system])
    uc = gemmi.UnitCell(*c)
    # float64 closed forms vs gemmi's: agreement to rounding
    np.testing.assert_allclose(cell_mod.orthogonalization_matrix(c), np.array(uc.orth.mat), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cell_mod.fractionalization_matrix(c), np.array(uc.frac.mat), rtol=1e-10, atol=1e-14)
    assert abs(cell_mod.volume(c) - uc.volume) < 1e-9 * uc.volume
    np.testing.assert_allclose(cell_mod.reciprocal_cell(c), uc.reciprocal().parameters, rtol=1e-10)
    hkl = symmetry.generate_hkl(c, 2.5, "P 1")
    ref = np.array([uc.calculate_1_d2([int(v) for v in h]) for h in hkl])
    np.testing.assert_allclose(cell_mod.inv_d2(hkl, c), ref, rtol=1e-10)
    # the linear form q² = H·x per lattice system
    x = cell_mod.reciprocal_params(c, system)
    assert x.shape == (cell_mod.n_reciprocal_params(system),)
    np.testing.assert_allclose(cell_mod.design_matrix(hkl, system) @ x, ref, rtol=1e-10)
    np.testing.assert_allclose(cell_mod.cell_from_reciprocal_params(x, system), c, rtol=1e-10)
    # fractional ↔ Cartesian against gemmi
    rng = np.random.default_rng(0)
    frac = rng.uniform(-0.5, 1.5, (5, 3))
    cart = cell_mod.frac_to_cart(frac, c)
    ref_cart = np.array([uc.orthogonalize(gemmi.Fractional(*f)).tolist() for f in frac])
    np.testing.assert_allclose(cart, ref_cart, atol=1e-10)
    np.testing.assert_allclose(cell_mod.cart_to_frac(cart, c), frac, atol=1e-12)
    # 2θ round trip and Bragg's law
    tt = cell_mod.two_theta_from_inv_d2(ref[:20], 1.5406)
    np.testing.assert_allclose(cell_mod.inv_d2_from_two_theta(tt, 1.5406), ref[:20], rtol=1e-10)
    np.testing.assert_allclose(1.5406 / (2 * np.sin(np.radians(tt / 2))), 1 / np.sqrt(ref[:20]), rtol=1e-10)


def test_inv_d2_gradient_in_cell_matches_finite_differences(family_cells):
    hkl = np.array([[1, 2, 3], [-2, 0, 1], [3, -1, 2]])
    c0 = jnp.asarray(family_cells["triclinic"])
    f = lambda c: jnp.sum(cell_mod.inv_d2(hkl, c) ** 0.5)
    g = jax.grad(f)(c0)
    for i in range(6):
        e = np.zeros(6)
        e[i] = 1e-6
        fd = (f(c0 + e) - f(c0 - e)) / 2e-6
        assert abs(fd - g[i]) < 1e-7 * max(1.0, abs(g[i]))  # float64 central differences, O(h²) ≈ 1e-12


def test_inv_d2_slope_two_theta_matches_finite_differences():
    """∂(1/d²)/∂(2θ) per degree against a central difference of inv_d2_from_two_theta (step 1e-5°: error ~1e-10)."""
    tt, lam = np.array([5.0, 30.0, 90.0, 150.0]), 1.5406
    h = 1e-5
    fd = (cell_mod.inv_d2_from_two_theta(tt + h, lam) - cell_mod.inv_d2_from_two_theta(tt - h, lam)) / (2 * h)
    np.testing.assert_allclose(cell_mod.inv_d2_slope_two_theta(tt, lam), fd, rtol=1e-7)
