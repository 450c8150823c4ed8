"""Surrogate posteriors q(F) for the latent amplitudes: truncated normal and folded normal on F ≥ 0.

Both have a location μ (``loc``) and a width σ (``scale``) per reflection, and are sampled by
reparameterization through a uniform variate u ∈ (0, 1) (differentiable in μ, σ):

* truncated normal N(μ, σ²) restricted to F > 0, Z = Φ(μ/σ):
      F = μ − σ·Φ⁻¹(u·Z)                     (inverse CDF of the upper tail)
      log q(F) = log φ((F−μ)/σ) − log σ − log Z
      H[q] = log(sqrt(2πe)·σ·Z) + α φ(α) / (2Z),  α = −μ/σ
      moments (λ = φ(α)/Z): E F = μ + σλ, E F² = μ E F + σ², Var F² = σ(2σ(E F² + μ E F) − μλ E F²)
* folded normal |X|, X ~ N(μ, σ²):
      F = |μ + σ Φ⁻¹(u)|,  log q(F) = logaddexp(log N(F; μ, σ²), log N(−F; μ, σ²))
      E F = σ sqrt(2/π) exp(−μ²/2σ²) + μ(1 − 2Φ(−μ/σ)),  E F² = μ² + σ²,  Var F² = 4μ²σ² + 2σ⁴

Shapes: ``loc``, ``scale`` ``[n_refl]``; ``u`` broadcastable, e.g. ``[n_samples, n_refl]``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr, ndtri

__all__ = [
    "FAMILIES",
    "sample",
    "log_prob",
    "entropy",
    "moments",
    "moments_np",
    "stratified_uniform",
    "lattice_uniform",
]

FAMILIES = ("truncated_normal", "folded_normal")
_LOG_SQRT_2PI = float(0.5 * np.log(2 * np.pi))
_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))  # a Python float: weakly typed, keeps float32 arrays float32


def _check(family: str):
    if family not in FAMILIES:
        raise ValueError(f"unknown surrogate family {family!r}; choose one of {FAMILIES}")


def _log_normal_pdf(x, loc, scale):
    z = (x - loc) / scale
    return -0.5 * z**2 - jnp.log(scale) - _LOG_SQRT_2PI


def sample(family: str, loc, scale, u):
    """Reparameterized samples F(u; μ, σ) ≥ 0 (see module docstring)."""
    _check(family)
    if family == "truncated_normal":
        log_z = log_ndtr(loc / scale)
        f = loc - scale * ndtri(jnp.exp(jnp.log(u) + log_z))
        return jnp.maximum(f, 0.0)
    return jnp.abs(loc + scale * ndtri(u))


def log_prob(family: str, f, loc, scale):
    """log q(F), ``f`` ≥ 0."""
    _check(family)
    if family == "truncated_normal":
        return _log_normal_pdf(f, loc, scale) - log_ndtr(loc / scale)
    return jnp.logaddexp(_log_normal_pdf(f, loc, scale), _log_normal_pdf(-f, loc, scale))


def entropy(family: str, loc, scale):
    """Differential entropy H[q] (nats), ``[n_refl]``; None for the folded normal (no closed form: use MC)."""
    _check(family)
    if family != "truncated_normal":
        return None
    alpha = -loc / scale
    log_z = log_ndtr(loc / scale)
    lam = jnp.exp(-0.5 * alpha**2 - _LOG_SQRT_2PI - log_z)  # φ(α)/Z
    return _LOG_SQRT_2PI + 0.5 + jnp.log(scale) + log_z + 0.5 * alpha * lam


def _moments(xp, log_ndtr_fn, ndtr_fn, family: str, loc, scale):
    """(E F, Var F, E F², Var F²) in the array namespace ``xp`` (jax.numpy or numpy) with its Φ functions."""
    _check(family)
    if family == "truncated_normal":
        alpha = -loc / scale
        lam = xp.exp(-0.5 * alpha**2 - _LOG_SQRT_2PI - log_ndtr_fn(loc / scale))  # φ(α)/Z
        m1 = loc + scale * lam
        m2 = loc * m1 + scale**2
        var_f2 = scale * (2.0 * scale * (m2 + loc * m1) - loc * lam * m2)
    else:
        m1 = scale * _SQRT_2_OVER_PI * xp.exp(-0.5 * (loc / scale) ** 2) + loc * (1.0 - 2.0 * ndtr_fn(-loc / scale))
        m2 = loc**2 + scale**2
        var_f2 = 4.0 * loc**2 * scale**2 + 2.0 * scale**4
    return m1, xp.maximum(m2 - m1**2, 0.0), m2, xp.maximum(var_f2, 0.0)


def moments(family: str, loc, scale):
    """(E F, Var F, E F², Var F²) of q, each ``[n_refl]`` (closed forms in the module docstring)."""
    return _moments(jnp, log_ndtr, ndtr, family, loc, scale)


def stratified_uniform(key, n_samples: int, n: int, dtype=jnp.float32):
    """Stratified uniform variates ``[n_samples, n]``: u_k = (k + U_k)/S, U_k ~ U(0, 1) independent.

    Unbiased like plain Monte Carlo, with far less variance for smooth integrands.
    """
    import jax

    tiny = float(jnp.finfo(dtype).tiny) * 1e6
    v = jax.random.uniform(key, (n_samples, n), dtype=dtype, minval=tiny, maxval=1.0 - 1e-7)
    k = jnp.arange(n_samples, dtype=dtype)[:, None]
    return jnp.clip((k + v) / n_samples, tiny, 1.0 - 1e-7)


def lattice_uniform(step, n_samples: int, n: int, dtype=jnp.float32):
    """Stratified uniforms from a rotated lattice, ``[n_samples, n]``, without a random-number generator:

        u_{k,h} = (k + c_h)/S,  c_h = frac(h·(√5−1)/2 + t·(√2−1))

    for reflection h at step t: S points, one per stratum, with a Weyl-sequence offset that is equidistributed
    over reflections and steps (a Cranley-Patterson rotation). Cheap to compile (no threefry).
    """
    # exact fractional parts with wrap-around uint32 arithmetic (Knuth's multiplicative hashing constants)
    h = jnp.arange(n, dtype=jnp.uint32)
    t = jnp.asarray(step).astype(jnp.uint32)
    w = h * jnp.uint32(2654435769) + t * jnp.uint32(1779033704)  # round(2³²·0.618…), round(2³²·0.414…)
    c = (w >> 8).astype(jnp.float32) * (1.0 / 16777216.0)
    k = jnp.arange(n_samples, dtype=jnp.float32)[:, None]
    tiny = 1e-7
    return jnp.clip((k + c[None, :]) / n_samples, tiny, 1.0 - tiny).astype(dtype)


def moments_np(family: str, loc, scale):
    """:func:`moments` in numpy float64 (for summaries outside ``jit``; no JAX dispatch)."""
    from scipy.special import log_ndtr as np_log_ndtr
    from scipy.special import ndtr as np_ndtr

    loc, scale = np.asarray(loc, np.float64), np.asarray(scale, np.float64)
    return _moments(np, np_log_ndtr, np_ndtr, family, loc, scale)
