"""Fit report outputs: θ units on the plots, the truth of synthetic recoveries read from the config (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmd.params import param_unit
from fitting.forcefield_config import FitParam
from fitting.forcefield_outputs import plot_history

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fit"


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("lj/sigma/A", "nm"),
        ("lj/epsilon/A", "kJ/mol"),
        ("NonbondedForce/charge/0:ALA2:CA", "e"),
        ("HarmonicBondForce/k/0-1", "kJ/mol/nm²"),
        ("HarmonicAngleForce/k/0-1-2", "kJ/mol/rad²"),
        ("PeriodicTorsionForce/k/0-1-2-3(n=3)", "kJ/mol"),
        ("PeriodicTorsionForce/phase/0-1-2-3(n=3)", "rad"),
        ("spring/k", "kJ/mol/nm²"),
        ("mystery/field", ""),
    ],
)
def test_param_units_follow_the_engine_docs(name, unit):
    assert param_unit(name) == unit


def test_truth_is_read_from_the_config_and_drawn(tmp_path):
    import yaml

    raw = yaml.safe_load((EXAMPLES / "lj_rdf.yaml").read_text())
    truths = {p["name"]: p.get("truth") for p in raw["parameters"]}
    assert truths == {"lj/epsilon/A": 0.996, "lj/sigma/A": 0.34}  # the values make_target.py used

    class _Mapping:
        fit_params = (FitParam(("lj/sigma/A",), truth=0.34),)

    history = [
        {"round": 0, "status": "ok", "loss": 2.0, "theta": {"lj/sigma/A": 0.272}},
        {"round": 1, "status": "diverged", "loss": float("nan"), "theta": {"lj/sigma/A": 0.40}},
        {"round": 2, "status": "ok", "loss": 0.1, "theta": {"lj/sigma/A": 0.335}},
    ]
    plot_history(tmp_path, history, _Mapping(), fitted={"lj/sigma/A": 0.338}, last={"lj/sigma/A": 0.339})
    for name in ("loss.png", "params.png"):
        assert (tmp_path / name).stat().st_size > 10_000  # a drawn figure, not an empty canvas


@pytest.mark.parametrize("n_params", [1, 2])
def test_start_scan_plot_draws_the_loss_against_theta(tmp_path, n_params):
    labs = ["lj/sigma/A", "lj/epsilon/A"][:n_params]

    class _Mapping:
        fit_params = tuple(FitParam((lab,), truth=0.34) for lab in labs)

    def row(k, th, loss, **kw):
        return {"round": -1, "status": "scan", "scan_point": k, "loss": loss, "theta": dict.fromkeys(labs, th), **kw}

    scan = [row(0, 0.30, 0.5), row(1, 0.33, 0.1, picked=True), row(2, 0.37, 0.8)]
    rounds = [{"round": r, "status": "ok", "loss": 0.1 / (r + 1), "theta": dict.fromkeys(labs, 0.33 + r / 1e3)}
              for r in range(3)]  # fmt: skip
    plot_history(tmp_path, rounds, _Mapping())
    assert not (tmp_path / "start_scan.png").exists()  # no scan, no plot
    plot_history(tmp_path, scan + rounds, _Mapping(), fitted=dict.fromkeys(labs, 0.332))
    assert (tmp_path / "start_scan.png").stat().st_size > 10_000
