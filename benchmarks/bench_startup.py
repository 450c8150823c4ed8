"""Start-up, end to end from the shell: ``dmd`` vs a plain OpenMM script for the same job (issue 20, item 5).

Jobs:

* energy: ``dmd energy`` on the bundled alanine dipeptide (22 atoms, amber14-all, NoCutoff, no constraints) vs an
  OpenMM script printing the potential energy (CPU platform);
* simulate: ``dmd simulate`` of 1,000 BAOAB steps of the same (2 fs, 300 K, γ = 1/ps; DCD frame + log row every 100
  steps) vs OpenMM's ``LangevinMiddleIntegrator`` with a DCD and a state-data reporter;
* villin: ``dmd simulate`` of 10 steps of villin in water (OpenMM's test.pdb, 8,867 atoms, amber14 + TIP3P, PME
  0.9 nm, HBonds, rigid water; one DCD frame) vs the same OpenMM script: what a solvated protein costs before its
  first steps (the issue's target: ≤ 15 s including compilation, ≤ 5 s cached).

Each dmd job runs in fresh processes: ``--no-cache`` (what the first run costs with nothing compiled), then twice
with an empty compilation cache (the first fills it, the second reads it). Also times ``import dmd`` and
``import dmd.openmm_system``. Prints wall seconds, the CPU seconds of the process (user + system: less sensitive to
a loaded machine than wall time), the ratio to OpenMM, and the load average before and after (the machine is
shared: compare ratios from one run).

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --steps 100 --repeat 1 --jobs energy villin
    python benchmarks/bench_startup.py --repeat 1 --jobs villin --kernels auto xla   # numba's kernels and XLA's
    # A/B: an older checkout and this one, alternating in each of 3 rounds, only the empty-cache rows
    python benchmarks/bench_startup.py --jobs villin --rows empty --trees /tmp/base . --rounds 3 --repeat 1
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALA = ROOT / "dmd" / "data" / "alanine_dipeptide.pdb"

VILLIN = Path(importlib.util.find_spec("openmm.app").origin).parent / "data" / "test.pdb"

OPENMM_SCRIPT = """
import sys
import openmm as mm, openmm.app as app, openmm.unit as u
pdb = app.PDBFile(sys.argv[1])
if sys.argv[1].endswith("test.pdb"):  # villin in water
    system = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(
        pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=app.HBonds,
        rigidWater=True)
else:
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                            constraints=None)
steps = int(sys.argv[2])
every = min(100, steps)
integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picoseconds)
sim = app.Simulation(pdb.topology, system, integ, mm.Platform.getPlatformByName("CPU"))
sim.context.setPositions(pdb.positions)
if steps == 0:
    print(sim.context.getState(getEnergy=True).getPotentialEnergy())
else:
    sim.context.setVelocitiesToTemperature(300 * u.kelvin, 0)
    sim.reporters.append(app.DCDReporter(sys.argv[3], every))
    sim.reporters.append(app.StateDataReporter(sys.argv[3] + ".log", every, step=True, potentialEnergy=True))
    sim.step(steps)
"""


TREE = [ROOT]  # the source tree whose dmd runs (--trees: each in turn)
ROWS = ("openmm", "nocache", "empty", "cached")


def _env(cache: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    if cache:  # dmd's numba cache lives under XDG_CACHE_HOME too (dmd.base.numba_env)
        env.pop("NUMBA_CACHE_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join([str(TREE[0]), env.get("PYTHONPATH", "")])
    if cache:
        env["XDG_CACHE_HOME"] = cache
    return env


def _wall(cmd: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(wall s, CPU s of the child: user + system) of one run of ``cmd``."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="alanine simulate steps (default 1000)")
    ap.add_argument("--repeat", type=int, default=2, help="repeats of each timing; the best is printed")
    ap.add_argument(
        "--jobs", nargs="+", default=["import", "energy", "simulate", "villin"], help="which jobs (default: all)"
    )
    villin_sets = (  # one set of villin rows each, the first the default
        (
            "--kernels",
            ["auto", "xla"],
            "villin's kernels: auto (numba's pair force and rebuild as XLA custom calls on CPU) or xla "
            "(--pair-kernel xla, DMD_REBUILD_KERNEL=xla)",
        ),
        (
            "--prefetch",
            ["on", "off"],
            "villin with the numba kernels compiled in worker processes on an empty cache (on: the default, "
            "dmd.forces.numba_prefetch) or without (off: DMD_NUMBA_PREFETCH=0)",
        ),
    )
    for flag, choices, text in villin_sets:
        ap.add_argument(flag, nargs="+", default=choices[:1], choices=choices, help=text + "; one set of rows each")
    ap.add_argument(
        "--workers", default="auto", help="DMD_NUMBA_PREFETCH for --prefetch on: auto (idle cores) or a number"
    )
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="which rows of each job (default: all)")
    ap.add_argument(
        "--trees", nargs="+", type=Path, default=[ROOT], help="source trees of dmd to time, in turn (A/B: old new)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="rounds over --trees (interleaved A/B)")
    args = ap.parse_args()
    rows = []
    for r in range(args.rounds):
        for tree in args.trees:
            TREE[0] = tree.resolve()
            label = f"[{tree} r{r + 1}] " if len(args.trees) > 1 or args.rounds > 1 else ""
            rows += [(label + name, t, ref) for name, t, ref in _measure(args)]
    print(f"{'job':<36} {'wall s':>8} {'CPU s':>7} {'wall ÷ OpenMM':>14} {'CPU ÷ OpenMM':>13}")
    for name, (sec, cpu), ref in rows:
        ratios = "" if ref is None else f"{sec / ref[0]:14.1f} {cpu / ref[1]:13.1f}"
        print(f"{name:<36} {sec:8.2f} {cpu:7.2f} {ratios}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _measure(args) -> list:
    """The rows of one pass over the jobs with the dmd of ``TREE[0]``."""
    py = sys.executable
    print(f"{TREE[0]}: load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  ({os.cpu_count()} CPUs)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as work:
        env0 = _env(None)

        def best(cmd, env_fn):
            return min((_wall(cmd, env_fn(), work) for _ in range(args.repeat)), key=lambda r: r[0])

        if "import" in args.jobs:
            for mod in ("dmd", "dmd.openmm_system"):
                rows.append((f"import {mod}", best([py, "-c", f"import {mod}"], lambda: env0), None))
        script = os.path.join(work, "omm.py")
        Path(script).write_text(OPENMM_SCRIPT)
        sim = ["--integrator", "baoab", "--no-progress", "--overwrite"]
        jobs = {
            "energy": (["energy", "--pdb", str(ALA), "--forcefield", "amber14-all.xml"], [str(ALA), "0"]),
            "simulate": (
                ["simulate", "--pdb", str(ALA), "--forcefield", "amber14-all.xml", "--steps", str(args.steps)]
                + ["--report-every", "100", "--out", "traj.dcd", *sim],
                [str(ALA), str(args.steps), "omm.dcd"],
            ),
        }
        variants = [(k, p) for k in args.kernels for p in args.prefetch]
        for kernels, pre in variants:  # villin with each kernel set, with and without prefetching
            label = " ".join(
                ([kernels] if len(args.kernels) > 1 else []) + ([f"prefetch {pre}"] if len(args.prefetch) > 1 else [])
            )
            jobs[f"villin {label}".strip()] = (
                ["simulate", "--pdb", str(VILLIN), "--forcefield", "amber14-all.xml", "amber14/tip3p.xml"]
                + ["--nonbonded", "PME", "--cutoff", "0.9", "--steps", "10", "--report-every", "10"]
                + ["--out", "villin.dcd", "--pair-kernel", kernels, *sim],
                [str(VILLIN), "10", "omm_villin.dcd"],
            )
        for job, (dmd_args, omm_args) in jobs.items():
            if job.split()[0] not in args.jobs:
                continue
            rebuild = {"DMD_REBUILD_KERNEL": "xla"} if job.startswith("villin xla") else {}
            pre = job.rsplit(" ", 1)[-1] if "prefetch" in job else None
            rebuild.update({"DMD_NUMBA_PREFETCH": {"off": "0", "on": args.workers}[pre]} if pre else {})
            job_env = {**_env(None), **rebuild}
            name = f"simulate {args.steps}" if job == "simulate" else job
            omm = best([py, script, *omm_args], lambda e=job_env: e) if "openmm" in args.rows else None
            if omm is not None:
                rows.append((f"{name}: OpenMM CPU script", omm, None))
            if "nocache" in args.rows:
                nocache = best([py, "-m", "dmd", "--no-cache", *dmd_args], lambda e=job_env: e)
                rows.append((f"{name}: dmd --no-cache", nocache, omm))
            firsts, seconds = [], []
            for _ in range(args.repeat if {"empty", "cached"} & set(args.rows) else 0):
                cache = tempfile.mkdtemp(dir=work)
                firsts.append(_wall([py, "-m", "dmd", *dmd_args], {**_env(cache), **rebuild}, work))
                if "cached" in args.rows:
                    seconds.append(_wall([py, "-m", "dmd", *dmd_args], {**_env(cache), **rebuild}, work))
                print(f"  {name}: {firsts[-1][0]:.2f} s ({firsts[-1][1]:.2f} CPU s), load {os.getloadavg()[0]:.2f}")
            if "empty" in args.rows:
                rows.append((f"{name}: dmd, empty cache", min(firsts), omm))
            if seconds:
                rows.append((f"{name}: dmd, cached", min(seconds), omm))
    return rows


if __name__ == "__main__":
    sys.exit(main())
