"""The numba neighbour-list rebuild (dmd.forces.numba_neighbors) against the XLA builds of dmd.forces.neighbors.

Oracle: the XLA cell and all-pairs builds (themselves checked against brute force in tests/dmd/test_neighbors.py).
The numba kernels take the same distances in the same dtype and visit candidates in the same order, so the lists
must agree element for element, overflow bits included; the force-field exclusions (from OpenMM's exceptions) must
be absent from both. Bundled alanine dipeptide in 1,447-atom TIP3P-FB water (2.5 nm box).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.forces.neighbors import PartitionErrorCode, pair_neighbor_list
from dmd.openmm_system import openmm_system_from_pdb

ALA_WATER = os.path.join(os.path.dirname(__file__), "..", "..", "data", "alanine_dipeptide_water.pdb")
FF = ["amber14-all.xml", "amber14/tip3pfb.xml"]
TILTED = np.array([[2.5, 0.0, 0.0], [0.6, 2.5, 0.0], [-0.5, 0.7, 2.5]])  # reduced: |b_x| ≤ a_x/2, ...


@functools.lru_cache
def _water_case(cutoff):
    """``(n, positions [N, 3] nm, excluded pairs [P, 2])`` of the bundled solvated dipeptide."""
    import openmm.unit as unit

    omm, structure, _ = openmm_system_from_pdb(ALA_WATER, FF, "PME", cutoff)
    nb = next(f for f in omm.getForces() if type(f).__name__ == "NonbondedForce")
    excl = np.array([nb.getExceptionParameters(k)[:2] for k in range(nb.getNumExceptions())])
    return omm.getNumParticles(), structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer), excl


def _both(n, box, cutoff, skin, excl, **kw):
    return [
        pair_neighbor_list(n, box, cutoff, skin, excl, full=False, rebuild_kernel=k, occupancy_multiplier=1.1, **kw)
        for k in ("xla", "numba")
    ]


@pytest.mark.parametrize(
    "box, cutoff, skin, cells",
    [
        (np.full(3, 2.5), 0.5, 0.1, True),  # 7 cells of 0.35 nm per edge (subdivision 2): the cell build
        (TILTED, 0.5, 0.1, True),  # triclinic: cells tile fractional coordinates, the same kernel
        (np.full(3, 2.5), 0.9, 0.2, False),  # 1.1 nm: under 5 half-cells per edge, the all-pairs build
        (TILTED, 0.9, 0.2, False),
    ],
)
def test_numba_rebuild_lists_what_the_xla_build_lists(box, cutoff, skin, cells):
    n, pos, excl = _water_case(cutoff)
    rng = np.random.default_rng(5)
    with jax.enable_x64(False):
        x0 = jnp.asarray(pos, jnp.float32)
        x1 = x0 + jnp.asarray(0.08 * rng.standard_normal(pos.shape), jnp.float32)  # past the skin: rebuilt
        lists, squeezed = [], []
        for fns in _both(n, box, cutoff, skin, excl):
            nb = fns.allocate(x0)
            m = nb.max_occupancy // 2
            short = nb.set(idx=nb.idx[:, :m], max_occupancy=m)
            update = jax.jit(lambda x, nb: nb.update(x))
            lists.append((nb, update(x1, nb), update(x1, short)))  # short: rows past the capacity, first ones kept
            squeezed.append(update(x1 * 0.8 + 0.1, nb))  # 1.95x denser: cells and rows past their capacities
    (xla, numba) = lists
    assert bool(xla[0].cell_list_capacity) == cells and numba[0].max_occupancy == xla[0].max_occupancy
    for a, b in zip(xla, numba, strict=True):
        np.testing.assert_array_equal(np.asarray(a.idx), np.asarray(b.idx))  # element for element
        assert int(a.error.code) == int(b.error.code)
    assert not int(numba[1].error.code) and int(numba[2].error.code) == PartitionErrorCode.NEIGHBOR_LIST_OVERFLOW
    assert not np.array_equal(np.asarray(numba[0].idx), np.asarray(numba[1].idx))  # the update did rebuild
    # an overflowing cell drops atoms from the XLA build's candidates (not from numba's): both flag it
    cell_bit = PartitionErrorCode.CELL_LIST_OVERFLOW if cells else 0
    assert [int(s.error.code) & cell_bit for s in squeezed] == [cell_bit] * 2
    assert all(bool(s.did_buffer_overflow) for s in squeezed)
    # no excluded pair listed, although many are within cutoff + skin (bonded neighbours: 0.1-0.25 nm)
    idx = np.asarray(numba[1].idx)
    rows, cols = np.nonzero(idx < n)
    i, j = np.minimum(rows, idx[rows, cols]), np.maximum(rows, idx[rows, cols])
    listed = set(zip(i.tolist(), j.tolist(), strict=True))
    excluded = {(min(i, j), max(i, j)) for i, j in excl.tolist()}
    assert len(listed) > 30 * n and not listed & excluded and len(excluded) > n


def _listed_sum(x, nb):
    """A smooth function of positions through the list: Σ over listed pairs of exp(-|x_i - x_j|²)."""
    n = x.shape[0]
    nb = nb.update(x)
    xj = jnp.concatenate([x, jnp.zeros((1, 3), x.dtype)])[nb.idx]
    return jnp.sum(jnp.where(nb.idx < n, jnp.exp(-jnp.sum((x[:, None] - xj) ** 2, -1)), 0.0))


def test_numba_rebuild_under_grad_jvp_and_vmap_in_float64():
    # positions -> indices: no derivative flows through the rebuild; the derivatives through the list's use, the
    # rebuild inside vmap (replicas: one custom call per member) and float64 positions all work as the XLA build's
    n, pos, excl = _water_case(0.5)
    x = jnp.asarray(pos, jnp.float64)
    xs = jnp.stack([x + 0.2, x, x - 0.15])
    out = []
    for fns in _both(n, np.full(3, 2.5), 0.5, 0.1, excl):
        nb = fns.allocate(x)

        def all_three(x, nb):  # one compilation per kernel
            g = jax.grad(_listed_sum)(x + 0.2, nb)
            _, t = jax.jvp(lambda y: _listed_sum(y, nb), (x + 0.2,), (x,))
            return g, t, jax.vmap(lambda y: nb.update(y).idx)(xs)

        out.append((*jax.jit(all_three)(x, nb), nb.idx))
    for a, b in zip(*out, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert out[1][-1].dtype == jnp.int32 and float(jnp.max(jnp.abs(out[1][0]))) > 0


def test_short_run_with_numba_rebuilds_matches_the_xla_run():
    # 40 steps of noisy gradient moves through the list (float32, skin 0.05 nm: a rebuild inside the jitted scan's
    # lax.cond every few steps), once per kernel: equal lists, so equal trajectories. The engine's own BAOAB run with
    # either kernel gives identical positions too (benchmarks/bench_villin_step.py --kernels, docs/engine.md), and
    # the suite's engine tests run the numba default
    n, pos, excl = _water_case(0.5)
    noise = np.random.default_rng(2).standard_normal((40, n, 3)) * 0.002

    def step(c, dx):
        x, nb, n_rebuilds = c
        new = nb.update(x)
        x = x - 1e-3 * jax.grad(_listed_sum)(x, new) + dx  # downhill: pairs pushed apart
        return (x, new, n_rebuilds + jnp.any(new.reference_position != nb.reference_position)), None

    runs = []
    with jax.enable_x64(False):
        x0, dxs = jnp.asarray(pos, jnp.float32), jnp.asarray(noise, jnp.float32)
        for fns in _both(n, np.full(3, 2.5), 0.5, 0.05, excl):
            c = (x0, fns.allocate(x0), jnp.int32(0))
            x, nb, n_rebuilds = jax.jit(lambda c, d: jax.lax.scan(step, c, d)[0])(c, dxs)
            runs.append((np.asarray(x), int(n_rebuilds), bool(nb.did_buffer_overflow), np.asarray(nb.idx)))
    (xa, ra, oa, ia), (xb, rb, ob, ib) = runs
    assert ra == rb >= 5 and not oa and not ob
    np.testing.assert_array_equal(ia, ib)
    assert np.max(np.abs(xa - xb)) <= 1e-6 and np.max(np.abs(xa - np.asarray(pos))) > 0.03
