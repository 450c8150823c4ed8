"""``dmd fit CONFIG.yaml --out DIR [--resume]``: fit force-field parameters to ensemble observables."""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit",
        help="fit force-field parameters to ensemble observables (config: examples/fit/lj_rdf.yaml)",
        description="Simulate → observables → loss → gradient → optax update, per round; checkpointed.",
    )
    p.add_argument("config", help="YAML config naming system, parameters, targets, estimator, optimizer, rounds")
    p.add_argument("--out", required=True, help="output folder (checkpoint, history.json/csv, plots, summary.json)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.npz")
    p.add_argument("--rounds", type=int, default=None, help="override the config's number of rounds")
    return p


def run(args) -> int:
    import dataclasses
    from pathlib import Path

    from dmd.base.errors import UserInputError

    if args.rounds is not None and args.rounds <= 0:
        raise UserInputError(f"--rounds {args.rounds}: must be a positive number of rounds")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserInputError(f"--out {args.out} is a file, not a folder; pass another --out")

    from fitting.fit_config import load_fit_config
    from fitting.forcefield import fit

    system, params, targets, cfg, states = load_fit_config(args.config, out=args.out, resume=args.resume)
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
    res = fit(system, params, targets, cfg, states=states)
    n_states = f", {1 + len(states)} state points" if states else ""
    print(f"dmd fit: {len(res.history)} rounds{n_states}, estimator {cfg.estimator}, optimizer {cfg.optimizer}")
    for name, value in res.values.items():
        print(f"  {name:40s} {value:.6g}   (last iterate {res.last[name]:.6g})")
    print(f"  last loss {res.converged_loss:.4g}; outputs in {args.out}/ (summary.json, history.csv, loss.png)")
    return 0
