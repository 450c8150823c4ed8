"""Probe: a multi-threaded numba kernel for villin + water's real-space pair forces against dmd's XLA half-list
kernel, in ONE process (issue 20 item 2, "multi-threaded custom calls where XLA has none").

Not an integration: numba is not a dmd dependency (``pip install numba`` to run this). Villin + water as in
``bench_cluster_pairs.py`` (PDB positions, amber14 + TIP3P, PME 0.9 nm, OpenMM's α, float32 positions), the same
half list (1.1× capacity, 16-slot floor, as OpenMM systems allocate). The numba kernel runs over that list
(``prange`` over rows, one force buffer per thread, reduced after; float32 arithmetic, float64 energy sum), LJ
skipped where √ε of either atom is 0 (TIP3P hydrogens), as OpenMM's CPU kernel does. Arms, interleaved ``--rounds``
times, CPU and wall ms per evaluation (min over ``--repeat``): the present kernel (``jax.value_and_grad``, jitted),
numba called from Python, numba through ``jax.pure_callback`` in a jitted function, and in a 20-step ``lax.scan``
(per call). Agreement: energy against the present kernel, max |Δ force|.

    python benchmarks/bench_numba_pairs.py --rounds 3
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # a probe of an optional library: say how to get it, no traceback
    sys.exit("bench_numba_pairs.py needs numba (not a dmd dependency): pip install numba")

from bench_cluster_pairs import _load, setup
from bench_rebuild import _time

ONE_4PI_EPS0 = 138.935456


_AS_P = 0.3275911
_A1, _A2, _A3, _A4, _A5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429  # A&S 7.1.26


@njit(parallel=True, fastmath=True, cache=False)
def _pairs(pos, box, idx, q, sig, seps, rc, alpha, nthreads):
    """(energy kJ/mol, dE/dx [N, 3]) over the half list ``idx [N, W]`` (sentinel N). Per row, one branch-free
    loop over its W columns into scratch (vectorisable: gathers, A&S 7.1.26 erfc sharing the force's exp, the
    minimum image by comparisons), then the partners' scatter; a row's padding and pairs past r_c get weight 0."""
    n, w = idx.shape
    f = np.zeros((nthreads, n + 1, 3), np.float32)
    e = np.zeros(nthreads, np.float64)
    rc2 = np.float32(rc * rc)
    a = np.float32(alpha)
    two_a_sqrtpi = np.float32(2.0 * alpha / math.sqrt(math.pi))
    ke = np.float32(ONE_4PI_EPS0)
    p = np.float32(_AS_P)
    a1, a2, a3, a4, a5 = np.float32(_A1), np.float32(_A2), np.float32(_A3), np.float32(_A4), np.float32(_A5)
    bx, by, bz = box[0], box[1], box[2]
    hx, hy, hz = np.float32(0.5) * bx, np.float32(0.5) * by, np.float32(0.5) * bz
    # padded tables: row N is a far-away dummy atom with no charge and no LJ (the sentinel's partner)
    px = np.zeros(n + 1, np.float32)
    py = np.zeros(n + 1, np.float32)
    pz = np.zeros(n + 1, np.float32)
    qp = np.zeros(n + 1, np.float32)
    sp = np.zeros(n + 1, np.float32)
    ep = np.zeros(n + 1, np.float32)
    px[:n], py[:n], pz[:n] = pos[:, 0], pos[:, 1], pos[:, 2]
    qp[:n], sp[:n], ep[:n] = q, sig, seps
    chunk = (n + nthreads - 1) // nthreads
    for t in prange(nthreads):
        gx = np.empty(w, np.float32)
        gy = np.empty(w, np.float32)
        gz = np.empty(w, np.float32)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            xi, yi, zi = px[i], py[i], pz[i]
            qi, si, ei = ke * qp[i], sp[i], ep[i]
            et = np.float32(0.0)
            for k in range(w):
                j = idx[i, k]
                dx = px[j] - xi
                dy = py[j] - yi
                dz = pz[j] - zi
                dx = dx - bx if dx > hx else (dx + bx if dx < -hx else dx)
                dy = dy - by if dy > hy else (dy + by if dy < -hy else dy)
                dz = dz - bz if dz > hz else (dz + bz if dz < -hz else dz)
                r2 = dx * dx + dy * dy + dz * dz
                inside = (r2 < rc2) and (j < n)
                r2 = r2 if inside else np.float32(1.0)
                inv = np.float32(1.0) / np.sqrt(r2)
                r = r2 * inv
                ar = a * r
                gauss = np.exp(-ar * ar)
                tt = np.float32(1.0) / (np.float32(1.0) + p * ar)
                erfc = tt * (a1 + tt * (a2 + tt * (a3 + tt * (a4 + tt * a5)))) * gauss
                qq = qi * qp[j]
                ec = qq * erfc * inv
                sg = np.float32(0.5) * (si + sp[j]) * inv
                s2 = sg * sg
                s6 = s2 * s2 * s2
                ej = np.float32(4.0) * ei * ep[j]
                el = ej * (s6 * s6 - s6)
                de = (
                    -(ec + qq * two_a_sqrtpi * gauss) * inv
                    + ej * (np.float32(-12.0) * s6 * s6 + np.float32(6.0) * s6) * inv
                )
                g = de * inv if inside else np.float32(0.0)
                et += (ec + el) if inside else np.float32(0.0)
                gx[k] = g * dx
                gy[k] = g * dy
                gz[k] = g * dz
            sx = np.float32(0.0)
            sy = np.float32(0.0)
            sz = np.float32(0.0)
            for k in range(w):
                j = idx[i, k]
                f[t, j, 0] += gx[k]
                f[t, j, 1] += gy[k]
                f[t, j, 2] += gz[k]
                sx += gx[k]
                sy += gy[k]
                sz += gz[k]
            f[t, i, 0] -= sx
            f[t, i, 1] -= sy
            f[t, i, 2] -= sz
            e[t] += et
    grad = np.zeros((n, 3), np.float32)
    for t in range(nthreads):
        grad += f[t, :n]
    return e.sum(), grad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skin", type=float, default=0.131)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    from dmd.forces.neighbors import pair_neighbor_list
    from dmd.forces.nonbonded import pair_energy_full

    s = setup(args.skin)
    n = len(s["pos"])
    f32 = jnp.float32
    pos, box = jnp.asarray(s["pos"], f32), jnp.asarray(s["box"], f32)
    q, sig, seps = (jnp.asarray(s[k], f32) for k in ("q", "sig", "seps"))
    rc, alpha = float(s["rc"]), float(s["alpha"])
    nfn = pair_neighbor_list(n, s["box"], rc, skin=args.skin, excluded_pairs=s["excluded"], full=False,
                             occupancy_multiplier=1.1, min_headroom=16)  # fmt: skip
    nb = nfn.allocate(pos)
    idx = nb.idx
    pair = pair_energy_full("PME", rc, alpha=alpha, half=True)
    present = jax.jit(jax.value_and_grad(lambda y, idx: pair(y, box, idx, q, sig, seps)))
    nt = numba.get_num_threads()
    host = [np.asarray(a) for a in (pos, box, idx, q, sig, seps)]
    host[2] = host[2].astype(np.int32)

    def numba_direct(p):
        return _pairs(np.asarray(p), host[1], host[2], host[3], host[4], host[5], rc, alpha, nt)

    def cb(p, i):  # callback buffers arrive with a '=i' buffer format numba refuses: view them as plain numpy
        p = np.frombuffer(np.ascontiguousarray(p).tobytes(), np.float32).reshape(n, 3)
        i = np.frombuffer(np.ascontiguousarray(i).tobytes(), np.int32).reshape(host[2].shape)
        e, g = _pairs(p, host[1], i, host[3], host[4], host[5], rc, alpha, nt)
        return np.float32(e), g

    shapes = (jax.ShapeDtypeStruct((), f32), jax.ShapeDtypeStruct((n, 3), f32))
    via_cb = jax.jit(lambda p, i: jax.pure_callback(cb, shapes, p, i))

    def scan20(p, i):
        def body(c, _):
            e, g = jax.pure_callback(cb, shapes, c, i)
            return c - 1e-9 * g, e  # a dependent chain, as a step would be

        return jax.lax.scan(body, p, None, length=20)

    scan_cb = jax.jit(scan20)
    e0, g0 = present(pos, idx)
    e1, g1 = numba_direct(pos)
    print(f"villin + water N = {n}, list width {idx.shape[1]}, numba {numba.__version__}, threads {nt} | {_load()}")
    rel = abs(e1 - float(e0)) / abs(float(e0))
    df, fmax = float(np.max(np.abs(g1 - np.asarray(g0)))), float(jnp.max(jnp.abs(g0)))
    print(f"energy present {float(e0):.3f}, numba {e1:.3f} (rel {rel:.2e}); max |dF| {df:.4f} of |F|max {fmax:.0f}")
    arms = {
        "present XLA half list, value_and_grad": (present, (pos, idx)),
        "numba from Python": (numba_direct, (pos,)),
        "numba via pure_callback (jit)": (via_cb, (pos, idx)),
    }
    for r in range(args.rounds):
        for name, (fn, a) in arms.items():
            wmin, wmed, cmin, cmed = _time(fn, a, args.repeat)
            print(f"round {r} {name:40s} wall {wmin:6.2f} (med {wmed:6.2f}) ms, CPU {cmin:6.2f} (med {cmed:6.2f}) ms"
                  f" | {_load()}")  # fmt: skip
        jax.block_until_ready(scan_cb(pos, idx))
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(scan_cb(pos, idx))
        print(f"round {r} {'numba in a 20-step lax.scan, per step':40s} wall {(time.perf_counter() - t0) * 50:6.2f} ms,"
              f" CPU {(time.process_time() - c0) * 50:6.2f} ms | {_load()}")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count()))
    main()
