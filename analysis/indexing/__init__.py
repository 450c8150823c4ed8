"""Powder indexing: SVD-Index / ML-Index style generate-and-test search, vectorized in JAX.

Pipeline (see each module): peaks.py (input) → search.py (batched candidates from
candidates.py, assignment, weighted least squares, subsampling, acceptance; prior.py
supplies the learned candidate generator) → solution.py (float64 refinement, centring /
Bravais test, esds, zero shift, M20 / F20 from fom.py) → reduce.py (Selling / Lagrange
reductions of the search, Niggli cells, merging of equivalent and sub/supercells).

Example::

    from analysis.indexing import index_peaks, peaks_from_values
    pk = peaks_from_values(two_theta, "2theta", wavelength=1.5406)
    result = index_peaks(pk, lattice="monoclinic")
    best = result.solutions[0]           # .bravais, .cell, .niggli_cell, .M20, .hkl ...
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from analysis import cell as cell_mod
from analysis.indexing.config import CandidateSource, RefineMoves, SearchBudget, SearchConfig, Stopping, Tolerance
from analysis.indexing.decide import FOM_FACTOR, MIN_AXIS, decide, fits_noise
from analysis.indexing.errors import EXACT_CHI2, PRECISE_CHI2, sigma_inv_d2
from analysis.indexing.fom import de_wolff_m, smith_snyder_f
from analysis.indexing.lepage import from_primitive, tetragonal_cells
from analysis.indexing.peaks import PeakList, min_peaks, peaks_from_values, read_peak_file
from analysis.indexing.prior import IndexPrior, load_prior
from analysis.indexing.reduce import niggli_cell, same_lattice, supercell_index
from analysis.indexing.reference import BRAVAIS_OF, SEARCH_SYSTEMS, search_system
from analysis.indexing.search import BLIND_PATIENCE, BLIND_STALL_BELOW, search_cells
from analysis.indexing.solution import (
    Solution,
    primitive_subcells,
    rank_solutions,
    refine_candidate,
    smaller_cells,
    standard_setting,
)
from analysis.indexing.stopping import (
    BLIND_STOP_M20,
    BLIND_STOP_M20_MONOCLINIC,
    OUTLIER_RATIO,
    PRIMITIVE_FALLBACK_SCORE,
    PROBE_BATCHES,
    data_sigma_scale,
    explains_data,
    line_coverage,
    needs_primitive_search,
    probe_needed,
    probe_system,
    reduced_chi2,
    residual_outlier_ratio,
    settles,
)
from analysis.indexing.synth import ErrorModel, SyntheticPattern, synthetic_pattern

__all__ = [
    "PeakList",
    "peaks_from_values",
    "read_peak_file",
    "SearchConfig",
    "SearchBudget",
    "CandidateSource",
    "RefineMoves",
    "Tolerance",
    "Stopping",
    "search_cells",
    "Solution",
    "IndexingResult",
    "index_peaks",
    "rank_solutions",
    "refine_candidate",
    "de_wolff_m",
    "smith_snyder_f",
    "niggli_cell",
    "same_lattice",
    "supercell_index",
    "IndexPrior",
    "load_prior",
    "ErrorModel",
    "sigma_inv_d2",
    "SyntheticPattern",
    "synthetic_pattern",
    "lattice_systems_for",
    "explains_data",
    "reduced_chi2",
    "line_coverage",
    "needs_primitive_search",
    "data_sigma_scale",
    "PRECISE_CHI2",
    "EXACT_CHI2",
    "PRIMITIVE_FALLBACK_SCORE",
    "decide",
    "min_peaks",
    "FOM_FACTOR",
    "MIN_AXIS",
    "BLIND_STOP_M20",
    "BLIND_STOP_M20_MONOCLINIC",
    "OUTLIER_RATIO",
    "settles",
    "probe_needed",
    "probe_system",
    "PROBE_BATCHES",
    "residual_outlier_ratio",
    "smaller_lattice_pending",
    "zero_fixed_search_needed",
    "ZERO_FIXED_BELOW_M20",
    "niggli_reported",
]

_BRAVAIS_SYSTEM = {b: s for (s, _), b in BRAVAIS_OF.items()}


@dataclasses.dataclass
class IndexingResult:
    """Ranked solutions plus bookkeeping (seconds per system, candidates tested per system; the key
    "<system> via triclinic" counts the triclinic fallback of a monoclinic / orthorhombic search, 0 when
    an earlier fallback's triclinic search was reused (so is "triclinic" after a fallback);
    ``skipped``: lattice systems not searched and why, e.g. too few lines for the system, or a
    higher-symmetry cell already explained the data in blind mode; ``sigma_scale``: the data's own
    peak-position error in units of the σ(q²) model, √χ²_ν of the best solution (:func:`data_sigma_scale`;
    None when the best solution does not index the data), e.g. ~0.01 for 11-BM synchrotron lists)."""

    solutions: list
    seconds: dict
    n_candidates: dict
    skipped: dict = dataclasses.field(default_factory=dict)
    sigma_scale: float | None = None

    def to_dict(self) -> dict:
        return {
            "solutions": [s.to_dict() for s in self.solutions],
            "seconds": self.seconds,
            "n_candidates": self.n_candidates,
            "skipped": self.skipped,
            "sigma_scale": self.sigma_scale,
        }


def lattice_systems_for(lattice: str | None) -> tuple[list[str], list[str] | None]:
    """Search systems and allowed centrings for a ``--lattice`` value (system name or Pearson symbol)."""
    from dmd.base.errors import UserInputError

    if lattice is None or lattice == "all":
        return list(SEARCH_SYSTEMS), None
    if lattice in _BRAVAIS_SYSTEM:
        system = _BRAVAIS_SYSTEM[lattice]
        cens = [c for (s, c), b in BRAVAIS_OF.items() if b == lattice and s == system]
        return [system], cens
    try:
        system = search_system(lattice)
    except ValueError as exc:
        raise UserInputError(
            f"--lattice {lattice!r} is not a lattice system or Bravais lattice; use e.g. monoclinic or mP"
        ) from exc
    return [system], (["R"] if lattice == "rhombohedral" else None)


def _refine_distinct(res, inv_d2, kw: dict, n_max: int) -> list:
    """Refined solutions of the first ``n_max`` distinct finite candidates of a search result, best first
    (distinct: log|x| differs in the third decimal); candidates whose refinement breaks down are dropped."""
    out, seen = [], set()
    for x, z in zip(res.x, res.zero, strict=True):
        key = tuple(np.round(np.log(np.abs(x) + 1e-12), 3))
        if key in seen or not np.all(np.isfinite(x)):
            continue
        seen.add(key)
        sol = refine_candidate(x, z, inv_d2, res.system, **kw)
        if sol is not None:
            out.append(sol)
        if len(seen) >= n_max:
            break
    return out


def _via_primitive(inv_d2, system, config, prior, g, kw, n_refine, cache: dict, n_convert: int = 3) -> tuple[list, int]:
    """Solutions of ``system`` from the triclinic search (centred lattices; see lepage.from_primitive),
    and the number of triclinic candidates generated (0 when ``cache`` already held the search: the
    triclinic search of one peak list is deterministic, so the orthorhombic and monoclinic fallbacks and
    the blind triclinic step share one)."""
    if "res" not in cache:
        cache["res"] = search_cells(inv_d2, "triclinic", config, prior=prior, g_zero=g, generated=cache.get("gen"))
        cache["tri"] = _refine_distinct(cache["res"], inv_d2, dict(kw, centrings=None), n_refine)
        n_new = cache["res"].n_evaluated
    else:
        n_new = 0
    return _upgrade(cache["tri"], inv_d2, system, kw, n_convert), n_new


def _defer_fallback(system: str, later: list) -> bool:
    """Blind mode: whether the triclinic fallback of ``system`` waits for a later step. The monoclinic search
    finds an orthorhombic lattice too (as a monoclinic cell with β = 90°, upgraded by :func:`_upgrade`), and the
    triclinic step, when it follows, runs the triclinic search anyway: the fallback is then run once, on that
    search, and only when nothing above triclinic settled the data (the orthorhombic fallback was 104 448 of the
    ~190 000 candidates of a noisy mC list, issue 21)."""
    return "triclinic" in later or (system == "orthorhombic" and "monoclinic" in later)


def _upgrade(sols: list, inv_d2, system: str, kw: dict, n_convert: int = 3) -> list:
    """Cells of ``system`` on the lattices of the ``n_convert`` best of ``sols`` (lepage.from_primitive)."""
    out = []
    for sol in sorted(sols, key=lambda s: s.score, reverse=True)[:n_convert]:
        for new in from_primitive(sol, inv_d2, system, **kw):
            out.append(standard_setting(smaller_cells(new, inv_d2, **kw), inv_d2, **kw))
    return out


def niggli_reported(sol: Solution, inv_d2, kw: dict) -> Solution:
    """A reported triclinic cell in its Niggli setting (solution.standard_setting). Only the ``n_polish`` best cells of
    each system are re-set when found (index_peaks); the decision may report another: noisy aP list 5 of seed 2024
    (issue 21, idx21i) came out as a 10.58 × 13.95 × 16.87 Å, α 42.0° cell of the true lattice (Niggli: 10.58 × 11.38
    × 12.33 Å, α 96.9°)."""
    if sol.system != "triclinic" or np.allclose(sol.cell, niggli_cell(sol.cell, "P"), rtol=1e-5, atol=1e-4):
        return sol
    new = standard_setting(sol, inv_d2, **kw)
    return sol if new is sol else dataclasses.replace(new, reason=sol.reason)


# blind mode, after the triclinic step: the triclinic search runs again with the zero shift fixed (index_peaks) only
# when the decided cell's M20 is below this. Issue 21 (idx21i): on the 86 noisy lists of seeds 2024 / 2025 that
# reached that point (two random streams of the triclinic search), the re-search ran on 54 (the trigger before: M20 <
# BLIND_STOP_M20 = 20) and made 2 right, both from wrong leaders of M20 10.8 (an hR cell on the shipped mC list) and
# 11.9 (an aP cell beside the truth, zero −0.052°); the other 52 (leaders at M20 9.8-19.8) kept their answer, right or
# wrong, and the re-search cost them 0.7-7 CPU s
ZERO_FIXED_BELOW_M20 = 15.0

# a search stalled below M 8 (search.BLIND_PATIENCE) found no convincing cell: its first STALLED_REFINED distinct
# candidates are refined in float64, not n_candidates_refined (24). Issue 21, idx21j: the same answer on all 240 blind
# lists (noisy / clean, seeds 2024 / 2025), noisy aP lists 4-6 % less CPU (docs/indexing.md)
STALLED_REFINED = 8


def n_refined(res, n: int) -> int:
    """Candidates of search result ``res`` refined in float64: ``n``, at most STALLED_REFINED when it stalled."""
    return min(n, STALLED_REFINED) if res.stalled else n


def zero_fixed_search_needed(ranked: list) -> bool:
    """Blind mode, after the triclinic step: whether the triclinic search runs again with the zero shift fixed
    (index_peaks), given the decided solutions so far: when no cell reaches M20 :data:`ZERO_FIXED_BELOW_M20`."""
    return not ranked or ranked[0].M20 < ZERO_FIXED_BELOW_M20


def smaller_lattice_pending(sol: Solution, sols: list, inv_d2, kw: dict, top: int, n_impurity: int) -> bool:
    """Before ``sol`` ends the blind descent: whether a triclinic cell 2-3× smaller than it (primitive_subcells) that
    indexes as many lines would take the decision from it, or one that indexes the data (all but ``n_impurity`` of
    the first 20 lines) scores above it; such cells join ``sols`` and the descent goes on, so that the lower systems
    give the smaller lattice its own symmetry and the decision sees it. 0.03 CPU s.

    A pseudo-symmetric supercell can settle the data (clean kyanite, aP: an oI cell of twice its volume, M20 41.7,
    χ²_ν 0.39) while the lattice it contains fits far better (kyanite's aP cell, M20 17 517). A noisy tI list (12.02 ×
    12.02 × 5.67 Å, a/c within 0.1 % of 3/√2) settled as its index-3 cF supercell (a 17.01 Å, score 24.7, which also
    indexes the impurity line) before the tetragonal search ran; the tI lattice refined as a triclinic cell scores 25.3
    with χ²_ν 0.32 on 13 dof (quantile 0.011), so its tI cell (score 32.6) now gets searched (issue 21).
    """
    subs = primitive_subcells(sol, inv_d2, slack=n_impurity, **kw)
    strict = [s for s in subs if s.n_indexed >= sol.n_indexed]
    # the smaller cell must fit within the errors too (decide.fits_noise): triclinic cells of a true cubic lattice's
    # superlattices outscore it by fitting the noise (noisy cF list: score 24.4 against 23.8, χ²_ν 0.23 on 13 dof)
    better = [
        s for s in subs if s.score > sol.score and fits_noise(s) and sum(1 for i in s.unindexed if i < 20) <= n_impurity
    ]
    if not better and (
        not strict
        or decide(rank_solutions(sols + strict, top=4 * top), n_impurity, inv_d2=inv_d2, sigma=kw["sigma"])[0] is sol
    ):
        return False
    sols += strict + [s for s in better if not any(s is t for t in strict)]
    return True


def index_peaks(
    peaks: PeakList,
    lattice: str | None = None,
    *,
    config: SearchConfig | None = None,
    prior: IndexPrior | None | str = "default",
    top: int = 5,
    n_candidates_refined: int = 24,
    n_polish: int = 6,
    progress=None,
    primitive_fallback: str = "auto",
    exhaustive: bool = False,
    error_model: str = "data",
) -> IndexingResult:
    """Index a peak list.

    Args:
      peaks: validated :class:`PeakList` (q² ascending).
      lattice: lattice system ("cubic" ... "triclinic", "rhombohedral") or Pearson symbol
        ("mP", "hR", ...); None (blind, the default) searches every system the list can determine
        (peaks.min_peaks), from cubic down, and orders the cells by the blind decision rule
        (decide.py: highest symmetry among the cells that index the data with a score within
        :data:`FOM_FACTOR` of the best; sub-cells demoted).
      config: :class:`SearchConfig`; ``refine_zero`` is honoured only with 2θ input.
      prior: :class:`IndexPrior`, "default" (shipped weights) or None (untrained, uniform).
      top: number of solutions returned.
      n_candidates_refined: best search candidates per system refined in float64.
      n_polish: best refined solutions per system tested for smaller cells and re-set.
      progress: optional callable(system, batch, best_score).
      primitive_fallback: monoclinic / orthorhombic also run the triclinic search and convert its cells
        (centred lattices are easier to find primitive): "auto" when the best solution scores below
        :data:`PRIMITIVE_FALLBACK_SCORE` and does not explain the data (:func:`needs_primitive_search`),
        "always" or "never".
      exhaustive: blind mode searches every system instead of stopping once a cell settles the data
        (:func:`settles`), and runs every batch of each (otherwise a stalled cubic…monoclinic search stops
        when the triclinic search follows: search.BLIND_PATIENCE).
      error_model: "data" (default): precise lists are judged under their own error, estimated from the
        residuals of the best cell (:func:`data_sigma_scale`, :func:`needs_primitive_search`); "fixed":
        the built-in σ(q²) model only.

    Returns:
      :class:`IndexingResult`, solutions best first (each with ``reason`` in blind mode).

    Over 100 lines because the per-system loop holds the blind stopping rule and the triclinic
    fallback next to the bookkeeping they report.
    """
    config = config or SearchConfig()
    if error_model not in ("data", "fixed"):
        raise ValueError(f"error_model must be data or fixed, not {error_model!r}")
    if primitive_fallback not in ("auto", "always", "never"):
        raise ValueError(f"primitive_fallback must be auto, always or never, not {primitive_fallback!r}")
    if isinstance(prior, str):
        prior = load_prior()
    systems, centrings = lattice_systems_for(lattice)
    blind = lattice is None or lattice == "all"
    skipped = {}
    if blind:
        for system in list(systems):
            if peaks.n < min_peaks(system):
                skipped[system] = f"needs at least {min_peaks(system)} lines, {peaks.n} given"
                systems.remove(system)
    inv_d2 = peaks.inv_d2
    g = None
    if peaks.two_theta is not None and peaks.wavelength is not None:
        g = cell_mod.inv_d2_slope_two_theta(peaks.two_theta, peaks.wavelength)  # Å⁻² per degree 2θ
    refine_zero = bool(config.tolerance.refine_zero and g is not None)
    sig = sigma_inv_d2(inv_d2, config.tolerance.tol_k)
    kw = dict(
        sigma=sig,
        g_zero=g,
        refine_zero=refine_zero,
        n_sigma=config.tolerance.n_sigma,
        n_impurity=config.tolerance.n_impurity,
        wavelength=peaks.wavelength,
        centrings=centrings,
        zero_sigma=config.tolerance.zero_sigma,
    )
    # the triclinic search's stage-A candidates ("gen") are shared with the zero-fixed re-search (search_cells)
    sols, seconds, ncand, tri_cache = [], {}, {}, {"gen": {}}
    deferred = []  # blind: systems whose triclinic fallback waits for the triclinic step (see _defer_fallback)
    # blind: a settled cell that needs a probe (stopping.probe_needed), the step probing the system below, the probes
    probe, probe_k, n_probes = None, None, 0
    for k, system in enumerate(systems):
        if probe_k is not None and k < probe_k:  # an overfitting cell is probed in a subgroup's system (probe_system)
            skipped[system] = f"not searched: the {probe.bravais} cell is probed in {systems[probe_k]} first"
            continue
        probing, t0 = k == probe_k, time.perf_counter()
        cb = None if progress is None else (lambda b, s, _sys=system: progress(_sys, b, s))
        if system == "triclinic" and "res" in tri_cache:  # already searched by a fallback: reuse it
            res = dataclasses.replace(tri_cache["res"], n_evaluated=0)
        else:
            gen = tri_cache["gen"] if system == "triclinic" else None
            cfg = config
            if (
                blind
                and not exhaustive
                and primitive_fallback != "never"
                and "triclinic" in systems[k + 1 :]
                and config.stopping.patience is None
            ):  # the triclinic search follows and its cells are converted: a stalled search stops (BLIND_PATIENCE)
                stop = dataclasses.replace(
                    config.stopping, patience=BLIND_PATIENCE.get(system), stall_below=BLIND_STALL_BELOW
                )
                cfg = dataclasses.replace(config, stopping=stop)
            if probing:
                cfg = dataclasses.replace(cfg, stopping=dataclasses.replace(cfg.stopping, max_batches=PROBE_BATCHES))
            res = search_cells(inv_d2, system, cfg, prior=prior, g_zero=g, progress=cb, generated=gen)
        new = _refine_distinct(res, inv_d2, kw, STALLED_REFINED if probing else n_refined(res, n_candidates_refined))
        if system == "triclinic" and "res" not in tri_cache:  # the deferred fallbacks convert these cells
            tri_cache.update(res=res, tri=new)
        sols += new
        # the best few: try smaller (index 2/3) cells, then the conventional setting
        mine = sorted([s for s in sols if s.system == system], key=lambda s: s.score, reverse=True)
        sols = [s for s in sols if s.system != system]
        polished = [
            standard_setting(smaller_cells(sol, inv_d2, **kw), inv_d2, **kw) if i < n_polish else sol
            for i, sol in enumerate(mine)
        ]
        sols += polished
        if blind and system == "triclinic" and "hexagonal" in systems:
            # hexagonal lattices the hexagonal search missed, from the triclinic cells' twofold axes (lepage). Issue 21
            # (idx21n), noisy hR list 24 of seed 2024 (17.77, 4.81 Å): only the triclinic search found its lattice
            # (an aP cell, score 14.9, 10th of 24); an mP half-cell (score 28.9) won, the hR cell scores 38.7
            sols += [h for t in new for h in from_primitive(t, inv_d2, "hexagonal", **kw)]
        upgraded = []
        if system == "monoclinic" and "orthorhombic" in deferred:
            # an orthorhombic lattice the orthorhombic search missed is a monoclinic one with β = 90° (centred:
            # mC): its twofold axes give the orthorhombic cell back without the triclinic search
            sols += _upgrade(polished, inv_d2, "orthorhombic", kw)
            upgraded.append("orthorhombic")
        seconds[system] = time.perf_counter() - t0
        ncand[system] = res.n_evaluated
        best = max(polished, key=lambda s: s.score, default=None)
        fallback = system in ("monoclinic", "orthorhombic") and (
            primitive_fallback == "always"
            or res.stalled  # a stalled search (BLIND_PATIENCE) leaves its lattice to the triclinic search's cells
            or (
                primitive_fallback == "auto"
                and needs_primitive_search(best, inv_d2, sig, config.tolerance.n_impurity, error_model)
            )
        )
        if (
            fallback
            and blind
            and not exhaustive
            and primitive_fallback == "auto"
            and _defer_fallback(system, systems[k + 1 :])
        ):
            deferred.append(system)
            fallback = False
        t0 = time.perf_counter()
        # deferred fallbacks wait for a triclinic step that is no probe: a probe means a cell above settled the data
        last = (system == "triclinic" or k + 1 == len(systems)) and not probing
        run_now = ([system] if fallback else []) + (deferred if last else [])
        for target in dict.fromkeys(run_now):
            via, n_tri = _via_primitive(inv_d2, target, config, prior, g, kw, n_candidates_refined, tri_cache)
            sols += via
            ncand[f"{target} via triclinic"] = n_tri
            upgraded.append(target)
        seconds[system] += time.perf_counter() - t0
        if blind and not exhaustive and k + 1 < len(systems):
            ranked = decide(rank_solutions(sols, top=4 * top), config.tolerance.n_impurity, inv_d2=inv_d2, sigma=sig)
            if (  # a cell of the probed system took the decision and needs a probe itself: one more probe
                probing
                and ranked
                and n_probes < 2
                and ranked[0].system == system
                and settles(ranked[0], inv_d2, sig, config.tolerance.n_impurity)
                and probe_needed(ranked[0])
            ):
                probe, probe_k, n_probes = ranked[0], systems.index(probe_system(ranked[0], systems[k + 1 :])), 2
                continue
            if probing and ranked:  # at most two probes per descent (stopping.PROBE_BATCHES): the decision stands
                for rest in systems[k + 1 :]:
                    skipped[rest] = (
                        f"not searched: the {probe.bravais} cell settles the data with "
                        + ("a line unindexed" if probe.unindexed else "a χ² outside the errors")
                        + f" (M20 "
                        f"{probe.M20:.1f}); after the {system} probe the {ranked[0].bravais} cell leads"
                    )
                break
            if (
                ranked
                and ranked[0].system in (system, *upgraded)
                and settles(ranked[0], inv_d2, sig, config.tolerance.n_impurity)
                and not (
                    "triclinic" in systems[k + 1 :]
                    and smaller_lattice_pending(ranked[0], sols, inv_d2, kw, top, config.tolerance.n_impurity)
                )
            ):
                if probe is None and probe_needed(ranked[0]):  # a lower system is searched briefly, then the decision
                    probe, probe_k, n_probes = ranked[0], systems.index(probe_system(ranked[0], systems[k + 1 :])), 1
                    continue
                for rest in systems[k + 1 :]:
                    skipped[rest] = (
                        f"not searched: the {ranked[0].bravais} cell settles the data (M20 {ranked[0].M20:.1f})"
                    )
                break
    if blind and not exhaustive and refine_zero and "res" in tri_cache and systems[-1] == "triclinic" and probe_k != k:
        ranked = decide(rank_solutions(sols, top=4 * top), config.tolerance.n_impurity, inv_d2=inv_d2, sigma=sig)
        if zero_fixed_search_needed(ranked):
            # no convincing cell (M20 < ZERO_FIXED_BELOW_M20; a right cell that only misses `settles`, e.g. barite oP,
            # M20 26.1, keeps its answer without this search, which cost it 22 → 38 CPU s): search triclinic again
            # with the zero shift fixed (refined afterwards). With the zero free, six parameters and a zero fit wrong
            # cells of 20 noisy lines too well: on the shipped noisy mC list no cell of the true lattice came out
            # (best mP score 7.2), with it fixed the true mC did (score 23.5); a zero shift of ±0.03° is ~1 σ(q²)
            # at low angle, within the search's ±n_σ·σ window. Not the default triclinic search: on 4 noisy aP
            # lists (lattice given) the zero free found 3, fixed 2
            t0 = time.perf_counter()
            fixed = {}
            # as many batches as the zero-free search ran, whose stage-A candidates it reuses (no new stage A)
            capped = dataclasses.replace(
                config, stopping=dataclasses.replace(config.stopping, max_batches=max(tri_cache["gen"], default=None))
            )
            res = search_cells(inv_d2, "triclinic", capped, prior=prior, g_zero=None, generated=tri_cache["gen"])
            fixed.update(res=res, tri=_refine_distinct(res, inv_d2, kw, n_candidates_refined))
            sols += [
                standard_setting(smaller_cells(sol, inv_d2, **kw), inv_d2, **kw) if i < n_polish else sol
                for i, sol in enumerate(sorted(fixed["tri"], key=lambda s: s.score, reverse=True))
            ]
            for target in [s for s in ("orthorhombic", "monoclinic") if s in systems]:
                sols += _via_primitive(inv_d2, target, config, prior, g, kw, n_candidates_refined, fixed)[0]
            ncand["triclinic, zero fixed"] = res.n_evaluated
            seconds["triclinic"] += time.perf_counter() - t0
    if blind and "tetragonal" in systems:  # tetragonal lattices refined as orthorhombic cells (lepage.tetragonal_cells)
        sols += [t for s in rank_solutions(sols, top=4 * top) for t in tetragonal_cells(s, inv_d2, **kw)]
    ranked = (
        decide(rank_solutions(sols, top=4 * top), config.tolerance.n_impurity, top=top, inv_d2=inv_d2, sigma=sig)
        if blind
        else rank_solutions(sols, top=top)
    )
    ranked = [niggli_reported(s, inv_d2, kw) for s in ranked]
    scale = data_sigma_scale(ranked[0], inv_d2, sig, config.tolerance.n_impurity) if ranked else None
    return IndexingResult(solutions=ranked, seconds=seconds, n_candidates=ncand, skipped=skipped, sigma_scale=scale)
