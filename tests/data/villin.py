"""What the ``make_*.py`` scripts here share: OpenMM's bundled villin headpiece (``openmm/app/data/test.pdb``),
the source the small test peptides are cut from, and the write-out of a cut with hydrogens added.

The scripts run as ``python tests/data/make_*.py``; Python puts this folder on the path, so they import it as
``villin``.
"""

import os

import numpy as np
import openmm.app as app
import openmm.unit as u

HERE = os.path.dirname(os.path.abspath(__file__))
VILLIN_PDB = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


def villin():
    """``(PDBFile, residues, positions)`` of OpenMM's villin test.pdb; positions ``[N, 3]`` in nm (numpy)."""
    pdb = app.PDBFile(VILLIN_PDB)
    return pdb, list(pdb.topology.residues()), pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)


def write_with_hydrogens(topology, coords_nm, forcefield_xml: str, name: str) -> None:
    """Add hydrogens to a heavy-atom cut (Modeller with ``forcefield_xml``), write it to tests/data/``name`` and
    print its atom count. ``coords_nm``: ``[N, 3]`` heavy-atom positions in nm, in ``topology``'s atom order."""
    m = app.Modeller(topology, u.Quantity(np.array(coords_nm), u.nanometer))
    m.addHydrogens(app.ForceField(forcefield_xml))
    with open(os.path.join(HERE, name), "w") as f:
        app.PDBFile.writeFile(m.topology, m.positions, f)
    print(m.topology.getNumAtoms())
