"""Neighbour-list overflow care shared by every run loop (``dmd.simulate``, ``dmd.sensitivity``,
``dmd.estimators``, ``dmd.npt``, ``fitting.forcefield``).

A jitted chunk of steps cannot resize its neighbour list: when the list (or jax-md's cell list) runs out of
capacity it sets an overflow flag and silently drops pairs, so the chunk's forces were wrong. The host then grows
the list at the chunk's start positions and redoes the chunk. Growing on every retry matters: a retry at the
same size loops forever (docs/engine.md, "Neighbour lists").

Also here: :func:`stop_before_start`, the run loops' check of a stop request (Ctrl-C) made while a run was set up.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from dmd.base.errors import RunInterrupted
from dmd.space import wrap_positions

__all__ = [
    "begin_writes",
    "uninterrupted",
    "stop_before_start",
    "MAX_REALLOCATIONS",
    "overflowed",
    "is_cell_list",
    "pad_neighbors",
    "positions_for_allocation",
    "grow_neighbors",
    "grown_state",
    "fitted_neighbors",
    "redo_on_overflow",
    "compiled_for",
    "allocate_like",
]

MAX_REALLOCATIONS = 8


def overflowed(nbr) -> bool:
    """True when the neighbour list ``nbr`` (or None: no list) dropped pairs in the steps it was carried through."""
    return nbr is not None and bool(getattr(nbr, "did_buffer_overflow", False))


def carry_overflow(kept, trial):
    """``kept`` marked overflowed where ``trial`` overflowed (traced; lists of the same kind, or None).

    A Monte Carlo trial is scored with its own list; when that list dropped pairs the trial's energy is wrong
    whether the move is accepted or not, so the list kept after a rejection must also say so and the chunk is redone
    with more room (:func:`redo_on_overflow`)."""
    if kept is None or trial is None:
        return kept
    if is_cell_list(kept):
        return dataclasses.replace(kept, overflow=kept.overflow | trial.overflow)
    error = getattr(kept, "error", None)
    if error is not None:  # dmd.forces.neighbors.NeighborList and jax-md's lists: error bits
        return kept.set(error=type(error)(error.code | trial.error.code))
    return kept


def is_cell_list(nbr) -> bool:
    """True for dmd's own :class:`dmd.neighbors.CellNeighborList` (False for jax-md lists and None)."""
    from dmd.neighbors import CellNeighborList

    return isinstance(nbr, CellNeighborList)


def positions_for_allocation(system, x):
    """Positions ``x`` [N, 3] nm as jax-md's cell lists want them at allocation: wrapped into an orthorhombic box
    (unchanged without a box or for a triclinic one)."""
    if system.box is None or np.ndim(system.box) != 1:
        return x
    return wrap_positions(x, system.box)


def grow_neighbors(system, nbr, x, attempt: int):
    """A larger neighbour list at positions ``x`` [N, 3] nm after an overflow (capacity grows by 1.5× per
    ``attempt``); the caller redoes the steps since the last good state with it."""
    factor = 1.5**attempt
    if is_cell_list(nbr):
        return nbr.fns.grow(nbr, x, factor=1.25 * factor)
    # jax-md NeighborList: pad the neighbour capacity; grow the cell list through extra_capacity only
    # when the cell list itself overflowed (it slows every step: docs/engine.md, "Neighbour lists").
    from dmd.forces.neighbors import PartitionErrorCode as PEC

    code = int(nbr.error.code)
    extra = int(math.ceil(0.25 * factor * nbr.max_occupancy))
    cell_extra = extra if code & int(PEC.CELL_LIST_OVERFLOW) else 0
    new = system.allocate_neighbors(positions_for_allocation(system, x), extra_capacity=cell_extra)
    return pad_neighbors(new, max(new.max_occupancy, nbr.max_occupancy) + extra)


def allocate_like(system, x, like=None):
    """A neighbour list of ``system`` at positions ``x`` [N, 3] nm with at least the capacities of ``like`` (a list
    allocated earlier for the same system, or None): capacities are static shapes, so a compiled run that took
    ``like`` takes the new list without tracing again. A cell list that would overflow at ``like``'s capacities is
    allocated at its own instead."""
    if like is None:
        return system.allocate_neighbors(x)
    if is_cell_list(like):
        nbr = system.allocate_neighbors(x, max_occupancy=like.max_occupancy, cell_capacity=like.cell_capacity)
        return system.allocate_neighbors(x) if overflowed(nbr) else nbr
    return pad_neighbors(system.allocate_neighbors(x), getattr(like, "max_occupancy", 0))


def pad_neighbors(nbr, width: int):
    """A dense jax-md-style list ``idx [N, W]`` widened to at least ``width`` neighbours per atom (empty slots hold
    the sentinel N); other lists (cell lists, None) and lists already that wide are returned unchanged. A list of
    the same width has the same shapes, so a compiled run taking it is reused instead of traced again."""
    if nbr is None or is_cell_list(nbr) or getattr(nbr, "idx", None) is None or nbr.idx.ndim != 2:
        return nbr
    pad = int(width) - int(nbr.idx.shape[1])
    if pad <= 0:
        return nbr
    idx = jnp.pad(nbr.idx, ((0, 0), (0, pad)), constant_values=nbr.idx.shape[0])
    return dataclasses.replace(nbr, idx=idx, max_occupancy=int(width))


def grown_state(system, state, attempt: int):
    """An integrator state (``positions``, ``neighbor``, ``replace``) with its neighbour list grown at its own
    positions: the start of a chunk to redo."""
    return state.replace(neighbor=grow_neighbors(system, state.neighbor, state.positions, attempt))


def fitted_neighbors(nbr, x, min_gain: float = 0.1):
    """The cell list ``nbr`` right-sized at positions ``x`` [N, 3] nm, or ``nbr`` itself.

    A list allocated on a starting lattice keeps the lattice's cell counts (an LJ fcc start at N = 4,000: 32 atoms
    in a cell, 40 slots; the fluid ~26, 32 slots); refitted once the fluid has formed
    (:meth:`dmd.neighbors.CellNeighborListFns.grow` with ``fit=True`` and the builder's own slack, i.e. what a fresh
    allocation there would give) every rebuild
    scans fewer padded candidates (docs/engine.md, "Neighbour lists"). New capacities are new static shapes, so the
    run's chunk compiles once more: ``nbr`` is kept when it is no cell list (jax-md's, all pairs), overflowed (the
    redo grows it instead), or the fit would shrink its cell capacity by less than ``min_gain`` (a PDB start, already
    a liquid: nothing to repay the compilation with).
    """
    if not is_cell_list(nbr) or overflowed(nbr) or not nbr.cell_capacity:
        return nbr
    fns = nbr.fns
    fit = fns.grow(nbr, x, factor=fns.capacity_multiplier, fit=True)
    if not fit.cell_capacity or fit.cell_capacity > (1 - min_gain) * nbr.cell_capacity:
        return nbr
    return fit


def redo_on_overflow(
    run: Callable[[Any], Any],
    start: Any,
    neighbor_of: Callable[[Any], Any],
    regrow: Callable[[Any, Any, int], Any],
    max_attempts: int = MAX_REALLOCATIONS,
) -> tuple[Any, Any, int]:
    """Run ``result = run(start)`` until the neighbour list ``neighbor_of(result)`` did not overflow.

    After an overflow, ``start = regrow(start, result, attempt)`` (attempt = 1, 2, …) must return the start with a
    larger list (e.g. :func:`grown_state`); the PRNG key is part of the start, so a redo is the same trajectory.

    Returns:
      (start actually used, its result, number of reallocations).

    Raises:
      RuntimeError: still overflowing after ``max_attempts`` reallocations.
    """
    attempt = 0
    while True:
        result = run(start)
        if not overflowed(neighbor_of(result)):
            return start, result, attempt
        attempt += 1
        if attempt > max_attempts:
            raise RuntimeError(f"neighbour list still overflows after {max_attempts} reallocations")
        start = regrow(start, result, attempt)


# reports at least LAZY_ENERGY_EVERY steps apart, in chunks of at least LAZY_ENERGY_CHUNK steps, get the potential
# energy once per report instead of every step: value and gradient cost villin + water ~6 CPU ms more per step than
# the gradient alone, one energy alone ~20 ms; the energy alone is one more compiled copy of the energy (seconds
# for a solvated protein, cold), which a short chunk (a 10-step start-up run) would not earn back
# (docs/engine.md, "Villin step profile after fused pairs")
LAZY_ENERGY_EVERY = 4
LAZY_ENERGY_CHUNK = 200


def lazy_energy(n_reports: int, report_every: int) -> bool:
    """Whether a chunk of ``n_reports`` reports ``report_every`` steps apart computes the energy once per report."""
    return report_every >= LAZY_ENERGY_EVERY and n_reports * report_every >= LAZY_ENERGY_CHUNK


def with_energy(system, params, carry):
    """``carry`` (a tuple led by an integrator state computed with ``energy=False``) with the state's potential
    energy computed at its positions and neighbour list, as the step would have."""
    st = carry[0]
    e = system.energy_fn(params, st.positions, box=system.box, neighbor=st.neighbor)
    return (st.replace(potential_energy=e), *carry[1:])


def compiled_for(cache: collections.OrderedDict, system, settings: tuple, make: Callable[[], Any], size: int = 8):
    """The compiled function ``make()`` built for ``(system, *settings)``, kept in ``cache`` (least recently used
    dropped beyond ``size``): a script or fit calling a run function again on the same system reuses the
    compilation instead of tracing again. Entries hold the system itself, so its ``id`` cannot be reused."""
    key = (id(system), *settings)
    hit = cache.get(key)
    if hit is not None and hit[0] is system:
        cache.move_to_end(key)
        return hit[1]
    fn = make()
    cache[key] = (system, fn)
    while len(cache) > size:
        cache.popitem(last=False)
    return fn


@contextlib.contextmanager
def uninterrupted(stop):
    """Within the block the CLI's early exit on a signal (:func:`dmd.cli.common.stop_on_signals`) waits: a resumed
    run truncates its trajectory to the checkpoint in place, which an exit must not cut in half. Other ``stop``
    callables: nothing happens."""
    lock = getattr(stop, "lock", None)
    if lock is None:
        yield
        return
    with lock:
        yield


def begin_writes(stop) -> None:
    """Tell a run's ``stop`` callable that the run is about to write its first frames, log or checkpoint (the CLI's
    :func:`dmd.cli.common.stop_on_signals` exits at once on a signal only before this); others are left alone."""
    hook = getattr(stop, "begin_writes", None)
    if hook is not None:
        hook()


def stop_before_start(stop: Callable[[], int] | None, step: int, checkpoint=None) -> None:
    """Honour a stop requested while a run was set up (system, minimisation, start), before its first chunk
    compiles (~10 s for a solvated system): raise :class:`dmd.base.errors.RunInterrupted` with nothing written.

    Args:
      stop: the run's stop callable (signal number or 0), or None. step: the run's first step.
      checkpoint: a resumed run's checkpoint (left as it was, so ``--resume`` still continues from it); None for a
        fresh run.
    """
    signum = stop() if stop is not None else 0
    if not signum:
        return
    if checkpoint is not None:
        what = f"checkpoint {checkpoint} is unchanged (continue with --resume)"
    else:
        what = "nothing was written (run again to start over)"
    raise RunInterrupted(
        int(signum), step, None if checkpoint is None else str(checkpoint), f"interrupted before the first step; {what}"
    )
