"""θ from the fit's round losses (fitting.loss_surface, ``loss_surface: factor``): the vertex of a parabola in z fitted
to the scan's and rounds' losses within factor × the lowest, with its standard error."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.models import harmonic_oscillator
from fitting import observables as ob
from fitting.forcefield import FitConfig, FitParam, FitTarget, fit
from fitting.loss_surface import check_factor, loss_vertex, robust_weights, surface_options
from fitting.start_scan import StartScan

LABEL = "NonbondedForce/sigma/protein-O"


def _rows(theta, loss, status="ok"):
    return [{"status": status, "theta": {LABEL: float(t)}, "loss": float(x)} for t, x in zip(theta, loss, strict=True)]


def test_vertex_of_an_exact_parabola_in_ln_theta_leaves_the_plateau_out():
    # loss 0.01 + 2 (z − z*)² in z = ln σ at the peptide's scale, z* = ln 0.296; plateau points (+20..+47%) far above
    z_star = math.log(0.29599)
    sigma = 0.29599 * np.exp([-0.12, -0.02, 0.01, 0.03, 0.08])
    rows = _rows(sigma, 0.01 + 2 * (np.log(sigma) - z_star) ** 2)
    rows += _rows([0.3552, 0.3925, 0.4338], [0.25, 0.054, 0.097], status="scan")  # the plateau: left out at factor 4
    rows += [
        {"status": "diverged", "theta": {LABEL: 0.5}, "loss": 0.001},
        {"status": "rejected", "theta": {LABEL: 0.4}},
    ]
    v = loss_vertex(rows, math.log, math.exp, 4.0)
    assert v["label"] == LABEL and v["points"] == 5 and not v["clipped"]
    assert v["value"] == pytest.approx(0.29599, rel=1e-9) and v["curvature"] == pytest.approx(2.0, rel=1e-9)
    assert v["stderr"] == pytest.approx(0.0, abs=1e-9)  # an exact parabola: no residual scatter
    # with the plateau in (factor 30) no parabola fits (its curvature is negative): the factor is what keeps it out
    assert loss_vertex(rows, math.log, math.exp, 30.0) is None


def test_vertex_standard_error_covers_the_truth_under_noise():
    # 12 rounds' losses at the peptide's measured scatter (sd 0.003 about 0.01 + 2 z², z within ±12%): over 400
    # draws the vertex falls within 2 s.e. of the truth in ≥ 88% (a Gaussian 95%; the delta method is rough with a
    # noisy curvature) and within 5% of θ in ≥ 90%
    rng = np.random.default_rng(0)
    z = np.array([-0.118, -0.018, 0.082, 0.0, 0.01, 0.02, 0.03, 0.035, 0.04, 0.03, 0.025, 0.04])
    inside = within5 = 0
    for _ in range(400):
        loss = 0.01 + 2 * z**2 + rng.normal(0, 0.003, z.size)
        v = loss_vertex(_rows(np.exp(z), loss), math.log, math.exp, 1e9)
        if v is None or v["stderr"] is None:
            continue
        inside += abs(math.log(v["value"])) <= 2 * v["stderr"] / v["value"]
        within5 += abs(v["value"] - 1) <= 0.05
    assert inside >= 0.88 * 400 and within5 >= 0.90 * 400, (inside, within5)


def test_vertex_clipped_to_the_points_or_none():
    sigma = np.exp([0.0, 0.1, 0.2])
    v = loss_vertex(_rows(sigma, (np.log(sigma) + 0.5) ** 2 + 0.01), math.log, math.exp, 1e9)
    assert v["clipped"] and v["value"] == pytest.approx(1.0) and v["stderr"] is None  # the minimum beyond: the end
    assert loss_vertex(_rows(sigma, [0.01, 0.03, 0.01]), math.log, math.exp, 1e9) is None  # curvature < 0
    assert loss_vertex(_rows([1.0, 1.0, 1.1], [0.1, 0.1, 0.2]), math.log, math.exp, 1e9) is None  # 2 distinct θ
    two = [{"status": "ok", "theta": {"a": 1.0, "b": 2.0}, "loss": 0.1}] * 3
    assert loss_vertex(two, math.log, math.exp, 3.0) is None


def test_factor_and_parameter_count_checked():
    check_factor(None, 2)
    check_factor(3, 1)
    for bad in (1.0, 0.5, True, float("nan"), "3"):
        with pytest.raises(UserInputError, match="loss_surface .*give a factor > 1"):
            check_factor(bad, 1, "fit.yaml")
    with pytest.raises(UserInputError, match="one fitted parameter \\(2 given\\)"):
        check_factor(3, 2)
    check_factor({"log": True, "window": 0.15}, 1)
    for bad in ({"window": 0}, {"log": "yes"}, {"windows": 0.1}, {"window": True}):
        with pytest.raises(UserInputError, match="loss_surface .*or a mapping of factor"):
            check_factor(bad, 1, "fit.yaml")
    with pytest.raises(UserInputError, match="loss_surface 0.5: give a factor > 1"):
        check_factor({"factor": 0.5}, 1)
    with pytest.raises(UserInputError, match="one fitted parameter"):
        check_factor({"log": True}, 2)
    assert surface_options(4) == {"factor": 4, "log": False, "window": None, "robust": False}
    assert surface_options({"log": True, "window": 0.15, "robust": True})["robust"]


def test_ln_loss_in_a_window_about_the_design_centre():
    # ln loss = ln 0.01 + 30 (z − z*)² (a parabola in ln loss) at the design's points, z* = ln 0.296, design centre
    # 2% above; a far wall point (+20%, 10 × the valley) and a heavy-tailed outlier: the window 0.15 leaves the wall
    # out, ln loss fits the rest exactly; the plain loss in the same window does not (the loss is not a parabola)
    z_star = math.log(0.29599)
    centre = z_star + 0.02
    z = centre + np.array([-0.12, -0.06, 0.0, 0.06, 0.12, -0.14])
    rows = _rows(np.exp(z), 0.01 * np.exp(30 * (z - z_star) ** 2))
    for r in rows:
        r["design_centre"] = float(math.exp(centre))
    rows += _rows([math.exp(z_star + 0.182)], [0.15], status="scan")  # the wall: outside the window
    v = loss_vertex(rows, math.log, math.exp, None, log=True, window=0.15)
    assert v["points"] == 6 and v["value"] == pytest.approx(0.29599, rel=1e-9) and v["curvature"] == pytest.approx(30)
    plain = loss_vertex(rows, math.log, math.exp, None, window=0.15)
    assert abs(plain["value"] / 0.29599 - 1) > 1e-3  # 0.01 e^(30 x²) is no parabola: its vertex moves
    # with the wall in (no window; ln 15 above the valley against 30 · 0.182² = 1.0) the vertex moves down 0.86%
    wide = loss_vertex(rows, math.log, math.exp, None, log=True)
    assert wide["points"] == 7 and wide["value"] / 0.29599 - 1 == pytest.approx(-0.0086, abs=5e-4)
    # no centre in the rows: the window is about the lowest point; ln of a non-positive loss: no fit
    bare = [{k: v for k, v in r.items() if k != "design_centre"} for r in rows]
    assert loss_vertex(bare, math.log, math.exp, None, log=True, window=0.15)["points"] == 6
    assert loss_vertex(_rows([1.0, 1.1, 1.2], [0.0, 0.1, 0.2]), math.log, math.exp, None, log=True) is None


def test_fit_reports_the_loss_vertex(tmp_path):
    # ⟨x²⟩ = kT/k of harmonic oscillators: target k = 150, start k = 120, a 5-point scan and 1 round; the reported k
    # is the vertex of the rows' losses (summary.json: loss_surface, and the iterate average beside it)
    T = 300.0
    kt = KB_KJ_PER_MOL_K * T
    system = harmonic_oscillator(64, 3, k=120.0, mass=10.0, temperature=T, dtype=jnp.float64)
    cfg = FitConfig(rounds=1, steps=200, equilibration=100, report_every=10, dt=0.01, temperature=T, friction=5.0,
                    optimizer="sgd", learning_rate=1e3, max_step=0.05, progress=False, out=tmp_path, average_last=1,
                    start_scan=StartScan(points=5, step=0.2), loss_surface=1e6, restart="crystal")  # fmt: skip
    target = FitTarget(ob.custom(lambda pos: jnp.mean(pos**2), name="msd"), np.array([kt / 150]))
    res = fit(system, [FitParam(("spring/k",), lower=0.0)], [target], cfg)
    v = loss_vertex(res.history, math.log, math.exp, 1e6)
    assert res.values["spring/k"] == pytest.approx(v["value"], rel=1e-12) and v["points"] == 6
    assert abs(v["value"] / 150 - 1) < 0.1, v  # 6 rounds of 64 × 20 frames: a few % of sampling noise
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["fitted"]["spring/k"] == pytest.approx(v["value"], rel=1e-12)
    assert summary["loss_surface"]["points"] == 6 and summary["iterate_average"] is not None
    with pytest.raises(UserInputError, match="one fitted parameter"):
        fit(system, [FitParam(("spring/k",), lower=0.0)] * 2, [target], cfg)


def test_designed_points_and_ln_loss_window_replace_the_rounds(tmp_path):
    # the peptide example's scheme on ⟨x²⟩ = kT/k (target k = 150, start k = 120): a 5-point scan, then 3 designed
    # points 0.1 apart about its vertex, each twice, no gradient rounds; k from ln loss within 0.25 of the centre
    T = 300.0
    kt = KB_KJ_PER_MOL_K * T
    system = harmonic_oscillator(64, 3, k=120.0, mass=10.0, temperature=T, dtype=jnp.float64)
    scan = StartScan(points=5, step=0.2, design=3, design_step=0.1, repeats=2)
    surface = {"log": True, "window": 0.25}
    cfg = FitConfig(rounds=0, steps=200, equilibration=100, report_every=10, dt=0.01, temperature=T, friction=5.0,
                    optimizer="sgd", progress=False, out=tmp_path, start_scan=scan, loss_surface=surface,
                    restart="crystal")  # fmt: skip
    target = FitTarget(ob.custom(lambda pos: jnp.mean(pos**2), name="msd"), np.array([kt / 150]))
    res = fit(system, [FitParam(("spring/k",), lower=0.0)], [target], cfg)
    design = [h for h in res.history if "design_centre" in h]
    assert len(res.history) == 11 and len(design) == 6  # 5 scan + 3 × 2 design rows, no round
    centre = design[0]["design_centre"]
    ks = sorted({round(h["theta"]["spring/k"], 9) for h in design})
    assert ks == pytest.approx(centre * np.exp([-0.1, 0.0, 0.1]), rel=1e-6)
    v = loss_vertex(res.history, math.log, math.exp, None, log=True, window=0.25)
    assert res.values["spring/k"] == pytest.approx(v["value"], rel=1e-12)
    assert abs(v["value"] / 150 - 1) < 0.1, v
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["rounds"] == 0 and summary["fitted"]["spring/k"] == pytest.approx(v["value"], rel=1e-12)


def test_robust_fit_gives_an_outlier_no_weight():
    # seed 4's design (fit18k): 13 points within the window, one at the centre 20 × its neighbours (0.21 against
    # 0.008-0.036). On an ln-loss parabola with 5% noise plus that outlier, the robust vertex is within 0.3% of the
    # truth (measured 0.22%) and the outlier's weight is 0; least squares on ln loss finds no parabola (curvature < 0).
    # Bisquare on a 13-point MAD scale also drops 2 of the 12 plain points (weights 0.018, 0.006: residuals ~2.5 sd)
    rng = np.random.default_rng(4)
    z_star = math.log(0.29599)
    z = z_star + np.array([-0.13, -0.12, -0.06, -0.02, 0.0, 0.06, 0.12, -0.12, -0.06, 0.0, 0.06, 0.12, 0.08])
    loss = 0.01 * np.exp(30 * (z - z_star) ** 2 + rng.normal(0, 0.05, z.size))
    loss[4] = 0.21
    rows = _rows(np.exp(z), loss)
    v = loss_vertex(rows, math.log, math.exp, None, log=True, robust=True)
    assert abs(v["value"] / 0.29599 - 1) < 0.003 and v["downweighted"] <= 3 and v["points"] == 13, v
    assert 0 < v["stderr"] / 0.29599 < 0.01
    assert loss_vertex(rows, math.log, math.exp, None, log=True) is None
    x = z - z.mean()
    coef, w = robust_weights(np.stack([x**2, x, np.ones_like(x)], axis=1), np.log(loss))
    assert w[4] == 0.0 and np.sum(np.delete(w, 4) > 0.5) >= 10 and coef[0] == pytest.approx(30, rel=0.15)
