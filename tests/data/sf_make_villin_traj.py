"""Regenerate ``sf_villin_traj.dcd`` / ``sf_villin_top.pdb``: a short real MD trajectory for the diffuse CLI.

Villin headpiece N68H in TIP3P water (OpenMM's bundled ``openmm/app/data/test.pdb``, 8,867 atoms,
49.163 × 45.981 × 38.869 Å periodic box), Amber14 + TIP3P, PME 1 nm, HBond constraints, Langevin middle
integrator 300 K / 1 ps⁻¹ / 2 fs, 200 steps of minimization-free equilibration then 40 frames every 50 steps
(0.1 ps). Only the protein (582 atoms) is kept so that the files stay small; the DCD keeps the periodic box.

Run from the repository root:  python tests/data/sf_make_villin_traj.py
"""

import os

import mdtraj
import openmm
import openmm.app as app
import openmm.unit as u

HERE = os.path.dirname(os.path.abspath(__file__))
pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
system = ff.createSystem(
    pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * u.nanometer, constraints=app.HBonds
)
integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1.0 / u.picosecond, 0.002 * u.picoseconds)
integ.setRandomNumberSeed(2024)
sim = app.Simulation(pdb.topology, system, integ, openmm.Platform.getPlatformByName("CPU"))
sim.context.setPositions(pdb.positions)
sim.context.setVelocitiesToTemperature(300 * u.kelvin, 2024)
sim.step(200)
full = os.path.join(HERE, "_sf_full.dcd")
sim.reporters.append(app.DCDReporter(full, 50, enforcePeriodicBox=False))
sim.step(40 * 50)
del sim
t = mdtraj.load(full, top=os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
prot = t.topology.select("protein")
t = t.atom_slice(prot)
t.save_dcd(os.path.join(HERE, "sf_villin_traj.dcd"))
t[0].save_pdb(os.path.join(HERE, "sf_villin_top.pdb"))
os.remove(full)
print(t)
