"""``dmd quickstart``: a short run on bundled data with a report, as a list of stages.

Stage "simulate": alanine dipeptide (``dmd/data/alanine_dipeptide.pdb``) in vacuum with amber14,
HBonds constraints, 2 fs, 300 K LangevinMiddle (BAOAB); stage "plot": energy and temperature vs time
(PNG). Outputs go to ``./dmd-quickstart/`` (or ``--out DIR``): ``traj.dcd``, ``traj.log.csv``,
``traj.summary.json``, ``traj.chk.npz``, ``energy.png``, ``quickstart.json``.

Stage "reweight": frame reweighting of the bundled example trajectory against bundled synthetic diffuse
data (:func:`fitting.reweight.quickstart_stage`), outputs in ``reweight/``.

Later features append stages to :data:`STAGES`: each is ``(name, fn(ctx) -> str)``, reads and
extends the shared ``ctx`` dict and returns one report line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dmd.cli.common import add_overwrite_argument

DATA_PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide.pdb"


HELP = "short simulation of bundled alanine dipeptide with a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd quickstart`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("--out", default="dmd-quickstart", help="output folder (default ./dmd-quickstart)")
    p.add_argument("--steps", type=int, default=5000, help="MD steps (default 5000 = 10 ps at 2 fs)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    add_overwrite_argument(p, "the outputs of an earlier quickstart in --out")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def stage_simulate(ctx: dict) -> str:
    from dmd.cli.commands.simulate import DEFAULTS, run_config
    from dmd.cli.common import stop_on_signals

    cfg = dict(DEFAULTS)
    cfg.update(
        pdb=str(DATA_PDB),
        forcefield=["amber14-all.xml"],
        nonbonded="NoCutoff",
        constraints="HBonds",
        steps=ctx["steps"],
        dt=0.002,
        temperature=300.0,
        friction=1.0,
        integrator="baoab",
        report_every=50,
        seed=ctx["seed"],
        out=str(ctx["out"] / "traj.dcd"),
        progress=ctx["progress"],
    )
    with stop_on_signals() as stop:
        res = run_config(cfg, stop=stop)
    ctx["run"] = res
    ctx["trajectory"] = Path(cfg["out"])
    ctx["topology"] = str(DATA_PDB)
    s = res.summary
    return (
        f"simulate: alanine dipeptide, amber14, vacuum, HBonds, {s['final_step']} steps of 2 fs at 300 K "
        f"({s['steps_per_s']:.0f} steps/s); ⟨U⟩ = {s['mean_potential_kj_mol']:.1f} kJ/mol, "
        f"⟨T⟩ = {s['mean_temperature_K']:.1f} K; trajectory {cfg['out']}"
    )


def stage_plot(ctx: dict) -> str:
    from dmd.base.plotting import pyplot

    plt = pyplot()

    from dmd.base.plotting import save_figure

    log = ctx["run"].log  # time, U, K, total, T
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    ax1.plot(log[:, 0], log[:, 1], label="potential")
    ax1.plot(log[:, 0], log[:, 3], label="total (potential + kinetic)")
    ax1.set_ylabel("energy (kJ/mol)")
    ax1.set_title("alanine dipeptide, amber14, vacuum, HBonds, BAOAB 2 fs", fontsize=9)
    ax1.legend(fontsize=8)
    ax2.plot(log[:, 0], log[:, 4], color="C3", label="instantaneous (22 atoms: fluctuates widely)")
    ax2.axhline(300.0, color="k", lw=0.8, ls="--", label="thermostat 300 K")
    ax2.set_ylabel("temperature (K)")
    ax2.set_xlabel("time (ps)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    png = ctx["out"] / "energy.png"
    save_figure(fig, png)
    ctx["plot"] = png
    return f"plot: energy and temperature vs time in {png}"


def stage_reweight(ctx: dict) -> str:
    from fitting.reweight import quickstart_stage

    s = quickstart_stage(ctx["out"] / "reweight", progress=ctx["progress"])
    w = ", ".join(f"{v:.2f}" for v in s["recovered_state_weights"])
    t = ", ".join(f"{v:.2f}" for v in s["true_state_weights"])
    return (
        f"reweight: bundled 60-frame alanine-dipeptide trajectory against synthetic diffuse data; state weights "
        f"{w} (truth {t}, L1 error {s['state_weight_l1_error']:.3f}); CC train {s['cc_train']:.3f} / test "
        f"{s['cc_test']:.3f}, N_eff {s['n_eff']:.1f}; outputs in {ctx['out'] / 'reweight'}/"
    )


# (name, function); later issues append their stages here
STAGES: list[tuple[str, object]] = [("simulate", stage_simulate), ("plot", stage_plot), ("reweight", stage_reweight)]


def run(args) -> int:
    from dmd.base.errors import UserInputError
    from dmd.base.io import write_json
    from dmd.cli.common import emit, say

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file, not a folder; pass another --out")
    done = out / "quickstart.json"
    if done.exists() and not args.overwrite:
        raise UserInputError(f"{done} exists (an earlier quickstart); pass --overwrite to replace it or another --out")
    out.mkdir(parents=True, exist_ok=True)
    ctx = {"out": out, "steps": int(args.steps), "seed": int(args.seed), "progress": bool(args.progress)}
    lines = []
    for name, fn in STAGES:
        line = fn(ctx)
        lines.append(line)
        if not args.json:  # each stage's line as it finishes; --json prints one object at the end
            say(f"[{name}] {line}")
    report = {"stages": [n for n, _ in STAGES], "report": lines}
    write_json(out / "quickstart.json", report)
    summary = dict(report, out=str(out), simulate=ctx["run"].summary if "run" in ctx else None)
    emit(args, summary, f"dmd quickstart: done; outputs in {out}/")
    return 0
