"""MTZ input/output through gemmi (observed diffuse data in, predicted diffuse data out).

API::

    data = read_mtz("obs.mtz", ["I_diffuse", "SIGI"])   # MtzData(hkl [M,3] int32, columns, cell, spacegroup)
    write_mtz("pred.mtz", hkl, {"ID": i_d, "MEANF2": f2}, cell, "P 1")   # atomic write

Missing columns raise :class:`dmd.base.errors.UserInputError` listing the columns present with their MTZ types.
Missing values (MTZ NaN) are kept as NaN; callers mask them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import gemmi
import numpy as np

from dmd.base.errors import UserInputError
from dmd.base.io import atomic_path

__all__ = ["MtzData", "read_mtz", "write_mtz", "mtz_columns"]


class MtzData(NamedTuple):
    """hkl: int32 ``[M, 3]``; columns: label → float ``[M]``; cell ``[6]`` (Å, degrees); spacegroup HM."""

    hkl: np.ndarray
    columns: dict[str, np.ndarray]
    cell: np.ndarray
    spacegroup: str


def _open(path) -> gemmi.Mtz:
    if not os.path.exists(path):
        raise UserInputError(f"{path}: no such MTZ file; check the path")
    try:
        return gemmi.read_mtz_file(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise UserInputError(f"{path}: not a readable MTZ file ({exc}); give an MTZ written by CCP4/gemmi/dmd") from exc


def mtz_columns(path) -> list[tuple[str, str]]:
    """(label, MTZ type) of every column in the file."""
    return [(c.label, c.type) for c in _open(path).columns]


def read_mtz(path, columns: Sequence[str]) -> MtzData:
    """Read ``columns`` (by label) from an MTZ file.

    Raises:
      UserInputError: a requested column is missing (the message lists the columns present).
    """
    mtz = _open(path)
    present = [c.label for c in mtz.columns]
    missing = [c for c in columns if c not in present]
    if missing:
        listing = ", ".join(f"{c.label} ({c.type})" for c in mtz.columns)
        raise UserInputError(
            f"{path}: column(s) {', '.join(missing)} not found; columns present: {listing}. "
            "Pass the right label(s) for the observed data"
        )
    arr = np.asarray(mtz.array, dtype=np.float64)
    hkl = arr[:, :3].astype(np.int32)
    cols = {c: arr[:, present.index(c)].copy() for c in columns}
    cell = np.array(mtz.cell.parameters, dtype=np.float64)
    sg = mtz.spacegroup.hm if mtz.spacegroup is not None else "P 1"
    return MtzData(hkl, cols, cell, sg)


def write_mtz(
    path,
    hkl,
    columns: Mapping[str, np.ndarray],
    cell,
    spacegroup="P 1",
    *,
    column_types: Mapping[str, str] | None = None,
    title: str = "dmd",
    history: Iterable[str] = (),
    inputs: Iterable[str] = (),
) -> str:
    """Write reflections and float columns to an MTZ file atomically.

    Args:
      hkl: int ``[M, 3]``. columns: label → ``[M]`` values (NaN = missing).
      cell: ``[6]`` Å / degrees. spacegroup: HM symbol, number or ``gemmi.SpaceGroup``.
      column_types: label → MTZ type letter (default 'J' intensity for all; 'F' amplitudes, 'P' phases,
        'R' generic real, 'Q' sigma).
      inputs: paths the output must not overwrite.
    """
    from analysis.symmetry import spacegroup as resolve_sg

    hkl = np.asarray(hkl)
    if hkl.ndim != 2 or hkl.shape[1] != 3:
        raise ValueError(f"hkl must be [M, 3], got {hkl.shape}")
    m = hkl.shape[0]
    for k, v in columns.items():
        if np.shape(v) != (m,):
            raise ValueError(f"column {k!r} has shape {np.shape(v)}, expected ({m},)")
    types = dict(column_types or {})
    mtz = gemmi.Mtz(with_base=True)
    mtz.title = title
    mtz.spacegroup = resolve_sg(spacegroup)
    mtz.set_cell_for_all(gemmi.UnitCell(*[float(x) for x in cell]))
    mtz.add_dataset("dmd")
    for label in columns:
        mtz.add_column(label, types.get(label, "J"))
    data = np.empty((m, 3 + len(columns)), np.float32)
    data[:, :3] = hkl
    for i, v in enumerate(columns.values()):
        data[:, 3 + i] = np.asarray(v, np.float64)
    mtz.set_data(data)
    mtz.history = list(history) or ["written by dmd (analysis.mtz_io)"]
    mtz.update_reso()
    with atomic_path(path, inputs) as tmp:
        mtz.write_to_file(str(tmp))
    return str(path)
