"""Force-field fitting: checkpoints, outputs and plots of a fit (written atomically)."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.io import atomic_path, write_json
from dmd.base.plotting import save_figure

__all__ = ["save_checkpoint", "load_checkpoint", "write_outputs", "plot_history", "averaged_theta", "route_advice"]


def averaged_theta(history, n_last):
    """Iterate (Polyak-Ruppert) average of θ over the last ``n_last`` good rounds, with its standard error.

    Args:
      history: the fit's rows (dicts with ``status`` and ``theta``: the θ each round sampled at).
      n_last: rounds averaged (≤ 0: none).

    Returns:
      ``(mean, stderr, n)``: dicts by parameter label (θ's unit) and the rounds used; ``(None, None, 0)`` when
      nothing is averaged. ``stderr`` is sd/√n inflated by √((1 + ρ)/(1 − ρ)): consecutive iterates of a
      stochastic-gradient fit are correlated (each round starts from the last θ), and sd/√n alone would count them
      as independent. ρ, the lag-1 correlation, comes from von Neumann's ratio, ρ = 1 − ⟨Δθ²⟩/(2 var θ), clipped to
      [0, 0.9]; with 5 rounds it is itself rough: on AR(1) chains of correlation 0, 0.3, 0.6 the mean fell within
      ±2 s.e. of the truth in 91, 84, 72% of 3000 trials (naive sd/√n: 88, 78, 59%; docs/fitting.md). None with
      fewer than 2 rounds (no spread to measure).
    """
    good = [h for h in history if h.get("status") == "ok"]
    tail = good[-n_last:] if n_last > 0 else []
    if not tail:
        return None, None, 0
    mean, stderr = {}, {}
    for k in tail[0]["theta"]:
        x = np.array([h["theta"][k] for h in tail], float)
        mean[k] = float(x.mean())
        if x.size < 2:
            stderr[k] = None
            continue
        var = x.var(ddof=1)
        rho = 1 - float(np.mean(np.diff(x) ** 2)) / (2 * var) if x.size > 2 and var > 0 else 0.0
        rho = min(max(rho, 0.0), 0.9)
        stderr[k] = float(x.std(ddof=1) / np.sqrt(x.size) * np.sqrt((1 + rho) / (1 - rho)))
    return mean, stderr, len(tail)


def save_checkpoint(path, z, z_good, opt_state, round_, step_scale, positions, history, boxes=None, extra=None):
    """positions: one ``[N_s, 3]`` array per state (stored as ``positions``, ``positions_1``, ...); boxes: one box
    per state (constant-pressure fits: ``box``, ``box_1``, ...) or None; extra: more arrays by key (the loss
    guard's, :meth:`fitting.loss_guard.LossGuard.to_arrays`)."""
    leaves = jax.tree_util.tree_leaves(opt_state)
    pos = {("positions" if i == 0 else f"positions_{i}"): np.asarray(p) for i, p in enumerate(positions)}
    for i, b in enumerate(boxes or []):
        if b is not None:
            pos["box" if i == 0 else f"box_{i}"] = np.asarray(b)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                z=np.asarray(z),
                z_good=np.asarray(z_good),
                round=round_,
                step_scale=step_scale,
                n_states=len(positions),
                history=json.dumps(history),
                **pos,
                **(extra or {}),
                **{f"opt_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)},
            )


def load_checkpoint(path, opt_state_template):
    with np.load(path, allow_pickle=False) as d:
        leaves, treedef = jax.tree_util.tree_flatten(opt_state_template)
        opt_leaves = [jnp.asarray(d[f"opt_{i}"], dtype=jnp.asarray(leaf).dtype) for i, leaf in enumerate(leaves)]
        n_states = int(d["n_states"]) if "n_states" in d else 1
        positions = [np.asarray(d["positions" if i == 0 else f"positions_{i}"]) for i in range(n_states)]
        names = ["box" if i == 0 else f"box_{i}" for i in range(n_states)]
        boxes = [np.asarray(d[k]) if k in d else None for k in names]
        return (
            np.asarray(d["z"]),
            np.asarray(d["z_good"]),
            jax.tree_util.tree_unflatten(treedef, opt_leaves),
            int(d["round"]),
            float(d["step_scale"]),
            positions,
            json.loads(str(d["history"])),
            boxes,
        )


def write_outputs(
    out, ckpt, z, z_good, opt_state, next_round, step_scale, positions, history, mapping, boxes=None, extra=None
):
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, z, z_good, opt_state, next_round, step_scale, positions, history, boxes, extra)
    write_json(out / "history.json", {"history": history})
    labels = [fp.label for fp in mapping.fit_params]
    with atomic_path(out / "history.csv") as tmp:
        lines = ["round,status,estimator,loss,grad_norm,n_eff," + ",".join(labels)]
        for h in history:
            th = h.get("theta", {})
            lines.append(
                f"{h['round']},{h.get('status')},{h.get('estimator')},{h.get('loss', '')},{h.get('grad_norm', '')},"
                f"{h.get('n_eff', '')}," + ",".join(str(th.get(lab, "")) for lab in labels)
            )
        tmp.write_text("\n".join(lines) + "\n")


def plot_history(out, history, mapping, fitted=None, last=None):
    """``loss.png`` (loss per round, log scale) and ``params.png`` (each fitted θ per round, in its unit).

    Points of a start scan (:mod:`fitting.start_scan`, history rows of ``status: scan``) are drawn at round −1,
    with their own marker. ``params.png`` also shows the iterate after the last round's update (``last``, the
    summary's ``last_iterate``), the reported value (``fitted``, the mean over the last rounds when averaging) and,
    for synthetic recoveries, the true value (:attr:`FitParam.truth`), each in the legend, so the plot reads without
    the docs.
    """
    from matplotlib.ticker import MaxNLocator

    from dmd.base.plotting import pyplot
    from dmd.params import param_unit

    plt = pyplot()

    ok = [h for h in history if h.get("status") == "ok"]
    if not ok:
        return
    rounds = [h["round"] for h in ok]
    bad = [h["round"] for h in history if h.get("status") not in ("ok", None, "rejected", "scan")]
    scan = [h for h in history if h.get("status") == "scan" and np.isfinite(h["loss"])]  # fitting.start_scan
    scan_label = "start scan (grid about the start θ, before round 0)"
    rej = [h for h in history if h.get("status") == "rejected"]  # the loss guard's (fitting.loss_guard)
    rej_label = "rejected round (loss > guard × best: θ back to the best round's)"
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.semilogy(rounds, [max(h["loss"], 1e-300) for h in ok], "o-", label="loss at the round's θ")
    if rej:
        ax.semilogy([h["round"] for h in rej], [max(h["loss"], 1e-300) for h in rej], "x", color="tab:red",
                    label=rej_label)  # fmt: skip
    if scan:
        ax.semilogy([-1] * len(scan), [max(h["loss"], 1e-300) for h in scan], "D", mfc="none", color="tab:purple",
                    label=scan_label)  # fmt: skip
    for i, r in enumerate(bad):
        ax.axvline(r, color="tab:red", ls=":", lw=1, label="diverged round (θ stepped back)" if i == 0 else None)
    ax.set_xlabel("round")
    ax.set_ylabel("loss (weighted sum over targets)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("force-field fit: loss per round")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "loss.png")
    fps = list(mapping.fit_params)
    fig, axes = plt.subplots(len(fps), 1, figsize=(5.5, 2.3 * len(fps)), squeeze=False, sharex=True)
    end = history[-1]["round"] + 1
    for ax, fp in zip(axes[:, 0], fps, strict=True):
        lab = fp.label
        ax.plot(rounds, [h["theta"][lab] for h in ok], "o-", label="θ simulated in the round")
        if last is not None:
            ax.plot([rounds[-1], end], [ok[-1]["theta"][lab], last[lab]], ":", color="tab:blue")
            ax.plot([end], [last[lab]], "o", mfc="none", color="tab:blue", label="after the last update")
        if fitted is not None:
            ax.axhline(fitted[lab], color="tab:green", ls="--", lw=1.2, label=f"reported {fitted[lab]:.5g}")
        if fp.truth is not None:
            ax.axhline(fp.truth, color="k", ls="-", lw=0.8, label=f"truth {fp.truth:.5g}")
        for i, r in enumerate(bad):
            ax.axvline(r, color="tab:red", ls=":", lw=1, label="diverged round" if i == 0 else None)
        if rej:
            ax.plot([h["round"] for h in rej], [h["theta"][lab] for h in rej], "x", color="tab:red", label=rej_label)
        if scan:
            ax.plot([-1] * len(scan), [h["theta"][lab] for h in scan], "D", mfc="none", color="tab:purple",
                    label=scan_label)  # fmt: skip
        unit = param_unit(fp.entries[0])
        ax.set_ylabel(f"{lab}" + (f" ({unit})" if unit else ""), fontsize=7)
        ax.legend(fontsize=6, loc="best")
    axes[-1, 0].set_xlabel("round")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("force-field fit: parameters per round", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "params.png")
    if scan:
        plot_start_scan(out, scan, ok, fps, fitted)


def plot_start_scan(out, scan, rounds, fps, fitted=None):
    """``start_scan.png``: the loss against θ at the start scan's points (:mod:`fitting.start_scan`) with the
    rounds' (θ, loss) beside them, the start the rounds took, the reported value and, for synthetic recoveries, the
    truth. One fitted parameter: loss (log) against θ; two: θ₂ against θ₁, colour the loss. The round plots draw
    the scan at round −1, where its θ cannot be read against its loss."""
    from dmd.base.plotting import pyplot
    from dmd.params import param_unit

    plt = pyplot()
    labs = [fp.label for fp in fps]
    axis = [lab + (f" ({u})" if (u := param_unit(fp.entries[0])) else "") for lab, fp in zip(labs, fps, strict=True)]
    picked = [h for h in scan if h.get("picked")]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if len(fps) == 1:
        (lab,) = labs
        th = [h["theta"][lab] for h in scan]
        ax.semilogy(th, [max(h["loss"], 1e-300) for h in scan], "D--", mfc="none", color="tab:purple", lw=0.8,
                    label="start scan: one round's loss at each θ")  # fmt: skip
        ax.semilogy([h["theta"][lab] for h in rounds], [max(h["loss"], 1e-300) for h in rounds], "o", ms=4,
                    color="tab:blue", alpha=0.6, label="gradient rounds")  # fmt: skip
        if picked:
            ax.semilogy([picked[0]["theta"][lab]], [picked[0]["loss"]], "D", color="tab:purple", label="lowest point")
        if rounds:
            ax.axvline(rounds[0]["theta"][lab], color="tab:blue", ls=":", lw=1,
                       label=f"rounds started at {rounds[0]['theta'][lab]:.5g}")  # fmt: skip
        if fitted is not None:
            ax.axvline(fitted[lab], color="tab:green", ls="--", lw=1.2, label=f"reported {fitted[lab]:.5g}")
        if fps[0].truth is not None:
            ax.axvline(fps[0].truth, color="k", lw=0.8, label=f"truth {fps[0].truth:.5g}")
        ax.set_xlabel(axis[0], fontsize=8)
        ax.set_ylabel("loss (weighted sum over targets)")
    else:
        loss = np.log10(np.maximum([h["loss"] for h in scan], 1e-300))
        sc = ax.scatter([h["theta"][labs[0]] for h in scan], [h["theta"][labs[1]] for h in scan], c=loss,
                        marker="D", cmap="viridis", label="start scan points")  # fmt: skip
        fig.colorbar(sc, ax=ax, label="log10 loss")
        ax.plot([h["theta"][labs[0]] for h in rounds], [h["theta"][labs[1]] for h in rounds], "o-", ms=3,
                color="tab:blue", alpha=0.6, label="gradient rounds")  # fmt: skip
        if fitted is not None:
            ax.plot([fitted[labs[0]]], [fitted[labs[1]]], "s", color="tab:green", label="reported")
        if all(fp.truth is not None for fp in fps):
            ax.plot([fps[0].truth], [fps[1].truth], "*", ms=12, color="k", label="truth")
        ax.set_xlabel(axis[0], fontsize=8)
        ax.set_ylabel(axis[1], fontsize=8)
    ax.set_title("start scan: loss against θ (before round 0)", fontsize=9)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    save_figure(fig, out / "start_scan.png")


ROUTE_ADVICE = {
    "fluctuation": "fluctuation route (equilibrium covariances of the sampled ensemble): valid at any run length, "
    "its noise falls as 1/sqrt(frames); trust it",
    "reweighting": "reweighting route (finite steps from reweighted frames): trust it while N_eff/N stays high "
    "(n_eff per round in history.csv)",
}


def route_advice(estimator: str, evals) -> str:
    """Which gradient route this fit's θ rests on and whether to trust it, for ``summary.json``.

    Pathwise fits give the chaos verdict of the last round's tangents per state (:func:`dmd.chaos.assess`;
    pathwise holds only below the Lyapunov horizon), the other estimators a fixed sentence (docs/fitting.md,
    "Gradient routes on the diffuse objective")."""
    if estimator != "pathwise":
        return ROUTE_ADVICE.get(estimator, estimator)
    said = [f"{e.name}: {e.route_advice}" for e in evals if e.route_advice]
    return "pathwise route: " + ("; ".join(said) if said else "no round completed")
