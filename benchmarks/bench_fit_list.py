"""``dmd.simulate`` of an LJ fluid started on its fcc lattice, with and without fitting the cell list after the first
chunk (issue 20: ``RunConfig.fit_neighbors``, :func:`dmd.runloop.fitted_neighbors`).

The peer is the same run keeping the lattice-sized list (``fit_neighbors=False``), measured back to back in this
process. Each setting runs twice with the same seed: the first call's wall time includes compilation (the fitted run
compiles its chunk once more); the second finds every shape compiled, so its steps/s is the steady state. Prints the
capacities, steps/s, CPU seconds, the ratio and the machine load.

    python benchmarks/bench_fit_list.py [--atoms 4000] [--steps 4000] [--chunk 1000]
"""

from __future__ import annotations

import argparse
import os
import time

import jax.numpy as jnp

from dmd import models
from dmd.simulate import RunConfig, simulate


def load() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--chunk", type=int, default=1000)
    args = ap.parse_args()
    # T* = 1, rho* = 0.8, r_c = 2.5 sigma, skin 0.3 sigma (lj_fluid's defaults), BAOAB at 0.01 ps (~0.005 tau)
    system = models.lj_fluid(args.atoms, density=0.8, dtype=jnp.float32)
    lattice = system.neighbor_fn.allocate(system.positions)
    print(f"LJ N = {args.atoms}, float32, {args.steps} steps in chunks of {args.chunk}; {load()}")
    print(f"  lattice-sized list: {lattice.cell_capacity} slots per cell, {lattice.max_occupancy} neighbours")
    rate = {}
    for fit in (False, True, False, True):  # interleaved: both settings see the same load
        cfg = RunConfig(
            steps=args.steps,
            dt=0.01,
            temperature=system.metadata["temperature_K"],
            integrator="baoab",
            report_every=100,
            chunk_steps=args.chunk,
            progress=False,
            fit_neighbors=fit,
        )
        c0, t0 = time.process_time(), time.perf_counter()
        res = simulate(system, cfg)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        nbr = res.state.neighbor
        first = fit not in rate
        rate[fit] = args.steps / wall
        print(
            f"  fit={fit!s:5} {'first (compiles)' if first else 'again (compiled)'}: {args.steps / wall:7.1f} steps/s, "
            f"{cpu:6.1f} CPU s, {wall:6.1f} s wall; end list {nbr.cell_capacity} slots, {nbr.max_occupancy} "
            f"neighbours, {res.summary['neighbor_rebuilds']} rebuilds; {load()}"
        )
    print(f"steady state fitted / lattice-sized: {rate[True] / rate[False]:.2f}x; {load()}")


if __name__ == "__main__":
    main()
