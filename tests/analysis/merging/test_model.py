"""Merging model pieces against independent oracles (scipy distributions, quadrature, finite differences)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, stats

from analysis.merging import likelihoods, posteriors, priors
from analysis.merging.model import MergeConfig, MergeData, init_params, negative_elbo, surrogate_params

LOCS = np.array([0.05, 0.4, 1.0, 2.5])
SCALES = np.array([0.3, 0.5, 0.2, 0.4])


def test_truncated_normal_matches_scipy():
    loc, scale = jnp.asarray(LOCS), jnp.asarray(SCALES)
    ref = stats.truncnorm(-LOCS / SCALES, np.inf, loc=LOCS, scale=SCALES)
    m1, var_f, m2, var_f2 = posteriors.moments("truncated_normal", loc, scale)
    # closed forms vs scipy in float64: agreement to rounding (1e-10 relative)
    np.testing.assert_allclose(m1, ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(var_f, ref.var(), rtol=1e-9)
    np.testing.assert_allclose(m2, ref.moment(2), rtol=1e-10)
    np.testing.assert_allclose(var_f2, ref.moment(4) - ref.moment(2) ** 2, rtol=1e-8)
    # scipy's entropy is NaN for b = ∞; a finite b 60σ above μ is the same distribution to double precision
    ref_b = stats.truncnorm(-LOCS / SCALES, 60.0, loc=LOCS, scale=SCALES)
    np.testing.assert_allclose(posteriors.entropy("truncated_normal", loc, scale), ref_b.entropy(), rtol=1e-10)
    f = jnp.asarray([0.1, 0.7, 1.3, 2.0])
    np.testing.assert_allclose(posteriors.log_prob("truncated_normal", f, loc, scale), ref.logpdf(f), rtol=1e-10)
    # inverse-survival-function sampling: P(F > F(u)) = u exactly (up to ndtri rounding, 1e-9)
    u = jnp.asarray([0.01, 0.3, 0.77, 0.999])
    np.testing.assert_allclose(ref.sf(posteriors.sample("truncated_normal", loc, scale, u)), u, atol=1e-9)


def test_folded_normal_matches_scipy():
    loc, scale = jnp.asarray(LOCS), jnp.asarray(SCALES)
    ref = stats.foldnorm(LOCS / SCALES, loc=0.0, scale=SCALES)
    m1, var_f, m2, var_f2 = posteriors.moments("folded_normal", loc, scale)
    np.testing.assert_allclose(m1, ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(m2, ref.moment(2), rtol=1e-10)
    np.testing.assert_allclose(var_f2, ref.moment(4) - ref.moment(2) ** 2, rtol=1e-8)
    f = jnp.asarray([0.1, 0.7, 1.3, 2.0])
    np.testing.assert_allclose(posteriors.log_prob("folded_normal", f, loc, scale), ref.logpdf(f), rtol=1e-10)
    u = jnp.asarray([0.01, 0.3, 0.77, 0.999])
    # |μ + σΦ⁻¹(u)| is a valid draw: its folded CDF is not u, but its unfolded normal CDF is
    x = LOCS + SCALES * stats.norm.ppf(np.asarray(u))
    np.testing.assert_allclose(posteriors.sample("folded_normal", loc, scale, u), np.abs(x), rtol=1e-10)


@pytest.mark.parametrize("centric", [False, True])
def test_wilson_prior_normalized_with_mean_intensity(centric):
    variance = 1.7  # εΣ
    pdf = lambda f: float(np.exp(priors.wilson_log_prob(jnp.asarray(f), variance, centric)))
    norm, _ = integrate.quad(pdf, 0, np.inf)
    m2, _ = integrate.quad(lambda f: f * f * pdf(f), 0, np.inf)
    # quad accuracy ~1e-10: a density must integrate to 1 and ⟨F²⟩ must equal εΣ (Wilson 1949)
    assert abs(norm - 1.0) < 1e-8
    assert abs(m2 - variance) < 1e-8


def _tiny_problem(dtype=jnp.float64, n_refl=6, n_obs=20, n_images=3, seed=0):
    rng = np.random.default_rng(seed)
    refl = rng.integers(0, n_refl, n_obs)
    data = MergeData(
        refl=jnp.asarray(refl, jnp.int32),
        image=jnp.asarray(rng.integers(0, n_images, n_obs), jnp.int32),
        intensity=jnp.asarray(rng.gamma(2.0, 5.0, n_obs), dtype),
        sigma=jnp.asarray(rng.uniform(1.0, 3.0, n_obs), dtype),
        meta=jnp.asarray(rng.normal(size=(n_obs, 2)), dtype),
        inv_d2=jnp.asarray(rng.uniform(0.01, 0.2, n_obs), dtype),
        weight=jnp.ones(n_obs, dtype),
        prior_variance=jnp.asarray(rng.choice([1.0, 2.0], n_refl), dtype),
        centric=jnp.asarray(rng.random(n_refl) < 0.3),
    )
    return data


def test_kl_and_expected_likelihood_against_quadrature():
    """Stratified MC KL and the analytic Normal expectation vs 1-D quadrature of q·log(q/p) and q·log p(I|F)."""
    data = _tiny_problem()
    cfg = MergeConfig(mc_samples=4096, mlp_depth=0, image_scales=False, image_b=False)
    loc0 = np.array([0.5, 1.0, 2.0, 0.2, 1.5, 0.8])
    scale0 = np.array([0.3, 0.2, 0.5, 0.4, 0.1, 0.6])
    params = init_params(jax.random.PRNGKey(0), cfg, data, loc0, scale0, 3, log_scale0=np.log(5.0), b0=0.0)
    loss, aux = jax.jit(negative_elbo, static_argnums=2)(params, jax.random.PRNGKey(1), cfg, data)
    loc0, scale0 = (np.asarray(v) for v in surrogate_params(params["q"]))  # σ carries a 1e-6 floor
    n = data.intensity.shape[0]
    s = 5.0
    kl_ref, ell_ref = 0.0, 0.0
    for h in range(6):
        q = stats.truncnorm(-loc0[h] / scale0[h], np.inf, loc=loc0[h], scale=scale0[h])
        # independent oracle for the Wilson prior: scipy's Rayleigh (acentric) and half-normal (centric)
        var = float(data.prior_variance[h])
        ref_prior = (
            stats.halfnorm(scale=np.sqrt(var)) if bool(data.centric[h]) else stats.rayleigh(scale=np.sqrt(var / 2))
        )
        lp = ref_prior.logpdf
        kl_ref += integrate.quad(lambda f, q=q, lp=lp: q.pdf(f) * (q.logpdf(f) - lp(f)), 0, q.ppf(1 - 1e-12))[0]
    for i in range(n):
        h = int(data.refl[i])
        q = stats.truncnorm(-loc0[h] / scale0[h], np.inf, loc=loc0[h], scale=scale0[h])
        ii, sg = float(data.intensity[i]), float(data.sigma[i])
        integrand = lambda f, q=q, ii=ii, sg=sg: q.pdf(f) * stats.norm.logpdf(ii, s * f * f, sg)
        ell_ref += integrate.quad(integrand, 0, q.ppf(1 - 1e-12))[0]
    # the likelihood term is exact (analytic moments): quadrature precision 1e-7
    assert abs(float(aux["nll"]) + ell_ref / n) < 1e-7
    # the KL samples only E[log F] (4096 stratified samples): error ~1e-4 relative
    assert abs(float(aux["kl"]) - kl_ref / n) < 1e-3 * abs(kl_ref / n) + 1e-5


@pytest.mark.parametrize(
    "cfg",
    [
        MergeConfig(mc_samples=3, mlp_width=4, mlp_depth=1),
        MergeConfig(
            mc_samples=3,
            mlp_width=4,
            mlp_depth=1,
            surrogate="folded_normal",
            likelihood="student",
            dof=4.0,
            error_model=True,
        ),
    ],
    ids=["truncnorm-normal-analytic", "folded-student-errormodel"],
)
def test_elbo_gradient_matches_finite_differences(cfg):
    """Reverse-mode gradient of −ELBO (fixed key: a deterministic function) vs central differences, float64."""
    data = _tiny_problem()
    params = init_params(
        jax.random.PRNGKey(0), cfg, data, np.linspace(0.5, 2.0, 6), np.full(6, 0.3), 3, log_scale0=np.log(5.0), b0=5.0
    )
    # perturb the zero-initialized last MLP layer and image terms so their gradients are generic
    params = jax.tree_util.tree_map(lambda x: x + 0.05 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), params)
    key = jax.random.PRNGKey(3)
    f = jax.jit(lambda p: negative_elbo(p, key, cfg, data)[0])
    # float64 central differences with eps 1e-6: agreement to ~1e-5 relative
    check_grads(f, (params,), order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


def test_student_t_and_error_model():
    i, ip, sg = jnp.asarray([3.0, -1.0, 10.0]), jnp.asarray([2.0, 0.5, 4.0]), jnp.asarray([1.0, 2.0, 0.5])
    np.testing.assert_allclose(
        likelihoods.log_likelihood("student", i, ip, sg, 4.0),
        stats.t.logpdf(np.asarray(i), 4.0, loc=np.asarray(ip), scale=np.asarray(sg)),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        likelihoods.log_likelihood("normal", i, ip, sg),
        stats.norm.logpdf(np.asarray(i), np.asarray(ip), np.asarray(sg)),
        rtol=1e-12,
    )
    p = {"log_sdfac": jnp.log(1.3), "sdb_raw": jnp.log(jnp.expm1(0.2)), "sdadd_raw": jnp.log(jnp.expm1(0.05))}
    ref = 1.3 * np.sqrt(np.asarray(sg) ** 2 + 0.2 * np.asarray(ip) + (0.05 * np.asarray(ip)) ** 2)
    np.testing.assert_allclose(likelihoods.error_model_sigma(p, sg, ip), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="likelihood"):
        MergeConfig(likelihood="cauchy")


def test_image_smoothness_prior_ties_neighbours_only():
    """The smoothness term is −½Σ w_k((a[k+1]−a[k])/δ_a)² − ½Σ w_k((b[k+1]−b[k])/δ_b)² on top of the per-image
    Gaussians, with w_k = 0 across a break between sweeps (exact arithmetic: compared at 1e-12 in float64)."""
    from analysis.merging.scaling import scale_log_prior

    a = jnp.asarray([0.0, 0.1, -0.2, 0.3], jnp.float64)
    b = jnp.asarray([1.0, 0.0, 2.0, -1.0], jnp.float64)
    params = {"image_a": a, "image_b": b}
    base = float(scale_log_prior(params, 1.0, 10.0))
    assert abs(base - (-0.5 * float(jnp.sum(a**2)) - 0.5 * float(jnp.sum((b / 10.0) ** 2)))) < 1e-12
    w = jnp.asarray([1.0, 0.0, 1.0], jnp.float64)  # images 2 and 3 are in different sweeps
    got = float(scale_log_prior(params, 1.0, 10.0, smooth_sd=0.1, smooth_b_sd=0.5, neighbours=w))
    da, db = np.diff(np.asarray(a)), np.diff(np.asarray(b))
    want = base - 0.5 * np.sum(np.asarray(w) * (da / 0.1) ** 2) - 0.5 * np.sum(np.asarray(w) * (db / 0.5) ** 2)
    assert abs(got - want) < 1e-12
