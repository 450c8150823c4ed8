"""CPU-time breakdown of a villin + water BAOAB step with the numba kernels, piece by piece, in ONE process.

Villin + water (OpenMM's test.pdb, amber14 + TIP3P, PME 0.9 nm, HBonds, rigid water, 2 fs, float32, half list,
the system's default kernels: numba pair force and rebuild on the CPU) after 100 steps at ``--skin``. Each piece is
jitted alone and timed ``--repeat`` times (``block_until_ready``); printed as min / median CPU ms of the process
(``time.process_time``, all threads) and min wall ms, with the load:

- the pair force through its callback, the same kernel called directly on NumPy arrays, and an empty callback with
  the same operands and results (what the callback's copies and launch cost);
- PME reciprocal (XLA): the whole value and gradient, then its parts: fractional coordinates + B-spline weights and
  the [N, p, p, p] products, the windowed scatter, the convolution (rfft, η(m)·Q̂, irfft: the gradient of the
  grid energy), the gather (the spread's transpose, weights' derivatives included); with ``--pme-kernel numba``
  also the numba route (``dmd.forces.pme_kernel``) whole and its spread / gather kernels alone;
- the rest of the NonbondedForce term (exclusion corrections, self, background), bonded terms;
- constraints, the BAOAB move without forces, its noise, neighbour check, one rebuild and its share per step;
- whole 50-step chunks (energy once per chunk, as ``dmd.simulate``).

    python benchmarks/bench_villin_breakdown.py --repeat 30 [--pme-kernel numba]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from bench_villin_step import _load, _say, constraint_pieces, setup, step_pieces, timed


def pair_pieces(system, st, repeat):
    from dmd.forces.nonbonded import pair_energy_full
    from dmd.forces.numba_pairs import pairs_vec

    p, box, md, x, nb = system.params, system.box, system.metadata, st.positions, st.neighbor
    q = p["NonbondedForce"]["charge"]
    sig = jnp.full(system.n_atoms, 0.3, x.dtype)
    eps = jnp.full(system.n_atoms, 0.5, x.dtype)
    rc, alpha = md["cutoff_nm"], md["pme_alpha"]
    out = {}
    for k in ("auto", "xla"):
        pair = pair_energy_full("PME", rc, alpha=alpha, half=not nb.full, pair_kernel=k)
        out[f"pairs ({k}) grad"] = timed(
            jax.jit(jax.grad(lambda y, pair=pair: pair(y, box, nb.idx, q, sig, eps))), x, repeat=repeat
        )
    arrs = [np.asarray(a, np.float32) for a in (x, box, q, sig, eps)]
    idx = np.asarray(nb.idx, np.int32)
    out["pairs: numba kernel on NumPy (no callback)"] = timed(
        lambda: pairs_vec(arrs[0], arrs[1], idx, arrs[2], arrs[3], arrs[4], rc, alpha, not nb.full), repeat=repeat
    )
    n = system.n_atoms
    shapes = (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((n, 3), jnp.float32))
    zeros = (np.float32(0), np.zeros((n, 3), np.float32))

    def empty(y):
        return jax.pure_callback(lambda *a: zeros, shapes, y, box, nb.idx, q, sig, eps, vmap_method="sequential")[1]

    out["pairs: empty callback, same operands"] = timed(jax.jit(empty), x, repeat=repeat)
    return out


def pme_pieces(system, st, repeat, kernels):
    from dmd.forces import pme
    from dmd.forces.pme_kernel import reciprocal_energy

    p, box, md, x = system.params, system.box, system.metadata, st.positions
    q = p["NonbondedForce"]["charge"]
    alpha, grid = md["pme_alpha"], tuple(md["pme_grid"])
    mod = tuple(pme.bspline_moduli(k, 5) for k in grid)
    out = {}
    for k in kernels:
        e = jax.jit(jax.value_and_grad(lambda y, k=k: reciprocal_energy(q, y, box, alpha, grid, 5, mod, k)))
        out[f"PME reciprocal ({k}) value_and_grad"] = timed(e, x, repeat=repeat)

    def weights(y):
        base, frac = pme.fractional_windows(y, box, grid)
        w = pme.bspline_weights(frac, 5)
        return base, q[:, None, None, None] * w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]

    out["PME xla: weights + products"] = t = timed(jax.jit(weights), x, repeat=repeat)
    base, vals = t[0]
    out["PME xla: windowed scatter"] = timed(jax.jit(lambda v, b: pme.spread_windows(v, b, grid)), vals, base)
    qg = jax.jit(lambda y: pme.charge_grid(q, y, box, grid, 5))(x)
    out["PME xla: grid energy alone (rfft)"] = timed(
        jax.jit(lambda g: pme.grid_energy(g, box, alpha, grid, mod)), qg, repeat=repeat
    )
    out["PME xla: convolution (rfft, η·Q̂, irfft)"] = t = timed(
        jax.jit(jax.grad(lambda g: pme.grid_energy(g, box, alpha, grid, mod))), qg, repeat=repeat
    )
    phi = t[0]
    out["PME xla: gather (spread's transpose)"] = timed(
        jax.jit(lambda y, ph: jax.vjp(lambda z: pme.charge_grid(q, z, box, grid, 5), y)[1](ph)[0]), x, phi
    )
    if "numba" in kernels or "auto" in kernels:
        from dmd.forces.pme_kernel import host_gather, host_spread

        a = [np.asarray(v, np.float32) for v in (x, q, box)]
        g = np.asarray(phi, np.float32)
        out["PME numba: spread kernel on NumPy"] = timed(lambda: host_spread(*a, grid), repeat=repeat)
        out["PME numba: gather kernel on NumPy"] = timed(lambda: host_gather(g, *a), repeat=repeat)
        grid_t = jax.ShapeDtypeStruct(grid, jnp.float32)
        spread_cb = jax.jit(lambda y: jax.pure_callback(lambda *v: host_spread(*v, grid), grid_t, y, q, box))
        out["PME numba: spread through its callback (jit)"] = timed(spread_cb, x, repeat=repeat)
        gather_cb = jax.jit(
            lambda y, ph: jax.pure_callback(host_gather, jax.ShapeDtypeStruct(x.shape, x.dtype), ph, y, q, box)
        )
        out["PME numba: gather through its callback (jit)"] = timed(gather_cb, x, phi, repeat=repeat)
    return out


def other_pieces(system, st, repeat):
    p, box, x, nb = system.params, system.box, st.positions, st.neighbor
    out = {}
    for name in p:
        out[f"term {name} (grad)"] = timed(
            jax.jit(jax.grad(lambda y, name=name: system.terms_fn(p, y, box=box, neighbor=nb)[name])), x, repeat=repeat
        )
    out["total force (grad)"] = timed(
        jax.jit(jax.grad(lambda y: system.energy_fn(p, y, box=box, neighbor=nb))), x, repeat=repeat
    )
    out["noise: jax.random.normal [N, 3]"] = timed(
        jax.jit(lambda k: jax.random.normal(k, x.shape, x.dtype)), st.key, repeat=repeat
    )
    return out


def pme_step_arms(system, carry, rounds):
    """Whole 50-step chunks (energy once per chunk) with PME's spreading on XLA (A) and on numba (B), the rest equal
    (numba pairs and rebuild), from the same state, interleaved ``rounds`` times; the arms' positions compared."""
    from bench_engine import _villin_runner

    import dmd.forces.pme_kernel as pk

    real = pk.numba_reciprocal_energy
    runs = {}
    zero = jnp.zeros((), jnp.int32)
    for arm in ("xla", "numba"):
        pk.numba_reciprocal_energy = real if arm == "numba" else (lambda *a: None)
        run = _villin_runner(system, 50)[1]
        jax.block_until_ready(run((carry[0], zero)))  # traced and compiled with this arm's PME
        runs[arm] = run
    pk.numba_reciprocal_energy = real
    cpu = {k: [] for k in runs}
    st = carry[0]
    for r in range(rounds):
        ends = {}
        for arm, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            ends[arm], n_reb = jax.block_until_ready(run((st, zero)))
            cpu[arm].append((time.process_time() - c0) * 1e3 / 50)
            wall = (time.perf_counter() - t0) * 1e3 / 50
            msg = f"step CPU {cpu[arm][-1]:6.2f} wall {wall:6.2f} ms ({int(n_reb)} rebuilds / 50)"
            print(f"  round {r} PME {arm:5s}: {msg} | {_load()}", flush=True)
        dx = float(jnp.max(jnp.abs(ends["xla"].positions - ends["numba"].positions)))
        print(f"  round {r}: max |Δx| between the arms after 50 steps {dx:.3g} nm", flush=True)
        st = ends["xla"]
    for arm in runs:
        print(f"  PME {arm:5s}: step CPU min {min(cpu[arm]):6.2f} median {float(np.median(cpu[arm])):6.2f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skin", type=float, default=0.08, help="list skin, nm (default 0.08: dmd.skin's choice)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--pme-kernel", nargs="+", default=["xla"], help="PME routes to time (xla, numba)")
    ap.add_argument("--only", nargs="+", default=None, help="pairs pme other constraints step (default all)")
    ap.add_argument("--step-ab", type=int, default=0, help="rounds of whole steps, PME on XLA vs numba, only")
    args = ap.parse_args()
    only = set(args.only or ["pairs", "pme", "other", "constraints", "step"])
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs | {_load()}", flush=True)
    t0 = time.perf_counter()
    system, integ, run, closures, carry = setup(args.skin)
    st = carry[0]
    print(
        f"villin + water {system.n_atoms} atoms, skin {args.skin} nm, {st.neighbor.idx.shape[1]} columns, "
        f"grid {tuple(system.metadata['pme_grid'])}, setup {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    if args.step_ab:
        return pme_step_arms(system, carry, args.step_ab)
    groups = {
        "pairs": lambda: pair_pieces(system, st, args.repeat),
        "pme": lambda: pme_pieces(system, st, args.repeat, args.pme_kernel),
        "other": lambda: other_pieces(system, st, args.repeat),
        "constraints": lambda: constraint_pieces(
            system, st, __import__("dmd.constraints").constraints, closures[0], args.repeat
        ),
    }
    for g, fn in groups.items():
        if g in only:
            for k, t in fn().items():
                _say(k, t)
    if "step" in only:
        res, rebuilds = step_pieces(system, integ, run, closures, carry, max(9, args.repeat // 3))
        for k, t in res.items():
            _say(k, t)
        print(f"  ({rebuilds})")


if __name__ == "__main__":
    main()
