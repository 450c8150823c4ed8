"""Bad input to the force-field loader: each error is a UserInputError naming the file and the fix."""

import os

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest

from dmd.base.errors import UserInputError
from dmd.openmm_system import system_from_openmm, system_from_pdb

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
    from dmd.cli import main

    rc = main(["energy", "--pdb", ALA, "--forcefield", "amber14-all.xml", "--nonbonded", "PME", "--json"])
    assert rc == 2
    assert "CRYST1" in capsys.readouterr().err
