"""Figures of merit against hand-computed values (de Wolff 1968; Smith & Snyder 1979)."""

import math

import numpy as np

from analysis.indexing.errors import sigma_inv_d2
from analysis.indexing.fom import count_distinct, de_wolff_m, smith_snyder_f

# cubic P, a = 5 Å: calculated q² = N/25 for N = 1, 2, 3, 4, 5, 6, 8 (0.08 listed twice: one line)
CALC = np.array([0.04, 0.08, 0.08, 0.12, 0.16, 0.20, 0.24, 0.32])
OBS = np.array([0.0401, 0.0799, 0.1202, 0.1600, 0.2003])
ASSIGNED = np.array([0.04, 0.08, 0.12, 0.16, 0.20])


def test_count_distinct_merges_equal_lines():
    assert count_distinct(CALC, 0.2003) == 5
    assert count_distinct(CALC, 0.32) == 7


def test_de_wolff_m5_by_hand():
    # ε̄ = (1 + 1 + 2 + 0 + 3)e-4 / 5 = 1.4e-4; N_calc(Q ≤ 0.2003) = 5; M5 = 0.2003 / (2 · 1.4e-4 · 5)
    expected = 0.2003 / (2 * 1.4e-4 * 5)
    assert math.isclose(expected, 143.0714285714, rel_tol=1e-10)
    # float64 sums of five differences: relative error ≪ 1e-9
    assert math.isclose(de_wolff_m(OBS, ASSIGNED, CALC, n=5), expected, rel_tol=1e-9)


def test_de_wolff_unindexed_line_left_out_of_mean():
    indexed = np.array([True, True, False, True, True])
    # ε̄ over the 4 indexed lines = 5e-4 / 4 = 1.25e-4; Q_5 and N_calc unchanged
    expected = 0.2003 / (2 * 1.25e-4 * 5)
    assert math.isclose(de_wolff_m(OBS, ASSIGNED, CALC, n=5, indexed=indexed), expected, rel_tol=1e-9)


def test_de_wolff_perfect_fit_is_infinite_and_drops_with_more_lines():
    assert de_wolff_m(ASSIGNED, ASSIGNED, CALC, n=5) == math.inf
    # a denser calculated list (a supercell) halves M: N_calc doubles
    dense = np.concatenate([CALC, CALC - 0.02])
    m_dense = de_wolff_m(OBS, ASSIGNED, dense, n=5)
    assert math.isclose(m_dense, de_wolff_m(OBS, ASSIGNED, CALC, n=5) / 2, rel_tol=1e-9)


def test_smith_snyder_f5_by_hand():
    lam = 1.5406

    def tth(q):  # Bragg: λ = 2 d sin θ, d = 1/sqrt(q²)
        return 2 * math.degrees(math.asin(lam * math.sqrt(q) / 2))

    dtt = sum(abs(tth(o) - tth(c)) for o, c in zip(OBS, ASSIGNED, strict=True)) / 5
    expected = 5 / (dtt * 5)
    f, mean_dtt, n_poss = smith_snyder_f(OBS, ASSIGNED, CALC, lam, n=5)
    assert n_poss == 5
    # same arithmetic in a different order: agreement to ~1e-12 relative
    assert math.isclose(mean_dtt, dtt, rel_tol=1e-9)
    assert math.isclose(f, expected, rel_tol=1e-9)
    assert 40 < f < 60  # mean Δ2θ ≈ 0.019°: F5 ≈ 52, a typical good-quality value


def test_impurity_line_does_not_hand_the_win_to_a_supercell():
    """One impurity line: the true cP cell (19/20 indexed) outranks the cI 2a supercell that indexes it."""
    from analysis import cell as cell_mod
    from analysis.indexing import ErrorModel, synthetic_pattern
    from analysis.indexing.solution import refine_candidate

    truth = np.array([6.743, 6.743, 6.743, 90.0, 90.0, 90.0])
    sup = np.array([13.486, 13.486, 13.486, 90.0, 90.0, 90.0])
    rng = np.random.default_rng(11)
    for _ in range(50):  # draw until the supercell indexes the impurity line by chance (about half the draws)
        p = synthetic_pattern("cP", rng, errors=ErrorModel(zero_shift_deg=0.0), cell=truth, spacegroup="P 42 3 2")
        q = p.inv_d2
        sig = sigma_inv_d2(q)
        fit = {
            (name, n_imp): refine_candidate(
                cell_mod.reciprocal_params(c, "cubic"), 0.0, q, "cubic", sigma=sig, n_impurity=n_imp, centrings=[cen]
            )
            for name, c, cen in (("truth", truth, "P"), ("super", sup, "I"))
            for n_imp in (0, 1)
        }
        if fit[("super", 1)].n_indexed == q.size and fit[("truth", 1)].n_indexed == q.size - 1:
            break
    else:
        raise AssertionError("no draw with the impurity indexed by the supercell")
    # de Wolff M20 over the indexed lines prefers the true cell (fewer calculated lines, same residuals)
    assert fit[("truth", 1)].M20 > fit[("super", 1)].M20
    # with the impurity tolerated (cost n_σ·σ) the ranking agrees; charging it a random line's discrepancy
    # Q20/(2 N_calc) caps the true cell's score near 20 and the supercell wins
    assert fit[("truth", 1)].score > fit[("super", 1)].score
    assert fit[("truth", 0)].score < fit[("super", 0)].score
