"""analysis.stats, the one home of the Pearson CC and its per-shell forms: against numpy's correlation
coefficient, the weighted formula written out in numpy, and the zero-variance rule (0.0, never NaN)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis import stats


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, 0.6 * x + rng.normal(size=n)


def test_pearson_cc_matches_numpy_with_weights_mask_and_batches():
    x, y = _data()
    cc = float(stats.pearson_cc(jnp.asarray(x), jnp.asarray(y)))
    assert abs(cc - np.corrcoef(x, y)[0, 1]) < 1e-12  # float64: the same sums in another order
    w = np.random.default_rng(1).uniform(0, 2, x.size)
    c = np.cov(x, y, aweights=w)
    want_w = c[0, 1] / np.sqrt(c[0, 0] * c[1, 1])  # weighted means and moments (the bias factors cancel)
    assert abs(float(stats.pearson_cc(jnp.asarray(x), jnp.asarray(y), weights=jnp.asarray(w))) - want_w) < 1e-12
    mask = np.arange(x.size) % 3 != 0
    got_m = float(stats.pearson_cc(jnp.asarray(x), jnp.asarray(y), mask=jnp.asarray(mask)))
    assert abs(got_m - np.corrcoef(x[mask], y[mask])[0, 1]) < 1e-12  # masked elements are dropped
    batch = stats.pearson_cc(jnp.stack([jnp.asarray(x), -jnp.asarray(x)]), jnp.asarray(y))  # last axis reduced
    np.testing.assert_allclose(np.asarray(batch), [cc, -cc], atol=1e-12)
    # float32 inputs stay float32; rounding of 400-term sums in float32 ≈ 1e-6 relative
    cc32 = stats.pearson_cc(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    assert cc32.dtype == jnp.float32 and abs(float(cc32) - cc) < 1e-5


def test_zero_variance_gives_zero_with_a_finite_gradient():
    x, y = _data(50)
    assert float(stats.pearson_cc(jnp.zeros(50), jnp.asarray(y))) == 0.0  # exactly zero variance: exactly 0
    const = jnp.full(50, 3.0)
    # a constant whose weighted mean rounds (3·(1/50)·50 ≠ 3 exactly) leaves a ~1e-16 residue in x − ⟨x⟩: still
    # exactly 0.0, as the docstring promises (it was ±5e-17; numpy's corrcoef gives NaN here), in float64 and
    # float32, weighted or not, for constants whose means round (0.1, 1/3, 7.7, π)
    w = jnp.asarray(np.random.default_rng(1).uniform(0, 1, 50))
    for c in (3.0, 0.1, 1 / 3, 7.7, np.pi):
        for dtype in (jnp.float64, jnp.float32):
            cst, yy, xx = jnp.full(50, c, dtype), jnp.asarray(y, dtype), jnp.asarray(x, dtype)
            for weights in (None, w.astype(dtype)):
                assert float(stats.pearson_cc(cst, yy, weights=weights)) == 0.0
                assert float(stats.pearson_cc(xx, cst, weights=weights)) == 0.0
    one = np.zeros(50, bool)
    one[7] = True
    assert float(stats.pearson_cc(jnp.asarray(x), jnp.asarray(y), mask=jnp.asarray(one))) == 0.0  # < 2 elements
    g = jax.grad(lambda v: stats.pearson_cc(v, jnp.asarray(y)))(const)
    assert np.all(np.isfinite(np.asarray(g)))  # the double-where keeps optimisers alive at a constant start


def test_shells_hold_equal_counts_and_per_shell_cc_matches_numpy():
    rng = np.random.default_rng(3)
    inv_d2 = rng.uniform(0.01, 0.25, 600)  # 1/d² in Å⁻² (d from 2 Å to 10 Å)
    edges = stats.shell_edges(inv_d2, 6)
    shells = stats.shell_index(inv_d2, edges)
    np.testing.assert_array_equal(np.bincount(shells, minlength=6), np.full(6, 100))  # 600 points, 6 equal shells
    assert np.all(np.diff(edges) > 0)
    x = rng.normal(size=600) + 5 * shells  # a shell-dependent mean that the anisotropic CC must remove
    y = 0.5 * (x - 5 * shells) + rng.normal(size=600) + 3 * shells
    per = np.asarray(stats.cc_per_shell(jnp.asarray(x), jnp.asarray(y), jnp.asarray(shells), 6))
    want = [np.corrcoef(x[shells == s], y[shells == s])[0, 1] for s in range(6)]
    np.testing.assert_allclose(per, want, atol=1e-12)
    xa = np.asarray(stats.shell_mean_subtract(jnp.asarray(x), jnp.asarray(shells), 6))
    for s in range(6):
        assert abs(xa[shells == s].mean()) < 1e-12  # each shell's mean removed
        np.testing.assert_allclose(xa[shells == s], x[shells == s] - x[shells == s].mean(), atol=1e-12)
