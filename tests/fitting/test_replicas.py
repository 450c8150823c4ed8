"""Replicas in force-field fitting (FitConfig.replicas, fitting.forcefield_sampling.sample_states) and
``dmd fit --distributed``: replicas vmapped on one device equal the unbatched sampler; sharded over 4 host devices
they equal one device; a replicated fit averages the replicas' observables; 2 local processes (gloo CPU
collectives, localhost coordinator) fit the same θ as one process, only process 0 writes, and processes that
disagree on an input all stop with the same message."""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.distributed import free_local_port
from dmd.models import harmonic_oscillator, lj_fluid
from fitting import observables as ob
from fitting.forcefield import FitConfig, FitParam, FitTarget, fit
from fitting.forcefield_sampling import make_sampler, replica_seed, sample, sample_replicas


def _lj():
    return lj_fluid(64, density=0.7, cutoff=0.5, temperature=120.0, dtype=jnp.float32, seed=1)


def _cfg(**kw):
    base = dict(steps=100, equilibration=40, report_every=20, dt=0.01, temperature=120.0, friction=2.0,
                progress=False)  # fmt: skip
    base.update(kw)
    return FitConfig(**base)


def test_replicas_on_four_devices_equal_one_device_and_the_unbatched_sampler():
    assert len(jax.devices()) == 4  # tests/conftest.py forces 4 host devices
    lj, cfg = _lj(), _cfg(equilibration=0)  # one compilation per sampler form
    smp = make_sampler(lj, cfg)
    pos = np.repeat(np.asarray(lj.positions)[None], 4, axis=0)
    seeds = [replica_seed(0, 3, r) for r in range(4)]
    f1, e1 = sample_replicas(lj, lj.params, cfg, seeds=seeds, positions=pos, sampler=smp, devices=jax.devices()[:1])
    f4, e4 = sample_replicas(lj, lj.params, cfg, seeds=seeds, positions=pos, sampler=smp)
    assert f4.shape == (4, 5, 64, 3)
    # the replica axis sharded over 4 devices runs the same per-replica kernels: identical frames (measured 0.0)
    np.testing.assert_allclose(f4, f1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(e4, e1, rtol=1e-6)
    # each replica is the unbatched sampler's run from its seed (measured bitwise equal on CPU)
    fs, es = sample(lj, lj.params, cfg, seed=seeds[2], positions=pos[2], sampler=smp)
    np.testing.assert_allclose(f1[2], fs, rtol=0, atol=1e-6)
    # and replicas differ from each other (independent noise)
    assert np.abs(f1[0, -1] - f1[1, -1]).max() > 1e-2
    # the frames' energies, computed once per report (the steps skip it: dmd.runloop.LAZY_ENERGY_EVERY), are each
    # frame's all-pairs energy (float32 sums of 64 atoms' pairs: measured within 2e-6 relative)
    direct = [float(lj.energy_fn(lj.params, x, box=lj.box, neighbor=None)) for x in fs]
    np.testing.assert_allclose(es, direct, rtol=1e-5)


def _oscillators():
    return harmonic_oscillator(16, 3, k=100.0, mass=10.0, temperature=300.0, dtype=jnp.float64)


def test_replicated_fit_averages_the_replicas_observables():
    msd = ob.custom(lambda pos: jnp.mean(pos**2), name="msd")
    fps, tg = [FitParam(("spring/k",), lower=0.0)], [FitTarget(msd, np.array([0.02]))]
    cfg = FitConfig(rounds=1, steps=400, equilibration=0, report_every=10, dt=0.01, temperature=300.0,
                    friction=5.0, progress=False, replicas=3)  # fmt: skip
    res = fit(_oscillators(), fps, tg, cfg)
    row = res.history[0]
    assert row["status"] == "ok" and row["n_frames"] == 3 * 40
    # the prediction is the mean of msd over the three replicas' frames, each sampled alone from its seed
    osc = _oscillators()
    means = [np.mean(sample(osc, osc.params, cfg, seed=replica_seed(0, 0, r))[0] ** 2) for r in range(3)]
    assert row["prediction"][0][0] == pytest.approx(np.mean(means), rel=1e-9)
    assert np.ptp(means) > 1e-4 * np.mean(means)  # the replicas differ: the average is not one of them


def test_replicated_fit_averages_each_replicas_own_nonlinear_prediction():
    # prediction = var(x) = <x^2> - <x>^2 of one coordinate, nonlinear in the moments: a replicated fit predicts the
    # mean over replicas of each replica's own variance (as a target made of runs' own I_D), with the chain rule of
    # each replica's own fluctuation Jacobian, not the variance of the pooled frames (which adds the spread of the
    # replicas' means, and its Jacobian their covariance: the peptide I_D fit's runaway, docs/fitting.md)
    var = ob.Observable("var", lambda p, x, box=None: jnp.stack([x[0, 0], x[0, 0] ** 2]), np.arange(1.0), "index",
                        combine=lambda m: m[1:2] - m[0:1] ** 2)  # fmt: skip
    fps, tg = [FitParam(("spring/k",), lower=0.0)], [FitTarget(var, np.array([0.02]))]
    cfg = FitConfig(rounds=1, steps=400, equilibration=0, report_every=10, dt=0.01, temperature=300.0,
                    friction=5.0, progress=False, replicas=3)  # fmt: skip
    row = fit(_oscillators(), fps, tg, cfg).history[0]
    osc = _oscillators()
    beta = 1.0 / (KB_KJ_PER_MOL_K * 300.0)
    preds, jacs, x_all = [], [], []
    for r in range(3):
        frames = sample(osc, osc.params, cfg, seed=replica_seed(0, 0, r))[0]
        x, du = frames[:, 0, 0], 0.5 * np.sum(frames**2, axis=(1, 2))  # dU/dk (k tied over atoms; centres at 0)
        cov = lambda a, b: np.mean((a - a.mean()) * (b - b.mean()))  # noqa: E731
        preds.append(np.var(x))
        jacs.append(-beta * (cov(x**2, du) - 2 * x.mean() * cov(x, du)))  # d var / dk, fluctuation route
        x_all.append(x)
    # float64, the same frames (vmapped replicas equal the unbatched sampler): agreement to round-off
    assert row["prediction"][0][0] == pytest.approx(np.mean(preds), rel=1e-9)
    assert row["jacobian_theta"][0][0] == pytest.approx(np.mean(jacs), rel=1e-6)
    pooled = np.var(np.concatenate(x_all))
    assert abs(pooled - np.mean(preds)) > 1e-3 * np.mean(preds)  # the pooled variance is another number


def test_cross_replica_gradient_pairs_each_jacobian_with_the_other_replicas_residual():
    # replica_gradient: cross (the peptide diffuse fit's seed 6 ran away on a noisy gradient; docs/fitting.md):
    # the step's gradient is the mean over replicas i of 2 J_iᵀ r(mean of the others' predictions), not 2 J̄ᵀ r(P̄).
    # Same frames as the test above (var(x), 3 replicas): the ratio of the two fits' gradient norms equals the ratio
    # computed here from each replica's own prediction and fluctuation Jacobian (dθ/dz and 1/σ² cancel); float64.
    var = ob.Observable("var", lambda p, x, box=None: jnp.stack([x[0, 0], x[0, 0] ** 2]), np.arange(1.0), "index",
                        combine=lambda m: m[1:2] - m[0:1] ** 2)  # fmt: skip
    fps, tg = [FitParam(("spring/k",), lower=0.0)], [FitTarget(var, np.array([0.02]))]
    cfg = FitConfig(rounds=1, steps=400, equilibration=0, report_every=10, dt=0.01, temperature=300.0,
                    friction=5.0, progress=False, replicas=3, optimizer="sgd", learning_rate=0.1)  # fmt: skip
    pooled = fit(_oscillators(), fps, tg, cfg).history[0]
    cross = fit(_oscillators(), fps, tg, FitConfig(**{**cfg.__dict__, "replica_gradient": "cross"})).history[0]
    osc = _oscillators()
    beta = 1.0 / (KB_KJ_PER_MOL_K * 300.0)
    preds, jacs = [], []
    for r in range(3):
        x = sample(osc, osc.params, cfg, seed=replica_seed(0, 0, r))[0]
        du = 0.5 * np.sum(x**2, axis=(1, 2))
        x = x[:, 0, 0]
        cov = lambda a, b: np.mean((a - a.mean()) * (b - b.mean()))  # noqa: E731
        preds.append(np.var(x))
        jacs.append(-beta * (cov(x**2, du) - 2 * x.mean() * cov(x, du)))
    preds, jacs = np.array(preds), np.array(jacs)
    g_pooled = jacs.mean() * (preds.mean() - 0.02)
    g_cross = np.mean([jacs[i] * (np.delete(preds, i).mean() - 0.02) for i in range(3)])
    assert abs(g_cross / g_pooled - 1) > 1e-3  # the two routes give different steps on these frames
    assert cross["grad_norm"] / pooled["grad_norm"] == pytest.approx(abs(g_cross / g_pooled), rel=1e-6)
    assert cross["prediction"] == pooled["prediction"]  # the same frames and prediction; only the gradient differs
    for bad in ({"optimizer": "lm"}, {"replicas": 1}, {"replica_gradient": "split"}):
        with pytest.raises(UserInputError, match="use pooled, or cross"):
            fit(_oscillators(), fps, tg, FitConfig(**{**cfg.__dict__, "replica_gradient": "cross", **bad}))
    # the round's gradient SNR is recorded (a diagnostic: ‖mean‖ / s.e. of the R terms)
    terms = np.array([2 * jacs[i] * (np.delete(preds, i).mean() - 0.02) for i in range(3)])
    assert cross["gradient_snr"] == pytest.approx(abs(terms.mean()) / (terms.std(ddof=1) / np.sqrt(3)), rel=1e-6)


def test_restart_crystal_starts_every_round_from_the_start_positions():
    # restart: crystal (the peptide diffuse fit, docs/fitting.md): round 1's replicas start again from the system's
    # positions, so its prediction is the mean msd of 3 fresh runs from the start with round 1's seeds; continued
    # replicas start from round 0's last frames and predict another number. 100 steps of 0.01 ps at γ = 5/ps: the
    # start is remembered (~e^-2.5 at the end), so continuing changes msd by far more than the float64 round-off
    # that bounds the agreement (rel 1e-9: the vmapped replicas equal the unbatched sampler bitwise on CPU).
    msd = ob.custom(lambda pos: jnp.mean(pos**2), name="msd")
    fps, tg = [FitParam(("spring/k",), lower=0.0)], [FitTarget(msd, np.array([0.02]))]
    cfg = FitConfig(rounds=2, steps=100, equilibration=0, report_every=10, dt=0.01, temperature=300.0, friction=5.0,
                    progress=False, replicas=3, optimizer="sgd", learning_rate=0.0, restart="crystal")  # fmt: skip
    osc = _oscillators()
    fresh = np.mean([np.mean(sample(osc, osc.params, cfg, seed=replica_seed(0, 1, r))[0] ** 2) for r in range(3)])
    got = fit(osc, fps, tg, cfg).history[1]["prediction"][0][0]
    assert got == pytest.approx(fresh, rel=1e-9)
    cont = fit(osc, fps, tg, FitConfig(**{**cfg.__dict__, "restart": "continue"})).history[1]["prediction"][0][0]
    assert abs(cont - fresh) > 1e-3 * fresh  # continuing is another window (measured 1.3% apart)
    with pytest.raises(UserInputError, match="use continue .* or crystal"):
        fit(osc, fps, tg, FitConfig(**{**cfg.__dict__, "restart": "fresh"}))


def test_replicas_refused_where_they_cannot_run(tmp_path):
    fps, tg = [FitParam(("spring/k",), lower=0.0)], [FitTarget(ob.custom(lambda p: jnp.mean(p**2)), np.array([0.02]))]
    with pytest.raises(UserInputError, match="positive whole number of replicas"):
        fit(_oscillators(), fps, tg, FitConfig(rounds=1, replicas=0, progress=False))
    with pytest.raises(UserInputError, match="estimator: pathwise runs one replica"):
        fit(_oscillators(), fps, tg, FitConfig(rounds=1, replicas=2, estimator="pathwise", progress=False))
    cfg = FitConfig(rounds=1, steps=100, equilibration=0, report_every=10, dt=0.01, temperature=300.0, friction=5.0,
                    progress=False, out=tmp_path / "f")  # fmt: skip
    fit(_oscillators(), fps, tg, cfg)
    with pytest.raises(UserInputError, match="resume with the same replicas"):
        fit(_oscillators(), fps, tg, FitConfig(**{**cfg.__dict__, "rounds": 2, "resume": True, "replicas": 2}))


# ---------------------------------------------------------------------------------------------------------------
# dmd fit --distributed: 2 local processes


def _write_config(folder, target_values=None):
    lj = _lj()
    rdf = ob.rdf(64, np.asarray(lj.box), r_max=0.7, n_bins=10)
    r = np.asarray(rdf.axis)
    g = 1.0 + np.exp(-(((r - 0.38) / 0.05) ** 2)) if target_values is None else target_values
    np.savetxt(folder / "target.csv", np.c_[r, g], delimiter=",", header="r_nm,g", comments="")
    (folder / "fit.yaml").write_text(
        "system: {model: lj_fluid, n_atoms: 64, density: 0.7, cutoff: 0.5, seed: 1}\n"
        "parameters:\n  - {name: lj/sigma/A, lower: 0}\n"
        "targets:\n  - {observable: rdf, file: target.csv, r_max: 0.7, n_bins: 10}\n"
        "replicas: 2\nrounds: 2\n"
        "simulation: {steps: 100, equilibration: 0, report_every: 20, dt: 0.01, temperature: 120, friction: 2.0}\n"
    )


def _fit_cmd(folder, out, extra=()):
    return [sys.executable, "-m", "dmd", "fit", str(folder / "fit.yaml"), "--out", str(out), "--json", *extra]


def test_two_processes_fit_the_same_theta_as_one(tmp_path, launch, distributed_flags):
    _write_config(tmp_path)
    port = free_local_port()
    # the single-process reference runs beside the two processes (the machine's 2 cores both busy: less wall time)
    cmds = [_fit_cmd(tmp_path, tmp_path / "multi", distributed_flags(i, port)) for i in range(2)]
    rc, outs = launch([*cmds, _fit_cmd(tmp_path, tmp_path / "single")])
    assert rc == [0, 0, 0], outs
    outs = outs[:2]
    a = json.loads((tmp_path / "single" / "summary.json").read_text())
    b = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert b["replicas"] == 2 and b["processes"] == 2 and a["processes"] == 1
    assert b["replica_devices"] == 2  # the replicas sharded over one mesh spanning both processes
    # 2 replicas, 1 per process, each sampled from the same seed as in the single process and gathered exactly:
    # the same frames to round-off, the same estimator terms, θ equal to float round-off (measured equal)
    np.testing.assert_allclose(b["last_iterate"]["lj/sigma/A"], a["last_iterate"]["lj/sigma/A"], rtol=1e-5)
    assert a["last_iterate"]["lj/sigma/A"] != pytest.approx(0.34, abs=1e-4)  # θ moved
    ha = json.loads((tmp_path / "single" / "history.json").read_text())["history"]
    hb = json.loads((tmp_path / "multi" / "history.json").read_text())["history"]
    np.testing.assert_allclose([h["loss"] for h in hb], [h["loss"] for h in ha], rtol=1e-5)
    assert [h["n_frames"] for h in hb] == [2 * 5] * 2  # 2 replicas × 5 frames
    # only process 0 printed the summary and wrote; the same files as the single-process run
    assert sum('"last_loss"' in o for o in outs) == 1
    assert sorted(os.listdir(tmp_path / "multi")) == sorted(os.listdir(tmp_path / "single"))


def test_processes_disagreeing_on_a_target_file_stop_with_message(tmp_path, launch, distributed_flags):
    for i in range(2):
        (tmp_path / f"p{i}").mkdir()
        _write_config(tmp_path / f"p{i}", None if i == 0 else np.linspace(1, 2, 10))
    port = free_local_port()
    rc, outs = launch([_fit_cmd(tmp_path / f"p{i}", tmp_path / "out", distributed_flags(i, port)) for i in range(2)])
    assert rc[0] != 0 and rc[1] != 0, outs
    for o in outs:
        assert "processes disagree on" in o and "Traceback" not in o, o
    assert not (tmp_path / "out").exists()


def test_round_seeds_are_distinct_over_seeds_rounds_and_replicas():
    # the former seed + round gave fit seed s at round r the noise of seed s + 1 at round r - 1: every
    # (seed, round, replica, stream) must now draw its own stream (fold_in; a 32-bit hash, so a collision among these
    # 2,000 is ~5e-4 likely by chance: none is the exact requirement)
    grid = [(s, r, k, m) for s in range(10) for r in range(10) for k in range(10) for m in range(2)]
    seeds = [replica_seed(*g) for g in grid]
    assert len(set(seeds)) == len(grid)
    assert replica_seed(1, 4) != replica_seed(2, 3)
    assert replica_seed(0, 2, 0) == replica_seed(0, 2)  # replica 0 is the unreplicated fit's round seed
