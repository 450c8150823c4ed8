"""Runs are never lost (issue 19, item 1): SIGINT saves frames, log and checkpoint in agreement and
``--resume`` continues bit for bit; the trajectory writer streams (memory flat in the number of frames)
and truncates to the checkpoint on resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.cli import main
from dmd.trajectory import TrajectoryWriter

ROOT = Path(__file__).resolve().parents[4]
PDB = str(ROOT / "dmd" / "data" / "alanine_dipeptide.pdb")
RUN = ["simulate", "--pdb", PDB, "--forcefield", "amber14-all.xml", "--report-every", "100", "--no-progress"]


def _top():
    return mdtraj.load(PDB).topology


def _checkpoint(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_sigint_keeps_the_run_and_resume_is_bit_identical(tmp_path):
    out = tmp_path / "a.dcd"
    cmd = [sys.executable, "-m", "dmd", "--x64", *RUN, "--steps", "1000000", "--checkpoint-every", "1000"]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    chk = tmp_path / "a.chk.npz"
    t0 = time.time()
    while not chk.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted at step" in stderr and "--resume" in stderr
    # checkpoint, trajectory and log agree on where the run stopped
    ck = _checkpoint(chk)
    info = json.loads(str(ck["info"]))
    step = int(ck["step"])
    assert step >= 1000 and step % 1000 == 0 and info["n_frames"] == step // 100
    assert mdtraj.load(str(out), top=_top()).n_frames == info["n_frames"]
    with open(tmp_path / "a.log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == info["n_frames"] and int(rows[-1]["step"]) == step
    # resume to step + 1000 and compare with one uninterrupted run of as many steps (same process settings:
    # float64, same machine): identical bits
    total = str(step + 1000)
    assert main([*RUN, "--steps", total, "--resume", "--out", str(out)]) == 0
    ref = tmp_path / "b.dcd"
    assert main([*RUN, "--steps", total, "--out", str(ref)]) == 0
    a, b = _checkpoint(chk), _checkpoint(tmp_path / "b.chk.npz")
    assert a["positions"].dtype == np.float64
    for k in ("positions", "velocities", "step"):
        assert np.array_equal(a[k], b[k]), k
    ta, tb = mdtraj.load(str(out), top=_top()), mdtraj.load(str(ref), top=_top())
    assert ta.n_frames == tb.n_frames == int(total) // 100
    assert np.array_equal(ta.xyz, tb.xyz)
    assert (tmp_path / "a.log.csv").read_text() == (tmp_path / "b.log.csv").read_text()


@pytest.mark.parametrize("ext", [".dcd", ".xtc", ".h5"])
def test_resume_truncates_to_the_checkpoint_then_appends(tmp_path, ext):
    top = _top()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 2, (12, top.n_atoms, 3)).astype(np.float32)
    t = np.arange(12) * 0.2
    path = tmp_path / f"t{ext}"
    w = TrajectoryWriter(path, top, box=np.array([3.0, 3.0, 3.0]), buffer_frames=4)
    for k in range(10):  # two batches of 4 reach the file, two frames stay pending
        w.append(x[k : k + 1], t[k : k + 1], [k])
    assert w.n_written == 8 and w.n_frames == 10
    w.flush()
    w2 = TrajectoryWriter(path, top, box=np.array([3.0, 3.0, 3.0]))
    w2.load_existing(6)  # the checkpoint had 6 frames: 4 frames past it are dropped
    w2.append(x[6:12], t[6:12], np.arange(6, 12))
    w2.flush()
    got = mdtraj.load(str(path)) if ext == ".h5" else mdtraj.load(str(path), top=top)
    # DCD stores Å (1e-6 relative rescaling), XTC 1e-3 nm fixed point, HDF5 float32 exactly
    tol = {".dcd": 1e-5, ".xtc": 6e-4, ".h5": 0.0}[ext]
    assert got.n_frames == 12
    np.testing.assert_allclose(got.xyz, x, atol=tol)
    np.testing.assert_allclose(got.unitcell_lengths, 3.0, rtol=1e-6)
    with pytest.raises(Exception, match="expects 20"):
        TrajectoryWriter(path, top).load_existing(20)


def test_writing_many_frames_keeps_memory_flat(tmp_path):
    """10⁵ frames of 22 atoms: the old writer held all of them (26 MB of coordinates alone); the streaming
    writer holds at most one batch (1000 frames, 0.26 MB), so the peak stays under 3 MB."""
    top = _top()
    frame = np.random.default_rng(1).uniform(0, 2, (1000, top.n_atoms, 3)).astype(np.float32)
    path = tmp_path / "big.dcd"
    w = TrajectoryWriter(path, top)
    tracemalloc.start()
    for k in range(100):
        w.append(frame, np.arange(1000) + 1000.0 * k)
    w.flush()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3e6, peak
    assert w.n_written == 100_000
    got = mdtraj.load_frame(str(path), 99_999, top=top)
    np.testing.assert_allclose(got.xyz[0], frame[-1], atol=1e-5)
    assert os.path.getsize(path) > 100_000 * top.n_atoms * 12


def test_defaults_are_the_fields(tmp_path):
    # Issue 19: OpenMM users' defaults (BAOAB, HBonds, amber14 + TIP3P-FB, as `dmd energy`), except where the
    # sensitivities need the seed-form step (and, for the window method, no constraints). No simulation is run.
    from dmd.cli import build_parser
    from dmd.cli.commands.simulate import load_config

    def cfg(*extra):
        args = build_parser().parse_args(
            ["simulate", "--pdb", PDB, "--steps", "10", "--out", str(tmp_path / "t.dcd"), *extra]
        )
        return load_config(args)

    plain = cfg()
    assert (plain["integrator"], plain["constraints"]) == ("baoab", "HBonds")
    assert plain["forcefield"] == ["amber14-all.xml", "amber14/tip3pfb.xml"]
    sens = cfg("--sensitivity", "x")
    assert (sens["integrator"], sens["constraints"]) == ("langevin", "HBonds")
    window = cfg("--sensitivity", "x", "--sensitivity-method", "window", "--window", "5")
    assert (window["integrator"], window["constraints"]) == ("langevin", None)
    assert cfg("--constraints", "None")["constraints"] is None
    with pytest.raises(UserInputError, match="drop --integrator"):
        cfg("--sensitivity", "x", "--integrator", "baoab")


def test_sigint_during_the_minimisation_exits_at_once_with_nothing_written(tmp_path):
    # a real SIGINT through the CLI's handler: before, the flag it set was read only after the whole minimisation and
    # the first 1,000-step chunk (measured 17.1 s after the signal, a checkpoint at step 1000 written; load 4.4);
    # then the minimiser polled it before every 50-iteration chunk (0.4-5.9 s: a signal during a compilation waited
    # for it); now the CLI's watchdog exits at once while nothing is written (dmd.cli.common.stop_on_signals)
    pdb = ROOT / "tests" / "data" / "alanine_dipeptide_water.pdb"
    cmd = [sys.executable, "-m", "dmd", "-v", "simulate", "--pdb", str(pdb), "--steps", "5000", "--minimize"]
    proc = subprocess.Popen(
        [*cmd, "--no-progress", "--out", "m.dcd"], cwd=tmp_path, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    for line in proc.stderr:  # the minimiser's first message: its compilation and iterations follow
        if "minimising" in line:
            break
    time.sleep(1.0)
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    waited = time.perf_counter() - t0
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted before the first frames; nothing was written" in stderr
    # measured 0.02-0.04 s; 3 s leaves room for a loaded machine and stays below the old path's 5.9 s
    assert waited < 3.0, waited
    assert not list(tmp_path.iterdir())  # nothing half-written (before: a checkpoint at step 1000); no --overwrite


def test_sigint_while_the_first_chunk_compiles_exits_at_once(tmp_path):
    # Python runs signal handlers between bytecodes, so a Ctrl-C while XLA compiled the first chunk (seconds of C++)
    # was seen only after the compilation and the whole first chunk: signals 3 s and 9 s after the start exited
    # 12.2 s and 6.4 s later, with a step-1000 checkpoint, trajectory and log written (load 1.2). The watchdog woken
    # by the C-level handler (signal.set_wakeup_fd) exits before the first frames at once: 0.02-0.04 s, no files.
    pdb = ROOT / "tests" / "data" / "alanine_dipeptide_water.pdb"
    cmd = [sys.executable, "-m", "dmd", "-vv", "simulate", "--pdb", str(pdb), "--steps", "2000", "--no-cache"]
    env = dict(os.environ, JAX_LOG_COMPILES="1")  # "Compiling jit(chunk)" marks the start of the long compilation
    proc = subprocess.Popen(
        [*cmd, "--no-progress", "--out", "m.dcd"], cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "Compiling jit(chunk)" in line:
            break
    time.sleep(0.3)
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    stderr = "".join(seen) + proc.stderr.read()
    proc.wait(timeout=120)
    waited = time.perf_counter() - t0
    assert proc.returncode == 143, stderr[-2000:]
    assert "Finished XLA compilation of jit(chunk)" not in stderr  # the signal did land inside the compilation
    assert "interrupted before the first frames; nothing was written" in stderr and "Traceback" not in stderr
    assert waited < 3.0, waited  # measured 0.02-0.04 s; the chunk's compilation alone takes several seconds
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--out", "x.txt"], "unknown trajectory format '.txt'"),
        (["--out", "x.dcd", "--dt", "0"], "--dt 0.0: pass a positive time step"),
        (["--out", "x.dcd", "--report-every", "0"], "--report-every 0: pass a positive number"),
    ],
)
def test_bad_settings_are_refused_before_the_minimising_line(tmp_path, capsys, monkeypatch, bad, message):
    # these were checked inside simulate(), after "minimising ..." was printed and the system built (4.2 s for the
    # bad suffix, load 4.9); now at the boundary with the other checks (0.95 s end to end, the same load)
    monkeypatch.chdir(tmp_path)
    assert main([*RUN[:-1], "--steps", "10", "--minimize", *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and "minimising" not in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("rebuild_env", [None, "xla"])
def test_short_cached_runs_take_the_numba_kernels_and_the_rebuild_kernel_from_the_environment(monkeypatch, rebuild_env):
    """The numba kernels are XLA custom calls, which JAX's persistent cache stores: a short cached run takes them
    too (the pair force's and the rebuild's custom calls in its programs; no 500-step rule), and a user's
    DMD_REBUILD_KERNEL chooses the rebuild whatever the run length (it was ignored on short cached runs)."""
    import jax
    import jax.numpy as jnp

    from dmd.cli.commands.simulate import build_system

    monkeypatch.setenv("JAX_ENABLE_COMPILATION_CACHE", "true")
    if rebuild_env is None:
        monkeypatch.delenv("DMD_REBUILD_KERNEL", raising=False)
    else:
        monkeypatch.setenv("DMD_REBUILD_KERNEL", rebuild_env)
    pdb = Path(__file__).parents[3] / "data" / "alanine_dipeptide_water.pdb"
    cfg = dict(
        pdb=str(pdb),
        forcefield=["amber14-all.xml", "amber14/tip3pfb.xml"],
        nonbonded="PME",
        cutoff=0.9,
        constraints="HBonds",
        rigid_water=True,
        pair_kernel="auto",
        steps=10,
    )
    system = build_system(cfg)
    assert system.neighbor_fn.rebuild_kernel == (rebuild_env or "numba")
    x = jnp.asarray(system.positions, jnp.float32)
    nb = system.neighbor_fn.allocate(x, box=system.box, build=False)
    energy = str(jax.make_jaxpr(lambda y: system.energy_fn(system.params, y, box=system.box, neighbor=nb))(x))
    update = str(jax.make_jaxpr(lambda y: system.neighbor_fn.update(y, nb, box=system.box))(x))
    assert "dmd_pair_forces_v1" in energy and "pure_callback" not in energy
    numba_rebuild = any(f"dmd_{build}_f32_v1" in update for build in ("cell_rows", "all_pair_rows"))
    assert numba_rebuild == (rebuild_env is None) and "pure_callback" not in update
