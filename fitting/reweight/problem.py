"""The fitting problem: data bound to a frame store, the objective, and evaluating frame weights on it."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

from analysis.stats import cc_per_shell, pearson_cc, shell_mean_subtract
from fitting import objectives as obj_mod
from fitting.fstore import FrameStore
from fitting.reweight.prediction import x_from_stats, x_from_weights
from fitting.sharding import local_stats

__all__ = ["FitSpec", "Problem", "evaluate_weights", "make_problem", "objective_value", "predict", "weighted_stats"]


@dataclass(frozen=True)
class OptimizerSettings:
    """What a reweighting fit optimizes and how: the settings :class:`FitSpec` (one batched fit) and
    :class:`fitting.reweight.ReweightConfig` (the cross-validated procedure) share.

    Attributes:
      objective: one of :data:`fitting.objectives.OBJECTIVES`.
      optimizer: ``"adam"`` or ``"lbfgs"``.
      steps: optimizer iterations; learning_rate: Adam step on the logits.
    """

    objective: str = "cc"
    optimizer: str = "adam"
    steps: int = 200
    learning_rate: float = 0.05

    def optimizer_settings(self) -> dict:
        """These settings alone, as keywords (e.g. ``FitSpec(**config.optimizer_settings())``)."""
        return {f.name: getattr(self, f.name) for f in fields(OptimizerSettings)}


@dataclass(frozen=True)
class FitSpec(OptimizerSettings):
    """Static settings of one batched fit (hashable: a change recompiles, data changes do not).

    Attributes:
      objective, optimizer, steps, learning_rate: see :class:`OptimizerSettings`.
      n_shells: number of resolution shells (``cc-aniso``); nu: Student-t degrees of freedom.
      n_data: number of data voxels when store voxels are averaged onto them (symmetry expansion), else 0.
    """

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


def _data_arrays(store: FrameStore, y, weights, sigma, shells, reduce_index, dtype) -> tuple[dict, int]:
    """The ``Problem.data`` pytree and n_data (0 when store and data voxels are one-to-one); checks shapes."""
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
    return data, n_data


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
      prior: ``[n_frames]`` prior frame weights w₀ (default uniform), normalized here.
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
    data, n_data = _data_arrays(store, y, weights, sigma, shells, reduce_index, dtype)
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


def objective_value(spec: FitSpec, x, data, mask):
    """The objective ``spec.objective`` of a prediction ``x [n_data]`` against ``data["y"]`` on ``mask``
    (a loss: lower is better, e.g. −CC)."""
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


@functools.lru_cache(maxsize=16)
def _predictor(stats_fn, n_data):
    return jax.jit(lambda z, w, data: x_from_weights(stats_fn, z, w, data, n_data))


@functools.lru_cache(maxsize=16)
def _batch_stats(stats_fn):
    return jax.jit(lambda z, w: jax.vmap(lambda wi: stats_fn(wi, z))(w))


@functools.lru_cache(maxsize=16)
def _x_of_stats(n_data):
    return jax.jit(lambda s, data: x_from_stats(s, data, n_data))


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
    """x′ on the data voxels for normalized frame weights ``w [n_frames]`` (Σw = 1), ``[n_data]``;
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
