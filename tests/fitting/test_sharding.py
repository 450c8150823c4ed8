"""Frame-sharded sufficient statistics (fitting/sharding.py) against the plain numpy sums, float64, on the four
host devices tests/conftest.py forces."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fitting.sharding import frame_mesh, local_stats, shard_frames, sharded_stats_fn

N_FRAMES, N_VOXELS = 10, 7  # 10 frames on 4 devices: two zero rows of padding


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=N_FRAMES), rng.normal(size=(N_FRAMES, 3, N_VOXELS)), rng.normal(size=(3, N_VOXELS))


def test_local_stats_and_its_gradient_are_the_weighted_sum():
    w, z, g = _data()
    s = local_stats(jnp.asarray(w), jnp.asarray(z.reshape(N_FRAMES, -1)))
    # S = Σ_t w_t Z_t; both float64 sums of 10 terms: rounding ~1e-15
    np.testing.assert_allclose(s, np.einsum("t,tkv->kv", w, z), rtol=1e-12, atol=1e-12)
    grad = jax.grad(lambda w_: jnp.sum(local_stats(w_, jnp.asarray(z.reshape(N_FRAMES, -1))) * g))(jnp.asarray(w))
    np.testing.assert_allclose(grad, np.einsum("tkv,kv->t", z, g), rtol=1e-12, atol=1e-12)  # ∂(S·g)/∂w_t = Z_t·g


def test_sharded_stats_pad_the_frames_and_psum_to_the_same_sum():
    assert len(jax.devices()) == 4
    w, z, g = _data(1)
    mesh = frame_mesh()
    z_sh = shard_frames(z, mesh)
    assert z_sh.shape == (12, 3 * N_VOXELS)  # padded to a multiple of the 4 devices
    np.testing.assert_array_equal(np.asarray(z_sh)[N_FRAMES:], 0.0)
    stats = jax.jit(sharded_stats_fn(mesh, N_FRAMES))
    np.testing.assert_allclose(stats(jnp.asarray(w), z_sh), np.einsum("t,tkv->kv", w, z), rtol=1e-12, atol=1e-12)
    grad = jax.grad(lambda w_: jnp.sum(stats(w_, z_sh) * g))(jnp.asarray(w))
    # the gradient flows back through the psum to each device's own frames, padding dropped
    assert grad.shape == (N_FRAMES,)
    np.testing.assert_allclose(grad, np.einsum("tkv,kv->t", z, g), rtol=1e-12, atol=1e-12)
