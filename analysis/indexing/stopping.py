"""The blind descent's stopping rules: whether a cell explains / settles a peak list (issue 21).

A monoclinic / orthorhombic search also runs the triclinic search unless its best cell explains the data
(:func:`needs_primitive_search`, :func:`explains_data`); blind mode stops descending through the lattice systems
once a cell settles the data (:func:`settles`). Moved out of ``__init__.py`` (idx21l), which re-exports every name.
"""

from __future__ import annotations

import numpy as np

from analysis.indexing.decide import FIT_ALPHA, chi2_quantile, fits_noise, line_coverage
from analysis.indexing.errors import EXACT_CHI2, PRECISE_CHI2
from analysis.indexing.solution import Solution

__all__ = [
    "PRIMITIVE_FALLBACK_SCORE",
    "EXPLAINS_CHI2",
    "EXPLAINS_CHI2_MIN",
    "EXPLAINS_COVERAGE",
    "BLIND_STOP_M20",
    "BLIND_STOP_M20_MONOCLINIC",
    "OUTLIER_RATIO",
    "reduced_chi2",
    "line_coverage",
    "explains_data",
    "data_sigma_scale",
    "needs_primitive_search",
    "residual_outlier_ratio",
    "settles",
    "PROBE_BATCHES",
    "probe_needed",
    "PROBE_BELOW",
    "probe_system",
]

# below this ranking score (≈ M20) a monoclinic / orthorhombic search may also run the triclinic
# search and convert its cells (exact data: true cells score ≥ 5e3); noisy data never reach it,
# so there the decision is :func:`explains_data`
PRIMITIVE_FALLBACK_SCORE = 1000.0
# largest reduced χ² of the indexed lines, Σ(Δq²/σ)²/(n_indexed − n_params), of a cell that "explains"
# the data: the true cell gives χ²_ν ≈ 1 under the σ(q²) error model (sd ≈ 0.4 with ~15 dof); a
# wrong cell that indexes every line only through its dense calculated lines spreads the residuals
# over ±n_σ·σ, χ²_ν ≈ n_σ²/3 ≈ 5
EXPLAINS_CHI2 = 2.5
# a fit far better than the error model (χ²_ν below this; probability ~1e-3 under the model with ~15
# dof) means the data are more precise than σ assumes: the true cell would then fit to that precision
# and score above PRIMITIVE_FALLBACK_SCORE, so a lower score proves nothing and the triclinic search runs
# (exact data: a wrong cell with χ²_ν = 0.05 and score 96 in the clean benchmark)
EXPLAINS_CHI2_MIN = 0.2
# smallest share of the calculated lines (up to Q₂₀, distinct, allowed by the centring) that are observed:
# a wrong, larger cell can index every line within the noise (χ²_ν ≈ 1) but leaves many of its own lines
# unobserved. On 90 noisy monoclinic / orthorhombic benchmark patterns (the ones the benchmark draws first,
# seed 2024) the wrong cells that indexed all lines within χ²_ν ≤ 2.5 reached at most 0.61, the true
# cells 0.56-1.2 (above 1: overlapping lines); below the threshold the triclinic search runs
EXPLAINS_COVERAGE = 0.65


def reduced_chi2(sol: Solution, inv_d2, sigma) -> float:
    """Reduced χ² Σ(Δq²/σ)²/(n_indexed − n_params) of the indexed lines of ``sol`` (σ: ``[n]`` Å⁻²)."""
    inv_d2 = np.asarray(inv_d2, float)
    ok = np.ones(inv_d2.size, bool)
    ok[sol.unindexed] = False
    r = (inv_d2 - sol.inv_d2_calc) / np.asarray(sigma, float)
    dof = max(int(ok.sum()) - sol.x.size - (1 if sol.zero_shift != 0.0 else 0), 1)
    return float(np.sum(r[ok] ** 2) / dof)


def explains_data(sol: Solution | None, inv_d2, sigma, n_impurity: int, n_fom: int = 20) -> bool:
    """True when ``sol`` accounts for the peak list as well as the error model allows.

    Every line among the first ``n_fom`` is indexed except at most ``n_impurity`` (impurity
    phases), the reduced χ² of the indexed lines lies in [:data:`EXPLAINS_CHI2_MIN`, :data:`EXPLAINS_CHI2`]
    (consistent with the σ(q²) error model), and at least
    :data:`EXPLAINS_COVERAGE` of the cell's calculated lines are observed (:func:`line_coverage`).
    A monoclinic / orthorhombic search whose best solution explains the data skips the triclinic
    fallback (:func:`index_peaks`).
    """
    if sol is None:
        return False
    n = min(n_fom, np.asarray(inv_d2).size)
    n_bad = sum(1 for i in sol.unindexed if i < n)
    return (
        n_bad <= n_impurity
        and EXPLAINS_CHI2_MIN <= reduced_chi2(sol, inv_d2, sigma) <= EXPLAINS_CHI2
        and line_coverage(sol, inv_d2, n_fom) >= EXPLAINS_COVERAGE
    )


def data_sigma_scale(sol: Solution | None, inv_d2, sigma, n_impurity: int, n_fom: int = 20) -> float | None:
    """The data's own error in units of the σ(q²) model, √χ²_ν of ``sol`` (:func:`reduced_chi2`), when ``sol``
    indexes the data (at most ``n_impurity`` of the first ``n_fom`` lines unindexed, at least
    :data:`EXPLAINS_COVERAGE` of its calculated lines observed); None otherwise."""
    if sol is None:
        return None
    n = min(n_fom, np.asarray(inv_d2).size)
    if sum(1 for i in sol.unindexed if i < n) > n_impurity or line_coverage(sol, inv_d2, n_fom) < EXPLAINS_COVERAGE:
        return None
    return float(np.sqrt(reduced_chi2(sol, inv_d2, sigma)))


def needs_primitive_search(best: Solution | None, inv_d2, sigma, n_impurity: int, error_model: str = "data") -> bool:
    """Whether a monoclinic / orthorhombic search also runs the triclinic search (see :func:`index_peaks`).

    Precise data (the best cell fits with EXACT_CHI2 ≤ χ²_ν < PRECISE_CHI2) are judged under their own
    error model σ·:func:`data_sigma_scale` instead of the built-in one, so a synchrotron list whose best
    cell indexes every line to a few % of σ no longer runs the triclinic search for nothing
    (``error_model="fixed"``: the built-in model only, the behaviour before issue 21).
    """
    if best is not None and best.score >= PRIMITIVE_FALLBACK_SCORE:
        return False
    k = data_sigma_scale(best, inv_d2, sigma, n_impurity) if error_model == "data" else None
    if k is not None and EXACT_CHI2 <= k * k < PRECISE_CHI2:
        sigma = k * np.asarray(sigma, float)
    return not explains_data(best, inv_d2, sigma, n_impurity)


# blind mode searches the systems from cubic down and stops descending once a cell of the current
# system explains the data (explains_data without the lower χ² bound: precise data are no reason to
# doubt a cell) with M20 ≥ this: de Wolff (1968) — an M20 above 10 with no unindexed lines is rarely
# wrong; 20 leaves margin. Lower-symmetry systems could only add cells with more free parameters,
# which the decision rule (decide.py) would not prefer unless they score 1/FOM_FACTOR times better.
BLIND_STOP_M20 = 20.0
# a monoclinic cell also settles from M20 ≥ this when its χ² is consistent with the errors (decide.fits_noise, two-sided
# 1 %): a monoclinic cell has about twice the calculated lines of an orthorhombic one of its volume, so its M20 is
# lower. Issue 21, noisy blind lists of seeds 2024 and 2025 at the monoclinic step: the true mP cells that missed 20
# had M20 13.2-19.5 (χ²_ν 0.68-1.1), and each then ran the triclinic search for nothing (~10 of ~16 CPU s); the
# wrong monoclinic / orthorhombic cells of the 20 aP lists that index the data reached 11.7 (χ²_ν 2.0) and below
BLIND_STOP_M20_MONOCLINIC = 12.0


# a cell whose largest residual (first 20 lines, indexed) exceeds this many times the robust scale of its
# residuals, 1.4826 · median |Δq²/σ|, does not settle the data: the lines are more precise than its fit, the
# misfit sits in a few lines (split by a lower symmetry). Issue 21: a precise mP list (0.002° errors, a
# pseudo-orthorhombic lattice, β' = 90.4°) stopped on the oP cell of the same lattice (M20 25.7, χ²_ν 1.2;
# two lines 2.1-3.0 σ off, the rest within 0.5 σ): ratio 9.8. The true cells of 60 generated lists per system
# (seed 2024) reach at most 5.8 (noisy cubic…orthorhombic), 7.5 (noisy monoclinic), 4.2 (0.002° errors)
OUTLIER_RATIO = 8.0


def residual_outlier_ratio(sol: Solution, inv_d2, sigma, n_fom: int = 20) -> float:
    """Largest |Δq²/σ| of the indexed lines among the first ``n_fom`` over their robust scale
    1.4826 · median |Δq²/σ| (≈ 2-4 for Gaussian residuals of 20 lines; see :data:`OUTLIER_RATIO`)."""
    inv_d2 = np.asarray(inv_d2, float)
    ok = np.ones(inv_d2.size, bool)
    ok[sol.unindexed] = False
    ok[n_fom:] = False
    r = np.abs(inv_d2 - sol.inv_d2_calc)[ok] / np.asarray(sigma, float)[ok]
    if r.size == 0:
        return 0.0
    return float(r.max() / max(1.4826 * np.median(r), 1e-300))


def settles(sol: Solution | None, inv_d2, sigma, n_impurity: int, n_fom: int = 20) -> bool:
    """Whether ``sol`` ends the blind descent through the lattice systems (see :data:`BLIND_STOP_M20`; a monoclinic
    cell from :data:`BLIND_STOP_M20_MONOCLINIC` when its χ² is consistent with the errors, decide.fits_noise):
    it indexes the data (at most ``n_impurity`` of the first ``n_fom`` lines unindexed, χ²_ν ≤
    :data:`EXPLAINS_CHI2`, ≥ :data:`EXPLAINS_COVERAGE` of its lines observed) and, unless the list is exact
    (χ²_ν < :data:`EXACT_CHI2`), no residual stands out of the others (:data:`OUTLIER_RATIO`)."""
    if sol is None or sol.M20 < (BLIND_STOP_M20_MONOCLINIC if sol.system == "monoclinic" else BLIND_STOP_M20):
        return False
    if sol.M20 < BLIND_STOP_M20 and not fits_noise(sol):
        return False
    n = min(n_fom, np.asarray(inv_d2).size)
    chi2 = reduced_chi2(sol, inv_d2, sigma)
    return (
        sum(1 for i in sol.unindexed if i < n) <= n_impurity
        and chi2 <= EXPLAINS_CHI2
        and line_coverage(sol, inv_d2, n_fom) >= EXPLAINS_COVERAGE
        and (chi2 < EXACT_CHI2 or residual_outlier_ratio(sol, inv_d2, sigma, n_fom) <= OUTLIER_RATIO)
    )


# a cell that settles the data with a line unindexed (an impurity allowed by n_impurity) may be a wrong higher-symmetry
# cell that the true lower-symmetry one would beat by indexing that line too. Issue 21 (idx21l/idx21m): 7 of the 11
# clean failures of the blind table (seed 2024) settled so (hR → tI, oF → hR, oP → cI, four aP → mP; M20 15.7-56,
# inside the 11.6-70 of right noisy answers whose unindexed line is the impurity, so no threshold on M20 or χ² parts
# them). The next lower system is therefore searched before the descent stops, with this many batches (an exact list
# finds its cell in the first batch, search.Stopping.stop_m20) and STALLED_REFINED cells refined; the decision rule
# (decide.py) then weighs both, and the descent stops unless a cell of the probed system took the decision and does not
# settle the data itself
PROBE_BATCHES = 2


def probe_needed(sol: Solution, n_fom: int = 20) -> bool:
    """Whether the blind descent searches a lower system (:func:`probe_system`, :data:`PROBE_BATCHES`) before it stops
    on the settling cell ``sol``: ``sol`` leaves one of the first ``n_fom`` lines unindexed, or it fits better than
    the errors allow (χ² quantile below decide.FIT_ALPHA) without fitting them exactly (χ²_ν ≥ EXACT_CHI2, errors.py),
    or it fits worse than they allow (quantile above 1 − FIT_ALPHA).

    The second: a cell that fits a list better than the σ(q²) model allows is either matching noise or, on precise or
    exact data, a pseudo-symmetric cell that only approximates the true lattice. Issue 21 (idx21n), clean lists of
    seed 2024 / 2025: a tP cell (6.78, 16.59 Å) indexed the 20 exact lines of oP list 11 (16.60 × 6.77 × 6.79 Å, b/c
    = 0.997) at χ²_ν 0.36 on 18 dof (quantile 0.007) and settled the descent at the tetragonal step, the oP cell fits
    them exactly (score 13 813 against 46); a tI cell (4.59, 4.22 Å) those of oF list 2 of seed 2025 (6.48 × 6.49 ×
    4.22 Å) at χ²_ν 0.02 (score 358 against 26 244). Real precise lists (11-BM, χ²_ν ≈ 1e-4) probe too: a brief
    search of one system more. The third: a cell that fits worse than the errors allow (quantile above 1 − FIT_ALPHA)
    imposes a symmetry the lines do not have, the pseudo-symmetric cell of a lower-symmetry lattice. Issue 21
    (idx21q), clean aP list 12 of seed 2024 (8.04 × 9.07 × 9.09 Å): an mC cell indexed the 20 exact lines at χ²_ν
    2.1 (quantile 0.995, M20 21.1) and settled the descent at the monoclinic step; the aP cell fits them exactly."""
    if any(i < n_fom for i in sol.unindexed):
        return True
    chi2_nu, quantile = sol.chi2 / max(sol.dof, 1), chi2_quantile(sol)
    return bool((chi2_nu >= EXACT_CHI2 and quantile < FIT_ALPHA) or quantile > 1.0 - FIT_ALPHA)


# the system a settling cell that indexes every line but fits outside the errors (probe_needed's second and third
# reasons) is probed in: the next lower lattice system whose lattices include the cell's own with one metric
# constraint released (a pseudo-symmetric cell's true lattice)
PROBE_BELOW = {
    "cubic": "tetragonal",
    "tetragonal": "orthorhombic",
    "hexagonal": "orthorhombic",
    "orthorhombic": "monoclinic",
    "monoclinic": "triclinic",
}


def probe_system(sol: Solution, later: list, n_fom: int = 20) -> str | None:
    """The lattice system the blind descent probes before it stops on ``sol`` (probe_needed), among the systems
    ``later`` still to search: the next one when ``sol`` leaves a line unindexed (a lower-symmetry cell may index it),
    else :data:`PROBE_BELOW` of ``sol``'s system (the next one when that is not searched); None when none is left."""
    if not later:
        return None
    below = PROBE_BELOW.get(sol.system)
    if not any(i < n_fom for i in sol.unindexed) and below in later:
        return below
    return later[0]
