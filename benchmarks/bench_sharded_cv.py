"""Benchmark: the batched cross-validation step of reweighting, frames unsharded vs sharded over forced host devices.

One process with ``--devices`` forced CPU devices runs the same batch of ``--batch`` Adam fits (as
``fitting.reweight.select_theta`` does: one vmapped loop, the store read once per step for all fits) three ways,
back to back: the store on one device unsharded, a 1-device frames mesh (the shard_map path alone) and the frames
sharded over all devices. Printed per step: wall and CPU seconds (user + system of the process), their ratios to the
unsharded run and the machine's load. Forced host devices share the machine's cores, so the sharded run can at best
match the unsharded one here (the figure says whether sharding costs extra work); the speed-up comes from devices
that bring their own cores or memory (several processes or hosts, accelerators).

    python benchmarks/bench_sharded_cv.py [--frames 1000] [--voxels 50000] [--devices 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--voxels", type=int, default=50_000)
    ap.add_argument("--devices", type=int, default=4, help="forced host devices of the sharded run")
    ap.add_argument("--batch", type=int, default=8, help="fits per batched step (θ × folds)")
    ap.add_argument("--steps", type=int, default=3, help="Adam steps per timed call")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per layout (best kept)")
    args = ap.parse_args(argv)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import numpy as np

    from fitting import reweight as rw
    from fitting.fstore import FrameStore
    from fitting.sharding import frame_mesh

    t, m, b = args.frames, args.voxels, args.batch
    rng = np.random.default_rng(0)
    store = FrameStore(z=rng.standard_normal((t, 3, m), dtype=np.float32), f_mean=np.zeros(m, np.complex64))
    y = rng.standard_normal(m).astype(np.float32)
    spec = rw.FitSpec(steps=args.steps, learning_rate=0.05)
    logits0, masks, thetas = np.zeros((b, t), np.float32), np.ones((b, m), bool), np.linspace(0, 0.1, b)
    res = {"frames": t, "voxels": m, "batch": b, "devices": args.devices, "cpu_count": os.cpu_count()}
    layouts = {
        "unsharded": None,
        "mesh of 1 device": frame_mesh(jax.devices()[:1]),
        f"sharded over {args.devices} devices": frame_mesh(),
    }
    base = None
    print(f"batched cross-validation: {b} fits, T={t} frames × M={m} voxels, per Adam step")
    for name, mesh in layouts.items():
        prob = rw.make_problem(store, y, mesh=mesh)
        run = lambda: jax.block_until_ready(rw.fit_batch(prob, spec, logits0, masks, thetas))  # noqa: B023
        run()  # compile
        best = None
        for _ in range(args.repeats):
            c0, t0 = _cpu_seconds(), time.perf_counter()
            run()
            wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
            best = (wall, cpu) if best is None or wall < best[0] else best
        wall, cpu = best[0] / args.steps, best[1] / args.steps
        base = base or (wall, cpu)
        load = os.getloadavg()[0]
        res[name] = {"wall_s": wall, "cpu_s": cpu, "load": load}
        print(
            f"  {name:24s} wall {wall * 1e3:8.1f} ms ({wall / base[0]:.2f}x)  CPU {cpu * 1e3:8.1f} ms "
            f"({cpu / base[1]:.2f}x)  load {load:.1f}",
            flush=True,
        )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
