"""Comparison of a merge with a reference merge of the same data (e.g. AIMLESS's), on the merge's reflection rows.

A conventional merge (scaling program + weighted mean) is the reference users trust for real data; this module puts
its I(+)/I(−) on the rows of an anomalous :class:`analysis.merging.io.Unmerged` ((−) rows are the negated ASU
index, centric rows (+) only) and scores an estimate against it:

* CC(I): Pearson CC of the merged intensities, overall and per equal-count shell of 1/d² (:mod:`quality`);
* CCanom: CC of ΔF = F(+) − F(−) over acentric pairs with both mates in both sets
  (:func:`analysis.merging.quality.cc_anom`). The reference's amplitudes are French–Wilson posterior means of its
  intensities (:func:`analysis.merging.classical.french_wilson`), as ctruncate would give.
"""

from __future__ import annotations

import os

import numpy as np

from analysis.merging import quality
from analysis.merging.classical import french_wilson
from analysis.merging.io import Unmerged, hkl_rows, read_merged
from dmd.base.errors import UserInputError

__all__ = ["ANOMALOUS_LABELS", "values_on_rows", "reference_on_rows", "compare_with_reference"]

# (I(+), SIGI(+), I(−), SIGI(−)) as AIMLESS/ctruncate and careless/dmd name them
ANOMALOUS_LABELS = (("Iplus", "SIGIplus", "Iminus", "SIGIminus"), ("I(+)", "SIGI(+)", "I(-)", "SIGI(-)"))


def reference_on_rows(unmerged: Unmerged, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(I, σ(I)) of a merged anomalous MTZ on ``unmerged``'s rows, ``[n_refl]`` each (NaN where it has none).

    Raises:
      UserInputError: the file has none of the :data:`ANOMALOUS_LABELS` column sets, or ``unmerged`` is not
        anomalous.
    """
    if not unmerged.anomalous:
        raise UserInputError("the comparison needs anomalous unmerged data: read it with anomalous=True")
    hkl, cols, _ = read_merged(path)
    labels = next((ls for ls in ANOMALOUS_LABELS if all(x in cols for x in ls)), None)
    if labels is None:
        raise UserInputError(f"{path}: no I(+)/I(-) columns (one of {ANOMALOUS_LABELS}); give an anomalous merge")
    i_out = values_on_rows(unmerged, hkl, cols[labels[0]], cols[labels[2]])
    s_out = values_on_rows(unmerged, hkl, cols[labels[1]], cols[labels[3]])
    return i_out, s_out


def values_on_rows(unmerged: Unmerged, hkl, plus, minus=None) -> np.ndarray:
    """A merged column put on ``unmerged``'s rows, ``[n_refl]`` (NaN where the merge has no value).

    Args:
      hkl: int ``[n, 3]`` the merge's reflections (its ASU, as any CCP4-convention program writes them).
      plus: ``[n]`` the values of those reflections (F, or F(+) of an anomalous merge).
      minus: ``[n]`` the (−) mates' values (F(−)) when both the merge and ``unmerged`` are anomalous.
    """
    out = np.full(unmerged.n_refl, np.nan)
    pairs = ((1, plus),) if minus is None else ((1, plus), (-1, minus))
    for sign, values in pairs:
        values = np.asarray(values, float)
        rows = hkl_rows(unmerged.hkl, sign * np.asarray(hkl))
        ok = (rows >= 0) & np.isfinite(values)
        if sign < 0:  # centric reflections live on their (+) row only
            ok &= np.isnan(out[np.maximum(rows, 0)])
        out[rows[ok]] = values[ok]
    return out


def compare_with_reference(unmerged: Unmerged, i_est, f_est, i_ref, sig_ref, n_shells: int = 10) -> dict:
    """CC(I) and CCanom(ΔF) of an estimate against a reference on ``unmerged``'s rows (module docstring).

    Args:
      i_est, f_est: ``[n_refl]`` merged intensities and amplitudes (NaN: not merged).
      i_ref, sig_ref: ``[n_refl]`` the reference's I, σ(I) (:func:`reference_on_rows`).

    Returns:
      {"cc_i": {"overall", "per_shell", "d_range"}, "ccanom": {"overall", "per_shell", "d_range", "n_pairs"},
      "n_refl": reflections with both values}.
    """
    u = unmerged
    f_ref = french_wilson(np.asarray(i_ref, float), np.asarray(sig_ref, float), u.inv_d2, u.epsilon, u.centric)[0]
    i_est, f_est = np.asarray(i_est, float), np.asarray(f_est, float)
    both = np.isfinite(i_est) & np.isfinite(i_ref)
    _, idx, d_range = quality.shells(u.inv_d2, n_shells)
    cc_i = {
        "overall": quality.cc(i_est, i_ref, both),
        "per_shell": quality.cc_by_shell(i_est, i_ref, idx, n_shells, both),
        "d_range": d_range,
    }
    ccanom = quality.cc_anom([f_est, None], u.hkl, u.spacegroup, u.inv_d2, f_ref=f_ref, n_shells=n_shells)
    return {"cc_i": cc_i, "ccanom": ccanom, "n_refl": int(np.count_nonzero(both))}
