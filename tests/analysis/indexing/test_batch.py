"""One batch of the search (batch.py): its approximate M against de Wolff's M by hand, and its cell volume."""

import math

import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis.indexing import batch
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
