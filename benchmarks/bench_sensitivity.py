"""Benchmark: forward-mode sensitivities (dmd.sensitivity) vs plain dynamics, and their memory.

Prints, measured in one run on the same LJ fluid (float32, neighbour list, seed-form Langevin):

1. **Slowdown** of ``run_sensitivities`` (tangent method) over plain dynamics for P = 1, 2, 8 parameters
   (target ≤ 1 + 1.5·P). Plain dynamics = the same jitted chunk runner with no tangents, i.e. the engine's
   ``dmd.integrators.langevin`` step in a ``lax.scan`` (``dmd.simulate.simulate`` itself recompiles on every
   call, so its steady state cannot be timed call by call). Compilation is excluded (a warm-up run first);
   best of ``--repeats``, configurations interleaved; wall and process CPU time (CPU time is the steadier
   figure on a shared machine). Start: positions after 2,000 plain steps (a liquid, not the lattice).
2. **Peak memory at 10³ vs 10⁵ steps** (tangent; target equal within 10 %): each run in a fresh subprocess,
   reporting its peak RSS (``ru_maxrss``) with the same number of stored frames (report_every = steps/10), and
   XLA's compiled memory analysis of the chunk (temp + argument + output bytes). As a peer, reverse mode
   (``jax.grad`` of a trajectory loss through ``lax.scan``) is compiled at the same lengths: its memory grows
   with the number of steps because it stores the trajectory.
3. **Window memory vs k**: compiled memory of the window chunk for k = 10, 100, 1000 (ring buffer k·P·N·3).

    python benchmarks/bench_sensitivity.py            # N = 500, 10³ vs 10⁵ steps
    python benchmarks/bench_sensitivity.py --quick    # N = 108, 10³ vs 10⁴ steps (about a minute)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMES8 = [f"lj/{f}/{t}" for t in "ABCD" for f in ("epsilon", "sigma")]


def make_system(n_atoms):
    import jax.numpy as jnp

    from dmd import models

    # cutoff 0.7 nm (2.06 σ) with a 0.1 nm skin fits the N = 108 box; plain truncation as OpenMM's default
    return models.lj_fluid(n_atoms, density=0.8, n_types=4, cutoff=0.7, skin=0.1, dtype=jnp.float32)


def make_runner(system, names, steps, pos, plain=False):
    """A zero-argument function running ``steps`` steps (one chunk) and returning (wall s, process CPU s)."""
    import jax

    from dmd.params import select
    from dmd.sensitivity import prepare_run, run_chunks

    sel = select(system.param_labels, names)

    def once():
        frames, chunk, carry, args = prepare_run(
            system,
            sel,
            steps,
            0.01,
            120.0,
            1.0,
            0,
            "tangent",
            None,
            steps,
            pos,
            None,
            n_tangents=0 if plain else None,
        )
        jax.block_until_ready(carry)
        w0, c0 = time.perf_counter(), time.process_time()
        outs, _ = run_chunks(system, chunk, carry, args, frames, steps, steps, False)
        jax.block_until_ready(outs[-1]["x"])
        return time.perf_counter() - w0, time.process_time() - c0

    once()  # compile (and grow the neighbour list if needed)
    return once


def equilibrated_positions(system, steps):
    """Positions after ``steps`` plain steps from the lattice start (a liquid: neighbour lists sized for it)."""
    from dmd.simulate import RunConfig, simulate

    cfg = RunConfig(steps=steps, dt=0.01, temperature=120.0, friction=1.0, report_every=steps, progress=False)
    return simulate(system, cfg).state.positions


def compiled_bytes(lowered):
    m = lowered.compile().memory_analysis()
    if m is None:
        return None
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def chunk_memory(system, names, steps, method="tangent", window=None):
    """XLA compiled memory of one chunk covering ``steps`` steps with 10 stored frames."""
    from dmd.params import select
    from dmd.sensitivity import prepare_run

    sel = select(system.param_labels, names)
    frames, chunk, carry, args = prepare_run(
        system, sel, steps, 0.01, 120.0, 1.0, 0, method, window, steps // 10, None, None
    )
    return compiled_bytes(chunk.lower(carry, *args, frames))


def reverse_mode_memory(system, steps):
    """Peer: jax.grad of Σ_t U(x_t) through a lax.scan of the engine step (stores the trajectory)."""
    import jax
    import jax.numpy as jnp

    from dmd.integrators import langevin
    from dmd.params import select

    sel = select(system.param_labels, NAMES8[:1])
    integ = langevin(system, dt=0.01, temperature=120.0, friction=1.0)
    state0 = integ.init(jax.random.PRNGKey(0), system.params, neighbor=system.allocate_neighbors())

    def loss(theta):
        params = sel.set(system.params, theta)

        def body(st, _):
            st = integ.step(st, params)
            return st, st.potential_energy

        return jnp.sum(jax.lax.scan(body, state0, None, length=steps)[1])

    return compiled_bytes(jax.jit(jax.grad(loss)).lower(sel.get(system.params)))


def child_peak_rss(n_atoms, steps, p):
    """Run in this (fresh) process: one tangent run, print peak RSS (MiB) and the compiled chunk bytes."""
    from dmd.sensitivity import run_sensitivities

    system = make_system(n_atoms)
    t0 = time.perf_counter()
    run_sensitivities(
        system,
        NAMES8[:p],
        steps=steps,
        dt=0.01,
        temperature=120.0,
        friction=1.0,
        report_every=steps // 10,
        chunk_steps=1000,
        progress=False,
    )
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_mib": rss, "wall_s": wall}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 108, 10³ vs 10⁴ steps")
    ap.add_argument("--atoms", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=3, type=int, metavar=("ATOMS", "STEPS", "P"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_peak_rss(*args.child)

    n_atoms = args.atoms or (108 if args.quick else 500)
    long_steps = 10_000 if args.quick else 100_000
    steps = 500 if args.quick else 1000
    system = make_system(n_atoms)
    print(f"LJ fluid N = {n_atoms}, float32, neighbour list; loaded shared 2-core machine: ratios are what count")

    print("\n1. slowdown vs plain dynamics (steady state, compilation excluded; configurations interleaved)")
    pos = equilibrated_positions(system, 2000)
    runners = {0: make_runner(system, NAMES8[:1], steps, pos, plain=True)}
    for p in (1, 2, 8):
        runners[p] = make_runner(system, NAMES8[:p], steps, pos)
    best = {p: (float("inf"), float("inf")) for p in runners}
    for _ in range(args.repeats):
        for p, fn in runners.items():
            w, c = fn()
            best[p] = (min(best[p][0], w), min(best[p][1], c))
    w0, c0 = best[0]
    print(
        f"  plain dynamics (engine step, same runner, no tangents): {1e3 * w0 / steps:.3f} ms/step wall, "
        f"{1e3 * c0 / steps:.3f} ms/step CPU"
    )
    for p in (1, 2, 8):
        w, c = best[p]
        ok = "ok" if c / c0 <= 1 + 1.5 * p else "ABOVE TARGET"
        print(
            f"  P = {p}: {1e3 * w / steps:.3f} ms/step wall ({w / w0:.2f}x), {1e3 * c / steps:.3f} ms/step CPU "
            f"({c / c0:.2f}x; target <= {1 + 1.5 * p:.1f}x) {ok}"
        )

    print(f"\n2. peak memory, tangent P = 2, 10^3 vs {long_steps:.0e} steps (10 stored frames each)")
    mem = {}
    for n in (1000, long_steps):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n_atoms), str(n), "2"], capture_output=True, text=True, check=True
        )
        mem[n] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {n:>7} steps: peak RSS {mem[n]['rss_mib']:.1f} MiB (fresh process, wall {mem[n]['wall_s']:.1f} s)")
    ratio_rss = mem[long_steps]["rss_mib"] / mem[1000]["rss_mib"]
    print(
        f"  RSS ratio {long_steps:.0e}/1e3 = {ratio_rss:.3f} (target within 10%: "
        f"{'ok' if abs(ratio_rss - 1) <= 0.1 else 'NOT MET'})"
    )
    c1, c2 = chunk_memory(system, NAMES8[:2], 1000), chunk_memory(system, NAMES8[:2], long_steps)
    print(f"  XLA compiled chunk memory: {c1 / 2**20:.2f} MiB vs {c2 / 2**20:.2f} MiB (ratio {c2 / c1:.3f})")
    r1, r2 = reverse_mode_memory(system, 100), reverse_mode_memory(system, 1000)
    print(
        f"  peer, reverse mode through scan: {r1 / 2**20:.2f} MiB at 100 steps, {r2 / 2**20:.2f} MiB at 1000 "
        f"(ratio {r2 / r1:.1f}: grows with T)"
    )

    print("\n3. window method memory vs k (P = 2, compiled chunk)")
    base = chunk_memory(system, NAMES8[:2], 1000)
    for k in (10, 100, 1000):
        b = chunk_memory(system, NAMES8[:2], 1000, method="window", window=k)
        ring = k * 2 * n_atoms * 3 * 4
        print(
            f"  k = {k:>4}: {b / 2**20:.2f} MiB ({b / base:.2f}x tangent; ring buffer k·P·N·3·4 B = "
            f"{ring / 2**20:.2f} MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
