"""The knobs of the batched unit-cell search (:func:`analysis.indexing.search.search_cells`), by concern.

:class:`SearchConfig` holds five small groups: the work per lattice system (:class:`SearchBudget`), where the
candidates come from (:class:`CandidateSource`), the moves of the iterative refinement (:class:`RefineMoves`), the
error model and what counts as indexed (:class:`Tolerance`), and when to stop (:class:`Stopping`). It is built
either from groups or from the flat knob names (``SearchConfig(n_iter=6, refine_zero=True)``), which the CLI,
tests and benchmarks use; defaults are tuned on synthetic 20-line lists.
"""

from __future__ import annotations

import dataclasses

from dmd.base.config import group_knobs, set_groups

__all__ = ["CandidateSource", "RefineMoves", "SearchBudget", "SearchConfig", "Stopping", "Tolerance"]


@dataclasses.dataclass(frozen=True)
class SearchBudget:
    """Work per batch and lattice system.

    Attributes:
      n_generate: exact-solve candidates drawn from the prior per batch, each tested once
        (None: per-system default, ``search.SYSTEM_BUDGET``).
      n_candidates: candidates refined iteratively per batch (the best generated ones plus the
        random cells), all in parallel (None: per-system default).
      n_iter: assignment / least-squares iterations per batch.
      top_k: candidates returned per batch.
      n_ref_rows: reference rows searched (None: prior.N_SEARCH_ROWS per system).
    """

    n_generate: int | None = None
    n_candidates: int | None = None
    n_iter: int = 8
    top_k: int = 16
    n_ref_rows: int | None = None


@dataclasses.dataclass(frozen=True)
class CandidateSource:
    """Where the starting cells come from.

    Attributes:
      candidates: "prior" (learned prior + random), "random" (random cells only) or "uniform"
        (exact solves with uniformly drawn low indices: the untrained prior).
      random_fraction: share of random-cell candidates when ``candidates`` is "prior"/"uniform".
      n_first: peaks the prior-driven generator draws from.
      n_axes: peaks the zone constructions (monoclinic, triclinic) draw axial lines from (half of
        the draws take one of the three among the later lines, :func:`candidates.axis_positions`).
    """

    candidates: str = "prior"
    random_fraction: float = 0.25
    n_first: int = 8
    n_axes: int = 12


@dataclasses.dataclass(frozen=True)
class RefineMoves:
    """The moves of one refinement iteration.

    Attributes:
      p_keep: probability of keeping a peak in each subsampled least-squares step.
      p_soft: probability that an iteration uses the soft (sampled) assignment.
      acceptance: "greedy" (keep if the score improves), "metropolis", or "always".
      temperature: Metropolis temperature on the log-M score.
      mala_scale: scale of the MALA noise added after each least-squares step (0 = off).
    """

    p_keep: float = 0.8
    p_soft: float = 0.25
    acceptance: str = "greedy"
    temperature: float = 0.5
    mala_scale: float = 0.0


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """The error model, what counts as an indexed line, and the cells searched.

    Attributes:
      tol_k: error-model scale k of σ(inv_d2) (:func:`analysis.indexing.errors.sigma_inv_d2`) used as tolerance.
      n_sigma: a line is indexed when |Δq²| ≤ n_sigma·σ.
      n_impurity: unindexed lines (impurity phases) that cost only n_sigma·σ in the final ranking
        score (solution.refine_candidate); further ones cost a random line's discrepancy.
      refine_zero: refine a 2θ zero shift (needs 2θ input).
      zero_sigma: the float64 refinement restrains a refined zero shift towards 0 with this standard deviation
        (degrees 2θ; None: free). A free zero lets wrong cells near the true one, and other lattices, fit 20 noisy
        lines better than the truth by shifts of ±0.1° (issue 21, noisy triclinic lists); lab zero errors are a few
        hundredths of a degree.
      volume_bounds: (V_min, V_max) Å³ of the cell searched, or None (from the line density).
    """

    tol_k: float = 1.0
    n_sigma: float = 4.0
    n_impurity: int = 1
    refine_zero: bool = False
    zero_sigma: float | None = 0.05
    volume_bounds: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Stopping:
    """When the batches of one lattice system stop.

    Attributes:
      max_batches: upper bound on batches per lattice system (None: ``search.SYSTEM_BUDGET`` per system).
      min_batches: batches always run before the stopping test.
      stop_m20: stop when the best approximate M20 reaches this (exact data: true cells score
        ≥ 3.6e4 in float32 on the benchmark set, wrong cells that index every line within
        n_σ·σ up to ~1.4e3; exception: patterns dominated by one zone, where wrong cells
        reach 4e4, e.g. 15 of 20 lines 0kl).
      stop_agree: also stop when a batch, independently of the earlier ones, returns the same
        best cell as they did (``search._batches_agree``; monoclinic / orthorhombic: tolerances from the
        error model, and the cell leaves at most ``n_impurity`` + 1 of the first 20 lines unindexed):
        noisy data never reach ``stop_m20``.
      agree_batches: how many later batches must return the best cell before the search stops on agreement
        (None: ``search.AGREE_BATCHES`` per system, 1 but triclinic 2, where wrong cells that index every noisy line
        are common and a single agreement is no proof).
      patience: stop once this many batches in a row have not raised the best approximate log M by more than the
        score scatter of one cell between batches (None: never; blind mode sets it for the cubic…monoclinic
        searches when the triclinic search follows, ``search.BLIND_PATIENCE``).
      stall_below: with ``patience``, stop only when the best approximate M (P lattice) is below this (None: any).
    """

    max_batches: int | None = None
    min_batches: int = 1
    stop_m20: float = 10000.0
    stop_agree: bool = True
    agree_batches: int | None = None
    patience: int | None = None
    stall_below: float | None = None


@dataclasses.dataclass(frozen=True, init=False)
class SearchConfig:
    """Knobs of the batched search, in groups (each group's docstring lists its knobs).

    Built from groups, from flat knob names, or both (a flat name overrides its group's value)::

        SearchConfig(n_generate=2048, n_iter=6, refine_zero=True)
        SearchConfig(budget=SearchBudget(n_iter=6), tolerance=Tolerance(refine_zero=True))

    Attributes:
      budget, source, moves, tolerance, stopping: the groups.
      seed: PRNG seed.
    """

    budget: SearchBudget
    source: CandidateSource
    moves: RefineMoves
    tolerance: Tolerance
    stopping: Stopping
    seed: int

    def __init__(self, *, budget=None, source=None, moves=None, tolerance=None, stopping=None, seed=0, **knobs):
        given = {"budget": budget, "source": source, "moves": moves, "tolerance": tolerance, "stopping": stopping}
        set_groups(self, {name: (given[name], kind) for name, kind in _GROUP_TYPES.items()}, knobs)
        object.__setattr__(self, "seed", seed)

    def knobs(self) -> dict:
        """Every knob by its flat name (the groups' fields and ``seed``), e.g. for a JSON report."""
        return dict(group_knobs(self, _GROUP_TYPES), seed=self.seed)


_GROUP_TYPES = {
    "budget": SearchBudget,
    "source": CandidateSource,
    "moves": RefineMoves,
    "tolerance": Tolerance,
    "stopping": Stopping,
}
