"""``dmd reweight --spacegroup``: orbit means and gemmi's ASU (fitting.reweight.symmetry_report) against gemmi."""

import gemmi
import numpy as np
import pytest

from analysis import symmetry
from analysis.diffuse import inv_d2_of
from dmd.base.errors import UserInputError
from fitting.reweight.symmetry_report import symmetry_report


@pytest.mark.parametrize(
    "sg, cell, supercell",
    [
        ("P 21 21 21", [30.0, 34.0, 38.0, 90, 90, 90], (1, 1, 1)),
        ("P 1 21 1", [30.0, 34.0, 38.0, 90, 101.2, 90], (1, 1, 1)),
        ("P 4 2 2", [40.0, 40.0, 30.0, 90, 90, 90], (2, 2, 1)),  # box indices of a 2×2×1 supercell
    ],
)
def test_orbit_means_on_gemmi_asu(sg, cell, supercell):
    hkl = symmetry.generate_hkl(cell, 6.0, "P 1")  # full sphere: every equivalent and Friedel mate present
    rng = np.random.default_rng(0)
    calc, obs = rng.uniform(1, 2, len(hkl)), rng.uniform(1, 2, len(hkl))
    cols, asu, s = symmetry_report(hkl, calc, obs, inv_d2_of(hkl, cell), sg, supercell=supercell, n_shells=5)
    group = gemmi.find_spacegroup_by_name(sg)
    gasu, ops = gemmi.ReciprocalAsu(group), group.operations()
    index = {tuple(h): i for i, h in enumerate(hkl.tolist())}
    assert asu["multiplicity"].sum() == len(hkl) and s["n_orbits"] == len(asu["hkl"])
    for h, m_calc, m_obs, mult in zip(asu["hkl"].tolist(), asu["ICALC"], asu["IOBS"], asu["multiplicity"], strict=True):
        assert gasu.is_in(h)  # one voxel per orbit, in gemmi's ASU
        orbit = {tuple(op.apply_to_hkl(h)) for op in ops.sym_ops}
        orbit |= {(-a, -b, -c) for a, b, c in orbit}  # Friedel mates: I_D(−h) = I_D(h)
        members = [index[o] for o in orbit if o in index]
        assert len(members) == mult
        np.testing.assert_allclose([m_calc, m_obs], [calc[members].mean(), obs[members].mean()], rtol=1e-12)
        np.testing.assert_allclose(cols["ICALC_SYM"][members], m_calc, rtol=1e-12)  # the MTZ column agrees
    # symmetrizing averages sampling noise away: CC against symmetric data rises
    sym_true = np.abs(hkl).sum(1).astype(float)
    noisy_calc, noisy_obs = sym_true + rng.normal(0, 3, len(hkl)), sym_true + rng.normal(0, 3, len(hkl))
    _, _, s2 = symmetry_report(hkl, noisy_calc, noisy_obs, inv_d2_of(hkl, cell), sg, supercell=supercell, n_shells=5)
    assert s2["symmetrized"]["cc_total"] > s2["raw"]["cc_total"] + 0.05
    assert len(s2["symmetrized"]["cc_anisotropic_shells"]) == 5 and s2["spacegroup"] == group.hm


def test_bad_spacegroup_and_supercell_name_the_fix():
    hkl = symmetry.generate_hkl([40.0, 40.0, 30.0, 90, 90, 90], 6.0, "P 1")
    v = np.ones(len(hkl))
    with pytest.raises(UserInputError, match="unknown space group 'P 99'"):
        symmetry_report(hkl, v, v, v, "P 99")
    with pytest.raises(UserInputError, match="equal counts along symmetry-related axes"):
        symmetry_report(hkl, v, v, v, "P 4 2 2", supercell=(2, 1, 1))
