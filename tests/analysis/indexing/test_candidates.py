"""Candidate generators of the batched search (analysis/indexing/candidates.py): the inverse-CDF draws that
replaced Gumbel-max sampling (issue 21, idx21i) draw from the same distributions with a few random numbers per
candidate."""

import jax
import jax.numpy as jnp
import numpy as np

from analysis.indexing import candidates


def _random_variates(fn, *args) -> int:
    """Random numbers drawn by one call of ``fn`` (sizes of the random_bits primitives in its jaxpr)."""

    def walk(jaxpr):
        n = 0
        for e in jaxpr.eqns:
            if e.primitive.name == "random_bits":
                n += sum(int(np.prod(v.aval.shape)) for v in e.outvars)
            for p in e.params.values():
                for q in p if isinstance(p, (list, tuple)) else [p]:
                    sub = getattr(q, "jaxpr", None)
                    if sub is not None:
                        n += walk(sub if hasattr(sub, "eqns") else sub.jaxpr)
        return n

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def test_zone_and_prior_draws_use_a_few_random_numbers_per_candidate():
    """Triclinic (zone_x, prior_x with cdf_draw): a stage A makes 4096 zone constructions and 4096 prior solves per
    batch; drawing a Gumbel variate per line pair (cross_term: 3 × (20² + 20)) and per vocabulary row (prior_x: 6 × 80)
    made the zone constructions 2/3 of its time (174 → 56 CPU ms per 4096, prior solves 57 → 9 ms; measured this
    session). Before the change: 1277 and 488 variates per candidate."""
    q = jnp.linspace(0.01, 0.2, 20)
    sig = 1e-4 * jnp.ones(20)
    key = jax.random.PRNGKey(0)
    n_zone = _random_variates(lambda k: candidates.zone_x(k, q, sig, 6), key)
    n_prior = _random_variates(
        lambda k: candidates.prior_x(k, q, jnp.zeros((8, 80)), jnp.ones((80, 6)), 8, 6),
        key,
    )
    assert n_zone <= 32, n_zone
    assert n_prior <= 16, n_prior


def _binomial_ok(counts: np.ndarray, probs: np.ndarray, n: int) -> None:
    """Each count within 5 binomial standard deviations (+1) of n·p."""
    sd = np.sqrt(n * probs * (1 - probs))
    assert np.all(np.abs(counts - n * probs) <= 5 * sd + 1), (counts, n * probs)


def test_draw_follows_the_cumulative_weights():
    w = np.array([0.0, 1.0, 0.0, 3.0, 0.5, 0.0, 2.5])
    u = jax.random.uniform(jax.random.PRNGKey(1), (200_000,))
    idx = np.asarray(jax.vmap(lambda v: candidates._draw(jnp.cumsum(jnp.asarray(w, jnp.float32)), v))(u))
    counts = np.bincount(idx, minlength=w.size)
    assert counts[w == 0].sum() == 0  # a zero weight is never drawn
    _binomial_ok(counts, w / w.sum(), idx.size)


def test_cross_term_draws_ito_pairs_in_proportion_to_their_gaussian_weight():
    """With p_pair = 1 the cross term is |q_i − q_j|/2 of a pair (i ≤ j) drawn with weight exp(−½((q_i + q_j − t)/
    (σ_i + σ_j))²): the distribution the Gumbel-max draw sampled exactly."""
    q = np.array([0.010, 0.013, 0.017, 0.021, 0.024, 0.030, 0.034])
    sig = np.full(q.size, 1e-3)
    target = 0.041
    i, j = np.triu_indices(q.size)
    w = np.exp(-0.5 * ((q[i] + q[j] - target) / (sig[i] + sig[j])) ** 2)
    values = np.round(np.abs(q[i] - q[j]) / 2, 6)
    keys = jax.random.split(jax.random.PRNGKey(2), 100_000)
    uniq = np.unique(values)
    probs = np.array([w[values == v].sum() for v in uniq]) / w.sum()
    for cdf_draw in (True, False):  # inverse CDF (triclinic) and Gumbel-max (monoclinic): one distribution
        f = jax.vmap(
            lambda k, c=cdf_draw: candidates.cross_term(k, jnp.asarray(q), jnp.asarray(sig), target, target / 2, 1.0, c)
        )
        drawn = np.round(np.asarray(f(keys), np.float64), 6)
        counts = np.array([np.sum(np.isclose(drawn, v, atol=2e-6)) for v in uniq])
        assert counts.sum() == drawn.size
        _binomial_ok(counts, probs, drawn.size)


def test_monoclinic_zone_draw_uses_a_few_random_numbers_per_candidate():
    """zone_mono_x with cdf_draw (search.CDF_DRAW_SYSTEMS; measured and not adopted for the monoclinic search): one
    cross term by inverse CDF instead of a Gumbel variate per line pair and line (20² + 20 = 420). Measured: 19
    against 436 (the axial positions and multiples draw 15 either way)."""
    q = jnp.linspace(0.01, 0.2, 20)
    sig = 1e-4 * jnp.ones(20)
    key = jax.random.PRNGKey(0)
    n_cdf = _random_variates(lambda k: candidates.zone_mono_x(k, q, sig, 6, cdf_draw=True), key)
    n_gumbel = _random_variates(lambda k: candidates.zone_mono_x(k, q, sig, 6), key)
    assert n_cdf <= 24, n_cdf
    assert n_gumbel >= 420, n_gumbel
