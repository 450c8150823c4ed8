"""Density targets at constant pressure (fitting.npt_density): the fluctuation estimator against numpy and bad
input. The recovery of an LJ σ from ρ at fixed P (start 20% off; measured σ_fit/σ_true = 1.009) is
benchmarks/bench_npt_density.py (146 s: too slow for the suite)."""

from __future__ import annotations

import pytest

from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.lj_eos import state_point
from dmd.models import ARGON, lj_fluid
from fitting.npt_density import fit_density

SIG = ARGON["sigma"]
T, P = state_point(2.0, 1.7668, SIG, ARGON["epsilon"])  # T* = 2, P* = 1.7668


def _fluid(sigma):
    # N = 108, r_c = 2σ_true and skin 0.1 nm absolute (the list's r_c/(1 - margin) + skin must fit in half the box)
    return lj_fluid(108, density=0.55, temperature=T, cutoff=2.0 * SIG, skin=0.1, sigma=sigma)


def test_bad_density_target():
    with pytest.raises(UserInputError, match="positive density"):
        fit_density(_fluid(SIG), ["lj/sigma/A"], -1.0, pressure_bar=P, temperature=T, n_cycles=10)


def test_density_gradient_is_minus_beta_cov_rho_dudtheta():
    """density_estimate's gradient equals −β cov(ρ, ∂U/∂θ) from numpy on the same frames (round-off), ρ = M/V.
    Synthetic frames where ∂U/∂θ rises with ρ: the gradient must be negative."""
    import numpy as np

    from dmd.barostat import density_g_cm3
    from fitting.npt_density import density_estimate

    rng = np.random.default_rng(0)
    vol = 30.0 + rng.normal(0.0, 0.5, 400)
    mass = 108 * 39.948
    rho = density_g_cm3(mass, vol)
    du = np.stack([50.0 * rho + rng.normal(0.0, 1.0, 400), rng.normal(0.0, 1.0, 400)], axis=1)
    est = density_estimate(vol, du, mass, T, n_blocks=10)
    beta = 1.0 / (KB_KJ_PER_MOL_K * T)
    ref = -beta * np.array([np.mean((rho - rho.mean()) * (d - d.mean())) for d in du.T])
    assert abs(est.mean - rho.mean()) < 1e-12
    np.testing.assert_allclose(est.gradient, ref, rtol=1e-6, atol=1e-9)
    assert est.gradient[0] < 0
