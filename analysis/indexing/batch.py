"""One batch of the generate-and-test unit-cell search (SVD-Index / ML-Index style), in JAX.

One batch, all candidates in parallel (``vmap`` inside two ``jit`` stages: the exact solves with
one quick test each, :func:`generate_batch`, then the iterations, :func:`run_batch`, which exact
cubic-hexagonal data skip when an exact solve already reaches ``stop_m20``)::

    candidates x₀  ── random cells in volume bounds (SVD-Index)  or
                   ── exact solves H_S x = q_S of n_params peaks with Miller indices
                      drawn from the learned prior (prior.py), or zone constructions
                      (all generators in candidates.py)
    repeat n_iter:   Miller-index assignment against the reference rows H_ref
                        nearest:  j_k = argmin_j |q²_k − H_j·x|
                        soft:     j_k ~ softmax_j(−(q²_k − H_j·x)² / 2s_k²)   (Gumbel-max)
                     random peak subsampling m_k ~ Bernoulli(p_keep) and SVD-Index
                     weights (d_k/d_1)^m, m ~ U(0, 4) (Coelho 2003, Eq. 18 of the seed)
                     weighted least squares  x ← argmin Σ_k w_k (q²_k − H_k·x − g_k·z)²
                        w_k = m_k (d_k/d_1)^m / (σ_k² + r_k²)   (robust; σ_k error model)
                     optional MALA noise x += s·chol((HᵀWH)⁻¹)·ε and Metropolis
                     acceptance on the score (temperature T)
                     reduction of the reciprocal basis (Selling for triclinic,
                     Lagrange in the a*c* plane for monoclinic) so indices stay small
    score: log M = log(Q_N / (2 ε̄ N_calc)), ε̄ with each unindexed line counted at
           max(n_σ·σ_k, Q_N / (2 N_calc)) (half the mean calculated-line spacing)

Linear model q²(hkl) = H(hkl)·x from :func:`analysis.cell.design_matrix`; zero shift
z (degrees 2θ) enters linearly through g_k = ∂q²/∂(2θ) at the observed line.

The line-to-calculated-line distances (the score and the assignment, most of a batch's work) run on the whole batch
at once, candidate axis minor (:func:`_nearest_abs`, :func:`_nearest_two`); the moves are per candidate (vmap).

References: Coelho (2003), J. Appl. Cryst. 36, 86-95, doi:10.1107/S0021889802019878
(SVD-Index); seed "ML-Index Methods" (assignment, subsampling/resampling, MALA-style
acceptance, Eqs. 29-34).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import analysis.indexing.candidates as candidates
from analysis.indexing.linsolve import solve_small
from analysis.indexing.padded import P_MAX, active, pad_columns, random6, reduce6, volume6, volume_from_x

__all__ = ["volume_from_x", "generate_batch", "run_batch", "GEN_KINDS"]


# ---------------------------------------------------------------------------- one batch (jit)
# one program for every lattice system (issue 21 item 1): the system a traced code (padded.py), x padded to 6
# parameters, rows to a common count; XLA's backend at optimisation level 1 (measured in docs/indexing.md)
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def _log_m(abs_r, inv_d2_ref, inv_d2_obs, sig, n_sigma, n_fom):
    """Approximate log M_N (P lattice) from each line's distance ``abs_r`` ``[n]`` to its nearest calculated line."""
    inv_d2_n = inv_d2_obs[n_fom - 1]  # n_fom traced: padded lists share one compilation (search_cells)
    fom_mask = (jnp.arange(inv_d2_obs.shape[0]) < n_fom).astype(inv_d2_ref.dtype)
    n_calc = jnp.sum(inv_d2_ref <= inv_d2_n * (1 + 1e-6)).astype(inv_d2_ref.dtype)
    # an unindexed line costs half the mean calculated-line spacing (what a random line would
    # score), never less than the tolerance: small cells that index a few lines cannot win
    cap = jnp.maximum(n_sigma * sig, inv_d2_n / (2 * jnp.maximum(n_calc, 1.0)))
    e = jnp.where(abs_r <= n_sigma * sig, abs_r, cap)
    eps = (jnp.sum(e * fom_mask) + 1e-4 * jnp.sum(sig * fom_mask)) / n_fom
    return jnp.log(inv_d2_n) - jnp.log(2 * eps * jnp.maximum(n_calc, 1.0))


def _valid(x, code, vlo, vhi):
    v = volume6(x, code)
    return jnp.all(jnp.isfinite(x)) & jnp.isfinite(v) & (v >= vlo) & (v <= vhi)


def _calc_lines(x, rows, n_rows):
    """q² of every search row for a batch of candidates ``x`` ``[N, p]``: ``[N, R]`` and its transpose ``[R, N]``;
    rows from ``n_rows`` on (padding) are +inf: never the nearest, never counted.

    The product is the per-candidate ``rows @ x`` under vmap (the same bits as the per-candidate form this replaced);
    the barrier keeps XLA from folding the transpose into a dot of another summation order.
    """
    ref = jax.vmap(lambda xx: rows @ xx)(x)
    ref = jax.lax.optimization_barrier(jnp.where(jnp.arange(rows.shape[0]) < n_rows, ref, jnp.inf))
    return ref, ref.T


def _nearest_abs(q, ref_t, n_rows=None):
    """min_j |q − ref_j| per line and candidate: ``q`` ``[n, N]`` (or ``[n, 1]``), ``ref_t`` ``[R, N]`` → ``[n, N]``
    over the first ``n_rows`` rows (all by default).

    A loop over the R rows on ``[n, N]`` arrays, the candidate axis minor: XLA vectorises it along N. The
    per-candidate form (a ``[n, R]`` broadcast reduced over its minor axis under vmap) took 10× the CPU
    (8192 monoclinic candidates × 240 rows: 0.075 → 0.008 s; issue 21, idx21o); min is exact: the same values.
    """
    init = jnp.full((q.shape[0], ref_t.shape[1]), jnp.inf, ref_t.dtype)
    n = ref_t.shape[0] if n_rows is None else n_rows
    return jax.lax.fori_loop(0, n, lambda j, m: jnp.minimum(m, jnp.abs(q - ref_t[j])), init)


def _nearest_two(q, ref_t, n_rows=None):
    """Nearest and second-nearest rows per line and candidate (``q`` ``[n, N]``, ``ref_t`` ``[R, N]``, the first
    ``n_rows`` rows): their indices and the residuals q − ref, each ``[n, N]``; ties go to the lower row index, as
    argmin's first occurrence, and a NaN line (a candidate whose zero shift broke down) gets rows 0 and 1 with NaN
    residuals, as argmin gave."""
    r0 = q - ref_t[0]
    ones = jnp.ones(r0.shape, jnp.int32)

    def body(j, c):
        a1, r1, i1, a2, r2, i2 = c
        r = q - ref_t[j]
        a = jnp.abs(r)
        first = a < a1
        second = ~first & (a < a2)
        a2, r2, i2 = (
            jnp.where(first, o1, jnp.where(second, n, o2)) for o1, n, o2 in ((a1, a, a2), (r1, r, r2), (i1, j, i2))
        )
        a1, r1, i1 = (jnp.where(first, n, o) for n, o in ((a, a1), (r, r1), (j, i1)))
        return a1, r1, i1, a2, r2, i2

    init = (jnp.abs(r0), r0, 0 * ones, jnp.full(r0.shape, jnp.inf, r0.dtype), r0, ones)
    n = ref_t.shape[0] if n_rows is None else n_rows
    _, r1, i1, _, r2, i2 = jax.lax.fori_loop(1, n, body, init)
    return i1, i2, r1, r2


def _score_batch(x, inv_d2_obs, sig, rows, n_sigma, vlo, vhi, system, n_fom, n_rows=None):
    """Scores ``[N]`` of candidates ``x`` ``[N, p]`` at zero shift 0 (−inf when invalid or outside the volume
    bounds), without the assignment (stage A: the nearest distance only, a min, not an argmin). ``system``: a name
    (x unpadded) or a traced code (x padded, padded.py); rows from ``n_rows`` on are padding."""
    n_rows = rows.shape[0] if n_rows is None else n_rows
    ref, ref_t = _calc_lines(x, rows, n_rows)
    abs_r = _nearest_abs(inv_d2_obs[:, None], ref_t, n_rows).T

    def one(x, ref, abs_r):
        s = _log_m(abs_r, ref, inv_d2_obs, sig, n_sigma, n_fom)
        return jnp.where(_valid(x, system, vlo, vhi) & jnp.isfinite(s), s, -jnp.inf)

    return jax.vmap(one)(x, ref, abs_r)


def _score(x, inv_d2_obs, sig, rows, n_sigma, vlo, vhi, system, n_fom: int):
    """:func:`_score_batch` of one candidate ``x`` ``[p]``."""
    return _score_batch(x[None], inv_d2_obs, sig, rows, n_sigma, vlo, vhi, system, n_fom)[0]


def _evaluate_batch(x, z, inv_d2_obs, sig, g, rows, n_sigma, vlo, vhi, system, n_fom, n_rows=None):
    """Scores ``[N]`` (−inf when invalid or outside the volume bounds) and assignments of candidates ``x`` ``[N, p]``
    with zero shifts ``z`` ``[N]``: nearest and second-nearest row per line and the residuals to them, ``[N, n]``."""
    n_rows = rows.shape[0] if n_rows is None else n_rows
    ref, ref_t = _calc_lines(x, rows, n_rows)
    q_model = inv_d2_obs[:, None] - g[:, None] * z[None, :]  # observed lines moved back by the zero shift
    idx, idx2, r, r2 = (a.T for a in _nearest_two(q_model, ref_t, n_rows))

    def one(x, ref, r):
        s = _log_m(jnp.abs(r), ref, inv_d2_obs, sig, n_sigma, n_fom)
        return jnp.where(_valid(x, system, vlo, vhi) & jnp.isfinite(s), s, -jnp.inf)

    return jax.vmap(one)(x, ref, r), idx, idx2, r, r2


# stage-A generator kinds (a traced index): (zone constructions, inverse-CDF cross-term draws of the monoclinic zones);
# search.py picks one per system. The exact solves always draw by inverse CDF: Gumbel-max over the padded six
# positions × 80 rows made the cubic-orthorhombic stage A 4-5× slower than their own-shape programs
GEN_KINDS = (("none", False), ("monoclinic", False), ("triclinic", True))


def _solves(n_first, keys, inv_d2_obs, logits, vocab_rows, p):
    """Exact solves from the prior (inverse-CDF draws, :func:`candidates.prior_x`), ``[n, 6]``."""
    return jax.vmap(lambda k: candidates.prior_x(k, inv_d2_obs, logits, vocab_rows, n_first, p))(keys)


def _first_half(kind, n_first, n_axes, keys, inv_d2_obs, sig, logits, vocab_rows, p):
    """The first half of a chunk's draws, ``[n, 6]``, by generator kind (:data:`GEN_KINDS`): zone constructions
    (monoclinic, triclinic) or exact solves; the second half is always exact solves (one copy of them in the program:
    a shorter compilation)."""
    zones, cdf_draw = kind
    if zones == "triclinic":
        x = jax.vmap(lambda k: candidates.zone_x(k, inv_d2_obs, sig, n_axes))(keys)
    elif zones == "monoclinic":
        x = pad_columns(jax.vmap(lambda k: candidates.zone_mono_x(k, inv_d2_obs, sig, n_axes, cdf_draw=cdf_draw))(keys))
    else:
        x = _solves(n_first, keys, inv_d2_obs, logits, vocab_rows, p)
    return x.astype(inv_d2_obs.dtype)


@functools.partial(jax.jit, static_argnames=("n_gen", "n_sel", "n_first", "n_axes"), compiler_options=_COMPILER_OPTIONS)
def generate_batch(
    key,
    inv_d2_obs,
    sig,
    rows,
    n_rows,
    logits,
    vocab_rows,
    vlo,
    vhi,
    n_sigma,
    n_fom,
    code,
    kind,
    *,
    n_gen: int,
    n_sel: int,
    n_first: int,
    n_axes: int,
):
    """Stage A of a batch: ``n_gen`` candidates of generator ``kind`` (:data:`GEN_KINDS`: exact solves from the
    prior, zone constructions) for lattice system ``code`` (padded.py), one quick test each; returns the best
    ``n_sel`` (x ``[n_sel, 6]``, score ``[n_sel]``), best first.

    Kept apart from the iterative stage (:func:`run_batch`) so that exact cubic-hexagonal data, where
    an exact solve already reaches ``stop_m20``, skip the refinement iterations (search_cells).
    """
    dtype = inv_d2_obs.dtype
    kgen, _, _ = jax.random.split(key, 3)  # the same split as run_batch: krand, kref are its own
    gen_keys = jax.random.split(kgen, n_gen)
    on = active(code)
    p = jnp.sum(on)
    branches = [functools.partial(_first_half, kd, n_first, n_axes) for kd in GEN_KINDS]
    half = n_gen // 2
    x_first = jax.lax.switch(kind, branches, gen_keys[:half], inv_d2_obs, sig, logits, vocab_rows, p)
    x_rest = _solves(n_first, gen_keys[half:], inv_d2_obs, logits, vocab_rows, p).astype(dtype)
    x_gen = jnp.concatenate([x_first, x_rest], axis=0)
    x_gen = jnp.where(on, jnp.where(jnp.isfinite(x_gen), x_gen, 1.0), 0.0).astype(dtype)
    x_gen = jax.vmap(lambda x: reduce6(x, code))(x_gen)
    s_gen = _score_batch(x_gen, inv_d2_obs, sig, rows, n_sigma, vlo, vhi, code, n_fom, n_rows)
    s_sel, sel = jax.lax.top_k(s_gen, n_sel)
    return x_gen[sel], s_sel


def _solve_masked(a, b, on, dtype):
    """The column-scaled normal equations ``a s = b`` restricted to the parameters ``on`` (the others solve to 0:
    an identity block, scale 1; scaling a zero column by sqrt(0) would make 0/0): the scaled matrix and scales."""
    mm = on[:, None] & on[None, :]
    a = jnp.where(mm, a, jnp.eye(a.shape[0], dtype=dtype))
    b = jnp.where(on, b, 0.0)
    cs = jnp.sqrt(jnp.diag(a)) + 1e-30
    a_s = a / (cs[:, None] * cs[None, :]) + 1e-9 * jnp.eye(a.shape[0], dtype=dtype)
    return solve_small(a_s, b / cs)[0] / cs, a_s, cs


@functools.partial(
    jax.jit,
    static_argnames=("n_cand", "n_iter", "n_random", "acceptance", "top_k"),
    compiler_options=_COMPILER_OPTIONS,
)
def run_batch(
    key,
    x_sel,
    inv_d2_obs,
    sig,
    g,
    rows,
    n_rows,
    vlo,
    vhi,
    p_keep,
    p_soft,
    temperature,
    mala_scale,
    n_sigma,
    n_fom,
    n_real,
    code,
    refine_zero,
    *,
    n_cand: int,
    n_iter: int,
    n_random: int,
    acceptance: str,
    top_k: int,
):
    """Stage B of a batch: the ``n_sel`` = n_cand − n_random selected candidates ``x_sel`` ``[n_sel, 6]`` (padded,
    system ``code``) plus ``n_random`` random cells, refined iteratively (module docstring); returns the best
    ``top_k``. ``refine_zero`` (traced bool): the zero shift is a seventh parameter of the least squares.

    Over 100 lines: the assignment step, the acceptance rule and the iteration are closures over the batch's
    observed lines, weights and candidate rows, traced once into one jitted program.
    """
    dtype = inv_d2_obs.dtype
    p = P_MAX
    n_obs = inv_d2_obs.shape[0]
    _, krand, kref = jax.random.split(key, 3)
    x_rand = jax.vmap(lambda k: random6(k, code, vlo, vhi, dtype))(jax.random.split(krand, n_random))
    x_rand = jax.vmap(lambda x: reduce6(x, code))(x_rand.astype(dtype))
    d_rel = jnp.sqrt(inv_d2_obs[0] / inv_d2_obs)  # d_k / d_1
    valid = jnp.arange(n_obs) < n_real  # padded lines (copies of the last one) carry no weight
    on = jnp.concatenate([active(code), jnp.reshape(refine_zero, (1,))])  # the parameters solved, zero shift last

    def evaluate(x, z):  # a batch [N, p], [N]: the line-row distances run candidate-minor (_nearest_two)
        return _evaluate_batch(x, z, inv_d2_obs, sig, g, rows, n_sigma, vlo, vhi, code, n_fom, n_rows)

    def move(x, z, ev, key, use_soft):
        """One assignment + weighted-least-squares move of one candidate: the proposed x, z."""
        _, idx, idx2, r, r2 = ev
        k1, k3, k4, k5, _ = jax.random.split(key, 5)
        # soft assignment: choose between the two nearest rows with Gaussian weights
        scale = 2.0 * jnp.maximum(jnp.nanmedian(jnp.where(valid, jnp.abs(r), jnp.nan)), sig)
        p2 = jax.nn.sigmoid((r**2 - r2**2) / (2 * scale**2))
        pick2 = use_soft & (jax.random.uniform(k1, (n_obs,), dtype) < p2)
        idx = jnp.where(pick2, idx2, idx)
        r = jnp.where(pick2, r2, r)
        keep = (jax.random.uniform(k3, (n_obs,)) < p_keep) & valid
        m = jax.random.uniform(k4, (), dtype, 0.0, 4.0)
        w = keep * d_rel**m / (sig**2 + r**2)
        hz = jnp.concatenate([rows[idx], g[:, None]], axis=1)
        a = (hz * w[:, None]).T @ hz
        b = (hz * w[:, None]).T @ inv_d2_obs
        sol, a_s, cs = _solve_masked(a, b, on, dtype)
        if mala_scale is not None:
            cov = jnp.linalg.inv(a_s) / (cs[:, None] * cs[None, :])
            chol = jnp.linalg.cholesky(cov + 1e-30 * jnp.eye(a.shape[0], dtype=dtype))
            noise = jnp.where(on, chol @ jax.random.normal(k5, (a.shape[0],), dtype), 0.0)
            sol = sol + mala_scale * jnp.where(jnp.all(jnp.isfinite(noise)), noise, 0.0)
        x_new = sol[:p]
        z_new = jnp.where(refine_zero, sol[p], z)
        return reduce6(jnp.where(jnp.all(jnp.isfinite(x_new)), x_new, x), code), z_new

    def accept(x, z, s, ev, x_new, z_new, ev_new, key):
        """The acceptance rule of one candidate (its key as in ``move``): the new or the old state."""
        k6 = jax.random.split(key, 5)[4]
        s_new = ev_new[0]
        if acceptance == "always":
            acc = jnp.isfinite(s_new)
        elif acceptance == "metropolis":
            u = jax.random.uniform(k6, (), dtype)
            acc = jnp.isfinite(s_new) & (jnp.log(u) * temperature < s_new - s)
        else:
            acc = s_new >= s
        ev = jax.tree_util.tree_map(lambda a_new, a_old: jnp.where(acc, a_new, a_old), ev_new, ev)
        return jnp.where(acc, x_new, x), jnp.where(acc, z_new, z), jnp.where(acc, s_new, s), ev

    # stage A (generate_batch) gave the best n_sel exact-solve candidates; the random cells join them
    x0 = jnp.concatenate([x_rand, x_sel.astype(dtype)], axis=0) if x_sel.shape[0] > 0 else x_rand
    z0 = jnp.zeros((n_cand,), dtype)
    ev0 = evaluate(x0, z0)
    s0 = ev0[0]

    def body(it, carry):
        x, z, s, ev, bx, bz, bs, key = carry
        key, ks, kc = jax.random.split(key, 3)
        use_soft = (jax.random.uniform(ks) < p_soft) & (it < n_iter - 1)  # batch-level switch: no wasted work
        keys = jax.random.split(kc, n_cand)
        x_new, z_new = jax.vmap(move, in_axes=(0, 0, 0, 0, None))(x, z, ev, keys, use_soft)
        x, z, s, ev = jax.vmap(accept)(x, z, s, ev, x_new, z_new, evaluate(x_new, z_new), keys)
        better = s > bs
        bx = jnp.where(better[:, None], x, bx)
        bz = jnp.where(better, z, bz)
        bs = jnp.where(better, s, bs)
        return x, z, s, ev, bx, bz, bs, key

    carry = (x0, z0, s0, ev0, x0, z0, s0, kref)
    carry = jax.lax.fori_loop(0, n_iter, body, carry)
    bx, bz, bs = carry[4], carry[5], carry[6]
    bs = jnp.where(jnp.isfinite(bs), bs, -jnp.inf)
    top_s, top_i = jax.lax.top_k(bs, top_k)
    return bx[top_i], bz[top_i], top_s
