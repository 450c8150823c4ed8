"""Chaos diagnostics for trajectory sensitivities: growth of ‖dx_t/dθ‖, finite-time Lyapunov estimate, verdict.

Molecular dynamics is chaotic: a perturbation of θ displaces the trajectory by dx_t/dθ, which grows like
e^{λ t} with λ the largest Lyapunov exponent (docs/sensitivities.md, "Chaos": LJ fluid ≈ 3.7/τ; ‖dx_t/dε‖ 7e1
at 200 steps, 3e16 at 2,000; float32 tangents overflow after ~20 τ). The tangent is still the exact derivative of *this*
noisy trajectory, but it stops being useful for ensemble averages: the pathwise estimate of d⟨A⟩/dθ becomes
a sum of huge terms of random sign whose variance grows like e^{2λt}. The finite-time estimate fitted here::

    ln ‖dx_t/dθ_p‖ ≈ λ_p t + c_p      (least squares over the frames after the first ``skip`` fraction)
    λ = max_p λ_p,   amplification over the run A = exp(λ · T)

The verdict (:func:`assess`): pathwise gradients are trusted when the tangents stayed finite and
λ · T ≤ ln(``max_amplification``) (default 100×); otherwise the fluctuation estimator (equilibrium sampling) is
recommended, with reweighting for small finite steps Δθ (:mod:`dmd.estimators`), and the horizon
ln(``max_amplification``)/λ up to which single-trajectory sensitivities are still meaningful is reported.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["ChaosReport", "finite_time_lyapunov", "assess"]

DEFAULT_MAX_AMPLIFICATION = 100.0


@dataclasses.dataclass(frozen=True)
class ChaosReport:
    """Outcome of :func:`assess`.

    Attributes:
      lyapunov: finite-time Lyapunov estimate, 1/ps (NaN if too few usable frames).
      amplification: exp(λ · T) over the run (≥ 1 reported as is; < 1 means decaying tangents).
      horizon_ps: time over which tangents grow by ``max_amplification`` (inf when λ ≤ 0).
      pathwise_ok: whether pathwise (tangent) gradients of time averages can be trusted for this run.
      trust: "pathwise" or "fluctuation".
      advice: a sentence for the run summary saying which estimator to trust and why.
      warnings: messages for the user (overflowing tangents, chaos).
    """

    lyapunov: float
    amplification: float
    horizon_ps: float
    pathwise_ok: bool
    trust: str
    advice: str
    warnings: tuple[str, ...]


def finite_time_lyapunov(times, growth, *, skip: float = 0.25) -> float:
    """Largest finite-time Lyapunov exponent from the growth of ‖dx_t/dθ‖.

    Args:
      times: ``[F]`` ps.
      growth: ``[F]`` or ``[F, P]`` ‖dx_t/dθ_p‖ (any unit: only its logarithmic slope matters).
      skip: fraction of the run dropped at the start (dx_0/dθ = 0: the first frames grow polynomially).

    Returns:
      max over p of the least-squares slope of ln ‖dx_t/dθ_p‖ against t, 1/ps; NaN with fewer than 3 usable
      (finite, positive) frames.
    """
    t = np.asarray(times, float)
    g = np.asarray(growth, float)
    g = g[:, None] if g.ndim == 1 else g
    keep_t = t >= t[0] + skip * (t[-1] - t[0]) if len(t) > 1 else np.ones_like(t, bool)
    slopes = []
    for p in range(g.shape[1]):
        ok = keep_t & np.isfinite(g[:, p]) & (g[:, p] > 0)
        if ok.sum() < 3:
            continue
        slopes.append(np.polyfit(t[ok], np.log(g[ok, p]), 1)[0])
    return float(max(slopes)) if slopes else float("nan")


def assess(
    times,
    growth,
    *,
    dtype=np.float64,
    first_nonfinite_frame: int | None = None,
    steps_per_frame: int = 1,
    max_amplification: float = DEFAULT_MAX_AMPLIFICATION,
) -> ChaosReport:
    """Judge whether pathwise sensitivities are meaningful and say which estimator to trust.

    Args:
      times: ``[F]`` ps; growth: ``[F, P]`` ‖dx_t/dθ_p‖ (nm per unit θ_p).
      dtype: the tangents' dtype (for the float32 overflow forecast).
      first_nonfinite_frame: first frame whose tangents were inf/NaN, or None.
      steps_per_frame: steps between frames (to report the step of an overflow).
      max_amplification: tangent growth over the run tolerated for pathwise gradients.
    """
    times = np.asarray(times, float)
    growth = np.asarray(growth, float)
    growth = growth[:, None] if growth.ndim == 1 else growth
    msgs = []
    if first_nonfinite_frame is not None:
        t_bad = times[first_nonfinite_frame]
        msgs.append(
            f"dx/dθ became non-finite (overflow) by frame {first_nonfinite_frame} (step "
            f"{(first_nonfinite_frame + 1) * steps_per_frame}, t = {t_bad:.4g} ps) in {np.dtype(dtype).name}: "
            "sensitivities from there on are meaningless; use float64 (dmd --x64), a shorter run, or the "
            "fluctuation / reweighting estimators (dmd.estimators)"
        )
        usable = slice(0, first_nonfinite_frame)
    else:
        usable = slice(None)
    lam = finite_time_lyapunov(times[usable], growth[usable]) if len(times[usable]) >= 3 else float("nan")
    duration = float(times[-1]) if len(times) else 0.0
    log_cap = math.log(max_amplification)
    amplification = math.exp(min(lam * duration, 700.0)) if math.isfinite(lam) else float("nan")
    horizon = log_cap / lam if math.isfinite(lam) and lam > 0 else math.inf
    chaotic = math.isfinite(lam) and lam * duration > log_cap
    pathwise_ok = first_nonfinite_frame is None and not chaotic
    if chaotic:
        msgs.append(
            f"‖dx/dθ‖ grows exponentially: finite-time Lyapunov λ ≈ {lam:.3g}/ps, ×{amplification:.3g} over "
            f"{duration:.4g} ps; single-trajectory (pathwise) gradients are only meaningful for horizons "
            f"≲ {horizon:.3g} ps (×{max_amplification:g} growth)"
        )
    if first_nonfinite_frame is None and np.dtype(dtype) == np.float32 and math.isfinite(lam) and lam > 0:
        g_end = float(np.nanmax(growth[-1])) if len(growth) else 0.0
        if g_end > 0:
            t_over = duration + (math.log(3e38) - math.log(g_end)) / lam
            if t_over < 2 * duration:
                msgs.append(f"float32 tangents will overflow at t ≈ {t_over:.3g} ps at this growth rate; use --x64")
    if pathwise_ok:
        lam_txt = "not measurable (too few frames)" if not math.isfinite(lam) else f"{lam:.3g}/ps"
        advice = (
            f"trust: pathwise. Tangents stayed finite and bounded (λ {lam_txt}, growth ×{amplification:.3g} over "
            f"{duration:.4g} ps ≤ ×{max_amplification:g}); pathwise d⟨A⟩/dθ = ⟨∂A/∂x·dx/dθ + ∂A/∂θ⟩ is valid here. "
            "The fluctuation estimator is an independent check once the run samples equilibrium."
        )
        trust = "pathwise"
    else:
        why = "tangents overflowed" if first_nonfinite_frame is not None else f"tangents grew ×{amplification:.3g}"
        advice = (
            f"trust: fluctuation. Pathwise gradients are meaningless for this run ({why}; λ ≈ {lam:.3g}/ps, "
            f"horizon ≈ {horizon:.3g} ps). Use d⟨A⟩/dθ = ⟨∂A/∂θ⟩ − β cov(A, ∂U/∂θ) on equilibrated frames "
            "(dmd.estimators.fluctuation_gradient), or reweighting for a small Δθ while Kish N_eff stays high."
        )
        trust = "fluctuation"
    return ChaosReport(lam, amplification, horizon, pathwise_ok, trust, advice, tuple(msgs))
