"""A cell-list neighbour list that rebuilds only when needed, with explicit capacities.

Same contract as ``jax_md.partition.NeighborList`` (dense format) so energy functions and the run
loop treat both alike: ``idx: [N, capacity] int32`` with padding value N (each pair listed from
both atoms), ``reference_position``, ``update(pos)``, ``did_buffer_overflow``, ``max_occupancy``.

Differences from jax-md, each for speed or safety (docs/engine.md, "Neighbour lists"):

* The rebuild test (two largest displacements sum past the skin, :func:`needs_rebuild`) runs inside the jitted step with
  ``lax.cond``: no host round trip per step, and a rebuild counter ``n_rebuilds`` is carried as data
  so tests and benchmarks can count rebuilds.
* The cell list is a sort by cell id plus per-cell start offsets (no scatter into a padded cell
  buffer); its per-cell capacity and the neighbour capacity are separate explicit sizes, so a retry
  after overflow grows only what overflowed (jax-md's ``extra_capacity`` also inflates the cell list
  and slows every step).
* When the 27-cell stencil would hold as many padded candidates as there are atoms (3 cells per
  side, e.g. N = 1,000 at ρσ³ = 0.8), the candidates are all atoms instead (``cell_capacity = 0``),
  with distances from a broadcast rather than a gather.
* Overflow is data (``overflow`` flag, sticky until reallocation): the run loop detects it after a
  chunk, grows the capacity with :meth:`CellNeighborListFns.grow` and redoes the chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dmd.space import is_triclinic, minimum_image, perpendicular_widths, to_fractional

__all__ = ["CellNeighborList", "CellNeighborListFns", "box_key", "cell_neighbor_list", "compact_rows", "needs_rebuild"]


def needs_rebuild(disp2, skin: float):
    """True when a list built with ``skin`` may miss a pair, given squared displacements ``disp2 [N]`` since the
    build: a pair distance changes by at most |d_i| + |d_j|, so the two largest displacements are tested against
    the skin (never more often than the usual max |d| > skin/2 test; on large fluids about as often)."""
    i1 = jnp.argmax(disp2)
    d1 = jnp.sqrt(disp2[i1])
    d2 = jnp.sqrt(jnp.max(disp2.at[i1].set(0)))
    return d1 + d2 > skin


def _inclusive_cumsum_small(x):
    """Inclusive cumsum along axis 1 of a small int ``[n, w]`` array, as a matmul with a triangular matrix:
    XLA CPU lowers ``jnp.cumsum`` to an O(w²) reduce-window that is several times slower here."""
    w = x.shape[1]
    tri = jnp.triu(jnp.ones((w, w), jnp.float32))
    return jnp.round(x.astype(jnp.float32) @ tri).astype(jnp.int32)  # exact: counts < 2**24


def _inclusive_cumsum_blocked(x, width: int = 32):
    """Inclusive cumsum along axis 1 of a small int ``[n, L]`` array, L a multiple of ``width`` (entries summing
    below 2**24): triangular matmuls within blocks of ``width`` columns, then over the block totals (see
    :func:`_inclusive_cumsum_small`)."""
    n, length = x.shape
    nb = length // width
    inner = _inclusive_cumsum_small(x.reshape(n * nb, width)).reshape(n, nb, width)
    before = _inclusive_cumsum_small(inner[..., -1]) - inner[..., -1]  # exclusive sum of the earlier blocks
    return (inner + before[..., None]).reshape(n, length)


def _select_bit(word, rank):
    """Position (0-31, int32) of the ``rank``-th (from 0) set bit of each uint32 ``word`` (same shapes; the rank is
    below the word's popcount).

    Branch-free SWAR: per-byte popcounts and their running sums in one uint32, the byte holding the bit from three
    compares, the bit within that byte from a 256 × 8 table. XLA CPU has no vector popcount, so the textbook binary
    search (five popcounts of a masked word) ran scalar: ~90 ms of a villin + water rebuild, this about a tenth."""
    m1, m2, m4 = jnp.uint32(0x55555555), jnp.uint32(0x33333333), jnp.uint32(0x0F0F0F0F)
    x = word - ((word >> 1) & m1)
    x = (x & m2) + ((x >> 2) & m2)
    x = (x + (x >> 4)) & m4  # byte j: popcount of byte j
    cum = x * jnp.uint32(0x01010101)  # byte j: popcount of bytes 0..j (at most 32: no carry between bytes)
    ff = jnp.uint32(0xFF)
    byte = sum(((cum >> jnp.uint32(8 * j)) & ff) <= rank for j in range(3)).astype(jnp.uint32)
    shift = jnp.uint32(8) * byte
    before = ((cum << jnp.uint32(8)) >> shift) & ff  # set bits in the bytes below
    in_byte = (word >> shift) & ff
    at = jnp.minimum(in_byte * jnp.uint32(8) + (rank - before), jnp.uint32(2047))  # past a row's end: any entry
    bit = jnp.asarray(_BYTE_SELECT)[at.astype(jnp.int32)]
    return shift.astype(jnp.int32) + bit


def _byte_select_table() -> np.ndarray:
    """``[256 · 8]`` int32: entry ``b · 8 + r`` is the position of the r-th set bit of byte b (0 where none)."""
    table = np.zeros((256, 8), np.int32)
    for b in range(256):
        ones = [i for i in range(8) if b >> i & 1]
        table[b, : len(ones)] = ones
    return table.reshape(-1)


_BYTE_SELECT = _byte_select_table()


def compact_rows(mask, values, capacity: int, fill: int):
    """Row-wise stream compaction: ``out[i, k] = values[i, j]`` for the k-th True ``mask[i, j]``.

    Args:
      mask: ``[n, K]`` bool. values: ``[n, K]`` int32. capacity: output width (static).
      fill: value of the slots past a row's count.

    Returns:
      ``(out [n, capacity] int32, max_count)``; rows with more than ``capacity`` Trues are truncated
      (the caller compares ``max_count`` with ``capacity`` to detect overflow).

    Why not cumsum + scatter (the textbook compaction): on XLA CPU a scatter of n·K updates and a
    cumsum along K cost ~60 ms each at n = 8,000, K ≈ 1,000. Here the mask is packed into 32-bit words,
    a word's rank comes from population counts, and each output slot finds its word (compare against
    the per-row word prefix counts) and its bit (:func:`_select_bit`): only ``n × capacity`` gathers and
    element-wise integer work, no scatter.
    """
    n, k = mask.shape
    w = -(-k // 32)
    if w * 32 != k:
        mask = jnp.pad(mask, ((0, 0), (0, w * 32 - k)))
    bits = jnp.sum(
        mask.reshape(n, w, 32).astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32
    )
    count = jax.lax.population_count(bits).astype(jnp.int32)
    incl = _inclusive_cumsum_small(count)
    total = incl[:, -1]
    slot = jnp.arange(capacity, dtype=jnp.int32)
    # word of each slot = number of words whose inclusive count is <= slot (the last word needs no test);
    # unrolled over words: XLA CPU runs an [n, capacity, w] compare-and-reduce over w > 32 some 20x slower
    if w == 1:
        word_of = jnp.zeros((n, capacity), jnp.int32)
    elif w <= 48:
        word_of = sum((incl[:, j : j + 1] <= slot[None, :]).astype(jnp.int32) for j in range(w - 1))
    else:  # long rows (force-field systems, K ~ 4,000): mark where each word ends, then a running sum over slots
        # (a binary search costs log2(w) gathers per slot: 100 ms of a 230 ms villin + water compaction, this 17 ms)
        # (widths kept to whole blocks of 32: an XLA CPU pad or slice of these [rows, slots] arrays costs more)
        width = 32 * (capacity // 32 + 1)  # > capacity: room for the "past the end" slot
        ends = jnp.minimum(incl[:, :-1], capacity)  # slot at which the next word starts (capacity: past the end)
        marks = jnp.zeros((n, width), jnp.int32).at[jnp.arange(n)[:, None], ends].add(1)
        word_of = _inclusive_cumsum_blocked(marks)[:, :capacity]
    # gathers through flat indices: XLA CPU runs take_along_axis (a batched gather) about 2x slower
    at_word = (jnp.arange(n, dtype=jnp.int32)[:, None] * w + word_of).reshape(-1)
    word = bits.reshape(-1)[at_word].reshape(n, capacity)
    rank = (slot[None, :] - (incl - count).reshape(-1)[at_word].reshape(n, capacity)).astype(jnp.uint32)
    p = _select_bit(word, rank)
    col = jnp.minimum(word_of * 32 + p, k - 1)
    out = values.reshape(-1)[(jnp.arange(n, dtype=jnp.int32)[:, None] * k + col).reshape(-1)].reshape(n, capacity)
    return jnp.where(slot[None, :] < total[:, None], out, fill), jnp.max(total)


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
    """

    box: tuple  # see box_key
    cutoff: float
    skin: float
    capacity_multiplier: float = 1.25
    subdivision: int = 1

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
        box = self._box(pos.dtype, box)
        if self.triclinic:
            s = to_fractional(pos, box)
            frac = s - jnp.floor(s)
        else:
            frac = jnp.mod(pos, box) / box
        cxyz = jnp.clip(jnp.floor(frac * nc).astype(jnp.int32), 0, nc - 1)
        return cxyz, (cxyz[:, 0] * nc[1] + cxyz[:, 1]) * nc[2] + cxyz[:, 2]

    def _cells_used(self, cell_capacity) -> bool:
        return self.use_cells and cell_capacity > 0

    def _cell_table(self, pos, cell_capacity, box=None):
        """Per-cell candidates ``table [n_cells, 27·cell_capacity]`` (padding N), each atom's cell
        ``cid [N]``, and the cell-overflow flag (cells tile ``box``, default :attr:`box`, on the static grid)."""
        n = pos.shape[0]
        ncx, ncy, ncz = self.cells_per_side
        n_cells = ncx * ncy * ncz
        _, cid = self._cell_ids(pos, box)
        order = jnp.argsort(cid).astype(jnp.int32)
        counts = jnp.zeros((n_cells,), jnp.int32).at[cid].add(1)
        starts = jnp.cumsum(counts) - counts
        shifts = jnp.asarray(self.stencil)  # [S, 3]; S = 27 without subdivision
        nc = jnp.asarray(self.cells_per_side, jnp.int32)
        # candidates per *cell* (every atom of a cell shares them), then one row gather per atom:
        # n_cells·27·Cc index work instead of N·27·Cc
        cells = jnp.asarray(list(itertools.product(range(ncx), range(ncy), range(ncz))), jnp.int32)  # [n_cells, 3]
        nb = jnp.mod(cells[:, None, :] + shifts[None], nc)  # [n_cells, 27, 3]
        nb_id = (nb[..., 0] * ncy + nb[..., 1]) * ncz + nb[..., 2]  # [n_cells, 27]
        slot = jnp.arange(cell_capacity, dtype=jnp.int32)
        where_sorted = starts[nb_id][..., None] + slot  # [n_cells, 27, Cc]
        valid = slot < counts[nb_id][..., None]
        table = jnp.where(valid, order[jnp.clip(where_sorted, 0, n - 1)], n).reshape(n_cells, -1)
        # padded here to a whole number of 32-bit mask words (padding N: never a neighbour), once per cell: padding
        # each block's [rows, K] mask inside compact_rows instead cost ~2/3 of a villin + water rebuild (XLA CPU)
        k = table.shape[1]
        table = jnp.pad(table, ((0, 0), (0, -k % 32)), constant_values=n)
        return table, cid, jnp.max(counts) > cell_capacity

    def _candidates(self, pos, cell_capacity, box=None):
        """``[N, K]`` candidate neighbours (padding N) and the cell-overflow flag."""
        n = pos.shape[0]
        if not self._cells_used(cell_capacity):
            cand = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :], (n, n))
            return cand, jnp.zeros((), bool)
        table, cid, overflow = self._cell_table(pos, cell_capacity, box)
        return table[cid], overflow

    def map_row_blocks(
        self, pos, cell_capacity, per_block, *, box=None, pair_filter=None, block_entries=250_000, min_rows=32
    ):
        """Map ``per_block(rows [B], cand [B, K], mask [B, K])`` over blocks of rows of the cell candidates.

        ``cand`` holds each row's candidates from its cell's stencil (padding N) and ``mask`` those that are
        real atoms within cutoff + skin (cells and minimum image in ``box`` ``[3]`` or ``[3, 3]``, default :attr:`box`;
        the grid must cover it, :meth:`covers`) and pass
        ``pair_filter(rows [B, 1], cand)`` (default: not the row's own atom). A block has about
        ``block_entries`` candidates (at least ``min_rows`` rows), so its candidate, distance and mask
        temporaries stay in cache instead of streaming ``N × K`` arrays through memory several times.

        Returns ``(per_block outputs stacked over rows [N, ...], cell_overflow)``.
        """
        n = pos.shape[0]
        box = self._box(pos.dtype, box)
        table, cid, cell_overflow = self._cell_table(pos, cell_capacity, box)
        k = table.shape[1]
        rows_per = int(min(n, max(min_rows, block_entries // k)))
        n_blk = -(-n // rows_per)
        rows = jnp.arange(n_blk * rows_per, dtype=jnp.int32).reshape(n_blk, rows_per)
        cid_b = jnp.pad(cid, (0, n_blk * rows_per - n)).reshape(n_blk, rows_per)

        def block(args):
            r, c = args
            cand = table[c]
            real = cand < n
            keep = (cand != r[:, None]) if pair_filter is None else pair_filter(r[:, None], cand)
            dr = minimum_image(pos[jnp.minimum(r, n - 1)][:, None, :] - pos[jnp.where(real, cand, 0)], box)
            mask = real & keep & (r < n)[:, None] & (jnp.sum(dr * dr, -1) < self.list_cutoff**2)
            return per_block(r, cand, mask)

        out = jax.lax.map(block, (rows, cid_b))
        return jax.tree_util.tree_map(lambda a: a.reshape((n_blk * rows_per,) + a.shape[2:])[:n], out), cell_overflow

    def _build(self, pos, max_occupancy, cell_capacity, box=None):
        """(idx [N, max_occupancy], occupancy, cell_overflow) for positions ``pos`` in ``box`` (default :attr:`box`);
        with a cell list the rows are built in blocks of about 2.5·10⁵ candidates (:meth:`map_row_blocks`)."""
        n = pos.shape[0]
        box = self._box(pos.dtype, box)
        if not self._cells_used(cell_capacity):
            cand, cell_overflow = self._candidates(pos, cell_capacity, box)
            # columns padded to whole 32-bit mask words (padding N, never listed): a pad of the [N, N] mask inside
            # compact_rows is slow on XLA CPU (see _cell_table)
            cand = jnp.pad(cand, ((0, 0), (0, -n % 32)), constant_values=n)
            ok = (cand < n) & (cand != jnp.arange(n, dtype=jnp.int32)[:, None])
            pos_c = jnp.pad(pos, ((0, cand.shape[1] - n), (0, 0)))
            dr = minimum_image(pos[:, None, :] - pos_c[None], box)  # all pairs: broadcast instead of gathering N² rows
            mask = ok & (jnp.sum(dr * dr, -1) < self.list_cutoff**2)
            if max_occupancy is None:
                return None, jnp.max(jnp.sum(mask, axis=1, dtype=jnp.int32)), cell_overflow
            idx, occupancy = compact_rows(mask, cand, max_occupancy, n)
            return idx, occupancy, cell_overflow
        cap = 1 if max_occupancy is None else max_occupancy

        def per_block(r, cand, mask):
            idx, block_max = compact_rows(mask, cand, cap, n)
            return idx, jnp.broadcast_to(block_max, r.shape)  # per-row outputs: the block's max on every row

        (idx, count), cell_overflow = self.map_row_blocks(pos, cell_capacity, per_block, box=box)
        occupancy = jnp.max(count)
        if max_occupancy is None:
            return None, occupancy, cell_overflow
        return idx, occupancy, cell_overflow

    def _cell_capacity_for(self, count: int, n: int, factor: float, extra: int = 0) -> int:
        """Atoms-per-cell capacity for a max cell count (plus ``extra``), or 0 (all pairs) when the
        stencil would hold as many padded candidates as there are atoms (e.g. 3 cells per side), which
        makes the cell list slower than the plain all-pairs candidate set."""
        if not self.use_cells:
            return 0
        cap = max(int(count * factor), count + 2) + int(extra)
        return 0 if len(self.stencil) * cap >= n else cap

    def _max_cell_count(self, pos, box=None) -> int:
        if not self.use_cells:
            return 0
        _, cid = jax.jit(self._cell_ids)(jnp.asarray(pos), box)  # one compilation, not ~12 op by op (start-up)
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
        return self._rebuild(pos, max_occupancy, int(cell_capacity), jnp.zeros((), jnp.int32) - 1, box)

    def _occupancy(self, pos, cell_capacity: int, box) -> int:
        """The largest neighbour count at ``pos`` in ``box`` (host int)."""
        return int(jax.jit(self._build, static_argnums=(1, 2))(pos, None, cell_capacity, box)[1])

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

    def grow(self, neighbors: CellNeighborList, position, factor: float = 1.5) -> CellNeighborList:
        """Reallocate at ``position`` (in the list's box) with both capacities grown by ``factor`` over what is
        needed now.

        The retry after an overflow must grow the capacity (reallocating at the old size can
        overflow again forever).
        """
        box = neighbors.box
        position = jnp.asarray(position)
        c = self._max_cell_count(position, box)
        n = int(jnp.shape(position)[0])
        # grow from the count needed now (the old capacity already carries slack: growing it again by the full
        # factor would compound the slack on every retry), yet by at least a quarter: a cell that overflowed later in
        # the chunk (a lattice start melting) is not seen at these positions, and a retry at the same size loops
        cell_capacity = self._cell_capacity_for(c, n, factor)
        if cell_capacity and neighbors.cell_capacity:
            cell_capacity = max(cell_capacity, neighbors.cell_capacity + max(1, neighbors.cell_capacity // 4))
            cell_capacity = 0 if len(self.stencil) * cell_capacity >= n else cell_capacity  # all pairs: cheaper
        occ = self._occupancy(position, cell_capacity, box)
        max_occ = max(int(factor * max(occ, neighbors.max_occupancy)), occ + 4)
        return self.allocate(position, max_occupancy=max_occ, cell_capacity=cell_capacity, box=box)


def cell_neighbor_list(box, cutoff: float, *, skin: float, capacity_multiplier: float = 1.25) -> CellNeighborListFns:
    """A :class:`CellNeighborListFns` for an orthorhombic or reduced triclinic box.

    Args:
      box: scalar or ``[3]`` box lengths, or ``[3, 3]`` reduced box vectors (rows), nm.
      cutoff: r_c, nm. skin: nm (rebuild when the two largest displacements sum past it).
      capacity_multiplier: slack of the allocated capacities.
    """
    return CellNeighborListFns(box_key(box), float(cutoff), float(skin), float(capacity_multiplier))


def box_key(box) -> tuple:
    """A hashable box for :class:`CellNeighborListFns`: ``(Lx, Ly, Lz)`` for a scalar, ``[3]`` or diagonal box,
    else the rows of the ``[3, 3]`` box vectors as nested tuples (nm)."""
    b = np.asarray(box, np.float64)
    if b.ndim == 2 and not is_triclinic(b):
        b = np.diag(b)
    if b.ndim < 2:
        return tuple(float(x) for x in np.broadcast_to(b, (3,)))
    return tuple(tuple(float(x) for x in row) for row in b)
