"""Runs (issue 2, items 5, 7, 8): trajectory formats through mdtraj, CSV log, bit-for-bit restart,
neighbour-list rebuild counting and overflow recovery, divergence handling, CLI."""

import csv
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import mdtraj
import numpy as np
import pytest

from dmd import models
from dmd.base.errors import SimulationDiverged, UserInputError
from dmd.integrators import make_integrator
from dmd.simulate import RunConfig, simulate

ALA_PDB = str(Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide.pdb")

SIGMA = models.ARGON["sigma"]


def _lj(n=128, dtype=jnp.float32, **kw):
    return models.lj_fluid(n, cutoff=2.2 * SIGMA, dtype=dtype, seed=4, **kw)


def _cfg(tmp_path, name, **kw):
    base = dict(
        steps=200,
        dt=0.01,
        temperature=119.8,
        friction=1.0,
        integrator="baoab",
        report_every=20,
        chunk_steps=100,
        progress=False,
    )
    base.update(kw)
    return RunConfig(out=None if name is None else str(tmp_path / name), **base)


@pytest.mark.parametrize("ext", [".dcd", ".xtc", ".h5"])
def test_trajectory_roundtrip_and_log(tmp_path, ext):
    system = _lj()
    mem = simulate(system, _cfg(tmp_path, None))
    res = simulate(system, _cfg(tmp_path, "traj" + ext))
    path = str(tmp_path / ("traj" + ext))
    traj = mdtraj.load(path) if ext == ".h5" else mdtraj.load(path, top=_top(system))  # HDF5 carries its topology
    assert traj.n_frames == 10 and traj.n_atoms == system.n_atoms
    # same seed, same machine: the file holds the in-memory run's frames. DCD/HDF5 store float32
    # (exact up to DCD's nm→Å→nm rescaling, 1e-6 relative); XTC stores 1e-3 nm fixed point.
    tol = 6e-4 if ext == ".xtc" else 1e-5
    np.testing.assert_allclose(traj.xyz, mem.frames, atol=tol)
    np.testing.assert_allclose(traj.unitcell_lengths[0], np.asarray(system.box), rtol=1e-5)
    with open(tmp_path / "traj.log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and int(rows[-1]["step"]) == 200
    for r in rows:  # total = potential + kinetic (written with repr: exact to float64 rounding)
        total = float(r["potential_kj_mol"]) + float(r["kinetic_kj_mol"])
        assert abs(total - float(r["total_kj_mol"])) < 1e-9 * max(1.0, abs(total))
    summary = json.loads((tmp_path / "traj.summary.json").read_text())
    assert summary["final_step"] == 200 and summary["n_frames"] == 10 and summary["steps_per_s"] > 0
    assert res.summary["outputs"]["trajectory"].endswith(ext)


def _top(system):
    from dmd.trajectory import mdtraj_topology

    return mdtraj_topology(system)


def test_checkpoint_restart_is_bit_for_bit(tmp_path):
    system = _lj(dtype=jnp.float32)
    full = simulate(system, _cfg(tmp_path, "a/full.dcd", steps=400, checkpoint_every=200))
    first = simulate(system, _cfg(tmp_path, "b/run.dcd", steps=200))
    assert first.summary["final_step"] == 200
    resumed = simulate(system, _cfg(tmp_path, "b/run.dcd", steps=400, resume=True))
    for field in ("positions", "velocities", "forces", "potential_energy", "key"):
        a = np.asarray(getattr(full.state, field))
        b = np.asarray(getattr(resumed.state, field))
        assert a.dtype == b.dtype and np.array_equal(a, b), field  # identical bits, not just close
    assert np.array_equal(np.asarray(full.state.neighbor.idx), np.asarray(resumed.state.neighbor.idx))
    t_full = mdtraj.load(str(tmp_path / "a/full.dcd"), top=_top(system))
    t_res = mdtraj.load(str(tmp_path / "b/run.dcd"), top=_top(system))
    assert t_res.n_frames == t_full.n_frames == 20
    assert np.array_equal(t_full.xyz, t_res.xyz)
    assert np.array_equal(full.log, resumed.log)
    with pytest.raises(UserInputError, match="same settings"):
        simulate(system, _cfg(tmp_path, "b/run.dcd", steps=600, resume=True, dt=0.005))


def test_neighbor_rebuilds_counted_and_overflow_recovered(tmp_path):
    """Too small a neighbour capacity overflows inside a chunk: the run must reallocate, redo the
    chunk and end where a run with ample capacity ends (float64; the two differ only in the order
    of summation after reallocation, ~1e-13, grown by chaos over 300 steps to < 1e-7 nm)."""
    ample = _lj(dtype=jnp.float64, capacity_multiplier=2.0)
    ref = simulate(ample, _cfg(tmp_path, None, steps=300))
    assert ref.summary["neighbor_reallocations"] == 0
    rebuilds = ref.summary["neighbor_rebuilds"]
    assert 0 < rebuilds < 300 / 3, rebuilds  # rebuilt when needed, far from every step

    tight = _lj(dtype=jnp.float64, capacity_multiplier=1.0)
    fns = tight.neighbor_fn
    occupancy = fns.allocate(tight.positions).max_occupancy  # capacity_multiplier 1 → occupancy + 4

    class ExactCapacity:  # allocate at exactly the start occupancy minus the +4 slack: overflows later
        def allocate(self, pos, **kw):
            return fns.allocate(pos, max_occupancy=occupancy - 4)

    small = dataclasses.replace(tight, neighbor_fn=ExactCapacity())
    res = simulate(small, _cfg(tmp_path, None, steps=300))
    assert res.summary["neighbor_reallocations"] >= 1
    assert res.state.neighbor.max_occupancy > occupancy - 4
    assert not bool(res.state.neighbor.overflow)
    np.testing.assert_allclose(np.asarray(res.state.positions), np.asarray(ref.state.positions), atol=1e-7)


def test_divergence_stops_keeps_checkpoint_and_frames(tmp_path):
    """An inverted well (E = ½ k x², k < 0) grows x like e^{κt}, κ = 1/ps: the per-step move passes
    0.1 nm near step 600 (start within 0.02 nm, 1 K). The run must stop there, name the step, keep earlier frames and
    the last checkpoint before it, and raise SimulationDiverged."""
    osc = models.harmonic_oscillator(4, k=1e4, mass=1.0, dtype=jnp.float64)  # start within 0.02 nm
    params = {"spring": {"k": jnp.full((4,), -1.0), "center": jnp.zeros((4, 3))}}
    system = dataclasses.replace(osc, params=params)
    cfg = _cfg(
        tmp_path,
        "boom.dcd",
        steps=2000,
        integrator="verlet",
        report_every=50,
        chunk_steps=200,
        checkpoint_every=200,
        temperature=300.0,
    )
    with pytest.raises(SimulationDiverged) as info:
        simulate(system, cfg)
    err = info.value
    assert 200 < err.step < 2000
    assert err.last_good_checkpoint is not None and str(err.step) in str(err)
    with np.load(err.last_good_checkpoint) as z:
        ck_step = int(z["step"])
        assert np.isfinite(z["positions"]).all()
    assert ck_step == (err.step - 1) // 200 * 200  # the last checkpoint before the bad step
    traj = mdtraj.load(str(tmp_path / "boom.dcd"), top=_top(system))
    assert traj.n_frames == (err.step - 1) // 50  # every frame before the bad step, none after
    assert np.isfinite(traj.xyz).all()
    summary = json.loads((tmp_path / "boom.summary.json").read_text())
    assert summary["diverged_at_step"] == err.step


def test_bad_inputs_raise_clear_errors(tmp_path):
    system = _lj()
    with pytest.raises(UserInputError, match="unknown trajectory format"):
        simulate(system, _cfg(tmp_path, "t.txt"))
    with pytest.raises(UserInputError, match="no checkpoint"):
        simulate(system, _cfg(tmp_path, "none.dcd", resume=True))
    with pytest.raises(UserInputError, match="--dt"):
        simulate(system, _cfg(tmp_path, None, dt=-1.0))


def test_cli_simulate_alanine_dipeptide(tmp_path, capsys):
    pytest.importorskip("dmd.openmm_system")
    from dmd.cli import main

    out = tmp_path / "ala.xtc"
    rc = main(
        [
            "simulate",
            "--pdb",
            ALA_PDB,
            "--forcefield",
            "amber14-all.xml",
            "--steps",
            "200",
            "--report-every",
            "50",
            "--constraints",
            "HBonds",
            "--integrator",
            "baoab",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "steps/s" in capsys.readouterr().out
    traj = mdtraj.load(str(out), top=ALA_PDB)
    assert traj.n_frames == 4 and traj.n_atoms == 22
    summary = json.loads((tmp_path / "ala.summary.json").read_text())
    assert 100 < summary["mean_temperature_K"] < 600  # 400 fs from a cold start: loose, it only checks units
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"pdb: {ALA_PDB}\nforcefield: amber14-all.xml\nsteps: 50\n"
        f"report_every: 25\nout: {tmp_path / 'y.dcd'}\nprogress: false\n"
    )
    assert main(["simulate", str(cfg)]) == 0
    assert (tmp_path / "y.log.csv").exists()
    assert (
        main(
            [
                "simulate",
                "--pdb",
                "nope.pdb",
                "--forcefield",
                "amber14-all.xml",
                "--steps",
                "5",
                "--out",
                str(tmp_path / "z.dcd"),
            ]
        )
        == 2
    )


def test_second_run_on_the_same_system_reuses_the_compiled_chunk(tmp_path):
    # simulate() used to trace and compile its chunk on every call; a script calling it in a loop paid the
    # compilation (seconds) each time. The second call with the same system and integrator settings must
    # find the same jitted function with no new compilation (cache size unchanged), other seeds included.
    from dmd import simulate as sim_mod

    system = _lj()
    simulate(system, _cfg(tmp_path, None, steps=100))
    entries = [v for v in sim_mod._CHUNK_CACHE.values() if v[0] is system]
    assert len(entries) == 1
    fn = entries[0][1]
    n_compiled = fn._cache_size()
    simulate(system, _cfg(tmp_path, None, steps=100, seed=7))
    assert [v[1] for v in sim_mod._CHUNK_CACHE.values() if v[0] is system] == [fn]
    assert fn._cache_size() == n_compiled
    # another temperature is another integrator: a new entry, the old one kept
    simulate(system, _cfg(tmp_path, None, steps=100, temperature=150.0))
    assert len([v for v in sim_mod._CHUNK_CACHE.values() if v[0] is system]) == 2


def test_second_run_on_the_same_system_compiles_nothing(tmp_path, jax_compiles):
    # the integrator's jitted start (state_at: velocities, constraints, first forces) was made per make_integrator,
    # so every simulate() compiled it again (LJ 500 float32: calls 2 and 3 each 1 compilation, 1.79 s / 1.09 CPU s;
    # cached: 0 compilations, 1.04 s / 0.62 CPU s; load 5.8-6.2). Same system, other seed: nothing compiled at all.
    system = _lj()
    first = simulate(system, _cfg(tmp_path, None, steps=100))
    with jax_compiles() as records:
        again = simulate(system, _cfg(tmp_path, None, steps=100, seed=7))
    assert not [r.getMessage() for r in records if "Compiling" in r.getMessage()]
    assert not np.array_equal(np.asarray(first.state.positions), np.asarray(again.state.positions))  # seed used
    # keyed by temperature: the start of a run at another temperature draws velocities at that temperature
    # (a stale kT closure would give 119.8 K's): ⟨m v²⟩/(3 k_B) of the 128 atoms within 25% (√(2/384) ≈ 7% 1σ)
    from dmd.base.units import KB_KJ_PER_MOL_K
    from dmd.integrators import make_integrator

    integ = make_integrator("baoab", system, dt=0.01, temperature=30.0, friction=1.0)
    st = integ.start(jax.random.PRNGKey(0), system.params)
    m = np.asarray(system.masses)[:, None]
    t = float(np.sum(m * np.asarray(st.velocities) ** 2)) / (3 * len(m) * KB_KJ_PER_MOL_K)
    assert abs(t / 30.0 - 1) < 0.25, t


def test_summary_means_carry_the_precision_of_the_log():
    # Issue 19: a float32 run's summary printed −10.223390579223633 (float32 noise in 17 digits); its mean now
    # has the 7 significant digits float32 carries, and a float64 log's mean is kept in full.
    from dmd.simulate import summary_mean

    x32 = np.array([-10.2233905, -10.22339, -10.223391], np.float32)
    assert summary_mean(x32) == -10.22339
    assert summary_mean(x32) == pytest.approx(float(np.mean(x32, dtype=np.float64)), rel=1e-7)
    x64 = np.array([1.0, 1.123456789012], np.float64)
    assert summary_mean(x64) == float(np.mean(x64))
    assert summary_mean(np.zeros(0, np.float32)) is None


def test_a_run_traces_the_energy_once(tmp_path):
    """Issue 20, start-up: a fresh run computes its first forces inside the chunk program (``Integrator.advance``)
    instead of a separately compiled ``init``, so the energy (the costly part of every compilation: ~5 s for a
    solvated protein) is traced once per run, not twice."""
    system = _lj()
    calls = []

    def energy(*args, **kw):
        calls.append(1)
        return system.energy_fn(*args, **kw)

    counted = dataclasses.replace(system, energy_fn=energy)
    res = simulate(counted, _cfg(tmp_path, None, steps=40))
    assert len(calls) == 1
    # and it is the trajectory of init followed by step (float32 round-off over 40 steps: 1e-5 nm; a first step
    # without forces, or a counted first pass, moves atoms by ~1e-3 nm)
    integ = make_integrator("baoab", system, dt=0.01, temperature=119.8, friction=1.0)
    st = integ.init(jax.random.PRNGKey(0), system.params)
    st = jax.jit(lambda s: jax.lax.fori_loop(0, 40, lambda _, s: integ.step(s, system.params), s))(st)
    assert int(res.state.step) == int(st.step) == 40
    np.testing.assert_allclose(np.asarray(res.state.positions), np.asarray(st.positions), atol=1e-4)


def test_a_run_with_x64_off_stays_float32_and_matches_float64_energies(tmp_path):
    """The float32 path as a user runs it (x64 off, as ``dmd simulate`` without ``--x64``), not only float32
    arrays under the suite's session-wide x64: nothing is promoted, and the energies and forces of the start and
    the potential energy logged at every frame of a run (neighbour lists rebuilt in float32) agree with the
    float64 evaluation of the same positions to float32 round-off."""
    ref = _lj(dtype=jnp.float64)
    with jax.enable_x64(False):
        system = _lj(dtype=jnp.float32)
        x = jnp.asarray(system.positions)
        nbr = system.allocate_neighbors(x)
        e32 = system.energy_fn(system.params, x, box=system.box, neighbor=nbr)
        f32 = -jax.grad(lambda p: system.energy_fn(system.params, p, box=system.box, neighbor=nbr))(x)
        res = simulate(system, _cfg(tmp_path, None, steps=100, dt=0.005))
    assert e32.dtype == jnp.float32 and res.state.positions.dtype == jnp.float32 and res.frames.dtype == np.float32

    def energy64(pos):
        p = jnp.asarray(np.asarray(pos), jnp.float64)
        return ref.energy_fn(ref.params, p, box=ref.box, neighbor=ref.allocate_neighbors(p))

    x64 = jnp.asarray(np.asarray(x), jnp.float64)
    f64 = -jax.grad(lambda p: ref.energy_fn(ref.params, p, box=ref.box, neighbor=ref.allocate_neighbors(x64)))(x64)
    e64 = float(energy64(x))
    # float32 sums of ~4,000 pair terms: measured 1.6e-7 relative; 1e-5 is ~100 float32 ulps
    assert abs(float(e32) - e64) < 1e-5 * abs(e64)
    # forces: measured 1.7e-6 of the largest force
    assert float(jnp.max(jnp.abs(f32 - f64))) < 1e-4 * float(jnp.max(jnp.abs(f64)))
    # every logged frame: the float32 run's potential vs float64 on its own (float32) positions, same 1e-5
    pe64 = np.array([float(energy64(f)) for f in res.frames])
    assert np.max(np.abs(res.log[:, 1] - pe64) / np.abs(pe64)) < 1e-5


def test_a_run_fits_a_lattice_sized_cell_list_once(tmp_path):
    """Issue 20: a cell list allocated on the starting fcc lattice (2,048 LJ atoms, 5 cells per side: 40 slots per
    cell, the fluid needs ~25) is right-sized after the first whole chunk (dmd.runloop.fitted_neighbors), so every
    later rebuild scans fewer padded candidates. The pairs are the same, so the trajectory is that of a run that
    keeps the lattice-sized list (float64, the suite's: the lists differ only in padding and in when they were
    last rebuilt; measured 1.8e-15 nm after 100 steps)."""
    lj = models.lj_fluid(2048, cutoff=2.2 * SIGMA, dtype=jnp.float64, seed=4)
    lattice = lj.neighbor_fn.allocate(lj.positions)
    cfg = dict(steps=100, report_every=50, chunk_steps=50)
    kept = simulate(lj, _cfg(tmp_path, None, fit_neighbors=False, **cfg))
    fitted = simulate(lj, _cfg(tmp_path, None, **cfg))
    assert kept.state.neighbor.cell_capacity == lattice.cell_capacity
    # a fresh allocation in the fluid's slack (x1.25) would give ~31; the lattice-sized list 40
    assert fitted.state.neighbor.cell_capacity <= 0.85 * lattice.cell_capacity
    assert fitted.state.neighbor.max_occupancy <= lattice.max_occupancy  # a fit never grows what holds
    assert not bool(fitted.state.neighbor.overflow)
    np.testing.assert_allclose(np.asarray(fitted.state.positions), np.asarray(kept.state.positions), atol=1e-12)
    np.testing.assert_allclose(fitted.log, kept.log, rtol=1e-12)
