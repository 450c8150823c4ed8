"""padded.py: the per-system functions selected by a traced code on x padded to 6 give the per-system values."""

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis.indexing import padded
from analysis.indexing.reduce import reduce_x


def test_traced_code_selects_the_systems_reduction_and_volume(family_cells):
    reduce6 = jax.jit(padded.reduce6)
    volume6 = jax.jit(padded.volume6)
    for system in padded.SYSTEMS:
        cell = family_cells[system]
        x = np.asarray(cell_mod.reciprocal_params(np.array(cell, float), system), np.float32)
        p = padded.N_PARAMS[system]
        x6 = jnp.asarray(padded.pad_columns(x), jnp.float32)
        code = jnp.int32(padded.system_code(system))
        red = np.asarray(reduce6(x6, code))
        np.testing.assert_array_equal(red[:p], np.asarray(reduce_x(jnp.asarray(x), system)))
        assert np.all(red[p:] == 0.0)  # padded parameters stay 0
        v = float(volume6(x6, code))
        assert np.isclose(v, float(cell_mod.volume(np.array(cell, float))), rtol=1e-5)  # float32 det of G*
        assert list(np.asarray(padded.active(code))) == [i < p for i in range(6)]


def test_random_cells_have_the_systems_form_and_volume_bounds():
    draw = jax.jit(jax.vmap(lambda k, c: padded.random6(k, c, 100.0, 1000.0, jnp.float32), in_axes=(0, None)))
    volume = jax.jit(jax.vmap(padded.volume6, in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(1), 64)
    for system in padded.SYSTEMS:
        code = jnp.int32(padded.system_code(system))
        x6 = draw(keys, code)
        assert np.all(np.asarray(x6)[:, padded.N_PARAMS[system] :] == 0.0)
        v = np.asarray(volume(x6, code))
        assert np.all((v > 100.0 * 0.999) & (v < 1000.0 * 1.001)), (system, v.min(), v.max())
    rows = padded.pad_rows(np.ones((80, 1)), 240)
    assert rows.shape == (240, 6) and rows[:80, 0].sum() == 80 and rows.sum() == 80
