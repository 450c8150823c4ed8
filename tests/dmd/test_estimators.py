"""Ensemble-observable gradients (dmd.estimators) against known answers, float64.

* Harmonic oscillator, 1D and 3D: ⟨|x|²⟩ = d·kT/k, so d⟨|x|²⟩/dk = −d·kT/k². The seed-form integrator samples
  a slightly different stationary distribution (finite δt); its exact stationary ⟨x²⟩ follows from the
  discrete Lyapunov equation of the linear recursion, which is the oracle the three estimators must match
  within their error bars (and which is itself within 1% of kT/k).
* LJ fluid: d⟨U⟩/dε against central differences of long-run averages at ε(1 ± δ) with block-averaged error bars.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.estimators import block_average, boltzmann_reweight, ensemble_gradients, kish_neff
from dmd.integrators import langevin_coefficients
from dmd.params import select
from dmd.sensitivity import run_sensitivities

HO = dict(k=100.0, mass=1.0, temperature=300.0, dt=0.005, friction=10.0)  # ω = 10/ps, ωδt = 0.05, γ = ω


def _discrete_x2(k, *, mass, temperature, dt, friction):
    """Exact stationary ⟨x²⟩ (one dof) of v' = a v − b k x + c n, x' = x + δt v' (eq. 4-5, linear force)."""
    kT = KB_KJ_PER_MOL_K * temperature
    a, b, c = langevin_coefficients(dt, friction, kT, jnp.asarray([mass]))
    b, c = b[0, 0], c[0, 0]
    m = jnp.array([[1 - dt * b * k, dt * a], [-b * k, a]])  # s' = M s + g n for s = (x, v)
    g = jnp.array([dt * c, c])
    # Σ = M Σ Mᵀ + g gᵀ  ⇔  (I − M⊗M) vec Σ = vec(g gᵀ)
    sigma = jnp.linalg.solve(jnp.eye(4) - jnp.kron(m, m), jnp.outer(g, g).ravel())
    return sigma[0]


@pytest.mark.parametrize("dim", [1, 3])
def test_harmonic_oscillator_all_three_estimators(dim):
    k, kT = HO["k"], KB_KJ_PER_MOL_K * HO["temperature"]
    system = models.harmonic_oscillator(1, dim=dim, k=k, mass=HO["mass"], dtype=jnp.float64)
    run = {key: HO[key] for key in ("temperature", "dt", "friction")}
    res = run_sensitivities(system, ["spring/k/0"], steps=200_000, report_every=10, **run)
    grads = ensemble_gradients(system, res, lambda p, x, **kw: jnp.sum(x * x), equilibration=0.05, n_blocks=40)

    opts = {key: HO[key] for key in ("mass", "temperature", "dt", "friction")}
    exact_x2 = dim * float(_discrete_x2(k, **opts))
    exact = dim * float(jax.grad(_discrete_x2)(k, **opts))
    analytic = -dim * kT / k**2
    # finite-δt bias of the seed-form integrator at ωδt = 0.05 is below 1% (continuum limit kT/k)
    assert abs(exact / analytic - 1) < 0.01 and abs(exact_x2 / (dim * kT / k) - 1) < 0.01
    x2, x2_err = block_average(np.sum(res.positions**2, axis=(1, 2))[len(res.positions) // 20 :], 40)
    assert abs(x2 - exact_x2) < 4 * x2_err  # the sampled ensemble itself: 4σ
    for name, est in grads.items():
        print(f"{dim}D {name}: {est.value[0]:.5g} ± {est.stderr[0]:.2g} (exact {exact:.5g}, kT/k² {analytic:.5g})")
        # statistical agreement at 4 standard errors; the error bar must be tight enough (< 10%) to mean something
        assert abs(est.value[0] - exact) < 4 * est.stderr[0], name
        assert est.stderr[0] < 0.1 * abs(exact), name
    assert grads["reweighting"].n_eff[0] > 0.9 * (len(res.positions) * 0.95)  # δ = 1e-3 k: weights near uniform
    # harmonic dynamics are not chaotic: the run summary trusts the pathwise estimator
    assert res.estimator_advice.startswith("trust: pathwise")


@pytest.fixture(scope="module")
def lj_runs():
    """Three long LJ runs (64 atoms, T* = 1, ρ* = 0.8) at ε and ε(1 ± δ), same noise."""
    lj = models.lj_fluid(64, density=0.8, cutoff=0.6, switch_distance=0.5, skin=0.1, dtype=jnp.float64)
    names = ["lj/epsilon/A"]
    sel = select(lj.param_labels, names)
    run = dict(steps=30_000, dt=0.01, temperature=120.0, friction=5.0, report_every=20)
    eps = float(sel.get(lj.params)[0])
    delta = 0.05 * eps
    res = run_sensitivities(lj, names, **run)
    shifted = {}
    for sign in (1, -1):
        sys_s = dataclasses.replace(lj, params=sel.set(lj.params, jnp.asarray([eps + sign * delta])))
        shifted[sign] = run_sensitivities(sys_s, names, **run)
    return lj, res, shifted, delta


def test_lj_dU_deps_matches_finite_differences_of_long_runs(lj_runs):
    lj, res, shifted, delta = lj_runs
    start = res.n_frames // 10  # equilibration from the lattice start (~30 ps) discarded
    (up, up_err), (um, um_err) = (block_average(shifted[s].energies[start:], 20) for s in (1, -1))
    fd = (up - um) / (2 * delta)
    fd_err = np.hypot(up_err, um_err) / (2 * delta)
    grads = ensemble_gradients(lj, res, None, equilibration=0.1, n_blocks=20)
    for name in ("fluctuation", "reweighting"):
        est = grads[name]
        tol = 4 * np.hypot(est.stderr[0], fd_err)
        print(f"LJ d<U>/deps {name}: {est.value[0]:.5g} ± {est.stderr[0]:.2g}; FD {fd:.5g} ± {fd_err:.2g}")
        # agreement within 4 combined standard errors; both error bars below 5% so the check has teeth
        assert abs(est.value[0] - fd) < tol, name
        assert est.stderr[0] < 0.05 * abs(fd) and fd_err < 0.05 * abs(fd)
    # the LJ fluid is chaotic: over 300 ps the tangents explode, the summary must say not to trust them
    assert res.estimator_advice.startswith("trust: fluctuation")
    assert res.lyapunov > 0.3  # per ps (≈ 1.5/ps measured; docs/sensitivities.md: ≈ 3.7/τ ≈ 1.7/ps)
    print(f"LJ pathwise: {grads['pathwise'].value[0]:.3g} ± {grads['pathwise'].stderr[0]:.3g}")
    assert not grads["pathwise"].stderr[0] < 10 * grads["fluctuation"].stderr[0]  # noise swamps the pathwise value


def test_kish_neff_and_reweighting_weights():
    assert kish_neff(np.ones(50)) == pytest.approx(50.0, rel=1e-12)  # uniform weights: N_eff = N exactly
    assert kish_neff(np.r_[1.0, np.zeros(9)]) == pytest.approx(1.0, rel=1e-12)  # one frame carries everything
    w, neff = boltzmann_reweight(np.array([0.0, np.log(2.0)]), beta=1.0)  # w ∝ exp(−βΔU) = (1, 1/2)
    np.testing.assert_allclose(w, [2 / 3, 1 / 3], rtol=1e-12)
    assert neff == pytest.approx(1.8, rel=1e-12)  # (1)²/(4/9 + 1/9)
