"""The numba neighbour-list rebuild (:mod:`dmd.forces.numba_neighbors`) called from JAX: :class:`NumbaRows` for the
force-field lists (:func:`dmd.forces.neighbors.pair_neighbor_list`) and :func:`numba_rows` for a
:class:`dmd.neighbors.CellNeighborListFns` with ``rebuild_kernel="numba"`` (the LJ fluid's list; no exclusions).
numba itself is imported on first use."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dmd.forces.xla_custom_call import numba_call

__all__ = ["NumbaRows", "numba_rows"]

_HANDLERS = "dmd.forces.numba_neighbors:"  # the module of the numba rebuild's XLA FFI handlers


class NumbaRows:
    """The numba rebuild (:mod:`dmd.forces.numba_neighbors`, imported on first use) for one builder: called inside jit
    (an XLA custom call, :func:`dmd.forces.xla_custom_call.numba_call`; one call per member under vmap) it returns
    ``(idx, max_count, cell_overflow)`` as the XLA builds do; :meth:`host` runs it on concrete arrays (allocation, no
    XLA compilation of a build)."""

    def __init__(self, n_atoms, cells, r_list, full, excl, n_excl):
        self.n, self.cells, self.r_list, self.half = n_atoms, cells, r_list, not full
        self.excl, self.n_excl = np.ascontiguousarray(excl, np.int32), np.asarray(n_excl, np.int32)
        self.prep = jax.jit(cells.wrapped_cells)

    def _rows(self, pos, cid, box, capacity, cell_capacity):
        """One list from numpy arrays: ``(idx, max_count, cell_overflow)``; ``cid`` None: the all-pairs build."""
        from dmd.forces.numba_neighbors import all_pair_rows, cell_rows

        if cid is None:
            idx, counts = all_pair_rows(pos, box, self.r_list, self.half, capacity, *self._excl())
            return idx, counts.max(), False
        cells = self.cells
        idx, counts, largest = cell_rows(
            pos, cid, cells.cells_per_side, cells.stencil, box, self.r_list, self.half, capacity, *self._excl()
        )
        return idx, counts.max(), largest > cell_capacity

    def _excl(self):
        return self.excl, self.n_excl

    def host(self, pos, box, capacity, cell_capacity):
        """``(idx, max_count, cell_overflow)`` of concrete ``pos`` in ``box`` (numpy; capacity 0: counts only)."""
        if cell_capacity:
            wrapped, cid = (np.asarray(a) for a in self.prep(pos, box))
            return self._rows(wrapped, cid, np.asarray(box), capacity, cell_capacity)
        return self._rows(np.asarray(pos), None, np.asarray(box), capacity, cell_capacity)

    def __call__(self, pos, box, capacity, cell_capacity):
        # positions -> integer indices: no derivative flows through the list (stop_gradient: jvp/grad pass it by)
        pos, box = jax.lax.stop_gradient(pos), jax.lax.stop_gradient(box)
        n, dt = self.n, pos.dtype
        box3 = jnp.diag(box) if box.ndim == 1 else box
        rl2 = np.asarray(self.r_list**2, dt)  # compared in the positions' dtype, as XLA does with a Python float
        i32 = functools.partial(np.asarray, dtype=np.int32)
        idx, count = jax.ShapeDtypeStruct((n, capacity), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32)
        kind = "f64" if dt == jnp.float64 else "f32"
        if not cell_capacity:
            name = f"dmd_all_pair_rows_{kind}_v1"
            args = (pos, box3, rl2, i32([self.half, box.ndim == 1]), self.excl, self.n_excl)
            idx, max_count = numba_call(name, _HANDLERS + f"all_pair_rows_handler_{kind}", (idx, count), *args)
            return idx, max_count, jnp.zeros((), bool)
        cells = self.cells
        wrapped, cid = cells.wrapped_cells(pos, box)
        args = (wrapped, cid, i32(cells.cells_per_side), i32(cells.stencil), box3, rl2, i32(self.half))
        name = f"dmd_cell_rows_{kind}_v1"
        out = numba_call(name, _HANDLERS + f"cell_rows_handler_{kind}", (idx, count, count), *args, *self._excl())
        idx, max_count, largest = out
        return idx, max_count, largest > cell_capacity


@functools.lru_cache(maxsize=32)
def numba_rows(cells, n_atoms: int) -> NumbaRows:
    """The numba rebuild of a :class:`dmd.neighbors.CellNeighborListFns` ``cells`` with no exclusions, one per builder
    and size (the excluded-partner table is one padding column)."""
    excl = np.full((n_atoms, 1), n_atoms, np.int32)
    return NumbaRows(n_atoms, cells, cells.list_cutoff, not cells.half, excl, np.zeros(n_atoms, np.int32))
