"""The two numba kernels of the villin + water step called from a jitted program as XLA custom calls (the engine's
route, :mod:`dmd.forces.xla_custom_call`) against the same kernels through ``jax.pure_callback`` (the route before
it, rebuilt here), interleaved in ONE process: wall and CPU ms per call (min and median of ``--repeat``), outputs
checked equal to the bit.

* pairs: the real-space pair energy and dE/dx (``dmd.forces.numba_kernels.pairs``) on the half list;
* rebuild: the cell build of the force-field list (``dmd.forces.numba_neighbors.cell_rows``), with the XLA side's
  wrapping of the positions into cells in both programs.

    python benchmarks/bench_custom_call.py --rounds 3 [--skin 0.13]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time(f, x, repeat):
    ws, cs = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(x))
        ws.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return ws, cs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skin", type=float, default=0.13)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    import openmm.app as app

    from dmd.forces import numba_pairs as npairs
    from dmd.forces.xla_custom_call import numba_call, register_numba_target
    from dmd.openmm_system import system_from_pdb

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    s = system_from_pdb(pdb, dtype=jnp.float32, skin=args.skin, pair_kernel="numba", rebuild_kernel="numba", **kw)
    x, md, box = s.positions, s.metadata, jnp.asarray(s.box, jnp.float32)
    nb = s.neighbor_fn.allocate(x, box=s.box)
    n, rc, alpha = s.n_atoms, float(md["cutoff_nm"]), float(md["pme_alpha"])
    q = jnp.asarray(s.params["NonbondedForce"]["charge"], jnp.float32)
    sig = jnp.full(n, 0.3, jnp.float32)
    te, tg = npairs._tables(rc, alpha)
    register_numba_target(npairs.TARGET, npairs.HANDLER)
    cfg = np.array([True, npairs._BLOCK, npairs._pool_threads()], np.int32)
    out = (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((n, 3), jnp.float32))

    def host_pairs(pos, idx):  # the callback route's host function (numba_pairs._host before eng20p)
        e, g = npairs.pairs_vec(np.asarray(pos), np.asarray(box), np.asarray(idx), np.asarray(q), np.asarray(sig),
                                np.asarray(sig), rc, alpha, True)  # fmt: skip
        return np.float32(e), g

    fns = {
        "pairs custom call": jax.jit(
            lambda y: numba_call(
                npairs.TARGET, npairs.HANDLER, out, y, box, nb.idx, q, sig, sig, te, tg, np.float32(rc), cfg
            )  # fmt: skip
        ),
        "pairs callback": jax.jit(lambda y: jax.pure_callback(host_pairs, out, y, nb.idx, vmap_method="sequential")),
    }
    # the rebuild: the list function's own custom call, and the old callback on the same wrapped positions
    rows = _numba_rows(s)
    cap, cell_cap = nb.max_occupancy, nb.cell_list_capacity
    shapes = (jax.ShapeDtypeStruct((n, cap), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32))

    def host_rows(wrapped, cid):
        idx, count, _ = rows._rows(np.asarray(wrapped), np.asarray(cid), np.asarray(box), cap, cell_cap)
        return idx, np.int32(count)

    fns["rebuild custom call"] = jax.jit(lambda y: rows(y, box, cap, cell_cap)[:2])
    fns["rebuild callback"] = jax.jit(
        lambda y: jax.pure_callback(host_rows, shapes, *rows.cells.wrapped_cells(y, box), vmap_method="sequential")
    )
    for a, b in (("pairs custom call", "pairs callback"), ("rebuild custom call", "rebuild callback")):
        ra, rb = fns[a](x), fns[b](x)
        same = all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(ra, rb, strict=True))
        print(f"{a} vs {b}: outputs equal to the bit: {same}")
    import numba

    print(f"numba {numba.__version__}, layer {numba.threading_layer()}, pool {numba.config.NUMBA_NUM_THREADS}, "
          f"list width {cap}, cell capacity {cell_cap}")  # fmt: skip
    for r in range(args.rounds):
        for k, f in fns.items():
            ws, cs = _time(f, x, args.repeat)
            print(f"round {r} {k:20s} wall min {min(ws) * 1e3:6.2f} med {np.median(ws) * 1e3:6.2f} ms, CPU min "
                  f"{min(cs) * 1e3:6.2f} med {np.median(cs) * 1e3:6.2f} ms | load "
                  + "/".join(f"{v:.1f}" for v in os.getloadavg()), flush=True)  # fmt: skip


def _numba_rows(system):
    """The list function's numba rebuild (``dmd.forces.numba_rows.NumbaRows``) from its ``update`` closure."""
    for cell in system.neighbor_fn.update.__closure__:
        if type(cell.cell_contents).__name__ == "NumbaRows":
            return cell.cell_contents
    raise SystemExit("no numba rebuild in this system's list (rebuild kernel xla?)")


if __name__ == "__main__":
    main()
