"""The toy models (dmd.models) against OpenMM: energies and forces of the same system built in OpenMM's
Reference platform (double precision), float64 on both sides."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.base.errors import UserInputError

openmm = pytest.importorskip("openmm")
unit = pytest.importorskip("openmm.unit")


def _openmm_energy_forces(omm_system, pos, box=None):
    """(E kJ/mol, F [N, 3] kJ/mol/nm) of ``omm_system`` at ``pos`` (nm), Reference platform."""
    if box is not None:
        omm_system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.diag(box)))
    context = openmm.Context(omm_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(pos, float))
    state = context.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return e, np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def _dmd_energy_forces(system, pos, neighbor=None):
    e, g = jax.value_and_grad(lambda x: system.energy_fn(system.params, x, neighbor=neighbor))(jnp.asarray(pos))
    return float(e), -np.asarray(g)


def test_lj_fluid_with_two_types_and_a_switch_matches_openmm():
    lj = models.lj_fluid(128, density=0.8, n_types=2, switch_distance=0.7, cutoff=0.8, dtype=jnp.float64, seed=2)
    sig, eps = np.array([0.34, 0.31]), np.array([0.996, 1.3])  # distinct types exercise the mixing rule
    lj = dataclasses.replace(lj, params={"lj": {"sigma": jnp.asarray(sig), "epsilon": jnp.asarray(eps)}})
    omm = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)  # plain truncation + OpenMM's switch
    nb.setCutoffDistance(0.8)
    nb.setUseSwitchingFunction(True)
    nb.setSwitchingDistance(0.7)
    nb.setUseDispersionCorrection(False)
    types = np.arange(lj.n_atoms) % 2
    for t in types:
        omm.addParticle(float(lj.masses[0]))
        nb.addParticle(0.0, sig[t], eps[t])  # Lorentz-Berthelot, as dmd's lj_fluid
    omm.addForce(nb)
    pos = np.asarray(lj.positions)
    e_ref, f_ref = _openmm_energy_forces(omm, pos, np.asarray(lj.box))
    # all pairs and the neighbour-list routes (full list: its own custom derivative; half list, each pair once: the
    # force-field pair kernel's) against one reference
    lists = [dataclasses.replace(lj.neighbor_fn, half=half).allocate(lj.positions) for half in (False, True)]
    assert [nbr.full for nbr in lists] == [True, False]
    for nbr in (None, *lists):
        e, f = _dmd_energy_forces(lj, pos, nbr)
        # both double precision: the sums over ~4,000 pairs agree to rounding (measured 3e-15 relative)
        assert e == pytest.approx(e_ref, rel=1e-10)
        np.testing.assert_allclose(f, f_ref, atol=1e-8 * np.abs(f_ref).max())


def test_harmonic_chain_matches_openmm_bonds():
    chain = models.harmonic_chain(6, k=800.0, r0=0.15, dtype=jnp.float64, seed=1)
    k = np.linspace(500.0, 1500.0, 5)  # per-bond θ, so a bond-order mix-up shows
    chain = dataclasses.replace(chain, params={"bond": {"k": jnp.asarray(k), "r0": chain.params["bond"]["r0"]}})
    pos = np.asarray(chain.positions) + np.random.default_rng(0).normal(scale=0.02, size=(6, 3))
    omm = openmm.System()
    bonds = openmm.HarmonicBondForce()
    for b in range(5):
        omm.addParticle(12.0)
        bonds.addBond(b, b + 1, 0.15, k[b])
    omm.addParticle(12.0)
    omm.addForce(bonds)
    e_ref, f_ref = _openmm_energy_forces(omm, pos)
    e, f = _dmd_energy_forces(chain, pos)
    # double precision on both sides; energies ~1 kJ/mol
    assert e == pytest.approx(e_ref, rel=1e-10)
    np.testing.assert_allclose(f, f_ref, atol=1e-8 * np.abs(f_ref).max())


def test_harmonic_oscillator_matches_openmm_external_force():
    osc = models.harmonic_oscillator(4, k=250.0, dtype=jnp.float64, seed=3)
    center = np.random.default_rng(1).normal(scale=0.1, size=(4, 3))
    k = np.array([100.0, 200.0, 300.0, 400.0])
    osc = dataclasses.replace(osc, params={"spring": {"k": jnp.asarray(k), "center": jnp.asarray(center)}})
    omm = openmm.System()
    well = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    for name in ("k", "x0", "y0", "z0"):
        well.addPerParticleParameter(name)
    for i in range(4):
        omm.addParticle(1.0)
        well.addParticle(i, [k[i], *center[i]])
    omm.addForce(well)
    pos = np.asarray(osc.positions)
    e_ref, f_ref = _openmm_energy_forces(omm, pos)
    e, f = _dmd_energy_forces(osc, pos)
    assert e == pytest.approx(e_ref, rel=1e-10)  # double precision, ~1 kJ/mol
    np.testing.assert_allclose(f, f_ref, atol=1e-8 * np.abs(f_ref).max())


def test_bad_model_arguments_are_refused():
    with pytest.raises(UserInputError, match="n_atoms >= 2"):
        models.lj_fluid(1)
    with pytest.raises(UserInputError, match="positive reduced density"):
        models.lj_fluid(64, density=0.0)
    with pytest.raises(UserInputError, match="exceeds half the box"):
        models.lj_fluid(32, cutoff=2.0)
    with pytest.raises(UserInputError, match="switch_distance"):
        models.lj_fluid(500, switch_distance=2.0)
    with pytest.raises(UserInputError, match="n_atoms >= 2"):
        models.harmonic_chain(1)
