"""Row-wise stream compaction of boolean masks without a scatter (the neighbour-list builds' last step).

:func:`compact_bits` packs a row's set bits' positions into the first slots of an output row from population counts
and running sums only (no cumsum + scatter: both are slow on XLA CPU), :func:`compact_rows` is the same on a bool
mask, :func:`pack_rows` packs a mask into 32-bit words, :func:`row_cumsum` is the exact small-integer running sum
they use. Split out of :mod:`dmd.neighbors` (docs/engine.md, "Neighbour lists").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["compact_bits", "compact_rows", "pack_rows", "row_cumsum"]


def row_cumsum(x):
    """Inclusive cumsum along axis 1 of an int ``[n, w]`` array >= 0 (exact for running sums < 2**24; "highest": no
    TF32 rounding on a GPU) by triangular matmuls, 32 columns a block plus one for the block totals: XLA CPU's
    ``jnp.cumsum`` is an O(w²) reduce-window, ``associative_scan`` slower (villin's [8867, 346] slots: 10.3 vs 6.1)."""
    (n, w), mm = x.shape, functools.partial(jnp.matmul, precision="highest")
    if w <= 32:
        return jnp.round(mm(x.astype(jnp.float32), jnp.triu(jnp.ones((w, w), jnp.float32)))).astype(jnp.int32)
    nb = -(-w // 32)
    xb = jnp.pad(x, ((0, 0), (0, nb * 32 - w))).astype(jnp.float32).reshape(n, nb, 32)
    inner = mm(xb, jnp.triu(jnp.ones((32, 32), jnp.float32)))  # [n, nb, 32] within each block
    carry = mm(inner[:, :, -1], jnp.triu(jnp.ones((nb, nb), jnp.float32), 1))  # sum of the blocks before
    return jnp.round(inner + carry[:, :, None]).astype(jnp.int32).reshape(n, nb * 32)[:, :w]


def _select_bit(word, rank):
    """Position (0-31, int32) of the ``rank``-th (from 0) set bit of each uint32 ``word`` (same shapes; the rank is
    below the word's popcount).

    Branch-free SWAR: per-byte popcounts and their running sums in one uint32, the byte from three compares, the bit
    from a 256 × 8 table (XLA CPU has no vector popcount: a binary search of popcounts ran scalar, ~10× slower)."""
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


# [256 · 8] int32: entry b · 8 + r is the position of the r-th set bit of byte b (0 where none)
_BYTE_SELECT = np.array([([i for i in range(8) if b >> i & 1] + [0] * 8)[:8] for b in range(256)], np.int32).ravel()


def pack_rows(mask):
    """``[n, K]`` bool → ``[n, ⌈K/32⌉]`` uint32: bit b of word j is ``mask[:, 32 j + b]`` (zero padded)."""
    n, k = mask.shape
    w = -(-k // 32)
    if w * 32 != k:
        mask = jnp.pad(mask, ((0, 0), (0, w * 32 - k)))
    return jnp.sum(
        mask.reshape(n, w, 32).astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32
    )


def compact_bits(bits, values, base, capacity: int, fill: int):
    """Row-wise stream compaction of packed masks: ``out[i, k] = values[base[i] + j]`` for the k-th set bit j of row i.

    Args:
      bits: ``[n, w]`` uint32 (:func:`pack_rows`). values: flat int32 ``[M]``. base: ``[n]`` int32, where row i's
        values start in ``values``. capacity: output width (static). fill: value of the slots past a row's count.

    Returns:
      ``(out [n, capacity] int32, total [n] int32)``: rows with more than ``capacity`` set bits are truncated (the
      caller compares ``total`` with ``capacity`` to detect overflow).

    Why not cumsum + scatter (the textbook compaction): on XLA CPU a scatter of n·K updates and a cumsum along K cost
    ~60 ms each at n = 8,000, K ≈ 1,000. Here a word's rank comes from population counts, and each output slot finds
    its word (compare against the per-row word prefix counts) and its bit (:func:`_select_bit`): only
    ``n × capacity`` gathers and element-wise integer work, no scatter.
    """
    n, w = bits.shape
    count = jax.lax.population_count(bits).astype(jnp.int32)
    incl = row_cumsum(count)
    total = incl[:, -1]
    slot = jnp.arange(capacity, dtype=jnp.int32)
    at_row = jnp.arange(n, dtype=jnp.int32)[:, None] * w
    if w > 48:  # long rows (force-field systems, K ~ 4,000): a running sum over slots of marks where each word ends
        # (a binary search costs log2(w) gathers per slot: 100 ms of a 230 ms villin + water compaction)
        # Each mark carries 1 (one more word before the slot) in the low `shift` bits and the word's set bits above
        # them, so one running sum gives both the slot's word and the set bits before that word (no prefix gather)
        shift = max(1, int(w).bit_length())  # word indices < w <= 2**shift
        assert 32 * w << shift < 2**31, "mask rows too long for the packed running sum"
        width = 32 * (capacity // 32 + 1)  # > capacity: room for the "past the end" slot
        ends = jnp.minimum(incl[:, :-1], capacity)  # slot at which the next word starts (capacity: past the end)
        inc = 1 + (count[:, :-1] << shift)
        marks = jnp.zeros((n, width), jnp.int32).at[jnp.arange(n)[:, None], ends].add(inc)
        exact = (capacity + 32 << shift) + w < 2**24  # float32 matmuls exact
        cumsum = row_cumsum if exact else functools.partial(jax.lax.associative_scan, jnp.add, axis=1)
        packed = cumsum(marks[:, :capacity])
        word_of = packed & ((1 << shift) - 1)
        rank = (slot[None, :] - (packed >> shift)).astype(jnp.uint32)
        # gathers through flat indices: XLA CPU runs take_along_axis (a batched gather) about 2x slower
        word = bits.reshape(-1)[(at_row + word_of).reshape(-1)].reshape(n, capacity)
    else:
        # slot's word = number of words whose inclusive count is <= slot, set bits before it = their counts: one
        # packed sum (1 in the low 6 bits, the count above), unrolled over words (an [n, capacity, w] reduce is ~20x
        # slower on XLA CPU); no prefix gather
        inc = 1 + (count << 6)
        packed = sum(jnp.where(incl[:, j : j + 1] <= slot[None, :], inc[:, j : j + 1], 0) for j in range(w - 1))
        packed = jnp.zeros((n, capacity), jnp.int32) + packed
        word_of = packed & 63
        rank = (slot[None, :] - (packed >> 6)).astype(jnp.uint32)
        word = bits.reshape(-1)[(at_row + word_of).reshape(-1)].reshape(n, capacity)
    col = word_of * 32 + _select_bit(word, rank)
    at = jnp.minimum(base[:, None] + col, values.shape[0] - 1)  # slots past a row's end: any in-range entry
    out = values[at.reshape(-1)].reshape(n, capacity)
    return jnp.where(slot[None, :] < total[:, None], out, fill), total


def compact_rows(mask, values, capacity: int, fill: int):
    """Row-wise stream compaction: ``out[i, k] = values[i, j]`` for the k-th True ``mask[i, j]``.

    Args:
      mask: ``[n, K]`` bool. values: ``[n, K]`` int32. capacity: output width (static).
      fill: value of the slots past a row's count.

    Returns:
      ``(out [n, capacity] int32, max_count)``; rows with more than ``capacity`` Trues are truncated
      (the caller compares ``max_count`` with ``capacity`` to detect overflow). See :func:`compact_bits`.
    """
    n, k = mask.shape
    base = jnp.arange(n, dtype=jnp.int32) * k
    out, total = compact_bits(pack_rows(mask), values.reshape(-1), base, capacity, fill)
    return out, jnp.max(total)
