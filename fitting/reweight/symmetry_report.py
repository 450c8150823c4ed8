"""``dmd reweight --spacegroup SG``: the reweighted I_D averaged over the crystal's symmetry, on gemmi's ASU.

A P 1 trajectory box of a crystal samples each symmetry-related voxel independently, so the reweighted prediction
x(h) is symmetric only up to sampling noise. With the space group of the crystal the prediction (and the data) are
averaged over each orbit of its Laue group (:func:`analysis.diffuse.symmetry_average`, the home ``dmd diffuse
--spacegroup`` uses) and reduced to one voxel per orbit in gemmi's (CCP4) reciprocal ASU
(:func:`analysis.symmetry.to_asu`). Agreement with the data is reported as total and anisotropic Pearson CC, overall
and per resolution shell (:func:`analysis.diffuse.diffuse_cc`), for the raw and the symmetry-averaged prediction,
and for the data against their own orbit means (how symmetric the measured map is).

Indices: reflections indexed on the trajectory box of an A×B×C supercell are box indices H; the parent's rotations
act on them unchanged when symmetry-related axes hold equal numbers of cells (checked).
"""

from __future__ import annotations

import numpy as np

from dmd.base.errors import UserInputError

__all__ = ["check_spacegroup", "symmetry_report"]

_CC_KEYS = ("cc_total", "cc_anisotropic", "shell_edges_d", "cc_total_shells", "cc_anisotropic_shells", "n_per_shell")


def check_spacegroup(sg) -> str:
    """The Hermann-Mauguin symbol of ``sg`` (gemmi), or :class:`UserInputError` naming the fix."""
    from analysis import symmetry

    try:
        return symmetry.spacegroup(sg).hm
    except ValueError as exc:
        raise UserInputError(f"--spacegroup: {exc}") from exc


def symmetry_report(hkl, calc, obs, inv_d2, sg, *, supercell=(1, 1, 1), n_shells: int = 10):
    """Symmetry-averaged prediction and data, their ASU reduction and CCs.

    Args:
      hkl: int ``[M, 3]`` data indices; calc, obs: ``[M]`` prediction (on the data's scale) and data;
      inv_d2: ``[M]`` 1/d² (Å⁻²); sg: space group of the crystal; supercell: cells per box edge when ``hkl`` are
      box indices of a supercell, else (1, 1, 1); n_shells: equal-count resolution shells.

    Returns:
      ``(columns, asu, summary)``: columns ``{"ICALC_SYM", "IOBS_SYM"}`` ``[M]`` (orbit means); asu: dict with
      ``hkl [U, 3]`` (gemmi's ASU, one per orbit present), ``ICALC``, ``IOBS`` ``[U]`` orbit means and
      ``multiplicity [U]`` (data voxels per orbit); summary: space group, orbit counts and the CC dicts
      ``raw`` (calc vs obs), ``symmetrized`` (calc_sym vs obs), ``asu`` (per orbit) and ``data_vs_symmetrized``.

    Raises:
      UserInputError: unknown space group, or a supercell whose axes the group's rotations mix unequally.
    """
    from analysis import diffuse, symmetry

    hm = check_spacegroup(sg)
    hkl = np.asarray(hkl, np.int64)
    calc, obs, inv_d2 = (np.asarray(a, float) for a in (calc, obs, inv_d2))
    try:
        calc_sym = diffuse.symmetry_average(hkl, calc, hm, supercell=supercell)
        obs_sym = diffuse.symmetry_average(hkl, obs, hm, supercell=supercell)
    except ValueError as exc:
        raise UserInputError(f"--spacegroup {hm}: {exc}") from exc
    hkl_asu, _ = symmetry.to_asu(hkl, hm)
    keys = symmetry.hkl_keys(hkl_asu)
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    inv = inv.ravel()
    count = np.bincount(inv).astype(float)
    asu = {
        "hkl": hkl_asu[first].astype(np.int32),
        "ICALC": np.bincount(inv, weights=calc) / count,
        "IOBS": np.bincount(inv, weights=obs) / count,
        "multiplicity": count.astype(np.int32),
    }

    def cc(a, b, d2):
        out = diffuse.diffuse_cc(a, b, d2, n_shells=n_shells)
        return {k: out[k] for k in _CC_KEYS}

    summary = {
        "spacegroup": hm,
        "n_reflections": int(len(hkl)),
        "n_orbits": int(len(first)),
        "raw": cc(calc, obs, inv_d2),
        "symmetrized": cc(calc_sym, obs, inv_d2),
        "asu": cc(asu["ICALC"], asu["IOBS"], inv_d2[first]),
        "data_vs_symmetrized": cc(obs, obs_sym, inv_d2),
    }
    return {"ICALC_SYM": calc_sym, "IOBS_SYM": obs_sym}, asu, summary
