"""Runs in a triclinic box (issue 17 item 2): trajectories keep the cell angles (read back by mdtraj) and a
resumed run is bit-for-bit the uninterrupted one. System: TIP4P-Ew water (rigid, virtual sites) in a rhombic
dodecahedron, PME, so constraints, virtual sites, the neighbour list and PME all see the triclinic box."""

import functools

import mdtraj
import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit
import pytest

from dmd.openmm_system import system_from_openmm
from dmd.simulate import RunConfig, simulate
from dmd.trajectory import mdtraj_topology

EDGE = 2.0  # nm: dodecahedron a = b = 2 nm, c = (1, 1, √2) nm; 177 waters


@functools.lru_cache
def water_dodecahedron():
    ff = app.ForceField("amber14-all.xml", "amber14/tip4pew.xml")
    m = app.Modeller(app.Topology(), [])
    vecs = (mm.Vec3(EDGE, 0, 0), mm.Vec3(0, EDGE, 0), mm.Vec3(EDGE / 2, EDGE / 2, EDGE / 2**0.5)) * unit.nanometer
    m.addSolvent(ff, model="tip4pew", boxVectors=vecs)
    omm = ff.createSystem(m.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.45 * unit.nanometer)
    ctx = mm.Context(omm, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(m.positions)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 50)
    pos = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return system_from_openmm(omm, np.asarray(pos), topology=m.topology, dtype=np.float32)


def _cfg(tmp_path, name, **kw):
    base = dict(steps=40, dt=0.002, temperature=300.0, integrator="baoab", report_every=10, chunk_steps=20)
    base.update(kw)
    return RunConfig(out=None if name is None else str(tmp_path / name), progress=False, **base)


@pytest.mark.parametrize("ext", [".dcd", ".xtc", ".h5"])
def test_trajectory_keeps_cell_angles(tmp_path, ext):
    system = water_dodecahedron()
    simulate(system, _cfg(tmp_path, "t" + ext, steps=20))
    path = str(tmp_path / ("t" + ext))
    traj = mdtraj.load(path) if ext == ".h5" else mdtraj.load(path, top=mdtraj_topology(system))
    assert traj.n_frames == 2
    # the rhombic dodecahedron (a, a, a; 60°, 60°, 90°): a = b = |c| = 2 nm, α = β = 60°, γ = 90°
    np.testing.assert_allclose(traj.unitcell_lengths, EDGE, rtol=1e-5)
    np.testing.assert_allclose(traj.unitcell_angles, [[60.0, 60.0, 90.0]] * 2, atol=1e-3)
    np.testing.assert_allclose(traj.unitcell_vectors[0], np.asarray(system.box), atol=1e-5)


def test_resume_is_bit_for_bit(tmp_path):
    system = water_dodecahedron()
    full = simulate(system, _cfg(tmp_path, "a/full.dcd", checkpoint_every=20))
    first = simulate(system, _cfg(tmp_path, "b/run.dcd", steps=20))
    assert first.summary["final_step"] == 20
    resumed = simulate(system, _cfg(tmp_path, "b/run.dcd", resume=True))
    for field in ("positions", "velocities", "forces", "potential_energy", "key"):
        a, b = np.asarray(getattr(full.state, field)), np.asarray(getattr(resumed.state, field))
        assert a.dtype == b.dtype and np.array_equal(a, b), field
    assert np.array_equal(full.log, resumed.log)
    assert np.all(np.isfinite(full.log)) and 200 < full.log[:, 4].mean() < 400  # K: a sane run
