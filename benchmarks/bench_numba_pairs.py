"""Probe: multi-threaded numba kernels for villin + water's real-space pair forces against dmd's XLA half-list
kernel, in ONE process (issue 20 item 2, "multi-threaded custom calls where XLA has none").

The vectorised kernel is now the engine's (``dmd/forces/numba_pairs.py``, numba a dependency). Villin + water as in
``bench_cluster_pairs.py`` (PDB positions, amber14 + TIP3P, PME 0.9 nm, OpenMM's α, float32 positions), the same
half list (1.1× capacity, 16-slot floor, as OpenMM systems allocate) and its full-list twin. The kernels branch as
OpenMM's CPU kernel does: padding slots and partners beyond r_c are skipped, LJ is skipped where √ε of
either atom is 0 (TIP3P hydrogens); erfc by A&S 7.1.26 (sharing the force's exp) or from a 4,096-point table.
Half list: ``prange`` over row blocks, one float32 force buffer per thread, reduced after; full list: each row
sums its own force (no scatter, twice the arithmetic). Arms, interleaved ``--rounds`` times, CPU and wall ms per
evaluation (min and median over ``--repeat``): the present kernel (jitted ``value_and_grad`` and gradient), each
numba kernel called from Python (2 threads, and the tabulated half-list kernel on 1), the tabulated half-list
kernel as a ``jax.custom_vjp`` energy whose forward is a ``jax.pure_callback`` (the residual is the forces): its
``jax.grad`` jitted alone and inside a 20-step ``lax.scan`` (per step); and OpenMM's CPU platform (same threads)
on the same system: its direct-space nonbonded, reciprocal PME and one LangevinMiddle step. Agreement: energy
against the present kernel and against float64, max |Δ force|.

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
    sys.exit("bench_numba_pairs.py needs numba (a dmd dependency): pip install numba")

from bench_cluster_pairs import _load, setup
from bench_rebuild import _time

from dmd.forces.numba_pairs import erfc_table
from dmd.forces.numba_pairs import pairs_vec as dmd_pairs_vec

ONE_4PI_EPS0 = 138.935456


_AS_P = 0.3275911
_A1, _A2, _A3, _A4, _A5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429  # A&S 7.1.26


@njit(fastmath=True, inline="always")
def _pair_terms(dx, dy, dz, qq, sij, ej, a, two_a_sqrtpi, table, tscale, tabulated):
    """(energy, dE/dr / r) of one pair inside r_c: PME real-space Coulomb (erfc by A&S 7.1.26 sharing the force's exp,
    or from ``table``) plus LJ when ej = 4√ε_i√ε_j ≠ 0 (OpenMM's CPU kernel skips it for TIP3P hydrogens)."""
    r2 = dx * dx + dy * dy + dz * dz
    inv = np.float32(1.0) / np.sqrt(r2)
    inv2 = inv * inv
    if tabulated:
        x = r2 * inv * tscale
        k = int(x)
        fr = x - np.float32(k)
        te = table[k, 0] + fr * (table[k + 1, 0] - table[k, 0])
        tg = table[k, 1] + fr * (table[k + 1, 1] - table[k, 1])
        e = qq * te * inv
        g = -qq * tg * inv * inv2
    else:
        ar = a * r2 * inv
        gauss = np.exp(-ar * ar)
        tt = np.float32(1.0) / (np.float32(1.0) + np.float32(_AS_P) * ar)
        poly = tt * (
            np.float32(_A1)
            + tt * (np.float32(_A2) + tt * (np.float32(_A3) + tt * (np.float32(_A4) + tt * np.float32(_A5))))
        )
        e = qq * poly * gauss * inv
        g = -(e + qq * two_a_sqrtpi * gauss) * inv2
    if ej != np.float32(0.0):
        s2 = sij * sij * inv2
        s6 = s2 * s2 * s2
        e += ej * (s6 * s6 - s6)
        g += ej * (np.float32(-12.0) * s6 * s6 + np.float32(6.0) * s6) * inv2
    return e, g


@njit(fastmath=True, inline="always")
def _add3(f, t, i, x, y, z):
    f[t, i, 0] += x
    f[t, i, 1] += y
    f[t, i, 2] += z


@njit(fastmath=True)
def _sum_threads(f):
    grad = f[0].copy()
    for t in range(1, f.shape[0]):
        grad += f[t]
    return grad


@njit(parallel=True, fastmath=True)
def pairs_half(pos, box, idx, q, sig, seps, rc, alpha, table, tabulated, block):
    """(energy, dE/dx [N, 3]) over the half list ``idx [N, W]`` (rows compacted, sentinel N after the last partner).
    ``prange`` over row blocks; each thread scatters partner shares into its own force buffer (float32), reduced
    after; row energies in float32, summed in float64. Skips the padding and partners beyond r_c."""
    n, w = idx.shape
    nt = numba.get_num_threads()
    f = np.zeros((nt, n, 3), np.float32)
    e = np.zeros(nt, np.float64)
    rc2 = np.float32(rc * rc)
    a = np.float32(alpha)
    two_a_sqrtpi = np.float32(2.0 * alpha / math.sqrt(math.pi))
    tscale = np.float32((table.shape[0] - 2) / rc)
    bx, by, bz = box[0], box[1], box[2]
    hx, hy, hz = np.float32(0.5) * bx, np.float32(0.5) * by, np.float32(0.5) * bz
    nblocks = (n + block - 1) // block
    for b in prange(nblocks):
        t = numba.get_thread_id()
        eb = np.float64(0.0)
        for i in range(b * block, min(n, (b + 1) * block)):
            xi, yi, zi = pos[i, 0], pos[i, 1], pos[i, 2]
            qi, si, ei = np.float32(ONE_4PI_EPS0) * q[i], sig[i], np.float32(4.0) * seps[i]
            sx = np.float32(0.0)
            sy = np.float32(0.0)
            sz = np.float32(0.0)
            er = np.float32(0.0)
            for k in range(w):
                j = idx[i, k]
                if j >= n:
                    continue
                dx = pos[j, 0] - xi
                dy = pos[j, 1] - yi
                dz = pos[j, 2] - zi
                dx = dx - bx if dx > hx else (dx + bx if dx < -hx else dx)
                dy = dy - by if dy > hy else (dy + by if dy < -hy else dy)
                dz = dz - bz if dz > hz else (dz + bz if dz < -hz else dz)
                if dx * dx + dy * dy + dz * dz >= rc2:
                    continue
                ep, g = _pair_terms(dx, dy, dz, qi * q[j], np.float32(0.5) * (si + sig[j]), ei * seps[j], a,
                                    two_a_sqrtpi, table, tscale, tabulated)  # fmt: skip
                er += ep
                _add3(f, t, j, g * dx, g * dy, g * dz)
                sx += g * dx
                sy += g * dy
                sz += g * dz
            _add3(f, t, i, -sx, -sy, -sz)
            eb += er
        e[t] += eb
    return e.sum(), _sum_threads(f)


def pairs_vec(pos, box, idx, q, sig, seps, rc, alpha, table, half, block):
    """The vectorised kernel, now dmd's own (:func:`dmd.forces.numba_pairs.pairs_vec`: its own table and 64-row
    blocks; ``table`` and ``block`` are ignored): per row, displacements and r² of every column without branches
    (AVX-512 gathers), a branch-free compaction of the partners inside r_c, one loop without branches over them
    (tabulated erfc; LJ always: ε = 0 gives 0), then the partners' scatter. ``half=False``: a full list."""
    return dmd_pairs_vec(pos, box, idx, q, sig, seps, rc, alpha, half)


def callback_energy(kernel, box, q, sig, seps, rc, alpha, table, shape):
    """energy(pos, idx) as a ``jax.custom_vjp`` whose forward is one ``jax.pure_callback`` into ``kernel`` (energy and
    forces together); the residual is the forces, so ``jax.grad`` inside a jitted step costs one kernel call."""
    f32 = jnp.float32
    n = shape[0]
    out = (jax.ShapeDtypeStruct((), f32), jax.ShapeDtypeStruct((n, 3), f32))

    def host(p, i):  # jax hands int32 buffers over with format '=i', which numba refuses: a view as '<i4' fixes it
        p = np.asarray(p).view(np.float32)
        i = np.asarray(i).view(np.int32)
        e, g = kernel(p, box, i, q, sig, seps, rc, alpha, table, True, 64)
        return np.float32(e), g

    def call(p, i):
        return jax.pure_callback(host, out, p, i)

    @jax.custom_vjp
    def energy(p, i):
        return call(p, i)[0]

    def fwd(p, i):
        e, g = call(p, i)
        return e, g

    def bwd(g, ct):
        return ct * g, None

    energy.defvjp(fwd, bwd)
    return energy


def openmm_arms(threads):
    """OpenMM CPU (``threads``) on the same system: its direct-space nonbonded (group 1: real-space PME + LJ and
    the exceptions), its reciprocal part (group 2) and one LangevinMiddle 2 fs step, as timing callables."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u

    from dmd.openmm_system.loading import openmm_system_from_pdb

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    omm, structure, _ = openmm_system_from_pdb(
        pdb, ["amber14-all.xml", "amber14/tip3p.xml"], "PME", 0.9, "HBonds", True
    )
    for f in omm.getForces():
        f.setForceGroup(0)
        if isinstance(f, mm.NonbondedForce):
            f.setForceGroup(1)
            f.setReciprocalSpaceForceGroup(2)
    li = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picoseconds)
    plat = mm.Platform.getPlatformByName("CPU")
    ctx = mm.Context(omm, li, plat, {"Threads": str(threads)})
    ctx.setPositions(structure.positions)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)

    def group(g):
        return lambda: ctx.getState(getForces=True, groups={g})

    return {
        f"OpenMM CPU({threads}) direct-space nonbonded": (group(1), ()),
        f"OpenMM CPU({threads}) reciprocal PME": (group(2), ()),
        f"OpenMM CPU({threads}) LangevinMiddle step": (lambda: li.step(1), ()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skin", type=float, default=0.131)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    from bench_cluster_pairs import reference

    from dmd.forces.neighbors import pair_neighbor_list
    from dmd.forces.nonbonded import pair_energy_full

    s = setup(args.skin)
    n = len(s["pos"])
    f32 = jnp.float32
    pos, box = jnp.asarray(s["pos"], f32), jnp.asarray(s["box"], f32)
    q, sig, seps = (jnp.asarray(s[k], f32) for k in ("q", "sig", "seps"))
    rc, alpha = float(s["rc"]), float(s["alpha"])
    lists = {}
    for full in (False, True):
        nfn = pair_neighbor_list(n, s["box"], rc, skin=args.skin, excluded_pairs=s["excluded"], full=full,
                                 occupancy_multiplier=1.1, min_headroom=16)  # fmt: skip
        lists[full] = nfn.allocate(pos).idx
    idx, fidx = lists[False], lists[True]
    pair = pair_energy_full("PME", rc, alpha=alpha, half=True)
    present = jax.jit(jax.value_and_grad(lambda y, idx: pair(y, box, idx, q, sig, seps)))
    present_grad = jax.jit(jax.grad(lambda y, idx: pair(y, box, idx, q, sig, seps)))
    nt = numba.get_num_threads()
    h = {k: np.asarray(a) for k, a in zip(("pos", "box", "q", "sig", "seps"), (pos, box, q, sig, seps), strict=True)}
    hidx, hfidx = np.asarray(idx, np.int32), np.asarray(fidx, np.int32)
    table = erfc_table(rc, alpha)
    consts = (h["q"], h["sig"], h["seps"], rc, alpha, table)

    def half(tab):
        return lambda p: pairs_half(np.asarray(p), h["box"], hidx, *consts, tab, 64)

    def vec(threads, half=True):
        def fn(p):
            numba.set_num_threads(threads)
            out = pairs_vec(np.asarray(p), h["box"], hidx if half else hfidx, *consts, half, 64)
            numba.set_num_threads(nt)
            return out

        return fn

    energy = callback_energy(pairs_vec, h["box"], *consts, hidx.shape)
    cb_grad = jax.jit(jax.grad(energy))

    def scan20(p, i):
        def body(c, _):
            g = jax.grad(energy)(c, i)
            return c - 1e-9 * g, None  # a dependent chain, as a step would be

        return jax.lax.scan(body, p, None, length=20)[0]

    scan_cb = jax.jit(scan20)
    e0, g0 = present(pos, idx)
    g0 = np.asarray(g0)
    e64 = float(reference(s, np.asarray(idx))[0])
    print(f"villin + water N = {n}, half list width {idx.shape[1]}, full {fidx.shape[1]}, numba {numba.__version__},"
          f" threads {nt} | {_load()}")  # fmt: skip
    arms = {
        "present XLA half list, value_and_grad": (present, (pos, idx)),
        "present XLA half list, grad": (present_grad, (pos, idx)),
        "numba half, A&S erfc": (half(False), (pos,)),
        "numba half, table erfc": (half(True), (pos,)),
        "numba half, table erfc, vectorised": (vec(nt), (pos,)),
        "numba half, table erfc, vectorised, 1 thread": (vec(1), (pos,)),
        "numba full list, vectorised": (vec(nt, False), (pos,)),
        "numba vectorised, custom_vjp grad (jit)": (cb_grad, (pos, idx)),
    }
    print(f"{'float64 reference':40s} energy {e64:.3f}")
    print(f"{'present':40s} energy {float(e0):.3f} (rel {abs(float(e0) - e64) / abs(e64):.2e} vs float64)")
    for name, (fn, a) in arms.items():
        if not name.startswith("numba"):
            continue
        t0 = time.perf_counter()
        out = fn(*a)
        first = time.perf_counter() - t0  # numba's compilation where the kernel is new
        e1, g1 = out if isinstance(out, tuple) else (float("nan"), out)
        g1 = np.asarray(g1)
        rel = abs(float(e1) - float(e0)) / abs(float(e0))
        df = float(np.max(np.abs(g1 - g0)))
        r64 = abs(float(e1) - e64) / abs(e64)
        print(f"{name:40s} energy {float(e1):.3f} (rel {rel:.2e}, vs float64 {r64:.2e}); max |dF| {df:.4f}"
              f" of |F|max {np.abs(g0).max():.0f}; first call {first:.1f} s")  # fmt: skip
    arms.update(openmm_arms(nt))
    for r in range(args.rounds):
        for name, (fn, a) in arms.items():
            wmin, wmed, cmin, cmed = _time(fn, a, args.repeat)
            print(f"round {r} {name:40s} wall {wmin:6.2f} (med {wmed:6.2f}) ms, CPU {cmin:6.2f} (med {cmed:6.2f}) ms"
                  f" | {_load()}")  # fmt: skip
        jax.block_until_ready(scan_cb(pos, idx))
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(scan_cb(pos, idx))
        print(f"round {r} {'numba vectorised, the same in a 20-step lax.scan, per step':40s}"
              f" wall {(time.perf_counter() - t0) * 50:6.2f} ms, CPU {(time.process_time() - c0) * 50:6.2f} ms"
              f" | {_load()}")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count()))
    main()
