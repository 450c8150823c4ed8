"""The sensitivity example runs and writes what it says (STYLE.md: a test runs every example)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sensitivity_lj.py"


def test_sensitivity_lj_example_runs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("sensitivity_lj", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path), "--steps", "100"]) == 0
    text = capsys.readouterr().out
    assert "trust:" in text and "fluctuation" in text  # the run summary names an estimator
    with h5py.File(tmp_path / "sensitivities.h5") as fh:
        assert fh["dx"].shape == (10, 2, 64, 3)  # frames × P × atoms × 3 (100 steps, report_every 10)
        assert [n.decode() for n in fh["names"][()]] == ["lj/epsilon/A", "lj/sigma/A"]
    assert (tmp_path / "growth.png").stat().st_size > 1000  # a real PNG, not an empty file
