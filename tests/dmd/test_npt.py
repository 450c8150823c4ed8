"""dmd.npt: the scaled neighbour list follows the box inside the compiled chunk (issue 16: a box change within
what the static cell grid serves compiles nothing), and the list it carries lists every pair in range."""

from __future__ import annotations

import dataclasses

import numpy as np

from dmd.lj_eos import state_point
from dmd.models import ARGON, lj_fluid
from dmd.npt import run_npt

SIG, EPS = ARGON["sigma"], ARGON["epsilon"]
T, P = state_point(2.0, 1.7668, SIG, EPS)
MARGIN = 0.03


def _run(system, cache, n_cycles, seed):
    return run_npt(
        system, n_cycles=n_cycles, dt=0.01, temperature=T, friction=1.0, pressure_bar=P, every=5, chunk=40,
        seed=seed, box_margin=MARGIN, cache=cache,
    )  # fmt: skip


def test_box_changes_compile_once_and_the_list_stays_complete():
    """Chunks of 40 cycles (one chunk length: one compiled function). N = 256 on a 4×4×4 cell grid (r_c = 1.2σ,
    skin 0.05 nm), started at ρσ³ = 0.75: the box grows ~6% toward the truncated fluid's density, past the list's
    margin. The list moves with the box in the jitted cycle (its box is data), so one chunk is compiled for the whole
    run and for a second run from another box that the grid serves (a fit's next round); the energy with the
    carried list equals the all-pairs energy. Capacities are ample (multiplier 2): no overflow growth compiles."""
    system = lj_fluid(256, density=0.75, temperature=T, cutoff=1.2 * SIG, skin=0.05, capacity_multiplier=2.0)
    cache = {}
    out = _run(system, cache, 120, seed=1)
    st = out["state"]
    nbr = st.neighbor
    assert nbr.fns.use_cells and nbr.cell_capacity > 0  # the cell path, not all pairs
    grown = np.asarray(st.box) / np.asarray(system.box)
    assert grown.min() > 1 + MARGIN, grown  # the box left the list margin (MARGIN/2) of the start box twice
    moved = np.asarray(nbr.box) / np.asarray(system.box)
    assert moved.min() > 1 + MARGIN / 2, moved  # the list followed it (reference box moved)
    assert np.all(np.abs(np.asarray(st.box) / np.asarray(nbr.box) - 1) <= MARGIN / 2 + 1e-6)
    assert out["rebuilds"] == 0 and out["compilations"] == 1, (out["rebuilds"], out["compilations"])
    u_all = float(system.energy_fn(system.params, st.positions, box=st.box, neighbor=None))
    np.testing.assert_allclose(float(st.potential_energy), u_all, rtol=2e-5)
    # a second run from the new box (positions and box of the first run's end): the cached chunk serves it
    again = dataclasses.replace(system, positions=st.positions, box=st.box)
    out2 = _run(again, cache, 40, seed=2)
    assert out2["compilations"] == 1 and out2["rebuilds"] == 0
    # a box the grid does not serve (1% smaller than the grid's smallest): a new grid, one more compilation. The
    # start is a lattice at that box's density, ρσ³ ~ 1.5 (the fluid squeezed into a box 20% smaller, ρσ³ ~ 3,
    # overlapped and blew up to 1e16 nm, which only the XLA all-pairs build's counts happened to tolerate)
    small = np.asarray(nbr.fns.box) * 0.99
    dense = lj_fluid(256, density=256 * (SIG / small[0]) ** 3, temperature=T, cutoff=1.2 * SIG, skin=0.05)
    np.testing.assert_allclose(np.asarray(dense.box), small, rtol=1e-6)
    shrunk = dataclasses.replace(system, positions=dense.positions, box=small)
    out3 = _run(shrunk, cache, 40, seed=3)
    assert np.all(np.isfinite(np.asarray(out3["state"].positions)))
    assert np.max(np.abs(np.asarray(out3["state"].positions))) < 10 * small.max()
    assert out3["compilations"] == 2
