"""Start-up, end to end from the shell: ``dmd`` vs a plain OpenMM script for the same job (issue 20, item 5).

Jobs on the bundled alanine dipeptide (22 atoms, amber14-all, NoCutoff, no constraints):

* energy: ``dmd energy`` vs an OpenMM script printing the potential energy (CPU platform);
* simulate: ``dmd simulate`` of 1,000 BAOAB steps (2 fs, 300 K, γ = 1/ps; DCD frame + log row every 100
  steps) vs OpenMM's ``LangevinMiddleIntegrator`` with a DCD and a state-data reporter.

Each dmd job runs three times in fresh processes: ``--no-cache`` (what the first run costs with nothing
compiled), then twice with an empty compilation cache (the first fills it, the second reads it).
Also times ``import dmd`` and ``import dmd.openmm_system``. Prints wall seconds, the ratio to OpenMM,
and the load average before and after (the machine is shared: compare ratios from one run).

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --steps 100 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALA = ROOT / "dmd" / "data" / "alanine_dipeptide.pdb"

OPENMM_SCRIPT = """
import sys
import openmm as mm, openmm.app as app, openmm.unit as u
pdb = app.PDBFile(sys.argv[1])
system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
steps = int(sys.argv[2])
integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picoseconds)
sim = app.Simulation(pdb.topology, system, integ, mm.Platform.getPlatformByName("CPU"))
sim.context.setPositions(pdb.positions)
if steps == 0:
    print(sim.context.getState(getEnergy=True).getPotentialEnergy())
else:
    sim.context.setVelocitiesToTemperature(300 * u.kelvin, 0)
    sim.reporters.append(app.DCDReporter(sys.argv[3], 100))
    sim.reporters.append(app.StateDataReporter(sys.argv[3] + ".log", 100, step=True, potentialEnergy=True))
    sim.step(steps)
"""


def _env(cache: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if cache:
        env["XDG_CACHE_HOME"] = cache
    return env


def _wall(cmd: list[str], env: dict, cwd: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="simulate steps (default 1000)")
    ap.add_argument("--repeat", type=int, default=2, help="repeats of each timing; the best is printed")
    args = ap.parse_args()
    py = sys.executable
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  ({os.cpu_count()} CPUs)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as work:
        env0 = _env(None)

        def best(cmd, env_fn):
            return min(_wall(cmd, env_fn(), work) for _ in range(args.repeat))

        for mod in ("dmd", "dmd.openmm_system"):
            rows.append((f"import {mod}", best([py, "-c", f"import {mod}"], lambda: env0), None))
        script = os.path.join(work, "omm.py")
        Path(script).write_text(OPENMM_SCRIPT)
        jobs = {
            "energy": (["energy", "--pdb", str(ALA), "--forcefield", "amber14-all.xml"], [str(ALA), "0"]),
            f"simulate {args.steps}": (
                ["simulate", "--pdb", str(ALA), "--forcefield", "amber14-all.xml", "--steps", str(args.steps)]
                + ["--integrator", "baoab", "--report-every", "100", "--no-progress", "--out", "traj.dcd"],
                [str(ALA), str(args.steps), "omm.dcd"],
            ),
        }
        for job, (dmd_args, omm_args) in jobs.items():
            omm = best([py, script, *omm_args], lambda: env0)
            rows.append((f"{job}: OpenMM CPU script", omm, None))
            nocache = best([py, "-m", "dmd", *dmd_args, "--no-cache"], lambda: env0)
            rows.append((f"{job}: dmd --no-cache", nocache, omm))
            firsts, seconds = [], []
            for _ in range(args.repeat):
                cache = tempfile.mkdtemp(dir=work)
                firsts.append(_wall([py, "-m", "dmd", *dmd_args], _env(cache), work))
                seconds.append(_wall([py, "-m", "dmd", *dmd_args], _env(cache), work))
            rows.append((f"{job}: dmd, empty cache", min(firsts), omm))
            rows.append((f"{job}: dmd, cached", min(seconds), omm))
    print(f"{'job':<36} {'wall s':>8} {'÷ OpenMM':>9}")
    for name, sec, ref in rows:
        print(f"{name:<36} {sec:8.2f} {'' if ref is None else f'{sec / ref:9.1f}'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
