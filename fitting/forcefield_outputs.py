"""Force-field fitting: checkpoints, outputs and plots of a fit (written atomically)."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.io import atomic_path, write_json
from dmd.base.plotting import save_figure

__all__ = ["save_checkpoint", "load_checkpoint", "write_outputs", "plot_history"]


def save_checkpoint(path, z, z_good, opt_state, round_, step_scale, positions, history, boxes=None):
    """positions: one ``[N_s, 3]`` array per state (stored as ``positions``, ``positions_1``, ...); boxes: one box
    per state (constant-pressure fits: ``box``, ``box_1``, ...) or None."""
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


def write_outputs(out, ckpt, z, z_good, opt_state, next_round, step_scale, positions, history, mapping, boxes=None):
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, z, z_good, opt_state, next_round, step_scale, positions, history, boxes)
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


def plot_history(out, history, mapping):
    from dmd.base.plotting import pyplot

    plt = pyplot()

    ok = [h for h in history if h.get("status") == "ok"]
    if not ok:
        return
    rounds = [h["round"] for h in ok]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(rounds, [max(h["loss"], 1e-300) for h in ok], "o-")
    ax.set_xlabel("round")
    ax.set_ylabel("loss")
    ax.set_title("force-field fit: loss per round")
    fig.tight_layout()
    save_figure(fig, out / "loss.png")
    labels = [fp.label for fp in mapping.fit_params]
    fig, axes = plt.subplots(len(labels), 1, figsize=(5, 2.2 * len(labels)), squeeze=False)
    for ax, lab in zip(axes[:, 0], labels, strict=True):
        ax.plot(rounds, [h["theta"][lab] for h in ok], "o-")
        ax.set_ylabel(lab, fontsize=7)
    axes[-1, 0].set_xlabel("round")
    fig.tight_layout()
    save_figure(fig, out / "params.png")
