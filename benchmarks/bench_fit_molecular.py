"""Benchmark: recover one force-field parameter of a molecular crystal from its diffuse scattering (issue 18 4c).

examples/fit_diffraction/peptide_diffuse.yaml: the 5E5Z peptide crystal (one monoclinic P 1 21 1 cell, 188 atoms,
Amber14 + PME, NVT 300 K), the LJ diameter σ of the carbonyl-oxygen type protein-O started 20% above the truth
(0.35519 against 0.29599 nm), fitted to the shipped I_D target (peptide_diffuse.mtz, made by make_peptide_target.py
from 16 runs of one round's window at the truth) with the example's ``replicas`` independent replicas per round,
each replica's own I_D averaged. Each fit seed runs in a fresh process (its own peak memory), one after another, or
all at once with ``--parallel-seeds`` (for one GPU: each process gets XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 unless
set). Printed per seed, and written to ``--out`` as JSON with a Markdown table beside it (``.md``): start, the
reported σ (the example's loss vertex since fit18k; with gradient rounds the mean of the last ``average_last``),
its s.e., its error % and error / s.e., the last iterate's error %, rounds, seconds per round (first, with
compilation, and the mean of the rest), CPU seconds, peak RSS, peak device memory (GPU: jax's peak_bytes_in_use)
and the load average.
The peer in the same run: OpenMM's own time per Langevin step for the same system (CUDA platform where there is one,
else CPU).

    nice -n 19 python benchmarks/bench_fit_molecular.py [--seeds 0,1,2,3 --rounds 8 --steps 3000 --replicas 4
                                                        --average-last 4 --parallel-seeds --out r.json]
    # the levers measured on fit seed 6 (docs/fitting.md): a smaller trust region, fresh replicas every round
    nice -n 19 python benchmarks/bench_fit_molecular.py --seeds 6 --max-step 0.1 --skip-peer
    nice -n 19 python benchmarks/bench_fit_molecular.py --seeds 6 --restart crystal --skip-peer
    # the start scan (fitting.start_scan; the example's since fit18i): "points,step[,pick]", or off
    nice -n 10 python benchmarks/bench_fit_molecular.py --seeds 0,1,2,3,4,5,6,7 --start-scan 5,0.1 --skip-peer
    # σ again from each seed's history.json (--fit-out of the run) with the example's loss_surface now: exactly what
    # the fit reports with no gradient rounds (the points measured do not depend on loss_surface); CPU s etc. kept
    python benchmarks/bench_fit_molecular.py --rescore a.json,b.json --fit-out fits --out rescored.json
    # one GPU, all 4 seeds at once:
    python benchmarks/bench_fit_molecular.py --parallel-seeds --out fit_molecular_gpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "fit_diffraction" / "peptide_diffuse.yaml"
NAME, TRUTH = "NonbondedForce/sigma/protein-O", 0.29599


def one_seed(seed: int, rounds: int | None, steps: int, average_last: int | None = None, replicas: int | None = None,
             replica_gradient: str | None = None, max_step: float | None = None,
             restart: str | None = None, fit_out: str | None = None,
             learning_rate: float | None = None, loss_guard: float | None = None,
             start_scan: str | None = None) -> dict:  # fmt: skip
    """One fit of the example with fit seed ``seed`` (this process); returns its figures."""
    import jax
    import numpy as np

    from fitting.fit_config import load_fit_config
    from fitting.forcefield import fit

    system, params, targets, cfg, states = load_fit_config(CONFIG)
    cfg = dataclasses.replace(cfg, steps=steps, seed=seed, progress=False)
    if rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=rounds)
    if average_last is not None:
        cfg = dataclasses.replace(cfg, average_last=average_last)
    if replicas is not None:
        cfg = dataclasses.replace(cfg, replicas=replicas)
    if replica_gradient is not None:
        cfg = dataclasses.replace(cfg, replica_gradient=replica_gradient)
    if max_step is not None:
        cfg = dataclasses.replace(cfg, max_step=max_step)
    if learning_rate is not None:
        cfg = dataclasses.replace(cfg, learning_rate=learning_rate)
    if loss_guard is not None:  # fitting.loss_guard: reject a round whose loss exceeds factor × the best
        cfg = dataclasses.replace(cfg, loss_guard=loss_guard)
    if start_scan is not None:  # fitting.start_scan: "points,step[,pick]" or "off"
        from fitting.start_scan import StartScan

        spec = dict(zip(("points", "step", "pick"), start_scan.split(","), strict=False))
        cfg = dataclasses.replace(cfg, start_scan=None if start_scan == "off" else StartScan.from_spec(
            {k: int(v) if k == "points" else float(v) if k == "step" else v for k, v in spec.items()}))  # fmt: skip
    if restart is not None:  # crystal: every round's replicas start again from the PDB (2000 steps equilibration)
        cfg = dataclasses.replace(
            cfg,
            restart=restart,
            equilibration=2000 if restart == "crystal" else 1000,  # continue: the former 1000
        )
    if fit_out is not None:  # history.json etc. written after every round (watch a long run)
        cfg = dataclasses.replace(cfg, out=Path(fit_out) / f"seed{seed}")
    labels = list(system.param_labels["NonbondedForce"]["sigma"])
    start = float(np.asarray(system.params["NonbondedForce"]["sigma"])[labels.index("protein-O")])
    t0 = time.perf_counter()
    res = fit(system, params, targets, cfg, states=states)
    scan = [h for h in res.history if h.get("status") == "scan"]  # the start scan's rows (fitting.start_scan)
    rows = [h for h in res.history if h.get("status") != "scan"]
    secs = [h["seconds"] for h in rows] or [h["seconds"] for h in scan]  # no rounds: per scan/design point
    diverged = [h["round"] for h in rows if h.get("status") == "diverged"]
    final, last = float(res.values[NAME]), float(res.last[NAME])
    # both estimates from the same rounds, whichever the config reports: iterates averaged, loss parabola's vertex
    from fitting.forcefield_outputs import averaged_theta
    from fitting.loss_surface import loss_vertex, surface_options

    avg = (averaged_theta(res.history, cfg.average_last)[0] or {}).get(NAME)
    vertex = loss_vertex(res.history, np.log, lambda v: float(np.exp(v)), **surface_options(cfg.loss_surface or 4.0))
    se = (res.stderr or {}).get(NAME)
    stats = jax.devices()[0].memory_stats() or {}
    peak_dev = stats.get("peak_bytes_in_use")
    return {"seed": seed, "start": start, "final": final, "error_pct": 100 * (final / TRUTH - 1),
            "stderr": se, "stderr_pct": None if se is None else 100 * se / TRUTH, "average_last": cfg.average_last,
            "error_over_se": None if not se else (final - TRUTH) / se, "last": last,
            "last_error_pct": 100 * (last / TRUTH - 1), "replicas": cfg.replicas, "backend": jax.default_backend(),
            "rounds": len(rows), "diverged_rounds": diverged, "seconds_first_round": secs[0],
            "seconds_per_round": float(np.mean(secs[1:])) if len(secs) > 1 else secs[0],
            "theta_per_round": [h["theta"][NAME] for h in rows], "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_device_mb": None if peak_dev is None else peak_dev / 2**20,
            "load": os.getloadavg()[0], "steps": steps, "restart": cfg.restart,
            "equilibration": cfg.equilibration, "replica_gradient": cfg.replica_gradient,
            "snr_per_round": [h.get("gradient_snr") for h in rows], "max_step": cfg.max_step,
            "learning_rate": cfg.learning_rate, "loss_per_round": [h.get("loss") for h in rows],
            "loss_guard": cfg.loss_guard,
            "rejected_rounds": [h["round"] for h in rows if h.get("status") == "rejected"],
            "scan_theta": [h["theta"][NAME] for h in scan], "scan_loss": [h["loss"] for h in scan],
            "scan_seconds": sum(h["seconds"] for h in scan),
            "rounds_start": rows[0]["theta"][NAME] if rows else None,
            "design_points": sum("design_centre" in h for h in scan), "loss_surface": cfg.loss_surface,
            "iterate_average_error_pct": None if avg is None else 100 * (avg / TRUTH - 1),
            "loss_vertex_error_pct": None if vertex is None else 100 * (vertex["value"] / TRUTH - 1),
            "loss_vertex_stderr_pct": None if not (vertex and vertex["stderr"]) else 100 * vertex["stderr"] / TRUTH,
            "loss_vertex_points": None if vertex is None else vertex["points"]}  # fmt: skip


def openmm_step_seconds(n: int = 200) -> tuple[float, str]:
    """OpenMM seconds per Langevin step of the same system (the peer), on CUDA where there is one, else CPU."""
    import openmm
    import openmm.unit as u

    from dmd.openmm_system.loading import openmm_system_from_pdb

    omm, structure, _ = openmm_system_from_pdb(str(CONFIG.parent / "5e5z_cell.pdb"),
                                               ["amber14-all.xml", "amber14/tip3pfb.xml"], "PME", 0.42, "HBonds",
                                               True)  # fmt: skip
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    for name in [p for p in ("CUDA", "CPU") if p in names]:
        try:
            integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 2 / u.picosecond, 0.002 * u.picoseconds)
            ctx = openmm.Context(omm, integ, openmm.Platform.getPlatformByName(name))
        except Exception:  # a CUDA platform without a usable device: fall back to the CPU
            continue
        ctx.setPositions(structure.positions)
        integ.step(20)
        ctx.getState(getEnergy=True)  # finish the warm-up on the device before timing
        t0 = time.perf_counter()
        integ.step(n)
        ctx.getState(getEnergy=True)
        return (time.perf_counter() - t0) / n, name
    raise RuntimeError("OpenMM has neither a CUDA nor a CPU platform")


def _pct(x) -> str:
    return "–" if x is None else f"{x:+.2f}%"


def _seed_line(r: dict, steps: int) -> str:
    se = "" if r["stderr"] is None else f" ± {r['stderr']:.4f} (s.e., error/s.e. {r['error_over_se']:+.1f})"
    dev = "" if r.get("peak_device_mb") is None else f", peak device memory {r['peak_device_mb']:.0f} MB"
    pts = " ".join(f"{t:.4f}:{x:.3g}" for t, x in zip(r.get("scan_theta") or [], r.get("scan_loss") or [], strict=True))
    rs = "–" if r["rounds_start"] is None else f"{r['rounds_start']:.4f}"
    how = f"mean of the last {r['average_last']} rounds" if r["rounds"] else "loss vertex; the scan's vertex last"
    scan = f"start scan + design (σ:loss) {pts} in {r['scan_seconds']:.0f} s, rounds from σ {rs}; "
    scan = scan if pts else ""
    return (f"seed {r['seed']}: σ {r['start']:.4f} → {r['final']:.4f}{se} (truth {TRUTH}), "
            f"error {r['error_pct']:+.2f}% "
            f"({how}; last iterate {r['last_error_pct']:+.2f}%), "
            f"{r['rounds']} rounds of {r.get('equilibration')} + {steps} steps × {r['replicas']} replicas (restart "
            f"{r.get('restart')}, gradient {r.get('replica_gradient', 'pooled')}, max_step {r.get('max_step')}, "
            f"learning rate {r.get('learning_rate')}; "
            f"{r['backend']}; diverged: "
            f"{r.get('diverged_rounds') or 'none'}; loss guard {r.get('loss_guard')}, rejected: "
            f"{r.get('rejected_rounds') or 'none'}), "
            f"{scan}"
            f"iterate average {_pct(r.get('iterate_average_error_pct'))}, loss vertex "
            f"{_pct(r.get('loss_vertex_error_pct'))} ± {_pct(r.get('loss_vertex_stderr_pct'))} over "
            f"{r.get('loss_vertex_points')} rounds (loss_surface {r.get('loss_surface')}); "
            f"{r['seconds_per_round']:.1f} s/round (first {r['seconds_first_round']:.1f} s), CPU {r['cpu_s']:.0f} s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB{dev}, load {r['load']:.1f}; θ per round "
            + " ".join(f"{t:.4f}" for t in r["theta_per_round"])
            + "; loss per round "
            + " ".join("-" if x is None else f"{x:.3g}" for x in r.get("loss_per_round") or []))  # fmt: skip


def table(rows: list[dict]) -> str:
    """A Markdown table of the per-seed figures."""
    out = ["| seed | σ (nm) | s.e. | error % | last iterate % | s/round (first) | peak RSS MB | peak device MB |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        se = "–" if r["stderr"] is None else f"{r['stderr']:.4f}"
        dev = "–" if r.get("peak_device_mb") is None else f"{r['peak_device_mb']:.0f}"
        out.append(
            f"| {r['seed']} | {r['final']:.4f} | {se} | {r['error_pct']:+.2f} | {r['last_error_pct']:+.2f} | "
            f"{r['seconds_per_round']:.1f} ({r['seconds_first_round']:.1f}) | {r['peak_rss_mb']:.0f} | {dev} |"
        )
    return "\n".join(out)


def rescore(paths: list[str], fit_out: str) -> list[dict]:
    """The rows of earlier runs (``--out`` JSONs), σ recomputed from ``fit_out/seed<n>/history.json`` with the
    example's ``loss_surface`` (runs without gradient rounds only: their σ is the loss vertex, or the scan's centre
    where none fits)."""
    import math

    from fitting.fit_config import load_fit_config
    from fitting.loss_surface import loss_vertex, surface_options

    cfg = load_fit_config(CONFIG)[3]
    rows = []
    for path in paths:
        for r in json.loads(Path(path).read_text())["seeds"]:
            if r["rounds"]:
                sys.exit(f"{path}: seed {r['seed']} ran gradient rounds; --rescore is for runs without")
            history = json.loads((Path(fit_out) / f"seed{r['seed']}" / "history.json").read_text())["history"]
            v = loss_vertex(history, math.log, math.exp, **surface_options(cfg.loss_surface))
            final, se = (r["last"], None) if v is None else (v["value"], v["stderr"])
            rows.append(dict(r, final=final, stderr=se, error_pct=100 * (final / TRUTH - 1),
                             stderr_pct=None if se is None else 100 * se / TRUTH, loss_surface=cfg.loss_surface,
                             error_over_se=None if not se else (final - TRUTH) / se,
                             loss_vertex_error_pct=None if v is None else 100 * (v["value"] / TRUTH - 1),
                             loss_vertex_stderr_pct=None if se is None else 100 * se / TRUTH,
                             loss_vertex_points=None if v is None else v["points"]))  # fmt: skip
    return sorted(rows, key=lambda r: r["seed"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default: the example's)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--replicas", type=int, default=None, help="replicas per round (default: the example's)")
    ap.add_argument("--replica-gradient", default=None, help="pooled or cross (default: the example's)")
    ap.add_argument("--max-step", type=float, default=None, help="largest step in ln θ (default: the example's)")
    ap.add_argument(
        "--restart", default=None, choices=["continue", "crystal"], help="continue or crystal (default: the example's)"
    )
    ap.add_argument("--average-last", type=int, default=None, help="rounds averaged (default: the example's)")
    ap.add_argument("--learning-rate", type=float, default=None, help="optimizer learning rate (default: example's)")
    ap.add_argument("--loss-guard", type=float, default=None, help="loss-guard factor (default: the example's)")
    ap.add_argument(
        "--start-scan",
        default=None,
        help='start scan "points,step[,pick]" (e.g. 5,0.1) or "off" (default: the example\'s)',
    )
    ap.add_argument("--fit-out", default=None, help="folder for each seed's fit outputs (history.json per round)")
    ap.add_argument("--parallel-seeds", action="store_true", help="run every seed's process at once (one GPU)")
    ap.add_argument("--skip-peer", action="store_true", help="do not time OpenMM")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the figures (and a .md table beside it)")
    ap.add_argument("--rescore", default=None, help="earlier --out JSONs (comma-separated): σ again from --fit-out")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        row = one_seed(a.child, a.rounds, a.steps, a.average_last, a.replicas, a.replica_gradient, a.max_step,
                       a.restart, a.fit_out, a.learning_rate, a.loss_guard, a.start_scan)  # fmt: skip
        print("RESULT " + json.dumps(row), flush=True)
        return
    if a.out is not None and a.out.exists():
        sys.exit(f"{a.out} exists: pass another --out (this benchmark never overwrites a result)")
    if a.rescore is not None:
        rows = rescore(a.rescore.split(","), a.fit_out)
        for r in rows:
            print(_seed_line(r, a.steps), flush=True)
        _report(rows, None, a)
        return
    seeds = [int(s) for s in a.seeds.split(",")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if a.parallel_seeds:  # several processes on one GPU: each may take a fifth of its memory
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.2")
    t0 = time.perf_counter()

    def start(seed):
        cmd = [sys.executable, __file__, "--child", str(seed), "--steps", str(a.steps)]
        cmd += [] if a.rounds is None else ["--rounds", str(a.rounds)]
        cmd += [] if a.average_last is None else ["--average-last", str(a.average_last)]
        cmd += [] if a.replicas is None else ["--replicas", str(a.replicas)]
        cmd += [] if a.replica_gradient is None else ["--replica-gradient", a.replica_gradient]
        cmd += [] if a.max_step is None else ["--max-step", str(a.max_step)]
        cmd += [] if a.restart is None else ["--restart", a.restart]
        cmd += [] if a.fit_out is None else ["--fit-out", a.fit_out]
        cmd += [] if a.learning_rate is None else ["--learning-rate", str(a.learning_rate)]
        cmd += [] if a.loss_guard is None else ["--loss-guard", str(a.loss_guard)]
        cmd += [] if a.start_scan is None else ["--start-scan", a.start_scan]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    procs = {s: start(s) for s in seeds} if a.parallel_seeds else {}
    rows = []
    for seed in seeds:
        proc = procs.get(seed) or start(seed)
        stdout, stderr = proc.communicate()
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            sys.exit(f"seed {seed} failed:\n{stderr[-3000:]}")
        rows.append(json.loads(line[0][7:]))
        print(_seed_line(rows[-1], a.steps), flush=True)
    _report(rows, time.perf_counter() - t0, a)


def _report(rows, wall, a):
    errs = [abs(r["error_pct"]) for r in rows]
    took = "rescored" if wall is None else f"all seeds {wall:.0f} s wall{' (in parallel)' if a.parallel_seeds else ''}"
    print(f"max |error| {max(errs):.2f}% over {len(rows)} seeds (target: 5%); within 5%: "
          f"{sum(e < 5 for e in errs)} of {len(rows)}; last iterates: max "
          f"{max(abs(r['last_error_pct']) for r in rows):.2f}%; {took}; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(table(rows))
    peer = None
    if not a.skip_peer and wall is not None:
        t_omm, platform = openmm_step_seconds()
        peer = {"openmm_platform": platform, "openmm_ms_per_step": 1e3 * t_omm}
        print(f"peer: OpenMM {platform} {1e3 * t_omm:.2f} ms/step for the same system; load {os.getloadavg()[0]:.1f}")
    if a.out is not None:
        from dmd.base.io import atomic_path, write_json

        write_json(a.out, {"seeds": rows, "max_abs_error_pct": max(errs), "wall_s": wall,
                           "parallel_seeds": a.parallel_seeds, "peer": peer})  # fmt: skip
        with atomic_path(a.out.with_suffix(".md")) as tmp:
            tmp.write_text(table(rows) + "\n")
        print(f"wrote {a.out} and {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
