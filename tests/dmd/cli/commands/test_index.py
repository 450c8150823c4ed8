"""`dmd index` on the example peak lists in all three unit conventions, batch mode, plot, errors."""

import json
import os
import shutil

import numpy as np
import pytest

from dmd.cli import main

EX = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "examples", "indexing")
ANATASE = np.array([3.7852, 3.7852, 9.5139, 90, 90, 90])
FAST = ["--n-candidates", "256", "--max-batches", "4"]


@pytest.mark.parametrize(
    "name, units", [("anatase_2theta.txt", "2theta"), ("anatase_d.txt", "d"), ("anatase_q2.txt", "q2")]
)
def test_cli_json_all_unit_conventions(name, units, capsys):
    rc = main(
        ["index", os.path.join(EX, name), "--units", units, "--lattice", "tetragonal", "--top", "3", "--json", *FAST]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    best = out["solutions"][0]
    assert best["bravais"] == "tI"
    # file positions carry 4-6 significant digits: cell good to ~1e-3 Å
    np.testing.assert_allclose(best["cell"], ANATASE, atol=2e-3)
    assert best["M20"] > 100 and len(best["hkl"]) == 20 and best["unindexed"] == []
    assert len(out["solutions"]) <= 3


def test_cli_table_and_plot(tmp_path, capsys):
    png = tmp_path / "fit.png"
    rc = main(["index", os.path.join(EX, "anatase_2theta.txt"), "--lattice", "tI", "--plot", str(png), *FAST])
    assert rc == 0
    text = capsys.readouterr().out
    assert "tI" in text and "M20" in text and "3.785" in text
    assert png.stat().st_size > 10_000  # a real PNG figure, not an empty file


def test_cli_batch_folder(tmp_path, capsys):
    for f in ("anatase_q2.txt", "anatase_d.txt"):
        shutil.copy(os.path.join(EX, f), tmp_path / f)
    out_json = tmp_path / "res" / "all.json"
    rc = main(
        ["index", str(tmp_path), "--lattice", "tetragonal", "--jobs", "1", "--json", "--out", str(out_json), *FAST]
    )
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert len(data["patterns"]) == 2
    for r in data["patterns"]:
        np.testing.assert_allclose(r["solutions"][0]["cell"], ANATASE, atol=2e-3)


def test_cli_bad_input_exit_code(tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_text("10.0\n9.0\n12.0\n14.0\n10.0\n")
    assert main(["index", str(f), "--units", "2theta", "--wavelength", "1.54", "--lattice", "cubic"]) == 2
    assert "p.txt:1 and line 5 are duplicates" in capsys.readouterr().err
    u = tmp_path / "unsorted.txt"
    u.write_text("25.3\n37.8\n30.1\n48.0\n53.9\n55.1\n")
    assert main(["index", str(u), "--units", "2theta", "--wavelength", "1.5406", "--lattice", "cubic"]) == 2
    err = capsys.readouterr().err
    assert "unsorted.txt:3: position 30.1 2theta is out of order" in err and "sort -g" in err
    n = tmp_path / "nan.txt"
    n.write_text("25.3\n30.1\nnan\n48.0\n53.9\n55.1\n")
    assert main(["index", str(n), "--units", "2theta", "--wavelength", "1.5406", "--lattice", "cubic"]) == 2
    assert "nan.txt:3: position nan is not a finite number" in capsys.readouterr().err
    d = tmp_path / "d_as_2theta.txt"
    d.write_text("\n".join(f"{v:.4f}" for v in 4.2 / np.sqrt(np.arange(1, 9))) + "\n")
    assert main(["index", str(d), "--units", "2theta", "--wavelength", "1.54"]) == 2
    assert "look like d-spacings" in capsys.readouterr().err
    assert main(["index", str(d), "--units", "d", "--lattice", "mP"]) == 2
    assert "monoclinic lattice system needs at least 10" in capsys.readouterr().err
    assert main(["index", str(f), "--units", "parsecs"]) == 2
    assert "unknown units" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "nope.txt"), "--units", "d"]) == 2
