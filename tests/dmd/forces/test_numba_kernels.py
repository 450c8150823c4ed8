"""The raw numba pair kernel (dmd.forces.numba_kernels.pairs via dmd.forces.numba_pairs.pairs_vec) on random charged
atoms against a float64 NumPy sum over every pair, half and full lists."""

import math

import numpy as np
from scipy.special import erfc

from dmd.forces.numba_pairs import pairs_vec
from dmd.forces.pme import ONE_4PI_EPS0


def _system(seed=0, n=400, box=(2.0, 2.1, 2.2), rc=0.7, alpha=3.5):
    rng = np.random.default_rng(seed)
    box = np.asarray(box)
    # atoms on a jittered lattice (no overlaps below 0.1 nm, as in a liquid), random charges and LJ
    g = np.stack(np.meshgrid(*(np.arange(8),) * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    pos = (g + 0.5 + rng.uniform(-0.2, 0.2, (n, 3))) * box / 8
    q = rng.normal(0, 0.5, n)
    sig = rng.uniform(0.1, 0.2, n)
    seps = rng.uniform(0.0, 0.5, n) * (rng.uniform(size=n) > 0.3)  # some atoms without LJ, as TIP3P hydrogens
    d = pos[None] - pos[:, None]
    d -= box * np.round(d / box)
    r = np.sqrt(np.sum(d * d, -1))
    near = (r < rc + 0.1) & ~np.eye(n, dtype=bool)  # a list with a 0.1 nm skin: some partners beyond r_c
    return pos, box, q, sig, seps, rc, alpha, near, d, r


def _rows(mask):
    n = len(mask)
    idx = np.full((n, mask.sum(1).max() + 3), n, np.int32)  # padded with N
    for i in range(n):
        js = np.nonzero(mask[i])[0]
        idx[i, : len(js)] = js
    return idx


def _reference(pos, box, q, sig, seps, rc, alpha, near, d, r):
    """float64 energy and dE/dx over the pairs inside r_c."""
    inside = near & (r < rc)
    rr = np.where(inside, r, 1.0)
    qq = ONE_4PI_EPS0 * q[:, None] * q[None]
    s6 = (0.5 * (sig[:, None] + sig[None]) / rr) ** 6
    eps = seps[:, None] * seps[None]
    e = np.where(inside, qq * erfc(alpha * rr) / rr + 4 * eps * (s6 * s6 - s6), 0.0)
    de = -qq * (erfc(alpha * rr) / rr + 2 * alpha / math.sqrt(math.pi) * np.exp(-((alpha * rr) ** 2))) / rr
    de = de + 4 * eps * (-12 * s6 * s6 + 6 * s6) / rr
    w = np.where(inside, de / rr, 0.0)  # dE/dr / r per ordered pair
    grad = -np.sum(w[..., None] * d, axis=1)  # ∂E/∂x_i = −Σ_j e'(r) d_ij / r, d_ij = x_j − x_i
    return 0.5 * e.sum(), grad, np.abs(np.where(inside, de, 0.0)).sum(1)


def test_half_and_full_lists_match_float64():
    pos, box, q, sig, seps, rc, alpha, near, d, r = s = _system()
    e64, g64, g_abs = _reference(*s)
    f32 = [np.asarray(a, np.float32) for a in (pos, box, q, sig, seps)]
    half = _rows(np.triu(near))
    full = _rows(near)
    for idx, is_half in ((half, True), (full, False)):
        e, g = pairs_vec(*f32[:2], idx, *f32[2:], rc, alpha, half=is_half)
        assert g.dtype == np.float32 and g.shape == pos.shape
        # float32 pair terms (a few ulps each, the erfc table within 1.5e-7) summed in float64: 1e-6 of Σ|e_ij|
        e_abs = np.sum(np.abs(_reference(pos, box, np.abs(q), sig, seps, rc, alpha, near, d, r)[0]))
        assert abs(e - e64) <= 1e-6 * max(e_abs, abs(e64)), (is_half, e, e64)
        # forces: the same per-term budget relative to Σ_j |∂e_ij/∂r| of each atom
        df = np.linalg.norm(g.astype(np.float64) - g64, axis=1)
        assert np.all(df <= 1e-5 * g_abs), (is_half, float(np.max(df / g_abs)))
