"""Conventional cells of higher symmetry on a primitive lattice, from its twofold axes (Le Page 1982).

A centred monoclinic or orthorhombic lattice is a triclinic lattice with extra metric symmetry: the lattice rows
perpendicular to lattice planes (:func:`twofold_axes`) give its conventional cells (:func:`from_primitive`), which
the float64 refinement (solution.py) then tests in every centring. Used on the triclinic search's cells (blind
mode's deferred fallback and the monoclinic → orthorhombic upgrade, analysis/indexing/__init__.py).

Le Page (1982), J. Appl. Cryst. 15, 255-259, doi:10.1107/S0021889882011959.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

import analysis.indexing.reduce as reduce
from analysis import cell as cell_mod
from analysis.indexing.decide import RELATED_TOL
from analysis.indexing.solution import Solution, refine_candidate

__all__ = ["twofold_axes", "from_primitive", "SQUARE_TOL", "tetragonal_cells"]


@functools.lru_cache(maxsize=1)
def _small_vectors() -> np.ndarray:
    """Primitive integer vectors with entries in −2..2, one of each ± pair ``[62, 3]``."""
    v = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=np.int64)
    v = v[np.gcd.reduce(np.abs(v), axis=1) == 1]
    first = v[np.arange(len(v)), np.argmax(v != 0, axis=1)]
    return v[first > 0]


def twofold_axes(g: np.ndarray, max_deg: float = 1.0) -> list:
    """Lattice twofold axes of the metric ``g`` (Å², a Niggli-reduced primitive cell), Le Page (1982).

    A twofold axis is a lattice row u perpendicular to a lattice plane h with |u·h| = 1 or 2;
    on a Niggli-reduced cell every such pair has indices in −2..2. Returns ``(u, h, δ)`` with
    δ (degrees) the angle between the row and the plane normal, smallest first, δ ≤ ``max_deg``.

    Le Page (1982), J. Appl. Cryst. 15, 255-259, doi:10.1107/S0021889882011959.
    """
    vec = _small_vectors().astype(float)
    gi = np.linalg.inv(g)
    uu = np.sqrt(np.einsum("ui,ij,uj->u", vec, g, vec))
    hh = np.sqrt(np.einsum("hi,ij,hj->h", vec, gi, vec))
    dot = vec @ vec.T  # [u, h] = u·h
    ok = (np.abs(dot) == 1) | (np.abs(dot) == 2)
    cos = np.clip(np.abs(dot) / (uu[:, None] * hh[None, :]), -1.0, 1.0)
    delta = np.rad2deg(np.arccos(cos))
    iu, ih = np.nonzero(ok & (delta <= max_deg))
    order = np.argsort(delta[iu, ih], kind="stable")
    return [(vec[iu[k]].astype(int), vec[ih[k]].astype(int), float(delta[iu[k], ih[k]])) for k in order]


def _plane_basis(h: np.ndarray) -> np.ndarray:
    """Integer basis ``[2, 3]`` of the lattice rows v with h·v = 0 (h primitive)."""
    vec = _small_vectors()
    vs = vec[vec @ h == 0]
    for i, j in itertools.combinations(range(len(vs)), 2):
        if np.array_equal(np.abs(np.cross(vs[i], vs[j])), np.abs(h)):
            return np.array([vs[i], vs[j]])
    # larger indices (not reached for h in −2..2, kept for safety)
    big = np.array(list(itertools.product(range(-4, 5), repeat=3)))
    vs = big[(big @ h == 0) & np.any(big != 0, axis=1)]
    for i, j in itertools.combinations(range(len(vs)), 2):
        if np.array_equal(np.abs(np.cross(vs[i], vs[j])), np.abs(h)):
            return np.array([vs[i], vs[j]])
    raise ValueError(f"no plane basis for h = {h}")


def _conventional_metrics(g: np.ndarray, system: str, max_deg: float) -> list:
    """Metrics ``[3, 3]`` (Å²) of conventional ``system`` cells of the lattice with primitive metric g."""
    axes = twofold_axes(g, max_deg)
    out = []
    if system == "monoclinic":
        for u, h, _ in axes:
            ac = _plane_basis(h)
            m = np.stack([ac[0], u, ac[1]], axis=1).astype(float)  # columns: a, b, c
            if np.linalg.det(m) < 0:
                m[:, 2] *= -1
            gm = m.T @ g @ m
            # Lagrange reduction of a, c in the plane (shortest pair), then β ≥ 90°
            for _ in range(50):
                if gm[2, 2] < gm[0, 0]:
                    m = m[:, [2, 1, 0]]
                    m[:, 1] *= -1
                    gm = m.T @ g @ m
                mu = np.round(gm[0, 2] / gm[0, 0])
                if mu == 0:
                    break
                m[:, 2] -= mu * m[:, 0]
                gm = m.T @ g @ m
            if gm[0, 2] > 0:
                m[:, [0, 1]] *= -1
                gm = m.T @ g @ m
            out.append(gm)
    else:  # orthorhombic: three mutually perpendicular twofold axes
        rows = [u.astype(float) for u, _, _ in axes]
        for i, j, k in itertools.combinations(range(len(rows)), 3):
            m = np.stack([rows[i], rows[j], rows[k]], axis=1)
            if abs(np.linalg.det(m)) < 0.5:
                continue
            gm = m.T @ g @ m
            d = np.sqrt(np.diag(gm))
            off = np.abs(gm - np.diag(np.diag(gm))) / np.outer(d, d)
            if np.max(off) <= np.sin(np.deg2rad(max_deg)):
                out.append(gm)
    return out


def _hexagonal_cells(g: np.ndarray, max_deg: float) -> list:
    """Conventional hexagonal cells ``(a, a, c, 90, 90, 120)`` of the lattice with primitive metric g: two twofold
    axes of equal length at 120° (or 60°) span the hexagonal net, c is the shortest lattice row normal to it; the
    cell holds 1 (hP) or 3 (hR, obverse or reverse: one powder pattern) lattice points."""
    axes = [u.astype(float) for u, _, _ in twofold_axes(g, max_deg)]
    tol = np.sin(np.deg2rad(max_deg))
    big = np.array(list(itertools.product(range(-3, 4), repeat=3)), float)
    big = big[np.any(big != 0, axis=1)]
    out = []
    for u1, u2 in itertools.combinations(axes, 2):
        l1, l2 = np.sqrt(u1 @ g @ u1), np.sqrt(u2 @ g @ u2)
        cos = (u1 @ g @ u2) / (l1 * l2)
        if abs(l1 - l2) > 2 * tol * max(l1, l2) or abs(abs(cos) - 0.5) > tol:
            continue
        v = np.linalg.solve(g, np.cross(u1, u2))  # the plane's normal, lattice coordinates
        lv = np.sqrt(v @ g @ v)
        lw = np.sqrt(np.einsum("wi,ij,wj->w", big, g, big))
        par = np.abs(big @ g @ v) / (lw * lv) >= np.cos(np.deg2rad(max_deg))
        if not np.any(par):
            continue
        w = big[par][np.argmin(lw[par])]
        if round(abs(np.linalg.det(np.stack([u1, u2, w])))) not in (1, 3):
            continue
        a, c = 0.5 * (l1 + l2), float(np.sqrt(w @ g @ w))
        out.append(np.array([a, a, c, 90.0, 90.0, 120.0]))
    return out


def from_primitive(sol: Solution, inv_d2, system: str, max_deg: float = 1.0, n_max: int = 8, **kw) -> list:
    """Conventional cells of ``system`` whose lattice is the primitive lattice of ``sol``.

    A centred monoclinic or orthorhombic lattice is a triclinic lattice with extra metric
    symmetry; the triclinic search finds its primitive cell more easily than the centred search
    finds the conventional one (fewer absences to get right). The lattice's twofold axes
    (:func:`twofold_axes`, Le Page) give the conventional cells: monoclinic b along one axis,
    a and c a reduced basis of the lattice plane perpendicular to it; orthorhombic a, b, c
    along three mutually perpendicular axes; hexagonal (hP / hR) from two twofold axes of equal length at 120°
    (:func:`_hexagonal_cells`). The ``n_max`` smallest distinct cells are refined
    in ``system`` (which tests the centrings); the transformation to the conventional cell may
    need indices up to 2 on the Niggli cell (e.g. mC from an F-type setting), beyond a
    {−1, 0, 1} basis-change search.
    """
    g = reduce.primitive_metric(sol.cell, sol.centring)
    if system == "hexagonal":
        cells = _hexagonal_cells(g, max_deg)
    else:
        cand = _conventional_metrics(g, system, max_deg)
        cand.sort(key=lambda gm: float(np.linalg.det(gm)))
        cells = []
        for gm in cand:
            gm = gm.copy()
            if system == "monoclinic":
                gm[0, 1] = gm[1, 0] = gm[1, 2] = gm[2, 1] = 0.0
            else:
                gm = np.diag(np.diag(gm))
            cells.append(np.asarray(cell_mod.cell_from_metric(gm), float))
    out, seen = [], set()
    for cell in cells:
        key = tuple(np.round(np.r_[np.sort(cell[:3]), cell[4]], 2))
        if key in seen or not np.all(np.isfinite(cell)):
            continue
        seen.add(key)
        x = np.asarray(cell_mod.reciprocal_params(cell, system), float)
        new = refine_candidate(x, sol.zero_shift, inv_d2, system, **kw)
        if new is not None:
            out.append(new)
        if len(seen) >= n_max:
            break
    return out


# two orthorhombic axes are equal, the cell a tetragonal lattice's (tetragonal_cells), when their squares differ by at
# most this share: the metric tolerance under which two refined cells are one lattice (~1 % in the axes)
SQUARE_TOL = RELATED_TOL


def tetragonal_cells(sol: Solution, inv_d2, **kw) -> list:
    """Tetragonal cells of a primitive or body-centred orthorhombic cell ``sol`` with two equal axes (squares within
    :data:`SQUARE_TOL`): the pair becomes a = b, the third axis c, refined in the tetragonal system (which tests the P
    and I centrings). The orthorhombic search refines a tetragonal lattice's cell with a ≠ b when its lines are noisy,
    and nothing else turns it back: the decision rule (decide.py) then compares that cell, with one parameter too many,
    against the lattice's supercells. Issue 21 (idx21q), noisy tP lists 29 and 43 of seed 2024: the true lattice
    came out only as oP cells (5.057 × 17.249 × 5.045 Å, score 35.4; 17.728 × 4.091 × 17.813 Å, 10.8) and a
    tetragonal supercell / the oP cell won; refined as tP they score 37.2 and 12.2. C- and F-centred cells (a
    tetragonal lattice's cells rotated by 45°) are left out."""
    if sol.system != "orthorhombic" or sol.centring not in ("P", "I"):
        return []
    ax = np.asarray(sol.cell, float)[:3]
    out = []
    for i, j in ((0, 1), (1, 2), (0, 2)):
        if abs(ax[i] ** 2 - ax[j] ** 2) > SQUARE_TOL * ax[i] * ax[j]:
            continue
        a = float(np.sqrt(0.5 * (ax[i] ** 2 + ax[j] ** 2)))
        c = float(ax[3 - i - j])
        x = np.asarray(cell_mod.reciprocal_params(np.array([a, a, c, 90.0, 90.0, 90.0]), "tetragonal"), float)
        new = refine_candidate(x, sol.zero_shift, inv_d2, "tetragonal", **kw)
        if new is not None:
            out.append(new)
    return out
