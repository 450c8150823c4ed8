"""Multi-process runs on jax.distributed: 2 local processes (gloo CPU collectives, localhost coordinator)
give the single-process diffuse map to float round-off (and so do 4 forced host devices); processes that disagree
on inputs all stop with the same clear message and write nothing."""

from __future__ import annotations

import json
import os
import sys

import gemmi
import numpy as np

from dmd.distributed import free_local_port

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
TRAJ = os.path.join(DATA, "sf_villin_traj.dcd")
TOP = os.path.join(DATA, "sf_villin_top.pdb")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _diffuse(out, extra=(), traj=TRAJ):
    return [sys.executable, "-m", "dmd", "diffuse", "--traj", traj, "--top", TOP, "--d-min", "6", "--stride", "4",
            "--chunk", "2", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def _column(path, label):
    return np.asarray(gemmi.read_mtz_file(str(path)).column_with_label(label), np.float64)


def test_two_processes_diffuse_equals_single_process(tmp_path, launch, distributed_flags):
    single, multi = tmp_path / "single.mtz", tmp_path / "multi.mtz"
    port = free_local_port()
    # the single-process reference runs beside the two processes (both cores busy: less wall time)
    rc, out = launch([_diffuse(multi, distributed_flags(i, port)) for i in range(2)] + [_diffuse(single)])
    assert rc == [0, 0, 0], out
    # the frames were split: each process's device computed F of its own frames of every chunk (one frames mesh
    # over both processes), float64 sums added over processes
    for label in ("ID", "MEANF2", "FMEAN"):
        a, b = _column(single, label), _column(multi, label)
        # float32 MTZ columns of float64 sums added in another order: round-off, far below the 1e-2 signal
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6 * np.abs(a).max())
    assert json.load(open(tmp_path / "multi.json"))["devices"] == 2  # one frames mesh over both processes
    # one process on 4 forced host devices: the same map
    four = tmp_path / "four.mtz"
    rc, out = launch([_diffuse(four)], XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert rc == [0], out
    for label in ("ID", "MEANF2", "FMEAN"):
        a, b = _column(single, label), _column(four, label)
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6 * np.abs(a).max())
    assert json.load(open(tmp_path / "four.json"))["devices"] == 4  # each chunk's frames split over 4 devices
    assert sorted(os.listdir(tmp_path)) == ["four.json", "four.mtz", "four.png", "multi.json", "multi.mtz", "multi.png",
                                            "single.json", "single.mtz", "single.png"]  # fmt: skip


def test_processes_disagreeing_on_input_stop_with_message_and_write_nothing(tmp_path, launch, distributed_flags):
    other = tmp_path / "other.dcd"
    data = open(TRAJ, "rb").read()
    other.write_bytes(data[: len(data) // 2])  # a shorter trajectory on process 1
    port = free_local_port()
    out = tmp_path / "x.mtz"
    rc, outs = launch(
        [_diffuse(out, distributed_flags(0, port)), _diffuse(out, distributed_flags(1, port), traj=str(other))]
    )
    assert rc[0] != 0 and rc[1] != 0, outs
    for o in outs:
        assert "processes disagree on the input file" in o and "Traceback" not in o, o
    assert not any(p.name.startswith("x.") for p in tmp_path.iterdir())


RW = os.path.join(ROOT, "dmd", "data", "reweight")


def _reweight(out, extra=()):
    return [sys.executable, "-m", "dmd", "reweight", "--traj", os.path.join(RW, "traj.dcd"), "--top",
            os.path.join(RW, "top.pdb"), "--data", os.path.join(RW, "data.mtz"), "--column", "IDIFF", "--d-min", "3",
            "--steps", "60", "--folds", "3", "--theta-grid", "1e-2", "--blocks", "3", "--no-greedy", "--quiet",
            "--out", str(out), *extra]  # fmt: skip


def _weights(folder):
    rows = open(os.path.join(folder, "weights.csv")).read().splitlines()[1:]
    return np.array([float(r.split(",")[-1]) for r in rows])


def test_two_processes_reweight_equals_single_process(tmp_path, launch, distributed_flags):
    port = free_local_port()
    # the single-process reference runs beside the two processes (both cores busy: less wall time)
    rc, out = launch(
        [_reweight(tmp_path / "multi", distributed_flags(i, port)) for i in range(2)] + [_reweight(tmp_path / "single")]
    )
    assert rc == [0, 0, 0], out
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "multi")
    assert a.shape == b.shape == (60,)
    # frames sharded over 2 processes: the objective's sums are reduced in another order, so the weights agree
    # to optimiser round-off (measured 1.1e-8), far below the 1e-2 differences between frames
    np.testing.assert_allclose(b, a, atol=1e-6)
    # only process 0 wrote: one output folder, the same files as the single-process run
    assert sorted(os.listdir(tmp_path / "multi")) == sorted(os.listdir(tmp_path / "single"))
