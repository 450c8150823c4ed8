"""``dmd crystal`` / ``dmd.crystal``: P1 supercells against gemmi's symmetry expansion (docs/crystals.md).

Oracle: gemmi ``SpaceGroup.operations()`` applied atom by atom (``Op.apply_to_xyz``) to the asymmetric unit as
gemmi reads it, for real entries (5E5Z in P 1 21 1, 5WKD in C 1 2 1, COD 2242624 in P -1) and for the 5E5Z peptide
placed at a general position of P 1, P 21 21 21, P 31 2 1 and P 61 2 2 cells. Sites are compared in the written PDB,
whose 3-decimal coordinates bound the error at sqrt(3) x 0.0005 = 0.00087 Å, hence the 0.001 Å tolerance.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gemmi
import numpy as np
import pytest

from dmd.cli import main
from dmd.crystal import build_crystal, orthogonalization_matrix
from dmd.crystal.writer import write_crystal

DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "crystal"
TOL_A = 1e-3  # PDB coordinates have 3 decimals: |error| <= sqrt(3) * 0.0005 Å

SYNTHETIC = {
    "P 1": (24, 26, 28, 80, 95, 105),
    "P 21 21 21": (30, 35, 40, 90, 90, 90),
    "P 31 2 1": (36, 36, 50, 90, 90, 120),
    "P 61 2 2": (40, 40, 90, 90, 90, 120),
}


def synthetic_crystal(out: Path, hm: str, cell, centre=(0.31, 0.13, 0.21)) -> Path:
    """The 5E5Z peptide (no water) with its centre at fractional ``centre`` of a ``hm`` cell, written as PDB."""
    st = gemmi.read_structure(str(DATA / "5e5z.pdb"))
    st.remove_waters()
    pos = np.array([a.pos.tolist() for r in st[0]["A"] for a in r])
    uc = gemmi.UnitCell(*cell)
    shift = np.array(uc.orthogonalize(gemmi.Fractional(*centre)).tolist()) - pos.mean(axis=0)
    for r in st[0]["A"]:
        for a in r:
            a.pos = gemmi.Position(*(np.array(a.pos.tolist()) + shift))
    st.cell = uc
    st.spacegroup_hm = hm
    st.write_pdb(str(out))
    return out


def gemmi_unit_cell_sites(path: Path):
    """(fractional sites (M, 3) in [0, 1), elements, cell, n_asu): every op of the file's space group, per atom."""
    if path.suffix == ".cif":
        small = gemmi.read_small_structure(str(path))
        cell, sg = small.cell, gemmi.find_spacegroup_by_name(small.spacegroup_hm)
        asu = [(s.fract, s.element.name) for s in small.sites]
    else:
        st = gemmi.read_structure(str(path))
        st.remove_alternative_conformations()
        cell, sg = st.cell, gemmi.find_spacegroup_by_name(st.spacegroup_hm)
        asu = [(cell.fractionalize(a.pos), a.element.name) for r in st[0][0] for a in r]
    sites, elements = [], []
    for op in sg.operations():
        for f, el in asu:
            sites.append(op.apply_to_xyz([f.x, f.y, f.z]))
            elements.append(el)
    sites = np.asarray(sites)
    return sites - np.floor(sites), np.asarray(elements), cell, len(asu)


def periodic_match(frac_out, frac_ref, orth):
    """For each output site, the nearest reference site (modulo lattice vectors) and the distance in Å."""
    df = frac_out[:, None, :] - frac_ref[None, :, :]
    df -= np.round(df)
    d = np.linalg.norm(df @ orth.T, axis=2)
    j = np.argmin(d, axis=1)
    return j, d[np.arange(len(j)), j]


def read_back(pdb: Path, supercell):
    """Fractional coordinates in the parent cell, elements and chains of the written PDB (read by gemmi)."""
    st = gemmi.read_structure(str(pdb))
    na, nb, nc = supercell
    atoms = [(a, ch.name) for ch in st[0] for r in ch for a in r]
    frac = np.array([st.cell.fractionalize(a.pos).tolist() for a, _ in atoms]) * np.array([na, nb, nc])
    return frac, np.array([a.element.name for a, _ in atoms]), np.array([c for _, c in atoms]), st


def check_against_gemmi(path: Path, tmp_path: Path, supercell=(2, 1, 2), n_special=0):
    ref, ref_el, cell, n_asu = gemmi_unit_cell_sites(path)
    crystal = build_crystal(path, supercell)
    out = tmp_path / "out.pdb"
    write_crystal(crystal, out)
    frac, el, chains, st = read_back(out, supercell)
    orth = orthogonalization_matrix((cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma))
    n_cells = int(np.prod(supercell))
    # atom counts: every op x every cell, atoms on special positions once
    n_ops = len(crystal.operations)
    assert len(frac) == (n_ops * n_asu - n_special) * n_cells
    j, d = periodic_match(frac, ref, orth)
    assert d.max() <= TOL_A, f"max deviation {d.max():.2e} Å"
    assert np.array_equal(el, ref_el[j])
    # every gemmi site is met once per unit cell (special positions: its duplicate images once in total)
    counts = np.bincount(j, minlength=len(ref))
    assert set(counts[counts > 0]) == {n_cells}
    assert (counts > 0).sum() == n_ops * n_asu - n_special
    # the supercell's CRYST1 is P 1 with A a, B b, C c
    assert st.spacegroup_hm == "P 1"
    assert np.allclose([st.cell.a, st.cell.b, st.cell.c], np.array([cell.a, cell.b, cell.c]) * supercell, atol=1e-3)
    return crystal, frac, chains, float(d.max())


def assert_copies_rigid(path: Path, crystal, frac, chains):
    """Each chain of the output is a rigid image of the asymmetric unit's atoms: whole, not split by the cell."""
    orth = orthogonalization_matrix(crystal.cell)
    st = gemmi.read_structure(str(path))
    st.remove_alternative_conformations()
    ref = np.array([a.pos.tolist() for r in st[0][0] for a in r if not r.is_water()])
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=2)
    x = frac @ orth.T
    is_water = crystal.atoms["resname"] == "HOH"
    for ch in np.unique(chains):
        sel = (chains == ch) & ~is_water
        d = np.linalg.norm(x[sel][:, None] - x[sel][None], axis=2)
        assert np.abs(d - d_ref).max() < 2 * TOL_A + 1e-6


@pytest.mark.parametrize("hm", sorted(SYNTHETIC))
def test_synthetic_space_groups_match_gemmi(hm, tmp_path):
    path = synthetic_crystal(tmp_path / "in.pdb", hm, SYNTHETIC[hm])
    crystal, frac, chains, dmax = check_against_gemmi(path, tmp_path)
    assert crystal.spacegroup == gemmi.find_spacegroup_by_name(hm).hm
    assert len(np.unique(chains)) == crystal.n_copies  # one chain per copy of the one-chain asymmetric unit
    assert_copies_rigid(path, crystal, frac, chains)
    # centres of the copies lie in the supercell
    for ch in np.unique(chains):
        centre = frac[chains == ch].mean(axis=0)
        assert np.all(centre >= 0) and np.all(centre < np.array(crystal.supercell))
    print(f"{hm}: max deviation vs gemmi {dmax:.2e} Å, {crystal.n_atoms} atoms")


def test_p21_5e5z_matches_gemmi(tmp_path):
    path = DATA / "5e5z.pdb"
    crystal, frac, chains, dmax = check_against_gemmi(path, tmp_path)
    assert crystal.spacegroup == "P 1 21 1" and crystal.n_copies == 2 * 4
    assert_copies_rigid(path, crystal, frac, chains)
    print(f"P 1 21 1 (5E5Z): max deviation {dmax:.2e} Å")


def test_c2_5wkd_special_position_water(tmp_path):
    # HOH 401 (occupancy 0.5) sits on a 2-fold axis: its two images coincide and are kept once
    path = DATA / "5wkd.pdb"
    crystal, frac, chains, dmax = check_against_gemmi(path, tmp_path, n_special=2)
    assert crystal.spacegroup == "C 1 2 1" and len(crystal.special_positions) == 1
    assert_copies_rigid(path, crystal, frac, chains)
    print(f"C 1 2 1 (5WKD): max deviation {dmax:.2e} Å")


def test_p_1_small_molecule_cif(tmp_path):
    # FeN4 (COD 2242624): Fe on an inversion centre, an extended solid (each atom a residue of its own)
    path = DATA / "cod_2242624.cif"
    small = gemmi.read_small_structure(str(path))
    crystal, frac, chains, dmax = check_against_gemmi(path, tmp_path, n_special=1)
    assert crystal.n_atoms == len(small.get_all_unit_cell_sites()) * 4
    assert any("network" in n for n in crystal.notes)
    print(f"P -1 (COD 2242624): max deviation {dmax:.2e} Å")


def test_small_molecule_on_inversion_centre_is_whole(tmp_path):
    # a hexagon of carbons centred on the inversion centre (0, 0, 0) of P 1 21/c 1: the CIF lists half of it
    cell = (8.0, 9.0, 10.0, 90.0, 100.0, 90.0)
    orth = orthogonalization_matrix(cell)
    ang = np.radians([0, 60, 120])
    half = np.stack([1.4 * np.cos(ang), 1.4 * np.sin(ang), np.zeros(3)], axis=1) @ np.linalg.inv(orth).T
    rows = "\n".join(f"C{i + 1} C {f[0]:.6f} {f[1]:.6f} {f[2]:.6f}" for i, f in enumerate(half))
    cif = tmp_path / "hex.cif"
    cif.write_text(
        "data_hex\n_cell_length_a 8.0\n_cell_length_b 9.0\n_cell_length_c 10.0\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 100\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1 21/c 1'\n"
        f"loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        f"_atom_site_fract_z\n{rows}\n"
    )
    crystal = build_crystal(cif, (1, 1, 1))
    assert crystal.n_atoms == 12 and crystal.n_molecules == 2
    x = crystal.positions
    for m in np.unique(crystal.atoms["molecule"]):
        sel = x[crystal.atoms["molecule"] == m]
        assert len(sel) == 6
        d = np.sort(np.linalg.norm(sel[:, None] - sel[None], axis=2), axis=1)[:, 1:3]
        assert np.allclose(d, 1.4, atol=1e-4)  # ring neighbours at 1.4 Å, with no lattice vector in between
        names = crystal.atoms["name"][crystal.atoms["molecule"] == m]
        assert len(set(names)) == 6


def test_output_readable_by_openmm_and_mdtraj(tmp_path):
    import mdtraj
    import openmm.app as app
    import openmm.unit as u
    from openmm.app.internal.unitcell import reducePeriodicBoxVectors

    crystal = build_crystal(DATA / "5wkd.pdb", (1, 3, 2))
    out = tmp_path / "c.pdb"
    summary = write_crystal(crystal, out)
    pdb = app.PDBFile(str(out))
    x = pdb.getPositions(asNumpy=True).value_in_unit(u.angstrom)
    assert pdb.topology.getNumAtoms() == crystal.n_atoms == summary["atoms"]
    assert np.abs(x - crystal.positions).max() <= 5e-4 + 1e-9
    box = np.array(pdb.topology.getPeriodicBoxVectors().value_in_unit(u.angstrom))
    want = np.array(reducePeriodicBoxVectors(u.Quantity(crystal.box, u.angstrom)).value_in_unit(u.angstrom))
    assert np.allclose(box, want, atol=2e-3)
    assert pdb.topology.getNumChains() == len(np.unique(crystal.atoms["chain"]))
    traj = mdtraj.load(str(out))
    assert traj.n_atoms == crystal.n_atoms
    assert np.allclose(traj.unitcell_lengths[0] * 10, crystal.supercell_cell[:3], atol=2e-3)
    assert np.allclose(traj.unitcell_angles[0], crystal.supercell_cell[3:], atol=1e-2)
    assert np.abs(traj.xyz[0] * 10 - crystal.positions).max() < 1e-3
    js = json.loads(out.with_suffix(".json").read_text())
    assert js["copies"] == 4 * 6 and js["atoms"] == crystal.n_atoms and js["spacegroup"] == "C 1 2 1"
    assert 0.0 < js["solvent_fraction"] < 0.5


def test_cli_hydrogens_and_solvent(tmp_path, capsys):
    import openmm.app as app
    import openmm.unit as u

    out = tmp_path / "x.pdb"
    assert (
        main(
            ["crystal", str(DATA / "5wkd.pdb"), "--supercell", "1", "3", "1", "--out", str(out)]
            + ["--add-hydrogens", "--solvate"]
        )
        == 0
    )
    js = json.loads(out.with_suffix(".json").read_text())
    assert js["hydrogens_added_per_asymmetric_unit"] > 30 and js["waters_added"] >= 0
    pdb = app.PDBFile(str(out))
    ff = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.PME)  # every residue has its template
    assert system.getNumParticles() == js["atoms"]
    # the crystal's heavy atoms are where the plain build puts them
    plain = build_crystal(DATA / "5wkd.pdb", (1, 3, 1))
    heavy = np.array([a.element.symbol != "H" for a in pdb.topology.atoms()])
    x = pdb.getPositions(asNumpy=True).value_in_unit(u.angstrom)
    assert np.abs(x[heavy][: plain.n_atoms] - plain.positions).max() <= 5e-4 + 1e-9


def test_solvate_fills_solvent_at_bulk_density(tmp_path):
    # a loosely packed P 21 21 21 crystal of the peptide: water fills the solvent region; the count is that of bulk
    # TIP3P (0.0334 Å^-3 at 0.99 g/cm^3) over the masked solvent volume, less the shell OpenMM's addSolvent keeps
    # clear of the crystal's atoms (0.83 here); the crystal's atoms do not move
    import openmm.app as app
    import openmm.unit as u

    path = synthetic_crystal(tmp_path / "in.pdb", "P 21 21 21", (26, 30, 34, 90, 90, 90))
    out = tmp_path / "s.pdb"
    assert main(["crystal", str(path), "--add-hydrogens", "--solvate", "--out", str(out)]) == 0
    js = json.loads(out.with_suffix(".json").read_text())
    volume = float(np.linalg.det(np.array(js["box_vectors_angstrom"])))
    ratio = js["waters_added"] / (0.0334 * js["solvent_fraction"] * volume)
    assert 0.7 < ratio < 1.0, ratio
    pdb = app.PDBFile(str(out))
    x = pdb.getPositions(asNumpy=True).value_in_unit(u.angstrom)
    plain = build_crystal(path)
    heavy = np.array([a.element.symbol != "H" for a in pdb.topology.atoms()])
    assert np.abs(x[heavy][: plain.n_atoms] - plain.positions).max() <= 5e-4 + 1e-9


def test_mmcif_input_equals_pdb_input(tmp_path):
    st = gemmi.read_structure(str(DATA / "5e5z.pdb"))
    st.setup_entities()
    cif = tmp_path / "5e5z.cif"
    st.make_mmcif_document().write_file(str(cif))
    a = build_crystal(DATA / "5e5z.pdb", (1, 2, 1))
    b = build_crystal(cif, (1, 2, 1))
    assert b.n_atoms == a.n_atoms and b.spacegroup == a.spacegroup
    assert np.abs(a.positions - b.positions).max() < 1e-9


# ---- bad input: a clear message naming the file and the fix, nothing written ---------------------------------


def run_bad(tmp_path, capsys, argv, *expect):
    out = tmp_path / "bad.pdb"
    rc = main(["crystal", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    for e in expect:
        assert e in err, err
    assert "Traceback" not in err
    assert not out.exists() and not out.with_suffix(".json").exists()
    return err


def test_bad_no_cell(tmp_path, capsys):
    path = tmp_path / "nocell.pdb"
    path.write_text(
        "\n".join(ln for ln in (DATA / "5e5z.pdb").read_text().splitlines() if not ln.startswith(("CRYST1", "SCALE")))
    )
    run_bad(tmp_path, capsys, [str(path)], str(path), "no unit cell", "CRYST1")


def test_bad_no_spacegroup(tmp_path, capsys):
    path = tmp_path / "nosg.pdb"
    lines = [ln[:55] if ln.startswith("CRYST1") else ln for ln in (DATA / "5e5z.pdb").read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    run_bad(tmp_path, capsys, [str(path)], str(path), "no space group", "--spacegroup")


def test_bad_unknown_spacegroup(tmp_path, capsys):
    run_bad(tmp_path, capsys, [str(DATA / "5e5z.pdb"), "--spacegroup", "P 7 1"], "5e5z.pdb", "'P 7 1'", "--spacegroup")


def test_bad_overlapping_mates(tmp_path, capsys):
    # the peptide centred on the 2-fold axis of P 1 2 1: it overlaps its own image
    path = synthetic_crystal(tmp_path / "axis.pdb", "P 1 2 1", (30, 25, 30, 90, 100, 90), centre=(0.0, 0.3, 0.0))
    err = run_bad(tmp_path, capsys, [str(path)], str(path), "overlap", "Å apart", "operation -x,y,-z")
    assert re.search(r"atom \S+ \(A (LEU|VAL|HIS|SER|ASN) \d+, operation x,y,z\) and atom \S+ \(A \w+ \d+", err), err


def test_bad_placeholder_cryst1(tmp_path, capsys):
    path = tmp_path / "nmr.pdb"
    lines = [
        "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1          "
        if ln.startswith("CRYST1")
        else ln
        for ln in (DATA / "5e5z.pdb").read_text().splitlines()
        if not ln.startswith("SCALE")
    ]
    path.write_text("\n".join(lines) + "\n")
    run_bad(tmp_path, capsys, [str(path)], str(path), "placeholder", "treated as no box")


def test_bad_existing_output(tmp_path, capsys):
    out = tmp_path / "bad.pdb"
    out.write_text("keep me\n")
    rc = main(["crystal", str(DATA / "5e5z.pdb"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and str(out) in err and "--overwrite" in err
    assert out.read_text() == "keep me\n" and not out.with_suffix(".json").exists()
    assert main(["crystal", str(DATA / "5e5z.pdb"), "--out", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("REMARK")
