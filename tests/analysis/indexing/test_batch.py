"""One batch of the search (batch.py): its approximate M against de Wolff's M by hand, and its cell volume."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis.indexing import batch, prior
from analysis.indexing.fom import de_wolff_m

# cubic P, a = 5 Å: q² = N/25; the search's rows are distinct N (one calculated line each)
ROWS = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [8.0]])
OBS = np.array([0.0401, 0.0799, 0.1202, 0.1600, 0.2003])
X = np.array([0.04])


def _score(obs, sig, n_sigma):
    f = jnp.float32
    return float(
        batch._score(
            jnp.asarray(X, f),
            jnp.asarray(obs, f),
            jnp.asarray(sig, f),
            jnp.asarray(ROWS, f),
            n_sigma,
            1.0,
            1e3,
            system="cubic",
            n_fom=obs.size,
        )
    )


def test_batch_score_is_de_wolff_m_of_the_nearest_lines():
    # every line within n_σ·σ: ε̄ = 1.4e-4 (test_fom's hand value) plus the 1e-4·σ̄ floor, N_calc = 5
    sig = np.full(5, 1e-3)
    expected = 0.2003 / (2 * (1.4e-4 + 1e-7) * 5)
    assert math.isclose(
        de_wolff_m(OBS, 0.04 * np.array([1, 2, 3, 4, 5]), 0.04 * ROWS[:, 0], n=5), 0.2003 / (2 * 1.4e-4 * 5)
    )
    # float32 sums of 5 differences of ~1e-4 on values ~0.1: relative error ~1e-3 in ε̄
    assert math.isclose(math.exp(_score(OBS, sig, 3.0)), expected, rel_tol=3e-3)
    # a line beyond n_σ·σ costs half the mean calculated-line spacing, Q_N / (2 N_calc) = 0.02003, not its distance
    obs = OBS.copy()
    obs[2] = 0.1300
    sig = np.full(5, 1.5e-4)  # n_σ·σ = 4.5e-4: the other four lines (≤ 3e-4 off) stay indexed
    expected = 0.2003 / (2 * ((1e-4 + 1e-4 + 0.02003 + 0 + 3e-4) / 5 + 1.5e-8) * 5)
    assert math.isclose(math.exp(_score(obs, sig, 3.0)), expected, rel_tol=3e-3)


def test_volume_from_x_matches_the_cell_volume():
    cell = np.array([4.567, 10.257, 11.836, 81.048, 85.798, 88.324])
    x = cell_mod.reciprocal_params(cell, "triclinic")
    v = float(batch.volume_from_x(jnp.asarray(x, jnp.float32), "triclinic"))
    assert math.isclose(v, float(cell_mod.volume(cell)), rel_tol=1e-5)  # float32 determinant of G*
    # a reciprocal metric that is not positive definite (a*² < 0) has no volume
    assert np.isnan(float(batch.volume_from_x(jnp.asarray(-x, jnp.float32), "triclinic")))


def _per_candidate_assignment(x, z, obs, g, rows):
    """The per-candidate form the batched one replaced (issue 21, idx21o): argmin over a [n, R] block under vmap."""

    def one(x, z):
        q = obs - g * z
        adiff = jnp.abs(q[:, None] - (rows @ x)[None, :])
        idx = jnp.argmin(adiff, axis=1)
        idx2 = jnp.argmin(adiff.at[jnp.arange(q.shape[0]), idx].set(jnp.inf), axis=1)
        return idx, idx2, q - (rows @ x)[idx], q - (rows @ x)[idx2]

    return jax.vmap(one)(x, z)


def _triclinic_batch(n_cand, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.asarray(prior.search_rows("triclinic"), np.float32)
    cells = np.column_stack([rng.uniform(5, 12, (n_cand, 3)), rng.uniform(80, 110, (n_cand, 3))])
    x = np.array([cell_mod.reciprocal_params(c, "triclinic") for c in cells], np.float32)
    obs = np.sort(rows[rng.choice(len(rows), 20, replace=False)] @ x[0]).astype(np.float32)
    z = rng.normal(0, 0.03, n_cand).astype(np.float32)
    g = (0.01 * np.sqrt(obs)).astype(np.float32)
    return x, z, obs, g, rows


def test_batched_assignment_matches_the_per_candidate_argmin():
    """The candidate-minor loop (batch._nearest_two) gives argmin's rows: the first of tied rows (row 5 doubled at
    the end of the table), and rows 0 and 1 with NaN residuals for a candidate whose zero shift is NaN (a first
    form that left its residuals at 0 scored it as a perfect cell and stopped the searches after one batch)."""
    x, z, obs, g, rows = _triclinic_batch(64)
    rows = np.concatenate([rows, rows[5:6]])  # an exact tie: the last row equals row 5
    z[3] = np.nan
    x[7], z[7] = x[0], 0.0  # candidate 7 reproduces the list's lines (exact hits)
    f = jnp.float32
    args = [jnp.asarray(a, f) for a in (x, z, obs, np.full(20, 1e-4), g, rows)]
    s, idx, idx2, r, r2 = batch._evaluate_batch(*args, 4.0, 1.0, 1e6, system="triclinic", n_fom=20)
    ref = _per_candidate_assignment(*[args[i] for i in (0, 1, 2, 4, 5)])
    for new, old in zip((idx, idx2, r, r2), ref, strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert not np.any(np.asarray(idx) == len(rows) - 1)  # the doubled row never beats its first copy
    # every line of the NaN candidate counts as unindexed (half the mean line spacing), far below exact hits
    assert float(s[3]) < float(s[7]) - 5


def test_batched_assignment_is_cheaper_than_the_per_candidate_form():
    """512 triclinic candidates × 180 rows × 20 lines (one stage-B evaluation): the per-candidate argmin form took
    0.0147 CPU s, the candidate-minor loop 0.004 (issue 21, idx21o; load 5-8): it must stay ≥ 2× cheaper."""
    import time

    x, z, obs, g, rows = (jnp.asarray(a) for a in _triclinic_batch(512))
    sig = jnp.full(20, 1e-4, jnp.float32)
    new = jax.jit(lambda x, z: batch._evaluate_batch(x, z, obs, sig, g, rows, 4.0, 1.0, 1e6, "triclinic", 20))
    old = jax.jit(lambda x, z: _per_candidate_assignment(x, z, obs, g, rows))

    def cpu(f):
        jax.block_until_ready(f(x, z))
        times = []
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(5):
                jax.block_until_ready(f(x, z))
            times.append(time.process_time() - t0)
        return min(times)

    t_new, t_old = cpu(new), cpu(old)
    assert t_new < 0.5 * t_old, (t_new, t_old)
