"""Merging quality statistics, per resolution shell (equal-count shells in inv_d2 = 1/d², Å⁻²).

* CC(true): Pearson CC between estimated and true amplitudes, both divided by their shell RMS
  ("resolution-normalized", so the overall value is not dominated by the resolution falloff).
* CC1/2: CC between amplitudes merged from two random halves of the images (scale model frozen).
* CCanom: CC between the anomalous differences ΔF = F(+) − F(−) of the two halves (or vs the truth).
* CCpred: CC between held-out observed intensities and the model's predictions s·E[F²].

Pearson CCs are :func:`analysis.stats.pearson_cc` / :func:`analysis.stats.cc_per_shell` (zero variance gives 0);
the functions here add the merging conventions: only finite pairs count, fewer than 3 give NaN.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from analysis import stats
from analysis.merging.io import hkl_rows, in_asu

__all__ = ["shells", "cc", "cc_by_shell", "normalize_by_shell", "cc_truth", "cc_half", "friedel_pairs", "cc_anom"]


def shells(inv_d2, n_shells: int = 10):
    """(edges ``[n_shells+1]``, shell index ``[n]``, d range per shell ``[n_shells, 2]`` Å (low, high))."""
    edges = stats.shell_edges(inv_d2, n_shells)
    idx = stats.shell_index(inv_d2, edges)
    with np.errstate(divide="ignore"):
        d = 1.0 / np.sqrt(np.maximum(edges, 1e-12))
    return edges, idx, np.stack([d[:-1], d[1:]], axis=1)


_DEFAULT_SHELLS = 10


@functools.partial(jax.jit, static_argnums=3)
def _cc_overall_and_per_shell(x, y, shell_idx, n_shells: int, mask):
    """(:func:`analysis.stats.pearson_cc`, :func:`analysis.stats.cc_per_shell`) in one compiled program."""
    return stats.pearson_cc(x, y, mask=mask), stats.cc_per_shell(x, y, shell_idx, n_shells, mask)


def _finite_pairs(x, y, mask, shell_idx=None):
    """(x, y, shell index, m) padded with zeros to a power-of-two length; m: bool, the finite masked-in pairs.

    Padding makes one compiled program serve every length up to the next power of two: the quality numbers of
    one merge come in several lengths (held-out rows, reflections, Bijvoet pairs).
    """
    x, y = np.asarray(x, float).reshape(-1), np.asarray(y, float).reshape(-1)
    m = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        m &= np.asarray(mask, bool).reshape(-1)
    shell_idx = np.zeros(m.size, np.int32) if shell_idx is None else np.asarray(shell_idx, np.int32).reshape(-1)
    n_pad = 1 << max(int(m.size - 1).bit_length(), 3)
    pad = lambda a: np.pad(a, (0, n_pad - a.size))
    return pad(np.where(m, x, 0.0)), pad(np.where(m, y, 0.0)), pad(shell_idx), pad(m)


def cc(x, y, mask=None) -> float:
    """Pearson CC (:func:`analysis.stats.pearson_cc`) of the finite pairs; NaN if fewer than 3."""
    x, y, shell_idx, m = _finite_pairs(x, y, mask)
    if np.count_nonzero(m) < 3:
        return float("nan")
    return float(_cc_overall_and_per_shell(x, y, shell_idx, _DEFAULT_SHELLS, m)[0])


def cc_by_shell(x, y, shell_idx, n_shells: int, mask=None) -> np.ndarray:
    """``[n_shells]`` CC within each shell (:func:`analysis.stats.cc_per_shell`); NaN where < 3 finite pairs."""
    x, y, shell_idx, m = _finite_pairs(x, y, mask, shell_idx)
    per_shell = np.asarray(_cc_overall_and_per_shell(x, y, shell_idx, n_shells, m)[1], float)
    return np.where(np.bincount(shell_idx[m], minlength=n_shells) >= 3, per_shell, np.nan)


def normalize_by_shell(f, shell_idx, n_shells: int, mask=None):
    """f / sqrt(mean f² in its shell) (finite, masked values define the mean)."""
    f = np.asarray(f, float)
    m = np.isfinite(f) if mask is None else (np.asarray(mask, bool) & np.isfinite(f))
    f0 = np.where(m, f, 0.0)
    ms = np.bincount(shell_idx, f0**2, n_shells) / np.maximum(np.bincount(shell_idx, m.astype(float), n_shells), 1)
    return f / np.sqrt(np.where(ms > 0, ms, 1.0))[shell_idx]


def cc_truth(f_est, f_true, inv_d2, n_shells: int = 10, mask=None) -> dict:
    """CC with the truth on resolution-normalized amplitudes: {"overall", "per_shell", "d_range"}."""
    _, idx, d_range = shells(inv_d2, n_shells)
    m = np.isfinite(np.asarray(f_est, float)) if mask is None else np.asarray(mask, bool)
    e = normalize_by_shell(f_est, idx, n_shells, m)
    t = normalize_by_shell(f_true, idx, n_shells, m)
    return {"overall": cc(e, t, m), "per_shell": cc_by_shell(e, t, idx, n_shells, m), "d_range": d_range}


def cc_half(f1, f2, inv_d2, counts=None, n_shells: int = 10) -> dict:
    """CC1/2 of two half-data-set amplitude sets ``[n_refl]``; only reflections seen in both halves count."""
    _, idx, d_range = shells(inv_d2, n_shells)
    m = np.ones(np.shape(f1), bool) if counts is None else (counts[0] > 0) & (counts[1] > 0)
    return {
        "overall": cc(f1, f2, m),
        "per_shell": cc_by_shell(f1, f2, idx, n_shells, m),
        "d_range": d_range,
        "n_pairs": int(np.count_nonzero(m)),
    }


def friedel_pairs(hkl: np.ndarray, spacegroup):
    """Rows (plus, minus) of Bijvoet pairs in an anomalous reflection list whose (−) rows are the negated
    ASU index (``analysis.merging.io`` convention); a (+) row is one inside gemmi's reciprocal ASU.
    Returns two int arrays of equal length."""
    hkl = np.asarray(hkl, np.int64)
    plus = np.flatnonzero(in_asu(hkl, spacegroup))
    minus = hkl_rows(hkl, -hkl[plus])
    keep = (minus >= 0) & (minus != plus)
    return plus[keep].astype(int), minus[keep].astype(int)


def cc_anom(f, hkl, spacegroup, inv_d2, f_ref=None, counts=None, n_shells: int = 10) -> dict:
    """CCanom between ΔF = F(+) − F(−) of two estimates.

    Args:
      f: ``[2, n_refl]`` two half-data-set amplitude sets (or one estimate and ``f_ref`` the truth).
      hkl: ``[n_refl, 3]`` reflection list (anomalous convention); spacegroup: its space group.
      counts: optional ``[2, n_refl]`` observation counts; pairs need both mates in both sets.
    """
    plus, minus = friedel_pairs(hkl, spacegroup)
    a = np.asarray(f[0])[plus] - np.asarray(f[0])[minus]
    b = np.asarray(f[1]) if f_ref is None else np.asarray(f_ref)
    b = b[plus] - b[minus]
    m = np.ones(plus.shape, bool)
    if counts is not None:
        c = np.asarray(counts)
        m = (c[:, plus] > 0).all(axis=0) & (c[:, minus] > 0).all(axis=0)
    _, idx, d_range = shells(np.asarray(inv_d2)[plus], n_shells)
    return {
        "overall": cc(a, b, m),
        "per_shell": cc_by_shell(a, b, idx, n_shells, m),
        "d_range": d_range,
        "n_pairs": int(np.count_nonzero(m)),
    }
