"""Neighbour-list overflow care (dmd.runloop) as every run loop uses it: a list too small for the run overflows,
the loop grows it and redoes the chunk, and the result equals a run with ample capacity. (``dmd.simulate``'s
own loop: tests/dmd/test_simulate.py.)"""

import dataclasses
import types

import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.forces.neighbors import pair_neighbor_list
from dmd.runloop import MAX_REALLOCATIONS, pad_neighbors, redo_on_overflow
from dmd.sensitivity import run_sensitivities
from fitting.forcefield import FitConfig, sample
from fitting.forcefield_sampling import make_sampler

SIGMA = models.ARGON["sigma"]


def _tight_and_ample():
    """The same 128-atom LJ fluid (float64) with ample capacity and with a list at exactly the start occupancy
    (no slack: it overflows as soon as any atom gains a neighbour)."""
    ample = models.lj_fluid(128, cutoff=2.2 * SIGMA, dtype=jnp.float64, seed=4, capacity_multiplier=2.0)
    tight = models.lj_fluid(128, cutoff=2.2 * SIGMA, dtype=jnp.float64, seed=4, capacity_multiplier=1.0)
    fns = tight.neighbor_fn
    occupancy = fns.allocate(tight.positions).max_occupancy  # capacity_multiplier 1 → occupancy + 4

    class ExactCapacity:
        def allocate(self, pos, **kw):
            return fns.allocate(pos, max_occupancy=occupancy - 4)

    return ample, dataclasses.replace(tight, neighbor_fn=ExactCapacity())


def test_sensitivities_redo_overflowed_chunks():
    ample, small = _tight_and_ample()
    run = dict(steps=100, dt=0.01, temperature=119.8, friction=1.0, report_every=10, chunk_steps=50, progress=False)
    ref = run_sensitivities(ample, ["lj/epsilon"], **run)
    res = run_sensitivities(small, ["lj/epsilon"], **run)
    assert any("overflowed" in w for w in res.warnings)  # it did overflow, and said so
    assert not any("overflowed" in w for w in ref.warnings)
    # same noise, same trajectory: only the order of the pair sums differs (~1e-13, grown by chaos over 100 steps)
    np.testing.assert_allclose(res.positions, ref.positions, atol=1e-7)
    np.testing.assert_allclose(res.dx, ref.dx, rtol=1e-5, atol=1e-5 * np.abs(ref.dx).max())


def test_forcefield_sample_redoes_an_overflowed_run():
    ample, small = _tight_and_ample()
    cfg = FitConfig(steps=100, equilibration=100, report_every=20, dt=0.01, temperature=119.8, friction=1.0,
                    progress=False)  # fmt: skip
    f_ref, e_ref = sample(ample, ample.params, cfg, seed=3)
    f_res, e_res = sample(small, small.params, cfg, seed=3)
    np.testing.assert_allclose(f_res, f_ref, atol=1e-7)
    np.testing.assert_allclose(e_res, e_ref, rtol=1e-9)


def test_fit_rounds_reuse_the_compiled_sampler():
    # A fit's next round starts at other positions, whose fresh list may be narrower: padded to the width the sampler
    # last ran with, the round runs the same compiled sampler (before: a new shape, a new trace and compilation every
    # round, ~10 s a round for the peptide fit). Padding changes no energy: the empty slots hold the sentinel.
    cell = models.lj_fluid(128, cutoff=2.2 * SIGMA, dtype=jnp.float64, seed=4)
    # the dense list of PME systems (dmd.forces.neighbors; cell lists grow by their own rule and are not padded)
    s = dataclasses.replace(cell, neighbor_fn=pair_neighbor_list(128, cell.box, 2.2 * SIGMA, skin=0.3 * SIGMA))
    cfg = FitConfig(steps=100, equilibration=0, report_every=20, dt=0.01, temperature=119.8, friction=1.0,
                    progress=False)  # fmt: skip
    liquid = sample(s, s.params, cfg, seed=1)[0][-1]
    wide, narrow = (s.allocate_neighbors(jnp.asarray(x)) for x in (liquid, s.positions))
    assert wide.idx.shape[1] > narrow.idx.shape[1]  # the lattice start allocates a narrower list
    sampler = make_sampler(s, cfg)
    sample(s, s.params, cfg, seed=2, positions=jnp.asarray(liquid), sampler=sampler)
    # make_sampler is cached per system, so the sampler may already hold the first sample's narrow program: the
    # narrower round must add none
    compiled = sampler[1]._cache_size()
    sample(s, s.params, cfg, seed=3, positions=s.positions, sampler=sampler)
    assert sampler[1]._cache_size() == compiled  # the narrow round reuses the wide round's compiled sampler
    padded = pad_neighbors(narrow, wide.idx.shape[1] + 5)
    assert padded.idx.shape[1] == wide.idx.shape[1] + 5
    e = [float(s.energy_fn(s.params, s.positions, neighbor=n)) for n in (narrow, padded)]
    np.testing.assert_allclose(e[1], e[0], rtol=1e-12)  # float64: the same pairs, summed with zeros between


def test_redo_gives_up_after_the_last_reallocation():
    """A list that never stops overflowing: regrown with attempt = 1, 2, … MAX, then a clear error."""
    seen = []
    always = types.SimpleNamespace(did_buffer_overflow=True)
    with pytest.raises(RuntimeError, match=f"after {MAX_REALLOCATIONS} reallocations"):
        redo_on_overflow(lambda start: always, 0, lambda r: r, lambda start, r, attempt: seen.append(attempt) or start)
    assert seen == list(range(1, MAX_REALLOCATIONS + 1))
    start, result, grown = redo_on_overflow(lambda s: s, None, lambda r: r, lambda s, r, a: s)
    assert (start, result, grown) == (None, None, 0)  # no list: nothing to redo


def test_npt_redoes_an_overflowed_chunk():
    """run_npt's host loop (dmd.npt) redoes an overflowed chunk through redo_on_overflow with a grown list: the
    run equals one with ample capacity (same noise, same volume moves)."""
    from dmd.lj_eos import state_point
    from dmd.neighbors import CellNeighborListFns
    from dmd.npt import run_npt

    grown = []

    @dataclasses.dataclass(frozen=True)
    class ExactCapacity(CellNeighborListFns):  # default capacity: the occupancy at allocation, no slack at all
        def allocate(self, position, max_occupancy=None, **kw):
            if max_occupancy is None:  # capacity_multiplier 1 → occupancy + 4
                max_occupancy = super().allocate(position, **kw).max_occupancy - 4
            return super().allocate(position, max_occupancy=max_occupancy, **kw)

        def grow(self, neighbors, position, factor=1.5):
            grown.append(neighbors.max_occupancy)
            return super().grow(neighbors, position, factor)

    ample = models.lj_fluid(64, density=0.55, cutoff=1.8 * SIGMA, skin=0.1, dtype=jnp.float64, seed=4)
    fns = dict(dataclasses.asdict(ample.neighbor_fn), capacity_multiplier=1.0)
    tight = dataclasses.replace(ample, neighbor_fn=ExactCapacity(**fns))
    t_k, p_bar = state_point(2.0, 1.7668, SIGMA, models.ARGON["epsilon"])  # T* = 2, P* = 1.7668
    run = dict(n_cycles=10, dt=0.01, temperature=t_k, friction=1.0, every=10, chunk=5, seed=1, pressure_bar=p_bar)
    ref = run_npt(ample, **run)
    res = run_npt(tight, **run)
    assert grown  # the tight list did overflow and was grown
    # float64: the lists differ only in padding, so the pair sums agree to rounding (measured: volumes equal,
    # energies within 7e-16 relative)
    np.testing.assert_allclose(res["volume_nm3"], ref["volume_nm3"], rtol=1e-12)
    np.testing.assert_allclose(res["potential_energy"], ref["potential_energy"], rtol=1e-12)


def test_carry_overflow_marks_the_kept_list():
    """A rejected Monte Carlo trial whose own list dropped pairs was scored with a wrong energy: the list kept
    after the rejection must report the overflow (dmd.npt redoes the chunk), for both kinds of list."""
    from dmd.forces.neighbors import pair_neighbor_list
    from dmd.runloop import carry_overflow, overflowed

    lj = models.lj_fluid(64, density=0.55, cutoff=1.8 * SIGMA, skin=0.1, dtype=jnp.float32, seed=4)
    ok = lj.neighbor_fn.allocate(lj.positions)
    bad = dataclasses.replace(ok, overflow=jnp.asarray(True))
    assert not overflowed(carry_overflow(ok, ok)) and overflowed(carry_overflow(ok, bad))
    box = np.asarray(lj.neighbor_fn.box)
    fns = pair_neighbor_list(64, jnp.asarray(box), 1.8 * SIGMA, skin=0.1)
    ok = fns.allocate(lj.positions)
    bad = ok.set(error=type(ok.error)(ok.error.code | 1))  # the neighbour-capacity bit
    assert not overflowed(carry_overflow(ok, ok)) and overflowed(carry_overflow(ok, bad))
    assert carry_overflow(None, None) is None


def test_early_exit_on_a_signal_waits_for_an_uninterrupted_block(tmp_path):
    # dmd simulate exits at once on a signal before its first frames (dmd.cli.common.stop_on_signals), but a resumed
    # run first truncates its trajectory in place: uninterrupted() holds the exit until that is done. A real SIGINT
    # inside the block: the block finishes (its marker file written 0.5 s later), then the process exits with 130
    # at once, never reaching the 30 s sleep after it.
    import subprocess
    import sys
    import time

    script = (
        "import os, signal, time\n"
        "from dmd.cli.common import stop_on_signals\n"
        "from dmd.runloop import uninterrupted\n"
        "with stop_on_signals(exit_before_writes='stopped early') as stop:\n"
        "    with uninterrupted(stop):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.5)\n"
        "        open('block_done', 'w').write('ok')\n"
        "    time.sleep(30)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    waited = time.perf_counter() - t0
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "stopped early" in proc.stderr
    assert (tmp_path / "block_done").read_text() == "ok"  # the block was not cut
    assert waited < 15.0, waited  # well below the 30 s sleep: exited right after the block (measured ~1-2 s)
