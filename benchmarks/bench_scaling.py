"""Scaling benchmark (issue 23): reweighting over host devices, diffuse maps and reweighting over processes.

Three tables, each measured in one run on this machine, with speed-up and efficiency (speed-up / workers):

1. **Reweighting over host devices** (one process, frames sharded by ``jax.sharding`` over N forced CPU devices):
   ``benchmarks/bench_reweight.py --devices N`` for N = 1, 2, 4 (each a fresh process, since the device count is
   fixed when jax starts). Reported: one Adam step of a single fit, one step of 8 batched cross-validation fits,
   peak memory of the process.
2. **Diffuse map over processes** (``jax.distributed``, gloo CPU collectives, localhost coordinator):
   ``dmd diffuse`` of a villin crystal trajectory tiled to ``--frames`` frames, 1 process vs 2 processes; the maps
   are compared (max relative difference of I_D).
3. **Reweighting over processes**: ``dmd reweight`` on the bundled alanine-dipeptide data, 1 vs 2 processes; the
   weights are compared.

Wall times of tables 2 and 3 include each process's start-up (imports, compilation), as a user sees them. On a
machine with C cores, more workers than C cannot speed anything up: the table is the overhead of the runtime
there, and the speed-up on real multi-core or multi-host machines. The machine's load is printed.

    python benchmarks/bench_scaling.py [--quick] [--voxels 1000000] [--out bench_scaling.json]
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


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


def _run(cmds, timeout=3600):
    """Start the commands together, wait for all; wall seconds and outputs (raises on a failure)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    wall = time.perf_counter() - t0
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

    w1, _ = _run([cmd(tmp / "d1.mtz")])
    port = free_local_port()
    w2, _ = _run([cmd(tmp / "d2.mtz", _dist(i, 2, port)) for i in range(2)])
    import gemmi

    a = np.asarray(gemmi.read_mtz_file(str(tmp / "d1.mtz")).column_with_label("ID"), float)
    b = np.asarray(gemmi.read_mtz_file(str(tmp / "d2.mtz")).column_with_label("ID"), float)
    diff = float(np.abs(a - b).max() / np.abs(a).max())
    report["diffuse_processes"] = {"frames": args.diffuse_frames, "wall_1": w1, "wall_2": w2, "max_rel_diff": diff}
    _table(f"2. dmd diffuse, {args.diffuse_frames} frames of villin (582 atoms), d_min 4 Å, over processes",
           [(1, w1, "wall incl. start-up"), (2, w2, f"max |ΔI_D|/max I_D = {diff:.1e}")], "s wall")  # fmt: skip


def reweight_processes(report, tmp: Path):
    def cmd(out, extra=()):
        return [sys.executable, "-m", "dmd", "reweight", "--traj", str(RW / "traj.dcd"), "--top", str(RW / "top.pdb"),
                "--data", str(RW / "data.mtz"), "--column", "IDIFF", "--d-min", "2.5", "--steps", "150", "--folds", "4",
                "--theta-grid", "0,1e-2", "--blocks", "3", "--no-greedy", "--quiet",
                "--out", str(out), *extra]  # fmt: skip

    w1, _ = _run([cmd(tmp / "r1")])
    port = free_local_port()
    w2, _ = _run([cmd(tmp / "r2", _dist(i, 2, port)) for i in range(2)])

    def weights(folder):
        rows = (folder / "weights.csv").read_text().splitlines()[1:]
        return np.array([float(r.split(",")[-1]) for r in rows])

    dw = float(np.abs(weights(tmp / "r1") - weights(tmp / "r2")).max())
    report["reweight_processes"] = {"wall_1": w1, "wall_2": w2, "max_abs_weight_diff": dw}
    _table("3. dmd reweight, bundled alanine-dipeptide data (60 frames), over processes",
           [(1, w1, "wall incl. start-up"), (2, w2, f"max |Δw| = {dw:.1e}")], "s wall")  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    ap.add_argument("--frames", type=int, default=1000, help="reweighting frames (table 1)")
    ap.add_argument("--voxels", type=int, default=200_000, help="reweighting voxels (table 1; 1e6 needs 24+ GB)")
    ap.add_argument("--diffuse-frames", type=int, default=1000, help="frames of the diffuse run (table 2)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = ap.parse_args()
    if args.quick:
        args.voxels, args.diffuse_frames = min(args.voxels, 50_000), min(args.diffuse_frames, 200)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    report = {"cpu_count": os.cpu_count(), "load_before": load, "reweight_devices": []}
    with tempfile.TemporaryDirectory() as d:
        reweight_devices(args, report)
        diffuse_processes(args, report, Path(d))
        reweight_processes(report, Path(d))
    report["load_after"] = os.getloadavg()
    print(f"\nload after: {report['load_after'][0]:.2f}")
    if args.out:
        from dmd.base.io import write_json

        write_json(args.out, report)
        print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
