"""Baselines that frame reweighting must beat, computed on the same store and voxel split.

* uniform weights w_t = 1/T (plain MD average);
* greedy backward frame elimination (as lunus ``xtraj``-style frame selection): start from all frames with
  equal weights, remove the frame whose removal raises the training CC most, repeat until no removal
  raises it. All T candidate removals of a round are scored at once from the sufficient statistics:
  with n active frames and S = (1/n) Σ_active Z_t, removing frame j gives S′_j = (n S − Z_j)/(n − 1);
  one streaming pass over the store per round, no Python loop over candidates;
* the seed prototype: unnormalized sigmoid weights w_t = σ(z_t) ∈ (0, 1) and −CC optimized by Adam.
  With W = Σw ≠ 1 the prediction Σw|F|² − |ΣwF|² contains the Bragg leak W(1−W)|⟨F⟩|² + …
  (:func:`fitting.reweight.diffuse_unnormalized`), which is why the main method uses softmax.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis.stats import pearson_cc
from fitting.reweight import Problem, _to_data_voxels, diffuse_from_stats, diffuse_unnormalized

__all__ = ["greedy_elimination", "sigmoid_baseline"]


@functools.lru_cache(maxsize=8)
def _candidate_scorer(stats_fn, n_data: int, batch_size: int):
    def score(z, data, active, mask):
        n = jnp.sum(active).astype(z.dtype)
        t_real = active.shape[0]
        s = stats_fn(active.astype(z.dtype) / n, z)  # [3, M]
        x0 = _to_data_voxels(diffuse_from_stats(s), data, n_data)
        cc0 = pearson_cc(x0, data["y"], mask=mask)

        def one(z_j):
            s_j = (n * s - z_j) / (n - 1)
            return pearson_cc(_to_data_voxels(diffuse_from_stats(s_j), data, n_data), data["y"], mask=mask)

        cand = jax.lax.map(one, z[:t_real], batch_size=batch_size)
        return cc0, jnp.where(active, cand, -jnp.inf)

    return jax.jit(score)


def greedy_elimination(
    problem: Problem,
    train_mask,
    *,
    min_frames: int = 2,
    max_removals: int | None = None,
    tol: float = 0.0,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Greedy backward frame elimination on the training voxels.

    Args:
      train_mask: bool ``[n_data]`` voxels whose CC is maximized.
      min_frames: stop at this many frames; max_removals: optional cap on rounds;
      tol: a removal must raise CC by more than this.

    Returns dict: ``weights [n_frames]`` (uniform over kept frames), ``removed`` (frame indices in order),
    ``n_removed``, ``cc_path`` (training CC after each round, starting with all frames).
    """
    from tqdm.auto import tqdm

    t = problem.n_frames
    score = _candidate_scorer(problem.stats_fn, problem.n_data, batch_size)
    active = np.ones(t, bool)
    mask = jnp.asarray(train_mask, bool)
    removed, path = [], []
    limit = t - min_frames if max_removals is None else min(max_removals, t - min_frames)
    bar = tqdm(total=limit, desc="greedy elimination", unit="frame", disable=not progress)
    cc0, cand = score(problem.z, problem.data, jnp.asarray(active), mask)
    path.append(float(cc0))
    while len(removed) < limit:
        j = int(jnp.argmax(cand))
        if not float(cand[j]) > path[-1] + tol:
            break
        active[j] = False
        removed.append(j)
        cc0, cand = score(problem.z, problem.data, jnp.asarray(active), mask)
        path.append(float(cc0))
        bar.update(1)
    bar.close()
    return {"weights": active / active.sum(), "removed": removed, "n_removed": len(removed), "cc_path": path}


@functools.lru_cache(maxsize=8)
def _sigmoid_fitter(stats_fn, n_data: int, steps: int, learning_rate: float):
    opt = optax.adam(learning_rate)

    def run(z, data, f_re, f_im, logits0, mask):
        f_mean = f_re + 1j * f_im

        def predict(logits):
            w = jax.nn.sigmoid(logits)
            s = stats_fn(w, z)
            return _to_data_voxels(diffuse_unnormalized(s, jnp.sum(w), f_mean), data, n_data)

        loss = lambda lg: -pearson_cc(predict(lg), data["y"], mask=mask)

        def body(carry, _):
            lg, st = carry
            v, g = jax.value_and_grad(loss)(lg)
            u, st = opt.update(g, st, lg)
            return (optax.apply_updates(lg, u), st), -v

        (lg, _), cc_hist = jax.lax.scan(body, (logits0, opt.init(logits0)), None, length=steps)
        return lg, predict(lg), cc_hist

    return jax.jit(run)


def sigmoid_baseline(problem: Problem, train_mask, *, steps: int = 200, learning_rate: float = 0.05) -> dict:
    """The seed prototype: weights σ(z) (not normalized), start at 0.5 each, Adam on −CC of the training voxels.

    Returns dict: ``weights [n_frames]`` (their sum is reported as the Bragg-leak indicator), ``x [n_data]``
    the prediction with those weights, ``cc_history [steps]``.
    """
    dtype = problem.z.dtype
    run = _sigmoid_fitter(problem.stats_fn, problem.n_data, int(steps), float(learning_rate))
    f_mean = np.asarray(problem.f_mean)
    lg, x, hist = run(
        problem.z,
        problem.data,
        jnp.asarray(f_mean.real, dtype),
        jnp.asarray(f_mean.imag, dtype),
        jnp.zeros(problem.n_frames, dtype),
        jnp.asarray(train_mask, bool),
    )
    return {"weights": np.asarray(jax.nn.sigmoid(lg), np.float64), "x": np.asarray(x), "cc_history": np.asarray(hist)}
