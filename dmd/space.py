"""Periodic space: the one home of minimum image, wrapping and fractional coordinates (as jax-md's ``space``).

Every energy, neighbour list and observable that needs a periodic displacement calls these functions; nothing
else writes ``d - box * round(d / box)``.

Boxes (nm, or whatever length unit the positions use):
- ``None``: no periodicity (free space).
- shape ``[3]``: an orthorhombic box of edge lengths.
- shape ``[3, 3]``: box vectors as rows ``a, b, c``. OpenMM's reduced form (a along x, b in the xy plane,
  ``|b_x| ≤ a_x/2``, ``|c_x| ≤ a_x/2``, ``|c_y| ≤ b_y/2``) is what triclinic code accepts; a diagonal matrix is an
  orthorhombic box.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


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


def minimum_image(dr, box):
    """Minimum-image displacement(s) ``dr`` ``[..., 3]`` in an orthorhombic ``box`` (``[3]`` or diagonal ``[3, 3]``).

    ``box=None`` returns ``dr`` unchanged (free space).
    """
    if box is None:
        return dr
    lengths = box_lengths(box, dr.dtype)
    return dr - lengths * jnp.round(dr / lengths)


def periodic_displacement(box):
    """Return ``displacement(ra, rb) -> ra - rb`` under the minimum-image convention of ``box`` (None: free)."""

    def displacement(ra, rb):
        return minimum_image(ra - rb, box)

    return displacement


def wrap_positions(pos, box):
    """Positions ``[N, 3]`` wrapped into the primary orthorhombic cell ``[0, L)``; unchanged for ``box=None``."""
    if box is None:
        return pos
    return jnp.mod(pos, box_lengths(box, pos.dtype))


__all__ = ["box_lengths", "is_orthorhombic", "minimum_image", "periodic_displacement", "wrap_positions"]
