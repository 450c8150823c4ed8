"""``dmd quickstart`` refuses to overwrite an earlier run and a file as --out, up front, in one line."""

from dmd.cli import main


def test_quickstart_refuses_second_run_without_overwrite(tmp_path, capsys):
    (tmp_path / "quickstart.json").write_text("{}")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["quickstart", "--out", str(tmp_path), "--steps", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmd quickstart: error:") and "quickstart.json exists" in err and "--overwrite" in err
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_quickstart_refuses_file_as_out(tmp_path, capsys):
    f = tmp_path / "notadir"
    f.write_text("x")
    assert main(["quickstart", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and str(f) in err
    assert f.read_text() == "x"


def _simulate(tmp_path, *extra):
    pdb = tmp_path / "in.pdb"
    if not pdb.exists():
        pdb.write_text("END\n")
    return main(["simulate", "--pdb", str(pdb), "--forcefield", "amber14-all.xml", *extra])


def test_simulate_bad_inputs_answered_in_one_line_before_work(tmp_path, capsys):
    traj = tmp_path / "t.dcd"
    traj.write_bytes(b"old")
    (tmp_path / "in.pdb").write_text("END\n")
    cases = [
        (
            ["--steps", "10", "--out", str(traj)],
            "t.dcd exists (an earlier result); pass --resume",
        ),
        (["--steps", "0", "--out", str(tmp_path / "a.dcd")], "--steps 0: must be a positive"),
        (["--steps", "5", "--temperature", "-1", "--out", str(tmp_path / "a.dcd")], "must be >= 0 K"),
        (["--steps", "5", "--out", str(tmp_path / "in.pdb")], "would overwrite the input file"),
        (["--steps", "5", "--out", str(traj / "x.dcd")], "is a file, not a folder"),
    ]
    for extra, text in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        assert _simulate(tmp_path, *extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("dmd simulate: error:") and text in err, err
        assert len(err.splitlines()) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert traj.read_bytes() == b"old"


def test_fit_rejects_zero_rounds_and_file_out_up_front(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("x: 1\n")
    assert main(["fit", str(cfg), "--out", str(tmp_path / "o"), "--rounds", "-1"]) == 2
    assert "--rounds -1: must be a number of rounds >= 0" in capsys.readouterr().err
    assert main(["fit", str(cfg), "--out", str(tmp_path / "o"), "--rounds", "0"]) == 2  # 0 needs a start scan
    assert "--rounds 0: a fit of no rounds needs a start_scan" in capsys.readouterr().err
    assert main(["fit", str(cfg), "--out", str(cfg)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
