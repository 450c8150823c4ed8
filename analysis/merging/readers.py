"""Unmerged intensities from the text formats integration programs write: XDS_ASCII.HKL and CrystFEL streams.

Both return :class:`analysis.merging.io.Unmerged` through :func:`analysis.merging.io.group_observations` (the one
validation and ASU-grouping path; MTZ input is :func:`analysis.merging.io.read_unmerged`).

* **XDS_ASCII.HKL** (XDS/XSCALE, unmerged): header records ``!KEY=value``; ``!ITEM_H=1`` … give the 1-based
  column of each item; cell (``!UNIT_CELL_CONSTANTS``), space group (``!SPACE_GROUP_NUMBER``) and wavelength
  (``!X-RAY_WAVELENGTH``) from the header; data rows until ``!END_OF_DATA``. Rows with σ(I) < 0 are XDS's
  rejected misfits: dropped and counted. The image (batch) of a row is ``floor(ZD) + 1`` (ZD: frame coordinate
  of the spot centroid); metadata XD, YD (pixels) and ZD (frames).
  Format: https://xds.mr.mpg.de/html_doc/xds_files.html#XDS_ASCII.HKL
* **CrystFEL stream** (indexamajig): one ``Begin chunk`` per image, one ``Begin crystal`` per indexed lattice,
  reflection table ``h k l I sigma(I) peak background fs/px ss/px panel``. Each crystal is one "image" (its own
  scale); metadata fs/px, ss/px (pixels). The stream carries no space group (only lattice type and centering):
  pass it. The cell is the stream's target cell (``Begin unit cell`` block, Å), or pass one.
  Format: https://www.desy.de/~twhite/crystfel/manual-crystfel_stream.html

reciprocalspaceship's readers (``rs.read_xds_ascii``, ``rs.read_crystfel``) read the same files but pin
pandas ≤ 2.3.3, which conflicts with this environment's pandas 3; these parsers need only numpy.
"""

from __future__ import annotations

import os
import re

import numpy as np

from analysis import symmetry
from analysis.merging.io import Unmerged, group_observations
from dmd.base.errors import UserInputError

__all__ = ["read_xds_ascii", "read_crystfel", "read_observations"]


def _header_value(header: dict, key: str, path, fix: str):
    if key not in header:
        raise UserInputError(f"{path}: no !{key}= header record; {fix}")
    return header[key]


def read_xds_ascii(path: str | os.PathLike, *, anomalous: bool = False, spacegroup=None) -> Unmerged:
    """Read an unmerged XDS_ASCII.HKL (module docstring).

    ``spacegroup`` overrides the header's within its point group and lattice (screw axes, glides); another point
    group or centring raises :class:`UserInputError` naming the fix (reindex).
    """
    header: dict[str, str] = {}
    rows: list[str] = []
    in_data = False
    with open(path, encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("!"):
                if line.startswith("!END_OF_HEADER"):
                    in_data = True
                elif line.startswith("!END_OF_DATA"):
                    break
                else:  # one or more KEY=value pairs per record
                    for k, v in re.findall(r"!?([A-Z0-9_()'\-]+)=\s*([^=]*?)(?=\s+[A-Z0-9_()'\-]+=|$)", line[1:]):
                        header[k] = v.strip()
            elif in_data and line.strip():
                rows.append(line)
    if "FORMAT" in header and header["FORMAT"] != "XDS_ASCII":
        raise UserInputError(f"{path}: FORMAT={header['FORMAT']}, not XDS_ASCII; give XDS's XDS_ASCII.HKL")
    if header.get("MERGE", "FALSE").upper() == "TRUE":
        raise UserInputError(f"{path}: MERGE=TRUE (merged data); give the unmerged XDS_ASCII.HKL (MERGE=FALSE)")
    fix = "is this an XDS_ASCII.HKL file?"
    cell = [float(x) for x in _header_value(header, "UNIT_CELL_CONSTANTS", path, fix).split()]
    sg = int(_header_value(header, "SPACE_GROUP_NUMBER", path, fix))
    if spacegroup is not None:
        _check_same_point_group(path, sg, spacegroup)
        sg = spacegroup
    items = {k[len("ITEM_") :]: int(v) - 1 for k, v in header.items() if k.startswith("ITEM_")}
    for need in ("H", "K", "L", "IOBS", "SIGMA(IOBS)", "ZD"):
        if need not in items:
            raise UserInputError(f"{path}: no !ITEM_{need}= column in the header; {fix}")
    if not rows:
        raise UserInputError(f"{path}: no data rows between !END_OF_HEADER and !END_OF_DATA")
    try:
        table = np.loadtxt(rows, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise UserInputError(f"{path}: unreadable data row ({err}); is the file complete?") from None
    hkl = table[:, [items["H"], items["K"], items["L"]]].astype(np.int32)
    sigma = table[:, items["SIGMA(IOBS)"]]
    batch = np.floor(table[:, items["ZD"]]).astype(np.int64) + 1
    names = [n for n in ("XD", "YD", "ZD") if n in items]
    meta = table[:, [items[n] for n in names]]
    u = group_observations(
        hkl,
        table[:, items["IOBS"]],
        sigma,
        batch,
        cell,
        sg,
        anomalous=anomalous,
        metadata=meta,
        metadata_names=tuple(names),
        source=str(path),
        wavelength=float(header.get("X-RAY_WAVELENGTH", "0").split()[0]),
    )
    return u


def _check_same_point_group(path, header_sg: int, spacegroup) -> None:
    """Refuse a ``spacegroup`` whose point group (rotations, axes included) or lattice centring differs from the
    header's: XDS indexed and integrated the rows in that lattice, so only the screw axes / glides may be
    overridden (e.g. P 2 2 2 → P 21 21 21); another group needs the data reindexed."""
    try:
        want = symmetry.spacegroup(spacegroup)
    except ValueError as err:
        raise UserInputError(f"--spacegroup: {err}") from None
    have = symmetry.spacegroup(header_sg)
    same_rotations = np.array_equal(symmetry.reciprocal_rotations(have), symmetry.reciprocal_rotations(want))
    if not same_rotations or have.centring_type() != want.centring_type():
        raise UserInputError(
            f"{path}: SPACE_GROUP_NUMBER={header_sg} ({have.hm}, point group {have.point_group_hm()}, lattice "
            f"{have.centring_type()}) but --spacegroup says {want.hm} (point group {want.point_group_hm()}, lattice "
            f"{want.centring_type()}); only a group of the same point group and lattice can relabel the rows. "
            "Reindex first (XDS CORRECT with SPACE_GROUP_NUMBER= and UNIT_CELL_CONSTANTS=, or POINTLESS), or drop "
            "--spacegroup"
        )


_CELL_KEYS = ("a", "b", "c", "al", "be", "ga")


def read_crystfel(path: str | os.PathLike, spacegroup, *, cell=None, anomalous: bool = False) -> Unmerged:
    """Read a CrystFEL stream (module docstring): each indexed crystal becomes one image.

    Args:
      spacegroup: the crystal's space group (the stream has none): anything gemmi resolves, e.g. "P 43 21 2".
      cell: ``[6]`` Å/degrees; default the stream's target cell.
    """
    target: dict[str, float] = {}
    hkl, inten, sig, crystal, fs, ss = [], [], [], [], [], []
    photon_ev = 0.0
    n_crystal = 0
    in_cell = in_refl = False
    with open(path, encoding="ascii", errors="replace") as fh:
        first = fh.readline()
        if "CrystFEL stream format" not in first:
            raise UserInputError(f"{path}: first line {first.strip()!r} is not 'CrystFEL stream format ...'")
        for line in fh:
            if line.startswith("----- Begin unit cell"):
                in_cell = True
            elif line.startswith("----- End unit cell"):
                in_cell = False
            elif in_cell:
                m = re.match(r"\s*(a|b|c|al|be|ga)\s*=\s*([-\d.eE+]+)\s*(A|nm|deg)?", line)
                if m:
                    target[m.group(1)] = float(m.group(2)) * (10.0 if m.group(3) == "nm" else 1.0)
            elif line.startswith("--- Begin crystal"):
                n_crystal += 1
            elif line.startswith("photon_energy_eV") and not photon_ev:
                photon_ev = float(line.split("=")[1])
            elif line.startswith("Reflections measured after indexing"):
                in_refl = True
                next(fh)  # column titles
            elif line.startswith("End of reflections"):
                in_refl = False
            elif in_refl:
                p = line.split()
                hkl.append((int(p[0]), int(p[1]), int(p[2])))
                inten.append(float(p[3]))
                sig.append(float(p[4]))
                fs.append(float(p[7]))
                ss.append(float(p[8]))
                crystal.append(n_crystal)
    if not hkl:
        raise UserInputError(f"{path}: no 'Reflections measured after indexing' tables; was indexamajig's output cut?")
    if cell is None:
        if set(_CELL_KEYS) - set(target):
            raise UserInputError(f"{path}: no complete target unit cell in the stream; pass the cell (a b c al be ga)")
        cell = [target[k] for k in _CELL_KEYS]
    wavelength = 12398.42 / photon_ev if photon_ev > 0 else 0.0  # Å from eV (hc = 12398.42 eV·Å)
    return group_observations(
        np.asarray(hkl),
        np.asarray(inten),
        np.asarray(sig),
        np.asarray(crystal),
        cell,
        spacegroup,
        anomalous=anomalous,
        metadata=np.stack([fs, ss], axis=1),
        metadata_names=("fs/px", "ss/px"),
        source=str(path),
        wavelength=wavelength,
    )


def read_observations(
    path: str | os.PathLike, *, spacegroup=None, anomalous: bool = False, image_scales: bool = True, **mtz_options
):
    """Any supported input by its content: MTZ (:func:`analysis.merging.io.read_unmerged` with ``mtz_options``),
    XDS_ASCII.HKL or a CrystFEL stream (the latter needs ``spacegroup``).

    Args:
      image_scales: whether per-image scales will be fitted. With them, a set in which no reflection is observed
        twice is refused (nothing ties one image's scale to another's); without them it is read.

    Raises:
      UserInputError: besides the readers' own, a ``spacegroup`` of another space group (MTZ) or point group /
        lattice (XDS_ASCII.HKL) than the file's, and every reflection observed exactly once with ``image_scales``:
        merged data given as unmerged, or sparse stills with no repeats.
    """
    u = _read_any(path, spacegroup=spacegroup, anomalous=anomalous, **mtz_options)
    if image_scales and u.n_obs > 1 and u.n_obs == u.n_refl:
        # merged data and a sparse unmerged set look alike here (both may carry many BATCH numbers): name both
        raise UserInputError(
            f"{path}: each of its {u.n_refl} reflections is observed exactly once (on {u.n_images} images), so "
            "there is nothing to scale the images against. If this is merged data, give the unmerged observations "
            "(e.g. AIMLESS OUTPUT UNMERGED, DIALS export, XDS_ASCII.HKL); if it is a sparse set of stills, add "
            "images or crystals until reflections repeat, or merge without per-image scales (--no-image-terms)"
        )
    return u


def _read_any(path, *, spacegroup=None, anomalous: bool = False, **mtz_options) -> Unmerged:
    """The reader chosen by the file's first bytes (:func:`read_observations`)."""
    from analysis.merging.io import read_unmerged

    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"MTZ "):
        u = read_unmerged(path, anomalous=anomalous, **mtz_options)
        if spacegroup is not None and symmetry.spacegroup(spacegroup).hm != u.spacegroup:
            # an MTZ's indices are stored in its own space group's ASU: a different one cannot just be relabelled
            raise UserInputError(
                f"{path}: the MTZ header says {u.spacegroup}, --spacegroup says {spacegroup}; drop --spacegroup or "
                "reindex the file first (e.g. CCP4 reindex / pointless)"
            )
        return u
    if head.startswith(b"!FORMAT=XDS_ASCII") or head.startswith(b"!OUTPUT_FILE=XDS_ASCII"):
        return read_xds_ascii(path, anomalous=anomalous, spacegroup=spacegroup)
    if head.startswith(b"CrystFEL stream format"):
        if spacegroup is None:
            raise UserInputError(f"{path}: a CrystFEL stream has no space group; pass it (--spacegroup 'P 43 21 2')")
        return read_crystfel(path, spacegroup, anomalous=anomalous)
    raise UserInputError(f"{path}: neither MTZ, XDS_ASCII.HKL nor a CrystFEL stream (starts {head[:20]!r})")
