"""Wilson priors on structure-factor amplitudes.

For a reflection h with statistical weight ε(h) and mean intensity Σ(inv_d2) per symmetry unit, Wilson (1949)
statistics give (inv_d2 = 1/d², Å⁻²; the variance parameter is σ² = ε·Σ, so ⟨F²⟩ = εΣ):

* acentric (Rayleigh):    p(F) = (2F / εΣ) · exp(−F² / εΣ)
* centric (half-normal):  p(F) = sqrt(2 / (π εΣ)) · exp(−F² / (2 εΣ))

With a flat Σ = 1 (the default, as in careless) the latent F are normalized amplitudes and the scale
model absorbs the resolution falloff; the optional falloff Σ(inv_d2) = exp(−B·inv_d2/2) puts F on a Wilson scale.

Wilson, A. J. C. "The probability distribution of X-ray intensities." Acta Cryst. 2, 318-321 (1949),
doi:10.1107/S0365110X49000813. ε and centric flags come from gemmi (``analysis.symmetry``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["wilson_variance", "wilson_log_prob", "wilson_expected_log_prob"]

_LOG2 = float(np.log(2.0))
_HALF_LOG_2_OVER_PI = float(0.5 * np.log(2.0 / np.pi))


def wilson_variance(epsilon, inv_d2, wilson_b: float | None = None):
    """σ² = ε·Σ(inv_d2) with Σ = exp(−B·inv_d2/2) (B in Å², inv_d2 = 1/d² in Å⁻²), or Σ = 1 when ``wilson_b`` is None.

    Args:
      epsilon: ``[n_refl]`` statistical weights; inv_d2: ``[n_refl]`` Å⁻².
    """
    eps = jnp.asarray(epsilon, jnp.result_type(float))
    if wilson_b is None:
        return eps
    return eps * jnp.exp(-float(wilson_b) * jnp.asarray(inv_d2, eps.dtype) / 2.0)


def _safe_log(f):
    # double-where: finite value and gradient at F = 0
    pos = f > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, f, 1.0)), -1e30)


def wilson_log_prob(f, variance, centric):
    """log p(F) under the Wilson prior (see module docstring).

    Args:
      f: ``[..., n_refl]`` amplitudes ≥ 0; variance: ``[n_refl]`` σ² = εΣ; centric: bool ``[n_refl]``.
    """
    acentric = _LOG2 + _safe_log(f) - jnp.log(variance) - f**2 / variance
    cen = _HALF_LOG_2_OVER_PI - 0.5 * jnp.log(variance) - f**2 / (2.0 * variance)
    return jnp.where(centric, cen, acentric)


def wilson_expected_log_prob(mean_log_f, m2, variance, centric):
    """E_q[log p(F)] from E_q[log F] and E_q[F²] (the prior is linear in log F and F²).

    Args:
      mean_log_f: ``[n_refl]`` E_q[log F] (used for acentric reflections only); m2: ``[n_refl]`` E_q[F²].
    """
    acentric = _LOG2 + mean_log_f - jnp.log(variance) - m2 / variance
    cen = _HALF_LOG_2_OVER_PI - 0.5 * jnp.log(variance) - m2 / (2.0 * variance)
    return jnp.where(centric, cen, acentric)
