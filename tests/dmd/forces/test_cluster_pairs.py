"""The cluster-pair prototype kernels (dmd.forces.cluster_pairs) give the present half-list kernel's real-space PME
energy and forces in float64 (summation order only): tile rows (per-entry and per-tile images), flat tiles and
cluster × atom groups, with exclusions, on a box of rigid-geometry waters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dmd.forces import cluster_pairs as cp
from dmd.forces.neighbors import pair_neighbor_list
from dmd.forces.nonbonded import pair_energy_full

RC, SKIN, ALPHA = 0.6, 0.1, 3.5


def _waters(k=9, spacing=0.31, seed=0):
    """k³ TIP3P-geometry waters on a jittered lattice, randomly oriented: positions, box, q, σ, √ε, exclusions."""
    rng = np.random.default_rng(seed)
    body = np.array([[0.0, 0.0, 0.0], [0.09572, 0.0, 0.0], [-0.02399, 0.09266, 0.0]])
    centres = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3) * spacing
    pos = []
    for c in centres:
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        pos.append(c + 0.02 * rng.normal(size=3) + body @ rot.T)
    pos = np.concatenate(pos)
    n = len(pos)
    q = np.tile([-0.834, 0.417, 0.417], n // 3)
    sig = np.tile([0.315061, 0.0, 0.0], n // 3)
    seps = np.sqrt(np.tile([0.636386, 0.0, 0.0], n // 3))
    excluded = np.array([[3 * w + a, 3 * w + b] for w in range(n // 3) for a, b in ((0, 1), (0, 2), (1, 2))])
    return pos, np.full(3, k * spacing), q, sig, seps, excluded


def test_cluster_kernels_equal_the_half_list_kernel_in_float64():
    pos, box, q, sig, seps, excluded = _waters()
    n = len(pos)
    x, b = jnp.asarray(pos), jnp.asarray(box)
    qj, sj, ej = (jnp.asarray(v) for v in (q, sig, seps))
    nb = pair_neighbor_list(n, box, RC, skin=SKIN, excluded_pairs=excluded, full=False).allocate(x)
    pair = pair_energy_full("PME", RC, alpha=ALPHA, half=True)
    e0, g0 = jax.jit(jax.value_and_grad(lambda y: pair(y, b, nb.idx, qj, sj, ej)))(x)
    scale = float(jnp.max(jnp.abs(g0)))

    columns = cp.column_grid(n, box)
    slots = cp.n_slots(n, columns)
    c = slots // cp.CLUSTER
    kw = dict(rlist=RC + SKIN, columns=columns, slots=slots, excluded=excluded)
    longest = int(jax.jit(functools.partial(cp.build_cluster_list, capacity=c, **kw))(x, b)[4])
    cl = jax.jit(functools.partial(cp.build_cluster_list, capacity=longest, **kw))(x, b)
    assert int(cl[4]) == longest  # no row truncated
    # groups (atoms at their image nearest the cluster's first atom) are exact while the box is longer than
    # 2 (r_c + the widest cluster); one shift per tile has no such guarantee here (2 (r_c + 2 × widest) = 3.6 nm):
    # its equality below is measured, not implied
    assert 2 * (RC + 2 * float(jnp.max(cl[6]))) < box.min()
    data = (x, b, qj, sj, ej)

    def kernel(fn, **kw):  # every array an argument (a captured one becomes a constant XLA folds slowly)
        return jax.jit(lambda d, lst: fn("PME", RC, ALPHA, *d, cl[0], cl[1], *lst, **kw))

    results = {}
    for shift in (False, True):
        results[f"rows, tile shift {shift}"] = kernel(cp.cluster_pair_terms, tile_shift=shift)(data, cl[2:4])
    n_tiles = int(jnp.sum(cl[2] < c))
    fl = jax.jit(cp.flat_tiles, static_argnums=2)(cl[2], cl[3], n_tiles + 5)
    assert int(fl[3]) == n_tiles
    results["flat tiles"] = kernel(cp.flat_tile_terms, block=64)(data, fl[:3])
    groups = jax.jit(lambda y, lst, rcap, cap: cp.atom_groups(y, b, RC + SKIN, *lst, rcap, cap), static_argnums=(2, 3))
    lst = (cl[0], cl[2], cl[3], cl[5], cl[6])
    cap = -(-int(groups(x, lst, cl[2].shape[1] * cp.CLUSTER, 1)[4]) // 8) * 8
    gr = groups(x, lst, cap, int(groups(x, lst, cap, 1)[3]) + 3)
    results["groups"] = kernel(cp.group_terms, block=64)(data, gr[:3])

    for name, (e, g) in results.items():
        assert abs(float(e - e0)) <= 1e-12 * abs(float(e0)), name
        # float64 summation order: 1e-12 of the largest force component (a kernel that kept one of the 2,187
        # excluded pairs, an O-H at 0.096 nm, would be off by ~5,000 kJ/mol/nm there)
        assert float(jnp.max(jnp.abs(g - g0))) <= 1e-12 * scale, name
