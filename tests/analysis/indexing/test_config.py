"""SearchConfig: flat knob names and groups build the same configuration."""

import dataclasses

import pytest

from analysis.indexing import SearchBudget, SearchConfig, Stopping, Tolerance


def test_flat_knobs_land_in_their_groups():
    cfg = SearchConfig(n_generate=2048, n_iter=6, max_batches=6, refine_zero=True, acceptance="metropolis", seed=3)
    # exact integers/strings: each flat name sets its group's field and nothing else
    assert (cfg.budget.n_generate, cfg.budget.n_iter, cfg.budget.top_k) == (2048, 6, 16)
    assert (cfg.stopping.max_batches, cfg.stopping.min_batches) == (6, 1)
    assert cfg.tolerance.refine_zero is True and cfg.moves.acceptance == "metropolis" and cfg.seed == 3
    grouped = SearchConfig(
        budget=SearchBudget(n_generate=2048, n_iter=6),
        stopping=Stopping(max_batches=6),
        tolerance=Tolerance(refine_zero=True),
        acceptance="metropolis",
        seed=3,
    )
    assert grouped == cfg
    knobs = cfg.knobs()
    assert len(knobs) == 28 and knobs["n_iter"] == 6 and knobs["stop_m20"] == 10000.0
    assert SearchConfig(**knobs) == cfg  # the flat dict round-trips
    assert dataclasses.replace(cfg, n_iter=2).budget.n_iter == 2


def test_unknown_knob_is_refused():
    with pytest.raises(TypeError, match="n_iters"):
        SearchConfig(n_iters=6)
