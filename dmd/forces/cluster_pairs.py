"""Cluster-pair (tile) real-space kernel: the layout of OpenMM's CPU platform and GROMACS, measured on XLA:CPU.

Atoms are put in spatial order (columns of the box's x-y plane, sorted by z within a column, each column padded to
a whole number of clusters), cut into clusters of ``CLUSTER`` consecutive slots, and each cluster I lists the
clusters J (J = I, and each other pair in one row by the parity rule) whose bounding boxes come within r_c + skin of its own. A cluster pair is one dense
``CLUSTER × CLUSTER`` tile; a mask per tile drops padding slots, the lower triangle and the diagonal of I = J tiles,
and excluded pairs (so the real-space sum is the one of :func:`dmd.forces.nonbonded.pair_energy_full` over a half
list: non-excluded pairs inside r_c, each once). Per tile, the J cluster's eight rows are one gather of 48 floats
and its forces one scatter of 24, instead of a gather and a scatter per pair.

Pair energy as the present kernel (PME: ke q_i q_j erfc(α r)/r + 4 ε_ij ((σ_ij/r)¹² − (σ_ij/r)⁶), Lorentz-Berthelot
from per-atom σ and √ε). The minimum image is taken per pair (as the present kernel does), so a tile needs no shift.
Orthorhombic boxes only (``[3]``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dmd.compaction import compact_rows
from dmd.forces.nonbonded import _apart, erfc_and_gaussian
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
    """The cluster-pair list at ``pos``: ``(slot_atom, atom_slot, cj [C, M], allowed [C, M, c, c], max_count)``.

    ``cj[I]``: clusters J (J = I, and each other pair in one row by the parity rule) whose bounding boxes (each cluster made whole around its first atom) are closer than
    ``rlist`` (minimum image of the centres), padded with C; ``allowed[I, m, a, b]``: slot a of I and slot b of
    ``cj[I, m]`` are both atoms, a < b on the diagonal tile, and not an excluded pair. ``max_count`` > ``capacity``
    means the list overflowed (rows truncated). ``excluded``: ``[E, 2]`` atom pairs (numpy, static).
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
    # each cluster pair in one row, by the parity rule (rows of even length): I < J when I + J is even, else I > J
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
    return slot_atom, atom_slot, cj, allowed, max_count


def _tile_d(box, ti, tj):
    """x_j − x_i per entry, three ``[B, M, c, c]`` arrays; ``box`` None: ``tj`` already holds the tile's image."""
    d = [tj[:, :, None, k, :] - ti[:, None, k, :, None] for k in range(3)]
    return d if box is None else [_min_image(dk, box[k]) for k, dk in enumerate(d)]


def _tile_values(kind, rc, alpha, what, box, ti, tj, allowed):
    """Per-entry value of the tiles of a block: ``ti [B, 6, c]`` (fields × slots of I), ``tj [B, M, 6, c]``,
    ``allowed [B, M, c, c]``; ``what``: "energy" (the block's summed energy) or "weight" (e'(r)/r, ``[B, M, c, c]``)."""
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
    zeros = tuple(jnp.zeros((), x.dtype) for x in xs)
    return jax.lax.reduce(tuple(xs), zeros, lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True)), axes)


def cluster_pair_terms(
    kind, rc, alpha, pos, box, q, sig, seps, slot_atom, atom_slot, cj, allowed, block=8, grad=True, energy=True,
    tile_shift=False,
):
    """Real-space energy (and ∂E/∂x ``[N, 3]`` if ``grad``) over a cluster-pair list (:func:`build_cluster_list`).

    ``tile_shift``: each cluster made whole around its first atom and one lattice shift per tile (the minimum image
    of the first atoms' difference) instead of a minimum image per entry; exact while the box is longer than
    2 (r_c + the widest cluster) along each axis (not checked here)."""
    if kind != "PME":
        raise NotImplementedError("the cluster-pair prototype does PME only")
    n = pos.shape[0]
    c, m = cj.shape
    cl = allowed.shape[-1]
    box = jnp.asarray(box, pos.dtype)
    tab = jnp.concatenate([pos, q[:, None], sig[:, None], seps[:, None]], axis=1).astype(pos.dtype)
    tab = jnp.concatenate([tab, jnp.zeros((1, _FIELDS), pos.dtype)])
    t = tab[slot_atom].reshape(c, cl, _FIELDS)
    ref = t[:, 0, :3]
    if tile_shift:
        t = t.at[:, :, :3].set(ref[:, None, :] + _min_image(t[:, :, :3] - ref[:, None, :], box))
    t = t.transpose(0, 2, 1)
    ref = jnp.concatenate([ref, jnp.zeros((1, 3), pos.dtype)])
    t = jnp.concatenate([t, jnp.zeros((1, _FIELDS, cl), pos.dtype)])  # cluster C: the list's padding
    n_blocks = -(-c // block)
    pad = n_blocks * block - c
    rows = jnp.pad(jnp.arange(c, dtype=jnp.int32), (0, pad), constant_values=c).reshape(n_blocks, block)
    cj_b = jnp.pad(cj, ((0, pad), (0, 0)), constant_values=c).reshape(n_blocks, block, m)
    al_b = jnp.pad(allowed, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(n_blocks, block, m, cl, cl)
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
        e = _apart(functools.partial(values, "energy", bx), ti, tj, al) if energy else 0.0
        if not grad:
            return (e_sum + e, acc), None
        w = _apart(functools.partial(values, "weight", bx), ti, tj, al)
        d = _tile_d(bx, ti, tj)
        wd = [w * dk for dk in d]
        fi = jnp.stack(_sums(wd, (1, 3)), axis=1)  # [B, 3, c]: Σ_{m, b} w d
        fj = jnp.stack(_sums(wd, (2,)), axis=2)  # [B, M, 3, c]: Σ_a w d
        acc = acc.at[r].add(-fi, mode="drop").at[j.reshape(-1)].add(fj.reshape(-1, 3, cl), mode="drop")
        return (e_sum + e, acc), None

    acc0 = jnp.zeros((c + 1, 3, cl), pos.dtype)
    (energy, acc), _ = jax.lax.scan(body, (jnp.zeros((), pos.dtype), acc0), (rows, cj_b, al_b))
    if not grad:
        return energy, None
    g_slots = jnp.concatenate([acc[:c].transpose(0, 2, 1).reshape(c * cl, 3), jnp.zeros((1, 3), pos.dtype)])
    return energy, g_slots[atom_slot]


def flat_tiles(cj, allowed, capacity: int):
    """The row list as a flat tile list without row padding: ``(ti [T], tj [T], allowed [T, c, c])``, padded with
    cluster C (all entries masked) to ``capacity`` tiles; also returns the number of tiles listed."""
    c, m = cj.shape
    listed = (cj < c).reshape(-1)
    (k,) = jnp.nonzero(listed, size=capacity, fill_value=c * m)
    rows = jnp.concatenate([jnp.repeat(jnp.arange(c, dtype=jnp.int32), m), jnp.full((1,), c, jnp.int32)])
    cols = jnp.concatenate([cj.reshape(-1), jnp.full((1,), c, jnp.int32)])
    al = jnp.concatenate([allowed.reshape((c * m,) + allowed.shape[2:]), jnp.zeros((1,) + allowed.shape[2:], bool)])
    return rows[k], cols[k], al[k], jnp.sum(listed)


def flat_tile_terms(kind, rc, alpha, pos, box, q, sig, seps, slot_atom, atom_slot, ti_, tj_, allowed, block=128):
    """:func:`cluster_pair_terms` (tile shift, gradient only) over a flat tile list (:func:`flat_tiles`): blocks of
    ``block`` tiles, each tile's two sides scatter-added to its two clusters."""
    n = pos.shape[0]
    cl = allowed.shape[-1]
    c = slot_atom.shape[0] // cl
    nt = ti_.shape[0]
    box = jnp.asarray(box, pos.dtype)
    tab = jnp.concatenate([pos, q[:, None], sig[:, None], seps[:, None]], axis=1).astype(pos.dtype)
    tab = jnp.concatenate([tab, jnp.zeros((1, _FIELDS), pos.dtype)])
    t = tab[slot_atom].reshape(c, cl, _FIELDS)
    ref = t[:, 0, :3]
    t = t.at[:, :, :3].set(ref[:, None, :] + _min_image(t[:, :, :3] - ref[:, None, :], box)).transpose(0, 2, 1)
    t = jnp.concatenate([t, jnp.zeros((1, _FIELDS, cl), pos.dtype)])
    ref = jnp.concatenate([ref, jnp.zeros((1, 3), pos.dtype)])
    nb = -(-nt // block)
    pad = nb * block - nt
    ti_b = jnp.pad(ti_, (0, pad), constant_values=c).reshape(nb, block, 1)
    tj_b = jnp.pad(tj_, (0, pad), constant_values=c).reshape(nb, block, 1)
    al_b = jnp.pad(allowed, ((0, pad), (0, 0), (0, 0))).reshape(nb, block, 1, cl, cl)
    values = functools.partial(_tile_values, kind, rc, alpha)

    def body(acc, args):
        r, j, al = args  # [B, 1] cluster ids, [B, 1, c, c]
        ti, tj = t[r[:, 0]], t[j]  # [B, 6, c], [B, 1, 6, c]
        raw = ref[j] - ref[r]  # [B, 1, 3]
        tj = tj.at[:, :, :3, :].add((_min_image(raw, box) - raw)[..., None])
        w = _apart(functools.partial(values, "weight", None), ti, tj, al)
        d = _tile_d(None, ti, tj)
        wd = [w * dk for dk in d]
        fi = jnp.stack(_sums(wd, (1, 3)), axis=1)  # [B, 3, c]
        fj = jnp.stack(_sums(wd, (1, 2)), axis=1)  # [B, 3, c]
        return acc.at[r[:, 0]].add(-fi, mode="drop").at[j[:, 0]].add(fj, mode="drop"), None

    acc, _ = jax.lax.scan(body, jnp.zeros((c + 1, 3, cl), pos.dtype), (ti_b, tj_b, al_b))
    g_slots = jnp.concatenate([acc[:c].transpose(0, 2, 1).reshape(c * cl, 3), jnp.zeros((1, 3), pos.dtype)])
    return g_slots[atom_slot]
