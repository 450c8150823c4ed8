"""A placeholder CRYST1 (1 × 1 × 1 Å, NMR / cryo-EM entries) is no box: ``read_structure`` drops it with a note,
and ``dmd energy`` then picks NoCutoff (before: PME in a 1 Å box, an OpenMM traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dmd.cli import main
from dmd.openmm_system.loading import read_structure

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
