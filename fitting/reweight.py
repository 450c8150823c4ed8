"""Frame reweighting against experimental diffuse scattering.

Weights are a softmax of free logits z, so they stay on the simplex (w_t ≥ 0, Σ_t w_t = 1) and the
prediction stays a variance (DESIGN.md, "Structure factors and diffuse scattering")::

    w = softmax(z),   x′(h) = Σ_t w_t |F(h,t)|² − |Σ_t w_t F(h,t)|²      (seed: "x′(h)")

computed from the sufficient statistics S = Σ_t w_t Z_t of a :class:`fitting.fstore.FrameStore`
(x′ = S₀ − S₁² − S₂², :func:`diffuse_from_stats`). The loss is an objective from
:mod:`fitting.objectives` plus a pull toward prior weights w₀ (BME / BioEn)::

    L(z) = objective(x′(w), y) + θ · KL(w‖w₀),   KL(w‖w₀) = Σ_t w_t log(w_t / w₀_t)

optimized with optax Adam or L-BFGS (``optax.lbfgs``, zoom line search). θ is chosen by cross-validation
on held-out voxels: whole symmetry orbits (or whole resolution shells) are held out, because neighbouring
voxels and symmetry mates are correlated and a random-voxel split would leak. One fold is never used for
fitting or for choosing θ: it gives the reported test CC. Reports: train/test CC (total and anisotropic),
Kish N_eff = (Σw)²/Σw², entropy, weights over frame index, and an identifiability analysis of block
weights (flat directions of CC, e.g. any two-state mixture, are reported as not identifiable).

Fits of several (θ, fold, initialization) problems run as one vmapped batch: the store is streamed once
per step for all of them (a matrix–matrix product instead of many matrix–vector products); a single fit runs
unbatched, as two matrix–vector passes per step at the memory bandwidth (benchmarks/bench_reweight.py).

Out of core: ``make_problem(store, …, max_memory=bytes)`` with an on-disk store larger than the cap keeps
it on disk; every evaluation of :func:`reweight` (θ fits, final fit, baselines, identifiability) then
streams it chunk by chunk (:func:`stream_adam`, :func:`weighted_stats`), holding only ``[batch, 3, n_voxels]``
statistics in memory, with the same results as in memory.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis.stats import cc_per_shell, pearson_cc, shell_mean_subtract
from fitting import objectives as obj_mod
from fitting.fstore import FrameStore
from fitting.sharding import local_stats

__all__ = [
    "FitSpec",
    "ReweightConfig",
    "ReweightResult",
    "diffuse_from_stats",
    "diffuse_unnormalized",
    "kl_divergence",
    "kish_neff",
    "entropy",
    "holdout_folds",
    "Problem",
    "make_problem",
    "predict",
    "fit_batch",
    "fit_streaming",
    "stream_adam",
    "weighted_stats",
    "evaluate_weights",
    "identifiability",
    "reweight",
    "quickstart_stage",
]


# --------------------------------------------------------------------------- prediction from statistics


def diffuse_from_stats(s):
    """x′ = S₀ − S₁² − S₂² ``[n_voxels]`` from centered statistics ``s [..., 3, n_voxels]`` (Σw = 1)."""
    return s[..., 0, :] - s[..., 1, :] ** 2 - s[..., 2, :] ** 2


def diffuse_unnormalized(s, w_sum, f_mean):
    """x′ for weights that do not sum to one (W = Σw), from centered statistics (G = F − F̄, c = F̄)::

        Σw|F|² − |ΣwF|² = S₀ − |S₁ + iS₂|² + 2(1 − W) Re(c̄ (S₁ + iS₂)) + W(1 − W)|c|²

    The last two terms are the Bragg leak of unnormalized (e.g. sigmoid) weights.
    """
    cr, ci = jnp.real(f_mean), jnp.imag(f_mean)
    leak = 2 * (1 - w_sum) * (cr * s[1] + ci * s[2]) + w_sum * (1 - w_sum) * (cr**2 + ci**2)
    return diffuse_from_stats(s) + leak.astype(s.dtype)


def kl_divergence(logits, log_w0):
    """KL(w‖w₀) = Σ_t w_t (log w_t − log w₀_t) with w = softmax(logits) (nats)."""
    log_w = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.exp(log_w) * (log_w - log_w0))


def kish_neff(w) -> float:
    """Kish effective sample size (Σw)²/Σw² (T for uniform weights, 1 for a single frame)."""
    w = np.asarray(w, np.float64)
    return float(w.sum() ** 2 / np.sum(w**2))


def entropy(w) -> float:
    """Shannon entropy −Σ w log w of normalized weights (nats; log T for uniform)."""
    w = np.asarray(w, np.float64)
    w = w / w.sum()
    nz = w[w > 0]
    return float(-np.sum(nz * np.log(nz)))


# --------------------------------------------------------------------------- held-out voxels


def holdout_folds(hkl, n_folds: int, *, kind: str = "orbits", sg="P 1", inv_d2=None, seed: int = 0) -> np.ndarray:
    """Cross-validation fold (0 … n_folds−1) of each voxel, int ``[m]``, holding out whole groups.

    Args:
      hkl: int ``[m, 3]`` voxel indices (for a supercell: its integer indices).
      kind: ``"orbits"`` — every symmetry orbit of ``sg`` (Friedel mates included) lands in one fold,
        orbits assigned at random; ``"shells"`` — 4·n_folds equal-count resolution shells, dealt to the
        folds in turn so each fold spans the resolution range (needs ``inv_d2``).
    """
    from analysis import stats
    from analysis.symmetry import canonical_hkl

    rng = np.random.default_rng(seed)
    if kind == "orbits":
        rep = canonical_hkl(np.asarray(hkl), sg)
        _, orbit = np.unique(rep, axis=0, return_inverse=True)
        orbit = orbit.ravel()
        fold_of_orbit = rng.permutation(orbit.max() + 1) % n_folds
        return fold_of_orbit[orbit].astype(np.int32)
    if kind == "shells":
        if inv_d2 is None:
            raise ValueError("holdout kind 'shells' needs inv_d2 (1/d² of each voxel, Å⁻²)")
        n_sh = 4 * n_folds
        sh = stats.shell_index(inv_d2, stats.shell_edges(inv_d2, n_sh))
        return (sh % n_folds).astype(np.int32)
    raise ValueError(f"unknown holdout kind {kind!r}: use 'orbits' or 'shells'")


# --------------------------------------------------------------------------- the fitting problem


@dataclass(frozen=True)
class FitSpec:
    """Static settings of one batched fit (hashable: a change recompiles, data changes do not).

    Attributes:
      objective: one of :data:`fitting.objectives.OBJECTIVES`.
      optimizer: ``"adam"`` or ``"lbfgs"``.
      steps: optimizer iterations; learning_rate: Adam step on the logits.
      n_shells: number of resolution shells (``cc-aniso``); nu: Student-t degrees of freedom.
      n_data: number of data voxels when store voxels are averaged onto them (symmetry expansion), else 0.
    """

    objective: str = "cc"
    optimizer: str = "adam"
    steps: int = 200
    learning_rate: float = 0.05
    n_shells: int = 0
    nu: float = 4.0
    n_data: int = 0


@dataclass
class Problem:
    """Data bound to a store: everything a fit needs except the per-fit mask, θ and start.

    Attributes:
      z: the store's rows ``[n_frames(+pad), 3·n_voxels]`` (2-D, :func:`fitting.sharding.local_stats`) as a
        jax array (possibly sharded over frames), or
        None when the problem is out of core (the store stays on disk and is streamed, see ``store``).
      n_frames: number of real frames; stats_fn: ``(w [n_frames], z) -> S [3, n_voxels]``.
      data: pytree of jax arrays: ``y [n_data]``, optional ``weights``, ``sigma``, ``shells`` (int),
        ``reduce_index`` (store voxel → data voxel), ``reduce_counts``.
      log_w0: ``[n_frames]`` log prior weights; f_mean: ``[n_voxels]`` complex F̄.
      store: the on-disk :class:`fitting.fstore.FrameStore` streamed by out-of-core problems (else None).
      frames_per_chunk: frames read per chunk when streaming.
    """

    z: object
    n_frames: int
    stats_fn: object
    data: dict
    log_w0: object
    f_mean: np.ndarray
    n_shells: int = 0
    n_data: int = 0
    store: FrameStore | None = None
    frames_per_chunk: int = 64

    @property
    def y(self):
        return self.data["y"]

    @property
    def n_voxels(self) -> int:
        return int(self.data["y"].shape[0])

    @property
    def out_of_core(self) -> bool:
        """True when every evaluation streams the on-disk store instead of holding it in memory."""
        return self.z is None

    @property
    def dtype(self):
        return self.log_w0.dtype


def make_problem(
    store: FrameStore,
    y,
    *,
    weights=None,
    sigma=None,
    shells=None,
    n_shells: int = 0,
    prior=None,
    reduce_index=None,
    mesh=None,
    max_memory: float | None = None,
    frames_per_chunk: int = 64,
) -> Problem:
    """Bind data ``y [n_data]`` (and optional voxel weights, σ, shells) to a store.

    Args:
      prior: ``[n_frames]`` prior weights w₀ (default uniform), normalized here.
      reduce_index: optional int ``[n_voxels]`` mapping each store voxel to a data voxel; the prediction of
        a data voxel is the mean over its store voxels (e.g. the P1 equivalents of an ASU reflection).
      mesh: optional 1-D ``frames`` mesh (:func:`fitting.sharding.frame_mesh`) to shard frames over devices.
      max_memory: bytes the store may occupy in memory. An on-disk store larger than this is not loaded:
        the problem is out of core and every evaluation streams it from disk, ``frames_per_chunk`` frames at
        a time (``mesh`` is then ignored). None: always load.
    """
    from fitting import sharding

    t = store.n_frames
    dtype = store.dtype
    y = np.asarray(y)
    n_data = 0
    data = {"y": jnp.asarray(y, dtype)}
    if reduce_index is not None:
        reduce_index = np.asarray(reduce_index, np.int32)
        n_data = int(y.shape[0])
        if reduce_index.shape != (store.n_voxels,) or reduce_index.min() < 0 or reduce_index.max() >= n_data:
            raise ValueError("reduce_index must map every store voxel to a data voxel index in [0, len(y))")
        counts = np.bincount(reduce_index, minlength=n_data)
        if np.any(counts == 0):
            raise ValueError(f"{int(np.sum(counts == 0))} data voxels have no store voxel in reduce_index")
        data["reduce_index"] = jnp.asarray(reduce_index)
        data["reduce_counts"] = jnp.asarray(counts, dtype)
    elif y.shape != (store.n_voxels,):
        raise ValueError(f"data has {y.shape} values but the store has {store.n_voxels} voxels")
    if not np.all(np.isfinite(y)):
        raise ValueError("data contain NaN/inf: drop those voxels (mask them) before reweighting")
    for key, val in (("weights", weights), ("sigma", sigma)):
        if val is not None:
            data[key] = jnp.asarray(val, dtype)
    if shells is not None:
        data["shells"] = jnp.asarray(shells, jnp.int32)
    w0 = np.full(t, 1.0 / t) if prior is None else np.asarray(prior, np.float64) / np.sum(prior)
    if w0.shape != (t,) or np.any(w0 <= 0):
        raise ValueError(f"prior weights must be {t} positive numbers (one per frame)")
    out_of_core = store.on_disk and max_memory is not None and store.nbytes > max_memory
    if out_of_core:
        z, stats_fn = None, None
    elif mesh is None:
        z, stats_fn = _as_rows(store), local_stats
    else:
        z, stats_fn = sharding.shard_frames(store.array(), mesh), _cached_sharded_stats(mesh, t)
    return Problem(
        z=z,
        n_frames=t,
        stats_fn=stats_fn,
        data=data,
        log_w0=jnp.asarray(np.log(w0), dtype),
        f_mean=store.f_mean,
        n_shells=int(n_shells),
        n_data=n_data,
        store=store if out_of_core else None,
        frames_per_chunk=int(frames_per_chunk),
    )


def _as_rows(store: FrameStore):
    """The store as a 2-D ``[n_frames, 3·n_voxels]`` jax array.

    A C-contiguous, writeable, 64-byte-aligned numpy store (e.g. ``fitting.fstore.aligned_empty``) is shared
    with JAX through DLPack without a copy, so a store as large as half the memory can still be fitted; the
    store must then not be modified while the problem is in use. Anything else is copied.
    """
    rows = store.array().reshape(store.n_frames, -1)
    shareable = rows.flags.c_contiguous and rows.flags.writeable and rows.ctypes.data % 64 == 0
    if shareable and jax.default_backend() == "cpu":
        return jax.dlpack.from_dlpack(rows)
    return jnp.asarray(rows)


@functools.lru_cache(maxsize=16)
def _cached_sharded_stats(mesh, n_frames):
    from fitting.sharding import sharded_stats_fn

    return sharded_stats_fn(mesh, n_frames)


def _to_data_voxels(x, data, n_data):
    if not n_data:
        return x
    return jax.ops.segment_sum(x, data["reduce_index"], num_segments=n_data) / data["reduce_counts"]


def _objective(spec: FitSpec, x, data, mask):
    name = spec.objective
    y, om, sg = data["y"], data.get("weights"), data.get("sigma")
    if name == "cc":
        return obj_mod.neg_cc(x, y, weights=om, mask=mask)
    if name == "cc-aniso":
        return obj_mod.neg_cc_aniso(x, y, shells=data["shells"], n_shells=spec.n_shells, weights=om, mask=mask)
    if name == "gaussian":
        return obj_mod.gaussian_nll(x, y, sigma=sg, weights=om, mask=mask)
    if name == "student":
        return obj_mod.student_t_nll(x, y, sigma=sg, nu=spec.nu, weights=om, mask=mask)
    raise ValueError(f"unknown objective {name!r}: choose one of {', '.join(obj_mod.OBJECTIVES)}")


def _x_from_weights(stats_fn, z, w, data, n_data):
    return _to_data_voxels(diffuse_from_stats(stats_fn(w, z)), data, n_data)


def _fit_one(spec: FitSpec, stats_fn, z, data, log_w0, logits0, mask, theta):
    """One fit (vmapped by :func:`fit_batch`). Returns final logits and per-step history."""

    def parts(logits):
        w = jax.nn.softmax(logits)
        x = _x_from_weights(stats_fn, z, w, data, spec.n_data)
        o = _objective(spec, x, data, mask)
        kl = kl_divergence(logits, log_w0)
        return o + theta * kl, (o, kl, pearson_cc(x, data["y"], mask=mask))

    if spec.optimizer == "adam":
        opt = optax.adam(spec.learning_rate)
        vg = jax.value_and_grad(parts, has_aux=True)

        def body(carry, _):
            logits, state = carry
            (loss, (o, _, cc)), g = vg(logits)
            upd, state = opt.update(g, state, logits)
            return (optax.apply_updates(logits, upd), state), (loss, o, cc)

        (logits, _), hist = jax.lax.scan(body, (logits0, opt.init(logits0)), None, length=spec.steps)
    elif spec.optimizer == "lbfgs":
        value_fn = lambda p: parts(p)[0]
        opt = optax.lbfgs()
        vg = optax.value_and_grad_from_state(value_fn)

        def body(carry, _):
            logits, state = carry
            loss, g = vg(logits, state=state)
            upd, state = opt.update(g, state, logits, value=loss, grad=g, value_fn=value_fn)
            logits = optax.apply_updates(logits, upd)
            _, (o, _, cc) = parts(logits)  # history of the accepted point (one extra forward pass)
            return (logits, state), (loss, o, cc)

        (logits, _), hist = jax.lax.scan(body, (logits0, opt.init(logits0)), None, length=spec.steps)
    else:
        raise ValueError(f"unknown optimizer {spec.optimizer!r}: use 'adam' or 'lbfgs'")
    loss, o, cc = hist
    return logits, {"loss": loss, "objective": o, "cc": cc}


@functools.lru_cache(maxsize=32)
def _batched_fitter(spec: FitSpec, stats_fn):
    f = functools.partial(_fit_one, spec, stats_fn)
    return jax.jit(jax.vmap(f, in_axes=(None, None, None, 0, 0, 0)))


@functools.lru_cache(maxsize=32)
def _single_fitter(spec: FitSpec, stats_fn):
    def _fit_one_unbatched(z, data, log_w0, logits0, mask, theta):
        return _fit_one(spec, stats_fn, z, data, log_w0, logits0, mask, theta)

    return jax.jit(_fit_one_unbatched)


def fit_batch(problem: Problem, spec: FitSpec, logits0, masks, thetas, *, progress: bool = False):
    """Run a batch of independent fits in one compiled, vmapped optimizer loop.

    Args:
      logits0: ``[batch, n_frames]`` starting logits (``problem.log_w0`` for the prior).
      masks: bool ``[batch, n_data]`` voxels each fit sees; thetas: ``[batch]`` KL strengths θ.

    Returns:
      logits ``[batch, n_frames]`` and a history dict of ``[batch, steps]`` arrays (``loss``,
      ``objective``, ``cc`` = training CC after each step).

    A problem whose store stays on disk (:attr:`Problem.out_of_core`) is fitted by streaming the store
    chunk by chunk every step (:func:`_fit_batch_streaming`, Adam only; ``progress`` shows its steps).
    """
    spec = FitSpec(**{**asdict(spec), "n_shells": problem.n_shells, "n_data": problem.n_data})
    if problem.out_of_core:
        return _fit_batch_streaming(problem, spec, logits0, masks, thetas, progress=progress)
    dtype = problem.log_w0.dtype
    logits0, masks, thetas = jnp.asarray(logits0, dtype), jnp.asarray(masks, bool), jnp.asarray(thetas, dtype)
    if logits0.shape[0] == 1:
        # a single fit runs unbatched: S = w·Z stays a matrix–vector product, which XLA:CPU streams at full
        # memory bandwidth; a [1, T]·[T, N] (or duplicated [2, T]) matrix product runs 1.5–5x slower (measured
        # at T=1000, N=6e5: 162 ms vs 236 ms (batch 1) vs 901 ms (batch 2) per pass)
        logits, hist = _single_fitter(spec, problem.stats_fn)(
            problem.z, problem.data, problem.log_w0, logits0[0], masks[0], thetas[0]
        )
        return logits[None], {k: v[None] for k, v in hist.items()}
    return _batched_fitter(spec, problem.stats_fn)(problem.z, problem.data, problem.log_w0, logits0, masks, thetas)


# --------------------------------------------------------------------------- out of core: streaming the store


def _x_from_stats(s, data, n_data):
    return _to_data_voxels(diffuse_from_stats(s), data, n_data)


@functools.lru_cache(maxsize=32)
def _softmax_loss_of_stats(spec: FitSpec):
    """Jitted ``(S [B,3,N], logits [B,T], data, log_w0, masks [B,n], thetas [B])`` →
    ``(loss [B], (objective [B], cc [B]), ∂/∂S [B,3,N], ∂/∂logits [B,T])`` of objective(x′(S)) + θ·KL."""

    def one(s, logits, data, log_w0, mask, theta):
        x = _x_from_stats(s, data, spec.n_data)
        o = _objective(spec, x, data, mask)
        return o + theta * kl_divergence(logits, log_w0), (o, pearson_cc(x, data["y"], mask=mask))

    def total(s, logits, data, log_w0, masks, thetas):
        loss, aux = jax.vmap(one, in_axes=(0, 0, None, None, 0, 0))(s, logits, data, log_w0, masks, thetas)
        return jnp.sum(loss), (loss, aux)  # fits are independent: ∂Σ/∂(S_b, z_b) is fit b's own gradient

    vg = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)

    def run(*args):
        (_, (loss, aux)), (g_s, g_l) = vg(*args)
        return loss, aux, g_s, g_l

    return jax.jit(run)


@functools.lru_cache(maxsize=8)
def _weight_map(kind: str):
    fn = {"softmax": lambda lg: jax.nn.softmax(lg, axis=-1), "sigmoid": jax.nn.sigmoid}[kind]
    pull = lambda lg, gw: jax.vjp(fn, lg)[1](gw)[0]
    return jax.jit(fn), jax.jit(pull)


@functools.lru_cache(maxsize=8)
def _adam_update(learning_rate: float):
    opt = optax.adam(learning_rate)

    def update(g, state, logits):
        upd, state = opt.update(g, state, logits)
        return optax.apply_updates(logits, upd), state

    return opt.init, jax.jit(update)


def stream_adam(
    store: FrameStore,
    loss_of_stats,
    logits0,
    *,
    steps: int,
    learning_rate: float,
    weights: str = "softmax",
    frames_per_chunk: int = 64,
    desc: str = "reweight (streaming)",
    progress: bool = True,
):
    """Adam on a batch of weight vectors whose store stays on disk.

    Each step streams the store twice: S_b = Σ_t w_bt Z_t for every fit b at once, then
    ∂L/∂w_bt = ⟨Z_t, ∂L/∂S_b⟩ (:func:`fitting.fstore.stream_stats`, :func:`fitting.fstore.stream_vjp`);
    only ``[batch, 3, n_voxels]`` statistics are held in memory.

    Args:
      loss_of_stats: ``(S [B,3,N], logits [B,T]) -> (loss [B], aux tuple of [B] arrays, ∂L/∂S, ∂L/∂logits)``
        where ∂L/∂logits is the direct dependence (e.g. the KL term), not the one through S.
      logits0: ``[B, n_frames]``; weights: ``"softmax"`` (per row) or ``"sigmoid"`` (unnormalized).

    Returns ``(logits [B, n_frames], loss [B, steps], aux tuple of [B, steps])`` (numpy), each history entry
    evaluated at the logits before that step's update (as in the in-memory loop).
    """
    from tqdm.auto import tqdm

    from fitting.fstore import stream_stats, stream_vjp

    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    dtype = store.dtype
    w_fn, w_pull = _weight_map(weights)
    init, update = _adam_update(float(learning_rate))
    logits = jnp.asarray(logits0, dtype)
    state = init(logits)
    hist_loss, hist_aux = [], []
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        w = w_fn(logits)
        s = jnp.asarray(stream_stats(store, np.asarray(w), frames_per_chunk), dtype)
        loss, aux, g_s, g_l = loss_of_stats(s, logits)
        g_w = jnp.asarray(stream_vjp(store, np.asarray(g_s), frames_per_chunk), dtype)
        logits, state = update(w_pull(logits, g_w) + g_l, state, logits)
        hist_loss.append(np.asarray(loss))
        hist_aux.append(tuple(np.asarray(a) for a in aux))
    aux_hist = tuple(np.stack([a[i] for a in hist_aux], axis=-1) for i in range(len(hist_aux[0])))
    return np.asarray(logits), np.stack(hist_loss, axis=-1), aux_hist


def _fit_batch_streaming(problem: Problem, spec: FitSpec, logits0, masks, thetas, *, progress: bool = False):
    """:func:`fit_batch` for an out-of-core problem: same loss, Adam, history; the store is streamed."""
    if spec.optimizer != "adam":
        raise ValueError(
            "out-of-core fits (store larger than the memory cap) use Adam: L-BFGS line searches would re-read the "
            "store many times per step. Use optimizer 'adam' (dmd reweight --optimizer adam) or raise the memory cap"
        )
    dtype = problem.dtype
    masks, thetas = jnp.asarray(masks, bool), jnp.asarray(thetas, dtype)
    vg = _softmax_loss_of_stats(spec)
    logits, loss, (o, cc) = stream_adam(
        problem.store,
        lambda s, lg: vg(s, lg, problem.data, problem.log_w0, masks, thetas),
        jnp.asarray(logits0, dtype),
        steps=spec.steps,
        learning_rate=spec.learning_rate,
        frames_per_chunk=problem.frames_per_chunk,
        progress=progress,
    )
    return jnp.asarray(logits), {"loss": loss, "objective": o, "cc": cc}


def fit_streaming(
    store: FrameStore,
    problem_data: dict,
    spec: FitSpec,
    mask,
    theta: float = 0.0,
    *,
    logits0=None,
    log_w0=None,
    frames_per_chunk: int = 64,
    progress: bool = True,
):
    """Adam fit of one problem whose store stays on disk (:func:`fitting.fstore.open_store`).

    Each step streams the store twice (:func:`stream_adam`). Same loss as :func:`fit_batch` (objective +
    θ·KL); ``problem_data`` is ``Problem.data`` (y and optional weights/σ/shells; no reduce_index). Returns
    ``(logits [n_frames], history dict of [steps] arrays)``. For whole cross-validated runs use
    ``make_problem(store, …, max_memory=…)``, which streams every evaluation of :func:`reweight`.
    """
    if spec.optimizer != "adam":
        raise ValueError("streaming fits use Adam (L-BFGS line searches would re-stream the store many times)")
    t = store.n_frames
    dtype = store.dtype
    log_w0 = jnp.full(t, -np.log(t), dtype) if log_w0 is None else jnp.asarray(log_w0, dtype)
    logits0 = jnp.asarray(log_w0 if logits0 is None else logits0, dtype)
    spec = FitSpec(**{**asdict(spec), "n_data": 0})
    vg = _softmax_loss_of_stats(spec)
    masks, thetas = jnp.asarray(mask, bool)[None], jnp.asarray([theta], dtype)
    logits, loss, (o, cc) = stream_adam(
        store,
        lambda s, lg: vg(s, lg, problem_data, log_w0, masks, thetas),
        logits0[None],
        steps=spec.steps,
        learning_rate=spec.learning_rate,
        frames_per_chunk=frames_per_chunk,
        progress=progress,
    )
    return jnp.asarray(logits[0]), {"loss": loss[0], "objective": o[0], "cc": cc[0]}


@functools.lru_cache(maxsize=16)
def _predictor(stats_fn, n_data):
    return jax.jit(lambda z, w, data: _x_from_weights(stats_fn, z, w, data, n_data))


@functools.lru_cache(maxsize=16)
def _batch_stats(stats_fn):
    return jax.jit(lambda z, w: jax.vmap(lambda wi: stats_fn(wi, z))(w))


@functools.lru_cache(maxsize=16)
def _x_of_stats(n_data):
    return jax.jit(lambda s, data: _x_from_stats(s, data, n_data))


def weighted_stats(problem: Problem, w):
    """S = Σ_t w_t Z_t for ``w [n_frames]`` or ``[batch, n_frames]`` → ``[3, N]`` or ``[batch, 3, N]``.

    One pass over the store for the whole batch (streamed from disk for out-of-core problems).
    """
    w = np.asarray(w)
    if problem.out_of_core:
        from fitting.fstore import stream_stats

        return jnp.asarray(stream_stats(problem.store, w, problem.frames_per_chunk), problem.dtype)
    wj = jnp.asarray(w, problem.dtype)
    if w.ndim == 1:
        return problem.stats_fn(wj, problem.z)
    return _batch_stats(problem.stats_fn)(problem.z, wj)


def predict(problem: Problem, w):
    """x′ on the data voxels for normalized weights ``w [n_frames]`` (Σw = 1), ``[n_data]``;
    ``w [batch, n_frames]`` gives ``[batch, n_data]`` from one pass over the store."""
    w = np.asarray(w)
    if problem.out_of_core or w.ndim == 2:
        s = weighted_stats(problem, w)
        fn = _x_of_stats(problem.n_data)
        return fn(s, problem.data) if w.ndim == 1 else jax.vmap(fn, in_axes=(0, None))(s, problem.data)
    return _predictor(problem.stats_fn, problem.n_data)(problem.z, jnp.asarray(w, problem.dtype), problem.data)


def evaluate_weights(problem: Problem, x, train_mask, test_mask) -> dict:
    """CC of a prediction ``x [n_data]`` against the data on the train and test voxels (total and
    anisotropic when shells are known), plus per-shell test CC."""
    y = problem.y
    out = {
        "cc_train": float(pearson_cc(x, y, mask=train_mask)),
        "cc_test": float(pearson_cc(x, y, mask=test_mask)),
    }
    if "shells" in problem.data and problem.n_shells:
        sh, n = problem.data["shells"], problem.n_shells
        for name, m in (("train", train_mask), ("test", test_mask)):
            m = jnp.asarray(m)
            xa, ya = shell_mean_subtract(x, sh, n, mask=m), shell_mean_subtract(y, sh, n, mask=m)
            out[f"cc_aniso_{name}"] = float(pearson_cc(xa, ya, mask=m))
        out["cc_test_per_shell"] = np.asarray(cc_per_shell(x, y, sh, n, mask=jnp.asarray(test_mask))).tolist()
    return out


# --------------------------------------------------------------------------- identifiability


def identifiability(
    problem: Problem,
    w,
    groups,
    mask,
    *,
    objective: str = "cc",
    step: float = 0.5,
    cc_tol: float | None = None,
) -> dict:
    """Which combinations of group weights do the data determine?

    Group log-weights u [K] perturb the fitted weights within the simplex,
    w_t(u) = w_t e^{u_g(t)} / Σ_s w_s e^{u_g(s)}. The Hessian of the objective in u (sum-zero subspace,
    since a common shift of u changes nothing) is diagonalized; along each eigen-direction v the CC drop
    ΔCC = CC(0) − max(CC(±step·v)) is measured. A direction with ΔCC ≤ ``cc_tol`` is flat: the data do not
    determine it. Example: any two-state mixture, x′ = w₁w₂|F₁ − F₂|², changes only in scale along its one
    direction, and CC ignores scale, so ΔCC = 0.

    Args:
      w: ``[n_frames]`` fitted weights; groups: int ``[n_frames]`` group (state / block) of each frame.
      mask: bool ``[n_data]`` voxels used (training voxels).
      cc_tol: flatness threshold; default: the CC standard error (1 − CC²)/√n_voxels, floored at 1e-6.

    Returns a JSON-able dict: ``identifiable`` (bool), ``group_weights``, ``hessian_eigenvalues``,
    ``cc_drop`` per direction, ``n_flat``, ``cc_tol``, ``reason``.
    """
    groups = np.asarray(groups)
    _, gidx = np.unique(groups, return_inverse=True)
    gidx = gidx.ravel()
    k = int(gidx.max()) + 1
    w = np.asarray(w, np.float64)
    onehot = np.eye(k)[gidx]  # [T, K]
    # per-group statistics S_g = Σ_{t∈g} w_t Z_t (one pass over the store, in memory or streamed); then
    # S(u) = Σ_g e^{u_g} S_g / Σ_g e^{u_g} W_g with W_g = Σ_{t∈g} w_t, so everything below is on [K, 3, N]
    s_g = weighted_stats(problem, (onehot * w[:, None]).T)
    w_g = jnp.asarray(onehot.T @ w, problem.dtype)
    mask = jnp.asarray(mask, bool)
    spec = FitSpec(objective=objective, n_shells=problem.n_shells, n_data=problem.n_data)

    def x_of(u, s_g, w_g, data):
        e = jnp.exp(u - jnp.max(u))
        s = jnp.tensordot(e, s_g, axes=1) / jnp.dot(e, w_g)
        return _x_from_stats(s, data, problem.n_data)

    # the [K, 3, N] statistics are arguments, not closed-over constants (large constants slow compilation)
    hess_fn = jax.jit(jax.hessian(lambda u, *a: _objective(spec, x_of(u, *a), a[2], mask)))
    cc_fn = jax.jit(lambda u, *a: pearson_cc(x_of(u, *a), a[2]["y"], mask=mask))
    args = (s_g, w_g, problem.data)

    u0 = jnp.zeros(k, problem.dtype)
    if k < 2:
        return {"identifiable": True, "n_groups": k, "reason": "a single group has no free weight"}
    hess = np.asarray(hess_fn(u0, *args), np.float64)
    # orthonormal basis of the sum-zero subspace
    basis = np.linalg.svd(np.eye(k) - 1.0 / k)[0][:, : k - 1]
    evals, evecs = np.linalg.eigh(basis.T @ hess @ basis)
    dirs = basis @ evecs  # [K, K-1]
    cc0 = float(cc_fn(u0, *args))
    drops = []
    for j in range(k - 1):
        v = jnp.asarray(dirs[:, j], problem.dtype)
        drops.append(cc0 - max(float(cc_fn(step * v, *args)), float(cc_fn(-step * v, *args))))
    n_vox = int(np.sum(np.asarray(mask)))
    if cc_tol is None:
        cc_tol = max(1e-6, (1 - cc0**2) / np.sqrt(max(n_vox, 1)))
    flat = [j for j in range(k - 1) if drops[j] <= cc_tol]
    gw = np.asarray(w_g, np.float64).tolist()
    if flat:
        reason = (
            f"{len(flat)} of {k - 1} weight directions are flat: moving the group log-weights by ±{step} along "
            f"them changes CC by ≤ {cc_tol:.2g} (largest such drop {max(drops[j] for j in flat):.2g}); "
            "the data do not determine these weights"
        )
    else:
        reason = f"every weight direction lowers CC by more than {cc_tol:.2g} at a ±{step} log-weight step"
    return {
        "identifiable": not flat,
        "n_groups": k,
        "group_weights": gw,
        "hessian_eigenvalues": evals.tolist(),
        "cc_drop": drops,
        "n_flat": len(flat),
        "cc_tol": float(cc_tol),
        "cc": cc0,
        "reason": reason,
    }


# --------------------------------------------------------------------------- the whole procedure


@dataclass(frozen=True)
class ReweightConfig:
    """Settings of :func:`reweight`.

    Attributes:
      objective, optimizer, steps, learning_rate: see :class:`FitSpec`.
      theta_grid: KL strengths θ tried by cross-validation (θ = 0 is no regularization).
      n_folds: voxel folds; fold ``test_fold`` is the untouched test set, the others serve θ selection.
      n_groups: contiguous frame blocks for the identifiability report (ignored when groups are given).
      greedy: run greedy backward elimination; greedy_max_removals: cap on its removals (None: until no
        removal raises CC); sigmoid_steps: Adam steps of the seed-prototype sigmoid baseline.
    """

    objective: str = "cc"
    optimizer: str = "adam"
    steps: int = 200
    learning_rate: float = 0.05
    theta_grid: tuple = (0.0, 1e-3, 1e-2, 1e-1)
    n_folds: int = 5
    test_fold: int = 0
    n_groups: int = 10
    greedy: bool = True
    greedy_max_removals: int | None = None
    sigmoid_steps: int = 200


@dataclass
class ReweightResult:
    """Outcome of :func:`reweight` (``summary`` is JSON-able)."""

    weights: np.ndarray
    theta: float
    history: dict
    cv: dict
    summary: dict
    x: np.ndarray = field(repr=False)
    baselines_weights: dict = field(default_factory=dict, repr=False)


def reweight(
    problem: Problem,
    folds,
    config: ReweightConfig = ReweightConfig(),
    *,
    groups=None,
    progress: bool = True,
) -> ReweightResult:
    """Cross-validated reweighting with baselines side by side.

    1. θ: for every θ in the grid and every inner fold k ≠ test_fold, fit on the other inner folds and score
       the held-out objective on fold k (all fits in one vmapped batch); θ* maximizes the mean held-out score.
    2. Final fit with θ* on all inner folds; CC on them (train) and on the test fold (test).
    3. Baselines on the same split: uniform weights, greedy backward elimination, unnormalized sigmoid.
    4. Identifiability of group weights (``groups``, default ``n_groups`` contiguous frame blocks).

    Args:
      folds: int ``[n_data]`` fold of each data voxel (:func:`holdout_folds`).
    """
    from fitting import baselines

    folds = np.asarray(folds)
    if folds.shape != (problem.n_voxels,):
        raise ValueError(f"folds must have one entry per data voxel ({problem.n_voxels}), got {folds.shape}")
    test = folds == config.test_fold
    train = ~test
    inner = [k for k in np.unique(folds[train])]
    if not test.any() or len(inner) < 2:
        raise ValueError("need a non-empty test fold and at least two other folds for cross-validation")
    spec = FitSpec(
        objective=config.objective, optimizer=config.optimizer, steps=config.steps, learning_rate=config.learning_rate
    )
    t = problem.n_frames
    thetas = np.asarray(config.theta_grid, float)

    # 1. θ by cross-validation: batch over (θ, inner fold)
    combos = [(th, k) for th in thetas for k in inner]
    masks = np.stack([train & (folds != k) for _, k in combos])
    logits0 = np.tile(np.asarray(problem.log_w0), (len(combos), 1))
    logits_cv, _ = fit_batch(problem, spec, logits0, masks, [c[0] for c in combos], progress=progress)
    x_cv = predict(problem, np.asarray(jax.nn.softmax(logits_cv, axis=-1)))  # one pass for all fits
    val = [-float(_objective(spec, x_cv[i], problem.data, jnp.asarray(folds == k))) for i, (_, k) in enumerate(combos)]
    val = np.asarray(val).reshape(len(thetas), len(inner))
    mean_val = val.mean(axis=1)
    # ties (within 1e-4) go to the larger θ: prefer the weights closer to the prior
    best = int(np.max(np.nonzero(mean_val >= mean_val.max() - 1e-4)[0]))
    theta = float(thetas[best])

    # 2. final fit
    logits, hist = fit_batch(problem, spec, np.asarray(problem.log_w0)[None], train[None], [theta], progress=progress)
    w = np.asarray(jax.nn.softmax(logits[0]), np.float64)
    x = predict(problem, w)
    stats = evaluate_weights(problem, x, train, test)
    n_eff = kish_neff(w)
    summary = {
        "objective": config.objective,
        "optimizer": config.optimizer,
        "n_frames": t,
        "n_voxels": problem.n_voxels,
        "out_of_core": problem.out_of_core,
        "n_train_voxels": int(train.sum()),
        "n_test_voxels": int(test.sum()),
        "theta": theta,
        **stats,
        "n_eff": n_eff,
        "n_eff_fraction": n_eff / t,
        "entropy": entropy(w),
        "entropy_max": float(np.log(t)),
        "kl_to_prior": float(kl_divergence(jnp.log(jnp.asarray(w)), problem.log_w0)),
        "cv": {"theta_grid": thetas.tolist(), "mean_heldout_score": mean_val.tolist(), "per_fold": val.tolist()},
    }

    # 3. baselines
    bw = {"uniform": np.full(t, 1.0 / t)}
    base = {"uniform": {**evaluate_weights(problem, predict(problem, bw["uniform"]), train, test), "n_eff": float(t)}}
    if config.greedy:
        g = baselines.greedy_elimination(problem, train, max_removals=config.greedy_max_removals, progress=progress)
        bw["greedy"] = g["weights"]
        base["greedy"] = {
            **evaluate_weights(problem, predict(problem, g["weights"]), train, test),
            "n_eff": kish_neff(g["weights"]),
            "n_removed": g["n_removed"],
        }
    s = baselines.sigmoid_baseline(
        problem, train, steps=config.sigmoid_steps, learning_rate=config.learning_rate, progress=progress
    )
    bw["sigmoid"] = s["weights"]
    base["sigmoid"] = {
        **evaluate_weights(problem, s["x"], train, test),
        "n_eff": kish_neff(s["weights"]),
        "weight_sum": float(np.sum(s["weights"])),
    }
    summary["baselines"] = base

    # 4. identifiability of block weights
    if groups is None:
        groups = np.arange(t) * min(config.n_groups, t) // t
    summary["identifiability"] = identifiability(problem, w, groups, train, objective=config.objective)
    history = {k: np.asarray(v[0]) for k, v in hist.items()}
    return ReweightResult(
        weights=w,
        theta=theta,
        history=history,
        cv=summary["cv"],
        summary=summary,
        x=np.asarray(x),
        baselines_weights=bw,
    )


EXAMPLE_DIR = __import__("pathlib").Path(__import__("dmd.data").data.__file__).resolve().parent / "reweight"


def quickstart_stage(out_dir, *, steps: int = 150, progress: bool = True) -> dict:
    """Last stage of ``dmd quickstart``: reweight the bundled example trajectory against its bundled data.

    The example (``dmd/data/reweight``, made by ``examples/reweight/make_example.py``: 60 real OpenMM frames of
    alanine dipeptide held in three backbone
    conformers, 20 frames each, and synthetic diffuse data of their 0.6/0.3/0.1 mixture with noise at
    CC 0.98) is reweighted exactly as ``dmd reweight`` would; outputs go to ``out_dir`` (weights.csv,
    summary.json, reweighted.mtz, PNGs). Returns the summary with ``recovered_state_weights``,
    ``true_state_weights`` and their L1 error added (also in summary.json).
    """
    import json

    from dmd.base.io import write_json
    from fitting.reweight_io import run_reweight

    truth = json.loads((EXAMPLE_DIR / "truth.json").read_text())
    n_states, per = len(truth["states"]), int(truth["frames_per_state"])
    groups = np.repeat(np.arange(n_states), per)
    config = ReweightConfig(steps=steps, learning_rate=0.1, sigmoid_steps=steps)
    summary = run_reweight(
        EXAMPLE_DIR / "traj.dcd",
        EXAMPLE_DIR / "top.pdb",
        EXAMPLE_DIR / "data.mtz",
        "IDIFF",
        out_dir,
        d_min=float(truth["d_min"]),
        config=config,
        groups=groups,
        progress=progress,
    )
    import csv
    from pathlib import Path

    with open(Path(out_dir) / "weights.csv") as fh:
        w = np.array([float(r["weight"]) for r in csv.DictReader(fh)])
    rec = np.bincount(groups, w, minlength=n_states)
    summary["true_state_weights"] = truth["state_weights"]
    summary["recovered_state_weights"] = rec.tolist()
    summary["state_weight_l1_error"] = float(np.abs(rec - np.asarray(truth["state_weights"])).sum())
    write_json(Path(out_dir) / "summary.json", summary)
    return summary
