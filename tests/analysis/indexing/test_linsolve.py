"""linsolve.solve_small: the unrolled elimination of the batch programs against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from analysis.indexing.linsolve import solve_small


def test_solve_small_matches_numpy_and_flags_singular_systems():
    rng = np.random.default_rng(3)
    for n in (1, 2, 4, 6, 7):
        a = rng.normal(size=(n, n)) + n * np.eye(n)  # well conditioned: float64 agreement to ~1e-12
        b = rng.normal(size=n)
        x, det = solve_small(jnp.asarray(a), jnp.asarray(b))
        np.testing.assert_allclose(np.asarray(x), np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)
        assert np.isclose(float(det), np.linalg.det(a), rtol=1e-10)
    # a pivot from a lower row (a[0, 0] = 0) and the sign of the swap in the determinant
    x, det = solve_small(jnp.asarray([[0.0, 1.0], [1.0, 0.0]]), jnp.asarray([1.0, 2.0]))
    assert np.allclose(np.asarray(x), [2.0, 1.0]) and float(det) == -1.0
    # singular: det 0, x not finite
    x, det = solve_small(jnp.asarray([[1.0, 2.0], [2.0, 4.0]]), jnp.asarray([1.0, 2.0]))
    assert float(det) == 0.0 and not np.all(np.isfinite(np.asarray(x)))
    # batched under vmap, as in the programs: the same as one by one
    a = rng.normal(size=(5, 6, 6)) + 6 * np.eye(6)
    b = rng.normal(size=(5, 6))
    xs, _ = jax.vmap(solve_small)(jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(xs), np.linalg.solve(a, b[..., None])[..., 0], rtol=1e-10, atol=1e-12)
