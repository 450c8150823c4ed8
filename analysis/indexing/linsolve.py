"""Small dense linear systems inside the batch programs (batch.py, candidates.py), unrolled for ``vmap``.

The one search program of every lattice system (padded.py) solves 6 × 6 exact solves and 7 × 7 normal equations
per candidate, the unused parameters as identity blocks. ``jnp.linalg.solve`` / ``det`` under ``vmap`` call LAPACK
once per candidate (a 6 × 6 getrf cost the cubic stage A 5× its 1 × 1 one); the elimination written out in array
operations runs on the whole batch at once.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["solve_small"]


def solve_small(a, b):
    """Solution x of ``a x = b`` (``a`` ``[n, n]``, ``b`` ``[n]``, n static and small) and det(a), by Gaussian
    elimination with partial pivoting (the row of the largest |entry| in each column, first of ties), unrolled.

    A singular ``a`` gives det 0 and non-finite x (callers test one or the other).
    """
    n = a.shape[-1]
    m = jnp.concatenate([a, b[:, None]], axis=1)
    rows = jnp.arange(n)
    det = jnp.ones((), a.dtype)
    for k in range(n):
        piv = jnp.argmax(jnp.where(rows >= k, jnp.abs(m[:, k]), -1.0))
        is_p = (rows == piv)[:, None]
        row_p = jnp.sum(jnp.where(is_p, m, 0.0), axis=0)  # one nonzero term: exact
        m = jnp.where((rows == k)[:, None], row_p, jnp.where(is_p, m[k], m))
        det = det * jnp.where(piv == k, 1.0, -1.0) * m[k, k]
        f = jnp.where(rows > k, m[:, k] / m[k, k], 0.0)
        m = m - f[:, None] * m[k]
    x = [None] * n
    for k in range(n - 1, -1, -1):
        s = m[k, n]
        for j in range(k + 1, n):
            s = s - m[k, j] * x[j]
        x[k] = s / m[k, k]
    return jnp.stack(x), det
