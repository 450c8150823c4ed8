"""Cell neighbour lists (dmd.neighbors, dmd.forces.neighbors): the row-blocked cell builds list exactly the pairs
within cutoff + skin (less exclusions; orthorhombic and triclinic boxes; at allocation and on a rebuild inside jit);
the compaction itself: tests/dmd/test_compaction.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.forces.neighbors import pair_neighbor_list
from dmd.neighbors import cell_neighbor_list


@pytest.mark.parametrize("half", [False, True])
def test_cell_list_build_lists_exactly_the_pairs_in_range(half):
    # 2,000 atoms: 4 cells per side, so the cell path runs (27 × cell capacity < N) in several row blocks;
    # every listed pair must be within cutoff + skin and every such pair listed (exact set equality); a half list
    # holds the pairs its parity rule puts in the row, so each pair is listed exactly once
    lj = models.lj_fluid(2000, density=0.8, dtype=jnp.float32, seed=3, half_list=half)
    fns = lj.neighbor_fn
    assert fns.use_cells and fns.half == half  # half_list=False is the default
    nbr = fns.allocate(lj.positions)
    assert nbr.cell_capacity > 0 and 27 * nbr.cell_capacity < 2000 and nbr.full != half
    j = np.arange(2000)
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
        row = np.where((i + j) % 2 == 0, j > i, j < i) if half else j != i
        want = set(np.nonzero((r2[i] < (fns.list_cutoff - margin) ** 2) & row)[0].tolist())
        maybe = set(np.nonzero((r2[i] < (fns.list_cutoff + margin) ** 2) & row)[0].tolist())
        assert want <= listed <= maybe, i
    assert not bool(nbr.did_buffer_overflow)
    # the stand-alone factory gives the same list for the same positions
    again = cell_neighbor_list(box, fns.cutoff, skin=fns.skin, half=half).allocate(lj.positions)
    np.testing.assert_array_equal(np.sort(np.asarray(again.idx), 1), np.sort(idx, 1))


def _brute_force_rows(pos, box, r_list, rows, excluded):
    """Partners of each atom in ``rows`` within ``r_list`` (nm) of any periodic image, float64, searching all 27
    neighbouring lattice shifts (independent of dmd.space's minimum image), minus ``excluded`` pairs; and the same
    with the radius widened and narrowed by a float32 margin."""
    b = np.diag(box) if box.ndim == 1 else box
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ b  # [27, 3]
    margin = 4 * r_list * 1e-6  # float32 distances on the list side: pairs this close to the radius may go either way
    out = []
    for i in rows:
        d = pos[None, :, :] - pos[i][None, None, :] + shifts[:, None, :]
        r = np.sqrt(np.min(np.sum(d * d, -1), 0))
        r[i] = np.inf
        r[list(excluded.get(i, ()))] = np.inf
        out.append((set(np.nonzero(r < r_list - margin)[0]), set(np.nonzero(r < r_list + margin)[0])))
    return out


@pytest.mark.parametrize(
    "box",
    [
        np.array([3.3, 3.1, 3.0]),
        np.array([[3.3, 0.0, 0.0], [0.9, 3.1, 0.0], [-1.1, 0.8, 3.0]]),  # reduced triclinic: cells in fractional space
    ],
)
def test_force_field_cell_rebuild_lists_exactly_the_pairs_in_range_less_exclusions(box):
    # water-like density (~100 atoms/nm³), 0.5 nm cutoff + 0.1 nm skin: 5+ cells per edge, so the cell build runs;
    # exclusions as a force field has them (bonded neighbours i±1, i±2 along chains, a few far "disulfide" pairs)
    rng = np.random.default_rng(11)
    n = 3000
    b = np.diag(box) if box.ndim == 1 else box
    pos = (rng.random((n, 3)) @ b).astype(np.float32)
    near = [(i, i + d) for i in range(0, n - 2) for d in (1, 2) if i % 10 < 8]
    far = [(int(i), int(j)) for i, j in rng.integers(0, n, (40, 2)) if i != j]
    excl = np.array(near + far)
    excluded = {}
    for i, j in excl:
        excluded.setdefault(i, set()).add(j)
        excluded.setdefault(j, set()).add(i)
    fns = pair_neighbor_list(n, box, cutoff=0.5, skin=0.1, excluded_pairs=excl)
    nbr = fns.allocate(jnp.asarray(pos))
    assert nbr.cell_list_capacity  # the cell build, not the all-pairs sweep
    # move every atom by 0.06 nm (two largest displacements sum past the skin): the update rebuilds inside jit
    moved = pos + (0.06 * rng.standard_normal((n, 3)) / np.sqrt(3)).astype(np.float32)
    upd = jax.jit(lambda nb, x: nb.update(x))(nbr, jnp.asarray(moved))
    assert not bool(upd.did_buffer_overflow)
    np.testing.assert_array_equal(np.asarray(upd.reference_position), moved)
    for nb, x in ((nbr, pos), (upd, moved)):
        idx = np.asarray(nb.idx)
        rows = range(0, n, 11)
        ref = _brute_force_rows(x.astype(np.float64), box, 0.6, rows, excluded)
        for i, (want, maybe) in zip(rows, ref, strict=True):
            listed = set(idx[i][idx[i] < n].tolist())
            assert len(listed) == int(np.sum(idx[i] < n))  # no duplicates
            assert want <= listed <= maybe, i
        assert np.mean(np.sum(idx < n, 1)) > 50  # a real list (≈ 85 within 0.6 nm at this density, less exclusions)


def test_short_rows_get_at_least_the_minimum_headroom():
    # a 1.1x multiplier leaves a ~25-pair row 3 free slots: the 188-atom peptide fit overflowed once a round and
    # compiled its chunk again (+17 CPU s in a CI test); OpenMM systems ask for 16 free slots at least
    rng = np.random.default_rng(3)
    box = np.array([2.0, 2.0, 2.0])
    pos = jnp.asarray((rng.random((200, 3)) * box).astype(np.float32))  # 25 atoms/nm³: rows of ~9 within 0.45 nm
    plain = pair_neighbor_list(200, box, cutoff=0.35, skin=0.1, occupancy_multiplier=1.1).allocate(pos)
    floor = pair_neighbor_list(200, box, cutoff=0.35, skin=0.1, occupancy_multiplier=1.1, min_headroom=16)
    longest = int(np.max(np.sum(np.asarray(plain.idx) < 200, axis=1)))
    assert plain.max_occupancy == int(1.1 * longest) + 1 < longest + 16
    assert floor.allocate(pos).max_occupancy == longest + 16
    dense = jnp.asarray((rng.random((500, 3)) * box).astype(np.float32))  # 62.5 atoms/nm³: rows of ~260 within 1 nm
    big = pair_neighbor_list(500, box, cutoff=0.9, skin=0.1, occupancy_multiplier=1.1, min_headroom=16)
    big = big.allocate(dense)
    wide = int(np.max(np.sum(np.asarray(big.idx) < 500, axis=1)))
    assert wide > 160 and big.max_occupancy == int(1.1 * wide) + 1  # long rows: the multiplier rules


@pytest.mark.parametrize("n", [2000, 300])  # 2,000: the cell path (cell capacity > 0); 300: all pairs (capacity 0)
def test_allocate_is_compiled_once_and_equals_the_op_by_op_build(n, jax_compiles):
    lj = models.lj_fluid(n, density=0.8, dtype=jnp.float32, seed=3)
    fns = lj.neighbor_fn
    nbr = fns.allocate(lj.positions)
    assert (nbr.cell_capacity > 0) == (n == 2000)
    # the op-by-op build allocate() ran before it was compiled: the same list element for element (integer indices
    # and flags: exact), the same capacities
    eager = fns._rebuild(lj.positions, nbr.max_occupancy, nbr.cell_capacity, jnp.zeros((), jnp.int32) - 1, nbr.box)
    for a, b in zip(jax.tree_util.tree_leaves(nbr), jax.tree_util.tree_leaves(eager), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # new positions of the same shape: no compilation at all (it was ~1.2 CPU s of recompiling per call at 2,000)
    moved = jax.block_until_ready(lj.positions + 0.01)
    with jax_compiles() as records:
        again = fns.allocate(moved)
    assert not [r.getMessage() for r in records if "Compiling" in r.getMessage()]
    assert again.max_occupancy == nbr.max_occupancy and not bool(again.did_buffer_overflow)


def test_grow_fits_the_cell_capacity_on_request_and_always_grows_after_overflow():
    # 2,000 LJ atoms (4 cells per side): grow(fit=True) sizes the cell capacity from the count now (it may shrink: the
    # LJ benchmark's lattice-sized list in the fluid); a plain grow (the retry after an overflow) grows it by at least
    # a quarter even where these positions fit; every list holds the same pairs (sets per row)
    lj = models.lj_fluid(2000, density=0.8, dtype=jnp.float32, seed=3)
    fns = lj.neighbor_fn
    c = fns._max_cell_count(lj.positions)
    want = np.sort(np.asarray(fns.allocate(lj.positions).idx), 1)
    roomy = fns.allocate(lj.positions, cell_capacity=c + 10)
    fitted = fns.grow(roomy, lj.positions, factor=1.15, fit=True)
    assert fitted.cell_capacity == max(int(c * 1.15), c + 2) < c + 10
    assert fns.grow(roomy, lj.positions, factor=1.15).cell_capacity >= c + 10 + (c + 10) // 4
    small = fns.allocate(lj.positions, cell_capacity=c - 3)
    assert bool(small.overflow)  # a cell holds more atoms than the capacity: the list is incomplete
    regrown = fns.grow(small, lj.positions, factor=1.15)
    assert regrown.cell_capacity >= max(int(c * 1.15), c - 3 + (c - 3) // 4)
    assert fitted.max_occupancy <= roomy.max_occupancy  # a fit never grows a capacity that holds the count
    width = int(np.max(np.sum(want < lj.n_atoms, 1)))  # the most neighbours listed; the rest of a row is padding
    for nbr in (roomy, fitted, regrown):
        assert not bool(nbr.overflow)
        got = np.sort(np.asarray(nbr.idx), 1)
        assert np.all(got[:, width:] == lj.n_atoms)
        np.testing.assert_array_equal(got[:, :width], want[:, :width])
