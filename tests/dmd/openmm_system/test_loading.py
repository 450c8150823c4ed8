"""Bad input to the force-field loader: each error is a UserInputError naming the file and the fix. A placeholder
CRYST1 (1 × 1 × 1 Å, NMR / cryo-EM entries) is no box: ``read_structure`` drops it with a note, and ``dmd energy``
then picks NoCutoff (before: PME in a 1 Å box, an OpenMM traceback)."""

import json
import os
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest

from dmd.base.errors import UserInputError
from dmd.cli import main
from dmd.openmm_system import system_from_openmm, system_from_pdb
from dmd.openmm_system.loading import read_structure

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data")
ALA = os.path.join(DATA, "alanine_dipeptide.pdb")


def test_unknown_forcefield_file_lists_valid_names():
    with pytest.raises(UserInputError) as err:
        system_from_pdb(ALA, ["amber14-all.xml", "amber99-nonexistent.xml"], nonbonded="NoCutoff")
    msg = str(err.value)
    assert "amber99-nonexistent.xml" in msg and "amber14-all.xml" in msg and "os.listdir" in msg


def test_residue_without_template_names_residue_and_fix(tmp_path):
    pdb = app.PDBFile(ALA)
    m = app.Modeller(pdb.topology, pdb.positions)
    m.delete([a for a in m.topology.atoms() if a.element.symbol == "H"])
    path = tmp_path / "ala_noH.pdb"
    with open(path, "w") as f:
        app.PDBFile.writeFile(m.topology, m.positions, f)
    with pytest.raises(UserInputError) as err:
        system_from_pdb(path, ["amber14-all.xml"], nonbonded="NoCutoff")
    msg = str(err.value)
    assert str(path) in msg and "No template found for residue" in msg
    assert "addHydrogens" in msg and "template XML" in msg


def test_pme_without_box_says_add_cryst1_or_nocutoff():
    with pytest.raises(UserInputError) as err:
        system_from_pdb(ALA, ["amber14-all.xml"], nonbonded="PME")
    msg = str(err.value)
    assert ALA in msg and "CRYST1" in msg and "NoCutoff" in msg


def test_unreadable_pdb(tmp_path):
    with pytest.raises(UserInputError, match="no such structure file"):
        system_from_pdb(tmp_path / "missing.pdb", ["amber14-all.xml"], nonbonded="NoCutoff")
    bad = tmp_path / "garbage.pdb"
    bad.write_text("ATOM      1  N   ALA A   1      xx.xxx  11.000  12.000\n")
    with pytest.raises(UserInputError, match="could not read structure"):
        system_from_pdb(bad, ["amber14-all.xml"], nonbonded="NoCutoff")


def test_bad_method_and_constraints():
    with pytest.raises(UserInputError, match="NoCutoff"):
        system_from_pdb(ALA, ["amber14-all.xml"], nonbonded="Ewald")
    with pytest.raises(UserInputError, match="HBonds"):
        system_from_pdb(ALA, ["amber14-all.xml"], nonbonded="NoCutoff", constraints="hbonds-typo")


def _opc_water_pair():
    """Two OPC waters (amber19/opc.xml: O, H1, H2 and a massless M site each), NoCutoff."""
    import openmm.app as app

    ff = app.ForceField("amber19-all.xml", "amber19/opc.xml")
    top = app.Topology()
    chain = top.addChain()
    xyz = []
    for shift in (0.0, 0.4):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        for name in ("H1", "H2"):
            top.addBond(o, top.addAtom(name, app.element.hydrogen, res))
        xyz += [[shift, 0.0, 0.0], [shift + 0.09572, 0.0, 0.0], [shift - 0.024, 0.0927, 0.0]]
    m = app.Modeller(top, np.array(xyz) * unit.nanometer)
    m.addExtraParticles(ff)
    omm = ff.createSystem(m.topology, nonbondedMethod=app.NoCutoff)
    return omm, m


def test_unsupported_virtual_site_type_is_named():
    # OpenMM's SymmetrySite (a rotated copy of one particle) is not supported: refuse, naming the type and the
    # supported ones, rather than compute garbage
    import openmm as mm

    omm, m = _opc_water_pair()
    eye = [mm.Vec3(1, 0, 0), mm.Vec3(0, 1, 0), mm.Vec3(0, 0, 1)]
    omm.setVirtualSite(7, mm.SymmetrySite(4, *eye, mm.Vec3(0.01, 0, 0), False))
    with pytest.raises(UserInputError) as err:
        system_from_openmm(omm, m.positions, topology=m.topology)
    msg = str(err.value)
    assert "SymmetrySite" in msg and "particle 7" in msg and "ThreeParticleAverageSite" in msg


def test_virtual_site_on_virtual_site_is_refused():
    import openmm as mm

    omm, m = _opc_water_pair()
    omm.setVirtualSite(7, mm.TwoParticleAverageSite(3, 4, 0.5, 0.5))  # parent 3 is the first water's M site
    with pytest.raises(UserInputError, match="virtual site 7 is built on virtual site 3"):
        system_from_openmm(omm, m.positions, topology=m.topology)


def test_cutoff_larger_than_half_box():
    path = os.path.join(DATA, "alanine_dipeptide_water.pdb")  # 2.5 nm box
    s = system_from_pdb(path, ["amber14-all.xml", "amber14/tip3pfb.xml"], nonbonded="CutoffPeriodic", cutoff=1.2)
    with pytest.raises(UserInputError, match="half of the smallest box edge"):
        s.allocate_neighbors()


def test_cli_reports_error_without_traceback(capsys):
    rc = main(["energy", "--pdb", ALA, "--forcefield", "amber14-all.xml", "--nonbonded", "PME", "--json"])
    assert rc == 2
    assert "CRYST1" in capsys.readouterr().err


PEPTIDE = Path(__file__).resolve().parents[2] / "data" / "crystal" / "5e5z.pdb"
PLACEHOLDER = "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1"


def _nmr_like(tmp_path):
    """The 5E5Z peptide with hydrogens and a placeholder CRYST1, as an NMR entry carries it."""
    import openmm.app as app

    pdb = app.PDBFile(str(PEPTIDE))
    m = app.Modeller(pdb.topology, pdb.positions)
    m.addHydrogens(app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml"))
    m.topology.setPeriodicBoxVectors(None)
    path = tmp_path / "nmr.pdb"
    with open(path, "w") as fh:
        app.PDBFile.writeFile(m.topology, m.positions, fh)
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("CRYST1")]
    path.write_text("\n".join([PLACEHOLDER, *lines, ""]))
    return path


def test_placeholder_cryst1_is_no_box(tmp_path, capsys):
    import openmm
    import openmm.app as app
    import openmm.unit as u

    path = _nmr_like(tmp_path)
    assert app.PDBFile(str(path)).topology.getPeriodicBoxVectors() is not None  # OpenMM reads a 1 Å box
    assert read_structure(path).topology.getPeriodicBoxVectors() is None
    assert "placeholder; treated as no box" in capsys.readouterr().err
    assert main(["energy", "--pdb", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out[captured.out.index("{") :])["total_kj_mol"]
    # oracle: OpenMM Reference, NoCutoff, same file without the placeholder
    pdb = app.PDBFile(str(path))
    system = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff
    )
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pdb.positions)
    ref = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert np.isclose(got, ref, rtol=1e-4, atol=1e-2)  # dmd energy runs float32 by default
