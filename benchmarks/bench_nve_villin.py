"""NVE energy drift of villin + water, dmd float32 against OpenMM mixed precision, same start (issue 20 acceptance).

OpenMM's villin headpiece test.pdb in TIP3P (8,867 atoms), amber14, PME 0.9 nm, HBonds, rigid water, 2 fs. OpenMM
minimises the box and equilibrates it (LangevinMiddle, 300 K, γ = 5/ps, --equil-ps); both engines then run NVE
(dmd velocity Verlet with SHAKE/SETTLE, float32; OpenMM VerletIntegrator, Precision=mixed on CUDA, the CPU
platform's own mixed arithmetic otherwise) from the same equilibrated positions with fresh 300 K velocities (an
exchange of kinetic and potential energy does not move the total). Printed per engine: the drift of the total energy
(kJ/mol/ps per degree of freedom and per ns in k_BT per DOF: the slope of a linear fit over the window, ± the
standard error from the slopes of --blocks consecutive blocks), its fluctuation, mean temperature and steps/s;
then |drift| dmd − OpenMM in combined standard errors. Target: dmd's |drift| no worse than OpenMM's.
Runs on the GPU when jax and OpenMM see one (`--platform auto`); on 2 CPU cores 20 ps take ~30 min.

    python benchmarks/bench_nve_villin.py [--ps 20 --equil-ps 2 --blocks 5 --seed 0 --seeds 5 --platform auto|CPU|CUDA]
        [--pdb tests/data/alanine_dipeptide_water.pdb] [--dtype float32|float64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

KB = 0.0083144626  # kJ/mol/K


def openmm_start(platform: str, equil_ps: float, seed: int, pdb: str | None = None):
    """(openmm System, topology, positions nm, platform name, props): OpenMM-minimised and equilibrated."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u

    from dmd.openmm_system import openmm_system_from_pdb

    pdb = pdb or os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    omm, structure, _ = openmm_system_from_pdb(pdb, **kw)
    names = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    name = ("CUDA" if "CUDA" in names else "CPU") if platform == "auto" else platform
    props = {"Precision": "mixed"} if name in ("CUDA", "OpenCL") else {}
    li = mm.LangevinMiddleIntegrator(300 * u.kelvin, 5 / u.picosecond, 0.002 * u.picoseconds)
    li.setRandomNumberSeed(seed + 1)
    ctx = mm.Context(omm, li, mm.Platform.getPlatformByName(name), props)
    ctx.setPositions(structure.positions)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 500)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, seed + 1)
    li.step(int(round(equil_ps / 0.002)))
    pos = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    return omm, structure.topology, np.asarray(pos), name, props


def run_openmm(omm, pos, name, props, steps: int, every: int, seed: int):
    import openmm as mm
    import openmm.unit as u

    integ = mm.VerletIntegrator(0.002 * u.picoseconds)
    ctx = mm.Context(omm, integ, mm.Platform.getPlatformByName(name), props)
    ctx.setPositions(pos)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, seed + 2)
    ctx.applyVelocityConstraints(1e-6)
    rows = []
    t0 = time.perf_counter()
    for k in range(steps // every + 1):
        if k:
            integ.step(every)
        st = ctx.getState(getEnergy=True)
        ke = st.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        pe = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        rows.append((k * every * 0.002, ke + pe, ke))
    wall = time.perf_counter() - t0
    return np.array(rows), steps / wall


def run_dmd(omm, topology, pos, steps: int, every: int, seed: int, dtype: str = "float32"):
    import jax
    import jax.numpy as jnp

    from dmd.integrators import n_degrees_of_freedom
    from dmd.openmm_system import system_from_openmm
    from dmd.simulate import RunConfig, simulate

    with jax.enable_x64(dtype == "float64"):
        system = system_from_openmm(omm, pos, topology=topology, dtype=getattr(jnp, dtype))
        cfg = RunConfig(
            steps=steps, dt=0.002, temperature=300.0, integrator="verlet", seed=seed, report_every=every,
            chunk_steps=min(500, steps), progress=False,
        )  # fmt: skip
        simulate(system, RunConfig(**{**cfg.__dict__, "steps": cfg.chunk_steps}))  # compile
        t0 = time.perf_counter()
        res = simulate(system, cfg)
        wall = time.perf_counter() - t0
    return np.asarray(res.log)[:, [0, 3, 4]], steps / wall, n_degrees_of_freedom(system)


def drift(rows, ndof: int, n_blocks: int):
    """(slope, block SE) of the total energy per DOF, kJ/mol/ps/DOF (rows: t ps, E kJ/mol, ...)."""
    from bench_triclinic import block_slopes  # one home: the block slopes of bench_triclinic's NVE drift

    t, e = rows[:, 0], rows[:, 1] / ndof
    slopes = block_slopes(t, e, n_blocks)
    return float(np.polyfit(t, e, 1)[0]), float(np.std(slopes, ddof=1) / np.sqrt(n_blocks)), float(np.std(e))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ps", type=float, default=20.0, help="NVE length per engine, ps (default 20)")
    ap.add_argument("--equil-ps", type=float, default=2.0, help="OpenMM Langevin equilibration, ps (default 2)")
    ap.add_argument("--blocks", type=int, default=5, help="blocks for one run's drift SE (default 5)")
    ap.add_argument("--every", type=int, default=10, help="steps between energy samples (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--seeds", type=int, default=1, help="seeds (independent starts); >1: mean ± SE over seeds")
    ap.add_argument("--platform", default="auto", help="OpenMM platform: auto (CUDA if present), CPU, CUDA")
    ap.add_argument("--pdb", default=None, help="solvated PDB (default OpenMM's villin test.pdb)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="dmd precision")
    args = ap.parse_args()

    steps = int(round(args.ps / 0.002)) // args.every * args.every
    kT = KB * 300.0
    res = {}
    for seed in range(args.seed, args.seed + args.seeds):
        omm, top, pos, name, props = openmm_start(args.platform, args.equil_ps, seed, args.pdb)
        rows_o, sps_o = run_openmm(omm, pos, name, props, steps, args.every, seed)
        rows_d, sps_d, ndof = run_dmd(omm, top, pos, steps, args.every, seed, args.dtype)
        for label, rows, sps, temp in (
            (f"dmd {args.dtype}", rows_d, sps_d, rows_d[:, 2]),
            (f"OpenMM {name} ({props.get('Precision', 'default')})", rows_o, sps_o, 2 * rows_o[:, 2] / (ndof * KB)),
        ):
            slope, se, sd = drift(rows, ndof, args.blocks)
            res.setdefault(label, []).append(slope)
            print(
                f"seed {seed} {label:26s} drift {slope:+.3e} ± {se:.1e} kJ/mol/ps/DOF "
                f"({slope * 1000 / kT:+.4f} kT/ns/DOF), sd {sd:.1e} kJ/mol/DOF, T {np.mean(temp):.1f} K, "
                f"{sps:.0f} steps/s",
                flush=True,
            )
    out = {}
    for label, slopes in res.items():
        m = float(np.mean(slopes))
        se = float(np.std(slopes, ddof=1) / np.sqrt(len(slopes))) if len(slopes) > 1 else float("nan")
        out[label] = (m, se)
        print(f"{label:28s} mean drift over {len(slopes)} seeds {m:+.2e} ± {se:.1e} kJ/mol/ps/DOF")
    (a, sa), (b, sb) = out.values()
    print(
        f"|drift| dmd − OpenMM: {abs(a) - abs(b):+.2e} kJ/mol/ps/DOF = {(abs(a) - abs(b)) / np.hypot(sa, sb):+.1f} "
        f"combined SE; {steps} steps ({args.ps} ps) each, {ndof} DOF, load {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
