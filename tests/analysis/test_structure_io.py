"""Structure and trajectory reading (analysis/structure_io.py): unit-cell contents against the published formula
units, U → B against the definitions, and the PDB read by gemmi against the same file read by mdtraj."""

from __future__ import annotations

import collections
import os

import gemmi
import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis.structure_io import read_structure, trajectory_frames
from dmd.base.errors import UserInputError

DATA = os.path.join(os.path.dirname(__file__), "..", "data")

# atoms per conventional cell: formula × Z of the published structures (CsCl Z = 1; graphite 4 C; K₂O₂ Cmca
# Z = 4; olivine LiFePO₄ Z = 4; diamond Si 8; α-quartz Z = 3; rutile VO₂ Z = 2)
CELL_CONTENTS = {
    "CsCl": {"Cs": 1, "Cl": 1},
    "Graphite": {"C": 4},
    "K2O2": {"K": 8, "O": 8},
    "LiFePO4": {"Li": 4, "Fe": 4, "P": 4, "O": 16},
    "Si": {"Si": 8},
    "SiO2": {"Si": 3, "O": 6},
    "VO2": {"V": 2, "O": 4},
}


@pytest.mark.parametrize("name", sorted(CELL_CONTENTS))
def test_unit_cell_contents_are_the_published_ones(name):
    p1 = read_structure(os.path.join(DATA, f"sf_{name}.cif")).expand_to_p1()
    # integer counts: exact (special positions merged once, e.g. Cs at 1a, Si at 8a)
    assert dict(collections.Counter(p1.elements)) == CELL_CONTENTS[name]
    assert p1.spacegroup == "P 1" and np.all((p1.pos_frac >= 0) & (p1.pos_frac < 1))


def _write_cif(path):
    """A monoclinic P 1 CIF written by gemmi: C1 with U_iso = 0.0125 Å², O1 with anisotropic U only."""
    small = gemmi.SmallStructure()
    small.name, small.cell, small.spacegroup_hm = "test", gemmi.UnitCell(7, 8, 9, 90, 110, 90), "P 1"
    for label, element, xyz, u_iso in (("C1", "C", (0.1, 0.2, 0.3), 0.0125), ("O1", "O", (0.4, 0.1, 0.2), 0.0)):
        site = gemmi.SmallStructure.Site()
        site.label, site.element, site.fract, site.u_iso, site.occ = (
            label, gemmi.Element(element), gemmi.Fractional(*xyz), u_iso, 1.0
        )  # fmt: skip
        if label == "O1":
            site.aniso = gemmi.SMat33d(0.02, 0.03, 0.04, 0.0, 0.005, 0.0)  # U11 U22 U33 U12 U13 U23
        small.add_site(site)
    small.make_cif_block().write_file(str(path))


def test_b_factors_from_u_iso_and_from_anisotropic_u(tmp_path):
    _write_cif(tmp_path / "t.cif")
    xs = read_structure(tmp_path / "t.cif")
    cell = np.array([7.0, 8.0, 9.0, 90.0, 110.0, 90.0])
    # U_eq = (1/3) Σ_ij U^ij a*_i a*_j (a_i · a_j) (Fischer & Tillmanns, Acta Cryst. C 1988), written out here
    u = np.array([[0.02, 0.0, 0.005], [0.0, 0.03, 0.0], [0.005, 0.0, 0.04]])
    recip = cell_mod.reciprocal_cell(cell)[:3]
    rows = cell_mod.orthogonalization_matrix(cell).T  # a, b, c as rows
    u_eq = sum(u[i, j] * recip[i] * recip[j] * rows[i] @ rows[j] for i in range(3) for j in range(3)) / 3
    # B = 8π²U; the U values pass through the CIF text as the decimals given (rounding ≲ 1e-7 relative)
    np.testing.assert_allclose(xs.b_iso, 8 * np.pi**2 * np.array([0.0125, u_eq]), rtol=1e-6)
    assert xs.elements == ("C", "O")


def test_pdb_read_by_gemmi_equals_the_same_file_read_by_mdtraj():
    path = os.path.join(DATA, "sf_villin_top.pdb")
    xs = read_structure(path)  # gemmi
    (frac, cells, els), *rest = list(trajectory_frames(path))  # mdtraj: nm, fractionalized with its box
    assert not rest and frac.shape == (1, xs.n_atoms, 3) and list(els) == list(xs.elements)
    np.testing.assert_allclose(cells[0], xs.cell, atol=1e-4)  # one CRYST1 line, float32 nm in mdtraj: ~2e-6 Å
    d = (frac[0] - xs.pos_frac) * xs.cell[:3]  # orthogonal box: Å per axis
    assert np.abs(d).max() < 1e-4  # the same 3-decimal Å numbers; measured 2.5e-6 Å (mdtraj keeps float32 nm)


def test_bad_files_are_refused_with_the_fix(tmp_path):
    with pytest.raises(UserInputError, match="no such structure file"):
        read_structure(tmp_path / "missing.cif")
    (tmp_path / "x.xyz").write_text("1\n\nC 0 0 0\n")
    with pytest.raises(UserInputError, match=r"unknown structure format \.xyz"):
        read_structure(tmp_path / "x.xyz")
    (tmp_path / "nocell.pdb").write_text(
        "ATOM      1  C   ALA A   1       1.000   2.000   3.000  1.00  0.00           C\n"
    )
    with pytest.raises(UserInputError, match="no unit cell"):
        read_structure(tmp_path / "nocell.pdb")
    with pytest.raises(UserInputError, match="--stride must be ≥ 1"):
        next(trajectory_frames(os.path.join(DATA, "sf_villin_top.pdb"), stride=0))
