"""hkl generation and reciprocal-space symmetry from gemmi's space-group tables.

All functions take and return numpy arrays (symmetry is bookkeeping done once,
outside ``jit``); ``hkl`` is int32 ``[n_refl, 3]``. Space groups are given as
anything :func:`spacegroup` accepts (HM symbol, number, ``gemmi.SpaceGroup``).

Reciprocal-space action of a symmetry operation (R, t) on a reflection:
h' = h·R (row vector times the rotation), with phase shift 2π h·t.
"""

from __future__ import annotations

import gemmi
import numpy as np

from analysis import cell as cell_mod

__all__ = [
    "spacegroup",
    "symmetry_operations",
    "reciprocal_rotations",
    "generate_hkl",
    "supercell_hkl",
    "to_asu",
    "canonical_hkl",
    "is_absent",
    "epsilon_factors",
    "centric_flags",
    "multiplicities",
    "friedel_mates",
    "expand_to_p1",
    "hkl_keys",
]

_HKL_OFFSET = 1 << 19  # |h|, |k|, |l| < 2^19: keys < 2^60 fit int64
_HKL_BASE = 1 << 20


def hkl_keys(hkl) -> np.ndarray:
    """One int64 per Miller index, int ``[...]`` from int ``[..., 3]`` (|h|, |k|, |l| < 2¹⁹): the one hkl packing.

    Equal keys ⇔ equal hkl, and keys sort like the indices do lexicographically (h first), so
    ``np.unique``, ``argsort``/``searchsorted`` and ``argmax`` on keys act on the indices themselves.
    """
    h = np.asarray(hkl).astype(np.int64) + _HKL_OFFSET
    return (h[..., 0] * _HKL_BASE + h[..., 1]) * _HKL_BASE + h[..., 2]


def spacegroup(sg) -> gemmi.SpaceGroup:
    """Resolve a space group from an HM/Hall symbol, an ITC number or a ``gemmi.SpaceGroup``.

    Raises:
      ValueError: naming the input and how to spell it.
    """
    if isinstance(sg, gemmi.SpaceGroup):
        return sg
    try:
        if isinstance(sg, (int, np.integer)):
            return gemmi.find_spacegroup_by_number(int(sg))
        found = gemmi.find_spacegroup_by_name(str(sg))
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"unknown space group {sg!r}: use a Hermann-Mauguin symbol such as 'P 21 21 21'") from exc
    if found is None:
        raise ValueError(f"unknown space group {sg!r}: use a Hermann-Mauguin symbol such as 'P 21 21 21'")
    return found


def symmetry_operations(sg) -> tuple[np.ndarray, np.ndarray]:
    """All operations (including centring) as fractional (R, t).

    Returns:
      rot: ``[n_ops, 3, 3]`` int; trans: ``[n_ops, 3]`` float, fractional.
      x' = R x + t acts on fractional coordinates.
    """
    ops = spacegroup(sg).operations()
    rots, trans = [], []
    for op in ops:
        rots.append(np.array(op.rot, dtype=np.int64) // gemmi.Op.DEN)
        trans.append(np.array(op.tran, dtype=float) / gemmi.Op.DEN)
    return np.array(rots, dtype=np.int32), np.array(trans)


def reciprocal_rotations(sg) -> np.ndarray:
    """Distinct point-group rotations acting on hkl row vectors, ``[n_rot, 3, 3]`` int (h' = h @ R)."""
    ops = spacegroup(sg).operations()
    rots = {tuple((np.array(op.rot, dtype=np.int64) // gemmi.Op.DEN).ravel()) for op in ops.sym_ops}
    return np.array(sorted(rots), dtype=np.int32).reshape(-1, 3, 3)


def expand_to_p1(pos_frac: np.ndarray, sg) -> np.ndarray:
    """Apply every symmetry operation to fractional positions.

    Args:
      pos_frac: ``[n_atoms, 3]`` fractional.

    Returns:
      ``[n_ops * n_atoms, 3]`` fractional positions wrapped to [0, 1), op-major.
    """
    rot, trans = symmetry_operations(sg)
    out = np.einsum("oij,nj->oni", rot, np.asarray(pos_frac, float)) + trans[:, None, :]
    return np.mod(out, 1.0).reshape(-1, 3)


def _hkl_box(cell, d_min: float) -> np.ndarray:
    cell = np.asarray(cell, float)
    hmax = np.floor(cell[:3] / d_min).astype(int)
    rng = [np.arange(-m, m + 1) for m in hmax]
    grid = np.stack(np.meshgrid(*rng, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid


def generate_hkl(
    cell,
    d_min: float,
    sg="P 1",
    *,
    unique: bool = False,
    d_max: float | None = None,
    include_absent: bool = False,
) -> np.ndarray:
    """Miller indices with d ≥ d_min (Å), excluding 000.

    Args:
      cell: ``[6]`` (Å, degrees).
      d_min: high-resolution limit, Å.
      sg: space group (used for systematic absences and, with ``unique``, the ASU).
      unique: True → one reflection per symmetry orbit, in gemmi's (CCP4) ASU,
        Friedel mates merged; False → the full sphere.
      d_max: optional low-resolution limit, Å.
      include_absent: keep systematically absent reflections.

    Returns:
      int32 ``[n_refl, 3]``, sorted by decreasing d.
    """
    if d_min <= 0:
        raise ValueError(f"d_min must be positive (Å), got {d_min}")
    group = spacegroup(sg)
    if unique:
        gcell = gemmi.UnitCell(*[float(v) for v in cell])
        hkl = np.asarray(gemmi.make_miller_array(gcell, group, d_min, d_max or 0.0, unique=True), np.int32)
    else:
        hkl = _hkl_box(cell, d_min)
        inv_d2 = cell_mod.inv_d2(hkl.astype(float), np.asarray(cell, float))
        keep = (inv_d2 > 0) & (inv_d2 <= 1.0 / d_min**2 * (1 + 1e-12))
        if d_max is not None:
            keep &= inv_d2 >= 1.0 / d_max**2
        hkl = hkl[keep].astype(np.int32)
        if not include_absent:
            hkl = hkl[~is_absent(hkl, group)]
    inv_d2 = cell_mod.inv_d2(hkl.astype(float), np.asarray(cell, float))
    return hkl[np.argsort(inv_d2, kind="stable")]


def supercell_hkl(cell, d_min: float, supercell=(1, 1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Fractional-index grid with n_a × n_b × n_c samples per integer hkl (diffuse scattering).

    A P1 supercell of ``n_a a × n_b b × n_c c`` has integer indices H = (n_a h, n_b k, n_c l);
    its reflections sample the parent reciprocal lattice on that finer grid.

    Returns:
      hkl_super: int32 ``[n, 3]`` indices of the supercell lattice (use with the supercell cell);
      hkl_frac: float ``[n, 3]`` = hkl_super / supercell, in parent-cell units.
    """
    n = np.asarray(supercell, int)
    super_cell = np.concatenate([np.asarray(cell, float)[:3] * n, np.asarray(cell, float)[3:]])
    hkl_super = generate_hkl(super_cell, d_min, "P 1", include_absent=True)
    return hkl_super, hkl_super / n


def canonical_hkl(hkl: np.ndarray, sg, anomalous: bool = False) -> np.ndarray:
    """A fast, vectorized orbit representative: the lexicographically largest equivalent.

    Use it to group observations of the same unique reflection (merging,
    symmetry averaging); use :func:`to_asu` when the standard ASU is needed
    (MTZ output). Friedel mates are equivalent unless ``anomalous``.
    """
    hkl = np.asarray(hkl, np.int64)
    rots = reciprocal_rotations(sg)
    eq = np.einsum("ni,rij->rnj", hkl, rots)  # [n_rot, n, 3]
    if not anomalous:
        eq = np.concatenate([eq, -eq], axis=0)
    best = np.argmax(hkl_keys(eq), axis=0)
    return eq[best, np.arange(hkl.shape[0])].astype(np.int32)


def to_asu(hkl: np.ndarray, sg, anomalous: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Map reflections to gemmi's (CCP4) reciprocal ASU.

    Returns:
      hkl_asu: int32 ``[n, 3]``;
      isym: int ``[n]`` gemmi/MTZ ISYM (odd: h was a +h equivalent, even: a Friedel mate).
      With ``anomalous``, Friedel mates stay apart: observations of the (−) mate
      come back as the negated ASU index, so grouping by ``hkl_asu`` keeps I(+) and I(−) apart.
    """
    group = spacegroup(sg)
    ops = group.operations()
    asu = gemmi.ReciprocalAsu(group)
    hkl = np.asarray(hkl, np.int32).reshape(-1, 3)
    # one gemmi call per distinct input reflection (observations repeat a lot)
    _, first, inverse = np.unique(hkl_keys(hkl), return_index=True, return_inverse=True)
    uniq = hkl[first]
    mapped = [asu.to_asu(list(map(int, h)), ops) for h in uniq]
    uniq_asu = np.array([m[0] for m in mapped], np.int32).reshape(-1, 3)
    uniq_isym = np.array([m[1] for m in mapped], np.int32)
    inverse = inverse.ravel()
    hkl_asu, isym = uniq_asu[inverse], uniq_isym[inverse]
    if not anomalous:
        return hkl_asu, isym
    # anomalous: an observation of a Friedel mate (even ISYM) is stored as its own reflection
    # by negating the ASU index, so that I(+) and I(−) never merge.
    minus = isym % 2 == 0
    hkl_asu = np.where(minus[:, None], -hkl_asu, hkl_asu)
    return hkl_asu, isym


def is_absent(hkl: np.ndarray, sg) -> np.ndarray:
    """Systematic absences, bool ``[n]``."""
    hkl = np.ascontiguousarray(hkl, np.int32)
    return np.asarray(spacegroup(sg).operations().systematic_absences(hkl), bool)


def epsilon_factors(hkl: np.ndarray, sg) -> np.ndarray:
    """Statistical weight ε (number of rotations that leave h invariant, incl. centring), int ``[n]``."""
    hkl = np.ascontiguousarray(hkl, np.int32)
    return np.asarray(spacegroup(sg).operations().epsilon_factor_array(hkl), np.int32)


def centric_flags(hkl: np.ndarray, sg) -> np.ndarray:
    """True for centric reflections (h and −h related by a symmetry rotation), bool ``[n]``."""
    hkl = np.ascontiguousarray(hkl, np.int32)
    return np.asarray(spacegroup(sg).operations().centric_flag_array(hkl), bool)


def multiplicities(hkl: np.ndarray, sg) -> np.ndarray:
    """Powder multiplicity: number of distinct h' in the orbit of h under the Laue group
    (point group plus inversion), int ``[n]``."""
    hkl = np.asarray(hkl, np.int64)
    rots = reciprocal_rotations(sg)
    eq = np.einsum("ni,rij->nrj", hkl, rots)
    eq = np.concatenate([eq, -eq], axis=1)  # [n, 2 n_rot, 3]
    key = np.sort(hkl_keys(eq), axis=1)
    return (1 + np.count_nonzero(np.diff(key, axis=1), axis=1)).astype(np.int32)


def friedel_mates(hkl: np.ndarray) -> np.ndarray:
    """−h for each h (F(−h) = F(h)* without anomalous scattering)."""
    return -np.asarray(hkl)
