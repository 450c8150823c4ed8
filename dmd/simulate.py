"""The run loop: jitted chunks of ``lax.scan``, neighbour-list care, divergence checks, checkpoints.

A run is a sequence of *chunks*; a chunk is ``reports_per_chunk`` reports of ``report_every`` steps,
one jitted ``lax.scan`` (no host round trip per step, no recompilation per chunk). After each chunk
the host:

1. checks the neighbour list's overflow flag; on overflow it reallocates with a **larger** capacity
   at the chunk's start positions and **redoes the chunk** (an overflowed list silently drops pairs,
   so the chunk's forces were wrong);
2. checks divergence: inside the scan every step tests finite positions/forces (energy: computed once per report)
   and a per-step displacement below ``max_step_nm``; the first bad step is recorded and the state frozen at the
   last good one. The host then writes the good frames, keeps the last good checkpoint, writes the
   summary and raises :class:`dmd.base.errors.SimulationDiverged` naming the step;
3. appends frames / log rows, and at checkpoint steps writes the checkpoint, trajectory and log
   atomically.

Checkpoints hold positions, velocities, forces, energy, the PRNG key, the step and the neighbour list
(arrays and capacities), so a resumed run continues bit for bit as the uninterrupted one would
(same machine, same settings). The neighbour list is rebuilt inside the step only when needed (see
:mod:`dmd.neighbors`); rebuilds are counted inside the scan for any list type.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import RunInterrupted, SimulationDiverged, UserInputError
from dmd.base.io import savez, write_json
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.integrators import kinetic_energy, make_integrator
from dmd.runloop import (
    allocate_like,
    begin_writes,
    compiled_for,
    fitted_neighbors,
    grown_state,
    is_cell_list,
    overflowed,
    positions_for_allocation,
    redo_on_overflow,
    stop_before_start,
    uninterrupted,
)
from dmd.skin import skin_of

__all__ = [
    "RunConfig",
    "RunResult",
    "simulate",
    "default_paths",
    "load_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
    "summary_mean",
]

CHECKPOINT_VERSION = 1


def summary_mean(values) -> float | None:
    """The mean of logged values for a run summary, to the precision the values carry: a float32 log's mean to 7
    significant digits (−10.22339, not −10.223390579223633), a float64 log's in full; None when empty."""
    a = np.asarray(values)
    if a.size == 0:
        return None
    m = float(np.mean(a, dtype=np.float64))
    return float(f"{m:.7g}") if a.dtype == np.float32 else m


@dataclasses.dataclass
class RunConfig:
    """Settings of one run (CLI keys of ``dmd simulate``).

    Attributes:
      steps: total steps of the run (a resumed run continues up to this step).
      dt: ps. temperature: K. friction: 1/ps.
      integrator: "langevin" (seed form), "baoab" (LangevinMiddle) or "verlet" (NVE).
      seed: PRNG seed (initial velocities and noise).
      report_every: steps between frames / log rows.
      checkpoint_every: steps between checkpoints (rounded up to whole chunks); None: only at the end.
      out: trajectory path (.dcd, .xtc, .h5); None: no files at all (in-memory run).
      log, summary, checkpoint: paths; default beside ``out`` (``<stem>.log.csv``,
        ``<stem>.summary.json``, ``<stem>.chk.npz``).
      resume: continue from ``checkpoint``.
      max_step_nm: a per-step displacement above this (nm) counts as exploding coordinates.
      chunk_steps: approximate steps per jitted chunk (rounded to whole reports).
      progress: show a tqdm bar.
      inputs: the run's input files (outputs never overwrite them).
      checkpoint_wall_s: also checkpoint when this much wall time (s) passed since the last one; None: never.
      skin: neighbour-list skin, nm; None: the system's; "auto": after the first whole chunk, the skin of
        :func:`dmd.skin.chosen_skin` from that chunk's rebuild count (one more compilation when it differs from the
        system's by over 10%; printed, kept in the summary and the checkpoint, so a resumed run uses it too).
      stop: callable polled after each chunk; a true value (e.g. the signal number) flushes the frames, writes
        a checkpoint and raises :class:`dmd.base.errors.RunInterrupted` (the CLI maps SIGINT/SIGTERM onto it).
      minimize: minimise the start first (:func:`dmd.minimize.minimize`) to this RMS force, kJ/mol/nm (OpenMM's
        default 10); None: start as given. Not on resume (the checkpoint holds the state).
      fit_neighbors: after the first whole chunk of a fresh run, right-size a cell list allocated on the start
        (:func:`dmd.runloop.fitted_neighbors`: a lattice's cell capacity in the fluid's, one more compilation where
        it shrinks by 10% or more); False: keep the start's capacities.
    """

    steps: int
    dt: float = 0.002
    temperature: float = 300.0
    friction: float = 1.0
    integrator: str = "langevin"
    seed: int = 0
    report_every: int = 100
    checkpoint_every: int | None = None
    out: str | Path | None = None
    log: str | Path | None = None
    summary: str | Path | None = None
    checkpoint: str | Path | None = None
    resume: bool = False
    max_step_nm: float = 0.1
    chunk_steps: int = 1000
    progress: bool = True
    inputs: tuple = ()
    checkpoint_wall_s: float | None = None
    skin: float | str | None = None
    stop: object = None
    minimize: float | None = None
    fit_neighbors: bool = True


@dataclasses.dataclass
class RunResult:
    """What :func:`simulate` returns.

    Attributes:
      state: final :class:`dmd.integrators.IntegratorState`.
      log: ``[n_reports, 5]`` (time_ps, potential, kinetic, total kJ/mol, temperature K) of this run
        (including reloaded rows on resume).
      frames: ``[n_reports, n_atoms, 3]`` nm float32 when no trajectory file was requested, else None.
      summary: the JSON run summary as a dict.
    """

    state: object
    log: np.ndarray
    frames: np.ndarray | None
    summary: dict


def default_paths(out) -> dict:
    """log / summary / checkpoint paths beside trajectory ``out``."""
    p = Path(out)
    stem = p.with_suffix("")
    return {
        "log": Path(f"{stem}.log.csv"),
        "summary": Path(f"{stem}.summary.json"),
        "checkpoint": Path(f"{stem}.chk.npz"),
    }


# -- neighbour-list checkpoint helpers (overflow care: dmd.runloop) ---------------------------------
def _neighbor_meta(nbr) -> dict:
    if nbr is None:
        return {}
    meta = {"max_occupancy": int(nbr.max_occupancy)}
    if is_cell_list(nbr):
        meta["cell_capacity"] = int(nbr.cell_capacity)
    else:
        meta["cell_list_capacity"] = -1 if nbr.cell_list_capacity is None else int(nbr.cell_list_capacity)
    return meta


def _neighbor_template(system, x_ref, meta: dict):
    """A neighbour list with the static fields recorded in a checkpoint (arrays replaced after)."""
    if system.neighbor_fn is None:
        return None
    probe = system.allocate_neighbors(positions_for_allocation(system, x_ref))
    if is_cell_list(probe):
        return probe.fns.allocate(x_ref, max_occupancy=meta["max_occupancy"], cell_capacity=meta["cell_capacity"])
    occ = meta["max_occupancy"]
    if probe.max_occupancy < occ:
        idx = jnp.pad(probe.idx, ((0, 0), (0, occ - probe.max_occupancy)), constant_values=probe.idx.shape[0])
    else:
        idx = probe.idx[:, :occ]
    cl = meta.get("cell_list_capacity", -1)
    return dataclasses.replace(probe, idx=idx, max_occupancy=occ, cell_list_capacity=None if cl < 0 else cl)


# -- checkpoints ------------------------------------------------------------------------------
def _save_checkpoint(path, state, info: dict, inputs=()):
    leaves = jax.tree_util.tree_leaves(state.neighbor) if state.neighbor is not None else []
    arrays = {
        "positions": np.asarray(state.positions),
        "velocities": np.asarray(state.velocities),
        "forces": np.asarray(state.forces),
        "potential_energy": np.asarray(state.potential_energy),
        "key": np.asarray(
            jax.random.key_data(state.key) if jnp.issubdtype(state.key.dtype, jax.dtypes.prng_key) else state.key
        ),
        "step": np.asarray(state.step),
    }
    for k, leaf in enumerate(leaves):
        arrays[f"neighbor_{k}"] = np.asarray(leaf)
    write_checkpoint(path, arrays, info, inputs)


def write_checkpoint(path, arrays: dict, info: dict, inputs=()) -> None:
    """Write a checkpoint atomically: the state's ``arrays`` (name → array) and the JSON ``info`` in one ``.npz``
    (:func:`dmd.base.io.savez`); :func:`read_checkpoint` reads it back. Used by :func:`simulate` and
    :mod:`dmd.npt_run`."""
    import json

    savez(path, inputs, **arrays, info=np.asarray(json.dumps(info)))


def read_checkpoint(path, system) -> tuple[dict, dict]:
    """``(arrays, info)`` of a checkpoint written by :func:`write_checkpoint`, after checking it exists and holds
    as many atoms as ``system`` (UserInputError with the fix otherwise)."""
    import json

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no checkpoint to resume from; run without --resume first")
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    if data["positions"].shape != tuple(np.shape(system.positions)):
        raise UserInputError(
            f"{path}: checkpoint has {data['positions'].shape[0]} atoms but the system has {system.n_atoms}; "
            "resume with the same --pdb/--forcefield as the checkpointed run"
        )
    return data, json.loads(str(data["info"]))


def load_checkpoint(path, system):
    """(IntegratorState, info dict) from a checkpoint written by :func:`simulate`."""
    from dmd.integrators import IntegratorState

    data, info = read_checkpoint(path, system)
    if info.get("version") != CHECKPOINT_VERSION:
        raise UserInputError(f"{path}: checkpoint version {info.get('version')} is not {CHECKPOINT_VERSION}")
    nbr = None
    if system.neighbor_fn is not None:
        n_leaves = len([k for k in data if k.startswith("neighbor_")])
        ref = jnp.asarray(data["positions"])
        template = _neighbor_template(system, ref, info["neighbor"])
        treedef = jax.tree_util.tree_structure(template)
        leaves = [jnp.asarray(data[f"neighbor_{k}"]) for k in range(n_leaves)]
        nbr = jax.tree_util.tree_unflatten(treedef, leaves)
    fields = ("positions", "velocities", "forces", "potential_energy", "key", "step")  # IntegratorState's order
    state = IntegratorState(*(jnp.asarray(data[k]) for k in fields), neighbor=nbr)
    return state, info


# -- the jitted chunk -------------------------------------------------------------------------
# compiled chunk functions of recent (system, integrator settings): a second simulate() call on the same system
# (e.g. a script looping over temperatures' restarts) reuses the compilation instead of tracing again
_CHUNK_CACHE: collections.OrderedDict = collections.OrderedDict()


def _chunk_fn(system, integ, max_step_nm: float):
    """The jitted chunk of :func:`_make_chunk_fn`, cached per (system object, integrator, δt, T, γ, max step)."""
    settings = (integ.name, integ.dt, integ.temperature, integ.friction, max_step_nm)
    return compiled_for(_CHUNK_CACHE, system, settings, lambda: _make_chunk_fn(system, integ, max_step_nm))


def _make_chunk_fn(system, integ, max_step_nm: float):
    """``chunk(state, ready, params, n_reports, report_every) -> (state, frames, bad_step, rebuilds)``, jitted.

    The loop body is :attr:`dmd.integrators.Integrator.advance`, so the program holds the forces once: a fresh run
    passes ``integ.start``'s state (no forces yet) with ``ready`` false and the chunk's first pass computes the
    forces without moving, instead of a separately compiled ``init`` (docs/engine.md, "Start-up"). Such a pass
    counts as no step, no rebuild and no divergence check. Long chunks of reports 4 or more steps apart take the
    energy alone once per report (:func:`dmd.runloop.lazy_energy`, ``with_energy``), the steps only its gradient."""
    from dmd.runloop import lazy_energy, with_energy

    masses = jnp.asarray(system.masses)

    def chunk(state, ready, params, n_reports: int, report_every: int):
        lazy = lazy_energy(n_reports, report_every)  # the energy once per report, not per step (dmd.runloop)

        def one_step(carry):
            st, bad_step, rebuilds, ready, done = carry
            new = integ.advance(st, params, ready, energy=not lazy)
            disp = jnp.max(jnp.abs(new.positions - st.positions))
            ok = jnp.all(jnp.isfinite(new.positions)) & jnp.all(jnp.isfinite(new.forces)) & (disp < max_step_nm)
            ok = ok & (lazy | jnp.isfinite(new.potential_energy))
            bad_step = jnp.where((bad_step < 0) & ~ok & ready, new.step, bad_step)
            if new.neighbor is not None:
                moved = jnp.any(new.neighbor.reference_position != st.neighbor.reference_position)
                rebuilds = rebuilds + (moved & ready).astype(jnp.int32)
            frozen = bad_step >= 0  # keep the last good state once anything went wrong
            st = jax.tree_util.tree_map(lambda a, b: jnp.where(frozen, a, b), st, new)
            return st, bad_step, rebuilds, jnp.ones((), bool), done + ready.astype(jnp.int32)

        def report(carry, _):
            loop = (*carry, jnp.zeros((), jnp.int32))
            carry = jax.lax.while_loop(lambda c: c[4] < report_every, one_step, loop)[:4]
            st = (carry := with_energy(system, params, carry) if lazy else carry)[0]
            ke = kinetic_energy(st.velocities, masses.astype(st.velocities.dtype))
            return carry, (st.positions.astype(jnp.float32), st.potential_energy, ke, st.step)

        init = (state, jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.int32), jnp.asarray(ready, bool))
        (state, bad_step, rebuilds, _), frames = jax.lax.scan(report, init, None, length=n_reports)
        return state, frames, bad_step, rebuilds

    return jax.jit(chunk, static_argnums=(3, 4))


def _skinned(system, cfg: RunConfig, checkpoint: Path | None):
    """``system`` with the run's skin: ``cfg.skin`` nm, or on resuming an "auto" run the checkpoint's."""
    from dmd.skin import with_skin

    skin = cfg.skin
    if skin == "auto" and cfg.resume and checkpoint is not None:
        skin = read_checkpoint(checkpoint, system)[1].get("skin_nm")
    if skin is None or skin == "auto" or skin == skin_of(system):
        return system
    if isinstance(skin, str) or not skin > 0 or skin_of(system) is None:
        raise UserInputError(f"skin {skin!r}: pass a positive number of nm or 'auto' (for dmd's neighbour lists)")
    return with_skin(system, float(skin))


def _switch_skin(system, state, n_rebuilds: int, n_steps: int):
    """``(system, state)`` with the skin :func:`dmd.skin.chosen_skin` picks from a chunk of ``n_steps`` steps that
    rebuilt ``n_rebuilds`` times (the state's list reallocated for it), or None to keep the skin (within 10%)."""
    from dmd.skin import chosen_skin, keep_list, skinned_like

    info = logging.getLogger(__name__).info
    old, new = skin_of(system), chosen_skin(system, n_rebuilds, n_steps)
    if new is None or abs(new - old) <= 0.1 * old:
        info(f"neighbour-list skin {old} nm kept ({n_rebuilds} rebuilds in {n_steps} steps)")
        return None
    system, like = skinned_like(system, new)
    info(
        f"neighbour-list skin {old} -> {skin_of(system):.3f} nm (dmd.skin's rule: {new:.3f} nm from {n_rebuilds} "
        f"rebuilds in {n_steps} steps)"
    )
    nbr = allocate_like(system, positions_for_allocation(system, state.positions), like)
    keep_list(system, nbr)
    return system, state.replace(neighbor=nbr)


def simulate(system, config: RunConfig, params=None) -> RunResult:
    """Run ``config.steps`` steps of ``system``; write trajectory, log, checkpoints and summary.

    Args:
      system: :class:`dmd.System`.
      config: :class:`RunConfig`.
      params: θ (default ``system.params``).

    Returns:
      :class:`RunResult`.

    Raises:
      SimulationDiverged: NaN/inf or exploding coordinates (``.step``, ``.last_good_checkpoint``).
      UserInputError: bad settings or a checkpoint that does not fit.

    Over 100 lines: the chunk loop's record, flush, checkpoint, overflow-redo and interrupt steps share the run's
    counters, writers and paths (closures); the summary at the end is the run's record of them.
    """
    from dmd.base.progress import progress_bar
    from dmd.trajectory import EnergyLog, TrajectoryWriter, check_out_path, mdtraj_topology

    params = system.params if params is None else params
    cfg = config
    if cfg.steps < 0:
        raise UserInputError(f"--steps {cfg.steps}: pass a non-negative number of steps")
    if cfg.report_every < 1:
        raise UserInputError(f"--report-every {cfg.report_every}: pass a positive number of steps")
    if not cfg.dt > 0:
        raise UserInputError(f"--dt {cfg.dt}: pass a positive time step in ps (e.g. 0.002)")
    auto_skin = cfg.skin == "auto"
    system = _skinned(system, cfg, Path(cfg.checkpoint or default_paths(cfg.out)["checkpoint"]) if cfg.out else None)
    integ = make_integrator(cfg.integrator, system, dt=cfg.dt, temperature=cfg.temperature, friction=cfg.friction)

    paths = {}
    traj = elog = None
    if cfg.out is not None:
        check_out_path(cfg.out)
        paths = default_paths(cfg.out)
        for k in ("log", "summary", "checkpoint"):
            if getattr(cfg, k) is not None:
                paths[k] = Path(getattr(cfg, k))
        paths["trajectory"] = Path(cfg.out)
        traj = TrajectoryWriter(cfg.out, mdtraj_topology(system), system.box, inputs=cfg.inputs)
        elog = EnergyLog(paths["log"], inputs=cfg.inputs)
    elif cfg.resume:
        raise UserInputError("--resume needs --out (the checkpoint lives beside the trajectory)")

    info_base = {
        "version": CHECKPOINT_VERSION,
        "integrator": cfg.integrator,
        "dt": cfg.dt,
        "temperature": cfg.temperature,
        "friction": cfg.friction,
        "seed": cfg.seed,
        "report_every": cfg.report_every,
        "n_atoms": system.n_atoms,
    }
    mem_frames: list[np.ndarray] = []
    mem_log: list[tuple] = []
    if cfg.resume:
        state, info = load_checkpoint(paths["checkpoint"], system)
        for k in ("integrator", "dt", "report_every"):
            if info[k] != info_base[k]:
                raise UserInputError(
                    f"{paths['checkpoint']}: checkpoint was written with {k}={info[k]!r} but this run has "
                    f"{info_base[k]!r}; resume with the same settings"
                )
        with uninterrupted(cfg.stop):  # truncated in place: a signal's early exit waits for it
            traj.load_existing(info["n_frames"])
            elog.load_existing(info["n_frames"])
    else:
        info = {}
    # a fresh run's first chunk computes the first forces in its own program (one compilation of the energy)
    ready = cfg.resume or cfg.steps == 0
    minimized = None
    if not cfg.resume:
        if cfg.minimize is not None:
            from dmd.minimize import minimize

            minimized = minimize(system, params, tolerance=cfg.minimize, stop=cfg.stop)
            logging.getLogger(__name__).info(minimized.line())
        start = integ.init if ready else integ.start
        state = start(jax.random.PRNGKey(cfg.seed), params, None if minimized is None else minimized.positions)
        if overflowed(state.neighbor):
            state = grown_state(system, state, 1)

    start_step = int(state.step)
    stop_before_start(cfg.stop, start_step, paths["checkpoint"] if cfg.resume else None)
    if start_step > cfg.steps:
        raise UserInputError(f"--steps {cfg.steps} is below the checkpoint's step {start_step}; pass a larger --steps")
    n_dof = integ.n_dof
    chunk_fn = _chunk_fn(system, integ, cfg.max_step_nm)
    reports_per_chunk = max(1, cfg.chunk_steps // cfg.report_every)
    chunk_len = reports_per_chunk * cfg.report_every
    ckpt_every = None
    if cfg.checkpoint_every:
        ckpt_every = max(chunk_len, int(math.ceil(cfg.checkpoint_every / chunk_len)) * chunk_len)

    total_rebuilds = int(info.get("rebuilds", 0))
    reallocations = int(info.get("reallocations", 0))
    last_ckpt = str(paths["checkpoint"]) if cfg.resume else None
    t0 = t_ckpt = time.perf_counter()
    bar = progress_bar(cfg.steps, initial=start_step, unit="step", enabled=cfg.progress, desc=system.name or "md")

    def n_written():
        return traj.n_frames if traj is not None else len(mem_frames)

    def flush(st, reason: str | None = None):
        nonlocal last_ckpt, t_ckpt
        begin_writes(cfg.stop)
        t_ckpt = time.perf_counter()
        if traj is None:
            return
        traj.flush()
        elog.flush()
        if reason is None:
            meta = dict(
                info_base,
                n_frames=n_written(),
                rebuilds=total_rebuilds,
                reallocations=reallocations,
                skin_nm=skin_of(system),
                neighbor=_neighbor_meta(st.neighbor),
            )
            _save_checkpoint(paths["checkpoint"], st, meta, inputs=cfg.inputs)
            last_ckpt = str(paths["checkpoint"])

    def record(frames, upto_step: int | None, chunk_start: int, rep: int):
        begin_writes(cfg.stop)  # the CLI's early exit on a signal ends here: frames reach the files from now
        xyz, pe, ke, steps = (np.asarray(a) for a in frames)
        # after a bad step the state is frozen, so later reports repeat it: keep reports scheduled
        # before the bad step only
        scheduled = chunk_start + rep * (1 + np.arange(len(steps)))
        keep = np.ones(len(steps), bool) if upto_step is None else scheduled < upto_step
        rows = []
        for k in np.nonzero(keep)[0]:
            t = float(steps[k]) * cfg.dt
            temp = 2 * float(ke[k]) / (n_dof * KB_KJ_PER_MOL_K) if n_dof else 0.0
            rows.append((int(steps[k]), t, float(pe[k]), float(ke[k]), float(pe[k]) + float(ke[k]), temp))
        if traj is not None:
            traj.append(xyz[keep], [r[1] for r in rows], [r[0] for r in rows])
            elog.append(rows)
        else:
            mem_frames.extend(xyz[keep])
            mem_log.extend(rows)

    diverged = None
    step = start_step
    fit_list = cfg.fit_neighbors
    try:
        while step < cfg.steps:
            remaining = cfg.steps - step
            if remaining >= chunk_len:
                n_rep, rep = reports_per_chunk, cfg.report_every
            elif remaining >= cfg.report_every:
                n_rep, rep = remaining // cfg.report_every, cfg.report_every
            else:
                n_rep, rep = 1, remaining
            state, (new_state, frames, bad_step, rebuilds), grown = redo_on_overflow(
                lambda s, n_rep=n_rep, rep=rep, ready=ready, run=chunk_fn: run(s, ready, params, n_rep, rep),
                state,
                lambda result: result[0].neighbor,
                lambda s, _, attempt, sy=system: grown_state(sy, s, attempt),
            )
            reallocations += grown
            ready = True
            bad_step = int(bad_step)
            total_rebuilds += int(rebuilds)
            first_whole = not cfg.resume and bad_step < 0 and n_rep * rep == chunk_len and step + chunk_len < cfg.steps
            if auto_skin and first_whole:
                auto_skin = False  # decided once, on the first whole chunk
                switched = _switch_skin(system, new_state, int(rebuilds), chunk_len)
                if switched is not None:
                    system, new_state = switched
                    integ = make_integrator(
                        cfg.integrator, system, dt=cfg.dt, temperature=cfg.temperature, friction=cfg.friction
                    )
                    chunk_fn = _chunk_fn(system, integ, cfg.max_step_nm)
            if fit_list and first_whole:
                # once, after the first whole chunk (the lattice has melted, the list holds no lattice-sized cells):
                # one more compilation of the chunk, repaid within a few chunks (docs/engine.md, "Neighbour lists")
                fit_list = False
                new_state = new_state.replace(neighbor=fitted_neighbors(new_state.neighbor, new_state.positions))
            if bad_step >= 0:
                record(frames, bad_step, step, rep)
                diverged = bad_step
                state = new_state
                break
            record(frames, None, step, rep)
            state = new_state
            step = int(state.step)
            bar.update(n_rep * rep)
            due = bool(ckpt_every) and (step - start_step) % ckpt_every == 0
            due = due or (cfg.checkpoint_wall_s is not None and time.perf_counter() - t_ckpt >= cfg.checkpoint_wall_s)
            signum = cfg.stop() if cfg.stop is not None else 0
            if (due or signum) and step < cfg.steps:
                flush(state)
            if signum and step < cfg.steps:
                raise RunInterrupted(int(signum), step, last_ckpt)
    finally:
        bar.close()
    wall = time.perf_counter() - t0

    if diverged is None:
        flush(state)
    else:
        flush(state, reason="diverged")  # frames and log up to the bad step; the last checkpoint stays

    log = elog.as_array() if elog is not None else np.asarray([r[1:] for r in mem_log], float).reshape(-1, 5)
    steps_run = int(state.step) - start_step
    summary = {
        "system": system.name,
        "n_atoms": system.n_atoms,
        "n_dof": n_dof,
        "integrator": cfg.integrator,
        "dt_ps": cfg.dt,
        "temperature_K": cfg.temperature,
        "friction_per_ps": cfg.friction,
        "seed": cfg.seed,
        "steps_requested": cfg.steps,
        "start_step": start_step,
        "final_step": int(state.step),
        "resumed": bool(cfg.resume),
        "wall_s": wall,
        "steps_per_s": steps_run / wall if wall > 0 else None,
        "ns_per_day": steps_run * cfg.dt * 1e-3 * 86400 / wall if wall > 0 else None,
        "minimization": None if minimized is None else minimized.summary(),
        "neighbor_rebuilds": total_rebuilds,
        "neighbor_skin_nm": skin_of(system),
        "neighbor_reallocations": reallocations,
        "n_frames": int(len(log)),
        "mean_potential_kj_mol": summary_mean(log[:, 1]),
        "mean_temperature_K": summary_mean(log[:, 4]),
        "dtype": str(jnp.asarray(state.positions).dtype),
        "backend": jax.default_backend(),
        "diverged_at_step": diverged,
        "last_good_checkpoint": last_ckpt if diverged is not None else None,
        "outputs": {k: str(v) for k, v in paths.items()},
        "metadata": {k: v for k, v in system.metadata.items() if k != "types"},
    }
    if cfg.out is not None:
        begin_writes(cfg.stop)
        write_json(paths["summary"], summary, inputs=cfg.inputs)
    if diverged is not None:
        where = f"; last good checkpoint: {last_ckpt}" if last_ckpt else "; no checkpoint had been written yet"
        raise SimulationDiverged(
            f"simulation diverged at step {diverged} (NaN/inf or an atom moving > {cfg.max_step_nm} nm in one step)"
            f"{where}; frames up to step {diverged - 1} were kept. Try a smaller --dt, minimize the structure "
            "first, or check the force field",
            step=diverged,
            last_good_checkpoint=last_ckpt,
        )
    frames_arr = None if traj is not None else (np.stack(mem_frames) if mem_frames else None)
    return RunResult(state=state, log=log, frames=frames_arr, summary=summary)
