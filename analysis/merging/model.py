"""The merging model and its evidence lower bound (ELBO).

Latent amplitudes F_h (one per unique reflection h) with a Wilson prior p(F) (``priors``), a surrogate
posterior q(F) (``posteriors``), a scale model s_i (``scaling``) and a likelihood p(I_i | s_i F²_h(i))
(``likelihoods``). The ELBO (seed: "Variational inference for scaling and merging")

    ELBO = Σ_i E_q[log p(I_i | s_i F²_h(i))] − Σ_h D_KL[q(F_h) ‖ p(F_h)] + log p(scale params)

is estimated with reparameterized samples F_h = F(u; μ_h, σ_h) at stratified uniforms u; the KL term is
counted once per unique reflection (not per observation), with the truncated-normal entropy and E_q[F²]
in closed form and only E_q[log F] sampled. With a Normal likelihood and no learned error model the
expected log-likelihood is exact in the moments of q:

    E_q[(I − sF²)²] = (I − s E F²)² + s² Var F²,

so that part of the gradient has no Monte-Carlo noise at all (``analytic_likelihood``).
The loss minimized is −ELBO / N_train (per training observation).

Shapes: observation arrays ``[n_obs]``, reflection arrays ``[n_refl]``, ``meta`` ``[n_obs, n_meta]``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import analysis.merging.likelihoods as likelihoods
import analysis.merging.posteriors as posteriors
import analysis.merging.priors as priors
import analysis.merging.scaling as scaling

__all__ = ["MergeConfig", "MergeData", "init_params", "surrogate_params", "negative_elbo", "predict_intensity"]


@dataclasses.dataclass(frozen=True)
class MergeConfig:
    """Model and optimizer settings.

    Attributes:
      surrogate: "truncated_normal" or "folded_normal" q(F).
      likelihood: "normal", "student" or "auto" (fit Normal, continue with Student-t, keep the one with the
        higher held-out CCpred: ``fit._fit_auto``); dof: Student-t degrees of freedom.
      error_model: learn SdFac/SdB/SdAdd.
      mc_samples: samples of F per reflection per step (stratified).
      sampler: "lattice" (stratified, rotated-lattice uniforms, no RNG: deterministic, fast to compile) or
        "random" (stratified, jax.random uniforms).
      analytic_likelihood: use the exact Normal expected log-likelihood when possible.
      mlp_width, mlp_depth: scale MLP size; image_scales, image_b: per-image log-scale and B terms.
      wilson_b: prior falloff B (Å²) or None for a flat Wilson prior (normalized amplitudes).
      image_scale_sd, image_b_sd: prior widths of the per-image terms (log units, Å²).
      image_smooth_sd, image_b_smooth_sd: widths of the smoothness prior on neighbouring images' terms (log units
        and Å² per image; None: off). For one rotation sweep: 0.001 and 0.1 on the Xe-SAD data of docs/merging.md.
      kl_weight: multiplies the KL term (1 = the ELBO).
      steps, learning_rate, final_lr_fraction: Adam with cosine decay to lr·final_lr_fraction.
      batch_images: images per minibatch (None: full batch); steps_per_call: steps per jitted scan.
      holdout_fraction: observations held out for CCpred.
      seed: PRNG seed (the same seed gives the same fit on the same machine).
    """

    surrogate: str = "truncated_normal"  # or "folded_normal"
    likelihood: str = "normal"  # or "student"
    dof: float = 16.0
    error_model: bool = False
    mc_samples: int = 8
    sampler: str = "lattice"  # or "random"
    analytic_likelihood: bool = True
    mlp_width: int = 8
    mlp_depth: int = 2
    image_scales: bool = True
    image_b: bool = True
    wilson_b: float | None = None  # Å²; None: flat prior
    image_scale_sd: float = 1.0  # log units
    image_b_sd: float = 10.0  # Å²
    image_smooth_sd: float | None = None  # log units per image; None: independent images
    image_b_smooth_sd: float | None = None  # Å² per image
    kl_weight: float = 1.0
    steps: int = 600
    learning_rate: float = 0.03
    final_lr_fraction: float = 0.03
    batch_images: int | None = None  # None: full batch
    steps_per_call: int = 50
    holdout_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.surrogate not in posteriors.FAMILIES:
            raise ValueError(f"surrogate {self.surrogate!r}: choose one of {posteriors.FAMILIES}")
        if self.likelihood not in (*likelihoods.LIKELIHOODS, "auto"):
            raise ValueError(f"likelihood {self.likelihood!r}: choose one of {(*likelihoods.LIKELIHOODS, 'auto')}")
        if self.likelihood in ("student", "auto") and not self.dof > 0:
            raise ValueError(f"dof must be > 0 for the Student-t likelihood, got {self.dof}")
        if self.sampler not in ("lattice", "random"):
            raise ValueError(f"sampler {self.sampler!r}: choose 'lattice' or 'random'")
        if self.mc_samples < 1 or self.steps < 0:
            raise ValueError("mc_samples must be ≥ 1 and steps ≥ 0")
        for name in ("image_smooth_sd", "image_b_smooth_sd"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (or None for no smoothness prior), got {getattr(self, name)}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")

    @property
    def uses_analytic_likelihood(self) -> bool:
        return self.analytic_likelihood and self.likelihood == "normal" and not self.error_model


class MergeData(NamedTuple):
    """Device arrays for the fit (all observations; ``weight`` 0 marks held-out rows)."""

    refl: jax.Array  # int32 [n_obs]
    image: jax.Array  # int32 [n_obs]
    intensity: jax.Array  # [n_obs]
    sigma: jax.Array  # [n_obs]
    meta: jax.Array  # [n_obs, n_meta] standardized
    inv_d2: jax.Array  # [n_obs] Å⁻²
    weight: jax.Array  # [n_obs] 1 train / 0 held out
    prior_variance: jax.Array  # [n_refl] εΣ
    centric: jax.Array  # bool [n_refl]
    image_next: jax.Array | None = None  # [n_images − 1] 1 where image k+1's BATCH is image k's + 1 (None: all)


def surrogate_params(raw: dict):
    """(μ, σ) of q from the unconstrained ``{"loc_raw", "scale_raw"}`` (softplus, σ ≥ 1e-6)."""
    return jax.nn.softplus(raw["loc_raw"]), jax.nn.softplus(raw["scale_raw"]) + 1e-6


def softplus_inv(x):
    x = np.asarray(x, np.float64)
    return np.where(x > 20, x, np.log(np.expm1(np.maximum(x, 1e-8))))


def init_params(
    key,
    config: MergeConfig,
    data: MergeData,
    loc0: np.ndarray,
    scale0: np.ndarray,
    n_images: int,
    log_scale0: float,
    b0: float,
) -> dict:
    """Initial parameter pytree {"q": …, "scale": …, ["error": …]}.

    Args:
      loc0, scale0: ``[n_refl]`` initial μ, σ of q (e.g. from inverse-variance averages).
      log_scale0, b0: initial overall log scale and B (Å²).
    """
    dtype = data.intensity.dtype
    params = {
        "q": {
            "loc_raw": jnp.asarray(softplus_inv(loc0), dtype),
            "scale_raw": jnp.asarray(softplus_inv(scale0), dtype),
        },
        "scale": scaling.init_scale_params(
            key,
            data.meta.shape[1],
            n_images,
            width=config.mlp_width,
            depth=config.mlp_depth,
            log_scale0=log_scale0,
            b0=b0,
            image_scales=config.image_scales,
            image_b=config.image_b,
            dtype=dtype,
        ),
    }
    if config.error_model:
        params["error"] = likelihoods.init_error_model(dtype)
    return params


def predict_intensity(params: dict, config: MergeConfig, data: MergeData, obs=None):
    """Posterior-mean prediction Î_i = s_i·E_q[F²_h(i)] for observations ``obs`` (indices; all if None)."""
    loc, scale = surrogate_params(params["q"])
    _, _, m2, _ = posteriors.moments(config.surrogate, loc, scale)
    idx = slice(None) if obs is None else obs
    log_s = scaling.log_scale(params["scale"], data.meta[idx], data.image[idx], data.inv_d2[idx])
    return jnp.exp(log_s) * m2[data.refl[idx]]


def _kl(config: MergeConfig, loc, scale, f, prior_variance, centric):
    """D_KL[q ‖ p] per reflection, ``[n_refl]``, from samples f ``[S, n_refl]`` (+ closed forms)."""
    fam = config.surrogate
    ent = posteriors.entropy(fam, loc, scale)
    if ent is None:
        lq = posteriors.log_prob(fam, f, loc, scale)
        lp = priors.wilson_log_prob(f, prior_variance, centric)
        return jnp.mean(lq - lp, axis=0)
    _, _, m2, _ = posteriors.moments(fam, loc, scale)
    tiny = jnp.finfo(f.dtype).tiny
    mean_log_f = jnp.mean(jnp.log(jnp.maximum(f, tiny)), axis=0)
    return -ent - priors.wilson_expected_log_prob(mean_log_f, m2, prior_variance, centric)


def negative_elbo(
    params: dict, key, config: MergeConfig, data: MergeData, obs=None, obs_mask=None, n_train=None, step=0
):
    """−ELBO / N_train and diagnostics.

    Args:
      params: pytree from :func:`init_params`.
      key: PRNG key for the samples (``sampler="random"``); step: step number (``sampler="lattice"``).
      obs: optional int ``[batch]`` observation indices (a minibatch of images); ``obs_mask`` ``[batch]``
        marks padding (False). The batch's expected log-likelihood is scaled by N_train / (weight in batch).
      n_train: number of training observations (defaults to Σ weight).

    Returns:
      (loss, {"nll": …, "kl": …}) — both per training observation.
    """
    loc, scale = surrogate_params(params["q"])
    n_refl = loc.shape[0]
    if config.sampler == "random":
        u = posteriors.stratified_uniform(key, config.mc_samples, n_refl, loc.dtype)
    else:
        u = posteriors.lattice_uniform(step, config.mc_samples, n_refl, loc.dtype)
    f = posteriors.sample(config.surrogate, loc, scale, u)  # [S, n_refl]

    if obs is None:
        refl, image, intensity, sigma, meta, inv_d2, w = (
            data.refl,
            data.image,
            data.intensity,
            data.sigma,
            data.meta,
            data.inv_d2,
            data.weight,
        )
    else:
        refl, image, intensity, sigma = data.refl[obs], data.image[obs], data.intensity[obs], data.sigma[obs]
        meta, inv_d2, w = data.meta[obs], data.inv_d2[obs], data.weight[obs]
        if obs_mask is not None:
            w = w * obs_mask
    n_train = jnp.sum(data.weight) if n_train is None else n_train
    s = jnp.exp(scaling.log_scale(params["scale"], meta, image, inv_d2))

    if config.uses_analytic_likelihood:
        _, _, m2, var_f2 = posteriors.moments(config.surrogate, loc, scale)
        resid2 = (intensity - s * m2[refl]) ** 2 + s**2 * var_f2[refl]
        ell = -0.5 * resid2 / sigma**2 - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi)
    else:
        i_pred = s * f[:, refl] ** 2  # [S, batch]
        sig = sigma
        if config.error_model:
            sig = likelihoods.error_model_sigma(params["error"], sigma, i_pred)
        ell = jnp.mean(likelihoods.log_likelihood(config.likelihood, intensity, i_pred, sig, config.dof), axis=0)
    ell_sum = jnp.sum(w * ell) * (n_train / jnp.maximum(jnp.sum(w), 1.0))
    kl = jnp.sum(_kl(config, loc, scale, f, data.prior_variance, data.centric))
    log_prior = scaling.scale_log_prior(
        params["scale"],
        config.image_scale_sd,
        config.image_b_sd,
        smooth_sd=config.image_smooth_sd,
        smooth_b_sd=config.image_b_smooth_sd,
        neighbours=data.image_next,
    )
    loss = (-ell_sum + config.kl_weight * kl - log_prior) / n_train
    return loss, {"nll": -ell_sum / n_train, "kl": kl / n_train}
