"""Agreement statistics shared by diffuse scattering, reweighting, indexing and merging.

Pearson correlation (the seed's CC)::

    CC = (⟨x y⟩ − ⟨x⟩⟨y⟩) / sqrt((⟨x²⟩ − ⟨x⟩²)(⟨y²⟩ − ⟨y⟩²))

with optional per-element weights (weighted means) and a mask. Anisotropic
values subtract the mean of each resolution shell (the "spherical-shell
average") before correlating. All functions are jit-able and differentiable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["pearson_cc", "shell_edges", "shell_index", "shell_mean_subtract", "cc_per_shell"]


_RESIDUE_ULPS = 16  # a mean's rounding residue: measured ≤ 8.4 ulps (7,200 constants, m = 2…10⁴, weighted or not)


def pearson_cc(x, y, weights=None, mask=None):
    """Weighted Pearson CC between ``x [..., m]`` and ``y [..., m]`` (last axis reduced).

    Args:
      weights: optional ``[m]`` non-negative element weights (e.g. resolution weighting).
      mask: optional ``[m]`` bool; False elements are ignored.

    Zero variance (a constant ``x`` or ``y``, or fewer than two unmasked elements) gives 0.0, never NaN:
    the one rule for every CC in the package (per-shell CCs and merging's CC½ call this function).
    """
    w = jnp.ones(jnp.shape(x)[-1], dtype=jnp.result_type(x, y)) if weights is None else jnp.asarray(weights)
    if mask is not None:
        w = jnp.where(mask, w, 0)
    w = w / jnp.sum(w)
    mx = jnp.sum(w * x, axis=-1, keepdims=True)
    my = jnp.sum(w * y, axis=-1, keepdims=True)
    dx, dy = x - mx, y - my
    sxy = jnp.sum(w * dx * dy, axis=-1)
    sxx = jnp.sum(w * dx * dx, axis=-1)
    syy = jnp.sum(w * dy * dy, axis=-1)
    denom = sxx * syy
    # a constant's weighted mean rounds (3·(1/50)·50 ≠ 3), leaving a residue δ ~ eps·|x| in every dx, so its
    # "variance" is δ² > 0 and the CC ±1e-17 instead of 0: a variance below (RESIDUE·eps)² times the mean square is
    # that rounding residue, i.e. zero variance (a relative spread below 4e-15 in float64, 2e-6 in float32)
    tiny = (_RESIDUE_ULPS * jnp.finfo(sxx.dtype).eps) ** 2
    varies = (sxx > tiny * jnp.sum(w * x * x, axis=-1)) & (syy > tiny * jnp.sum(w * y * y, axis=-1)) & (denom > 0)
    # double-where keeps the gradient finite for constant inputs
    safe = jnp.where(varies, denom, 1.0)
    return jnp.where(varies, sxy / jnp.sqrt(safe), 0.0)


def shell_edges(inv_d2, n_shells: int) -> np.ndarray:
    """Shell edges in q² = 1/d² (Å⁻²) holding equal numbers of points, ``[n_shells + 1]``."""
    inv_d2 = np.sort(np.asarray(inv_d2, float))
    edges = np.quantile(inv_d2, np.linspace(0, 1, n_shells + 1))
    edges[0], edges[-1] = inv_d2[0] - 1e-12, inv_d2[-1] + 1e-12
    return edges


def shell_index(inv_d2, edges) -> np.ndarray:
    """Shell number (0 … n_shells−1) of each point, int ``[m]``."""
    idx = np.searchsorted(np.asarray(edges), np.asarray(inv_d2), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2).astype(np.int32)


def shell_mean_subtract(values, shells, n_shells: int, mask=None):
    """Subtract each resolution shell's mean: the anisotropic part of ``values [..., m]``.

    Args:
      shells: int ``[m]`` shell index per point (:func:`shell_index`).
      mask: optional bool ``[m]``; masked-out points do not contribute to shell means.
    """
    w = jnp.ones(values.shape[-1], values.dtype) if mask is None else jnp.asarray(mask, values.dtype)
    seg = lambda v: jax.ops.segment_sum(v, shells, num_segments=n_shells)
    counts = seg(w)
    flat = values.reshape(-1, values.shape[-1])
    sums = jax.vmap(lambda v: seg(v * w))(flat)
    means = sums / jnp.where(counts > 0, counts, 1.0)
    return (flat - means[:, shells]).reshape(values.shape)


def cc_per_shell(x, y, shells, n_shells: int, mask=None):
    """Pearson CC within each shell, ``[n_shells]`` (0 where a shell has < 2 points)."""
    m = jnp.ones(x.shape[-1], bool) if mask is None else jnp.asarray(mask, bool)
    return jax.vmap(lambda s: pearson_cc(x, y, mask=m & (shells == s)))(jnp.arange(n_shells))
