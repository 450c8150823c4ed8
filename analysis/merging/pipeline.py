"""End-to-end merging: fit, quality statistics, merged MTZ, JSON summary and plots.

``merge`` runs the VI fit (``fit.fit``), the optional half-dataset refits (CC1/2, CCanom), CCpred on
held-out observations and, when the truth is known (synthetic data), CC with the true amplitudes.
``write_outputs`` writes ``OUT.mtz``, ``OUT.json`` (the per-shell table of :mod:`analysis.merging.shells` under
``quality.shells``), ``OUT_shells.csv`` and ``OUT_loss.png`` / ``OUT_cc.png`` / ``OUT_shells.png`` (and, anomalous,
``OUT_friedel.png``: :mod:`analysis.merging.plots`) atomically; with ``half_datasets`` also ``OUT_half1.mtz`` and
``OUT_half2.mtz``, the two half-dataset merges (normalized scale, N = observations in that half; the role of
careless's ``_xval`` files), so that CC1/2 can be computed outside dmd the same way for any merging program.
The fit's amplitudes are on the scale of the Wilson prior (flat Σ = 1: normalized, ⟨F²⟩ = ε); the MTZ carries them
as E, SIGE and, on the absolute (Wilson) scale of :mod:`analysis.merging.wilson`, F, SIGF, I, SIGI (careless's names).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np

import analysis.merging.quality as quality
from analysis.merging.fit import FitResult, fit, fit_half_datasets, posterior_summary
from analysis.merging.io import Unmerged, hkl_keys, in_asu, write_merged
from analysis.merging.likelihoods import error_model_values
from analysis.merging.model import MergeConfig, predict_intensity
from analysis.merging.plots import plot_friedel, plot_shells
from analysis.merging.priors import wilson_variance
from analysis.merging.scaling import log_scale
from analysis.merging.shells import shell_table, write_shell_csv
from analysis.merging.wilson import protein_sigma_n, smooth_log_scale, to_absolute
from dmd.base.plotting import new_figure, save_figure

__all__ = ["MergeOutput", "merge", "absolute_scale", "merged_columns", "plot_loss", "plot_cc", "write_outputs"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MergeOutput:
    """Result of :func:`merge`: the fit, per-reflection posterior summary (normalized scale, plus E and SIGE),
    multiplicity, quality stats, the absolute-scale {"F", "SIGF", "I", "SIGI"} and the Wilson fit."""

    result: FitResult
    posterior: dict
    n_obs: np.ndarray
    quality: dict
    timings: dict
    absolute: dict | None = None
    wilson: dict | None = None
    halves: tuple | None = None  # ([2] posterior summaries, counts int [2, n_refl]) with half_datasets


def _ccpred_by_shell(res: FitResult, n_shells: int) -> dict | None:
    w = np.asarray(res.data.weight)
    hold = np.flatnonzero(w == 0)
    if hold.size < 3:
        return None
    i_pred = res.i_pred if res.i_pred is not None else predict_intensity(res.params, res.config, res.data)
    pred = np.asarray(i_pred, float)[hold]
    obs = np.asarray(res.data.intensity, float)[hold]
    inv_d2 = np.asarray(res.data.inv_d2, float)[hold]
    _, idx, d_range = quality.shells(inv_d2, n_shells)
    return {
        "overall": quality.cc(pred, obs),
        "per_shell": quality.cc_by_shell(pred, obs, idx, n_shells),
        "d_range": d_range,
        "n_obs": int(hold.size),
    }


def merge(
    unmerged: Unmerged,
    config: MergeConfig = MergeConfig(),
    *,
    half_datasets: bool = False,
    half_steps: int | None = None,
    n_shells: int = 10,
    f_true: np.ndarray | None = None,
    sigma_n: np.ndarray | None = None,
    progress: bool = False,
) -> MergeOutput:
    """Scale and merge ``unmerged``; see the module docstring.

    Args:
      half_datasets: also refit on two random image halves (scale frozen) for CC1/2 (and CCanom).
      f_true: optional ``[n_refl]`` true amplitudes (synthetic data) for CC(true).
      sigma_n: optional ``[n_refl]`` expected intensity Σ_N of the cell contents (electrons²) for the absolute
        scale; default :func:`analysis.merging.wilson.protein_sigma_n` (a protein at 50 % solvent).
    """
    t0 = time.perf_counter()
    res = fit(unmerged, config, progress=progress)
    timings = {"fit_s": res.wall_time_s}
    post = posterior_summary(res.params, config)
    absolute, normalized, wilson = absolute_scale(res, post, sigma_n)
    post.update(normalized)
    # multiplicity of every input observation: held-out rows scored CCpred and were then merged (fit's closing pass)
    n_obs = np.bincount(unmerged.refl, minlength=unmerged.n_refl)
    q: dict = {
        "n_obs": unmerged.n_obs,
        "n_refl": unmerged.n_refl,
        "n_images": unmerged.n_images,
        "rejected": unmerged.rejected,
        "mean_multiplicity": float(n_obs.mean()),
    }
    q["ccpred"] = _ccpred_by_shell(res, n_shells)
    if res.likelihood_choice is not None:
        q["likelihood_choice"] = res.likelihood_choice
    if "error" in res.params:
        q["error_model"] = error_model_values(res.params["error"])
    halves = counts = None
    if half_datasets:
        t1 = time.perf_counter()
        halves, counts = fit_half_datasets(res, steps=half_steps, seed=config.seed, progress=progress)
        timings["half_datasets_s"] = time.perf_counter() - t1
        q["cchalf"] = quality.cc_half(halves[0]["F"], halves[1]["F"], unmerged.inv_d2, counts, n_shells)
        if unmerged.anomalous:
            q["ccanom_half"] = quality.cc_anom(
                [halves[0]["F"], halves[1]["F"]],
                unmerged.hkl,
                unmerged.spacegroup,
                unmerged.inv_d2,
                counts=counts,
                n_shells=n_shells,
            )
    if f_true is not None:
        seen = n_obs > 0
        q["cc_true"] = quality.cc_truth(post["F"], f_true, unmerged.inv_d2, n_shells, mask=seen)
        if unmerged.anomalous:
            q["ccanom_true"] = quality.cc_anom(
                [post["F"], None], unmerged.hkl, unmerged.spacegroup, unmerged.inv_d2, f_ref=f_true, n_shells=n_shells
            )
    q["shells"] = shell_table(
        unmerged,
        n_obs,
        post["I"],
        post["SIGI"],
        halves=None if halves is None else [halves[0]["F"], halves[1]["F"]],
        half_counts=counts,
        n_shells=n_shells,
    )
    timings["total_s"] = time.perf_counter() - t0
    return MergeOutput(res, post, n_obs, q, timings, absolute, wilson, None if halves is None else (halves, counts))


def absolute_scale(res: FitResult, posterior: dict, sigma_n=None):
    """(absolute {"F", "SIGF", "I", "SIGI"}, normalized {"E", "SIGE"}, Wilson fit dict) of a fit
    (:func:`analysis.merging.wilson.to_absolute`; the smooth data scale from every observation's fitted ln s).
    Without a Wilson plot (too few reflections) the absolute dict is None and the fit dict says why."""
    u = res.unmerged
    d = res.data
    log_s = np.asarray(log_scale(res.params["scale"], d.meta, d.image, d.inv_d2), float)
    smooth = smooth_log_scale(log_s, np.asarray(d.inv_d2, float))
    label = "protein, 50% solvent (V_M 2.4 A^3/Da)" if sigma_n is None else "given"
    sigma_n = protein_sigma_n(u.inv_d2, u.cell) if sigma_n is None else np.broadcast_to(sigma_n, u.inv_d2.shape)
    prior_var = np.asarray(wilson_variance(u.epsilon.astype(float), u.inv_d2, res.config.wilson_b), float)
    seen = np.bincount(u.refl, minlength=u.n_refl) > 0
    posterior_seen = {k: np.where(seen, posterior[k], np.nan) for k in ("F", "SIGF", "I", "SIGI")}
    try:
        absolute, normalized, wf = to_absolute(posterior_seen, u.inv_d2, u.epsilon, prior_var, smooth, sigma_n)
    except ValueError as err:  # too few reflections for a Wilson plot: F, I stay on the normalized scale
        log.warning("no absolute scale (%s); F, SIGF, I, SIGI are written on the normalized scale", err)
        root = np.sqrt(prior_var)
        return None, {"E": posterior["F"] / root, "SIGE": posterior["SIGF"] / root}, {"failed": str(err)}
    info = wf.as_dict()
    info["smooth_log_scale"] = {"c": smooth[0], "g_A2": smooth[1]}
    info["sigma_n"] = label
    return absolute, normalized, info


def merged_columns(unmerged: Unmerged, posterior: dict, n_obs: np.ndarray, absolute: dict | None = None):
    """(hkl ``[m, 3]`` in the ASU, {label: (MTZ type, values)}) for the merged MTZ.

    Non-anomalous: F, SIGF, I, SIGI, N (+ E, SIGE when ``posterior`` has them). Anomalous: additionally F(+),
    SIGF(+), F(−), SIGF(−), I(±), SIGI(±), N(±), with the mean columns combining the available mates (NaN where a
    mate is missing). F, SIGF, I, SIGI are taken from ``absolute`` (Wilson-scaled, :func:`absolute_scale`) when
    given, else from ``posterior`` (the prior's normalized scale); E, SIGE always from ``posterior``.
    """
    vals = posterior if absolute is None else absolute
    f, sf, i, si = vals["F"], vals["SIGF"], vals["I"], vals["SIGI"]
    has_e = "E" in posterior
    seen = n_obs > 0
    if not unmerged.anomalous:
        hkl = unmerged.hkl[seen]
        cols = {
            "F": ("F", f[seen]),
            "SIGF": ("Q", sf[seen]),
            "I": ("J", i[seen]),
            "SIGI": ("Q", si[seen]),
            "N": ("I", n_obs[seen].astype(float)),
        }
        if has_e:
            cols.update({"E": ("E", posterior["E"][seen]), "SIGE": ("Q", posterior["SIGE"][seen])})
        return hkl, cols
    hkl_all = unmerged.hkl
    is_plus = in_asu(hkl_all, unmerged.spacegroup) | unmerged.centric
    base = np.where(is_plus[:, None], hkl_all, -hkl_all)
    keys = hkl_keys(base)
    use = seen
    uk, row = np.unique(keys[use], return_inverse=True)
    m = uk.size
    hkl = np.zeros((m, 3), np.int32)
    hkl[row] = base[use]
    out = {}
    for sign, label in ((True, "+"), (False, "-")):
        sel = use & (is_plus == sign)
        r = row[np.flatnonzero(sel[use])]
        named = [("F", f), ("SIGF", sf), ("I", i), ("SIGI", si), ("N", n_obs.astype(float))]
        if has_e:
            named += [("E", posterior["E"]), ("SIGE", posterior["SIGE"])]
        for name, arr in named:
            col = np.full(m, np.nan)
            col[r] = arr[sel]
            out[f"{name}({label})"] = col
    n_p = np.nan_to_num(out["N(+)"])
    n_m = np.nan_to_num(out["N(-)"])
    both = np.isfinite(out["F(+)"]) & np.isfinite(out["F(-)"])

    def mean_of(a, b):
        return np.where(both, 0.5 * (np.nan_to_num(a) + np.nan_to_num(b)), np.where(np.isfinite(a), a, b))

    def sd_of(a, b):
        return np.where(
            both, 0.5 * np.sqrt(np.nan_to_num(a) ** 2 + np.nan_to_num(b) ** 2), np.where(np.isfinite(a), a, b)
        )

    cols = {
        "F": ("F", mean_of(out["F(+)"], out["F(-)"])),
        "SIGF": ("Q", sd_of(out["SIGF(+)"], out["SIGF(-)"])),
        "I": ("J", mean_of(out["I(+)"], out["I(-)"])),
        "SIGI": ("Q", sd_of(out["SIGI(+)"], out["SIGI(-)"])),
        "N": ("I", n_p + n_m),
        "F(+)": ("G", out["F(+)"]),
        "SIGF(+)": ("L", out["SIGF(+)"]),
        "F(-)": ("G", out["F(-)"]),
        "SIGF(-)": ("L", out["SIGF(-)"]),
        "I(+)": ("K", out["I(+)"]),
        "SIGI(+)": ("M", out["SIGI(+)"]),
        "I(-)": ("K", out["I(-)"]),
        "SIGI(-)": ("M", out["SIGI(-)"]),
        "N(+)": ("I", n_p),
        "N(-)": ("I", n_m),
    }
    if has_e:
        cols["E"] = ("E", mean_of(out["E(+)"], out["E(-)"]))
        cols["SIGE"] = ("Q", sd_of(out["SIGE(+)"], out["SIGE(-)"]))
    return hkl, cols


def plot_loss(history: dict, path, inputs=()) -> Path:
    """PNG of the optimization: −ELBO, its NLL and KL parts (per training observation, nats) and, on a right-hand
    axis, CCpred on the held-out observations, against the optimizer step; one legend for all curves."""
    fig, ax = new_figure(figsize=(6, 4))
    step = np.asarray(history["step"])
    lines = ax.plot(step, history["loss"], color="C0", label="−ELBO (loss)")
    lines += ax.plot(step, history["nll"], color="C0", ls="--", label="NLL part")
    lines += ax.plot(step, history["kl"], color="C0", ls=":", label="KL part")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("per training observation (nats)")
    if np.any(np.isfinite(history["ccpred"])):
        ax2 = ax.twinx()
        lines += ax2.plot(step, history["ccpred"], color="C3", marker=".", label="CCpred (held out, right axis)")
        ax2.set_ylabel("CCpred (Pearson, dimensionless)")
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize="small")
    ax.set_title("merge: −ELBO and held-out CCpred per step")
    return save_figure(fig, path, inputs)


def plot_cc(quality_stats: dict, path, inputs=()) -> Path:
    """PNG of CC1/2, CC(true), CCpred and CCanom per resolution shell against the shell's mid 1/d² (Å⁻²)."""
    fig, ax = new_figure(figsize=(5, 3.5))
    for key, label in (("cchalf", "CC1/2"), ("cc_true", "CC(true)"), ("ccpred", "CCpred"), ("ccanom_half", "CCanom")):
        stat = quality_stats.get(key)
        if stat is None:
            continue
        inv_d2_mid = 0.5 * np.sum(1.0 / np.asarray(stat["d_range"], float) ** 2, axis=1)
        ax.plot(inv_d2_mid, stat["per_shell"], marker="o", label=label)
    ax.set_xlabel("1/d² (Å⁻²)")
    ax.set_ylabel("CC (Pearson, dimensionless)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    if ax.lines:
        ax.legend()
    ax.set_title("merge: CC per resolution shell")
    return save_figure(fig, path, inputs)


def write_outputs(out_mtz: str | os.PathLike, out: MergeOutput, *, inputs=(), extra: dict | None = None) -> dict:
    """Write the merged MTZ, ``<stem>.json``, ``<stem>_shells.csv`` and the PNGs (module docstring); returns paths."""
    from dmd.base.io import write_json

    out_mtz = Path(out_mtz)
    u = out.result.unmerged
    hkl, cols = merged_columns(u, out.posterior, out.n_obs, out.absolute)
    write_merged(out_mtz, hkl, u.cell, u.spacegroup, cols, inputs=inputs, wavelength=u.wavelength or 1.0)
    stem = out_mtz.with_suffix("")
    paths = {
        "mtz": out_mtz,
        "json": Path(f"{stem}.json"),
        "loss_png": Path(f"{stem}_loss.png"),
        "cc_png": Path(f"{stem}_cc.png"),
        "shells_csv": Path(f"{stem}_shells.csv"),
        "shells_png": Path(f"{stem}_shells.png"),
    }
    if u.anomalous:
        paths["friedel_png"] = Path(f"{stem}_friedel.png")
    if out.halves is not None:  # the two half-dataset merges (normalized scale), for CC1/2 computed elsewhere
        for i, (post_i, n_i) in enumerate(zip(*out.halves, strict=True)):
            paths[f"half{i + 1}_mtz"] = Path(f"{stem}_half{i + 1}.mtz")
            h_i, c_i = merged_columns(u, post_i, n_i)
            write_merged(
                paths[f"half{i + 1}_mtz"], h_i, u.cell, u.spacegroup, c_i, inputs=inputs, wavelength=u.wavelength or 1.0
            )
    summary = {
        "config": dataclasses.asdict(out.result.config),
        "spacegroup": u.spacegroup,
        "cell": u.cell,
        "anomalous": u.anomalous,
        "metadata": list(u.metadata_names),
        "quality": out.quality,
        "wilson": out.wilson,
        "timings_s": out.timings,
        "history": out.result.history,
        "n_merged_rows": int(hkl.shape[0]),
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    if extra:
        summary.update(extra)
    write_json(paths["json"], summary, inputs=inputs)
    write_shell_csv(paths["shells_csv"], out.quality["shells"], inputs)
    plot_loss(out.result.history, paths["loss_png"], inputs)
    plot_cc(out.quality, paths["cc_png"], inputs)
    plot_shells(out.quality["shells"], paths["shells_png"], inputs, title=out_mtz.name)
    if u.anomalous:
        plot_friedel(cols, paths["friedel_png"], inputs, title=out_mtz.name)
    return paths
