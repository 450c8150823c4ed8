"""The numba rebuild called from JAX (dmd.forces.numba_rows) on the LJ fluid's list, and the LJ fluid on numba kernels
(dmd.models.lj_fluid's defaults on a CPU: the numba LJ pair kernel over a half list and the numba cell rebuild)
against the XLA kernels it replaced (full list, XLA row sums, XLA cell build). The force-field lists' use of the
same rebuild is tested in test_numba_neighbors.py.

Oracles: the XLA kernels of the same System (themselves checked against OpenMM in float64, tests/dmd/test_models.py)
and, for the lists, the XLA builds element for element (same distances in the same dtype, same candidate order).
A 2,000-atom fluid (ρσ³ = 0.8, r_c 2.5σ, skin 0.3σ: 4 cells per side), 1,000 (3 per side) and 300 (2 per side: the
all-pairs build), after 100 BAOAB steps from the lattice.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.integrators import make_integrator

SIG, EPS = models.ARGON["sigma"], models.ARGON["epsilon"]
XLA = dict(half_list=False, pair_kernel="xla", rebuild_kernel="xla")
LJ_CALL, CELL_CALL, ALL_PAIRS_CALL = "dmd_lj_pairs_v1", "dmd_cell_rows_f32_v1", "dmd_all_pair_rows_f32_v1"
F32_ULP = 2.0**-24


def _fluid(n, dtype=jnp.float32, **kw):
    return models.lj_fluid(n, density=0.8, cutoff=2.5 * SIG, skin=0.3 * SIG, dtype=dtype, **kw)


@functools.lru_cache
def _case(n):
    """(auto system, XLA system, fluid positions)."""
    auto, xla = _fluid(n), _fluid(n, **XLA)
    integ = make_integrator("baoab", xla, dt=0.01, temperature=EPS / KB_KJ_PER_MOL_K, friction=1.0)
    st = integ.init(jax.random.PRNGKey(0), xla.params)
    st = jax.jit(lambda s: jax.lax.scan(lambda c, _: (integ.step(c, xla.params), None), s, None, length=100)[0])(st)
    return auto, xla, st.positions


def _abs_sums(x, box, idx, rc):
    """Σ over pairs inside r_c of |e_ij| (r⁻¹² and r⁻⁶ parts apart) and per atom Σ_j |∂e_ij/∂r|, float64 (the scales
    of float32 round-off); ``idx`` a full list (each pair counted once, i < j)."""
    x, box, idx = np.asarray(x, np.float64), np.asarray(box, np.float64), np.asarray(idx)
    n = len(x)
    i, k = np.nonzero(idx < n)
    j = idx[i, k]
    i, j = i[i < j], j[i < j]
    d = x[j] - x[i]
    d -= box * np.round(d / box)
    r = np.sqrt(np.sum(d * d, -1))
    m = r < rc
    i, j, r = i[m], j[m], r[m]
    s6 = (SIG / r) ** 6
    e = 4 * EPS * (s6 * s6 + s6)
    g = 4 * EPS * (12 * s6 * s6 + 6 * s6) / r
    return float(e.sum()), np.bincount(i, g, n) + np.bincount(j, g, n)


@pytest.mark.parametrize("n", [2000, 1000])
def test_lj_fluid_on_numba_matches_the_xla_kernels(n):
    auto, xla, x = _case(n)
    assert auto.metadata["half_list"] and not xla.metadata["half_list"]
    out = {}
    for k, s in (("auto", auto), ("xla", xla)):
        nb = s.neighbor_fn.allocate(x)
        fn = jax.value_and_grad(lambda y, s=s, nb=nb: s.energy_fn(s.params, y, neighbor=nb))
        assert (LJ_CALL in str(jax.make_jaxpr(fn)(x))) == (k == "auto")
        out[k] = jax.jit(fn)(x)
    assert out["auto"][1].dtype == jnp.float32
    e_abs, g_abs = _abs_sums(x, auto.box, nb.idx, auto.metadata["cutoff_nm"])
    # both round each pair term to float32 and sum rows in float32 (the XLA full list sums each pair twice and
    # halves): 16 ulps of Σ|e_ij| (measured ~3e-8 relative at N = 8,000: dE 0.008 of 41,629 with Σ|e| ~2.6e5)
    de = abs(float(out["auto"][0]) - float(out["xla"][0]))
    assert de <= 16 * F32_ULP * e_abs, (de, e_abs)
    # forces relative to Σ_j |∂e_ij/∂r|: the kernels wrap displacements differently (selects vs round(d/L)·L), an
    # ulp of the box (~5e-7 nm of ~0.4 nm contacts) times the r⁻¹³ repulsion's 13: 2e-5 (measured below 3e-6)
    df = np.linalg.norm(np.asarray(out["auto"][1], np.float64) - np.asarray(out["xla"][1], np.float64), axis=1)
    assert np.all(df <= 2e-5 * g_abs), float(np.max(df / g_abs))


@pytest.mark.parametrize("n, call", [(2000, CELL_CALL), (1000, CELL_CALL), (300, ALL_PAIRS_CALL)])
def test_numba_rebuild_of_the_lj_list_equals_the_xla_build(n, call):
    """Half and full lists, at allocation (numba from numpy) and at a rebuild inside jit (the custom call). At 3
    cells per side (N = 1,000) the numba build keeps the cells where the XLA build takes all pairs (padded cells
    cost it more): given the same cell capacity the XLA cell build lists the same; under 3 cells, all pairs."""
    _, _, x = _case(n)
    x1 = x + jnp.asarray(0.05 * np.random.default_rng(1).standard_normal(x.shape), jnp.float32)  # past the skin
    for half in (True, False):
        fns = {k: _fluid(n, half_list=half, pair_kernel="xla", rebuild_kernel=k).neighbor_fn for k in ("numba", "xla")}
        nbs = {"numba": fns["numba"].allocate(x)}
        assert (nbs["numba"].cell_capacity > 0) == (call == CELL_CALL)
        nbs["xla"] = fns["xla"].allocate(x, nbs["numba"].max_occupancy, nbs["numba"].cell_capacity)
        np.testing.assert_array_equal(np.asarray(nbs["numba"].idx), np.asarray(nbs["xla"].idx))
        upd = jax.jit(lambda y, nb: nb.update(y))
        assert call in str(jax.make_jaxpr(lambda y, nb=nbs["numba"]: nb.update(y))(x1))
        new = {k: upd(x1, nb) for k, nb in nbs.items()}
        assert int(new["numba"].n_rebuilds) == 1 and not bool(new["numba"].overflow)
        np.testing.assert_array_equal(np.asarray(new["numba"].idx), np.asarray(new["xla"].idx))


def test_theta_gradients_and_float64_stay_on_xla():
    """σ/ε gradients (fitting) need more than positions: the XLA half-list kernel, equal to the full list's; float64
    and a LJ switch keep the full list and XLA kernel (the float64 OpenMM parity tests run that code unchanged)."""
    auto, xla, x = _case(1000)
    gp = {}
    for k, s in (("auto", auto), ("xla", xla)):
        nb = s.neighbor_fn.allocate(x)
        fn = jax.grad(lambda p, s=s, nb=nb: s.energy_fn(p, x, neighbor=nb))
        assert LJ_CALL not in str(jax.make_jaxpr(fn)(s.params))
        gp[k] = jax.jit(fn)(s.params)
    for a, b in zip(jax.tree.leaves(gp["auto"]), jax.tree.leaves(gp["xla"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4)
    with jax.enable_x64(True):
        s64 = _fluid(1000, dtype=jnp.float64)
    assert not s64.metadata["half_list"]
    assert not _fluid(1000, switch_distance=2.2 * SIG).metadata["half_list"]
    with pytest.raises(ValueError, match="a LJ switch"):
        forced = _fluid(1000, switch_distance=2.2 * SIG, half_list=True, pair_kernel="numba")
        forced.energy_fn(forced.params, x, neighbor=forced.neighbor_fn.allocate(x))
