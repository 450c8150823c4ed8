"""Blind indexing (lattice system unknown): decision rule, short lists, standard settings, minerals.

The mineral peak lists are generated from literature cells (tests/data/indexing/minerals.json, source
per mineral; benchmarks/bench_index_blind.py --write-data). The full set, clean and noisy, is in that
benchmark; here a subset that runs in seconds.
"""

import json
import pathlib

import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis.indexing import (
    MIN_AXIS,
    decide,
    index_peaks,
    niggli_cell,
    peaks_from_values,
    rank_solutions,
    read_peak_file,
    refine_candidate,
    same_lattice,
)
from analysis.indexing.decide import (
    chi2_quantile,
    evidence,
    fits_noise,
    implausible,
    line_coverage,
    log_likelihood,
    parameter_factor,
    related,
)
from analysis.indexing.solution import c_centred_cell, primitive_subcells

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "indexing"
MINERALS = {k: v for k, v in json.loads((DATA / "minerals.json").read_text()).items() if not k.startswith("_")}


def _centring(bravais):
    return "R" if bravais == "hR" else (bravais[1] if bravais[1] in "ICF" else "P")


@pytest.mark.parametrize("name", ["halite", "corundum"])
def test_blind_minerals_true_lattice_first(name):
    entry = MINERALS[name]
    res = index_peaks(read_peak_file(DATA / f"{name}_clean.txt"))
    top = res.solutions[0]
    assert top.bravais == entry["bravais"], top.reason
    # clean positions: the refined cell equals the literature cell to 5e-3 of ⟨a²⟩ (same_lattice default)
    assert same_lattice(top.cell, top.centring, entry["cell"], _centring(entry["bravais"]))
    assert "highest symmetry" in top.reason and "M20" in top.reason
    assert_standard_setting(top, entry["cell"], _centring(entry["bravais"]), 5e-3)


def test_cubic_with_eleven_lines_indexes_and_says_what_was_skipped():
    pk = read_peak_file(DATA / "silicon_clean.txt")
    pk11 = peaks_from_values(pk.two_theta[:11], "2theta", wavelength=pk.wavelength, source="si11")
    res = index_peaks(pk11)
    top = res.solutions[0]
    assert top.bravais == "cF"
    np.testing.assert_allclose(top.cell[0], 5.4312, atol=2e-3)  # exact positions; 2e-3 Å covers the 4 decimals in 2θ
    assert "needs at least 12" in res.skipped["triclinic"]


def test_subcell_is_demoted_below_the_true_cell():
    """The issue's halite answer, mC 5.64 × 3.99 × 1.41 Å (one-zone sub-cell), must not rank first."""
    pk = read_peak_file(DATA / "halite_clean.txt")
    kw = dict(wavelength=pk.wavelength, g_zero=None)
    true = refine_candidate(
        cell_mod.reciprocal_params(np.full(3, 5.6402).tolist() + [90] * 3, "cubic"), 0.0, pk.inv_d2, "cubic", **kw
    )
    sub_cell = np.array([5.6402, 5.6402 / np.sqrt(2), 5.6402 / 4, 90, 90, 90])
    sub = refine_candidate(cell_mod.reciprocal_params(sub_cell, "orthorhombic"), 0.0, pk.inv_d2, "orthorhombic", **kw)
    assert sub is not None and min(niggli_cell(sub.cell, sub.centring)[:3]) < MIN_AXIS
    ranked = decide([sub, true], n_impurity=1)
    assert ranked[0] is true
    assert ranked[1].reason.endswith(f"< {MIN_AXIS:g} Å") or "demoted" in ranked[1].reason


@pytest.mark.parametrize(
    ("name", "centring", "m"),
    [
        ("orthoclase", "I", [[1, 0, 0], [0, 1, 0], [-1, 0, 1]]),  # a_I = a_C − c_C
        ("diopside", "A", [[0, 0, 1], [0, -1, 0], [1, 0, 0]]),  # a_A = c_C, c_A = a_C
    ],
)
def test_monoclinic_centred_cells_are_reported_c_centred(name, centring, m):
    """An I- or A-centred setting of an mC lattice goes back to the C cell of International Tables."""
    lit = np.asarray(MINERALS[name]["cell"], float)
    m = np.asarray(m, float)
    other = np.asarray(cell_mod.cell_from_metric(m.T @ np.asarray(cell_mod.metric(lit)) @ m), float)
    assert same_lattice(other, centring, lit, "C")
    back = c_centred_cell(other, "monoclinic", centring)
    # gemmi reduces label + cell: the C cell and the literature cell are the same lattice, and the
    # literature cell (c shortest, then a, β ≥ 90°) comes back to round-off
    assert same_lattice(back, "C", lit, "C", 1e-6)
    np.testing.assert_allclose(back, lit, atol=1e-6)


def test_pseudo_orthorhombic_cell_does_not_settle_a_precise_monoclinic_list():
    """Issue 21: a precise mP list (0.002° errors) of a pseudo-orthorhombic lattice (β' = 90.4°) stopped the
    blind descent on the oP cell of the same lattice (M20 25.7 ≥ BLIND_STOP_M20, χ²_ν 1.2 under the built-in
    model). Its misfit sits in two lines split by the monoclinic symmetry (2.1-3.0 σ, the others within
    0.5 σ): the residual-outlier ratio (9.8 > OUTLIER_RATIO) keeps it from settling; the true mP cell (ratio
    ≈ 3, Gaussian residuals) settles. Refinements only, no search (< 1 s)."""
    from analysis.indexing import OUTLIER_RATIO, residual_outlier_ratio, settles, sigma_inv_d2, synthetic_pattern

    rng = np.random.default_rng(1)
    p = synthetic_pattern("mP", rng, n_peaks=20)
    tth = np.round(np.sort(p.two_theta + rng.normal(0.0, 0.002, p.two_theta.size)), 4)
    pk = peaks_from_values(tth, "2theta", wavelength=p.wavelength)
    sig = sigma_inv_d2(pk.inv_d2, 1.0)

    def refined(cell, system):
        x = np.asarray(cell_mod.reciprocal_params(np.asarray(cell, float), system), float)
        return refine_candidate(x, 0.0, pk.inv_d2, system, sigma=sig, centrings=["P"])

    o_p = refined([7.63, 5.047, 18.468, 90, 90, 90], "orthorhombic")
    assert same_lattice(o_p.cell, "P", p.cell, "P", 2e-3)  # the same lattice, too high a symmetry
    assert o_p.M20 >= 20 and not o_p.unindexed
    ratio = residual_outlier_ratio(o_p, pk.inv_d2, sig)
    assert ratio > OUTLIER_RATIO, ratio
    assert not settles(o_p, pk.inv_d2, sig, n_impurity=1)
    truth = refined(p.cell, "monoclinic")
    assert residual_outlier_ratio(truth, pk.inv_d2, sig) < 0.5 * OUTLIER_RATIO
    assert settles(truth, pk.inv_d2, sig, n_impurity=1)


def test_higher_symmetry_supercell_is_not_merged_into_a_lower_symmetry_subcell():
    """Noisy calcite (R-3c) blind: an mC half-cell (8.11 × 4.99 × 3.19 Å, β 107.8°, half the hR primitive volume)
    indexes the 20 lines within the noise and outscores the true hR cell (23.8 against 20.1); merging derivative
    cells folded the hR cell into it as a "supercell (x2)", the decision never saw it and the blind answer was an
    mP cell of the same half-lattice (bench_index_blind.py, 830 s). A higher-symmetry derivative cell whose score
    is within SYMMETRY_MARGIN of the other's must survive the merge and win the decision."""
    pk = read_peak_file(DATA / "calcite_noisy.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True)
    lit = np.asarray(MINERALS["calcite"]["cell"], float)
    hr = refine_candidate(cell_mod.reciprocal_params(lit, "hexagonal"), 0.0, pk.inv_d2, "hexagonal", **kw)
    half = np.array([8.107, 4.994, 3.187, 90, 107.783, 90])  # found by the blind search before the fix
    mc = refine_candidate(cell_mod.reciprocal_params(half, "monoclinic"), 0.0, pk.inv_d2, "monoclinic", **kw)
    assert hr.bravais == "hR" and mc.system == "monoclinic"
    assert mc.score > hr.score >= 0.5 * mc.score, (mc.score, hr.score)  # the situation of the failure
    ranked = decide(rank_solutions([mc, hr], top=10), n_impurity=1)
    assert ranked[0].bravais == "hR", ranked[0].reason
    # noisy positions (σ(q²) model, ±0.03° zero shift): the literature lattice to 2e-2 (bench_index_blind.py)
    assert same_lattice(ranked[0].cell, "R", lit, "R", 2e-2)


def test_within_one_system_the_better_score_wins_not_the_smaller_unrelated_cell():
    """A generated noisy oC list (bench_indexing.py --blind, seed 2024, the first orthorhombic list): the true oC cell
    (17.70 × 6.03 × 16.53 Å, score 18.8) and a wrong, smaller oP cell (4.80 × 8.86 × 16.54 Å, score 15.6) both index
    the data within FOM_FACTOR; "then the smallest volume" picked the oP cell blind. The volume rule is for cells of
    the same lattice (merged before the decision); between unrelated cells of one system the score decides."""
    pk = read_peak_file(DATA / "oc_noisy_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True)
    sols = [
        refine_candidate(
            cell_mod.reciprocal_params(np.array(c, float), "orthorhombic"), 0.0, pk.inv_d2, "orthorhombic", **kw
        )
        for c in ([17.697, 6.032, 16.532, 90, 90, 90], [4.803, 8.857, 16.539, 90, 90, 90])
    ]
    assert sols[0].score > sols[1].score >= 0.5 * sols[0].score  # the situation of the failure
    top = decide(rank_solutions(sols, top=10), n_impurity=1)[0]
    # noisy positions: the generating cell (A c 2 m, A-centred) to 2e-2 (bench_indexing.py)
    assert top.bravais == "oC" and same_lattice(top.cell, "C", [16.554, 17.707, 6.036, 90, 90, 90], "A", 2e-2)


def test_unrelated_higher_symmetry_cell_needs_more_than_half_the_best_score():
    """A generated noisy aP list (bench_indexing.py --blind, seed 2024, the tenth triclinic list): a wrong mP cell
    (6.53 × 12.91 × 15.40 Å, β 92.1°, twice the true volume but no sub/supercell of it) indexes the data at about half
    the true aP cell's score; with FOM_FACTOR (0.5) for every cell it won as the higher symmetry. An unrelated lattice
    needs decide.parameter_factor × the best (√(14/16) = 0.94 for mP against aP), which the mP cell is far from."""
    pk = read_peak_file(DATA / "ap_noisy_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True)
    truth = [7.1012, 7.1959, 15.5367, 87.6799, 87.6547, 68.3295]
    # the mP cell as the blind search returned it, with its refined zero shift (-0.153°)
    ap, mp = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), s), z, pk.inv_d2, s, **kw)
        for c, s, z in ((truth, "triclinic", 0.0), ([6.5331, 12.9068, 15.3963, 90, 92.1077, 90], "monoclinic", -0.1533))
    )
    assert ap.score > mp.score >= 0.5 * ap.score, (ap.score, mp.score)  # the situation of the failure
    assert not related(mp, ap)
    np.testing.assert_allclose(parameter_factor(mp, ap), np.sqrt(14 / 16))  # 20 lines, 6 against 4 parameters
    ranked = decide(rank_solutions([mp, ap], top=10), n_impurity=1)
    # noisy positions: the generating cell to 2e-2 (bench_indexing.py)
    assert ranked[0].bravais == "aP" and same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason
    assert "unrelated lattice" in ranked[1].reason


def test_pseudo_symmetric_supercell_gives_way_to_the_triclinic_lattice_it_contains():
    """Clean kyanite (aP, Winter & Ghose 1979) blind stopped at the orthorhombic step on an oI cell of twice its
    primitive volume (5.572 × 7.850 × 26.851 Å, M20 41.7), which indexes the exact list within the lab error model;
    its index-2/3 superlattices, refined as triclinic cells, include kyanite's, which fits the list exactly."""
    pk = read_peak_file(DATA / "kyanite_clean.txt")
    kw = dict(wavelength=pk.wavelength, g_zero=None)
    oi_cell = np.array([5.572, 7.85, 26.851, 90, 90, 90])
    oi = refine_candidate(cell_mod.reciprocal_params(oi_cell, "orthorhombic"), 0.0, pk.inv_d2, "orthorhombic", **kw)
    assert oi.bravais == "oI" and oi.M20 > 20  # the settling cell of the failure
    subs = primitive_subcells(oi, pk.inv_d2, **kw)
    best = max(subs, key=lambda s: s.score)
    # exact positions (4 decimals in 2θ): the literature cell to 5e-3 (same_lattice default)
    assert same_lattice(best.cell, "P", MINERALS["kyanite"]["cell"], "P")
    assert best.M20 > 100 * oi.M20  # exact fit (M20 ~1.8e4) against the supercell's 41.7
    assert decide(rank_solutions([oi, *subs], top=10), n_impurity=1)[0].bravais == "aP"


# the holohedry of each Bravais label in its International Tables standard setting (hR on hexagonal axes)
HOLOHEDRY = {
    "aP": "P -1",
    "mP": "P 1 2/m 1",
    "mC": "C 1 2/m 1",
    "oP": "P m m m",
    "oC": "C m m m",
    "oI": "I m m m",
    "oF": "F m m m",
    "tP": "P 4/m m m",
    "tI": "I 4/m m m",
    "hP": "P 6/m m m",
    "hR": "R -3 m:H",
    "cP": "P m -3 m",
    "cI": "I m -3 m",
    "cF": "F m -3 m",
}


def assert_standard_setting(sol, truth_cell, truth_centring, tol=1e-4):
    """gemmi reduces label + cell: the reported cell is the true lattice (Niggli cells), its metric fits the
    holohedry of the label in the standard setting, the lattice (with the label's centring) has every rotation of
    that holohedry along those axes (mC: the 2-fold along b; oC: C-centred), and within a family of settings the
    reduced one is given (mP/mC: a, c shortest by the moves that keep the centring, β ≥ 90°; aP: Niggli)."""
    import gemmi

    assert same_lattice(sol.cell, sol.centring, truth_cell, truth_centring, tol), (sol.bravais, sol.cell)
    uc = gemmi.UnitCell(*sol.cell)
    sg = gemmi.SpaceGroup(HOLOHEDRY[sol.bravais])
    assert sg.centring_type() == sol.centring
    assert uc.is_compatible_with_spacegroup(sg, 1e-3), (sol.bravais, sol.cell)
    lattice_ops = {op.triplet() for op in gemmi.find_lattice_symmetry(uc, sol.centring, 0.1).sym_ops}
    wanted = {op.triplet() for op in sg.operations().sym_ops if op.det_rot() > 0}
    assert wanted <= lattice_ops, (sol.bravais, sol.cell, wanted - lattice_ops)
    a, b, c, _, beta, _ = sol.cell
    if sol.system == "monoclinic":
        g = np.asarray(cell_mod.metric(sol.cell), float)
        step = 2 if sol.centring == "C" else 1  # a → a ± 2c keeps C; c → c ± a keeps C and P
        assert beta >= 90.0 - 1e-9
        assert g[2, 2] <= g[2, 2] + g[0, 0] - 2 * abs(g[0, 2]) + 1e-9  # |c ± a| ≥ |c|
        assert g[0, 0] <= g[0, 0] + step**2 * g[2, 2] - 2 * step * abs(g[0, 2]) + 1e-9  # |a ± step·c| ≥ |a|
    if sol.system == "triclinic":
        assert gemmi.GruberVector(uc, "P").is_niggli() or gemmi.GruberVector(uc, "P", True).is_niggli()


@pytest.mark.parametrize(
    ("bravais", "cell", "sg"),
    [
        ("mC", [8.3599, 19.7974, 5.7149, 90, 112.3419, 90], "A 1 a 1"),  # mc_noisy_generated.txt's truth, A setting
        ("mC", [8.4186, 12.963, 7.210, 90, 114.11, 90], "I 1 2/m 1"),  # orthoclase as an I cell (issue 21)
        ("mP", [7.21, 9.13, 14.02, 90, 130.5, 90], "P 1 21/c 1"),  # c not reduced against a
        ("oC", [6.03, 16.55, 17.71, 90, 90, 90], "A m m 2"),  # A-centred
        ("hR", [4.99, 4.99, 17.06, 90, 90, 120], "R -3 c:H"),
        ("aP", [7.126, 7.852, 9.9, 89.99, 120.0, 106.03], "P -1"),  # not Niggli-reduced
    ],
)
def test_reported_cells_are_in_the_standard_setting_of_their_label(bravais, cell, sg):
    """Issue 21: a cell given in another setting of its lattice (A / I centred, unreduced) is reported in the
    International Tables standard setting of its Bravais label (solution.standard_setting), checked with gemmi
    (assert_standard_setting). Exact lines (1e-4 of ⟨a²⟩: round-off of the refinement); refinements only (< 1 s)."""
    from analysis.indexing import synthetic_pattern
    from analysis.indexing.solution import standard_setting

    p = synthetic_pattern(bravais, np.random.default_rng(0), cell=cell, spacegroup=sg)
    system = p.system
    kw = dict(wavelength=p.wavelength, g_zero=None)
    x = cell_mod.reciprocal_params(np.asarray(cell, float), system)
    sol = refine_candidate(x, 0.0, p.inv_d2, system, **kw)
    assert sol is not None
    std = standard_setting(sol, p.inv_d2, **kw)
    assert std.bravais == bravais
    assert_standard_setting(std, cell, sg.split()[0][0])


@pytest.mark.parametrize(
    ("name", "cell", "system", "zero", "why"),
    [
        # an aP cell (3 % off the tP lattice, not a derivative within RELATED_TOL) that fits better than the errors
        ("tp_noisy_overfit", [10.0754, 10.3648, 18.4643, 90.3805, 90.6524, 91.1696], "triclinic", -0.0378, "χ²_ν"),
        # an mC cell with a 2.757 Å axis (SHORT_AXIS), unrelated to the tP lattice
        ("tp_noisy_short", [7.8045, 10.8034, 2.7571, 90.0, 100.2129, 90.0], "monoclinic", 0.0397, "translation"),
    ],
)
def test_implausible_best_cell_gives_way_to_a_higher_symmetry_cell_within_the_errors(name, cell, system, zero, why):
    """Generated noisy tP lists (bench_indexing.py --blind, seed 2024): the blind answers were unrelated lower-symmetry
    cells that outscore the true tP cell by more than decide.parameter_factor allows (issue 21). The χ² statistic of
    the fits tells them apart: the tP cell's χ² is consistent with the σ(q²) errors, while the best cell either fits
    better than the errors allow (χ² quantile < FIT_ALPHA: chance coincidences of a distorted cell's lines with
    noise) or has a monoclinic translation below SHORT_AXIS."""
    pk = read_peak_file(DATA / f"{name}_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True)
    truth = json.loads((DATA / f"{name}_generated.txt").read_text().splitlines()[1].split("cell ", 1)[1])
    tp, low = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), s), z, pk.inv_d2, s, **kw)
        for c, s, z in ((truth, "tetragonal", 0.0), (cell, system, zero))
    )
    # the situation of the failure: the lower-symmetry cell scores above the tP cell by more than parameter_factor
    assert low.score > tp.score and tp.score < parameter_factor(tp, low) * low.score, (tp.score, low.score)
    assert not related(tp, low)
    assert fits_noise(tp) and implausible(low), (chi2_quantile(tp), chi2_quantile(low))
    ranked = decide(rank_solutions([low, tp], top=10), n_impurity=1)
    # noisy positions: the generating cell to 2e-2 (bench_indexing.py)
    assert ranked[0].bravais == "tP" and same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason
    assert why in ranked[0].reason


def test_overfitting_large_cell_gives_way_to_a_smaller_cell_within_the_errors():
    """Noisy aP list (seed 2025): a wrong aP cell of ~3× the true volume, 7.93 × 13.57 × 25.92 Å, fits the 20 noisy
    lines with χ² 2.0 on 13 dof (quantile ~2e-4: better than the errors allow, its dense lines match the noise) and
    outscored the true cell (χ² 20.9 on 13, within the errors); it is no exact supercell of the truth (volume ratio
    2.96). The decision now puts a smaller cell of the same system that fits within the errors first when the best
    cell is implausible by its fit (decide.implausible). Refinements only."""
    pk = read_peak_file(DATA / "ap_noisy_overfit_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True, zero_sigma=0.05)
    truth = [7.9214, 10.2540, 12.5409, 84.4813, 77.7089, 71.1531]
    big = [7.9328, 13.5731, 25.9211, 93.9738, 94.8902, 94.8998]  # the blind answer, zero −0.035°
    tr, wrong = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c), "triclinic"), z, pk.inv_d2, "triclinic", **kw)
        for c, z in ((truth, 0.0), (big, -0.035))
    )
    assert wrong.score > tr.score and wrong.volume > 2.5 * tr.volume  # the situation of the failure
    assert implausible(wrong).startswith("χ²") and fits_noise(tr), (chi2_quantile(wrong), chi2_quantile(tr))
    assert not related(wrong, tr)
    ranked = decide(rank_solutions([wrong, tr], top=10), n_impurity=1)
    assert same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason


def test_higher_symmetry_derivative_cell_that_misfits_does_not_win():
    """The noisy aP list of ap_noisy_generated.txt (a ≈ b, γ 68.3°, α, β 87.7°): its lattice also has a C-centred
    monoclinic cell, 11.81 × 7.99 × 15.55 Å, β 92.8°, which forces α, β to 90° and fits the noisy lines far worse than
    the errors allow (χ² quantile ≈ 1) while the aP cell fits within them; as a derivative (same lattice) within
    FOM_FACTOR it won as the higher symmetry once the zero-shift restraint ran the zero-fixed triclinic search (issue
    21). decide.misfit keeps it out of the candidates. Refinements only."""
    pk = read_peak_file(DATA / "ap_noisy_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True, zero_sigma=0.05)
    truth = [7.1012, 7.1959, 15.5367, 87.6799, 87.6547, 68.3295]
    ap, mc = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), s), z, pk.inv_d2, s, **kw)
        for c, s, z in ((truth, "triclinic", 0.0), ([11.812, 7.992, 15.551, 90, 92.789, 90], "monoclinic", -0.011))
    )
    assert mc.bravais == "mC" and related(mc, ap) and mc.score >= 0.5 * ap.score  # the situation of the failure
    assert fits_noise(ap) and chi2_quantile(mc) > 0.99, (chi2_quantile(ap), chi2_quantile(mc))
    ranked = decide(rank_solutions([mc, ap], top=10), n_impurity=1)
    assert ranked[0].bravais == "aP" and same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason
    assert "decide.misfit" in ranked[1].reason


def test_exact_data_tie_goes_to_the_higher_symmetry_not_the_better_scoring_cell():
    """A generated clean cP list (6.336 Å, P n -3 n; bench_indexing.py --blind, seed 2024, cubic list 17): an mP cell
    of 45.7 Å3 (no sub/supercell of the cP lattice) indexes the 20 exact lines as exactly as the cP cell. Exact fits
    sit at the score's 1e-3 σ floor, so their scores differ only by the calculated lines counted; the mP cell's
    29 426 against the cP's 26 578 beat the parameter_factor (0.92) test and the mP won. Exact ties now go to the
    higher symmetry, as the issue's decision rule says."""
    pk = read_peak_file(DATA / "cp_clean_17_generated.txt")
    cp, mp = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), s), 0.0, pk.inv_d2, s, wavelength=pk.wavelength)
        for c, s in (
            ([6.336, 6.336, 6.336, 90, 90, 90], "cubic"),
            ([3.219, 3.168, 4.552, 90, 100.182, 90], "monoclinic"),
        )
    )
    assert cp.n_indexed == mp.n_indexed == 20 and max(cp.chi2 / cp.dof, mp.chi2 / mp.dof) < 1e-6  # both exact
    assert parameter_factor(cp, mp) * mp.score > cp.score  # the situation of the failure
    ranked = decide(rank_solutions([mp, cp], top=10), n_impurity=1)
    assert ranked[0].bravais == "cP" and "exact data" in ranked[0].reason, ranked[0].reason
    np.testing.assert_allclose(ranked[0].cell[0], 6.336, atol=1e-3)  # the generating cell, 4 decimals in the header


def test_higher_symmetry_supercell_with_unobserved_lines_does_not_win():
    """A generated noisy oP list (7.25 × 7.22 × 6.32 Å; bench_indexing.py --blind, seed 2024, orthorhombic list 19):
    an hP cell of four times its volume (14.58, 7.23 Å) indexes the data at about half the oP score and, as a
    derivative cell within FOM_FACTOR, won as the higher symmetry. Fewer of its calculated lines are observed than of
    the oP cell's (decide.unsupported_supercell), so its extra lattice points have no support in the data."""
    pk = read_peak_file(DATA / "op_noisy_19_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True)
    hp, op = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), s), 0.0, pk.inv_d2, s, centrings=["P"], **kw)
        for c, s in (
            ([14.58, 14.58, 7.226, 90, 90, 120], "hexagonal"),
            ([6.321, 7.225, 7.259, 90, 90, 90], "orthorhombic"),
        )
    )
    assert op.score > hp.score >= 0.5 * op.score and related(hp, op)  # the situation of the failure
    assert line_coverage(hp, pk.inv_d2) < line_coverage(op, pk.inv_d2)  # 0.45 against 0.61
    assert decide(rank_solutions([hp, op], top=10), n_impurity=1)[0].bravais == "hP"  # without the lines: as before
    ranked = decide(rank_solutions([hp, op], top=10), n_impurity=1, inv_d2=pk.inv_d2)
    # noisy positions: the generating cell to 2e-2 (bench_indexing.py)
    assert ranked[0].bravais == "oP" and same_lattice(ranked[0].cell, "P", [7.253, 7.221, 6.322, 90, 90, 90], "P", 2e-2)
    assert "unsupported_supercell" in ranked[1].reason, ranked[1].reason


def test_noisy_calcite_hr_supercell_keeps_its_place_with_the_lines_given():
    """The coverage test of a higher-symmetry supercell (decide.unsupported_supercell) keeps noisy calcite's hR cell,
    twice the mC half-cell that outscores it: 0.63 of its calculated lines are observed, 0.54 of the mC cell's."""
    pk = read_peak_file(DATA / "calcite_noisy.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True)
    lit = np.asarray(MINERALS["calcite"]["cell"], float)
    hr = refine_candidate(cell_mod.reciprocal_params(lit, "hexagonal"), 0.0, pk.inv_d2, "hexagonal", **kw)
    half = np.array([8.107, 4.994, 3.187, 90, 107.783, 90])
    mc = refine_candidate(cell_mod.reciprocal_params(half, "monoclinic"), 0.0, pk.inv_d2, "monoclinic", **kw)
    assert line_coverage(hr, pk.inv_d2) > line_coverage(mc, pk.inv_d2)
    ranked = decide(rank_solutions([mc, hr], top=10), n_impurity=1, inv_d2=pk.inv_d2)
    assert ranked[0].bravais == "hR", ranked[0].reason


def test_supercell_that_indexes_more_lines_is_supported():
    """A generated noisy hP list (7.62, 14.57 Å; bench_indexing.py --blind, seed 2024, hexagonal list 11): a 3× smaller
    mC cell outscores the true hP cell (28.2 against 20.2) with 19 lines and a slightly larger share of its lines
    observed (0.90 against 0.87); the hP cell indexes all 20. The first version of unsupported_supercell (coverage
    alone) turned this right answer into mC; a supercell indexing lines the smaller cell leaves is supported."""
    pk = read_peak_file(DATA / "hp_noisy_11_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True, zero_sigma=0.05)
    truth = [7.6215, 7.6215, 14.5731, 90.0, 90.0, 120.0]
    hp = refine_candidate(cell_mod.reciprocal_params(np.array(truth), "hexagonal"), 0.0, pk.inv_d2, "hexagonal", **kw)
    mc_cell = np.array([7.608, 13.193, 5.472, 90.0, 117.45, 90.0])
    mc = refine_candidate(cell_mod.reciprocal_params(mc_cell, "monoclinic"), 0.0, pk.inv_d2, "monoclinic", **kw)
    assert mc.score > hp.score >= 0.5 * mc.score and related(hp, mc)  # the situation
    assert hp.n_indexed > mc.n_indexed and line_coverage(hp, pk.inv_d2) < line_coverage(mc, pk.inv_d2)
    ranked = decide(rank_solutions([mc, hp], top=10), n_impurity=1, inv_d2=pk.inv_d2)
    # noisy positions: the generating cell to 2e-2 (bench_indexing.py)
    assert ranked[0].bravais == "hP" and same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason


def test_higher_symmetry_cell_that_explains_the_lines_as_likely_is_chosen():
    """Noisy hP list 5 of the blind table (seed 2024; 18.25 × 18.16 Å): an aP cell (score 11.3) and an oP cell
    9.05 × 15.81 × 18.24 Å (11.2) of other lattices outscored the true hP cell (9.7, below decide.parameter_factor ×
    the best) by fitting the noise with more free parameters; the hP cell fits within the errors and its 29
    calculated lines (against the aP cell's 25, but with four parameters fewer) explain the 20 lines more likely
    (decide.log_likelihood: a Gaussian of the known σ(q²) that saturates at the errors). Refinements only."""
    pk = read_peak_file(DATA / "hp_noisy_5_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True, zero_sigma=0.05)
    truth = json.loads((DATA / "hp_noisy_5_generated.txt").read_text().splitlines()[1].split("cell ", 1)[1])
    cells = [
        (truth, "hexagonal", 0.0),
        ([7.0588, 8.2433, 15.6686, 90.204, 92.3617, 103.6391], "triclinic", -0.0376),  # the best score
        ([9.0526, 15.8116, 18.2379, 90.0, 90.0, 90.0], "orthorhombic", 0.0186),  # the blind answer
    ]
    hp, ap, op = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), s), z, pk.inv_d2, s, **kw) for c, s, z in cells
    )
    # the situation of the failure: the hP cell below parameter_factor × the best score, of another lattice
    assert ap.score > op.score > hp.score and hp.score < parameter_factor(hp, ap) * ap.score, (hp.score, ap.score)
    assert not related(hp, ap) and not implausible(ap)
    ll = {s.bravais: log_likelihood(s, pk.inv_d2) for s in (hp, ap, op)}
    # the margin: 1.3 nats (the hP cell's log-likelihood 84.7 against the aP cell's 83.4)
    assert ll["hP"] > ll["aP"] + 0.5, ll
    ranked = decide(rank_solutions([ap, op, hp], top=10), n_impurity=1, inv_d2=pk.inv_d2)
    assert ranked[0].bravais == "hP" and same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason
    assert "likel" in ranked[0].reason


def test_within_one_system_the_likelier_cell_wins_not_the_better_score():
    """Noisy aP list 28 of the blind table (seed 2024; 5.38 × 7.83 × 17.68 Å): a wrong aP cell 6.66 × 7.98 × 17.73 Å
    outscored the true lattice (24.4 against 19.3, refined from the generating cell; both index the 20 lines, both
    within the errors) by matching the noise more closely; under the Gaussian of the known σ(q²), which saturates at
    the errors, the true cell explains the lines e^2.5 times more likely (log-likelihoods 98.1 against 95.7:
    decide.likelier admits it, and candidates of one system are ordered by the log-likelihood on data with errors).
    Refinements only."""
    pk = read_peak_file(DATA / "ap_noisy_28_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True, zero_sigma=0.05)
    truth = json.loads((DATA / "ap_noisy_28_generated.txt").read_text().splitlines()[1].split("cell ", 1)[1])
    wrong, tr = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), "triclinic"), z, pk.inv_d2, "triclinic", **kw)
        for c, z in (([6.6568, 7.9755, 17.7346, 97.0901, 91.8775, 99.6236], 0.0295), (truth, 0.0))
    )
    assert wrong.score > tr.score and not related(wrong, tr) and not implausible(wrong)  # the situation of the failure
    assert wrong.n_indexed == tr.n_indexed == 20 and fits_noise(tr)
    # margin 2.5 nats, deterministic refinements of one list
    assert log_likelihood(tr, pk.inv_d2) > log_likelihood(wrong, pk.inv_d2) + 1.0
    ranked = decide(rank_solutions([wrong, tr], top=10), n_impurity=1, inv_d2=pk.inv_d2)
    assert same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason


def test_the_cell_of_the_highest_evidence_is_the_answer_on_data_with_errors():
    """Noisy tP list 47 of the blind table (seed 2024; 10.34 × 10.27 Å, a ≈ c): an aP cell 4.81 × 6.25 × 7.51 Å of
    another lattice scores 31.5 and explains the lines more likely (log L 86.4) than the true tP cell (22.0; 81.1),
    both within the errors, one impurity line each; with 3 nats per free parameter (decide.EVIDENCE_PER_PARAMETER:
    six against two) the tP cell's evidence is the higher, 75.1 against 68.4, and it is the answer. Refinements only."""
    pk = read_peak_file(DATA / "tp_noisy_47_generated.txt")
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    kw = dict(wavelength=pk.wavelength, g_zero=g, refine_zero=True, zero_sigma=0.05)
    truth = json.loads((DATA / "tp_noisy_47_generated.txt").read_text().splitlines()[1].split("cell ", 1)[1])
    ap, tp = (
        refine_candidate(cell_mod.reciprocal_params(np.array(c, float), s), z, pk.inv_d2, s, **kw)
        for c, s, z in (
            ([4.8108, 6.2505, 7.5141, 99.6668, 96.4556, 103.3202], "triclinic", -0.0103),
            (truth, "tetragonal", 0.0),
        )
    )
    # the situation of the failure: the aP cell scores higher and is likelier, the tP cell below parameter_factor
    assert ap.score > tp.score / parameter_factor(tp, ap) and not related(ap, tp)
    assert log_likelihood(ap, pk.inv_d2) > log_likelihood(tp, pk.inv_d2) and fits_noise(tp)
    # margin 6.7 nats (deterministic refinements of one list)
    assert evidence(tp, pk.inv_d2) > evidence(ap, pk.inv_d2) + 3.0
    ranked = decide(rank_solutions([ap, tp], top=10), n_impurity=1, inv_d2=pk.inv_d2)
    assert ranked[0].bravais == "tP" and same_lattice(ranked[0].cell, "P", truth, "P", 2e-2), ranked[0].reason
    assert "highest evidence" in ranked[0].reason
