"""Cluster-pair real-space kernels (the layouts of GROMACS and OpenMM's CPU platform), measured on XLA:CPU.

A prototype, not used by the engine: docs/engine.md ("Cluster-pair kernels") has the measurements; it stays for
``benchmarks/bench_cluster_pairs.py`` and a later attempt. Atoms are put in spatial order (columns of the x-y plane,
sorted by z within a column, each column padded to whole clusters), cut into clusters of ``CLUSTER`` consecutive
slots, and each cluster I lists the clusters J whose bounding boxes come within r_c + skin of its own
(:func:`build_cluster_list`). Three kernels over that list, each the real-space sum of
:func:`dmd.forces.nonbonded.pair_energy_full` over a half list (non-excluded pairs inside r_c, each once; a mask
drops padding slots, the lower triangle of I = J tiles and excluded pairs):

- :func:`cluster_pair_terms`: per I a row of dense ``c × c`` tiles (one 48-float gather and one 24-float scatter
  per tile instead of one per pair);
- :func:`flat_tile_terms`: the same tiles as one flat list (no row padding);
- :func:`group_terms`: OpenMM's layout, a cluster against single atoms j within r_c + skin of its box, 8 to a group
  (:func:`atom_groups`).

PME without a switch and orthorhombic boxes only; energy as the present kernel (ke q_i q_j erfc(α r)/r +
4 ε_ij ((σ_ij/r)¹² − (σ_ij/r)⁶), Lorentz-Berthelot from per-atom σ and √ε).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dmd.compaction import compact_rows
from dmd.forces.nonbonded import apart, erfc_and_gaussian
from dmd.forces.pme import ONE_4PI_EPS0

CLUSTER = 8
_FIELDS = 6  # x, y, z, q, σ, √ε


def column_grid(n_atoms: int, box, cluster: int = CLUSTER) -> tuple[int, int]:
    """(nx, ny) columns of the x-y plane whose cross-section is a cluster's: a = (cluster / ρ)^(1/3)."""
    box = np.asarray(box, np.float64)
    a = (cluster * float(np.prod(box)) / n_atoms) ** (1.0 / 3.0)
    return max(1, int(box[0] // a)), max(1, int(box[1] // a))


def n_slots(n_atoms: int, columns: tuple[int, int], cluster: int = CLUSTER) -> int:
    """Slots of the sorted order: every column padded to whole clusters holds at most N + (cluster − 1) columns."""
    s = n_atoms + (cluster - 1) * columns[0] * columns[1]
    return -(-s // cluster) * cluster


def _min_image(d, length):
    return d - length * jnp.round(d / length)


def sort_slots(pos, box, columns, slots: int, cluster: int = CLUSTER):
    """``(slot_atom [S], atom_slot [N])``: atoms sorted by column (x-y grid) then z, columns padded to whole
    clusters; padding slots hold N."""
    n = pos.shape[0]
    nx, ny = columns
    xw = pos - jnp.floor(pos / box) * box
    ix = jnp.clip(jnp.floor(xw[:, 0] / box[0] * nx).astype(jnp.int32), 0, nx - 1)
    iy = jnp.clip(jnp.floor(xw[:, 1] / box[1] * ny).astype(jnp.int32), 0, ny - 1)
    col = ix * ny + iy
    order = jnp.lexsort((xw[:, 2], col)).astype(jnp.int32)
    counts = jnp.bincount(col, length=nx * ny).astype(jnp.int32)
    start_sorted = jnp.cumsum(counts) - counts
    padded = (counts + cluster - 1) // cluster * cluster
    start_slot = jnp.cumsum(padded) - padded
    col_sorted = col[order]
    slot = start_slot[col_sorted] + jnp.arange(n, dtype=jnp.int32) - start_sorted[col_sorted]
    atom_slot = jnp.zeros(n, jnp.int32).at[order].set(slot)
    slot_atom = jnp.full(slots, n, jnp.int32).at[slot].set(order)
    return slot_atom, atom_slot


def build_cluster_list(pos, box, rlist: float, columns, slots: int, capacity: int, excluded, cluster: int = CLUSTER):
    """The cluster-pair list at ``pos``: ``(slot_atom, atom_slot, cj, allowed, max_count, cen, half)``.

    ``cj [C, M]``: for each I the clusters J whose bounding boxes (each cluster made whole around its first atom)
    are closer than ``rlist`` (minimum image of the centres), padded with C: I itself, and each other pair in one
    row by the parity rule (I < J when I + J is even, else I > J: rows of even length). ``allowed [C, M, c, c]``
    at ``[I, m, a, b]``: slot a of I and slot b of ``cj[I, m]`` are both atoms, a < b on the diagonal tile, and
    not an excluded pair. ``max_count`` > ``capacity``: the list overflowed (rows truncated). ``excluded``:
    ``[E, 2]`` atom pairs (numpy, static). Also returns the
    clusters' box centres and half widths ``[C, 3]`` (for :func:`atom_groups`).
    """
    n = pos.shape[0]
    c = slots // cluster
    slot_atom, atom_slot = sort_slots(pos, box, columns, slots, cluster)
    lanes = (slot_atom < n).reshape(c, cluster)
    xs = pos[jnp.minimum(slot_atom, n - 1)].reshape(c, cluster, 3)
    ref = xs[:, :1, :]
    local = ref + _min_image(xs - ref, box)
    big = jnp.asarray(1e30, pos.dtype)
    lo = jnp.min(jnp.where(lanes[..., None], local, big), axis=1)
    hi = jnp.max(jnp.where(lanes[..., None], local, -big), axis=1)
    occupied = jnp.any(lanes, axis=1)
    cen, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    cen = jnp.where(occupied[:, None], cen, 0.0)
    half = jnp.where(occupied[:, None], half, 0.0)
    dc = _min_image(cen[None, :, :] - cen[:, None, :], box)
    gap = jnp.maximum(jnp.abs(dc) - half[:, None, :] - half[None, :, :], 0.0)
    ids = jnp.arange(c, dtype=jnp.int32)
    lower, upper_c = ids[None, :] < ids[:, None], ids[None, :] > ids[:, None]
    odd = (ids[None, :] + ids[:, None]) % 2 == 1
    mine = (ids[None, :] == ids[:, None]) | (upper_c & ~odd) | (lower & odd)
    near = (jnp.sum(gap * gap, axis=-1) < rlist * rlist) & mine
    near = near & occupied[:, None] & occupied[None, :]
    cj, max_count = compact_rows(near, jnp.broadcast_to(ids[None, :], (c, c)), capacity, c)
    lanes_p = jnp.concatenate([lanes, jnp.zeros((1, cluster), bool)])
    upper = jnp.arange(cluster)[:, None] < jnp.arange(cluster)[None, :]
    allowed = lanes[:, None, :, None] & lanes_p[cj][:, :, None, :]
    allowed = allowed & ((cj != ids[:, None])[..., None, None] | upper)
    if len(excluded):
        s0 = atom_slot[jnp.asarray(excluded[:, 0])]
        s1 = atom_slot[jnp.asarray(excluded[:, 1])]
        c0, c1 = s0 // cluster, s1 // cluster
        # the tile's row: the cluster the parity rule gives (the lower slot first on a diagonal tile)
        first = jnp.where(c0 == c1, s0 < s1, ((c0 + c1) % 2 == 0) == (c0 < c1))
        a, b = jnp.where(first, s0, s1), jnp.where(first, s1, s0)
        ci, cjx = a // cluster, b // cluster
        hit = cj[ci] == cjx[:, None]
        k = jnp.where(jnp.any(hit, axis=1), jnp.argmax(hit, axis=1), capacity)
        allowed = allowed.at[ci, k, a % cluster, b % cluster].set(False, mode="drop")
    return slot_atom, atom_slot, cj, allowed, max_count, cen, half


def _tile_d(box, ti, tj):
    """x_j − x_i per entry, three ``[B, M, c, c]`` arrays; ``box`` None: ``tj`` already holds the tile's image."""
    d = [tj[:, :, None, k, :] - ti[:, None, k, :, None] for k in range(3)]
    return d if box is None else [_min_image(dk, box[k]) for k, dk in enumerate(d)]


def _tile_values(kind, rc, alpha, what, box, ti, tj, allowed):
    """Per-entry value of the tiles of a block: ``ti [B, 6, c]`` (fields × slots of I), ``tj [B, M, 6, c]``,
    ``allowed [B, M, c, c]``; ``what``: "energy" (the block's summed energy) or "weight" (e'(r)/r, ``[B, M, c, c]``)."""
    if kind != "PME":
        raise NotImplementedError("the cluster-pair prototype does PME without a switch only")
    d = _tile_d(box, ti, tj)
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    inside = allowed & (r2 < rc * rc)
    r = jnp.sqrt(jnp.where(inside, r2, 1.0))
    inv_r = 1.0 / r
    sig = 0.5 * (ti[:, None, 4, :, None] + tj[:, :, None, 4, :])
    eps = ti[:, None, 5, :, None] * tj[:, :, None, 5, :]
    qq = ONE_4PI_EPS0 * ti[:, None, 3, :, None] * tj[:, :, None, 3, :]
    s2 = (sig * inv_r) ** 2
    s6 = s2 * s2 * s2
    erfc, gauss = erfc_and_gaussian(alpha * r)
    f = erfc * inv_r
    if what == "energy":
        return jnp.sum(jnp.where(inside, qq * f + 4.0 * eps * (s6 * s6 - s6), 0.0))
    df = -(f + (2.0 * alpha / math.sqrt(math.pi)) * gauss) * inv_r
    de_dr = qq * df + eps * 4.0 * (-12.0 * s6 * s6 + 6.0 * s6) * inv_r
    return jnp.where(inside, de_dr * inv_r, 0.0)


def _sums(xs, axes):
    """Sums of several arrays over ``axes`` as one variadic reduction (as :func:`dmd.forces.nonbonded` does)."""
    zeros = tuple(jnp.zeros((), x.dtype) for x in xs)
    return jax.lax.reduce(tuple(xs), zeros, lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True)), axes)


def _tables(pos, box, q, sig, seps, slot_atom, cl, whole):
    """``(t [C + 1, 6, c], ts [S + 1, 6], ref [C + 1, 3])``: per cluster the fields × slots (cluster C: padding),
    per slot the packed row, and each cluster's first atom; ``whole``: cluster coordinates made whole around it."""
    s = slot_atom.shape[0]
    c = s // cl
    tab = jnp.concatenate([pos, q[:, None], sig[:, None], seps[:, None]], axis=1).astype(pos.dtype)
    ts = jnp.concatenate([tab, jnp.zeros((1, _FIELDS), pos.dtype)])[slot_atom]
    t = ts.reshape(c, cl, _FIELDS)
    ref = t[:, 0, :3]
    if whole:
        t = t.at[:, :, :3].set(ref[:, None, :] + _min_image(t[:, :, :3] - ref[:, None, :], box))
    t = jnp.concatenate([t.transpose(0, 2, 1), jnp.zeros((1, _FIELDS, cl), pos.dtype)])
    ref = jnp.concatenate([ref, jnp.zeros((1, 3), pos.dtype)])
    return t, jnp.concatenate([ts, jnp.zeros((1, _FIELDS), pos.dtype)]), ref


def _blocks(x, block, fill):
    """``x [T, ...]`` padded with ``fill`` to whole blocks: ``[T / block, block, ...]``."""
    pad = -x.shape[0] % block
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1), constant_values=fill)
    return x.reshape((-1, block) + x.shape[1:])


def _to_atoms(acc_c, acc_s, atom_slot):
    """Per-cluster ``[C + 1, 3, c]`` and per-slot ``[S + 1, 3]`` accumulators to ``[N, 3]`` in atom order."""
    c1, _, cl = acc_c.shape
    g = acc_c[: c1 - 1].transpose(0, 2, 1).reshape(-1, 3) + acc_s[: (c1 - 1) * cl]
    return g[atom_slot]


def cluster_pair_terms(
    kind, rc, alpha, pos, box, q, sig, seps, slot_atom, atom_slot, cj, allowed, block=8, grad=True, tile_shift=False
):
    """Real-space energy (and ∂E/∂x ``[N, 3]`` if ``grad``) over the rows of a cluster-pair list
    (:func:`build_cluster_list`): blocks of ``block`` I clusters, each against its row of J clusters.

    ``tile_shift``: each cluster made whole around its first atom and one lattice shift per tile (the minimum image
    of the first atoms' difference) instead of a minimum image per entry: exact for every pair inside r_c while
    the box is longer than 2 (r_c + 2 × the widest cluster) along each axis (a bound, not checked here; villin +
    water misses it, 5.3 against 3.9 nm, yet the forces agree: the bound is loose)."""
    c, m = cj.shape
    cl = allowed.shape[-1]
    box = jnp.asarray(box, pos.dtype)
    t, ts, ref = _tables(pos, box, q, sig, seps, slot_atom, cl, tile_shift)
    rows = _blocks(jnp.arange(c, dtype=jnp.int32), block, c)
    values = functools.partial(_tile_values, kind, rc, alpha)

    def body(carry, args):
        e_sum, acc = carry
        r, j, al = args
        ti, tj = t[r], t[j]
        bx = box
        if tile_shift:
            raw = ref[j] - ref[r][:, None, :]
            tj = tj.at[:, :, :3, :].add((_min_image(raw, box) - raw)[..., None])
            bx = None
        e = apart(functools.partial(values, "energy", bx), ti, tj, al)
        if not grad:
            return (e_sum + e, acc), None
        w = apart(functools.partial(values, "weight", bx), ti, tj, al)
        wd = [w * dk for dk in _tile_d(bx, ti, tj)]
        fi = jnp.stack(_sums(wd, (1, 3)), axis=1)  # [B, 3, c]: Σ_{m, b} w d
        fj = jnp.stack(_sums(wd, (2,)), axis=2)  # [B, M, 3, c]: Σ_a w d
        acc = acc.at[r].add(-fi, mode="drop").at[j.reshape(-1)].add(fj.reshape(-1, 3, cl), mode="drop")
        return (e_sum + e, acc), None

    acc0 = jnp.zeros((c + 1, 3, cl), pos.dtype)
    args = (rows, _blocks(cj, block, c), _blocks(allowed, block, False))
    (energy, acc), _ = jax.lax.scan(body, (jnp.zeros((), pos.dtype), acc0), args)
    if not grad:
        return energy, None
    return energy, _to_atoms(acc, jnp.zeros(ts.shape[:1] + (3,), pos.dtype), atom_slot)


def flat_tiles(cj, allowed, capacity: int):
    """The rows as one flat tile list without row padding: ``(ti [T], tj [T], allowed [T, c, c], n_tiles)``, padded
    with cluster C (every entry masked) to ``capacity`` tiles."""
    c, m = cj.shape
    listed = (cj < c).reshape(-1)
    (k,) = jnp.nonzero(listed, size=capacity, fill_value=c * m)
    rows = jnp.concatenate([jnp.repeat(jnp.arange(c, dtype=jnp.int32), m), jnp.full((1,), c, jnp.int32)])
    cols = jnp.concatenate([cj.reshape(-1), jnp.full((1,), c, jnp.int32)])
    al = jnp.concatenate([allowed.reshape((c * m,) + allowed.shape[2:]), jnp.zeros((1,) + allowed.shape[2:], bool)])
    return rows[k], cols[k], al[k], jnp.sum(listed)


def flat_tile_terms(
    kind, rc, alpha, pos, box, q, sig, seps, slot_atom, atom_slot, ti_, tj_, allowed, block=1024, energy=True
):
    """``(energy or 0, ∂E/∂x [N, 3])`` over a flat tile list (:func:`flat_tiles`), tile shifts as
    :func:`cluster_pair_terms`: blocks of ``block`` tiles, each tile's two sides scatter-added to its two clusters."""
    cl = allowed.shape[-1]
    c = slot_atom.shape[0] // cl
    box = jnp.asarray(box, pos.dtype)
    t, ts, ref = _tables(pos, box, q, sig, seps, slot_atom, cl, True)
    values = functools.partial(_tile_values, kind, rc, alpha)

    def body(carry, args):
        e_sum, acc = carry
        r, j, al = args  # [B], [B], [B, c, c]
        ti, tj = t[r], t[j][:, None]  # [B, 6, c], [B, 1, 6, c]
        raw = ref[j] - ref[r]
        tj = tj.at[:, 0, :3, :].add((_min_image(raw, box) - raw)[..., None])
        if energy:
            e_sum = e_sum + apart(functools.partial(values, "energy", None), ti, tj, al[:, None])
        w = apart(functools.partial(values, "weight", None), ti, tj, al[:, None])
        wd = [w * dk for dk in _tile_d(None, ti, tj)]
        fi = jnp.stack(_sums(wd, (1, 3)), axis=1)  # [B, 3, c]
        fj = jnp.stack(_sums(wd, (1, 2)), axis=1)  # [B, 3, c]
        return (e_sum, acc.at[r].add(-fi, mode="drop").at[j].add(fj, mode="drop")), None

    args = (_blocks(ti_, block, c), _blocks(tj_, block, c), _blocks(allowed, block, False))
    (e, acc), _ = jax.lax.scan(body, (jnp.zeros((), pos.dtype), jnp.zeros((c + 1, 3, cl), pos.dtype)), args)
    return e, _to_atoms(acc, jnp.zeros(ts.shape[:1] + (3,), pos.dtype), atom_slot)


def atom_groups(pos, box, rlist: float, slot_atom, cj, allowed, cen, half, row_capacity: int, capacity: int):
    """OpenMM's layout from a cluster list: each cluster I against single atoms j (those of its listed clusters
    whose distance to I's bounding box is under ``rlist`` and that meet an allowed lane), packed 8 to a group.

    Returns ``(gi [G], gj [G, c] slots (padding S), bits [G, c] uint8, groups needed, longest row)``: bit b of
    ``bits[g, a]`` allows lane a of cluster ``gi[g]`` with atom ``gj[g, b]``. ``row_capacity`` (a multiple of c):
    atoms per cluster row before packing (overflow when the longest row is longer); ``capacity``: groups.
    """
    c, m = cj.shape
    cl = allowed.shape[-1]
    s = slot_atom.shape[0]
    n = pos.shape[0]
    slots = (cj[..., None] * cl + jnp.arange(cl, dtype=jnp.int32)).reshape(c, m * cl)  # ≥ S: padding
    xs = jnp.concatenate([pos, jnp.zeros((1, 3), pos.dtype)])[jnp.concatenate([slot_atom, jnp.full((cl,), n)])]
    gap = jnp.maximum(jnp.abs(_min_image(xs[slots] - cen[:, None, :], box)) - half[:, None, :], 0.0)
    cols = jnp.any(allowed, axis=2).reshape(c, m * cl)  # some lane of I may pair with this j
    keep = (jnp.sum(gap * gap, axis=-1) < rlist * rlist) & cols & (slots < s)
    cand = jnp.broadcast_to(jnp.arange(m * cl, dtype=jnp.int32), (c, m * cl))
    packed, longest = compact_rows(keep, cand, row_capacity, m * cl)
    g = row_capacity // cl
    packed = packed.reshape(c * g, cl)
    used = packed[:, 0] < m * cl
    (k,) = jnp.nonzero(used, size=capacity, fill_value=c * g)
    packed = jnp.concatenate([packed, jnp.full((1, cl), m * cl, jnp.int32)])[k]  # [G, c] candidates
    gi = jnp.concatenate([jnp.repeat(jnp.arange(c, dtype=jnp.int32), g), jnp.full((1,), c, jnp.int32)])[k]
    ok = packed < m * cl
    pc = jnp.minimum(packed, m * cl - 1)
    gic = jnp.minimum(gi, c - 1)
    gj = jnp.where(ok, slots[gic[:, None], pc], s)
    al = ok[:, None, :] & allowed[gic[:, None], pc // cl, :, pc % cl].transpose(0, 2, 1)  # [G, c (i), c (j)]
    bits = jnp.sum(al.astype(jnp.uint8) << jnp.arange(cl, dtype=jnp.uint8), axis=2, dtype=jnp.uint8)
    return gi, gj, bits, jnp.sum(used), longest


def group_terms(kind, rc, alpha, pos, box, q, sig, seps, slot_atom, atom_slot, gi, gj, bits, block=1024, energy=True):
    """Real-space ``(energy or 0, ∂E/∂x [N, 3])`` over cluster × atom groups (:func:`atom_groups`): per group the
    cluster's rows are one gather, its eight atoms one gather each, placed at their image nearest the cluster's
    first atom (exact while the box is longer than 2 (r_c + the widest cluster + the skin))."""
    cl = bits.shape[-1]
    s = slot_atom.shape[0]
    c = s // cl
    box = jnp.asarray(box, pos.dtype)
    t, ts, ref = _tables(pos, box, q, sig, seps, slot_atom, cl, True)
    values = functools.partial(_tile_values, kind, rc, alpha)
    lane = jnp.arange(cl, dtype=jnp.uint8)

    def body(carry, args):
        e_sum, acc_c, acc_s = carry
        r, j, b = args  # [B], [B, c], [B, c]
        al = ((b[:, None, :, None] >> lane) & 1) == 1  # [B, 1, c, c]
        ti = t[r]  # [B, 6, c]
        r0 = ref[r][:, :, None]
        tj = ts[j].transpose(0, 2, 1)
        tj = jnp.concatenate([r0 + _min_image(tj[:, :3] - r0, box[:, None]), tj[:, 3:]], axis=1)[:, None]
        if energy:
            e_sum = e_sum + apart(functools.partial(values, "energy", None), ti, tj, al)
        w = apart(functools.partial(values, "weight", None), ti, tj, al)
        wd = [w * dk for dk in _tile_d(None, ti, tj)]
        fi = jnp.stack(_sums(wd, (1, 3)), axis=1)  # [B, 3, c]
        fj = jnp.stack(_sums(wd, (1, 2)), axis=-1)  # [B, c, 3]
        acc_c = acc_c.at[r].add(-fi, mode="drop")
        return (e_sum, acc_c, acc_s.at[j.reshape(-1)].add(fj.reshape(-1, 3), mode="drop")), None

    carry0 = (jnp.zeros((), pos.dtype), jnp.zeros((c + 1, 3, cl), pos.dtype), jnp.zeros((s + 1, 3), pos.dtype))
    args = (_blocks(gi, block, c), _blocks(gj, block, s), _blocks(bits, block, 0))
    (e, acc_c, acc_s), _ = jax.lax.scan(body, carry0, args)
    return e, _to_atoms(acc_c, acc_s, atom_slot)
