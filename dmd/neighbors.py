"""A cell-list neighbour list that rebuilds only when needed, with explicit capacities.

Same contract as ``jax_md.partition.NeighborList`` (dense format) so energy functions and the run loop treat both
alike: ``idx: [N, capacity] int32`` with padding value N (each pair listed from both atoms, or once with ``half``:
:func:`half_pair_filter`), ``reference_position``, ``update(pos)``, ``did_buffer_overflow``, ``max_occupancy``.

Differences from jax-md, each for speed or safety (docs/engine.md, "Neighbour lists"):

* The rebuild test (two largest displacements sum past the skin, :func:`needs_rebuild`) runs inside the jitted step with
  ``lax.cond``: no host round trip per step, and a rebuild counter ``n_rebuilds`` is carried as data.
* The cell list is a sort by cell id plus per-cell start offsets (no scatter into a padded cell buffer); its per-cell
  capacity and the neighbour capacity are separate explicit sizes, so a retry after overflow grows only what
  overflowed (jax-md's ``extra_capacity`` also inflates the cell list and slows every step).
* When the 27-cell stencil would hold as many padded candidates as there are atoms (3 cells per side, e.g.
  N = 1,000 at ρσ³ = 0.8), the candidates are all atoms instead (``cell_capacity = 0``), distances by broadcasting.
* Overflow is data (``overflow`` flag, sticky until reallocation): the run loop detects it after a chunk, grows the
  capacity with :meth:`CellNeighborListFns.grow` and redoes the chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dmd.compaction import compact_bits, compact_rows, pack_rows
from dmd.space import from_fractional, is_triclinic, minimum_image, perpendicular_widths, to_fractional

__all__ = [
    "BLOCK_ENTRIES",
    "COMPACT_SLOTS",
    "CellNeighborList",
    "CellNeighborListFns",
    "box_key",
    "cell_neighbor_list",
    "compact_bits",
    "compact_rows",
    "half_pair_filter",
    "needs_rebuild",
    "pack_rows",
]


# Pairs (mask phase) or 8 × output slots (compaction) per step of the build's block loops, by jax backend. CPU: small
# blocks stay in cache (villin + water rebuild 88-91 -> 83-86 CPU ms at 500k against 2M, LJ N = 8,000 14.5 -> 12.8 ms,
# same process, alternated × 3); elsewhere the earlier 2M (a GPU pays per loop step, not per byte of cache).
BLOCK_ENTRIES = {"cpu": 500_000, "gpu": 2_000_000}
# List slots per step of the compaction loop (default block sizes). CPU: 4M (LJ N = 8,000 in one step: rebuild 12.5 ->
# 10.7 CPU ms; villin + water unchanged, 69-70 ms); elsewhere the earlier 2M / 8.
COMPACT_SLOTS = {"cpu": 4_000_000, "gpu": 250_000}


def half_pair_filter(rows, cand):
    """Half lists (int32 ids ≥ 0, broadcasting): pair (i, j) in row i when i + j is even and j > i or odd and j < i."""
    return jnp.where(((rows ^ cand) & 1) == 0, cand > rows, cand < rows)


def needs_rebuild(disp2, skin: float):
    """True when a list built with ``skin`` may miss a pair, given squared displacements ``disp2 [N]`` since the
    build: a pair distance changes by at most |d_i| + |d_j|, so the two largest displacements are tested against
    the skin (never more often than the usual max |d| > skin/2 test; on large fluids about as often)."""
    i1 = jnp.argmax(disp2)
    d1 = jnp.sqrt(disp2[i1])
    d2 = jnp.sqrt(jnp.max(disp2.at[i1].set(0)))
    return d1 + d2 > skin


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["idx", "reference_position", "overflow", "n_rebuilds", "box"],
    meta_fields=["max_occupancy", "cell_capacity", "fns"],
)
@dataclasses.dataclass(frozen=True)
class CellNeighborList:
    """Neighbour-list state (a pytree; the two capacities and the builder are static).

    Attributes:
      idx: ``[N, max_occupancy]`` int32 neighbour indices, padded with N.
      reference_position: ``[N, 3]`` nm, positions at the last rebuild.
      overflow: bool scalar, True once any rebuild found more neighbours (or more atoms in a cell)
        than the capacities; the list is then incomplete and the caller must reallocate.
      n_rebuilds: int32 scalar, rebuilds since allocation (allocation itself not counted).
      box: ``[3]`` or ``[3, 3]`` nm, the box the list lives in (data, so a changed box is no new compilation; the
        static cell grid of ``fns`` must cover it: :meth:`CellNeighborListFns.covers`).
      max_occupancy: neighbour capacity per atom (static).
      cell_capacity: atoms per cell capacity (static; 0 when no cell list is used).
      fns: the :class:`CellNeighborListFns` that built it (static).
    """

    idx: jax.Array
    reference_position: jax.Array
    overflow: jax.Array
    n_rebuilds: jax.Array
    box: jax.Array
    max_occupancy: int
    cell_capacity: int
    fns: CellNeighborListFns

    def update(self, position, **kwargs) -> CellNeighborList:
        return self.fns.update(position, self)

    @property
    def did_buffer_overflow(self):
        return self.overflow

    @property
    def full(self) -> bool:  # each pair in both rows (True) or once (CellNeighborListFns.half)
        return not self.fns.half

    def set(self, **kwargs) -> CellNeighborList:
        return dataclasses.replace(self, **kwargs)


@dataclasses.dataclass(frozen=True)
class CellNeighborListFns:
    """Builder for :class:`CellNeighborList` in an orthorhombic or reduced triclinic periodic box.

    Cells tile fractional coordinates (``s = x B⁻¹``, :mod:`dmd.space`): ``n_d = floor(m w_d / (r_c + skin))`` cells
    along box vector d, with w_d the perpendicular width of the cell, so a partner within cutoff + skin is at
    most m cells away along every box vector and the (2m+1)³ block of cells around an atom's cell holds it.

    The box a list lives in is data (:attr:`CellNeighborList.box`, default :attr:`box`); the cell grid (cells per side,
    stencil) is static and laid out for :attr:`box`. An orthorhombic grid stays valid for every larger box (its cells
    only grow, :meth:`covers`), so a list can move to a new box without a new compilation (:meth:`rebox`).

    Attributes:
      box: ``(Lx, Ly, Lz)`` nm, or box vectors ``((a_x, 0, 0), (b_x, b_y, 0), (c_x, c_y, c_z))`` nm (rows,
        OpenMM's reduced form; the cutoff + skin must not exceed ``min(a_x, b_y, c_z)/2``): the default box and
        the smallest one the cell grid serves.
      cutoff: interaction cutoff r_c, nm.
      skin: nm; pairs within r_c + skin are listed; rebuild when the two largest displacements sum past the skin.
      capacity_multiplier: slack over the occupancy found at allocation.
      subdivision: m; cells of side ≥ (cutoff + skin)/m and a (2m+1)³ stencil. m = 2 pads less in dense
        systems with many atoms per cell (water with a 1 nm cutoff), m = 1 suits simple fluids.
      half: list each pair once (:func:`half_pair_filter`) instead of from both atoms.
      rebuild_kernel: "xla" (the builds here) or "numba" (:mod:`dmd.forces.numba_neighbors` as an XLA CPU custom
        call: the same list element for element, :func:`dmd.forces.neighbors.resolve_rebuild_kernel` resolves
        "auto").
    """

    box: tuple  # see box_key
    cutoff: float
    skin: float
    capacity_multiplier: float = 1.25
    subdivision: int = 1
    half: bool = False
    rebuild_kernel: str = "xla"

    def __post_init__(self):
        object.__setattr__(self, "box", box_key(self.box))

    @property
    def list_cutoff(self) -> float:
        return self.cutoff + self.skin

    @property
    def triclinic(self) -> bool:
        """True when :attr:`box` holds box vectors (:func:`box_key` keeps orthorhombic boxes as lengths)."""
        return np.ndim(self.box) == 2

    def _box(self, dtype, box=None):
        return jnp.asarray(self.box if box is None else box, dtype)

    def covers(self, box):
        """True when the static cell grid serves box ``box`` (``[3]`` nm, or ``[3, 3]`` equal to :attr:`box`): every
        edge at least the grid's (cells no narrower than planned; the half-box rule then holds too). Host or
        traced (returns a jax bool inside jit)."""
        if self.triclinic:
            return bool(np.allclose(np.asarray(box, float), np.asarray(self.box)))
        grid = np.asarray(self.box)
        if isinstance(box, jax.core.Tracer):
            return jnp.all(box >= jnp.asarray(grid, box.dtype))
        return bool(np.all(np.asarray(box, float) >= grid * (1 - 1e-12)))

    @property
    def cells_per_side(self) -> tuple[int, int, int]:
        widths = perpendicular_widths(self.box) if self.triclinic else self.box
        return tuple(int(math.floor(b * self.subdivision / self.list_cutoff)) for b in widths)

    @property
    def use_cells(self) -> bool:
        return min(self.cells_per_side) >= 2 * self.subdivision + 1

    @property
    def stencil(self) -> np.ndarray:
        """``[S, 3]`` cell offsets that can hold a partner within cutoff + skin: the (2m+1)³ block around a
        cell (m = subdivision) less the corner cells whose nearest point is farther than cutoff + skin."""
        m = self.subdivision
        offs = np.asarray(list(itertools.product(range(-m, m + 1), repeat=3)))
        if self.triclinic:  # slanted cells: keep the whole block
            return offs.astype(np.int32)
        side = np.asarray(self.box) / np.asarray(self.cells_per_side)
        gap = np.maximum(np.abs(offs) - 1, 0) * side
        return offs[np.sum(gap * gap, axis=1) < self.list_cutoff**2].astype(np.int32)

    # -- building ---------------------------------------------------------------------------
    def _cell_ids(self, pos, box=None):
        nc = jnp.asarray(self.cells_per_side, jnp.int32)
        frac = self._wrapped_fractional(pos, self._box(pos.dtype, box))
        cxyz = jnp.clip(jnp.floor(frac * nc).astype(jnp.int32), 0, nc - 1)
        return cxyz, (cxyz[:, 0] * nc[1] + cxyz[:, 1]) * nc[2] + cxyz[:, 2]

    def _cells_used(self, cell_capacity) -> bool:
        return self.use_cells and cell_capacity > 0

    def _cell_frame(self, pos, cell_capacity, box):
        """The atoms sorted into cells, with each cell's candidates and their periodic images.

        Returns ``(members [n_cells, Cc], rows_pos [n_cells, Cc, 3], table [n_cells, K], cand_pos [n_cells, 3, K],
        row_of [N], cid [N], cell_overflow)``: ``members`` the atoms of each cell (padding N), ``table`` the atoms of
        its stencil cells (padding N; K = stencil size × Cc rounded up to whole 32-bit mask words), ``cand_pos`` their
        wrapped positions moved to the image of their stencil cell (padding: +inf), so that a partner's distance is a
        plain difference; ``row_of`` each atom's row ``cell · Cc + slot`` in the cell frame, ``cid`` its cell.
        """
        n = pos.shape[0]
        nc_t = self.cells_per_side
        n_cells = int(np.prod(nc_t))
        cc = cell_capacity
        cxyz, cid = self._cell_ids(pos, box)
        frac = self._wrapped_fractional(pos, box)
        wrapped = from_fractional(frac, box)
        order = jnp.argsort(cid).astype(jnp.int32)
        counts = jnp.zeros((n_cells,), jnp.int32).at[cid].add(1)
        starts = jnp.cumsum(counts) - counts
        # the stencil of every cell, on the host: neighbour cell ids and the image (-1, 0, 1 box vectors) they lie in
        cells = np.asarray(list(itertools.product(*(range(c) for c in nc_t))), np.int64)  # [n_cells, 3]
        raw = cells[:, None, :] + self.stencil[None].astype(np.int64)  # [n_cells, S, 3]
        image = np.floor_divide(raw, np.asarray(nc_t))
        nb = raw - image * np.asarray(nc_t)
        nb_id = jnp.asarray((nb[..., 0] * nc_t[1] + nb[..., 1]) * nc_t[2] + nb[..., 2], jnp.int32)  # [n_cells, S]
        slot = jnp.arange(cc, dtype=jnp.int32)
        valid = slot < counts[nb_id][..., None]
        table = jnp.where(valid, order[jnp.clip(starts[nb_id][..., None] + slot, 0, n - 1)], n).reshape(n_cells, -1)
        shift = from_fractional(jnp.asarray(image, pos.dtype), box)  # [n_cells, S, 3] nm
        cand_pos = wrapped[jnp.minimum(table, n - 1)] + jnp.repeat(shift, cc, axis=1)
        cand_pos = jnp.where((table < n)[..., None], cand_pos, jnp.inf)
        k = table.shape[1]  # padded to whole 32-bit mask words (padding N, +inf: never a partner)
        table = jnp.pad(table, ((0, 0), (0, -k % 32)), constant_values=n)
        cand_pos = jnp.pad(cand_pos, ((0, 0), (0, -k % 32), (0, 0)), constant_values=jnp.inf).transpose(0, 2, 1)
        members = jnp.where(slot < counts[:, None], order[jnp.clip(starts[:, None] + slot, 0, n - 1)], n)
        rows_pos = wrapped[jnp.minimum(members, n - 1)]
        rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
        row_of = cid * cc + jnp.minimum(rank - starts[cid], cc - 1)  # past the capacity: flagged as overflow
        return members, rows_pos, table, cand_pos, row_of, cid, jnp.max(counts) > cc

    def wrapped_cells(self, pos, box=None):
        """``(wrapped [N, 3], cid [N])``: the positions wrapped into the box and their cells, as the cell build takes
        them (for a build outside XLA: :func:`dmd.forces.numba_neighbors.cell_rows`)."""
        box = self._box(pos.dtype, box)
        return from_fractional(self._wrapped_fractional(pos, box), box), self._cell_ids(pos, box)[1]

    def _wrapped_fractional(self, pos, box):
        if self.triclinic:
            s = to_fractional(pos, box)
            return s - jnp.floor(s)
        return jnp.mod(pos, box) / box

    def build_rows(self, pos, cell_capacity, capacity, *, box=None, pair_filter=None, block_entries=None):
        """Each atom's partners within cutoff + skin from the cell list: ``(idx [N, capacity] | None, counts [N],
        cell_overflow)``.

        ``idx`` rows list the partners (padding N; ``capacity=None``: counts only) that pass
        ``pair_filter(rows, cand)`` (broadcasting int32 atom ids; default: not the row's own atom), cells and
        distances in ``box`` (``[3]`` or ``[3, 3]``, default :attr:`box`; the grid must cover it, :meth:`covers`).

        Distances are computed per cell: the atoms of a cell against the candidates of its stencil, moved to their
        periodic images once per cell (:meth:`_cell_frame`), in blocks of about ``block_entries`` pairs (default
        :data:`BLOCK_ENTRIES` for the running jax backend; compaction: ``block_entries / 8`` or :data:`COMPACT_SLOTS`
        list slots). The inner
        loop then broadcasts, with no gather and no minimum image: on XLA CPU a gather per candidate cost more than
        the arithmetic, although the cells' padded rows hold ~1.8x the pairs of a row-wise sweep. The packed masks
        return to atom order (a gather of words) and are compacted there (:func:`compact_bits`).
        """
        n = pos.shape[0]
        backend = jax.default_backend()
        slots = COMPACT_SLOTS.get(backend, COMPACT_SLOTS["gpu"]) if block_entries is None else block_entries // 8
        block_entries = block_entries or BLOCK_ENTRIES.get(backend, BLOCK_ENTRIES["gpu"])
        box = self._box(pos.dtype, box)
        members, rows_pos, table, cand_pos, row_of, cid, cell_overflow = self._cell_frame(pos, cell_capacity, box)
        n_cells, cc = members.shape
        k = table.shape[1]
        per = max(1, min(n_cells, block_entries // (cc * k)))
        n_blk = -(-n_cells // per)
        pad = n_blk * per - n_cells  # whole blocks, padded once here (a pad inside the loop body is slow on XLA CPU)
        rl2 = self.list_cutoff**2

        def blocks(a, value):
            a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1), constant_values=value)
            return a.reshape((n_blk, per) + a.shape[1:])

        def block(args):
            mem, rp, tab, cp = args  # [B, Cc], [B, Cc, 3], [B, K], [B, 3, K]
            d2 = sum((rp[:, :, x, None] - cp[:, None, x, :]) ** 2 for x in range(3))
            rows, cand = mem[:, :, None], tab[:, None, :]
            keep = (cand != rows) if pair_filter is None else pair_filter(rows, cand)
            mask = (d2 < rl2) & keep & (rows < n)
            return pack_rows(mask.reshape(-1, k)).reshape(per, cc, -1)

        bits = jax.lax.map(
            block, (blocks(members, n), blocks(rows_pos, 0), blocks(table, n), blocks(cand_pos, jnp.inf))
        )
        bits = bits.reshape(n_blk * per * cc, -1)[row_of]  # [N, K/32], atom order
        counts = jnp.sum(jax.lax.population_count(bits).astype(jnp.int32), axis=1)
        if capacity is None:
            return None, counts, cell_overflow
        rows_per = int(min(n, max(32, slots // capacity)))
        n_rb = -(-n // rows_per)
        pad_r = n_rb * rows_per - n
        bits_b = jnp.pad(bits, ((0, pad_r), (0, 0))).reshape(n_rb, rows_per, -1)
        base_b = jnp.pad(cid * k, (0, pad_r)).reshape(n_rb, rows_per)
        idx = jax.lax.map(lambda a: compact_bits(a[0], table.reshape(-1), a[1], capacity, n)[0], (bits_b, base_b))
        return idx.reshape(n_rb * rows_per, capacity)[:n], counts, cell_overflow

    def _build(self, pos, max_occupancy, cell_capacity, box=None):
        """(idx [N, max_occupancy], occupancy, cell_overflow) for positions ``pos`` in ``box`` (default :attr:`box`);
        with a cell list from :meth:`build_rows`."""
        n = pos.shape[0]
        box = self._box(pos.dtype, box)
        if self.rebuild_kernel == "numba":
            return self._numba_build(pos, max_occupancy, cell_capacity, box)
        if not self._cells_used(cell_capacity):
            cand = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :], (n, n))
            # columns padded to whole 32-bit mask words (padding N, never listed): a pad of the [N, N] mask inside
            # compact_rows is slow on XLA CPU
            cand = jnp.pad(cand, ((0, 0), (0, -n % 32)), constant_values=n)
            ok = (cand < n) & self._keep(jnp.arange(n, dtype=jnp.int32)[:, None], cand)
            pos_c = jnp.pad(pos, ((0, cand.shape[1] - n), (0, 0)))
            dr = minimum_image(pos[:, None, :] - pos_c[None], box)  # all pairs: broadcast instead of gathering N² rows
            mask = ok & (jnp.sum(dr * dr, -1) < self.list_cutoff**2)
            if max_occupancy is None:
                return None, jnp.max(jnp.sum(mask, axis=1, dtype=jnp.int32)), jnp.zeros((), bool)
            idx, occupancy = compact_rows(mask, cand, max_occupancy, n)
            return idx, occupancy, jnp.zeros((), bool)
        idx, counts, cell_overflow = self.build_rows(pos, cell_capacity, max_occupancy, box=box, pair_filter=self._keep)
        return idx, jnp.max(counts), cell_overflow

    def _numba_build(self, pos, max_occupancy, cell_capacity, box):
        """:meth:`_build` by the numba rebuild (no exclusions; counts only when ``max_occupancy`` is None)."""
        from dmd.forces.numba_rows import numba_rows

        rows = numba_rows(self, pos.shape[0])
        cells = cell_capacity if self._cells_used(cell_capacity) else 0
        idx, occ, cell_overflow = rows(pos, box, 0 if max_occupancy is None else max_occupancy, cells)
        return (None if max_occupancy is None else idx), occ, cell_overflow

    def _keep(self, rows, cand):
        return half_pair_filter(rows, cand) if self.half else cand != rows

    def _cell_capacity_for(self, count: int, n: int, factor: float, extra: int = 0) -> int:
        """Atoms-per-cell capacity for a max cell count (plus ``extra``), or 0 (all pairs) when the
        stencil would hold as many padded candidates as there are atoms (e.g. 3 cells per side), which
        makes the cell list slower than the plain all-pairs candidate set."""
        if not self.use_cells:
            return 0
        cap = max(int(count * factor), count + 2) + int(extra)
        return 0 if self._all_pairs_cheaper(cap, n) else cap

    def _all_pairs_cheaper(self, cell_capacity: int, n: int) -> bool:
        """The XLA cell build pads every cell to ``cell_capacity``: with as many padded candidates as atoms the
        all-pairs build is cheaper. The numba cell build has no padding and a vectorised distance loop: its cells
        win even at 3 per side (LJ N = 1,000: 0.56 against 3.29 CPU ms for all pairs, the same lists)."""
        return self.rebuild_kernel != "numba" and len(self.stencil) * cell_capacity >= n

    def _max_cell_count(self, pos, box=None) -> int:
        if not self.use_cells:
            return 0
        _, cid = _cell_ids_compiled(self, jnp.asarray(pos), box)  # one compilation, not ~12 op by op (start-up)
        return int(np.max(np.bincount(np.asarray(cid), minlength=1)))

    def allocate(
        self, position, max_occupancy: int | None = None, cell_capacity: int | None = None, *, box=None, **kwargs
    ):
        """Allocate (outside jit) a list for ``position [N, 3]`` nm in ``box`` (default :attr:`box`; the grid must
        cover it, :meth:`covers`).

        Args:
          max_occupancy: neighbour capacity; default occupancy × capacity_multiplier (at least +4).
          cell_capacity: atoms per cell; default max count × capacity_multiplier (at least +2).
        """
        pos = jnp.asarray(position)
        box = self._box(pos.dtype, box)
        n = pos.shape[0]
        if cell_capacity is None:
            cell_capacity = self._cell_capacity_for(self._max_cell_count(pos, box), n, self.capacity_multiplier)
        if max_occupancy is None:
            occ = self._occupancy(pos, int(cell_capacity), box)
            max_occupancy = max(int(occ * self.capacity_multiplier), occ + 4)
        max_occupancy = int(min(max_occupancy, max(n - 1, 1)))
        # compiled once per builder, shapes and capacities (_rebuild_compiled): op by op 4.7 CPU s at N = 2,000, 2.2
        return _rebuild_compiled(self, pos, max_occupancy, int(cell_capacity), jnp.zeros((), jnp.int32) - 1, box)

    def _occupancy(self, pos, cell_capacity: int, box) -> int:
        """The largest neighbour count at ``pos`` in ``box`` (host int)."""
        return int(_occupancy_compiled(self, pos, cell_capacity, box))

    def _rebuild(self, pos, max_occupancy, cell_capacity, n_rebuilds, box):
        idx, occ, cell_overflow = self._build(pos, max_occupancy, cell_capacity, box)
        return CellNeighborList(
            idx=idx,
            reference_position=pos,
            overflow=(occ > max_occupancy) | cell_overflow,
            n_rebuilds=n_rebuilds + 1,
            box=box,
            max_occupancy=max_occupancy,
            cell_capacity=cell_capacity,
            fns=self,
        )

    def update(self, position, neighbors: CellNeighborList, **kwargs) -> CellNeighborList:
        """Rebuild (inside jit, via ``lax.cond``) only if a pair may have entered the listed range:
        the two largest displacements since the last build sum to more than the skin (in the list's box)."""
        d = minimum_image(position - neighbors.reference_position, neighbors.box.astype(position.dtype))
        moved = needs_rebuild(jnp.sum(d * d, -1), self.skin)

        def rebuild(nbr):
            new = self._rebuild(position, nbr.max_occupancy, nbr.cell_capacity, nbr.n_rebuilds, nbr.box)
            return dataclasses.replace(new, overflow=new.overflow | nbr.overflow)

        return jax.lax.cond(moved, rebuild, lambda nbr: nbr, neighbors)

    def rebox(self, neighbors: CellNeighborList, position, box) -> CellNeighborList:
        """The list moved to box ``box`` and rebuilt at ``position`` (jit-able, same capacities: no new compilation;
        overflow stays sticky). The caller keeps ``box`` inside what the grid serves (:meth:`covers`)."""
        box = jnp.asarray(box, neighbors.box.dtype)
        new = self._rebuild(position, neighbors.max_occupancy, neighbors.cell_capacity, neighbors.n_rebuilds, box)
        return dataclasses.replace(new, overflow=new.overflow | neighbors.overflow)

    def grow(
        self, neighbors: CellNeighborList, position, factor: float = 1.5, *, fit: bool = False
    ) -> CellNeighborList:
        """Reallocate at ``position`` (in the list's box) with both capacities grown by ``factor`` over what is
        needed now.

        The retry after an overflow must grow the capacity (reallocating at the old size can
        overflow again forever), so the cell capacity grows by at least a quarter (the callers pass the list at the
        start of the redone chunk, which need not show the overflow). ``fit=True``: a right-sizing of a list that did
        not overflow; both capacities follow the counts now and may shrink (a list allocated on a lattice, fitted
        in the fluid: :func:`dmd.runloop.fitted_neighbors`).
        """
        box = neighbors.box
        position = jnp.asarray(position)
        c = self._max_cell_count(position, box)
        n = int(jnp.shape(position)[0])
        # grow from the count now (growing the old, slack-carrying capacity by the factor would compound the slack),
        # yet by at least a quarter unless fitted (an overflow later in the chunk is not seen at these positions)
        cell_capacity = self._cell_capacity_for(c, n, factor)
        if cell_capacity and neighbors.cell_capacity and not fit:
            cell_capacity = max(cell_capacity, neighbors.cell_capacity + max(1, neighbors.cell_capacity // 4))
            cell_capacity = 0 if self._all_pairs_cheaper(cell_capacity, n) else cell_capacity
        occ = self._occupancy(position, cell_capacity, box)
        need = occ if fit else max(occ, neighbors.max_occupancy)  # fit: both capacities from the counts now
        max_occ = max(int(factor * need), occ + 4)
        if fit and occ + 4 <= neighbors.max_occupancy:  # never grown by a fit while it holds the count (+4)
            max_occ = min(max_occ, neighbors.max_occupancy)
        return self.allocate(position, max_occupancy=max_occ, cell_capacity=cell_capacity, box=box)


# compiled forms of the builder's host-side steps, the builder static: a bound method jitted anew at each call
# (jax.jit(self._build)) compiled again on every allocation, even for the same shapes
@functools.partial(jax.jit, static_argnums=0)
def _cell_ids_compiled(fns: CellNeighborListFns, pos, box):
    """:meth:`CellNeighborListFns._cell_ids`, compiled once per builder and shape."""
    return fns._cell_ids(pos, box)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _occupancy_compiled(fns: CellNeighborListFns, pos, cell_capacity: int, box):
    """The largest neighbour count (:meth:`CellNeighborListFns._build` without a list), compiled once per builder,
    shape and cell capacity."""
    return fns._build(pos, None, cell_capacity, box)[1]


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _rebuild_compiled(fns: CellNeighborListFns, pos, max_occupancy: int, cell_capacity: int, n_rebuilds, box):
    """:meth:`CellNeighborListFns._rebuild` as one compiled program (the builder and capacities static: builders with
    equal settings share it; new positions of the same shape compile nothing)."""
    return fns._rebuild(pos, max_occupancy, cell_capacity, n_rebuilds, box)


def cell_neighbor_list(
    box,
    cutoff: float,
    *,
    skin: float,
    capacity_multiplier: float = 1.25,
    half: bool = False,
    rebuild_kernel: str = "xla",
) -> CellNeighborListFns:
    """A :class:`CellNeighborListFns` for an orthorhombic or reduced triclinic box.

    Args:
      box: scalar or ``[3]`` box lengths, or ``[3, 3]`` reduced box vectors (rows), nm.
      cutoff: r_c, nm. skin: nm (rebuild when the two largest displacements sum past it).
      capacity_multiplier: slack of the allocated capacities. half: each pair once (:func:`half_pair_filter`).
      rebuild_kernel: "xla" or "numba" (:attr:`CellNeighborListFns.rebuild_kernel`).
    """
    key, args = box_key(box), (float(cutoff), float(skin), float(capacity_multiplier))
    return CellNeighborListFns(key, *args, half=bool(half), rebuild_kernel=rebuild_kernel)


def box_key(box) -> tuple:
    """A hashable box for :class:`CellNeighborListFns`: ``(Lx, Ly, Lz)`` for a scalar, ``[3]`` or diagonal box,
    else the rows of the ``[3, 3]`` box vectors as nested tuples (nm)."""
    b = np.asarray(box, np.float64)
    if b.ndim == 2 and not is_triclinic(b):
        b = np.diag(b)
    if b.ndim < 2:
        return tuple(float(x) for x in np.broadcast_to(b, (3,)))
    return tuple(tuple(float(x) for x in row) for row in b)
