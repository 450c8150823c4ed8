"""numba kernels of :mod:`dmd.forces.numba_pairs` (this module imports numba: import it only where they run).

Module-level functions, so that ``cache=True`` keeps their machine code on disk between processes.
"""

from __future__ import annotations

from dmd.base.numba_env import prepare_numba

prepare_numba()  # before numba is imported: its cache directory and thread waits

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from dmd.base.units import ONE_4PI_EPS0  # noqa: E402
from dmd.forces.numba_ffi import arg1, arg2, is_query, put2, ret1, scalar  # noqa: E402


@njit(fastmath=True, cache=True)
def sum_threads(f):
    grad = f[0].copy()
    for t in range(1, f.shape[0]):
        grad += f[t]
    return grad


@njit(parallel=True, fastmath=True, cache=True)
def pairs(pos, box, idx, q, sig, seps, rc, te_tab, tg_tab, half, block, nt):
    """(energy, dE/dx ``[N, 3]``) of real-space PME Coulomb + LJ over ``idx`` (half list, or full with
    ``half=False``; padding = N). Per row: displacements and r² of every slot (vectorised gathers, minimum image
    by selects), a branch-free compaction of the partners inside r_c, the pair terms without branches (ε = 0
    gives 0), then the partners' scatter into the thread's own float32 force buffer (``numba.get_thread_id``),
    reduced after; ``nt``: ``numba.get_num_threads()`` (read in the kernel, it would keep numba from caching it).
    Row energies in float32, summed in float64."""
    n, w = idx.shape
    f = np.zeros((nt, n, 3), np.float32)
    e = np.zeros(nt, np.float64)
    rc2 = np.float32(rc * rc)
    tscale = np.float32((te_tab.shape[0] - 2) / rc)
    bx, by, bz = box[0], box[1], box[2]
    hx, hy, hz = np.float32(0.5) * bx, np.float32(0.5) * by, np.float32(0.5) * bz
    px = np.zeros(n + 1, np.float32)
    py = np.zeros(n + 1, np.float32)
    pz = np.zeros(n + 1, np.float32)
    px[:n], py[:n], pz[:n] = pos[:, 0], pos[:, 1], pos[:, 2]
    px[n] = np.float32(1e4)  # the padding partner lies far outside r_c
    for b in prange((n + block - 1) // block):
        t = numba.get_thread_id()
        jj = np.empty(w + 1, np.int32)
        ddx = np.empty(w + 1, np.float32)
        ddy = np.empty(w + 1, np.float32)
        ddz = np.empty(w + 1, np.float32)
        gg = np.empty(w + 1, np.float32)
        ax = np.empty(w, np.float32)
        ay = np.empty(w, np.float32)
        az = np.empty(w, np.float32)
        ar2 = np.empty(w, np.float32)
        eb = np.float64(0.0)
        for i in range(b * block, min(n, (b + 1) * block)):
            xi, yi, zi = px[i], py[i], pz[i]
            qi, si, ei = np.float32(ONE_4PI_EPS0) * q[i], sig[i], np.float32(4.0) * seps[i]
            for k in range(w):
                j = idx[i, k]
                dx = px[j] - xi
                dy = py[j] - yi
                dz = pz[j] - zi
                dx = dx - bx if dx > hx else (dx + bx if dx < -hx else dx)
                dy = dy - by if dy > hy else (dy + by if dy < -hy else dy)
                dz = dz - bz if dz > hz else (dz + bz if dz < -hz else dz)
                ax[k] = dx
                ay[k] = dy
                az[k] = dz
                ar2[k] = dx * dx + dy * dy + dz * dz
            m = 0
            for k in range(w):
                jj[m] = idx[i, k]
                ddx[m] = ax[k]
                ddy[m] = ay[k]
                ddz[m] = az[k]
                m += ar2[k] < rc2
            er = np.float32(0.0)
            for k in range(m):
                j = jj[k]
                dx, dy, dz = ddx[k], ddy[k], ddz[k]
                r2 = dx * dx + dy * dy + dz * dz
                inv = np.float32(1.0) / np.sqrt(r2)
                inv2 = inv * inv
                x = r2 * inv * tscale
                kk = np.int32(x)
                fr = x - np.float32(kk)
                tev = te_tab[kk] + fr * (te_tab[kk + 1] - te_tab[kk])
                tgv = tg_tab[kk] + fr * (tg_tab[kk + 1] - tg_tab[kk])
                qq = qi * q[j]
                sij = np.float32(0.5) * (si + sig[j])
                ej = ei * seps[j]
                s2 = sij * sij * inv2
                s6 = s2 * s2 * s2
                er += qq * tev * inv + ej * (s6 * s6 - s6)
                gg[k] = (-qq * tgv * inv + ej * (np.float32(-12.0) * s6 * s6 + np.float32(6.0) * s6)) * inv2
            sx = sy = sz = np.float32(0.0)
            for k in range(m):
                sx += gg[k] * ddx[k]
                sy += gg[k] * ddy[k]
                sz += gg[k] * ddz[k]
            if half:
                for k in range(m):
                    j = jj[k]
                    f[t, j, 0] += gg[k] * ddx[k]
                    f[t, j, 1] += gg[k] * ddy[k]
                    f[t, j, 2] += gg[k] * ddz[k]
            f[t, i, 0] -= sx
            f[t, i, 1] -= sy
            f[t, i, 2] -= sz
            eb += er
        e[t] += eb
    return e.sum() * (1.0 if half else 0.5), sum_threads(f)


@njit(fastmath=True, cache=True, inline="always")
def _image(d, b, h):
    """A wrapped coordinates' difference ``d`` moved to the nearest image (box edge ``b``, ``h`` = b/2), by selects."""
    return d - b if d > h else (d + b if d < -h else d)


@njit(fastmath=True, cache=True)
def _wrapped(pos, box):
    """``(x, y, z)`` ``[N + 1]`` float32 (three arrays: views of one array keep LLVM from vectorising): positions
    wrapped into the box (a run's positions drift out of it: one image shift then suffices), and a padding partner N
    far outside any cutoff."""
    n = pos.shape[0]
    xyz = (np.zeros(n + 1, np.float32), np.zeros(n + 1, np.float32), np.zeros(n + 1, np.float32))
    for i in range(n):
        xyz[0][i] = pos[i, 0] - box[0] * np.floor(pos[i, 0] / box[0])
        xyz[1][i] = pos[i, 1] - box[1] * np.floor(pos[i, 1] / box[1])
        xyz[2][i] = pos[i, 2] - box[2] * np.floor(pos[i, 2] / box[2])
    xyz[0][n] = np.float32(1e4)
    return xyz


@njit(parallel=True, fastmath=True, cache=True)
def lj_pairs(pos, box, idx, sig, seps, rc, half, block, nt):
    """(energy, dE/dx ``[N, 3]``) of plain (unswitched, unshifted) LJ over ``idx`` (half list, or full with
    ``half=False``; padding = N), ε_ij = √ε_i √ε_j, σ_ij = (σ_i + σ_j)/2: :func:`pairs` without the Coulomb term
    and its table (no square root: the weight comes from 1/r²). Per row, one branch-free loop over the slots up to
    the row's last partner (rows are compacted: padding only at the end): displacement, r², the pair terms with ε
    set to 0 beyond r_c, the row sums; then the partners' scatter into the thread's own force buffer (one row
    more for the padding partner, whose terms are 0). No compaction pass: LJ's pair terms cost less than it did
    (N = 8,000: 1.78 → 1.66 CPU ms, docs/engine.md "LJ fluid on numba kernels")."""
    n, w = idx.shape
    f, e = np.zeros((nt, n + 1, 3), np.float32), np.zeros(nt, np.float64)  # a row for the padding partner
    bx, by, bz, rc2 = box[0], box[1], box[2], np.float32(rc * rc)
    hx, hy, hz = np.float32(0.5) * bx, np.float32(0.5) * by, np.float32(0.5) * bz
    px, py, pz = _wrapped(pos, box)
    sg, se = np.ones(n + 1, np.float32), np.zeros(n + 1, np.float32)
    sg[:n], se[:n] = sig, seps  # the padding partner has ε = 0
    for b in prange((n + block - 1) // block):
        t, eb = numba.get_thread_id(), np.float64(0.0)
        # each slot's pair force, for the partners' scatter (three arrays: views of one [3, W] array ran 2.5× slower)
        gx, gy, gz = np.empty(w, np.float32), np.empty(w, np.float32), np.empty(w, np.float32)
        for i in range(b * block, min(n, (b + 1) * block)):
            xi, yi, zi, si, ei = px[i], py[i], pz[i], sg[i], np.float32(4.0) * se[i]
            m = w
            while m > 0 and idx[i, m - 1] == n:
                m -= 1
            er = sx = sy = sz = np.float32(0.0)
            for k in range(m):
                j = idx[i, k]
                dx, dy, dz = _image(px[j] - xi, bx, hx), _image(py[j] - yi, by, hy), _image(pz[j] - zi, bz, hz)
                r2 = dx * dx + dy * dy + dz * dz
                inv2 = np.float32(1.0) / r2
                sij = np.float32(0.5) * (si + sg[j])
                ej = ei * se[j] if r2 < rc2 else np.float32(0.0)
                s2 = sij * sij * inv2
                s6 = s2 * s2 * s2
                er += ej * (s6 * s6 - s6)
                g = ej * (np.float32(-12.0) * s6 * s6 + np.float32(6.0) * s6) * inv2
                gx[k] = g * dx
                gy[k] = g * dy
                gz[k] = g * dz
                sx += gx[k]
                sy += gy[k]
                sz += gz[k]
            if half:
                for k in range(m):
                    j = idx[i, k]
                    f[t, j, 0] += gx[k]
                    f[t, j, 1] += gy[k]
                    f[t, j, 2] += gz[k]
            f[t, i, 0] -= sx
            f[t, i, 1] -= sy
            f[t, i, 2] -= sz
            eb += er
        e[t] += eb
    return e.sum() * (1.0 if half else 0.5), sum_threads(f)[:n]


def lj_pairs_handler(frame):
    """:func:`lj_pairs` as an XLA FFI handler. Operands: pos ``[N, 3]``, box ``[3]``, idx ``[N, W]`` int32, sig,
    seps ``[N]``, r_c ``[]``, ``(half, block, threads)`` int32; results as :func:`pairs_handler`'s."""
    if is_query(frame):
        return 0
    f4, i4 = np.float32(0), np.int32(0)
    pos, box, idx = arg2(frame, 0, f4), arg1(frame, 1, f4), arg2(frame, 2, i4)
    half, block, nt = arg1(frame, 6, i4)
    e, g = lj_pairs(pos, box, idx, arg1(frame, 3, f4), arg1(frame, 4, f4), scalar(frame, 5, f4), half != 0, block, nt)
    ret1(frame, 0, f4, 1)[0] = np.float32(e)
    put2(frame, 1, g)
    return 0


def pairs_handler(frame):
    """:func:`pairs` as an XLA FFI handler (:mod:`dmd.forces.xla_custom_call`). Operands: pos ``[N, 3]``, box
    ``[3]``, idx ``[N, W]`` int32, q, sig, seps ``[N]``, the two erfc tables, r_c ``[]``, ``(half, block, threads)``
    int32; results: energy ``[]`` (the float64 sum rounded to float32) and dE/dx ``[N, 3]``, float32."""
    if is_query(frame):
        return 0
    f4, i4 = np.float32(0), np.int32(0)
    cfg = arg1(frame, 9, i4)
    e, g = pairs(
        arg2(frame, 0, f4),
        arg1(frame, 1, f4),
        arg2(frame, 2, i4),
        arg1(frame, 3, f4),
        arg1(frame, 4, f4),
        arg1(frame, 5, f4),
        scalar(frame, 8, f4),
        arg1(frame, 6, f4),
        arg1(frame, 7, f4),
        cfg[0] != 0,
        np.int64(cfg[1]),
        np.int64(cfg[2]),
    )
    ret1(frame, 0, f4, 1)[0] = np.float32(e)
    put2(frame, 1, g)
    return 0
