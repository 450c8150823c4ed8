"""One force-field fit round's pieces outside a state's estimators: the sampling of every state (replicated or not)
and the optimizer step (the optax chain and the gradient or Levenberg-Marquardt direction it is fed)."""

from __future__ import annotations

import numpy as np
import optax

from dmd import distributed
from dmd.base.errors import UserInputError
from fitting.forcefield_config import OPTIMIZERS
from fitting.forcefield_sampling import sample_states

__all__ = ["optimizer", "direction", "check_replicas", "sample_round"]


def optimizer(cfg):
    if cfg.optimizer not in OPTIMIZERS:
        raise UserInputError(f"optimizer {cfg.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    base = {"lm": optax.sgd, "sgd": optax.sgd, "adam": optax.adam}[cfg.optimizer](cfg.learning_rate)
    # the trust region scales the whole step (global norm), keeping the LM/gradient direction
    return optax.chain(base, optax.clip_by_global_norm(cfg.max_step))


def direction(cfg, r, J):
    """The 'gradient' fed to optax: 2Jᵀr (adam/sgd) or −Δz_LM (lm).

    The LM step is a trust-region step: the damping λ grows until ‖Δz‖ ≤ max_step, so that an ill-determined
    direction (a small singular value of J, amplified sampling noise) cannot dominate the step; as λ grows the
    step turns towards the gradient, which the well-determined parameters dominate.
    """
    g = 2.0 * J.T @ r
    if cfg.optimizer != "lm":
        return g
    jtj = J.T @ J
    n = len(g)
    scale = max(np.trace(jtj) / n, 1e-300)
    lam = cfg.damping * scale
    for _ in range(80):
        step = np.linalg.solve(jtj + lam * np.eye(n), J.T @ r)
        if np.linalg.norm(step) <= cfg.max_step:
            break
        lam *= 3.0
    return step  # Δz = −step; optax.sgd(lr) applies −lr·step


def check_replicas(cfg, evals) -> bool:
    """Whether this fit samples replicas (``cfg.replicas`` > 1, or several processes); refuses the routes that
    cannot; gives every state R start configurations (the start positions, repeated)."""
    r = cfg.replicas
    if not (isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 1):
        raise UserInputError(f"replicas {r!r}: give a positive whole number of replicas per state point (e.g. 4)")
    replicated = r > 1 or distributed.is_distributed()
    if replicated and (cfg.pressure is not None or cfg.estimator == "pathwise"):
        what = "simulation.pressure (NPT)" if cfg.pressure is not None else "estimator: pathwise"
        raise UserInputError(
            f"replicas: {r} / --distributed: replicated sampling is NVT with the fluctuation or reweighting estimator; "
            f"{what} runs one replica in one process: set replicas: 1 and drop --distributed, or change the ensemble"
        )
    if replicated:
        for e in evals:
            e.positions = np.repeat(np.asarray(e.positions)[None], r, axis=0)
    return replicated


def sample_round(evals, z, rnd, cfg, replicated) -> None:
    """One round's sampling of every state at z (raises SimulationDiverged): R replicas per state over devices and
    processes (every process gets every frame), or one run per state."""
    if replicated:
        jobs = [(e.name, e.system, e.mapping.params_of(z), e.cfg, e.positions, e.sampler) for e in evals]
        for e, frames in zip(evals, sample_states(jobs, rnd, cfg.replicas), strict=True):
            e.set_replica_frames(frames)
    else:
        for e in evals:
            e.simulate(z, rnd)
