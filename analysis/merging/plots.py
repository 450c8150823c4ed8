"""Figures of a merge (through :mod:`dmd.base.plotting`): statistics per resolution shell and the Friedel mates.

* :func:`plot_shells`: completeness (and anomalous completeness), multiplicity, ⟨I/σ(I)⟩, CC1/2 and CCanom per
  resolution shell, from the table of :func:`analysis.merging.shells.shell_table`, against the shell's mid 1/d²
  (Å⁻²) with d (Å) on the top axis.
* :func:`plot_friedel`: I(−) against I(+) for every Bijvoet pair (the merged MTZ's absolute scale) and the
  histogram of ΔI/σ(ΔI) = (I(+) − I(−))/sqrt(σ(+)² + σ(−)²) against N(0, 1): an anomalous signal widens it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmd.base.plotting import new_figure, save_figure

__all__ = ["plot_shells", "plot_friedel"]


def _mid_inv_d2(rows):
    return np.array([0.5 * (1.0 / r["d_low"] ** 2 + 1.0 / r["d_high"] ** 2) for r in rows])


def _d_of_inv_d2(v):
    """d (Å) of 1/d² (Å⁻²), and back (the map is its own inverse); finite at 0."""
    return 1.0 / np.sqrt(np.maximum(np.asarray(v, float), 1e-6))


def plot_shells(table: dict, path: str | os.PathLike, inputs=(), title: str = "merge") -> Path:
    """PNG of the per-shell table (see module docstring); ``table`` as :func:`shell_table` returns it."""
    rows = table["shells"]
    x = _mid_inv_d2(rows)
    col = lambda k: np.array([r.get(k, np.nan) for r in rows], float)  # noqa: E731
    fig, axes = new_figure(1, 3, figsize=(15, 4.0), layout="constrained")
    ax = axes[0]
    lines = ax.plot(x, col("completeness"), "o-", color="C0", label="completeness")
    if np.any(np.isfinite(col("anom_completeness"))):
        lines += ax.plot(x, col("anom_completeness"), "s--", color="C0", label="anomalous completeness")
    ax.set_ylabel("completeness (%)")
    ax.set_ylim(0, 105)
    ax2 = ax.twinx()
    lines += ax2.plot(x, col("multiplicity"), "^-", color="C1", label="multiplicity (right axis)")
    ax2.set_ylabel("multiplicity (obs. per unique reflection)")
    ax2.set_ylim(0, None)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize="small", loc="lower left")
    axes[1].plot(x, col("mean_i_over_sigma"), "o-", color="C2")
    axes[1].set_ylabel("⟨I/σ(I)⟩ of the merged reflections")
    axes[1].set_ylim(0, None)
    for key, label, fmt in (("cc_half", "CC1/2", "o-"), ("cc_anom", "CCanom", "s-")):
        y = col(key)
        if np.any(np.isfinite(y)):
            axes[2].plot(x, y, fmt, label=label)
    axes[2].axhline(0.0, color="0.6", lw=0.8)
    axes[2].set_ylim(min(-0.1, np.nanmin(np.r_[col("cc_anom"), 0.0]) - 0.05), 1.02)
    axes[2].set_ylabel("CC (Pearson, dimensionless)")
    if axes[2].lines[1:]:
        axes[2].legend(fontsize="small")
    else:
        axes[2].text(0.5, 0.5, "no half-dataset refits\n(--half-datasets)", ha="center", transform=axes[2].transAxes)
    for a in axes:
        a.set_xlim(axes[0].get_xlim())  # one resolution range (an empty CC panel would otherwise span 0–1)
        a.set_xlabel("1/d² (Å⁻², shell middle)")
        top = a.secondary_xaxis("top", functions=(_d_of_inv_d2, _d_of_inv_d2))  # d = 1/sqrt(1/d²) is self-inverse
        top.set_xlabel("d (Å)")
    fig.suptitle(f"{title}: statistics per resolution shell")
    return save_figure(fig, path, inputs)


def plot_friedel(cols: dict, path: str | os.PathLike, inputs=(), title: str = "merge") -> Path:
    """PNG of the Bijvoet pairs of an anomalous merge (see module docstring).

    Args:
      cols: {label: (MTZ type, values)} with I(+), SIGI(+), I(−), SIGI(−) (as
        :func:`analysis.merging.pipeline.merged_columns` returns them); NaN marks a missing mate.
    """
    ip, sp = cols["I(+)"][1], cols["SIGI(+)"][1]
    im, sm = cols["I(-)"][1], cols["SIGI(-)"][1]
    both = np.isfinite(ip) & np.isfinite(im) & np.isfinite(sp) & np.isfinite(sm)
    fig, axes = new_figure(1, 2, figsize=(11, 4.4), layout="constrained")
    ax = axes[0]
    if both.sum() >= 3:
        cc = np.corrcoef(ip[both], im[both])[0, 1]
        ax.scatter(ip[both], im[both], s=3, alpha=0.4, color="C0", rasterized=True)
        lo, hi = np.percentile(np.r_[ip[both], im[both]], [0.1, 99.9])
        ax.plot([lo, hi], [lo, hi], color="C3", lw=1, label="I(−) = I(+)")
        ax.set_xscale("symlog", linthresh=max(np.median(sp[both]), 1e-6))
        ax.set_yscale("symlog", linthresh=max(np.median(sm[both]), 1e-6))
        ax.legend(fontsize="small", loc="upper left")
        ax.set_title(f"{both.sum()} Bijvoet pairs, CC(I(+), I(−)) {cc:.3f}", fontsize="medium")
        z = (ip[both] - im[both]) / np.sqrt(sp[both] ** 2 + sm[both] ** 2)
        zc = np.clip(z, -6, 6)
        axes[1].hist(zc, bins=60, range=(-6, 6), density=True, color="C0", alpha=0.7, label="ΔI/σ(ΔI)")
        g = np.linspace(-6, 6, 241)
        axes[1].plot(g, np.exp(-0.5 * g**2) / np.sqrt(2 * np.pi), color="C3", label="N(0, 1): no anomalous signal")
        axes[1].set_title(f"sd of ΔI/σ(ΔI) {np.std(z):.2f} (1: noise only)", fontsize="medium")
        axes[1].legend(fontsize="small", loc="upper left")
    else:
        ax.text(0.5, 0.5, "fewer than 3 Bijvoet pairs", ha="center", transform=ax.transAxes)
    ax.set_xlabel("I(+) (absolute scale, symlog)")
    ax.set_ylabel("I(−) (absolute scale, symlog)")
    axes[1].set_xlabel("ΔI/σ(ΔI) = (I(+) − I(−)) / sqrt(σ(+)² + σ(−)²)  (clipped at ±6)")
    axes[1].set_ylabel("density")
    fig.suptitle(f"{title}: Friedel mates")
    return save_figure(fig, path, inputs)
