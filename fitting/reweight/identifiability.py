"""Which combinations of group (state / block) frame weights do the data determine?"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis.stats import pearson_cc
from fitting.reweight.prediction import x_from_stats
from fitting.reweight.problem import FitSpec, Problem, objective_value, weighted_stats

__all__ = ["identifiability"]


def identifiability(
    problem: Problem,
    w,
    groups,
    mask,
    *,
    objective: str = "cc",
    step: float = 0.5,
    cc_tol: float | None = None,
) -> dict:
    """Which combinations of group weights do the data determine?

    Group log-weights u [K] perturb the fitted weights within the simplex,
    w_t(u) = w_t e^{u_g(t)} / Σ_s w_s e^{u_g(s)}. The Hessian of the objective in u (sum-zero subspace,
    since a common shift of u changes nothing) is diagonalized; along each eigen-direction v the CC drop
    ΔCC = CC(0) − max(CC(±step·v)) is measured. A direction with ΔCC ≤ ``cc_tol`` is flat: the data do not
    determine it. Example: any two-state mixture, x′ = w₁w₂|F₁ − F₂|², changes only in scale along its one
    direction, and CC ignores scale, so ΔCC = 0 (docs/diffuse.md, "Frame reweighting").

    Args:
      w: ``[n_frames]`` fitted frame weights; groups: int ``[n_frames]`` group (state / block) of each frame.
      mask: bool ``[n_data]`` voxels used (training voxels).
      cc_tol: flatness threshold; default: the CC standard error (1 − CC²)/√n_voxels, floored at 1e-6.

    Returns a JSON-able dict: ``identifiable`` (bool), ``group_weights``, ``hessian_eigenvalues``,
    ``cc_drop`` per direction, ``n_flat``, ``cc_tol``, ``reason``.
    """
    groups = np.asarray(groups)
    _, gidx = np.unique(groups, return_inverse=True)
    gidx = gidx.ravel()
    k = int(gidx.max()) + 1
    w = np.asarray(w, np.float64)
    onehot = np.eye(k)[gidx]  # [T, K]
    # per-group statistics S_g = Σ_{t∈g} w_t Z_t (one pass over the store, in memory or streamed); then
    # S(u) = Σ_g e^{u_g} S_g / Σ_g e^{u_g} W_g with W_g = Σ_{t∈g} w_t, so everything below is on [K, 3, N]
    s_g = weighted_stats(problem, (onehot * w[:, None]).T)
    w_g = jnp.asarray(onehot.T @ w, problem.dtype)
    mask = jnp.asarray(mask, bool)
    spec = FitSpec(objective=objective, n_shells=problem.n_shells, n_data=problem.n_data)

    def x_of(u, s_g, w_g, data):
        e = jnp.exp(u - jnp.max(u))
        s = jnp.tensordot(e, s_g, axes=1) / jnp.dot(e, w_g)
        return x_from_stats(s, data, problem.n_data)

    # the [K, 3, N] statistics are arguments, not closed-over constants (large constants slow compilation)
    hess_fn = jax.jit(jax.hessian(lambda u, *a: objective_value(spec, x_of(u, *a), a[2], mask)))
    cc_fn = jax.jit(lambda u, *a: pearson_cc(x_of(u, *a), a[2]["y"], mask=mask))
    args = (s_g, w_g, problem.data)

    u0 = jnp.zeros(k, problem.dtype)
    if k < 2:
        return {"identifiable": True, "n_groups": k, "reason": "a single group has no free weight"}
    hess = np.asarray(hess_fn(u0, *args), np.float64)
    # orthonormal basis of the sum-zero subspace
    basis = np.linalg.svd(np.eye(k) - 1.0 / k)[0][:, : k - 1]
    evals, evecs = np.linalg.eigh(basis.T @ hess @ basis)
    dirs = basis @ evecs  # [K, K-1]
    cc0 = float(cc_fn(u0, *args))
    drops = []
    for j in range(k - 1):
        v = jnp.asarray(dirs[:, j], problem.dtype)
        drops.append(cc0 - max(float(cc_fn(step * v, *args)), float(cc_fn(-step * v, *args))))
    n_vox = int(np.sum(np.asarray(mask)))
    if cc_tol is None:
        cc_tol = max(1e-6, (1 - cc0**2) / np.sqrt(max(n_vox, 1)))
    flat = [j for j in range(k - 1) if drops[j] <= cc_tol]
    gw = np.asarray(w_g, np.float64).tolist()
    if flat:
        reason = (
            f"{len(flat)} of {k - 1} weight directions are flat: moving the group log-weights by ±{step} along "
            f"them changes CC by ≤ {cc_tol:.2g} (largest such drop {max(drops[j] for j in flat):.2g}); "
            "the data do not determine these weights"
        )
    else:
        reason = f"every weight direction lowers CC by more than {cc_tol:.2g} at a ±{step} log-weight step"
    return {
        "identifiable": not flat,
        "n_groups": k,
        "group_weights": gw,
        "hessian_eigenvalues": evals.tolist(),
        "cc_drop": drops,
        "n_flat": len(flat),
        "cc_tol": float(cc_tol),
        "cc": cc0,
        "reason": reason,
    }
