"""From search candidates to ranked, refined, de-duplicated indexing solutions.

For each candidate (float64, numpy): iterate nearest-row assignment and weighted least
squares (weights 1/σ_k², unindexed lines excluded, optional 2θ zero shift); then test
every lattice centring of the system (reference.py), re-assigning lines among the
allowed rows only, and keep the centring with the best de Wolff M20 that indexes as
many lines as P. esds come from the least-squares covariance s²(HᵀWH)⁻¹ propagated to
the cell by a central-difference Jacobian. Equivalent solutions (same lattice in
another setting, or index-2..4 sub/supercells) are merged, keeping the better M20 and,
within a factor ``SYMMETRY_MARGIN``, the higher symmetry.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import analysis.indexing.fom as fom
import analysis.indexing.reduce as reduce
from analysis import cell as cell_mod
from analysis.indexing.errors import sigma_inv_d2
from analysis.indexing.reference import BRAVAIS_OF, CENTRINGS, refine_rows, search_system

__all__ = [
    "Solution",
    "refine_candidate",
    "standard_setting",
    "smaller_cells",
    "primitive_subcells",
    "rank_solutions",
    "c_centred_cell",
    "cell_of",
    "SYMMETRY_ORDER",
]

# rank of each lattice system, highest symmetry first: the order is the one fact stated, the ranks follow
SYMMETRY_ORDER = {
    s: i for i, s in enumerate(("cubic", "hexagonal", "tetragonal", "orthorhombic", "monoclinic", "triclinic"))
}
SYMMETRY_MARGIN = 0.5


@dataclasses.dataclass
class Solution:
    """One indexing solution (all cells Å / degrees).

    Attributes:
      bravais: Pearson symbol (e.g. "mP"); system: lattice system; centring: letter.
      cell, cell_esd: conventional cell ``[6]`` in the search setting and its esds.
      niggli_cell: Niggli-reduced primitive cell ``[6]``.
      volume: conventional volume (Å³).
      zero_shift, zero_shift_esd: 2θ zero shift (degrees; 0 when not refined).
      M20, F20, F20_delta_2theta, F20_n_poss: figures of merit over the indexed lines (F20 needs λ).
      score: ranking figure, M20 with unindexed lines counted at max(n_σ·σ, Q_20/(2 N_calc)), the
        first ``n_impurity`` of them at n_σ·σ (refine_candidate).
      n_indexed, unindexed: count and 0-based peak indices not indexed.
      hkl: ``[n, 3]`` int Miller indices per observed peak; inv_d2_calc: ``[n]`` Å⁻².
      x: reciprocal-metric parameters (Å⁻²).
      related: descriptions of merged equivalent / sub- / supercells.
      reason: why the solution ranks where it does (decide.py; empty when not ranked by it).
      chi2, dof: Σ(Δq²/σ)² of the indexed lines under the σ(q²) model of the refinement and its degrees of
        freedom, indexed lines − refined parameters (cell, and the zero shift when refined); decide.fit_test.
    """

    bravais: str
    system: str
    centring: str
    cell: np.ndarray
    cell_esd: np.ndarray
    niggli_cell: np.ndarray
    volume: float
    zero_shift: float
    zero_shift_esd: float
    M20: float
    score: float
    F20: float | None
    F20_delta_2theta: float | None
    F20_n_poss: int | None
    n_indexed: int
    unindexed: list
    hkl: np.ndarray
    inv_d2_calc: np.ndarray
    x: np.ndarray
    related: list = dataclasses.field(default_factory=list)
    reason: str = ""
    chi2: float = float("nan")
    dof: int = 1

    def to_dict(self) -> dict:
        def fl(v):
            return None if v is None else float(v)

        return {
            "bravais": self.bravais,
            "system": self.system,
            "centring": self.centring,
            "cell": [float(v) for v in self.cell],
            "cell_esd": [float(v) for v in self.cell_esd],
            "niggli_cell": [float(v) for v in self.niggli_cell],
            "volume": float(self.volume),
            "zero_shift": float(self.zero_shift),
            "zero_shift_esd": float(self.zero_shift_esd),
            "M20": fl(self.M20),
            "score": fl(self.score),
            "F20": fl(self.F20),
            "F20_delta_2theta": fl(self.F20_delta_2theta),
            "F20_n_poss": self.F20_n_poss,
            "n_indexed": int(self.n_indexed),
            "unindexed": [int(i) for i in self.unindexed],
            "hkl": np.asarray(self.hkl).astype(int).tolist(),
            "inv_d2_calc": [float(v) for v in self.inv_d2_calc],
            "related": list(self.related),
            "reason": self.reason,
            "chi2": float(self.chi2),
            "dof": int(self.dof),
        }


def cell_of(x, system: str) -> np.ndarray:
    """Cell ``[6]`` (Å, degrees) of reciprocal parameters x (Å⁻²); NaN when the reciprocal metric is singular
    or not positive definite."""
    try:
        with np.errstate(invalid="ignore"):  # non-positive-definite candidates give NaN lengths/angles
            return np.asarray(cell_mod.cell_from_reciprocal_params(np.asarray(x, float), system), float)
    except np.linalg.LinAlgError:  # a degenerate candidate (e.g. a refined x with G* of rank < 3)
        return np.full(6, np.nan)


def _lsq(inv_d2, h, g, w, refine_zero, zero_sigma=None):
    """Weighted least squares q ≈ h x (+ g z); returns params and covariance (unscaled). ``zero_sigma`` (degrees):
    the zero shift is restrained towards 0 by one pseudo-observation z = 0 of weight 1/zero_sigma²."""
    hz = np.concatenate([h, g[:, None]], axis=1) if refine_zero else h
    if refine_zero and zero_sigma:
        hz = np.concatenate([hz, np.eye(1, hz.shape[1], hz.shape[1] - 1)], axis=0)
        inv_d2, w = np.append(inv_d2, 0.0), np.append(w, 1.0 / zero_sigma**2)
    a = (hz * w[:, None]).T @ hz
    b = (hz * w[:, None]).T @ inv_d2
    cs = np.sqrt(np.diag(a)) + 1e-300
    if not np.all(np.isfinite(a)) or np.any(cs <= 1e-300):
        return None, None
    a_s = a / np.outer(cs, cs)
    try:
        inv = np.linalg.inv(a_s + 1e-14 * np.eye(a.shape[0]))
    except np.linalg.LinAlgError:
        return None, None
    sol = inv @ (b / cs) / cs
    return sol, inv / np.outer(cs, cs)


def refine_candidate(
    x0,
    z0: float,
    inv_d2,
    system: str,
    *,
    sigma=None,
    g_zero=None,
    refine_zero: bool = False,
    n_sigma: float = 4.0,
    n_impurity: int = 1,
    wavelength: float | None = None,
    n_fom: int = 20,
    centrings=None,
    zero_sigma: float | None = None,
    better_than: tuple | None = None,
) -> Solution | None:
    """Refine one candidate and choose its centring (module docstring). None if it breaks down, or, with
    ``better_than`` = (n, s), if it indexes fewer than n lines or scores ≤ s (smaller_cells: nothing more is computed).

    Ranking score (``Solution.score``): M20 with each unindexed line among the first 20 counted
    at max(n_σ·σ, Q_20/(2 N_calc)) (what a random line would score), except the first
    ``n_impurity`` of them, which cost only the tolerance n_σ·σ.

    Over 100 lines because the per-centring refinement, the ranking score and the esd propagation
    share the candidate's assignment state; apart, they would pass a dozen arrays between them.
    """
    system = search_system(system)
    ref = refine_rows(system)
    inv_d2 = np.asarray(inv_d2, float)
    n = inv_d2.size
    sig = sigma_inv_d2(inv_d2) if sigma is None else np.asarray(sigma, float)
    g = np.zeros(n) if g_zero is None else np.asarray(g_zero, float)
    refine_zero = bool(refine_zero and g_zero is not None)
    best = None
    for cen in centrings or CENTRINGS[system]:
        allowed = ref.allowed[cen]
        rows = ref.rows[allowed]
        x, z = np.asarray(x0, float).copy(), float(z0)
        cov = prev = None  # prev: the last solve's assignment; the same again would give the same solve (converged)
        for _ in range(6):
            inv_d2_ref = rows @ x
            inv_d2_model = inv_d2 - g * z
            idx = np.argmin(np.abs(inv_d2_model[:, None] - inv_d2_ref[None, :]), axis=1)
            r = inv_d2_model - inv_d2_ref[idx]
            ok = np.abs(r) <= n_sigma * sig
            if ok.sum() < rows.shape[1] + 2 or (prev and np.array_equal(idx, prev[0]) and np.array_equal(ok, prev[1])):
                break
            prev = (idx, ok)
            sol, cov = _lsq(inv_d2, rows[idx], g, ok / sig**2, refine_zero, zero_sigma)
            if sol is None or not np.all(np.isfinite(sol)):
                cov = None
                break
            x = sol[: rows.shape[1]]
            z = float(sol[-1]) if refine_zero else z
        if cov is None:
            continue
        cell = cell_of(x, system)
        if not np.all(np.isfinite(cell)):
            continue
        inv_d2_ref = rows @ x
        inv_d2_model = inv_d2 - g * z
        idx = np.argmin(np.abs(inv_d2_model[:, None] - inv_d2_ref[None, :]), axis=1)
        inv_d2_calc = inv_d2_ref[idx] + g * z
        r = inv_d2 - inv_d2_calc
        ok = np.abs(r) <= n_sigma * sig
        # ranking score: M20 with unindexed lines counted at the tolerance n_σ·σ_k
        # a floor of 1e-3 σ on |Δ| keeps perfect (noise-free) fits comparable: the cell with fewer
        # calculated lines (the smaller cell) then wins, as de Wolff's M20 intends
        # unindexed lines cost max(n_σ σ, Q_N / (2 N_calc)): half the mean calculated-line spacing
        n_calc = max(fom.count_distinct(inv_d2_ref, inv_d2[min(n_fom, n) - 1]), 1)
        cap = np.maximum(n_sigma * sig, inv_d2[min(n_fom, n) - 1] / (2 * n_calc))
        # the first n_impurity unindexed lines (impurity phases) cost only the tolerance: with the
        # random-line cost one impurity caps M at ≈ 20 and a supercell indexing it by chance wins
        bad = np.flatnonzero(~ok[: min(n_fom, n)])[:n_impurity]
        cap[bad] = n_sigma * sig[bad]
        r_cap = np.where(ok, np.maximum(np.abs(r), 1e-3 * sig), cap)
        score = fom.de_wolff_m(inv_d2, inv_d2 - r_cap, inv_d2_ref, n=n_fom)
        cand = (cen, x, z, cov, idx, inv_d2_calc, ok, score, inv_d2_ref)
        if best is None or score > best[7]:
            best = cand
    if best is None:
        return None
    cen, x, z, cov, idx, inv_d2_calc, ok, score, inv_d2_ref = best
    if better_than is not None and (ok.sum() < better_than[0] or score <= better_than[1]):
        return None
    m20 = fom.de_wolff_m(inv_d2, inv_d2_calc, inv_d2_ref, n=n_fom, indexed=ok)
    n_par = x.size + (1 if refine_zero else 0)
    dof = max(int(ok.sum()) - n_par, 1)
    r = inv_d2 - inv_d2_calc
    chi2 = float(np.sum((r[ok] / sig[ok]) ** 2))
    cov = cov * (chi2 / dof)
    cell = cell_of(x, system)
    # esd of the cell: J cov Jᵀ with J = ∂cell/∂x by central differences (the 2p cells in one batched call)
    hstep = 1e-6 * np.abs(x) + 1e-12
    xpm = np.concatenate([x + np.diag(hstep), x - np.diag(hstep)])
    try:
        with np.errstate(invalid="ignore"):
            cpm = np.asarray(cell_mod.cell_from_reciprocal_params(xpm, system), float)
    except np.linalg.LinAlgError:
        cpm = np.stack([cell_of(v, system) for v in xpm])
    jac = ((cpm[: x.size] - cpm[x.size :]) / (2 * hstep[:, None])).T
    cov_x = cov[: x.size, : x.size]
    esd = np.sqrt(np.maximum(np.diag(jac @ cov_x @ jac.T), 0.0))
    f20 = dtt = nposs = None
    if wavelength is not None:
        f20, dtt, nposs = fom.smith_snyder_f(inv_d2, inv_d2_calc, inv_d2_ref, wavelength, n=n_fom, indexed=ok)
    hkl = ref.rep_hkl[cen][np.flatnonzero(ref.allowed[cen])][idx]
    return Solution(
        bravais=BRAVAIS_OF[(system, cen)],
        system=system,
        centring=cen,
        cell=cell,
        cell_esd=esd,
        niggli_cell=reduce.niggli_cell(cell, cen),
        volume=float(cell_mod.volume(cell)),
        zero_shift=z,
        zero_shift_esd=float(np.sqrt(max(cov[-1, -1], 0.0))) if refine_zero else 0.0,
        M20=m20,
        score=score,
        F20=f20,
        F20_delta_2theta=dtt,
        F20_n_poss=nposs,
        n_indexed=int(ok.sum()),
        unindexed=[int(i) for i in np.flatnonzero(~ok)],
        hkl=hkl,
        inv_d2_calc=inv_d2_calc,
        x=x,
        chi2=chi2,
        dof=dof,
    )


def _reduce_ac_real(cell: np.ndarray) -> np.ndarray:
    """Monoclinic cell with a, c Lagrange-reduced in the ac plane (real space) and β ≥ 90°."""
    g = np.asarray(cell_mod.metric(cell), float)
    a2, c2, e = reduce.lagrange_reduce(g[0, 0], g[2, 2], 2 * g[0, 2])
    a, c = np.sqrt(a2), np.sqrt(c2)
    beta = np.rad2deg(np.arccos(-e / (2 * a * c)))
    return np.array([a, cell[1], c, 90.0, beta, 90.0])


# basis changes (columns: new axes in old coordinates, det +1) to the C-centred standard setting
# (International Tables: mC is C-centred with b unique, oC is C-centred)
_TO_C = {
    ("monoclinic", "A"): np.array([[0, 0, 1], [0, -1, 0], [1, 0, 0]], float),  # a' = c, b' = −b, c' = a
    ("monoclinic", "I"): np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]], float),  # a' = a + c
    ("orthorhombic", "A"): np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float),  # a' = b, b' = c, c' = a
    ("orthorhombic", "B"): np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float),  # a' = c, b' = a, c' = b
}


def c_centred_cell(cell, system: str, centring: str) -> np.ndarray:
    """The same lattice as the ``centring`` cell, as a C-centred cell ``[6]`` (Å, degrees).

    Monoclinic (b unique): A → C by a' = c, b' = −b, c' = a; I → C by a' = a + c; then c and a
    are shortened in the ac plane by the moves that keep the C centring (c → c + n a and
    a → a + 2n c), and β ≥ 90° (a, b → −a, −b). Orthorhombic A / B → C: cyclic axis permutation.
    """
    m = _TO_C.get((system, centring), np.eye(3))
    g = m.T @ np.asarray(cell_mod.metric(np.asarray(cell, float)), float) @ m
    if system == "monoclinic":
        t = np.eye(3)
        for _ in range(50):
            n_c = np.round(g[0, 2] / g[0, 0])
            step = np.array([[1, 0, -n_c], [0, 1, 0], [0, 0, 1]], float)
            g = step.T @ g @ step
            n_a = 2 * np.round(g[0, 2] / (2 * g[2, 2]))
            step2 = np.array([[1, 0, 0], [0, 1, 0], [-n_a, 0, 1]], float)
            g = step2.T @ g @ step2
            if n_c == 0 and n_a == 0:
                break
        if g[0, 2] > 0:
            t = np.diag([-1.0, -1.0, 1.0])
            g = t.T @ g @ t
        g[0, 1] = g[1, 0] = g[1, 2] = g[2, 1] = 0.0
    return np.asarray(cell_mod.cell_from_metric(g), float)


def standard_setting(sol: Solution, inv_d2, **kw) -> Solution:
    """Re-express a solution in the standard setting of its Bravais label and re-refine it.

    Triclinic: the Niggli-reduced cell (gemmi); monoclinic P: ac-plane reduced, β ≥ 90°;
    centred monoclinic (A, I) and A / B orthorhombic: the C-centred cell (:func:`c_centred_cell`,
    refined with the C centring only); other systems are already conventional. The search works
    on a reduced *reciprocal* basis, which is not the reduced real-space cell crystallographers expect.
    """
    if sol.system == "triclinic":
        cell = reduce.niggli_cell(sol.cell, "P")
    elif sol.system == "monoclinic" and sol.centring == "P":
        cell = _reduce_ac_real(sol.cell)
    elif sol.system in ("monoclinic", "orthorhombic") and sol.centring != "P":
        cell = c_centred_cell(sol.cell, sol.system, sol.centring)
        kw = dict(kw, centrings=("C",))
    else:
        return sol
    x = np.asarray(cell_mod.reciprocal_params(cell, sol.system), float)
    new = refine_candidate(x, sol.zero_shift, inv_d2, sol.system, **kw)
    if new is not None and sol.centring not in ("P", new.centring):
        # a change of centring letter must keep the fit (the same lattice): within 1 % of the score
        return new if new.score >= 0.99 * sol.score else sol
    return sol if new is None or new.score < 0.5 * sol.score else new


def _x_from_gstar(gs: np.ndarray, system: str, tol: float = 1e-6):
    """x of a reciprocal metric if it has the form of ``system`` within tol·(A + B + C) (else None)."""
    full = cell_mod.reciprocal_params_from_metric(gs, "triclinic")
    x = cell_mod.reciprocal_params_from_metric(gs, system)
    back = cell_mod.reciprocal_params_from_metric(cell_mod.reciprocal_metric_from_params(x, system), "triclinic")
    return x if np.all(np.abs(full - back) < tol * np.sum(full[:3])) else None


def _beats(best: Solution) -> tuple:
    """smaller_cells: a cell that replaces ``best`` indexes as many lines and scores 1 % more."""
    return best.n_indexed, best.score * 1.01


def smaller_cells(sol: Solution, inv_d2, **kw) -> Solution:
    """Replace a solution by an index-2/3 smaller cell that indexes the same lines better.

    If every observed line has indices in a sublattice of Z³ (e.g. all h even), the true cell
    is smaller: its reciprocal metric is G*' = Hᵀ G* H for the Hermite-normal-form H of that
    sublattice (det 2: 7 choices, det 3: 13). Each H whose G*' keeps the lattice system's form
    is refined; the best-scoring one that indexes at least as many lines replaces ``sol``.
    Repeated until nothing improves (index 4 = 2 × 2).
    """
    best = sol
    if sol.system == "cubic":
        # cubic lattices whose line sets nest without a sublattice relation (e.g. cI with a√2 indexes
        # every cF line, primitive volumes 5.66 apart): try a smaller cell a/√r for the ratios of
        # h²+k²+l² sums that relate P, I and F cells; M20 (fewer calculated lines) decides
        for r in (4 / 3, 3 / 2, 2, 8 / 3, 3, 4, 16 / 3, 6, 8):
            x = np.asarray(sol.x, float) * r  # better_than: None unless it beats best
            best = refine_candidate(x, sol.zero_shift, inv_d2, "cubic", **kw, better_than=_beats(best)) or best
    for _ in range(3):
        improved = False
        gs = np.asarray(cell_mod.reciprocal_metric_from_params(np.asarray(best.x, float), best.system), float)
        for n in (2, 3):
            for h in reduce.sublattice_bases(n):
                x = _x_from_gstar(h.T @ gs @ h, best.system)
                if x is None:
                    continue
                if best.system == "triclinic":
                    x = reduce.reduce_x(x, "triclinic")
                new = refine_candidate(x, best.zero_shift, inv_d2, best.system, **kw, better_than=_beats(best))
                if new is not None:
                    best, improved = new, True
        if not improved:
            break
    return best


def primitive_subcells(sol: Solution, inv_d2, n_max: int = 3, slack: int = 0, **kw) -> list:
    """Triclinic cells of the lattices that contain ``sol``'s primitive lattice with index 2..``n_max`` (cells
    2-3× smaller) and index at least as many lines (less ``slack``), refined (``kw``: :func:`refine_candidate`'s
    keywords).

    :func:`smaller_cells` keeps the lattice system; this does not, so it finds the true lattice of a pseudo-symmetric
    supercell: clean kyanite (aP, 293.6 Å3) is also indexed by an oI cell of twice its primitive volume (M20 41.7),
    whose index-2 superlattices include kyanite's (issue 21).
    """
    gs = np.linalg.inv(reduce.primitive_metric(sol.cell, sol.centring))  # reciprocal metric, Å⁻²
    out, floor = [], (sol.n_indexed - slack, -np.inf)
    for n in range(2, n_max + 1):
        for h in reduce.sublattice_bases(n):
            x = reduce.reduce_x(cell_mod.reciprocal_params_from_metric(h.T @ gs @ h, "triclinic"), "triclinic")
            new = refine_candidate(x, sol.zero_shift, inv_d2, "triclinic", **kw, better_than=floor)
            if new is not None:  # indexes at least sol.n_indexed - slack lines
                out.append(new)
    return out


def _rank_key(s: Solution):
    return s.score


def _keeps_symmetry(s: Solution, k: Solution) -> bool:
    """Whether ``s`` stays apart from a better-scoring derivative (sub/super) cell ``k``: ``s`` has the higher
    symmetry and a score within ``SYMMETRY_MARGIN`` of ``k``'s, so the blind decision (decide.py) must see it.
    Noisy calcite: an mC half-cell (score 23.8) absorbed the true hR cell (20.1) as a "supercell (x2)"."""
    return SYMMETRY_ORDER[s.system] < SYMMETRY_ORDER[k.system] and s.score >= SYMMETRY_MARGIN * k.score


def rank_solutions(solutions: list[Solution], top: int = 10, rel_tol: float = 5e-3) -> list[Solution]:
    """Sort by M20 and merge equivalent cells (same lattice, or index-2..4 sub/supercells).

    When two solutions describe the same lattice, the higher-symmetry one is kept if its
    M20 is at least ``SYMMETRY_MARGIN`` times the other's (extra free parameters always
    lower the residual a little). A sub/supercell of higher symmetry within that margin is not
    merged into the better-scoring cell but kept as its own solution (:func:`_keeps_symmetry`).
    """
    sols = sorted([s for s in solutions if s is not None and np.isfinite(s.volume)], key=_rank_key, reverse=True)
    kept: list[Solution] = []
    for s in sols:
        merged = False
        for i, k in enumerate(kept):
            if reduce.same_lattice(k.cell, k.centring, s.cell, s.centring, rel_tol):
                if SYMMETRY_ORDER[s.system] < SYMMETRY_ORDER[k.system] and s.score >= SYMMETRY_MARGIN * k.score:
                    s.related = k.related + [f"same lattice as {k.bravais} {np.round(k.cell, 4).tolist()}"]
                    kept[i] = s
                else:
                    k.related.append(f"same lattice as {s.bravais} {np.round(s.cell, 4).tolist()}")
                merged = True
                break
            if k.score >= s.score and not _keeps_symmetry(s, k):
                n = reduce.supercell_index(k.cell, k.centring, s.cell, s.centring, rel_tol=rel_tol)
                if n == 0:
                    n_sub = reduce.supercell_index(s.cell, s.centring, k.cell, k.centring, rel_tol=rel_tol)
                    if n_sub:
                        k.related.append(f"subcell (1/{n_sub}) {s.bravais} {np.round(s.cell, 4).tolist()}")
                        merged = True
                        break
                else:
                    k.related.append(f"supercell (x{n}) {s.bravais} {np.round(s.cell, 4).tolist()}")
                    merged = True
                    break
        if not merged:
            kept.append(s)
        if len(kept) >= top and not merged:
            pass
    kept.sort(key=_rank_key, reverse=True)
    return kept[:top]
