"""Absolute (Wilson) scale of merged intensities: the expected intensity of the cell contents, a Wilson plot fit,
and the conversion of the fit's normalized posterior to F, I on an absolute scale (electrons).

Convention (docs/merging.md, "Absolute scale"). With inv_d2 = 1/d² (Å⁻²) and s² = (sin θ/λ)² = inv_d2/4:

* Wilson (1942): for atoms placed at random, ⟨|F(h)|²⟩ = ε(h)·Σ_N(s)·exp(−2B s²), Σ_N(s) = Σ_j f_j(s)² over all
  atoms j of the unit cell (IT92 form factors, :mod:`analysis.formfactors`), B the overall isotropic B (Å²).
* Without a sequence, the contents are estimated as ctruncate/phenix do: a protein crystal with Matthews
  coefficient V_M = 2.4 Å³/Da (≈ 50 % solvent), N_res = V_cell / (V_M · 110 Da) residues of average composition
  C 5.0, N 1.35, O 1.5, S 0.05, H 8.0 (:func:`protein_sigma_n`).
* Wilson plot: in equal-count shells of the reflections with d ≤ ``d_max`` (4.5 Å: the protein-like linear part)

      y_shell = ln ⟨ I / (ε Σ_N) ⟩_shell = ln k − B · ⟨inv_d2⟩_shell / 2

  fitted by least squares with weights 1/Var(y_shell), Var(y) ≈ Var(I/εΣ_N) / (n ⟨I/εΣ_N⟩²). k (input intensity
  units per electron²) is the Wilson scale, B the Wilson B. Intensities on the absolute scale are I/k.

The merged posterior is on the normalized scale of the Wilson prior (⟨F²⟩ = εΣ_prior). Its intensities are put
back on the scale of the input by the smooth, resolution-only part of the fitted scale model,
ln s̄(inv_d2) = c + g·inv_d2 (least squares over every observation's ln s): I_data = s̄·E_q[F²]. Per-image and
detector terms are corrections of single observations, not of the merged reflection, so they are left out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis import cell as cell_mod
from analysis import stats
from analysis.formfactors import form_factor, form_factor_table

__all__ = ["PROTEIN_RESIDUE", "WilsonFit", "protein_sigma_n", "smooth_log_scale", "wilson_fit", "to_absolute"]

# average amino-acid residue (ctruncate's default composition), atoms per residue; mean residue mass 110 Da
PROTEIN_RESIDUE = {"C": 5.0, "N": 1.35, "O": 1.5, "S": 0.05, "H": 8.0}
RESIDUE_MASS_DA = 110.0
MATTHEWS_VM = 2.4  # Å³/Da, ≈ 50 % solvent


@dataclasses.dataclass(frozen=True)
class WilsonFit:
    """Result of :func:`wilson_fit`.

    Attributes:
      scale: k, input intensity units per electron² (I_abs = I / k); ln_scale_se: standard error of ln k.
      b: Wilson B (Å²); b_se: its standard error (Å²).
      d_range: (d_max, d_min) Å of the reflections used; n_refl: how many.
      inv_d2, y: ``[n_shells]`` shell mean 1/d² (Å⁻²) and ln⟨I/(εΣ_N)⟩ (the Wilson plot points).
    """

    scale: float
    ln_scale_se: float
    b: float
    b_se: float
    d_range: tuple[float, float]
    n_refl: int
    inv_d2: np.ndarray
    y: np.ndarray

    def as_dict(self) -> dict:
        return {
            "scale_k": self.scale,
            "ln_scale_se": self.ln_scale_se,
            "b_wilson": self.b,
            "b_se": self.b_se,
            "d_range": list(self.d_range),
            "n_refl": self.n_refl,
            "plot": {"inv_d2": self.inv_d2.tolist(), "ln_mean_i_over_sigma_n": self.y.tolist()},
        }


def protein_sigma_n(inv_d2, cell, vm: float = MATTHEWS_VM, composition=None) -> np.ndarray:
    """Σ_N(s) = N_res · Σ_el n_el f_el(s)² (electrons²) of a protein filling the cell at Matthews coefficient ``vm``.

    Args:
      inv_d2: ``[n]`` 1/d² (Å⁻²); cell: ``[6]`` Å/degrees; vm: Å³/Da; composition: atoms per residue
        (default :data:`PROTEIN_RESIDUE`).
    """
    comp = PROTEIN_RESIDUE if composition is None else composition
    n_res = float(cell_mod.volume(np.asarray(cell, np.float64))) / (vm * RESIDUE_MASS_DA)
    table = form_factor_table(list(comp))
    f = np.asarray(form_factor(np.asarray(inv_d2, np.float64), table.a, table.b, table.c), np.float64)  # [n_el, n]
    return n_res * np.einsum("e,en->n", np.array(list(comp.values()), float), f**2)


def smooth_log_scale(log_s, inv_d2_obs) -> tuple[float, float]:
    """(c, g) of the least-squares line ln s ≈ c + g·inv_d2 over observations (``[n_obs]`` each)."""
    g, c = np.polyfit(np.asarray(inv_d2_obs, float), np.asarray(log_s, float), 1)
    return float(c), float(g)


def wilson_fit(
    intensity, inv_d2, epsilon, sigma_n, *, d_max: float = 4.5, n_shells: int = 10, min_per_shell: int = 20
) -> WilsonFit:
    """Fit ln⟨I/(εΣ_N)⟩ = ln k − B·inv_d2/2 in equal-count shells (module docstring).

    Args:
      intensity: ``[n]`` merged intensities (any units); inv_d2: ``[n]`` Å⁻²; epsilon: ``[n]``;
      sigma_n: ``[n]`` expected intensity of the contents Σ_N (e.g. :func:`protein_sigma_n`; 1 for normalized).
      d_max: only reflections with d ≤ d_max (Å) enter, unless fewer than 3 shells of ``min_per_shell``
        remain (then all reflections, and ``d_range`` says so).

    Raises:
      ValueError: fewer than 2 shells with a positive mean intensity (no Wilson plot).
    """
    i = np.asarray(intensity, float)
    x = np.asarray(inv_d2, float)
    r = i / (np.asarray(epsilon, float) * np.asarray(sigma_n, float))
    ok = np.isfinite(r)
    use = ok & (x >= 1.0 / d_max**2)
    if np.count_nonzero(use) < 3 * min_per_shell:
        use = ok
    n_sh = int(max(2, min(n_shells, np.count_nonzero(use) // min_per_shell)))
    edges = stats.shell_edges(x[use], n_sh)
    sh = stats.shell_index(x[use], edges)
    cnt = np.bincount(sh, minlength=n_sh).astype(float)
    mean_r = np.bincount(sh, r[use], n_sh) / np.maximum(cnt, 1)
    var_r = np.bincount(sh, r[use] ** 2, n_sh) / np.maximum(cnt, 1) - mean_r**2
    xs = np.bincount(sh, x[use], n_sh) / np.maximum(cnt, 1)
    good = (cnt > 1) & (mean_r > 0)
    if np.count_nonzero(good) < 2:
        raise ValueError("Wilson plot: fewer than 2 resolution shells with a positive mean intensity")
    y = np.log(mean_r[good])
    var_y = np.maximum(var_r[good], 1e-30) / (cnt[good] * mean_r[good] ** 2)
    design = np.stack([np.ones(y.size), -0.5 * xs[good]], axis=1)
    w = 1.0 / var_y
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    ln_k, b = cov @ (design.T @ (w * y))
    d = 1.0 / np.sqrt(np.maximum(x[use], 1e-12))
    return WilsonFit(
        scale=float(np.exp(ln_k)),
        ln_scale_se=float(np.sqrt(cov[0, 0])),
        b=float(b),
        b_se=float(np.sqrt(cov[1, 1])),
        d_range=(float(d.max()), float(d.min())),
        n_refl=int(np.count_nonzero(use)),
        inv_d2=xs[good],
        y=y,
    )


def to_absolute(posterior: dict, inv_d2, epsilon, prior_variance, smooth: tuple[float, float], sigma_n, **fit_kw):
    """Normalized posterior → (absolute-scale {"F", "SIGF", "I", "SIGI"}, normalized {"E", "SIGE"}, WilsonFit).

    Args:
      posterior: {"F", "SIGF", "I", "SIGI"} ``[n_refl]`` on the prior's scale (``fit.posterior_summary``).
      inv_d2, epsilon, prior_variance: ``[n_refl]`` (Å⁻², ε, εΣ_prior); smooth: (c, g) of
        :func:`smooth_log_scale`; sigma_n: ``[n_refl]`` Σ_N (electrons²); fit_kw: passed to :func:`wilson_fit`.

    F_abs = F·sqrt(s̄/k), I_abs = I·s̄/k (SIGF, SIGI alike), E = F / sqrt(εΣ_prior).
    """
    x = np.asarray(inv_d2, float)
    c, g = smooth
    s_bar = np.exp(c + g * x)
    wf = wilson_fit(posterior["I"] * s_bar, x, epsilon, sigma_n, **fit_kw)
    fac = s_bar / wf.scale
    absolute = {
        "F": posterior["F"] * np.sqrt(fac),
        "SIGF": posterior["SIGF"] * np.sqrt(fac),
        "I": posterior["I"] * fac,
        "SIGI": posterior["SIGI"] * fac,
    }
    root = np.sqrt(np.asarray(prior_variance, float))
    normalized = {"E": posterior["F"] / root, "SIGE": posterior["SIGF"] / root}
    return absolute, normalized, wf
