"""Outputs of a reweighting run: weights.csv, summary.json, reweighted.mtz and PNG plots (atomic writes)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from fitting.reweight.data_map import DataOnBox
from fitting.reweight.problem import predict

__all__ = ["write_outputs"]


def _plot_weights(path, result, summary, inputs) -> None:
    """Frame weights relative to uniform (1 = the unweighted ensemble), ours and the baselines' in separate panels.

    The greedy and sigmoid baselines can put most of the weight on a few frames; on a shared axis they hid the
    softmax weights, so each gets its own panel on a log scale.
    """
    from dmd.base.plotting import new_figure, save_figure

    w = np.asarray(result.weights, float)
    n = len(w)
    base = {k: np.asarray(v, float) for k, v in result.baselines_weights.items() if k in ("greedy", "sigmoid")}
    fig, axes = new_figure(1 + bool(base), 1, figsize=(7, 3.2 * (1 + bool(base))), squeeze=False, sharex=True)
    frames = np.arange(n)
    floor = 1e-3  # a frame at < 1/1000 of uniform weight is drawn at the floor

    def rel(x):
        return np.maximum(n * x / np.sum(x), floor)

    ax = axes[0, 0]
    ax.semilogy(frames, rel(w), lw=1, label="reweighted (softmax)")
    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="uniform (unweighted MD)")
    ax.set_ylabel("weight × n_frames")
    ax.set_title(
        f"N_eff = {summary['n_eff']:.1f} of {n} frames; KL strength θ = {summary['theta']:.3g} "
        "(chosen by cross-validation)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    if base:
        ax = axes[1, 0]
        for name, bw in base.items():
            ax.semilogy(frames, rel(bw), lw=0.8, alpha=0.8, label=f"{name} baseline")
        ax.axhline(1.0, color="k", ls="--", lw=0.8, label="uniform")
        ax.set_ylabel("weight × n_frames")
        ax.set_title("baselines, for comparison (weights below 1e-3 × uniform drawn at 1e-3)", fontsize=9)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    save_figure(fig, path, inputs, dpi=120)


def _plot_convergence(path, result, summary, inputs) -> None:
    from dmd.base.plotting import new_figure, save_figure

    fig, (ax1, ax2) = new_figure(1, 2, figsize=(9, 3.5))
    ax1.plot(np.arange(1, len(result.history["cc"]) + 1), result.history["cc"], lw=1, label="reweighted")
    ax1.axhline(summary["baselines"]["uniform"]["cc_train"], color="k", ls="--", lw=0.8, label="uniform weights")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("CC(predicted, data), training voxels")
    ax1.set_title("fit at the chosen θ", fontsize=9)
    ax1.legend(fontsize=8)
    th = np.asarray(result.cv["theta_grid"], float)
    ax2.semilogx(
        np.where(th > 0, th, th[th > 0].min() / 10 if np.any(th > 0) else 1e-6),
        result.cv["mean_heldout_score"],
        "o-",
        label="mean over folds",
    )
    ax2.axvline(max(summary["theta"], 1e-12), color="r", lw=0.8, label=f"chosen θ = {summary['theta']:.3g}")
    ax2.set_xlabel("KL strength θ (θ = 0 drawn at the left)")
    ax2.set_ylabel("held-out score")
    ax2.set_title("cross-validation", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, inputs, dpi=120)


def write_outputs(
    out_dir, result, problem, dob: DataOnBox, folds, config, summary, *, inputs=(), spacegroup=None, supercell=(1, 1, 1)
) -> None:
    """weights.csv (frame weights), summary.json, reweighted.mtz and PNG plots (atomic writes).

    Args:
      result: :class:`fitting.reweight.ReweightResult`; problem: the :class:`fitting.reweight.Problem` fitted;
      dob: the data mapped on the box (:func:`fitting.reweight.check_and_map`); folds: int ``[n_data]``;
      config: the :class:`fitting.reweight.ReweightConfig`; inputs: files no output may overwrite.
      spacegroup: the crystal's space group: adds ICALC_SYM, IOBS_SYM (orbit means) to reweighted.mtz, writes
        reweighted_asu.mtz (one voxel per orbit, gemmi's ASU) and ``summary["symmetry"]`` (total and anisotropic
        CC per shell; :func:`fitting.reweight.symmetry_report.symmetry_report`). supercell: cells per box edge
        (the symmetry acts on box indices of a supercell when the data are indexed on the box lattice).
    """
    from analysis.mtz_io import write_mtz
    from dmd.base.io import atomic_path, write_json
    from dmd.distributed import is_writer
    from fitting import objectives

    # every process takes part in this sharded prediction (a collective); then only process 0 writes
    x_uniform = np.asarray(predict(problem, np.full(len(result.weights), 1.0 / len(result.weights))))
    if not is_writer():  # a multi-process run (dmd.distributed)
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = [p for p in inputs if isinstance(p, (str, os.PathLike))]
    w = result.weights
    with atomic_path(out / "weights.csv", inputs) as tmp:
        with open(tmp, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["frame", "weight"])
            for i, wi in enumerate(w):
                wr.writerow([i, f"{wi:.8g}"])
    y = np.asarray(dob.y)
    train = np.asarray(folds) != config.test_fold

    def scaled(x):
        a, b = objectives.fit_scale_offset(np.asarray(x, float), y, train.astype(float))
        return float(a) * np.asarray(x, float) + float(b)

    calc = scaled(result.x)
    cols = {"IOBS": y, "ICALC": calc, "ICALC_UNIFORM": scaled(x_uniform), "TEST": (~train).astype(float)}
    history = ["dmd reweight: ICALC = a*x'(w)+b, scale/offset fitted on training voxels; TEST=1 held out"]
    if spacegroup is not None:
        from fitting.reweight.symmetry_report import symmetry_report

        on_box = dob.checks.get("mtz_indexed_on") == "box lattice"
        sym_cols, asu, summary["symmetry"] = symmetry_report(
            dob.hkl_data, calc, y, dob.inv_d2, spacegroup, supercell=supercell if on_box else (1, 1, 1)
        )
        cols.update(sym_cols)
        history.append(f"ICALC_SYM, IOBS_SYM: means over the {summary['symmetry']['spacegroup']} orbit of each voxel")
        hm = summary["symmetry"]["spacegroup"]
        note = f"dmd reweight --spacegroup: orbit means on gemmi's ASU of {hm}; {dob.checks.get('mtz_indexed_on')}"
        write_mtz(out / "reweighted_asu.mtz", asu["hkl"], {k: asu[k] for k in ("IOBS", "ICALC")}, dob.mtz_cell, hm,
                  inputs=inputs, history=[note])  # fmt: skip
    write_mtz(out / "reweighted.mtz", dob.hkl_data, cols, dob.mtz_cell, dob.spacegroup,
              column_types={"TEST": "I"}, history=history, inputs=inputs)  # fmt: skip
    write_json(out / "summary.json", summary, inputs)
    _plot_weights(out / "weights_vs_frame.png", result, summary, inputs)
    _plot_convergence(out / "cc_vs_iteration.png", result, summary, inputs)
