"""fitting.forcefield_objective: residuals from ⟨o⟩ equal residuals from the flat predictions (the route a
replicated fit takes), against the residual formula written out."""

import jax.numpy as jnp
import numpy as np
import pytest

from fitting import observables as ob
from fitting.forcefield import FitTarget
from fitting.forcefield_objective import Objective, per_frame_all


def test_residuals_from_moments_and_from_flat_predictions_agree_with_the_formula():
    var = ob.Observable("var", lambda p, x, box=None: jnp.stack([x[0, 0], x[0, 0] ** 2]), np.arange(1.0), "index",
                        combine=lambda m: m[1:2] - m[0:1] ** 2)  # fmt: skip
    msd = ob.custom(lambda pos: jnp.mean(pos**2, axis=1), name="msd", axis=np.arange(3.0))
    data_v, data_m = np.array([0.5]), np.array([1.0, 2.0, 4.0])
    targets = [FitTarget(var, data_v, weight=2.0), FitTarget(msd, data_m)]
    pos0 = jnp.ones((3, 3))
    obj = Objective(targets, {}, pos0, None)
    assert per_frame_all(targets)({}, pos0).shape == (5,)
    mean = jnp.asarray([0.3, 0.6, 1.5, 2.5, 3.0])  # ⟨x⟩, ⟨x²⟩ | msd per atom
    flat = obj.flat(mean)
    np.testing.assert_allclose(flat, [0.6 - 0.09, 1.5, 2.5, 3.0], rtol=1e-6)  # float32 round-off
    assert [p.shape for p in obj.unflat(flat)] == [(1,), (3,)]
    # r = sqrt(w)·(pred − data)/rms(data)/sqrt(K) per target (the default objective), concatenated
    r_m = (np.array([1.5, 2.5, 3.0]) - data_m) / np.sqrt(np.mean(data_m**2)) / np.sqrt(3)
    want = np.concatenate([[np.sqrt(2.0) * (0.51 - 0.5) / 0.5], r_m])
    # float32 predictions: 0.6 − 0.3² carries ~1e-7, i.e. ~3e-7 in r
    np.testing.assert_allclose(obj.residuals(mean), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(obj.residuals_of_flat(flat), want, rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="reshape"):  # a flat vector of the wrong length cannot be split
        obj.residuals_of_flat(jnp.zeros(3))
