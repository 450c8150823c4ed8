"""Trajectory frames (mdtraj formats: DCD, XTC, HDF5 by extension) and the energy/temperature CSV log.

Both writers *stream*: frames and rows are appended to their file in batches (at every flush and whenever
``buffer_frames`` frames are pending), so memory does not grow with the number of frames and a run killed
at any point leaves every frame written so far. A file may then hold a few frames past the last checkpoint;
a resumed run truncates it back to the checkpoint's frame count (:meth:`TrajectoryWriter.load_existing`),
then appends. A fresh run's first write replaces an older file atomically (:func:`dmd.base.io.atomic_path`).

Appending goes through mdtraj's writers into a temporary file whose frames are then attached to the output:
DCD frames have a fixed size (the header's frame counts at bytes 8 and 20 are updated after the frames are
written), XTC frames are self-delimiting (bytes concatenate), HDF5 is appended in place (``mode="a"``).
Positions are nm, time ps, box nm (mdtraj's units; DCD stores Å, converted here as mdtraj does).
"""

from __future__ import annotations

import csv
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from dmd.base.errors import UserInputError
from dmd.base.io import atomic_path

__all__ = ["TRAJECTORY_FORMATS", "LOG_COLUMNS", "TrajectoryWriter", "EnergyLog", "mdtraj_topology", "check_out_path"]

TRAJECTORY_FORMATS = {".dcd": "DCD", ".xtc": "XTC", ".h5": "HDF5", ".hdf5": "HDF5"}
LOG_COLUMNS = ("step", "time_ps", "potential_kj_mol", "kinetic_kj_mol", "total_kj_mol", "temperature_K")
NM_TO_ANGSTROM = 10.0


def check_out_path(path: str | os.PathLike) -> Path:
    """Validate a trajectory output path's extension."""
    p = Path(path)
    if p.suffix.lower() not in TRAJECTORY_FORMATS:
        raise UserInputError(
            f"--out {path}: unknown trajectory format {p.suffix!r}; use one of "
            f"{', '.join(TRAJECTORY_FORMATS)} (e.g. --out traj.dcd)"
        )
    return p


def mdtraj_topology(system):
    """mdtraj Topology of a System: from its OpenMM topology, else one 'LJ' residue per atom."""
    import mdtraj

    if system.topology is not None:
        return mdtraj.Topology.from_openmm(system.topology)
    top = mdtraj.Topology()
    chain = top.add_chain()
    names = system.metadata.get("types") or ["X"] * system.n_atoms
    # model particles have no element of their own: argon is a neutral stand-in that viewers draw
    element = mdtraj.element.get_by_symbol("Ar")
    for i in range(system.n_atoms):
        res = top.add_residue("MOD", chain, resSeq=i + 1)
        top.add_atom(str(names[i]), element, res)
    return top


def _box_lengths(box, n_frames: int):
    """(lengths [n, 3] nm, angles [n, 3] degrees) of a ``[3]`` or ``[3, 3]`` nm box, or (None, None)."""
    if box is None:
        return None, None
    b = np.asarray(box, dtype=float)
    if b.ndim == 2:
        lengths = np.linalg.norm(b, axis=1)
        a, bb, c = b
        ang = [
            np.degrees(np.arccos(np.dot(bb, c) / (lengths[1] * lengths[2]))),
            np.degrees(np.arccos(np.dot(a, c) / (lengths[0] * lengths[2]))),
            np.degrees(np.arccos(np.dot(a, bb) / (lengths[0] * lengths[1]))),
        ]
    else:
        lengths, ang = b, [90.0, 90.0, 90.0]
    return np.tile(lengths, (n_frames, 1)), np.tile(ang, (n_frames, 1))


def _sync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


# -- DCD: fixed-size frames after a header; frame counts at bytes 8 (NSET) and 20 (NSTEP) -----------------
def _dcd_header_size(fh) -> int:
    fh.seek(92)  # record 1 is 4 + 84 + 4 bytes; record 2 (titles) starts with its length
    (title_len,) = struct.unpack("<i", fh.read(4))
    return 92 + 4 + title_len + 4 + 12  # + record 3 (n_atoms): 4 + 4 + 4


def _dcd_frame_size(n_atoms: int, has_box: bool) -> int:
    return (4 + 48 + 4 if has_box else 0) + 3 * (4 + 4 * n_atoms + 4)


def _dcd_set_count(fh, n: int) -> None:
    for offset in (8, 20):
        fh.seek(offset)
        fh.write(struct.pack("<i", n))


class TrajectoryWriter:
    """Streams frames to a trajectory file through mdtraj (format from the extension).

    Args:
      path: output, ``.dcd``, ``.xtc``, ``.h5`` or ``.hdf5``.
      topology: ``mdtraj.Topology``.
      box: ``[3]`` or ``[3, 3]`` nm, or None.
      inputs: input files the output must not overwrite.
      buffer_frames: pending frames that trigger a write (memory bound: ``buffer_frames × n_atoms × 12`` bytes).
    """

    def __init__(self, path, topology, box=None, inputs=(), buffer_frames: int = 1000):
        self.path = check_out_path(path)
        self.format = TRAJECTORY_FORMATS[self.path.suffix.lower()]
        self.topology = topology
        self.box = box
        self.inputs = tuple(inputs)
        self.buffer_frames = int(buffer_frames)
        self.n_written = 0  # frames in the file
        self.fresh = True  # the next write replaces any older file instead of appending to it
        self._xyz: list[np.ndarray] = []
        self._time: list[float] = []
        self._step: list[int] = []
        self._boxes: list = []  # per-frame [3] box lengths (constant pressure), else empty

    @property
    def n_frames(self) -> int:
        """Frames of the run so far (in the file and pending)."""
        return self.n_written + len(self._xyz)

    def append(self, xyz, time_ps, steps=None, boxes=None) -> None:
        """Add frames: ``xyz [n_frames, n_atoms, 3]`` nm, ``time_ps [n_frames]``, ``steps [n_frames]`` (XTC),
        ``boxes [n_frames, 3]`` or ``[n_frames, 3, 3]`` nm per-frame boxes (constant pressure; default ``self.box``)."""
        time_ps = np.atleast_1d(np.asarray(time_ps, float))
        steps = np.zeros(len(time_ps), int) if steps is None else np.atleast_1d(steps)
        if boxes is not None:
            self._boxes.extend(np.asarray(boxes, float).reshape(len(time_ps), -1))  # [3] or flattened [3, 3]
        for x, t, s in zip(np.asarray(xyz, np.float32), time_ps, steps, strict=True):
            self._xyz.append(x)
            self._time.append(float(t))
            self._step.append(int(s))
        if len(self._xyz) >= self.buffer_frames:
            self.flush()

    def _count(self) -> int:
        """Frames in the existing file."""
        if self.format == "DCD":
            with open(self.path, "rb") as fh:
                hdr = _dcd_header_size(fh)
            size = self.path.stat().st_size
            return (size - hdr) // _dcd_frame_size(self.topology.n_atoms, self.box is not None)
        from mdtraj.formats import HDF5TrajectoryFile, XTCTrajectoryFile

        opener = XTCTrajectoryFile if self.format == "XTC" else HDF5TrajectoryFile
        with opener(str(self.path)) as f:
            return len(f)

    def load_existing(self, n_frames: int) -> None:
        """For a resumed run: keep the first ``n_frames`` frames of the file (truncate the rest), append after."""
        self._xyz, self._time, self._step = [], [], []
        self.n_written, self.fresh = 0, True
        if n_frames == 0:
            return
        if not self.path.exists():
            raise UserInputError(f"{self.path}: the checkpoint expects {n_frames} frames here but the file is missing")
        have = self._count()
        if have < n_frames:
            raise UserInputError(
                f"{self.path}: has {have} frames but the checkpoint expects {n_frames}; "
                "resume with the trajectory written alongside that checkpoint"
            )
        if have > n_frames or self.format == "DCD":  # DCD: also drop a torn last frame and fix the counts
            self._truncate(n_frames)
        self.n_written, self.fresh = n_frames, False

    def _truncate(self, n: int) -> None:
        if self.format == "DCD":
            with open(self.path, "r+b") as fh:
                hdr = _dcd_header_size(fh)
                fh.truncate(hdr + n * _dcd_frame_size(self.topology.n_atoms, self.box is not None))
                _dcd_set_count(fh, n)
                _sync(fh)
        elif self.format == "XTC":
            from mdtraj.formats import XTCTrajectoryFile

            with XTCTrajectoryFile(str(self.path)) as f:
                end = int(f.offsets[n])
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
                _sync(fh)
        else:
            import tables

            with tables.open_file(str(self.path), "a") as h5:
                for name in ("coordinates", "time", "cell_lengths", "cell_angles"):
                    if name in h5.root:
                        h5.get_node(h5.root, name).truncate(n)

    def _write(self, path: Path, mode: str, xyz, time, steps) -> None:
        """Write frames to ``path`` with mdtraj's file class (``mode`` "w", or "a" for HDF5)."""
        from mdtraj.formats import DCDTrajectoryFile, HDF5TrajectoryFile, XTCTrajectoryFile

        lengths, angles = _box_lengths(self.box, len(xyz))
        if len(self._boxes) == len(xyz) and lengths is not None:
            per = [_box_lengths(bx.reshape(3, 3) if bx.size == 9 else bx, 1) for bx in self._boxes]
            lengths, angles = np.concatenate([p[0] for p in per]), np.concatenate([p[1] for p in per])
        if self.format == "DCD":
            with DCDTrajectoryFile(str(path), "w", force_overwrite=True) as f:
                scaled = None if lengths is None else lengths * NM_TO_ANGSTROM
                f.write(xyz * NM_TO_ANGSTROM, cell_lengths=scaled, cell_angles=angles)
        elif self.format == "XTC":
            vectors = None
            if lengths is not None:
                import mdtraj

                vectors = mdtraj.utils.lengths_and_angles_to_box_vectors(*lengths.T, *angles.T)
                vectors = np.stack(vectors, axis=1).astype(np.float32)
            with XTCTrajectoryFile(str(path), "w", force_overwrite=True) as f:
                f.write(xyz, time=time.astype(np.float32), step=steps.astype(np.int32), box=vectors)
        else:
            with HDF5TrajectoryFile(str(path), mode, force_overwrite=True) as f:
                if mode == "w":
                    f.topology = self.topology
                f.write(coordinates=xyz, time=time, cell_lengths=lengths, cell_angles=angles)

    def flush(self) -> None:
        """Append the pending frames to the file (a fresh writer's first flush replaces any older file)."""
        if not self._xyz:
            return
        xyz = np.stack(self._xyz)
        time, steps = np.asarray(self._time), np.asarray(self._step)
        if self.fresh:
            with atomic_path(self.path, self.inputs) as tmp:
                self._write(tmp, "w", xyz, time, steps)
        elif self.format == "HDF5":
            self._write(self.path, "a", xyz, time, steps)
        else:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix, dir=self.path.parent)
            os.close(fd)
            tmp = Path(name)
            try:
                self._write(tmp, "w", xyz, time, steps)
                data = tmp.read_bytes()
            finally:
                tmp.unlink()
            if self.format == "XTC":
                with open(self.path, "ab") as fh:
                    fh.write(data)
                    _sync(fh)
            else:
                frames = data[len(data) - len(xyz) * _dcd_frame_size(xyz.shape[1], self.box is not None) :]
                with open(self.path, "r+b") as fh:
                    hdr = _dcd_header_size(fh)
                    fh.seek(hdr + self.n_written * _dcd_frame_size(xyz.shape[1], self.box is not None))
                    fh.write(frames)
                    fh.truncate()
                    _sync(fh)  # frames first, then the counts: a kill in between leaves extra bytes, not a lie
                    _dcd_set_count(fh, self.n_written + len(xyz))
                    _sync(fh)
        self.n_written += len(xyz)
        self.fresh = False
        self._xyz, self._time, self._step, self._boxes = [], [], [], []


class EnergyLog:
    """The energy/temperature CSV log (columns :data:`LOG_COLUMNS`), streamed like :class:`TrajectoryWriter`.

    The rows (6 numbers per frame) also stay in memory for :meth:`as_array` (the run's summary).
    """

    def __init__(self, path, inputs=()):
        self.path = Path(path)
        self.inputs = tuple(inputs)
        self.rows: list[tuple] = []
        self.n_written = 0
        self.fresh = True

    def append(self, rows) -> None:
        for r in rows:
            self.rows.append(tuple(r))

    def load_existing(self, n_rows: int) -> None:
        """For a resumed run: keep (and reload) the first ``n_rows`` rows; later rows are dropped."""
        self.rows, self.n_written, self.fresh = [], 0, True
        if n_rows == 0:
            return
        if not self.path.exists():
            raise UserInputError(f"{self.path}: the checkpoint expects {n_rows} log rows here but the file is missing")
        with open(self.path, newline="") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for r in reader:
                if len(self.rows) == n_rows:
                    break
                if len(r) == len(LOG_COLUMNS):
                    self.rows.append((int(r[0]), *map(float, r[1:])))
        if len(self.rows) < n_rows:
            raise UserInputError(f"{self.path}: has {len(self.rows)} rows but the checkpoint expects {n_rows}")
        self._write_all()  # drops rows past the checkpoint (and a torn last line)

    @staticmethod
    def _format(r) -> list:
        return [r[0], *(repr(float(x)) for x in r[1:])]

    def _write_all(self) -> None:
        with atomic_path(self.path, self.inputs) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(LOG_COLUMNS)
                w.writerows(self._format(r) for r in self.rows)
        self.n_written, self.fresh = len(self.rows), False

    def flush(self) -> None:
        """Append the rows not yet in the file (a fresh log's first flush replaces any older file)."""
        if self.fresh:
            self._write_all()
            return
        if self.n_written == len(self.rows):
            return
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerows(self._format(r) for r in self.rows[self.n_written :])
            _sync(fh)
        self.n_written = len(self.rows)

    def as_array(self) -> np.ndarray:
        return np.asarray([r[1:] for r in self.rows], float).reshape(-1, len(LOG_COLUMNS) - 1)
