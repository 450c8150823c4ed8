"""Synthetic unmerged diffraction data with known truth, for validating scaling and merging.

Generative model (all draws from one ``numpy.random.Generator(seed)``):

* True amplitudes from Wilson statistics on a resolution falloff Σ = exp(−B_wilson·inv_d2/2), inv_d2 = 1/d² (Å⁻²):
  acentric F ~ Rayleigh with ⟨F²⟩ = εΣ, centric F ~ half-normal with ⟨F²⟩ = εΣ (ε, centric flags from gemmi).
  With ``anomalous_sd`` > 0, acentric F(±h) = F·exp(±δ), δ ~ N(0, anomalous_sd²).
* Each unique reflection is observed Poisson(multiplicity) times (unobserved ones drop out), on random
  images, as a random symmetry equivalent (and, without anomalous signal, a random Friedel sign).
* Detector position: x, y (mm) at radius L·tan 2θ from the beam centre, random azimuth (λ = 1 Å, L = 150 mm).
* Systematic scale of each observation: I_true = G·k_img·exp(−B_img·inv_d2/2)·D(x, y)·F², with
  log k_img = 0.4 sin(2π t) + N(0, image_scale_sd²), B_img = 8 t + N(0, image_b_sd²) (t = image/n_images:
  beam decay and radiation damage), log D = detector_strength·(0.8 x̂ − 0.5 ŷ²) (x̂, ŷ: position / max radius;
  an absorption-like gradient).
* Noise: σ = c·sqrt(I_true + ⟨I_true⟩) (counting-like plus background), c chosen so that the mean I_true/σ equals
  ``isigi``; I = I_true + N(0, σ²). A fraction ``outlier_fraction`` of observations gets + (5…15)·σ (zingers).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.merging.io import Unmerged, group_observations, hkl_rows, write_unmerged

__all__ = ["SyntheticConfig", "SyntheticData", "make_synthetic", "write_synthetic"]


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of :func:`make_synthetic` (units: Å, Å², mm)."""

    cell: tuple[float, ...] = (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)  # Å, degrees
    spacegroup: str = "P 21 21 21"
    d_min: float = 2.13  # Å
    n_images: int = 200
    multiplicity: float = 3.0  # mean observations per unique reflection
    isigi: float = 2.0  # mean I_true/σ
    wilson_b: float = 20.0  # Å²
    image_scale_sd: float = 0.2  # log units
    image_b_sd: float = 2.0  # Å²
    detector_strength: float = 0.3
    outlier_fraction: float = 0.005  # of the observations
    anomalous_sd: float = 0.0  # sd of log F(+)/F(−) ratio δ; 0: no anomalous signal
    overall_scale: float = 100.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class SyntheticData:
    """Synthetic observations and their truth.

    Attributes:
      unmerged: the grouped observation table (as :func:`analysis.merging.read_unmerged` would return it;
        metadata columns XDET, YDET in mm).
      f_true: ``[n_refl]`` true amplitudes of ``unmerged.hkl`` (incl. the Wilson falloff, no scale).
      image_log_scale, image_b: ``[n_images]`` the true per-image log k and B (Å²).
      hkl_obs, intensity, sigma, batch, xdet, ydet: the raw rows (what is written to MTZ).
      outlier: bool ``[n_obs]`` rows that received a zinger.
    """

    unmerged: Unmerged
    f_true: np.ndarray
    image_log_scale: np.ndarray
    image_b: np.ndarray
    hkl_obs: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    batch: np.ndarray
    xdet: np.ndarray
    ydet: np.ndarray
    outlier: np.ndarray
    config: SyntheticConfig


def make_synthetic(config: SyntheticConfig = SyntheticConfig()) -> SyntheticData:
    """Draw a synthetic unmerged data set (see module docstring for the model)."""
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    group = symmetry.spacegroup(cfg.spacegroup)
    cell = np.asarray(cfg.cell, float)
    hkl_u = symmetry.generate_hkl(cell, cfg.d_min, group, unique=True)
    n_u = hkl_u.shape[0]
    inv_d2_u = cell_mod.inv_d2(hkl_u.astype(float), cell)
    eps = symmetry.epsilon_factors(hkl_u, group).astype(float)
    centric = symmetry.centric_flags(hkl_u, group)
    var = eps * np.exp(-cfg.wilson_b * inv_d2_u / 2.0)  # ⟨F²⟩ = εΣ(inv_d2)
    f_acen = np.sqrt(var / 2.0) * np.sqrt(rng.standard_normal(n_u) ** 2 + rng.standard_normal(n_u) ** 2)
    f_cen = np.sqrt(var) * np.abs(rng.standard_normal(n_u))
    f = np.where(centric, f_cen, f_acen)
    anomalous = cfg.anomalous_sd > 0
    delta = np.where(centric, 0.0, rng.normal(0.0, cfg.anomalous_sd, n_u)) if anomalous else np.zeros(n_u)

    # observations: Poisson multiplicity, random image, random symmetry equivalent
    n_per = rng.poisson(cfg.multiplicity, n_u)
    src = np.repeat(np.arange(n_u), n_per)
    n_obs = src.shape[0]
    rots = symmetry.reciprocal_rotations(group)
    rot = rots[rng.integers(0, rots.shape[0], n_obs)]
    friedel = rng.random(n_obs) < 0.5
    hkl_obs = np.einsum("ni,nij->nj", hkl_u[src].astype(np.int64), rot)
    hkl_obs = np.where(friedel[:, None], -hkl_obs, hkl_obs).astype(np.int32)
    # a Friedel observation of an acentric reflection sees F(−h)
    f_obs = f[src] * np.exp(np.where(friedel, -delta[src], delta[src]))

    image = rng.integers(0, cfg.n_images, n_obs)
    t = (np.arange(cfg.n_images) + 0.5) / cfg.n_images
    log_k = 0.4 * np.sin(2 * np.pi * t) + rng.normal(0.0, cfg.image_scale_sd, cfg.n_images)
    b_img = 8.0 * t + rng.normal(0.0, cfg.image_b_sd, cfg.n_images)
    b_img -= b_img.mean()
    log_k -= log_k.mean()

    wavelength, distance = 1.0, 150.0
    inv_d2_obs = inv_d2_u[src]
    sin_theta = np.clip(wavelength * np.sqrt(inv_d2_obs) / 2.0, 0.0, 0.999)
    radius = distance * np.tan(2.0 * np.arcsin(sin_theta))
    phi = rng.uniform(0.0, 2 * np.pi, n_obs)
    r_max = distance * np.tan(2.0 * np.arcsin(min(wavelength / (2 * cfg.d_min), 0.999)))
    xdet = 150.0 + radius * np.cos(phi)
    ydet = 150.0 + radius * np.sin(phi)
    xh, yh = (xdet - 150.0) / r_max, (ydet - 150.0) / r_max
    log_det = cfg.detector_strength * (0.8 * xh - 0.5 * yh**2)

    scale = cfg.overall_scale * np.exp(log_k[image] - b_img[image] * inv_d2_obs / 2.0 + log_det)
    i_true = scale * f_obs**2
    base = np.sqrt(i_true + i_true.mean())
    c = np.mean(i_true / base) / cfg.isigi
    sigma = c * base
    intensity = i_true + sigma * rng.standard_normal(n_obs)
    outlier = rng.random(n_obs) < cfg.outlier_fraction
    intensity = np.where(outlier, intensity + rng.uniform(5.0, 15.0, n_obs) * sigma, intensity)

    batch = image + 1
    unmerged = group_observations(
        hkl_obs,
        intensity,
        sigma,
        batch,
        cell,
        group,
        anomalous=anomalous,
        metadata=np.stack([xdet, ydet], axis=1),
        metadata_names=("XDET", "YDET"),
        source="synthetic",
        wavelength=wavelength,
    )
    # truth for each grouped reflection: look up by its ASU index (negated = the (−) mate)
    hkl_u_asu = symmetry.to_asu(hkl_u, group)[0]
    pos = hkl_rows(hkl_u_asu, unmerged.hkl)
    is_minus = pos < 0
    pos = np.where(is_minus, hkl_rows(hkl_u_asu, -unmerged.hkl), pos)
    f_true = f[pos] * np.exp(np.where(is_minus, -delta[pos], delta[pos]))
    return SyntheticData(
        unmerged=unmerged,
        f_true=f_true,
        image_log_scale=log_k,  # the true scale model
        image_b=b_img,
        hkl_obs=hkl_obs,  # the raw rows, as written to MTZ
        intensity=intensity,
        sigma=sigma,
        batch=batch,
        xdet=xdet,  # mm
        ydet=ydet,
        outlier=outlier,  # rows that got a zinger
        config=cfg,
    )


def write_synthetic(path: str | os.PathLike, data: SyntheticData):
    """Write the synthetic rows as an unmerged MTZ (I, SIGI, BATCH, XDET, YDET)."""
    cfg = data.config
    return write_unmerged(
        path,
        data.hkl_obs,
        data.intensity,
        data.sigma,
        data.batch,
        cfg.cell,
        cfg.spacegroup,
        metadata={"XDET": data.xdet, "YDET": data.ydet},
        wavelength=1.0,
    )
