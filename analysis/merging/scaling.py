"""Scale model: the multiplicative correction linking an observation's intensity to F².

    log s_i = c₀ − B₀·inv_d2_i/2 + MLP(z_i) + a[image_i] − b[image_i]·inv_d2_i/2

* c₀, B₀: an overall scale and Wilson-like B (Å²), initialized from the data's resolution falloff;
* MLP: a small multilayer perceptron (SiLU) on standardized metadata z_i (user columns such as detector
  x/y, plus inv_d2 = 1/d² itself), whose last layer starts at zero so the fit starts from the smooth model;
* per-image terms a (log scale) and b (B factor, Å²), with Gaussian priors N(0, τ_a²), N(0, τ_b²) that
  remove the gauge freedom they share with c₀, B₀; optionally a smoothness prior on neighbouring images (BATCH
  numbers one apart), a[k+1] − a[k] ~ N(0, δ_a²), b[k+1] − b[k] ~ N(0, δ_b²): the scale of a rotation sweep drifts
  smoothly (AIMLESS smooths its scales over rotation for the same reason), and with few observations per image
  independent terms add noise to every merged intensity (docs/merging.md, "Real anomalous data").

Params are a plain pytree (dict). Shapes: ``meta`` ``[n_obs, n_meta]`` (standardized), ``image`` int
``[n_obs]``, ``inv_d2`` ``[n_obs]`` Å⁻².
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["init_scale_params", "log_scale", "scale_log_prior", "standardize"]


def standardize(meta: np.ndarray, mean=None, std=None):
    """z = (meta − mean)/std per column (std of a constant column taken as 1). Returns (z, mean, std)."""
    meta = np.asarray(meta, np.float64)
    mean = meta.mean(axis=0) if mean is None else np.asarray(mean)
    std = meta.std(axis=0) if std is None else np.asarray(std)
    std = np.where(std > 0, std, 1.0)
    return (meta - mean) / std, mean, std


def init_scale_params(
    key,
    n_meta: int,
    n_images: int,
    *,
    width: int = 32,
    depth: int = 2,
    log_scale0: float = 0.0,
    b0: float = 0.0,
    image_scales: bool = True,
    image_b: bool = True,
    dtype=jnp.float32,
) -> dict:
    """Initial scale-model parameters.

    Args:
      n_meta: number of standardized metadata columns (≥ 1).
      depth: hidden layers of the MLP (0 → no MLP).
      log_scale0, b0: initial c₀ and B₀ (Å²).
    """
    params = {"c0": jnp.asarray(log_scale0, dtype), "b0": jnp.asarray(b0, dtype)}
    layers = []
    n_in = n_meta
    keys = jax.random.split(key, depth + 1)
    for i in range(depth):
        w = jax.random.normal(keys[i], (n_in, width), dtype) * jnp.sqrt(2.0 / n_in).astype(dtype)
        layers.append({"w": w, "b": jnp.zeros((width,), dtype)})
        n_in = width
    if depth > 0:
        # zero last layer: the MLP starts as the identity correction (log s unchanged)
        layers.append({"w": jnp.zeros((n_in, 1), dtype), "b": jnp.zeros((1,), dtype)})
    params["mlp"] = layers
    if image_scales:
        params["image_a"] = jnp.zeros((n_images,), dtype)
    if image_b:
        params["image_b"] = jnp.zeros((n_images,), dtype)
    return params


def log_scale(params: dict, meta, image, inv_d2):
    """log s per observation, ``[n_obs]`` (equation in the module docstring)."""
    out = params["c0"] - params["b0"] * inv_d2 / 2.0
    h = meta
    layers = params["mlp"]
    for i, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            h = jax.nn.silu(h)
    if layers:
        out = out + h[..., 0]
    if "image_a" in params:
        out = out + params["image_a"][image]
    if "image_b" in params:
        out = out - params["image_b"][image] * inv_d2 / 2.0
    return out


def scale_log_prior(
    params: dict,
    image_scale_sd: float = 1.0,
    image_b_sd: float = 10.0,
    *,
    smooth_sd: float | None = None,
    smooth_b_sd: float | None = None,
    neighbours=None,
):
    """log N(a; 0, τ_a²) + log N(b; 0, τ_b²) summed over images, plus the smoothness terms (constants dropped).

    Args:
      smooth_sd, smooth_b_sd: δ_a (log units) and δ_b (Å²) per image step, or None (no smoothness term).
      neighbours: ``[n_images − 1]`` weights (1: image k+1 follows image k in the same sweep, 0: a break); None: all 1.
    """
    lp = 0.0
    for name, sd, step_sd in (("image_a", image_scale_sd, smooth_sd), ("image_b", image_b_sd, smooth_b_sd)):
        if name not in params:
            continue
        lp = lp - 0.5 * jnp.sum((params[name] / sd) ** 2)
        if step_sd is not None:
            step = jnp.diff(params[name]) / step_sd
            w = 1.0 if neighbours is None else neighbours
            lp = lp - 0.5 * jnp.sum(w * step**2)
    return lp
