"""Classical baselines: inverse-variance averaging, and a per-image scale + B fit followed by averaging.

Inverse-variance mean (the maximum-likelihood estimate under a Normal error model, seed eq. for θ):

    Ī_h = Σ_i g_i I_i / σ_i² / Σ_i g_i² / σ_i²,   σ(Ī_h) = (Σ_i g_i² / σ_i²)^(−1/2)

with g_i = 1 (plain averaging) or g_i = exp(a_img − b_img·inv_d2/2) (per-image scale k = e^a and B factor b,
Å²; inv_d2 = 1/d², Å⁻²). The scale fit alternates the merge above with one damped Gauss-Newton step per image on
χ² = Σ_i (I_i − g_i Ī_h)² / σ_i² in (a, b), fixing the gauge by mean(a) = mean(b) = 0.
Amplitudes: F = sqrt(max(Ī, 0)) (``"sqrt"``) or the French-Wilson posterior mean under a Wilson prior
with the shell mean intensity (``"french_wilson"``; French & Wilson 1978, Acta Cryst. A34, 517-525,
doi:10.1107/S0567739478001114), by quadrature on a grid of F.
"""

from __future__ import annotations

import numpy as np

from analysis import stats
from analysis.merging.io import Unmerged

__all__ = ["inverse_variance_merge", "scale_b_merge", "amplitudes", "french_wilson"]


def inverse_variance_merge(unmerged: Unmerged, gain: np.ndarray | None = None, obs_mask=None):
    """Ī, σ(Ī), N per reflection (``[n_refl]`` each; NaN where N = 0).

    Args:
      gain: optional ``[n_obs]`` multiplicative scale g_i of each observation.
      obs_mask: optional bool ``[n_obs]`` rows to use.
    """
    g = np.ones(unmerged.n_obs) if gain is None else np.asarray(gain, float)
    m = np.ones(unmerged.n_obs, bool) if obs_mask is None else np.asarray(obs_mask, bool)
    w = np.where(m, g**2 / unmerged.sigma**2, 0.0)
    num = np.bincount(unmerged.refl, np.where(m, g * unmerged.intensity / unmerged.sigma**2, 0.0), unmerged.n_refl)
    den = np.bincount(unmerged.refl, w, unmerged.n_refl)
    n = np.bincount(unmerged.refl, m.astype(float), unmerged.n_refl).astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        ibar = np.where(den > 0, num / den, np.nan)
        sig = np.where(den > 0, 1.0 / np.sqrt(den), np.nan)
    return ibar, sig, n


def scale_b_merge(unmerged: Unmerged, iterations: int = 30, damping: float = 1e-3, obs_mask=None):
    """Per-image scale + B fit, then inverse-variance averaging.

    Returns:
      (Ī, σ(Ī), N, a ``[n_images]``, b ``[n_images]`` Å²).
    """
    n_img = unmerged.n_images
    img = unmerged.image
    inv_d2_obs = unmerged.inv_d2[unmerged.refl]
    m = np.ones(unmerged.n_obs, bool) if obs_mask is None else np.asarray(obs_mask, bool)
    a = np.zeros(n_img)
    b = np.zeros(n_img)
    for _ in range(iterations):
        g = np.exp(a[img] - b[img] * inv_d2_obs / 2.0)
        ibar, _, _ = inverse_variance_merge(unmerged, g, m)
        ih = np.nan_to_num(ibar[unmerged.refl])
        pred = g * ih
        r = np.where(m, unmerged.intensity - pred, 0.0)
        w = np.where(m, 1.0 / unmerged.sigma**2, 0.0)
        ja, jb = pred, -pred * inv_d2_obs / 2.0  # ∂pred/∂a, ∂pred/∂b
        s = lambda v: np.bincount(img, v, n_img)
        haa, hab, hbb = s(w * ja * ja), s(w * ja * jb), s(w * jb * jb)
        ga, gb = s(w * ja * r), s(w * jb * r)
        haa, hbb = haa * (1 + damping) + 1e-12, hbb * (1 + damping) + 1e-12
        det = haa * hbb - hab**2
        ok = det > 0
        da = np.where(ok, (hbb * ga - hab * gb) / np.where(ok, det, 1.0), 0.0)
        db = np.where(ok, (haa * gb - hab * ga) / np.where(ok, det, 1.0), 0.0)
        a = a + np.clip(da, -1.0, 1.0)
        b = b + np.clip(db, -20.0, 20.0)
        a -= a.mean()
        b -= b.mean()
    g = np.exp(a[img] - b[img] * inv_d2_obs / 2.0)
    ibar, sig, n = inverse_variance_merge(unmerged, g, m)
    return ibar, sig, n, a, b


def french_wilson(ibar, sig, inv_d2, epsilon, centric, n_shells: int = 20, n_grid: int = 256):
    """Posterior mean and sd of F given Ī ~ N(F², σ²) and a Wilson prior with Σ = shell mean of Ī/ε.

    Returns:
      (F, SIGF), each ``[n_refl]`` (NaN where Ī is NaN).
    """
    ok = np.isfinite(ibar)
    f_out = np.full(ibar.shape, np.nan)
    s_out = np.full(ibar.shape, np.nan)
    inv_d2_ok = np.asarray(inv_d2)[ok]
    edges = stats.shell_edges(inv_d2_ok, n_shells)
    sh = stats.shell_index(inv_d2_ok, edges)
    eps = np.asarray(epsilon, float)[ok]
    i_o, s_o = ibar[ok], sig[ok]
    cnt = np.bincount(sh, minlength=n_shells)
    mean_i = np.bincount(sh, i_o / eps, n_shells) / np.maximum(cnt, 1)
    var = eps * np.maximum(mean_i[sh], 1e-6 * np.max(np.abs(mean_i)))
    fmax = np.sqrt(np.maximum(i_o, 0.0) + 6.0 * s_o + 9.0 * var)
    t = (np.arange(n_grid) + 0.5) / n_grid
    f = fmax[:, None] * t[None, :]
    cen = np.asarray(centric)[ok][:, None]
    log_prior = np.where(cen, -(f**2) / (2 * var[:, None]), np.log(f) - f**2 / var[:, None])
    log_like = -0.5 * ((i_o[:, None] - f**2) / s_o[:, None]) ** 2
    lp = log_prior + log_like
    w = np.exp(lp - lp.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    m1 = (w * f).sum(axis=1)
    m2 = (w * f**2).sum(axis=1)
    f_out[ok] = m1
    s_out[ok] = np.sqrt(np.maximum(m2 - m1**2, 0.0))
    return f_out, s_out


def amplitudes(ibar, sig, unmerged: Unmerged, method: str = "sqrt"):
    """F from merged intensities: ``"sqrt"`` → sqrt(max(Ī, 0)); ``"french_wilson"`` → posterior mean."""
    if method == "sqrt":
        return np.sqrt(np.maximum(ibar, 0.0))
    if method == "french_wilson":
        return french_wilson(ibar, sig, unmerged.inv_d2, unmerged.epsilon, unmerged.centric)[0]
    raise ValueError(f"unknown amplitude method {method!r}; choose 'sqrt' or 'french_wilson'")
