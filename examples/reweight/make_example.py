"""Regenerate the bundled reweighting example (real OpenMM MD + synthetic "experimental" diffuse data).

Alanine dipeptide (amber14, vacuum, periodic 2.4 nm box, 300 K Langevin). Its alanine core (N, CA, CB, C)
is held in place like a molecule in a crystal lattice; harmonic φ/ψ restraints hold the backbone in one of
three conformers per segment (C7eq, αR, αL), 20 frames each: ``traj.dcd`` + ``top.pdb`` (CRYST1, P 1).
``data.mtz`` (column ``IDIFF``, P 1, same cell) is the diffuse intensity of the mixture 0.6/0.3/0.1 of the
three segments, to 2.5 Å, with Gaussian noise at CC 0.98 against the noise-free mixture; ``truth.json``
records the weights.

    python examples/reweight/make_example.py --out dmd/data/reweight    # regenerate the shipped example
    python examples/reweight/make_example.py --out /tmp/rw --quick      # 4 frames per state, 5 Å (tests, ~10 s)

``--out`` is required: the shipped data (inside the package, so that ``pip install . && dmd quickstart`` finds
them) are rewritten only when asked for by name.
"""

import argparse
import os

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as u

HERE = os.path.dirname(os.path.abspath(__file__))
PDB = os.path.join(HERE, "..", "..", "tests", "data", "alanine_dipeptide.pdb")
BOX_NM = 2.4
STATES = {"C7eq": (-80.0, 80.0), "alphaR": (-70.0, -40.0), "alphaL": (60.0, 50.0)}
TRUE_WEIGHTS = (0.6, 0.3, 0.1)
FRAMES_PER_STATE = 20
D_MIN = 2.5
TARGET_CC = 0.98
FULL = {"frames_per_state": FRAMES_PER_STATE, "equilibration": 2000, "stride": 100, "d_min": D_MIN}
QUICK = {"frames_per_state": 4, "equilibration": 200, "stride": 20, "d_min": 5.0}


def simulate(frames_per_state: int = FRAMES_PER_STATE, equilibration: int = 2000, stride: int = 100):
    """Restrained alanine dipeptide frames [3·frames_per_state, 22, 3] nm, ``stride`` steps of 1 fs apart."""
    pdb = app.PDBFile(PDB)
    top = pdb.topology
    top.setPeriodicBoxVectors(np.eye(3) * BOX_NM * u.nanometer)
    xyz = np.array(pdb.positions.value_in_unit(u.nanometer))
    xyz += BOX_NM / 2 - xyz.mean(axis=0)
    idx = {(a.residue.name, a.name): a.index for a in top.atoms()}
    ff = app.ForceField("amber14-all.xml")
    system = ff.createSystem(top, nonbondedMethod=app.CutoffPeriodic, nonbondedCutoff=1.0 * u.nanometer)
    pos_r = mm.CustomExternalForce("0.5*kp*periodicdistance(x, y, z, x0, y0, z0)^2")
    pos_r.addGlobalParameter("kp", 5000.0)
    for p in ("x0", "y0", "z0"):
        pos_r.addPerParticleParameter(p)
    for name in ("N", "CA", "CB", "C"):
        i = idx[("ALA", name)]
        pos_r.addParticle(i, list(xyz[i]))
    system.addForce(pos_r)
    tors = mm.CustomTorsionForce("0.5*kt*min(dtheta, 2*pi-dtheta)^2; dtheta = abs(theta-theta0); pi = 3.1415926535")
    tors.addGlobalParameter("kt", 500.0)
    tors.addPerTorsionParameter("theta0")
    phi = [idx[("ACE", "C")], idx[("ALA", "N")], idx[("ALA", "CA")], idx[("ALA", "C")]]
    psi = [idx[("ALA", "N")], idx[("ALA", "CA")], idx[("ALA", "C")], idx[("NME", "N")]]
    i_phi = tors.addTorsion(*phi, [0.0])
    i_psi = tors.addTorsion(*psi, [0.0])
    system.addForce(tors)
    integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 5.0 / u.picosecond, 1.0 * u.femtosecond)
    integ.setRandomNumberSeed(7)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("Reference"))
    frames = []
    for phi0, psi0 in STATES.values():
        tors.setTorsionParameters(i_phi, *phi, [np.deg2rad(phi0)])
        tors.setTorsionParameters(i_psi, *psi, [np.deg2rad(psi0)])
        tors.updateParametersInContext(ctx)
        ctx.setPositions(xyz * u.nanometer)
        ctx.setVelocitiesToTemperature(300 * u.kelvin, 11)
        mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
        integ.step(equilibration)  # 2 ps equilibration in the new basin
        for _ in range(frames_per_state):
            integ.step(stride)
            frames.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer))
    return top, np.array(frames)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (traj.dcd, top.pdb, data.mtz, truth.json)")
    ap.add_argument("--quick", action="store_true", help="4 frames per state, 200-step equilibration, d_min 5 Å")
    args = ap.parse_args(argv)
    mode = QUICK if args.quick else FULL
    out = args.out
    os.makedirs(out, exist_ok=True)
    import jax
    import mdtraj

    jax.config.update("jax_enable_x64", True)  # a script, not library code: the truth is made in float64

    from analysis.mtz_io import write_mtz
    from analysis.stats import pearson_cc
    from analysis.structure_factors import trajectory_structure_factors
    from analysis.symmetry import generate_hkl
    from dmd.base.io import atomic_path, write_json
    from fitting.synthetic import diffuse_of_weights, noisy_data

    top, frames = simulate(mode["frames_per_state"], mode["equilibration"], mode["stride"])
    traj = mdtraj.Trajectory(frames, mdtraj.Topology.from_openmm(top))
    traj.unitcell_vectors = np.tile(np.eye(3) * BOX_NM, (len(frames), 1, 1))
    with atomic_path(os.path.join(out, "traj.dcd")) as tmp:
        traj.save_dcd(str(tmp))
    with atomic_path(os.path.join(out, "top.pdb")) as tmp:
        traj[0].save_pdb(str(tmp))
    cell = np.array([BOX_NM * 10] * 3 + [90.0] * 3)
    hkl = generate_hkl(cell, mode["d_min"], "P 1", unique=True)
    hkl, f, _ = trajectory_structure_factors(
        os.path.join(out, "traj.dcd"), os.path.join(out, "top.pdb"), hkl, method="direct", dtype=np.float64
    )
    n = mode["frames_per_state"]
    w = np.repeat(np.asarray(TRUE_WEIGHTS) / n, n)
    x = diffuse_of_weights(f, w)
    y = noisy_data(x, TARGET_CC, seed=3)
    write_mtz(os.path.join(out, "data.mtz"), hkl, {"IDIFF": y}, cell, "P 1")
    truth = {
        "states": list(STATES),
        "frames_per_state": n,
        "state_weights": list(TRUE_WEIGHTS),
        "d_min": mode["d_min"],
        "noise_cc": float(pearson_cc(x, y)),
    }
    write_json(os.path.join(out, "truth.json"), truth)
    print(truth)


if __name__ == "__main__":
    main()
