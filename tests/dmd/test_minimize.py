"""dmd.minimize against OpenMM's LocalEnergyMinimizer (the energy oracle) and through ``dmd simulate --minimize``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PDB = str(ROOT / "dmd" / "data" / "alanine_dipeptide.pdb")
KW = dict(forcefield=["amber14-all.xml"], nonbonded="NoCutoff", cutoff=1.0, constraints="HBonds", rigid_water=True)


def _openmm_energy(omm_system, x, minimize_to=None):
    """OpenMM's potential energy (kJ/mol) at ``x`` [N, 3] nm, after its own minimisation to ``minimize_to``."""
    import openmm as mm
    import openmm.unit as u

    ctx = mm.Context(omm_system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(np.asarray(x, float) * u.nanometer)
    if minimize_to is not None:
        mm.LocalEnergyMinimizer.minimize(ctx, minimize_to)
    return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def test_reaches_openmms_minimum_with_constraints_kept():
    from dmd.minimize import minimize
    from dmd.openmm_system import openmm_system_from_pdb, system_from_pdb

    system = system_from_pdb(PDB, **KW)
    omm_system, _, _ = openmm_system_from_pdb(PDB, *KW.values())
    # a start 0.01 nm off the PDB in every coordinate: E ≈ +470 to +630 kJ/mol, far above the minimum (−91)
    x0 = np.asarray(system.positions) + np.random.default_rng(0).normal(0, 0.01, (system.n_atoms, 3))
    res = minimize(system, positions=x0, tolerance=1.0)
    assert res.converged and res.rms_force <= 1.0
    assert res.energy_before > 400 and res.iterations > 10
    e_dmd = _openmm_energy(omm_system, res.positions)  # dmd's minimum scored by the oracle
    e_omm = _openmm_energy(omm_system, x0, minimize_to=1.0)
    # same basin, RMS force ≤ 1 kJ/mol/nm in both: measured e_dmd − e_omm = +0.08 / +0.08 / +0.09 kJ/mol over
    # seeds 0-2 (OpenMM's L-BFGS stops a little lower); 0.5 kJ/mol is 5× that and far below the +10 kJ/mol gap
    # the 10 kJ/mol/nm tolerance leaves (a minimiser that stopped early or drifted off the minimum fails)
    assert abs(e_dmd - e_omm) < 0.5
    assert abs(e_dmd - res.energy_after) < 0.05  # dmd's own energy agrees with OpenMM's at the float32 level
    # HBonds kept: every constrained distance at its length to SHAKE's float32 tolerance (1e-5 relative in d²)
    c = system.constraints
    d = np.linalg.norm(np.asarray(res.positions)[c.pairs[:, 0]] - np.asarray(res.positions)[c.pairs[:, 1]], axis=1)
    assert np.max(np.abs(d / c.lengths - 1)) < 1e-5


def test_simulate_minimize_records_it_and_checks_the_tolerance(tmp_path, capsys):
    from dmd.cli import main

    out = tmp_path / "ala.dcd"
    run = ["simulate", "--pdb", PDB, "--forcefield", "amber14-all.xml", "--no-progress", "--steps", "200"]
    assert main([*run, "--minimize", "--minimize-tolerance", "0", "--out", str(out)]) != 0
    assert "--minimize-tolerance 0.0: must be a positive force" in capsys.readouterr().err
    assert not out.exists()
    assert main([*run, "--minimize", "--out", str(out)]) == 0
    m = json.loads((tmp_path / "ala.summary.json").read_text())["minimization"]
    # the bundled PDB (E = −32.2 kJ/mol with its HBonds made exact) minimised to RMS |F| ≤ 10: −81.6 kJ/mol
    # measured; a 30 kJ/mol drop is what a minimiser that stopped after a few iterations would miss
    assert m["converged"] and m["rms_force_kj_mol_nm"] <= 10.0 and m["tolerance_kj_mol_nm"] == 10.0
    assert m["energy_after_kj_mol"] < m["energy_before_kj_mol"] - 30
    assert m["iterations"] > 0 and m["max_force_kj_mol_nm"] >= m["rms_force_kj_mol_nm"]
    assert "minimised: E" in capsys.readouterr().out


def test_chunked_loop_gives_the_same_minimum_and_honours_an_interrupt():
    # the FIRE loop runs as compiled chunks called from Python so that Ctrl-C stops it; the iterations are the same
    import os
    import signal
    import time

    import jax.numpy as jnp
    import pytest

    from dmd import models
    from dmd.minimize import minimize

    lj = models.lj_fluid(256, density=0.8, cutoff=0.75, dtype=jnp.float32, seed=2)
    one = minimize(lj, tolerance=1.0, max_iterations=400, chunk=400)
    chunked = minimize(lj, tolerance=1.0, max_iterations=400, chunk=7)
    assert one.iterations == chunked.iterations > 7
    # same compiled body, same iterations: equal to the bit (any difference would be a different trajectory)
    assert np.array_equal(np.asarray(one.positions), np.asarray(chunked.positions))
    assert (one.energy_after, one.rms_force) == (chunked.energy_after, chunked.rms_force)

    # a float32 fluid never reaches RMS |F| 1e-9: 10^5 iterations run for ~20-40 s. SIGINT after 1 s raises in Python
    # either way (it waits on the result), but one while_loop kept computing after it to the end (measured: a core
    # busy, the process exiting 30 s later); chunks stop at the next chunk's end (~5 ms of 20 iterations here)
    minimize(lj, tolerance=1e-9, max_iterations=40, chunk=20, max_move_nm=0.001)  # compiles the chunk (not timed)

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(KeyboardInterrupt):
            minimize(lj, tolerance=1e-9, max_iterations=10**5, chunk=20, max_move_nm=0.001)
        time.sleep(0.05)  # the chunk in flight ends
        c0, t0 = os.times(), time.perf_counter()
        time.sleep(0.5)
        c1 = os.times()
        busy = (c1.user + c1.system - c0.user - c0.system) / (time.perf_counter() - t0)
        # measured 0.0 with chunks, 0.43 (a core at work) with one loop; 0.2: room for other threads' noise
        assert busy < 0.2, busy
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_a_stop_request_ends_the_minimisation_within_a_chunk_and_writes_nothing(tmp_path):
    # the CLI turns SIGINT into a flag (dmd.cli.common.stop_on_signals); minimize polls it before every chunk, and
    # simulate() before its first chunk, so a Ctrl-C during the minimisation no longer waits for the rest of it and
    # for the first 1,000-step chunk (measured: 17 s after the signal on alanine dipeptide + water, load 4.4)
    import jax.numpy as jnp
    import pytest

    from dmd import models
    from dmd.base.errors import RunInterrupted
    from dmd.minimize import minimize
    from dmd.simulate import RunConfig, simulate

    lj = models.lj_fluid(256, density=0.8, cutoff=0.75, dtype=jnp.float32, seed=2)
    calls = []

    def stop_after(n):
        def stop():
            calls.append(1)
            return 2 if len(calls) > n else 0

        return stop

    # a float32 fluid never reaches RMS |F| 1e-9: without the stop this would run 10^5 iterations
    with pytest.raises(RunInterrupted) as exc:
        minimize(lj, tolerance=1e-9, max_iterations=10**5, chunk=20, max_move_nm=0.001, stop=stop_after(3))
    # polled before each chunk: three chunks of 20 ran, the fourth poll stopped it (exactly: the count is the loop's)
    assert exc.value.signum == 2 and "after 60 FIRE iterations" in str(exc.value) and len(calls) == 4

    out = tmp_path / "lj.dcd"
    calls.clear()
    cfg = RunConfig(steps=10**6, dt=0.002, temperature=1.0, out=out, minimize=1e-9, stop=stop_after(2), progress=False)
    with pytest.raises(RunInterrupted) as exc:
        simulate(lj, cfg)
    assert "during the minimisation" in str(exc.value)
    # nothing half-written: no trajectory, log, summary nor a checkpoint claiming a state the run never reached
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # a stop that arrives after the minimisation's last chunk still stops before the first dynamics chunk
    calls.clear()
    cfg = RunConfig(steps=10**6, dt=0.002, temperature=1.0, out=out, minimize=1e9, stop=stop_after(1), progress=False)
    with pytest.raises(RunInterrupted) as exc:
        simulate(lj, cfg)
    assert "before the first step; nothing was written" in str(exc.value) and not list(tmp_path.iterdir())
    # a resumed run stopped before its first chunk leaves its checkpoint as it was, and --resume still continues
    base = dict(dt=0.002, temperature=1.0, out=out, report_every=50, progress=False)
    simulate(lj, RunConfig(steps=100, **base))
    chk = tmp_path / "lj.chk.npz"
    before = chk.read_bytes()
    with pytest.raises(RunInterrupted) as exc:
        simulate(lj, RunConfig(steps=200, resume=True, stop=lambda: 2, **base))
    assert "is unchanged (continue with --resume)" in str(exc.value) and chk.read_bytes() == before
    assert simulate(lj, RunConfig(steps=200, resume=True, **base)).summary["final_step"] == 200
