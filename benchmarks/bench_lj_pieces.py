"""LJ fluid step pieces, one kernel choice against another, in ONE process.

Arms (``--arms``): ``xla`` = full list, XLA row-sum kernel, XLA cell build (the engine before the numba LJ kernel);
``auto`` = :func:`dmd.models.lj_fluid`'s defaults (on a CPU: half list, the numba LJ kernel, the numba rebuild);
``half-xla`` = half list on XLA's kernels. Each piece is jitted alone (force = gradient of E, energy, one
rebuild, the list check without a rebuild, a BAOAB step over 200 steps with its rebuilds) from the same fluid
positions (200 BAOAB steps from the lattice, list fitted ×1.15 as ``bench_engine.py`` does); wall / CPU ms, min of
5 × 20 calls, rounds interleaved (docs/engine.md, "LJ fluid on numba kernels").

    python benchmarks/bench_lj_pieces.py --sizes 8000 1000 --arms xla auto
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dmd import models
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.integrators import make_integrator

SIG, EPS = models.ARGON["sigma"], models.ARGON["epsilon"]
ARMS = {
    "xla": dict(half_list=False, pair_kernel="xla", rebuild_kernel="xla"),
    "auto": {},
    "half-xla": dict(half_list=True, pair_kernel="xla", rebuild_kernel="xla"),
}


def _ms(fn, *args, rep=20, rounds=5):
    """(wall, CPU) ms per call, the minimum over ``rounds`` of ``rep`` calls."""
    jax.block_until_ready(fn(*args))
    best = (1e9, 1e9)
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(rep):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, ((time.perf_counter() - t0) / rep * 1e3, (time.process_time() - c0) / rep * 1e3))
    return best


def _chunk(step, params, length):
    """A jitted ``length``-step scan of ``step(state, params)``."""
    return jax.jit(lambda s: jax.lax.scan(lambda c, _: (step(c, params), None), s, None, length=length)[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8000, 1000])
    ap.add_argument("--arms", nargs="+", default=["xla", "auto"], choices=sorted(ARMS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skin", type=float, default=0.5, help="list skin in σ (bench_engine.py: 0.5)")
    args = ap.parse_args()
    for n in args.sizes:
        kw = dict(density=0.8, cutoff=2.5 * SIG, skin=args.skin * SIG, dtype=jnp.float32)
        systems = {k: models.lj_fluid(n, **kw, **ARMS[k]) for k in args.arms}
        integ = {k: make_integrator("baoab", s, dt=0.01, temperature=EPS / KB_KJ_PER_MOL_K, friction=1.0)
                 for k, s in systems.items()}  # fmt: skip
        k0 = args.arms[0]
        st0 = integ[k0].init(jax.random.PRNGKey(0), systems[k0].params)
        st0 = _chunk(integ[k0].step, systems[k0].params, 200)(st0)
        pos, fns, run, st, width = st0.positions, {}, {}, {}, {}
        for k, s in systems.items():
            nb = s.neighbor_fn.grow(s.neighbor_fn.allocate(pos), pos, factor=1.15, fit=True)
            width[k] = nb.idx.shape[1]
            fns[k, "force"] = jax.jit(jax.grad(lambda x, s=s, nb=nb: s.energy_fn(s.params, x, neighbor=nb)))
            fns[k, "energy"] = jax.jit(lambda x, s=s, nb=nb: s.energy_fn(s.params, x, neighbor=nb))
            fns[k, "rebuild"] = jax.jit(
                lambda x, nb=nb: nb.fns._rebuild(x, nb.max_occupancy, nb.cell_capacity, nb.n_rebuilds, nb.box).idx
            )
            fns[k, "check"] = jax.jit(lambda x, nb=nb: nb.update(x).idx)
            st[k] = st0.replace(neighbor=nb)
            run[k] = _chunk(integ[k].step, s.params, 100)
        f_a, e_a = np.asarray(fns[k0, "force"](pos)), float(fns[k0, "energy"](pos))
        print(f"N={n}: list columns {width} | load {os.getloadavg()[0]:.1f}")
        for k in args.arms[1:]:
            df = np.abs(np.asarray(fns[k, "force"](pos)) - f_a).max()
            de = float(fns[k, "energy"](pos)) - e_a
            print(f"  {k} vs {k0}: max|dF| {df:.3g} of {np.abs(f_a).max():.3g} kJ/mol/nm; dE {de:.3g} of {e_a:.6g}")
        for rnd in range(args.rounds):
            parts = [
                what + " " + " ".join(f"{k} {w:.2f}/{c:.2f}" for k in args.arms for w, c in [_ms(fns[k, what], pos)])
                for what in ("force", "energy", "rebuild", "check")
            ]
            steps = []
            for k in args.arms:
                s1 = jax.block_until_ready(run[k](st[k]))
                t0, c0 = time.perf_counter(), time.process_time()
                s2 = jax.block_until_ready(run[k](run[k](s1)))
                w, c = (time.perf_counter() - t0) / 200 * 1e3, (time.process_time() - c0) / 200 * 1e3
                steps.append(f"{k} {w:.2f}/{c:.2f} ({int(s2.neighbor.n_rebuilds - s1.neighbor.n_rebuilds)} rebuilds)")
            parts.append("BAOAB step " + " ".join(steps))
            print(
                f"  round {rnd} (wall/CPU ms): " + " | ".join(parts) + f" | load {os.getloadavg()[0]:.1f}", flush=True
            )


if __name__ == "__main__":
    main()
