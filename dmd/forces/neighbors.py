"""Neighbour lists with exclusions, packaged as :class:`NeighborList` objects (jax-md's dense contract).

Dense ``idx: [n_atoms, max_neighbors]`` int32, padded with ``n_atoms``; pairs within
``cutoff + skin`` (minimum image, :mod:`dmd.space`; orthorhombic ``[3]`` or reduced triclinic ``[3, 3]`` box,
whose cells tile fractional coordinates). Excluded pairs (OpenMM
exclusions/exceptions) are never listed.

* ``full=True``: row i lists every neighbour j ≠ i, so each pair appears twice. Forces and parameter gradients are
  then row reductions (no scatter-add) — see :func:`dmd.forces.nonbonded.pair_energy_full`.
* ``full=False`` (what OpenMM systems use, :data:`dmd.openmm_system.assembly.HALF_LIST`): each unordered pair once,
  in row i when (i + j) is even and j > i or (i + j) is odd and j < i; this parity rule splits every atom's
  neighbours about evenly between the rows. Half the pairs (and half the rebuild's output slots); the energy
  scatters each pair's partner share inside its block loop (``pair_energy_full(..., half=True)``).
  :attr:`NeighborList.full` says which.

When the box holds at least 3 cells of side ``cutoff + skin`` per edge, the build takes its
candidates from a cell list (the cell stencil around each atom, :class:`dmd.neighbors.CellNeighborListFns`),
compacts them (:meth:`dmd.neighbors.CellNeighborListFns.build_rows`) and then blanks excluded partners; smaller
boxes use a blocked all-pairs sweep (``block`` rows at a time, memory O(block × n_atoms)). Either
build runs only when the two largest displacements since the last build sum past ``skin``; overflow of
``max_neighbors`` sets the ``NEIGHBOR_LIST_OVERFLOW`` bit (``nbrs.did_buffer_overflow``),
which stays set until the caller reallocates.

On CPU the rebuild (and the allocation's build) runs as a compiled numba kernel by default
(:mod:`dmd.forces.numba_neighbors` as an XLA custom call; ``rebuild_kernel`` / ``DMD_REBUILD_KERNEL``:
auto, numba or xla), giving the XLA build's list element for element at about a quarter of its CPU time
(docs/engine.md, "Numba neighbour-list rebuild").

The list types (:class:`NeighborList`, :class:`NeighborListFns`, :class:`PartitionError`,
:class:`PartitionErrorCode`) mirror ``jax_md.partition``'s (same fields the engine reads, same pytree
leaves, same error bits) but live here: importing ``jax_md`` imports its whole package (nequip, e3nn,
flax, sympy; ~7 s), which the engine never needs (docs/engine.md, "Start-up").

Usage (jax-md's contract)::

    nbrs = neighbor_fn.allocate(pos, box=box)      # outside jit: sizes the buffer
    nbrs = nbrs.update(pos, box=box)               # inside jit: rebuilds only when needed
    if nbrs.did_buffer_overflow: nbrs = neighbor_fn.allocate(pos, box=box)
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import UserInputError
from dmd.forces.numba_rows import NumbaRows
from dmd.neighbors import CellNeighborListFns, box_key, half_pair_filter, needs_rebuild
from dmd.space import check_reduced_box, is_orthorhombic, max_cutoff, minimum_image

__all__ = [
    "REBUILD_KERNELS",
    "NeighborList",
    "NeighborListFns",
    "PartitionError",
    "PartitionErrorCode",
    "exclusion_table",
    "pair_neighbor_list",
    "resolve_rebuild_kernel",
]

# how the list is rebuilt: "xla" (the cell or all-pairs build in jax), "numba" (the compiled kernels of
# dmd.forces.numba_neighbors as XLA custom calls, CPU) or "auto" (numba on a CPU backend when numba imports)
REBUILD_KERNELS = ("auto", "numba", "xla")


class PartitionErrorCode(enum.IntEnum):
    """Error bits of a neighbour list (the values of ``jax_md.partition.PartitionErrorCode``)."""

    NONE = 0
    NEIGHBOR_LIST_OVERFLOW = 1 << 0
    CELL_LIST_OVERFLOW = 1 << 1
    CELL_SIZE_TOO_SMALL = 1 << 2
    MALFORMED_BOX = 1 << 3


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PartitionError:
    """``code``: uint8 scalar array of :class:`PartitionErrorCode` bits."""

    code: jax.Array

    def update(self, bit: int, pred) -> PartitionError:
        """This error with ``bit`` set where ``pred`` (bool scalar) holds."""
        return PartitionError(self.code | jnp.where(pred, jnp.uint8(bit), jnp.uint8(0)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NeighborList:
    """Dense neighbour-list state (a pytree; capacities and the update function are static).

    Attributes:
      idx: ``[N, max_occupancy]`` int32 neighbour indices, padded with N.
      reference_position: ``[N, 3]`` nm, positions at the last build.
      error: :class:`PartitionError`; nonzero after an overflow (reallocate).
      cell_list_capacity: atoms per cell of the cell build, or None for the all-pairs build (static).
      max_occupancy: neighbour capacity per atom (static).
      update_fn: ``update_fn(position, nbrs, **kwargs) -> NeighborList`` (static).
      full: each pair in both rows (True) or once (False; :func:`pair_neighbor_list`) (static).
    """

    idx: jax.Array
    reference_position: jax.Array
    error: PartitionError
    cell_list_capacity: int | None = dataclasses.field(metadata={"static": True})
    max_occupancy: int = dataclasses.field(metadata={"static": True})
    update_fn: Callable = dataclasses.field(metadata={"static": True})
    full: bool = dataclasses.field(default=True, metadata={"static": True})

    def update(self, position, **kwargs) -> NeighborList:
        return self.update_fn(position, self, **kwargs)

    @property
    def did_buffer_overflow(self):
        """Bool-like scalar: the neighbour or cell capacity overflowed since allocation."""
        return self.error.code & (PartitionErrorCode.NEIGHBOR_LIST_OVERFLOW | PartitionErrorCode.CELL_LIST_OVERFLOW)

    def set(self, **kwargs) -> NeighborList:
        return dataclasses.replace(self, **kwargs)


@dataclasses.dataclass(frozen=True)
class NeighborListFns:
    """``allocate(pos, extra_capacity=0, box=...)`` (outside jit: sizes the buffers) and
    ``update(pos, nbrs, box=...)`` (inside jit); ``cutoff`` and ``skin`` nm, ``max_list_cutoff`` nm (half the default
    box's smallest width) and ``with_skin(skin)`` (the same builder with another skin: :func:`dmd.skin.with_skin`)."""

    allocate: Callable
    update: Callable
    cutoff: float | None = None
    skin: float | None = None
    max_list_cutoff: float | None = None
    with_skin: Callable | None = None
    rebuild_kernel: str = "xla"

    def __iter__(self):
        return iter((self.allocate, self.update))


def _choose_cells(n_atoms: int, box, cutoff: float, skin: float) -> CellNeighborListFns:
    """The cell grid (subdivision 1 or 2) with the fewer expected padded candidates per atom:
    stencil size × (mean + 3 sd of a Poisson cell count, with 25% slack)."""
    best, best_k = None, np.inf
    for m in (1, 2):
        fns = CellNeighborListFns(box, float(cutoff), float(skin), 1.25, m)
        if not fns.use_cells:
            continue
        mean = n_atoms / np.prod(fns.cells_per_side)
        k = len(fns.stencil) * (1.25 * (mean + 3 * np.sqrt(mean)) + 2)
        if k < best_k:
            best, best_k = fns, k
    return best or CellNeighborListFns(box, float(cutoff), float(skin))


def resolve_rebuild_kernel(kernel: str | None = None) -> str:
    """The rebuild kernel ``kernel`` names (default: the environment's ``DMD_REBUILD_KERNEL``, else ``"auto"``),
    resolved to ``"numba"`` or ``"xla"``: auto takes numba on a CPU backend when numba is installed."""
    kernel = kernel or os.environ.get("DMD_REBUILD_KERNEL") or "auto"
    if kernel not in REBUILD_KERNELS:
        raise UserInputError(f"rebuild kernel {kernel!r}: use one of {', '.join(REBUILD_KERNELS)}")
    has_numba = importlib.util.find_spec("numba") is not None
    if kernel == "numba" and not has_numba:
        raise UserInputError("the numba rebuild kernel needs numba (pip install numba), or use rebuild kernel xla")
    if kernel == "auto":
        return "numba" if has_numba and jax.default_backend() == "cpu" else "xla"
    if kernel == "numba" and jax.default_backend() != "cpu":
        raise UserInputError(f"the numba rebuild kernel is an XLA CPU custom call; the backend is "
                             f"{jax.default_backend()}: use rebuild kernel auto or xla")  # fmt: skip
    return kernel


def exclusion_table(n_atoms: int, pairs) -> np.ndarray:
    """``[n_atoms, max_excl]`` int32 table of excluded partners per atom, padded with ``n_atoms``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    partners = [[] for _ in range(n_atoms)]
    for i, j in pairs:
        partners[i].append(j)
        partners[j].append(i)
    width = max([len(p) for p in partners] + [1])
    table = np.full((n_atoms, width), n_atoms, dtype=np.int32)
    for i, p in enumerate(partners):
        table[i, : len(p)] = p
    return table


def pair_neighbor_list(
    n_atoms: int,
    box,
    cutoff: float,
    skin: float = 0.2,
    excluded_pairs=None,
    capacity_multiplier: float = 1.25,
    block: int = 256,
    full: bool = True,
    occupancy_multiplier: float | None = None,
    min_headroom: int = 1,
    rebuild_kernel: str | None = None,
) -> NeighborListFns:
    """Neighbour-list functions for a periodic system.

    Args:
      n_atoms: number of atoms N.
      box: ``[3]`` nm or ``[3, 3]`` reduced box vectors (rows) nm: the default box (``allocate``/``update``
        accept ``box=`` to override).
      cutoff: interaction cutoff r_c, nm (absolute).
      skin: extra list radius, nm; rebuilt when the two largest displacements sum past it.
      excluded_pairs: ``[n_pairs, 2]`` atom pairs never to list.
      capacity_multiplier: head-room of ``max_neighbors`` over the largest row at allocation, and of the cell
        capacity over the fullest cell.
      occupancy_multiplier: head-room of ``max_neighbors`` alone (default: ``capacity_multiplier``).
      min_headroom: at least this many free slots over the largest row (short rows: a multiplier's few slots
        overflow within a run, and each overflow redoes a chunk and compiles it wider).
      block: rows per step of the blocked build.
      full: list each pair in both rows (True) or once (False), see the module docstring.
      rebuild_kernel: ``"auto"``, ``"numba"`` or ``"xla"`` (:data:`REBUILD_KERNELS`, :func:`resolve_rebuild_kernel`;
        default the environment's ``DMD_REBUILD_KERNEL`` or auto): the same list element for element either way.

    Over 100 lines: allocate, update, grow and the blocked build are closures over one exclusion table, padding and
    list radius (jit constants); they form the :class:`NeighborListFns` returned together.
    """
    r_list = float(cutoff) + float(skin)
    row_multiplier = capacity_multiplier if occupancy_multiplier is None else occupancy_multiplier
    default_box = np.asarray(box, dtype=np.float64)
    excl = exclusion_table(n_atoms, np.zeros((0, 2)) if excluded_pairs is None else excluded_pairs)
    n_blocks = -(-n_atoms // block)
    n_pad = n_blocks * block
    excl_pad = np.full((n_pad, excl.shape[1]), n_atoms, dtype=np.int32)
    excl_pad[:n_atoms] = excl

    def _check_box(box):
        b = check_reduced_box(box)
        if r_list > max_cutoff(b):
            edge = "the smallest box edge" if is_orthorhombic(b) else "min(a_x, b_y, c_z)"
            raise UserInputError(
                f"cutoff + skin = {r_list:.3f} nm exceeds half of {edge} ({2 * max_cutoff(b):.3f} nm); "
                "use a smaller --cutoff or a larger box"
            )

    def _box_vec(box, dtype):
        # a concrete diagonal [3, 3] box takes the orthorhombic code path ([3] lengths)
        return jnp.asarray(box if isinstance(box, jax.core.Tracer) else box_key(np.asarray(box)), dtype)

    def _mask_block(pos, box, b):
        rows = b * block + jnp.arange(block)
        valid = rows < n_atoms
        rows_c = jnp.minimum(rows, n_atoms - 1)
        d = minimum_image(pos[None, :, :] - pos[rows_c][:, None, :], box)
        r2 = jnp.sum(d * d, axis=-1)
        j = jnp.arange(n_atoms)
        if full:
            half = j[None, :] != rows_c[:, None]
        else:
            even = (rows_c[:, None] + j[None, :]) % 2 == 0
            half = jnp.where(even, j[None, :] > rows_c[:, None], j[None, :] < rows_c[:, None])
        m = (r2 < r_list**2) & half & valid[:, None]
        ex = jax.lax.dynamic_slice_in_dim(jnp.asarray(excl_pad), b * block, block)
        return m.at[jnp.arange(block)[:, None], ex].set(False, mode="drop")

    def _counts(pos, box):
        return jax.lax.map(lambda b: jnp.sum(_mask_block(pos, box, b), axis=1), jnp.arange(n_blocks)).reshape(-1)

    def _build(pos, box, max_neighbors):
        def one(b):
            m = _mask_block(pos, box, b)
            idx = jax.vmap(lambda row: jnp.nonzero(row, size=max_neighbors, fill_value=n_atoms)[0])(m)
            return idx.astype(jnp.int32), jnp.sum(m, axis=1)

        idx, count = jax.lax.map(one, jnp.arange(n_blocks))
        return idx.reshape(n_pad, max_neighbors)[:n_atoms], jnp.max(count)

    cells = _choose_cells(n_atoms, box_key(default_box), cutoff, skin)
    kernel = resolve_rebuild_kernel(rebuild_kernel)
    # exclusions tested in two passes: the first `narrow` columns on every row, all columns on the few rows with more
    # (villin + water: 2 columns for the 8,283 water atoms, 21 for 582 protein atoms: ~5x fewer compares)
    n_excl = np.sum(excl < n_atoms, axis=1)
    narrow = min(range(excl.shape[1] + 1), key=lambda w: n_atoms * w + np.sum(n_excl > w) * excl.shape[1])
    wide_rows = np.flatnonzero(n_excl > narrow).astype(np.int32)
    numba_rows = NumbaRows(n_atoms, cells, r_list, full, excl, n_excl) if kernel == "numba" else None

    def _blank_excluded(idx):
        """``idx [N, M]`` with every excluded partner replaced by N (padding)."""
        excluded = jnp.zeros(idx.shape, bool)
        for e in range(narrow):
            excluded = excluded | (idx == jnp.asarray(excl[:, e : e + 1]))
        idx = jnp.where(excluded, n_atoms, idx)
        if wide_rows.size == 0:
            return idx
        sub = idx[wide_rows]
        excluded = jnp.zeros(sub.shape, bool)
        for e in range(narrow, excl.shape[1]):
            excluded = excluded | (sub == jnp.asarray(excl[wide_rows, e : e + 1]))
        return idx.at[wide_rows].set(jnp.where(excluded, n_atoms, sub))

    def _pair_filter(rows, cand):
        # the parity rule as a bit test (half_pair_filter): cheaper than % in the candidate loop
        return cand != rows if full else half_pair_filter(rows, cand)

    def _cell_build(pos, box, max_neighbors, cell_capacity):
        # excluded partners are blanked after compaction: testing all K candidates against the
        # exclusion table would cost K/max_neighbors times more; the capacity counts them (conservative)
        idx, counts, cell_overflow = cells.build_rows(
            pos, cell_capacity, max_neighbors, box=box, pair_filter=_pair_filter
        )
        return _blank_excluded(idx), jnp.max(counts), cell_overflow

    def _cell_counts(pos, box, cell_capacity):
        return cells.build_rows(pos, cell_capacity, None, box=box, pair_filter=_pair_filter)[1]

    counts_jit = jax.jit(_counts)
    build_jit = jax.jit(_build, static_argnums=2)
    cell_counts_jit = jax.jit(_cell_counts, static_argnums=2)
    cell_build_jit = jax.jit(_cell_build, static_argnums=(2, 3))

    def _cell_capacity(pos, box, extra: int) -> int:
        """Atoms-per-cell capacity for the cell build at ``pos``, or 0 to use the all-pairs build (box too
        small for 3 cells per edge, or a box other than the one the cell grid was laid out for)."""
        if not cells.use_cells or np.shape(box_key(box)) != np.shape(cells.box):
            return 0
        if not np.allclose(np.asarray(box_key(box)), np.asarray(cells.box)):
            return 0
        return cells._cell_capacity_for(cells._max_cell_count(pos), n_atoms, capacity_multiplier, extra)

    def allocate(pos, extra_capacity: int = 0, build: bool = True, **kwargs) -> NeighborList:
        """``build=False``: size the list but leave it empty, with a reference position half a box away from every
        atom, so that the first ``update`` (compiled into the caller's step anyway) builds it: one compilation of
        the build instead of two (docs/engine.md, "Start-up")."""
        box = kwargs.get("box", default_box)
        _check_box(box)
        pos = jnp.asarray(pos)
        boxv = _box_vec(box, pos.dtype)
        cell_capacity = _cell_capacity(pos, box, extra_capacity)
        if numba_rows is not None:
            max_count = int(numba_rows.host(pos, boxv, 0, cell_capacity)[1])
        elif cell_capacity:
            max_count = int(np.max(np.asarray(cell_counts_jit(pos, boxv, cell_capacity))))
        else:
            max_count = int(np.max(np.asarray(counts_jit(pos, boxv))))
        headroom = max(int(max_count * row_multiplier) + 1, max_count + int(min_headroom))
        max_neighbors = max(headroom + int(extra_capacity), 1)
        max_neighbors = min(max_neighbors, n_atoms)
        if not build:
            # a half-box shift (orthorhombic) or half of a + b + c (triclinic) is at least half the smallest box
            # width from every lattice point (minimum image), which exceeds the skin: the first update rebuilds
            b = np.asarray(box_key(np.asarray(box)), np.float64)
            shift = 0.5 * (b if b.ndim == 1 else b.sum(0))
            idx = jnp.asarray(np.full((n_atoms, max_neighbors), n_atoms, np.int32))  # numpy: no eager compiles
            ref = jnp.asarray((np.asarray(pos, np.float64) + shift).astype(pos.dtype))
            err = PartitionError(jnp.zeros((), jnp.uint8))
            return NeighborList(idx, ref, err, cell_capacity or None, max_neighbors, update, full)
        if numba_rows is not None:
            idx = jnp.asarray(numba_rows.host(pos, boxv, max_neighbors, cell_capacity)[0])
        elif cell_capacity:
            idx = cell_build_jit(pos, boxv, max_neighbors, cell_capacity)[0]
        else:
            idx, _ = build_jit(pos, boxv, max_neighbors)
        err = PartitionError(jnp.zeros((), jnp.uint8))
        return NeighborList(idx, pos, err, cell_capacity or None, max_neighbors, update, full)

    def update(pos, nbrs: NeighborList, **kwargs) -> NeighborList:
        box = kwargs.get("box", default_box)
        boxv = _box_vec(box, pos.dtype)
        disp = minimum_image(pos - nbrs.reference_position, boxv)  # an atom re-wrapped across the box has not moved
        moved = needs_rebuild(jnp.sum(disp * disp, axis=-1), skin)

        def rebuild(_):
            err = nbrs.error
            if numba_rows is not None:
                idx, max_count, cell_overflow = numba_rows(pos, boxv, nbrs.max_occupancy, nbrs.cell_list_capacity or 0)
                err = err.update(PartitionErrorCode.CELL_LIST_OVERFLOW, cell_overflow)
            elif nbrs.cell_list_capacity:
                idx, max_count, cell_overflow = _cell_build(pos, boxv, nbrs.max_occupancy, nbrs.cell_list_capacity)
                err = err.update(PartitionErrorCode.CELL_LIST_OVERFLOW, cell_overflow)
            else:
                idx, max_count = _build(pos, boxv, nbrs.max_occupancy)
            err = err.update(PartitionErrorCode.NEIGHBOR_LIST_OVERFLOW, max_count > nbrs.max_occupancy)
            return nbrs.set(idx=idx, reference_position=pos, error=err)

        return jax.lax.cond(moved, rebuild, lambda _: nbrs, None)

    def with_skin(new_skin: float) -> NeighborListFns:
        return pair_neighbor_list(
            n_atoms,
            box,
            cutoff,
            new_skin,
            excluded_pairs,
            capacity_multiplier,
            block=block,
            full=full,
            occupancy_multiplier=occupancy_multiplier,
            min_headroom=min_headroom,
            rebuild_kernel=rebuild_kernel,
        )

    r_max = max_cutoff(check_reduced_box(box))
    return NeighborListFns(allocate, update, float(cutoff), float(skin), r_max, with_skin, kernel)
