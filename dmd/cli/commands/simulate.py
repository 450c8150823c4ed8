"""``dmd simulate``: Langevin / Verlet dynamics of a PDB with OpenMM force fields.

    dmd simulate --pdb ala.pdb --forcefield amber14-all.xml --steps 10000 --dt 0.002 \\
        --temperature 300 --friction 1 --integrator baoab --out traj.dcd
    dmd simulate run.yaml            # the same keys in YAML (pdb, forcefield, steps, dt, ...)

Writes the trajectory (DCD/XTC/HDF5 by extension), ``<stem>.log.csv`` (energies, temperature),
``<stem>.chk.npz`` (checkpoint; ``--resume`` continues from it bit for bit) and
``<stem>.summary.json``. With ``--sensitivity NAME`` it also runs the forward-mode sensitivities
dx_t/dθ (:mod:`dmd.sensitivity`) and writes ``<stem>.sens.h5``.

Defaults are the ones OpenMM users run: amber14-all.xml with amber14/tip3pfb.xml, HBonds constraints, rigid water,
the BAOAB (LangevinMiddle) integrator, 2 fs, 300 K, friction 1/ps. With ``--sensitivity`` the integrator defaults to
the sensitivity note's Langevin form (the one the tangents differentiate), and with the window method to no
constraints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dmd.base.defaults import DEFAULT_CONSTRAINTS, DEFAULT_FORCEFIELD, DEFAULT_INTEGRATOR
from dmd.base.errors import UserInputError
from dmd.cli.common import add_overwrite_argument

# defaults of every key (CLI flag and YAML key alike)
DEFAULTS = {
    "pdb": None,
    "forcefield": list(DEFAULT_FORCEFIELD),
    "steps": None,
    "dt": 0.002,
    "temperature": 300.0,
    "friction": 1.0,
    "seed": 0,
    "report_every": 100,
    "integrator": "auto",
    "out": None,
    "nonbonded": None,
    "cutoff": 1.0,
    "constraints": "auto",
    "rigid_water": True,
    "checkpoint_every": None,
    "checkpoint_minutes": 5.0,
    "resume": False,
    "overwrite": False,
    "sensitivity": None,
    "sensitivity_method": "tangent",
    "window": None,
    "progress": True,
    "pressure": None,
    "barostat": "isotropic",
    "barostat_every": 25,
    "skin": "auto",
    "pair_kernel": "auto",
    "minimize": False,
    "minimize_tolerance": 10.0,
}


HELP = "run Langevin/Verlet dynamics of a PDB with OpenMM force fields"
PAIR_KERNEL_HELP = (
    "real-space pair force: auto (default): numba's compiled kernel on CPU in float32, XLA otherwise and for "
    "sensitivities; numba; xla (dmd.forces.numba_pairs)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd simulate`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    S = argparse.SUPPRESS  # unset flags stay absent so YAML values are not overridden
    p.add_argument("config", nargs="?", help="YAML file with the same keys as the flags (flags win)")
    p.add_argument("--pdb", default=S, help="structure: PDB or mmCIF (CRYST1/cell gives the periodic box)")
    p.add_argument(
        "--forcefield", nargs="+", default=S, help=f"force-field XML names (default: {' '.join(DEFAULT_FORCEFIELD)})"
    )
    p.add_argument("--steps", type=int, default=S, help="total number of steps")
    p.add_argument("--dt", type=float, default=S, help="time step, ps (default 0.002)")
    p.add_argument("--temperature", type=float, default=S, help="K (default 300)")
    p.add_argument("--friction", type=float, default=S, help="1/ps (default 1)")
    p.add_argument("--seed", type=int, default=S, help="PRNG seed (default 0)")
    p.add_argument("--report-every", dest="report_every", type=int, default=S, help="steps per frame/log row")
    p.add_argument(
        "--integrator",
        choices=["langevin", "baoab", "verlet"],
        default=S,
        help="baoab (default): OpenMM's LangevinMiddle; langevin: the sensitivity note's form v←av−b∇E+cn, "
        "x←x+vδt (the default with --sensitivity, which needs it); verlet: NVE",
    )
    p.add_argument("--out", default=S, help="trajectory path: .dcd, .xtc, .h5")
    p.add_argument(
        "--nonbonded",
        choices=["PME", "NoCutoff", "CutoffPeriodic"],
        default=S,
        help="default: PME if the structure has a box, else NoCutoff",
    )
    p.add_argument("--cutoff", type=float, default=S, help="nonbonded cutoff, nm (default 1.0)")
    p.add_argument(
        "--constraints",
        choices=["None", "HBonds", "AllBonds", "HAngles"],
        default=S,
        help="bond constraints (default HBonds, None with --sensitivity-method window; waters are rigid unless "
        "--flexible-water)",
    )
    p.add_argument("--flexible-water", dest="rigid_water", action="store_false", default=S, help="no rigid water")
    p.add_argument(
        "--checkpoint-every",
        dest="checkpoint_every",
        type=int,
        default=S,
        help="steps between checkpoints (default: none)",
    )
    p.add_argument(
        "--checkpoint-minutes",
        dest="checkpoint_minutes",
        type=float,
        default=S,
        help="also checkpoint every this many minutes of wall time (default 5; 0: off)",
    )
    p.add_argument("--pair-kernel", choices=["auto", "numba", "xla"], default=S, help=PAIR_KERNEL_HELP)
    p.add_argument(
        "--skin",
        default=S,
        help="neighbour-list skin, nm, or 'auto' (default): chosen after the first 1,000-step chunk from its rebuild "
        "count (dmd.skin's rule; printed in the summary as neighbor_skin_nm)",
    )
    p.add_argument(
        "--minimize",
        action="store_true",
        default=S,
        help="minimise the energy before dynamics (dmd.minimize: FIRE with constraints, as OpenMM's minimizeEnergy)",
    )
    p.add_argument(
        "--minimize-tolerance",
        dest="minimize_tolerance",
        type=float,
        default=S,
        metavar="KJ_MOL_NM",
        help="stop minimising at this RMS force, kJ/mol/nm (default 10, OpenMM's)",
    )
    p.add_argument("--resume", action="store_true", default=S, help="continue from <out stem>.chk.npz up to --steps")
    add_overwrite_argument(p, "the --out trajectory and the files beside it", default=S)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bar")
    p.add_argument(
        "--sensitivity",
        action="append",
        default=S,
        metavar="NAME",
        help="also compute dx_t/dθ for parameter NAME (force/field/label); repeatable",
    )
    p.add_argument(
        "--sensitivity-method",
        dest="sensitivity_method",
        choices=["tangent", "window"],
        default=S,
        help="tangent: exact tangent carry (default); window: the seed's rolling window",
    )
    p.add_argument("--window", type=int, default=S, help="window length k for --sensitivity-method window")
    p.add_argument("--pressure", type=float, default=S, help="bar: constant pressure (Monte Carlo barostat, dmd.npt)")
    p.add_argument(
        "--barostat",
        choices=["isotropic", "anisotropic", "flexible"],
        default=S,
        help="volume moves (default isotropic; flexible: all six box elements, for crystals)",
    )
    p.add_argument("--barostat-every", dest="barostat_every", type=int, default=S, help="steps per volume move (25)")


def load_config(args) -> dict:
    """The run's settings from parsed ``args`` (YAML config first, flags win), defaults resolved and checked."""
    cfg = dict(DEFAULTS)
    if args.config:
        from dmd.base.config import load_config as read_yaml

        path = Path(args.config)
        data = read_yaml(path, what="simulate config (pdb:, forcefield:, steps:, ...)")
        for k, v in data.items():
            key = k.replace("-", "_")
            if key not in DEFAULTS:
                raise UserInputError(f"{path}: unknown key {k!r}; valid keys: {', '.join(sorted(DEFAULTS))}")
            cfg[key] = v
    for k, v in vars(args).items():
        if k in DEFAULTS:
            cfg[k] = v
    if isinstance(cfg["forcefield"], str):
        cfg["forcefield"] = [cfg["forcefield"]]
    if isinstance(cfg["sensitivity"], str):
        cfg["sensitivity"] = [cfg["sensitivity"]]
    _resolve_auto_defaults(cfg)
    for req, flag in (("pdb", "--pdb"), ("forcefield", "--forcefield"), ("steps", "--steps"), ("out", "--out")):
        if cfg[req] is None:
            raise UserInputError(f"missing {flag}: pass {flag} (or the key {req!r} in the YAML config)")
    _check_values_and_out(cfg, args.config)
    return cfg


def _resolve_auto_defaults(cfg: dict) -> None:
    """The field's defaults (BAOAB, HBonds), except where sensitivities need the seed form without constraints."""
    sens = bool(cfg["sensitivity"])
    if cfg["integrator"] == "auto":
        cfg["integrator"] = "langevin" if sens else DEFAULT_INTEGRATOR
    elif sens and cfg["integrator"] != "langevin":
        raise UserInputError(
            f"--sensitivity follows the seed-form Langevin step; --integrator {cfg['integrator']} cannot be "
            "differentiated by it: drop --integrator (or pass --integrator langevin)"
        )
    if cfg["constraints"] == "auto":
        window = sens and cfg["sensitivity_method"] == "window"
        cfg["constraints"] = None if window else DEFAULT_CONSTRAINTS
    if cfg["constraints"] in ("None", "none"):
        cfg["constraints"] = None


def _check_values_and_out(cfg: dict, config: str | None = None) -> None:
    """Reject bad numbers and unsafe --out paths before any heavy import or work."""
    if int(cfg["steps"]) <= 0:
        raise UserInputError(f"--steps {cfg['steps']}: must be a positive number of steps")
    if cfg["skin"] != "auto":
        try:
            cfg["skin"] = float(cfg["skin"])
        except (TypeError, ValueError):
            raise UserInputError(f"--skin {cfg['skin']}: pass a number of nm (e.g. 0.15) or 'auto'") from None
        if not cfg["skin"] > 0:
            raise UserInputError(f"--skin {cfg['skin']}: must be a positive number of nm (or 'auto')")
    if not float(cfg["minimize_tolerance"]) > 0:
        raise UserInputError(f"--minimize-tolerance {cfg['minimize_tolerance']}: must be a positive force, kJ/mol/nm")
    if float(cfg["temperature"]) < 0:
        raise UserInputError(f"--temperature {cfg['temperature']}: must be >= 0 K")
    if not float(cfg["dt"]) > 0:
        raise UserInputError(f"--dt {cfg['dt']}: pass a positive time step in ps (e.g. 0.002)")
    if int(cfg["report_every"]) < 1:
        raise UserInputError(f"--report-every {cfg['report_every']}: pass a positive number of steps")
    from dmd.cli.common import check_input, check_outputs
    from dmd.trajectory import check_out_path

    inputs = [cfg["pdb"], config]
    resume_or_overwrite = bool(cfg["resume"]) or bool(cfg["overwrite"])
    check_outputs(cfg["out"], inputs=inputs, overwrite=resume_or_overwrite, resume_hint=True)
    # the format from the suffix, before the "minimising" line and any work (after the overwrite checks: an --out
    # naming an input is refused as that, the more important message)
    check_out_path(cfg["out"])
    check_input(cfg["pdb"], "--pdb", "structure")


def build_system(cfg: dict):
    """The :class:`dmd.System` for a config (nonbonded method defaults from the structure's box)."""
    from dmd.openmm_system import system_from_pdb

    pdb = Path(cfg["pdb"])
    if not pdb.exists():
        raise UserInputError(f"--pdb {pdb}: file not found; pass an existing PDB or mmCIF file")
    nonbonded = cfg["nonbonded"]
    if nonbonded is None:
        import openmm.app as app

        reader = app.PDBxFile if pdb.suffix.lower() in (".cif", ".mmcif") else app.PDBFile
        nonbonded = "PME" if reader(str(pdb)).topology.getPeriodicBoxVectors() is not None else "NoCutoff"
        cfg["nonbonded"] = nonbonded
    prefetch_kernels(pdb, nonbonded, cfg["pair_kernel"])
    return system_from_pdb(
        str(pdb),
        forcefield=list(cfg["forcefield"]),
        nonbonded=nonbonded,
        cutoff=float(cfg["cutoff"]),
        constraints=cfg["constraints"],
        rigid_water=bool(cfg["rigid_water"]),
        pair_kernel=cfg["pair_kernel"],  # the rebuild kernel: DMD_REBUILD_KERNEL, else auto
    )


def prefetch_kernels(pdb: Path, nonbonded: str, pair_kernel: str) -> list[str]:
    """Start compiling the numba kernels this run will use in worker processes, where numba's cache lacks them (a
    machine's first run): they compile while the force field is built and the step traced
    (:mod:`dmd.forces.numba_prefetch`)."""
    from dmd.forces.numba_prefetch import forcefield_handlers, prefetch
    from dmd.forces.pme_kernel import AUTO_MIN_ATOMS

    with open(pdb, "rb") as f:  # PDB and mmCIF: one ATOM / HETATM record per atom
        n_atoms = sum(line.startswith((b"ATOM", b"HETATM")) for line in f)
    return prefetch(forcefield_handlers(nonbonded, pair_kernel, n_atoms, AUTO_MIN_ATOMS))


def run_config(cfg: dict, system=None, stop=None):
    """Run a simulation (and sensitivities) for a config dict; returns the :class:`RunResult`.

    ``stop``: see :class:`dmd.simulate.RunConfig` (the CLI passes :func:`dmd.cli.common.stop_on_signals`'s).
    """
    system = build_system(cfg) if system is None else system  # first: it starts the numba kernels' compilation
    from dmd.simulate import RunConfig, default_paths, simulate

    inputs = [cfg["pdb"]] + [f for f in cfg["forcefield"] if Path(f).exists()]
    run_cfg = RunConfig(
        steps=int(cfg["steps"]),
        dt=float(cfg["dt"]),
        temperature=float(cfg["temperature"]),
        friction=float(cfg["friction"]),
        integrator=cfg["integrator"],
        seed=int(cfg["seed"]),
        report_every=int(cfg["report_every"]),
        checkpoint_every=None if cfg["checkpoint_every"] is None else int(cfg["checkpoint_every"]),
        out=cfg["out"],
        resume=bool(cfg["resume"]),
        progress=bool(cfg["progress"]),
        inputs=tuple(inputs),
        checkpoint_wall_s=60.0 * float(cfg["checkpoint_minutes"]) if cfg["checkpoint_minutes"] else None,
        stop=stop,
        skin=cfg["skin"],
        minimize=float(cfg["minimize_tolerance"]) if cfg["minimize"] else None,
    )
    names = cfg["sensitivity"]
    if names:  # check before the (long) run that the sensitivity engine exists
        try:
            from dmd import sensitivity
        except ImportError as exc:
            raise UserInputError(
                f"--sensitivity needs dmd.sensitivity, which could not be imported ({exc}); "
                "update dmd or run without --sensitivity"
            ) from None
        if cfg["sensitivity_method"] == "window" and cfg["window"] is None:
            raise UserInputError("--sensitivity-method window needs --window K (the number of exact terms kept)")
    if cfg["pressure"] is not None:
        from dmd.npt_run import simulate_npt

        if names:
            raise UserInputError("--sensitivity is for constant-volume runs; drop it or drop --pressure")
        return simulate_npt(
            system, run_cfg, pressure_bar=float(cfg["pressure"]), barostat=cfg["barostat"], every=cfg["barostat_every"]
        )
    result = simulate(system, run_cfg)
    if names:
        try:
            sens = sensitivity.run_sensitivities(
                system,
                list(names),
                steps=run_cfg.steps,
                dt=run_cfg.dt,
                temperature=run_cfg.temperature,
                friction=run_cfg.friction,
                seed=run_cfg.seed,
                method=cfg["sensitivity_method"],
                window=cfg["window"],
                report_every=run_cfg.report_every,
            )
        except KeyError as exc:  # unknown parameter name: the message lists valid names
            raise UserInputError(f"--sensitivity: {exc.args[0]}") from None
        stem = Path(cfg["out"]).with_suffix("")
        sens_path = Path(f"{stem}.sens.h5")
        sensitivity.write_sensitivities(sens_path, sens, inputs=inputs)
        result.summary["outputs"]["sensitivities"] = str(sens_path)
        from dmd.base.io import write_json

        write_json(default_paths(cfg["out"])["summary"], result.summary, inputs=inputs)
    return result


def temperature_warning(mean_k: float, target_k: float, minimized: bool) -> str | None:
    """A warning line when the run's mean temperature is far above the thermostat's target, else None.

    Why: 10 steps of the bundled solvated dipeptide without ``--minimize`` average 2,766 K at a 300 K target (the
    start's close contacts turn into kinetic energy; 172 K with ``--minimize``). The summary's ⟨T⟩ then says
    something is wrong but not what. Threshold: above twice the target and 100 K over it — a Langevin run from a
    sound start stays within a few tens of percent of its target even for a small molecule (per-frame fluctuation
    √(2/3N) ≈ 17% for 22 atoms, less in the mean)."""
    if not (target_k > 0 and mean_k == mean_k and mean_k > 2.0 * target_k and mean_k > target_k + 100.0):
        return None
    head = f"warning: ⟨T⟩ {mean_k:.0f} K is {mean_k / target_k:.1f}× the {target_k:g} K target"
    if minimized:
        return f"{head} even after minimising: check the time step (--dt) and that bonds to H are constrained"
    return (f"{head}: the start structure's close contacts are heating the run; add --minimize (as OpenMM's "
            "minimizeEnergy) or discard more steps as equilibration")  # fmt: skip


def run(args) -> int:
    from dmd.cli.common import emit, stop_on_signals

    cfg = load_config(args)
    if cfg["minimize"] and cfg["progress"] and not cfg["resume"]:
        import sys

        print(f"dmd simulate: minimising to RMS |F| ≤ {cfg['minimize_tolerance']:g} kJ/mol/nm ...", file=sys.stderr)
    if cfg["resume"]:
        what = "the checkpoint is unchanged (continue with --resume)"
    else:
        what = "nothing was written (run again to start over)"
    with stop_on_signals(exit_before_writes=f"dmd simulate: interrupted before the first frames; {what}") as stop:
        res = run_config(cfg, stop=stop)
    s = res.summary
    lines = [
        f"dmd simulate: {s['system']} ({s['n_atoms']} atoms, {cfg['nonbonded']}), {s['integrator']}, "
        f"steps {s['start_step']}→{s['final_step']} at {s['dt_ps']} ps: {s['steps_per_s']:.1f} steps/s "
        f"({s['ns_per_day']:.2f} ns/day); ⟨U⟩ = {s['mean_potential_kj_mol']:.2f} kJ/mol, "
        f"⟨T⟩ = {s['mean_temperature_K']:.1f} K"
    ]
    if s.get("minimization"):
        from dmd.minimize import summary_line

        lines.append("  " + summary_line(s["minimization"]))
    hot = temperature_warning(s["mean_temperature_K"], float(cfg["temperature"]), bool(s.get("minimization")))
    if hot:
        lines.append("  " + hot)
    if s.get("pressure_bar") is not None:
        rho = s["mean_density_g_cm3"]
        lines.append(f"  {s['barostat']} barostat at {s['pressure_bar']} bar: ⟨ρ⟩ = {rho:.4f} g/cm³")
    lines += [f"  {k:13s} {v}" for k, v in s["outputs"].items()]
    emit(args, s, "\n".join(lines))
    return 0
