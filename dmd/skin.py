"""The neighbour-list skin that minimises the expected cost per step (docs/engine.md, "Choosing the skin").

A list of radius r_c + s costs, per step, one pair evaluation over the listed pairs plus a share of a rebuild:

    cost(s) = (P + R · v / s) · ((r_c + s) / r_c)³

* ``P``: the pair (force) evaluation and ``R``: one rebuild, both as they would cost for a list of radius r_c; both
  scale with the list volume (the pair kernel with the listed neighbours per row, the rebuild with the cell
  stencil's candidates and the listed slots), hence the common factor.
* ``v``: the displacement rate, nm per step, of the quantity the rebuild test watches (the two largest displacements
  since the build, :func:`dmd.neighbors.needs_rebuild`). It grows about linearly over the few tens of femtoseconds
  between rebuilds (ballistic motion), so a list lasts ``s / v`` steps. Measured from a run: a skin ``s₀`` rebuilt
  ``n`` times in ``k`` steps gives ``v = n s₀ / k`` (:func:`displacement_rate`).

Setting d cost / ds = 0 gives 3 s² + 2ρv s − ρv r_c = 0 with ρ = R / P, so

    s* = (√((ρv)² + 3 ρv r_c) − ρv) / 3

(:func:`optimal_skin`). A dearer rebuild (larger ρ) or faster atoms (larger v) widen the skin; a cheap rebuild lets
a tight skin cut the pair work, which grows as the cube of the list radius.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from dmd.base.errors import UserInputError

__all__ = [
    "REBUILD_OVER_PAIR",
    "REBUILD_OVER_PAIR_BY_BACKEND",
    "chosen_skin",
    "displacement_rate",
    "list_geometry",
    "optimal_skin",
    "backend_rebuild_over_pair",
    "skin_cost",
    "with_skin",
]


def displacement_rate(skin: float, n_rebuilds: int, n_steps: int) -> float:
    """nm per step of the rebuild test's displacement sum, from a run of ``n_steps`` steps with ``skin`` nm that
    rebuilt ``n_rebuilds`` times (each rebuild came when the sum passed the skin)."""
    if n_steps <= 0 or n_rebuilds < 0 or skin <= 0:
        raise UserInputError(f"displacement_rate: need skin > 0 and steps > 0, got {skin=}, {n_steps=}")
    return skin * max(n_rebuilds, 0.5) / n_steps  # no rebuild seen: at most one per 2 n_steps (a bound, not 0)


def skin_cost(skin: float, cutoff: float, rate: float, rebuild_over_pair: float) -> float:
    """Expected cost per step of a list with ``skin`` nm, in units of one pair evaluation at radius ``cutoff`` nm:
    ``(1 + ρ v / s) ((r_c + s)/r_c)³`` with ``rate`` v nm/step and ``rebuild_over_pair`` ρ."""
    return (1.0 + rebuild_over_pair * rate / skin) * ((cutoff + skin) / cutoff) ** 3


def optimal_skin(cutoff: float, rate: float, rebuild_over_pair: float, *, lo: float = 0.02, hi: float | None = None):
    """The skin s* (nm) minimising :func:`skin_cost`, clipped to ``[lo, hi]`` (``hi``: e.g. what the box allows).

    Args:
      cutoff: r_c, nm. rate: v, nm per step (:func:`displacement_rate`). rebuild_over_pair: ρ, one rebuild's cost
        over one pair evaluation's, at the same list radius (measured, e.g. ``benchmarks/bench_engine.py``).
    """
    if cutoff <= 0 or rate < 0 or rebuild_over_pair < 0:
        raise UserInputError(
            f"optimal_skin: need cutoff > 0, rate >= 0 and rebuild_over_pair >= 0; got {cutoff}, {rate}, "
            f"{rebuild_over_pair}"
        )
    a = rebuild_over_pair * rate
    s = (math.sqrt(a * a + 3.0 * a * cutoff) - a) / 3.0
    s = max(s, lo)
    return s if hi is None else min(s, hi)


# ρ of dmd's cell-list rebuild: one rebuild over one real-space pair evaluation, both at the list radius (villin +
# TIP3P water, PME 0.9 nm, half lists, benchmarks/bench_engine.py on a 2-core CPU: the probe at 0.2 nm timed the
# rebuild at 131 ms and the pairs at 42 ms, i.e. 3.1; it was 5.5 before the packed compaction, docs/engine.md)
REBUILD_OVER_PAIR = 3.1

# ρ by jax backend: the rebuild (sorts, compaction) and the pair kernel scale differently on other hardware. GPU: the
# skin probe of benchmarks/gpu_check.py on an H200 (villin + water, docs/engine.md "GPU readiness"): ρ = 1.1.
REBUILD_OVER_PAIR_BY_BACKEND = {"cpu": REBUILD_OVER_PAIR, "gpu": 1.1, "cuda": 1.1, "rocm": 1.1}


def backend_rebuild_over_pair(backend: str | None = None) -> float:
    """ρ of the skin rule for a jax ``backend`` ("cpu", "gpu", ...; None: ``jax.default_backend()``): measured on
    that hardware (:data:`REBUILD_OVER_PAIR_BY_BACKEND`), the CPU's value for a backend not measured."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    return REBUILD_OVER_PAIR_BY_BACKEND.get(backend, REBUILD_OVER_PAIR)


def list_geometry(neighbor_fn):
    """``(cutoff, skin, largest skin)`` nm of a dmd neighbour-list builder (:func:`dmd.forces.neighbors.
    pair_neighbor_list` or :class:`dmd.neighbors.CellNeighborListFns`), or None for a builder whose skin cannot
    change (jax-md's)."""
    from dmd.forces.neighbors import NeighborListFns
    from dmd.neighbors import CellNeighborListFns
    from dmd.space import perpendicular_widths

    if isinstance(neighbor_fn, NeighborListFns) and neighbor_fn.with_skin is not None:
        return neighbor_fn.cutoff, neighbor_fn.skin, neighbor_fn.max_list_cutoff - neighbor_fn.cutoff
    if isinstance(neighbor_fn, CellNeighborListFns):
        widths = perpendicular_widths(neighbor_fn.box) if neighbor_fn.triclinic else neighbor_fn.box
        return neighbor_fn.cutoff, neighbor_fn.skin, 0.5 * float(np.min(widths)) - neighbor_fn.cutoff
    return None


def with_skin(system, skin: float):
    """``system`` (a :class:`dmd.System`) with its neighbour-list builder remade for ``skin`` nm (the caller
    allocates a new list: capacities and the cell grid depend on the skin)."""
    from dmd.neighbors import CellNeighborListFns

    fns = system.neighbor_fn
    if isinstance(fns, CellNeighborListFns):
        new = dataclasses.replace(fns, skin=float(skin))
    else:
        new = fns.with_skin(float(skin))
    metadata = dict(system.metadata)
    for key in ("skin_nm", "neighbor_skin_nm"):
        if key in metadata:
            metadata[key] = float(skin)
    return dataclasses.replace(system, neighbor_fn=new, metadata=metadata)


def chosen_skin(system, n_rebuilds: int, n_steps: int, rebuild_over_pair: float | None = None):
    """The skin (nm) :func:`optimal_skin` gives for ``system`` after a run of ``n_steps`` steps at its present skin
    rebuilt ``n_rebuilds`` times (:func:`displacement_rate`), kept below what the box allows; None when the system's
    list cannot change skin (:func:`list_geometry`). ``rebuild_over_pair``: ρ; None: the running backend's
    (:func:`backend_rebuild_over_pair`: a GPU rebuilds at ~1 pair evaluation, a CPU at ~3)."""
    geometry = list_geometry(system.neighbor_fn)
    if geometry is None:
        return None
    cutoff, skin, largest = geometry
    rate = displacement_rate(skin, n_rebuilds, n_steps)
    rho = backend_rebuild_over_pair() if rebuild_over_pair is None else rebuild_over_pair
    return optimal_skin(cutoff, rate, rho, hi=max(largest, 0.02))


def skin_of(system):
    """The skin (nm) of ``system``'s neighbour list, or None (no list, or jax-md's: :func:`list_geometry`)."""
    geometry = None if system.neighbor_fn is None else list_geometry(system.neighbor_fn)
    return None if geometry is None else geometry[1]


# systems remade by an "auto" skin switch, per original system: (system, [[skinned system, its last list]]), least
# recently used dropped beyond 8 originals. A script calling simulate(skin="auto") again on the same system gets the
# same skinned object back (its compiled chunk and start are keyed by the system object) when the rule's new skin is
# within the 10% that keeps a skin anyway, and the list it was last given (capacities are static shapes:
# dmd.runloop.allocate_like sizes the new list like it, so nothing compiles again).
_SKINNED: collections.OrderedDict = collections.OrderedDict()


def skinned_like(system, skin: float):
    """``(made, like)``: :func:`with_skin` of ``system`` (a :class:`dmd.System`), or the system an earlier call made
    from it whose skin is within 10% of ``skin`` nm (the margin :func:`dmd.simulate.simulate`'s "auto" switch keeps a
    skin anyway); ``like``: the neighbour list last given to ``made`` with :func:`keep_list`, or None."""
    key = id(system)
    hit = _SKINNED.get(key)
    if hit is None or hit[0] is not system:
        hit = _SKINNED[key] = (system, [])
    _SKINNED.move_to_end(key)
    for entry in hit[1]:
        if abs(skin_of(entry[0]) - skin) <= 0.1 * skin:
            return entry[0], entry[1]
    hit[1].append([with_skin(system, skin), None])
    while len(_SKINNED) > 8:
        _SKINNED.popitem(last=False)
    return hit[1][-1][0], None


def keep_list(made, nbr) -> None:
    """Remember ``nbr`` as the list last allocated for ``made`` (a system :func:`skinned_like` returned)."""
    for _original, entries in _SKINNED.values():
        for entry in entries:
            if entry[0] is made:
                entry[1] = nbr
                return
