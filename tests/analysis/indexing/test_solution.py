"""The float64 refinement of one candidate (solution.py): its early stop and its cut-off for cells that cannot win."""

import pathlib

import numpy as np

import analysis.indexing.solution as solution
from analysis import cell as cell_mod
from analysis.indexing import read_peak_file, refine_candidate, synthetic_pattern

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "indexing"
TRUTH = [5.7271, 7.9352, 14.1082, 89.5597, 87.4523, 73.8335]  # ap_noisy_zero_generated.txt (test_indexing.py)


def _noisy_ap():
    pk = read_peak_file(DATA / "ap_noisy_zero_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True, zero_sigma=0.05)
    return pk, kw, cell_mod.reciprocal_params(np.array(TRUTH), "triclinic")


def _count_solves(monkeypatch):
    calls = []
    real = solution._lsq

    def counted(*a, **k):  # the real least squares, counted
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(solution, "_lsq", counted)
    return calls


def test_refinement_stops_once_the_assignment_repeats(monkeypatch):
    """The same assignment gives the same least-squares solve: the refinement stops there (issue 21, idx21k; up to
    6 solves per centring before, ~1/3 of a blind noisy aP list's CPU in refinements)."""
    calls = _count_solves(monkeypatch)
    pk, kw, x = _noisy_ap()
    sol = refine_candidate(x, 0.0, pk.inv_d2, "triclinic", **kw)
    # the truth's assignment is right from its start: one solve, and one more whose assignment repeats (was 6)
    assert len(calls) == 2
    # the refined solution is a fixed point: refined again from it, the same cell to 1e-9 (relative)
    again = refine_candidate(sol.x, sol.zero_shift, pk.inv_d2, "triclinic", **kw)
    np.testing.assert_allclose(again.cell, sol.cell, rtol=1e-9)
    assert again.n_indexed == sol.n_indexed == 19
    # exact cF list, start 0.02 % off: 4 solves over the P / I / F centrings (was 6 per centring that indexes)
    calls.clear()
    p = synthetic_pattern("cF", np.random.default_rng(3))
    sol = refine_candidate(
        cell_mod.reciprocal_params(np.asarray(p.cell, float), "cubic") * 1.0002, 0.0, p.inv_d2, "cubic"
    )
    assert len(calls) == 4 and sol.bravais == "cF" and abs(sol.cell[0] / p.cell[0] - 1) < 1e-9


def test_better_than_returns_only_cells_that_beat_it():
    """better_than = (n, s): None for a cell that indexes fewer than n lines or scores ≤ s (smaller_cells keeps only
    cells that index as many lines and score 1 % more), else the full solution, as without it."""
    pk, kw, x = _noisy_ap()
    sol = refine_candidate(x, 0.0, pk.inv_d2, "triclinic", **kw)
    assert refine_candidate(x, 0.0, pk.inv_d2, "triclinic", **kw, better_than=(sol.n_indexed, sol.score)) is None
    assert refine_candidate(x, 0.0, pk.inv_d2, "triclinic", **kw, better_than=(sol.n_indexed + 1, 0.0)) is None
    same = refine_candidate(x, 0.0, pk.inv_d2, "triclinic", **kw, better_than=(sol.n_indexed, 0.999 * sol.score))
    assert same.score == sol.score and np.array_equal(same.cell, sol.cell) and np.array_equal(same.hkl, sol.hkl)
