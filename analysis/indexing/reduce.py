"""Cell reductions and lattice equivalence for indexing (one home: Selling, Lagrange, Niggli).

The search reduces every candidate's reciprocal basis so that low-angle lines keep small
indices (:func:`reduce_x`): Selling (Delaunay) reduction of G* for triclinic, 2D Lagrange
reduction in the a*c* plane for monoclinic, a ≤ b ≤ c for orthorhombic. It runs inside
``jit`` on float32 (fixed step counts, JAX) and on float64 numpy arrays (to convergence) with
the same step functions. Niggli reduction of finished cells uses gemmi.

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
import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod

__all__ = [
    "selling_reduce",
    "lagrange_reduce",
    "reduce_x",
    "niggli_cell",
    "primitive_metric",
    "sublattice_bases",
    "same_lattice",
    "metric_tolerance",
    "supercell_index",
    "lattice_key",
]


# ---------------------------------------------------------------------------- Selling and Lagrange
# Selling reduction: for the superbase b1..b4 (b4 = −b1−b2−b3) with b_i·b_j > 0, replace
# b_i → −b_i, b_k → b_k + b_i, b_l → b_l + b_i (k, l the other two); ends when all
# b_i·b_j ≤ 0 (Delaunay reduced). Selling (1874); Conway & Sloane (1992).
_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_PAIR_I = np.array([p[0] for p in _PAIRS])
_PAIR_J = np.array([p[1] for p in _PAIRS])


def _selling_mats() -> np.ndarray:
    mats = []
    for i, j in _PAIRS:
        t = np.eye(4)
        t[i, i] = -1.0
        for k in range(4):
            if k not in (i, j):
                t[k, i] = 1.0
        mats.append(t)
    return np.array(mats)


_SELLING_T = _selling_mats()
_SUPERBASE = np.array([[1.0, 0, 0, -1], [0, 1, 0, -1], [0, 0, 1, -1]])


def _selling_step(xp, g4, tol):
    """One Selling step on the superbase metric ``[4, 4]``: (new g4, whether a positive product was reduced)."""
    s = g4[_PAIR_I, _PAIR_J]
    k = xp.argmax(s)
    act = s[k] > tol
    t = xp.where(act, xp.asarray(_SELLING_T, g4.dtype)[k], xp.eye(4, dtype=g4.dtype))
    if xp is np:
        return t @ g4 @ t.T, act
    # jax (vmap-ed over a batch of candidates): t g4 tᵀ as broadcast products and sums, not two 4×4 matmuls.
    # XLA's CPU backend runs a batched 4×4 dot per candidate: the matmul form took 0.32 CPU s per 8 192
    # triclinic candidates (40 steps), this one 0.008 s, bit for bit the same (issue 21)
    tg = xp.sum(t[:, :, None] * g4[None, :, :], axis=1)
    return xp.sum(tg[:, None, :] * t[None, :, :], axis=2), act


def selling_reduce(g, n_steps: int | None = None):
    """Selling-reduce a 3×3 metric (G or G*, any unit); returns the reduced 3×3 metric of the same lattice.

    numpy input: float64, until every superbase product is ≤ 1e-12·tr(G₄) (at most 100 steps).
    jax input (inside ``jit``): ``n_steps`` (default 40) fixed steps, products ≤ 1e-7·tr(G) count as reduced.
    """
    if cell_mod.array_module(g) is np:
        g4 = _SUPERBASE.T @ np.asarray(g, float) @ _SUPERBASE
        for _ in range(n_steps or 100):
            g4, act = _selling_step(np, g4, 1e-12 * np.trace(g4))
            if not act:
                break
        return g4[:3, :3]
    e = jnp.asarray(_SUPERBASE, g.dtype)
    tol = 1e-7 * jnp.trace(g)
    g4 = jax.lax.fori_loop(0, n_steps or 40, lambda _, g4: _selling_step(jnp, g4, tol)[0], e.T @ g @ e)
    return g4[:3, :3]


def _lagrange_step(xp, A, C, E):
    swap = C < A
    A, C = xp.where(swap, C, A), xp.where(swap, A, C)
    mu = xp.round(E / (2 * A))
    return A, C - mu * E + mu * mu * A, E - 2 * mu * A, mu


def lagrange_reduce(A, C, E, n_steps: int | None = None):
    """2D Lagrange reduction of the form A h² + C l² + E hl (any unit); returns (A, C, |E|) with A ≤ C.

    Used for the a*c* plane of a monoclinic reciprocal metric (E = 2 a*·c*) and for the real ac plane
    (E = 2 a·c). numpy scalars: until the step is the identity (at most 50 steps); jax (inside ``jit``):
    ``n_steps`` (default 8) fixed steps.
    """
    if cell_mod.array_module(A, C, E) is np:
        for _ in range(n_steps or 50):
            A, C, E, mu = _lagrange_step(np, A, C, E)
            if mu == 0:
                break
    else:
        A, C, E = jax.lax.fori_loop(0, n_steps or 8, lambda _, s: _lagrange_step(jnp, *s)[:3], (A, C, E))
    xp = cell_mod.array_module(A, C, E)
    swap = C < A
    return xp.where(swap, C, A), xp.where(swap, A, C), xp.abs(E)


def reduce_x(x, system: str):
    """Reduce the reciprocal basis of one candidate x ``[n_params]`` (Å⁻²) so low-angle lines get small indices.

    Triclinic: Selling; monoclinic: Lagrange in the a*c* plane (A ≤ C, E ≥ 0); orthorhombic:
    a ≤ b ≤ c (A ≥ B ≥ C); others unchanged. numpy input gives float64 numpy (to convergence),
    jax input the fixed-step JAX reduction (``jit``-able; :func:`selling_reduce`).
    """
    xp = cell_mod.array_module(x)
    if system == "triclinic":
        g = selling_reduce(cell_mod.reciprocal_metric_from_params(xp.asarray(x), system))
        return cell_mod.reciprocal_params_from_metric(g, system)
    if system == "monoclinic":
        A, C, E = lagrange_reduce(x[0], x[2], x[3])
        return xp.stack([A, x[1], C, E])
    if system == "orthorhombic":
        return -xp.sort(-xp.asarray(x))
    return x


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
    """Metric ``[3, 3]`` (Å²) of the Niggli-reduced primitive cell (read-only: cached per cell and centring)."""
    return _primitive_metric(_key(cell), centring)


# rank_solutions and decide compare every pair of cells (same_lattice, supercell_index): a noisy blind monoclinic list
# asked ~65 000 Niggli reductions of ~1 000 distinct cells, 3.6 of 30 s (issue 21); the cache returns them at once
@functools.lru_cache(maxsize=8192)
def _primitive_metric(cell: tuple, centring: str) -> np.ndarray:
    g = np.asarray(cell_mod.metric(niggli_cell(np.asarray(cell), centring)), float)
    g.flags.writeable = False
    return g


@functools.lru_cache(maxsize=1)
def _unimodular() -> np.ndarray:
    mats = np.array(list(itertools.product((-1, 0, 1), repeat=9)), dtype=np.int64).reshape(-1, 3, 3)
    det = np.round(np.linalg.det(mats)).astype(int)
    return mats[np.abs(det) == 1].astype(float)


@functools.lru_cache(maxsize=8)
def sublattice_bases(n: int) -> np.ndarray:
    """Integer matrices ``[m, 3, 3]`` whose columns span the index-n sublattices of Z³ (column Hermite normal form).

    7 matrices for n = 2, 13 for n = 3 (module docstring).
    """
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


@functools.lru_cache(maxsize=1)
def _unimodular_t() -> np.ndarray:
    return np.ascontiguousarray(_unimodular().transpose(0, 2, 1))


def _metrics_match(g1: np.ndarray, g2: np.ndarray, rel_tol: float) -> bool:
    """Whether some unimodular U (entries -1, 0, 1) maps the Niggli metric ``g1`` onto ``g2``: |Uᵀ g1 U − g2| ≤ ε
    entrywise, ε = ``rel_tol`` × the mean squared axis length.

    Both metrics are Niggli-reduced, so the diagonal of ``g1`` holds the squared successive minima of its
    lattice; a match gives that lattice independent vectors of squared lengths ≤ g2_kk + ε, hence
    g1_kk ≤ g2_kk + ε for every k: lattices failing this are rejected before the 6960 products (most pairs
    ranked by rank_solutions).
    """
    scale = max(np.trace(g1), np.trace(g2)) / 3
    eps = rel_tol * scale
    if np.any(np.diag(g1) > np.diag(g2) + eps * (1 + 1e-9)):
        return False
    t = _unimodular_t() @ g1 @ _unimodular()
    return bool(np.any(np.abs(t - g2).reshape(-1, 9).max(axis=1) <= eps))


def same_lattice(cell1, centring1: str, cell2, centring2: str, rel_tol: float = 5e-3) -> bool:
    """True when the two (centred) cells describe the same lattice within ``rel_tol``.

    ``rel_tol`` is relative to the mean squared axis length (|ΔG|/⟨a²⟩); 5e-3 accepts
    cells whose lengths agree to ~0.25 %, well above refined-cell esds on 20 lines.
    """
    return _same_lattice(_key(cell1), centring1, _key(cell2), centring2, float(rel_tol))


def metric_tolerance(cell, cell_esd, n_esd: float = 4.0) -> float:
    """``rel_tol`` of :func:`same_lattice` spanning ``n_esd`` esds of a refined cell's metric: n_esd·max σ(G_ij)/⟨a²⟩.

    σ(G_ij) from the cell esds (taken as independent): σ(a²) = 2aσ(a), and for G_ij = a_i a_j cos γ the three terms
    a_j cos γ σ(a_i), a_i cos γ σ(a_j), a_i a_j sin γ σ(γ) in quadrature. For a cell refined on a noisy list this is
    how far the list lets two refinements of one lattice differ; a fixed tolerance cannot be right for both a 4 Å
    cell of 20 high-angle lines and a 2 900 Å3 triclinic cell whose lines sit where σ(q²) is largest relative to q².
    """
    cell, esd = np.asarray(cell, float), np.asarray(cell_esd, float)
    a, s = cell[:3], esd[:3]
    ang, s_ang = np.deg2rad(cell[3:]), np.deg2rad(esd[3:])
    sig = [2 * a[i] * s[i] for i in range(3)]
    for k, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        c, sn = np.cos(ang[k]), np.sin(ang[k])
        sig.append(np.sqrt((a[j] * c * s[i]) ** 2 + (a[i] * c * s[j]) ** 2 + (a[i] * a[j] * sn * s_ang[k]) ** 2))
    return float(n_esd * max(sig) / np.mean(a**2))


def _key(cell) -> tuple:
    return tuple(float(v) for v in np.asarray(cell, float).ravel())


# rank_solutions runs after every lattice system of a blind search over all solutions so far: the same pairs come back
@functools.lru_cache(maxsize=65536)
def _same_lattice(cell1: tuple, centring1: str, cell2: tuple, centring2: str, rel_tol: float) -> bool:
    g1, g2 = primitive_metric(cell1, centring1), primitive_metric(cell2, centring2)
    v1, v2 = np.sqrt(np.linalg.det(g1)), np.sqrt(np.linalg.det(g2))
    if abs(v1 - v2) > 3 * rel_tol * max(v1, v2):
        return False
    return _metrics_match(g1, g2, rel_tol)


def supercell_index(small, small_centring: str, big, big_centring: str, n_max: int = 4, rel_tol: float = 5e-3):
    """Index n (2..n_max) if lattice ``big`` is an index-n sublattice of ``small`` (a supercell), else 0."""
    return _supercell_index(_key(small), small_centring, _key(big), big_centring, int(n_max), float(rel_tol))


@functools.lru_cache(maxsize=65536)
def _supercell_index(small: tuple, small_centring: str, big: tuple, big_centring: str, n_max: int, rel_tol: float):
    gs = primitive_metric(small, small_centring)
    gb = primitive_metric(big, big_centring)
    ratio = np.sqrt(np.linalg.det(gb) / np.linalg.det(gs))
    n = int(round(ratio))
    if n < 2 or n > n_max or abs(ratio - n) > 3 * rel_tol * n:
        return 0
    for m in sublattice_bases(n):
        gsup = m.T @ gs @ m
        red = niggli_cell(cell_mod.cell_from_metric(gsup), "P")
        if _metrics_match(np.asarray(cell_mod.metric(red)), gb, rel_tol):
            return n
    return 0


def lattice_key(cell, centring: str = "P", digits: int = 2) -> tuple:
    """Coarse hashable key of the reduced primitive cell (volume, sorted lengths) for quick grouping."""
    red = niggli_cell(cell, centring)
    return (round(float(cell_mod.volume(red)), digits - 1), *np.round(np.sort(red[:3]), digits))
