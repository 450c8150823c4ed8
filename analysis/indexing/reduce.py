"""Cell reduction and lattice equivalence for indexing results (gemmi Niggli reduction).

Two cells describe the same lattice when their primitive Niggli-reduced metrics
G₁, G₂ (Å²) satisfy Mᵀ G₁ M ≈ G₂ for an integer M with det M = ±1 (settings,
centring choices and reduced-cell ambiguities near boundaries all fall under this).
Between two Niggli-reduced bases of one lattice M has entries in {-1, 0, 1}, so an
exhaustive test over those matrices is exact up to the tolerance.

A cell is an index-n supercell of another when its lattice is a sublattice of index n:
every sublattice is B·M for M in (column) Hermite normal form with det M = n
(upper-triangular, 0 ≤ M_ij < M_ii for j > i), 7 of them for n = 2, 13 for n = 3.

Niggli (1928); Křivý & Gruber (1976), Acta Cryst. A32, 297-298,
doi:10.1107/S0567739476000636; gemmi ``GruberVector``.
"""

from __future__ import annotations

import functools
import itertools

import gemmi
import numpy as np

from analysis import cell as cell_mod

__all__ = ["niggli_cell", "primitive_metric", "same_lattice", "supercell_index", "lattice_key"]


def niggli_cell(cell, centring: str = "P") -> np.ndarray:
    """Niggli-reduced primitive cell ``[6]`` (Å, degrees) of a (possibly centred) cell.

    Args:
      cell: ``[6]`` conventional cell.
      centring: lattice centring letter (P, A, B, C, I, F, R; R = hexagonal axes, obverse).
    """
    gv = gemmi.GruberVector(gemmi.UnitCell(*[float(v) for v in cell]), centring, False)
    gv.niggli_reduce(epsilon=1e-9 * float(np.max(np.asarray(cell[:3], float))) ** 2, iteration_limit=200)
    return np.array(gv.cell_parameters(), dtype=float)


def primitive_metric(cell, centring: str = "P") -> np.ndarray:
    """Metric ``[3, 3]`` (Å²) of the Niggli-reduced primitive cell."""
    return np.asarray(cell_mod.metric(niggli_cell(cell, centring)), float)


@functools.lru_cache(maxsize=1)
def _unimodular() -> np.ndarray:
    mats = np.array(list(itertools.product((-1, 0, 1), repeat=9)), dtype=np.int64).reshape(-1, 3, 3)
    det = np.round(np.linalg.det(mats)).astype(int)
    return mats[np.abs(det) == 1].astype(float)


@functools.lru_cache(maxsize=8)
def _hnf(n: int) -> np.ndarray:
    out = []
    for a in range(1, n + 1):
        for c in range(1, n + 1):
            if n % (a * c):
                continue
            f = n // (a * c)
            # the sublattice is spanned by the COLUMNS of M (new basis vectors in old coordinates):
            # column HNF reduces each off-diagonal entry modulo the diagonal entry of its row
            for b, d, e in itertools.product(range(a), range(a), range(c)):
                out.append([[a, b, d], [0, c, e], [0, 0, f]])
    return np.array(out, dtype=float)


def _metrics_match(g1: np.ndarray, g2: np.ndarray, rel_tol: float) -> bool:
    u = _unimodular()
    t = np.einsum("mji,jk,mkl->mil", u, g1, u)
    scale = max(np.trace(g1), np.trace(g2)) / 3
    return bool(np.any(np.max(np.abs(t - g2), axis=(1, 2)) <= rel_tol * scale))


def same_lattice(cell1, centring1: str, cell2, centring2: str, rel_tol: float = 5e-3) -> bool:
    """True when the two (centred) cells describe the same lattice within ``rel_tol``.

    ``rel_tol`` is relative to the mean squared axis length (|ΔG|/⟨a²⟩); 5e-3 accepts
    cells whose lengths agree to ~0.25 %, well above refined-cell esds on 20 lines.
    """
    g1, g2 = primitive_metric(cell1, centring1), primitive_metric(cell2, centring2)
    v1, v2 = np.sqrt(np.linalg.det(g1)), np.sqrt(np.linalg.det(g2))
    if abs(v1 - v2) > 3 * rel_tol * max(v1, v2):
        return False
    return _metrics_match(g1, g2, rel_tol)


def supercell_index(small, small_centring: str, big, big_centring: str, n_max: int = 4, rel_tol: float = 5e-3):
    """Index n (2..n_max) if lattice ``big`` is an index-n sublattice of ``small`` (a supercell), else 0."""
    gs = primitive_metric(small, small_centring)
    gb = primitive_metric(big, big_centring)
    ratio = np.sqrt(np.linalg.det(gb) / np.linalg.det(gs))
    n = int(round(ratio))
    if n < 2 or n > n_max or abs(ratio - n) > 3 * rel_tol * n:
        return 0
    for m in _hnf(n):
        gsup = m.T @ gs @ m
        red = niggli_cell(cell_mod.cell_from_metric(gsup), "P")
        if _metrics_match(np.asarray(cell_mod.metric(red)), gb, rel_tol):
            return n
    return 0


def lattice_key(cell, centring: str = "P", digits: int = 2) -> tuple:
    """Coarse hashable key of the reduced primitive cell (volume, sorted lengths) for quick grouping."""
    red = niggli_cell(cell, centring)
    return (round(float(cell_mod.volume(red)), digits - 1), *np.round(np.sort(red[:3]), digits))
