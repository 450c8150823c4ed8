"""Figures of merit for powder indexing: de Wolff M_N and Smith-Snyder F_N.

de Wolff (1968), "A simplified criterion for the reliability of a powder pattern
indexing", J. Appl. Cryst. 1, 108-113, doi:10.1107/S002188986800508X::

    M_N = Q_N / (2 · ε̄ · N_calc)

with Q = q² = 1/d² (Å⁻²), Q_N the N-th observed line (N = 20 for M20), ε̄ the mean
|Q_obs − Q_calc| over the first N observed lines and N_calc the number of distinct
calculated lines with Q ≤ Q_N.

Smith & Snyder (1979), "F_N: a criterion for rating powder diffraction patterns and
evaluating the reliability of powder-pattern indexing", J. Appl. Cryst. 12, 60-65,
doi:10.1107/S002188987901178X::

    F_N = N / (⟨|Δ2θ|⟩ · N_poss)

with ⟨|Δ2θ|⟩ the mean absolute 2θ discrepancy (degrees) over the first N lines and
N_poss the number of distinct possible lines up to the N-th observed line.

Unindexed lines (``indexed`` False) are left out of ε̄ and ⟨|Δ2θ|⟩ but still count
towards N and Q_N, as de Wolff prescribes; report their number beside the figure.
"""

from __future__ import annotations

import numpy as np

from analysis import cell as cell_mod

__all__ = ["count_distinct", "de_wolff_m", "smith_snyder_f"]


def count_distinct(values, upto: float, rel_tol: float = 1e-6) -> int:
    """Number of distinct values ≤ ``upto`` (values within ``rel_tol`` relative count once)."""
    v = np.sort(np.asarray(values, float))
    v = v[v <= upto * (1 + rel_tol)]
    if v.size == 0:
        return 0
    return int(1 + np.sum(np.diff(v) > rel_tol * v[1:]))


def _first_lines(inv_d2_obs, inv_d2_calc, n: int, indexed):
    """(obs, calc as float arrays, N = min(n, n_obs), bool ``[N]`` of the first N lines counted)."""
    inv_d2_obs = np.asarray(inv_d2_obs, float)
    nn = min(int(n), inv_d2_obs.size)
    idx = np.ones(inv_d2_obs.size, bool) if indexed is None else np.asarray(indexed, bool)
    return inv_d2_obs, np.asarray(inv_d2_calc, float), nn, idx[:nn]


def de_wolff_m(inv_d2_obs, inv_d2_calc, calc_lines, n: int = 20, indexed=None) -> float:
    """de Wolff M_N (module docstring).

    Args:
      inv_d2_obs: ``[n_obs]`` observed Q (Å⁻²), ascending.
      inv_d2_calc: ``[n_obs]`` calculated Q of the reflection assigned to each observed line.
      calc_lines: ``[n_calc]`` Q of every allowed calculated reflection (any order; duplicates merged).
      n: N (20 for M20); uses min(n, n_obs) lines.
      indexed: optional ``[n_obs]`` bool, lines counted in ε̄.

    Returns:
      M_N (inf for a perfect fit).
    """
    inv_d2_obs, inv_d2_calc, nn, sel = _first_lines(inv_d2_obs, inv_d2_calc, n, indexed)
    if not np.any(sel):
        return 0.0
    inv_d2_n = inv_d2_obs[nn - 1]
    eps = float(np.mean(np.abs(inv_d2_obs[:nn] - inv_d2_calc[:nn])[sel]))
    n_calc = count_distinct(calc_lines, inv_d2_n)
    if n_calc == 0:
        return 0.0
    return float(np.inf) if eps == 0 else inv_d2_n / (2.0 * eps * n_calc)


def smith_snyder_f(inv_d2_obs, inv_d2_calc, calc_lines, wavelength: float, n: int = 20, indexed=None):
    """Smith-Snyder F_N (module docstring).

    Args:
      inv_d2_obs, inv_d2_calc, calc_lines, n, indexed: as in :func:`de_wolff_m`.
      wavelength: λ (Å) used to convert Q to 2θ.

    Returns:
      (F_N, mean |Δ2θ| in degrees, N_poss).
    """
    inv_d2_obs, inv_d2_calc, nn, sel = _first_lines(inv_d2_obs, inv_d2_calc, n, indexed)
    lines = np.asarray(calc_lines, float)
    lines = lines[wavelength * np.sqrt(lines) / 2 < 1]
    t_obs = cell_mod.two_theta_from_inv_d2(inv_d2_obs[:nn], wavelength)
    t_cal = cell_mod.two_theta_from_inv_d2(np.clip(inv_d2_calc[:nn], 0, (2 / wavelength) ** 2), wavelength)
    n_poss = count_distinct(lines, inv_d2_obs[nn - 1])
    if not np.any(sel) or n_poss == 0:
        return 0.0, float("nan"), n_poss
    dtt = float(np.mean(np.abs(t_obs - t_cal)[sel]))
    f = float(np.inf) if dtt == 0 else nn / (dtt * n_poss)
    return f, dtt, n_poss
