"""MTZ input/output through gemmi: the one home of MTZ reading and writing in dmd.

API::

    data = read_mtz("obs.mtz", ["I_diffuse", "SIGI"])   # MtzData(hkl [M,3] int32, columns, cell, spacegroup)
    write_mtz("pred.mtz", hkl, {"ID": i_d, "MEANF2": f2}, cell, "P 1")   # atomic write

Lower-level pieces, used by the unmerged/merged readers and writers of :mod:`analysis.merging.io`:
:func:`open_mtz` (validated read of the gemmi object), :func:`mtz_table` (hkl and every column as numpy),
:func:`build_mtz` (an in-memory MTZ from hkl and typed columns) and :func:`save_mtz` (atomic write through
:func:`dmd.base.io.atomic_path`).

Missing files, unreadable files and missing columns raise :class:`dmd.base.errors.UserInputError` naming the file
and the fix (a missing column lists the columns present with their MTZ types). Missing values (MTZ NaN) are kept
as NaN; callers mask them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import gemmi
import numpy as np

from analysis import symmetry
from dmd.base.errors import UserInputError
from dmd.base.io import atomic_path

__all__ = ["MtzData", "open_mtz", "mtz_columns", "mtz_table", "read_mtz", "build_mtz", "save_mtz", "write_mtz"]


class MtzData(NamedTuple):
    """hkl: int32 ``[M, 3]``; columns: label → float ``[M]``; cell ``[6]`` (Å, degrees); spacegroup HM."""

    hkl: np.ndarray
    columns: dict[str, np.ndarray]
    cell: np.ndarray
    spacegroup: str


def open_mtz(
    path: str | os.PathLike, *, expected: str = "an MTZ written by CCP4/gemmi/dmd", noun: str = "MTZ file"
) -> gemmi.Mtz:
    """Read an MTZ file with gemmi, turning a missing or unreadable file into a :class:`UserInputError`.

    Args:
      expected: what the caller wants (ends the message's fix, e.g. "an unmerged MTZ").
      noun: how the missing file is called in the message ("no such <noun>").
    """
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: no such {noun}; check the path and pass {expected}")
    try:
        return gemmi.read_mtz_file(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise UserInputError(f"{path}: not a readable MTZ file ({exc}); pass {expected}") from exc


def mtz_columns(path) -> list[tuple[str, str]]:
    """(label, MTZ type) of every column in the file."""
    return [(c.label, c.type) for c in open_mtz(path).columns]


def mtz_table(mtz: gemmi.Mtz) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(hkl int32 ``[M, 3]``, {label: float64 ``[M]``} of every column, H K L included) of an open MTZ."""
    arr = np.asarray(mtz.array, dtype=np.float64)
    cols = {c.label: arr[:, i].copy() for i, c in enumerate(mtz.columns)}
    return arr[:, :3].astype(np.int32), cols


def read_mtz(path, columns: Sequence[str]) -> MtzData:
    """Read ``columns`` (by label) from an MTZ file.

    Raises:
      UserInputError: the file is missing or unreadable, or a requested column is missing (the message lists the
        columns present).
    """
    mtz = open_mtz(path)
    present = [c.label for c in mtz.columns]
    missing = [c for c in columns if c not in present]
    if missing:
        listing = ", ".join(f"{c.label} ({c.type})" for c in mtz.columns)
        raise UserInputError(
            f"{path}: column(s) {', '.join(missing)} not found; columns present: {listing}. "
            "Pass the right label(s) for the observed data"
        )
    hkl, table = mtz_table(mtz)
    cell = np.array(mtz.cell.parameters, dtype=np.float64)
    sg = mtz.spacegroup.hm if mtz.spacegroup is not None else "P 1"
    return MtzData(hkl, {c: table[c] for c in columns}, cell, sg)


def build_mtz(
    hkl,
    columns: Mapping[str, np.ndarray],
    cell,
    spacegroup="P 1",
    *,
    column_types: Mapping[str, str] | None = None,
    title: str | None = "dmd",
    dataset: str = "dmd",
    wavelength: float | None = None,
) -> gemmi.Mtz:
    """An in-memory MTZ holding ``hkl`` and float ``columns`` (stored as float32, MTZ's precision).

    Args:
      hkl: int ``[M, 3]``. columns: label → ``[M]`` values (NaN = missing).
      cell: ``[6]`` Å / degrees. spacegroup: HM symbol, number or ``gemmi.SpaceGroup``.
      column_types: label → MTZ type letter (default 'J' intensity for all; 'F' amplitudes, 'P' phases,
        'R' generic real, 'Q' sigma, 'B' batch, 'Y' M/ISYM).
      title: MTZ title (None: gemmi's empty default). dataset: the dataset name; wavelength: its λ (Å), or None
        to leave gemmi's default.

    Raises:
      ValueError: ``hkl`` is not ``[M, 3]`` or a column is not ``[M]``.
    """
    hkl = np.asarray(hkl)
    if hkl.ndim != 2 or hkl.shape[1] != 3:
        raise ValueError(f"hkl must be [M, 3], got {hkl.shape}")
    m = hkl.shape[0]
    for k, v in columns.items():
        if np.shape(v) != (m,):
            raise ValueError(f"column {k!r} has shape {np.shape(v)}, expected ({m},)")
    types = dict(column_types or {})
    mtz = gemmi.Mtz(with_base=True)
    if title is not None:
        mtz.title = title
    mtz.spacegroup = symmetry.spacegroup(spacegroup)
    mtz.set_cell_for_all(gemmi.UnitCell(*[float(x) for x in cell]))
    ds = mtz.add_dataset(dataset)
    if wavelength is not None:
        ds.wavelength = float(wavelength)
    for label in columns:
        mtz.add_column(label, types.get(label, "J"))
    data = np.empty((m, 3 + len(columns)), np.float32)
    data[:, :3] = hkl
    for i, v in enumerate(columns.values()):
        data[:, 3 + i] = np.asarray(v, np.float64)
    mtz.set_data(data)
    return mtz


def save_mtz(mtz: gemmi.Mtz, path, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """Write ``mtz`` to ``path`` atomically (never over one of ``inputs``); returns the path."""
    with atomic_path(path, inputs) as tmp:
        mtz.write_to_file(str(tmp))
    return str(path)


def write_mtz(
    path,
    hkl,
    columns: Mapping[str, np.ndarray],
    cell,
    spacegroup="P 1",
    *,
    column_types: Mapping[str, str] | None = None,
    title: str = "dmd",
    history: Iterable[str] | None = None,
    inputs: Iterable[str] = (),
    dataset: str = "dmd",
    wavelength: float | None = None,
) -> str:
    """Write reflections and float columns to an MTZ file atomically (arguments as in :func:`build_mtz`).

    Args:
      history: MTZ history lines (None: one line naming this module; empty: none).
      inputs: paths the output must not overwrite.
    """
    mtz = build_mtz(
        hkl, columns, cell, spacegroup, column_types=column_types, title=title, dataset=dataset, wavelength=wavelength
    )
    history = ["written by dmd (analysis.mtz_io)"] if history is None else list(history)
    if history:
        mtz.history = history
    mtz.update_reso()
    return save_mtz(mtz, path, inputs)
