"""Fitting frame weights in memory: one compiled optimizer loop per (θ, fold, start) problem, vmapped.

The loss is an objective from :mod:`fitting.objectives` plus a pull toward prior weights w₀ (BME / BioEn)::

    L(z) = objective(x′(w), y) + θ · KL(w‖w₀),   w = softmax(z)

optimized with optax Adam or L-BFGS (``optax.lbfgs``, zoom line search). Several fits run as one vmapped
batch: the store is read once per step for all of them (a matrix–matrix product); a single fit runs
unbatched, as two matrix–vector passes per step at the memory bandwidth (benchmarks/bench_reweight.py).
"""

from __future__ import annotations

import functools
from dataclasses import asdict

import jax
import jax.numpy as jnp
import optax

from analysis.stats import pearson_cc
from fitting.reweight.prediction import kl_divergence, x_from_weights
from fitting.reweight.problem import FitSpec, Problem, objective_value
from fitting.reweight.streaming import fit_batch_streaming

__all__ = ["fit_batch"]


def _fit_one(spec: FitSpec, stats_fn, z, data, log_w0, logits0, mask, theta):
    """One fit (vmapped by :func:`fit_batch`). Returns final logits and per-step history."""

    def parts(logits):
        w = jax.nn.softmax(logits)
        x = x_from_weights(stats_fn, z, w, data, spec.n_data)
        o = objective_value(spec, x, data, mask)
        kl = kl_divergence(logits, log_w0)
        return o + theta * kl, (o, kl, pearson_cc(x, data["y"], mask=mask))

    if spec.optimizer == "adam":
        opt = optax.adam(spec.learning_rate)
        vg = jax.value_and_grad(parts, has_aux=True)

        def body(carry, _):
            logits, state = carry
            (loss, (o, _, cc)), g = vg(logits)
            upd, state = opt.update(g, state, logits)
            return (optax.apply_updates(logits, upd), state), (loss, o, cc)

        (logits, _), hist = jax.lax.scan(body, (logits0, opt.init(logits0)), None, length=spec.steps)
    elif spec.optimizer == "lbfgs":
        value_fn = lambda p: parts(p)[0]
        opt = optax.lbfgs()
        vg = optax.value_and_grad_from_state(value_fn)

        def body(carry, _):
            logits, state = carry
            loss, g = vg(logits, state=state)
            upd, state = opt.update(g, state, logits, value=loss, grad=g, value_fn=value_fn)
            logits = optax.apply_updates(logits, upd)
            _, (o, _, cc) = parts(logits)  # history of the accepted point (one extra forward pass)
            return (logits, state), (loss, o, cc)

        (logits, _), hist = jax.lax.scan(body, (logits0, opt.init(logits0)), None, length=spec.steps)
    else:
        raise ValueError(f"unknown optimizer {spec.optimizer!r}: use 'adam' or 'lbfgs'")
    loss, o, cc = hist
    return logits, {"loss": loss, "objective": o, "cc": cc}


@functools.lru_cache(maxsize=32)
def _batched_fitter(spec: FitSpec, stats_fn):
    f = functools.partial(_fit_one, spec, stats_fn)
    return jax.jit(jax.vmap(f, in_axes=(None, None, None, 0, 0, 0)))


@functools.lru_cache(maxsize=32)
def _single_fitter(spec: FitSpec, stats_fn):
    def _fit_one_unbatched(z, data, log_w0, logits0, mask, theta):
        return _fit_one(spec, stats_fn, z, data, log_w0, logits0, mask, theta)

    return jax.jit(_fit_one_unbatched)


def fit_batch(problem: Problem, spec: FitSpec, logits0, masks, thetas, *, progress: bool = False):
    """Run a batch of independent fits in one compiled, vmapped optimizer loop.

    Args:
      logits0: ``[batch, n_frames]`` starting logits (``problem.log_w0`` for the prior).
      masks: bool ``[batch, n_data]`` voxels each fit sees; thetas: ``[batch]`` KL strengths θ.

    Returns:
      logits ``[batch, n_frames]`` and a history dict of ``[batch, steps]`` arrays (``loss``,
      ``objective``, ``cc`` = training CC after each step).

    A problem whose store stays on disk (:attr:`Problem.out_of_core`) is fitted by streaming the store
    chunk by chunk every step (:func:`fitting.reweight.streaming.fit_batch_streaming`, Adam only; ``progress``
    shows its steps).
    """
    spec = FitSpec(**{**asdict(spec), "n_shells": problem.n_shells, "n_data": problem.n_data})
    if problem.out_of_core:
        return fit_batch_streaming(problem, spec, logits0, masks, thetas, progress=progress)
    dtype = problem.log_w0.dtype
    logits0, masks, thetas = jnp.asarray(logits0, dtype), jnp.asarray(masks, bool), jnp.asarray(thetas, dtype)
    if logits0.shape[0] == 1:
        # a single fit runs unbatched: S = w·Z stays a matrix–vector product, which XLA:CPU streams at full
        # memory bandwidth; a [1, T]·[T, N] (or duplicated [2, T]) matrix product runs 1.5–5x slower (measured
        # at T=1000, N=6e5: 162 ms vs 236 ms (batch 1) vs 901 ms (batch 2) per pass)
        logits, hist = _single_fitter(spec, problem.stats_fn)(
            problem.z, problem.data, problem.log_w0, logits0[0], masks[0], thetas[0]
        )
        return logits[None], {k: v[None] for k, v in hist.items()}
    return _batched_fitter(spec, problem.stats_fn)(problem.z, problem.data, problem.log_w0, logits0, masks, thetas)
