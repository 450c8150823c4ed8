"""The data-making example scripts (examples/*/make_*.py) in their test-size ``--quick`` mode: they write only
where ``--out`` says (no default that would overwrite the shipped data), and what they make agrees with the shipped
files made by the full runs."""

import importlib.util
import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from analysis.mtz_io import read_mtz

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"


def _script(path: Path, name: str):
    """Load an example script as a module (its ``main(argv)`` is called in process: one jax start)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKERS = [
    EX / "xrd_refine" / "make_example.py",
    EX / "reweight" / "make_example.py",
    EX / "fit" / "make_target.py",
    EX / "fit" / "make_powder_npt_target.py",
    EX / "fit_diffraction" / "make_target.py",
]


@pytest.mark.parametrize("path", MAKERS, ids=[f"{p.parent.name}/{p.stem}" for p in MAKERS])
def test_out_is_required(path):
    mod = _script(path, f"ex_{path.parent.name}_{path.stem}")
    with pytest.raises(SystemExit) as exc:
        mod.main([])  # argparse: "--out is required"
    assert exc.value.code == 2


def test_xrd_refine_make_example_quick(tmp_path):
    _script(EX / "xrd_refine" / "make_example.py", "ex_xrd_make").main(["--out", str(tmp_path), "--quick"])
    shipped = EX / "xrd_refine"
    assert (tmp_path / "rutile_start.cif").read_text() == (shipped / "rutile_start.cif").read_text()
    quick = np.loadtxt(tmp_path / "rutile_pattern.csv", delimiter=",", skiprows=1)
    full = np.loadtxt(shipped / "rutile_pattern.csv", delimiter=",", skiprows=1)
    assert len(quick) == 350  # 2θ 10–80° in 0.2° steps
    # every 5th point of the shipped 0.04° grid is a quick grid point: same model (the normalization differs, the
    # coarse grid misses peak tops), independent 1 % noise on both, which bounds the correlation: measured 0.989;
    # a wrong structure, wavelength or profile gives < 0.5
    np.testing.assert_allclose(full[::5, 0], quick[:, 0], atol=1e-3)
    assert np.corrcoef(full[::5, 1], quick[:, 1])[0, 1] > 0.98


def test_reweight_make_example_quick(tmp_path):
    _script(EX / "reweight" / "make_example.py", "ex_rw_make").main(["--out", str(tmp_path), "--quick"])
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["frames_per_state"] == 4 and truth["state_weights"] == [0.6, 0.3, 0.1]
    assert abs(truth["noise_cc"] - 0.98) < 0.01  # noisy_data hits its target CC to sampling error
    traj = mdtraj.load(str(tmp_path / "traj.dcd"), top=str(tmp_path / "top.pdb"))
    assert traj.n_frames == 12 and traj.n_atoms == 22
    np.testing.assert_allclose(traj.unitcell_lengths, 2.4, rtol=1e-6)
    # each segment sits in its restrained basin: k = 500 kJ/mol/rad² gives sd(φ) ≈ √(kT/k) ≈ 4°; 25° is > 6 sd
    phi = np.degrees(mdtraj.compute_phi(traj)[1][:, 0])
    psi = np.degrees(mdtraj.compute_psi(traj)[1][:, 0])
    centres = np.repeat([[-80.0, 80.0], [-70.0, -40.0], [60.0, 50.0]], 4, axis=0)
    diff = (np.stack([phi, psi], axis=1) - centres + 180.0) % 360.0 - 180.0
    assert np.abs(diff).max() < 25.0
    data = read_mtz(tmp_path / "data.mtz", ["IDIFF"])
    np.testing.assert_allclose(data.cell, [24.0, 24.0, 24.0, 90.0, 90.0, 90.0], rtol=1e-6)
    inv_d2 = (data.hkl.astype(float) ** 2).sum(1) / 24.0**2
    assert len(data.hkl) > 100 and inv_d2.max() <= 1 / 5.0**2 + 1e-9  # quick mode stops at 5 Å


def test_fit_make_target_quick(tmp_path):
    out = tmp_path / "g.csv"
    _script(EX / "fit" / "make_target.py", "ex_fit_make").main(["--out", str(out), "--quick"])
    quick = np.loadtxt(out, delimiter=",", skiprows=1)
    full = np.loadtxt(EX / "fit" / "target_rdf.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(quick[:, 0], full[:, 0], rtol=1e-6)
    # 2 × 500 steps of 512 atoms vs the shipped 10 × 20,000: measured max |Δg| 0.007 on peaks of g ≈ 1.8
    assert np.abs(quick[:, 1] - full[:, 1]).max() < 0.05
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["runs"], meta["steps_per_run"], meta["equilibration"]) == (2, 500, 500)


def test_fit_diffraction_make_target_short_run(tmp_path):
    out = tmp_path / "d.mtz"
    mod = _script(EX / "fit_diffraction" / "make_target.py", "ex_fitdiff_make")
    mod.main(["--cells", "3", "--runs", "1", "--steps", "200", "--out", str(out)])
    quick, full = read_mtz(out, ["IDIFF"]), read_mtz(EX / "fit_diffraction" / "argon_diffuse.mtz", ["IDIFF"])
    np.testing.assert_array_equal(quick.hkl, full.hkl)  # same box lattice to 2 Å (1051 reflections)
    np.testing.assert_allclose(quick.cell, full.cell, rtol=1e-5)
    a, b = np.asarray(quick.columns["IDIFF"]), np.asarray(full.columns["IDIFF"])
    # 10 frames of one 200-step run vs the shipped 4 × 6000 steps: measured CC 0.75 and mean ratio 0.94 (sampling
    # noise of 10 frames); I_D with the mean structure factor left in, or a crystal at another ε, is far off both
    assert np.corrcoef(a, b)[0, 1] > 0.6
    assert 0.8 < a.mean() / b.mean() < 1.25


def test_fit_make_powder_npt_target_short_run(tmp_path):
    out = tmp_path / "p.csv"
    _script(EX / "fit" / "make_powder_npt_target.py", "ex_fit_npt_make").main(
        ["--runs", "1", "--steps", "500", "--out", str(out)]
    )
    quick = np.loadtxt(out, delimiter=",", skiprows=1)
    full = np.loadtxt(EX / "fit" / "argon_powder_npt.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(quick[:, 0], full[:, 0], atol=1e-9)  # 2θ 15-60° every 0.1°
    # 1 × 500 NPT steps vs the shipped 2 × 6000: the broad profile (FWHM ≈ 5°) averages the noise: measured CC
    # 0.99995, mean ratio 0.998, the same strongest peak (111) at 28.2°
    assert np.corrcoef(quick[:, 1], full[:, 1])[0, 1] > 0.999
    assert quick[np.argmax(quick[:, 1]), 0] == pytest.approx(full[np.argmax(full[:, 1]), 0], abs=0.15)
