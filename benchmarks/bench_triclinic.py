"""Triclinic vs orthorhombic box: steps/s and NVE energy drift of the same water system (issue 17 item 2).

TIP4P-Ew water (rigid, virtual sites), PME, float32, 2 fs: a rhombic dodecahedron (a = b = |c| = EDGE) and a cube
of the same volume (edge EDGE / 2^(1/6)), each minimised by OpenMM, equilibrated at 300 K (BAOAB Langevin,
γ = 5/ps, --equil-steps), then run NVE (velocity Verlet, fresh 300 K velocities on the equilibrated positions, so
no relaxation transient lands in the window). Prints per shape: steps/s and CPU ms per step of the NVE run (after
compilation), the drift of the total energy (kJ/mol/ps per water: the slope of a linear fit over the whole window,
± the standard error from the slopes of --blocks consecutive blocks), its fluctuation, and the ratios
triclinic/orthorhombic (time per step, wall and CPU; |drift| ± its propagated SE and the difference in combined SE),
with the load average (wall figures are per-machine-load; CPU seconds less so).
Target: a triclinic step at most 15% slower; drift no worse than in the cube.
The cutoff + 0.2 nm skin must stay below min(a_x, b_y, c_z)/2 of the dodecahedron (c_z = EDGE/√2):
EDGE 2.6 allows 0.6 nm, 3.0 allows 0.8 nm, 3.6 allows 0.9 nm.

    python benchmarks/bench_triclinic.py              # EDGE 3.0 nm, 0.8 nm, 2 ps Langevin + 10 ps NVE per shape
    python benchmarks/bench_triclinic.py --quick      # EDGE 2.6 nm, 0.6 nm, 1 ps + 2 ps
    python benchmarks/bench_triclinic.py --edge 3.6 --cutoff 0.9 --steps 2000

Measured (default command, 2 cores shared, load 3.7-4.4, seed 0): dodecahedron 2,508 atoms 40.6 steps/s
26.0 CPU ms/step, drift +0.2e-4 ± 6.2e-4 kJ/mol/ps/water (T 294.7 K, sd 3.0e-3 kJ/mol/water); cube 2,444 atoms
37.4 steps/s 26.5 CPU ms/step, drift -3.6e-4 ± 4.6e-4 (T 295.5 K, sd 3.3e-3): time per step triclinic/orthorhombic
0.92 wall, 0.98 CPU; both drifts are zero within 1 SE, |drift| difference -0.4 combined SE (the |drift| ratio,
0.07 ± 1.74, is a ratio of two zeros). Seed 1 (--seed 1, load 2.4-4.2): dodecahedron 51.9 steps/s
27.3 CPU ms/step, -2.1e-4 ± 5.6e-4; cube 35.9 steps/s 27.6 CPU ms/step, -3.9e-4 ± 4.8e-4; 0.69 wall (load rose)
/ 0.99 CPU; |drift| difference -0.2 SE. Both seeds: dodecahedron -0.9e-4 ± 4.2e-4, cube -3.7e-4 ± 3.3e-4
kJ/mol/ps/water, |drift| difference -0.5 combined SE.
The earlier figure (|drift| ratio 4.6 over 2 ps straight after minimisation
with fresh velocities, no error bar) measured the relaxation from the minimised box (T 300 -> ~200 K), not drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from dmd.openmm_system import system_from_openmm
from dmd.simulate import RunConfig, simulate


def water(shape: str, edge: float, cutoff: float):
    ff = app.ForceField("amber14-all.xml", "amber14/tip4pew.xml")
    m = app.Modeller(app.Topology(), [])
    if shape == "cube":
        L = edge / 2 ** (1 / 6)  # same volume as the dodecahedron, a³/√2
        vecs = (mm.Vec3(L, 0, 0), mm.Vec3(0, L, 0), mm.Vec3(0, 0, L))
    else:
        vecs = (mm.Vec3(edge, 0, 0), mm.Vec3(0, edge, 0), mm.Vec3(edge / 2, edge / 2, edge / 2**0.5))
    m.addSolvent(ff, model="tip4pew", boxVectors=vecs * unit.nanometer)
    omm = ff.createSystem(m.topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff * unit.nanometer)
    ctx = mm.Context(omm, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(m.positions)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
    pos = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return system_from_openmm(omm, np.asarray(pos), topology=m.topology, dtype=np.float32)


def block_slopes(t, y, n_blocks: int) -> np.ndarray:
    """Slopes of linear fits of ``y(t)`` over ``n_blocks`` consecutive equal blocks (units of y per unit of t)."""
    return np.array(
        [
            np.polyfit(tb, yb, 1)[0]
            for tb, yb in zip(np.array_split(t, n_blocks), np.array_split(y, n_blocks), strict=True)
        ]
    )


def run(shape: str, edge: float, cutoff: float, steps: int, equil_steps: int, n_blocks: int, seed: int) -> dict:
    system = water(shape, edge, cutoff)
    n_water = system.n_atoms // 4
    # equilibrate at 300 K (Langevin, γ = 5/ps) from the minimised box, so the NVE window below starts in
    # equilibrium: no relaxation of T and of the potential energy inside the measured drift
    eq = simulate(
        system,
        RunConfig(
            steps=equil_steps,
            dt=0.002,
            temperature=300.0,
            friction=5.0,
            integrator="baoab",
            seed=seed,
            report_every=50,
            chunk_steps=500,
            progress=False,
        ),
    )
    system = dataclasses.replace(system, positions=np.asarray(eq.state.positions))
    cfg = RunConfig(
        steps=steps, dt=0.002, temperature=300.0, integrator="verlet", seed=seed + 1, report_every=10,
        chunk_steps=500, progress=False,
    )  # fmt: skip
    simulate(system, RunConfig(**{**cfg.__dict__, "steps": cfg.chunk_steps}))  # compile
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    res = simulate(system, cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t, total = res.log[:, 0], res.log[:, 3] / n_water
    drift = np.polyfit(t, total, 1)[0]
    slopes = block_slopes(t, total, n_blocks)
    return {"atoms": system.n_atoms, "steps_per_s": steps / wall, "cpu_per_step": cpu / steps, "drift": drift,
            "drift_se": np.std(slopes, ddof=1) / np.sqrt(n_blocks), "std": np.std(total),
            "T": float(res.log[:, 4].mean()), "T_eq": float(eq.log[-len(eq.log) // 2 :, 4].mean())}  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--edge", type=float, default=None, help="dodecahedron edge, nm")
    ap.add_argument("--cutoff", type=float, default=None, help="PME cutoff, nm")
    ap.add_argument("--steps", type=int, default=None, help="NVE steps per shape (the drift window)")
    ap.add_argument("--equil-steps", type=int, default=None, help="Langevin steps at 300 K before the NVE window")
    ap.add_argument("--blocks", type=int, default=5, help="blocks for the drift's standard error")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    edge = args.edge or (2.6 if args.quick else 3.0)
    cutoff = args.cutoff or (0.6 if args.quick else 0.8)
    steps = args.steps or (1000 if args.quick else 5000)
    equil = args.equil_steps or (500 if args.quick else 1000)
    print(f"load average before: {os.getloadavg()}; edge {edge} nm, cutoff {cutoff} nm, {equil} Langevin + "
          f"{steps} NVE steps of 2 fs, drift SE from {args.blocks} blocks")  # fmt: skip
    out = {}
    for shape in ("dodecahedron", "cube"):
        out[shape] = r = run(shape, edge, cutoff, steps, equil, args.blocks, args.seed)
        print(f"{shape:13s} {r['atoms']:6d} atoms  {r['steps_per_s']:6.1f} steps/s  {1e3 * r['cpu_per_step']:6.1f} "
              f"CPU ms/step  T_eq {r['T_eq']:5.1f} K  T {r['T']:5.1f} K  drift {r['drift']:+.2e} +- "
              f"{r['drift_se']:.1e} kJ/mol/ps/water  sd {r['std']:.2e} kJ/mol/water  load {os.getloadavg()[0]:.1f}",
              flush=True)  # fmt: skip
    tri, ortho = out["dodecahedron"], out["cube"]
    print(f"triclinic/orthorhombic time per step: {ortho['steps_per_s'] / tri['steps_per_s']:.3f} wall, "
          f"{tri['cpu_per_step'] / ortho['cpu_per_step']:.3f} CPU (target <= 1.15)")  # fmt: skip
    ratio = abs(tri["drift"]) / max(abs(ortho["drift"]), 1e-30)
    rel = np.hypot(tri["drift_se"] / abs(tri["drift"]), ortho["drift_se"] / abs(ortho["drift"]))
    diff = (abs(tri["drift"]) - abs(ortho["drift"])) / np.hypot(tri["drift_se"], ortho["drift_se"])
    print(
        f"|drift| triclinic/orthorhombic: {ratio:.2f} +- {ratio * rel:.2f}; |drift| difference {diff:+.1f} combined SE"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
