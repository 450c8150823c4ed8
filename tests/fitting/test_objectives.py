"""Objectives of fitting.objectives: derivatives vs central differences (float64), closed forms, invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from analysis import stats
from fitting import objectives as ob


def _xy(m=300, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, m)
    y = 3.0 * x + 5.0 + rng.normal(scale=0.8, size=m)
    y[:5] += 40.0  # a few outlier voxels (Student-t must shrug them off)
    inv_d2 = rng.uniform(0.01, 0.25, m)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype), inv_d2


@pytest.mark.parametrize("name", ob.OBJECTIVES)
def test_gradient_matches_central_differences(name):
    x, y, inv_d2 = _xy()
    shells = stats.shell_index(inv_d2, stats.shell_edges(inv_d2, 5))
    sigma = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, x.shape[0]))
    w = jnp.asarray(ob.power_weights(inv_d2, 1.0))
    mask = jnp.asarray(np.arange(x.shape[0]) % 4 != 0)
    f = ob.make_objective(name, y, weights=w, sigma=sigma, shells=shells, n_shells=5)
    fx = jax.jit(lambda x: f(x, mask))
    # float64 central differences: relative agreement 1e-5 is far below the objectives' curvature scale
    check_grads(fx, (x,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)
    assert np.isfinite(float(fx(x)))


def test_student_profile_gradient_is_envelope_exact():
    """The stop-gradient (envelope theorem) derivative equals the derivative of the fully profiled NLL."""
    x, y, _ = _xy(seed=3)
    f = lambda x: ob.student_t_nll(x, y, nu=4.0, n_iter=200)
    g = jax.grad(f)(x)
    v = jnp.asarray(np.random.default_rng(2).normal(size=x.shape[0]))
    eps = 1e-5
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)  # re-profiles (a, b, s) at each side
    # relative 1e-5: EM converged to ~1e-10, FD truncation O(eps²)
    np.testing.assert_allclose(float(jnp.dot(g, v)), float(fd), rtol=1e-5)


def test_gaussian_closed_form_matches_least_squares():
    x, y, _ = _xy(seed=4)
    a, b = ob.fit_scale_offset(x, y, jnp.ones_like(x))
    ref = np.linalg.lstsq(np.stack([np.asarray(x), np.ones(x.shape[0])], 1), np.asarray(y), rcond=None)[0]
    np.testing.assert_allclose([float(a), float(b)], ref, rtol=1e-10)  # same normal equations, float64
    r = np.asarray(y) - ref[0] * np.asarray(x) - ref[1]
    np.testing.assert_allclose(float(ob.gaussian_nll(x, y)), 0.5 * np.log(np.mean(r**2)), rtol=1e-10)


def test_scale_offset_invariance():
    x, y, _ = _xy(seed=5)
    for name in ("cc", "gaussian", "student"):
        f = ob.make_objective(name, y)
        # the data fix neither the scale nor the offset of x′: objectives must ignore them (float64 1e-9)
        np.testing.assert_allclose(float(f(7.0 * x + 11.0)), float(f(x)), rtol=1e-9, atol=1e-9)


def test_aniso_cc_ignores_shell_means_and_float32_kept():
    x, y, inv_d2 = _xy(seed=6, dtype=np.float32)
    shells = stats.shell_index(inv_d2, stats.shell_edges(inv_d2, 6))
    f = jax.jit(lambda x: ob.neg_cc_aniso(x, y, shells=jnp.asarray(shells), n_shells=6))
    shifted = x + jnp.asarray(np.arange(6, dtype=np.float32) * 10.0)[shells]  # add a constant per shell
    np.testing.assert_allclose(float(f(shifted)), float(f(x)), atol=1e-5)  # float32 sums over 300 voxels
    assert f(x).dtype == jnp.float32
    assert jax.grad(f)(x).dtype == jnp.float32


def test_unknown_objective_raises():
    with pytest.raises(ValueError, match="choose one of"):
        ob.make_objective("chi2", jnp.ones(3))
