"""Streamed trajectories (dmd/trajectory.py) read back by mdtraj, the format oracle: batched appends, a resumed
run truncating to its checkpoint's frame count, per-frame boxes; and the energy CSV log."""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.trajectory import EnergyLog, TrajectoryWriter, check_out_path

N_ATOMS = 5
# precision of each format as mdtraj stores it: DCD float32 Å, XTC fixed point 1e-3 nm, HDF5 float32 nm
ATOL = {".dcd": 1e-5, ".xtc": 6e-4, ".h5": 1e-6}


def _topology():
    top = mdtraj.Topology()
    chain = top.add_chain()
    for i in range(N_ATOMS):
        top.add_atom("AR", mdtraj.element.argon, top.add_residue("AR", chain, resSeq=i + 1))
    return top


def _frames(n, seed):
    return np.random.default_rng(seed).uniform(0.0, 2.0, size=(n, N_ATOMS, 3))


@pytest.mark.parametrize("ext", [".dcd", ".xtc", ".h5"])
def test_frames_appended_in_batches_and_after_a_resume_read_back(tmp_path, ext):
    path, top, box = tmp_path / f"t{ext}", _topology(), np.array([2.0, 2.5, 3.0])
    first, second = _frames(7, 0), _frames(4, 1)
    writer = TrajectoryWriter(path, top, box=box, buffer_frames=3)  # flushes at 3 and 6 pending frames
    writer.append(first, np.arange(7) * 0.1, steps=np.arange(7) * 10)
    writer.flush()
    assert writer.n_written == 7
    resumed = TrajectoryWriter(path, top, box=box, buffer_frames=3)  # the checkpoint was at frame 5
    resumed.load_existing(5)
    resumed.append(second, 0.5 + np.arange(4) * 0.1, steps=50 + np.arange(4) * 10)
    resumed.flush()
    traj = mdtraj.load(str(path), **({} if ext == ".h5" else {"top": top}))  # HDF5 carries its topology
    expected = np.concatenate([first[:5], second])
    assert traj.n_frames == 9
    np.testing.assert_allclose(traj.xyz, expected, atol=ATOL[ext])
    np.testing.assert_allclose(traj.unitcell_lengths, np.broadcast_to(box, (9, 3)), atol=ATOL[ext])
    with pytest.raises(UserInputError, match="has 9 frames but the checkpoint expects 12"):
        TrajectoryWriter(path, top, box=box).load_existing(12)


def test_per_frame_boxes_of_a_constant_pressure_run(tmp_path):
    boxes = np.array([[2.0, 2.0, 2.0], [2.1, 2.05, 1.95], [2.2, 2.1, 1.9]])
    writer = TrajectoryWriter(tmp_path / "npt.dcd", _topology(), box=boxes[0])
    writer.append(_frames(3, 2), np.arange(3) * 0.1, boxes=boxes)
    writer.flush()
    traj = mdtraj.load(str(tmp_path / "npt.dcd"), top=_topology())
    np.testing.assert_allclose(traj.unitcell_lengths, boxes, atol=1e-5)  # float32 Å


def test_energy_log_rows_and_resume(tmp_path):
    rows = [(10 * i, 0.02 * i, -100.0 + i / 3, 50.0, -50.0 + i / 3, 300.0 + i / 7) for i in range(6)]
    later = [(s + 1, *(x + 1.0 for x in r)) for s, *r in rows[4:]]  # a resumed run's different last rows
    log = EnergyLog(tmp_path / "log.csv")
    log.append(rows)
    log.flush()
    again = EnergyLog(tmp_path / "log.csv")
    again.load_existing(4)
    again.append(later)
    again.flush()
    back = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True)
    expected = np.array(rows[:4] + later, float)
    # floats are written as repr(): the CSV round trip is exact
    np.testing.assert_array_equal(np.column_stack([back[n] for n in back.dtype.names]), expected)
    np.testing.assert_array_equal(again.as_array(), expected[:, 1:])


def test_unknown_extension_is_refused():
    with pytest.raises(UserInputError, match=r"unknown trajectory format '\.pdb'"):
        check_out_path("out.pdb")
