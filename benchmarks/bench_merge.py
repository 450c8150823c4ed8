"""Benchmark: dmd VI merging vs careless vs classical baselines on the same synthetic data, same run.

Prints CC with the true amplitudes (resolution-normalized, overall and per resolution shell), CC1/2 and
wall time for:
  * plain inverse-variance averaging, and a per-image scale + B fit then averaging (F = sqrt(max(I, 0))
    and French-Wilson F),
  * ``dmd merge`` (run as a subprocess, like careless: start-up, JIT compilation, I/O and the half-dataset
    refits included in its wall time),
  * ``careless mono`` (PyPI ``careless``, TensorFlow) installed on first use into a SEPARATE virtualenv
    (default ~/.cache/dmd-bench/careless-venv; never a dependency of dmd).
Ratios are careless wall time / dmd wall time measured in the same run.

Planning configuration (the default; a few minutes for careless on a quiet 2-core machine)::

    python benchmarks/bench_merge.py                      # 200 images, multiplicity 3, I/σ 2, ~6,700 unique
    python benchmarks/bench_merge.py --careless-likelihood both   # also careless with Student-t
    python benchmarks/bench_merge.py --quick              # small & fast smoke run (careless 1,000 steps)
    python benchmarks/bench_merge.py --no-careless        # dmd and classical only
    python benchmarks/bench_merge.py --reuse-careless     # careless's outputs and time from an earlier run here

dmd runs: Normal, Student-t and ``--likelihood auto`` (``--likelihood normal,student,auto``). Also writes
``bench_merge_cc.png`` (CC(true) per shell) and ``bench_merge.json`` in ``--out-dir``. Measured (one run, load ~17
on 2 cores; careless reused from a run at load ~15): CC(true) careless 0.870 in 2,289 s; dmd Normal 0.889 (48 s),
Student-t 0.905 (54 s), auto→Student-t 0.902 (91 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.merging import classical, quality  # noqa: E402
from analysis.merging.io import read_merged  # noqa: E402
from analysis.merging.synth import SyntheticConfig, make_synthetic, write_synthetic  # noqa: E402


def ensure_careless(venv: Path) -> Path:
    exe = venv / "bin" / "careless"
    if exe.exists():
        return exe
    print(f"installing careless into {venv} (one-off; large: TensorFlow) ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "careless"], check=True)
    print(f"  installed in {time.perf_counter() - t0:.0f} s", flush=True)
    return exe


def _rows_by_hkl(hkl):
    return {tuple(h): i for i, h in enumerate(np.asarray(hkl, int).tolist())}


def _align(index, hkl, values):
    """Scatter ``values`` of reflections ``hkl`` onto rows of our reflection list (NaN where absent)."""
    out = np.full(len(index), np.nan)
    for h, v in zip(np.asarray(hkl, int).tolist(), values, strict=True):
        i = index.get(tuple(h))
        if i is not None:
            out[i] = v
    return out


def run_careless(exe: Path, mtz: Path, out_dir: Path, args, likelihood: str):
    base = out_dir / f"careless_{likelihood}"
    cmd = [
        str(exe),
        "mono",
        "--disable-gpu",
        f"--iterations={args.careless_steps}",
        f"--mlp-layers={args.careless_mlp_layers}",
        f"--image-layers={args.careless_image_layers}",
        "--merge-half-datasets",
        f"--seed={args.seed}",
    ]
    if likelihood == "student":
        cmd.append(f"--studentt-likelihood-dof={args.dof}")
    cmd += ["BATCH,dHKL,XDET,YDET", str(mtz), str(base)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    stamp = Path(f"{base}.run.json")  # input hash, command and wall time of the last careless run here
    sha = hashlib.sha256(Path(mtz).read_bytes()).hexdigest()
    prev = json.loads(stamp.read_text()) if stamp.exists() else {}
    if args.reuse_careless and prev.get("input_sha256") == sha and prev.get("cmd") == cmd[1:]:
        wall = prev["wall_s"]
        reused = f", reused: ran at load {prev.get('load_1min', float('nan')):.1f}"
        print(f"  reusing careless ({likelihood}) outputs of an earlier run on the same input: {wall:.0f} s")
    else:
        reused = ""
        t0 = time.perf_counter()
        with open(f"{base}.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - t0
        load = os.getloadavg()[0]
        stamp.write_text(json.dumps({"input_sha256": sha, "cmd": cmd[1:], "wall_s": wall, "load_1min": load}))
    hkl, cols, _ = read_merged(f"{base}_0.mtz")
    x_hkl, x, _ = read_merged(f"{base}_xval_0.mtz")
    sel = [(x["repeat"] == 0) & (x["half"] == h) for h in (0, 1)]
    return wall, (hkl, cols["F"]), [(x_hkl[s], x["F"][s], x["N"][s]) for s in sel], reused


def run_dmd(mtz: Path, out_dir: Path, args, likelihood: str):
    out = out_dir / f"dmd_{likelihood}.mtz"
    cmd = [
        sys.executable,
        "-m",
        "dmd.cli",
        "merge",
        str(mtz),
        "--out",
        str(out),
        "--metadata",
        "XDET,YDET",
        "--steps",
        str(args.steps),
        "--holdout",
        "0",
        "--half-datasets",
        "--no-progress",
        "--overwrite",
        "--likelihood",
        likelihood,
        "--dof",
        str(args.dof),
        "--seed",
        str(args.seed),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    hkl, cols, _ = read_merged(out)
    summary = json.loads(Path(out.with_suffix(".json")).read_text())
    # normalized amplitudes E (F is on the Wilson-scaled absolute scale; CC(true) is per-shell normalized anyway)
    return wall, (hkl, cols["E"] if "E" in cols else cols["F"]), summary


def _choice(summary) -> str:
    c = summary["quality"].get("likelihood_choice")
    return f"->{c['chosen']}" if c else ""


def main(argv=None):
    """The benchmark (module docstring).

    Over 100 lines: a linear script (options, data, dmd runs, the careless peer, the classical baselines, the report)
    over one set of options and result rows.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small data, careless 1,000 steps")
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--multiplicity", type=float, default=3.0)
    p.add_argument("--isigi", type=float, default=2.0)
    p.add_argument("--d-min", type=float, default=2.13)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600, help="dmd optimizer steps")
    p.add_argument("--dof", type=float, default=4.0, help="Student-t dof (dmd and careless)")
    p.add_argument(
        "--likelihood",
        default="normal,student,auto",
        help="dmd runs, comma-separated among normal, student, auto (default all three); 'both': normal,student",
    )
    p.add_argument("--careless-likelihood", choices=["normal", "student", "both"], default="normal")
    p.add_argument("--careless-steps", type=int, default=10_000)
    p.add_argument("--careless-mlp-layers", type=int, default=10)
    p.add_argument("--careless-image-layers", type=int, default=2)
    p.add_argument("--careless-venv", type=Path, default=Path.home() / ".cache" / "dmd-bench" / "careless-venv")
    p.add_argument("--no-careless", action="store_true")
    p.add_argument(
        "--reuse-careless",
        action="store_true",
        help="reuse careless's outputs and wall time from an earlier run in --out-dir on the same input MTZ with the "
        "same command (careless takes ~5 min idle, far longer on a shared machine); the table says so",
    )
    p.add_argument("--shells", type=int, default=10)
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench_out" / "merge")
    args = p.parse_args(argv)
    if args.quick:
        args.n_images, args.d_min, args.careless_steps = 60, 3.0, 1000
    args.out_dir.mkdir(parents=True, exist_ok=True)
    exe = None if args.no_careless else ensure_careless(args.careless_venv)

    cfg = SyntheticConfig(
        d_min=args.d_min, n_images=args.n_images, multiplicity=args.multiplicity, isigi=args.isigi, seed=args.seed
    )
    data = make_synthetic(cfg)
    u = data.unmerged
    mtz = args.out_dir / "synthetic_unmerged.mtz"
    write_synthetic(mtz, data)
    print(
        f"synthetic {cfg.spacegroup}: {u.n_refl} unique, {u.n_obs} observations, {u.n_images} images, "
        f"multiplicity {u.n_obs / u.n_refl:.2f}, mean I/σ {np.mean(u.intensity / u.sigma):.2f}, "
        f"{int(data.outlier.sum())} outliers",
        flush=True,
    )
    index = _rows_by_hkl(u.hkl)
    ns = args.shells
    rows = []

    def add(name, f_est, wall, cchalf=None):
        ct = quality.cc_truth(f_est, data.f_true, u.inv_d2, ns, mask=np.isfinite(f_est))
        rows.append(
            {
                "method": name,
                "cc_true": ct["overall"],
                "cc_true_per_shell": ct["per_shell"],
                "cchalf": None if cchalf is None else cchalf["overall"],
                "cchalf_per_shell": None if cchalf is None else cchalf["per_shell"],
                "wall_s": wall,
                "d_range": ct["d_range"],
            }
        )
        print(
            f"  {name:44s} CC(true) {ct['overall']:.4f}  CC1/2 "
            f"{'  -   ' if cchalf is None else format(cchalf['overall'], '.4f')}  wall {wall:8.2f} s",
            flush=True,
        )

    t0 = time.perf_counter()
    ib, sb, _ = classical.inverse_variance_merge(u)
    t_avg = time.perf_counter() - t0
    add("average (sqrt)", classical.amplitudes(ib, sb, u), t_avg)
    add("average (French-Wilson)", classical.amplitudes(ib, sb, u, "french_wilson"), t_avg)
    t0 = time.perf_counter()
    ib, sb, _, _, _ = classical.scale_b_merge(u)
    t_sb = time.perf_counter() - t0
    add("scale+B (sqrt)", classical.amplitudes(ib, sb, u), t_sb)
    add("scale+B (French-Wilson)", classical.amplitudes(ib, sb, u, "french_wilson"), t_sb)

    lik = ["normal", "student"] if args.likelihood == "both" else args.likelihood.split(",")
    dmd_wall = {}
    for lk in lik:
        wall, (hkl, f), summ = run_dmd(mtz, args.out_dir, args, lk)
        dmd_wall[lk] = wall
        ch = summ["quality"]["cchalf"]
        add(
            f"dmd VI ({lk}{_choice(summ)}, {args.steps} steps)",
            _align(index, hkl, f),
            wall,
            {"overall": ch["overall"], "per_shell": np.asarray(ch["per_shell"], float)},
        )

    if exe is not None:
        clik = ["normal", "student"] if args.careless_likelihood == "both" else [args.careless_likelihood]
        for lk in clik:
            print(f"  running careless ({lk}, {args.careless_steps} steps) ...", flush=True)
            wall, (hkl, f), halves, reused = run_careless(exe, mtz, args.out_dir, args, lk)
            f1 = _align(index, halves[0][0], halves[0][1])
            f2 = _align(index, halves[1][0], halves[1][1])
            ok = np.isfinite(f1) & np.isfinite(f2)
            counts = np.stack([ok, ok]).astype(int)
            ch = quality.cc_half(np.nan_to_num(f1), np.nan_to_num(f2), u.inv_d2, counts, ns)
            add(f"careless ({lk}, {args.careless_steps} steps{reused})", _align(index, hkl, f), wall, ch)

    print("\nCC(true) per resolution shell (low → high resolution):")
    d = rows[0]["d_range"]
    print(" " * 46 + " ".join(f"{hi:5.2f}" for _, hi in d) + "  (d_min of shell, Å)")
    for r in rows:
        print(f"  {r['method']:44s}" + " ".join(f"{c:5.3f}" for c in r["cc_true_per_shell"]))
    care = [r for r in rows if r["method"].startswith("careless")]
    mine = [r for r in rows if r["method"].startswith("dmd")]
    ratios = {}
    for c in care:
        for m in mine:
            key = f"{c['method']} / {m['method']}"
            ratios[key] = c["wall_s"] / m["wall_s"]
            print(f"wall-time ratio {key}: {ratios[key]:.1f}x;  ΔCC(true) = {m['cc_true'] - c['cc_true']:+.4f}")
    print(f"(timings on a shared machine, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: compare ratios)")
    result = {
        "config": vars(args) | {"out_dir": str(args.out_dir), "careless_venv": str(args.careless_venv)},
        "synthetic": {"n_refl": u.n_refl, "n_obs": u.n_obs, "n_images": u.n_images},
        "rows": rows,
        "ratios": ratios,
    }
    from dmd.base.io import write_json
    from dmd.base.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(7, 4.2))
    x = [0.5 * (1 / lo**2 + 1 / hi**2) for lo, hi in d]
    for r in rows:
        if r["method"].startswith(("average", "scale+B (sqrt)")):
            continue
        style = "-" if r["method"].startswith("dmd") else "--"
        ax.plot(
            x,
            r["cc_true_per_shell"],
            style,
            marker="o",
            ms=3,
            label=f"{r['method']}: {r['cc_true']:.3f}, {r['wall_s']:.0f} s",
        )
    ax.set_xlabel("1/d² (Å⁻², shell middle)")
    ax.set_ylabel("CC(F, F_true) per shell (resolution-normalized)")
    ax.legend(fontsize="x-small", title="method: CC(true) overall, wall time", title_fontsize="x-small")
    ax.set_title(
        f"synthetic hard set ({u.n_refl} unique, {u.n_obs} obs, {u.n_images} images); "
        f"load {os.getloadavg()[0]:.0f} on {os.cpu_count()} cores",
        fontsize="small",
    )
    save_figure(fig, args.out_dir / "bench_merge_cc.png")

    write_json(args.out_dir / "bench_merge.json", result)
    print(f"wrote {args.out_dir / 'bench_merge.json'}")


if __name__ == "__main__":
    main()
