"""Constant-pressure force-field fits (``simulation: {pressure, barostat, barostat_every}`` in ``dmd fit``;
``FitConfig.pressure``): the settings are checked up front with the fix, box-dependent targets follow θ only
under NPT, and a short NPT fit round moves the box and the density with σ.

LJ argon at T* = 2, P* = 1.7668 (the state point of tests/fitting/test_npt_density.py, ρ* = 0.55 at the true σ):
N = 108 without a neighbour list (all pairs with minimum image), so one compilation serves every round."""

from __future__ import annotations

import dataclasses
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.base.units import BAR_NM3_IN_KJ_PER_MOL, KB_KJ_PER_MOL_K
from dmd.models import ARGON, lj_fluid
from fitting import observables as ob
from fitting.fit_config import load_fit_config
from fitting.forcefield import FitConfig, FitParam, FitTarget, fit

SIG, EPS = ARGON["sigma"], ARGON["epsilon"]
T = 2.0 * EPS / KB_KJ_PER_MOL_K
P = 1.7668 * EPS / SIG**3 / BAR_NM3_IN_KJ_PER_MOL
AMU_G = 1.66053906660e-24
RHO_TRUE = 108 * ARGON["mass"] * AMU_G / ((108 / 0.55) * SIG**3 * 1e-21)  # g/cm³ at ρ* = 0.55


def _fluid(sigma):
    s = lj_fluid(108, density=0.55, temperature=T, cutoff=2.0 * SIG, sigma=sigma, dtype=jnp.float32)
    return dataclasses.replace(s, neighbor_fn=None)


def _cfg(**kw):
    base = dict(rounds=2, steps=1000, equilibration=300, report_every=50, dt=0.01, temperature=T, friction=2.0,
                pressure=P, barostat_every=10, progress=False)  # fmt: skip
    base.update(kw)
    return FitConfig(**base)


def _write(tmp_path, simulation: str, targets: str = "[{observable: density, value: 1.4, units: g_cm3}]"):
    text = f"""\
    system: {{model: lj_fluid, n_atoms: 108, density: 0.55, cutoff: 0.68, skin: 0.1, sigma: 0.31}}
    parameters: [{{name: lj/sigma/A, lower: 0}}]
    targets: {targets}
    simulation: {simulation}
    """
    path = tmp_path / "fit.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_config_reads_pressure_settings_and_density_value(tmp_path):
    path = _write(tmp_path, "{steps: 1000, report_every: 50, pressure: 1.5, barostat: anisotropic, barostat_every: 10}")
    system, params, targets, cfg, _ = load_fit_config(path)
    assert (cfg.pressure, cfg.barostat, cfg.barostat_every) == (1.5, "anisotropic", 10)
    assert targets[0].observable.name == "density" and targets[0].data.tolist() == [1.4]
    # the observable follows each frame's box: ρ = M/V in g/cm³ (box edge 1 nm: M·1e21 g/cm³)
    mass = float(np.sum(np.asarray(system.masses))) * AMU_G
    rho = targets[0].observable.per_frame(system.params, system.positions, jnp.ones(3))
    assert float(rho[0]) == pytest.approx(mass * 1e21, rel=1e-6)
    path = _write(tmp_path, "{pressure: 1.0, report_every: 50}", "[{observable: density, value: 20.0, units: number}]")
    system, _, targets, cfg, _ = load_fit_config(path)
    assert float(targets[0].observable.per_frame(system.params, system.positions, jnp.full(3, 2.0))[0]) == 108 / 8
    assert (cfg.barostat, cfg.barostat_every) == ("isotropic", 25)


@pytest.mark.parametrize(
    "simulation, message",
    [
        ("{pressure: -1.0}", r"pressure -1.0: give a positive number in bar"),
        ("{pressure: one}", r"pressure 'one': give a positive number in bar"),
        ("{pressure: 1.0, barostat: cubic}", r"barostat 'cubic': use one of isotropic, anisotropic, flexible"),
        ("{pressure: 1.0, barostat: triclinic}", r"called flexible.*use barostat: flexible"),
        ("{pressure: 1.0, barostat_every: 0}", r"barostat_every 0: give a positive number of steps"),
        ("{barostat: isotropic}", r"barostat is set but pressure is not; add pressure: BAR"),
        ("{pressure: 1.0, report_every: 30}", r"report_every 30 must be a multiple of barostat_every 25"),
        ("{pressure: 1.0, report_every: 50, integrator: verlet}", r"needs a thermostat"),
    ],
)
def test_bad_pressure_settings_are_refused_naming_the_file(tmp_path, simulation, message):
    with pytest.raises(UserInputError, match=message) as err:
        load_fit_config(_write(tmp_path, simulation))
    assert "fit.yaml" in str(err.value)


def test_pathwise_refused_under_pressure(tmp_path):
    path = _write(tmp_path, "{pressure: 1.0, report_every: 50}")
    path.write_text(path.read_text() + "estimator: pathwise\n")
    with pytest.raises(UserInputError, match="pathwise.*under pressure use estimator: fluctuation or reweighting"):
        load_fit_config(path)


def _powder_csv(tmp_path):
    tt = np.linspace(20.0, 60.0, 81)
    np.savetxt(tmp_path / "pattern.csv", np.column_stack([tt, 1.0 + np.exp(-((tt - 40.0) ** 2))]), delimiter=",",
               header="two_theta_deg,intensity", comments="")  # fmt: skip


def test_powder_peak_positions_need_npt(tmp_path):
    _powder_csv(tmp_path)
    powder = "[{observable: powder, file: pattern.csv, wavelength: 1.5406, peaks: positions}]"
    with pytest.raises(UserInputError, match="lattice parameters follow θ only under NPT.*pressure: BAR") as err:
        load_fit_config(_write(tmp_path, "{steps: 1000}", powder))
    assert "fit.yaml" in str(err.value)
    # under NPT the same target is accepted and its pattern follows the frame's box: a 2% larger box moves the
    # peaks to lower 2θ (Bragg: sin θ ∝ 1/a), so the pattern changes
    system, _, targets, cfg, _ = load_fit_config(_write(tmp_path, "{pressure: 1.0, report_every: 50}", powder))
    obs = targets[0].observable
    assert obs.follows_box and cfg.pressure == 1.0
    box = jnp.asarray(system.box)
    y0 = np.asarray(obs.per_frame(system.params, system.positions, box))
    y1 = np.asarray(obs.per_frame(system.params, system.positions * 1.02, box * 1.02))
    assert np.abs(y1 - y0).max() > 0.05 * np.abs(y0).max()
    # an NVT powder target is on the fixed start cell: it does not follow the box
    nvt = load_fit_config(_write(tmp_path, "{steps: 1000}", powder.replace("positions", "intensities")))[2]
    assert not nvt[0].observable.follows_box


def test_fixed_lattice_observable_refused_under_pressure():
    lj = _fluid(SIG)
    sq = ob.structure_factor(108, np.asarray(lj.box), [10.0, 20.0])
    with pytest.raises(UserInputError, match="structure_factor.*cannot follow the box"):
        fit(lj, [FitParam(("lj/sigma/A",), lower=0.0)], [FitTarget(sq, np.ones(2))], _cfg())


def test_npt_fit_round_moves_box_and_density_with_sigma(tmp_path):
    # σ starts 20% low; the density target is ρ* = 0.55 at the true σ. At the low σ the fluid is too dense in
    # g/cm³ (1/σ³): d⟨ρ⟩/dσ < 0 and the fit raises σ; the next round's NPT run expands the box with it.
    # Measured over 4 seeds (2 rounds × 4,000 steps, 80 frames per round; the run is ~1 s a round, the rest is
    # compilation): round 0 ⟨ρ⟩ = 1.42–1.49 g/cm³ (target 0.93), d⟨ρ⟩/dσ = −5 … −10 g/cm³/nm, σ 0.272 → 0.305–0.331
    # nm; round 1 mean box 1.82–1.94 nm from 1.58 nm. The bounds fail without NPT (box and ρ fixed: zero gradient)
    # or with a sign error in the estimator (σ would fall); with 1,000 steps one seed in three had the wrong sign.
    start = _fluid(0.8 * SIG)
    box0 = float(np.asarray(start.box)[0])
    cfg = _cfg(out=tmp_path / "fit", steps=4000, equilibration=1000)
    res = fit(start, [FitParam(("lj/sigma/A",), lower=0.0)], [FitTarget(ob.density(start), np.array([RHO_TRUE]))],
              cfg)  # fmt: skip
    h0, h1 = res.history
    assert h0["status"] == h1["status"] == "ok"
    assert h0["jacobian_theta"][0][0] < 0
    assert h0["prediction"][0][0] > 1.3 * RHO_TRUE
    assert h1["theta"]["lj/sigma/A"] > 1.1 * 0.8 * SIG
    box1 = h1["npt"][0]["mean_box_nm"]
    assert box1[0] > 1.1 * box0 and box1[0] == pytest.approx(box1[1], rel=1e-6)  # isotropic
    # the prediction is ⟨M/V_t⟩ of the round's own boxes: within 2% of M/⟨V⟩ (V fluctuates by ~1%)
    mass = float(np.sum(np.asarray(start.masses))) * AMU_G
    assert h1["prediction"][0][0] == pytest.approx(mass / (box1[0] ** 3 * 1e-21), rel=0.02)
    # the checkpoint keeps the last box, so a resumed round starts from it
    with np.load(tmp_path / "fit" / "checkpoint.npz") as ck:
        assert ck["box"].shape == (3,) and float(ck["box"][0]) > 1.1 * box0


def test_powder_npt_example_config_loads():
    # examples/fit/argon_powder_npt.yaml (its recovery, σ 0.272 → 0.3404 nm in 56 s, is benchmarks/bench_fit.py
    # --powder-npt): NPT keys, a box-following powder target, all pairs (neighbor_list: false)
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "fit" / "argon_powder_npt.yaml"
    system, params, targets, cfg, states = load_fit_config(path)
    assert (cfg.pressure, cfg.barostat, cfg.barostat_every) == (1.0, "isotropic", 10)
    assert system.neighbor_fn is None and system.n_atoms == 108
    assert targets[0].observable.name == "powder" and targets[0].observable.follows_box
    assert float(system.params["lj"]["sigma"][0]) == pytest.approx(0.8 * 0.34, rel=1e-6)
