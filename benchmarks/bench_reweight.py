"""Benchmark: time per reweighting optimizer step and the effective memory bandwidth it reaches.

What is read. The frame store Z [T, 3, M] float32 holds per frame and voxel |G|², Re G, Im G (G = F − F̄;
12 bytes per frame-voxel). One Adam step (value + gradient of −CC in the softmax logits, update) must read
Z twice: S = Σ_t w_t Z_t forward, then ∂L/∂w_t = ⟨Z_t, ∂L/∂S⟩ backward (the gradient needs the forward's
S over all voxels first, so the two passes cannot be merged). Hence

    effective bandwidth = 2·|Z| / t_step,        ratio = effective / (|Z| / t_numpy) = 2·t_numpy / t_step

with t_numpy a plain numpy streaming read (``Z.sum()``) of the same buffer in the same run (target ≥ 50 %).
Counted against F alone (Re, Im: 8 bytes per frame-voxel, the minimum an exact step must read twice) the
step reaches 2/3 of the figure above; both are printed.

Memory: Z is generated in place, chunk by chunk, into one 64-byte-aligned numpy buffer that numpy reads and
JAX uses through DLPack without a copy (``fitting.fstore.aligned_empty``); no second copy exists (T=1000,
M=1e6: 12 GB; the peak resident memory is printed). The script refuses to
start when less memory than |Z| + 2 GB is available. Results go to ``--out`` (JSON) as they are measured.

Usage::

    python benchmarks/bench_reweight.py --frames 1000 --voxels 200000               # 2.4 GB, a minute
    nice -n 19 python benchmarks/bench_reweight.py --frames 1000 --voxels 1000000 \\
        --steps 3 --repeats 2 --batch 0 --out bench_reweight_1e6.json                  # 12 GB: the real size
    python benchmarks/bench_reweight.py --voxels 200000 --devices 2                  # frames sharded over 2 devices
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from timing import call_times


def _best(fn, repeats):
    ts = call_times(fn, repeats)
    return float(ts.min()), float(np.median(ts))


def _peak_rss() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def _available_bytes() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float("inf")


def _generate_in_place(t, m, chunk, seed=0):
    """Z [t, 3, m] float32 filled chunk by chunk into one 64-byte-aligned buffer (shared with JAX, no copy)."""
    from fitting.fstore import aligned_empty

    rng = np.random.default_rng(seed)
    z = aligned_empty((t, 3, m), np.float32)
    for a in range(0, t, chunk):
        blk = z[a : a + chunk]
        blk[:, 1:] = rng.standard_normal((len(blk), 2, m), dtype=np.float32)  # Re G, Im G
        np.square(blk[:, 1], out=blk[:, 0])
        blk[:, 0] += np.square(blk[:, 2])  # |G|²
    return z


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--voxels", type=int, default=200_000)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per timed fit")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="fits per batched step, as in cross-validation (0: skip)")
    ap.add_argument("--devices", type=int, default=1, help="shard frames over this many host devices")
    ap.add_argument("--chunk", type=int, default=50, help="frames generated per chunk")
    ap.add_argument("--out", default=None, help="JSON file receiving the figures as they are measured")
    args = ap.parse_args(argv)
    if args.devices > 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
        )

    import jax

    from dmd.base.io import write_json
    from fitting import reweight as rw
    from fitting.fstore import FrameStore
    from fitting.sharding import frame_mesh

    t, m = args.frames, args.voxels
    nbytes = t * 3 * m * 4
    need = nbytes * (2 if args.devices > 1 else 1) + 2e9  # sharding places a second, per-device copy
    if _available_bytes() < need:
        sys.exit(f"needs {need / 1e9:.1f} GB of free memory, {_available_bytes() / 1e9:.1f} GB available")
    res = {"frames": t, "voxels": m, "store_bytes": nbytes, "devices": args.devices, "cpu_count": os.cpu_count()}

    def record(**kw):
        res.update(kw)
        if args.out:
            write_json(args.out, res)

    t0 = time.perf_counter()
    z = _generate_in_place(t, m, min(args.chunk, t))
    record(generate_s=time.perf_counter() - t0)
    print(f"store Z: {t} frames × 3 × {m} voxels float32 = {nbytes / 1e9:.2f} GB (generated in place)", flush=True)

    t_np, t_np_med = _best(lambda: z.sum(dtype=np.float32), args.repeats)
    bw_np = nbytes / t_np
    record(numpy_read_s=t_np, numpy_read_median_s=t_np_med, numpy_gbps=bw_np / 1e9)
    print(f"numpy streaming read (Z.sum): {t_np * 1e3:.1f} ms -> {bw_np / 1e9:.2f} GB/s", flush=True)

    store = FrameStore(z=z, f_mean=np.zeros(m, np.complex64))
    y = np.random.default_rng(1).standard_normal(m).astype(np.float32)
    mesh = frame_mesh() if args.devices > 1 else None
    prob = rw.make_problem(store, y, mesh=mesh)
    if mesh is None:
        assert prob.z.unsafe_buffer_pointer() == z.ctypes.data  # JAX reads the numpy buffer itself: one copy
    else:
        del store, z  # the sharded copy replaces the generated buffer
    spec = rw.FitSpec(steps=args.steps, learning_rate=0.05)
    l0, mask = np.zeros((1, t), np.float32), np.ones((1, m), bool)
    run = lambda: jax.block_until_ready(rw.fit_batch(prob, spec, l0, mask, [0.0]))
    run()  # compile
    t_fit, t_med = _best(run, args.repeats)
    t_step = t_fit / args.steps
    bw = 2 * nbytes / t_step
    record(step_s=t_step, step_median_s=t_med / args.steps, effective_gbps=bw / 1e9, ratio_to_numpy=bw / bw_np)
    print(
        f"Adam step (value+grad of -CC, softmax, update): {t_step * 1e3:.1f} ms best, "
        f"{t_med / args.steps * 1e3:.1f} ms median\n"
        f"  reads 2·|Z| = {2 * nbytes / 1e9:.2f} GB -> effective {bw / 1e9:.2f} GB/s = {bw / bw_np:.0%} of the numpy "
        f"read (target ≥ 50%); counting only F's 8 bytes: {bw * 2 / 3 / 1e9:.2f} GB/s = {bw * 2 / 3 / bw_np:.0%}\n"
        f"  one step = {t_step / t_np:.2f} numpy reads of Z",
        flush=True,
    )
    if args.batch:
        b = args.batch
        lb, mb = np.zeros((b, t), np.float32), np.ones((b, m), bool)
        runb = lambda: jax.block_until_ready(rw.fit_batch(prob, spec, lb, mb, np.linspace(0, 0.1, b)))
        runb()
        tb, _ = _best(runb, args.repeats)
        per = tb / args.steps / b
        record(batch=b, batch_step_s=tb / args.steps, batch_per_fit_step_s=per)
        print(
            f"batched: {b} fits per step {tb / args.steps * 1e3:.1f} ms = {per * 1e3:.1f} ms per fit-step "
            f"({t_step / per:.1f}x the throughput of single fits)",
            flush=True,
        )
    record(peak_rss_gb=_peak_rss() / 1e9)
    print(f"peak resident memory {res['peak_rss_gb']:.2f} GB (store {nbytes / 1e9:.2f} GB)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
