"""Merging statistics per resolution shell: the table AIMLESS/careless users read.

Shells hold equal numbers of merged unique reflections (Friedel mates counted once) in inv_d2 = 1/d² (Å⁻²).
Per shell, and overall:

* ``n_obs``: observations; ``n_unique``: unique reflections merged (Friedel mates together);
* ``n_possible``: unique reflections the cell and space group allow to d_min (gemmi, systematic absences left out);
  ``completeness`` = n_unique / n_possible (%); with anomalous data also ``anom_completeness``: acentric reflections
  with both Friedel mates measured / acentric reflections possible (%);
* ``multiplicity`` = n_obs / n_unique;
* ``mean_i_over_sigma``: ⟨I/σ(I)⟩ over the merged rows (each Friedel mate a row when anomalous);
* ``cc_half``: Pearson CC of the amplitudes merged from two random image halves (reflections seen in both);
* ``cc_anom``: Pearson CC of the halves' ΔF = F(+) − F(−) (Bijvoet pairs with both mates in both halves).

Every CC is :func:`analysis.merging.quality.cc_by_shell` / :func:`analysis.merging.quality.cc`, i.e.
:func:`analysis.stats.pearson_cc` (fewer than 3 pairs: NaN).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

import analysis.merging.quality as quality
from analysis import cell as cell_mod
from analysis import stats, symmetry
from analysis.merging.io import Unmerged, hkl_keys, in_asu
from dmd.base.io import atomic_path

__all__ = ["COLUMNS", "shell_table", "format_shell_table", "write_shell_csv"]

COLUMNS = (
    "d_low",
    "d_high",
    "n_obs",
    "n_unique",
    "n_possible",
    "completeness",
    "anom_completeness",
    "multiplicity",
    "mean_i_over_sigma",
    "cc_half",
    "cc_anom",
)


def _base_rows(unmerged: Unmerged):
    """(base index ``[n_refl, 3]`` — the (+) ASU index of each row —, unique id of each row ``[n_refl]``)."""
    hkl = np.asarray(unmerged.hkl, np.int64)
    if not unmerged.anomalous:
        return hkl, np.arange(hkl.shape[0])
    plus = in_asu(hkl, unmerged.spacegroup) | unmerged.centric
    base = np.where(plus[:, None], hkl, -hkl)
    _, uid = np.unique(hkl_keys(base), return_inverse=True)
    return base, uid.ravel()


def shell_table(
    unmerged: Unmerged,
    n_obs,
    intensity,
    sigma,
    *,
    halves=None,
    half_counts=None,
    n_shells: int = 10,
) -> dict:
    """Per-shell merging statistics (module docstring).

    Args:
      unmerged: the observation table; n_obs: int ``[n_refl]`` observations per row (rows with 0 are not merged).
      intensity, sigma: ``[n_refl]`` merged I and σ(I) (any common scale).
      halves: optional ``[2, n_refl]`` amplitudes of the two half-data-set merges; half_counts: ``[2, n_refl]``
        observations in each half.

    Returns:
      {"columns": COLUMNS, "shells": [row dict per shell, low → high resolution], "overall": row dict}.
    """
    n_obs = np.asarray(n_obs)
    seen = n_obs > 0
    base, uid = _base_rows(unmerged)
    x = np.asarray(unmerged.inv_d2, float)
    n_u = int(uid.max()) + 1 if uid.size else 0
    u_seen = np.bincount(uid[seen], minlength=n_u) > 0
    u_x = np.zeros(n_u)
    u_x[uid] = x
    n_sh = int(max(1, min(n_shells, np.count_nonzero(u_seen))))
    edges = stats.shell_edges(u_x[u_seen], n_sh)
    d_min = 1.0 / np.sqrt(u_x[u_seen].max())
    group = symmetry.spacegroup(unmerged.spacegroup)
    possible = symmetry.generate_hkl(unmerged.cell, d_min * (1 - 1e-9), group, unique=True)
    p_x = cell_mod.inv_d2(possible.astype(float), np.asarray(unmerged.cell, float))
    in_range = p_x <= edges[-1]
    p_sh = stats.shell_index(p_x[in_range], edges)
    p_acentric = ~symmetry.centric_flags(possible[in_range], group)

    row_sh = stats.shell_index(x, edges)
    u_sh = stats.shell_index(u_x, edges)
    ratio = np.where(seen, np.asarray(intensity, float) / np.asarray(sigma, float), 0.0)
    paired = np.zeros(seen.shape, bool)  # (+) rows whose (−) mate was measured too
    if unmerged.anomalous:
        plus, minus = quality.friedel_pairs(unmerged.hkl, unmerged.spacegroup)
        paired[plus[seen[plus] & seen[minus]]] = True

    def tally(sel_rows, sel_u, sel_p, p_acen):
        n_unique = int(np.count_nonzero(sel_u & u_seen))
        n_possible = int(np.count_nonzero(sel_p))
        rows = sel_rows & seen
        out = {
            "n_obs": int(n_obs[sel_rows].sum()),
            "n_unique": n_unique,
            "n_possible": n_possible,
            "completeness": 100.0 * n_unique / n_possible if n_possible else float("nan"),
            "anom_completeness": float("nan"),
            "multiplicity": float(n_obs[sel_rows].sum() / n_unique) if n_unique else float("nan"),
            "mean_i_over_sigma": float(ratio[rows].mean()) if rows.any() else float("nan"),
        }
        if unmerged.anomalous:
            pairs = np.count_nonzero(sel_rows & paired)
            n_acen = int(np.count_nonzero(p_acen))
            out["anom_completeness"] = 100.0 * pairs / n_acen if n_acen else float("nan")
        return out

    rows = []
    for s in range(n_sh):
        r = tally(row_sh == s, u_sh == s, p_sh == s, p_acentric & (p_sh == s))
        d_lo = 1.0 / np.sqrt(max(edges[s], 1e-12))
        r = {"d_low": float(min(d_lo, 999.0)), "d_high": float(1.0 / np.sqrt(edges[s + 1])), **r}
        rows.append(r)
    overall = tally(np.ones_like(seen), np.ones(n_u, bool), np.ones(p_sh.size, bool), p_acentric)
    overall = {"d_low": rows[0]["d_low"], "d_high": rows[-1]["d_high"], **overall}

    cc_half = cc_anom = (np.full(n_sh, np.nan), float("nan"))
    if halves is not None:
        h = np.asarray(halves, float)
        both = seen & (np.asarray(half_counts) > 0).all(axis=0) if half_counts is not None else seen
        cc_half = (quality.cc_by_shell(h[0], h[1], row_sh, n_sh, both), quality.cc(h[0], h[1], both))
        if unmerged.anomalous:
            plus, minus = quality.friedel_pairs(unmerged.hkl, unmerged.spacegroup)
            m = both[plus] & both[minus]
            da, db = h[0, plus] - h[0, minus], h[1, plus] - h[1, minus]
            cc_anom = (quality.cc_by_shell(da, db, row_sh[plus], n_sh, m), quality.cc(da, db, m))
    for s, r in enumerate(rows):
        r["cc_half"] = float(cc_half[0][s])
        r["cc_anom"] = float(cc_anom[0][s])
    overall["cc_half"], overall["cc_anom"] = float(cc_half[1]), float(cc_anom[1])
    return {"columns": list(COLUMNS), "shells": rows, "overall": overall}


_FORMATS = {
    "d_low": ("d_low", "{:7.2f}"),
    "d_high": ("d_high", "{:7.2f}"),
    "n_obs": ("N_obs", "{:8d}"),
    "n_unique": ("N_uniq", "{:7d}"),
    "n_possible": ("N_poss", "{:7d}"),
    "completeness": ("Compl%", "{:7.1f}"),
    "anom_completeness": ("AnCmp%", "{:7.1f}"),
    "multiplicity": ("Mult", "{:6.2f}"),
    "mean_i_over_sigma": ("<I/sI>", "{:7.2f}"),
    "cc_half": ("CC1/2", "{:7.3f}"),
    "cc_anom": ("CCanom", "{:7.3f}"),
}


def format_shell_table(table: dict) -> str:
    """The table as fixed-width text (one line per shell, then 'overall'); columns that are all NaN left out."""
    rows = [*table["shells"], table["overall"]]
    cols = [c for c in COLUMNS if any(np.isfinite(float(r[c])) for r in rows)]
    widths = [len(_FORMATS[c][1].format(1)) for c in cols]
    head = " ".join(f"{_FORMATS[c][0]:>{w}}" for c, w in zip(cols, widths, strict=True))
    lines = [head]
    for i, r in enumerate(rows):
        cells = []
        for c, w in zip(cols, widths, strict=True):
            v = r[c]
            cells.append(f"{'-':>{w}}" if not np.isfinite(float(v)) else _FORMATS[c][1].format(v))
        lines.append(" ".join(cells) + ("   overall" if i == len(rows) - 1 else ""))
    return "\n".join(lines)


def write_shell_csv(path: str | os.PathLike, table: dict, inputs=()) -> Path:
    """Write the table as CSV (header: :data:`COLUMNS` plus ``shell``; last row ``overall``), atomically."""
    with atomic_path(path, inputs) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["shell", *COLUMNS])
        for i, r in enumerate(table["shells"]):
            w.writerow([i + 1, *[r[c] for c in COLUMNS]])
        w.writerow(["overall", *[table["overall"][c] for c in COLUMNS]])
    return Path(path)
