"""Unit-cell and symmetry primitives (analysis/cell.py, analysis/symmetry.py) against gemmi, pymatgen's
space-group tables and analytic invariants."""

from __future__ import annotations

import gemmi
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.structure_factors import structure_factors


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


@pytest.mark.parametrize("sg", ["P 21 21 21", "C 1 2 1", "P 43 21 2", "P 61 2 2", "H 3 2", "F d -3 m:1", "I a -3 d"])
def test_hkl_generation_asu_and_symmetry_flags_match_gemmi(sg, family_cells):
    group = gemmi.SpaceGroup(sg)
    system = group.crystal_system_str()
    c = family_cells.get(system, family_cells["cubic"])
    if sg.startswith("H"):
        c = family_cells["hexagonal"]
    c = np.array(c)
    d_min = 1.2 if system == "cubic" else 4.0
    uniq = symmetry.generate_hkl(c, d_min, sg, unique=True)
    ref = np.array(gemmi.make_miller_array(gemmi.UnitCell(*c), group, d_min, 0.0, unique=True))
    assert {tuple(h) for h in uniq} == {tuple(h) for h in ref}
    full = symmetry.generate_hkl(c, d_min, sg)
    inv_d2 = cell_mod.inv_d2(full, c)
    assert inv_d2.max() <= 1 / d_min**2 * (1 + 1e-12) and np.all(np.diff(inv_d2) >= -1e-15)  # sorted by d
    # every present reflection maps into the ASU; its whole orbit maps to the same ASU index
    asu, isym = symmetry.to_asu(full, sg)
    rasu = gemmi.ReciprocalAsu(group)
    assert all(rasu.is_in([int(v) for v in h]) for h in asu[:300])
    assert {tuple(h) for h in asu} == {tuple(h) for h in uniq}
    canon = symmetry.canonical_hkl(full, sg)
    _, inv_a = np.unique(asu, axis=0, return_inverse=True)
    _, inv_c = np.unique(canon, axis=0, return_inverse=True)
    assert len(set(zip(inv_a.ravel(), inv_c.ravel(), strict=False))) == len(uniq)  # the two orbit labelings coincide
    # multiplicity = orbit size = number of full-sphere reflections per unique one (no absences inside)
    counts = np.bincount(inv_a.ravel())
    mult_of_unique = symmetry.multiplicities(
        np.array([full[np.argmax(inv_a.ravel() == k)] for k in range(len(counts))]), sg
    )
    np.testing.assert_array_equal(mult_of_unique, counts)
    # epsilon and centric flags, independently from the rotation matrices
    rots = symmetry.reciprocal_rotations(sg)
    sample = full[:: max(1, len(full) // 150)]
    images = np.einsum("ni,rij->nrj", sample, rots)
    n_centring = len(group.operations().cen_ops)
    eps = np.sum(np.all(images == sample[:, None], axis=2), axis=1) * n_centring
    np.testing.assert_array_equal(symmetry.epsilon_factors(sample, sg), eps)
    centric = np.any(np.all(images == -sample[:, None], axis=2), axis=1)
    np.testing.assert_array_equal(symmetry.centric_flags(sample, sg), centric)


def test_systematic_absences_known_rules(family_cells):
    # P 21 21 21: h00, 0k0, 00l absent for odd index
    hkl = np.array([[1, 0, 0], [2, 0, 0], [0, 3, 0], [0, 4, 0], [0, 0, 5], [1, 1, 0]])
    np.testing.assert_array_equal(symmetry.is_absent(hkl, "P 21 21 21"), [1, 0, 1, 0, 1, 0])
    # F d -3 m (origin 1): F-centring (mixed parity absent) and d-glide 0kl: k + l = 4n. 222 is *not* a
    # space-group absence (it vanishes in diamond only because of the 8a site), so it must stay present.
    hkl = np.array([[1, 1, 1], [2, 0, 0], [2, 2, 0], [1, 1, 0], [4, 0, 0], [2, 2, 2], [3, 1, 1], [0, 2, 4], [0, 4, 4]])
    np.testing.assert_array_equal(symmetry.is_absent(hkl, "F d -3 m:1"), [0, 1, 0, 1, 0, 0, 0, 1, 0])
    # generate_hkl drops absences unless asked
    full = symmetry.generate_hkl(family_cells["orthorhombic"], 10.0, "P 21 21 21")
    assert not symmetry.is_absent(full, "P 21 21 21").any()
    with_abs = symmetry.generate_hkl(family_cells["orthorhombic"], 10.0, "P 21 21 21", include_absent=True)
    assert len(with_abs) > len(full)


def test_friedel_mates_and_supercell_grid(family_cells):
    c = np.array(family_cells["monoclinic"])
    hkl = symmetry.generate_hkl(c, 3.0, "P 1", unique=True)
    rng = np.random.default_rng(1)
    pos = rng.uniform(size=(20, 3))
    els = ["C"] * 10 + ["O"] * 10
    f_p = np.asarray(structure_factors(hkl, pos, c, els))
    f_m = np.asarray(structure_factors(symmetry.friedel_mates(hkl), pos, c, els))
    np.testing.assert_allclose(f_m, np.conj(f_p), atol=1e-10)  # F(−h) = F(h)* (no anomalous scattering)
    sup, frac = symmetry.supercell_hkl(c, 5.0, (2, 3, 1))
    np.testing.assert_allclose(frac * [2, 3, 1], sup)
    big = np.concatenate([c[:3] * [2, 3, 1], c[3:]])
    np.testing.assert_allclose(cell_mod.inv_d2(sup, big), cell_mod.inv_d2(frac, c), rtol=1e-12)


def test_expand_to_p1_matches_gemmi_cell_images():
    import os

    from analysis.structure_io import read_structure

    for name in ("LiFePO4", "Si", "K2O2", "Graphite"):
        path = os.path.join(os.path.dirname(__file__), "..", "data", f"sf_{name}.cif")
        small = gemmi.read_small_structure(path)
        p1 = read_structure(path).expand_to_p1()
        ref = np.array([s.fract.tolist() for s in small.get_all_unit_cell_sites()])
        assert p1.n_atoms == len(ref)
        d = p1.pos_frac[:, None] - ref[None] % 1.0
        d -= np.round(d)
        assert np.abs(d).sum(-1).min(axis=1).max() < 1e-6  # each of our images is one of gemmi's


def test_spacegroup_errors_are_clear(family_cells):
    with pytest.raises(ValueError, match="Hermann-Mauguin"):
        symmetry.spacegroup("P 7 7 7")
    with pytest.raises(ValueError, match="d_min must be positive"):
        symmetry.generate_hkl(family_cells["cubic"], 0.0)


def test_inv_d2_slope_two_theta_matches_finite_differences():
    """∂(1/d²)/∂(2θ) per degree against a central difference of inv_d2_from_two_theta (step 1e-5°: error ~1e-10)."""
    tt, lam = np.array([5.0, 30.0, 90.0, 150.0]), 1.5406
    h = 1e-5
    fd = (cell_mod.inv_d2_from_two_theta(tt + h, lam) - cell_mod.inv_d2_from_two_theta(tt - h, lam)) / (2 * h)
    np.testing.assert_allclose(cell_mod.inv_d2_slope_two_theta(tt, lam), fd, rtol=1e-7)


def test_hkl_keys_equal_iff_equal_and_sorted_like_the_indices():
    rng = np.random.default_rng(0)
    hkl = rng.integers(-300, 301, size=(4000, 3))
    hkl[:500] = hkl[500:1000]  # repeats
    keys = symmetry.hkl_keys(hkl)
    uniq_rows, inv_rows = np.unique(hkl, axis=0, return_inverse=True)
    uniq_keys, inv_keys = np.unique(keys, return_inverse=True)
    # same grouping and the same (lexicographic) order as np.unique on the rows
    np.testing.assert_array_equal(inv_keys.ravel(), inv_rows.ravel())
    assert uniq_keys.size == uniq_rows.shape[0]
    # extreme indices stay distinct and ordered
    ext = np.array([[-(2**19) + 1, 0, 0], [0, -(2**19) + 1, 2**19 - 1], [0, 0, 0], [2**19 - 1, 2**19 - 1, 2**19 - 1]])
    assert np.all(np.diff(symmetry.hkl_keys(ext)) > 0)
