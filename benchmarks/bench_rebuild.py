"""One neighbour-list rebuild, this checkout against an older commit (or the XLA rebuild against the numba one,
``--kernels``), in ONE process (A/B interleaved).

The older ``dmd/neighbors.py`` and ``dmd/forces/neighbors.py`` are read with ``git show <commit>:<path>`` and run as
separate modules next to this checkout's, on the same positions: LJ N = 8,000 (ρσ³ = 0.8, r_c 2.5σ, skin 0.5σ,
after 200 BAOAB steps, capacities fitted as ``bench_engine.py`` fits them) and villin + water (amber14 + TIP3P, PME
0.9 nm, half list, OpenMM's test.pdb positions). Each rebuild is one compiled call of ``update`` on positions moved
past the skin; both arms must give the same list, element for element (checked). Prints min and median wall and
CPU ms per arm and round, with the machine load (a shared machine: compare CPU ms within a round).

``--kernels``: villin + water only, both arms this checkout's force-field builder, A with ``rebuild_kernel="xla"``,
B with ``"numba"`` (:mod:`dmd.forces.numba_neighbors`); also a triclinic copy of the box (the same positions in a
box with tilted b and c vectors, as a crystal has), where both must again agree.

    python benchmarks/bench_rebuild.py --commit d2b5c65 --rounds 3
    python benchmarks/bench_rebuild.py --kernels --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _old_module(commit, path, name, replace=()):
    src = subprocess.check_output(["git", "show", f"{commit}:{path}"], cwd=ROOT).decode()
    for a, b in replace:
        src = src.replace(a, b)
    mod = types.ModuleType(name)
    mod.__file__ = f"<{commit}:{path}>"
    sys.modules[name] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def _time(fn, args, repeat):
    """(min wall, median wall, min CPU, median CPU) ms of ``repeat`` compiled calls."""
    jax.block_until_ready(fn(*args))
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return min(wall), float(np.median(wall)), min(cpu), float(np.median(cpu))


def lj_arms(old_nb, steps=200):
    from bench_engine import SIGMA, T_STAR

    from dmd import models
    from dmd.integrators import make_integrator

    system = models.lj_fluid(8000, density=0.8, cutoff=2.5 * SIGMA, skin=0.5 * SIGMA, dtype=jnp.float32)
    integ = make_integrator("baoab", system, dt=0.01, temperature=T_STAR, friction=1.0)
    st = integ.init(jax.random.PRNGKey(0), system.params)
    run = jax.jit(lambda s: jax.lax.scan(lambda c, _: (integ.step(c, system.params), None), s, None, length=100)[0])
    for _ in range(steps // 100):
        st = run(st)
    new = system.neighbor_fn.grow(st.neighbor, st.positions, factor=1.15, fit=True)
    fns = system.neighbor_fn
    old_fns = old_nb.CellNeighborListFns(fns.box, fns.cutoff, fns.skin, fns.capacity_multiplier, fns.subdivision)
    old = old_fns.allocate(st.positions, max_occupancy=new.max_occupancy, cell_capacity=new.cell_capacity)
    label = f"LJ N = 8,000 ({new.cell_capacity} slots per cell, {new.max_occupancy} columns)"
    return label, st.positions, old, new, lambda nb: nb.idx


def villin_arms(old_ffnb, kernels=False):
    import openmm.app as app

    import dmd.openmm_system.assembly as assembly
    from dmd.openmm_system import system_from_pdb

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    made, ours = {}, assembly.pair_neighbor_list

    def both(*a, **k):  # the old builder from the same arguments (exclusions included) as this checkout's
        if kernels:
            made["args"] = (a, k)
            made["old"] = ours(*a, **k, rebuild_kernel="xla")
            return ours(*a, **k, rebuild_kernel="numba")
        made["old"] = old_ffnb.pair_neighbor_list(*a, **k)
        return ours(*a, **k)

    assembly.pair_neighbor_list = both
    try:
        system = system_from_pdb(pdb, dtype=jnp.float32, skin=0.131, **kw)
    finally:
        assembly.pair_neighbor_list = ours
    pos = jnp.asarray(system.positions)
    new = system.neighbor_fn.allocate(pos)
    old = made["old"].allocate(pos)
    label = f"villin + water (skin 0.131 nm, {new.max_occupancy} columns, half list)"
    cases = [(label, pos, old, new, lambda nb: nb.idx)]
    if kernels:  # the same atoms in a triclinic box: b and c tilted by a fifth of a (reduced form)
        (n, box, *rest), k = made["args"]
        a = float(np.asarray(box).reshape(-1)[0])
        tri = np.diag(np.diag(np.asarray(box)) if np.ndim(box) == 2 else np.asarray(box))
        tri[1, 0], tri[2, 0], tri[2, 1] = 0.2 * a, -0.2 * a, 0.15 * a
        arms = [ours(n, tri, *rest, **k, rebuild_kernel=kern).allocate(pos) for kern in ("xla", "numba")]
        cases.append((f"villin + water in a triclinic box ({arms[1].max_occupancy} columns)", pos, *arms, cases[0][-1]))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commit", default="d2b5c65", help="the older commit (arm A)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=9, help="compiled calls per arm and round")
    ap.add_argument("--only", choices=["lj", "villin"], default=None)
    ap.add_argument("--kernels", action="store_true", help="A = XLA rebuild, B = numba rebuild (villin + water)")
    args = ap.parse_args()
    if args.kernels:
        args.only = "villin"
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    old_nb = _old_module(args.commit, "dmd/neighbors.py", "_old_neighbors")
    old_ffnb = _old_module(
        args.commit,
        "dmd/forces/neighbors.py",
        "_old_ff_neighbors",
        replace=[("from dmd.neighbors import", "from _old_neighbors import")],
    )
    cases = []
    if args.only in (None, "lj"):
        cases.append(lj_arms(old_nb))
    if args.only in (None, "villin"):
        cases += villin_arms(old_ffnb, args.kernels)
    arm_a = "the XLA rebuild" if args.kernels else f"commit {args.commit}"
    arm_b = "the numba rebuild" if args.kernels else "this checkout"
    print(f"{arm_a} (A) against {arm_b} (B); jax {jax.__version__}, {os.cpu_count()} CPUs")
    for label, pos, old, new, idx_of in cases:
        moved = pos + 0.3  # past any skin: update rebuilds
        upd = jax.jit(lambda y, nb: nb.update(y))
        a, b = idx_of(upd(moved, old)), idx_of(upd(moved, new))
        same = a.shape == b.shape and bool(jnp.all(a == b))
        print(f"{label}: lists equal element for element: {same}")
        if not same:
            pa = {tuple(sorted(p)) for p in _pairs(a)}
            pb = {tuple(sorted(p)) for p in _pairs(b)}
            print(f"  pair sets equal: {pa == pb} ({len(pa)} vs {len(pb)} pairs)")
        for r in range(args.rounds):
            for arm, nb in (("A", old), ("B", new)):
                t = _time(upd, (moved, nb), args.repeat)
                print(
                    f"  round {r} {arm}: wall min {t[0]:6.1f} med {t[1]:6.1f} ms | CPU min {t[2]:6.1f} med {t[3]:6.1f} "
                    f"ms | load {'/'.join(f'{x:.1f}' for x in os.getloadavg())}",
                    flush=True,
                )


def _pairs(idx):
    idx = np.asarray(idx)
    n = idx.shape[0]
    i, k = np.nonzero(idx < n)
    return zip(i.tolist(), idx[i, k].tolist(), strict=True)


if __name__ == "__main__":
    main()
