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


# -- output conventions: --json, -v/-q, third-party chatter ------------------------------------------------------


def test_every_command_takes_json_quiet_verbose_overwrite_in_either_place(capsys):
    from dmd.cli import COMMANDS, build_parser, output_level

    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = capsys.readouterr().out
        for flag in ("--json", "-q, --quiet", "-v, --verbose"):
            assert flag in text, (name, flag)
        if name != "energy":  # every command that writes files
            assert "--overwrite" in text or "--resume" in text, name
        if "--overwrite" in text:  # one declaration for all (dmd.cli.common.add_overwrite_argument): same wording
            assert "(default: refuse)" in " ".join(text.split()), name
    args = parser.parse_args(["-v", "energy", "--pdb", "x.pdb", "-v", "--json"])
    assert output_level(args) == 2 and args.json and not args.quiet
    args = parser.parse_args(["index", "p.txt", "-vv"])
    assert output_level(args) == 2
    args = parser.parse_args(["-q", "index", "p.txt"])
    assert args.quiet and not args.json and output_level(args) == -1


def test_emit_prints_text_or_one_json_object(capsys):
    import json
    from types import SimpleNamespace

    import numpy as np

    from dmd.cli.common import emit

    summary = {"total_kj_mol": np.float64(-32.33212345678901), "cell": np.array([3.785, 9.514]), "m20": float("inf")}
    emit(SimpleNamespace(json=False), summary, "total -32.332 kJ/mol")
    assert capsys.readouterr().out == "total -32.332 kJ/mol\n"
    emit(SimpleNamespace(json=True), summary, "total -32.332 kJ/mol")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    got = json.loads(out)
    assert got == {"total_kj_mol": -32.33212345678901, "cell": [3.785, 9.514], "m20": "inf"}  # full precision


def test_quiet_silences_bars_info_and_third_party_logs(capsys):
    import logging

    from dmd.base.progress import progress_bar
    from dmd.cli.common import info, output_settings, setup_output

    with output_settings(-1):
        bar = progress_bar(total=3, desc="steps", enabled=True)
        bar.update(3)
        bar.close()
        info("resuming from x.chk.npz")
        logging.getLogger("dmd.test").warning("a warning")
        assert capsys.readouterr().err == ""
        setup_output(0)  # normal: our warnings and info lines, not jax's warnings
        info("resuming from x.chk.npz")
        logging.getLogger("jax._src.xla_bridge").warning("An NVIDIA GPU may be present on this machine")
        logging.getLogger("dmd.test").info("an info record")
        err = capsys.readouterr().err
        assert err == "resuming from x.chk.npz\n", err
        setup_output(1)  # -v: our INFO records and third-party warnings
        logging.getLogger("jax._src.xla_bridge").warning("GPU?")
        logging.getLogger("dmd.test").info("an info record")
        err = capsys.readouterr().err
        assert "dmd: WARNING jax._src.xla_bridge: GPU?" in err and "dmd: INFO dmd.test: an info record" in err
        setup_output(2)  # -vv: DEBUG everywhere but numba's compiler trace (11,700 lines, tracebacks included)
        logging.getLogger("jax._src.dispatch").debug("jax debug")
        logging.getLogger("numba.core.lowering").debug("Traceback (most recent call last): ...")
        logging.getLogger("numba.core.lowering").warning("a numba warning")
        err = capsys.readouterr().err
        assert "jax debug" in err and "Traceback" not in err and "a numba warning" in err, err


def test_a_command_run_in_process_leaves_logging_warnings_and_bars_as_they_were(tmp_path):
    """``dmd.cli.main`` in a notebook or a test: -q and normal mode change logging levels, handlers and warning
    filters for the command only (they used to stay changed for the rest of the process)."""
    import logging
    import warnings

    from dmd.base.progress import progress_enabled
    from dmd.cli import main

    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("jax").level, warnings.filters[:],
              warnings.formatwarning, progress_enabled())  # fmt: skip
    for flags in (["-q"], []):
        rc = main([*flags, "index", str(tmp_path / "missing.txt"), "--units", "d"])
        assert rc == 2  # refused (no such file) after the output setup ran
        after = (root.level, list(root.handlers), logging.getLogger("jax").level, warnings.filters[:],
                 warnings.formatwarning, progress_enabled())  # fmt: skip
        assert after == before


def test_dcdplugin_lines_kept_off_stdout(tmp_path):
    """mdtraj's VMD DCD reader prints two ``dcdplugin)`` lines to fd 1 from C on every open: off stdout in every
    mode, off stderr too unless -vv. (A subprocess: pytest's own capture replaces fd 1.)"""
    import subprocess
    import sys

    code = (
        "import sys, mdtraj\n"
        "from dmd.cli.common import c_stdout_to_stderr\n"
        "with c_stdout_to_stderr(shown=sys.argv[1] == '1'):\n"
        f"    mdtraj.formats.DCDTrajectoryFile({str(TRAJ)!r}).close()\n"
        "    print('summary')\n"
    )
    for shown in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", code, shown], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "summary\n", r.stdout
        assert ("dcdplugin)" in r.stderr) == (shown == "1"), r.stderr


def test_error_starts_on_its_own_line_after_an_open_progress_bar(monkeypatch, capsys):
    from dmd.base.errors import UserInputError
    from dmd.base.progress import progress_bar
    from dmd.cli.commands import crystal

    def run(args):
        bar = progress_bar(total=10, desc="frames", unit="frame")
        bar.update(3)
        raise UserInputError("x.dcd: frame 4 has no box; pass --top with CRYST1")

    monkeypatch.setattr(crystal, "run", run)
    assert main(["crystal", str(SI), "--out", "never.pdb"]) == 2
    err = capsys.readouterr().err
    assert "frames" in err  # the bar was shown ...
    assert err.split("\n")[-2].startswith("dmd crystal: error: x.dcd: frame 4")  # ... and closed before the error


def test_stdout_holds_only_the_summary(monkeypatch, capsys):
    import json

    from dmd.cli.commands import crystal
    from dmd.cli.common import emit

    def run(args):
        print("F store 2.1 GB > memory cap 1.0 GB: streaming it from f.h5")  # a library's status line
        emit(args, {"atoms": 1224, "solvent_fraction": 0.4123}, "c.pdb: 1224 atoms, solvent fraction 0.412")
        return 0

    monkeypatch.setattr(crystal, "run", run)
    assert main(["crystal", str(SI), "--out", "c.pdb", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out) == {"atoms": 1224, "solvent_fraction": 0.4123}
    assert "streaming it from f.h5" in cap.err
    assert main(["crystal", str(SI), "--out", "c.pdb"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "c.pdb: 1224 atoms, solvent fraction 0.412\n" and "F store" in cap.err


def test_help_shows_every_option_with_a_description_and_its_default(capsys):
    from dmd.cli import COMMANDS, build_parser

    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # unwrapped
        if name == "xrd-refine":
            assert "--steps STEPS Adam steps per start (default: 400)" in text
            assert "--constraint {p1,family,spacegroup} free parameters" in text
        if name == "merge":
            assert "--surrogate {truncated_normal,folded_normal} variational family of q(F) (default: truncated" in text
        if name == "diffuse":
            assert "(default: fft)" in text


def test_crystal_json_is_the_written_summary(tmp_path, capsys):
    import json

    pdb = ROOT / "tests" / "data" / "crystal" / "5e5z.pdb"
    out = tmp_path / "c.pdb"
    assert main(["crystal", str(pdb), "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    printed = json.loads(cap.out)
    assert printed == json.loads(out.with_suffix(".json").read_text())
    assert printed["atoms"] > 0 and printed["copies"] == 2
    assert main(["crystal", str(pdb), "--out", str(out), "--overwrite"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith(f"{out}: {printed['atoms']} atoms") and len(cap.out.splitlines()) == 1
    assert main(["-q", "crystal", str(pdb), "--out", str(out), "--overwrite"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out.startswith(f"{out}:")


def test_refusals_come_before_the_heavy_imports(files):
    """In a fresh process every command refuses a bad output or input without importing jax, OpenMM, gemmi or
    mdtraj (the checks used to come after 30-80 s of imports and setup)."""
    import json
    import subprocess
    import sys

    (files / "old").mkdir()
    for name in ("summary.json", "refined.cif", "checkpoint.npz"):
        (files / "old" / name).write_text("{}")
    old, empty = str(files / "old"), str(files / "empty.pdb")
    taken = str(files / "afile")
    cases = [
        ["reweight", "--traj", str(RW / "traj.dcd"), "--data", str(RW / "data.mtz"), "--column", "I", "--out", old],
        ["merge", str(RW / "data.mtz"), "--out", str(RW / "data.mtz")],
        ["xrd-refine", str(PATTERN), "--start", str(START), "--out", old],
        ["diffuse", "--traj", str(TRAJ), "--top", empty, "--d-min", "3", "--out", str(files / "d.mtz")],
        ["fit", str(FIT), "--out", old],
        ["index", str(PEAKS), "--out", taken],
        ["xrd", empty, "--out", str(files / "x.csv")],
        ["crystal", empty, "--out", str(files / "c.pdb")],
        ["energy", "--pdb", empty],
        ["simulate", "--pdb", empty, "--forcefield", "amber14-all.xml", "--steps", "9", "--out", str(files / "t.dcd")],
    ]
    code = (
        "import json, sys\n"
        "from dmd.cli import main\n"
        "rcs = [main(a) for a in json.loads(sys.argv[1])]\n"
        "heavy = sorted(m for m in ('jax', 'openmm', 'gemmi', 'mdtraj') if m in sys.modules)\n"
        "print(json.dumps({'rcs': rcs, 'heavy': heavy}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True, timeout=60)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["rcs"] == [2] * len(cases), r.stderr
    assert got["heavy"] == [], got
    assert len(r.stderr.strip().splitlines()) == len(cases), r.stderr  # one line each


def test_a_warning_is_one_line_and_quiet_drops_it():
    """Python's warning form (file, line, source line) becomes ``dmd: warning: FIRST LINE``; -q shows none. (A
    subprocess: pytest records warnings itself.)"""
    import subprocess
    import sys

    code = (
        "import sys, warnings\n"
        "from dmd.cli import main\n"
        "from dmd.cli.commands import crystal\n"
        "def run(args):\n"
        "    warnings.warn('only 2 frames: the estimate is noisy\\n  (more)', RuntimeWarning)\n"
        "    return 0\n"
        "crystal.run = run\n"
        f"sys.exit(main([*sys.argv[1:], 'crystal', {str(SI)!r}, '--out', 'never.pdb']))\n"
    )
    for flags, expect in (([], "dmd: warning: only 2 frames: the estimate is noisy\n"), (["-q"], "")):
        r = subprocess.run([sys.executable, "-c", code, *flags], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == expect, r.stderr


def test_index_of_a_folder_where_nothing_indexes_exits_3(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("4.2\n3.1\n")  # two lines: too few to index
    assert main(["index", str(tmp_path), "--units", "d", "--jobs", "1"]) == 3
    err = capsys.readouterr().err
    assert "indexed 0/1 patterns" in err and err.strip().splitlines()[-1].startswith("dmd index: no result:")
