"""Periodic space: the one home of minimum image, wrapping and fractional coordinates (as jax-md's ``space``).

Every energy, neighbour list and observable that needs a periodic displacement calls these functions; nothing
else writes ``d - box * round(d / box)``.

Boxes (nm, or whatever length unit the positions use):
- ``None``: no periodicity (free space).
- shape ``[3]``: an orthorhombic box of edge lengths.
- shape ``[3, 3]``: box vectors as rows ``a, b, c`` in OpenMM's reduced form (docs/crystals.md, "Triclinic
  boxes"): ``a = (a_x, 0, 0)``, ``b = (b_x, b_y, 0)``, ``c = (c_x, c_y, c_z)`` with all diagonal entries positive
  and ``|b_x| ≤ a_x/2``, ``|c_x| ≤ a_x/2``, ``|c_y| ≤ b_y/2``. A diagonal matrix is an orthorhombic box.

Positions are rows: ``x = s @ B`` for fractional coordinates ``s`` and box matrix ``B`` (rows a, b, c), so
``s = x @ B⁻¹``; the reciprocal vectors are the columns of ``B⁻¹`` (``B⁻¹`` is lower triangular for a
reduced box, as OpenMM's ``recipBoxVectors``), and the cell volume is ``a_x b_y c_z``.

Minimum image in a reduced triclinic box (OpenMM's ``ReferenceForce::getDeltaRPeriodic``): subtract ``c`` to
bring ``z`` into ``[-c_z/2, c_z/2]``, then ``b`` for ``y``, then ``a`` for ``x``. This returns the true nearest
image for every pair closer than ``min(a_x, b_y, c_z)/2``, which is what cutoff codes need
(:func:`max_cutoff`): the result and the true image then differ by a lattice vector whose components, taken in the
order z, y, x, must each vanish.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import UserInputError

# relative tolerance of the reduced-form test (OpenMM's own box vectors from a PDB CRYST1 carry ~1e-7 rounding)
_REDUCED_TOL = 1e-6


def box_lengths(box, dtype=None):
    """Edge lengths ``[3]`` of an orthorhombic box given as ``[3]`` or as a diagonal ``[3, 3]`` matrix."""
    box = jnp.asarray(box, dtype)
    return jnp.diag(box) if box.ndim == 2 else box


def is_orthorhombic(box) -> bool:
    """True for a ``[3]`` box or a ``[3, 3]`` box whose off-diagonal entries are all zero (host-side check)."""
    if box is None:
        return False
    b = np.asarray(box)
    return b.ndim == 1 or bool(np.all(b[~np.eye(3, dtype=bool)] == 0.0))


def is_triclinic(box) -> bool:
    """True for a ``[3, 3]`` box with a non-zero off-diagonal entry (host-side check); False for None."""
    return box is not None and not is_orthorhombic(box)


def box_matrix(box, dtype=None):
    """Box vectors as rows ``[3, 3]``: a ``[3]`` box becomes its diagonal matrix."""
    box = jnp.asarray(box, dtype)
    return jnp.diag(box) if box.ndim == 1 else box


def box_volume(box):
    """Cell volume ``a_x b_y c_z`` (nm³ for nm boxes) of a ``[3]`` or reduced ``[3, 3]`` box."""
    box = jnp.asarray(box)
    d = jnp.diag(box) if box.ndim == 2 else box
    return d[0] * d[1] * d[2]


def reciprocal_box(box, dtype=None):
    """``B⁻¹`` ``[3, 3]`` of a reduced box (lower triangular; its columns are the reciprocal vectors a*, b*, c*,
    with ``a·a* = 1``, no factor 2π), written out as OpenMM's Reference PME does."""
    b = box_matrix(box, dtype)
    det = b[0, 0] * b[1, 1] * b[2, 2]
    z = jnp.zeros((), b.dtype)
    row0 = jnp.stack([b[1, 1] * b[2, 2], z, z])
    row1 = jnp.stack([-b[1, 0] * b[2, 2], b[0, 0] * b[2, 2], z])
    row2 = jnp.stack([b[1, 0] * b[2, 1] - b[1, 1] * b[2, 0], -b[0, 0] * b[2, 1], b[0, 0] * b[1, 1]])
    return jnp.stack([row0, row1, row2]) / det


def to_fractional(pos, box):
    """Fractional coordinates ``s = x B⁻¹`` ``[..., 3]`` (not wrapped) of positions ``[..., 3]``."""
    box = jnp.asarray(box, pos.dtype)
    if box.ndim == 1:
        return pos / box
    return pos @ reciprocal_box(box, pos.dtype)


def from_fractional(frac, box):
    """Positions ``x = s B`` ``[..., 3]`` from fractional coordinates ``[..., 3]``."""
    box = jnp.asarray(box, frac.dtype)
    if box.ndim == 1:
        return frac * box
    return frac @ box


def perpendicular_widths(box) -> np.ndarray:
    """Distances between opposite faces of the cell ``[3]`` (host-side, numpy float64): ``V / |b × c|``,
    ``V / |c × a|``, ``V / |a × b|``. A sphere of radius r spans at most ``r / w_d`` in fractional coordinate d."""
    b = np.asarray(box, dtype=np.float64)
    if b.ndim == 1:
        return b.copy()
    vol = abs(np.linalg.det(b))
    return np.array([vol / np.linalg.norm(np.cross(b[(i + 1) % 3], b[(i + 2) % 3])) for i in range(3)])


def max_cutoff(box) -> float:
    """Largest cutoff (host-side) for which :func:`minimum_image` finds every pair: ``min(a_x, b_y, c_z)/2``."""
    b = np.asarray(box, dtype=np.float64)
    return 0.5 * float(np.min(np.diag(b) if b.ndim == 2 else b))


def check_reduced_box(box, where: str = "box") -> np.ndarray:
    """Validate a periodic box (host-side) and return it as float64: ``[3]`` positive lengths, or ``[3, 3]``
    vectors in OpenMM's reduced form. Raises :class:`UserInputError` naming ``where`` and the fix otherwise."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape == (3,):
        if not np.all(np.isfinite(b)) or np.any(b <= 0):
            raise UserInputError(f"{where}: box lengths must be three positive numbers (nm); got {b}")
        return b
    if b.shape != (3, 3) or not np.all(np.isfinite(b)):
        raise UserInputError(f"{where}: a box is [3] edge lengths or [3, 3] box vectors (rows a, b, c) in nm; got {b}")
    if np.any(np.diag(b) <= 0) or b[0, 1] != 0 or b[0, 2] != 0 or b[1, 2] != 0:
        raise UserInputError(
            f"{where}: triclinic box vectors must have a along x, b in the xy plane and positive a_x, b_y, c_z "
            f"(OpenMM's convention); got {b.tolist()}. Rotate the cell into that frame, e.g. with "
            "openmm.app.internal.unitcell.computePeriodicBoxVectors(a, b, c, alpha, beta, gamma)"
        )
    tol = _REDUCED_TOL * float(np.max(np.diag(b)))
    bad = []
    if abs(b[1, 0]) > 0.5 * b[0, 0] + tol:
        bad.append("|b_x| <= a_x/2")
    if abs(b[2, 0]) > 0.5 * b[0, 0] + tol:
        bad.append("|c_x| <= a_x/2")
    if abs(b[2, 1]) > 0.5 * b[1, 1] + tol:
        bad.append("|c_y| <= b_y/2")
    if bad:
        raise UserInputError(
            f"{where}: the triclinic box {b.tolist()} is not in reduced form (needs {', '.join(bad)}). Reduce it "
            "first: c -= round(c_y/b_y) b; c -= round(c_x/a_x) a; b -= round(b_x/a_x) a (OpenMM's "
            "reducePeriodicBoxVectors; dmd.space.reduce_box does this)"
        )
    return b


def reduce_box(box) -> np.ndarray:
    """The same lattice as box vectors ``[3, 3]`` (a along x, b in xy) in OpenMM's reduced form (host-side)."""
    b = np.array(box, dtype=np.float64)
    b[2] -= b[1] * np.round(b[2, 1] / b[1, 1])
    b[2] -= b[0] * np.round(b[2, 0] / b[0, 0])
    b[1] -= b[0] * np.round(b[1, 0] / b[0, 0])
    return b


def minimum_image_shift(dr, box):
    """Minimum-image displacement(s) and their lattice shifts.

    Args:
      dr: ``[..., 3]`` raw displacements.
      box: ``[3]`` lengths or reduced ``[3, 3]`` box vectors (rows).

    Returns:
      ``(d, n)``: ``d = dr − n B`` ``[..., 3]`` (``dr − L n`` for a ``[3]`` box) and the integer-valued shifts
      ``n`` ``[..., 3]`` (same dtype as ``dr``) along a, b, c; exact for ``|d| < min(a_x, b_y, c_z)/2``.
    """
    box = jnp.asarray(box, dr.dtype)
    if box.ndim == 1:
        n = jnp.round(dr / box)
        return dr - box * n, n
    nc = jnp.round(dr[..., 2] / box[2, 2])
    d = dr - nc[..., None] * box[2]
    nb = jnp.round(d[..., 1] / box[1, 1])
    d = d - nb[..., None] * box[1]
    na = jnp.round(d[..., 0] / box[0, 0])
    d = d - na[..., None] * box[0]
    return d, jnp.stack([na, nb, nc], axis=-1)


def minimum_image(dr, box):
    """Minimum-image displacement(s) ``dr`` ``[..., 3]`` in a ``[3]`` or reduced ``[3, 3]`` box.

    ``box=None`` returns ``dr`` unchanged (free space).
    """
    if box is None:
        return dr
    return minimum_image_shift(dr, box)[0]


def periodic_displacement(box):
    """Return ``displacement(ra, rb) -> ra - rb`` under the minimum-image convention of ``box`` (None: free)."""

    def displacement(ra, rb):
        return minimum_image(ra - rb, box)

    return displacement


def wrap_positions(pos, box):
    """Positions ``[N, 3]`` wrapped into the primary cell (fractional coordinates in ``[0, 1)``; ``[0, L)`` for an
    orthorhombic box); unchanged for ``box=None``."""
    if box is None:
        return pos
    box = jnp.asarray(box, pos.dtype)
    if box.ndim == 1:
        return jnp.mod(pos, box)
    s = to_fractional(pos, box)
    return pos - jnp.floor(s) @ box


def scale_positions(pos, box, new_box, molecules=None, n_molecules: int | None = None):
    """Positions ``[N, 3]`` after the periodic box changes from ``box`` to ``new_box`` (both ``[3]`` or reduced
    ``[3, 3]``, same shape): fractional coordinates are kept (``x' = x B⁻¹ B'``), for every atom or, with
    ``molecules``, for each molecule's centre (geometric mean of its atoms; the molecule is translated rigidly,
    so constraints, rigid waters and virtual sites stay exact). For barostats (isotropic or anisotropic/flexible).

    Args:
      pos: ``[N, 3]`` positions (unwrapped; molecules whole).
      box, new_box: the old and new box.
      molecules: ``[N]`` int molecule index of each atom (0 .. n_molecules-1), or None (scale atoms).
      n_molecules: number of molecules (static; default ``max(molecules) + 1``, host-side).
    """
    box = jnp.asarray(box, pos.dtype)
    new_box = jnp.asarray(new_box, pos.dtype)
    if molecules is None:
        return from_fractional(to_fractional(pos, box), new_box)
    molecules = jnp.asarray(molecules)
    m = int(np.max(np.asarray(molecules))) + 1 if n_molecules is None else int(n_molecules)
    count = jax.ops.segment_sum(jnp.ones(pos.shape[0], pos.dtype), molecules, num_segments=m)
    centre = jax.ops.segment_sum(pos, molecules, num_segments=m) / jnp.maximum(count, 1.0)[:, None]
    shift = from_fractional(to_fractional(centre, box), new_box) - centre
    return pos + shift[molecules]


__all__ = [
    "box_lengths",
    "box_matrix",
    "box_volume",
    "check_reduced_box",
    "from_fractional",
    "is_orthorhombic",
    "is_triclinic",
    "max_cutoff",
    "minimum_image",
    "minimum_image_shift",
    "perpendicular_widths",
    "periodic_displacement",
    "reciprocal_box",
    "reduce_box",
    "scale_positions",
    "to_fractional",
    "wrap_positions",
]
