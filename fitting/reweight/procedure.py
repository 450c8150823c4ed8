"""The whole cross-validated reweighting procedure: θ by cross-validation, final fit, baselines, identifiability."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from dmd.distributed import to_host
from fitting.reweight.baselines import greedy_elimination, sigmoid_baseline
from fitting.reweight.crossval import select_theta
from fitting.reweight.fit import fit_batch
from fitting.reweight.identifiability import identifiability
from fitting.reweight.prediction import entropy, kish_neff, kl_divergence
from fitting.reweight.problem import FitSpec, OptimizerSettings, Problem, evaluate_weights, predict

__all__ = ["ReweightConfig", "ReweightResult", "reweight"]


@dataclass(frozen=True)
class ReweightConfig(OptimizerSettings):
    """Settings of :func:`reweight`.

    Attributes:
      objective, optimizer, steps, learning_rate: see :class:`fitting.reweight.OptimizerSettings`.
      theta_grid: KL strengths θ tried by cross-validation (θ = 0 is no regularization).
      n_folds: voxel folds; fold ``test_fold`` is the untouched test set, the others serve θ selection.
      n_groups: contiguous frame blocks for the identifiability report (ignored when groups are given).
      greedy: run greedy backward elimination; greedy_max_removals: cap on its removals (None: until no
        removal raises CC); sigmoid_steps: Adam steps of the seed-prototype sigmoid baseline.
    """

    theta_grid: tuple = (0.0, 1e-3, 1e-2, 1e-1)
    n_folds: int = 5
    test_fold: int = 0
    n_groups: int = 10
    greedy: bool = True
    greedy_max_removals: int | None = None
    sigmoid_steps: int = 200


@dataclass
class ReweightResult:
    """Outcome of :func:`reweight` (``summary`` is JSON-able)."""

    weights: np.ndarray
    theta: float
    history: dict
    cv: dict
    summary: dict
    x: np.ndarray = field(repr=False)
    baselines_weights: dict = field(default_factory=dict, repr=False)


def _split(problem: Problem, folds, test_fold: int):
    folds = np.asarray(folds)
    if folds.shape != (problem.n_voxels,):
        raise ValueError(f"folds must have one entry per data voxel ({problem.n_voxels}), got {folds.shape}")
    test = folds == test_fold
    train = ~test
    if not test.any() or len(np.unique(folds[train])) < 2:
        raise ValueError("need a non-empty test fold and at least two other folds for cross-validation")
    return folds, train, test


def _baselines(problem: Problem, train, test, config: ReweightConfig, progress: bool):
    """Uniform weights, greedy backward elimination and the unnormalized sigmoid prototype on the same split.

    Returns ``(summary per baseline, frame weights per baseline)``."""
    t = problem.n_frames
    bw = {"uniform": np.full(t, 1.0 / t)}
    base = {"uniform": {**evaluate_weights(problem, predict(problem, bw["uniform"]), train, test), "n_eff": float(t)}}
    if config.greedy:
        g = greedy_elimination(problem, train, max_removals=config.greedy_max_removals, progress=progress)
        bw["greedy"] = g["weights"]
        base["greedy"] = {
            **evaluate_weights(problem, predict(problem, g["weights"]), train, test),
            "n_eff": kish_neff(g["weights"]),
            "n_removed": g["n_removed"],
        }
    s = sigmoid_baseline(
        problem, train, steps=config.sigmoid_steps, learning_rate=config.learning_rate, progress=progress
    )
    bw["sigmoid"] = s["weights"]
    base["sigmoid"] = {
        **evaluate_weights(problem, s["x"], train, test),
        "n_eff": kish_neff(s["weights"]),
        "weight_sum": float(np.sum(s["weights"])),
    }
    return base, bw


def reweight(
    problem: Problem,
    folds,
    config: ReweightConfig = ReweightConfig(),
    *,
    groups=None,
    progress: bool = True,
) -> ReweightResult:
    """Cross-validated reweighting with baselines side by side.

    1. θ: for every θ in the grid and every inner fold k ≠ test_fold, fit on the other inner folds and score
       the held-out objective on fold k (all fits in one vmapped batch); θ* maximizes the mean held-out score
       (:func:`fitting.reweight.crossval.select_theta`).
    2. Final fit with θ* on all inner folds; CC on them (train) and on the test fold (test).
    3. Baselines on the same split: uniform weights, greedy backward elimination, unnormalized sigmoid.
    4. Identifiability of group weights (``groups``, default ``n_groups`` contiguous frame blocks).

    Args:
      folds: int ``[n_data]`` fold of each data voxel (:func:`fitting.reweight.holdout_folds`).
    """
    folds, train, test = _split(problem, folds, config.test_fold)
    spec = FitSpec(**config.optimizer_settings())
    t = problem.n_frames
    thetas = np.asarray(config.theta_grid, float)
    theta, mean_val, val = select_theta(problem, spec, folds, train, thetas, progress=progress)

    logits, hist = fit_batch(problem, spec, np.asarray(problem.log_w0)[None], train[None], [theta], progress=progress)
    w = to_host(jax.nn.softmax(logits[0])).astype(np.float64)
    x = predict(problem, w)
    n_eff = kish_neff(w)
    summary = {
        "objective": config.objective,
        "optimizer": config.optimizer,
        "n_frames": t,
        "n_voxels": problem.n_voxels,
        "out_of_core": problem.out_of_core,
        "n_train_voxels": int(train.sum()),
        "n_test_voxels": int(test.sum()),
        "theta": theta,
        **evaluate_weights(problem, x, train, test),
        "n_eff": n_eff,
        "n_eff_fraction": n_eff / t,
        "entropy": entropy(w),
        "entropy_max": float(np.log(t)),
        "kl_to_prior": float(kl_divergence(jnp.log(jnp.asarray(w)), problem.log_w0)),
        "cv": {"theta_grid": thetas.tolist(), "mean_heldout_score": mean_val.tolist(), "per_fold": val.tolist()},
    }
    summary["baselines"], bw = _baselines(problem, train, test, config, progress)
    if groups is None:
        groups = np.arange(t) * min(config.n_groups, t) // t
    summary["identifiability"] = identifiability(problem, w, groups, train, objective=config.objective)
    return ReweightResult(
        weights=w,
        theta=theta,
        history={k: to_host(v[0]) for k, v in hist.items()},
        cv=summary["cv"],
        summary=summary,
        x=np.asarray(x),
        baselines_weights=bw,
    )
