"""Nonbonded terms, as OpenMM's Reference platform computes them.

Pair energy between non-excluded atoms i < j at distance r (nm), ke = 1/(4π ε0):

    LJ:        E_LJ = 4 ε_ij ((σ_ij/r)¹² − (σ_ij/r)⁶),  σ_ij = (σ_i + σ_j)/2,  ε_ij = √(ε_i ε_j)
               (Lorentz-Berthelot), plain cutoff at r_c for cutoff methods, times OpenMM's switch
               S(x) = 1 − 10x³ + 15x⁴ − 6x⁵, x = (r − r_s)/(r_c − r_s), when a switching distance is set.
    NoCutoff:  E_C = ke q_i q_j / r
    CutoffPeriodic (reaction field, dielectric ε_rf):
               E_C = ke q_i q_j (1/r + k_rf r² − c_rf),  k_rf = (ε_rf − 1)/((2ε_rf + 1) r_c³),
               c_rf = 3ε_rf/((2ε_rf + 1) r_c); OpenMM 8 adds nothing for excluded pairs or self terms.
    PME:       E_C = ke q_i q_j erfc(α r)/r  (r < r_c), plus
               − ke q_i q_j erf(α r)/r for every excluded pair (exclusion correction),
               − ke α/√π Σ q_i²       (self energy),
               − ke π Q² / (2 V α²)   (neutralising plasma for a net charge Q = Σ q_i, as OpenMM),
               plus the reciprocal sum (:mod:`dmd.forces.pme`).

Exceptions (OpenMM ``addException``: 1-4 pairs) are excluded from the sums above and add
ke q_ij / r + 4 ε_ij ((σ_ij/r)¹² − (σ_ij/r)⁶) with their own (q_ij, σ_ij, ε_ij), without cutoff
and without periodic images (unless ``exceptionsUsePeriodicBoundaryConditions``).

Long-range dispersion correction (OpenMM ``NonbondedForceImpl::calcDispersionCorrection``,
checked numerically against OpenMM), for N atoms in LJ classes c with counts n_c:

    E_disp = 8π N² / V · [Σ_{c≤d} w_cd ε_cd σ_cd¹² / (9 r_c⁹) − Σ_{c≤d} w_cd ε_cd σ_cd⁶ / (3 r_c³)] / (N(N+1)/2),
    w_cc = n_c(n_c + 1)/2,  w_cd = n_c n_d (c ≠ d).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from dmd.forces.numba_pairs import pair_forces
from dmd.forces.pme import ONE_4PI_EPS0
from dmd.forces.pme_kernel import reciprocal_energy
from dmd.space import box_volume, minimum_image, minimum_image_shift

__all__ = [
    "NonbondedSpec",
    "nonbonded_energy",
    "lj_energy",
    "lj_pair_energy",
    "switch_factor",
    "switch_derivative",
    "dispersion_correction",
    "TabulatedLJSpec",
    "tabulated_lj_energy",
    "lj_bond_energy",
    "safe_sqrt",
    "pair_energy_full",
    "erfc_and_gaussian",
]


def safe_sqrt(x):
    """√x with a zero (not infinite/NaN) gradient at x = 0 (double-where)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def lj_pair_energy(s2, epsilon):
    """The Lennard-Jones pair energy 4 ε (s2⁶ − s2³), elementwise: the one home of the LJ formula.

    Args:
      s2: (σ/r)², dimensionless (callers holding r² pass σ²/r², which avoids a square root).
      epsilon: ε in the caller's energy unit (kJ/mol in the engine); ``1.0`` gives the energy per unit ε.

    Returns:
      4 ε ((σ/r)¹² − (σ/r)⁶), same unit as ``epsilon``, broadcast shape of the inputs.
    """
    s6 = s2**3
    return 4.0 * epsilon * (s6 * s6 - s6)


def lj_energy(sigma, epsilon, r):
    """4 ε ((σ/r)¹² − (σ/r)⁶), elementwise; σ and r in nm, ε in kJ/mol (:func:`lj_pair_energy`)."""
    return lj_pair_energy((sigma / r) ** 2, epsilon)


def _switch_x(r, cutoff, switch_distance):
    return jnp.clip((r - switch_distance) / (cutoff - switch_distance), 0.0, 1.0)


def switch_factor(r, cutoff, switch_distance):
    """OpenMM's LJ switch S(r): 1 below r_s, 1 − 10x³ + 15x⁴ − 6x⁵ between r_s and r_c, 0 beyond.

    x = (r − r_s)/(r_c − r_s) clipped to [0, 1]; r, ``cutoff`` r_c and ``switch_distance`` r_s in one
    length unit (nm in the engine); elementwise. The one home of the switching function.
    """
    x = _switch_x(r, cutoff, switch_distance)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


def switch_derivative(r, cutoff, switch_distance):
    """dS/dr of :func:`switch_factor` (per length unit of r), elementwise: −30x²(1 − x)²/(r_c − r_s)."""
    x = _switch_x(r, cutoff, switch_distance)
    return -(30.0 * x**2 - 60.0 * x**3 + 30.0 * x**4) / (cutoff - switch_distance)


def _box_vector(box, dtype):
    """A ``[3]`` box stays ``[3]``; a ``[3, 3]`` box stays a matrix (triclinic code paths, :mod:`dmd.space`)."""
    return jnp.asarray(box, dtype)


# Abramowitz & Stegun 7.1.26: erfc(x) ≈ t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(−x²), t = 1/(1 + p x), x ≥ 0,
# absolute error ≤ 1.5e-7 (float32's rounding of values of order one)
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erfc_and_gaussian(x):
    """``(erfc(x), exp(−x²))`` for x ≥ 0, elementwise, sharing one exponential.

    float64 (and wider): ``jax.scipy.special.erfc``, exact to rounding (the OpenMM parity tests run here).
    float32: Abramowitz & Stegun 7.1.26, absolute error ≤ 1.5e-7, i.e. float32 round-off of the Coulomb term
    q_i q_j erfc(α r)/r relative to q_i q_j/r; one exp instead of erfc's two branches plus the exp of the force.
    """
    gauss = jnp.exp(-x * x)
    if x.dtype != jnp.float32:
        return jax.scipy.special.erfc(x), gauss
    t = 1.0 / (1.0 + _AS_P * x)
    a1, a2, a3, a4, a5 = _AS_A
    return t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * gauss, gauss


def apart(f, *args):
    """``f(*args)`` computed in a conditional branch of its own: an XLA fusion boundary.

    XLA:CPU fuses an elementwise chain into its consumer, but a chain with several consumers (the pair energy,
    the force weight and the partner's share all reuse r, 1/r, erfc and exp) is split at each of its expensive
    ops (sqrt, exp, divide), and every such intermediate goes through memory: the kernel's energy and forces ran
    ~4× the CPU time of its energy alone (docs/engine.md, "Fused pair values"). A branch is compiled as its own
    computation, so each per-pair value comes out of one fused loop. The branch is always taken unless
    ``args[0]``'s first element is NaN; then every output is NaN, as it would be anyway.
    """
    x0 = args[0].reshape(-1)[0]
    shapes = jax.eval_shape(f, *args)
    nan = functools.partial(jax.tree.map, lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)
    return jax.lax.cond(~jnp.isnan(x0), f, lambda *_: nan(), *args)


def _row_sums(*xs):
    """Row sums (over axis 1) of several ``[B, M]`` arrays as one variadic reduction (XLA:CPU ran three
    separate row sums of products sharing a factor at ~4× the cost of one)."""
    zeros = tuple(jnp.zeros((), x.dtype) for x in xs)
    return jax.lax.reduce(tuple(xs), zeros, lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True)), (1,))


def _pair_values(kind, rc, alpha, krf, crf, switch, d, ti, tj, valid, what):
    """One per-pair quantity of the pair kernel (masked to pairs inside the cutoff), ``[B, M]``, or the summed
    energy (``what="energy"``): see :func:`_pair_rows`. ``d`` ``[B, M, 3]`` minimum-image x_j − x_i, ``ti``
    ``[B, 1, 6]``, ``tj`` ``[B, M, 6]`` packed rows (x, y, z, q, σ, √ε)."""
    r2 = jnp.sum(d * d, axis=-1)
    inside = valid & (r2 < rc * rc)
    qj, sj, ej = tj[..., 3], tj[..., 4], tj[..., 5]
    sig_ij = 0.5 * (ti[..., 4] + sj)
    if kind == "LJ" and switch is None:  # LJ alone needs no r: 1/r² from r² (no sqrt)
        r, inv_r, inv_r2 = None, None, 1.0 / jnp.where(inside, r2, 1.0)
        s2 = sig_ij * sig_ij * inv_r2
    else:
        r = jnp.sqrt(jnp.where(inside, r2, 1.0))
        inv_r = 1.0 / r
        inv_r2 = inv_r * inv_r
        s2 = (sig_ij * inv_r) ** 2
    s6 = s2 * s2 * s2
    sw = switch_factor(r, rc, switch) if switch is not None else 1.0
    if what == "sigma":
        eps_ij = ti[..., 5] * ej
        dlj_dsig = eps_ij * 4.0 * (12.0 * s6 * s6 - 6.0 * s6) / jnp.where(sig_ij > 0, sig_ij, 1.0)
        return jnp.where(inside & (sig_ij > 0), 0.5 * sw * dlj_dsig, 0.0)
    lj_shape = lj_pair_energy(s2, 1.0)  # LJ energy per unit ε
    if what == "lj":  # ∂E/∂(√ε_i √ε_j)
        return jnp.where(inside, sw * lj_shape, 0.0)
    if kind == "PME":
        erfc, gauss = erfc_and_gaussian(alpha * r)
        f = erfc * inv_r
    elif kind == "RF":
        f = inv_r + krf * r2 - crf
    else:  # "LJ": no Coulomb term (the LJ fluid, dmd.models)
        f = jnp.zeros_like(r2)
    if what == "coulomb":  # ∂E/∂(q_i q_j)
        return jnp.where(inside, ONE_4PI_EPS0 * f, 0.0)
    qq = ONE_4PI_EPS0 * ti[..., 3] * qj
    eps_ij = ti[..., 5] * ej
    if what == "energy":
        coulomb = 0.0 if kind == "LJ" else qq * f
        return jnp.sum(jnp.where(inside, coulomb + sw * eps_ij * lj_shape, 0.0))
    # what == "weight": e'(r)/r
    if kind == "LJ":
        w = sw * eps_ij * 4.0 * (-12.0 * s6 * s6 + 6.0 * s6) * inv_r2
        if switch is not None:
            w = w + switch_derivative(r, rc, switch) * eps_ij * lj_shape * inv_r
        return jnp.where(inside, w, 0.0)
    if kind == "PME":
        df = -(f + (2.0 * alpha / math.sqrt(math.pi)) * gauss) * inv_r
    else:
        df = -inv_r * inv_r + 2.0 * krf * r
    de_dr = qq * df + sw * eps_ij * 4.0 * (-12.0 * s6 * s6 + 6.0 * s6) * inv_r
    if switch is not None:
        de_dr = de_dr + switch_derivative(r, rc, switch) * eps_ij * lj_shape
    return jnp.where(inside, de_dr * inv_r, 0.0)


def _pair_rows(kind, rc, alpha, krf, crf, switch, tab, box, rows, idx_rows, need, half=False):
    """Per-row pair sums over a neighbour list for the atoms ``rows`` (see :func:`_pair_terms`).

    ``tab`` is ``[N, 6]``: x, y, z (nm), q (e), σ (nm), √ε per atom, gathered once per pair (one row gather instead
    of four). ``need`` (static) says which of the gradients (pos, box, q, σ, √ε) to compute; None: energy only.
    ``half``: each pair listed once (energy not halved); the gradients then come with the partners' side as a third
    output, per pair ``[B, M(, 3)]`` (pos, q, σ, √ε; None where not needed), for the caller to scatter.
    Each per-pair quantity (the energy, the force weight e'(r)/r, ∂e/∂(q_i q_j), ∂e/∂σ_ij, ∂e/∂(√ε_i √ε_j)) is
    computed in a fused loop of its own (:func:`apart`) from the gathered rows and the minimum-image vectors.
    """
    n = tab.shape[0]
    valid = (idx_rows < n) & (rows < n)[:, None]
    jc = jnp.where(valid, idx_rows, 0)
    ic = jnp.minimum(rows, n - 1)
    tj = tab[jc]  # [B, M, 6]
    ti = tab[ic][:, None, :]  # [B, 1, 6]
    d, shift = minimum_image_shift(tj[..., :3] - ti[..., :3], box)
    values = functools.partial(_pair_values, kind, rc, alpha, krf, crf, switch)
    per_pair = 1.0 if half else 0.5  # a full list holds each pair twice
    energy = per_pair * apart(functools.partial(values, what="energy"), d, ti, tj, valid)
    if need is None:
        return energy
    need_pos, need_box, need_q, need_sig, need_seps = need
    grads = [None] * 5
    other = [None] * 5  # half list: ∂E/∂(partner's x, -, q, σ, √ε) per pair
    if need_pos or need_box:
        w = apart(functools.partial(values, what="weight"), d, ti, tj, valid)
        # ∂E/∂x_i = Σ_j e'(r) ∂r/∂x_i, ∂r/∂x_i = −d_ij / r  (d_ij = x_j − x_i, minimum image)
        if need_pos:
            wd = (w * d[..., 0], w * d[..., 1], w * d[..., 2])
            grads[0] = -jnp.stack(_row_sums(*wd), axis=-1)
            other[0] = jnp.stack(wd, axis=-1) if half else None
        # ∂E/∂L_k = ½ Σ e'(r) d_k (−n_k) / r  (d depends on the box through the image shift n); for box vectors
        # B (rows), d = raw − n B, so ∂E/∂B_kl = ½ Σ e'(r) (−n_k) d_l / r
        if need_box and box.ndim == 1:
            grads[1] = -per_pair * jnp.sum(w[..., None] * d * shift, axis=(0, 1))
        elif need_box:
            grads[1] = -per_pair * jnp.einsum("ij,ijk,ijl->kl", w, shift, d)
    if need_q:
        c = apart(functools.partial(values, what="coulomb"), d, ti, tj, valid)
        grads[2] = jnp.sum(c * tj[..., 3], axis=1)
        other[2] = c * ti[..., 3] if half else None
    if need_sig:
        ds = apart(functools.partial(values, what="sigma"), d, ti, tj, valid)
        grads[3] = jnp.sum(ds, axis=1)
        other[3] = ds if half else None
    if need_seps:
        lj = apart(functools.partial(values, what="lj"), d, ti, tj, valid)
        grads[4] = jnp.sum(lj * tj[..., 5], axis=1)
        other[4] = lj * ti[..., 5] if half else None
    if half:
        return energy, tuple(grads), tuple(other)
    return energy, tuple(grads)


_ROW_BLOCK = 128  # rows per block: keeps the [block, max_neighbors] temporaries in cache (128 measured best)


def _pair_terms(kind, rc, alpha, krf, crf, switch, pos, box, idx, q, sig, seps, need, row0=0, half=False):
    """Pair energy over a full neighbour list and (optionally) its row-reduced gradients.

    Pair energy e(r) = ke q_i q_j f(r) + S(r)·4 ε_ij (s⁶² − s⁶), s⁶ = (σ_ij/r)⁶, σ_ij = (σ_i+σ_j)/2,
    ε_ij = √ε_i √ε_j; f(r) = erfc(α r)/r (PME), 1/r + k_rf r² − c_rf (reaction field) or 0 ("LJ": LJ alone).
    Because each pair appears in both rows, E = ½ Σ_i Σ_j e_ij and every gradient is a row sum:
    ∂E/∂x_i = Σ_j e'(r_ij) (x_i − x_j)/r_ij, ∂E/∂q_i = Σ_j ∂e_ij/∂q_i, and likewise for σ_i, √ε_i.
    Rows are processed in blocks (``lax.map``) so temporaries stay small. ``need``: static tuple of 5 bools
    (gradients w.r.t. pos, box, q, σ, √ε to return; the others come back None), or None for the energy only.
    ``idx`` may hold only the rows ``row0, row0 + 1, ...`` (a shard of the list; padding rows ≥ N are skipped):
    the row gradients then cover those rows.

    ``half``: a half list (each pair in one row, :func:`dmd.forces.neighbors.pair_neighbor_list` ``full=False``):
    half the pairs, and each pair's share of the partner's gradient is scatter-added inside the block loop (a scan
    carrying ``[N]`` accumulators; the gradients then cover all N atoms). On XLA CPU a scatter of the whole
    ``[N, M, 3]`` pair array after the loop cost more than the pairs it saves (docs/engine.md, "Half lists").
    """
    n = pos.shape[0]
    n_rows, m = idx.shape
    n_blocks = -(-n_rows // _ROW_BLOCK)
    pad = n_blocks * _ROW_BLOCK - n_rows
    idx_p = jnp.pad(idx, ((0, pad), (0, 0)), constant_values=n).reshape(n_blocks, _ROW_BLOCK, m)
    rows = (row0 + jnp.arange(n_blocks * _ROW_BLOCK, dtype=idx.dtype)).reshape(n_blocks, _ROW_BLOCK)
    tab = jnp.concatenate([pos, q[:, None], sig[:, None], seps[:, None]], axis=1).astype(pos.dtype)

    def one(args):
        r, i = args
        return _pair_rows(kind, rc, alpha, krf, crf, switch, tab, box, r, i, need, half)

    if half and need is not None:
        shapes = ((n, 3), box.shape, (n,), (n,), (n,))
        acc0 = tuple(jnp.zeros(sh, pos.dtype) if k else None for k, sh in zip(need, shapes, strict=True))

        def body(carry, args):
            e_sum, acc = carry
            r, i = args
            e, grads, other = one(args)
            new = []
            for k, (a, g, o) in enumerate(zip(acc, grads, other, strict=True)):
                if a is None:
                    new.append(None)
                elif k == 1:  # the box gradient is a sum over pairs
                    new.append(a + g)
                else:  # row sums to the rows, each pair's partner share to the partner (padding N: dropped)
                    a = a.at[r].add(g, mode="drop")
                    new.append(a.at[i.reshape(-1)].add(o.reshape((-1,) + o.shape[2:]), mode="drop"))
            return (e_sum + e, tuple(new)), None

        (energy, grads), _ = jax.lax.scan(body, (jnp.zeros((), pos.dtype), acc0), (rows, idx_p))
        return energy, grads
    out = jax.lax.map(one, (rows, idx_p))
    if need is None:
        return jnp.sum(out), None
    energy, grads = out

    def unblock(g):
        return None if g is None else g.reshape((n_blocks * _ROW_BLOCK,) + g.shape[2:])[:n_rows]

    g_pos, g_box, g_q, g_sig, g_seps = grads
    g_box = None if g_box is None else jnp.sum(g_box, axis=0)
    return jnp.sum(energy), (unblock(g_pos), g_box, unblock(g_q), unblock(g_sig), unblock(g_seps))


def _sharded_pair_terms(n_shards, kind, rc, alpha, krf, crf, switch, pos, box, idx, q, sig, seps, need, half=False):
    """:func:`_pair_terms` with the neighbour-list rows split over the first ``n_shards`` devices (``shard_map``:
    each device sums its own rows; positions and parameters are replicated, row gradients are concatenated)."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    n, m = idx.shape
    per = -(-n // (n_shards * _ROW_BLOCK)) * _ROW_BLOCK
    idx_p = jnp.pad(idx, ((0, per * n_shards - n), (0, 0)), constant_values=n)
    mesh = Mesh(np.array(jax.devices()[:n_shards]), ("rows",))
    need_t = need or (False,) * 5
    # pos, q, σ, √ε gradients are per row; the box gradient is a sum (a half list: all are sums over the shards)
    row_kinds = (False,) * 5 if half else (True, False, True, True, True)

    def local(pos, box, idx_l, q, sig, seps):
        row0 = jax.lax.axis_index("rows") * per
        e, grads = _pair_terms(kind, rc, alpha, krf, crf, switch, pos, box, idx_l, q, sig, seps, need, row0, half)
        grads = grads or (None,) * 5
        e = jax.lax.psum(e, "rows")
        out = [g if row else jax.lax.psum(g, "rows") for g, row in zip(grads, row_kinds, strict=True) if g is not None]
        return e, tuple(out)

    out_g = tuple(P("rows") if row else P() for row, k in zip(row_kinds, need_t, strict=True) if k)
    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(), P("rows"), P(), P(), P()), out_specs=(P(), out_g), check_vma=False
    )
    e, out = fn(pos, box, idx_p, q, sig, seps)
    if need is None:
        return e, None
    it = iter(out)
    grads = [next(it) if k else None for k in need_t]
    return e, tuple(g[:n] if (g is not None and row) else g for g, row in zip(grads, row_kinds, strict=True))


def pair_energy_full(kind, rc, alpha=None, krf=0.0, crf=0.0, switch=None, row_shards=1, half=False, pair_kernel="xla"):
    """``E(pos, box, idx, q, sig, seps)`` over a full neighbour list (``half``: a half list), with an analytic JVP.

    The JVP is ``Σ_i ∂E/∂x_i·ẋ_i + ∂E/∂L·L̇ + Σ_i (∂E/∂q_i q̇_i + ∂E/∂σ_i σ̇_i + ∂E/∂√ε_i (√ε_i)˙)``
    with the gradients from row sums (:func:`_pair_terms`; a half list adds a scatter inside the block loop), so
    reverse mode needs no scatter-add of the whole pair array.
    The gradients are plain jnp functions of the inputs, so forward-over-reverse (Hessian-vector
    products for the sensitivity engine) works by ordinary autodiff.

    ``kind``: "PME", "RF" or "LJ" (no Coulomb term; the LJ fluid of :func:`dmd.models.lj_fluid`, whose pair
    weight then needs no square root without a switch).
    ``row_shards`` > 1 splits the rows over that many devices (:func:`_sharded_pair_terms`; on CPU, host devices
    from ``XLA_FLAGS=--xla_force_host_platform_device_count``): an opt-in measured by
    ``benchmarks/bench_engine.py --row-shards`` (docs/engine.md, "Both cores"). ``pair_kernel``: "xla" (this
    kernel), "auto" or "numba": the energy and position-only derivatives from :mod:`dmd.forces.numba_pairs`.
    """
    terms = functools.partial(_sharded_pair_terms, row_shards) if row_shards > 1 else _pair_terms
    terms = functools.partial(terms, kind, rc, alpha, krf, crf, switch, half=half)
    xla = functools.partial(pair_energy_full, kind, rc, alpha, krf, crf, switch, row_shards, half)  # the XLA twin
    fast = pair_forces(pair_kernel, kind, rc, alpha, switch, half, row_shards, xla)

    @jax.custom_jvp
    def energy(*args):  # pos, box, idx, q, sig, seps
        return (fast and fast(*args) or terms(*args, None))[0]

    @functools.partial(energy.defjvp, symbolic_zeros=True)
    def _energy_jvp(primals, tangents):
        # only the terms whose tangent is not a symbolic zero are computed (plain MD differentiates positions
        # only: no per-pair work for the box, charge, σ or ε gradients)
        dts = (tangents[0], tangents[1], tangents[3], tangents[4], tangents[5])
        need = tuple(not isinstance(dt, SymbolicZero) for dt in dts)
        out = need == (True,) + (False,) * 4 and fast and fast(*primals)  # positions alone: the fast kernel
        e, grads = (out[0], (out[1],) + (None,) * 4) if out else terms(*primals, need)
        return e, sum((jnp.sum(g * dt) for g, dt in zip(grads, dts, strict=True) if g is not None), jnp.zeros_like(e))

    return energy


@dataclasses.dataclass(frozen=True)
class NonbondedSpec:
    """Static description of an OpenMM ``NonbondedForce`` (everything but θ).

    Attributes:
      method: "NoCutoff", "CutoffPeriodic" or "PME".
      cutoff: r_c, nm (None for NoCutoff).
      type_index: ``[N]`` LJ type of each atom (θ σ, ε are per type).
      type_counts: ``[T]`` atoms per type (dispersion correction).
      excluded: ``[E, 2]`` every excluded/exception pair (i < j).
      exc_pairs: ``[X, 2]`` exceptions that interact.
      exc_q_scale, exc_q_fixed: ``[X]``: q_ij = scale · q_i q_j + fixed (scale ≠ 0 when OpenMM's
        chargeProd was a multiple of q_i q_j, e.g. 1/1.2 for AMBER 1-4s, so θ changes follow).
      exc_eps_scale, exc_eps_fixed: ``[X]``: ε_ij = scale · √(ε_i ε_j) + fixed.
      exc_sig_mix: ``[X]`` bool: σ_ij = (σ_i + σ_j)/2 if True else ``exc_sig_fixed``.
      exceptions_periodic: exceptions use minimum-image distances.
      rf_dielectric: ε_rf (CutoffPeriodic).
      switch_distance: r_s, nm, or None.
      dispersion_correction: add E_disp (PME/CutoffPeriodic).
      alpha, grid, order: PME α (1/nm), grid sizes, B-spline order.
      nocutoff_pairs: ``[P, 2]`` non-excluded pairs for NoCutoff.
      pair_kernel: "auto", "numba" or "xla": real-space pairs and PME spreading (numba_pairs, pme_kernel).
    """

    method: str
    cutoff: float | None
    type_index: np.ndarray
    type_counts: np.ndarray
    excluded: np.ndarray
    exc_pairs: np.ndarray
    exc_q_scale: np.ndarray
    exc_q_fixed: np.ndarray
    exc_eps_scale: np.ndarray
    exc_eps_fixed: np.ndarray
    exc_sig_mix: np.ndarray
    exc_sig_fixed: np.ndarray
    exceptions_periodic: bool = False
    rf_dielectric: float = 78.3
    switch_distance: float | None = None
    dispersion_correction: bool = False
    alpha: float | None = None
    grid: tuple[int, int, int] | None = None
    order: int = 5
    nocutoff_pairs: np.ndarray | None = None
    pair_kernel: str = "auto"


def dispersion_correction(sigma_t, epsilon_t, type_counts, cutoff, volume):
    """Long-range LJ correction E_disp (kJ/mol) from per-type σ, ε (see module docstring)."""
    n = jnp.asarray(type_counts, sigma_t.dtype)
    n_atoms = float(np.sum(type_counts))
    sig = 0.5 * (sigma_t[:, None] + sigma_t[None, :])
    seps = safe_sqrt(epsilon_t)
    eps = seps[:, None] * seps[None, :]
    s6 = sig**6
    w = 0.5 * n[:, None] * n[None, :] + 0.5 * jnp.diag(n)
    sum1 = jnp.sum(w * eps * s6 * s6)
    sum2 = jnp.sum(w * eps * s6)
    n_int = n_atoms * (n_atoms + 1) / 2
    return 8 * np.pi * n_atoms**2 / volume * (sum1 / (9 * cutoff**9) - sum2 / (3 * cutoff**3)) / n_int


def _exceptions_energy(spec, q, sig_a, seps_a, pos, box):
    if len(spec.exc_pairs) == 0:
        return 0.0
    i, j = spec.exc_pairs[:, 0], spec.exc_pairs[:, 1]
    dt = pos.dtype
    d = pos[j] - pos[i]
    if spec.exceptions_periodic:
        d = minimum_image(d, box)
    r = jnp.sqrt(jnp.sum(d * d, axis=-1))
    qq = jnp.asarray(spec.exc_q_scale, dt) * q[i] * q[j] + jnp.asarray(spec.exc_q_fixed, dt)
    eps = jnp.asarray(spec.exc_eps_scale, dt) * seps_a[i] * seps_a[j] + jnp.asarray(spec.exc_eps_fixed, dt)
    sig = jnp.where(spec.exc_sig_mix, 0.5 * (sig_a[i] + sig_a[j]), jnp.asarray(spec.exc_sig_fixed, dt))
    return jnp.sum(ONE_4PI_EPS0 * qq / r + lj_energy(sig, eps, r))


def nonbonded_energy(spec: NonbondedSpec, params: dict, pos, box=None, neighbor=None):
    """Energy (kJ/mol) of an OpenMM NonbondedForce.

    Args:
      spec: static data (:class:`NonbondedSpec`).
      params: ``{"charge": [N] e, "sigma": [T] nm, "epsilon": [T] kJ/mol}``.
      pos: ``[N, 3]`` nm.
      box: ``[3]`` nm or ``[3, 3]`` reduced box vectors (rows a, b, c) nm (periodic methods, :mod:`dmd.space`).
      neighbor: full or half neighbour list (:mod:`dmd.forces.neighbors`, ``neighbor.full``) for cutoff methods.
    """
    dt = pos.dtype
    q = params["charge"]
    sig_a = params["sigma"][spec.type_index]
    seps_a = safe_sqrt(params["epsilon"])[spec.type_index]
    if spec.method == "NoCutoff":
        i, j = spec.nocutoff_pairs[:, 0], spec.nocutoff_pairs[:, 1]
        d = pos[j] - pos[i]
        r = jnp.sqrt(jnp.sum(d * d, axis=-1))
        e = jnp.sum(ONE_4PI_EPS0 * q[i] * q[j] / r + lj_energy(0.5 * (sig_a[i] + sig_a[j]), seps_a[i] * seps_a[j], r))
        return e + _exceptions_energy(spec, q, sig_a, seps_a, pos, None)

    if box is None or neighbor is None:
        raise ValueError(f"{spec.method} needs box= and neighbor= (allocate with system.neighbor_fn)")
    boxv = _box_vector(box, dt)
    rc = spec.cutoff
    if spec.method not in ("PME", "CutoffPeriodic"):
        raise ValueError(f"unsupported nonbonded method {spec.method!r}")
    eps_rf = spec.rf_dielectric
    krf, crf = (eps_rf - 1.0) / ((2.0 * eps_rf + 1.0) * rc**3), 3.0 * eps_rf / ((2.0 * eps_rf + 1.0) * rc)
    kind, kw = ("PME", {"alpha": spec.alpha}) if spec.method == "PME" else ("RF", {"krf": krf, "crf": crf})
    pair = pair_energy_full(
        kind, rc, **kw, switch=spec.switch_distance, half=not neighbor.full, pair_kernel=spec.pair_kernel
    )
    e = pair(pos, boxv, neighbor.idx, q, sig_a, seps_a)
    e = e + _exceptions_energy(spec, q, sig_a, seps_a, pos, boxv)
    volume = box_volume(boxv)
    if spec.dispersion_correction:
        e = e + dispersion_correction(params["sigma"], params["epsilon"], spec.type_counts, rc, volume)
    if spec.method == "PME":
        if len(spec.excluded):
            i, j = spec.excluded[:, 0], spec.excluded[:, 1]
            dx = minimum_image(pos[j] - pos[i], boxv)
            rx = jnp.sqrt(jnp.sum(dx * dx, axis=-1))
            e = e - jnp.sum(ONE_4PI_EPS0 * q[i] * q[j] * jax.scipy.special.erf(spec.alpha * rx) / rx)
        e = e - ONE_4PI_EPS0 * spec.alpha / math.sqrt(math.pi) * jnp.sum(q * q)
        # neutralising background for a net charge Q (zero for neutral systems)
        e = e - ONE_4PI_EPS0 * np.pi * jnp.sum(q) ** 2 / (2.0 * volume * spec.alpha**2)
        e = e + reciprocal_energy(q, pos, boxv, spec.alpha, spec.grid, spec.order, kernel=spec.pair_kernel)
    return e


@dataclasses.dataclass(frozen=True)
class TabulatedLJSpec:
    """CHARMM-style LJ from OpenMM's ``CustomNonbondedForce`` ``acoef(type1,type2)/r^12 - bcoef(type1,type2)/r^6``.

    θ is per-type σ_t, ε_t (A_tu = 4 ε_tu σ_tu¹², B_tu = 4 ε_tu σ_tu⁶ with Lorentz-Berthelot mixing)
    plus explicit NBFIX pairs (σ, ε) that override the mixing rule.

    Attributes:
      method: "NoCutoff" or "CutoffPeriodic".
      cutoff: nm or None.
      type_index: ``[N]`` table type of each atom.
      nbfix_pairs: ``[F, 2]`` type pairs overridden by NBFIX values.
      pairs: ``[P, 2]`` non-excluded atom pairs (NoCutoff).
      switch_distance: nm or None.
    """

    method: str
    cutoff: float | None
    type_index: np.ndarray
    nbfix_pairs: np.ndarray
    pairs: np.ndarray | None = None
    switch_distance: float | None = None


def _pair_tables(spec: TabulatedLJSpec, params: dict):
    sig_t, eps_t = params["sigma"], params["epsilon"]
    seps = safe_sqrt(eps_t)
    sig = 0.5 * (sig_t[:, None] + sig_t[None, :])
    eps = seps[:, None] * seps[None, :]
    if len(spec.nbfix_pairs):
        a, b = spec.nbfix_pairs[:, 0], spec.nbfix_pairs[:, 1]
        sig = sig.at[a, b].set(params["nbfix_sigma"]).at[b, a].set(params["nbfix_sigma"])
        eps = eps.at[a, b].set(params["nbfix_epsilon"]).at[b, a].set(params["nbfix_epsilon"])
    return sig, eps


def tabulated_lj_energy(spec: TabulatedLJSpec, params: dict, pos, box=None, neighbor=None):
    """Energy (kJ/mol) of the tabulated LJ CustomNonbondedForce (see :class:`TabulatedLJSpec`)."""
    sig_tab, eps_tab = _pair_tables(spec, params)
    t = jnp.asarray(spec.type_index)
    if spec.method == "NoCutoff":
        i, j = spec.pairs[:, 0], spec.pairs[:, 1]
        d = pos[j] - pos[i]
        r = jnp.sqrt(jnp.sum(d * d, axis=-1))
        return jnp.sum(lj_energy(sig_tab[t[i], t[j]], eps_tab[t[i], t[j]], r))
    n = pos.shape[0]
    boxv = _box_vector(box, pos.dtype)
    idx = neighbor.idx
    valid = idx < n
    jc = jnp.where(valid, idx, 0)
    d = minimum_image(pos[jc] - pos[:, None, :], boxv)
    r2 = jnp.sum(d * d, axis=-1)
    inside = valid & (r2 < spec.cutoff**2)
    r = jnp.sqrt(jnp.where(inside, r2, 1.0))
    lj = lj_energy(sig_tab[t[:, None], t[jc]], eps_tab[t[:, None], t[jc]], r)
    if spec.switch_distance is not None:
        lj = lj * switch_factor(r, spec.cutoff, spec.switch_distance)
    return (0.5 if neighbor.full else 1.0) * jnp.sum(jnp.where(inside, lj, 0.0))  # a full list: each pair twice


def lj_bond_energy(sigma, epsilon, pos, idx):
    """CustomBondForce ``4*epsilon*((sigma/r)^12-(sigma/r)^6)`` (CHARMM 1-4 LJ); per-bond σ, ε."""
    d = pos[idx[:, 1]] - pos[idx[:, 0]]
    r = jnp.sqrt(jnp.sum(d * d, axis=-1))
    return jnp.sum(lj_energy(sigma, epsilon, r))
