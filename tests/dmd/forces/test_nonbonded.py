"""The real-space PME kernel's erfc (dmd.forces.nonbonded.erfc_and_gaussian): exact in float64, float32 round-off
in float32."""

import math

import jax.numpy as jnp
import numpy as np

from dmd.forces.nonbonded import erfc_and_gaussian


def test_float32_erfc_within_float32_rounding_of_the_coulomb_term():
    x = np.linspace(0.0, 4.0, 4001)
    exact = np.array([math.erfc(v) for v in x])
    erfc, gauss = erfc_and_gaussian(jnp.asarray(x, jnp.float32))
    assert erfc.dtype == jnp.float32
    # Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7, plus float32 rounding of its polynomial in t near x = 0
    # (measured 4.1e-7 at x = 0.045; jax's own float32 erfc: 1e-7): 5e-7 = 4 float32 ulps of erfc(0) = 1
    assert np.max(np.abs(np.asarray(erfc, np.float64) - exact)) < 5e-7
    # float32 x² carries a relative rounding of 6e-8, which exp(−x²) turns into x²·6e-8 <= 1e-6 at x = 4
    np.testing.assert_allclose(np.asarray(gauss), np.exp(-x * x), rtol=2e-6, atol=1e-12)


def test_float64_erfc_is_exact():
    x = np.linspace(0.0, 4.0, 401)
    erfc, gauss = erfc_and_gaussian(jnp.asarray(x, jnp.float64))  # tests run with x64 on (tests/conftest.py)
    np.testing.assert_allclose(np.asarray(erfc), [math.erfc(v) for v in x], rtol=1e-14, atol=0)
    np.testing.assert_allclose(np.asarray(gauss), np.exp(-x * x), rtol=1e-15, atol=0)


def _random_charged_pairs(seed, n=300, box=(2.0, 2.1, 2.2), r_list=0.7):
    """(pos, box, q, σ, √ε, near [n, n] bool: pairs within ``r_list`` nm) of ``n`` random atoms, float64."""
    rng = np.random.default_rng(seed)
    box = np.asarray(box)
    pos = jnp.asarray(rng.uniform(0, 1, (n, 3)) * box)
    q = jnp.asarray(rng.normal(0, 0.5, n))
    sig = jnp.asarray(rng.uniform(0.1, 0.2, n))
    seps = jnp.asarray(rng.uniform(0.1, 0.5, n))
    d = np.asarray(pos)[None] - np.asarray(pos)[:, None]
    d -= box * np.round(d / box)
    near = (np.sum(d * d, axis=-1) < r_list**2) & ~np.eye(n, dtype=bool)
    return pos, box, q, sig, seps, near


def _table(mask):
    """``[n, width]`` int32 rows of the True columns of ``mask``, padded with n (dmd.forces.neighbors' layout)."""
    n = mask.shape[0]
    idx = np.full((n, mask.sum(1).max()), n, dtype=np.int32)
    for r in range(n):
        js = np.nonzero(mask[r])[0]
        idx[r, : len(js)] = js
    return jnp.asarray(idx)


def test_rows_sharded_over_devices_equal_one_device():
    import jax

    from dmd.forces.nonbonded import pair_energy_full

    if jax.device_count() < 2:  # tests/conftest.py asks for 4 host devices
        import pytest

        pytest.skip("needs 2 devices")
    pos, box, q, sig, seps, near = _random_charged_pairs(1)
    idx = _table(near)
    out = []
    for k in (1, 2):
        pair = pair_energy_full("PME", 0.6, alpha=3.5, row_shards=k)
        out.append(
            jax.jit(jax.value_and_grad(pair, argnums=(0, 3)))(pos, jnp.asarray(box), jnp.asarray(idx), q, sig, seps)
        )
    (e1, (gx1, gq1)), (e2, (gx2, gq2)) = out
    # the same pair terms summed per device then added: float64 summation order only
    assert abs(float(e2 - e1)) <= 1e-12 * abs(float(e1))
    np.testing.assert_allclose(np.asarray(gx2), np.asarray(gx1), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(np.asarray(gq2), np.asarray(gq1), rtol=1e-12, atol=1e-9)


def test_half_list_equals_full_list_energy_and_every_gradient():
    # a half list (each pair once, the partner's share scattered inside the block loop) must give the full list's
    # energy and gradients w.r.t. positions, box, q, σ, √ε (float64: summation order only), on one device and with
    # rows over two (where the gradients become sums over the shards)
    import jax

    from dmd.forces.nonbonded import pair_energy_full

    pos, box, q, sig, seps, near = _random_charged_pairs(2)
    i, j = np.nonzero(near)
    once = np.zeros_like(near)
    once[i, j] = np.where((i + j) % 2 == 0, j > i, j < i)  # dmd.forces.neighbors' parity rule (full=False)
    assert once.sum() * 2 == near.sum()

    args = (pos, jnp.asarray(box))
    grad = jax.value_and_grad(lambda p, b, idx, q, s, e, f: f(p, b, idx, q, s, e), argnums=(0, 1, 3, 4, 5))
    full = pair_energy_full("PME", 0.6, alpha=3.5)
    e0, g0 = jax.jit(lambda *a: grad(*a, full))(*args, _table(near), q, sig, seps)
    shards = (1, 2) if jax.device_count() >= 2 else (1,)  # tests/conftest.py asks for 4 host devices
    for k in shards:
        half = pair_energy_full("PME", 0.6, alpha=3.5, row_shards=k, half=True)
        e1, g1 = jax.jit(lambda *a, half=half: grad(*a, half))(*args, _table(once), q, sig, seps)
        assert abs(float(e1 - e0)) <= 1e-12 * abs(float(e0))
        for a, b in zip(g1, g0, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-9)
