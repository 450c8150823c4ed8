"""Make alanine_dipeptide_water.pdb: alanine_dipeptide.pdb solvated in a 2.5 nm cubic TIP3P-FB box (Modeller)."""

import os

import openmm.app as app
import openmm.unit as unit
from openmm import Vec3

here = os.path.dirname(os.path.abspath(__file__))
pdb = app.PDBFile(os.path.join(here, "alanine_dipeptide.pdb"))
ff = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
m = app.Modeller(pdb.topology, pdb.positions)
m.addSolvent(ff, model="tip3p", boxSize=Vec3(2.5, 2.5, 2.5) * unit.nanometer)
with open(os.path.join(here, "alanine_dipeptide_water.pdb"), "w") as f:
    app.PDBFile.writeFile(m.topology, m.positions, f)
print(m.topology.getNumAtoms())
