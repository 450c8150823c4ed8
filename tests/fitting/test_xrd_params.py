"""Parameterizations of fitting.xrd_params: symmetry is kept (spglib oracle), projections round-trip,
the structure library is what its sources say (space-group numbers from spglib)."""

from __future__ import annotations

import warnings

import gemmi
import numpy as np
import pytest

from analysis import symmetry
from fitting import xrd_params as xp
from fitting.xrd_structures import STRUCTURES, expand_spec, spacegroup_param, to_pymatgen


def _sg_number(cell, pos, els, symprec=1e-3):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpacegroupAnalyzer(to_pymatgen(cell, np.mod(pos, 1.0), els), symprec=symprec).get_space_group_number()


def test_library_has_20_structures_with_their_space_groups():
    # spglib (via pymatgen) must find exactly the tabulated space group for every entry
    assert len(STRUCTURES) >= 20
    for spec in STRUCTURES.values():
        cell, pos, els = expand_spec(spec)
        assert _sg_number(cell, pos, els) == gemmi.SpaceGroup(spec.spacegroup).number, spec.name
        # same atom count as a plain symmetry expansion with duplicates removed
        img = symmetry.expand_to_p1(spec.site_frac, spec.spacegroup)
        uniq = {tuple(np.round(np.mod(p, 1.0), 4) % 1.0) for p in img}
        assert len(uniq) == len(els), spec.name


@pytest.mark.parametrize("name", ["TiO2-rutile", "TiO2-anatase", "CaTiO3", "Al2O3-corundum", "ZnO", "MgAl2O4-spinel"])
def test_spacegroup_param_keeps_space_group_for_random_parameters(name):
    # random Wyckoff displacements (0.03 fractional) and lattice changes (3 %): spglib at a tight tolerance
    # (1e-3 Å) must still find the space group; a wrong free-direction basis breaks it.
    spec = STRUCTURES[name]
    par = spacegroup_param(spec)
    rng = np.random.default_rng(1)
    p = par.init(spec.cell)
    p["wyckoff"] = p["wyckoff"] + rng.uniform(-0.03, 0.03, p["wyckoff"].shape)
    p["lattice"] = p["lattice"] + rng.uniform(-0.03, 0.03, p["lattice"].shape)
    cell, pos = (np.asarray(v) for v in par.crystal(p))
    assert _sg_number(cell, pos, par.elements) == gemmi.SpaceGroup(spec.spacegroup).number


def test_wyckoff_free_parameter_counts():
    # site-symmetry analysis vs the International Tables: rutile O 4f (x,x,0): 1; CaTiO3 Pnma 4c: 2, 8d: 3;
    # corundum Al 12c (0,0,z): 1, O 18e (x,0,1/4): 1; pyrite S 8c (x,x,x): 1; NaCl: none.
    counts = {n: [s.n_free for s in spacegroup_param(STRUCTURES[n]).sites] for n in STRUCTURES}
    assert counts["TiO2-rutile"] == [0, 1]
    assert counts["CaTiO3"] == [2, 0, 2, 3]
    assert counts["Al2O3-corundum"] == [1, 1]
    assert counts["FeS2-pyrite"] == [0, 1]
    assert counts["NaCl"] == [0, 0]
    mult = [s.multiplicity for s in spacegroup_param(STRUCTURES["Al2O3-corundum"]).sites]
    assert mult == [12, 18]


def test_spacegroup_projection_roundtrip_and_averaging():
    spec = STRUCTURES["CaTiO3"]
    par = spacegroup_param(spec)
    rng = np.random.default_rng(2)
    p = par.init(spec.cell)
    p["wyckoff"] = rng.uniform(-0.02, 0.02, p["wyckoff"].shape)
    cell, pos = (np.asarray(v) for v in par.crystal(p))
    back = par.init(cell, pos)
    # exact inverse on the constrained manifold (float64 rounding)
    np.testing.assert_allclose(back["wyckoff"], p["wyckoff"], atol=1e-12)
    np.testing.assert_allclose(back["lattice"], p["lattice"], atol=1e-12)
    # random P1 noise is averaged over each orbit: the projected error is smaller than the noise
    noisy = pos + rng.normal(0, 0.01, pos.shape)
    err = np.abs(par.init(cell, noisy)["wyckoff"] - p["wyckoff"]).max()
    assert err < 0.01  # orbit averaging of 4-8 images; single-image noise is 0.01 (σ)


def test_family_lattice_roundtrip(family, family_cells):
    c = np.array(family_cells[family], float)
    back = np.asarray(xp.cell_from_lattice_params(xp.lattice_params_from_cell(c, family), family))
    np.testing.assert_allclose(back, c, rtol=1e-12)  # exact up to exp/log rounding
    assert xp.family_of_cell(c) == family


def test_family_of_spacegroup():
    assert xp.family_of_spacegroup("R -3 c:H") == "hexagonal"
    assert xp.family_of_spacegroup("R -3 c:R") == "rhombohedral"
    assert xp.family_of_spacegroup("P 1 21/c 1") == "monoclinic"
    assert xp.family_of_spacegroup("P n m a") == "orthorhombic"
    with pytest.raises(ValueError, match="unique-axis-b"):
        xp.family_of_spacegroup("P 1 1 21/a")
