"""Reference Miller-index lists ("rows" of q² = H·x) and centring conditions.

For a lattice system, two hkl whose design-matrix rows H(hkl) coincide give the same
q² for *every* cell of that system (e.g. 221 and 300 in cubic, hkl and h̄kl̄ in
monoclinic). Indexing therefore works on the distinct rows: a reference list
``rows [n_ref, n_params]`` built from all hkl with |h|,|k|,|l| ≤ n_max. Each row keeps,
for every centring, whether any of its member hkl is allowed and one representative
member, so Bravais tests and per-peak hkl come out of the same table.

Centring (reflection) conditions, ITC Vol. A Table 2.2.13.1 (hexagonal axes for R,
obverse setting)::

    P: none          I: h+k+l = 2n        F: h,k,l all even or all odd
    A: k+l = 2n      B: h+l = 2n          C: h+k = 2n       R: -h+k+l = 3n
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from analysis import cell as cell_mod

__all__ = [
    "SEARCH_SYSTEMS",
    "CENTRINGS",
    "BRAVAIS_OF",
    "ReferenceRows",
    "reference_rows",
    "refine_rows",
    "centring_allowed",
    "search_system",
]

# Systems the search runs in (rhombohedral lattices are indexed as hR on hexagonal axes).
SEARCH_SYSTEMS = ("cubic", "tetragonal", "hexagonal", "orthorhombic", "monoclinic", "triclinic")

# Centrings tested per lattice system, and the Bravais symbol each gives.
CENTRINGS = {
    "cubic": ("P", "I", "F"),
    "tetragonal": ("P", "I"),
    "hexagonal": ("P", "R"),
    "orthorhombic": ("P", "C", "A", "B", "I", "F"),
    "monoclinic": ("P", "C", "A", "I"),
    "triclinic": ("P",),
}
# Bravais symbol = family letter (the system's initial; triclinic is "anorthic", a) + centring, in the standard
# setting: an A- or B-face centring is the C lattice with the axes relabelled, and monoclinic I is mC with another
# choice of a and c (International Tables A, Sect. 3.1).
_STANDARD_CENTRING = {
    ("orthorhombic", "A"): "C",
    ("orthorhombic", "B"): "C",
    ("monoclinic", "A"): "C",
    ("monoclinic", "I"): "C",
}
BRAVAIS_OF = {
    (system, c): ("a" if system == "triclinic" else system[0]) + _STANDARD_CENTRING.get((system, c), c)
    for system, centrings in CENTRINGS.items()
    for c in centrings
}

# Default index bound per system: enough for the first ~30 lines of cells whose axis
# ratios stay below ~5 once reduced (the search reduces candidates before testing).
_N_MAX = {"cubic": 12, "tetragonal": 12, "hexagonal": 12, "orthorhombic": 10, "monoclinic": 8, "triclinic": 6}
# Index bound of the float64 refinement (refine_rows): orthorhombic F / I cells with one long axis
# (axis ratio ~4) observe 00l and 11l up to l = 12 among their first 20 lines (e.g. F d d 2 with
# a, b ≈ 4.2, 4.5 Å and c ≈ 17.5 Å: 0 0 12 and 1 1 11). The search and the prior keep _N_MAX: the
# shipped prior's row usage order indexes those lists.
_N_MAX_REFINE = dict(_N_MAX, orthorhombic=12)


def search_system(system: str) -> str:
    """Lattice system the search runs in (rhombohedral → hexagonal axes)."""
    if system == "rhombohedral":
        return "hexagonal"
    if system not in SEARCH_SYSTEMS:
        raise ValueError(f"unknown lattice system {system!r}; expected one of {', '.join(cell_mod.LATTICE_SYSTEMS)}")
    return system


def centring_allowed(hkl: np.ndarray, centring: str) -> np.ndarray:
    """Boolean ``[n]``: reflection allowed by the lattice centring (see module docstring)."""
    hkl = np.asarray(hkl, dtype=np.int64)
    h, k, l = hkl[..., 0], hkl[..., 1], hkl[..., 2]
    if centring == "P":
        return np.ones(h.shape, bool)
    if centring == "I":
        return (h + k + l) % 2 == 0
    if centring == "F":
        return ((h + k) % 2 == 0) & ((k + l) % 2 == 0)
    if centring == "A":
        return (k + l) % 2 == 0
    if centring == "B":
        return (h + l) % 2 == 0
    if centring == "C":
        return (h + k) % 2 == 0
    if centring == "R":
        return (-h + k + l) % 3 == 0
    raise ValueError(f"unknown centring {centring!r}")


@dataclasses.dataclass(frozen=True)
class ReferenceRows:
    """Distinct design-matrix rows of a lattice system.

    Attributes:
      system: search lattice system.
      rows: ``[n_ref, n_params]`` float64 design-matrix rows H, sorted by index size.
      allowed: dict centring → ``[n_ref]`` bool, row has an allowed member hkl.
      rep_hkl: dict centring → ``[n_ref, 3]`` int32, a representative member
        (allowed where possible; non-negative and largest-first where possible).
      n_max: index bound used.
    """

    system: str
    rows: np.ndarray
    allowed: dict
    rep_hkl: dict
    n_max: int


def _rep_key(hkl: np.ndarray) -> np.ndarray:
    """Sort key preferring non-negative, small, largest-first indices (200 over 020, 110 over 1-10)."""
    neg = (hkl < 0).sum(axis=1)
    size = np.abs(hkl).sum(axis=1)
    return np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], neg, size))


@functools.lru_cache(maxsize=32)
def reference_rows(system: str, n_max: int | None = None) -> ReferenceRows:
    """Build (and cache) the reference rows for ``system`` with |h|,|k|,|l| ≤ ``n_max``."""
    system = search_system(system)
    n_max = _N_MAX[system] if n_max is None else int(n_max)
    rng = np.arange(-n_max, n_max + 1)
    hkl = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), axis=-1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    hkl = hkl[_rep_key(hkl)]
    rows_all = np.asarray(cell_mod.design_matrix(hkl, system), dtype=np.float64)
    rows, first, inverse = np.unique(rows_all, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # order rows by the first (smallest-key) member so low-index rows come first
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rows = rows[order]
    inverse = rank[inverse]
    allowed, rep = {}, {}
    for cen in CENTRINGS[system]:
        ok = centring_allowed(hkl, cen)
        allow = np.zeros(rows.shape[0], bool)
        np.logical_or.at(allow, inverse, ok)
        # representative: first allowed member in key order, else first member
        big = hkl.shape[0]
        rep_idx = np.full(rows.shape[0], big)
        np.minimum.at(rep_idx, inverse[ok], np.flatnonzero(ok))
        first_any = np.full(rows.shape[0], big)
        np.minimum.at(first_any, inverse, np.arange(big))
        rep_idx = np.where(rep_idx < big, rep_idx, first_any)
        allowed[cen] = allow
        rep[cen] = hkl[rep_idx].astype(np.int32)
    return ReferenceRows(system=system, rows=rows, allowed=allowed, rep_hkl=rep, n_max=n_max)


def refine_rows(system: str) -> ReferenceRows:
    """Reference rows of the float64 refinement (index bound ``_N_MAX_REFINE``, ≥ the search's)."""
    system = search_system(system)
    return reference_rows(system, _N_MAX_REFINE[system])
