"""Cluster-pair (tile) kernel against the present half-list pair kernel, villin + water, in ONE process.

Villin + water (OpenMM's test.pdb, amber14 + TIP3P, PME 0.9 nm, float32, OpenMM's PME α), PDB positions. Both
kernels compute the real-space PME sum (non-excluded pairs inside r_c: ke q q erfc(α r)/r + LJ) and its gradient
w.r.t. positions: the present one (:func:`dmd.forces.nonbonded.pair_energy_full`, half list from
:func:`dmd.forces.neighbors.pair_neighbor_list`, 1.1× capacity as OpenMM systems allocate) by ``jax.grad``, the
cluster one (:mod:`dmd.forces.cluster_pairs`) directly. Prints the agreement (energy, max |Δ force|, also against a
float64 numpy reference of the energy), CPU / wall ms per evaluation A/B interleaved ``--rounds`` times, the tile
fill (entries inside r_c per listed tile entry) against the half list's (pairs inside r_c per listed column), and
one rebuild of each list. Load printed with every timing.

    python benchmarks/bench_cluster_pairs.py --skin 0.131 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def _load():
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def setup(skin, dtype=jnp.float32):
    import openmm as mm
    import openmm.app as app

    from dmd.openmm_system.loading import openmm_system_from_pdb
    from dmd.openmm_system.nonbonded_forces import convert_nonbonded, pme_parameters

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    omm, structure, _ = openmm_system_from_pdb(
        pdb, ["amber14-all.xml", "amber14/tip3p.xml"], "PME", 0.9, "HBonds", True
    )
    pos = np.asarray(structure.getPositions(asNumpy=True).value_in_unit(mm.unit.nanometer), np.float64)
    force = next(f for f in omm.getForces() if isinstance(f, mm.NonbondedForce))
    n = omm.getNumParticles()
    vectors = np.array([v.value_in_unit(mm.unit.nanometer) for v in omm.getDefaultPeriodicBoxVectors()])
    box = np.diag(vectors).copy()
    spec, params, _ = convert_nonbonded(force, n, None, [str(i) for i in range(n)], vectors)
    alpha, _ = pme_parameters(omm, force, pos)
    q = np.asarray(params["charge"], np.float64)
    sig = np.asarray(params["sigma"], np.float64)[spec.type_index]
    seps = np.sqrt(np.asarray(params["epsilon"], np.float64))[spec.type_index]
    return dict(pos=pos, box=box, q=q, sig=sig, seps=seps, excluded=spec.excluded, alpha=alpha, rc=spec.cutoff)


def reference_energy(s, idx):
    """float64 numpy real-space energy over a half list ``idx`` (padding N)."""
    from dmd.forces.pme import ONE_4PI_EPS0

    pos, box, n = s["pos"], s["box"], len(s["pos"])
    from scipy.special import erfc

    total = 0.0
    for i0 in range(0, n, 1024):
        rows = np.arange(i0, min(n, i0 + 1024))
        j = idx[rows]
        ok = j < n
        jc = np.where(ok, j, 0)
        d = pos[jc] - pos[rows][:, None]
        d -= box * np.round(d / box)
        r = np.sqrt(np.sum(d * d, axis=-1))
        inside = ok & (r < s["rc"])
        r = np.where(inside, r, 1.0)
        qq = ONE_4PI_EPS0 * s["q"][rows][:, None] * s["q"][jc]
        sg = 0.5 * (s["sig"][rows][:, None] + s["sig"][jc])
        ep = s["seps"][rows][:, None] * s["seps"][jc]
        s6 = (sg / r) ** 6
        e = qq * erfc(s["alpha"] * r) / r + 4 * ep * (s6 * s6 - s6)
        total += float(np.sum(np.where(inside, e, 0.0)))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skin", type=float, default=0.131)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--block", type=int, default=8, help="I clusters per block of the tile kernel")
    ap.add_argument("--headroom", type=float, default=1.1, help="cluster-list capacity over the longest row")
    args = ap.parse_args()

    from dmd.forces import cluster_pairs as cp
    from dmd.forces.neighbors import pair_neighbor_list
    from dmd.forces.nonbonded import pair_energy_full

    s = setup(args.skin)
    n = len(s["pos"])
    f32 = jnp.float32
    pos, box = jnp.asarray(s["pos"], f32), jnp.asarray(s["box"], f32)
    q, sig, seps = (jnp.asarray(s[k], f32) for k in ("q", "sig", "seps"))
    rc, alpha, rlist = s["rc"], s["alpha"], s["rc"] + args.skin
    print(f"villin + water: N = {n}, box {s['box']} nm, r_c {rc}, skin {args.skin}, alpha {alpha:.4f}")

    # present: half list at 1.1x capacity
    nfn = pair_neighbor_list(
        n, s["box"], rc, skin=args.skin, excluded_pairs=s["excluded"], full=False,
        occupancy_multiplier=1.1, min_headroom=16,
    )
    nb = nfn.allocate(pos)
    pair = pair_energy_full("PME", rc, alpha=alpha, half=True)
    present = jax.jit(jax.value_and_grad(lambda y, idx: pair(y, box, idx, q, sig, seps)))

    # cluster list
    columns = cp.column_grid(n, s["box"])
    slots = cp.n_slots(n, columns)
    c = slots // cp.CLUSTER
    probe = jax.jit(functools_partial(cp.build_cluster_list, rlist=rlist, columns=columns, slots=slots,
                                      capacity=c, excluded=s["excluded"]))
    longest = int(probe(pos, box)[4])
    cap = max(int(args.headroom * longest) + 1, longest + 4)
    build = jax.jit(functools_partial(cp.build_cluster_list, rlist=rlist, columns=columns, slots=slots,
                                      capacity=cap, excluded=s["excluded"]))
    cl = build(pos, box)
    print(f"columns {columns}, slots {slots} ({slots - n} padding), clusters {c}, longest cluster row {longest}, "
          f"capacity {cap}")

    def tiles(y, cl):
        return cp.cluster_pair_terms("PME", rc, alpha, y, box, q, sig, seps, *cl[:4], block=args.block)

    tile = jax.jit(tiles)

    # agreement
    e_a, g_a = present(pos, nb.idx)
    e_b, g_b = tile(pos, cl)
    e_ref = reference_energy(s, np.asarray(nb.idx))
    fmax = float(jnp.max(jnp.abs(g_a)))
    print(f"energy: present {float(e_a):.3f}, cluster {float(e_b):.3f}, float64 numpy {e_ref:.3f} kJ/mol; "
          f"rel present-cluster {abs(float(e_a) - float(e_b)) / abs(e_ref):.2e}, present-ref "
          f"{abs(float(e_a) - e_ref) / abs(e_ref):.2e}, cluster-ref {abs(float(e_b) - e_ref) / abs(e_ref):.2e}")
    print(f"forces: max |Δ| {float(jnp.max(jnp.abs(g_a - g_b))):.4f} of max |F| {fmax:.1f} kJ/mol/nm; "
          f"rms Δ {float(jnp.sqrt(jnp.mean((g_a - g_b) ** 2))):.2e}")

    # fill
    idx = np.asarray(nb.idx)
    cj, allowed = np.asarray(cl[2]), np.asarray(cl[3])
    inside_pairs = count_inside(s, idx)
    listed_present = idx.size
    tiles_listed = int(np.sum(cj < c))
    print(f"present half list: {idx.shape[1]} columns x {n} rows = {listed_present} entries, "
          f"{inside_pairs} pairs inside r_c: fill {inside_pairs / listed_present:.3f} "
          f"(of listed pairs {inside_pairs / np.sum(idx < n):.3f})")
    ent = cj.size * cp.CLUSTER**2
    print(f"cluster list: {tiles_listed} tiles listed of {cj.size} slots ({cj.shape[1]} per row), "
          f"{ent} entries computed, {int(allowed.sum())} allowed; fill {inside_pairs / ent:.3f} of computed, "
          f"{inside_pairs / (tiles_listed * cp.CLUSTER**2):.3f} of listed tiles")

    rebuild_present = jax.jit(lambda y, nb: nb.update(y + 0.3))
    for r in range(args.rounds):
        for name, fn, a in (("present pairs (value_and_grad)", present, (pos, nb.idx)),
                            ("cluster tiles (value and grad)", tile, (pos, cl)),
                            ("present rebuild", rebuild_present, (pos, nb)),
                            ("cluster-list build", build, (pos, box))):
            jax.block_until_ready(fn(*a))
            cpu, wall = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(fn(*a))
                wall.append((time.perf_counter() - t0) * 1e3)
                cpu.append((time.process_time() - c0) * 1e3)
            print(f"  round {r} {name:34s} CPU {min(cpu):7.2f} / {np.median(cpu):7.2f} ms (min / median), "
                  f"wall min {min(wall):7.2f} | {_load()}", flush=True)


def functools_partial(f, **kw):
    import functools

    return functools.partial(f, **kw)


def count_inside(s, idx):
    pos, box, n = s["pos"], s["box"], len(s["pos"])
    total = 0
    for i0 in range(0, n, 1024):
        rows = np.arange(i0, min(n, i0 + 1024))
        j = idx[rows]
        ok = j < n
        d = pos[np.where(ok, j, 0)] - pos[rows][:, None]
        d -= box * np.round(d / box)
        total += int(np.sum(ok & (np.sum(d * d, axis=-1) < s["rc"] ** 2)))
    return total


if __name__ == "__main__":
    main()
