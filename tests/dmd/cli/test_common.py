"""Output paths and bad inputs of every writing command are refused up front, in one line, exit code 2, with
nothing written (issue 19: the tracebacks and silent overwrites found by a new user). No command here gets as far as
its computation: each case takes well under a second."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dmd.cli import main

ROOT = Path(__file__).resolve().parents[3]
RW = ROOT / "dmd" / "data" / "reweight"
SI = ROOT / "tests" / "data" / "sf_Si.cif"
TOP = ROOT / "tests" / "data" / "sf_villin_top.pdb"
TRAJ = ROOT / "tests" / "data" / "sf_villin_traj.dcd"
PEAKS = ROOT / "examples" / "indexing" / "anatase_d.txt"
PATTERN = ROOT / "examples" / "xrd_refine" / "rutile_pattern.csv"
START = ROOT / "examples" / "xrd_refine" / "rutile_start.cif"
FIT = ROOT / "examples" / "fit" / "lj_rdf.yaml"


def _refused(argv, capsys, *texts, cwd_files: Path | None = None):
    """Run ``dmd argv``; assert exit 2, one line ``dmd CMD: error: ...`` holding ``texts``, fast, nothing new."""
    before = sorted(p.name for p in cwd_files.rglob("*")) if cwd_files else None
    t0 = time.perf_counter()
    rc = main([str(a) for a in argv])
    wall = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith(f"dmd {argv[0]}: error:") and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for t in texts:
        assert str(t) in err, (t, err)
    assert wall < 2.0, f"{argv[0]} took {wall:.1f} s to refuse"  # before the heavy work
    if cwd_files:
        assert sorted(p.name for p in cwd_files.rglob("*")) == before  # nothing written
    return err


@pytest.fixture
def files(tmp_path):
    """An empty PDB, a PDB without atoms, an empty CIF, a plain file, and an earlier result folder."""
    (tmp_path / "empty.pdb").write_text("")
    (tmp_path / "noatoms.pdb").write_text("REMARK nothing\nEND\n")
    (tmp_path / "empty.cif").write_text("\n")
    (tmp_path / "empty.dcd").write_bytes(b"")
    (tmp_path / "afile").write_text("an earlier result, not a folder\n")
    return tmp_path


def test_reweight(files, capsys):
    base = ["reweight", "--traj", RW / "traj.dcd", "--top", RW / "top.pdb", "--data", RW / "data.mtz"]
    base += ["--column", "IDIFF"]
    blocker = files / "afile"
    _refused([*base, "--out", blocker], capsys, f"--out {blocker} is a file, not a folder", cwd_files=files)
    _refused([*base, "--out", blocker / "rw"], capsys, f"{blocker} is a file, not a folder", cwd_files=files)
    _refused([*base, "--out", RW / "data.mtz"], capsys, "is a file, not a folder")  # --out = the input MTZ
    earlier = files / "rw"
    earlier.mkdir()
    (earlier / "summary.json").write_text("{}")
    _refused([*base, "--out", earlier], capsys, earlier / "summary.json", "exists", "--overwrite", cwd_files=files)
    bad = ["reweight", "--traj", files / "empty.dcd", "--top", RW / "top.pdb", "--data", RW / "data.mtz"]
    _refused([*bad, "--column", "IDIFF", "--out", files / "o"], capsys, "--traj", "empty.dcd: empty file")
    _refused([*base, "--theta-grid", "a,b", "--out", files / "o"], capsys, "--theta-grid")


def test_merge(files, capsys):
    mtz = files / "unmerged.mtz"
    mtz.write_bytes((RW / "data.mtz").read_bytes())
    _refused(["merge", mtz, "--out", mtz], capsys, "would overwrite the input file", cwd_files=files)
    _refused(["merge", mtz, "--out", files / "afile" / "m.mtz"], capsys, "is a file, not a folder")
    (files / "m.json").write_text("{}")  # the summary of an earlier merge to m.mtz
    _refused(["merge", mtz, "--out", files / "m.mtz"], capsys, "m.json exists", "--overwrite", cwd_files=files)
    (files / "zero.mtz").write_bytes(b"")
    _refused(["merge", files / "zero.mtz", "--out", files / "x.mtz"], capsys, "zero.mtz: empty file")
    _refused(["merge", mtz, "--out", files / "m.txt"], capsys, "give an .mtz path")


def test_xrd_refine_and_xrd(files, capsys):
    base = ["xrd-refine", PATTERN, "--start", START]
    _refused([*base, "--out", files / "afile"], capsys, "is a file, not a folder", cwd_files=files)
    (files / "ref").mkdir()
    (files / "ref" / "refined.cif").write_text("x")
    _refused([*base, "--out", files / "ref"], capsys, "refined.cif exists", "--overwrite", cwd_files=files)
    _refused(["xrd-refine", PATTERN, "--start", files / "empty.cif", "--out", files / "o"], capsys, "empty.cif")
    _refused(["xrd", files / "empty.cif", "--out", files / "p.csv"], capsys, "empty.cif: empty file")
    (files / "p.json").write_text("{}")
    _refused(["xrd", SI, "--out", files / "p.csv"], capsys, "p.json exists", "--overwrite", cwd_files=files)


def test_index(files, capsys):
    peaks = files / "peaks.txt"
    peaks.write_text(PEAKS.read_text())
    _refused(["index", peaks, "--out", peaks], capsys, "would overwrite the input file", cwd_files=files)
    _refused(["index", peaks, "--plot", files], capsys, "--plot", "is a folder", cwd_files=files)
    _refused(["index", peaks, "--out", files / "afile"], capsys, "afile exists", "--overwrite", cwd_files=files)
    (files / "none.txt").write_text("")
    _refused(["index", files / "none.txt"], capsys, "none.txt: empty file")


def test_diffuse(files, capsys):
    base = ["diffuse", "--traj", TRAJ, "--top", TOP, "--d-min", "6"]
    (files / "d.mtz").write_bytes(b"x")
    _refused([*base, "--out", files / "d.mtz"], capsys, "d.mtz exists", "--overwrite", cwd_files=files)
    _refused([*base, "--out", files / "afile" / "d.mtz"], capsys, "is a file, not a folder", cwd_files=files)
    _refused(["diffuse", "--traj", files / "empty.dcd", "--top", TOP, "--d-min", "6", "--out", files / "e.mtz"],
             capsys, "empty.dcd: empty file")  # fmt: skip
    _refused(["diffuse", "--traj", TRAJ, "--top", files / "noatoms.pdb", "--d-min", "6", "--out", files / "e.mtz"],
             capsys, "noatoms.pdb: no ATOM/HETATM records")  # fmt: skip


def test_energy_crystal_simulate_empty_structures(files, capsys):
    for name, text in (("empty.pdb", "empty file"), ("noatoms.pdb", "no ATOM/HETATM records"), ("empty.cif", "")):
        _refused(["energy", "--pdb", files / name], capsys, f"--pdb {files / name}", text)
        _refused(["crystal", files / name, "--out", files / "c.pdb"], capsys, name, cwd_files=files)
        sim = ["simulate", "--pdb", files / name, "--forcefield", "amber14-all.xml", "--steps", "10"]
        _refused([*sim, "--out", files / "t.dcd"], capsys, name, text, cwd_files=files)
    (files / "c.json").write_text("{}")
    _refused(["crystal", SI, "--out", files / "c.pdb"], capsys, "c.json exists", "--overwrite", cwd_files=files)


@pytest.mark.parametrize(("key", "value"), [("steps", -600), ("steps", 0), ("dt", 0), ("report_every", -1)])
def test_fit_config_with_non_positive_numbers_refused(files, capsys, key, value):
    import yaml

    raw = yaml.safe_load(FIT.read_text())
    raw["simulation"][key] = value
    cfg = files / "fit.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    _refused(["fit", cfg, "--out", files / "o"], capsys, f"simulation.{key}: {value} must be > 0", cwd_files=files)


def test_fit_refuses_to_replace_an_earlier_fit(files, capsys):
    out = files / "o"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"x")
    _refused(["fit", FIT, "--out", out], capsys, "checkpoint.npz exists", "--resume", "--overwrite", cwd_files=files)
