"""``dmd fit CONFIG.yaml --out DIR [--resume]``: fit force-field parameters to ensemble observables.

Simulate → observables → loss → gradient → optax update, per round; checkpointed.
"""

from __future__ import annotations

import argparse

from dmd.cli.common import add_overwrite_argument

HELP = "fit force-field parameters to ensemble observables (config: examples/fit/lj_rdf.yaml)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd fit`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("config", help="YAML config naming system, parameters, targets, estimator, optimizer, rounds")
    p.add_argument("--out", required=True, help="output folder (checkpoint, history.json/csv, plots, summary.json)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.npz")
    p.add_argument("--rounds", type=int, default=None, help="override the config's number of rounds")
    add_overwrite_argument(p, "the results of an earlier fit in --out")
    from dmd import distributed

    distributed.add_arguments(p, "replicas sharded over all processes' devices (else (state, replica) pairs split)")


# files of an earlier fit in --out that a new one (without --resume / --overwrite) would replace
OUTPUTS = ("checkpoint.npz", "history.json", "summary.json", "start_scan.npz")


def check_config_numbers(path, rounds: int | None = None) -> None:
    """Refuse non-positive ``rounds`` (0 only with a ``start_scan``) and ``simulation: {steps, report_every, dt}``
    (and a negative ``equilibration`` or ``temperature``) in a fit config, before any system is built. ``rounds``:
    the command line's ``--rounds``, which replaces the config's."""
    import yaml

    from dmd.base.errors import UserInputError

    try:
        raw = yaml.safe_load(open(path).read()) or {}
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: expected a mapping of keys (system:, parameters:, targets:, ...)")
    sim = raw.get("simulation") or {}
    if rounds == 0 and raw.get("start_scan") is None:
        raise UserInputError(f"--rounds 0: a fit of no rounds needs a start_scan in {path} (θ from its losses); give "
                             "--rounds > 0")  # fmt: skip
    # rounds: 0 is a fit measured by its start scan alone (θ from the loss surface: the peptide example)
    checks = [("rounds", raw.get("rounds"), raw.get("start_scan") is None)]
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

    import numpy as np

    from dmd import distributed
    from dmd.base.errors import UserInputError
    from dmd.cli.common import check_input, check_outputs, emit

    if args.rounds is not None and args.rounds < 0:
        raise UserInputError(f"--rounds {args.rounds}: must be a number of rounds >= 0 (0: the start scan alone)")
    overwrite = args.resume or args.overwrite
    check_input(args.config, "", "fit config (YAML)")
    # every process: the same config, target files and (resuming) checkpoint, or all stop before any output
    multi = distributed.from_args(args, _fit_inputs(args))
    refused = None
    try:
        check_outputs(args.out, inputs=[args.config], overwrite=overwrite, folder=True, writes=OUTPUTS,
                      resume_hint=True)  # fmt: skip
    except UserInputError as exc:
        refused = exc
    if multi and distributed.sum_over_processes(np.array([refused is not None], float))[0] and refused is None:
        raise UserInputError(f"--distributed: another process refused --out {args.out} (see its message); nothing run")
    if refused is not None:
        raise refused
    check_config_numbers(args.config, args.rounds)

    from fitting.fit_config import load_fit_config
    from fitting.forcefield import fit

    system, params, targets, cfg, states = load_fit_config(args.config, out=args.out, resume=args.resume)
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
    res = fit(system, params, targets, cfg, states=states)
    n_states = f", {1 + len(states)} state points" if states else ""
    from fitting.start_scan import summary as scan_summary

    n_rounds = sum(h.get("status") != "scan" for h in res.history)
    lines = [f"dmd fit: {n_rounds} rounds{n_states}, estimator {cfg.estimator}, optimizer {cfg.optimizer}"]
    scan = scan_summary(res.history)
    if scan is not None:  # fitting.start_scan: the loss at each grid point, and where the rounds started
        pts = ", ".join(f"{' '.join(f'{v:.5g}' for v in th.values())}: {lo:.3g}"
                        for th, lo in zip(scan["theta"], scan["loss"], strict=True))  # fmt: skip
        start = " ".join(f"{v:.5g}" for v in scan["rounds_start"].values()) if scan["rounds_start"] else "-"
        lines.append(f"  start scan (θ: loss) {pts}; lowest point {scan['lowest_point']}, rounds started at {start}")
    for name, value in res.values.items():
        se = (res.stderr or {}).get(name)
        pm = "" if se is None else f" ± {se:.2g} (s.e. of the mean of the last rounds)"
        lines.append(f"  {name:40s} {value:.6g}{pm}   (last iterate {res.last[name]:.6g})")
    lines.append(f"  last loss {res.converged_loss:.4g}; outputs in {args.out}/ (summary.json, history.csv, loss.png)")
    summary = {
        "rounds": n_rounds,
        "start_scan": scan,
        "state_points": 1 + len(states),
        "estimator": cfg.estimator,
        "optimizer": cfg.optimizer,
        "values": dict(res.values),
        "stderr": res.stderr,
        "last_iterate": dict(res.last),
        "last_loss": res.converged_loss,
        "out": args.out,
    }
    if distributed.is_writer():
        emit(args, summary, "\n".join(lines))
    return 0


def _fit_inputs(args) -> list:
    """The files every process of a distributed fit must hold identically: the config, the target files it names
    (``file:`` entries, relative to the config) and, when resuming, the checkpoint."""
    import os

    import yaml

    paths = [args.config]
    try:
        raw = yaml.safe_load(open(args.config).read()) or {}
    except (OSError, yaml.YAMLError):
        return paths  # load_fit_config reports it
    base = os.path.dirname(os.path.abspath(args.config))
    targets = list(raw.get("targets") or []) if isinstance(raw, dict) else []
    for st in (raw.get("states") or []) if isinstance(raw, dict) else []:
        targets += list(st.get("targets") or []) if isinstance(st, dict) else []
    for t in targets:
        f = t.get("file") if isinstance(t, dict) else None
        if isinstance(f, str) and os.path.isfile(os.path.join(base, f)):
            paths.append(os.path.join(base, f))
    ckpt = os.path.join(args.out, "checkpoint.npz")
    if args.resume and os.path.isfile(ckpt):
        paths.append(ckpt)
    return paths
