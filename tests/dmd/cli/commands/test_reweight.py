"""``dmd reweight`` end to end on a real OpenMM trajectory (examples/reweight: alanine dipeptide, three
backbone conformers × 20 frames) against synthetic data of a known 0.6/0.3/0.1 mixture of its segments."""

import csv
import json
from pathlib import Path

import gemmi
import numpy as np
import pytest

from analysis.mtz_io import MtzData, read_mtz, write_mtz
from dmd.base.errors import UserInputError
from dmd.cli import main
from fitting.reweight_io import check_and_map

EX = Path(__file__).resolve().parents[4] / "dmd" / "data" / "reweight"


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "rw"
    args = ["reweight", "--traj", str(EX / "traj.dcd"), "--top", str(EX / "top.pdb"), "--data", str(EX / "data.mtz")]
    args += ["--column", "IDIFF", "--d-min", "2.5", "--steps", "150", "--learning-rate", "0.1", "--folds", "4"]
    args += ["--theta-grid", "0,1e-2", "--blocks", "3", "--greedy-max", "10", "--quiet", "--out", str(out)]
    assert main(args + ["--spacegroup", "NOPE"]) == 2  # refused before any work, the fix named
    assert "unknown space group 'NOPE'" in capsys.readouterr().err and not (out / "summary.json").exists()
    assert main(args + ["--spacegroup", "P 2 2 2"]) == 0
    printed = capsys.readouterr().out
    assert "greedy" in printed and "sigmoid" in printed and "uniform" in printed
    s = json.loads((out / "summary.json").read_text())
    truth = json.loads((EX / "truth.json").read_text())
    for key in ("cc_train", "cc_test", "n_eff", "baselines", "theta", "identifiability", "checks"):
        assert key in s
    with open(out / "weights.csv") as fh:
        rows = list(csv.DictReader(fh))
    w = np.array([float(r["weight"]) for r in rows])
    assert len(w) == 60 and abs(w.sum() - 1) < 1e-6
    state_w = w.reshape(3, 20).sum(axis=1)
    # real MD frames, noise at CC 0.98: segment weights within 0.1 (L1) of the truth (measured 0.06)
    assert np.abs(state_w - truth["state_weights"]).sum() < 0.1
    assert s["cc_test"] > s["baselines"]["uniform"]["cc_test"] + 0.05  # measured 0.981 vs 0.888
    assert s["cc_test"] < truth["noise_cc"] + 0.01  # cannot beat the noise ceiling on held-out voxels
    assert s["identifiability"]["identifiable"]
    mtz = read_mtz(out / "reweighted.mtz", ["IOBS", "ICALC", "ICALC_UNIFORM", "TEST"])
    cc = np.corrcoef(mtz.columns["IOBS"], mtz.columns["ICALC"])[0, 1]
    assert cc > 0.97  # the written model is the fitted one (float32 MTZ columns)
    # --spacegroup: orbit means beside the raw columns, gemmi's ASU file, total and anisotropic CC per shell
    sym = s["symmetry"]
    assert sym["spacegroup"] == "P 2 2 2" and len(sym["symmetrized"]["cc_anisotropic_shells"]) > 1
    assert "P 2 2 2 (" in printed and sym["raw"]["cc_total"] > 0.97
    # one alanine dipeptide in a P 1 box is not P 2 2 2-symmetric: the orbit means of the data differ from the data
    assert sym["data_vs_symmetrized"]["cc_total"] < 0.95
    asu = gemmi.read_mtz_file(str(out / "reweighted_asu.mtz"))
    assert asu.spacegroup.hm == "P 2 2 2" and asu.nreflections == sym["n_orbits"]
    gasu = gemmi.ReciprocalAsu(asu.spacegroup)
    assert all(gasu.is_in([int(v) for v in h]) for h in np.asarray(asu.make_miller_array()))
    sym_cols = read_mtz(out / "reweighted.mtz", ["ICALC_SYM", "IOBS_SYM"]).columns
    assert np.isfinite(sym_cols["ICALC_SYM"]).all()
    for png in ("weights_vs_frame.png", "cc_vs_iteration.png"):
        assert (out / png).stat().st_size > 10_000


def test_cli_names_each_disagreement(tmp_path, capsys):
    src = read_mtz(EX / "data.mtz", ["IDIFF"])
    bad = tmp_path / "bad.mtz"
    write_mtz(bad, src.hkl, src.columns, [25.5, 24.0, 24.0, 90, 90, 90], "P 1")
    top = tmp_path / "top.pdb"
    text = (EX / "top.pdb").read_text().splitlines()
    text = [ln[:55] + "P 21 21 21" if ln.startswith("CRYST1") else ln for ln in text]
    top.write_text("\n".join(text) + "\n")
    assert gemmi.read_structure(str(top)).spacegroup_hm == "P 21 21 21"
    args = ["reweight", "--traj", str(EX / "traj.dcd"), "--top", str(top), "--data", str(bad), "--column", "IDIFF"]
    assert main(args + ["--d-min", "1.5", "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cell:" in err and "25.500" in err and "24.000" in err
    assert "space group:" in err and "P 21 21 21" in err
    assert "resolution:" in err and "--d-min" in err
    assert main(args[:-1] + ["NOPE", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "NOPE" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_symmetric_data_averaged_over_equivalents():
    hkl = np.array([[1, 2, 3], [2, 0, 1], [0, 3, 0]], np.int32)
    mtz = MtzData(hkl, {"I": np.arange(3.0)}, np.array([20.0, 22, 24, 90, 90, 90]), "P 2 2 2")
    with pytest.raises(UserInputError, match="reflections"):
        check_and_map(mtz, "I", mtz.cell)  # three reflections are too few to reweight
    from analysis.symmetry import generate_hkl

    hkl = generate_hkl(mtz.cell, 4.0, "P 2 2 2", unique=True)
    mtz = MtzData(hkl, {"I": np.ones(len(hkl))}, mtz.cell, "P 2 2 2")
    dob = check_and_map(mtz, "I", np.array([40.0, 22, 24, 90, 90, 90]), supercell=(2, 1, 1))
    assert dob.checks["mtz_indexed_on"] == "crystal lattice"
    # a --supercell that cannot apply (the MTZ cell is the box) is said, not silently ignored (issue 19)
    with pytest.warns(UserWarning, match=r"--supercell 2 1 1 has no effect: data is indexed on the box lattice"):
        same = check_and_map(mtz, "I", mtz.cell, supercell=(2, 1, 1))
    assert same.checks["mtz_indexed_on"] == "box lattice"
    pair = lambda v: frozenset({tuple(int(c) for c in v), tuple(-int(c) for c in v)})
    for i, h in enumerate(hkl):
        got = [pair(v) for v in dob.hkl_box[dob.reduce_index == i]]
        # P 2 2 2 (Laue class mmm): equivalents (±h, ±k, ±l), one per Friedel pair; box index = (2h, k, l)
        want = {pair((sa * h[0] * 2, sb * h[1], sc * h[2])) for sa in (1, -1) for sb in (1, -1) for sc in (1, -1)}
        assert len(got) == len(set(got)) and set(got) == want
