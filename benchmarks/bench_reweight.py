"""Benchmark: time per reweighting optimizer step and effective memory bandwidth.

One optimizer step (value + gradient of −CC in the softmax logits, Adam update) streams the frame store
Z [T, 3, M] twice: S = Σ_t w_t Z_t forward and Z·∂L/∂S backward. The effective bandwidth 2·|Z|/t_step
is compared with a plain numpy streaming read (``Z.sum()``) of the same array in the same run
(target ≥ 50 %). Also timed: a batch of B fits per step (cross-validation), which streams Z once for all B.

Usage::

    python benchmarks/bench_reweight.py --frames 1000 --voxels 200000     # fits a shared 24 GB machine
    python benchmarks/bench_reweight.py --frames 1000 --voxels 1000000    # the real size (12 GB store)
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np


def _best(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--voxels", type=int, default=200_000)
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per timed fit")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="fits per batched step (0: skip)")
    args = ap.parse_args(argv)

    from fitting import reweight as rw
    from fitting.fstore import FrameStore

    t, m = args.frames, args.voxels
    rng = np.random.default_rng(0)
    z = rng.standard_normal((t, 3, m), dtype=np.float32)
    z[:, 0] = z[:, 1] ** 2 + z[:, 2] ** 2  # |G|² row, as in a real store
    store = FrameStore(z=z, f_mean=np.zeros(m, np.complex64))
    y = rng.standard_normal(m).astype(np.float32)
    nbytes = z.nbytes
    print(f"store Z: {t} frames × 3 × {m} voxels float32 = {nbytes / 1e9:.2f} GB; devices: {jax.devices()}")

    t_np, _ = _best(lambda: z.sum(dtype=np.float32), args.repeats)
    bw_np = nbytes / t_np
    print(f"numpy streaming read (Z.sum): {t_np * 1e3:.1f} ms  -> {bw_np / 1e9:.2f} GB/s")

    prob = rw.make_problem(store, y)
    mask = np.ones((1, m), bool)
    spec = rw.FitSpec(steps=args.steps, learning_rate=0.05)
    l0 = np.zeros((1, t), np.float32)
    run = lambda: jax.block_until_ready(rw.fit_batch(prob, spec, l0, mask, [0.0]))
    run()  # compile
    t_fit, t_med = _best(run, args.repeats)
    t_step = t_fit / args.steps
    bw = 2 * nbytes / t_step
    print(
        f"Adam step (value+grad of -CC, softmax, update): {t_step * 1e3:.1f} ms best, {t_med / args.steps * 1e3:.1f} ms"
        f" median  -> effective {bw / 1e9:.2f} GB/s = {bw / bw_np:.0%} of the numpy read"
    )
    if args.batch:
        b = args.batch
        lb, mb = np.zeros((b, t), np.float32), np.ones((b, m), bool)
        runb = lambda: jax.block_until_ready(rw.fit_batch(prob, spec, lb, mb, np.linspace(0, 0.1, b)))
        runb()
        tb, _ = _best(runb, args.repeats)
        print(
            f"batched: {b} fits per step {tb / args.steps * 1e3:.1f} ms = "
            f"{tb / args.steps / b * 1e3:.1f} ms per fit-step "
            f"({t_step * b / (tb / args.steps):.1f}x faster than {b} separate fits)"
        )


if __name__ == "__main__":
    main()
