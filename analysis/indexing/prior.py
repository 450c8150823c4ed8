"""Learned prior over unit cells given the first peaks (the "ML" of ML-Index).

The prior is a distribution over Miller-index assignments of the first ``n_first``
observed lines, per lattice system; each draw of ``n_params`` lines with their
indices fixes a cell by the exact solve H_S x = q_S (search.py), so the model maps
the first peaks to a (mixture) distribution of unit cells. Two models share one file:

* ``table``: p(row | peak position) (Laplace-smoothed frequencies), the unconditional model;
* ``mlp``: a one-hidden-layer network p(row | peak position, log(q²_i / q²_1), i ≤ 20),
  conditioned on the peak ratios (scale-free, so any wavelength or cell size works)::

      h = gelu(W₁ f + b₁),  logits[i, v] = (W₂ h + b₂)[i·V + v] + table[i, v]

Rows are the first ``V`` design-matrix rows of :func:`reference.reference_rows` in the
canonical reduced setting of each system (:func:`canonical_x`). Training data are
synthetic peak lists from gemmi space groups (synth.py); the script is
``analysis/indexing/train_prior.py`` and the weights ship as ``prior_weights.npz``.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis.indexing.reduce import reduce_x
from analysis.indexing.reference import SEARCH_SYSTEMS, reference_rows, search_system

__all__ = [
    "search_rows",
    "N_SEARCH_ROWS",
    "VOCAB_SIZE",
    "N_FIRST_MAX",
    "N_FEATURES",
    "IndexPrior",
    "canonical_x",
    "peak_features",
    "assignment_labels",
    "load_prior",
    "generator_logits",
    "DEFAULT_WEIGHTS",
]

VOCAB_SIZE = {"cubic": 40, "tetragonal": 40, "hexagonal": 40, "orthorhombic": 48, "monoclinic": 64, "triclinic": 80}
N_FIRST_MAX = 10
N_FEATURES = 19  # log(q²_i / q²_1), i = 2..20 (zero-padded)
DEFAULT_WEIGHTS = os.path.join(os.path.dirname(__file__), "prior_weights.npz")


def canonical_x(cell, system: str) -> np.ndarray:
    """Reciprocal parameters x (float64) of a conventional cell in the canonical reduced setting.

    Triclinic: Selling-reduced reciprocal basis sorted a*² ≤ b*² ≤ c*²; monoclinic:
    a*c* plane Lagrange-reduced (A ≤ C, E ≥ 0); orthorhombic: a ≤ b ≤ c (A ≥ B ≥ C).
    """
    system = search_system(system)
    x = np.asarray(cell_mod.reciprocal_params(np.asarray(cell, float), system), float)
    x = np.asarray(reduce_x(x, system), float)
    if system == "triclinic":  # permute axes so A ≤ B ≤ C (D, E, F follow the permutation)
        g = cell_mod.reciprocal_metric_from_params(x, system)
        o = np.argsort(np.diag(g), kind="stable")
        x = cell_mod.reciprocal_params_from_metric(g[np.ix_(o, o)], system)
    return x


def peak_features(inv_d2, n: int = N_FEATURES + 1) -> np.ndarray:
    """Scale-free features ``[..., 19]``: log(q²_i/q²_1) for i = 2..20, zero-padded."""
    inv_d2 = np.asarray(inv_d2, float)
    f = np.log(inv_d2[..., 1:n] / inv_d2[..., :1])
    pad = N_FEATURES - f.shape[-1]
    if pad > 0:
        f = np.concatenate([f, np.zeros(f.shape[:-1] + (pad,))], axis=-1)
    return f


def assignment_labels(inv_d2, cell, system: str, rel_tol: float = 1e-6) -> np.ndarray:
    """Vocabulary row of each of the first N_FIRST_MAX lines under the true canonical cell (−1: none).

    Args:
      inv_d2: ``[n]`` q² of the lines (Å⁻²); pass the *true* positions of observed lines
        (NaN for impurity lines) so noisy patterns get exact labels.
      cell: true conventional cell.

    A line is labelled with the lowest vocabulary row whose q² lies within ``rel_tol``
    (relative); impurity lines and lines needing rows outside the vocabulary get −1.
    """
    system = search_system(system)
    x = canonical_x(cell, system)
    rows = reference_rows(system).rows[: VOCAB_SIZE[system]]
    inv_d2_ref = rows @ x
    inv_d2 = np.asarray(inv_d2, float)[:N_FIRST_MAX]
    close = np.abs(inv_d2[:, None] - inv_d2_ref[None, :]) <= rel_tol * inv_d2[:, None]
    lab = np.where(close.any(axis=1), np.argmax(close, axis=1), -1)
    out = np.full(N_FIRST_MAX, -1)
    out[: lab.size] = lab
    return out


@dataclasses.dataclass(frozen=True)
class IndexPrior:
    """Per-system prior weights.

    Attributes:
      tables: system → ``[N_FIRST_MAX, V]`` log-probabilities (unconditional).
      mlps: system → dict(w1 [19, H], b1 [H], w2 [H, N_FIRST_MAX·V], b2 [N_FIRST_MAX·V]) or absent.
    """

    tables: dict
    mlps: dict

    def log_probs(self, system: str, inv_d2, use_mlp: bool = True) -> np.ndarray:
        """``[N_FIRST_MAX, V]`` log-probabilities for a peak list (MLP when available)."""
        system = search_system(system)
        table = np.asarray(self.tables[system], float)
        if not use_mlp or system not in self.mlps:
            return table
        p = self.mlps[system]
        f = peak_features(inv_d2)
        h = np.asarray(jax.nn.gelu(jnp.asarray(f @ p["w1"] + p["b1"])))
        logits = (h @ p["w2"] + p["b2"]).reshape(table.shape) + table
        return (
            logits
            - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1, keepdims=True))
            - logits.max(1, keepdims=True)
        )

    def save(self, path) -> None:
        from dmd.base.io import savez

        arrays = {f"{s}/table": t for s, t in self.tables.items()}
        for s, p in self.mlps.items():
            arrays.update({f"{s}/{k}": v for k, v in p.items()})
        savez(path, **arrays)


@functools.lru_cache(maxsize=4)
def load_prior(path: str | None = None) -> IndexPrior:
    """Load prior weights (default: the file shipped in the package)."""
    path = path or DEFAULT_WEIGHTS
    data = np.load(path)
    tables, mlps = {}, {}
    for s in SEARCH_SYSTEMS:
        if f"{s}/table" in data:
            tables[s] = data[f"{s}/table"]
        if f"{s}/w1" in data:
            mlps[s] = {k: data[f"{s}/{k}"] for k in ("w1", "b1", "w2", "b2")}
    return IndexPrior(tables=tables, mlps=mlps)


# Reference rows searched per system: the rows any training pattern used (most used first) cover
# the first 20 lines of the training distribution; a margin of size-ordered rows follows.
N_SEARCH_ROWS = {
    "cubic": 80,
    "tetragonal": 160,
    "hexagonal": 160,
    "orthorhombic": 200,
    "monoclinic": 240,
    "triclinic": 180,
}


def search_rows(system: str, n_rows: int | None = None, path: str | None = None) -> np.ndarray:
    """Reference rows ``[n, n_params]`` used by the batched search (subset of reference_rows).

    Uses the learned usage order stored with the prior weights when present (falls back
    to index-size order); the float64 refinement always uses the full list.
    """
    system = search_system(system)
    ref = reference_rows(system)
    n_rows = N_SEARCH_ROWS[system] if n_rows is None else int(n_rows)
    order = _ref_order(system, path or DEFAULT_WEIGHTS)
    if order is None:
        return ref.rows[:n_rows]
    return ref.rows[order[:n_rows]]


@functools.lru_cache(maxsize=16)
def _ref_order(system: str, path: str):
    if not os.path.exists(path):
        return None
    data = np.load(path)
    key = f"{system}/ref_order"
    return np.asarray(data[key]) if key in data else None


def generator_logits(prior, system: str, inv_d2, n_first: int, uniform: bool = False):
    """Logits ``[n_first, V]`` and vocabulary rows ``[V, n_params]`` for the exact-solve generator."""
    system = search_system(system)
    v = VOCAB_SIZE[system]
    rows = reference_rows(system).rows[:v]
    if uniform or prior is None or system not in prior.tables:
        return np.zeros((n_first, v)), rows
    lp = prior.log_probs(system, inv_d2)
    return lp[:n_first], rows
