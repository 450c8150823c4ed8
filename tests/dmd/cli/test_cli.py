"""The ``dmd`` entry point (dmd/cli/__init__.py): --version, documented exit codes, and one line instead of a
traceback for every way a command can end badly (issue 19)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dmd
from dmd.base.errors import NoResult, SimulationDiverged, UserInputError
from dmd.cli import build_parser, main

PEPTIDE = Path(__file__).resolve().parents[2] / "data" / "crystal" / "5e5z.pdb"


def test_version_and_help_document_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"dmd {dmd.__version__}"
    text = build_parser().format_help()
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert f"\n  {code}" in text, code


def test_python_m_dmd_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "dmd", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "exit codes:" in out.stdout and "crystal" in out.stdout


def test_output_folder_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("an earlier result, not a folder\n")
    rc = main(["crystal", str(PEPTIDE), "--supercell", "1", "1", "1", "--out", str(blocker / "cell.pdb")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("dmd crystal: error:") and str(blocker) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "an earlier result, not a folder\n"  # nothing overwritten


@pytest.mark.parametrize(
    ("exc", "code", "start"),
    [
        (UserInputError("x.pdb: empty file; pass a structure"), 2, "error: x.pdb: empty file"),
        (NoResult("p.xy: no cell indexes these lines"), 3, "no result: p.xy"),
        (SimulationDiverged("NaN at step 12", step=12, last_good_checkpoint="a.chk.npz"), 4, "diverged: NaN"),
        (IsADirectoryError(21, "Is a directory", "out.mtz"), 2, "error: out.mtz: Is a directory"),
        (ZeroDivisionError("division by zero"), 1, "internal error: ZeroDivisionError: division by zero"),
    ],
)
def test_each_error_class_has_its_exit_code_and_one_line(monkeypatch, capsys, exc, code, start):
    # the hook itself: a command whose run() raises; the real commands raise these same classes
    from dmd.cli.commands import crystal

    def boom(args):
        raise exc

    monkeypatch.setattr(crystal, "run", boom)
    assert main(["crystal", str(PEPTIDE), "--supercell", "1", "1", "1", "--out", "never.pdb"]) == code
    err = capsys.readouterr().err
    assert err.startswith(f"dmd crystal: {start}") and len(err.strip().splitlines()) == 1, err
    if isinstance(exc, SimulationDiverged):
        assert "last good checkpoint a.chk.npz" in err
    with pytest.raises(type(exc)):  # --debug shows the real exception (and so its traceback)
        main(["--debug", "crystal", str(PEPTIDE), "--supercell", "1", "1", "1", "--out", "never.pdb"])
