"""Objectives comparing a predicted diffuse map ``x [m]`` with data ``y [m]`` (lower is better).

Every objective is a pure, jit-able function of the prediction, differentiable in ``x``, with the same
signature ``objective(x, y, *, weights=None, mask=None, ...) -> scalar``:

* ``neg_cc`` — −CC, the Pearson correlation of the seed (scale- and offset-free)::

      CC = (⟨x y⟩ − ⟨x⟩⟨y⟩) / sqrt((⟨x²⟩ − ⟨x⟩²)(⟨y²⟩ − ⟨y⟩²))

* ``neg_cc_aniso`` — −CC of the anisotropic parts, x − ⟨x⟩_shell and y − ⟨y⟩_shell (the spherical-shell
  average of each resolution shell subtracted first).
* ``gaussian_nll`` — y_i ~ N(a x_i + b, s² σ_i²) with scale ``a`` ≥ 0, offset ``b`` and noise scale ``s``
  profiled out in closed form (weighted least squares, u_i = ω_i/σ_i²)::

      a = cov_u(x, y) / var_u(x),  b = ȳ_u − a x̄_u,  s² = Σ u r² / Σ ω,  r = y − a x − b
      NLL / Σω = ½ log s² + const

  Minimizing it maximizes the σ-weighted CC² (for a ≥ 0, CC itself).
* ``student_t_nll`` — y_i = a x_i + b + s σ_i ε_i, ε ~ Student-t(ν): robust to outlier voxels (Bragg
  leakage, ice rings). Scale, offset and noise scale are profiled by a fixed number of EM / iteratively
  reweighted least-squares steps (u_i = (ν+1)/(ν + r_i²/(s²σ_i²))). Their gradient is stopped: at the
  profiled optimum ∂NLL/∂(a, b, s) = 0, so by the envelope theorem ∂NLL_profiled/∂x equals the partial
  derivative at fixed (a, b, s).

``weights`` are non-negative per-voxel weights ω (resolution weighting: :func:`power_weights`,
:func:`shell_balanced_weights`); ``mask`` (bool) selects the voxels that count (train/test split).

Shapes: ``x, y, sigma, weights, mask: [m]`` (one entry per voxel); intensities in any consistent unit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis.powder import normalize_pattern
from analysis.stats import pearson_cc, shell_mean_subtract

__all__ = [
    "OBJECTIVES",
    "neg_cc",
    "neg_cc_aniso",
    "gaussian_nll",
    "student_t_nll",
    "fit_scale_offset",
    "power_weights",
    "shell_balanced_weights",
    "make_objective",
    "RESIDUAL_OBJECTIVES",
    "objective_residuals",
]


def _voxel_weights(x, weights, mask):
    w = jnp.ones(jnp.shape(x)[-1], jnp.result_type(x)) if weights is None else jnp.asarray(weights, jnp.result_type(x))
    if mask is not None:
        w = jnp.where(mask, w, 0)
    return w


def neg_cc(x, y, *, weights=None, mask=None):
    """−Pearson CC between prediction ``x [m]`` and data ``y [m]`` (see module docstring)."""
    return -pearson_cc(x, y, weights=weights, mask=mask)


def neg_cc_aniso(x, y, *, shells, n_shells: int, weights=None, mask=None):
    """−CC of the anisotropic parts: each resolution shell's mean subtracted from ``x`` and ``y`` first.

    Args:
      shells: int ``[m]`` shell index per voxel (:func:`analysis.stats.shell_index`).
      n_shells: number of shells (static).
    """
    xa = shell_mean_subtract(x, shells, n_shells, mask=mask)
    ya = shell_mean_subtract(y, shells, n_shells, mask=mask)
    return -pearson_cc(xa, ya, weights=weights, mask=mask)


def fit_scale_offset(x, y, u):
    """Weighted least-squares scale ``a`` (clipped at 0) and offset ``b`` of y ≈ a x + b, weights ``u [m]``.

    Returns ``(a, b)`` scalars. A constant prediction gives a = 0, b = ȳ_u (double-where keeps gradients finite).
    """
    su = jnp.sum(u)
    mx = jnp.sum(u * x) / su
    my = jnp.sum(u * y) / su
    dx = x - mx
    sxx = jnp.sum(u * dx * dx)
    sxy = jnp.sum(u * dx * (y - my))
    safe = jnp.where(sxx > 0, sxx, 1.0)
    a = jnp.where(sxx > 0, jnp.maximum(sxy / safe, 0.0), 0.0)  # a physical scale is never negative
    return a, my - a * mx


def gaussian_nll(x, y, *, sigma=None, weights=None, mask=None):
    """Gaussian NLL per unit voxel weight with scale, offset and noise scale profiled out (closed form).

    Args:
      sigma: optional ``[m]`` measurement errors σ_i (> 0); None means equal errors.

    Returns ``½ log(Σ u r² / Σ ω)`` with u = ω/σ² (additive constants dropped).
    """
    om = _voxel_weights(x, weights, mask)
    u = om if sigma is None else om / jnp.square(sigma)
    a, b = fit_scale_offset(x, y, u)
    r = y - a * x - b
    chi2 = jnp.sum(u * r * r) / jnp.sum(om)
    return 0.5 * jnp.log(jnp.maximum(chi2, jnp.finfo(chi2.dtype).tiny))


def student_t_nll(x, y, *, sigma=None, nu: float = 4.0, weights=None, mask=None, n_iter: int = 30):
    """Student-t NLL per unit voxel weight, scale/offset/noise scale profiled by ``n_iter`` EM steps.

    NLL = Σ ω_i [log s + (ν+1)/2 · log(1 + r_i²/(ν s² σ_i²))] / Σ ω, r = y − a x − b (constants dropped).

    Args:
      sigma: optional ``[m]`` measurement errors σ_i; nu: degrees of freedom (ν → ∞ is Gaussian).
      n_iter: EM iterations (static); started from the Gaussian least-squares solution.
    """
    om = _voxel_weights(x, weights, mask)
    inv_s2 = om * 0 + 1.0 if sigma is None else 1.0 / jnp.square(sigma)
    xs, ys = jax.lax.stop_gradient(x), jax.lax.stop_gradient(y)

    def em(_, carry):
        a, b, s2 = carry
        r = ys - a * xs - b
        lam = (nu + 1.0) / (nu + r * r * inv_s2 / s2)  # E-step: latent precision of each voxel
        u = om * inv_s2 * lam
        a, b = fit_scale_offset(xs, ys, u)
        r = ys - a * xs - b
        s2 = jnp.sum(u * r * r) / jnp.sum(om)
        return a, b, jnp.maximum(s2, jnp.finfo(s2.dtype).tiny)

    a0, b0 = fit_scale_offset(xs, ys, om * inv_s2)
    r0 = ys - a0 * xs - b0
    s20 = jnp.maximum(jnp.sum(om * inv_s2 * r0 * r0) / jnp.sum(om), jnp.finfo(r0.dtype).tiny)
    a, b, s2 = jax.lax.stop_gradient(jax.lax.fori_loop(0, n_iter, em, (a0, b0, s20)))
    r = y - a * x - b
    per = 0.5 * jnp.log(s2) + 0.5 * (nu + 1.0) * jnp.log1p(r * r * inv_s2 / (nu * s2))
    return jnp.sum(om * per) / jnp.sum(om)


def power_weights(inv_d2, power: float = 1.0) -> np.ndarray:
    """Resolution weights ω = (1/d²)^(power/2) = s^power, normalized to mean 1, ``[m]`` (power 0: uniform)."""
    s = np.sqrt(np.asarray(inv_d2, float))
    w = s**power
    return w / w.mean()


def shell_balanced_weights(shells, n_shells: int) -> np.ndarray:
    """Weights giving every resolution shell the same total weight (counters the many high-res voxels), ``[m]``."""
    shells = np.asarray(shells)
    counts = np.bincount(shells, minlength=n_shells).astype(float)
    w = 1.0 / np.where(counts > 0, counts, 1.0)[shells]
    return w / w.mean()


OBJECTIVES = ("cc", "cc-aniso", "gaussian", "student")


def make_objective(
    name: str, y, *, weights=None, sigma=None, shells=None, n_shells: int | None = None, nu: float = 4.0
):
    """Bind data to an objective by name (one of :data:`OBJECTIVES`): returns ``loss(x, mask) -> scalar``.

    Args:
      y: ``[m]`` data; weights: optional ``[m]`` resolution weights; sigma: optional ``[m]`` errors
      (gaussian/student); shells, n_shells: resolution shells (required for ``cc-aniso``).
    """
    y = jnp.asarray(y)
    if name == "cc":
        return lambda x, mask=None: neg_cc(x, y, weights=weights, mask=mask)
    if name == "cc-aniso":
        if shells is None or n_shells is None:
            raise ValueError("objective 'cc-aniso' needs shells and n_shells (resolution shells of the voxels)")
        shells = jnp.asarray(shells)
        return lambda x, mask=None: neg_cc_aniso(x, y, shells=shells, n_shells=n_shells, weights=weights, mask=mask)
    if name == "gaussian":
        return lambda x, mask=None: gaussian_nll(x, y, sigma=sigma, weights=weights, mask=mask)
    if name == "student":
        return lambda x, mask=None: student_t_nll(x, y, sigma=sigma, nu=nu, weights=weights, mask=mask)
    raise ValueError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")


RESIDUAL_OBJECTIVES = ("absolute", "cc", "gaussian", "rwp")


def objective_residuals(name: str, x, y, *, sigma=None, weights=None):
    """The residual vector ``r [m]`` whose sum of squares is the objective, for least-squares fits (``dmd fit``).

    * ``absolute``: r = sqrt(ω/Σω)·(x − y)/σ — data on the prediction's absolute scale (σ: errors, or the RMS of
      ``y`` when None). Use it when the intensity scale carries the parameter (ε of a harmonic crystal sets the
      amplitude of I_D, not its shape).
    * ``cc``: r = sqrt(ω)·(y − a x − b)/sqrt(Σ ω (y − ȳ)²) with scale ``a`` ≥ 0 and offset ``b`` profiled out
      (:func:`fit_scale_offset`); Σ r² = 1 − CC² (weighted Pearson CC, :func:`neg_cc`), so it ranks like −CC.
    * ``gaussian``: as ``cc`` with u = ω/σ² weights; Σ r² = χ²/Σω, whose log is :func:`gaussian_nll` (same
      minimizer).

    * ``rwp``: r = √ω·(ŷ − x̂)/√Σ ω ŷ², patterns normalized to unit area first
      (:func:`analysis.powder.normalize_pattern`); Σ r² = R_wp² of :func:`analysis.powder.rwp`.

    Scale and offset are profiled inside the function, so gradients flow through them (the envelope theorem makes
    that equal to the fixed-(a, b) gradient at the optimum). Shapes: ``x, y, sigma, weights: [m]``.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y, x.dtype)
    om = _voxel_weights(x, weights, None)
    if name == "absolute":
        s = jnp.sqrt(jnp.mean(y * y)) if sigma is None else jnp.asarray(sigma, x.dtype)
        return jnp.sqrt(om / jnp.sum(om)) * (x - y) / s
    if name in ("cc", "gaussian"):
        u = om if (name == "cc" or sigma is None) else om / jnp.square(jnp.asarray(sigma, x.dtype))
        a, b = fit_scale_offset(x, y, u)
        my = jnp.sum(u * y) / jnp.sum(u)
        norm = jnp.sqrt(jnp.sum(u * (y - my) ** 2)) if name == "cc" else jnp.sqrt(jnp.sum(om))
        return jnp.sqrt(u) * (y - a * x - b) / norm
    if name == "rwp":
        yn, xn = normalize_pattern(y), normalize_pattern(x)
        return jnp.sqrt(om) * (yn - xn) / jnp.sqrt(jnp.sum(om * yn * yn))
    raise ValueError(f"unknown objective {name!r}: choose one of {', '.join(RESIDUAL_OBJECTIVES)}")
