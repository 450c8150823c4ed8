"""fitting.forcefield_estimators.StreamingCovariance: the fluctuation Jacobian −β cov(o, ∂U/∂z) accumulated over
frame chunks equals the batch estimator (fluctuation_jacobian on all frames) to round-off, for uneven chunks and
offset means (where a naive one-pass Σxy − n x̄ȳ would lose digits)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dmd.base.units import KB_KJ_PER_MOL_K
from fitting.forcefield_estimators import (
    StreamingCovariance,
    cross_replica_gradient,
    fluctuation_jacobian,
    pathwise_jacobian,
)


def test_streaming_covariance_equals_batch():
    rng = np.random.default_rng(3)
    f, k, p = 1000, 37, 3
    o = 1e3 + rng.normal(size=(f, k))  # large offsets: the co-moment update must stay centred
    du = -5e4 + rng.normal(size=(f, p)) + 0.3 * o[:, :p]
    beta = 0.4
    batch = fluctuation_jacobian(o, du, beta)
    acc = StreamingCovariance()
    for a, b in [(0, 1), (1, 8), (8, 8), (8, 333), (333, 334), (334, 1000)]:  # uneven chunks, one empty
        acc.add(o[a:b], du[a:b])
    assert acc.n == f
    np.testing.assert_allclose(acc.jacobian(beta), batch, rtol=1e-9, atol=1e-12 * np.abs(batch).max())
    np.testing.assert_allclose(acc.mean_o, o.mean(axis=0), rtol=1e-13)
    # memory: the accumulator holds K·P + K + P numbers, not frames
    assert acc.comoment.shape == (k, p)


def test_streaming_covariance_empty():
    with pytest.raises(ValueError, match="no frames"):
        StreamingCovariance().covariance()


def test_streaming_fluctuation_equals_batch_on_oscillator_frames():
    """The fit's fluctuation route (streaming_fluctuation, chunk 7 over 40 frames) against the batch estimator on
    all frames of a float64 oscillator run: −β cov(o, ∂U/∂z) + ⟨∂o/∂z⟩ with an explicit observable (the energy,
    whose ∂o/∂z is the [F, K, P] array the streaming route never holds), equal to 1e-9."""
    import jax
    import jax.numpy as jnp

    from dmd.models import harmonic_oscillator
    from fitting import observables as ob
    from fitting.forcefield import FitConfig, sample
    from fitting.forcefield_estimators import streaming_fluctuation

    system = harmonic_oscillator(8, 3, k=100.0, mass=10.0, temperature=300.0, dtype=jnp.float64)
    cfg = FitConfig(steps=400, equilibration=100, report_every=10, dt=0.01, temperature=300.0, friction=5.0)
    frames, _ = sample(system, system.params, cfg, seed=1)
    frames = jnp.asarray(frames, jnp.float64)
    assert frames.dtype == jnp.float64 and frames.shape[0] == 40
    energy = ob.mean_energy(system)
    msd = ob.custom(lambda pos: jnp.stack([jnp.mean(pos**2), jnp.mean(pos[:, 0] ** 4)]), name="moments")

    def params_of(z):
        spring = system.params["spring"]
        return {"spring": {"k": jnp.exp(z[0]) * jnp.ones_like(spring["k"]), "center": spring["center"]}}

    def o_of_z(z, x, b):
        p = params_of(z)
        return jnp.concatenate([energy.per_frame(p, x, b), msd.per_frame(p, x, b)])

    def u_of_z(z, x, b):
        return system.energy_fn(params_of(z), x, box=b)

    z = jnp.asarray([np.log(100.0)], jnp.float64)
    o_fn = ob.frame_values(o_of_z, box=system.box)
    du_fn = ob.frame_values(jax.jacfwd(u_of_z), box=system.box)
    dodz_fn = ob.frame_values(jax.jacfwd(o_of_z), box=system.box)
    beta = 1.0 / (KB_KJ_PER_MOL_K * 300.0)
    o_all, du_all, dodz_all = (np.asarray(f(z, frames)) for f in (o_fn, du_fn, dodz_fn))
    batch = fluctuation_jacobian(o_all, du_all, beta) + dodz_all.mean(axis=0)
    mean, jac, kept = streaming_fluctuation(o_fn, du_fn, z, frames, beta, do_dz_fn=dodz_fn, chunk=7, keep=True)
    assert jac.shape == (3, 1) and np.abs(batch).min() > 0
    np.testing.assert_allclose(jac, batch, rtol=1e-9)
    np.testing.assert_allclose(mean, o_all.mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(kept, o_all)
    # without keep the per-frame values are not held
    assert streaming_fluctuation(o_fn, du_fn, z, frames, beta, chunk=7)[2] is None


def test_fit_jacobian_does_not_depend_on_the_frame_chunk():
    """The fit loop uses the streaming route: one round with 7-frame chunks and with one 400-frame chunk gives the
    same d prediction/dθ to 1e-9 (float64 oscillators, same seed and frames)."""
    import jax.numpy as jnp

    from dmd.models import harmonic_oscillator
    from fitting import observables as ob
    from fitting.forcefield import FitConfig, FitParam, FitTarget, fit

    system = harmonic_oscillator(8, 3, k=100.0, mass=10.0, temperature=300.0, dtype=jnp.float64)
    target = FitTarget(ob.custom(lambda pos: jnp.mean(pos**2), name="msd"), np.array([0.02]))
    rows = []
    for chunk in (7, 400):
        cfg = FitConfig(rounds=1, steps=400, equilibration=100, report_every=10, dt=0.01, temperature=300.0,
                        friction=5.0, progress=False, frame_chunk=chunk)  # fmt: skip
        rows.append(fit(system, [FitParam(("spring/k",), lower=0.0)], [target], cfg).history[0])
    a, b = (np.asarray(r["jacobian_theta"]) for r in rows)
    assert a[0, 0] < 0
    np.testing.assert_allclose(a, b, rtol=1e-9)
    np.testing.assert_allclose(rows[0]["prediction"], rows[1]["prediction"], rtol=1e-12)


def _observable(z, x):
    """A smooth K = 3 observable of positions x [N, 3] with an explicit z dependence (z: [2])."""
    r2 = jnp.sum((x[:, None] - x[None, :]) ** 2, axis=-1)
    return jnp.stack([jnp.sum(jnp.exp(-r2 * z[0])), jnp.sum(x**3) * z[1], jnp.mean(jnp.sin(x)) + z[0] * z[1]])


def test_pathwise_jacobian_matches_finite_differences_and_compiles_once(jax_compiles):
    rng = np.random.default_rng(7)
    frames = jnp.asarray(rng.normal(size=(5, 4, 3)))  # float64 (tests run with x64)
    dx_dz = jnp.asarray(rng.normal(size=(5, 2, 4, 3)))
    z = np.array([0.3, 0.7])
    jac = pathwise_jacobian(_observable, jnp.asarray(z), frames, dx_dz, True)
    # reference: d/dz_p of the frame mean of o(z + h e_p, x + h dx/dz_p), central differences in float64
    # (h = 1e-5: truncation ~h² ≈ 1e-10, round-off ~1e-16/h ≈ 1e-11 relative to O(1) values)
    h, ref = 1e-5, np.zeros((3, 2))
    for p in range(2):
        e = np.eye(2)[p] * h
        up = np.mean([_observable(z + e, frames[f] + h * dx_dz[f, p]) for f in range(5)], axis=0)
        dn = np.mean([_observable(z - e, frames[f] - h * dx_dz[f, p]) for f in range(5)], axis=0)
        ref[:, p] = (up - dn) / (2 * h)
    np.testing.assert_allclose(jac, ref, rtol=1e-7, atol=1e-8)
    # a fit's next round: new z, new frames of the same shapes, same observable -> nothing compiled again
    # (the jitted map used to be a closure made per call: traced and compiled every round)
    z2, frames2 = jnp.asarray(z + 0.1), jnp.asarray(np.asarray(frames) + 0.01)
    with jax_compiles() as records:
        pathwise_jacobian(_observable, z2, frames2, dx_dz, True)
    assert [r.getMessage() for r in records if "Compiling" in r.getMessage()] == []


def test_cross_replica_gradient_is_unbiased_where_the_pooled_one_is_not():
    # R replicas whose prediction noise e_i also enters their Jacobian (as a fluctuation I_D and its fluctuation
    # Jacobian share frames): p_i = a θ + e_i, J_i = a + c e_i, target a θ*, r = p − t. E[2 J̄ᵀ r(P̄)] carries
    # 2 c var(e)/R besides the true gradient 2 a (a θ − t); the cross estimator's mean is the true gradient. 20,000
    # draws: s.e. of the means ≈ 0.02, the pooled bias 2 c σ²/R = 0.25, tolerance 0.08 (4 s.e.).
    rng = np.random.default_rng(7)
    a, c, theta, target, sigma, n_rep = 2.0, 1.0, 1.1, 2.0, 1.0, 4
    ident = (lambda p: p - target, lambda p: jnp.eye(1))
    true = 2 * a * (a * theta - target)
    e = rng.normal(scale=sigma, size=(20_000, n_rep))
    preds, jacs = a * theta + e, a + c * e
    pooled = 2 * jacs.mean(axis=1) * (preds.mean(axis=1) - target)
    loo = (preds.sum(axis=1, keepdims=True) - preds) / (n_rep - 1)
    cross_vec = (2 * jacs * (loo - target)).mean(axis=1)
    assert abs(pooled.mean() - true - 2 * c * sigma**2 / n_rep) < 0.08  # the bias is there
    assert abs(cross_vec.mean() - true) < 0.08
    # the function gives exactly the vectorised formula (a few draws; float64)
    for k in range(5):
        g = cross_replica_gradient(*ident, preds[k][:, None], jacs[k][:, None, None], jnp.float64)
        assert g.shape == (1,) and g[0] == pytest.approx(cross_vec[k], rel=1e-12, abs=1e-12)
    # without noise the two estimators agree
    g = cross_replica_gradient(*ident, np.full((3, 1), a * theta), np.full((3, 1, 1), a), jnp.float64)
    assert g[0] == pytest.approx(true, rel=1e-12)
