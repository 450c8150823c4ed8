"""Scaling benchmark (issue 23): reweighting over host devices, diffuse maps and reweighting over processes.

Three tables, each measured in one run on this machine, with speed-up and efficiency (speed-up / workers):

1. **Reweighting over host devices** (one process, frames sharded by ``jax.sharding`` over N forced CPU devices):
   ``benchmarks/bench_reweight.py --devices N`` for N = 1, 2, 4 (each a fresh process, since the device count is
   fixed when jax starts). Reported: one Adam step of a single fit, one step of 8 batched cross-validation fits,
   peak memory of the process.
2. **Diffuse map over processes** (``jax.distributed``, gloo CPU collectives, localhost coordinator):
   ``dmd diffuse`` of a villin crystal trajectory tiled to ``--frames`` frames, 1 process vs 2 processes and vs one
   process with 4 forced host devices (each chunk's frames sharded over one mesh); the maps are compared (max
   relative difference of I_D); CPU seconds of all processes together are printed beside the wall time.
3. **Reweighting over processes**: ``dmd reweight`` on the bundled alanine-dipeptide data, 1 vs 2 processes; the
   weights are compared.
4. **Fit replicas** (``dmd fit`` of LJ σ to a g(r), ``replicas: R``): weak scaling, R = 1, 2, 4 replicas on 1, 2, 4
   forced host devices of one process and R = 1, 2 on 1, 2 processes (efficiency t₁ / t_n: 100% when n replicas on
   n workers take as long as one on one); strong scaling, R = 4 on 1, 2, 4 devices and on 1, 2 processes
   (efficiency t₁ / (n t_n)). Time per round excludes the first round (compilation); the fitted σ of runs with the
   same R are compared; peak memory (RSS) per process.

Wall times of tables 2 and 3 include each process's start-up (imports, compilation), as a user sees them. On a
machine with C cores, more workers than C cannot speed anything up: the table is the overhead of the runtime
there, and the speed-up on real multi-core or multi-host machines. The machine's load is printed.

    python benchmarks/bench_scaling.py [--quick] [--voxels 1000000] [--only fit] [--out bench_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dmd.distributed import free_local_port

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RW = ROOT / "dmd" / "data" / "reweight"


def _env(devices=1):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmds, timeout=3600, devices=1, cpu=None):
    """Start the commands together, wait for all; wall seconds and outputs (raises on a failure). ``cpu``: a list
    that receives the CPU seconds all the commands took together."""
    c0 = _children_cpu()
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in cmds
    ]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    wall = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(_children_cpu() - c0)
    for p, o in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, p.args))}\n{o[-3000:]}")
    return wall, outs


def _dist(i, n, port):
    return ["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", str(n), "--process-id", str(i)]


def _table(title, rows, unit):
    print(f"\n{title}\n{'workers':>8} {unit:>14} {'speed-up':>9} {'efficiency':>10}  notes")
    base = rows[0][1]
    for n, t, note in rows:
        print(f"{n:>8} {t:>14.3f} {base / t:>9.2f} {base / t / n:>10.0%}  {note}")


def reweight_devices(args, report):
    rows = []
    for n in (1, 2, 4):
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_reweight.py"), "--frames", str(args.frames),
               "--voxels", str(args.voxels), "--steps", "3", "--repeats", "2", "--batch", "8",
               "--devices", str(n)]  # fmt: skip
        _, outs = _run([cmd])
        res = json.loads(outs[0].strip().splitlines()[-1])
        report["reweight_devices"].append(res)
        note = f"batched CV step {res['batch_step_s']:.3f} s, peak {res['peak_rss_gb']:.2f} GB"
        rows.append((n, res["step_s"], note))
        print(f"  {n} device(s): step {res['step_s']:.3f} s, batched {res['batch_step_s']:.3f} s", flush=True)
    _table(f"1. reweighting, T={args.frames} × M={args.voxels}, frames over host devices", rows, "s per step")
    cv = [(r["devices"], r["batch_step_s"], "") for r in report["reweight_devices"]]
    _table("   batched cross-validation (8 fits per step)", cv, "s per step")


def diffuse_processes(args, report, tmp: Path):
    import mdtraj as md

    t = md.load(str(DATA / "sf_villin_traj.dcd"), top=str(DATA / "sf_villin_top.pdb"))
    reps = -(-args.diffuse_frames // t.n_frames)
    long = md.join([t] * reps)[: args.diffuse_frames]
    traj = tmp / "long.dcd"
    long.save_dcd(str(traj))

    def cmd(out, extra=()):
        return [sys.executable, "-m", "dmd", "diffuse", "--traj", str(traj), "--top", str(DATA / "sf_villin_top.pdb"),
                "--d-min", "4", "--chunk", "25", "--no-progress", "--out", str(out), *extra]  # fmt: skip

    cpu = []
    w1, _ = _run([cmd(tmp / "d1.mtz")], cpu=cpu)
    port = free_local_port()
    w2, _ = _run([cmd(tmp / "d2.mtz", _dist(i, 2, port)) for i in range(2)], cpu=cpu)
    w4, _ = _run([cmd(tmp / "d4.mtz")], devices=4, cpu=cpu)  # one process, frames over 4 forced host devices
    import gemmi

    def diff(name):
        a = np.asarray(gemmi.read_mtz_file(str(tmp / "d1.mtz")).column_with_label("ID"), float)
        b = np.asarray(gemmi.read_mtz_file(str(tmp / name)).column_with_label("ID"), float)
        return float(np.abs(a - b).max() / np.abs(a).max())

    d2, d4 = diff("d2.mtz"), diff("d4.mtz")
    report["diffuse_processes"] = {"frames": args.diffuse_frames, "wall_1": w1, "wall_2": w2, "wall_4_devices": w4,
                                   "cpu_s": cpu, "max_rel_diff": d2, "max_rel_diff_4_devices": d4}  # fmt: skip
    _table(f"2. dmd diffuse, {args.diffuse_frames} frames of villin (582 atoms), d_min 4 Å, over processes",
           [(1, w1, f"wall incl. start-up; CPU {cpu[0]:.1f} s"),
            (2, w2, f"CPU {cpu[1]:.1f} s both; max |ΔI_D|/max I_D = {d2:.1e}")], "s wall")  # fmt: skip
    _table("   the same, one process, frames over forced host devices",
           [(1, w1, f"CPU {cpu[0]:.1f} s"), (4, w4, f"CPU {cpu[2]:.1f} s; max |ΔI_D|/max I_D = {d4:.1e}")],
           "s wall")  # fmt: skip


def reweight_processes(report, tmp: Path):
    def cmd(out, extra=()):
        return [sys.executable, "-m", "dmd", "reweight", "--traj", str(RW / "traj.dcd"), "--top", str(RW / "top.pdb"),
                "--data", str(RW / "data.mtz"), "--column", "IDIFF", "--d-min", "2.5", "--steps", "150", "--folds", "4",
                "--theta-grid", "0,1e-2", "--blocks", "3", "--no-greedy", "--quiet",
                "--out", str(out), *extra]  # fmt: skip

    cpu = []
    w1, _ = _run([cmd(tmp / "r1")], cpu=cpu)
    port = free_local_port()
    w2, _ = _run([cmd(tmp / "r2", _dist(i, 2, port)) for i in range(2)], cpu=cpu)

    def weights(folder):
        rows = (folder / "weights.csv").read_text().splitlines()[1:]
        return np.array([float(r.split(",")[-1]) for r in rows])

    dw = float(np.abs(weights(tmp / "r1") - weights(tmp / "r2")).max())
    report["reweight_processes"] = {"wall_1": w1, "wall_2": w2, "cpu_s": cpu, "max_abs_weight_diff": dw}
    _table("3. dmd reweight, bundled alanine-dipeptide data (60 frames), over processes",
           [(1, w1, f"wall incl. start-up; CPU {cpu[0]:.1f} s"),
            (2, w2, f"CPU {cpu[1]:.1f} s both; max |Δw| = {dw:.1e}")], "s wall")  # fmt: skip


# dmd fit run by dmd.cli.main in-process, then this process's peak RSS (GB) as the last line
_FIT_DRIVER = (
    "import json, resource, sys; from dmd.cli import main; rc = main(sys.argv[1:]); "
    "print(json.dumps({'rc': rc, 'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))"
)


def _fit_config(folder: Path, replicas: int, args) -> Path:
    from dmd.models import lj_fluid
    from fitting import observables as ob

    n = args.fit_atoms
    lj = lj_fluid(n, density=0.7, cutoff=0.6, seed=1)
    rdf = ob.rdf(n, np.asarray(lj.box), r_max=0.9, n_bins=20)
    r = np.asarray(rdf.axis)
    g = 1.0 + 1.5 * np.exp(-(((r - 0.38) / 0.04) ** 2))  # a first peak near σ = 0.34 nm (start 0.32)
    np.savetxt(folder / "target.csv", np.c_[r, g], delimiter=",", header="r_nm,g", comments="")
    path = folder / f"fit_r{replicas}.yaml"
    path.write_text(
        f"system: {{model: lj_fluid, n_atoms: {n}, density: 0.7, cutoff: 0.6, sigma: 0.32, seed: 1}}\n"
        "parameters:\n  - {name: lj/sigma/A, lower: 0}\n"
        "targets:\n  - {observable: rdf, file: target.csv, r_max: 0.9, n_bins: 20}\n"
        f"replicas: {replicas}\nrounds: {args.fit_rounds}\n"
        f"simulation: {{steps: {args.fit_steps}, equilibration: 0, report_every: 20, dt: 0.01, temperature: 120}}\n"
    )
    return path


def _fit_once(folder: Path, replicas: int, devices: int, processes: int, args):
    """One ``dmd fit`` (``processes`` processes, ``devices`` forced host devices each): seconds per round after the
    first, peak RSS per process (GB), fitted σ."""
    cfg = _fit_config(folder, replicas, args)
    out = folder / f"out_r{replicas}_d{devices}_p{processes}"
    base = [sys.executable, "-c", _FIT_DRIVER, "fit", str(cfg), "--out", str(out), "--overwrite"]
    port = free_local_port()
    cmds = [base + (_dist(i, processes, port) if processes > 1 else []) for i in range(processes)]
    _, outs = _run(cmds, devices=devices)
    rss = [json.loads(o.strip().splitlines()[-1])["peak_rss_gb"] for o in outs]
    hist = json.loads((out / "history.json").read_text())["history"]
    per_round = float(np.mean([h["seconds"] for h in hist[1:]]))
    sigma = json.loads((out / "summary.json").read_text())["last_iterate"]["lj/sigma/A"]
    return per_round, max(rss), sigma


def fit_replicas(args, report, tmp: Path):
    runs = {}

    def one(r, d, p):
        if (r, d, p) in runs:
            x = runs[(r, d, p)]
            return x["round_s"], x["peak_rss_gb"], x["sigma"]
        t, rss, sigma = _fit_once(tmp, r, d, p, args)
        runs[(r, d, p)] = {"replicas": r, "devices": d, "processes": p, "round_s": t, "peak_rss_gb": rss,
                           "sigma": sigma}  # fmt: skip
        print(f"  R={r} devices={d} processes={p}: {t:.3f} s/round, {rss:.2f} GB/process, σ={sigma:.6f}", flush=True)
        return t, rss, sigma

    def weak(rows, title):
        t1 = rows[0][1]
        print(f"\n{title}\n{'workers':>8} {'R':>3} {'s/round':>9} {'efficiency':>10} {'GB/proc':>8}")
        for n, t, rss in rows:
            print(f"{n:>8} {n:>3} {t:>9.3f} {t1 / t:>10.0%} {rss:>8.2f}")

    def strong(rows, title, ref_sigma):
        t1 = rows[0][1]
        print(f"\n{title}\n{'workers':>8} {'s/round':>9} {'speed-up':>9} {'efficiency':>10} {'GB/proc':>8}  |Δσ|")
        for n, t, rss, sigma in rows:
            print(f"{n:>8} {t:>9.3f} {t1 / t:>9.2f} {t1 / t / n:>10.0%} {rss:>8.2f}  {abs(sigma - ref_sigma):.1e}")

    dev_weak = [(n, *one(n, n, 1)[:2]) for n in (1, 2, 4)]
    proc_weak = [(n, *one(n, 1, n)[:2]) for n in (1, 2)]
    dev_strong = [(n, *one(4, n, 1)) for n in (1, 2, 4)]
    proc_strong = [(n, *one(4, 1, n)) for n in (1, 2)]
    ref = dev_strong[0][3]
    n = args.fit_atoms
    weak(dev_weak, f"4a. fit replicas, weak scaling over host devices (LJ N={n}, {args.fit_steps} steps/round)")
    weak(proc_weak, "4b. fit replicas, weak scaling over processes (1 device each)")
    strong(dev_strong, "4c. fit replicas, strong scaling over host devices (R = 4)", ref)
    strong(proc_strong, "4d. fit replicas, strong scaling over processes (R = 4, 1 device each)", ref)
    report["fit_replicas"] = list(runs.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    ap.add_argument("--frames", type=int, default=1000, help="reweighting frames (table 1)")
    ap.add_argument("--voxels", type=int, default=200_000, help="reweighting voxels (table 1; 1e6 needs 24+ GB)")
    ap.add_argument("--diffuse-frames", type=int, default=1000, help="frames of the diffuse run (table 2)")
    ap.add_argument("--fit-atoms", type=int, default=256, help="LJ atoms of the fit-replica runs (table 4)")
    ap.add_argument("--fit-steps", type=int, default=1000, help="steps per replica and round (table 4)")
    ap.add_argument("--fit-rounds", type=int, default=3, help="rounds per fit (table 4; the first is not timed)")
    ap.add_argument("--only", choices=("reweight", "diffuse", "fit"), default=None, help="run one part only")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = ap.parse_args()
    if args.quick:
        args.voxels, args.diffuse_frames = min(args.voxels, 50_000), min(args.diffuse_frames, 200)
        args.fit_atoms, args.fit_steps = min(args.fit_atoms, 128), min(args.fit_steps, 400)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    report = {"cpu_count": os.cpu_count(), "load_before": load, "reweight_devices": []}
    with tempfile.TemporaryDirectory() as d:
        if args.only in (None, "reweight"):
            reweight_devices(args, report)
        if args.only in (None, "diffuse"):
            diffuse_processes(args, report, Path(d))
        if args.only in (None, "reweight"):
            reweight_processes(report, Path(d))
        if args.only in (None, "fit"):
            fit_replicas(args, report, Path(d))
    report["load_after"] = os.getloadavg()
    print(f"\nload after: {report['load_after'][0]:.2f}")
    if args.out:
        from dmd.base.io import write_json

        write_json(args.out, report)
        print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
