"""Diffuse scattering, trajectories (nm → Å), supercell grids, symmetry averaging, CC statistics, MTZ I/O.

Real trajectory: ``tests/data/sf_villin_traj.dcd`` + ``sf_villin_top.pdb`` (villin headpiece from OpenMM's
test.pdb, 40 frames of Amber14/TIP3P MD at 300 K, protein atoms kept, periodic box 49.2 × 46.0 × 38.9 Å;
regenerate with ``tests/data/sf_make_villin_traj.py``).
"""

from __future__ import annotations

import os

import gemmi
import jax.numpy as jnp
import mdtraj
import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis import diffuse, stats, symmetry
from analysis.mtz_io import read_mtz, write_mtz
from analysis.structure_factors import structure_factors, trajectory_structure_factors
from dmd.base.errors import UserInputError

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
TRAJ = os.path.join(DATA, "sf_villin_traj.dcd")
TOP = os.path.join(DATA, "sf_villin_top.pdb")


def test_trajectory_frame_matches_gemmi_on_the_topology_pdb():
    """Frame 0 of the DCD (nm, float32) vs gemmi on the same frame saved as PDB (Å, 3 decimals)."""
    hkl, F, cells = trajectory_structure_factors(TRAJ, TOP, d_min=4.0, stride=40, method="direct", dtype=np.float64)
    assert F.shape == (1, len(hkl)) and np.allclose(cells[0], [49.163, 45.981, 38.869, 90, 90, 90], atol=1e-3)
    st = gemmi.read_structure(TOP)
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    sub = np.random.default_rng(0).choice(len(hkl), 60, replace=False)
    ref = np.array([calc.calculate_sf_from_model(st[0], [int(v) for v in hkl[i]]) for i in sub])
    r = np.sum(np.abs(np.abs(F[0, sub]) - np.abs(ref))) / np.sum(np.abs(ref))
    assert r < 2e-4  # PDB rounds coordinates to 5e-4 Å: phase noise 2π·5e-4/4 ≈ 8e-4 rad → R ~ 1e-4


def test_fft_float32_trajectory_matches_direct_float64():
    hkl, f_fft, _ = trajectory_structure_factors(TRAJ, TOP, d_min=4.0, stride=8, method="fft", dtype=np.float32)
    _, f_dir, _ = trajectory_structure_factors(TRAJ, TOP, hkl, stride=8, method="direct", dtype=np.float64)
    assert f_fft.dtype == np.complex64 and f_fft.shape == (5, len(hkl))
    r = np.sum(np.abs(f_fft - f_dir)) / np.sum(np.abs(f_dir))
    assert r < 1e-4  # plan tolerance 1e-5 plus float32 accumulation over 582 atoms
    # diffuse from both routes: CC ≈ 1 (docs/diffuse.md: FFT-vs-direct diffuse CC 1.000000 with gemmi)
    i_fft = diffuse.diffuse_intensity(f_fft.astype(np.complex128))[0]
    i_dir = diffuse.diffuse_intensity(f_dir)[0]
    assert float(np.corrcoef(i_fft, i_dir)[0, 1]) > 0.99999


def test_diffuse_intensity_definition_streaming_and_weights():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(7, 50)) + 1j * rng.normal(size=(7, 50)) + 3.0
    w = rng.uniform(0.1, 1.0, 7)
    i_d, f2, fsq = diffuse.diffuse_intensity(F, w)
    wn = w / w.sum()
    ref_f2 = (wn[:, None] * np.abs(F) ** 2).sum(0)
    ref_fsq = np.abs((wn[:, None] * F).sum(0)) ** 2
    np.testing.assert_allclose(np.asarray(f2), ref_f2, rtol=1e-12)  # float64 sums of 7 terms
    np.testing.assert_allclose(np.asarray(fsq), ref_fsq, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(i_d), ref_f2 - ref_fsq, rtol=1e-10, atol=1e-12)
    assert np.all(np.asarray(i_d) >= -1e-12)  # a weighted variance is never negative
    acc = diffuse.diffuse_init(50)
    for sl in (slice(0, 3), slice(3, 7)):
        acc = diffuse.diffuse_update(acc, F[sl], w[sl])
    s_id, s_f2, s_fsq = diffuse.diffuse_finalize(acc)
    np.testing.assert_allclose(s_id, np.asarray(i_d), rtol=1e-10, atol=1e-10)
    assert acc.n_frames == 7
    # identical frames → no diffuse scattering
    same = diffuse.diffuse_intensity(np.repeat(F[:1], 4, axis=0))[0]
    assert float(jnp.max(jnp.abs(same))) < 1e-10


def test_supercell_grid_of_replicated_box():
    """A 2×1×1 box of two identical copies: F(H=2h) = 2 F_parent(h), F(H odd) = 0 (Laue interference)."""
    t = mdtraj.load_frame(TRAJ, 0, top=TOP)
    frac = t.xyz[0].astype(np.float64) @ np.linalg.inv(t.unitcell_vectors[0].astype(np.float64))
    cell = np.array([*(t.unitcell_lengths[0] * 10), *t.unitcell_angles[0]], float)
    els = [a.element.symbol for a in t.topology.atoms]
    super_cell = cell.copy()
    super_cell[0] *= 2
    super_frac = np.concatenate([frac * [0.5, 1, 1], frac * [0.5, 1, 1] + [0.5, 0, 0]])
    hkl_box, hkl_parent = diffuse.diffuse_hkl(super_cell, 6.0, supercell=(2, 1, 1))
    np.testing.assert_allclose(hkl_parent * [2, 1, 1], hkl_box)
    f_super = np.asarray(structure_factors(hkl_box, super_frac, super_cell, els + els))
    even = hkl_box[:, 0] % 2 == 0
    f_parent = np.asarray(structure_factors((hkl_box[even] // [2, 1, 1]), frac, cell, els))
    scale = np.abs(f_parent).max()
    assert np.abs(f_super[even] - 2 * f_parent).max() < 1e-9 * scale  # float64 sums
    assert np.abs(f_super[~even]).max() < 1e-9 * scale
    # the box-lattice reciprocal metric is the parent's at h = H / n
    np.testing.assert_allclose(
        cell_mod.inv_d2(hkl_box.astype(float), super_cell), cell_mod.inv_d2(hkl_parent, cell), rtol=1e-12
    )


def test_symmetry_average_orbits():
    cell = [40.0, 50.0, 60.0, 90, 90, 90]
    hkl = symmetry.generate_hkl(cell, 5.0, "P 1")  # full sphere: Friedel mates and mmm orbits present
    rng = np.random.default_rng(2)
    vals = rng.normal(size=len(hkl))
    avg = diffuse.symmetry_average(hkl, vals, "P 21 21 21")
    # every member of an mmm orbit (±h, ±k, ±l) gets the same mean
    key = np.abs(hkl)
    for k in map(tuple, key[:200]):
        members = np.all(key == k, axis=1)
        assert np.ptp(avg[members]) < 1e-12
        assert abs(avg[members][0] - vals[members].mean()) < 1e-12
    # already-symmetric data is unchanged
    sym = np.abs(hkl).sum(1).astype(float)
    np.testing.assert_allclose(diffuse.symmetry_average(hkl, sym, "P 21 21 21"), sym, rtol=1e-12)
    # a 2×1×1 supercell cannot carry a 4-fold axis along c; 2×2×1 can
    with pytest.raises(ValueError, match="incompatible"):
        diffuse.symmetry_average(hkl, vals, "P 4 2 2", supercell=(2, 1, 1))
    assert np.isfinite(diffuse.symmetry_average(hkl, vals, "P 4 2 2", supercell=(2, 2, 1))).all()
    # masked values are excluded from the means
    mask = rng.uniform(size=len(hkl)) > 0.3
    avg_m = diffuse.symmetry_average(hkl, vals, "P 21 21 21", mask=mask)
    k0 = np.all(key == key[np.argmax(mask)], axis=1)
    assert abs(np.nanmean(avg_m[k0]) - vals[k0 & mask].mean()) < 1e-12


def test_diffuse_cc_total_and_anisotropic():
    cell = [40.0, 50.0, 60.0, 90, 90, 90]
    hkl = symmetry.generate_hkl(cell, 3.0, "P 1", unique=True)
    inv_d2 = cell_mod.inv_d2(hkl.astype(float), np.array(cell))
    rng = np.random.default_rng(3)
    aniso = rng.normal(size=len(hkl))
    obs = 100 * np.exp(-10 * inv_d2) + aniso
    s = diffuse.diffuse_cc(2 * obs + 5, obs, inv_d2, n_shells=5)
    assert abs(s["cc_total"] - 1) < 1e-12 and abs(s["cc_anisotropic"] - 1) < 1e-12  # CC ignores scale/offset
    # wrong radial (shell-mean) profile, right anisotropic part → anisotropic CC = 1 exactly, total CC < 1
    edges = stats.shell_edges(inv_d2, 10)
    shell = stats.shell_index(inv_d2, edges)
    mid = np.array([inv_d2[shell == k].mean() for k in range(10)])
    obs = 100 * np.exp(-10 * mid[shell]) + aniso
    pred = 300 * mid[shell] + aniso  # rising where obs falls
    s = diffuse.diffuse_cc(pred, obs, inv_d2, n_shells=10)
    assert abs(s["cc_anisotropic"] - 1) < 1e-10  # shell means removed exactly (float64)
    assert s["cc_total"] < 0.9
    np.testing.assert_allclose(s["cc_anisotropic_shells"], 1.0, atol=1e-10)
    assert s["cc_total_shells"].shape == (10,) and s["n_per_shell"].sum() == len(hkl)
    assert np.all(np.diff(s["shell_edges_d"]) < 0)  # edges run from low to high resolution
    # NaNs in observed data are masked, not propagated
    obs_nan = obs.copy()
    obs_nan[::7] = np.nan
    assert np.isfinite(diffuse.diffuse_cc(pred, obs_nan, inv_d2)["cc_total"])


def test_match_reflections():
    a = np.array([[1, 2, 3], [0, 0, 1], [-1, 2, 0], [5, 5, 5]])
    b = np.array([[-1, 2, 0], [9, 9, 9], [1, 2, 3]])
    ia, ib = diffuse.match_reflections(a, b)
    assert ia.tolist() == [0, 2] and ib.tolist() == [2, 0]


def test_mtz_round_trip_and_missing_column(tmp_path):
    cell = [49.163, 45.981, 38.869, 90, 90, 90]
    hkl = symmetry.generate_hkl(cell, 6.0, "P 1", unique=True)
    rng = np.random.default_rng(4)
    cols = {"ID": rng.uniform(0, 1e3, len(hkl)), "MEANF2": rng.uniform(0, 1e4, len(hkl))}
    cols["ID"][3] = np.nan
    path = tmp_path / "pred.mtz"
    write_mtz(path, hkl, cols, cell, "P 1", column_types={"ID": "J", "MEANF2": "J"})
    data = read_mtz(path, ["ID", "MEANF2"])
    np.testing.assert_array_equal(data.hkl, hkl)
    np.testing.assert_allclose(data.columns["MEANF2"], cols["MEANF2"], rtol=1e-6)  # MTZ stores float32
    assert np.isnan(data.columns["ID"][3])
    np.testing.assert_allclose(data.cell, cell, rtol=1e-6)
    assert gemmi.read_mtz_file(str(path)).spacegroup.hm == "P 1"
    with pytest.raises(UserInputError, match=r"IOBS.*columns present: H \(H\), K \(H\), L \(H\), ID \(J\)"):
        read_mtz(path, ["IOBS"])
    with pytest.raises(UserInputError, match="no such MTZ"):
        read_mtz(tmp_path / "missing.mtz", ["ID"])
    with pytest.raises(UserInputError, match="overwrite an input"):
        write_mtz(path, hkl, cols, cell, inputs=[path])
