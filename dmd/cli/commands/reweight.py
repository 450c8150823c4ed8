"""``dmd reweight``: per-frame weights of a trajectory that best explain measured diffuse scattering.

Softmax frame weights maximizing agreement of x'(h) = Σw|F|² − |ΣwF|² with the data, KL-regularized toward uniform
with θ chosen by cross-validation over held-out symmetry orbits; baselines (uniform, greedy backward elimination,
sigmoid prototype) side by side.

Example::

    dmd reweight --traj traj.dcd --top top.pdb --data diffuse.mtz --column IDIFF --d-min 2.5 --out rw/

writes ``rw/weights.csv`` (frame, weight), ``rw/summary.json`` (cc_train, cc_test, n_eff, θ, baselines,
identifiability), ``rw/reweighted.mtz`` (IOBS, ICALC, ICALC_UNIFORM, TEST) and ``rw/weights_vs_frame.png``,
``rw/cc_vs_iteration.png``. See :mod:`fitting.reweight` for the method.
"""

from __future__ import annotations

import argparse

from dmd import distributed
from dmd.base.errors import UserInputError
from dmd.cli.common import add_overwrite_argument, add_trajectory_arguments, check_input, check_outputs, emit, info

OUTPUTS = ("weights.csv", "summary.json", "reweighted.mtz", "weights_vs_frame.png", "cc_vs_iteration.png")


HELP = "fit per-frame weights of a trajectory to experimental diffuse scattering (MTZ)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd reweight`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    add_trajectory_arguments(p)
    p.add_argument("--data", required=True, help="experimental diffuse data (MTZ)")
    p.add_argument("--column", required=True, help="MTZ column label of the diffuse intensity")
    p.add_argument("--sigma-column", default=None, help="MTZ column of σ(I) (gaussian/student objectives)")
    p.add_argument("--d-min", type=float, default=None, help="high-resolution limit in Å (default: all data)")
    p.add_argument(
        "--objective",
        choices=("cc", "cc-aniso", "gaussian", "student"),
        default="cc",
        help="agreement with the data: correlation (cc, cc-aniso: per-shell anisotropic part) or a likelihood",
    )
    p.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam", help="optimizer of the frame logits")
    p.add_argument("--steps", type=int, default=200, help="optimizer iterations per fit (default 200)")
    p.add_argument("--learning-rate", type=float, default=0.05, help="Adam step on the logits (default 0.05)")
    p.add_argument(
        "--theta-grid",
        default="0,1e-3,1e-2,1e-1",
        help="comma-separated KL strengths θ tried by cross-validation (default 0,1e-3,1e-2,1e-1)",
    )
    p.add_argument("--folds", type=int, default=5, help="voxel folds; one is the untouched test set (default 5)")
    p.add_argument("--holdout", choices=("orbits", "shells"), default="orbits", help="what a fold holds out whole")
    p.add_argument("--blocks", type=int, default=10, help="contiguous frame blocks for the identifiability report")
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy backward-elimination baseline")
    p.add_argument("--greedy-max", type=int, default=None, help="cap greedy elimination at this many removals")
    p.add_argument("--method", choices=("fft", "direct"), default="fft", help="structure-factor route")
    p.add_argument("--stride", type=int, default=1, help="use every n-th frame")
    p.add_argument("--store", default=None, help="HDF5 file for F(h,t) when it does not fit in memory")
    p.add_argument(
        "--max-memory",
        type=float,
        default=None,
        metavar="GB",
        help="with --store: a store larger than this is streamed from disk at every step instead of loaded "
        "(default: half the memory available at start)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--out", required=True, help="output directory")
    add_overwrite_argument(p, "the files of an earlier run in --out")
    distributed.add_arguments(p)


def _theta_grid(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise UserInputError(f"--theta-grid {text!r}: give comma-separated numbers such as 0,1e-3,1e-2") from exc
    if not vals or any(v < 0 for v in vals):
        raise UserInputError(f"--theta-grid {text!r}: give one or more non-negative numbers")
    return vals


def run(args) -> int:
    check_input(args.traj, "--traj", "trajectory")
    check_input(args.top, "--top", "topology")
    check_input(args.data, "--data", "MTZ")
    inputs = [args.traj, args.top, args.data, args.store]
    check_outputs(args.out, inputs=inputs, overwrite=args.overwrite, folder=True, writes=OUTPUTS)
    if args.objective in ("gaussian", "student") and args.sigma_column is None:
        info("note: no --sigma-column; the likelihood assumes equal errors on every voxel")
    if args.folds < 3:
        raise UserInputError(f"--folds must be ≥ 3 (one test fold, two for choosing θ), got {args.folds}")
    if args.max_memory is not None and (args.max_memory < 0 or args.store is None):
        raise UserInputError("--max-memory needs --store PATH (the on-disk F store) and a value ≥ 0 GB")
    if args.steps < 1:
        raise UserInputError(f"--steps must be ≥ 1, got {args.steps}")
    if args.distributed and args.store:
        raise UserInputError("--store with --distributed: every process would write the HDF5 store; drop --store")
    _theta_grid(args.theta_grid)  # a bad grid is refused before the imports

    from fitting.reweight import ReweightConfig
    from fitting.reweight_io import run_reweight

    # frames sharded over the global mesh of all processes' devices; process 0 writes the outputs
    distributed.from_args(args, [args.traj, args.data] + ([args.top] if args.top else []))
    config = ReweightConfig(
        objective=args.objective,
        optimizer=args.optimizer,
        steps=args.steps,
        learning_rate=args.learning_rate,
        theta_grid=_theta_grid(args.theta_grid),
        n_folds=args.folds,
        n_groups=args.blocks,
        greedy=not args.no_greedy,
        greedy_max_removals=args.greedy_max,
        sigmoid_steps=args.steps,
    )
    s = run_reweight(
        args.traj,
        args.top,
        args.data,
        args.column,
        args.out,
        sigma_column=args.sigma_column,
        d_min=args.d_min,
        supercell=tuple(args.supercell),
        config=config,
        holdout=args.holdout,
        method=args.method,
        stride=args.stride,
        store_path=args.store,
        max_memory=None if args.max_memory is None else args.max_memory * 1e9,
        seed=args.seed,
        progress=not args.quiet,
    )
    emit(args, s, format_summary(s))
    return 0


def format_summary(s: dict) -> str:
    """A side-by-side table of the reweighted result and the baselines."""
    rows = [("reweighted", s["cc_train"], s["cc_test"], s["n_eff"])]
    rows += [(k, v["cc_train"], v["cc_test"], v["n_eff"]) for k, v in s["baselines"].items()]
    lines = [
        f"frames {s['n_frames']}, voxels {s['n_voxels']} (test {s['n_test_voxels']}), objective {s['objective']}, "
        f"θ = {s['theta']:g} (cross-validated)" + (", store streamed from disk" if s.get("out_of_core") else ""),
        f"{'method':<12}{'CC train':>10}{'CC test':>10}{'N_eff':>9}",
    ]
    lines += [f"{n:<12}{a:>10.4f}{b:>10.4f}{c:>9.1f}" for n, a, b, c in rows]
    ide = s.get("identifiability", {})
    if ide:
        lines.append(f"identifiability ({ide.get('n_groups')} frame blocks): {ide.get('reason')}")
    return "\n".join(lines)
