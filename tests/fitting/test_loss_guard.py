"""The loss-guarded step (fitting.loss_guard): a round whose loss rose above factor × the best is rejected."""

import json
import math
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.models import harmonic_oscillator
from fitting import observables as ob
from fitting.forcefield import FitConfig, FitParam, FitTarget, fit
from fitting.loss_guard import LossGuard

T = 300.0
KT = KB_KJ_PER_MOL_K * T


def _evals(n=2):
    return [SimpleNamespace(positions=np.full((3, 3), float(i)), box=None if i else np.eye(3)) for i in range(n)]


def test_guard_rejects_a_rise_restores_the_best_round_and_remeasures():
    guard, evals = LossGuard(2.0), _evals()
    assert not guard.rejects(1e9)  # nothing accepted yet
    guard.accept(1.0, np.array([0.1]), evals)
    for e in evals:  # the next rounds move on
        e.positions = e.positions + 5.0
    guard.accept(1.5, np.array([0.3]), evals)  # accepted, but not better: the best stays round 1's
    assert guard.loss == 1.0 and guard.z.tolist() == [0.1]
    assert not guard.rejects(2.0) and guard.rejects(2.01) and guard.rejects(float("nan"))
    z = guard.restore(evals)
    assert z.tolist() == [0.1] and evals[0].positions[0, 0] == 0.0 and evals[1].positions[0, 0] == 1.0
    assert np.array_equal(evals[0].box, np.eye(3)) and evals[1].box is None
    # the re-measuring round at the best θ is never rejected, and its loss replaces a lucky low best
    assert not guard.rejects(5.0)
    guard.accept(5.0, np.array([0.1]), evals)
    assert guard.loss == 5.0 and not guard.remeasure and guard.rejects(10.5)
    # the checkpoint round trip keeps everything the next round needs
    back = LossGuard.from_arrays(2.0, {k: np.asarray(v) for k, v in guard.to_arrays().items()})
    assert (back.loss, back.z.tolist(), back.remeasure) == (5.0, [0.1], False)
    assert np.array_equal(back.positions[1], guard.positions[1]) and back.boxes[1] is None
    assert LossGuard(None).to_arrays() == {} and not LossGuard(None).rejects(1e300)


@pytest.mark.parametrize("factor", [1.0, 0.5, -2.0])
def test_guard_factor_must_exceed_one(factor):
    with pytest.raises(UserInputError, match="factor > 1"):
        LossGuard(factor)


SYSTEM = []  # one system object for every fit here: the sampler is compiled once (make_sampler's cache)


def _fit(tmp, rounds, guard, resume=False):
    # ⟨x²⟩ = kT/k exactly. Start k = 100, target k = 150. A huge learning rate makes every step the trust region's
    # full 3 in ln k: the first one lands at k = 100 e³ = 2009, where the loss is (1/2009 − 1/150)²/(1/100 − 1/150)²
    # = 3.4× the start's (sampling noise of 20 frames × 192 dof: a few %), so a guard of 2 must reject it.
    if not SYSTEM:
        SYSTEM.append(harmonic_oscillator(64, 3, k=100.0, mass=10.0, temperature=T, dtype=jnp.float64))
    system = SYSTEM[0]
    cfg = FitConfig(rounds=rounds, steps=200, equilibration=100, report_every=10, dt=0.01, temperature=T,
                    friction=5.0, optimizer="sgd", learning_rate=1e6, max_step=3.0, loss_guard=guard,
                    progress=False, out=tmp, resume=resume)  # fmt: skip
    target = FitTarget(ob.custom(lambda pos: jnp.mean(pos**2), name="msd"), np.array([KT / 150]))
    return fit(system, [FitParam(("spring/k",), lower=0.0)], [target], cfg)


def test_fit_steps_back_from_a_round_whose_loss_rose_and_resumes_exactly(tmp_path):
    # (without the guard round 1 is "ok" and round 2 goes on from k = 2009: the statuses below fail)
    res = _fit(tmp_path / "a", 4, 2.0)
    h = res.history
    k = [r["theta"]["spring/k"] for r in h]
    assert [r["status"] for r in h] == ["ok", "rejected", "ok", "ok"]
    assert h[1]["loss"] > 2 * h[0]["loss"] and h[1]["best_loss"] == h[0]["loss"]
    assert k[1] == pytest.approx(100 * math.e**3, rel=1e-9)
    # back to the best round's θ exactly, then the halved step (1.5 in ln k; it regrows ×1.5 per accepted round)
    assert k[2] == k[0] == pytest.approx(100.0)
    assert math.log(k[3] / k[2]) == pytest.approx(1.5, rel=1e-9)
    # the averaged θ and the plots skip the rejected round; the CSV and JSON record it
    assert "rejected" in (tmp_path / "a" / "history.csv").read_text()
    saved = json.loads((tmp_path / "a" / "history.json").read_text())["history"]
    assert [r["status"] for r in saved] == ["ok", "rejected", "ok", "ok"]

    # the guard's state (best loss, θ, replicas' ends, re-measure flag) survives a checkpoint: stop after the
    # rejected round and resume, bit for bit the uninterrupted fit
    _fit(tmp_path / "b", 2, 2.0)
    resumed = _fit(tmp_path / "b", 4, 2.0, resume=True)
    assert [r["theta"] for r in resumed.history] == [r["theta"] for r in h]
    assert [r["status"] for r in resumed.history] == [r["status"] for r in h]
