"""Constant-pressure runs with files (dmd.npt_run, ``dmd simulate --pressure``): the box per frame in the
trajectory, checkpoint/resume carrying the box and the barostat's adaptive step, and bad input."""

from __future__ import annotations

import dataclasses
import json

import mdtraj
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.cli import main
from dmd.lj_eos import state_point
from dmd.models import ARGON, lj_fluid
from dmd.npt_run import simulate_npt
from dmd.simulate import RunConfig

SIG, EPS = ARGON["sigma"], ARGON["epsilon"]
T, P = state_point(2.0, 1.7668, SIG, EPS)


def _cfg(tmp_path, steps, **kw):
    return RunConfig(
        steps=steps,
        dt=0.01,
        temperature=T,
        integrator="baoab",
        report_every=50,
        out=tmp_path / "npt.h5",
        progress=False,
        chunk_steps=100,
        **kw,
    )


def test_box_per_frame_and_resume(tmp_path):
    system = lj_fluid(108, density=0.55, temperature=T, cutoff=2.0 * SIG, skin=0.1)
    res = simulate_npt(system, _cfg(tmp_path, 200), pressure_bar=P, every=10)
    s = res.summary
    assert s["final_step"] == 200 and 0.0 < s["barostat_acceptance"] < 1.0
    tr = mdtraj.load(str(tmp_path / "npt.h5"))
    assert tr.n_frames == 4
    lengths = tr.unitcell_lengths
    assert np.ptp(lengths[:, 0]) > 0  # the box moves from frame to frame
    np.testing.assert_allclose(lengths[-1], np.asarray(res.state.box), rtol=1e-5)
    chk = np.load(tmp_path / "npt.chk.npz")
    np.testing.assert_allclose(chk["box"], np.asarray(res.state.box))
    assert float(chk["barostat_volume_scale"]) == pytest.approx(float(res.state.barostat.volume_scale))
    res2 = simulate_npt(system, _cfg(tmp_path, 300, resume=True), pressure_bar=P, every=10)
    assert res2.summary["start_step"] == 200 and res2.summary["final_step"] == 300
    tr2 = mdtraj.load(str(tmp_path / "npt.h5"))
    assert tr2.n_frames == 6
    np.testing.assert_allclose(tr2.unitcell_lengths[:4], lengths, rtol=1e-6)
    summary = json.loads((tmp_path / "npt.summary.json").read_text())
    assert summary["pressure_bar"] == pytest.approx(P) and summary["mean_density_g_cm3"] > 0


def test_bad_pressure_settings(tmp_path, capsys):
    system = lj_fluid(108, density=0.55, temperature=T, cutoff=2.0 * SIG, skin=0.1)
    with pytest.raises(UserInputError, match="positive pressure"):
        simulate_npt(system, _cfg(tmp_path, 100), pressure_bar=-1.0, every=10)
    with pytest.raises(UserInputError, match="multiples of --barostat-every"):
        simulate_npt(system, _cfg(tmp_path, 105), pressure_bar=1.0, every=10)
    import dataclasses

    with pytest.raises(UserInputError, match="periodic box"):
        simulate_npt(dataclasses.replace(system, box=None), _cfg(tmp_path, 100), pressure_bar=1.0, every=10)
    # the command line: a structure without CRYST1 and --pressure: a clear message, exit 2, nothing written
    from pathlib import Path

    pdb = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide.pdb"
    out = tmp_path / "cli.dcd"
    rc = main(
        [
            "simulate",
            "--pdb",
            str(pdb),
            "--forcefield",
            "amber14-all.xml",
            "--steps",
            "50",
            "--pressure",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc != 0
    err = capsys.readouterr().err
    assert "periodic box" in err and not out.exists()


def test_minimize_before_a_constant_pressure_run(tmp_path):
    # RunConfig.minimize is honoured under pressure as in simulate(): the start is minimised (a random liquid of 108
    # LJ atoms has overlaps: its energy must fall) and the record is in the returned and the written summary
    rng = np.random.default_rng(3)
    system = lj_fluid(108, density=0.55, temperature=T, cutoff=2.0 * SIG, skin=0.1)
    box = float(np.asarray(system.box).reshape(-1)[0])
    x = rng.uniform(0, box, (108, 3)).astype(np.asarray(system.positions).dtype)
    system = dataclasses.replace(system, positions=x)
    res = simulate_npt(system, _cfg(tmp_path, 100, minimize=1.0), pressure_bar=P, every=10)
    m = res.summary["minimization"]
    assert m["converged"] and m["rms_force_kj_mol_nm"] <= 1.0
    assert m["energy_after_kj_mol"] < m["energy_before_kj_mol"]
    assert json.loads((tmp_path / "npt.summary.json").read_text())["minimization"] == m
