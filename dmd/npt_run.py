"""``dmd simulate --pressure``: a constant-pressure run with files (trajectory with the box per frame, energy log,
summary, checkpoints with the box and the barostat's adaptive step, ``--resume``).

The dynamics is :func:`dmd.npt.run_npt` (LangevinMiddle/BAOAB steps, a Monte Carlo volume move every
``barostat_every`` steps); this module only adds the files of :func:`dmd.simulate.simulate`'s runs. A resumed run
continues from the checkpoint's positions, velocities, box, PRNG key and barostat state; the neighbour list is
allocated again at the checkpoint's box (the trajectory is statistically, not bitwise, the uninterrupted one).

Units: nm, ps, K, bar, kJ/mol.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dmd.barostat import BarostatState, density_g_cm3
from dmd.base.errors import RunInterrupted, UserInputError
from dmd.base.io import atomic_path, write_json
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.integrators import n_degrees_of_freedom
from dmd.npt import NPTState, run_npt
from dmd.runloop import begin_writes, stop_before_start, uninterrupted
from dmd.simulate import RunConfig, RunResult, default_paths, read_checkpoint, summary_mean, write_checkpoint
from dmd.space import box_volume, check_reduced_box

__all__ = ["BAROSTATS", "check_pressure_settings", "simulate_npt"]

BAROSTATS = ("isotropic", "anisotropic", "flexible")
_STATE_FIELDS = ("positions", "velocities", "forces", "potential_energy", "box", "key", "step")
_BARO_FIELDS = ("volume_scale", "n_attempted", "n_accepted", "total_attempted", "total_accepted")


def check_pressure_settings(system, pressure_bar, barostat: str, every: int, config: RunConfig, where="") -> None:
    """Refuse settings a constant-pressure run cannot use, each with the fix."""
    if not (np.isfinite(pressure_bar) and pressure_bar > 0):
        raise UserInputError(f"{where}--pressure {pressure_bar}: pass a positive pressure in bar (e.g. 1.0)")
    if system.box is None:
        raise UserInputError(
            f"{where}--pressure needs a periodic box, and this structure has none (no CRYST1 / cell): add a box "
            "(e.g. dmd crystal, or OpenMM Modeller.addSolvent) or run without --pressure"
        )
    check_reduced_box(system.box, f"{where}--pressure box")
    if barostat not in BAROSTATS:
        raise UserInputError(f"{where}--barostat {barostat!r}: use one of {', '.join(BAROSTATS)}")
    if int(every) < 1:
        raise UserInputError(f"{where}--barostat-every {every}: pass a positive number of steps (e.g. 25)")
    if config.integrator == "verlet":
        raise UserInputError(f"{where}--pressure needs a thermostat: use --integrator baoab (or langevin), not verlet")
    if config.report_every % int(every) or config.steps % int(every):
        raise UserInputError(
            f"{where}--report-every {config.report_every} and --steps {config.steps} must be multiples of "
            f"--barostat-every {every}; round them"
        )


def _save(path, state: NPTState, info: dict, inputs=()) -> None:
    arrays = {k: np.asarray(getattr(state, k)) for k in _STATE_FIELDS}
    if jnp.issubdtype(state.key.dtype, jax.dtypes.prng_key):
        arrays["key"] = np.asarray(jax.random.key_data(state.key))
    arrays.update({f"barostat_{k}": np.asarray(getattr(state.barostat, k)) for k in _BARO_FIELDS})
    write_checkpoint(path, arrays, info, inputs)


def _load(path, system) -> tuple[NPTState, dict]:
    d, info = read_checkpoint(path, system)
    if "pressure_bar" not in info:
        raise UserInputError(f"{path}: not a constant-pressure checkpoint; resume without --pressure")
    bs = BarostatState(*(jnp.asarray(d[f"barostat_{k}"]) for k in _BARO_FIELDS))
    st = NPTState(*(jnp.asarray(d[k]) for k in _STATE_FIELDS), None, bs, jnp.zeros((), bool))
    return st, info


def simulate_npt(system, config: RunConfig, *, pressure_bar, barostat="isotropic", every=25, params=None):
    """Run ``config.steps`` steps at constant pressure; returns a :class:`dmd.simulate.RunResult` whose summary also
    has ``pressure_bar``, ``barostat``, ``mean_density_g_cm3``, ``mean_box_nm`` and ``barostat_acceptance``; the log
    gains ``volume_nm3`` and ``density_g_cm3`` columns in a side file ``<stem>.npt.csv``.

    Over 100 lines: the per-chunk recorder and the checkpoint writer close over the run's writers and rows; this
    is the constant-pressure twin of :func:`dmd.simulate.simulate` until one run-loop home serves both."""
    from dmd.trajectory import EnergyLog, TrajectoryWriter, check_out_path, mdtraj_topology

    cfg = config
    check_pressure_settings(system, pressure_bar, barostat, every, cfg)
    params = system.params if params is None else params
    paths, traj, elog = {}, None, None
    if cfg.out is not None:
        check_out_path(cfg.out)
        paths = default_paths(cfg.out)
        paths["trajectory"] = Path(cfg.out)
        paths["volume_log"] = Path(f"{Path(cfg.out).with_suffix('')}.npt.csv")
        traj = TrajectoryWriter(cfg.out, mdtraj_topology(system), system.box, inputs=cfg.inputs)
        elog = EnergyLog(paths["log"], inputs=cfg.inputs)
    elif cfg.resume:
        raise UserInputError("--resume needs --out (the checkpoint lives beside the trajectory)")
    info_base = {"pressure_bar": float(pressure_bar), "barostat": barostat, "every": int(every), "dt": cfg.dt}
    state, rows, vrows = None, [], []
    if cfg.resume:
        state, info = _load(paths["checkpoint"], system)
        with uninterrupted(cfg.stop):  # truncated in place: a signal's early exit waits for it
            traj.load_existing(info["n_frames"])
            elog.load_existing(info["n_frames"])
        vrows = info["volume_rows"]
    minimized = None
    if state is None and cfg.minimize is not None:  # as simulate(): the start minimised first, not on resume
        from dmd.minimize import minimize

        minimized = minimize(system, params, tolerance=cfg.minimize, stop=cfg.stop)
        system = dataclasses.replace(system, positions=np.asarray(minimized.positions))
    start = 0 if state is None else int(state.step)
    stop_before_start(cfg.stop, start, paths["checkpoint"] if cfg.resume else None)
    mass = float(np.sum(np.asarray(system.masses)))
    n_dof = n_degrees_of_freedom(system)
    per_frame = cfg.report_every // int(every)
    t0 = t_ckpt = time.perf_counter()
    last = {"state": state}

    def on_chunk(st, rec):
        nonlocal t_ckpt
        begin_writes(cfg.stop)  # the CLI's early exit on a signal ends here: frames reach the files from now
        last["state"] = st
        steps = int(st.step) - (len(rec["box"]) - 1 - np.arange(len(rec["box"]))) * int(every)
        keep = (steps - start) % cfg.report_every == 0
        for k in np.nonzero(keep)[0]:
            pe, ke = float(rec["potential"][k]), float(rec["kinetic"][k])
            temp = 2 * ke / (n_dof * KB_KJ_PER_MOL_K) if n_dof else 0.0
            rows.append((int(steps[k]), steps[k] * cfg.dt, pe, ke, pe + ke, temp))
            bk = np.asarray(rec["box"][k], float)
            v = float(box_volume(bk))
            lengths = np.linalg.norm(bk, axis=1) if bk.ndim == 2 else bk  # edge lengths a, b, c
            vrows.append([int(steps[k]), v, float(density_g_cm3(mass, v)), *map(float, lengths)])
        if traj is not None and keep.any():
            new_rows = rows[len(rows) - int(keep.sum()) :]
            traj.append(rec["positions"][keep], [r[1] for r in new_rows], [r[0] for r in new_rows], rec["box"][keep])
            elog.append(new_rows)
        signum = cfg.stop() if cfg.stop is not None else 0
        due = cfg.checkpoint_wall_s is not None and time.perf_counter() - t_ckpt >= cfg.checkpoint_wall_s
        if traj is not None and (due or signum):
            flush(st)
        if signum and int(st.step) < cfg.steps:
            raise RunInterrupted(int(signum), int(st.step), str(paths.get("checkpoint")))
        return False

    def flush(st):
        nonlocal t_ckpt
        begin_writes(cfg.stop)
        t_ckpt = time.perf_counter()
        traj.flush()
        elog.flush()
        _save(paths["checkpoint"], st, dict(info_base, n_frames=traj.n_frames, volume_rows=vrows), cfg.inputs)
        with atomic_path(paths["volume_log"], cfg.inputs) as tmp:
            hdr = "step,volume_nm3,density_g_cm3,box_x_nm,box_y_nm,box_z_nm"
            np.savetxt(tmp, np.asarray(vrows).reshape(-1, 6), delimiter=",", header=hdr, comments="", fmt="%.8g")

    n_cycles = (cfg.steps - start) // int(every)
    out = run_npt(
        system,
        n_cycles=n_cycles,
        dt=cfg.dt,
        temperature=cfg.temperature,
        friction=cfg.friction,
        pressure_bar=float(pressure_bar),
        every=int(every),
        chunk=max(per_frame, (max(cfg.chunk_steps, cfg.report_every) // cfg.report_every) * per_frame),
        seed=cfg.seed,
        params=params,
        state=state,
        anisotropic=barostat == "anisotropic",
        flexible=barostat == "flexible",
        on_chunk=on_chunk,
        record_positions=True,
    )
    state = out["state"]
    if traj is not None:
        flush(state)
    wall = time.perf_counter() - t0
    x_dtype = np.asarray(state.positions).dtype  # the precision the logged values carry
    vr = np.asarray(vrows, float).reshape(-1, 6)
    summary = {
        "system": system.name,
        "n_atoms": system.n_atoms,
        "integrator": "baoab",
        "dt_ps": cfg.dt,
        "temperature_K": cfg.temperature,
        "friction_per_ps": cfg.friction,
        "pressure_bar": float(pressure_bar),
        "barostat": barostat,
        "barostat_every": int(every),
        "barostat_acceptance": out["acceptance"],
        "start_step": start,
        "final_step": int(state.step),
        "resumed": bool(cfg.resume),
        "wall_s": wall,
        "steps_per_s": (int(state.step) - start) / wall if wall > 0 else None,
        "ns_per_day": (int(state.step) - start) * cfg.dt * 1e-3 * 86400 / wall if wall > 0 else None,
        "mean_density_g_cm3": float(vr[:, 2].mean()) if len(vr) else None,
        "mean_box_nm": vr[:, 3:].mean(axis=0).tolist() if len(vr) else None,
        "mean_potential_kj_mol": summary_mean(np.asarray([r[2] for r in rows], x_dtype)),
        "mean_temperature_K": summary_mean(np.asarray([r[5] for r in rows], x_dtype)),
        "outputs": {k: str(v) for k, v in paths.items()},
        "minimization": None if minimized is None else minimized.summary(),
    }
    if cfg.out is not None:
        begin_writes(cfg.stop)
        write_json(paths["summary"], summary, inputs=cfg.inputs)
    log = elog.as_array() if elog is not None else np.asarray([r[1:] for r in rows], float).reshape(-1, 5)
    return RunResult(state=state, log=log, frames=None, summary=summary)
