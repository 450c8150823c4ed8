"""Cross-validation on held-out voxels: folds of whole symmetry orbits (or resolution shells), and θ selection.

Neighbouring voxels and symmetry mates are correlated, so a random-voxel split would leak; whole orbits (or
whole resolution shells) are held out instead (docs/diffuse.md, "Frame reweighting").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dmd.distributed import to_host
from fitting.reweight.fit import fit_batch
from fitting.reweight.problem import FitSpec, Problem, objective_value, predict

__all__ = ["holdout_folds", "select_theta"]


def holdout_folds(hkl, n_folds: int, *, kind: str = "orbits", sg="P 1", inv_d2=None, seed: int = 0) -> np.ndarray:
    """Cross-validation fold (0 … n_folds−1) of each voxel, int ``[m]``, holding out whole groups.

    Args:
      hkl: int ``[m, 3]`` voxel indices (for a supercell: its integer indices).
      kind: ``"orbits"`` — every symmetry orbit of ``sg`` (Friedel mates included) lands in one fold,
        orbits assigned at random; ``"shells"`` — 4·n_folds equal-count resolution shells, dealt to the
        folds in turn so each fold spans the resolution range (needs ``inv_d2``, Å⁻²).
    """
    from analysis import stats
    from analysis.symmetry import canonical_hkl

    rng = np.random.default_rng(seed)
    if kind == "orbits":
        rep = canonical_hkl(np.asarray(hkl), sg)
        _, orbit = np.unique(rep, axis=0, return_inverse=True)
        orbit = orbit.ravel()
        fold_of_orbit = rng.permutation(orbit.max() + 1) % n_folds
        return fold_of_orbit[orbit].astype(np.int32)
    if kind == "shells":
        if inv_d2 is None:
            raise ValueError("holdout kind 'shells' needs inv_d2 (1/d² of each voxel, Å⁻²)")
        n_sh = 4 * n_folds
        sh = stats.shell_index(inv_d2, stats.shell_edges(inv_d2, n_sh))
        return (sh % n_folds).astype(np.int32)
    raise ValueError(f"unknown holdout kind {kind!r}: use 'orbits' or 'shells'")


def select_theta(problem: Problem, spec: FitSpec, folds, train, thetas, *, progress: bool = False):
    """θ by cross-validation over the inner folds (all folds of the ``train`` voxels).

    For every θ in ``thetas`` and every inner fold k, fit on the other inner folds and score the held-out
    objective on fold k; all fits run in one vmapped batch and are predicted from one pass over the store.
    θ* maximizes the mean held-out score; ties (within 1e-4) go to the larger θ, whose weights stay closer to
    the prior.

    Args:
      folds: int ``[n_data]`` fold of each data voxel; train: bool ``[n_data]`` voxels outside the test fold.
      thetas: ``[n_theta]`` KL strengths.

    Returns ``(theta*, mean held-out score [n_theta], per-fold scores [n_theta, n_inner])``.
    """
    thetas = np.asarray(thetas, float)
    inner = [k for k in np.unique(folds[train])]
    combos = [(th, k) for th in thetas for k in inner]
    masks = np.stack([train & (folds != k) for _, k in combos])
    logits0 = np.tile(np.asarray(problem.log_w0), (len(combos), 1))
    logits_cv, _ = fit_batch(problem, spec, logits0, masks, [c[0] for c in combos], progress=progress)
    x_cv = predict(problem, to_host(jax.nn.softmax(logits_cv, axis=-1)))  # one pass for all fits
    val = [
        -float(objective_value(spec, x_cv[i], problem.data, jnp.asarray(folds == k))) for i, (_, k) in enumerate(combos)
    ]
    val = np.asarray(val).reshape(len(thetas), len(inner))
    mean_val = val.mean(axis=1)
    best = int(np.max(np.nonzero(mean_val >= mean_val.max() - 1e-4)[0]))
    return float(thetas[best]), mean_val, val
