"""A fit round's optimizer pieces (fitting.forcefield_round): the direction fed to optax and the replica check."""

from types import SimpleNamespace

import numpy as np
import pytest

from dmd.base.errors import UserInputError
from fitting.forcefield_config import FitConfig
from fitting.forcefield_round import check_replicas, direction, optimizer


def test_direction_is_the_gradient_or_a_trust_region_gauss_newton_step():
    rng = np.random.default_rng(0)
    J, r = rng.normal(size=(20, 2)), rng.normal(size=20) * 0.01
    np.testing.assert_allclose(direction(FitConfig(optimizer="sgd"), r, J), 2 * J.T @ r)
    # inside the trust region LM is Gauss-Newton: the least-squares solution of J Δ = r (damping 1e-3 of JᵀJ)
    step, gn = direction(FitConfig(optimizer="lm", max_step=10.0), r, J), np.linalg.lstsq(J, r, rcond=None)[0]
    np.testing.assert_allclose(step, gn, atol=1e-2 * np.linalg.norm(gn))  # λ / σ_min² ~ 1e-3 of the step
    # an ill-determined direction (singular value 1e-6) is damped until the step fits max_step
    J_bad = np.stack([J[:, 0], J[:, 0] + 1e-6 * J[:, 1]], axis=1)
    step = direction(FitConfig(optimizer="lm", max_step=0.2), r + J_bad @ [0.0, 50.0], J_bad)
    assert np.linalg.norm(step) <= 0.2


def test_optimizer_clips_the_update_to_max_step_and_refuses_unknown_names():
    import jax.numpy as jnp

    opt = optimizer(FitConfig(optimizer="sgd", learning_rate=1.0, max_step=0.2))
    z = jnp.zeros(2)
    updates, _ = opt.update(jnp.array([3.0, 4.0]), opt.init(z), z)
    np.testing.assert_allclose(np.asarray(updates), [-0.12, -0.16], rtol=1e-6)  # norm 5 → 0.2, downhill
    with pytest.raises(UserInputError, match="optimizer 'bfgs'"):
        optimizer(FitConfig(optimizer="bfgs"))


def test_replicas_refused_under_pressure_and_repeated_per_state():
    evals = [SimpleNamespace(positions=np.zeros((5, 3)))]
    assert not check_replicas(FitConfig(replicas=1), evals) and evals[0].positions.shape == (5, 3)
    assert check_replicas(FitConfig(replicas=3), evals) and evals[0].positions.shape == (3, 5, 3)
    with pytest.raises(UserInputError, match="NPT"):
        check_replicas(FitConfig(replicas=2, pressure=1.0), [SimpleNamespace(positions=np.zeros((5, 3)))])
    with pytest.raises(UserInputError, match="positive whole number"):
        check_replicas(FitConfig(replicas=0), evals)
