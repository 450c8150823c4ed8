"""The peak-position error model of powder indexing, one home for σ(1/d²).

    σ(inv_d2) = k · (8.7e-5 + 9.2e-4 · inv_d2)      (Å⁻²)

(ML-Index seed error model: a constant plus a part proportional to 1/d², i.e. a roughly constant
error in 2θ at low angle). ``k`` scales the model: 1 for the realistic noise of the synthetic
patterns and the default search tolerance, 0 for exact data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigma_inv_d2"]


def sigma_inv_d2(inv_d2, k: float = 1.0):
    """Peak-position error σ(1/d²) (Å⁻²) of lines at ``inv_d2`` (Å⁻², any shape; numpy or jax)."""
    inv_d2 = inv_d2 if hasattr(inv_d2, "dtype") else np.asarray(inv_d2, float)
    return k * (8.7e-5 + 9.2e-4 * inv_d2)
