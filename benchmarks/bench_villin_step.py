"""Where a villin + water BAOAB step goes, piece by piece, in CPU ms, in ONE process (optionally A/B).

Villin + water (OpenMM's test.pdb, amber14 + TIP3P, PME 0.9 nm, HBonds, rigid water, 2 fs, float32, half list)
after 100 equilibration steps at the given skin. Each piece is jitted alone and timed ``--repeat`` times
(``block_until_ready``); printed as min / median CPU ms (process CPU, all threads) and min wall ms, with the load:

- real-space pairs, PME reciprocal, bonded terms (gradients w.r.t. positions), total force (``value_and_grad`` of
  the whole energy, as the step takes it);
- constraints: SHAKE + SETTLE positions, RATTLE + SETTLE velocities, each also split into SHAKE/RATTLE only and
  SETTLE only;
- the BAOAB move without forces (``baoab_move``: kick, drift, noise, constraints), neighbour check, one rebuild;
- a whole step: a 50-step ``lax.scan`` chunk per 50, rebuilds counted, with the potential energy every step and
  (where the integrator can skip it, as ``dmd.simulate`` does) once per chunk, interleaved.

``--commit C`` also loads C's ``dmd/forces/pme.py`` and ``dmd/constraints.py`` as separate modules and times their
pieces (A = C, B = this checkout) interleaved ``--rounds`` times; results are compared (max |Δ|).

    python benchmarks/bench_villin_step.py --skin 0.131
    python benchmarks/bench_villin_step.py --commit 4af270b --rounds 3 --only pme constraints
    python benchmarks/bench_villin_step.py --columns 346 304 --rounds 4   # list width A/B, whole steps only
    python benchmarks/bench_villin_step.py --kernels xla numba --rounds 4  # rebuild kernel A/B, whole steps only

``--kernels``: one system per neighbour-list rebuild kernel (``DMD_REBUILD_KERNEL``, dmd.forces.neighbors), each
from the same start; their 50-step chunks (energy once per chunk) and one rebuild each, interleaved.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from bench_rebuild import _old_module, _time


def _load():
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def timed(fn, *args, repeat=9):
    """(output, min CPU ms, median CPU ms, min wall ms) of ``repeat`` compiled calls."""
    out = jax.block_until_ready(fn(*args))
    wall_min, _, cpu_min, cpu_med = _time(fn, args, repeat)
    return out, cpu_min, cpu_med, wall_min


def _say(label, t):
    print(f"  {label:44s} CPU {t[1]:8.2f} / {t[2]:8.2f} ms (min / median), wall min {t[3]:8.2f} ms | {_load()}")


def setup(skin):
    import openmm.app as app
    from bench_engine import _villin_runner

    from dmd.integrators import step_closures
    from dmd.openmm_system import system_from_pdb

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    system = system_from_pdb(pdb, dtype=jnp.float32, skin=skin, **kw)
    integ, run = _villin_runner(system, 50, energy_every_step=True)
    lazy = _villin_runner(system, 50)[1]
    lazy = lazy if _villin_runner.lazy else None  # a checkout whose steps always take the energy
    carry = (integ.init(jax.random.PRNGKey(0), system.params), jnp.zeros((), jnp.int32))
    carry = run(run(carry))
    return system, integ, (run, lazy), step_closures(system), carry


def force_pieces(system, st, pme_mod, repeat):
    from dmd.forces.nonbonded import pair_energy_full

    p, box, md, x = system.params, system.box, system.metadata, st.positions
    nb = st.neighbor
    q = p["NonbondedForce"]["charge"]
    alpha, grid = md["pme_alpha"], tuple(md["pme_grid"])
    moduli = tuple(pme_mod.bspline_moduli(k, 5) for k in grid)
    sig = jnp.full(system.n_atoms, 0.3, x.dtype)
    pair = pair_energy_full("PME", md["cutoff_nm"], alpha=alpha, half=not nb.full)
    out = {}
    out["real-space pairs (grad)"] = timed(
        jax.jit(jax.grad(lambda y: pair(y, box, nb.idx, q, sig, sig))), x, repeat=repeat
    )
    out["PME reciprocal (value_and_grad)"] = timed(
        jax.jit(jax.value_and_grad(lambda y: pme_mod.pme_reciprocal_energy(q, y, box, alpha, grid, 5, moduli))),
        x,
        repeat=repeat,
    )
    bonded = [k for k in p if k != "NonbondedForce"]
    out["bonded terms (grad)"] = timed(
        jax.jit(jax.grad(lambda y: sum(system.terms_fn(p, y, box=box, neighbor=nb)[k] for k in bonded))),
        x,
        repeat=repeat,
    )
    out["total force (grad)"] = timed(
        jax.jit(jax.grad(lambda y, n: system.energy_fn(p, y, box=box, neighbor=n))), x, nb, repeat=repeat
    )
    out["total force (value_and_grad)"] = timed(
        jax.jit(jax.value_and_grad(lambda y, n: system.energy_fn(p, y, box=box, neighbor=n))), x, nb, repeat=repeat
    )
    return out


def constraint_pieces(system, st, cons_mod, masses, repeat):
    c = system.constraints
    x, v = st.positions, st.velocities
    key = jax.random.PRNGKey(3)
    x_unc = x + 0.002 * v + 1e-4 * jax.random.normal(key, x.shape, x.dtype)
    m = np.where(masses > 0, masses, masses.dtype.type(1))  # massless particles: unit mass, as the integrators
    both = cons_mod.make_constraint_fns(c, m)
    shake = cons_mod.make_constraint_fns(type(c)(c.pairs, c.lengths, None, None), m)
    settle = cons_mod.make_constraint_fns(type(c)(c.pairs[:0], c.lengths[:0], c.settle, c.settle_geometry), m)
    out = {}
    for name, fns in (("SHAKE + SETTLE", both), ("SHAKE only", shake), ("SETTLE only", settle)):
        out[f"positions {name}"] = timed(jax.jit(fns.positions), x_unc, x, repeat=repeat)
    xc = out["positions SHAKE + SETTLE"][0]
    for name, fns in (("RATTLE + SETTLE", both), ("RATTLE only", shake), ("SETTLE only", settle)):
        out[f"velocities {name}"] = timed(jax.jit(fns.velocities), v, xc, repeat=repeat)
    return out


def step_pieces(system, integ, run, closures, carry, repeat):
    from dmd.integrators import baoab_move

    st = carry[0]
    masses, _, cons, _ = closures
    massive = masses > 0
    safe = np.where(massive, masses, masses.dtype.type(1))
    a = float(np.exp(-1.0 * 0.002))
    kT = 2.494338785
    c = np.where(massive, np.sqrt((1 - a**2) * kT / safe), 0.0)[:, None].astype(masses.dtype)
    inv_m = np.where(massive, 1 / safe, masses.dtype.type(0))[:, None]
    move = jax.jit(
        lambda x, v, f, k: baoab_move(x, v, f, k, dt=0.002, inv_m=inv_m, a=a, c=c, cons=cons)  # noqa: E731
    )
    out = {"BAOAB move (no forces)": timed(move, st.positions, st.velocities, st.forces, st.key, repeat=repeat)}
    out["neighbour check (no rebuild)"] = timed(
        jax.jit(lambda y, n: n.update(y)), st.positions, st.neighbor, repeat=repeat
    )
    out["neighbour rebuild"] = timed(
        jax.jit(lambda y, n: n.update(y + 0.3)), st.positions, st.neighbor, repeat=max(3, repeat // 3)
    )
    rounds = max(2, repeat // 3)
    runs = {"whole step, energy every step": run[0], "whole step, energy once per chunk": run[1]}
    cpu, wall, rebuilds = {k: [] for k in runs}, {k: [] for k in runs}, 0
    jax.block_until_ready([f(carry) for f in runs.values() if f is not None])  # compiled
    for _ in range(rounds):  # the two arms interleaved, from the same state
        for k, f in runs.items():
            if f is None:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            new = jax.block_until_ready(f((carry[0], jnp.zeros((), jnp.int32))))
            wall[k].append((time.perf_counter() - t0) * 1e3 / 50)
            cpu[k].append((time.process_time() - c0) * 1e3 / 50)
        rebuilds += int(new[1])
        carry = new
    for k in runs:
        if cpu[k]:
            out[f"{k} (50-step chunks)"] = (None, min(cpu[k]), float(np.median(cpu[k])), min(wall[k]))
    return out, f"{rebuilds} rebuilds / {rounds * 50} steps"


def column_arms(system, run, carry, widths, rounds):
    """Whole 50-step chunks (energy once per chunk where the integrator can) with the list at each of ``widths``
    columns (padded with N, or cut where its longest row allows: the same pairs), from the same state, interleaved
    ``rounds`` times; after each round every arm restarts from the first arm's end state. Prints CPU and wall ms per
    step, rebuilds, overflow and the longest row."""
    from dmd.runloop import pad_neighbors

    n = system.n_atoms

    def longest(st):
        return int(jnp.max(jnp.sum(st.neighbor.idx < n, axis=1)))

    def at_width(st, w):
        nb = st.neighbor
        if w >= nb.max_occupancy:
            return st.replace(neighbor=pad_neighbors(nb, w))
        assert longest(st) <= w, f"a row holds {longest(st)} partners: {w} columns would drop pairs"
        return st.replace(neighbor=nb.set(idx=nb.idx[:, :w], max_occupancy=w))

    zero = jnp.zeros((), jnp.int32)
    states = {w: at_width(carry[0], w) for w in widths}
    jax.block_until_ready([run((states[w], zero)) for w in widths])  # compiled, one program per width
    cpu = {w: [] for w in widths}
    for r in range(rounds):
        for w in widths:
            t0, c0 = time.perf_counter(), time.process_time()
            new, rebuilds = jax.block_until_ready(run((states[w], zero)))
            cpu[w].append((time.process_time() - c0) * 1e3 / 50)
            wall = (time.perf_counter() - t0) * 1e3 / 50
            print(
                f"  round {r} {w} columns: CPU {cpu[w][-1]:7.2f} wall {wall:7.2f} ms per step, {int(rebuilds)} "
                f"rebuilds, overflow {bool(new.neighbor.did_buffer_overflow)}, longest row {longest(new)} | {_load()}",
                flush=True,
            )
            if w == widths[0]:
                first = new
        states = {w: at_width(first, w) for w in widths}
    for w in widths:
        print(f"  {w} columns: CPU min {min(cpu[w]):7.2f} median {float(np.median(cpu[w])):7.2f} ms per step")


def kernel_arms(skin, kernels, rounds, repeat):
    """Whole 50-step chunks and single rebuilds with each rebuild kernel in ``kernels``, interleaved ``rounds`` times
    (each arm its own system and state, all from the same start: with equal lists the trajectories agree)."""
    arms = {}
    for k in kernels:
        os.environ["DMD_REBUILD_KERNEL"] = k
        system, _, run, _, carry = setup(skin)
        assert system.neighbor_fn.rebuild_kernel == k
        rebuild = jax.jit(lambda y, n: n.update(y + 0.3))
        arms[k] = [run[1] or run[0], carry[0], rebuild, [], []]
    zero = jnp.zeros((), jnp.int32)
    for r in range(rounds):
        for k, arm in arms.items():
            run, st, rebuild = arm[:3]
            t0, c0 = time.perf_counter(), time.process_time()
            new, n_rebuilds = jax.block_until_ready(run((st, zero)))
            cpu, wall = (time.process_time() - c0) * 1e3 / 50, (time.perf_counter() - t0) * 1e3 / 50
            arm[1] = new
            arm[3].append((cpu, wall))
            t = timed(rebuild, new.positions, new.neighbor, repeat=repeat)
            arm[4].append(t[1:])
            print(
                f"  round {r} {k:5s}: step CPU {cpu:6.2f} wall {wall:6.2f} ms ({int(n_rebuilds)} rebuilds / 50) | "
                f"one rebuild CPU {t[1]:6.2f} / {t[2]:6.2f} wall {t[3]:6.2f} ms (min / median, min) | {_load()}",
                flush=True,
            )
        xs = [np.asarray(a[1].positions) for a in arms.values()]
        print(f"  round {r}: max |Δx| between the arms {max(np.max(np.abs(x - xs[0])) for x in xs):.3g} nm")
    for k, arm in arms.items():
        step, reb = np.asarray(arm[3]), np.asarray(arm[4])
        print(
            f"  {k:5s}: step CPU min {step[:, 0].min():6.2f} median {np.median(step[:, 0]):6.2f}, wall min "
            f"{step[:, 1].min():6.2f} ms | rebuild CPU min {reb[:, 0].min():6.2f}, wall min {reb[:, 2].min():6.2f} ms"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skin", type=float, default=0.131, help="list skin, nm (default 0.131)")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--commit", default=None, help="also time this commit's pme.py and constraints.py (A/B)")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds (with --commit)")
    ap.add_argument("--only", nargs="+", default=None, help="pieces: forces constraints step pme (default all)")
    ap.add_argument(
        "--columns", type=int, nargs="+", default=None, help="whole steps with the list at these widths (A/B), only"
    )
    ap.add_argument("--kernels", nargs="+", default=None, help="whole steps with these rebuild kernels (A/B), only")
    args = ap.parse_args()
    only = set(args.only or ["forces", "constraints", "step"])
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs | {_load()}")
    if args.kernels:
        return kernel_arms(args.skin, args.kernels, max(2, args.rounds), args.repeat)
    import dmd.constraints as cons_b
    import dmd.forces.pme as pme_b

    system, integ, run, closures, carry = setup(args.skin)
    st = carry[0]
    print(f"villin + water {system.n_atoms} atoms, skin {args.skin} nm, {st.neighbor.idx.shape[1]} columns")
    if args.columns:
        return column_arms(system, run[1] or run[0], carry, args.columns, max(2, args.rounds))
    arms = [("", pme_b, cons_b)]
    if args.commit:
        pme_a = _old_module(args.commit, "dmd/forces/pme.py", "pme_a")
        cons_a = _old_module(args.commit, "dmd/constraints.py", "cons_a")
        arms = [(f"A {args.commit} ", pme_a, cons_a), ("B this ", pme_b, cons_b)]
    for r in range(args.rounds if args.commit else 1):
        results = []
        for label, pme_m, cons_m in arms:
            res = {}
            if "pme" in only and "forces" not in only:
                x = st.positions
                q = system.params["NonbondedForce"]["charge"]
                md = system.metadata
                grid = tuple(md["pme_grid"])
                mod = tuple(pme_m.bspline_moduli(k, 5) for k in grid)
                fn = jax.jit(
                    jax.value_and_grad(
                        lambda y, m=pme_m, mod=mod, q=q, md=md, grid=grid: m.pme_reciprocal_energy(
                            q, y, system.box, md["pme_alpha"], grid, 5, mod
                        )
                    )
                )
                res["PME reciprocal (value_and_grad)"] = timed(fn, x, repeat=args.repeat)
            if "forces" in only:
                res.update(force_pieces(system, st, pme_m, args.repeat))
            if "constraints" in only:
                res.update(constraint_pieces(system, st, cons_m, closures[0], args.repeat))
            for k, t in res.items():
                _say(f"{label}{k}", t)
            results.append(res)
        if len(results) == 2:
            for k in results[0]:
                a, b = jax.tree_util.tree_leaves(results[0][k][0]), jax.tree_util.tree_leaves(results[1][k][0])
                d = max(float(jnp.max(jnp.abs(u - w))) for u, w in zip(a, b, strict=True))
                s = max(float(jnp.max(jnp.abs(u))) for u in a)
                print(f"  round {r}: {k}: max |A - B| {d:.3g} of max |A| {s:.3g}")
    if "step" in only:
        res, rebuilds = step_pieces(system, integ, run, closures, carry, args.repeat)
        for k, t in res.items():
            _say(k, t)
        print(f"  ({rebuilds})")


if __name__ == "__main__":
    main()
