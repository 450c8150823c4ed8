"""villin + water's real-space pair force (gradient w.r.t. positions, jitted) by the XLA kernel and by the numba
kernel the engine uses on CPU in float32 (``pair_energy_full(pair_kernel="numba")``: an XLA custom call),
interleaved in ONE process; wall and CPU ms (min and median of ``--repeat``), numba's threading layer and threads.

    python benchmarks/bench_pair_kernel.py --rounds 3 [--skin 0.13] [--threads 1] [--replicas 4]
    OMP_WAIT_POLICY=ACTIVE python benchmarks/bench_pair_kernel.py   # numba's spinning OpenMP threads
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skin", type=float, default=0.13)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: all cores)")
    ap.add_argument("--replicas", type=int, default=0, help="also time jax.vmap over this many replicas' positions")
    args = ap.parse_args()
    if args.threads:  # numba's pool size, before numba loads: XLA's threads call the kernel (set_num_threads is
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)  # per calling thread, and this one is not XLA's)
    import openmm.app as app

    from dmd.forces.nonbonded import pair_energy_full
    from dmd.openmm_system import system_from_pdb

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    s = system_from_pdb(pdb, dtype=jnp.float32, skin=args.skin, pair_kernel="xla", **kw)
    x, md = s.positions, s.metadata
    nb = s.neighbor_fn.allocate(x)
    q = s.params["NonbondedForce"]["charge"]
    sig = jnp.full(s.n_atoms, 0.3, x.dtype)
    fns = {}
    for k in ("xla", "numba"):
        pair = pair_energy_full("PME", md["cutoff_nm"], alpha=md["pme_alpha"], half=True, pair_kernel=k)
        fns[k] = jax.jit(jax.grad(lambda y, pair=pair: pair(y, s.box, nb.idx, q, sig, sig)))
        if args.replicas:  # numba: one kernel call per replica (vmap_method="sequential")
            fns[f"{k} vmap {args.replicas}"] = jax.jit(jax.vmap(fns[k]))
    xs = x[None] + 1e-3 * jax.random.normal(jax.random.PRNGKey(0), (max(args.replicas, 1),) + x.shape, x.dtype)
    inputs = {k: (xs if "vmap" in k else x) for k in fns}
    for k, f in fns.items():
        jax.block_until_ready(f(inputs[k]))  # compile (numba: load its cache or compile)
    import numba

    print(f"numba {numba.__version__}, layer {numba.threading_layer()}, threads {numba.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, list width {nb.idx.shape[1]}")  # fmt: skip
    for r in range(args.rounds):
        for k, f in fns.items():
            ws, cs = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(inputs[k]))
                ws.append(time.perf_counter() - t0)
                cs.append(time.process_time() - c0)
            print(f"round {r} {k:13s} wall min {min(ws) * 1e3:6.1f} med {np.median(ws) * 1e3:6.1f} ms, CPU min "
                  f"{min(cs) * 1e3:6.1f} med {np.median(cs) * 1e3:6.1f} ms | load "
                  + "/".join(f"{v:.1f}" for v in os.getloadavg()), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
