"""Baselines that frame reweighting must beat, computed on the same store and voxel split.

* uniform weights w_t = 1/T (plain MD average);
* greedy backward frame elimination (as lunus ``xtraj``-style frame selection): start from all frames with
  equal weights, remove the frame whose removal raises the training CC most, repeat until no removal
  raises it. All T candidate removals of a round are scored at once from the sufficient statistics:
  with n active frames and S = (1/n) Σ_active Z_t, removing frame j gives S′_j = (n S − Z_j)/(n − 1);
  one streaming pass over the store per round (two when the store is streamed from disk: S, then the
  candidates chunk by chunk), no Python loop over candidates;
* the seed prototype: unnormalized sigmoid weights w_t = σ(z_t) ∈ (0, 1) and −CC optimized by Adam.
  With W = Σw ≠ 1 the prediction Σw|F|² − |ΣwF|² contains the Bragg leak W(1−W)|⟨F⟩|² + …
  (:func:`fitting.reweight.prediction.diffuse_unnormalized`), which is why the main method uses softmax.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis.stats import pearson_cc
from dmd.base.progress import progress_bar
from dmd.distributed import to_host
from fitting.reweight.prediction import diffuse_unnormalized, to_data_voxels, x_from_stats
from fitting.reweight.problem import Problem, weighted_stats
from fitting.reweight.streaming import stream_adam

__all__ = ["greedy_elimination", "sigmoid_baseline"]


@functools.lru_cache(maxsize=8)
def _candidate_scorer(stats_fn, n_data: int, batch_size: int):
    def score(z, data, active, mask):
        n = jnp.sum(active).astype(z.dtype)
        t_real = active.shape[0]
        s = stats_fn(active.astype(z.dtype) / n, z)  # [3, M]; z rows are flattened [T, 3M]
        x0 = x_from_stats(s, data, n_data)
        cc0 = pearson_cc(x0, data["y"], mask=mask)

        def one(z_j):
            s_j = (n * s - z_j.reshape(s.shape)) / (n - 1)
            return pearson_cc(x_from_stats(s_j, data, n_data), data["y"], mask=mask)

        cand = jax.lax.map(one, z[:t_real], batch_size=batch_size)
        return cc0, jnp.where(active, cand, -jnp.inf)

    return jax.jit(score)


@functools.lru_cache(maxsize=8)
def _chunk_scorer(n_data: int):
    """Out-of-core scorer: CC of every removal j of one chunk of frames ``z_chunk [n, 3, M]`` given S."""

    def score(s, n, z_chunk, data, mask):
        def one(z_j):
            s_j = (n * s - z_j) / (n - 1)
            return pearson_cc(x_from_stats(s_j, data, n_data), data["y"], mask=mask)

        cc0 = pearson_cc(x_from_stats(s, data, n_data), data["y"], mask=mask)
        return cc0, jax.vmap(one)(z_chunk)

    return jax.jit(score)


def _score_streaming(problem: Problem, active: np.ndarray, mask):
    from fitting.fstore import iter_chunks

    n = int(active.sum())
    s = weighted_stats(problem, active / n)
    scorer = _chunk_scorer(problem.n_data)
    dtype = problem.dtype
    cand = np.empty(problem.n_frames)
    cc0 = None
    for a, block in iter_chunks(problem.store, problem.frames_per_chunk):
        cc0, c = scorer(s, jnp.asarray(n, dtype), jnp.asarray(block, dtype), problem.data, mask)
        cand[a : a + len(block)] = np.asarray(c)
    return cc0, jnp.asarray(np.where(active, cand, -np.inf))


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
    t = problem.n_frames
    active = np.ones(t, bool)
    mask = jnp.asarray(train_mask, bool)
    if problem.out_of_core:
        score = lambda _z, _data, act, msk: _score_streaming(problem, np.asarray(act), msk)
    else:
        score = _candidate_scorer(problem.stats_fn, problem.n_data, batch_size)
    removed, path = [], []
    limit = t - min_frames if max_removals is None else min(max_removals, t - min_frames)
    bar = progress_bar(limit, desc="greedy elimination", unit="frame", enabled=progress)
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
            return to_data_voxels(diffuse_unnormalized(s, jnp.sum(w), f_mean), data, n_data)

        loss = lambda lg: -pearson_cc(predict(lg), data["y"], mask=mask)

        def body(carry, _):
            lg, st = carry
            v, g = jax.value_and_grad(loss)(lg)
            u, st = opt.update(g, st, lg)
            return (optax.apply_updates(lg, u), st), -v

        (lg, _), cc_hist = jax.lax.scan(body, (logits0, opt.init(logits0)), None, length=steps)
        return lg, predict(lg), cc_hist

    return jax.jit(run)


def sigmoid_baseline(
    problem: Problem, train_mask, *, steps: int = 200, learning_rate: float = 0.05, progress: bool = False
) -> dict:
    """The seed prototype: weights σ(z) (not normalized), start at 0.5 each, Adam on −CC of the training voxels.

    Returns dict: ``weights [n_frames]`` (their sum is reported as the Bragg-leak indicator), ``x [n_data]``
    the prediction with those weights, ``cc_history [steps]``.
    """
    dtype = problem.dtype
    f_mean = np.asarray(problem.f_mean)
    f_re, f_im = jnp.asarray(f_mean.real, dtype), jnp.asarray(f_mean.imag, dtype)
    mask = jnp.asarray(train_mask, bool)
    if problem.out_of_core:
        vg = _sigmoid_loss_of_stats(problem.n_data)
        lg, _, (cc_hist,) = stream_adam(
            problem.store,
            lambda s, lg: vg(s, lg, problem.data, f_re, f_im, mask),
            jnp.zeros((1, problem.n_frames), dtype),
            steps=int(steps),
            learning_rate=float(learning_rate),
            weights="sigmoid",
            frames_per_chunk=problem.frames_per_chunk,
            desc="sigmoid baseline (streaming)",
            progress=progress,
        )
        w = jax.nn.sigmoid(jnp.asarray(lg[0], dtype))
        s = weighted_stats(problem, np.asarray(w))
        x = to_data_voxels(diffuse_unnormalized(s, jnp.sum(w), f_re + 1j * f_im), problem.data, problem.n_data)
        return {"weights": np.asarray(w, np.float64), "x": np.asarray(x), "cc_history": cc_hist[0]}
    run = _sigmoid_fitter(problem.stats_fn, problem.n_data, int(steps), float(learning_rate))
    lg, x, hist = run(problem.z, problem.data, f_re, f_im, jnp.zeros(problem.n_frames, dtype), mask)
    return {"weights": to_host(jax.nn.sigmoid(lg)).astype(np.float64), "x": to_host(x), "cc_history": to_host(hist)}


@functools.lru_cache(maxsize=8)
def _sigmoid_loss_of_stats(n_data: int):
    """Out-of-core −CC of the sigmoid baseline as a function of (S [B,3,M], logits [B,T]), with gradients."""

    def one(s, lg, data, f_re, f_im, mask):
        x = diffuse_unnormalized(s, jnp.sum(jax.nn.sigmoid(lg)), f_re + 1j * f_im)
        return -pearson_cc(to_data_voxels(x, data, n_data), data["y"], mask=mask)

    def total(s, lg, data, f_re, f_im, mask):
        loss = jax.vmap(one, in_axes=(0, 0, None, None, None, None))(s, lg, data, f_re, f_im, mask)
        return jnp.sum(loss), loss

    vg = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)

    def run(*args):
        (_, loss), (g_s, g_l) = vg(*args)
        return loss, (-loss,), g_s, g_l

    return jax.jit(run)
