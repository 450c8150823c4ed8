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
    """

    inv_d2: np.ndarray
    intensity: np.ndarray | None = None
    wavelength: float | None = None
    two_theta: np.ndarray | None = None
    units: str = "q2"
    source: str = "peaks"

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


def peaks_from_values(
    values,
    units: str,
    *,
    wavelength: float | None = None,
    intensities=None,
    source: str = "peaks",
    system: str | None = None,
    n_min: int | None = None,
) -> PeakList:
    """Validate raw peak positions and convert them to q² (Å⁻²).

    Args:
      values: ``[n]`` positions in ``units``, in the order measured (2θ and q²
        ascending, d descending).
      units: "2theta" (degrees; needs ``wavelength``), "d" (Å) or "q2" (Å⁻²).
      wavelength: λ in Å (required for 2θ; with d/q² it only sets the 2θ used in F_N).
      intensities: optional ``[n]`` non-negative intensities.
      source: name used in error messages.
      system: lattice system to be searched (sets the minimum peak count).
      n_min: override the minimum peak count.

    Raises:
      UserInputError: too few peaks, non-finite / non-positive / unsorted / duplicate
        positions, 2θ outside (0, 180), missing or bad wavelength, unknown units.
    """
    units = _normalize_units(units, source)
    arr = np.asarray(values, dtype=float).reshape(-1)
    need = min_peaks(system) if n_min is None else int(n_min)
    if arr.size < need:
        what = f"the {system} lattice system" if system else "indexing in any lattice system"
        raise UserInputError(
            f"{source}: {arr.size} peaks given but {what} needs at least {need}; "
            "add more peaks (20 recommended)"
            + ("" if system is None else " or pass --lattice for a higher-symmetry system")
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise UserInputError(f"{source}: peak {bad + 1} is not a finite number; remove or fix that line")
    if np.any(arr <= 0):
        bad = int(np.flatnonzero(arr <= 0)[0])
        raise UserInputError(
            f"{source}: peak {bad + 1} has non-positive position {arr[bad]} {units}; positions must be > 0"
        )
    if wavelength is not None and (not np.isfinite(wavelength) or wavelength <= 0):
        raise UserInputError(f"{source}: wavelength {wavelength} Å is not positive; pass e.g. --wavelength 1.5406")
    ascending = units in ("2theta", "q2")
    order_diff = np.diff(arr) if ascending else -np.diff(arr)
    if np.any(order_diff < 0):
        bad = int(np.flatnonzero(order_diff < 0)[0])
        direction = "ascending" if ascending else "descending (largest d first)"
        raise UserInputError(
            f"{source}: peaks {bad + 1} and {bad + 2} are out of order ({arr[bad]} then {arr[bad + 1]}); "
            f"sort the list {direction}"
        )
    if np.any(order_diff == 0):
        bad = int(np.flatnonzero(order_diff == 0)[0])
        raise UserInputError(
            f"{source}: peaks {bad + 1} and {bad + 2} are duplicates ({arr[bad]}); remove the repeated line"
        )
    two_theta = None
    if units == "2theta":
        if wavelength is None:
            raise UserInputError(f"{source}: 2θ positions need the wavelength; pass --wavelength (Å), e.g. 1.5406")
        if np.any(arr >= 180):
            raise UserInputError(f"{source}: 2θ values must lie in (0, 180) degrees; check --units")
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
    inten = None
    if intensities is not None:
        inten = np.asarray(intensities, dtype=float).reshape(-1)
        if inten.shape != arr.shape:
            raise UserInputError(f"{source}: {inten.size} intensities for {arr.size} peaks; give one per peak")
        if not np.all(np.isfinite(inten)) or np.any(inten < 0):
            raise UserInputError(f"{source}: intensities must be finite and non-negative; fix the second column")
    return PeakList(
        inv_d2=np.asarray(inv_d2, float),
        intensity=inten,
        wavelength=None if wavelength is None else float(wavelength),
        two_theta=two_theta,
        units=units,
        source=source,
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
    rows = []
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
    return peaks_from_values(data[:, 0], units, wavelength=wavelength, intensities=inten, source=name, system=system)
