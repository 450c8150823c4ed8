"""Benchmark: recover one force-field parameter of a molecular crystal from its diffuse scattering (issue 18 4c).

examples/fit_diffraction/peptide_diffuse.yaml: the 5E5Z peptide crystal (one monoclinic P 1 21 1 cell, 188 atoms,
Amber14 + PME, NVT 300 K), the LJ diameter σ of the carbonyl-oxygen type protein-O started 20% above the truth
(0.35519 against 0.29599 nm), fitted to the shipped I_D target (peptide_diffuse.mtz, made by
make_peptide_target.py from long runs at the truth). Each fit seed runs in a fresh process (its own peak memory);
printed per seed: start, the reported σ (the mean over the last ``average_last`` rounds, the example's 5 of 10) with
its standard error, its error % and error / s.e., the last iterate's error % (what the fit reported before iterate
averaging), rounds, seconds per round (first, with compilation, and the mean of the rest), CPU seconds, peak RSS
and the load average. The peer in the same run: OpenMM's own energy-and-force time per step for the
same system and platform (CPU), against dmd's sampled step time.

    nice -n 19 python benchmarks/bench_fit_molecular.py [--seeds 0,1,2,3 --rounds 10 --steps 3000 --average-last 5
                                                        --out r.json]
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


def one_seed(seed: int, rounds: int, steps: int, average_last: int | None = None) -> dict:
    """One fit of the example with fit seed ``seed`` (this process); returns its figures."""
    import numpy as np

    from fitting.fit_config import load_fit_config
    from fitting.forcefield import fit

    system, params, targets, cfg, states = load_fit_config(CONFIG)
    cfg = dataclasses.replace(cfg, rounds=rounds, steps=steps, seed=seed, progress=False)
    if average_last is not None:
        cfg = dataclasses.replace(cfg, average_last=average_last)
    labels = list(system.param_labels["NonbondedForce"]["sigma"])
    start = float(np.asarray(system.params["NonbondedForce"]["sigma"])[labels.index("protein-O")])
    t0 = time.perf_counter()
    res = fit(system, params, targets, cfg, states=states)
    secs = [h["seconds"] for h in res.history]
    final, last = float(res.values[NAME]), float(res.last[NAME])
    se = (res.stderr or {}).get(NAME)
    return {"seed": seed, "start": start, "final": final, "error_pct": 100 * (final / TRUTH - 1),
            "stderr": se, "stderr_pct": None if se is None else 100 * se / TRUTH, "average_last": cfg.average_last,
            "error_over_se": None if not se else (final - TRUTH) / se, "last": last,
            "last_error_pct": 100 * (last / TRUTH - 1),
            "rounds": len(res.history), "seconds_first_round": secs[0],
            "seconds_per_round": float(np.mean(secs[1:])) if len(secs) > 1 else secs[0],
            "theta_per_round": [h["theta"][NAME] for h in res.history], "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load": os.getloadavg()[0], "steps": steps}  # fmt: skip


def openmm_step_seconds(n: int = 200) -> float:
    """OpenMM (CPU platform) seconds per Langevin step of the same system (the peer)."""
    import openmm
    import openmm.unit as u

    from dmd.openmm_system.loading import openmm_system_from_pdb

    omm, structure, _ = openmm_system_from_pdb(str(CONFIG.parent / "5e5z_cell.pdb"),
                                               ["amber14-all.xml", "amber14/tip3pfb.xml"], "PME", 0.42, "HBonds",
                                               True)  # fmt: skip
    integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 2 / u.picosecond, 0.002 * u.picoseconds)
    ctx = openmm.Context(omm, integ, openmm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(structure.positions)
    integ.step(20)
    t0 = time.perf_counter()
    integ.step(n)
    return (time.perf_counter() - t0) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--average-last", type=int, default=None, help="rounds averaged (default: the example's)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print("RESULT " + json.dumps(one_seed(a.child, a.rounds, a.steps, a.average_last)), flush=True)
        return
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        cmd = [sys.executable, __file__, "--child", str(seed), "--rounds", str(a.rounds), "--steps", str(a.steps)]
        cmd += [] if a.average_last is None else ["--average-last", str(a.average_last)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            sys.exit(f"seed {seed} failed:\n{out.stderr[-3000:]}")
        r = json.loads(line[0][7:])
        rows.append(r)
        se = "" if r["stderr"] is None else f" ± {r['stderr']:.4f} (s.e., error/s.e. {r['error_over_se']:+.1f})"
        print(f"seed {seed}: σ {r['start']:.4f} → {r['final']:.4f}{se} (truth {TRUTH}), error {r['error_pct']:+.2f}% "
              f"(mean of the last {r['average_last']} rounds; last iterate {r['last_error_pct']:+.2f}%), "
              f"{r['rounds']} rounds of {a.steps} steps, {r['seconds_per_round']:.1f} s/round (first "
              f"{r['seconds_first_round']:.1f} s), CPU {r['cpu_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"load {r['load']:.1f}; θ per round "
              + " ".join(f"{t:.4f}" for t in r["theta_per_round"]), flush=True)  # fmt: skip
        if a.out is not None:
            from dmd.base.io import write_json

            write_json(a.out, {"seeds": rows})
    errs = [abs(r["error_pct"]) for r in rows]
    print(f"max |error| {max(errs):.2f}% over {len(rows)} seeds (target: 5%); last iterates: max "
          f"{max(abs(r['last_error_pct']) for r in rows):.2f}%")  # fmt: skip
    t_omm = openmm_step_seconds()
    print(f"peer: OpenMM CPU {1e3 * t_omm:.2f} ms/step for the same system; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
