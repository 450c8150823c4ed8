"""Neighbour-list overflow care (dmd.runloop) as every run loop uses it: a list too small for the run overflows,
the loop grows it and redoes the chunk, and the result equals a run with ample capacity. (``dmd.simulate``'s
own loop: tests/dmd/test_simulate.py.)"""

import dataclasses
import types

import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.runloop import MAX_REALLOCATIONS, redo_on_overflow
from dmd.sensitivity import run_sensitivities
from fitting.forcefield import FitConfig, sample

SIGMA = models.ARGON["sigma"]


def _tight_and_ample():
    """The same 128-atom LJ fluid (float64) with ample capacity and with a list at exactly the start occupancy
    (no slack: it overflows as soon as any atom gains a neighbour)."""
    ample = models.lj_fluid(128, cutoff=2.2 * SIGMA, dtype=jnp.float64, seed=4, capacity_multiplier=2.0)
    tight = models.lj_fluid(128, cutoff=2.2 * SIGMA, dtype=jnp.float64, seed=4, capacity_multiplier=1.0)
    fns = tight.neighbor_fn
    occupancy = fns.allocate(tight.positions).max_occupancy  # capacity_multiplier 1 → occupancy + 4

    class ExactCapacity:
        def allocate(self, pos, **kw):
            return fns.allocate(pos, max_occupancy=occupancy - 4)

    return ample, dataclasses.replace(tight, neighbor_fn=ExactCapacity())


def test_sensitivities_redo_overflowed_chunks():
    ample, small = _tight_and_ample()
    run = dict(steps=100, dt=0.01, temperature=119.8, friction=1.0, report_every=10, chunk_steps=50, progress=False)
    ref = run_sensitivities(ample, ["lj/epsilon"], **run)
    res = run_sensitivities(small, ["lj/epsilon"], **run)
    assert any("overflowed" in w for w in res.warnings)  # it did overflow, and said so
    assert not any("overflowed" in w for w in ref.warnings)
    # same noise, same trajectory: only the order of the pair sums differs (~1e-13, grown by chaos over 100 steps)
    np.testing.assert_allclose(res.positions, ref.positions, atol=1e-7)
    np.testing.assert_allclose(res.dx, ref.dx, rtol=1e-5, atol=1e-5 * np.abs(ref.dx).max())


def test_forcefield_sample_redoes_an_overflowed_run():
    ample, small = _tight_and_ample()
    cfg = FitConfig(steps=100, equilibration=100, report_every=20, dt=0.01, temperature=119.8, friction=1.0,
                    progress=False)  # fmt: skip
    f_ref, e_ref = sample(ample, ample.params, cfg, seed=3)
    f_res, e_res = sample(small, small.params, cfg, seed=3)
    np.testing.assert_allclose(f_res, f_ref, atol=1e-7)
    np.testing.assert_allclose(e_res, e_ref, rtol=1e-9)


def test_redo_gives_up_after_the_last_reallocation():
    """A list that never stops overflowing: regrown with attempt = 1, 2, … MAX, then a clear error."""
    seen = []
    always = types.SimpleNamespace(did_buffer_overflow=True)
    with pytest.raises(RuntimeError, match=f"after {MAX_REALLOCATIONS} reallocations"):
        redo_on_overflow(lambda start: always, 0, lambda r: r, lambda start, r, attempt: seen.append(attempt) or start)
    assert seen == list(range(1, MAX_REALLOCATIONS + 1))
    start, result, grown = redo_on_overflow(lambda s: s, None, lambda r: r, lambda s, r, a: s)
    assert (start, result, grown) == (None, None, 0)  # no list: nothing to redo
