"""Monte Carlo barostat on triclinic boxes (dmd.barostat with reduced ``[3, 3]`` boxes): an ideal gas in a
monoclinic cell samples the isobaric Gamma law of V with the cell angles fixed, molecules keep their fractional
centres, and moves that would leave OpenMM's reduced form are rejected."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.barostat import MoveSettings, barostat_init, monte_carlo_volume_move
from dmd.base.units import BAR_NM3_IN_KJ_PER_MOL
from dmd.estimators import block_average
from dmd.space import box_volume, check_reduced_box, to_fractional


def _monoclinic(a, b, c, beta_deg):
    beta = np.radians(beta_deg)
    return np.array([[a, 0, 0], [0, b, 0], [c * np.cos(beta), 0, c * np.sin(beta)]])


def _angles(box):
    n = np.linalg.norm(box, axis=-1)
    cos = lambda i, j: np.sum(box[..., i, :] * box[..., j, :], -1) / (n[..., i] * n[..., j])  # noqa: E731
    return np.degrees(np.arccos(np.stack([cos(1, 2), cos(0, 2), cos(0, 1)], -1)))


@pytest.mark.parametrize("anisotropic", [False, True])
def test_ideal_gas_in_monoclinic_cell(anisotropic):
    """U = 0: p(V) ∝ V^N exp(−PV/kT) (Gamma law, <V> = (N+1)kT/P) whichever box vectors a move scales;
    the angles stay those of the start (β = 100°), molecules keep fractional centres, boxes stay reduced."""
    n, kT, p_bar = 20, 2.494, 100.0
    p = p_bar * BAR_NM3_IN_KJ_PER_MOL
    v_mean = (n + 1) * kT / p
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    box0 = _monoclinic(1.0, 1.1, 1.2, 100.0)
    box0 = jnp.asarray(box0 * (v_mean / box_volume(box0)) ** (1 / 3), dtype)
    frac0 = np.random.default_rng(0).uniform(0, 1, (n, 3))
    x0 = jnp.asarray(frac0 @ np.asarray(box0), dtype)
    mol = jnp.arange(n, dtype=jnp.int32)

    def step(carry, key):
        x, box, bs = carry
        _, x, box, _, _, bs = monte_carlo_volume_move(
            key, bs, x, box, 0.0, lambda a, b: (jnp.zeros((), a.dtype), None),
            MoveSettings(mol, n, p_bar, kT),
        )  # fmt: skip
        return (x, box, bs), box

    keys = jax.random.split(jax.random.PRNGKey(1), 30000)
    init = (x0, box0, barostat_init(box0, dtype, anisotropic=anisotropic))
    (x_end, box_end, bs), boxes = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(init, keys)
    boxes = np.asarray(boxes, float)
    vols = boxes[:, 0, 0] * boxes[:, 1, 1] * boxes[:, 2, 2]
    mean, se = block_average(vols[2000:], 40)
    assert abs(mean - v_mean) < 4 * se + 1e-3 * v_mean, (mean, se, v_mean)
    assert np.var(vols[2000:]) == pytest.approx((n + 1) * (kT / p) ** 2, rel=0.15)
    # float32: angles from scaled rows stay within 1e-3 degrees of the start
    assert np.abs(_angles(boxes) - _angles(np.asarray(box0, float))).max() < 1e-3
    assert np.all(boxes[:, 0, 1:] == 0) and np.all(boxes[:, 1, 2] == 0)  # a along x, b in xy: OpenMM's frame
    for bx in boxes[::500]:
        check_reduced_box(bx)
    frac_end = np.asarray(to_fractional(x_end, box_end), float)
    np.testing.assert_allclose(frac_end, frac0, atol=1e-4)  # fractional centres kept (float32)
    if anisotropic:  # the three box lengths changed independently (ratios are not constant)
        lengths = np.linalg.norm(boxes[2000:], axis=-1)
        assert np.std(lengths[:, 0] / lengths[:, 1]) > 0.01


def test_moves_out_of_reduced_form_are_rejected():
    """A cell at the edge of the reduced form (|b_x| = 0.49 a_x): an anisotropic move that shrinks a or grows b
    past |b_x| ≤ a_x/2 is rejected however favourable its energy; all other moves are accepted."""
    box = jnp.asarray([[2.0, 0, 0], [0.98, 2.0, 0], [0.0, 0.0, 2.0]], jnp.float32)
    x = jnp.asarray([[0.5, 0.5, 0.5]], jnp.float32)
    bs = barostat_init(box, jnp.float32, anisotropic=True).replace(volume_scale=jnp.full((3,), 0.4, jnp.float32))
    n_rejected = 0
    for i in range(60):
        acc, _, bn, *_ = monte_carlo_volume_move(
            jax.random.PRNGKey(i), bs, x, box, 0.0, lambda a, b: (-1e6 * jnp.ones((), a.dtype), None),
            MoveSettings(jnp.zeros(1, jnp.int32), 1, 1.0, 2.5, adapt=False),
        )  # fmt: skip
        k3 = jax.random.split(jax.random.PRNGKey(i), 3)[2]
        axis = int(jax.random.randint(k3, (), 0, 3))
        k1 = jax.random.split(jax.random.PRNGKey(i), 3)[0]
        dv = 0.4 * (2.0 * float(jax.random.uniform(k1, (), jnp.float32)) - 1.0)
        s = (8 + dv) / 8  # volume ratio = the picked vector's scale
        leaves = (axis == 0 and 0.98 > 0.5 * 2.0 * s) or (axis == 1 and 0.98 * s > 0.5 * 2.0)
        assert bool(acc) == (not leaves), (i, axis, dv)
        n_rejected += leaves
    assert n_rejected >= 5


def test_flexible_move_samples_the_flexible_cell_weight():
    """OpenMM's flexible-cell rule targets exp(−β(U + PV)) V^(N−2) a_x² b_y over reduced boxes. With a harmonic box
    energy U = k/2 [Σ (h_ii − 1 nm)² + Σ h_ij²] (σ = sqrt(kT/k) = 0.2 nm), N = 5 molecules and P → 0, the diagonal
    elements are independent with weights a^5 g(a), b^4 g(b), c^3 g(c) (g the Gaussian): their means from 1D
    quadrature (1.17, 1.14, 1.11 nm) differ from the Gaussian's 1 nm by the V^(N−2) and a_x² b_y terms, so a rule
    without either fails. Fixed step δ = 0.15 nm (no adaptation), 40,000 moves; block standard errors."""
    from dmd.barostat import flexible_init, monte_carlo_flexible_move

    kT, k = 2.5, 2.5 / 0.04
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    off = (np.array([1, 2, 2]), np.array([0, 0, 1]))

    def u_box(b):
        return 0.5 * k * (jnp.sum((jnp.diagonal(b) - 1.0) ** 2) + jnp.sum(b[off] ** 2))

    box0 = jnp.eye(3, dtype=dtype)
    x0 = jnp.zeros((5, 3), dtype)
    mol = jnp.arange(5, dtype=jnp.int32)
    bs0 = flexible_init(box0, dtype).replace(volume_scale=jnp.asarray(0.15, dtype))

    def step(carry, key):
        x, box, u, bs = carry
        _, x, box, u, _, bs = monte_carlo_flexible_move(
            key, bs, x, box, u, lambda a, b: (u_box(b), None),
            MoveSettings(mol, 5, 1e-9, kT, adapt=False),
        )  # fmt: skip
        return (x, box, u, bs), box

    keys = jax.random.split(jax.random.PRNGKey(7), 40000)
    (_, _, _, bs), boxes = jax.jit(lambda c, k: jax.lax.scan(step, c, k))((x0, box0, u_box(box0), bs0), keys)
    boxes = np.asarray(boxes, float)[2000:]
    grid = np.linspace(1e-4, 3.0, 30001)
    g = np.exp(-((grid - 1.0) ** 2) / (2 * 0.04))
    for i, power in enumerate((5, 4, 3)):  # V^(N-2) = (abc)^3 times a^2 b
        w = grid**power * g
        want = np.sum(grid * w) / np.sum(w)
        mean, se = block_average(boxes[:, i, i], 40)
        assert abs(mean - want) < 4 * se + 2e-3, (i, mean, se, want)
    assert 0.2 < int(bs.total_accepted) / int(bs.total_attempted) < 0.9
    for bx in boxes[::997]:
        check_reduced_box(bx)  # every accepted box in OpenMM's reduced form
    assert np.std(boxes[:, 1, 0]) > 0.1  # the shear elements move


def test_flexible_refuses_a_scaled_cell_list():
    from dmd.base.errors import UserInputError
    from dmd.models import lj_fluid
    from dmd.npt import make_npt

    system = lj_fluid(108, density=0.5, temperature=200.0)
    with pytest.raises(UserInputError, match="flexible barostat needs a box-aware"):
        make_npt(system, dt=0.01, temperature=200.0, friction=1.0, pressure_bar=100.0, flexible=True)
