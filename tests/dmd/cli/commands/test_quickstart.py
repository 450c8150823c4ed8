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
