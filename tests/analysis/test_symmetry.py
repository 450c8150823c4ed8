"""hkl generation and reciprocal-space symmetry (analysis/symmetry.py) against gemmi's space-group tables, the
textbook powder multiplicities and analytic invariants."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.structure_factors import structure_factors


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


@pytest.mark.parametrize(
    "sg, hkl, expected",
    [
        # the powder multiplicities of the textbooks (e.g. Cullity, Elements of X-ray Diffraction, Appendix 10)
        ("F m -3 m", [[2, 0, 0], [2, 2, 0], [1, 1, 1], [4, 2, 0], [3, 3, 1], [6, 4, 2]], [6, 12, 8, 24, 24, 48]),
        ("P 6/m m m", [[0, 0, 2], [1, 0, 0], [1, 1, 0], [1, 0, 1], [2, 1, 0], [2, 1, 3]], [2, 6, 6, 12, 12, 24]),
        ("P 4/m m m", [[0, 0, 1], [1, 0, 0], [1, 1, 0], [2, 1, 0], [1, 0, 1], [2, 1, 3]], [2, 4, 4, 8, 8, 16]),
        ("P 1", [[1, 2, 3], [0, 0, 1]], [2, 2]),  # Friedel pairs only
    ],
)
def test_multiplicities_are_the_textbook_ones(sg, hkl, expected):
    # integer counts: exact
    np.testing.assert_array_equal(symmetry.multiplicities(np.array(hkl), sg), expected)
