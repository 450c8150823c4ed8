"""`crystal: {file, supercell}` in a fit config's system: an FCC argon CIF (Fm-3m, a = 5.26 Å) built by
dmd.crystal into a 3×3×3 P 1 supercell: 108 atoms, cubic box 1.578 nm, nearest neighbours a/√2 = 0.3719 nm."""

from __future__ import annotations

import numpy as np
import pytest

from dmd.base.errors import UserInputError
from fitting.fit_config import build_system

CIF = """data_argon
_cell_length_a 5.26
_cell_length_b 5.26
_cell_length_c 5.26
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Ar1 Ar 0 0 0
"""


def test_crystal_system_from_cif(tmp_path):
    (tmp_path / "ar.cif").write_text(CIF)
    system = build_system(
        {"model": "lj_fluid", "cutoff": 0.6, "skin": 0.1, "crystal": {"file": "ar.cif", "supercell": 3}}, tmp_path
    )
    pos, box = np.asarray(system.positions, float), np.asarray(system.box, float)
    assert pos.shape == (108, 3)
    np.testing.assert_allclose(box.ravel()[:1], 1.578, rtol=1e-5)
    d = pos[:, None] - pos[None]
    d -= 1.578 * np.round(d / 1.578)
    r = np.sqrt((d**2).sum(-1)) + np.eye(108) * 9
    np.testing.assert_allclose(r.min(axis=1), 0.526 / np.sqrt(2), rtol=1e-5)


def test_crystal_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        build_system({"model": "lj_fluid", "crystal": {"file": "none.cif"}}, tmp_path)
