"""Peak lists for powder indexing: parsing, unit conversion and validation.

A peak list is held as q² = 1/d² (Å⁻², ``inv_d2``) in ascending order. Inputs may be
given as 2θ (degrees, with the wavelength λ in Å), d (Å) or q² (Å⁻²)::

    q² = 1/d² = (2 sin θ / λ)²

Every check raises :class:`dmd.base.errors.UserInputError` with a message that names the
input and the fix (sort the list, remove the duplicate, pass ``--wavelength`` ...).

Peak files are plain text: one peak per line, first column the position, optional
second column the intensity; ``#`` starts a comment. Header comments may declare
``# units: 2theta|d|q2`` and ``# wavelength: 1.5406``; command-line options win.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from analysis import cell as cell_mod
from dmd.base.errors import UserInputError

__all__ = ["UNITS", "PeakList", "peaks_from_values", "read_peak_file", "min_peaks"]

UNITS = ("2theta", "d", "q2")
_UNIT_ALIASES = {
    "2theta": "2theta",
    "2th": "2theta",
    "tth": "2theta",
    "twotheta": "2theta",
    "d": "d",
    "dspacing": "d",
    "q2": "q2",
    "invd2": "q2",
    "inv_d2": "q2",
}

# Fewest peaks needed: the free reciprocal-metric parameters plus enough redundancy
# for the figures of merit to mean something (de Wolff 1968 recommends 20 lines).
_MIN_PEAKS = {
    "cubic": 4,
    "tetragonal": 6,
    "hexagonal": 6,
    "rhombohedral": 6,
    "orthorhombic": 8,
    "monoclinic": 10,
    "triclinic": 12,
}


def min_peaks(system: str | None) -> int:
    """Smallest peak count accepted for a lattice system (``None``, blind: the smallest over all systems,
    the cubic one; index_peaks then searches only the systems the list can determine)."""
    return min(_MIN_PEAKS.values()) if system is None else _MIN_PEAKS[system]


@dataclasses.dataclass(frozen=True)
class PeakList:
    """A validated peak list.

    Attributes:
      inv_d2: ``[n]`` float64, q² = 1/d² in Å⁻², strictly ascending.
      intensity: ``[n]`` float64 or None (arbitrary units).
      wavelength: λ in Å, or None when the input was d or q².
      two_theta: ``[n]`` observed 2θ (degrees) when λ is known, else None.
      units: the input units ("2theta", "d" or "q2").
      source: file name or label, used in messages.
      notes: what validation noted without failing, one sentence each (none at present).
    """

    inv_d2: np.ndarray
    intensity: np.ndarray | None = None
    wavelength: float | None = None
    two_theta: np.ndarray | None = None
    units: str = "q2"
    source: str = "peaks"
    notes: tuple = ()

    @property
    def n(self) -> int:
        return int(self.inv_d2.shape[0])

    @property
    def d(self) -> np.ndarray:
        """d-spacings (Å)."""
        return 1.0 / np.sqrt(self.inv_d2)


def _normalize_units(units: str, source: str) -> str:
    key = re.sub(r"[^a-z0-9_]", "", str(units).lower())
    if key not in _UNIT_ALIASES:
        raise UserInputError(f"{source}: unknown units {units!r}; use --units 2theta, d or q2")
    return _UNIT_ALIASES[key]


_SYSTEM_ORDER = ("cubic", "tetragonal", "hexagonal", "orthorhombic", "monoclinic", "triclinic")

# a 2θ list whose values all lie below this (degrees) *and* fall strictly from first to last reads as
# d-spacings (Å): measured 2θ lists rise, d lists fall, and d-spacings of indexable cells lie below ~20 Å
D_LIKE_MAX = 20.0
# a d list whose values rise strictly and reach above this (Å) reads as 2θ (degrees): d-spacings of
# the small cells indexing handles lie below ~20 Å and fall from first to last
TWO_THETA_LIKE_MIN = 20.0
# q² = 1/d² above this (Å⁻²; d < 0.32 Å) is beyond any diffraction pattern indexing uses
INV_D2_MAX = 10.0


def _minimum_table() -> str:
    return ", ".join(f"{s} {_MIN_PEAKS[s]}" for s in _SYSTEM_ORDER)


def _check_count(n: int, need: int, system: str | None, source: str) -> None:
    if n >= need:
        return
    if system is None:
        raise UserInputError(
            f"{source}: {n} peaks given but indexing in any lattice system needs at least {need} "
            f"(fewest lines per system: {_minimum_table()}); add more peaks (20 recommended)"
        )
    raise UserInputError(
        f"{source}: {n} peaks given but the {system} lattice system needs at least {need}; add more peaks "
        f"(20 recommended) or pass --lattice for a higher-symmetry system (fewest lines: {_minimum_table()})"
    )


def _check_units_plausible(arr: np.ndarray, units: str, wavelength: float | None, source: str) -> None:
    """Reject lists whose values and order betray other units (d given as 2θ, 2θ given as d, ...)."""
    if arr.size < 3:
        return
    diff = np.diff(arr)
    falls, rises = bool(np.all(diff < 0)), bool(np.all(diff > 0))
    span = f"{arr[0]:g} ... {arr[-1]:g}"
    if units == "2theta" and falls and arr.max() < D_LIKE_MAX:
        as_d_ok = wavelength is None or arr.min() > wavelength / 2  # d > λ/2 reachable at this λ
        if as_d_ok:
            raise UserInputError(
                f"{source}: the positions fall from first to last ({span}) and all lie below {D_LIKE_MAX:g}: "
                "they look like d-spacings (Å), not 2θ; pass --units d (if they really are 2θ in degrees, "
                "list them in ascending order)"
            )
    if units == "d" and rises and arr.max() > TWO_THETA_LIKE_MIN:
        raise UserInputError(
            f"{source}: the positions rise from first to last ({span}) up to {arr.max():g} Å: they look like "
            "2θ (degrees), not d-spacings; pass --units 2theta --wavelength λ (if they really are d-spacings "
            "in Å, list them in descending order)"
        )
    if units == "q2" and arr.max() > INV_D2_MAX:
        raise UserInputError(
            f"{source}: q² = 1/d² up to {arr.max():g} Å⁻² (d < {1 / np.sqrt(INV_D2_MAX):.2f} Å) is not a "
            "diffraction line; these look like 2θ or d values: pass --units 2theta or --units d"
        )
    if units == "q2" and falls and arr.max() > 1.0:
        raise UserInputError(
            f"{source}: the positions fall from first to last ({span}) and reach {arr.max():g}: they look like "
            "d-spacings (Å), not q² (Å⁻²); pass --units d (if they really are q², list them in ascending order)"
        )


def peaks_from_values(
    values,
    units: str,
    *,
    wavelength: float | None = None,
    intensities=None,
    source: str = "peaks",
    system: str | None = None,
    n_min: int | None = None,
    line_numbers=None,
) -> PeakList:
    """Validate raw peak positions and convert them to q² (Å⁻²).

    Every check runs before any search; anything wrong is a :class:`UserInputError` naming the fix,
    including lines not in the measured order (2θ and q² ascending, d descending): they are
    refused, not sorted, so a pasted or merged list is seen by the user.

    Args:
      values: ``[n]`` positions in ``units``.
      units: "2theta" (degrees; needs ``wavelength``), "d" (Å) or "q2" (Å⁻²).
      wavelength: λ in Å (required for 2θ; with d/q² it only sets the 2θ used in F_N).
      intensities: optional ``[n]`` non-negative intensities.
      source: name used in error messages.
      system: lattice system to be searched (sets the minimum peak count).
      n_min: override the minimum peak count.
      line_numbers: optional ``[n]`` file line numbers of the values (messages then cite
        ``source:line``).

    Raises:
      UserInputError: non-finite positions, too few peaks (the minimum per system stated),
        non-positive positions, 2θ outside (0, 180), duplicate positions, unsorted positions, values whose order
        and range betray other units (d-spacings given as 2θ and the reverse, q² out of range),
        missing or bad wavelength, unknown units, bad intensities.

    Over 100 lines: every input check runs here, at the boundary and in order, before any search; each is a few
    lines with its own message naming the fix.
    """
    units = _normalize_units(units, source)
    arr = np.asarray(values, dtype=float).reshape(-1)
    lines = None if line_numbers is None else np.asarray(line_numbers, int).reshape(-1)

    def where(i: int) -> str:
        return f"{source}:{lines[i]}" if lines is not None else f"{source}: peak {i + 1}"

    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise UserInputError(f"{where(bad)}: position {arr[bad]} is not a finite number; remove or fix that line")
    need = min_peaks(system) if n_min is None else int(n_min)
    _check_count(arr.size, need, system, source)
    if np.any(arr <= 0):
        bad = int(np.flatnonzero(arr <= 0)[0])
        raise UserInputError(
            f"{where(bad)}: non-positive position {arr[bad]:g} {units}; positions must be > 0, remove or fix that line"
        )
    if units == "2theta" and np.any(arr >= 180):
        bad = int(np.flatnonzero(arr >= 180)[0])
        raise UserInputError(
            f"{where(bad)}: 2θ = {arr[bad]:g}° is outside (0, 180) degrees; fix that line or check --units"
        )
    if wavelength is not None and (not np.isfinite(wavelength) or wavelength <= 0):
        raise UserInputError(f"{source}: wavelength {wavelength} Å is not positive; pass e.g. --wavelength 1.5406")
    if units == "2theta" and wavelength is None:
        raise UserInputError(f"{source}: 2θ positions need the wavelength; pass --wavelength (Å), e.g. 1.5406")
    inten = None
    if intensities is not None:
        inten = np.asarray(intensities, dtype=float).reshape(-1)
        if inten.shape != arr.shape:
            raise UserInputError(f"{source}: {inten.size} intensities for {arr.size} peaks; give one per peak")
        if not np.all(np.isfinite(inten)) or np.any(inten < 0):
            raise UserInputError(f"{source}: intensities must be finite and non-negative; fix the second column")
    _check_units_plausible(arr, units, wavelength, source)
    ascending = units in ("2theta", "q2")
    notes: list[str] = []
    order = np.argsort(arr if ascending else -arr, kind="stable")
    same = np.flatnonzero(np.diff(arr[order]) == 0)
    if same.size:
        i, j = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        where_j = f"line {lines[j]}" if lines is not None else f"peak {j + 1}"
        raise UserInputError(f"{where(i)} and {where_j} are duplicates ({arr[i]:g} {units}); remove the repeated line")
    # An unsorted list is refused rather than silently sorted: a misplaced line usually means a
    # pasted or merged list, and the user must see (and fix) it rather than index something else.
    step = np.diff(arr) if ascending else -np.diff(arr)
    if np.any(step < 0):
        bad = int(np.flatnonzero(step < 0)[0]) + 1
        direction, cmd = ("ascending", "sort -g") if ascending else ("descending (largest d first)", "sort -gr")
        raise UserInputError(
            f"{where(bad)}: position {arr[bad]:g} {units} is out of order after {arr[bad - 1]:g}; the lines must be "
            f"in {direction} order: sort the list (e.g. `{cmd}` on the file) and run again"
        )
    two_theta = None
    if units == "2theta":
        two_theta = arr.copy()
        inv_d2 = cell_mod.inv_d2_from_two_theta(arr, float(wavelength))
    elif units == "d":
        inv_d2 = 1.0 / arr**2
    else:
        inv_d2 = arr.copy()
    if wavelength is not None and two_theta is None:
        s = float(wavelength) * np.sqrt(inv_d2) / 2
        if np.all(s < 1):
            two_theta = cell_mod.two_theta_from_inv_d2(inv_d2, float(wavelength))
    return PeakList(
        inv_d2=np.asarray(inv_d2, float),
        intensity=inten,
        wavelength=None if wavelength is None else float(wavelength),
        two_theta=two_theta,
        units=units,
        source=source,
        notes=tuple(notes),
    )


def read_peak_file(
    path: str | os.PathLike,
    *,
    units: str | None = None,
    wavelength: float | None = None,
    system: str | None = None,
) -> PeakList:
    """Read a peak-list text file (see module docstring for the format).

    ``units``/``wavelength`` given here override the file's ``# units:`` and
    ``# wavelength:`` header lines.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise UserInputError(f"{name}: no such peak file; check the path")
    header_units, header_wl = None, None
    rows, linenos = [], []
    with open(name, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if line.startswith("#"):
                m = re.match(r"#\s*(units|wavelength)\s*[:=]\s*(\S+)", line, re.IGNORECASE)
                if m and m.group(1).lower() == "units":
                    header_units = m.group(2)
                elif m:
                    try:
                        header_wl = float(m.group(2))
                    except ValueError as exc:
                        raise UserInputError(f"{name}:{lineno}: wavelength {m.group(2)!r} is not a number") from exc
                continue
            line = line.split("#", 1)[0].replace(",", " ").strip()
            if not line:
                continue
            try:
                rows.append([float(v) for v in line.split()[:2]])
                linenos.append(lineno)
            except ValueError as exc:
                raise UserInputError(
                    f"{name}:{lineno}: cannot read {line!r} as numbers; one peak per line: position [intensity]"
                ) from exc
    units = units or header_units
    if units is None:
        raise UserInputError(f"{name}: units unknown; pass --units 2theta|d|q2 or add a '# units: 2theta' line")
    wavelength = wavelength if wavelength is not None else header_wl
    if not rows:
        raise UserInputError(f"{name}: no peaks found; one peak per line: position [intensity]")
    ncols = {len(r) for r in rows}
    if len(ncols) > 1:
        raise UserInputError(f"{name}: some lines have an intensity and some do not; give it on every line or none")
    data = np.array(rows, dtype=float)
    inten = data[:, 1] if data.shape[1] > 1 else None
    return peaks_from_values(
        data[:, 0], units, wavelength=wavelength, intensities=inten, source=name, system=system, line_numbers=linenos
    )
