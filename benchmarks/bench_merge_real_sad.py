"""Benchmark: anomalous signal from unscaled real data (issue 22 item 3), dmd vs the conventional merge, same run.

Data: $DMD_GAMMA_XE or --data = CCP4's ccp4i2/demo_data/gamma, prepared by tests/data/merging/gamma_xe.py
(Xe-SAD, PDB 1GYU, CCP4i2 tutorial; 44,953 observations, 100 images): I = AIMLESS's
scaled intensities with its scales undone, ISCALED = as AIMLESS scaled them. Reference (the peer): AIMLESS's merge
of the same integration. For every merge it prints CCanom (ΔF = F(+) − F(−)) and CC(I) against the reference,
overall and per shell (:mod:`analysis.merging.reference`), CPU and wall time, the load; then the ratio of dmd's
CCanom from unscaled data to dmd's from the AIMLESS-scaled observations and to the σ-weighted mean of those.

    python benchmarks/bench_merge_real_sad.py            # 6 merges, a few minutes on 2 cores
    python benchmarks/bench_merge_real_sad.py --steps 300 --holdout 0.05
    python benchmarks/bench_merge_real_sad.py --careless  # also careless mono --anomalous on the unscaled data

``--careless`` runs the peer (``careless mono --anomalous``, 10,000 iterations, metadata BATCH,dHKL,XDET,YDET,ROT;
installed as in benchmarks/bench_merge.py, in its own virtualenv) on the same unscaled observations and scores its
I(±), F(±) the same way; ``--reuse-careless`` takes an earlier run's outputs and timing in ``--out-dir``.

Measured (600 steps, nothing held out, load ~7 on 2 cores, docs/merging.md "Real anomalous data"): CCanom unscaled
→ dmd with the smoothness prior 0.948, default 0.920, per-image scale + B 0.815, plain mean 0.680; AIMLESS-scaled →
dmd with the prior 0.948, σ-weighted mean 0.984.
With ``--careless`` (load 12.5, Dec 2026): careless 0.5.4 stopped at step 927 of 10,000 on numerical issues (an
infinite gradient norm), CCanom 0.369, CC(I) 0.717, 21,874 reflections kept (dmd with the prior: 21,874).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.merging import (  # noqa: E402
    MergeConfig,
    french_wilson,
    inverse_variance_merge,
    merge,
    read_unmerged,
    scale_b_merge,
)
from analysis.merging.reference import compare_with_reference, reference_on_rows  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "data" / "merging"))
import gamma_xe  # noqa: E402

META = ["XDET", "YDET", "ROT"]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_merge import CARELESS_VENV, ensure_careless, on_rows, run_careless  # noqa: E402

SMOOTH = {"image_smooth_sd": 0.001, "image_b_smooth_sd": 0.1}


def _classical(u, method):
    ib, sb, *_ = method(u)
    return ib, french_wilson(ib, sb, u.inv_d2, u.epsilon, u.centric)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--holdout", type=float, default=0.0)
    ap.add_argument("--out", default=None, help="optional JSON of every figure")
    ap.add_argument("--data", default=None, help=f"CCP4's ccp4i2/demo_data/gamma folder (default: ${gamma_xe.ENV})")
    ap.add_argument("--careless", action="store_true", help="also merge with careless (see the module docstring)")
    ap.add_argument("--careless-steps", type=int, default=10_000)
    ap.add_argument("--careless-options", default="", help="extra careless options, space-separated")
    ap.add_argument("--reuse-careless", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench_out" / "merge_real_sad")
    args = ap.parse_args(argv)
    if args.data:
        os.environ[gamma_xe.ENV] = args.data
    src = gamma_xe.source_dir()
    if src is None:
        print(f"no data: pass --data or set {gamma_xe.ENV} to CCP4's ccp4i2/demo_data/gamma", file=sys.stderr)
        return 2
    unmerged_path, merged_path = gamma_xe.prepare(src, args.out_dir)
    inputs = {
        "unscaled": read_unmerged(unmerged_path, anomalous=True, metadata=META),
        "AIMLESS-scaled": read_unmerged(
            unmerged_path, anomalous=True, metadata=META, intensity="ISCALED", sigma="SIGISCALED"
        ),
    }
    u0 = inputs["unscaled"]
    i_ref, s_ref = reference_on_rows(u0, merged_path)
    runs = [
        ("AIMLESS-scaled", "sigma-weighted mean", None),
        ("AIMLESS-scaled", "dmd, smoothness prior", SMOOTH),
        ("unscaled", "sigma-weighted mean", None),
        ("unscaled", "per-image scale + B", None),
        ("unscaled", "dmd, default", {}),
        ("unscaled", "dmd, smoothness prior", SMOOTH),
    ] + ([("unscaled", "careless", "careless")] if args.careless else [])
    results = []
    print(f"{u0.n_obs} observations, {u0.n_refl} reflections (mates apart), {u0.n_images} images; load at start "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for data_name, merge_name, extra in runs:
        u = inputs[data_name]
        t0, c0 = time.perf_counter(), time.process_time()
        tag = ""
        if extra == "careless":
            exe, version = ensure_careless(CARELESS_VENV)
            opts = [f"--iterations={args.careless_steps}", "--mlp-layers=10", "--image-layers=2", "--seed=0"]
            opts += ["--anomalous", "--intensity-key=I", "--uncertainty-key=SIGI", *args.careless_options.split()]
            base = args.out_dir / "careless_normal"
            t = run_careless(exe, unmerged_path, base, opts, "BATCH,dHKL," + ",".join(META), args.reuse_careless)
            i_est, f_est = on_rows(u, f"{base}_0.mtz", "I"), on_rows(u, f"{base}_0.mtz", "F")
            steps = len(Path(f"{base}_history.csv").read_text().splitlines()) - 1
            tag = f" ({version}; {steps} of {args.careless_steps} steps{', reused' if t['reused'] else ''})"
        elif extra is None:
            method = scale_b_merge if "scale + B" in merge_name else inverse_variance_merge
            i_est, f_est = _classical(u, method)
        else:
            out = merge(u, MergeConfig(steps=args.steps, holdout_fraction=args.holdout, **extra))
            i_est, f_est = out.absolute["I"], out.absolute["F"]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if extra == "careless":
            wall, cpu = t["wall_s"], t["cpu_s"]  # the child process's
        c = compare_with_reference(u0, i_est, f_est, i_ref, s_ref)
        row = {
            "data": data_name,
            "merge": merge_name + tag,
            "ccanom": c["ccanom"]["overall"],
            "cc_i": c["cc_i"]["overall"],
            "kept": int(np.count_nonzero(np.isfinite(i_est))),  # reflections (mates apart) with a merged value
            "ccanom_per_shell": np.round(c["ccanom"]["per_shell"], 4).tolist(),
            "cc_i_per_shell": np.round(c["cc_i"]["per_shell"], 4).tolist(),
            "wall_s": wall,
            "cpu_s": cpu,
            "load": t["load_1min"] if extra == "careless" else os.getloadavg()[0],
        }
        results.append(row)
        print(f"{data_name:>15} {row['merge']:<24} CCanom {row['ccanom']:.4f}  CC(I) {row['cc_i']:.4f}  "
              f"kept {row['kept']}  "
              f"{wall:6.1f} s wall {cpu:6.1f} s CPU (load {row['load']:.1f})", flush=True)  # fmt: skip
        print(f"{'':>15} per shell CCanom {row['ccanom_per_shell']}\n{'':>15} per shell CC(I)  {row['cc_i_per_shell']}")
    by = {(r["data"], r["merge"]): r["ccanom"] for r in results}
    raw = by[("unscaled", "dmd, smoothness prior")]
    vs_dmd = raw / by[("AIMLESS-scaled", "dmd, smoothness prior")]
    vs_mean = raw / by[("AIMLESS-scaled", "sigma-weighted mean")]
    print(
        f"CCanom ratio dmd(unscaled) / dmd(AIMLESS-scaled) = {vs_dmd:.4f}; / the sigma-weighted mean of the "
        f"AIMLESS-scaled observations = {vs_mean:.4f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
