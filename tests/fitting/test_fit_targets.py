"""fitting.fit_targets' powder target on any crystal cell: the same crystal described in its cubic conventional box
and in a reduced triclinic (rhombohedral, 60°) primitive supercell gives the same pattern up to one scale, and the
scattering factors come from the topology's elements."""

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import openmm.app as app
import pytest

from dmd.base.errors import UserInputError
from fitting import observables as ob
from fitting.fit_config import fcc_positions
from fitting.fit_targets import powder_observable

A_NM = 0.53  # FCC lattice constant (argon-like), nm
TT = np.linspace(15.0, 60.0, 451)  # 2θ grid, degrees (Cu Kα): (111) … (222) of a = 5.3 Å
PROFILE = {"U": 0.0, "V": 0.0, "W": 0.05, "eta": 0.5}


def _pattern(system, **kw):
    obs = powder_observable(system, TT, 1.5406, PROFILE, **kw)
    return np.asarray(ob.frame_values(obs.per_frame)({}, jnp.asarray(system.positions, jnp.float64)[None]))[0]


def _primitive_supercell(n=2):
    """FCC as n³ copies of its reduced primitive cell: rows a, b, c of length a/√2 at 60° (OpenMM's reduced form)."""
    edge = A_NM / np.sqrt(2.0)
    cell = edge * np.array([[1.0, 0, 0], [0.5, np.sqrt(3) / 2, 0], [0.5, np.sqrt(3) / 6, np.sqrt(2.0 / 3.0)]])
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return grid @ cell, n * cell


def test_triclinic_primitive_cell_gives_the_cubic_pattern():
    cubic = SimpleNamespace(box=np.full(3, A_NM), positions=fcc_positions(1, np.full(3, A_NM)), n_atoms=4)
    pos, box = _primitive_supercell(2)
    tric = SimpleNamespace(box=box, positions=pos, n_atoms=len(pos))
    p_cub, p_tri = _pattern(cubic), _pattern(tric)  # float64 (conftest enables x64)
    # same reciprocal-lattice points with signal; |F|² per point (8 f)² vs (4 f)²: a scale of exactly 4. The 1e-6
    # bound is float64 round-off of the fractional coordinates; the NVT code before this test refused the box
    assert p_cub.max() > 0
    assert np.max(np.abs(p_tri - 4.0 * p_cub)) / p_tri.max() < 1e-6


def test_triclinic_npt_pattern_follows_each_frames_box():
    # under NPT each frame is the P 1 cell of its own [3, 3] box (cell from the box's metric, traced): at the start
    # box it is the NVT pattern (to 1e-4: its ±30% reflection list adds far peaks' Lorentzian tails, ~5e-6), and a
    # frame 2% larger in every edge moves the strongest peak (111) to lower 2θ by ~2% of its sin θ (29.2 → 28.6°)
    pos, box = _primitive_supercell(2)
    tric = SimpleNamespace(box=box, positions=pos, n_atoms=len(pos))
    nvt = _pattern(tric)
    npt = powder_observable(tric, TT, 1.5406, PROFILE, follow_box=True)
    assert npt.follows_box
    values = ob.frame_values(npt.per_frame)
    frames, boxes = jnp.asarray(np.stack([pos, 1.02 * pos])), jnp.asarray(np.stack([box, 1.02 * box]))
    same, larger = np.asarray(values({}, frames, boxes))
    assert np.max(np.abs(same - nvt)) / nvt.max() < 1e-4
    peak, shifted = TT[np.argmax(nvt)], TT[np.argmax(larger)]
    expected = 2 * np.degrees(np.arcsin(np.sin(np.radians(peak / 2)) / 1.02))
    assert abs(shifted - expected) < 0.15  # the 0.1° grid


def test_powder_elements_come_from_the_topology():
    # rock salt: (111) has F = 4 (f_Cl − f_Na), (200) F = 4 (f_Cl + f_Na); with one element for every atom (111)
    # would be extinct (the FCC of eight identical atoms at half the lattice), so its peak proves the elements
    top = app.Topology()
    res = top.addResidue("NaCl", top.addChain())
    el = {"Na": app.element.sodium, "Cl": app.element.chlorine}
    a = 0.564
    frac_na = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = np.concatenate([frac_na, frac_na + 0.5]) % 1.0
    for sym in ["Na"] * 4 + ["Cl"] * 4:
        top.addAtom(sym, el[sym], res)
    salt = SimpleNamespace(box=np.full(3, a), positions=frac * a, n_atoms=8, topology=top)
    argon = SimpleNamespace(box=np.full(3, a), positions=frac * a, n_atoms=8)
    p_salt, p_ar = _pattern(salt), _pattern(argon, element="Ar")
    two_theta_111 = 2 * np.degrees(np.arcsin(1.5406 * np.sqrt(3) / (2 * 10 * a)))
    near = np.abs(TT - two_theta_111) < 0.3
    assert p_salt[near].max() > 0.02 * p_salt.max()  # (111)/(200) of NaCl is ~0.08 in |F|² alone
    # one element: only the Lorentzian tail of (200), 2.3° away, reaches the (111) position (3e-4 of the maximum)
    assert p_ar[near].max() < 1e-3 * p_ar.max()
    assert p_salt[near].max() / p_salt.max() > 50 * p_ar[near].max() / p_ar.max()


def test_powder_box_must_be_reduced():
    bad = SimpleNamespace(box=np.array([[1.0, 0, 0], [0.9, 1.0, 0], [0, 0, 1.0]]), positions=np.zeros((1, 3)),
                          n_atoms=1)  # fmt: skip
    with pytest.raises(UserInputError, match="reduced triclinic box"):
        powder_observable(bad, TT, 1.5406, PROFILE)
