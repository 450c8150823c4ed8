"""Benchmark: neighbour-list rebuilds of vmapped fit replicas, one rebuild decision per batch vs per replica.

``fitting.forcefield_sampling.sample_replicas`` runs R replicas of an LJ fluid as one ``jax.vmap`` on one device.
Each replica's cell list rebuilds when its two largest displacements sum past the skin; under ``vmap`` that
per-replica test turns ``lax.cond`` into a select that computes the rebuild for every replica at every step. With
``CellNeighborListFns.batch_axis`` the batch takes one decision per step (rebuild all when any needs it) and the cond
stays a branch. Both run here back to back on the same replicas (the per-replica form by switching the batch axis
off): CPU and wall seconds per sampling call after compilation, their ratio, the largest
frame difference between the two forms, and the machine's load.

    python benchmarks/bench_replica_neighbors.py [--atoms 256] [--replicas 4] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=256)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--steps", type=int, default=400, help="MD steps per replica and call")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from dmd.models import lj_fluid
    from fitting import forcefield_sampling as fs
    from fitting.forcefield import FitConfig

    lj = lj_fluid(args.atoms, density=0.7, cutoff=0.5, temperature=120.0, dtype=jnp.float32, seed=1)
    cfg = FitConfig(steps=args.steps, equilibration=0, report_every=20, dt=0.01, temperature=120.0, friction=2.0,
                    progress=False)  # fmt: skip
    smp = fs.make_sampler(lj, cfg)
    pos = np.repeat(np.asarray(lj.positions)[None], args.replicas, axis=0)
    seeds = [fs.replica_seed(0, 1, r) for r in range(args.replicas)]
    one = jax.devices()[:1]
    batched = fs._batched_lists  # the switch the benchmark flips
    res = {"atoms": args.atoms, "replicas": args.replicas, "steps": args.steps, "cpu_count": os.cpu_count()}
    frames = {}
    print(f"LJ N={args.atoms}, {args.replicas} replicas vmapped on one device, {args.steps} steps per call")
    for name, on in (("per replica (select)", False), ("per batch (cond)", True)):
        fs._batched_lists = lambda nbr, _on, on=on: batched(nbr, on and _on)
        fs._VMAPPED.clear()
        run = lambda: fs.sample_replicas(lj, lj.params, cfg, seeds=seeds, positions=pos, sampler=smp, devices=one)
        frames[name] = run()[0]  # compile
        best = None
        for _ in range(args.repeats):
            c0, t0 = _cpu(), time.perf_counter()
            run()
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            best = (wall, cpu) if best is None or cpu < best[1] else best
        res[name] = {"wall_s": best[0], "cpu_s": best[1], "load": os.getloadavg()[0]}
        print(f"  {name:22s} wall {best[0]:.3f} s  CPU {best[1]:.3f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    fs._batched_lists = batched
    a, b = (res[k]["cpu_s"] for k in ("per replica (select)", "per batch (cond)"))
    diff = float(np.abs(frames["per replica (select)"] - frames["per batch (cond)"]).max())
    res.update(cpu_ratio=a / b, max_frame_diff_nm=diff)
    print(f"  per-batch decision: {a / b:.2f}x less CPU; frames differ by at most {diff:.1e} nm (round-off of the "
          "extra rebuilds, grown over the run)")  # fmt: skip
    print(json.dumps(res))


if __name__ == "__main__":
    main()
