"""Force-field fitting to ensemble observables: simulate → observables → loss → gradient → optax → repeat.

Each round samples the ensemble at the current θ, averages per-frame observables o(θ, x) (see
:mod:`fitting.observables`), and compares ``prediction = combine(⟨o⟩)`` with the targets::

    L(θ) = Σ_targets w · mean_k [(prediction_k − data_k) / scale_k]²

Several state points (other densities, temperatures or systems: :class:`FitState`) can be fitted together: each is
simulated every round at the same θ with its own temperature, its residuals join r and its Jacobian rows join J.
A dense liquid's g(r) alone, for example, leaves LJ ε and σ −0.98 correlated (ε acts only through T* = kT/ε); a
second, lower density separates them.

Parameters are fitted in an unconstrained space z (``log`` for positive parameters, ``logit`` between two
bounds); one fitted parameter may be *tied* to several θ entries (e.g. the same torsion k in many copies of a
molecule). The Jacobian J = d⟨o⟩/dz comes from one of three routes, reported per round:

* ``pathwise``: frames and tangents dx_t/dθ from :func:`dmd.sensitivity.run_sensitivities` (seed eq. 3),
  J = ⟨∂o/∂x · dx/dz + ∂o/∂z⟩. Valid over short, non-chaotic horizons only (see :mod:`dmd.chaos`).
* ``fluctuation``: J = ⟨∂o/∂z⟩ − β cov(o, ∂Ũ/∂z) from equilibrium frames (the thermodynamic estimator). Ũ is the
  potential the dynamics actually samples: U itself, except that a plain (unshifted) cutoff is replaced by the
  cut-and-shifted form (:func:`sampled_energy_fn`; the forces never see the jump at r_c).
* ``reweighting``: reuse the last trajectory for several optimizer steps with
  w_t ∝ exp(−β[Ũ(x_t; z) − Ũ(x_t; z₀)]) (DiffTRe): ⟨o⟩_z = Σ w_t o_t / Σ w_t and J by forward-mode autodiff
  of that estimate; re-simulate when the Kish N_eff = (Σw)²/Σw² falls below ``neff_fraction``·N.

Updates go through optax: ``adam``/``sgd`` use the gradient 2Jᵀr; ``lm`` (default) feeds the
Levenberg-Marquardt direction −(JᵀJ + λ diag JᵀJ)⁻¹Jᵀr as the update of an ``optax.sgd`` step; either is
scaled to a global norm of at most ``max_step`` (a trust region in z: 0.2 in log space is ±20%).

Robustness: a checkpoint per round (``--resume`` continues exactly), history as JSON and CSV, plots of the loss
and parameters per round, and a diverging simulation (NaN/inf or exploding coordinates) stops the round, keeps
the last good θ, halves the step and retries.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dmd import distributed
from dmd.base.errors import SimulationDiverged, UserInputError
from dmd.base.io import write_json
from dmd.base.units import KB_KJ_PER_MOL_K
from fitting import objectives
from fitting.forcefield_config import (
    ESTIMATORS,
    FitConfig,
    FitParam,
    FitResult,
    FitState,
    FitTarget,
    ParamMapping,
    from_internal,
    to_internal,
)
from fitting.forcefield_estimators import (
    cross_replica_terms,
    first_output,
    gradient_snr,
    pathwise_jacobian,
    replica_predictions,
    streaming_fluctuation,
    theta_dict,
)
from fitting.forcefield_objective import Objective, per_frame_all
from fitting.forcefield_outputs import averaged_theta, load_checkpoint, plot_history, route_advice, write_outputs
from fitting.forcefield_round import check_replicas, direction, optimizer, sample_round
from fitting.forcefield_sampling import (
    check_npt_settings,
    make_sampler,
    pathwise_sample,
    replica_device_count,
    replica_seed,
    sample,
    sample_npt,
    sampled_energy_fn,
)
from fitting.loss_guard import LossGuard
from fitting.loss_surface import check_factor as check_loss_surface
from fitting.loss_surface import loss_vertex, surface_options
from fitting.observables import frame_values
from fitting.start_scan import resumes_scan, run_start_scan
from fitting.start_scan import summary as scan_summary

__all__ = ["FitParam", "FitTarget", "FitState", "FitConfig", "FitResult", "fit", "sample", "sample_npt",
           "sampled_energy_fn"]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# estimators of the Jacobian d⟨o⟩/dz


def _kish(w):
    w = np.asarray(w, float)
    return float(w.sum() ** 2 / np.sum(w**2))


# ----------------------------------------------------------------------------------------------------------------
# the loop


def _check_targets(system, targets, where: str, npt: bool = False) -> None:
    if not targets:
        raise UserInputError(f"fit: no targets given{where}")
    for t in targets:
        if t.observable.name == "density" and system.box is not None and not npt:
            raise UserInputError(
                "target 'density': this fit samples at constant volume (NVT), where the density cannot change; "
                "set simulation.pressure (bar) to sample at constant pressure (FitConfig.pressure: NPT, Monte Carlo "
                "barostat; or fitting.npt_density.fit_density), or build the box at the target density and fit "
                "'pressure' (fitting.observables.pressure)"
            )
        if npt and not t.observable.follows_box:
            raise UserInputError(
                f"target {t.observable.name!r}{where}: this observable is built on the start box (its lattice or "
                "density is fixed) and cannot follow the box of constant-pressure frames; fit it at constant volume "
                "(no simulation.pressure), or use rdf/density/powder targets under pressure"
            )
        if t.objective not in (None, *objectives.RESIDUAL_OBJECTIVES):
            raise UserInputError(
                f"target {t.observable.name!r}: objective {t.objective!r}: use {objectives.RESIDUAL_OBJECTIVES}"
            )
        k = len(np.atleast_1d(t.observable.axis))
        if np.shape(np.atleast_1d(t.data)) != (k,):
            raise UserInputError(
                f"target {t.observable.name!r}{where}: data has shape {np.shape(t.data)} but the observable gives {k} "
                f"values on {t.observable.axis_name}; resample the target onto the observable's grid"
            )
        if not np.all(np.isfinite(t.data)):
            raise UserInputError(f"target {t.observable.name!r}{where}: data contains NaN/inf")


class _StateEval:
    """Everything one state point needs per round, compiled once for the whole fit: sampler, per-frame observables,
    ∂Ũ/∂z, residuals and their Jacobians, and the DiffTRe reweighted mean. Under pressure (``cfg.pressure``) the
    frames come from NPT runs and carry their boxes (``self.boxes``); every per-frame function takes the box."""

    def __init__(self, name, system, targets, cfg: FitConfig, fit_params, temperature):
        self.name = name
        self.system = system
        self.targets = list(targets)
        self.cfg = dataclasses.replace(cfg, temperature=float(temperature))
        self.mapping = ParamMapping(system, fit_params)
        self.beta = 1.0 / (KB_KJ_PER_MOL_K * self.cfg.temperature)
        box = system.box
        pos0 = jnp.asarray(system.positions)
        self.positions = np.asarray(pos0)
        self.box = None if box is None else np.asarray(box)  # NPT: the next round starts from the last box
        self.objective = Objective(self.targets, system.params, pos0, box)
        per_frame = per_frame_all(self.targets)
        self.explicit = explicit = any(t.observable.explicit_params for t in self.targets)
        mapping, beta = self.mapping, self.beta

        def o_of_z(z, x, b):
            return per_frame(mapping.params_of(z), x, b)

        sampled_energy = sampled_energy_fn(system, warn=cfg.estimator != "pathwise")

        def u_of_z(z, x, b):
            return sampled_energy(mapping.params_of(z), x, b)

        self.o_of_z = lambda z, x: o_of_z(z, x, box)  # the pathwise route (NVT)
        self.o_frames = frame_values(o_of_z, box=box)
        self.du_frames = frame_values(jax.jacfwd(u_of_z), box=box)
        self.u_frames = frame_values(u_of_z, box=box)
        self.do_dz_frames = frame_values(jax.jacfwd(o_of_z), box=box) if explicit else None

        def each_frame(fn, frames, boxes):
            if boxes is None:
                return jax.lax.map(lambda x: fn(x, box), frames, batch_size=64)
            return jax.lax.map(lambda xb: fn(*xb), (frames, boxes), batch_size=64)

        @jax.jit
        def reweighted_mean(z, frames_o, frames_u0, frames, boxes):
            u = each_frame(lambda x, b: u_of_z(z, x, b), frames, boxes)
            logw = -beta * (u - frames_u0)
            w = jax.nn.softmax(logw - jnp.max(logw))
            o = each_frame(lambda x, b: o_of_z(z, x, b), frames, boxes) if explicit else frames_o
            return jnp.sum(w[:, None] * o, axis=0), w

        self.reweighted_mean = reweighted_mean
        objective = self.objective
        self.resid = jax.jit(objective.residuals)
        self.resid_jac = jax.jit(jax.jacfwd(objective.residuals))
        self.pred_flat, self.pred_jac = jax.jit(objective.flat), jax.jit(jax.jacfwd(objective.flat))
        self.resid_p, self.resid_p_jac = (
            jax.jit(objective.residuals_of_flat),
            jax.jit(jax.jacfwd(objective.residuals_of_flat)),
        )
        self.npt = cfg.pressure is not None
        self.sampler = None if self.npt else make_sampler(system, self.cfg)
        self._npt_cache = {}  # compiled NPT chunks, reused across rounds
        self.pathwise_names = [n for sel in mapping.selections for n in sel.names]
        self.dtheta_dz = jax.jit(jax.jacfwd(mapping.theta_of))
        # per-round results
        self.frames = self.boxes = self.o = self.mean = self.J_o = self._dx_dz = self.npt_info = None
        self.route_advice = None  # pathwise: the chaos verdict of the last round's tangents
        self.replica_ends = None  # [R, N, 3]: each replica's last frame (replicated fits)
        self.prediction = None  # this round's predictions, one array per target

    def simulate(self, z, rnd):
        """Sample this state at z (raises SimulationDiverged); keeps frames (and NPT boxes) for the estimators."""
        params = self.mapping.params_of(z)
        cfg = self.cfg
        dx_dz = boxes = None
        dtype = jnp.asarray(self.system.positions).dtype
        if cfg.estimator == "pathwise":
            frames, dx_dz, self.route_advice = pathwise_sample(self.system, params, cfg, rnd, self.positions,
                                                               self.pathwise_names, self.mapping, z,
                                                               self.sampler)  # fmt: skip
        elif self.npt:
            frames, boxes, _, self.npt_info = sample_npt(self.system, params, cfg,
                                                         seed=replica_seed(cfg.seed, rnd), positions=self.positions,
                                                         box=self.box,
                                                         cache=self._npt_cache)  # fmt: skip
        else:
            frames, _ = sample(self.system, params, cfg, seed=replica_seed(cfg.seed, rnd),
                               positions=self.positions, sampler=self.sampler)  # fmt: skip
        self.frames = jnp.asarray(frames, dtype)
        self.boxes = None if boxes is None else jnp.asarray(boxes, dtype)
        self._dx_dz = dx_dz

    def set_replica_frames(self, frames):
        """This round's frames of R replicas ``[R, F, N, 3]`` (:func:`sample_states`), kept flat ``[R·F, N, 3]``
        (the replica of a frame: its block of F)."""
        self.replica_ends = np.asarray(frames[:, -1])
        self.frames = jnp.asarray(frames.reshape(-1, *frames.shape[2:]), jnp.asarray(self.system.positions).dtype)
        self.boxes = self._dx_dz = None

    def end_round(self):
        """The next round starts where this one ended (last frame, and its box under pressure; every replica's own
        last frame in a replicated fit); with ``restart: crystal`` every round starts again from the system's start
        positions (and box), as a target made from fresh runs was (docs/fitting.md, peptide)."""
        if self.cfg.restart == "crystal":
            return
        self.positions = np.asarray(self.frames[-1]) if self.replica_ends is None else self.replica_ends
        if self.boxes is not None:
            self.box = np.asarray(self.boxes[-1])

    def npt_row(self):
        """Per-round NPT record: mean box (nm) and the barostat's acceptance."""
        b = np.asarray(self.boxes, float)
        return {"mean_box_nm": b.mean(axis=0).tolist(), "acceptance": float(self.npt_info["acceptance"]),
                "list_rebuilds": int(self.npt_info["rebuilds"])}  # fmt: skip

    def estimate(self, z):
        """Residuals r, dr/dz and d prediction/dθ from this round's frames by the configured route.

        The fluctuation route streams over frames in chunks of ``cfg.frame_chunk``
        (:func:`fitting.forcefield_estimators.streaming_fluctuation`): memory does not grow with
        frames × observables × parameters. With R replicas it runs per replica and averages the replicas'
        predictions (:func:`fitting.forcefield_estimators.replica_averaged_prediction`: docs/fitting.md, peptide)."""
        frames = self.frames
        n_rep = 1 if self.replica_ends is None or self.cfg.estimator != "fluctuation" else len(self.replica_ends)
        if self.cfg.estimator == "pathwise":
            self.o = np.asarray(self.o_frames(z, frames))
            self.mean = self.o.mean(axis=0)
            self.J_o = pathwise_jacobian(self.o_of_z, z, frames, self._dx_dz, self.explicit)
            moments = [(self.mean, self.J_o)]
        else:
            moments = [streaming_fluctuation(
                self.o_frames, self.du_frames, z, part, self.beta, boxes=self.boxes, do_dz_fn=self.do_dz_frames,
                chunk=self.cfg.frame_chunk, keep=self.cfg.estimator == "reweighting",
            ) for part in frames.reshape(n_rep, -1, *frames.shape[1:])]  # fmt: skip
            self.mean, self.J_o, self.o = moments[0] if n_rep == 1 else (None, None, None)
        dtype = frames.dtype
        preds, jacs = replica_predictions(self.pred_flat, self.pred_jac, moments, dtype)
        pred, dpred = preds.mean(axis=0), jacs.mean(axis=0)
        self.prediction = self.objective.unflat(pred)
        r = np.asarray(self.resid_p(jnp.asarray(pred, dtype)))
        Jr = np.asarray(self.resid_p_jac(jnp.asarray(pred, dtype))) @ dpred
        if n_rep > 1 and self.cfg.replica_gradient == "cross":
            grad = cross_replica_terms(self.resid_p, self.resid_p_jac, preds, jacs, dtype)  # [R, P]
        else:
            grad = (2.0 * Jr.T @ r)[None]
        dtheta_dz = np.diag(np.asarray(self.dtheta_dz(z)))
        # d prediction / dθ (θ units) of this round's estimator: what the routes are compared on; the loss gradient
        return r, Jr, dpred / dtheta_dz[None, :], grad

    def start_reweighting(self, z):
        self._u0 = jnp.asarray(self.u_frames(z, self.frames, self.boxes))
        self._o_j = jnp.asarray(self.o, self.frames.dtype)

    def reweighted(self, z):
        """(⟨o⟩_z, z ↦ ⟨o⟩_z for its Jacobian, Kish N_eff) of the reweighted ensemble at z (DiffTRe), from this
        round's frames."""
        m_rw, w = self.reweighted_mean(z, self._o_j, self._u0, self.frames, self.boxes)
        rw_mean = functools.partial(first_output, self.reweighted_mean, o_j=self._o_j, u0=self._u0,
                                    frames=self.frames, boxes=self.boxes)  # fmt: skip
        neff = _kish(np.asarray(w))
        return m_rw, rw_mean, neff

    def residuals_at(self, m_rw, rw_mean, z):
        jac = jax.jacfwd(rw_mean)(z)
        r = np.asarray(self.resid(m_rw))
        Jr = np.asarray(self.resid_jac(m_rw)) @ np.asarray(jac)
        return r, Jr


def fit(system, fit_params, targets, config: FitConfig, *, states=()) -> FitResult:
    """Fit ``fit_params`` of ``system`` so that ensemble observables match ``targets`` (module docstring).

    Args:
      system: :class:`dmd.System` (start θ = ``system.params``).
      fit_params: list of :class:`FitParam`.
      targets: list of :class:`FitTarget` (observables of ``system``'s frames).
      config: :class:`FitConfig`.
      states: further :class:`FitState` s (other densities, temperatures, systems) simulated every round with the
        same θ; their residuals join the loss.

    Returns:
      :class:`FitResult`; with ``config.out`` also ``history.json``, ``history.csv``, ``checkpoint.npz``,
      ``summary.json``, ``loss.png`` and ``params.png`` in that folder.

    Over 100 lines: the round loop's sampling, estimator, step, rejection and output steps share the fit's state
    (θ, history, checkpoints, per-state caches); the pieces are in fitting.forcefield_* and this loop sequences them.
    """
    cfg = config
    if not (isinstance(cfg.rounds, int) and (cfg.rounds > 0 or cfg.rounds == 0 and cfg.start_scan is not None)):
        raise UserInputError(f"rounds {cfg.rounds!r}: give rounds > 0, or rounds: 0 with a start_scan (θ from its "
                             "losses, e.g. with loss_surface)")  # fmt: skip
    if cfg.estimator not in ESTIMATORS:
        raise UserInputError(f"estimator {cfg.estimator!r}: use one of {', '.join(ESTIMATORS)}")
    if cfg.restart not in ("continue", "crystal"):
        raise UserInputError(f"simulation.restart {cfg.restart!r}: use continue (each round goes on from the last "
                             "frame) or crystal (each round starts again from the system's positions)")  # fmt: skip
    if cfg.replica_gradient not in ("pooled", "cross") or (
        cfg.replica_gradient == "cross"
        and (
            cfg.optimizer == "lm"
            or cfg.estimator != "fluctuation"
            or not (isinstance(cfg.replicas, int) and cfg.replicas >= 2)
        )
    ):
        raise UserInputError(
            f"replica_gradient {cfg.replica_gradient!r}: use pooled, or cross (replicas ≥ 2, the fluctuation "
            "estimator and optimizer sgd or adam: a gradient, not an LM step)"
        )
    LossGuard(cfg.loss_guard)  # checks the factor before any work
    check_loss_surface(cfg.loss_surface, len(fit_params))
    states = list(states)
    multi = bool(states)
    npt = cfg.pressure is not None
    if npt:
        check_npt_settings(system, cfg)
    _check_targets(system, targets, " (state0)" if multi else "", npt)
    mapping = ParamMapping(system, fit_params)
    mapping.check_start(system.params)
    evals = [_StateEval("state0", system, targets, cfg, fit_params, cfg.temperature)]
    for i, st in enumerate(states, start=1):
        if not isinstance(st, FitState):
            raise UserInputError(f"fit: states[{i - 1}] is a {type(st).__name__}; give FitState(system, targets)")
        name = st.name or f"state{i}"
        if npt:
            check_npt_settings(st.system, cfg, f"state {name!r}: ")
        _check_targets(st.system, st.targets, f" ({name})", npt)
        temperature = cfg.temperature if st.temperature is None else st.temperature
        if not temperature > 0:
            raise UserInputError(f"state {name!r}: temperature {temperature!r} K must be positive")
        evals.append(_StateEval(name, st.system, st.targets, cfg, fit_params, temperature))
    if len({e.name for e in evals}) != len(evals):
        raise UserInputError(f"fit: state names must differ, got {[e.name for e in evals]}")
    dtype = jnp.asarray(system.positions).dtype
    replicated = check_replicas(cfg, evals)

    opt = optimizer(cfg)
    z = jnp.asarray(mapping.z_of_params(system.params), dtype)
    opt_state = opt.init(z)
    z_good, guard = z, LossGuard(cfg.loss_guard)
    start_round, step_scale, history = 0, 1.0, []
    out = None if cfg.out is None else Path(cfg.out)
    ckpt = None if out is None else out / "checkpoint.npz"
    scan = cfg.start_scan  # fitting.start_scan: the loss on a grid about the start θ before round 0
    if scan is not None:
        scan.check(len(mapping.fit_params))
    resumed = cfg.resume and not (scan is not None and resumes_scan(out, cfg.resume))
    if resumed:
        if ckpt is None or not ckpt.exists():
            raise UserInputError(f"--resume: no checkpoint at {ckpt}; run without --resume first")
        z, z_good, opt_state, start_round, step_scale, positions, history, boxes = load_checkpoint(ckpt, opt_state)
        with np.load(ckpt) as d:
            guard = LossGuard.from_arrays(cfg.loss_guard, d)
        if len(positions) != len(evals):
            raise UserInputError(
                f"--resume: {ckpt} holds {len(positions)} state(s) but the config has {len(evals)}; resume with the "
                "same states or start a new --out folder"
            )
        for e, pos, box in zip(evals, positions, boxes, strict=True):
            if np.shape(pos) != np.shape(e.positions):
                raise UserInputError(
                    f"--resume: {ckpt} holds start positions of shape {np.shape(pos)} for state {e.name} but this fit "
                    f"needs {np.shape(e.positions)} (replicas: {cfg.replicas}); resume with the same replicas or start "
                    "a new --out folder"
                )
            e.positions = pos
            e.box = e.box if box is None else box
        z, z_good = jnp.asarray(z, dtype), jnp.asarray(z_good, dtype)

    writer = distributed.is_writer()  # process 0 of a distributed fit; every process holds the same state

    def save(next_round):
        if not writer:
            return
        write_outputs(out, ckpt, z, z_good, opt_state, next_round, step_scale, [e.positions for e in evals],
                       history, mapping, boxes=[e.box for e in evals] if npt else None,
                       extra=guard.to_arrays())  # fmt: skip

    if scan is not None and not resumed:

        def measure(zk, rnd):  # one round of the loop's own machinery at zk: its loss
            zk = jnp.asarray(zk, dtype)
            sample_round(evals, zk, rnd, cfg, replicated)
            return sum(float(p[0] @ p[0]) for p in [e.estimate(zk) for e in evals])

        log = print if cfg.progress and writer else (lambda _: None)
        z, history = run_start_scan(scan, z, evals, measure, lambda zk: theta_dict(mapping, jnp.asarray(zk, dtype)),
                                    out, cfg.resume, writer, log)  # fmt: skip
        z = z_good = jnp.asarray(z, dtype)
        opt_state = opt.init(z)
        save(0)
    from dmd.base.progress import track

    bar = track(range(start_round, cfg.rounds), desc="fit", unit="round", enabled=cfg.progress and writer)
    for rnd in bar:
        t0 = time.perf_counter()
        row = {"round": rnd, "estimator": cfg.estimator}
        try:
            sample_round(evals, z, rnd, cfg, replicated)
        except SimulationDiverged as exc:
            where = f" ({e.name})" if multi and not replicated else ""
            row.update(status="diverged", message=f"{exc}{where}", theta=theta_dict(mapping, z),
                       seconds=time.perf_counter() - t0)  # fmt: skip
            history.append(row)
            z = z_good + 0.5 * (z - z_good)  # keep the last good θ, halve the step
            step_scale *= 0.5
            opt_state = opt.init(z)
            bar.write(f"round {rnd}: {exc}{where}; back towards the last good θ with half the step")
            save(rnd + 1)
            continue
        parts = [e.estimate(z) for e in evals]
        r = np.concatenate([p[0] for p in parts])
        Jr = np.concatenate([p[1] for p in parts])
        jac_theta = np.concatenate([p[2] for p in parts])
        state_loss = [float(p[0] @ p[0]) for p in parts]
        n_frames = [int(e.frames.shape[0]) for e in evals]
        loss0 = float(r @ r)
        if guard.rejects(loss0):  # a bad step (fitting.loss_guard): back to the best round's θ and ends, half the step
            history.append(dict(row, status="rejected", loss=loss0, best_loss=guard.loss,
                                theta=theta_dict(mapping, z), seconds=time.perf_counter() - t0))  # fmt: skip
            z = z_good = jnp.asarray(guard.restore(evals), dtype)
            step_scale *= 0.5
            opt_state = opt.init(z)
            bar.write(f"round {rnd}: loss {loss0:.3g} > {cfg.loss_guard:g} × best {guard.loss:.3g}; back to its θ")
            save(rnd + 1)
            continue
        n_updates, neff = 1, [float(n) for n in n_frames]
        if cfg.replica_gradient == "pooled":
            g = direction(cfg, r, Jr)
            grad_norm = float(np.linalg.norm(2 * Jr.T @ r))
        else:  # every state's R cross terms, summed over states per replica
            terms = np.sum([p[3] for p in parts], axis=0)
            g = terms.mean(axis=0)
            grad_norm, snr = float(np.linalg.norm(g)), gradient_snr(terms)
            row["gradient_snr"] = snr  # the round's gradient over its noise (a diagnostic)
        updates, opt_state = opt.update(jnp.asarray(g, dtype), opt_state, z)
        decay = 1.0 if cfg.decay_after is None or rnd < cfg.decay_after else 1.0 / (1 + rnd - cfg.decay_after)
        z_new = z + step_scale * decay * updates
        if cfg.estimator == "reweighting":
            # DiffTRe: keep stepping on the same frames while every state's reweighted ensemble stays representative
            for e in evals:
                e.start_reweighting(z)
            for _ in range(cfg.max_reuse - 1):
                rw = [e.reweighted(z_new) for e in evals]
                neff_new = [x[2] for x in rw]
                if any(ne < cfg.neff_fraction * n for ne, n in zip(neff_new, n_frames, strict=True)):
                    break
                neff = neff_new
                z = z_new
                parts_rw = [e.residuals_at(m, f, z) for e, (m, f, _) in zip(evals, rw, strict=True)]
                r = np.concatenate([p[0] for p in parts_rw])
                Jr = np.concatenate([p[1] for p in parts_rw])
                g = direction(cfg, r, Jr)
                updates, opt_state = opt.update(jnp.asarray(g, dtype), opt_state, z)
                z_new = z + step_scale * decay * updates
                n_updates += 1
        z_good = z
        z = z_new
        for e in evals:
            e.end_round()
        guard.accept(loss0, z_good, evals)
        step_scale = min(1.0, step_scale * 1.5)
        row.update(
            status="ok",
            loss=loss0,
            grad_norm=grad_norm,
            prediction=[p.tolist() for e in evals for p in e.prediction],
            jacobian_theta=jac_theta.tolist(),
            n_eff=min(neff),
            n_frames=int(sum(n_frames)),
            updates=n_updates,
            theta=theta_dict(mapping, z_good),
            theta_next=theta_dict(mapping, z),
            seconds=time.perf_counter() - t0,
        )
        if npt:
            row["npt"] = [e.npt_row() for e in evals]
        if multi:
            row["states"] = [
                {"name": e.name, "loss": lo, "n_eff": ne, "n_frames": n}
                for e, lo, ne, n in zip(evals, state_loss, neff, n_frames, strict=True)
            ]
        history.append(row)
        bar.set_postfix(loss=f"{loss0:.3g}", neff=f"{min(neff):.0f}")
        save(rnd + 1)
    bar.close()
    last = theta_dict(mapping, z)
    good = [h for h in history if h.get("status") == "ok"]
    averaged, stderr, n_averaged = averaged_theta(history, cfg.average_last)
    values = dict(last) if averaged is None else averaged
    vertex = None
    if cfg.loss_surface is not None:  # θ from the rounds' losses (fitting.loss_surface), else the iterates
        (fp,), (kind,) = mapping.fit_params, mapping.kinds
        vertex = loss_vertex(history, lambda t: to_internal(kind, fp.lower, fp.upper, t),
                             lambda v: float(from_internal(kind, fp.lower, fp.upper, v)),
                             **surface_options(cfg.loss_surface))  # fmt: skip
        if vertex is not None:
            values, stderr = {fp.label: vertex["value"]}, {fp.label: vertex["stderr"]}
    final_loss = good[-1]["loss"] if good else float("nan")
    z_val = jnp.asarray(mapping.z_of_params(mapping.params_of(jnp.asarray(z))), dtype)
    for fp, kind, i in zip(mapping.fit_params, mapping.kinds, range(len(mapping.kinds)), strict=True):
        z_val = z_val.at[i].set(to_internal(kind, fp.lower, fp.upper, values[fp.label]))
    result = FitResult(values, last, history, mapping.params_of(z_val), final_loss, stderr)
    if out is not None and writer:
        summary = {
            "fitted": values,
            "last_iterate": last,
            "fitted_stderr": stderr,  # standard error of the averaged θ (fitting.forcefield_outputs.averaged_theta)
            "averaged_over_rounds": n_averaged,
            "iterate_average": averaged,
            "loss_surface": vertex,  # the reported θ when set and found (fitting.loss_surface)
            "rounds": sum(h.get("status") != "scan" for h in history),
            "start_scan": scan_summary(history),
            "diverged_rounds": sum(h.get("status") == "diverged" for h in history),
            "estimator": cfg.estimator,
            "gradient_route": route_advice(cfg.estimator, evals),
            "optimizer": cfg.optimizer,
            "ensemble": f"NPT ({cfg.pressure} bar, {cfg.barostat} barostat)" if npt else "NVT",
            "states": [
                {"name": e.name, "temperature_K": e.cfg.temperature, "n_atoms": e.system.n_atoms} for e in evals
            ],
            "replicas": cfg.replicas,
            "processes": distributed.process_count() if distributed.is_distributed() else 1,
            "replica_devices": replica_device_count(cfg.replicas),  # one mesh over every process when P divides R
            "last_loss": final_loss,
            "n_eff_last": good[-1]["n_eff"] if good else None,
        }
        write_json(out / "summary.json", summary)
        plot_history(out, history, mapping, fitted=values, last=last)
    return result
