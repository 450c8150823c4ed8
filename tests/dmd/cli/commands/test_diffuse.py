"""``dmd diffuse`` on a real MD trajectory and ``dmd xrd`` on real structures, end to end.

Trajectory: ``tests/data/sf_villin_traj.dcd`` / ``sf_villin_top.pdb`` (see tests/analysis/test_diffuse.py).
"""

from __future__ import annotations

import json
import os

import gemmi
import numpy as np

from analysis import diffuse
from analysis.structure_factors import trajectory_structure_factors
from dmd.cli import main

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "data")
TRAJ = os.path.join(DATA, "sf_villin_traj.dcd")
TOP = os.path.join(DATA, "sf_villin_top.pdb")


def test_dmd_diffuse_writes_mtz_matching_library(tmp_path, capsys):
    out = tmp_path / "diffuse.mtz"
    rc = main(["diffuse", "--traj", TRAJ, "--top", TOP, "--d-min", "5", "--stride", "4", "--chunk", "4",
               "--no-progress", "--spacegroup", "P 1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "10 frames" in capsys.readouterr().out
    mtz = gemmi.read_mtz_file(str(out))
    labels = [c.label for c in mtz.columns]
    assert labels[3:] == ["ID", "MEANF2", "MEANF_SQ", "FMEAN", "PHIMEAN", "ID_SYM"]
    np.testing.assert_allclose(mtz.cell.parameters, [49.163, 45.981, 38.869, 90, 90, 90], atol=1e-3)
    assert mtz.spacegroup.hm == "P 1"
    arr = np.asarray(mtz.array)
    hkl, F, _ = trajectory_structure_factors(TRAJ, TOP, arr[:, :3].astype(int), stride=4, dtype=np.float64)
    i_d, f2, fsq = (np.asarray(x) for x in diffuse.diffuse_intensity(F))
    # CLI runs float32 + FFT (tolerance 1e-5) and MTZ stores float32: relative to the column scale
    assert np.abs(arr[:, 4] - f2).max() < 1e-4 * f2.max()
    assert np.abs(arr[:, 3] - i_d).max() < 1e-3 * i_d.max()
    assert np.abs(arr[:, 5] - fsq).max() < 1e-4 * fsq.max()
    assert np.all(arr[:, 3] > -1e-3 * i_d.max())  # I_D is a variance
    summary = json.loads((tmp_path / "diffuse.json").read_text())
    assert summary["n_frames"] == 10 and summary["n_reflections"] == len(arr)
    assert (tmp_path / "diffuse.png").stat().st_size > 1000
    assert not (tmp_path / "diffuse.mtz.ckpt.npz").exists()


def test_dmd_diffuse_resumes_from_checkpoint(tmp_path):
    full = tmp_path / "full.mtz"
    assert main(["diffuse", "--traj", TRAJ, "--top", TOP, "--d-min", "6", "--stride", "5", "--chunk", "2",
                 "--no-progress", "--out", str(full)]) == 0  # fmt: skip
    # a checkpoint holding the first 4 of 8 frames, as an interrupted run leaves it
    hkl, F, _ = trajectory_structure_factors(TRAJ, TOP, d_min=6.0, stride=5, dtype=np.float32)
    acc = diffuse.diffuse_update(diffuse.diffuse_init(len(hkl)), F[:4])
    resumed = tmp_path / "resumed.mtz"
    np.savez(str(resumed) + ".ckpt.npz", hkl=hkl, sum_w=acc.sum_w, sum_f2=acc.sum_f2, sum_f=acc.sum_f,
             n_frames=acc.n_frames)  # fmt: skip
    assert main(["diffuse", "--traj", TRAJ, "--top", TOP, "--d-min", "6", "--stride", "5", "--chunk", "2",
                 "--no-progress", "--out", str(resumed)]) == 0  # fmt: skip
    a = np.asarray(gemmi.read_mtz_file(str(full)).array)
    b = np.asarray(gemmi.read_mtz_file(str(resumed)).array)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-3)  # same frames, same sums (float32 MTZ)
    assert json.loads((tmp_path / "resumed.json").read_text())["n_frames"] == 8


def test_dmd_diffuse_bad_input_messages(tmp_path, capsys):
    rc = main(["diffuse", "--traj", str(tmp_path / "nope.dcd"), "--top", TOP, "--d-min", "4", "--out",
               str(tmp_path / "x.mtz")])  # fmt: skip
    assert rc == 2 and "no such file" in capsys.readouterr().err
    # a topology without a box (CRYST1 removed) read as a trajectory
    nobox = tmp_path / "nobox.pdb"
    nobox.write_text("".join(ln for ln in open(TOP) if not ln.startswith("CRYST1")))
    rc = main(["diffuse", "--traj", str(nobox), "--d-min", "4", "--out", str(tmp_path / "x.mtz")])
    assert rc == 2 and "no unit cell" in capsys.readouterr().err
    rc = main(["diffuse", "--traj", TRAJ, "--top", TOP, "--d-min", "4", "--out", TRAJ])
    assert rc == 2 and ".mtz" in capsys.readouterr().err


def test_dmd_xrd_writes_pattern_sticks_and_plot(tmp_path, capsys):
    out = tmp_path / "pattern.csv"
    rc = main(["xrd", os.path.join(DATA, "sf_Si.cif"), "--wavelength", "1.5406", "--two-theta", "20", "100",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    pattern = np.loadtxt(out, delimiter=",", skiprows=1)
    sticks = np.loadtxt(tmp_path / "pattern_sticks.csv", delimiter=",", skiprows=1)
    assert pattern[0, 0] == 20 and abs(pattern[-1, 0] - 100) < 1e-9 and abs(pattern[:, 1].max() - 100) < 1e-6
    # Si (a = 5.4687 Å in this Materials Project cell): 111 first; Bragg's law for the reported 2θ
    first = sticks[np.argmin(sticks[:, 4])]
    assert sorted(np.abs(first[:3])) == [1, 1, 1] and first[6] == 8
    a = gemmi.read_small_structure(os.path.join(DATA, "sf_Si.cif")).cell.a
    assert abs(first[4] - 2 * np.degrees(np.arcsin(1.5406 * np.sqrt(3) / (2 * a)))) < 1e-5
    assert sticks[:, 8].max() == 100 and np.all(sticks[:, 4] >= 20) and np.all(sticks[:, 4] <= 100)
    assert (tmp_path / "pattern.png").stat().st_size > 1000
    assert json.loads((tmp_path / "pattern.json").read_text())["spacegroup"].startswith("F d -3 m")
    rc = main(["xrd", os.path.join(DATA, "sf_Si.cif"), "--wavelength", "CuKz", "--out", str(out), "--overwrite"])
    assert rc == 2 and "--wavelength" in capsys.readouterr().err
