"""The numba PME kernels (dmd.forces.numba_pme, through dmd.forces.pme_kernel's host functions) against the XLA
charge grid and its transpose on random charges in a box, positions in many periodic images (windows that wrap)."""

import jax
import jax.numpy as jnp
import numpy as np

from dmd.forces.pme import charge_grid
from dmd.forces.pme_kernel import host_gather, host_spread

GRID = (20, 18, 23)
BOX = np.array([2.1, 1.9, 2.4], np.float32)


def _atoms(n=500, seed=0):
    rng = np.random.default_rng(seed)
    pos = ((rng.random((n, 3)) * 3.0 - 1.0) * BOX).astype(np.float32)  # images −1, 0 and 1 of the box
    pos[:3] = [[0.0, 0.0, 0.0], [-1e-9, 2.1, -2.4], [4.2 - 1e-7, 1.9 * 0.5, 2.4 * 0.999999]]  # edges of the grid
    q = rng.normal(size=n).astype(np.float32)
    return pos, q - q.mean()


def test_spread_equals_xla_charge_grid():
    pos, q = _atoms()
    ref = np.asarray(charge_grid(jnp.asarray(q), jnp.asarray(pos), jnp.asarray(BOX), GRID, 5))
    got = host_spread(pos, q, BOX, GRID)
    assert got.shape == GRID and got.dtype == np.float32
    # float32 round-off: t = K·x/L is rounded to an ulp of t (≤ 3K here: 7.6e-6), which moves a weight by ≤ |M'|·δt ≤ δt
    # (fastmath may form x·(1/L) or fuse the recursion's products, XLA does not), times |q|; a wrong window would be
    # off by O(0.1). Measured 1.3e-6.
    atol = float(np.spacing(np.float32(3 * max(GRID)))) * float(np.abs(q).max())
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


def test_gather_equals_the_transpose_of_xla_spreading():
    """Σ_k φ(k) ∂Q(k)/∂x_i: the vector-Jacobian product of the XLA charge grid, weights' derivatives included."""
    pos, q = _atoms(seed=1)
    phi = np.random.default_rng(2).normal(size=GRID).astype(np.float32)
    _, vjp = jax.vjp(lambda y: charge_grid(jnp.asarray(q), y, jnp.asarray(BOX), GRID, 5), jnp.asarray(pos))
    ref = np.asarray(vjp(jnp.asarray(phi))[0])
    got = host_gather(phi, pos, q, BOX)
    assert got.shape == pos.shape and got.dtype == np.float32
    # 125 products φ·M'·M·M per component summed in another order: float32 round-off of Σ|φ q M' M M| · K/L
    scale = np.abs(q)[:, None] * np.abs(phi).max() * np.array(GRID) / BOX
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * scale.max())
