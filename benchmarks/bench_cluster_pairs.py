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
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from bench_rebuild import _time


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


def reference(s, idx):
    """float64 numpy real-space energy over a half list ``idx`` (padding N) and the number of its pairs inside r_c."""
    from scipy.special import erfc

    from dmd.forces.pme import ONE_4PI_EPS0

    pos, box, n = s["pos"], s["box"], len(s["pos"])
    total, inside_pairs = 0.0, 0
    for i0 in range(0, n, 1024):
        rows = np.arange(i0, min(n, i0 + 1024))
        j = idx[rows]
        ok = j < n
        jc = np.where(ok, j, 0)
        d = pos[jc] - pos[rows][:, None]
        d -= box * np.round(d / box)
        r = np.sqrt(np.sum(d * d, axis=-1))
        inside = ok & (r < s["rc"])
        inside_pairs += int(np.sum(inside))
        r = np.where(inside, r, 1.0)
        qq = ONE_4PI_EPS0 * s["q"][rows][:, None] * s["q"][jc]
        sg = 0.5 * (s["sig"][rows][:, None] + s["sig"][jc])
        ep = s["seps"][rows][:, None] * s["seps"][jc]
        s6 = (sg / r) ** 6
        e = qq * erfc(s["alpha"] * r) / r + 4 * ep * (s6 * s6 - s6)
        total += float(np.sum(np.where(inside, e, 0.0)))
    return total, inside_pairs


def _up(x, k):
    return -(-int(x) // k) * k


def cluster_lists(s, pos, box, rlist, hr):
    """The jitted cluster-list builds (rows, + flat tiles, + groups), capacities ``hr`` × a probe's counts at
    ``pos``, and the three lists there."""
    from dmd.forces import cluster_pairs as cp

    n = len(s["pos"])
    columns = cp.column_grid(n, s["box"])
    slots = cp.n_slots(n, columns)
    c = slots // cp.CLUSTER
    kw = dict(rlist=rlist, columns=columns, slots=slots, excluded=s["excluded"])
    longest = int(jax.jit(functools.partial(cp.build_cluster_list, capacity=c, **kw))(pos, box)[4])
    build = jax.jit(functools.partial(cp.build_cluster_list, capacity=max(int(hr * longest) + 1, longest + 4), **kw))
    cl = build(pos, box)
    width = float(2 * jnp.max(cl[6]))
    n_tiles = int(jnp.sum(cl[2] < c))
    flat = jax.jit(lambda cj, al: cp.flat_tiles(cj, al, _up(hr * n_tiles, 1024)))

    def groups_at(row_capacity, capacity):
        return jax.jit(
            lambda y, cl: cp.atom_groups(y, box, rlist, cl[0], cl[2], cl[3], cl[5], cl[6], row_capacity, capacity)
        )

    m8 = cl[2].shape[1] * cp.CLUSTER
    gcap = _up(hr * int(groups_at(_up(m8, 8), 1)(pos, cl)[4]), 8)
    groups = groups_at(gcap, _up(hr * int(groups_at(gcap, 1)(pos, cl)[3]), 1024))
    rc, skin = s["rc"], rlist - s["rc"]
    print(
        f"columns {columns}, slots {slots} ({slots - n} padding), clusters {c}, longest cluster row {longest}, "
        f"widest cluster {width:.3f} nm; box {min(s['box']):.2f} nm against the bounds for group images "
        f"2 (r_c + w + skin) = {2 * (rc + width + skin):.2f} and tile shifts 2 (r_c + 2 (w + skin)) = "
        f"{2 * (rc + 2 * (width + skin)):.2f} nm"
    )
    return build, flat, groups, cl, flat(cl[2], cl[3]), groups(pos, cl)


def build_arms(args):
    """The system, the present list and the cluster lists (capacities from a probe at the same positions); returns
    ``(s, nb, arms {name: (jitted fn, args)}, entries {layout: (computed, listed)})``."""
    from dmd.forces import cluster_pairs as cp
    from dmd.forces.neighbors import pair_neighbor_list
    from dmd.forces.nonbonded import pair_energy_full

    s = setup(args.skin)
    n, hr = len(s["pos"]), args.headroom
    f32 = jnp.float32
    pos, box = jnp.asarray(s["pos"], f32), jnp.asarray(s["box"], f32)
    q, sig, seps = (jnp.asarray(s[k], f32) for k in ("q", "sig", "seps"))
    rc, alpha, rlist = s["rc"], s["alpha"], s["rc"] + args.skin
    print(f"villin + water: N = {n}, box {s['box']} nm, r_c {rc}, skin {args.skin}, alpha {alpha:.4f} | {_load()}")

    # present: half list at 1.1x capacity, as OpenMM systems allocate
    nfn = pair_neighbor_list(
        n,
        s["box"],
        rc,
        skin=args.skin,
        excluded_pairs=s["excluded"],
        full=False,
        occupancy_multiplier=1.1,
        min_headroom=16,
    )
    nb = nfn.allocate(pos)
    pair = pair_energy_full("PME", rc, alpha=alpha, half=True)
    present_vg = jax.jit(jax.value_and_grad(lambda y, idx: pair(y, box, idx, q, sig, seps)))
    present_g = jax.jit(jax.grad(lambda y, idx: pair(y, box, idx, q, sig, seps)))

    build, flat, groups, cl, fl, gr = cluster_lists(s, pos, box, rlist, hr)
    c = cl[2].shape[0]
    n_tiles = int(jnp.sum(cl[2] < c))

    def rows_fn(shift):
        return jax.jit(
            lambda y, cl: cp.cluster_pair_terms(
                "PME", rc, alpha, y, box, q, sig, seps, *cl[:4], block=16, tile_shift=shift
            )
        )

    def on_list(fn, **kw):  # a kernel over a flat list (tiles or groups) of the cluster order cl[0], cl[1]
        return jax.jit(lambda y, lst: fn("PME", rc, alpha, y, box, q, sig, seps, cl[0], cl[1], *lst[:3], **kw))

    arms = {
        "present half list, value_and_grad": (present_vg, (pos, nb.idx)),
        "present half list, grad": (present_g, (pos, nb.idx)),
        "8x8 tile rows, value+grad": (rows_fn(False), (pos, cl)),
        "8x8 tile rows (tile shift), value+grad": (rows_fn(True), (pos, cl)),
        "8x8 flat tiles, value+grad": (on_list(cp.flat_tile_terms), (pos, fl)),
        "8x8 flat tiles, grad": (on_list(cp.flat_tile_terms, energy=False), (pos, fl)),
        "8 x 8-atom groups, value+grad": (on_list(cp.group_terms), (pos, gr)),
        "8 x 8-atom groups, grad": (on_list(cp.group_terms, energy=False), (pos, gr)),
        "present rebuild (cell list)": (jax.jit(lambda y, nb: nb.update(y + 0.3)), (pos, nb)),
        "cluster-list build": (build, (pos, box)),
        "cluster-list build + flat tiles": (jax.jit(lambda y: flat(*build(y, box)[2:4])), (pos,)),
        "cluster-list build + groups": (jax.jit(lambda y: groups(y, build(y, box))), (pos,)),
    }

    entries = {
        "present": (nb.idx.size, int(np.sum(np.asarray(nb.idx) < n))),
        "rows": (cl[2].size * 64, n_tiles * 64),
        "flat": (fl[0].size * 64, n_tiles * 64),
        "groups": (gr[0].size * 64, int(gr[3]) * 64),
    }
    return s, nb, arms, entries


def agreement(s, nb, arms, entries):
    """Energy against a float64 numpy sum, forces against the present kernel, and the fill of each layout."""
    e_ref, inside = reference(s, np.asarray(nb.idx))
    fn, a = arms["present half list, grad"]
    g0 = fn(*a)
    print(
        f"float64 numpy real-space energy {e_ref:.3f} kJ/mol; {inside} pairs inside r_c; max |F| "
        f"{float(jnp.max(jnp.abs(g0))):.1f} kJ/mol/nm"
    )
    for name, (fn, a) in arms.items():
        if "build" in name:
            continue
        out = fn(*a)
        e, g = out if isinstance(out, tuple) else (None, out)
        er = "" if name.endswith(", grad") else f"energy rel {abs(float(e) - e_ref) / abs(e_ref):.1e}, "
        layout = "rows" if "rows" in name else next(k for k in ("present", "groups", "flat") if k in name)
        comp, listed = entries[layout]
        print(
            f"  {name:40s} {er}max |dF| vs present {float(jnp.max(jnp.abs(g - g0))):.4f}; entries computed "
            f"{comp} (listed {listed}), fill {inside / comp:.3f} computed / {inside / listed:.3f} listed"
        )


def timing(arms, rounds, repeat):
    """CPU and wall ms of every arm, the arms interleaved round by round."""
    for r in range(rounds):
        for name, (fn, a) in arms.items():
            wall, _, cpu, cpu_med = _time(fn, a, repeat)
            print(
                f"  round {r} {name:40s} CPU {cpu:7.2f} / {cpu_med:7.2f} ms (min / median), wall min {wall:7.2f} | "
                f"{_load()}",
                flush=True,
            )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skin", type=float, default=0.131)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--headroom", type=float, default=1.1, help="list capacities over the probe's counts")
    args = ap.parse_args()
    s, nb, arms, entries = build_arms(args)
    agreement(s, nb, arms, entries)
    timing(arms, args.rounds, args.repeat)


if __name__ == "__main__":
    main()
