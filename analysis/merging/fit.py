"""Fitting the merging model: data preparation, initialization, the optax loop, posterior summaries and
half-dataset refits with the scale model frozen.

The optimizer runs ``steps_per_call`` Adam steps per jitted ``lax.scan`` call (jit at the outer loop, no
recompilation between calls: the step count is data, steps past the end are masked). Data arrays are
arguments of the jitted function, never closure constants. With ``batch_images`` set, each step sees the
observations of a random subset of images (padded to a fixed size, mask marks padding); the likelihood
term is rescaled to the full data set and the KL is counted once per unique reflection.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis import stats
from analysis.merging import posteriors, scaling
from analysis.merging.io import Unmerged
from analysis.merging.model import MergeConfig, MergeData, init_params, negative_elbo, predict_intensity
from analysis.merging.priors import wilson_variance

__all__ = ["FitResult", "prepare", "fit", "posterior_summary", "ccpred", "fit_half_datasets", "image_halves"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
      params: fitted parameter pytree; config: the settings; data: device arrays; unmerged: the input table.
      history: {"step", "loss", "nll", "kl", "ccpred"} lists (recorded once per jitted call).
      meta_mean, meta_std: standardization of the metadata columns (user columns + q²).
      wall_time_s: optimization wall time (includes compilation), seconds.
    """

    params: dict
    config: MergeConfig
    data: MergeData
    unmerged: Unmerged
    history: dict
    meta_mean: np.ndarray
    meta_std: np.ndarray
    wall_time_s: float


def _initial_guess(unmerged: Unmerged, train: np.ndarray, n_shells: int = 10):
    """Overall log scale c₀ and B₀ from shell means of I/ε, and μ₀, σ₀ of q from inverse-variance means."""
    q2_obs = unmerged.inv_d2[unmerged.refl]
    eps_obs = unmerged.epsilon[unmerged.refl].astype(float)
    edges = stats.shell_edges(q2_obs[train], n_shells)
    sh = stats.shell_index(q2_obs, edges)
    y = np.bincount(sh[train], (unmerged.intensity / eps_obs)[train], n_shells)
    cnt = np.bincount(sh[train], minlength=n_shells)
    x = np.bincount(sh[train], q2_obs[train], n_shells) / np.maximum(cnt, 1)
    mean_i = y / np.maximum(cnt, 1)
    ok = (cnt > 0) & (mean_i > 0)
    if np.count_nonzero(ok) >= 2:
        slope, intercept = np.polyfit(x[ok], np.log(mean_i[ok]), 1, w=np.sqrt(cnt[ok]))
    else:
        slope, intercept = 0.0, float(np.log(max(np.mean(unmerged.intensity[train] / eps_obs[train]), 1e-3)))
    s0 = np.exp(intercept + slope * q2_obs)
    # inverse-variance means of I/s0 per reflection, training rows only
    w = np.where(train, (s0 / unmerged.sigma) ** 2, 0.0)
    n = unmerged.n_refl
    sw = np.bincount(unmerged.refl, w, n)
    ibar = np.bincount(unmerged.refl, w * unmerged.intensity / s0, n) / np.maximum(sw, 1e-30)
    sig = 1.0 / np.sqrt(np.maximum(sw, 1e-30))
    eps = unmerged.epsilon.astype(float)
    has = sw > 0
    ibar = np.where(has, ibar, eps)
    sig = np.where(has, sig, eps)
    loc0 = np.sqrt(np.maximum(ibar, 0.0) + 0.5 * np.minimum(sig, eps))
    scale0 = np.clip(sig / (2.0 * loc0), 0.02, 1.0) * np.sqrt(eps)
    return float(intercept), float(-2.0 * slope), loc0, scale0


def prepare(unmerged: Unmerged, config: MergeConfig, dtype=jnp.float32):
    """Device arrays, standardization and the hold-out mask.

    Returns:
      (MergeData, meta_mean, meta_std, train mask bool ``[n_obs]``).
    """
    rng = np.random.default_rng(config.seed)
    train = np.ones(unmerged.n_obs, bool)
    if config.holdout_fraction > 0:
        train = rng.random(unmerged.n_obs) >= config.holdout_fraction
    q2_obs = unmerged.inv_d2[unmerged.refl]
    meta_raw = np.concatenate([unmerged.metadata, q2_obs[:, None]], axis=1)
    z, mean, std = scaling.standardize(meta_raw)
    data = MergeData(
        refl=jnp.asarray(unmerged.refl, jnp.int32),
        image=jnp.asarray(unmerged.image, jnp.int32),
        intensity=jnp.asarray(unmerged.intensity, dtype),
        sigma=jnp.asarray(unmerged.sigma, dtype),
        meta=jnp.asarray(z, dtype),
        inv_d2=jnp.asarray(q2_obs, dtype),
        weight=jnp.asarray(train, dtype),
        prior_variance=wilson_variance(jnp.asarray(unmerged.epsilon, dtype), jnp.asarray(unmerged.inv_d2, dtype),
                                       config.wilson_b),
        centric=jnp.asarray(unmerged.centric),
    )
    return data, mean, std, train


def _lr_schedule(config: MergeConfig, steps: int):
    return optax.cosine_decay_schedule(config.learning_rate, max(steps, 1), alpha=config.final_lr_fraction)


def _make_chunk_runner(loss_fn: Callable, optimizer, n_steps_per_call: int, batched: bool):
    """jit(scan over ``n_steps_per_call`` Adam steps); steps with index ≥ total are masked out."""

    def one_step(carry, xs):
        params, opt_state, key, step, total = carry[0], carry[1], carry[2], carry[3], carry[4]
        fixed, data = carry[5], carry[6]
        obs, obs_mask = xs if batched else (None, None)
        key, sub = jax.random.split(key)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, fixed, sub, data, obs, obs_mask)
        updates, new_opt = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        active = step < total
        sel = lambda a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(active, x, y), a, b)
        params, opt_state = sel(new_params, params), sel(new_opt, opt_state)
        return (params, opt_state, key, step + 1, total, fixed, data), (loss, aux["nll"], aux["kl"])

    @jax.jit
    def run(params, opt_state, key, step, total, fixed, data, batch_obs, batch_mask):
        carry = (params, opt_state, key, step, total, fixed, data)
        xs = (batch_obs, batch_mask) if batched else None
        carry, (loss, nll, kl) = jax.lax.scan(one_step, carry, xs, length=n_steps_per_call)
        return carry[0], carry[1], carry[2], loss, nll, kl

    return run


class _ImageBatcher:
    """Random subsets of images → padded observation index arrays ``[k, max_obs]`` + masks."""

    def __init__(self, image: np.ndarray, n_images: int, batch_images: int, seed: int):
        order = np.argsort(image, kind="stable")
        counts = np.bincount(image, minlength=n_images)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.counts = counts
        self.order = order
        self.k = min(batch_images, n_images)
        self.max_obs = int(np.sort(counts)[::-1][: self.k].sum())
        self.rng = np.random.default_rng(seed)
        self.n_images = n_images

    def draw(self, n_steps: int):
        idx = np.zeros((n_steps, self.max_obs), np.int32)
        mask = np.zeros((n_steps, self.max_obs), np.float32)
        for t in range(n_steps):
            imgs = self.rng.choice(self.n_images, self.k, replace=False)
            rows = np.concatenate([self.order[self.starts[i] : self.starts[i] + self.counts[i]] for i in imgs])
            idx[t, : rows.size] = rows
            mask[t, : rows.size] = 1.0
        return idx, mask


def _optimize(loss_fn, params, fixed, data, config: MergeConfig, steps: int, key, *, batcher=None,
              callback=None, progress=None, desc="merge"):
    """Run Adam (cosine-decayed lr) for ``steps`` steps; returns (params, history)."""
    optimizer = optax.adam(_lr_schedule(config, steps))
    opt_state = optimizer.init(params)
    k = max(1, min(config.steps_per_call, steps))
    runner = _make_chunk_runner(loss_fn, optimizer, k, batcher is not None)
    history = {"step": [], "loss": [], "nll": [], "kl": [], "ccpred": []}
    n_calls = -(-steps // k) if steps > 0 else 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, unit="step", leave=False)
    step = jnp.asarray(0, jnp.int32)
    total = jnp.asarray(steps, jnp.int32)
    for c in range(n_calls):
        if batcher is not None:
            bo, bm = batcher.draw(k)
            bo, bm = jnp.asarray(bo), jnp.asarray(bm, data.intensity.dtype)
        else:
            bo = bm = None
        params, opt_state, key, loss, nll, kl = runner(params, opt_state, key, step, total, fixed, data, bo, bm)
        step = step + k
        done = min((c + 1) * k, steps)
        n_valid = done - c * k
        history["step"].append(done)
        history["loss"].append(float(jnp.mean(loss[:n_valid])))
        history["nll"].append(float(jnp.mean(nll[:n_valid])))
        history["kl"].append(float(jnp.mean(kl[:n_valid])))
        cc = callback(params) if callback is not None else float("nan")
        history["ccpred"].append(cc)
        if not np.isfinite(history["loss"][-1]):
            raise FloatingPointError(f"{desc}: loss became {history['loss'][-1]} at step {done}; lower --lr")
        if bar is not None:
            post = {"loss": f"{history['loss'][-1]:.4g}"}
            if np.isfinite(cc):
                post["CCpred"] = f"{cc:.3f}"
            bar.set_postfix(post)
            bar.update(n_valid)
    if bar is not None:
        bar.close()
    return params, history


def _full_loss(config: MergeConfig, n_train):
    def loss_fn(params, fixed, key, data, obs, obs_mask):
        return negative_elbo(params, key, config, data, obs, obs_mask, n_train=n_train)

    return loss_fn


def ccpred(params, config: MergeConfig, data: MergeData, holdout: np.ndarray) -> float:
    """Pearson CC between held-out intensities and their predictions s·E_q[F²] (nan without hold-out)."""
    if not np.any(holdout):
        return float("nan")
    idx = jnp.asarray(np.flatnonzero(holdout))
    pred = predict_intensity(params, config, data, idx)
    return float(stats.pearson_cc(pred, data.intensity[idx]))


def fit(unmerged: Unmerged, config: MergeConfig = MergeConfig(), *, progress: bool = False,
        dtype=jnp.float32) -> FitResult:
    """Fit scales and q(F) to the observations by maximizing the ELBO (module docstring of ``model``)."""
    t0 = time.perf_counter()
    data, mean, std, train = prepare(unmerged, config, dtype)
    c0, b0, loc0, scale0 = _initial_guess(unmerged, train)
    key = jax.random.PRNGKey(config.seed)
    key, kinit = jax.random.split(key)
    params = init_params(kinit, config, data, loc0, scale0, unmerged.n_images, c0, b0)
    holdout = ~train
    cc_fn = None
    if np.any(holdout):
        hold_idx = jnp.asarray(np.flatnonzero(holdout))
        pred_fn = jax.jit(lambda p, d: stats.pearson_cc(predict_intensity(p, config, d, hold_idx),
                                                        d.intensity[hold_idx]))
        cc_fn = lambda p: float(pred_fn(p, data))
    batcher = None
    if config.batch_images:
        batcher = _ImageBatcher(unmerged.image, unmerged.n_images, config.batch_images, config.seed)
    n_train = jnp.asarray(float(np.count_nonzero(train)), dtype)
    params, history = _optimize(_full_loss(config, n_train), params, {}, data, config, config.steps, key,
                                batcher=batcher, callback=cc_fn, progress=progress, desc="merge")
    jax.block_until_ready(params)
    return FitResult(params, config, data, unmerged, history, mean, std, time.perf_counter() - t0)


def posterior_summary(params: dict, config: MergeConfig) -> dict:
    """Per-reflection posterior moments (numpy float64): F, SIGF, I (= E F²), SIGI (= sd F²), loc, scale."""
    from analysis.merging.model import surrogate_params

    loc, scale = surrogate_params(params["q"])
    m1, var_f, m2, var_f2 = posteriors.moments(config.surrogate, loc, scale)
    return {
        "F": np.asarray(m1, np.float64),
        "SIGF": np.sqrt(np.asarray(var_f, np.float64)),
        "I": np.asarray(m2, np.float64),
        "SIGI": np.sqrt(np.asarray(var_f2, np.float64)),
        "loc": np.asarray(loc, np.float64),
        "scale": np.asarray(scale, np.float64),
    }


def image_halves(n_images: int, seed: int = 0) -> np.ndarray:
    """Random, repeatable split of images into two halves: int ``[n_images]`` of 0/1."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 12345]))
    half = np.zeros(n_images, np.int32)
    half[rng.permutation(n_images)[n_images // 2 :]] = 1
    return half


def fit_half_datasets(result: FitResult, *, steps: int | None = None, seed: int = 0, progress: bool = False):
    """Refit q(F) on two random image halves with the scale model frozen.

    Both halves are one problem with 2·n_refl surrogate parameters (reflection h of half k is row
    h + k·n_refl), started from the full fit's q.

    Returns:
      (summaries [2] of :func:`posterior_summary`, counts int ``[2, n_refl]`` of observations per half).
    """
    cfg = result.config
    data = result.data
    n_refl = int(data.prior_variance.shape[0])
    half_of_image = image_halves(result.unmerged.n_images, seed)
    half = jnp.asarray(half_of_image)[data.image]
    data2 = data._replace(
        refl=data.refl + half * n_refl,
        prior_variance=jnp.concatenate([data.prior_variance, data.prior_variance]),
        centric=jnp.concatenate([data.centric, data.centric]),
    )
    q = jax.tree_util.tree_map(lambda x: jnp.concatenate([x, x]), result.params["q"])
    fixed = {k: v for k, v in result.params.items() if k != "q"}
    n_train = jnp.sum(data.weight)
    steps = max(cfg.steps // 3, 100) if steps is None else steps

    def loss_fn(qp, fixed, key, d, obs, obs_mask):
        return negative_elbo({"q": qp, **fixed}, key, cfg, d, obs, obs_mask, n_train=n_train)

    key = jax.random.PRNGKey(seed + 7919)
    q, _ = _optimize(loss_fn, q, fixed, data2, cfg, steps, key, progress=progress, desc="half-datasets")
    summ = posterior_summary({"q": q}, cfg)
    halves = [{k: v[i * n_refl : (i + 1) * n_refl] for k, v in summ.items()} for i in range(2)]
    train = np.asarray(data.weight) > 0
    refl = np.asarray(data.refl)
    hobs = np.asarray(half)
    counts = np.stack([np.bincount(refl[train & (hobs == i)], minlength=n_refl) for i in range(2)])
    return halves, counts
