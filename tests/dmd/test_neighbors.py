"""Cell neighbour lists (dmd.neighbors): the row-blocked cell build lists exactly the pairs within
cutoff + skin, and the popcount stream compaction equals a plain per-row compaction."""

import jax.numpy as jnp
import numpy as np

from dmd import models
from dmd.neighbors import cell_neighbor_list, compact_rows


def test_compact_rows_equals_numpy_per_row_compaction():
    rng = np.random.default_rng(0)
    for k, p in ((40, 0.3), (1100, 0.08), (2000, 0.02)):  # one word, the unrolled word search, the binary search
        mask = rng.random((50, k)) < p
        values = rng.integers(0, 10_000, size=(50, k)).astype(np.int32)
        cap = int(mask.sum(1).max())
        out, max_count = compact_rows(jnp.asarray(mask), jnp.asarray(values), cap, -1)
        ref = np.full((50, cap), -1)
        for i in range(50):  # exact integer bookkeeping: must match element for element
            ref[i, : mask[i].sum()] = values[i, mask[i]]
        assert int(max_count) == cap
        np.testing.assert_array_equal(np.asarray(out), ref)


def test_cell_list_build_lists_exactly_the_pairs_in_range():
    # 2,000 atoms: 4 cells per side, so the cell path runs (27 × cell capacity < N) in several row blocks;
    # every listed pair must be within cutoff + skin and every such pair listed (exact set equality)
    lj = models.lj_fluid(2000, density=0.8, dtype=jnp.float32, seed=3)
    fns = lj.neighbor_fn
    assert fns.use_cells
    nbr = fns.allocate(lj.positions)
    assert nbr.cell_capacity > 0 and 27 * nbr.cell_capacity < 2000
    pos = np.asarray(lj.positions, np.float64)
    box = np.asarray(fns.box)
    d = pos[:, None] - pos[None]
    d -= box * np.round(d / box)
    r2 = np.sum(d * d, -1)
    idx = np.asarray(nbr.idx)
    # float32 distances on the list side: pairs within 1e-5 nm of the list radius may fall either way
    margin = 2 * fns.list_cutoff * 1e-5
    for i in range(0, 2000, 7):
        listed = set(idx[i][idx[i] < 2000].tolist())
        want = set(np.nonzero((r2[i] < (fns.list_cutoff - margin) ** 2) & (np.arange(2000) != i))[0].tolist())
        maybe = set(np.nonzero(r2[i] < (fns.list_cutoff + margin) ** 2)[0].tolist()) - {i}
        assert want <= listed <= maybe, i
    assert not bool(nbr.did_buffer_overflow)
    # the stand-alone factory gives the same list for the same positions
    again = cell_neighbor_list(box, fns.cutoff, skin=fns.skin).allocate(lj.positions)
    np.testing.assert_array_equal(np.sort(np.asarray(again.idx), 1), np.sort(idx, 1))
