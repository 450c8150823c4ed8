"""Partial observations in unmerged data: detect them, and refuse them or sum them into full observations.

A rotation image records only part of a spot that is cut by the image boundary; integration programs such as MOSFLM
write each part (a *partial*) as its own row, and the rows of one spot must be summed before merging (AIMLESS does
this). Merged as if each were a full observation, partials bias every intensity low and inflate the multiplicity.
Evidence looked for, in this order:

* ``M/ISYM``: M = ⌊M/ISYM / 256⌋ is 1 on partial rows (the CCP4 convention; M = 0 for full ones);
* ``FRACTIONCALC`` (or ``FRACTION_CALC``): the calculated fraction of the spot recorded; < 0.95 marks a partial;
* ``PARTIAL``: a non-zero value marks a partial (DIALS-style flag);
* without such a column, the pattern itself: the same observed (unreduced) hkl on consecutive images. Full
  observations of one reflection in one sweep are ≥ 180° apart, so partials are taken as present when more than
  :data:`RUN_FRACTION` of the rows are in such runs *and* most repeats of one observed hkl are one image apart
  (observations on random images, as in the synthetic data of :mod:`analysis.merging.synth`, reach 30 % of rows in
  runs with 10 images, but then only ~20 % of repeats are one image apart).

:func:`sum_partials` sums each run of one observed hkl on consecutive images (among the partial rows):
I = Σ I_k, σ(I) = sqrt(Σ σ_k²), the image and metadata of the part with the largest I (the spot's centre).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis import symmetry

__all__ = ["RUN_FRACTION", "PartialEvidence", "detect_partials", "consecutive_runs", "sum_partials"]

RUN_FRACTION = 0.05  # rows in same-hkl consecutive-image runs above which the data are taken as raw partials
_FRACTION_FULL = 0.95


@dataclasses.dataclass(frozen=True)
class PartialEvidence:
    """What :func:`detect_partials` found: ``partial`` bool ``[n_obs]`` rows taken as partials, ``column`` the
    column (or pattern) that says so, ``description`` a human sentence."""

    partial: np.ndarray
    column: str
    description: str

    @property
    def n(self) -> int:
        return int(np.count_nonzero(self.partial))


def consecutive_runs(hkl_obs, batch) -> tuple[np.ndarray, np.ndarray]:
    """Runs of one observed hkl on consecutive images.

    Args:
      hkl_obs: int ``[n, 3]`` observed (unreduced) indices; batch: int ``[n]`` image numbers.

    Returns:
      (run id int ``[n]`` — rows of one run share it —, in_run bool ``[n]`` rows whose run has ≥ 2 rows).
    """
    keys = symmetry.hkl_keys(np.asarray(hkl_obs, np.int64))
    batch = np.asarray(batch, np.int64)
    order = np.lexsort((batch, keys))
    k, b = keys[order], batch[order]
    new = np.ones(k.size, bool)
    new[1:] = (k[1:] != k[:-1]) | (b[1:] - b[:-1] > 1)
    run_sorted = np.cumsum(new) - 1
    run = np.empty(k.size, np.int64)
    run[order] = run_sorted
    size = np.bincount(run)
    return run, size[run] >= 2


def _adjacent_repeat_fraction(hkl_obs, batch) -> float:
    """Of the repeats of one observed hkl (neighbours in image order), the fraction exactly one image apart."""
    keys = symmetry.hkl_keys(np.asarray(hkl_obs, np.int64))
    batch = np.asarray(batch, np.int64)
    order = np.lexsort((batch, keys))
    k, b = keys[order], batch[order]
    same = k[1:] == k[:-1]
    return float(np.count_nonzero(same & (b[1:] - b[:-1] == 1)) / max(np.count_nonzero(same), 1))


def detect_partials(table: dict, hkl_obs, batch) -> PartialEvidence | None:
    """Partial rows of an unmerged table ({label: ``[n]``} as :func:`analysis.mtz_io.mtz_table` gives), or None.

    See the module docstring for the evidence and its order.
    """
    n = len(batch)
    if "M/ISYM" in table:
        m = np.floor(np.asarray(table["M/ISYM"], float) / 256.0) >= 1
        if m.any():
            return PartialEvidence(m, "M/ISYM", f"{m.sum()} of {n} rows have the partial flag M = 1 in M/ISYM")
    for col in ("FRACTIONCALC", "FRACTION_CALC"):
        if col in table:
            frac = np.asarray(table[col], float)
            p = np.isfinite(frac) & (frac < _FRACTION_FULL)
            if p.any():
                return PartialEvidence(p, col, f"{p.sum()} of {n} rows have {col} < {_FRACTION_FULL}")
    if "PARTIAL" in table:
        p = np.nan_to_num(np.asarray(table["PARTIAL"], float)) != 0
        if p.any():
            return PartialEvidence(p, "PARTIAL", f"{p.sum()} of {n} rows are flagged in PARTIAL")
    _, in_run = consecutive_runs(hkl_obs, batch)
    if n and in_run.mean() > RUN_FRACTION and _adjacent_repeat_fraction(hkl_obs, batch) > 0.5:
        desc = (
            f"{in_run.sum()} of {n} rows ({100 * in_run.mean():.0f}%) repeat the same hkl on consecutive images "
            f"(BATCH), the pattern of raw partials (full data: < {100 * RUN_FRACTION:.0f}%)"
        )
        return PartialEvidence(in_run, "BATCH", desc)
    return None


def sum_partials(hkl_obs, batch, intensity, sigma, metadata, partial):
    """Sum the partial rows of each same-hkl run on consecutive images into one row (module docstring).

    Args:
      hkl_obs: int ``[n, 3]``; batch: int ``[n]``; intensity, sigma: ``[n]``; metadata: ``[n, m]``;
      partial: bool ``[n]`` rows to sum (full rows are kept as they are).

    Returns:
      (hkl_obs, batch, intensity, sigma, metadata) of the summed table and the number of rows removed.
    """
    partial = np.asarray(partial, bool)
    full = np.flatnonzero(~partial)
    rows = np.flatnonzero(partial)
    run, _ = consecutive_runs(np.asarray(hkl_obs)[rows], np.asarray(batch)[rows])
    n_runs = int(run.max()) + 1 if run.size else 0
    i_p = np.asarray(intensity, float)[rows]
    i_sum = np.bincount(run, i_p, n_runs)
    var_sum = np.bincount(run, np.asarray(sigma, float)[rows] ** 2, n_runs)
    # representative row of each run: its largest part
    order = np.lexsort((-np.nan_to_num(i_p, nan=-np.inf), run))
    first = order[np.r_[True, run[order][1:] != run[order][:-1]]]
    rep = rows[first]
    keep = np.concatenate([full, rep])
    out_i = np.concatenate([np.asarray(intensity, float)[full], i_sum])
    out_s = np.concatenate([np.asarray(sigma, float)[full], np.sqrt(var_sum)])
    meta = np.asarray(metadata, float).reshape(len(batch), -1)
    return (
        np.asarray(hkl_obs)[keep],
        np.asarray(batch)[keep],
        out_i,
        out_s,
        meta[keep],
        int(rows.size - n_runs),
    )
