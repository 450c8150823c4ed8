"""The force-field neighbour-list rebuild as compiled numba kernels (CPU), in the XLA builder's exact list format.

:func:`dmd.forces.neighbors.pair_neighbor_list` calls these as XLA custom calls (the ``*_handler_f32/f64`` functions
at the end, :mod:`dmd.forces.xla_custom_call`) when its rebuild kernel is numba (``rebuild_kernel="numba"``, or
``"auto"`` on a CPU backend), and directly from numpy at allocation; this module imports numba, so only that path
imports it. The kernels are compiled once per dtype and cached on disk (``cache=True``, in
:func:`dmd.base.numba_env.numba_cache_dir`).

Both kernels give what the XLA builds give, element for element (the same float arithmetic in the positions' dtype, the
same candidate order):

* :func:`cell_rows` (the cell build): the caller passes the wrapped positions and cell ids that
  :meth:`dmd.neighbors.CellNeighborListFns._cell_ids` computes (cells tile fractional coordinates, so a triclinic
  box runs the same code). Each cell gathers its stencil's atoms once, moved to their periodic image (cell by
  stencil offset, atoms by index within a cell: the XLA table's order); then each of its atoms takes every
  candidate's squared distance without a branch (a loop that vectorises), compacts the ones within cutoff + skin
  that pass the pair filter without a branch (the write always happens, the count advances by the test), keeps the
  first ``capacity`` and blanks excluded partners in place (padding N). Counts include the excluded partners, as the
  XLA build's do, so the overflow test is the same. Parallel over cells (``prange``).
* :func:`all_pair_rows` (small boxes): every atom against every atom by minimum image, excluded partners dropped
  before compaction (as the XLA blocked sweep does). Parallel over rows.

docs/engine.md, "Numba neighbour-list rebuild", has the measurements.
"""

from __future__ import annotations

from dmd.base.numba_env import prepare_numba

prepare_numba()  # before numba is imported: its cache directory and thread waits

import numba  # noqa: E402
import numpy as np  # noqa: E402

from dmd.forces.numba_ffi import arg1, arg2, is_query, ret1, ret2, scalar  # noqa: E402

__all__ = ["all_pair_rows", "cell_rows", "cell_rows_signatures"]


@numba.njit(cache=True)
def _cell_sort(cid, n_cells):
    """``(order [N], starts [n_cells + 1], largest count)``: atoms sorted by cell, ascending index within a cell (the
    stable argsort of the XLA build), by a counting sort."""
    n = cid.shape[0]
    starts = np.zeros(n_cells + 1, np.int32)
    for i in range(n):
        starts[cid[i] + 1] += 1
    largest = 0
    for c in range(n_cells):
        largest = max(largest, starts[c + 1])
        starts[c + 1] += starts[c]
    fill = starts[:-1].copy()
    order = np.empty(n, np.int32)
    for i in range(n):
        c = cid[i]
        order[fill[c]] = i
        fill[c] += 1
    return order, starts, largest


@numba.njit(cache=True, inline="always")
def _blank_and_pad(row, buf, count, i, n, excl, n_excl):
    """The first ``min(count, capacity)`` entries of ``buf`` into ``row``, excluded partners of ``i`` as ``n``, the
    rest padding ``n``. A copy, then one select sweep per excluded partner: both vectorise (a test of each entry
    against the exclusions did not: +3.7 CPU ms a villin + water rebuild)."""
    capacity = row.shape[0]
    w = min(count, capacity)
    for k in range(w):
        row[k] = buf[k]
    for k in range(w, capacity):
        row[k] = n
    for e in range(n_excl[i]):
        x = excl[i, e]
        for k in range(w):
            row[k] = n if row[k] == x else row[k]


@numba.njit(cache=True, parallel=True)
def _cell_rows(wrapped, cid, nc, stencil, box, rl2, half, out, counts, excl, n_excl):
    n = wrapped.shape[0]
    n0, n1, n2 = nc[0], nc[1], nc[2]
    n_cells = n0 * n1 * n2
    order, starts, largest = _cell_sort(cid, n_cells)
    xs = np.empty(n, wrapped.dtype)
    ys = np.empty(n, wrapped.dtype)
    zs = np.empty(n, wrapped.dtype)
    for m in range(n):
        xs[m] = wrapped[order[m], 0]
        ys[m] = wrapped[order[m], 1]
        zs[m] = wrapped[order[m], 2]
    n_st = stencil.shape[0]
    for c in numba.prange(n_cells):
        lo, hi = starts[c], starts[c + 1]
        if lo == hi:
            continue
        c2 = c % n2
        c1 = (c // n2) % n1
        c0 = c // (n1 * n2)
        # the stencil's atoms at their periodic images: [K] ids and positions (the XLA table without its padding)
        nb_lo = np.empty(n_st, np.int64)
        nb_hi = np.empty(n_st, np.int64)
        shift = np.empty((n_st, 3), wrapped.dtype)
        img = np.empty(3, wrapped.dtype)
        k_all = 0
        for s in range(n_st):
            r0, r1, r2 = c0 + stencil[s, 0], c1 + stencil[s, 1], c2 + stencil[s, 2]
            i0, i1, i2 = r0 // n0, r1 // n1, r2 // n2  # image along a, b, c (floor division: -1, 0, 1)
            nb = ((r0 - i0 * n0) * n1 + (r1 - i1 * n1)) * n2 + (r2 - i2 * n2)
            nb_lo[s], nb_hi[s] = starts[nb], starts[nb + 1]
            img[0], img[1], img[2] = i0, i1, i2  # in the positions' dtype: image @ box as from_fractional
            for d in range(3):
                shift[s, d] = img[0] * box[0, d] + img[1] * box[1, d] + img[2] * box[2, d]
            k_all += nb_hi[s] - nb_lo[s]
        cand = np.empty(k_all, np.int32)
        cx = np.empty(k_all, wrapped.dtype)
        cy = np.empty(k_all, wrapped.dtype)
        cz = np.empty(k_all, wrapped.dtype)
        k = 0
        for s in range(n_st):
            for m in range(nb_lo[s], nb_hi[s]):
                cand[k] = order[m]
                cx[k] = xs[m] + shift[s, 0]
                cy[k] = ys[m] + shift[s, 1]
                cz[k] = zs[m] + shift[s, 2]
                k += 1
        keep = np.empty(k_all, np.uint8)  # uint8: the distance loop vectorises (int32: 3x slower)
        buf = np.empty(k_all + 1, np.int32)
        for m in range(lo, hi):
            i = order[m]
            xi, yi, zi = xs[m], ys[m], zs[m]
            # squared distances and the pair filter, branch free (vectorises)
            if half:
                for q in range(k_all):
                    j = cand[q]
                    dx, dy, dz = xi - cx[q], yi - cy[q], zi - cz[q]
                    even = ((i ^ j) & 1) == 0
                    ok = (even & (j > i)) | ((not even) & (j < i))
                    keep[q] = ok & (dx * dx + dy * dy + dz * dz < rl2)
            else:
                for q in range(k_all):
                    j = cand[q]
                    dx, dy, dz = xi - cx[q], yi - cy[q], zi - cz[q]
                    keep[q] = (j != i) & (dx * dx + dy * dy + dz * dz < rl2)
            cnt = 0
            for q in range(k_all):  # branch-free compaction: write always, advance by the test
                buf[cnt] = cand[q]
                cnt += keep[q]
            counts[i] = cnt
            _blank_and_pad(out[i], buf, cnt, i, n, excl, n_excl)
    return largest


def cell_rows(wrapped, cid, cells_per_side, stencil, box, list_cutoff, half, capacity, excl, n_excl):
    """Rows of the cell build: ``(idx [N, capacity] int32, counts [N] int32, largest cell count)``.

    Args:
      wrapped: ``[N, 3]`` positions wrapped into the box (float32 or float64; the distances are taken in this dtype).
      cid: ``[N]`` int32 cell of each atom, ``(c0 · n1 + c1) · n2 + c2``.
      cells_per_side: ``(n0, n1, n2)``. stencil: ``[S, 3]`` cell offsets (the XLA build's, in its order).
      box: ``[3]`` lengths or ``[3, 3]`` box vectors (rows), nm.
      list_cutoff: cutoff + skin, nm. half: the parity rule (:func:`dmd.neighbors.half_pair_filter`), else j ≠ i.
      capacity: row width (0: counts only). excl: ``[N, E]`` excluded partners, padded. n_excl: ``[N]`` how many.
    """
    wrapped = _array(wrapped)
    dt = wrapped.dtype.type
    handler = _wait(f"cell_rows_handler_{'f64' if dt is np.float64 else 'f32'}")
    box = np.asarray(box, wrapped.dtype)
    box = np.diag(box) if box.ndim == 1 else box
    n = wrapped.shape[0]
    out = np.empty((n, int(capacity)), np.int32)
    counts = np.empty(n, np.int32)
    largest = _cell_rows(
        wrapped,
        _array(cid, np.int32),
        _array(cells_per_side, np.int64),
        _array(stencil, np.int64),
        _array(box),
        dt(list_cutoff**2),  # compared in the positions' dtype, as XLA does with a Python float
        bool(half),
        out,
        counts,
        _array(excl, np.int32),
        _array(n_excl, np.int32),
    )
    _release(handler)
    return out, counts, int(largest)


def cell_rows_signatures():
    """The operand types the cell build has been compiled for in this process (one per positions' dtype: the
    handler's, which allocation's host calls share)."""
    return list(_cell_rows.signatures)


def _wait(handler):
    """A worker of :mod:`dmd.forces.numba_prefetch` compiling ``handler`` (whose kernel this host call shares): wait
    for it, then numba loads the kernel from its cache. Returns the handler's full name."""
    from dmd.forces.numba_prefetch import wait

    wait(f"{__name__}:{handler}", steal=False)
    return f"{__name__}:{handler}"


def _release(handler):
    """The kernel is compiled (and cached) here: a prefetch worker may compile the handler's layer around it."""
    from dmd.forces.numba_prefetch import release

    release(handler)


def _array(a, dtype=None):
    """``a`` as a C-contiguous, writeable numpy array: the handlers' operands have that type, so the host calls
    (allocation) reuse their compiled kernel. A read-only array (``np.asarray`` of a jax array) is another numba
    type, another specialisation: a second compilation of the cell build, ~3-4 CPU s on an empty cache."""
    return np.require(a, dtype, ["C", "W"])


@numba.njit(cache=True, inline="always")
def _rint(x):
    return np.rint(x)


@numba.njit(cache=True, parallel=True)
def _all_pair_rows(pos, box, ortho, rl2, half, out, counts, excl, n_excl):
    n = pos.shape[0]
    capacity = out.shape[1]
    for i in numba.prange(n):
        buf = np.empty(n + 1, np.int32)
        cnt = 0
        ne = n_excl[i]
        for j in range(n):
            dx, dy, dz = pos[j, 0] - pos[i, 0], pos[j, 1] - pos[i, 1], pos[j, 2] - pos[i, 2]
            if ortho:  # dmd.space.minimum_image_shift, step for step
                dx = dx - box[0, 0] * _rint(dx / box[0, 0])
                dy = dy - box[1, 1] * _rint(dy / box[1, 1])
                dz = dz - box[2, 2] * _rint(dz / box[2, 2])
            else:
                s = _rint(dz / box[2, 2])
                dx, dy, dz = dx - s * box[2, 0], dy - s * box[2, 1], dz - s * box[2, 2]
                s = _rint(dy / box[1, 1])
                dx, dy = dx - s * box[1, 0], dy - s * box[1, 1]
                dx = dx - _rint(dx / box[0, 0]) * box[0, 0]
            if half:
                ok = (j > i) if ((i ^ j) & 1) == 0 else (j < i)
            else:
                ok = j != i
            ok = ok and dx * dx + dy * dy + dz * dz < rl2
            if ok:
                for e in range(ne):
                    ok = ok and excl[i, e] != j
            buf[cnt] = j
            cnt += ok
        counts[i] = cnt
        for k in range(min(cnt, capacity)):
            out[i, k] = buf[k]
        for k in range(min(cnt, capacity), capacity):
            out[i, k] = n


def all_pair_rows(pos, box, list_cutoff, half, capacity, excl, n_excl):
    """Rows of the all-pairs build: ``(idx [N, capacity] int32, counts [N] int32)``, excluded partners left out
    (and not counted). ``pos [N, 3]`` (float32 or float64), ``box`` ``[3]`` or ``[3, 3]`` nm; the other arguments as
    :func:`cell_rows`'s."""
    pos = _array(pos)
    _wait(f"all_pair_rows_handler_{'f64' if pos.dtype == np.float64 else 'f32'}")
    box = np.asarray(box, pos.dtype)
    ortho = box.ndim == 1
    box = np.diag(box) if ortho else box
    n = pos.shape[0]
    out = np.empty((n, int(capacity)), np.int32)
    counts = np.empty(n, np.int32)
    rl2 = pos.dtype.type(list_cutoff**2)
    _all_pair_rows(
        pos, _array(box), ortho, rl2, bool(half), out, counts, _array(excl, np.int32), _array(n_excl, np.int32)
    )
    return out, counts


@numba.njit(cache=True)
def _largest(counts):
    """``counts.max()`` (N > 0) by a loop: numba's ``max`` compiles a reduction with its empty-array error path."""
    m = counts[0]
    for c in counts:
        m = max(m, c)
    return m


# XLA FFI handlers (dmd.forces.xla_custom_call): one per kernel and positions' dtype. Operands of the cell build:
# wrapped [N, 3], cid [N] int32, cells per side [3] int32, stencil [S, 3] int32, box [3, 3], (cutoff + skin)² [],
# half [] int32, excl [N, E] int32, n_excl [N] int32; of the all-pairs build: pos [N, 3], box [3, 3], (cutoff +
# skin)², (half, orthorhombic) [2] int32, excl, n_excl. Results: idx [N, capacity] int32, the longest row's count []
# int32 and (cell build) the fullest cell's count [] int32.
@numba.njit(cache=True, inline="always")
def _cell_handler(frame, like):
    if is_query(frame):
        return 0
    i4 = np.int32(0)
    wrapped, cid = arg2(frame, 0, like), arg1(frame, 1, i4)
    nc, stencil = arg1(frame, 2, i4).astype(np.int64), arg2(frame, 3, i4).astype(np.int64)
    out = ret2(frame, 0, i4)
    counts = np.empty(wrapped.shape[0], np.int32)
    largest = _cell_rows(
        wrapped,
        cid,
        nc,
        stencil,
        arg2(frame, 4, like),
        scalar(frame, 5, like),
        scalar(frame, 6, i4) != 0,
        out,
        counts,
        arg2(frame, 7, i4),
        arg1(frame, 8, i4),
    )
    ret1(frame, 1, i4, 1)[0] = _largest(counts)
    ret1(frame, 2, i4, 1)[0] = largest
    return 0


def cell_rows_handler_f32(frame):
    return _cell_handler(frame, np.float32(0))


def cell_rows_handler_f64(frame):
    return _cell_handler(frame, np.float64(0))


@numba.njit(cache=True, inline="always")
def _all_pair_handler(frame, like):
    if is_query(frame):
        return 0
    i4 = np.int32(0)
    pos = arg2(frame, 0, like)
    flags = arg1(frame, 3, i4)
    counts = np.empty(pos.shape[0], np.int32)
    _all_pair_rows(
        pos,
        arg2(frame, 1, like),
        flags[1] != 0,
        scalar(frame, 2, like),
        flags[0] != 0,
        ret2(frame, 0, i4),
        counts,
        arg2(frame, 4, i4),
        arg1(frame, 5, i4),
    )
    ret1(frame, 1, i4, 1)[0] = _largest(counts)
    return 0


def all_pair_rows_handler_f32(frame):
    return _all_pair_handler(frame, np.float32(0))


def all_pair_rows_handler_f64(frame):
    return _all_pair_handler(frame, np.float64(0))
