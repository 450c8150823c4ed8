"""The engine's example scripts run on repository data only and finish cleanly (each takes OUT_DIR)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the engine's examples (positional OUT_DIR); other features' examples are run by their own tests
SCRIPTS = [ROOT / "examples" / name for name in ("lj_fluid_langevin.py", "alanine_dipeptide_md.py")]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_runs(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("XLA_FLAGS", None)  # examples run as a user would: one default device
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps" in proc.stdout  # each example prints its summary line
    assert any((tmp_path / "out").iterdir())  # and writes its outputs where asked


def test_quickstart_runs(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmd.cli",
            "quickstart",
            "--steps",
            "300",
            "--no-progress",
            "--out",
            str(tmp_path / "qs"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("traj.dcd", "traj.log.csv", "traj.summary.json", "energy.png", "quickstart.json"):
        assert (tmp_path / "qs" / name).stat().st_size > 0, name
    assert "[simulate]" in proc.stdout and "[plot]" in proc.stdout
