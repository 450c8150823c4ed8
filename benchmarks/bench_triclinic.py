"""Triclinic vs orthorhombic box: steps/s and NVE energy drift of the same water system (issue 17 item 2).

TIP4P-Ew water (rigid, virtual sites), PME with a 0.9 nm cutoff, float32, 2 fs: a rhombic dodecahedron
(a = b = |c| = EDGE) and a cube of the same volume (edge EDGE / 2^(1/6)), each minimised by OpenMM, then run NVE
(velocity Verlet). Prints steps/s (after compilation), the drift of the total energy (kJ/mol/ps per water, a linear
fit) and its fluctuation, the ratio triclinic/orthorhombic, and the load average (the figures are per-machine-load).
Target: a triclinic step at most 15% slower; drift no worse than in the cube.

    python benchmarks/bench_triclinic.py              # EDGE 3.6 nm (~1,100 waters), 1,000 steps
    python benchmarks/bench_triclinic.py --quick      # EDGE 2.6 nm, 300 steps
"""

from __future__ import annotations

import argparse
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


def run(shape: str, edge: float, cutoff: float, steps: int) -> dict:
    system = water(shape, edge, cutoff)
    n_water = system.n_atoms // 4
    cfg = RunConfig(
        steps=steps, dt=0.002, temperature=300.0, integrator="verlet", report_every=max(1, steps // 50),
        chunk_steps=max(1, steps // 5), progress=False,
    )  # fmt: skip
    simulate(system, RunConfig(**{**cfg.__dict__, "steps": cfg.chunk_steps}))  # compile
    t0 = time.perf_counter()
    res = simulate(system, cfg)
    wall = time.perf_counter() - t0
    t, total = res.log[:, 0], res.log[:, 3]
    drift = np.polyfit(t, total, 1)[0] / n_water
    return {"atoms": system.n_atoms, "steps_per_s": steps / wall, "drift": drift, "std": np.std(total) / n_water,
            "T": float(res.log[:, 4].mean())}  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--edge", type=float, default=None, help="dodecahedron edge, nm")
    ap.add_argument("--cutoff", type=float, default=None, help="PME cutoff, nm")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    edge = args.edge or (2.6 if args.quick else 3.6)
    cutoff = args.cutoff or (0.6 if args.quick else 0.9)
    steps = args.steps or (300 if args.quick else 1000)
    print(f"load average before: {os.getloadavg()}; edge {edge} nm, cutoff {cutoff} nm, {steps} steps")
    out = {shape: run(shape, edge, cutoff, steps) for shape in ("dodecahedron", "cube")}
    for shape, r in out.items():
        print(f"{shape:13s} {r['atoms']:6d} atoms  {r['steps_per_s']:8.1f} steps/s  T {r['T']:6.1f} K  "
              f"drift {r['drift']:+.2e} kJ/mol/ps/water  sd {r['std']:.2e} kJ/mol/water")  # fmt: skip
    tri, ortho = out["dodecahedron"], out["cube"]
    print(f"triclinic/orthorhombic time per step: {ortho['steps_per_s'] / tri['steps_per_s']:.3f} (target <= 1.15)")
    print(f"|drift| triclinic/orthorhombic: {abs(tri['drift']) / max(abs(ortho['drift']), 1e-30):.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
