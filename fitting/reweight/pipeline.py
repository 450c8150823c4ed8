"""Trajectory + MTZ in, reweighting outputs out: the pipeline behind ``dmd reweight`` and ``dmd quickstart``.

Steps: read the data column (and σ) from the MTZ; check the trajectory box against the MTZ cell, space
group and resolution and map data reflections to indices of the trajectory box
(:func:`fitting.reweight.check_and_map`); compute F(h, t) once into a :class:`fitting.fstore.FrameStore`; run
:func:`fitting.reweight.reweight`; write ``weights.csv``, ``summary.json``, ``reweighted.mtz`` and PNG plots
(:func:`fitting.reweight.write_outputs`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmd.base.errors import UserInputError
from fitting.reweight.crossval import holdout_folds
from fitting.reweight.data_map import check_and_map, topology_spacegroup
from fitting.reweight.outputs import write_outputs
from fitting.reweight.problem import make_problem
from fitting.reweight.procedure import ReweightConfig, reweight

__all__ = ["EXAMPLE_DIR", "available_memory", "quickstart_stage", "run_reweight"]


def _box_cells(traj, top, stride: int) -> np.ndarray:
    """Box of every frame used, ``[n_frames, 6]`` (Å, degrees)."""
    from analysis.structure_io import trajectory_frames

    return np.concatenate([c for _, c, _ in trajectory_frames(traj, top, stride=stride, chunk=500)])


def available_memory() -> float:
    """Bytes of memory available now (Linux MemAvailable; total physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _mesh_if_many():
    """A frames mesh over all devices of all processes, or None where sharding cannot pay.

    One process on CPU with several (forced host) devices is not sharded: the devices share the same cores, so
    sharding cannot speed anything up there and the sharded copy of the store would double its memory (the
    batched cross-validation step costs the same either way: benchmarks/bench_sharded_cv.py, 0.34 s sharded over 4
    vs 0.36 s unsharded, CPU 0.140 vs 0.137 s, T=1000 × M=5e4 on 2 loaded cores).
    """
    import jax

    from fitting.sharding import frame_mesh

    if len(jax.devices()) < 2 or (jax.process_count() == 1 and jax.default_backend() == "cpu"):
        return None
    return frame_mesh()


def run_reweight(
    traj,
    top,
    data,
    column: str,
    out_dir,
    *,
    sigma_column: str | None = None,
    d_min: float | None = None,
    supercell=(1, 1, 1),
    config=None,
    holdout: str = "orbits",
    n_shells: int = 10,
    method: str = "fft",
    stride: int = 1,
    store_path: str | None = None,
    max_memory: float | None = None,
    groups=None,
    seed: int = 0,
    progress: bool = True,
    spacegroup: str | None = None,
) -> dict:
    """The whole ``dmd reweight`` run; returns the summary dict (also written to ``out_dir/summary.json``).

    With ``store_path`` F(h, t) goes to that HDF5 store; a store larger than ``max_memory`` bytes (default:
    half the memory available now) is never loaded: every evaluation streams it from disk (out of core).
    ``spacegroup``: the crystal's space group; the outputs add the prediction averaged over its orbits, gemmi's ASU
    and total/anisotropic CC per shell (:mod:`fitting.reweight.symmetry_report`).
    """
    import jax

    from analysis import stats
    from analysis.mtz_io import read_mtz
    from fitting.fstore import store_from_trajectory

    config = config or ReweightConfig()
    cols = [column] + ([sigma_column] if sigma_column else [])
    mtz = read_mtz(data, cols)
    box_cells = _box_cells(traj, top, stride)
    dob = check_and_map(
        mtz,
        column,
        box_cells.mean(axis=0),
        sigma_column=sigma_column,
        d_min=d_min,
        supercell=supercell,
        top_spacegroup=topology_spacegroup(top),
        data_path=str(data),
    )
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    if store_path is not None and max_memory is None:
        max_memory = 0.5 * available_memory()
    store_bytes = len(box_cells) * 3 * len(dob.hkl_box) * np.dtype(dtype).itemsize
    if store_path is not None and store_bytes > max_memory and config.optimizer != "adam":
        raise UserInputError(
            f"the F store ({store_bytes / 1e9:.2f} GB) exceeds the memory cap ({max_memory / 1e9:.2f} GB) and will be "
            f"streamed from {store_path}, which works with --optimizer adam only (L-BFGS line searches would "
            "re-read it many times per step): pass --optimizer adam, or a larger --max-memory"
        )
    store, _ = store_from_trajectory(
        traj, top, dob.hkl_box, method=method, dtype=dtype, path=store_path, stride=stride, progress=progress
    )
    n_sh = min(n_shells, max(1, len(dob.y) // 50))
    shells = stats.shell_index(dob.inv_d2, stats.shell_edges(dob.inv_d2, n_sh))
    problem = make_problem(
        store,
        dob.y,
        sigma=dob.sigma,
        shells=shells,
        n_shells=n_sh,
        reduce_index=dob.reduce_index,
        mesh=_mesh_if_many(),
        max_memory=max_memory,
    )
    if problem.out_of_core and progress:
        print(
            f"F store {store.nbytes / 1e9:.2f} GB > memory cap {max_memory / 1e9:.2f} GB: streaming it from "
            f"{store_path} at every step (out of core)"
        )
    folds = holdout_folds(dob.hkl_data, config.n_folds, kind=holdout, sg=dob.spacegroup, inv_d2=dob.inv_d2, seed=seed)
    result = reweight(problem, folds, config, groups=groups, progress=progress)
    summary = {
        "inputs": {"traj": str(traj), "top": str(top), "data": str(data), "column": column, "sigma": sigma_column},
        "checks": dob.checks,
        "holdout": holdout,
        "method": method,
        **result.summary,
    }
    write_outputs(out_dir, result, problem, dob, folds, config, summary, inputs=[traj, top, data],
                  spacegroup=spacegroup, supercell=supercell)  # fmt: skip
    return summary


def _example_dir() -> Path:
    import dmd.data

    return Path(dmd.data.__file__).resolve().parent / "reweight"


EXAMPLE_DIR = _example_dir()


def quickstart_stage(out_dir, *, steps: int = 150, progress: bool = True) -> dict:
    """Last stage of ``dmd quickstart``: reweight the bundled example trajectory against its bundled data.

    The example (``dmd/data/reweight``, made by ``examples/reweight/make_example.py``: 60 real OpenMM frames of
    alanine dipeptide held in three backbone conformers, 20 frames each, and synthetic diffuse data of their
    0.6/0.3/0.1 mixture with noise at CC 0.98) is reweighted exactly as ``dmd reweight`` would; outputs go to
    ``out_dir`` (weights.csv, summary.json, reweighted.mtz, PNGs). Returns the summary with
    ``recovered_state_weights``, ``true_state_weights`` and their L1 error added (also in summary.json).
    """
    import csv
    import json

    from dmd.base.io import write_json

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
    with open(Path(out_dir) / "weights.csv") as fh:
        w = np.array([float(r["weight"]) for r in csv.DictReader(fh)])
    rec = np.bincount(groups, w, minlength=n_states)
    summary["true_state_weights"] = truth["state_weights"]
    summary["recovered_state_weights"] = rec.tolist()
    summary["state_weight_l1_error"] = float(np.abs(rec - np.asarray(truth["state_weights"])).sum())
    write_json(Path(out_dir) / "summary.json", summary, [EXAMPLE_DIR / "traj.dcd", EXAMPLE_DIR / "data.mtz"])
    return summary
