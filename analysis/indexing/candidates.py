"""Candidate generators of the batched cell search (search.py), one candidate per call, ``vmap``-ed there.

* :func:`random_x`: random cells with volume log-uniform in bounds (SVD-Index, Coelho 2003);
* :func:`prior_x`: exact solves H_S x = q_S of ``n_params`` peaks with Miller indices drawn from the
  learned prior (prior.py);
* :func:`zone_x` (triclinic) and :func:`zone_mono_x` (monoclinic): axial lines plus cross terms from
  zones (Ito 1949; de Wolff 1957), :func:`cross_term`, with axial positions from :func:`axis_positions`.

All return reciprocal-metric parameters x ``[n_params]`` (Å⁻²; NaN for a singular draw) in the dtype of
the observed lines ``q_obs`` (1/d², Å⁻²).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis.indexing.linsolve import solve_small

__all__ = ["random_x", "prior_x", "cross_term", "zone_x", "axis_positions", "zone_from_axes", "zone_mono_x"]


def _draw(cdf, u):
    """Index drawn with probability ∝ the increments of the cumulative weights ``cdf`` ``[m]`` (unnormalised,
    non-decreasing, last > 0), from one uniform ``u`` in [0, 1): the first index whose cdf exceeds u·cdf[-1]."""
    return jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right"), cdf.shape[0] - 1)


def random_x(key, system: str, vlo, vhi, dtype):
    """Random cell with volume log-uniform in [vlo, vhi] → x (one candidate)."""
    k1, k2, k3 = jax.random.split(key, 3)
    shape = jnp.exp(jax.random.uniform(k1, (3,), dtype, 0.0, jnp.log(4.0)))
    ang = jnp.full((3,), 90.0, dtype)
    if system == "cubic":
        shape = jnp.ones(3, dtype)
    elif system in ("tetragonal", "hexagonal"):
        shape = shape.at[1].set(shape[0])
        if system == "hexagonal":
            ang = ang.at[2].set(120.0)
    elif system == "monoclinic":
        ang = ang.at[1].set(jax.random.uniform(k2, (), dtype, 90.0, 125.0))
    elif system == "triclinic":
        ang = jax.random.uniform(k2, (3,), dtype, 70.0, 110.0)
    cell = jnp.concatenate([shape, ang])
    v0 = cell_mod.volume(cell)
    v = jnp.exp(jax.random.uniform(k3, (), dtype, jnp.log(vlo), jnp.log(vhi)))
    cell = cell.at[:3].multiply((v / v0) ** (1.0 / 3.0))
    return cell_mod.reciprocal_params(cell, system)


def prior_x(key, inv_d2_obs, logits, vocab_rows, n_first: int, p):
    """Exact solve H_S x = q_S for p peaks among the first n_first, indices drawn from the prior by inverse CDF
    (one uniform per peak; Gumbel-max, one variate per vocabulary row and peak, is the same distribution and was
    4-5× slower over the padded vocabulary of the one search program, batch.py).

    Args:
      logits: ``[n_first, n_vocab]`` log-probabilities of each vocabulary row per peak position.
      vocab_rows: ``[n_vocab, p_max]`` design rows of the vocabulary; ``p`` ≤ p_max (may be traced: the one search
        program of every lattice system pads x to 6 parameters, padded.py) parameters are solved, the others are 0.
    """
    k1, k2 = jax.random.split(key)
    p_max = vocab_rows.shape[1]
    on = jnp.arange(p_max) < p
    perm = jnp.argsort(jax.random.uniform(k1, (n_first,)))[: min(n_first, p_max)]
    perm = jnp.concatenate([perm, jnp.zeros(p_max - perm.shape[0], perm.dtype)])
    # the p drawn positions sorted first, the unused ones after them (clipped to a valid line, masked below)
    pos = jnp.minimum(jnp.sort(jnp.where(on, perm, n_first + jnp.arange(p_max))), n_first - 1)
    # inverse-CDF draw from the prior (one uniform per peak instead of a Gumbel per vocabulary row; the cumulative
    # table does not depend on the key, so under vmap it is made once per batch)
    cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
    lab = jax.vmap(_draw)(cdf[pos], jax.random.uniform(k2, (p_max,), cdf.dtype))
    hs = jnp.where(on[:, None] & on[None, :], vocab_rows[lab], jnp.eye(p_max, dtype=vocab_rows.dtype))
    qs = jnp.where(on, inv_d2_obs[pos], 0.0)
    x, det = solve_small(hs, qs)  # one elimination for both (the unused parameters an identity block)
    scale = jnp.prod(jnp.max(jnp.abs(hs), axis=1) + 1e-30)
    ok = jnp.abs(det) > 1e-6 * scale
    return jnp.where(on, jnp.where(ok, x, jnp.nan), 0.0)


def cross_term(key, inv_d2_obs, sig, target, base, p_pair, cdf_draw: bool = False):
    """|cross term| of a zone from an Ito pair, else from one line (Ito 1949; de Wolff 1957).

    In the zone of two axes with q²(u) + q²(v) = ``base``, the lines u ± v satisfy
    q²(u+v) + q²(u−v) = ``target`` = 2·base and q²(u+v) − q²(u−v) = 2·cross, cross = 2 u·v.
    With probability ``p_pair`` a pair of observed lines whose sum matches ``target`` is
    drawn (Gaussian weights on the mismatch, Gumbel-max; a line may pair with itself:
    cross = 0); otherwise, or when no pair is within 4σ, one line is taken as u ± v and
    cross = |q² − base|, drawn uniformly among the lines with |q² − base| ≤ base/2 (reduced
    bases have |2 u·v| ≤ min(u², v²)). Only one of u + v, u − v needs to be observed then.
    ``cdf_draw``: the pair and the line by inverse CDF (three uniforms) instead of Gumbel-max (n² + n Gumbel
    variates, 2/3 of a triclinic stage A: zone_x uses it, 174 → 56 CPU ms per 4096 constructions; issue 21).
    """
    n = inv_d2_obs.shape[0]
    k1, k2, k3 = jax.random.split(key, 3)
    pair_sum = inv_d2_obs[:, None] + inv_d2_obs[None, :]
    pair_sig = sig[:, None] + sig[None, :]
    pair_dif = jnp.abs(inv_d2_obs[:, None] - inv_d2_obs[None, :]) / 2
    upper = jnp.triu(jnp.ones((n, n), bool))
    logw = jnp.where(upper, -0.5 * ((pair_sum - target) / pair_sig) ** 2, -jnp.inf).ravel()
    top = jnp.max(logw)
    pair_ok = top > -8.0  # some pair within 4σ
    single = jnp.abs(inv_d2_obs - base)
    single_ok = single <= 0.5 * base
    iu = np.flatnonzero(np.triu(np.ones((n, n), bool)))  # the pairs (i ≤ j); the others weigh 0 / are −inf
    if cdf_draw:
        u = jax.random.uniform(k1, (3,), inv_d2_obs.dtype)
        flat = jnp.asarray(iu)[_draw(jnp.cumsum(jnp.exp(logw[iu] - top)), u[0])]
        pick = _draw(jnp.cumsum(single_ok.astype(u.dtype)), u[1])
        u_pair = u[2]
    else:  # Gumbel-max: the monoclinic search's stream (zone_mono_x)
        # over the n(n+1)/2 pairs of the upper triangle only (the others are −inf and never win): the same variates
        # and the same argmax (first of ties in flat order), a third less CPU for the log-log of the variates and the
        # argmax (issue 21, idx21o: 0.048 → 0.034 s per 4096 draws; bit for bit the same indices)
        gumbel = jax.random.gumbel(k1, (n * n,), inv_d2_obs.dtype)[iu]
        flat = jnp.asarray(iu)[jnp.argmax(logw[iu] + gumbel)]
        pick = jnp.argmax(jnp.where(single_ok, jax.random.gumbel(k2, (n,), inv_d2_obs.dtype), -jnp.inf))
        u_pair = jax.random.uniform(k3)
    use_pair = pair_ok & ((u_pair < p_pair) | ~jnp.any(single_ok))
    value = jnp.where(use_pair, pair_dif.ravel()[flat], single[pick])
    return jnp.where(pair_ok | jnp.any(single_ok), value, jnp.nan)


def zone_x(key, inv_d2_obs, sig, n_axes: int, p_pair: float = 0.75):
    """Triclinic candidate from three axial lines and three zones (Ito 1949; de Wolff 1957).

    Three lines (:func:`axis_positions`) are taken as 100, 010, 001 (A, B, C); each zone
    (a*b*, a*c*, b*c*) gives |D|, |E|, |F| by :func:`cross_term`. Signs: flipping an axis
    flips two of D, E, F, so only sign(D·E·F) matters: D, E ≤ 0 and F of random sign.
    """
    keys = jax.random.split(key, 5)
    pos = axis_positions(keys[0], n_axes, inv_d2_obs.shape[0])
    return zone_from_axes(keys[1:], inv_d2_obs, sig, pos, p_pair)


def axis_positions(key, n_axes: int, n_obs: int):
    """Three distinct line positions ``[3]`` for the axial lines of a zone construction.

    Half of the draws take all three among the first ``n_axes`` lines; the other half take
    two there and one among the later lines (n_axes..n_obs−1), in a random role: when the
    first lines all lie in one zone (one short axis, e.g. 15 of 20 lines 0kl) the third
    axial line comes late in the list.
    """
    k1, k2, k3, k4 = jax.random.split(key, 4)
    first = jnp.argsort(jax.random.uniform(k1, (n_axes,)))[:3]
    if n_obs <= n_axes:
        return first
    late = jax.random.randint(k2, (), n_axes, n_obs)
    mixed = jnp.stack([first[0], first[1], late])[jnp.argsort(jax.random.uniform(k3, (3,)))]
    return jnp.where(jax.random.uniform(k4) < 0.5, first, mixed)


def zone_from_axes(keys, inv_d2_obs, sig, pos, p_pair: float = 0.75):
    """Triclinic candidate with the lines at ``pos`` ``[3]`` as 100, 010, 001 (see :func:`zone_x`; cross terms
    drawn by inverse CDF, :func:`cross_term`).

    ``keys``: ``[4, 2]`` PRNG keys (D, E, F and the sign of F).
    """
    kd, ke, kf, ks = keys
    a, b, c = inv_d2_obs[pos[0]], inv_d2_obs[pos[1]], inv_d2_obs[pos[2]]
    d = -cross_term(kd, inv_d2_obs, sig, 2 * (a + b), a + b, p_pair, cdf_draw=True)
    e = -cross_term(ke, inv_d2_obs, sig, 2 * (a + c), a + c, p_pair, cdf_draw=True)
    f = cross_term(kf, inv_d2_obs, sig, 2 * (b + c), b + c, p_pair, cdf_draw=True)
    f = f * jnp.where(jax.random.uniform(ks) < 0.5, -1.0, 1.0)
    return jnp.stack([a, b, c, d, e, f])


def zone_mono_x(key, inv_d2_obs, sig, n_axes: int, p_pair: float = 0.75, cdf_draw: bool = False):
    """Monoclinic candidate: axial lines for A, B, C and the a*c* cross term E from a zone.

    Three lines (:func:`axis_positions`) are taken as m²·A, m²·B, m²·C with m = 1 or 2
    (2 covers axial lines absent by centring or screw axes, e.g. 200 in mC). E comes from
    the lines 1k1 and 1k-1 (k = 0 or 1, drawn): q²(1k1) + q²(1k-1) = 2(A + k²B + C) and
    their difference is 2E (:func:`cross_term`; 11±1 covers C-centring, where 10±1 is absent).
    E ≥ 0 (the sign of the a*c* angle is a setting choice). ``cdf_draw``: see :func:`cross_term`.
    """
    k1, k2, k3, ke = jax.random.split(key, 4)
    pos = axis_positions(k1, n_axes, inv_d2_obs.shape[0])
    m2 = jnp.where(jax.random.uniform(k2, (3,)) < 0.7, 1.0, 4.0).astype(inv_d2_obs.dtype)
    abc = inv_d2_obs[pos] / m2
    a, b, c = abc[0], abc[1], abc[2]
    kk = jnp.where(jax.random.uniform(k3) < 0.5, 0.0, 1.0).astype(inv_d2_obs.dtype)
    base = a + kk * b + c
    e = cross_term(ke, inv_d2_obs, sig, 2 * base, base, p_pair, cdf_draw=cdf_draw)
    return jnp.stack([a, b, c, e])
