"""Loss-landscape tools for powder-XRD structure optimization.

* 1-D scans of a loss along one chosen parameter (:func:`scan_1d`) and 1-D/2-D scans along random unit
  directions in parameter space (:func:`random_direction`, :func:`scan_2d`), evaluated with ``vmap``; plots
  saved as PNG (:func:`plot_scan_1d`, :func:`plot_scan_2d`).
* Structure-similarity vs XRD-similarity over perturbed structures (:func:`similarity_correlation`): the seed
  paper's diagnostic of how informative a metric is about structural distance. Reported: Spearman rank
  correlation ρ, Pearson r and the mutual information (bits, histogram estimate on equal-count bins).

Structural distance between a perturbed structure (A′, x′) and the truth (A, x) with the same atom order
(Å; A are orthogonalization matrices, Δx wrapped to [−½, ½))::

    d = sqrt( mean_i |A · wrap(x′_i − x_i)|²  +  ‖A′ − A‖²_F / 3 )

Parameters are pytrees from :mod:`fitting.xrd_params`; a loss is any ``loss(params) -> scalar``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis.stats import pearson_cc

__all__ = [
    "scan_1d",
    "random_direction",
    "scan_direction",
    "scan_2d",
    "plot_scan_1d",
    "plot_scan_2d",
    "structure_distance",
    "mutual_information",
    "similarity_correlation",
    "plot_correlation",
]


def _set(params, leaf: str, index, value):
    arr = jnp.asarray(params[leaf])
    out = dict(params)
    out[leaf] = arr.at[index].set(value)
    return out


def scan_1d(loss, params, leaf: str, index, values):
    """Loss with ``params[leaf][index]`` set to each of ``values [n]`` (others fixed); returns ``[n]``.

    Example: ``scan_1d(loss, p, "lattice", 0, np.log(np.linspace(5.4, 5.9, 101)))``.
    """
    if leaf not in params:
        raise KeyError(f"unknown parameter leaf {leaf!r}; have {', '.join(params)}")
    values = jnp.asarray(values, jnp.asarray(params[leaf]).dtype)
    return np.asarray(jax.jit(jax.vmap(lambda v: loss(_set(params, leaf, index, v))))(values))


def random_direction(key, params):
    """A random unit vector in parameter space (Gaussian, normalized over all leaves), same pytree as params."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    dirs = [jax.random.normal(k, jnp.shape(x), jnp.asarray(x).dtype) for k, x in zip(keys, leaves, strict=True)]
    norm = jnp.sqrt(sum(jnp.sum(d * d) for d in dirs))
    return jax.tree_util.tree_unflatten(tree, [d / norm for d in dirs])


def _axpy(params, alpha, direction):
    return jax.tree_util.tree_map(lambda p, d: jnp.asarray(p) + alpha * d, params, direction)


def scan_direction(loss, params, direction, alphas):
    """Loss along ``params + α · direction`` for ``alphas [n]``; returns ``[n]``."""
    alphas = jnp.asarray(alphas)
    return np.asarray(jax.jit(jax.vmap(lambda a: loss(_axpy(params, a, direction))))(alphas))


def scan_2d(loss, params, d1, d2, alphas, betas):
    """Loss on the plane ``params + α d1 + β d2``; returns ``[len(alphas), len(betas)]``."""

    def at(a, b):
        return loss(_axpy(_axpy(params, a, d1), b, d2))

    f = jax.jit(jax.vmap(jax.vmap(at, in_axes=(None, 0)), in_axes=(0, None)))
    return np.asarray(f(jnp.asarray(alphas), jnp.asarray(betas)))


def plot_scan_1d(path, x, curves: dict, *, xlabel: str, title: str = "", truth: float | None = None):
    """Save a 1-D scan plot: ``curves`` maps a label to ``[n]`` losses over ``x [n]``."""
    from dmd.base.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(6, 4))
    for label, y in curves.items():
        ax.plot(x, y, label=label)
    if truth is not None:
        ax.axvline(truth, color="k", lw=0.8, ls="--", label="truth")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def plot_scan_2d(path, alphas, betas, z, *, title: str = ""):
    """Save a filled-contour plot of a 2-D scan ``z [len(alphas), len(betas)]``."""
    from dmd.base.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(5, 4.5))
    cs = ax.contourf(np.asarray(alphas), np.asarray(betas), np.asarray(z).T, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="loss")
    ax.plot([0], [0], "r+", ms=12)
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def structure_distance(cell, pos_frac, cell_ref, pos_ref) -> float:
    """Structural distance (Å) to a reference with the same atom order (module equation)."""
    a = cell_mod.orthogonalization_matrix(np.asarray(cell_ref, float))
    a2 = cell_mod.orthogonalization_matrix(np.asarray(cell, float))
    d = np.asarray(pos_frac, float) - np.asarray(pos_ref, float)
    d -= np.round(d)
    disp = np.einsum("ij,nj->ni", a, d)
    return float(np.sqrt(np.mean(np.sum(disp**2, axis=1)) + np.sum((a2 - a) ** 2) / 3))


def mutual_information(x, y, bins: int = 8) -> float:
    """Mutual information (bits) of two samples, histogram estimate on equal-count (quantile) bins."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    qx = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
    qy = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    ix, iy = np.searchsorted(qx, x), np.searchsorted(qy, y)
    joint = np.zeros((bins, bins))
    np.add.at(joint, (ix, iy), 1.0)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log2(joint[nz] / (px @ py)[nz])))


def similarity_correlation(
    loss_of_structure, cell, pos_frac, rng: np.random.Generator, *, n: int = 200, max_strain=0.08, max_disp=0.5
):
    """Structure distance vs XRD loss over randomly perturbed copies of a structure.

    Args:
      loss_of_structure: ``f(cell [6], pos_frac [N, 3]) -> scalar`` XRD loss against the truth's pattern.
      cell, pos_frac: the truth (P1). n: number of perturbed structures; magnitudes are drawn uniformly in
        [0, max_strain] and [0, max_disp] Å (:func:`fitting.xrd_params.perturb_structure`).

    Returns:
      dict with ``distance [n]`` (Å), ``loss [n]``, ``spearman``, ``pearson``
      (:func:`analysis.stats.pearson_cc`: 0.0 for a constant input), ``mutual_information`` (bits).
    """
    from scipy import stats

    from fitting.xrd_params import perturb_structure

    cells, poss = [], []
    for _ in range(n):
        c, p = perturb_structure(
            rng, cell, pos_frac, strain=rng.uniform(0, max_strain), displacement=rng.uniform(0, max_disp)
        )
        cells.append(c)
        poss.append(p)
    cells, poss = np.array(cells), np.array(poss)
    dist = np.array([structure_distance(c, p, cell, pos_frac) for c, p in zip(cells, poss, strict=True)])
    dtype = jnp.asarray(jnp.zeros(())).dtype
    loss = np.asarray(jax.jit(jax.vmap(loss_of_structure))(jnp.asarray(cells, dtype), jnp.asarray(poss, dtype)))
    return {
        "distance": dist,
        "loss": loss,
        "spearman": float(stats.spearmanr(dist, loss).statistic),
        "pearson": float(pearson_cc(jnp.asarray(dist), jnp.asarray(loss))),
        "mutual_information": mutual_information(dist, loss),
    }


def plot_correlation(path, results: dict, *, title: str = ""):
    """Scatter of loss vs structural distance for several metrics (``results``: label → correlation dict)."""
    from dmd.base.plotting import new_figure, save_figure

    fig, axes = new_figure(1, len(results), figsize=(4 * len(results), 3.6), squeeze=False)
    for ax, (label, r) in zip(axes[0], results.items(), strict=True):
        ax.scatter(r["distance"], r["loss"], s=6, alpha=0.6)
        ax.set_xlabel("structural distance (Å)")
        ax.set_ylabel(f"{label} loss")
        ax.set_title(f"ρ={r['spearman']:.2f}  MI={r['mutual_information']:.2f} bits", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path
