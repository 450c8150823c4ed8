"""Powder indexing: SVD-Index / ML-Index style generate-and-test search, vectorized in JAX.

Pipeline (see each module): peaks.py (input) → search.py (batched candidates,
assignment, weighted least squares, subsampling, acceptance; prior.py supplies the
learned candidate generator) → solution.py (float64 refinement, centring / Bravais
test, esds, zero shift, M20 / F20 from fom.py) → reduce.py (Niggli cells, merging of
equivalent and sub/supercells).

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

from analysis.indexing.fom import de_wolff_m, smith_snyder_f
from analysis.indexing.peaks import PeakList, peaks_from_values, read_peak_file
from analysis.indexing.prior import IndexPrior, load_prior
from analysis.indexing.reduce import niggli_cell, same_lattice, supercell_index
from analysis.indexing.reference import BRAVAIS_OF, SEARCH_SYSTEMS, search_system
from analysis.indexing.search import SearchConfig, search_cells
from analysis.indexing.solution import (
    Solution,
    from_primitive,
    rank_solutions,
    refine_candidate,
    smaller_cells,
    standard_setting,
)
from analysis.indexing.synth import ErrorModel, SyntheticPattern, synthetic_pattern

__all__ = [
    "PeakList",
    "peaks_from_values",
    "read_peak_file",
    "SearchConfig",
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
    "SyntheticPattern",
    "synthetic_pattern",
    "lattice_systems_for",
]

_BRAVAIS_SYSTEM = {b: s for (s, _), b in BRAVAIS_OF.items()}


@dataclasses.dataclass
class IndexingResult:
    """Ranked solutions plus bookkeeping (seconds per system, candidates tested)."""

    solutions: list
    seconds: dict
    n_candidates: dict

    def to_dict(self) -> dict:
        return {
            "solutions": [s.to_dict() for s in self.solutions],
            "seconds": self.seconds,
            "n_candidates": self.n_candidates,
        }


def lattice_systems_for(lattice: str | None) -> tuple[list[str], list[str] | None]:
    """Search systems and allowed centrings for a ``--lattice`` value (system name or Pearson symbol)."""
    from dmd.errors import UserInputError

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


# below this ranking score (≈ M20) a monoclinic / orthorhombic search also runs the triclinic search
# and converts its cells (exact data: true cells score ≥ 5e3; noisy data always take this path)
PRIMITIVE_FALLBACK_SCORE = 1000.0


def _via_primitive(q, system, config, prior, g, kw, n_refine, n_convert: int = 3) -> list:
    """Solutions of ``system`` from the triclinic search (centred lattices; see solution.from_primitive)."""
    res = search_cells(q, "triclinic", config, prior=prior, g_zero=g)
    kw_tri = dict(kw, centrings=None)
    tri, seen = [], set()
    for x, z in zip(res.x, res.zero, strict=True):
        key = tuple(np.round(np.log(np.abs(x) + 1e-12), 3))
        if key in seen or not np.all(np.isfinite(x)):
            continue
        seen.add(key)
        sol = refine_candidate(x, z, q, "triclinic", **kw_tri)
        if sol is not None:
            tri.append(sol)
        if len(seen) >= n_refine:
            break
    out = []
    for sol in sorted(tri, key=lambda s: s.score, reverse=True)[:n_convert]:
        for new in from_primitive(sol, q, system, **kw):
            out.append(standard_setting(smaller_cells(new, q, **kw), q, **kw))
    return out


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
) -> IndexingResult:
    """Index a peak list.

    Args:
      peaks: validated :class:`PeakList` (q² ascending).
      lattice: lattice system ("cubic" ... "triclinic", "rhombohedral") or Pearson symbol
        ("mP", "hR", ...); None searches all systems.
      config: :class:`SearchConfig`; ``refine_zero`` is honoured only with 2θ input.
      prior: :class:`IndexPrior`, "default" (shipped weights) or None (untrained, uniform).
      top: number of solutions returned.
      n_candidates_refined: best search candidates per system refined in float64.
      n_polish: best refined solutions per system tested for smaller cells and re-set.
      progress: optional callable(system, batch, best_score).

    Returns:
      :class:`IndexingResult`, solutions best first.
    """
    config = config or SearchConfig()
    if isinstance(prior, str):
        prior = load_prior()
    systems, centrings = lattice_systems_for(lattice)
    q = peaks.inv_d2
    g = None
    if peaks.two_theta is not None and peaks.wavelength is not None:
        th = np.deg2rad(peaks.two_theta / 2)
        # ∂q²/∂(2θ) per degree: q² = 4 sin²θ / λ², dθ = (π/180)/2 · d(2θ)
        g = 4 * np.sin(2 * th) / peaks.wavelength**2 * (np.pi / 360)
    refine_zero = bool(config.refine_zero and g is not None)
    sig = config.tol_k * (8.7e-5 + 9.2e-4 * q)
    sols, seconds, ncand = [], {}, {}
    for system in systems:
        t0 = time.perf_counter()
        cb = None if progress is None else (lambda b, s, _sys=system: progress(_sys, b, s))
        res = search_cells(q, system, config, prior=prior, g_zero=g, progress=cb)
        kw = dict(
            sigma=sig,
            g_zero=g,
            refine_zero=refine_zero,
            n_sigma=config.n_sigma,
            n_impurity=config.n_impurity,
            wavelength=peaks.wavelength,
            centrings=centrings,
        )
        seen = set()
        n_done = 0
        for x, z in zip(res.x, res.zero, strict=True):
            key = tuple(np.round(np.log(np.abs(x) + 1e-12), 3))
            if key in seen or not np.all(np.isfinite(x)):
                continue
            seen.add(key)
            sol = refine_candidate(x, z, q, system, **kw)
            if sol is not None:
                sols.append(sol)
            n_done += 1
            if n_done >= n_candidates_refined:
                break
        # the best few: try smaller (index 2/3) cells, then the conventional setting
        mine = sorted([s for s in sols if s.system == system], key=lambda s: s.score, reverse=True)
        sols = [s for s in sols if s.system != system]
        for i, sol in enumerate(mine):
            if i < n_polish:
                sol = standard_setting(smaller_cells(sol, q, **kw), q, **kw)
            sols.append(sol)
        seconds[system] = time.perf_counter() - t0
        ncand[system] = res.n_evaluated
        if (
            system in ("monoclinic", "orthorhombic")
            and max([s.score for s in mine] or [0.0]) < PRIMITIVE_FALLBACK_SCORE
        ):
            t0 = time.perf_counter()
            sols += _via_primitive(q, system, config, prior, g, kw, n_candidates_refined)
            seconds[system] += time.perf_counter() - t0
    return IndexingResult(solutions=rank_solutions(sols, top=top), seconds=seconds, n_candidates=ncand)
