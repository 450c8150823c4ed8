"""Figures of merit against hand-computed values (de Wolff 1968; Smith & Snyder 1979)."""

import math

import numpy as np

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
