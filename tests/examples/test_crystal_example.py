"""examples/crystal/peptide_crystal.py --quick: the 5E5Z P 1 21 1 peptide crystal built (2×2×1), simulated under
anisotropic NPT in its monoclinic box, its diffuse map computed on the parent lattice and plotted (bundled data)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~40 s alone (JIT of the Amber14 PME system), ~65 s on a shared 2-core machine
def test_crystal_example_quick(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "crystal" / "peptide_crystal.py"), "--out", str(out), "--quick"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["n_atoms"] == 752  # 8 copies of the hydrogenated peptide + water
    # a dense peptide crystal: 1.31 g/cm³ as built; a few steps of NPT move it by < 5%
    assert all(1.2 < d < 1.4 for d in result["density_g_cm3"])
    np.testing.assert_allclose(result["parent_cell"], [9.643, 9.609, 19.029, 90, 101.22, 90], rtol=0.03)
    assert 0.0 < result["cc_raw_vs_symmetry_averaged"] <= 1.0
    assert (out / "diffuse_h0l.png").stat().st_size > 5000
    assert (out / "diffuse.mtz").exists() and (out / "md.npt.csv").exists()
