"""An opt-in estimate of one fitted θ from the fit's round losses instead of its gradient (``loss_surface: factor``).

Why: on the peptide example (docs/fitting.md, issue 18 4c) the gradient rounds' fixed point lies a few per cent
above the truth while the round *loss* of fresh replicas (``restart: crystal``) is an unbiased sample of the loss
at its θ: the start scans' losses averaged over seeds put the parabola's vertex within 0.1% of the truth, while the
rounds that start there drift 2-4% up (the fluctuation Jacobian of a 150-frame window misses most of the slow,
isotropic response of I_D to σ, so 2Jᵀr and the loss's slope have different zeros). So, with ``loss_surface: 3``,
the fit reports the vertex of a least-squares parabola in the fit's internal variable z (ln θ for a positive
parameter) through every scanned and accepted round's (z, loss) whose loss is within ``factor`` × the lowest (the
plateau far from the minimum is left out), clipped to the z range of those points, with its standard error from the
fit's residual scatter (delta method). Every round's loss must sample the loss at its own θ: use it with fresh
replicas (``restart: crystal``), not replicas carried from another θ.
"""

from __future__ import annotations

import numpy as np

from dmd.base.errors import UserInputError

__all__ = ["check_factor", "loss_vertex"]


def check_factor(factor, n_params: int, where: str = "") -> None:
    """Refuse a factor that is not a number > 1, or more than one fitted parameter."""
    if factor is None:
        return
    pre = f"{where}: " if where else ""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not np.isfinite(factor) or factor <= 1:
        raise UserInputError(f"{pre}loss_surface {factor!r}: give a factor > 1 (rounds whose loss is within factor ×"
                             " the lowest are fitted), e.g. loss_surface: 3")  # fmt: skip
    if n_params != 1:
        raise UserInputError(f"{pre}loss_surface: the loss parabola is for one fitted parameter ({n_params} given); "
                             "drop loss_surface or fit one parameter")  # fmt: skip


def loss_vertex(history, to_z, from_z, factor: float) -> dict | None:
    """The vertex of the parabola L(z) = a z² + b z + c fitted to the scan and accepted rounds of ``history``.

    Args:
      history: the fit's rows (``status`` scan or ok, ``theta`` a one-entry dict, ``loss``).
      to_z, from_z: θ ↦ z and back (the fit's internal variable).
      factor: rounds with loss ≤ factor × the lowest are fitted.

    Returns:
      ``{"label", "value", "stderr", "points", "curvature", "clipped", "z_range"}`` (θ units; ``stderr`` None with
      fewer than 5 points), or None when fewer than 3 distinct z pass or the parabola's curvature is not positive.
    """
    rows = [h for h in history if h.get("status") in ("scan", "ok") and np.isfinite(h.get("loss", np.nan))]
    if not rows or len(rows[0]["theta"]) != 1:
        return None
    (label,) = rows[0]["theta"]
    z = np.array([to_z(h["theta"][label]) for h in rows], float)
    loss = np.array([h["loss"] for h in rows], float)
    keep = loss <= factor * loss.min()
    z, loss = z[keep], loss[keep]
    if len(np.unique(np.round(z, 9))) < 3:
        return None
    x = z - z.mean()  # centred: a well-conditioned fit
    design = np.stack([x**2, x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design, loss, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if a <= 0:
        return None
    v = -b / (2 * a)
    lo, hi = float(x.min()), float(x.max())
    clipped = not lo <= v <= hi
    v = min(max(v, lo), hi)
    stderr = None
    if len(x) >= 5 and not clipped:
        dof = len(x) - 3
        s2 = float(np.sum((design @ coef - loss) ** 2)) / dof
        cov = s2 * np.linalg.inv(design.T @ design)
        grad = np.array([b / (2 * a * a), -1 / (2 * a)])  # dv/da, dv/db
        se_z = float(np.sqrt(grad @ cov[:2, :2] @ grad))
        zv = v + z.mean()
        stderr = abs(from_z(zv + 1e-6) - from_z(zv - 1e-6)) / 2e-6 * se_z
    return {"label": label, "value": from_z(v + z.mean()), "stderr": stderr, "points": int(len(x)), "curvature": a,
            "clipped": clipped, "z_range": [lo + z.mean(), hi + z.mean()]}  # fmt: skip
