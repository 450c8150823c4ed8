"""dmd.system.System: a neighbour list allocated unbuilt (``build=False``, issue 20 start-up) is the list the first
``update`` builds, equal to one built at allocation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.forces.neighbors import pair_neighbor_list
from dmd.system import System


@pytest.mark.parametrize(
    "box",
    [
        np.array([4.0, 4.2, 3.9]),  # ≥ 3 cells of cutoff + skin per edge: the cell-list build
        np.array([[3.0, 0.0, 0.0], [0.8, 3.1, 0.0], [-0.6, 0.7, 3.2]]),  # triclinic, 2 cells: all-pairs build
    ],
)
def test_unbuilt_list_is_built_by_its_first_update(box):
    rng = np.random.default_rng(3)
    n = 1500
    frac = rng.random((n, 3))
    pos = jnp.asarray(frac @ (np.diag(box) if box.ndim == 1 else box), jnp.float32)
    excl = np.stack([np.arange(0, n - 1, 2), np.arange(1, n, 2)], 1)  # exclusions are kept out either way
    fns = pair_neighbor_list(n, box, cutoff=0.9, skin=0.2, excluded_pairs=excl)
    system = System(lambda p, x, **kw: 0.0, {}, {}, np.ones(n), pos, box=box, neighbor_fn=fns)
    built = system.allocate_neighbors(pos)
    lazy = system.allocate_neighbors(pos, build=False)
    assert lazy.max_occupancy == built.max_occupancy and lazy.cell_list_capacity == built.cell_list_capacity
    assert np.all(np.asarray(lazy.idx) == n)  # empty until updated
    updated = jax.jit(lambda nb, x: nb.update(x))(lazy, pos)
    assert not bool(updated.did_buffer_overflow)
    np.testing.assert_array_equal(np.asarray(updated.reference_position), np.asarray(pos))
    rows = lambda nb: [set(r[r < n].tolist()) for r in np.asarray(nb.idx)]  # noqa: E731
    assert rows(updated) == rows(built)
    assert sum(map(len, rows(built))) > 10 * n  # a real list (≈ 60 neighbours per atom at this density)
