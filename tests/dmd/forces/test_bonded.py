"""Bonded energy terms (dmd/forces/bonded.py) against OpenMM's forces on the same atoms, float64 on both sides
(Reference platform): harmonic bonds and angles, periodic torsions, CHARMM harmonic impropers and CMAP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.forces import bonded

openmm = pytest.importorskip("openmm")
unit = pytest.importorskip("openmm.unit")

N_ATOMS = 8
POS = np.cumsum(np.random.default_rng(0).normal(scale=0.09, size=(N_ATOMS, 3)), axis=0)  # a crooked chain, nm


def _openmm(force):
    """(E kJ/mol, F [N, 3] kJ/mol/nm) of one OpenMM force at POS."""
    system = openmm.System()
    for _ in range(N_ATOMS):
        system.addParticle(12.0)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(POS)
    state = context.getState(getEnergy=True, getForces=True)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), np.asarray(forces)


def _check(energy_fn, force):
    e, g = jax.value_and_grad(energy_fn)(jnp.asarray(POS))
    e_ref, f_ref = _openmm(force)
    # double precision on both sides, energies 0.5-940 kJ/mol: measured ≤ 2e-14 relative (energy and forces)
    assert float(e) == pytest.approx(e_ref, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(-np.asarray(g), f_ref, rtol=0, atol=1e-9 * max(1.0, np.abs(f_ref).max()))


def test_harmonic_bonds_and_angles():
    idx = np.array([[0, 1], [1, 2], [2, 3], [5, 6]])
    k, r0 = np.array([3e5, 2e5, 2.5e5, 1e5]), np.array([0.10, 0.12, 0.15, 0.14])
    force = openmm.HarmonicBondForce()
    for (i, j), kk, rr in zip(idx, k, r0, strict=True):
        force.addBond(int(i), int(j), rr, kk)
    _check(lambda x: bonded.harmonic_bond_energy(k, r0, x, idx), force)

    idx = np.array([[0, 1, 2], [1, 2, 3], [4, 5, 6]])
    k, th0 = np.array([400.0, 500.0, 300.0]), np.array([1.9, 2.0, 1.7])
    force = openmm.HarmonicAngleForce()
    for (i, j, l), kk, tt in zip(idx, k, th0, strict=True):
        force.addAngle(int(i), int(j), int(l), tt, kk)
    _check(lambda x: bonded.harmonic_angle_energy(k, th0, x, idx), force)


def test_periodic_and_harmonic_torsions():
    idx = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [4, 5, 6, 7]])
    k, phase, n = np.array([2.0, 1.5, 0.8, 4.0]), np.array([0.0, np.pi, 0.3, 1.2]), np.array([1, 2, 3, 4])
    force = openmm.PeriodicTorsionForce()
    for quad, kk, ph, nn in zip(idx, k, phase, n, strict=True):
        force.addTorsion(*map(int, quad), int(nn), ph, kk)
    _check(lambda x: bonded.periodic_torsion_energy(k, phase, n, x, idx), force)

    idx = idx[:2]
    theta0 = np.asarray(bonded.dihedral_angles(jnp.asarray(POS), idx)) + np.array([0.3, -0.2])  # no ±π wrap
    k = np.array([200.0, 150.0])
    force = openmm.CustomTorsionForce("k*(theta-theta0)^2")
    force.addPerTorsionParameter("k")
    force.addPerTorsionParameter("theta0")
    for quad, kk, t0 in zip(idx, k, theta0, strict=True):
        force.addTorsion(*map(int, quad), [kk, t0])
    _check(lambda x: bonded.harmonic_torsion_energy(k, theta0, x, idx), force)


def test_cmap_matches_openmm_bicubic_spline():
    size = 24
    grid = np.arange(size) * 2 * np.pi / size
    phi, psi = np.meshgrid(grid, grid, indexing="ij")  # maps[m, i, j] = E(φ_i, ψ_j)
    maps = np.stack([
        3.0 * np.cos(phi) + 2.0 * np.sin(2 * psi) + 1.5 * np.cos(phi - psi),
        np.random.default_rng(1).normal(scale=2.0, size=(size, size)),  # rough: the spline must still agree
    ])  # fmt: skip
    idx_a = np.array([[0, 1, 2, 3], [3, 4, 5, 6]])
    idx_b = np.array([[1, 2, 3, 4], [4, 5, 6, 7]])
    map_index = np.array([0, 1])
    force = openmm.CMAPTorsionForce()
    for m in maps:
        force.addMap(size, m.T.ravel())  # OpenMM's energy[i + size*j]
    for mi, a, b in zip(map_index, idx_a, idx_b, strict=True):
        force.addTorsion(int(mi), *map(int, a), *map(int, b))
    op = bonded.cmap_spline_operator(size)
    _check(lambda x: bonded.cmap_energy(jnp.asarray(maps), map_index, op, x, idx_a, idx_b), force)
