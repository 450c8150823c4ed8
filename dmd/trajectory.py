"""Trajectory frames (mdtraj: DCD, XTC, HDF5 by extension) and the energy/temperature CSV log.

Writers keep the run's frames / rows in memory and rewrite their file atomically at every flush
(:func:`dmd.base.io.atomic_path`), so an interrupted run leaves the file of its last checkpoint,
never a half-written one; a resumed run reloads the first ``n`` frames / rows and continues.
Positions are nm, time ps, box nm (mdtraj's units; DCD stores Å internally, mdtraj converts).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from dmd.base.errors import UserInputError
from dmd.base.io import atomic_path

__all__ = ["TRAJECTORY_FORMATS", "LOG_COLUMNS", "TrajectoryWriter", "EnergyLog", "mdtraj_topology", "check_out_path"]

TRAJECTORY_FORMATS = {".dcd": "DCD", ".xtc": "XTC", ".h5": "HDF5", ".hdf5": "HDF5"}
LOG_COLUMNS = ("step", "time_ps", "potential_kj_mol", "kinetic_kj_mol", "total_kj_mol", "temperature_K")


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


class TrajectoryWriter:
    """Collects frames and writes them through mdtraj (format from the extension).

    Args:
      path: output, ``.dcd``, ``.xtc``, ``.h5`` or ``.hdf5``.
      topology: ``mdtraj.Topology``.
      box: ``[3]`` or ``[3, 3]`` nm, or None.
      inputs: input files the output must not overwrite.
    """

    def __init__(self, path, topology, box=None, inputs=()):
        self.path = check_out_path(path)
        self.topology = topology
        self.box = box
        self.inputs = tuple(inputs)
        self.xyz: list[np.ndarray] = []
        self.time: list[float] = []

    @property
    def n_frames(self) -> int:
        return len(self.xyz)

    def append(self, xyz, time_ps) -> None:
        """Add frames: ``xyz [n_frames, n_atoms, 3]`` nm, ``time_ps [n_frames]``."""
        for x, t in zip(np.asarray(xyz, np.float32), np.atleast_1d(time_ps), strict=True):
            self.xyz.append(x)
            self.time.append(float(t))

    def load_existing(self, n_frames: int) -> None:
        """For a resumed run: keep the first ``n_frames`` frames of the existing file."""
        import mdtraj

        self.xyz, self.time = [], []
        if n_frames == 0:
            return
        if not self.path.exists():
            raise UserInputError(f"{self.path}: the checkpoint expects {n_frames} frames here but the file is missing")
        traj = mdtraj.load(str(self.path), top=self.topology)
        if traj.n_frames < n_frames:
            raise UserInputError(
                f"{self.path}: has {traj.n_frames} frames but the checkpoint expects {n_frames}; "
                "resume with the trajectory written alongside that checkpoint"
            )
        self.xyz = list(traj.xyz[:n_frames])
        self.time = list(np.asarray(traj.time[:n_frames], float))

    def flush(self) -> None:
        """Write every frame so far, atomically."""
        import mdtraj

        if not self.xyz:
            return
        lengths, angles = _box_lengths(self.box, len(self.xyz))
        traj = mdtraj.Trajectory(
            np.stack(self.xyz),
            self.topology,
            time=np.asarray(self.time),
            unitcell_lengths=lengths,
            unitcell_angles=angles,
        )
        with atomic_path(self.path, self.inputs) as tmp:
            traj.save(str(tmp), force_overwrite=True)


class EnergyLog:
    """The energy/temperature CSV log (columns :data:`LOG_COLUMNS`), rewritten atomically per flush."""

    def __init__(self, path, inputs=()):
        self.path = Path(path)
        self.inputs = tuple(inputs)
        self.rows: list[tuple] = []

    def append(self, rows) -> None:
        for r in rows:
            self.rows.append(tuple(r))

    def load_existing(self, n_rows: int) -> None:
        self.rows = []
        if n_rows == 0:
            return
        if not self.path.exists():
            raise UserInputError(f"{self.path}: the checkpoint expects {n_rows} log rows here but the file is missing")
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        if len(rows) < n_rows:
            raise UserInputError(f"{self.path}: has {len(rows)} rows but the checkpoint expects {n_rows}")
        self.rows = [(int(r[0]), *map(float, r[1:])) for r in rows[:n_rows]]

    def flush(self) -> None:
        with atomic_path(self.path, self.inputs) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(LOG_COLUMNS)
                for r in self.rows:
                    w.writerow([r[0], *(repr(float(x)) for x in r[1:])])

    def as_array(self) -> np.ndarray:
        return np.asarray([r[1:] for r in self.rows], float).reshape(-1, len(LOG_COLUMNS) - 1)
