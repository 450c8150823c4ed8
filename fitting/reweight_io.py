"""Trajectory + MTZ in, reweighting outputs out: the pipeline behind ``dmd reweight``.

Steps: read the data column (and σ) from the MTZ; check the trajectory box against the MTZ cell, space
group and resolution (every disagreement is named with its fix); map data reflections to indices of the
trajectory box (a P1 supercell when ``supercell`` ≠ 1 1 1; symmetry equivalents of a non-P1 data set are
all computed and averaged); compute F(h, t) once into a :class:`fitting.fstore.FrameStore`; run
:func:`fitting.reweight.reweight`; write ``weights.csv``, ``summary.json``, ``reweighted.mtz`` and PNG plots.

Cell convention: the trajectory box is ``supercell`` = (A, B, C) crystal unit cells along a, b, c. The
MTZ may be indexed on the crystal lattice (MTZ cell = box / supercell; data index h → box index A·h, …) or
directly on the box lattice (MTZ cell = box; fine diffuse sampling between Bragg peaks).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmd.base.errors import UserInputError

__all__ = ["DataOnBox", "available_memory", "check_and_map", "run_reweight", "write_outputs"]


@dataclass
class DataOnBox:
    """Data voxels and the box-lattice reflections that predict them.

    Attributes:
      hkl_data: int ``[n_data, 3]`` MTZ indices kept; y: ``[n_data]``; sigma: ``[n_data]`` or None.
      hkl_box: int ``[n_box, 3]`` indices in the trajectory box's reciprocal lattice to compute.
      reduce_index: int ``[n_box]`` data voxel of each box reflection, or None when one-to-one.
      inv_d2: ``[n_data]`` Å⁻²; mtz_cell, spacegroup: as in the MTZ; checks: what was compared.
    """

    hkl_data: np.ndarray
    y: np.ndarray
    sigma: np.ndarray | None
    hkl_box: np.ndarray
    reduce_index: np.ndarray | None
    inv_d2: np.ndarray
    mtz_cell: np.ndarray
    spacegroup: str
    checks: dict = field(default_factory=dict)


def _fmt_cell(c) -> str:
    c = np.asarray(c, float)
    return f"{c[0]:.3f} {c[1]:.3f} {c[2]:.3f} Å, {c[3]:.2f} {c[4]:.2f} {c[5]:.2f}°"


def _topology_spacegroup(top) -> str | None:
    """Space group from the topology's CRYST1 / mmCIF symmetry, None when the file has none."""
    if top is None or not str(top).lower().endswith((".pdb", ".ent", ".cif", ".mmcif")):
        return None
    import gemmi

    try:
        st = gemmi.read_structure(str(top))
    except (RuntimeError, ValueError):
        return None
    return st.spacegroup_hm or None


def check_and_map(
    mtz,
    column: str,
    box_cell,
    *,
    sigma_column: str | None = None,
    d_min: float | None = None,
    supercell=(1, 1, 1),
    top_spacegroup: str | None = None,
    cell_tol: float = 0.02,
    angle_tol: float = 0.5,
    data_path: str = "data",
) -> DataOnBox:
    """Check that the MTZ and the trajectory box agree and map data reflections onto the box lattice.

    Args:
      mtz: :class:`analysis.mtz_io.MtzData` holding ``column`` (and ``sigma_column``).
      box_cell: ``[6]`` mean trajectory box (Å, degrees).
      d_min: keep data with d ≥ d_min Å (must not be finer than the data).
      top_spacegroup: space group declared by the topology (CRYST1), if any.
      cell_tol: relative tolerance on lengths; angle_tol: degrees.

    Raises:
      UserInputError: naming each disagreement (cell, space group, resolution) and how to fix it.
    """
    from analysis import cell as cell_mod
    from analysis import symmetry

    n = np.asarray(supercell, int)
    if n.shape != (3,) or np.any(n < 1):
        raise UserInputError(f"--supercell needs three positive integers, got {supercell}")
    box = np.asarray(box_cell, float)
    mcell = np.asarray(mtz.cell, float)
    crystal = np.concatenate([box[:3] / n, box[3:]])
    problems = []
    ang_ok = np.all(np.abs(mcell[3:] - box[3:]) <= angle_tol)

    def close(a, b):
        return np.all(np.abs(a[:3] / b[:3] - 1) <= cell_tol) and ang_ok

    if close(mcell, box):
        scale = np.ones(3, int)  # MTZ indexed on the box lattice
        mode = "box lattice"
    elif np.any(n > 1) and close(mcell, crystal):
        scale = n  # MTZ indexed on the crystal lattice: h_box = n·h
        mode = "crystal lattice"
    else:
        expect = f"{_fmt_cell(box)} (box lattice)"
        if np.any(n > 1):
            expect += f" or {_fmt_cell(crystal)} (crystal lattice, box / supercell {n.tolist()})"
        problems.append(
            f"cell: {data_path} has {_fmt_cell(mcell)} but the trajectory box is {_fmt_cell(box)}; the MTZ cell "
            f"should be {expect} within {cell_tol:.0%} and {angle_tol}°. Pass the matching --supercell, or data "
            "and trajectory of the same crystal"
        )
    sg_data = symmetry.spacegroup(mtz.spacegroup)
    if top_spacegroup is not None:
        sg_top = symmetry.spacegroup(top_spacegroup)
        if sg_top.number != 1 and sg_top.number != sg_data.number:
            problems.append(
                f"space group: {data_path} is {sg_data.hm} but the topology declares {sg_top.hm}; the trajectory "
                "must be a P 1 box holding every symmetry copy, or the data must be in the same space group"
            )
    y_all = np.asarray(mtz.columns[column], float)
    keep = np.isfinite(y_all)
    sig_all = None
    if sigma_column is not None:
        sig_all = np.asarray(mtz.columns[sigma_column], float)
        keep &= np.isfinite(sig_all) & (sig_all > 0)
    q2 = cell_mod.inv_d2(mtz.hkl.astype(float), mcell)
    keep &= q2 > 0
    d_data = 1.0 / np.sqrt(q2[keep].max()) if keep.any() else np.inf
    if d_min is not None:
        if d_min <= 0:
            raise UserInputError(f"--d-min must be positive (Å), got {d_min}")
        if d_min < 0.95 * d_data:  # 5%: the outermost lattice point of a shell sits a little inside d_min
            problems.append(
                f"resolution: --d-min {d_min:g} Å is finer than the data in {data_path}, which extend to "
                f"{d_data:.3f} Å; pass --d-min ≥ {d_data:.3f}"
            )
        keep &= q2 <= 1.0 / d_min**2 * (1 + 1e-9)
    if problems:
        raise UserInputError("trajectory and data disagree:\n  " + "\n  ".join(problems))
    if keep.sum() < 20:
        raise UserInputError(
            f"{data_path}: only {int(keep.sum())} usable reflections in column {column} (finite, d ≥ d_min); "
            "reweighting needs many voxels: check the column and --d-min"
        )
    hkl = mtz.hkl[keep].astype(np.int64)
    reduce_index = None
    if sg_data.number == 1:
        hkl_box = hkl * scale
    else:
        # every symmetry equivalent (one per Friedel pair: x′(−h) = x′(h)) averaged onto its data voxel
        rots = symmetry.reciprocal_rotations(sg_data)
        eq = np.einsum("ni,rij->nrj", hkl, rots)  # [n, n_rot, 3]
        eq = symmetry.canonical_hkl(eq.reshape(-1, 3), "P 1").reshape(eq.shape).astype(np.int64)
        owner = np.repeat(np.arange(len(hkl)), len(rots))
        pairs = np.unique(np.concatenate([owner[:, None], eq.reshape(-1, 3)], axis=1), axis=0)
        reduce_index, hkl_box = pairs[:, 0].astype(np.int32), pairs[:, 1:] * scale
    checks = {
        "mtz_cell": mcell.tolist(),
        "trajectory_box": box.tolist(),
        "supercell": n.tolist(),
        "mtz_indexed_on": mode,
        "mtz_spacegroup": sg_data.hm,
        "topology_spacegroup": top_spacegroup,
        "data_d_min": float(d_data),
        "d_min_used": float(d_min if d_min is not None else d_data),
        "n_reflections_used": int(keep.sum()),
        "n_box_reflections": int(len(hkl_box)),
    }
    return DataOnBox(
        hkl_data=mtz.hkl[keep],
        y=y_all[keep],
        sigma=None if sig_all is None else sig_all[keep],
        hkl_box=np.asarray(hkl_box, np.int32),
        reduce_index=reduce_index,
        inv_d2=q2[keep],
        mtz_cell=mcell,
        spacegroup=sg_data.hm,
        checks=checks,
    )


def _box_cells(traj, top, stride: int) -> np.ndarray:
    """Box of every frame used, ``[n_frames, 6]`` (Å, degrees)."""
    from analysis.structure_io import trajectory_frames

    return np.concatenate([c for _, c, _ in trajectory_frames(traj, top, stride=stride, chunk=500)])


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
) -> dict:
    """The whole ``dmd reweight`` run; returns the summary dict (also written to ``out_dir/summary.json``).

    With ``store_path`` F(h, t) goes to that HDF5 store; a store larger than ``max_memory`` bytes (default:
    half the memory available now) is never loaded: every evaluation streams it from disk (out of core).
    """
    import jax

    from analysis import stats
    from analysis.mtz_io import read_mtz
    from fitting import reweight as rw
    from fitting.fstore import store_from_trajectory

    config = config or rw.ReweightConfig()
    cols = [column] + ([sigma_column] if sigma_column else [])
    mtz = read_mtz(data, cols)
    box_cells = _box_cells(traj, top, stride)
    box = box_cells.mean(axis=0)
    dob = check_and_map(
        mtz,
        column,
        box,
        sigma_column=sigma_column,
        d_min=d_min,
        supercell=supercell,
        top_spacegroup=_topology_spacegroup(top),
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
    store, cells = store_from_trajectory(
        traj, top, dob.hkl_box, method=method, dtype=dtype, path=store_path, stride=stride, progress=progress
    )
    n_sh = min(n_shells, max(1, len(dob.y) // 50))
    shells = stats.shell_index(dob.inv_d2, stats.shell_edges(dob.inv_d2, n_sh))
    problem = rw.make_problem(
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
    folds = rw.holdout_folds(
        dob.hkl_data, config.n_folds, kind=holdout, sg=dob.spacegroup, inv_d2=dob.inv_d2, seed=seed
    )
    result = rw.reweight(problem, folds, config, groups=groups, progress=progress)
    summary = {
        "inputs": {"traj": str(traj), "top": str(top), "data": str(data), "column": column, "sigma": sigma_column},
        "checks": dob.checks,
        "holdout": holdout,
        "method": method,
        **result.summary,
    }
    write_outputs(out_dir, result, problem, dob, folds, config, summary, inputs=[traj, top, data])
    return summary


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
    import jax

    from fitting.sharding import frame_mesh

    return frame_mesh() if len(jax.devices()) > 1 else None


def write_outputs(out_dir, result, problem, dob: DataOnBox, folds, config, summary, *, inputs=()) -> None:
    """weights.csv, summary.json, reweighted.mtz and PNG plots (atomic writes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.mtz_io import write_mtz
    from dmd.base.io import atomic_path, write_json
    from fitting import objectives
    from fitting import reweight as rw

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = [p for p in inputs if isinstance(p, (str, os.PathLike))]
    w = result.weights
    with atomic_path(out / "weights.csv", inputs) as tmp:
        with open(tmp, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["frame", "weight"])
            for i, wi in enumerate(w):
                wr.writerow([i, f"{wi:.8g}"])
    y = np.asarray(dob.y)
    train = np.asarray(folds) != config.test_fold

    def scaled(x):
        a, b = objectives.fit_scale_offset(np.asarray(x, float), y, train.astype(float))
        return float(a) * np.asarray(x, float) + float(b)

    x_uniform = np.asarray(rw.predict(problem, np.full(len(w), 1.0 / len(w))))
    write_mtz(
        out / "reweighted.mtz",
        dob.hkl_data,
        {
            "IOBS": y,
            "ICALC": scaled(result.x),
            "ICALC_UNIFORM": scaled(x_uniform),
            "TEST": (~train).astype(float),
        },
        dob.mtz_cell,
        dob.spacegroup,
        column_types={"TEST": "I"},
        history=["dmd reweight: ICALC = a*x'(w)+b, scale/offset fitted on training voxels; TEST=1 held out"],
        inputs=inputs,
    )
    write_json(out / "summary.json", summary, inputs)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.arange(len(w)), w, lw=1, label="reweighted (softmax)")
    ax.axhline(1.0 / len(w), color="k", ls="--", lw=0.8, label="uniform")
    for name, bw in result.baselines_weights.items():
        if name in ("greedy", "sigmoid"):
            ax.plot(np.arange(len(w)), np.asarray(bw) / np.sum(bw), lw=0.7, alpha=0.6, label=f"{name} (normalized)")
    ax.set_xlabel("frame")
    ax.set_ylabel("weight")
    ax.set_title(f"N_eff = {summary['n_eff']:.1f} of {len(w)};  θ = {summary['theta']:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "weights_vs_frame.png", inputs) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(np.arange(1, len(result.history["cc"]) + 1), result.history["cc"], lw=1)
    ax1.axhline(summary["baselines"]["uniform"]["cc_train"], color="k", ls="--", lw=0.8, label="uniform")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("training CC")
    ax1.legend(fontsize=8)
    th = np.asarray(result.cv["theta_grid"], float)
    ax2.semilogx(
        np.where(th > 0, th, th[th > 0].min() / 10 if np.any(th > 0) else 1e-6), result.cv["mean_heldout_score"], "o-"
    )
    ax2.axvline(max(summary["theta"], 1e-12), color="r", lw=0.8)
    ax2.set_xlabel("θ (θ = 0 drawn at the left)")
    ax2.set_ylabel("mean held-out score")
    fig.tight_layout()
    with atomic_path(out / "cc_vs_iteration.png", inputs) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
