"""The prediction x′ of frame weights from the store's sufficient statistics, and weight diagnostics.

Frame weights w_t (experimental reweighting, Σ_t w_t = 1) are not Boltzmann weights exp(−βΔU) of
:mod:`dmd.estimators`; both share the Kish N_eff, whose one home is :func:`dmd.estimators.kish_neff`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis.diffuse import diffuse_from_moments
from dmd.estimators import kish_neff

__all__ = [
    "diffuse_from_stats",
    "diffuse_unnormalized",
    "entropy",
    "kish_neff",
    "kl_divergence",
    "to_data_voxels",
    "x_from_stats",
    "x_from_weights",
]


def diffuse_from_stats(s):
    """x′ = S₀ − S₁² − S₂² ``[..., n_voxels]`` (electrons²) from centered statistics ``s [..., 3, n_voxels]`` (Σw = 1).

    With G = F − F̄ the statistics are S₀ = Σw|G|², S₁ + iS₂ = ΣwG, so this is I_D = ⟨|F|²⟩ − |⟨F⟩|²
    (:func:`analysis.diffuse.diffuse_from_moments`).
    """
    return diffuse_from_moments(s[..., 0, :], s[..., 1, :], s[..., 2, :])


def diffuse_unnormalized(s, w_sum, f_mean):
    """x′ for weights that do not sum to one (W = Σw), from centered statistics (G = F − F̄, c = F̄)::

        Σw|F|² − |ΣwF|² = S₀ − |S₁ + iS₂|² + 2(1 − W) Re(c̄ (S₁ + iS₂)) + W(1 − W)|c|²

    The last two terms are the Bragg leak of unnormalized (e.g. sigmoid) weights.
    """
    cr, ci = jnp.real(f_mean), jnp.imag(f_mean)
    leak = 2 * (1 - w_sum) * (cr * s[1] + ci * s[2]) + w_sum * (1 - w_sum) * (cr**2 + ci**2)
    return diffuse_from_stats(s) + leak.astype(s.dtype)


def to_data_voxels(x, data, n_data):
    """Average store voxels ``x [n_voxels]`` onto data voxels ``[n_data]`` through ``data["reduce_index"]``
    (identity when ``n_data`` is 0: store and data voxels are one-to-one)."""
    if not n_data:
        return x
    return jax.ops.segment_sum(x, data["reduce_index"], num_segments=n_data) / data["reduce_counts"]


def x_from_stats(s, data, n_data):
    """x′ on the data voxels from statistics ``s [3, n_voxels]`` of normalized frame weights."""
    return to_data_voxels(diffuse_from_stats(s), data, n_data)


def x_from_weights(stats_fn, z, w, data, n_data):
    """x′ on the data voxels for frame weights ``w [n_frames]`` (Σw = 1): :func:`x_from_stats` of ``stats_fn(w, z)``."""
    return x_from_stats(stats_fn(w, z), data, n_data)


def kl_divergence(logits, log_w0):
    """KL(w‖w₀) = Σ_t w_t (log w_t − log w₀_t) with w = softmax(logits) (nats)."""
    log_w = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.exp(log_w) * (log_w - log_w0))


def entropy(w) -> float:
    """Shannon entropy −Σ w log w of normalized weights (nats; log T for uniform)."""
    w = np.asarray(w, np.float64)
    w = w / w.sum()
    nz = w[w > 0]
    return float(-np.sum(nz * np.log(nz)))
