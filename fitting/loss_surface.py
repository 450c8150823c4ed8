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

The mapping form ``loss_surface: {log: true, window: 0.2, robust: true}`` (``factor`` optional) fits the parabola
to ln loss (the round losses' scatter is multiplicative with a heavy upper tail: one point of 80 on the peptide
gave 0.21 where its neighbours gave 0.008-0.036) through the points within ``window`` in z of the centre of the
start scan's design points (:mod:`fitting.start_scan`, ``design``), or of the lowest point without a design, and
with ``robust`` by iteratively reweighted least squares (:func:`robust_weights`). In a resampling study on the
peptide's 136 measured round losses (fit18j), with 5 design points 0.06 apart, twice each, after the 7-point scan,
8 of 8 seeds fell within 5% with probability 0.95 (0.60 with 10% of the losses × 3-25) against 0.51 (0.41) for the
loss within 4 × the lowest; the 8 fit seeds: 8 of 8, max 2.99% (docs/fitting.md, fit18k).
"""

from __future__ import annotations

import numpy as np

from dmd.base.errors import UserInputError

__all__ = ["check_factor", "loss_vertex", "robust_weights", "surface_options"]


_KEYS = {"factor", "log", "window", "robust"}


def surface_options(spec) -> dict | None:
    """``loss_surface`` as ``{"factor", "log", "window"}``: a number is the factor (ln loss off, no window)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        return {"factor": spec, "log": False, "window": None, "robust": False}
    return {"factor": spec.get("factor"), "log": spec.get("log", False), "window": spec.get("window"),
            "robust": spec.get("robust", False)}  # fmt: skip


def check_factor(spec, n_params: int, where: str = "") -> None:
    """Refuse a factor that is not a number > 1, a bad mapping, or more than one fitted parameter."""
    if spec is None:
        return
    pre = f"{where}: " if where else ""
    factor = spec
    if isinstance(spec, dict):
        window, log, robust = spec.get("window"), spec.get("log", False), spec.get("robust", False)
        if set(spec) - _KEYS or not isinstance(log, bool) or not isinstance(robust, bool) or not (window is None or (
                isinstance(window, (int, float)) and not isinstance(window, bool) and window > 0)):  # fmt: skip
            raise UserInputError(
                f"{pre}loss_surface {spec!r}: give a factor > 1, or a mapping of factor (> 1), log "
                "(true/false), window (> 0, in z) and robust (true/false), e.g. loss_surface: {log: true, window: 0.15}"
            )
        factor = spec.get("factor")
        if factor is None:
            factor = 2.0  # no factor: only the window and the parameter count to check
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not np.isfinite(factor) or factor <= 1:
        raise UserInputError(f"{pre}loss_surface {factor!r}: give a factor > 1 (rounds whose loss is within factor ×"
                             " the lowest are fitted), e.g. loss_surface: 3")  # fmt: skip
    if n_params != 1:
        raise UserInputError(f"{pre}loss_surface: the loss parabola is for one fitted parameter ({n_params} given); "
                             "drop loss_surface or fit one parameter")  # fmt: skip


def robust_weights(design, y, iterations: int = 30):
    """``(coef, w)``: a least-squares fit of ``y`` on ``design`` made robust by iteratively reweighted least squares:
    Huber weights (c 1.345) for 10 iterations, then Tukey's bisquare (c 4.685, weight 0 beyond), the residuals'
    scale 1.4826 × their median absolute deviation each time (Huber's start keeps bisquare from a fit that one
    outlier bent, e.g. a negative curvature)."""
    w = np.ones(len(y))
    for it in range(iterations):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
        r = y - design @ coef
        scale = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        if scale <= 1e-12:
            break
        u = np.abs(r) / scale
        w = (
            np.minimum(1.0, 1.345 / np.maximum(u, 1e-12))
            if it < 10
            else np.where(u < 4.685, (1 - (u / 4.685) ** 2) ** 2, 0.0)
        )
    return coef, w


def loss_vertex(
    history, to_z, from_z, factor: float | None, log: bool = False, window: float | None = None, robust: bool = False
) -> dict | None:
    """The vertex of the parabola L(z) = a z² + b z + c fitted to the scan and accepted rounds of ``history``.

    Args:
      history: the fit's rows (``status`` scan or ok, ``theta`` a one-entry dict, ``loss``).
      to_z, from_z: θ ↦ z and back (the fit's internal variable).
      factor: rounds with loss ≤ factor × the lowest are fitted (None: every one).
      log: fit ln loss instead of the loss.
      window: only the points within ``window`` in z of the design's centre (the ``design_centre`` of the start
        scan's rows), or without one of the lowest point.
      robust: fit by :func:`robust_weights` (an outlier's weight goes to 0) instead of least squares.

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
    keep = np.ones(len(z), bool) if factor is None else loss <= factor * loss.min()
    if window is not None:
        centre = next((to_z(h["design_centre"]) for h in rows if "design_centre" in h), z[np.argmin(loss)])
        keep &= np.abs(z - centre) <= window + 1e-9
    z, loss = z[keep], loss[keep]
    if log:
        if not np.all(loss > 0):
            return None
        loss = np.log(loss)
    if len(np.unique(np.round(z, 9))) < 3:
        return None
    x = z - z.mean()  # centred: a well-conditioned fit
    design = np.stack([x**2, x, np.ones_like(x)], axis=1)
    w = np.ones(len(x))
    if robust:
        coef, w = robust_weights(design, loss)
    else:
        coef, *_ = np.linalg.lstsq(design, loss, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if a <= 0:
        return None
    v = -b / (2 * a)
    lo, hi = float(x.min()), float(x.max())
    clipped = not lo <= v <= hi
    v = min(max(v, lo), hi)
    stderr = None
    if np.sum(w > 0) >= 5 and not clipped:  # weighted: the rows an outlier test dropped count for nothing
        dof = float(np.sum(w)) - 3
        s2 = float(np.sum(w * (design @ coef - loss) ** 2)) / dof
        cov = s2 * np.linalg.inv(design.T @ (w[:, None] * design))
        grad = np.array([b / (2 * a * a), -1 / (2 * a)])  # dv/da, dv/db
        se_z = float(np.sqrt(grad @ cov[:2, :2] @ grad))
        zv = v + z.mean()
        stderr = abs(from_z(zv + 1e-6) - from_z(zv - 1e-6)) / 2e-6 * se_z
    return {"label": label, "value": from_z(v + z.mean()), "stderr": stderr, "points": int(len(x)), "curvature": a,
            "clipped": clipped, "z_range": [lo + z.mean(), hi + z.mean()],
            "downweighted": int(np.sum(w < 0.5))}  # fmt: skip
