"""`dmd merge` end to end on a small synthetic unmerged MTZ (anomalous, half datasets)."""

import json

import gemmi
import numpy as np
import pytest

from analysis.merging import SyntheticConfig, make_synthetic, write_synthetic
from dmd.cli import main


@pytest.fixture(scope="module")
def unmerged_mtz(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge_cli")
    data = make_synthetic(
        SyntheticConfig(d_min=4.0, n_images=30, multiplicity=4.0, isigi=3.0, anomalous_sd=0.15, seed=2)
    )
    path = d / "unmerged.mtz"
    write_synthetic(path, data)
    return path, data


def test_merge_cli_anomalous_half_datasets(unmerged_mtz, capsys):
    path, data = unmerged_mtz
    out = path.parent / "merged.mtz"
    rc = main(
        [
            "merge",
            str(path),
            "--out",
            str(out),
            "--anomalous",
            "--metadata",
            "XDET,YDET",
            "--likelihood",
            "student",
            "--dof",
            "4",
            "--steps",
            "150",
            "--half-datasets",
            "--half-steps",
            "50",
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "CC1/2" in text and "CCanom" in text and "CCpred" in text
    mtz = gemmi.read_mtz_file(str(out))
    assert mtz.spacegroup.hm == "P 21 21 21"
    assert mtz.cell.parameters == pytest.approx((40, 50, 60, 90, 90, 90))
    labels = mtz.column_labels()
    for lab in ("F", "SIGF", "I", "SIGI", "N", "F(+)", "SIGF(+)", "F(-)", "SIGF(-)", "I(+)", "I(-)", "N(+)", "N(-)"):
        assert lab in labels
    arr = np.array(mtz, copy=False)
    col = {lab: arr[:, i] for i, lab in enumerate(labels)}
    hkl = arr[:, :3].astype(int)
    # one row per ASU reflection, all inside gemmi's ASU
    asu = gemmi.ReciprocalAsu(mtz.spacegroup)
    assert all(asu.is_in(list(map(int, h))) for h in hkl)
    assert len({tuple(h) for h in hkl}) == len(hkl)
    # nothing lost: with the default 5% hold-out (CCpred), N(+) + N(−) still counts every input observation
    n_obs = data.unmerged.n_obs
    assert col["N"].sum() == n_obs
    both = np.isfinite(col["F(+)"]) & np.isfinite(col["F(-)"])
    assert both.sum() > 100
    # mean F is the average of the mates where both exist (float32 storage: 1e-6 relative)
    np.testing.assert_allclose(col["F"][both], 0.5 * (col["F(+)"][both] + col["F(-)"][both]), rtol=1e-5)
    assert np.all(col["SIGF"][np.isfinite(col["SIGF"])] > 0)
    summary = json.loads(out.with_suffix(".json").read_text())
    q = summary["quality"]
    assert q["cchalf"]["n_pairs"] > 100 and len(q["cchalf"]["per_shell"]) == 10
    # anomalous signal sd 0.15 (|ΔF|/F ≈ 0.3) at I/σ 3: measured CCanom 0.76 on 94 Bijvoet pairs seen in both
    # halves (standard error ~0.05), CCpred 0.87 on 5% held-out observations; bars well inside both
    assert q["ccanom_half"]["n_pairs"] > 50
    assert q["ccanom_half"]["overall"] > 0.5
    assert q["ccpred"]["overall"] > 0.7
    for key in ("loss_png", "cc_png", "shells_png", "friedel_png"):
        png = summary["outputs"][key]
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_merge_cli_bad_input_exit_code(tmp_path, capsys):
    rc = main(["merge", str(tmp_path / "nope.mtz"), "--out", str(tmp_path / "m.mtz")])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("opt", ["--image-smooth-sd", "--image-b-smooth-sd"])
def test_merge_cli_smoothness_width_must_be_positive(unmerged_mtz, opt, capsys):
    """A zero or negative width of the smoothness prior is refused before any work, naming the option."""
    path, _ = unmerged_mtz
    out = path.parent / "smooth.mtz"
    assert main(["merge", str(path), "--out", str(out), opt, "0"]) == 2
    err = capsys.readouterr().err
    assert opt in err and "must be > 0" in err
    assert not out.exists()


def test_careless_option_names_are_aliases():
    """Every careless spelling in CARELESS_ALIASES parses to the same settings as dmd's own spelling."""
    from dmd.cli import build_parser
    from dmd.cli.commands.merge import CARELESS_ALIASES

    parser = build_parser()
    value = {
        "--iterations": "123",
        "--learning-rate": "0.01",
        "--mlp-layers": "3",
        "--wilson-prior-b": "20",
        "--test-fraction": "0.1",
        "--studentt-likelihood-dof": "4",
        "--intensity-key": "IMEAN",
        "--uncertainty-key": "SIGIMEAN",
        "--image-key": "IMAGE",
    }
    base = ["merge", "in.mtz", "--out", "out.mtz"]
    for careless, ours in CARELESS_ALIASES.items():
        extra = [value[careless]] if careless in value else []
        got = vars(parser.parse_args(base + [careless] + extra))
        want = vars(parser.parse_args(base + ours.split() + extra))
        assert got == want, careless
        assert got != vars(parser.parse_args(base)), f"{careless} changed nothing"
    args = parser.parse_args(base + ["--studentt-likelihood-dof", "4"])
    assert (args.likelihood, args.dof) == ("student", 4.0)


def test_merge_cli_refuses_to_overwrite_an_earlier_half_dataset_merge(unmerged_mtz, capsys):
    """An earlier run's OUT_half1.mtz (written by --half-datasets) is an earlier result like OUT.mtz: refused before
    any work without --overwrite, and left as it was."""
    path, _ = unmerged_mtz
    out = path.parent / "again.mtz"
    half = path.parent / "again_half1.mtz"
    half.write_bytes(b"earlier result")
    assert main(["merge", str(path), "--out", str(out), "--half-datasets"]) == 2
    assert "again_half1.mtz exists" in capsys.readouterr().err
    assert half.read_bytes() == b"earlier result" and not out.exists()


def test_merge_cli_sparse_stills_refused_with_the_fix_and_merged_with_no_image_terms(tmp_path, capsys):
    from analysis.merging.io import write_unmerged

    u = make_synthetic(SyntheticConfig(d_min=6.0, n_images=5, multiplicity=2.0, seed=7)).unmerged
    first = np.unique(u.refl, return_index=True)[1]  # one observation per reflection: no reflection repeats
    path, out = tmp_path / "stills.mtz", tmp_path / "m.mtz"
    write_unmerged(path, u.hkl_obs[first], u.intensity[first], u.sigma[first], u.batch[u.image[first]], u.cell,
                   u.spacegroup)  # fmt: skip
    assert main(["merge", str(path), "--out", str(out)]) == 2
    assert "sparse set of stills" in capsys.readouterr().err
    # the suggested option proceeds: every reflection merged (N = 1 each), none lost
    rc = main(["merge", str(path), "--out", str(out), "--no-image-terms", "--steps", "5", "--holdout", "0",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    n = np.array(gemmi.read_mtz_file(str(out)).column_with_label("N"), dtype=int)
    assert n.size == first.size and np.all(n == 1)
