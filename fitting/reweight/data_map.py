"""Data voxels on the trajectory box: check that an MTZ and a trajectory agree, and map reflections.

Cell convention: the trajectory box is ``supercell`` = (A, B, C) crystal unit cells along a, b, c. The
MTZ may be indexed on the crystal lattice (MTZ cell = box / supercell; data index h → box index A·h, …) or
directly on the box lattice (MTZ cell = box; fine diffuse sampling between Bragg peaks). Symmetry
equivalents of a non-P1 data set are all computed and averaged onto their data voxel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dmd.base.errors import UserInputError

__all__ = ["DataOnBox", "check_and_map", "topology_spacegroup"]


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


def topology_spacegroup(top) -> str | None:
    """Space group from the topology's CRYST1 / mmCIF symmetry, None when the file has none."""
    if top is None or not str(top).lower().endswith((".pdb", ".ent", ".cif", ".mmcif")):
        return None
    import gemmi

    try:
        st = gemmi.read_structure(str(top))
    except (RuntimeError, ValueError):
        return None
    return st.spacegroup_hm or None


def _lattice(mcell, box, n, cell_tol: float, angle_tol: float, data_path: str):
    """``(scale [3], mode, problem)``: which lattice the MTZ is indexed on, or a message naming the mismatch."""
    crystal = np.concatenate([box[:3] / n, box[3:]])
    ang_ok = np.all(np.abs(mcell[3:] - box[3:]) <= angle_tol)

    def close(a, b):
        return np.all(np.abs(a[:3] / b[:3] - 1) <= cell_tol) and ang_ok

    if close(mcell, box):
        return np.ones(3, int), "box lattice", None  # MTZ indexed on the box lattice
    if np.any(n > 1) and close(mcell, crystal):
        return n, "crystal lattice", None  # MTZ indexed on the crystal lattice: h_box = n·h
    expect = f"{_fmt_cell(box)} (box lattice)"
    if np.any(n > 1):
        expect += f" or {_fmt_cell(crystal)} (crystal lattice, box / supercell {n.tolist()})"
    problem = (
        f"cell: {data_path} has {_fmt_cell(mcell)} but the trajectory box is {_fmt_cell(box)}; the MTZ cell "
        f"should be {expect} within {cell_tol:.0%} and {angle_tol}°. Pass the matching --supercell, or data "
        "and trajectory of the same crystal"
    )
    return None, None, problem


def _usable(mtz, column, sigma_column, mcell, d_min, data_path: str, problems: list):
    """``(keep [n], y [n], sigma [n] | None, inv_d2 [n] Å⁻², d_data Å)``: finite data inside d_min; appends
    a resolution disagreement to ``problems``."""
    from analysis import cell as cell_mod

    y_all = np.asarray(mtz.columns[column], float)
    keep = np.isfinite(y_all)
    sig_all = None
    if sigma_column is not None:
        sig_all = np.asarray(mtz.columns[sigma_column], float)
        keep &= np.isfinite(sig_all) & (sig_all > 0)
    inv_d2 = cell_mod.inv_d2(mtz.hkl.astype(float), mcell)
    keep &= inv_d2 > 0
    d_data = 1.0 / np.sqrt(inv_d2[keep].max()) if keep.any() else np.inf
    if d_min is not None:
        if d_min <= 0:
            raise UserInputError(f"--d-min must be positive (Å), got {d_min}")
        if d_min < 0.95 * d_data:  # 5%: the outermost lattice point of a shell sits a little inside d_min
            problems.append(
                f"resolution: --d-min {d_min:g} Å is finer than the data in {data_path}, which extend to "
                f"{d_data:.3f} Å; pass --d-min ≥ {d_data:.3f}"
            )
        keep &= inv_d2 <= 1.0 / d_min**2 * (1 + 1e-9)
    return keep, y_all, sig_all, inv_d2, d_data


def _box_reflections(hkl, sg_data, scale):
    """``(hkl_box, reduce_index)``: box-lattice indices to compute and the data voxel of each (None in P 1)."""
    from analysis import symmetry

    if sg_data.number == 1:
        return hkl * scale, None
    # every symmetry equivalent (one per Friedel pair: x′(−h) = x′(h)) averaged onto its data voxel
    rots = symmetry.reciprocal_rotations(sg_data)
    eq = np.einsum("ni,rij->nrj", hkl, rots)  # [n, n_rot, 3]
    eq = symmetry.canonical_hkl(eq.reshape(-1, 3), "P 1").reshape(eq.shape).astype(np.int64)
    owner = np.repeat(np.arange(len(hkl)), len(rots))
    pairs = np.unique(np.concatenate([owner[:, None], eq.reshape(-1, 3)], axis=1), axis=0)
    return pairs[:, 1:] * scale, pairs[:, 0].astype(np.int32)


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
    from analysis import symmetry

    n = np.asarray(supercell, int)
    if n.shape != (3,) or np.any(n < 1):
        raise UserInputError(f"--supercell needs three positive integers, got {supercell}")
    box = np.asarray(box_cell, float)
    mcell = np.asarray(mtz.cell, float)
    scale, mode, problem = _lattice(mcell, box, n, cell_tol, angle_tol, data_path)
    if mode == "box lattice" and np.any(n > 1):  # said, not silently ignored (issue 19)
        import warnings

        warnings.warn(
            f"--supercell {' '.join(map(str, n.tolist()))} has no effect: {data_path} is indexed on the box lattice "
            f"(its cell {_fmt_cell(mcell)} is the trajectory box); drop --supercell, or give data indexed on the "
            "crystal's own cell",
            stacklevel=2,
        )
    problems = [problem] if problem else []
    sg_data = symmetry.spacegroup(mtz.spacegroup)
    if top_spacegroup is not None:
        sg_top = symmetry.spacegroup(top_spacegroup)
        if sg_top.number != 1 and sg_top.number != sg_data.number:
            problems.append(
                f"space group: {data_path} is {sg_data.hm} but the topology declares {sg_top.hm}; the trajectory "
                "must be a P 1 box holding every symmetry copy, or the data must be in the same space group"
            )
    keep, y_all, sig_all, inv_d2, d_data = _usable(mtz, column, sigma_column, mcell, d_min, data_path, problems)
    if problems:
        raise UserInputError("trajectory and data disagree:\n  " + "\n  ".join(problems))
    if keep.sum() < 20:
        raise UserInputError(
            f"{data_path}: only {int(keep.sum())} usable reflections in column {column} (finite, d ≥ d_min); "
            "reweighting needs many voxels: check the column and --d-min"
        )
    hkl_box, reduce_index = _box_reflections(mtz.hkl[keep].astype(np.int64), sg_data, scale)
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
        inv_d2=inv_d2[keep],
        mtz_cell=mcell,
        spacegroup=sg_data.hm,
        checks=checks,
    )
