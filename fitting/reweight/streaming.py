"""Out of core: fits whose frame store stays on disk and is streamed chunk by chunk at every step.

Each Adam step streams the store twice: S_b = Σ_t w_bt Z_t for every fit b at once, then
∂L/∂w_bt = ⟨Z_t, ∂L/∂S_b⟩ (:func:`fitting.fstore.stream_stats`, :func:`fitting.fstore.stream_vjp`); only
``[batch, 3, n_voxels]`` statistics are held in memory. Results equal the in-memory fits up to summation order.
"""

from __future__ import annotations

import functools
from dataclasses import asdict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis.stats import pearson_cc
from dmd.base.progress import track
from fitting.fstore import FrameStore
from fitting.reweight.prediction import kl_divergence, x_from_stats
from fitting.reweight.problem import FitSpec, Problem, objective_value

__all__ = ["fit_batch_streaming", "fit_streaming", "stream_adam"]


@functools.lru_cache(maxsize=32)
def _softmax_loss_of_stats(spec: FitSpec):
    """Jitted ``(S [B,3,N], logits [B,T], data, log_w0, masks [B,n], thetas [B])`` →
    ``(loss [B], (objective [B], cc [B]), ∂/∂S [B,3,N], ∂/∂logits [B,T])`` of objective(x′(S)) + θ·KL."""

    def one(s, logits, data, log_w0, mask, theta):
        x = x_from_stats(s, data, spec.n_data)
        o = objective_value(spec, x, data, mask)
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
    """Adam on a batch of frame-weight vectors whose store stays on disk.

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
    from fitting.fstore import stream_stats, stream_vjp

    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    dtype = store.dtype
    w_fn, w_pull = _weight_map(weights)
    init, update = _adam_update(float(learning_rate))
    logits = jnp.asarray(logits0, dtype)
    state = init(logits)
    hist_loss, hist_aux = [], []
    for _ in track(range(steps), desc=desc, unit="step", enabled=progress):
        w = w_fn(logits)
        s = jnp.asarray(stream_stats(store, np.asarray(w), frames_per_chunk), dtype)
        loss, aux, g_s, g_l = loss_of_stats(s, logits)
        g_w = jnp.asarray(stream_vjp(store, np.asarray(g_s), frames_per_chunk), dtype)
        logits, state = update(w_pull(logits, g_w) + g_l, state, logits)
        hist_loss.append(np.asarray(loss))
        hist_aux.append(tuple(np.asarray(a) for a in aux))
    aux_hist = tuple(np.stack([a[i] for a in hist_aux], axis=-1) for i in range(len(hist_aux[0])))
    return np.asarray(logits), np.stack(hist_loss, axis=-1), aux_hist


def fit_batch_streaming(problem: Problem, spec: FitSpec, logits0, masks, thetas, *, progress: bool = False):
    """:func:`fitting.reweight.fit_batch` for an out-of-core problem: same loss, Adam, history; the store is
    streamed. ``spec`` must already carry the problem's ``n_shells`` and ``n_data``."""
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

    Each step streams the store twice (:func:`stream_adam`). Same loss as :func:`fitting.reweight.fit_batch`
    (objective + θ·KL); ``problem_data`` is ``Problem.data`` (y and optional weights/σ/shells; no reduce_index).
    Returns ``(logits [n_frames], history dict of [steps] arrays)``. For whole cross-validated runs use
    ``make_problem(store, …, max_memory=…)``, which streams every evaluation of :func:`fitting.reweight.reweight`.
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
