"""The peak-position error model of powder indexing, one home for σ(1/d²).

    σ(inv_d2) = k · (8.7e-5 + 9.2e-4 · inv_d2)      (Å⁻²)

(ML-Index seed error model: a constant plus a part proportional to 1/d², i.e. a roughly constant
error in 2θ at low angle). ``k`` scales the model: 1 for the realistic noise of the synthetic
patterns and the default search tolerance, 0 for exact data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigma_inv_d2", "PRECISE_CHI2", "EXACT_CHI2"]


def sigma_inv_d2(inv_d2, k: float = 1.0):
    """Peak-position error σ(1/d²) (Å⁻²) of lines at ``inv_d2`` (Å⁻², any shape; numpy or jax)."""
    inv_d2 = inv_d2 if hasattr(inv_d2, "dtype") else np.asarray(inv_d2, float)
    return k * (8.7e-5 + 9.2e-4 * inv_d2)


# The error model from the data. A cell that indexes every line (but impurities) with most of its calculated
# lines observed and χ²_ν below PRECISE_CHI2 under the σ(q²) model fits the lines more than six times (in σ)
# more precisely than the model assumes: the data are precise (11-BM synchrotron lists: χ²_ν ≈ 1e-4, issue 21;
# generated lists with 0.002° 2θ errors at Cu Kα: 0.004-0.011), and σ_data = √χ²_ν · σ is their own error. A
# wrong cell matches lines only within the search window ±n_σ·σ (χ²_ν ≈ n_σ²/3 ≈ 5); the wrong cells of exact
# benchmark data that fit better than the model stayed above PRECISE_CHI2 (χ²_ν = 0.05 in the clean
# benchmark), which keeps the band (PRECISE_CHI2, EXPLAINS_CHI2_MIN) inconclusive as before. Below EXACT_CHI2
# (√ = 1e-3 σ ≈ 1e-4° 2θ at Cu Kα, finer than any measured peak position) the list is exact (computed)
# data, where the ranking score already tells the true cell (≥ PRIMITIVE_FALLBACK_SCORE) and a derivative
# cell can fit as exactly: no data scale is taken there.
PRECISE_CHI2 = 0.025
EXACT_CHI2 = 1e-6
