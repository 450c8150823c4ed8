"""Chaos diagnostics (dmd.chaos) against analytic growth rates.

The oracle for the Lyapunov estimate is the unstable (inverted) harmonic oscillator x'' = ω²x: its hyperbolic
fixed point has the exact exponent λ = ω, and its tangent dx_t/dx₀ = cosh(ωt) starts flat, as an MD tangent
does (dx_0/dθ = 0), which is what the ``skip`` fraction is for.
"""

from __future__ import annotations

import numpy as np
import pytest

from dmd.chaos import assess, finite_time_lyapunov


def test_chaos_verdict_from_synthetic_growth():
    t = np.linspace(0.1, 10.0, 100)
    growth = np.exp(2.0 * t)[:, None]  # exact exponential growth, λ = 2/ps
    assert finite_time_lyapunov(t, growth) == pytest.approx(2.0, rel=1e-10)
    rep = assess(t, growth)
    assert not rep.pathwise_ok and rep.trust == "fluctuation" and rep.horizon_ps == pytest.approx(np.log(100) / 2)
    rep = assess(t, (1 + 0.1 * np.sin(t))[:, None])  # bounded tangents
    assert rep.pathwise_ok and rep.trust == "pathwise" and not rep.warnings


def test_lyapunov_of_the_inverted_oscillator_is_its_rate():
    omega = 3.0  # 1/ps
    t = np.linspace(0.0, 10.0 / omega, 200)
    dt = t[1] - t[0]
    x, v, tangent = 1.0, 0.0, [1.0]  # the system is linear: its trajectory from x₀ = 1 is the tangent dx_t/dx₀
    for _ in range(len(t) - 1):  # velocity Verlet, ωδt = 0.05
        v += 0.5 * dt * omega**2 * x
        x += dt * v
        v += 0.5 * dt * omega**2 * x
        tangent.append(x)
    # measured 4e-4 below ω: cosh's start (3e-4 after the default skip) and Verlet's O((ωδt)²) phase error
    assert finite_time_lyapunov(t, np.abs(tangent)) == pytest.approx(omega, rel=2e-3)
    assert np.isnan(finite_time_lyapunov(t[:2], np.abs(tangent[:2])))  # fewer than 3 frames: not measurable


def test_overflow_is_reported_at_its_step_and_the_rate_fitted_before_it():
    t = np.linspace(0.1, 10.0, 100)
    rep = assess(t, np.exp(2.0 * t), first_nonfinite_frame=50, steps_per_frame=10)
    assert not rep.pathwise_ok and rep.trust == "fluctuation"
    assert "frame 50 (step 510, t = 5.1 ps)" in rep.warnings[0]  # (frame + 1) · steps per frame
    assert rep.lyapunov == pytest.approx(2.0, rel=1e-10)  # exact exponential on the finite frames


def test_float32_overflow_is_forecast():
    t = np.linspace(0.1, 10.0, 100)
    rep = assess(t, np.exp(8.0 * t), dtype=np.float32)
    # t_over = T + ln(3e38 / g(T)) / λ = 10 + (88.6 − 80) / 8 = 11.07 ps, within 2 T: forecast
    assert "overflow at t ≈ 11.1 ps" in rep.warnings[-1]
    assert not any("overflow" in w for w in assess(t, np.exp(8.0 * t), dtype=np.float64).warnings)
