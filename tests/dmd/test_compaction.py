"""Row-wise stream compaction (dmd.compaction): the popcount compaction equals a plain per-row compaction element for
element, in every regime of its running sums."""

import jax
import jax.numpy as jnp
import numpy as np

from dmd.compaction import compact_rows


def test_compact_rows_equals_numpy_per_row_compaction():
    rng = np.random.default_rng(0)
    # one word, the unrolled word search, the marked word ends; dense rows (p = 0.9) put the selected bit in every
    # byte of a word at every rank (the SWAR select's byte choice and table)
    # capacity at the longest row, past it (fill slots) or below it (rows truncated: the packed running sum of long
    # rows clips word ends at the capacity); the running sums by float32 matmuls in 32-column blocks (1600 columns)
    for k, p, extra in ((40, 0.3, 0), (1100, 0.08, 0), (2000, 0.02, -5), (64, 0.9, 0), (1600, 0.9, 7)):
        _check_compaction(rng, 50, k, p, extra, compact_rows)


def test_compact_rows_past_float32_exact_running_sums():
    # 1,025 words and ~8,500 slots: the packed running sum would pass 2**24 ((8,532 << 11) > 2**24), so the
    # compaction sums by an integer scan instead of float32 matmuls; the same per-row compaction
    cap = _check_compaction(np.random.default_rng(1), 8, 32800, 0.26, 0, jax.jit(compact_rows, static_argnums=(2, 3)))
    assert ((cap + 32) << 11) + 1025 >= 2**24  # the scan's regime (dmd.compaction.compact_bits)


def _check_compaction(rng, rows, k, p, extra, compact):
    """The compaction of a random ``[rows, k]`` mask (density p) at capacity longest row + ``extra`` equals numpy's
    per-row compaction element for element; returns the capacity."""
    mask = rng.random((rows, k)) < p
    values = rng.integers(0, 10_000, size=(rows, k)).astype(np.int32)
    most = int(mask.sum(1).max())
    cap = most + extra
    out, max_count = compact(jnp.asarray(mask), jnp.asarray(values), cap, -1)
    ref = np.full((rows, cap), -1)
    for i in range(rows):  # exact integer bookkeeping: must match element for element
        kept = values[i, mask[i]][:cap]
        ref[i, : len(kept)] = kept
    assert int(max_count) == most
    np.testing.assert_array_equal(np.asarray(out), ref)
    return cap
