"""``dmd fit CONFIG.yaml --out DIR [--resume]``: fit force-field parameters to ensemble observables.

Simulate → observables → loss → gradient → optax update, per round; checkpointed.
"""

from __future__ import annotations

import argparse

HELP = "fit force-field parameters to ensemble observables (config: examples/fit/lj_rdf.yaml)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd fit`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("config", help="YAML config naming system, parameters, targets, estimator, optimizer, rounds")
    p.add_argument("--out", required=True, help="output folder (checkpoint, history.json/csv, plots, summary.json)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.npz")
    p.add_argument("--rounds", type=int, default=None, help="override the config's number of rounds")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier fit in --out")


# files of an earlier fit in --out that a new one (without --resume / --overwrite) would replace
OUTPUTS = ("checkpoint.npz", "history.json", "summary.json")


def check_config_numbers(path) -> None:
    """Refuse non-positive ``rounds`` and ``simulation: {steps, report_every, dt}`` (and a negative
    ``equilibration`` or ``temperature``) in a fit config, before any system is built."""
    import yaml

    from dmd.base.errors import UserInputError

    try:
        raw = yaml.safe_load(open(path).read()) or {}
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: expected a mapping of keys (system:, parameters:, targets:, ...)")
    sim = raw.get("simulation") or {}
    checks = [("rounds", raw.get("rounds"), True)]
    if isinstance(sim, dict):
        checks += [(f"simulation.{k}", sim.get(k), True) for k in ("steps", "report_every", "dt")]
        checks += [(f"simulation.{k}", sim.get(k), False) for k in ("equilibration", "temperature")]
    for name, value, strict in checks:
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise UserInputError(f"{path}: {name}: {value!r} is not a number") from None
        if v < 0 or (strict and v == 0):
            raise UserInputError(f"{path}: {name}: {value} must be {'> 0' if strict else '>= 0'}; fix the config")


def run(args) -> int:
    import dataclasses

    from dmd.base.errors import UserInputError
    from dmd.cli.common import check_input, check_outputs, emit

    if args.rounds is not None and args.rounds <= 0:
        raise UserInputError(f"--rounds {args.rounds}: must be a positive number of rounds")
    overwrite = args.resume or args.overwrite
    check_outputs(args.out, inputs=[args.config], overwrite=overwrite, folder=True, writes=OUTPUTS, resume_hint=True)
    check_input(args.config, "", "fit config (YAML)")
    check_config_numbers(args.config)

    from fitting.fit_config import load_fit_config
    from fitting.forcefield import fit

    system, params, targets, cfg, states = load_fit_config(args.config, out=args.out, resume=args.resume)
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
    res = fit(system, params, targets, cfg, states=states)
    n_states = f", {1 + len(states)} state points" if states else ""
    lines = [f"dmd fit: {len(res.history)} rounds{n_states}, estimator {cfg.estimator}, optimizer {cfg.optimizer}"]
    for name, value in res.values.items():
        lines.append(f"  {name:40s} {value:.6g}   (last iterate {res.last[name]:.6g})")
    lines.append(f"  last loss {res.converged_loss:.4g}; outputs in {args.out}/ (summary.json, history.csv, loss.png)")
    summary = {
        "rounds": len(res.history),
        "state_points": 1 + len(states),
        "estimator": cfg.estimator,
        "optimizer": cfg.optimizer,
        "values": dict(res.values),
        "last_iterate": dict(res.last),
        "last_loss": res.converged_loss,
        "out": args.out,
    }
    emit(args, summary, "\n".join(lines))
    return 0
