"""The engine's example scripts run on repository data only and finish cleanly (each takes OUT_DIR)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the engine's examples (positional OUT_DIR); other features' examples are run by their own tests
SCRIPTS = [ROOT / "examples" / name for name in ("lj_fluid_langevin.py", "alanine_dipeptide_md.py")]


def _run_as_user(args, cwd):
    """``python args…`` in ``cwd`` as a user would run it: Agg backend, one default device (no XLA_FLAGS)."""
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_runs(script, tmp_path):
    proc = _run_as_user([str(script), str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps" in proc.stdout  # each example prints its summary line
    assert any((tmp_path / "out").iterdir())  # and writes its outputs where asked


def test_quickstart_runs(tmp_path):
    args = ["-m", "dmd.cli", "quickstart", "--steps", "300", "--no-progress", "--out", str(tmp_path / "qs")]
    proc = _run_as_user(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("traj.dcd", "traj.log.csv", "traj.summary.json", "energy.png", "quickstart.json"):
        assert (tmp_path / "qs" / name).stat().st_size > 0, name
    assert "[simulate]" in proc.stdout and "[plot]" in proc.stdout
