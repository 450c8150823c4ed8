"""The blind decision rule: which of the ranked cells is the answer when the lattice system is unknown.

Classical practice (DICVOL, ITO, McMaille): a cell that indexes the data in a higher-symmetry
system is preferred to a lower-symmetry one that fits a little better (more free parameters always
fit better), and among equals the smaller volume wins. Here, over the merged solutions
(solution.rank_solutions):

1. *indexes the data*: at most ``n_impurity`` of the first 20 lines unindexed;
2. *physically sensible*: the shortest lattice translation (Niggli cell) is at least
   :data:`MIN_AXIS` Å, and the indexed lines do not all lie in one zone that leaves a cell parameter to the few
   other lines (:func:`one_zone`); cells failing this are demoted below every sensible one, never dropped;
3. among the sensible cells that index the data, those with a ranking score (≈ M20, solution.py)
   of at least :data:`FOM_FACTOR` × the best are *candidates* when they are derivatives of the best-scoring
   cell (the same lattice or an index-2..4 sub/supercell within :data:`RELATED_TOL`; a supercell only when it observes
   as large a share of its calculated lines, :func:`unsupported_supercell`); a higher-symmetry cell
   of an *unrelated* lattice must score at least :func:`parameter_factor` × the best (≈ 0.86-0.97: what the
   best cell's extra free parameters buy on noisy lines), not half of it, unless the best cell is itself implausible
   (:func:`implausible`: it fits better than the data's errors allow, or it is a monoclinic / triclinic cell with a
   translation below :data:`SHORT_AXIS`) and the higher-symmetry cell's χ² is consistent with the errors
   (:func:`fits_noise`), or the data are exact (computed positions: the best cell's χ²_ν below errors.EXACT_CHI2)
   and the cell fits them as exactly, indexing as many lines (scores of exact fits differ only by the calculated
   lines counted, not by how well the extra parameters fit), or, on data with errors, the cell is of the best
   cell's system or a higher one, fits within the errors and explains the lines more likely (:func:`likelier`,
   :func:`log_likelihood`: a Gaussian of the known σ(q²) that saturates at the errors, where the score keeps
   rewarding a closer fit of the noise); the answer is the candidate of the
   highest symmetry, then of a χ² within the errors (:func:`chi2_quantile` ≤ 1 − :data:`FIT_ALPHA`; not on exact
   data), then of the best score (data with errors: the best log-likelihood; equal: the smallest volume; cells of
   one lattice are merged before, so
   candidates of one system are unrelated lattices or derivatives); the others follow in that order, then the rest
   by score.

4. on data with errors (the best cell not exact), the sensible cell of the highest :func:`evidence` (the
   log-likelihood less :data:`EVIDENCE_PER_PARAMETER` nats per free cell parameter) goes first, the order above
   following (issue 21, idx21s: Bayesian model comparison between cells of different systems and volumes).

Every solution gets ``reason``: the figures the choice rests on (M20, F20, symmetry, volume) and why it
ranks where it does.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from analysis import cell as cell_mod
from analysis.indexing.errors import EXACT_CHI2, PRECISE_CHI2, sigma_inv_d2
from analysis.indexing.fom import count_distinct
from analysis.indexing.reduce import same_lattice, supercell_index
from analysis.indexing.reference import refine_rows
from analysis.indexing.solution import SYMMETRY_ORDER, Solution

__all__ = [
    "MIN_AXIS",
    "FOM_FACTOR",
    "RELATED_TOL",
    "ZONE_SHARE",
    "shortest_translation",
    "one_zone",
    "related",
    "parameter_factor",
    "FIT_ALPHA",
    "SHORT_AXIS",
    "variance_scale",
    "chi2_quantile",
    "fits_noise",
    "implausible",
    "misfit",
    "line_coverage",
    "unsupported_supercell",
    "IMPURITY_SHARE",
    "log_likelihood",
    "likelier",
    "EVIDENCE_PER_PARAMETER",
    "evidence",
    "decide",
]

# Shortest lattice translation (Å) a reported cell may have. A lattice translation joins two
# symmetry-equivalent atoms, so it is at least the shortest distance between like atoms; the
# shortest known at ambient conditions are Be (hcp, a = 2.29 Å), graphite (a = 2.46 Å) and diamond
# (2.52 Å); H-bearing molecular crystals have no translation below ~3.5 Å. 2.0 Å keeps every real
# lattice with margin and rejects the one-zone sub-cells of the issue (halite 1.41 Å, zincite 1.62 Å).
MIN_AXIS = 2.0
# a higher-symmetry cell is preferred when its score is at least this share of the best score:
# a lower-symmetry cell of the same data has more free parameters and fits a little better; wrong cells
# that index all lines within the tolerance score several times below the true one (solution.py)
FOM_FACTOR = 0.5
# two cells are derivatives of one lattice (decide's FOM_FACTOR applies) when they are the same lattice or index-2..4
# sub/supercells within this relative metric tolerance (reduce.same_lattice): 2e-2, the benchmark's test for a noisy
# list's refined cell against the truth (~1 % in the axes), so a derivative cell refined on noisy lines still counts
RELATED_TOL = 2e-2
# share of the indexed lines that may lie in one zone [uvw] (hu + kv + lw = 0) before the cell is
# called a one-zone explanation (its third dimension undetermined)
ZONE_SHARE = 0.9
# two-sided significance level of the χ² test of a cell's fit against the data's errors (fits_noise, implausible):
# a correct cell's χ² (σ(q²) model, scaled to the data, variance_scale) follows χ²(dof); below the α quantile it fits
# better than the errors allow (a dense, large or distorted cell matching noise), above the 1 − α one worse
FIT_ALPHA = 0.01
# a monoclinic / triclinic translation shorter than this (Å) is implausible (implausible): translations below 3 Å
# occur in elements and simple metallic phases of high symmetry (Be 2.29, Fe bcc 2.48, Cu 2.55, W 2.74 Å; α-U,
# oC, 2.85 Å), not in monoclinic / triclinic crystals, and a 2.757 Å mC axis took a noisy tP list (issue 21)
SHORT_AXIS = 3.0
# share of the observed lines that belong to no phase of the cell (impurities, artefacts) in :func:`log_likelihood`:
# one of the first 20 (config.Tolerance.n_impurity = 1)
IMPURITY_SHARE = 0.05
# Occam factor of :func:`evidence`, nats per free cell parameter: a BIC-like stand-in for log(prior range / posterior
# width) of each reciprocal-metric parameter. Issue 21 (idx21s), replayed on 235 noisy dev lists of seed 2024: 2 / 3 / 6
# nats gave 186 (c = 2 and 3) / 178 right (main 164); held-out lists 30-59: c = 2 lost 2, c = 3 one (as the rule
# without it); lists 60-99: none
EVIDENCE_PER_PARAMETER = 3.0


def shortest_translation(sol: Solution) -> float:
    """Shortest lattice translation (Å): the shortest axis of the Niggli-reduced primitive cell."""
    return float(np.min(np.asarray(sol.niggli_cell, float)[:3]))


def one_zone(sol: Solution) -> bool:
    """True when at least :data:`ZONE_SHARE` of the indexed lines lie in one zone [uvw] (|u|,|v|,|w| ≤ 2) whose lines
    do not determine the cell (their design matrix in ``sol``'s system has rank below its parameter count), so the
    few other lines alone fix the rest. Issue 21 (idx21q), clean hP list 39 of seed 2024 (4.93, 24.71 Å): 19 of 20
    lines are 00l and 10l, which fix a hexagonal cell's a and c; the true cell (exact, score 25 426) was demoted
    and an mP cell of another lattice (7 705) won. The halite mC sub-cell's hk0 zone fixes two of four parameters."""
    hkl = np.asarray(sol.hkl, float)
    ok = np.ones(hkl.shape[0], bool)
    ok[list(sol.unindexed)] = False
    hkl = hkl[ok]
    if hkl.shape[0] < 4:
        return False
    uvw = np.array(
        [(u, v, w) for u in range(-2, 3) for v in range(-2, 3) for w in range(-2, 3) if (u, v, w) > (0, 0, 0)]
    )
    in_zone = np.abs(hkl @ uvw.T) < 0.5
    n_par = np.asarray(sol.x).size
    for j in np.flatnonzero(np.mean(in_zone, axis=0) >= ZONE_SHARE):
        h = np.asarray(cell_mod.design_matrix(hkl[in_zone[:, j]], sol.system), float)
        if np.linalg.matrix_rank(h, tol=1e-9) < n_par:  # the zone's lines leave a cell parameter to the few others
            return True
    return False


def related(a: Solution, b: Solution, rel_tol: float = RELATED_TOL) -> bool:
    """Whether ``a`` and ``b`` describe one lattice or an index-2..4 sub/supercell pair (derivative cells)."""
    if same_lattice(a.cell, a.centring, b.cell, b.centring, rel_tol):
        return True
    return bool(
        supercell_index(a.cell, a.centring, b.cell, b.centring, rel_tol=rel_tol)
        or supercell_index(b.cell, b.centring, a.cell, a.centring, rel_tol=rel_tol)
    )


def parameter_factor(high: Solution, low: Solution, n_fom: int = 20) -> float:
    """Share of ``low``'s score that a higher-symmetry cell ``high`` of an unrelated lattice needs,
    √((N − p_low)/(N − p_high)), with p the free cell parameters and N the lines, at most ``n_fom`` (1 when
    ``high`` has no fewer parameters).

    A least-squares fit of N lines with p parameters leaves residuals ∝ √((N − p)/N) of the errors, and the score
    (≈ M20) is inversely proportional to the mean residual: ``low``'s extra parameters alone raise its score by
    1/factor over what they would give a cell with ``high``'s few (aP over mP 0.94, over cubic 0.86). Issue 21: with
    FOM_FACTOR (0.5) for every cell, wrong mP / oP / hP / hR cells at 0.50-0.92 × the true aP / mP / oP / oC score won
    7 of 30 noisy lower-symmetry lists (seed 2024).
    """
    p_high, p_low = np.asarray(high.x).size, np.asarray(low.x).size
    n = min(n_fom, len(low.hkl))
    if p_high >= p_low or n <= p_low:
        return 1.0
    return float(np.sqrt((n - p_low) / (n - p_high)))


def variance_scale(leader: Solution) -> float:
    """The data's error variance in units of the σ(q²) model: the best cell's χ²_ν when it lies in
    [EXACT_CHI2, PRECISE_CHI2) (precise data, errors.py), else 1 (the model; exact lists are left to the score)."""
    chi2_nu = leader.chi2 / max(leader.dof, 1)
    return float(chi2_nu) if EXACT_CHI2 <= chi2_nu < PRECISE_CHI2 else 1.0


def chi2_quantile(sol: Solution, scale: float = 1.0) -> float:
    """P(χ²_dof ≤ χ²) of ``sol``'s fit, its χ² divided by the data's variance ``scale`` (:func:`variance_scale`):
    near 0 the cell fits better than the errors allow, near 1 worse."""
    return float(stats.chi2.cdf(sol.chi2 / scale, max(sol.dof, 1)))


def fits_noise(sol: Solution, scale: float = 1.0, alpha: float = FIT_ALPHA) -> bool:
    """Whether ``sol``'s χ² is consistent with the data's errors: α ≤ :func:`chi2_quantile` ≤ 1 − α."""
    return bool(alpha <= chi2_quantile(sol, scale) <= 1.0 - alpha)


def implausible(leader: Solution, scale: float = 1.0, alpha: float = FIT_ALPHA) -> str:
    """Why the best-scoring cell cannot stand against an unrelated higher-symmetry cell that fits within the errors
    ('' when it can): its fit is better than the errors allow (:func:`chi2_quantile` < α; not for exact lists, χ²_ν
    < EXACT_CHI2), so its score is bought by chance coincidences of its lines with noise, or it is a monoclinic /
    triclinic cell with a translation below :data:`SHORT_AXIS`. Issue 21, noisy tP lists (seed 2024): an aP cell
    with χ²_ν 0.21 on 13 dof (quantile 0.001) outscored the true tP (χ²_ν 1.35) by 17.6 to 12.2, and an mC cell
    with a 2.757 Å axis the true tP by 41.2 to 34.9."""
    chi2_nu = leader.chi2 / max(leader.dof, 1)
    if chi2_nu >= EXACT_CHI2 and chi2_quantile(leader, scale) < alpha:
        return f"χ²_ν {chi2_nu / scale:.2f} on {leader.dof} dof fits better than the errors allow"
    if leader.system in ("monoclinic", "triclinic") and shortest_translation(leader) < SHORT_AXIS:
        return f"a translation of {shortest_translation(leader):.2f} Å < {SHORT_AXIS:g} Å in a {leader.system} cell"
    return ""


def misfit(high: Solution, leader: Solution, scale: float = 1.0, alpha: float = FIT_ALPHA) -> bool:
    """Whether a derivative cell ``high`` of the best-scoring ``leader`` fits worse than the errors allow (χ² above
    the 1 − α quantile) while ``leader`` fits within them: the symmetry that ``high`` imposes on the lattice is not in
    the data. Issue 21, a noisy aP list (seed 2024; a ≈ b, γ 68.3°, α, β 87.7°): the mC cell of the same lattice
    (11.81 × 7.99 × 15.55 Å, β 92.8°, χ² quantile ≈ 1, score 9.5) won over the true aP (quantile 0.36, 15.9) as the
    higher symmetry within FOM_FACTOR."""
    return fits_noise(leader, scale, alpha) and chi2_quantile(high, scale) > 1.0 - alpha


def line_coverage(sol: Solution, inv_d2, n_fom: int = 20) -> float:
    """Share of the calculated lines that are observed: indexed lines among the first ``n_fom`` over the
    distinct calculated lines (allowed by the centring) up to Q_N."""
    inv_d2 = np.asarray(inv_d2, float)
    n = min(n_fom, inv_d2.size)
    ref = refine_rows(sol.system)
    inv_d2_ref = ref.rows[ref.allowed[sol.centring]] @ np.asarray(sol.x, float)
    n_calc = max(count_distinct(inv_d2_ref, inv_d2[n - 1]), 1)
    n_idx = n - sum(1 for i in sol.unindexed if i < n)
    return n_idx / n_calc


def unsupported_supercell(high: Solution, leader: Solution, inv_d2) -> bool:
    """Whether ``high``, a derivative cell of ``leader`` with a larger primitive cell (a supercell, index 2..4), has
    less support in the lines than ``leader``: a smaller share of its calculated lines observed (:func:`line_coverage`).
    The supercell's extra lattice points predict lines of their own; when they are missing more often than the
    smaller cell's, the data hold no evidence of the larger cell, whatever symmetry it has (de Wolff's reason for
    counting calculated lines in M20). Issue 21 (idx21l), noisy oP list 19 of seed 2024 (7.25 × 7.22 × 6.32 Å): an hP
    cell of four times its volume (14.58, 7.23 Å; score 12.6 against 23.1, coverage 0.45 against 0.61) won as the
    higher symmetry within FOM_FACTOR. Noisy calcite keeps its hR cell, a twice larger cell than the mC half-cell
    that outscores it (coverage 0.63 against 0.54). A supercell that indexes more of the first 20 lines than
    ``leader`` has evidence of its own and is never unsupported: without this, the first version of the test lost a
    noisy hP list (7.62, 14.57 Å: 20 lines, coverage 0.87, against a 3× smaller mC cell, 19 lines, 0.90) and a noisy
    oC list (20 lines, 0.69, against a 3× smaller aP cell, 18 lines, 0.75) of the blind table, seed 2024."""
    v_high, v_lead = (float(cell_mod.volume(s.niggli_cell)) for s in (high, leader))
    if v_high <= 1.5 * v_lead or _n_bad(high, 20) < _n_bad(leader, 20):  # lines only the supercell indexes: evidence
        return False
    return line_coverage(high, inv_d2) < line_coverage(leader, inv_d2)


def log_likelihood(sol: Solution, inv_d2, sigma=None, scale: float = 1.0, n_fom: int = 20) -> float:
    """Log-likelihood of the first ``n_fom`` observed lines under ``sol``'s lattice, each line independently

        p(q_i) = (1 − π) · (1/N_calc) · Σ_j N(q_i − z_i; q_j, σ_i) + π / Q_N

    with q_j the N_calc distinct calculated lines allowed by the centring up to Q_N (the N-th observed line), z_i the
    refined zero shift in q², σ_i = √scale · σ(q²) (``sigma``, default errors.sigma_inv_d2; ``scale``:
    :func:`variance_scale`) and π = :data:`IMPURITY_SHARE` the chance that a line is an impurity, uniform in
    [0, Q_N]. Unlike the score (≈ M20 ∝ 1 / (ε̄ · N_calc)), which grows without bound as the residuals ε̄ shrink
    (more free parameters, a zero shift absorbing the errors), the Gaussian saturates at the data's known error: a
    residual well inside σ earns no more than one at σ/2, while every calculated line that the cell predicts and the
    data do not show dilutes each observed line's probability (1/N_calc, once per line: N_calc weighs twenty times
    more than in log M20). An impurity line costs log(π/Q_N) at most, whatever the cell."""
    q = np.asarray(inv_d2, float)
    n = min(n_fom, q.size)
    sig = (sigma_inv_d2(q) if sigma is None else np.asarray(sigma, float))[:n] * np.sqrt(scale)
    hkl = np.asarray(sol.hkl, float)[:n]
    x = np.asarray(sol.x, float)
    # the zero shift in q² per line: the calculated position less the lattice's own (solution.refine_candidate)
    q_model = q[:n] - (
        np.asarray(sol.inv_d2_calc, float)[:n] - np.asarray(cell_mod.design_matrix(hkl, sol.system), float) @ x
    )
    ref = refine_rows(sol.system)
    q_ref = np.sort(ref.rows[ref.allowed[sol.centring]] @ x)
    q_ref = q_ref[q_ref <= q[n - 1] + 6.0 * float(np.max(sig))]
    q_ref = q_ref[np.concatenate([[True], np.diff(q_ref) > 1e-6 * q_ref[1:]])]  # distinct lines (fom.count_distinct)
    n_calc = max(count_distinct(q_ref, q[n - 1]), 1)
    dens = np.exp(-0.5 * ((q_model[:, None] - q_ref[None, :]) / sig[:, None]) ** 2).sum(axis=1) / (
        np.sqrt(2 * np.pi) * sig
    )
    return float(np.sum(np.log((1.0 - IMPURITY_SHARE) * dens / n_calc + IMPURITY_SHARE / q[n - 1])))


def likelier(sol: Solution, leader: Solution, inv_d2, sigma=None, scale: float = 1.0) -> bool:
    """Whether ``sol``, of the best-scoring ``leader``'s system or a higher one, explains the lines more likely than
    ``leader`` (:func:`log_likelihood`) and fits within the errors (:func:`fits_noise`): then ``leader``'s better
    score is bought by fitting the noise (more free parameters, a zero shift), not by the lines. Issue 21 (idx21s),
    noisy lists of seed 2024: on hP list 5 (18.25 × 18.16 Å) an aP cell (score 11.3) and an oP cell 9.05 × 15.81 ×
    18.24 Å (11.2) of other lattices outscored the true hP cell (9.7, below parameter_factor × the best;
    log-likelihoods aP 83.4, hP 84.7); on aP list 28 a wrong aP cell 6.66 × 7.98 × 17.73 Å (24.4; log L 95.7) the
    true lattice (21.7; 98.9). Measured (docs/indexing.md, idx21s): noisy dev lists 164 → 179 of 235, held-out 123 →
    122, clean unchanged."""
    return (
        SYMMETRY_ORDER[sol.system] <= SYMMETRY_ORDER[leader.system]
        and fits_noise(sol, scale)
        and log_likelihood(sol, inv_d2, sigma, scale) > log_likelihood(leader, inv_d2, sigma, scale)
    )


def evidence(sol: Solution, inv_d2, sigma=None, scale: float = 1.0) -> float:
    """:func:`log_likelihood` less :data:`EVIDENCE_PER_PARAMETER` per free cell parameter: the model evidence of the
    cell, comparable between cells of different systems and volumes (Bayesian model comparison; the likelihood alone
    lets a lower-symmetry cell's extra parameters win, the score lets them fit the noise)."""
    return log_likelihood(sol, inv_d2, sigma, scale) - EVIDENCE_PER_PARAMETER * np.asarray(sol.x).size


def _exact(sol: Solution) -> bool:
    """Whether ``sol`` fits its indexed lines exactly (χ²_ν < EXACT_CHI2: computed positions, errors.py)."""
    return sol.chi2 / max(sol.dof, 1) < EXACT_CHI2


def _n_bad(sol: Solution, n_fom: int) -> int:
    return sum(1 for i in sol.unindexed if i < n_fom)


def decide(solutions: list, n_impurity: int, n_fom: int = 20, top: int | None = None, inv_d2=None, sigma=None) -> list:
    """Order merged solutions by the blind decision rule (module docstring) and set their ``reason``. ``inv_d2``: the
    observed lines (Å⁻²), for :func:`unsupported_supercell` and :func:`likelier` (without them neither is tested);
    ``sigma``: their σ(q²) (default errors.sigma_inv_d2)."""
    sols = [s for s in solutions if s is not None]
    if not sols:
        return []
    indexes = {id(s): _n_bad(s, n_fom) <= n_impurity for s in sols}
    short = {id(s): shortest_translation(s) < MIN_AXIS for s in sols}
    zone = {id(s): one_zone(s) for s in sols}
    sensible = [s for s in sols if indexes[id(s)] and not short[id(s)] and not zone[id(s)]]
    leader = max(sensible, key=lambda s: s.score, default=None)
    best = 0.0 if leader is None else leader.score
    scale = 1.0 if leader is None else variance_scale(leader)
    doubt = "" if leader is None else implausible(leader, scale)
    # a triclinic best cell fits better than the errors allow: a smaller triclinic cell within them goes first.
    # Triclinic only (the last step: the choice cannot end the blind descent): on a clean aP list (seed 2024) an
    # overfitting mP leader at the monoclinic step gave way to a wrong mC cell (M20 12.3) that then settled the descent
    overfit = doubt.startswith("χ²") and leader.system == "triclinic"
    # exact data (the best cell's χ²_ν < EXACT_CHI2, residuals at the score's 1e-3 σ floor): every cell that fits as
    # exactly and indexes as many lines ties with it. parameter_factor's premise, extra parameters buying a better
    # fit of noisy lines, does not hold there, and the scores differ only by the calculated lines counted (∝ 1/N_calc);
    # issue 21, a clean cP list (6.336 Å, P n -3 n, seed 2024): an mP cell of 45.7 Å3 indexing the 20 lines as
    # exactly (score 29 426) beat the cP cell (26 578 < 0.92 × 29 426) as the lower-symmetry "better" fit
    exact = leader is not None and _exact(leader)
    # an unrelated higher-symmetry cell: within parameter_factor of the best score, or, when the best cell is
    # implausible, any score ≥ FOM_FACTOR × the best with a χ² consistent with the data's errors
    cand = [
        s
        for s in sensible
        if s.score >= FOM_FACTOR * best
        and (
            s is leader
            or s.score >= parameter_factor(s, leader, n_fom) * best
            or (
                related(s, leader)
                and not misfit(s, leader, scale)
                and not (inv_d2 is not None and unsupported_supercell(s, leader, inv_d2))
            )
            or (doubt and SYMMETRY_ORDER[s.system] < SYMMETRY_ORDER[leader.system] and fits_noise(s, scale))
            or (overfit and s.system == leader.system and s.volume < leader.volume and fits_noise(s, scale))
            or (exact and _exact(s) and _n_bad(s, n_fom) <= _n_bad(leader, n_fom))
            or (not exact and inv_d2 is not None and likelier(s, leader, inv_d2, sigma, scale))
        )
    ]
    # within one system the score decides, the volume only breaks ties: cells of one lattice (sub/supercells) are
    # merged before (rank_solutions), so two candidates of one system are unrelated lattices, and a smaller wrong cell
    # within FOM_FACTOR beat the true one (a noisy oC list, 17.7 × 6.0 × 16.5 Å, score 18.8, lost to an oP cell
    # 4.8 × 8.9 × 16.5 Å, score 15.6; test_within_one_system_the_better_score_wins_not_the_smaller_unrelated_cell)
    # within one system a cell that fits within the errors goes before one that fits worse than they allow (χ² above
    # the 1 − FIT_ALPHA quantile; not on exact data, where every inexact cell is above it): the misfitting cell's
    # score comes from lines it matches only loosely. Issue 21 (idx21q), noisy mP list 29 of seed 2024: an mP
    # half-cell (V 848, 19 lines, χ² quantile 0.997, score 11.8) won over the true mP cell (V 1696, 20 lines, 0.69,
    # 10.3), a candidate as its derivative within FOM_FACTOR
    cand.sort(
        key=lambda s: (
            SYMMETRY_ORDER[s.system],
            overfit and not fits_noise(s, scale),
            not exact and chi2_quantile(s, scale) > 1.0 - FIT_ALPHA,
            -(round(s.score, 6) if exact or inv_d2 is None else log_likelihood(s, inv_d2, sigma, scale)),
            s.volume,
        )
    )
    rest = sorted([s for s in sols if not any(s is c for c in cand)], key=lambda s: s.score, reverse=True)
    rest.sort(key=lambda s: 0 if any(s is c for c in sensible) else 1 if indexes[id(s)] else 2)  # stable
    out = cand + rest
    if leader is not None and not exact and inv_d2 is not None:
        # data with errors: the sensible cell of the highest evidence is the answer (idx21s: noisy dev lists 179 →
        # 186 of 235 for real over the rule alone, none lost); the rule orders the others
        top_ev = max(sensible, key=lambda s: evidence(s, inv_d2, sigma, scale))
        out = [top_ev] + [s for s in out if s is not top_ev]
    _set_reasons(
        out, cand, sensible, indexes, short, leader, best, doubt, exact, scale, inv_d2, n_fom, n_impurity, sigma
    )
    if leader is not None and not exact and inv_d2 is not None:
        out[0].reason += (
            f"; the highest evidence of the sensible cells, {evidence(out[0], inv_d2, sigma, scale):.1f} "
            f"(log-likelihood "
            f"less {EVIDENCE_PER_PARAMETER:g} nats per cell parameter, decide.evidence)"
        )
    return out if top is None else out[:top]


def _set_reasons(
    out, cand, sensible, indexes, short, leader, best, doubt, exact, scale, inv_d2, n_fom, n_impurity, sigma=None
):
    """Set each ordered solution's ``reason`` (figures of merit, then why it ranks where it does), for :func:`decide`:
    ``cand`` the candidates of the rule, ``sensible`` those that index the data without a demotion, ``indexes`` /
    ``short`` per ``id(solution)``, ``leader`` / ``best`` the best-scoring sensible cell and its score, ``doubt`` why
    the leader is implausible ("" if not), ``exact`` exact data, ``scale`` the data's variance scale."""
    for i, s in enumerate(out):
        f20 = "" if s.F20 is None else f", F20 {s.F20:.1f}"
        figs = f"M20 {s.M20:.1f}{f20}, score {s.score:.1f}, {s.system}, V {s.volume:.1f} Å3"
        if any(s is c for c in cand):
            if i == 0:
                why = (
                    f"highest symmetry, then best {'score' if exact or inv_d2 is None else 'log-likelihood'}, "
                    f"among the {len(cand)} cell(s) that index the data "
                    f"with a score ≥ {FOM_FACTOR:g} × the best ({best:.1f}; unrelated lattices: ≥ "
                    f"{parameter_factor(s, leader, n_fom):.2f} ×"
                    + (f", or a χ² within the errors, the best cell being implausible: {doubt})" if doubt else ")")
                    + ("; exact data: every exact fit indexing as many lines ties" if exact else "")
                    + (
                        f"; a log-likelihood of the lines {log_likelihood(s, inv_d2, sigma, scale):.1f} ≥ the best "
                        f"cell's {log_likelihood(leader, inv_d2, sigma, scale):.1f} (decide.likelier)"
                        if s is not leader
                        and not exact
                        and inv_d2 is not None
                        and likelier(s, leader, inv_d2, sigma, scale)
                        else ""
                    )
                )
            else:
                why = f"indexes the data, score within {FOM_FACTOR:g} × the best, lower symmetry or larger volume"
        elif any(s is c for c in sensible) and s.score >= FOM_FACTOR * best and related(s, leader):
            why = (
                f"a supercell of the best cell observing {line_coverage(s, inv_d2):.2f} of its calculated lines, "
                f"the best cell {line_coverage(leader, inv_d2):.2f} (decide.unsupported_supercell)"
                if inv_d2 is not None and unsupported_supercell(s, leader, inv_d2)
                else f"a derivative of the best cell whose χ² quantile {chi2_quantile(s, scale):.3g} is above "
                f"{1 - FIT_ALPHA:g} while the best cell fits within the errors (decide.misfit)"
            )
        elif any(s is c for c in sensible) and s.score >= FOM_FACTOR * best:
            why = (
                f"indexes the data, but an unrelated lattice whose score is below "
                f"{parameter_factor(s, leader, n_fom):.2f} × the best ({best:.1f}; decide.parameter_factor)"
                + (f" and whose χ² quantile {chi2_quantile(s, scale):.3g} is outside the errors" if doubt else "")
            )
        elif any(s is c for c in sensible):
            why = f"indexes the data but its score is below {FOM_FACTOR:g} × the best ({best:.1f})"
        elif indexes[id(s)]:
            why = (
                f"demoted: shortest lattice translation {shortest_translation(s):.2f} Å < {MIN_AXIS:g} Å"
                if short[id(s)]
                else f"demoted: ≥ {ZONE_SHARE:.0%} of its indexed lines lie in one zone (a one-zone explanation)"
            )
        else:
            why = f"{_n_bad(s, n_fom)} of the first {n_fom} lines unindexed (> {n_impurity} impurity lines allowed)"
        s.reason = f"{figs}: {why}"
