"""Benchmark: dmd VI merging vs careless vs classical scaling on the same synthetic data, same run.

The synthetic hard set (:mod:`analysis.merging.synth`: 200 images, multiplicity 3, I/σ 2, strong per-image scale
and B variation, a detector surface, 0.5 % zingers) with, by default, an anomalous signal (``--anomalous-sd 0.1``:
F(±h) = F·exp(±δ), δ ~ N(0, 0.1²), an rms Bijvoet ratio |ΔF|/F ≈ 0.2; ``--anomalous-sd 0`` gives the set without
it and no CCanom). With an anomalous signal every merge keeps Friedel mates apart (``--anomalous``), so each
merged reflection has multiplicity ≈ 1.5.

Every method's amplitudes are put on the reflection rows of the same unmerged table and scored by ONE function,
:func:`score` (so dmd, careless and the classical merges are measured the same way):
  * CC(E): CC with the true amplitudes, resolution-normalized (each set divided by its shell RMS);
  * CC1/2: CC of the two half-dataset merges (images split at random into halves, scale model frozen: careless's
    ``--merge-half-datasets`` ``_xval`` file, dmd's ``--half-datasets`` ``_half1/_half2.mtz``, the classical
    merges' own halves with the full data's scales), resolution-normalized, reflections in both halves;
  * CCanom: CC of ΔF = F(+) − F(−) with the truth's (resolution-normalized), and CCanom1/2 between the halves;
  * merged: reflections with a value (of all the unmerged table's rows); wall and CPU seconds (CPU of the child
    process for dmd and careless: start-up, compilation, I/O and the half-dataset refits included).
Methods: plain inverse-variance averaging and a per-image scale + B fit then averaging (French-Wilson F);
``dmd merge`` (a subprocess) with Normal, Student-t and ``--likelihood auto``; ``careless mono`` (PyPI ``careless``,
TensorFlow) installed on first use into a SEPARATE virtualenv (default ~/.cache/dmd-bench/careless-venv; never a
dependency of dmd). Ratios are careless wall time / dmd wall time measured in the same run.

    python benchmarks/bench_merge.py                      # 200 images, ~6,700 unique (x2 with mates apart)
    python benchmarks/bench_merge.py --careless-likelihood both   # also careless with Student-t
    python benchmarks/bench_merge.py --quick              # small & fast smoke run (careless 1,000 steps)
    python benchmarks/bench_merge.py --no-careless        # dmd and classical only
    python benchmarks/bench_merge.py --reuse-careless     # careless's outputs and time from an earlier run here

Writes ``bench_merge.json``, ``bench_merge_table.md`` and ``bench_merge_cc.png`` (CC(E) per shell) in
``--out-dir``. Measured figures: docs/merging.md ("Side by side with careless").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from options import add_options  # noqa: E402

from analysis.merging import classical, quality  # noqa: E402
from analysis.merging.fit import image_halves  # noqa: E402
from analysis.merging.io import read_merged  # noqa: E402
from analysis.merging.reference import values_on_rows  # noqa: E402
from analysis.merging.synth import SyntheticConfig, make_synthetic, write_synthetic  # noqa: E402

CARELESS_VENV = Path.home() / ".cache" / "dmd-bench" / "careless-venv"


def ensure_careless(venv: Path) -> tuple[Path, str]:
    """(the careless executable, its version), installing careless into ``venv`` on first use."""
    exe = venv / "bin" / "careless"
    if not exe.exists():
        print(f"installing careless into {venv} (one-off; large: TensorFlow) ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "careless"], check=True)
        print(f"  installed in {time.perf_counter() - t0:.0f} s", flush=True)
    probe = "import importlib.metadata as m; print(m.version('careless'), m.version('tensorflow'))"
    ver = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    careless_v, tf_v = ver.stdout.split()
    return exe, f"careless {careless_v} (TensorFlow {tf_v}, CPU)"


def timed_child(cmd, **kw) -> dict:
    """Run ``cmd`` to completion: {"wall_s", "cpu_s" (user + system of the child and its threads), "load_1min",
    "load_15min" (at the end)}."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    load = os.getloadavg()
    return {"wall_s": wall, "cpu_s": cpu, "load_1min": load[0], "load_15min": load[2]}


def run_careless(exe: Path, mtz: Path, base: Path, options: list[str], metadata: str, reuse: bool) -> dict:
    """``careless mono --disable-gpu OPTIONS METADATA MTZ BASE`` (outputs ``BASE_0.mtz``, ``BASE_xval_0.mtz`` ...).

    With ``reuse``, an earlier run's outputs and timing here on the same input bytes and command are taken
    (``BASE.run.json``). Returns :func:`timed_child`'s dict plus "reused" (bool).
    """
    cmd = [str(exe), "mono", "--disable-gpu", *options, metadata, str(mtz), str(base)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    stamp = Path(f"{base}.run.json")  # input hash, command and timing of the last careless run here
    sha = hashlib.sha256(Path(mtz).read_bytes()).hexdigest()
    prev = json.loads(stamp.read_text()) if stamp.exists() else {}
    if reuse and prev.get("input_sha256") == sha and prev.get("cmd") == cmd[1:]:
        print(f"  reusing careless outputs of an earlier run on the same input: {prev['wall_s']:.0f} s", flush=True)
        return prev | {"reused": True}
    with open(f"{base}.log", "w") as log:
        t = timed_child(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    stamp.write_text(json.dumps({"input_sha256": sha, "cmd": cmd[1:]} | t))
    return t | {"reused": False}


def on_rows(u, path, label="F", select=None) -> np.ndarray:
    """Column ``label`` of a merged MTZ (``label(+)``/``label(-)`` when ``u`` and the file are anomalous) on the
    rows of the unmerged table ``u``, ``[n_refl]`` (NaN: no value). ``select``: optional (column, value) rows."""
    hkl, cols, _ = read_merged(path)
    if select is not None:
        keep = cols[select[0]] == select[1]
        hkl, cols = hkl[keep], {k: v[keep] for k, v in cols.items()}
    if u.anomalous and f"{label}(+)" in cols:
        return values_on_rows(u, hkl, cols[f"{label}(+)"], cols[f"{label}(-)"])
    return values_on_rows(u, hkl, cols[label])


def score(u, f_true, f, halves=None, n_shells: int = 10) -> dict:
    """Every figure of one method, the same way for all: CC(E) with the truth, CC1/2, CCanom (truth, halves).

    Args:
      u: the unmerged table; f_true: ``[n_refl]`` true amplitudes on its rows.
      f: ``[n_refl]`` the method's amplitudes (NaN: not merged); halves: optional (f1, f2) ``[n_refl]`` each.
    Amplitudes are resolution-normalized (divided by their shell RMS) before every CC, so the programs' different
    scales (absolute, normalized, arbitrary) do not matter and no shell dominates through the falloff.
    """
    _, idx, _ = quality.shells(u.inv_d2, n_shells)
    seen = np.isfinite(f)
    ct = quality.cc_truth(f, f_true, u.inv_d2, n_shells, mask=seen)
    out = {"cc_true": ct["overall"], "cc_true_per_shell": ct["per_shell"], "d_range": ct["d_range"]}
    out["merged"] = int(np.count_nonzero(seen))
    norm = lambda x, m: np.where(m, quality.normalize_by_shell(x, idx, n_shells, m), np.nan)
    e, t = norm(f, seen), norm(f_true, seen)
    if u.anomalous:
        out["ccanom_true"] = quality.cc_anom([e, None], u.hkl, u.spacegroup, u.inv_d2, f_ref=t)["overall"]
    if halves is not None:
        both = np.isfinite(halves[0]) & np.isfinite(halves[1])
        e1, e2 = norm(halves[0], both), norm(halves[1], both)
        ch = quality.cc_half(e1, e2, u.inv_d2, np.stack([both, both]), n_shells)
        out |= {"cchalf": ch["overall"], "cchalf_per_shell": ch["per_shell"], "half_pairs": ch["n_pairs"]}
        if u.anomalous:
            out["ccanom_half"] = quality.cc_anom([e1, e2], u.hkl, u.spacegroup, u.inv_d2)["overall"]
    return out


def classical_merges(u, seed: int):
    """[(name, f, (f1, f2), wall_s, cpu_s)]: averaging and scale + B, French-Wilson F, each with image halves
    (the same random split as dmd's; the scale + B halves use the full data's scales)."""
    half = image_halves(u.n_images, seed)[u.image]
    fw = lambda ib, sb: classical.amplitudes(ib, sb, u, "french_wilson")
    out = []
    for name in ("average (French-Wilson)", "scale+B (French-Wilson)"):
        t0, c0 = time.perf_counter(), time.process_time()
        gain = None
        if name.startswith("scale"):
            _, _, _, a, b = classical.scale_b_merge(u)
            gain = np.exp(a[u.image] - b[u.image] * u.inv_d2[u.refl] / 2.0)
        f = fw(*classical.inverse_variance_merge(u, gain)[:2])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        hv = tuple(fw(*classical.inverse_variance_merge(u, gain, obs_mask=half == i)[:2]) for i in (0, 1))
        out.append((name, f, hv, wall, cpu))
    return out


def run_dmd(mtz: Path, out_dir: Path, args, likelihood: str, anomalous: bool):
    """``dmd merge`` as a subprocess: (timing dict, F path, halves paths, summary JSON)."""
    out = out_dir / f"dmd_{likelihood}.mtz"
    cmd = [sys.executable, "-m", "dmd.cli", "merge", str(mtz), "--out", str(out), "--metadata", "XDET,YDET"]
    cmd += ["--steps", str(args.steps), "--holdout", "0", "--half-datasets", "--no-progress", "--overwrite"]
    cmd += ["--likelihood", likelihood, "--dof", str(args.dof), "--seed", str(args.seed)]
    cmd += ["--anomalous"] if anomalous else []
    t = timed_child(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    stem = out.with_suffix("")
    summary = json.loads(Path(f"{stem}.json").read_text())
    return t, out, (Path(f"{stem}_half1.mtz"), Path(f"{stem}_half2.mtz")), summary


def format_table(rows, header: str) -> str:
    """The side-by-side table in Markdown."""
    fmt = lambda r, k: "–" if r.get(k) is None else f"{r[k]:.3f}"
    lines = [
        header,
        "",
        "| method | CC(E) vs truth | CC1/2 | CCanom vs truth | CCanom1/2 | merged | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {fmt(r, 'cc_true')} | {fmt(r, 'cchalf')} | {fmt(r, 'ccanom_true')} | "
            f"{fmt(r, 'ccanom_half')} | {r['merged']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """The benchmark (module docstring).

    Over 100 lines: a linear script (options, data, classical merges, dmd runs, the careless peer, the report)
    over one set of options and result rows.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small data, careless 1,000 steps")
    add_options(
        p,
        (
            ("--n-images", int, 200),
            ("--multiplicity", float, 3.0),
            ("--isigi", float, 2.0),
            ("--d-min", float, 2.13),
            ("--anomalous-sd", float, 0.1, "sd of ln F(+)/F(-) (0: no anomalous signal)"),
            ("--seed", int, 0),
            ("--steps", int, 600, "dmd optimizer steps"),
            ("--dof", float, 4.0, "Student-t dof (dmd and careless)"),
        ),
    )
    p.add_argument(
        "--likelihood",
        default="normal,student,auto",
        help="dmd runs, comma-separated among normal, student, auto (default all three); 'both': normal,student",
    )
    p.add_argument("--careless-likelihood", choices=["normal", "student", "both"], default="normal")
    p.add_argument("--careless-steps", type=int, default=10_000)
    p.add_argument("--careless-mlp-layers", type=int, default=10)
    p.add_argument("--careless-image-layers", type=int, default=2)
    p.add_argument("--careless-venv", type=Path, default=CARELESS_VENV)
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
    exe, careless_version = (None, None) if args.no_careless else ensure_careless(args.careless_venv)
    load_start = os.getloadavg()

    knobs = ("d_min", "n_images", "multiplicity", "isigi", "anomalous_sd", "seed")
    cfg = SyntheticConfig(**{k: getattr(args, k) for k in knobs})
    data = make_synthetic(cfg)
    u = data.unmerged
    anomalous = u.anomalous
    mtz = args.out_dir / "synthetic_unmerged.mtz"
    write_synthetic(mtz, data)
    print(
        f"synthetic {cfg.spacegroup}: {u.n_refl} unique{' (Friedel mates apart)' if anomalous else ''}, "
        f"{u.n_obs} observations, {u.n_images} images, multiplicity {u.n_obs / u.n_refl:.2f}, mean I/σ "
        f"{np.mean(u.intensity / u.sigma):.2f}, {int(data.outlier.sum())} outliers, anomalous sd {cfg.anomalous_sd}; "
        f"load at start {load_start[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    ns = args.shells
    rows = []

    def add(name, f, halves, timing, **extra):
        r = {"method": name} | score(u, data.f_true, f, halves, ns) | timing | extra
        rows.append(r)
        fmt = lambda k: "  –  " if r.get(k) is None else format(r[k], ".3f")
        print(
            f"  {name:40s} CC(E) {fmt('cc_true')}  CC1/2 {fmt('cchalf')}  CCanom {fmt('ccanom_true')}  "
            f"CCanom1/2 {fmt('ccanom_half')}  merged {r['merged']}  wall {r['wall_s']:7.1f} s  "
            f"CPU {r['cpu_s']:7.1f} s",
            flush=True,
        )

    for name, f, hv, wall, cpu in classical_merges(u, args.seed):
        add(name, f, hv, {"wall_s": wall, "cpu_s": cpu})

    lik = ["normal", "student"] if args.likelihood == "both" else args.likelihood.split(",")
    for lk in lik:
        t, out, half_paths, summ = run_dmd(mtz, args.out_dir, args, lk, anomalous)
        c = summ["quality"].get("likelihood_choice")
        name = f"dmd ({lk}{'->' + c['chosen'] if c else ''}, {args.steps} steps)"
        add(name, on_rows(u, out), tuple(on_rows(u, h) for h in half_paths), t)

    if exe is not None:
        clik = ["normal", "student"] if args.careless_likelihood == "both" else [args.careless_likelihood]
        for lk in clik:
            print(f"  running careless ({lk}, {args.careless_steps} steps) ...", flush=True)
            base = args.out_dir / f"careless_{lk}"
            opts = [f"--iterations={args.careless_steps}", f"--mlp-layers={args.careless_mlp_layers}"]
            opts += [f"--image-layers={args.careless_image_layers}", "--merge-half-datasets", f"--seed={args.seed}"]
            opts += [f"--studentt-likelihood-dof={args.dof}"] if lk == "student" else []
            opts += ["--anomalous"] if anomalous else []
            t = run_careless(exe, mtz, base, opts, "BATCH,dHKL,XDET,YDET", args.reuse_careless)
            xval = Path(f"{base}_xval_0.mtz")
            hv = tuple(on_rows(u, xval, select=("half", h)) for h in (0, 1))  # repeat 0 (the only one)
            tag = f", reused: ran at load {t['load_1min']:.1f}" if t["reused"] else ""
            add(f"careless ({lk}, {args.careless_steps} steps{tag})", on_rows(u, f"{base}_0.mtz"), hv, t)

    print("\nCC(E) with the truth per resolution shell (low → high resolution):")
    d = rows[0]["d_range"]
    print(" " * 42 + " ".join(f"{hi:5.2f}" for _, hi in d) + "  (d_min of shell, Å)")
    for r in rows:
        print(f"  {r['method']:40s}" + " ".join(f"{c:5.3f}" for c in r["cc_true_per_shell"]))
    care = [r for r in rows if r["method"].startswith("careless")]
    mine = [r for r in rows if r["method"].startswith("dmd")]
    ratios = {}
    for c in care:
        for m in mine:
            key = f"{c['method']} / {m['method']}"
            ratios[key] = {"wall": c["wall_s"] / m["wall_s"], "cpu": c["cpu_s"] / m["cpu_s"]}
            print(
                f"time ratio {key}: wall {ratios[key]['wall']:.1f}x, CPU {ratios[key]['cpu']:.1f}x;  "
                f"ΔCC(E) = {m['cc_true'] - c['cc_true']:+.4f}"
            )
    load_end = os.getloadavg()
    load_txt = (
        f"load (1-min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at end, 15-min {load_end[2]:.1f}, "
        f"on {os.cpu_count()} cores"
    )
    print(f"(timings on a shared machine, {load_txt}: compare ratios)")
    header = (
        f"Synthetic hard set{' + anomalous signal (sd ' + str(cfg.anomalous_sd) + ')' if anomalous else ''}: "
        f"{u.n_refl} reflections{' (mates apart)' if anomalous else ''}, {u.n_obs} observations, {u.n_images} "
        f"images; {careless_version or 'careless not run'}; {load_txt}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    table = format_table(rows, header)
    print("\n" + table)
    (args.out_dir / "bench_merge_table.md").write_text(table + "\n")
    result = {
        "config": vars(args) | {"out_dir": str(args.out_dir), "careless_venv": str(args.careless_venv)},
        "careless_version": careless_version,
        "load": {"start": load_start, "end": load_end},
        "synthetic": {"n_refl": u.n_refl, "n_obs": u.n_obs, "n_images": u.n_images, "anomalous_sd": cfg.anomalous_sd},
        "rows": rows,
        "ratios": ratios,
    }
    from dmd.base.io import write_json
    from dmd.base.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(7, 4.2))
    x = [0.5 * (1 / lo**2 + 1 / hi**2) for lo, hi in d]
    for r in rows:
        style = "-" if r["method"].startswith("dmd") else "--"
        label = f"{r['method']}: {r['cc_true']:.3f}, {r['wall_s']:.0f} s"
        ax.plot(x, r["cc_true_per_shell"], style, marker="o", ms=3, label=label)
    ax.set_xlabel("1/d² (Å⁻², shell middle)")
    ax.set_ylabel("CC(F, F_true) per shell (resolution-normalized)")
    ax.legend(fontsize="x-small", title="method: CC(E) overall, wall time", title_fontsize="x-small")
    ax.set_title(f"synthetic hard set ({u.n_refl} refl., {u.n_obs} obs); {load_txt}", fontsize="x-small")
    save_figure(fig, args.out_dir / "bench_merge_cc.png")
    write_json(args.out_dir / "bench_merge.json", result)
    print(f"wrote {args.out_dir / 'bench_merge.json'}, {args.out_dir / 'bench_merge_table.md'}")


if __name__ == "__main__":
    main()
