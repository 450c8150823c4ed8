"""The start scan (fitting.start_scan): the round loss on a grid symmetric about the start θ, the rounds started at
its lowest point (or the parabola's vertex there), checkpointed per point so that --resume redoes no finished one."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.models import harmonic_oscillator
from fitting import observables as ob
from fitting.forcefield import FitConfig, FitParam, FitTarget, fit
from fitting.start_scan import SCAN_FILE, SCAN_ROUND, StartScan, grid, pick, run_start_scan

T = 300.0
KT = KB_KJ_PER_MOL_K * T


def test_grid_is_symmetric_about_the_start():
    z0 = np.log([0.35519])
    g = grid(z0, StartScan(points=5, step=0.1))
    np.testing.assert_allclose(g[:, 0] - z0[0], [-0.2, -0.1, 0.0, 0.1, 0.2], atol=1e-15)
    np.testing.assert_allclose(np.exp(g[:, 0]) * np.exp(g[::-1, 0]), 0.35519**2, rtol=1e-12)  # θ₋ₖ θₖ = θ₀²
    g2 = grid(np.array([1.0, -2.0]), StartScan(points=3, step=0.5, pick="min"))  # two parameters: the 3 × 3 product
    assert g2.shape == (9, 2)
    np.testing.assert_allclose(g2.mean(axis=0), [1.0, -2.0])
    assert {tuple(np.round(r - [1.0, -2.0], 12)) for r in g2} == {
        (a, b) for a in (-0.5, 0, 0.5) for b in (-0.5, 0, 0.5)
    }


def test_pick_lowest_point_and_vertex_of_a_quadratic_loss():
    scan = StartScan(points=5, step=0.1)
    g = grid(np.array([0.0]), scan)
    for z_star in (-0.13, -0.06, 0.02, 0.14):  # the vertex of an exact parabola is found exactly
        z, i = pick(g, (g[:, 0] - z_star) ** 2 + 0.01, scan)
        assert i == int(np.argmin(np.abs(g[:, 0] - z_star)))
        assert z[0] == pytest.approx(z_star, abs=1e-12)
    z, i = pick(g, (g[:, 0] - 0.14) ** 2, StartScan(points=5, step=0.1, pick="min"))
    assert (i, z[0]) == (3, pytest.approx(0.1))  # min: the lowest grid point itself
    z, i = pick(g, (g[:, 0] - 0.5) ** 2, scan)  # the minimum beyond the grid: its end point, no extrapolation
    assert (i, z[0]) == (4, pytest.approx(0.2))
    z, i = pick(g, [np.inf, 0.3, np.nan, 0.2, 0.4], scan)  # a diverged (inf) or NaN point never wins
    assert i == 3 and abs(z[0] - 0.1) <= 0.05
    z, i = pick(g, [np.inf] * 5, scan)  # nothing measured: the start
    assert (i, z[0]) == (2, 0.0)


def test_scan_settings_are_checked():
    with pytest.raises(UserInputError, match="start_scan.points"):
        StartScan(points=4)
    with pytest.raises(UserInputError, match="start_scan.step"):
        StartScan.from_spec({"points": 5, "step": -0.1})
    with pytest.raises(UserInputError, match="fit.yaml: start_scan.points 4: give an odd number"):  # the file named
        StartScan.from_spec({"points": 4}, "fit.yaml")
    with pytest.raises(UserInputError, match="config: start_scan.points: 'five' is not a whole number"):
        StartScan.from_spec({"points": "five"})
    with pytest.raises(UserInputError, match="3 fitted parameters.*remove start_scan"):
        StartScan().check(3)
    with pytest.raises(UserInputError, match="pick: min"):
        StartScan().check(2)
    StartScan(pick="min").check(2)
    assert StartScan.from_spec(None) is None
    for bad in ({"design": 4}, {"design": 5, "design_step": 0.0}, {"design": 5, "repeats": 0}, {"design": -1}):
        with pytest.raises(UserInputError, match="fit.yaml: start_scan design .*give design 0 or odd"):
            StartScan.from_spec(bad, "fit.yaml")
    with pytest.raises(UserInputError, match="design measures points about one fitted parameter"):
        StartScan(pick="min", design=3).check(2)
    assert StartScan.from_spec({"design": 5, "design_step": 0.06, "repeats": 2}).design_step == 0.06


class _State:  # the scan's view of a fit state: start positions, box, and end_round (the next round's start)
    def __init__(self):
        self.positions, self.box, self.rounds = np.zeros((2, 3)), None, 0

    def end_round(self):
        self.rounds += 1
        self.positions = self.positions + 1.0


def test_design_points_about_the_scans_vertex_each_repeated_and_resumed(tmp_path):
    # loss (z − z*)² + 0.01, z* = ln 0.296: the 7-point grid about ln 0.35519 finds the vertex exactly, then 5
    # designed points 0.06 apart about it, twice each, every one from the fit's start positions with its own seed
    z_star, z0 = np.log(0.29599), np.log([0.35519])
    seeds = []

    def measure(z, rnd):
        seeds.append(rnd)
        return float((z[0] - z_star) ** 2 + 0.01)

    scan = StartScan(points=7, step=0.1, design=5, design_step=0.06, repeats=2)
    states = [_State()]
    theta = lambda z: {"s": float(np.exp(z[0]))}  # noqa: E731
    z, rows = run_start_scan(scan, z0, states, measure, theta, tmp_path, log=lambda _: None)
    assert (
        z[0] == pytest.approx(z_star, abs=1e-12)
        and len(rows) == 17
        and seeds == list(range(SCAN_ROUND, SCAN_ROUND + 17))
    )
    design = rows[7:]
    assert all(r["design_centre"] == pytest.approx(0.29599, rel=1e-12) for r in design)
    got = np.log([r["theta"]["s"] for r in design]) - z_star
    np.testing.assert_allclose(got, np.tile([-0.12, -0.06, 0.0, 0.06, 0.12], 2), atol=1e-12)
    assert [r["scan_point"] for r in rows] == list(range(17)) and "design_centre" not in rows[6]
    # the states end at the lowest grid point's frames (the gradient rounds' start): one round from the start
    assert states[0].rounds == 17 and np.all(states[0].positions == 1.0)

    # a run stopped after 12 of 17 points, then --resume: only the last 5 design points are measured, with their seeds
    def stopping(z, rnd):
        if rnd == SCAN_ROUND + 12:
            raise KeyboardInterrupt
        return measure(z, rnd)

    other = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_start_scan(scan, z0, [_State()], stopping, theta, other, log=lambda _: None)
    seeds.clear()
    z2, rows2 = run_start_scan(scan, z0, [_State()], measure, theta, other, resume=True, log=lambda _: None)
    assert seeds == list(range(SCAN_ROUND + 12, SCAN_ROUND + 17)) and z2[0] == pytest.approx(z[0], abs=1e-12)
    assert [r["theta"] for r in rows2] == [r["theta"] for r in rows]


SYSTEM = []  # one system for every fit here: the sampler is compiled once


def _fit(tmp, resume=False, rounds=1):
    # ⟨x²⟩ = kT/k exactly: target k = 150, start k = 120; the grid 120 e^(0.2 j), j = −2..2, is 80, 98, 120, 147, 179
    if not SYSTEM:
        SYSTEM.append(harmonic_oscillator(64, 3, k=120.0, mass=10.0, temperature=T, dtype=jnp.float64))
    cfg = FitConfig(rounds=rounds, steps=200, equilibration=100, report_every=10, dt=0.01, temperature=T,
                    friction=5.0, optimizer="sgd", learning_rate=1e3, max_step=0.05, progress=False, out=tmp,
                    resume=resume, start_scan=StartScan(points=5, step=0.2))  # fmt: skip
    target = FitTarget(ob.custom(lambda pos: jnp.mean(pos**2), name="msd"), np.array([KT / 150]))
    return fit(SYSTEM[0], [FitParam(("spring/k",), lower=0.0)], [target], cfg)


def test_fit_starts_at_the_scans_lowest_point_and_resumes_inside_the_scan(tmp_path):
    res = _fit(tmp_path / "a")
    scan = [h for h in res.history if h["status"] == "scan"]
    ks = [h["theta"]["spring/k"] for h in scan]
    np.testing.assert_allclose(ks, 120 * np.exp(0.2 * np.arange(-2, 3)), rtol=1e-12)
    losses = np.array([h["loss"] for h in scan])
    assert int(np.argmin(losses)) == 3  # 147, the grid point nearest the truth (150)
    z, _ = pick(np.log(ks)[:, None], losses, StartScan(points=5, step=0.2))
    round0 = next(h for h in res.history if h["status"] == "ok")
    assert round0["round"] == 0 and round0["theta"]["spring/k"] == pytest.approx(np.exp(z[0]), rel=1e-12)
    assert abs(z[0] - np.log(ks[3])) <= 0.1
    summary = json.load(open(tmp_path / "a" / "summary.json"))
    assert summary["rounds"] == 1 and summary["start_scan"]["lowest_point"] == 3
    assert "-1,scan," in (tmp_path / "a" / "history.csv").read_text()
    # interrupted after 2 of 5 points: start_scan.npz holds those two; --resume measures only the other three and
    # ends as the uninterrupted fit, bit for bit
    b = tmp_path / "b"
    b.mkdir()
    with np.load(tmp_path / "a" / SCAN_FILE) as d:
        rows = json.loads(str(d["rows"]))
        keep = {k: d[k] for k in d.files if not k.startswith("end_") or k.split("_")[1] in ("0", "1")}
    keep["rows"] = json.dumps([r for r in rows if r["scan_point"] in (0, 1)])
    np.savez(b / SCAN_FILE, **keep)
    resumed = _fit(b, resume=True)
    assert [h["theta"] for h in resumed.history] == [h["theta"] for h in res.history]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in res.history]
    # the finished points were not redone: their rows (with their timings) are the saved ones
    assert [h["seconds"] for h in resumed.history[:2]] == [h["seconds"] for h in scan[:2]]
    assert [h["seconds"] for h in resumed.history[2:5]] != [h["seconds"] for h in scan[2:5]]
