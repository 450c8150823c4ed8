"""LJ fluid force pieces, an older checkout's ``dmd/models.py`` against this one, in ONE process.

Arms: A = ``--base``'s ``dmd/models.py`` (e.g. a ``git worktree add /tmp/base 4af270b``: full list, its kernel),
F = this checkout with ``half_list=False`` (full list), H = ``half_list=True`` (half list). Each piece is jitted
alone (force = gradient of E, energy, one rebuild, a BAOAB step over 200 steps with its rebuilds) from the same
fluid positions (200 BAOAB steps from the lattice, list fitted ×1.15 as ``bench_engine.py`` does); wall / CPU ms,
min of 5 × 20 calls, rounds interleaved (docs/engine.md, "LJ fluid: fused pair values and half list").

    python benchmarks/bench_lj_pieces.py --base /tmp/base --sizes 8000 1000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dmd import models
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.integrators import make_integrator

SIG, EPS = models.ARGON["sigma"], models.ARGON["epsilon"]


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


def _arms(base_dir, n):
    spec = importlib.util.spec_from_file_location("base_models", os.path.join(base_dir, "dmd", "models.py"))
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    kw = dict(density=0.8, cutoff=2.5 * SIG, skin=0.5 * SIG, dtype=jnp.float32)
    return {
        "A": base.lj_fluid(n, **kw),
        "F": models.lj_fluid(n, half_list=False, **kw),
        "H": models.lj_fluid(n, half_list=True, **kw),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="root of the older checkout (its dmd/models.py is arm A)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8000, 1000])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for n in args.sizes:
        systems = _arms(args.base, n)
        integ = {k: make_integrator("baoab", s, dt=0.01, temperature=EPS / KB_KJ_PER_MOL_K, friction=1.0)
                 for k, s in systems.items()}  # fmt: skip
        h = systems["H"]
        st0 = integ["H"].init(jax.random.PRNGKey(0), h.params)
        st0 = _chunk(integ["H"].step, h.params, 200)(st0)
        pos, fns, run, st, width = st0.positions, {}, {}, {}, {}
        for k, s in systems.items():
            nb = s.neighbor_fn.grow(s.neighbor_fn.allocate(pos), pos, factor=1.15, fit=True)
            width[k] = nb.idx.shape[1]
            fns[k, "force"] = jax.jit(jax.grad(lambda x, s=s, nb=nb: s.energy_fn(s.params, x, neighbor=nb)))
            fns[k, "energy"] = jax.jit(lambda x, s=s, nb=nb: s.energy_fn(s.params, x, neighbor=nb))
            fns[k, "rebuild"] = jax.jit(
                lambda x, nb=nb: nb.fns._rebuild(x, nb.max_occupancy, nb.cell_capacity, nb.n_rebuilds, nb.box).idx
            )
            st[k] = st0.replace(neighbor=nb)
            run[k] = _chunk(integ[k].step, s.params, 100)
        f_a, e_a = np.asarray(fns["A", "force"](pos)), float(fns["A", "energy"](pos))
        print(f"N={n}: list columns {width} | load {os.getloadavg()[0]:.1f}")
        for k in "FH":
            df = np.abs(np.asarray(fns[k, "force"](pos)) - f_a).max()
            de = float(fns[k, "energy"](pos)) - e_a
            print(f"  {k} vs A: max|dF| {df:.3g} of {np.abs(f_a).max():.3g} kJ/mol/nm; dE {de:.3g} of {e_a:.6g} kJ/mol")
        for rnd in range(args.rounds):
            parts = [
                what + " " + " ".join(f"{k} {w:.2f}/{c:.2f}" for k in "AFH" for w, c in [_ms(fns[k, what], pos)])
                for what in ("force", "energy", "rebuild")
            ]
            steps = []
            for k in "AFH":
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
