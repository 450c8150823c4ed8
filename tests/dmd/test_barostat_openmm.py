"""dmd's Monte Carlo barostat against OpenMM's MonteCarloBarostat, term by term, on the same configuration:
the energy change of a volume move with molecules scaled by their centres (OpenMM's own scaling, through
``MonteCarloBarostat.computeCurrentPressure``, and by hand with setPeriodicBoxVectors + setPositions), the molecule
count and the P·ΔV units of the acceptance weight, the dispersion correction's volume dependence, and the adaptive
step rule (MonteCarloBarostatImpl::updateContextState)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.barostat import MoveSettings, barostat_init, find_molecules, monte_carlo_volume_move, scale_molecules
from dmd.base.units import BAR_NM3_IN_KJ_PER_MOL
from dmd.openmm_system import openmm_system_from_pdb, system_from_openmm

PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide_water.pdb"  # ACE-ALA-NME + 462 TIP3P, 2.5 nm
FF = ["amber14-all.xml", "amber14/tip3p.xml"]


def _openmm_pressure(omm, pos, box, dispersion=True):
    """OpenMM's instantaneous pressure (bar) at zero velocities: −ΔU/ΔV from its own molecular scaling by ±1e-3."""
    import openmm as mm
    import openmm.unit as u

    omm = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(omm))
    for f in omm.getForces():
        if isinstance(f, mm.NonbondedForce):
            f.setUseDispersionCorrection(dispersion)
    baro = mm.MonteCarloBarostat(1.0, 300.0, 25)
    omm.addForce(baro)
    ctx = mm.Context(omm, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPeriodicBoxVectors(*np.diag(box))
    ctx.setPositions(pos * u.nanometer)
    return baro.computeCurrentPressure(ctx).value_in_unit(u.bar), ctx


def test_volume_move_energy_matches_openmm():
    """The barostat's ΔU and weight terms equal OpenMM's on a solvated peptide (float64, Reference platform)."""
    import openmm.unit as u
    from openmm import Vec3

    omm, structure, _ = openmm_system_from_pdb(str(PDB), FF, "PME", 0.9)
    pos = np.asarray(structure.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    system = system_from_openmm(omm, pos, topology=structure.topology, dtype=jnp.float64)
    box = np.asarray(system.box, float)
    mol = find_molecules(system)
    n_mol = int(mol.max()) + 1
    energy = jax.jit(lambda x, b, nbr: system.energy_fn(system.params, x, box=b, neighbor=nbr))

    def u_at(scale):
        """dmd's U (kJ/mol) after scaling molecular centres and the box by ``scale``."""
        x = scale_molecules(jnp.asarray(pos), jnp.asarray(mol), n_mol, scale)
        b = jnp.asarray(box * scale)
        return float(energy(x, b, system.neighbor_fn.allocate(x, box=b))), np.asarray(x)

    # OpenMM's computeCurrentPressure: −(U(1+δ) − U(1−δ)) / (V((1+δ)³ − (1−δ)³)) in bar, δ = 1e-3, its own scaling
    p_omm, ctx = _openmm_pressure(omm, pos, box)
    assert n_mol == len(ctx.getMolecules())  # N_mol of the N kT ln(V'/V) term: OpenMM's molecules
    d = 1e-3
    u1, u2 = u_at(1 + d)[0], u_at(1 - d)[0]
    p_dmd = -(u1 - u2) / (np.prod(box) * ((1 + d) ** 3 - (1 - d) ** 3)) / BAR_NM3_IN_KJ_PER_MOL
    # the PDB's start is far from equilibrium (P ≈ 6.5e4 bar, ΔU ≈ 60 kJ/mol); ΔU agrees to ~1e-7 kJ/mol (float64
    # round-off of U ≈ −2e4 kJ/mol): 1e-9 relative leaves room; the old CODATA-2014 N_A (1.6e-8 off) fails it
    assert p_dmd == pytest.approx(p_omm, rel=1e-9), (p_dmd, p_omm)
    p_nodisp, _ = _openmm_pressure(omm, pos, box, dispersion=False)
    assert p_omm - p_nodisp < -50.0  # the dispersion correction's −c/V² is ~−100 bar here: a missing one fails
    # a typical volume move (ΔV = 0.5% V), by hand in OpenMM (setPeriodicBoxVectors + setPositions)
    s = 1.005 ** (1 / 3)
    u0 = u_at(1.0)[0]
    ut, xt = u_at(s)
    ctx.setPositions(pos * u.nanometer)
    e0 = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    ctx.setPeriodicBoxVectors(*(Vec3(*r) for r in np.diag(box * s)))
    ctx.setPositions(xt * u.nanometer)
    et = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert abs((ut - u0) - (et - e0)) < 1e-6  # float64 round-off of U ≈ 2e4 kJ/mol (parity ≤ 1e-9 relative)
    # P·ΔV: OpenMM converts bar with AVOGADRO·1e-25 (AVOGADRO 6.02214076e23; dmd's constant is CODATA 2014's)
    assert BAR_NM3_IN_KJ_PER_MOL == pytest.approx(6.02214076e23 * 1e-25, rel=1e-7)


def _openmm_adaptation(accepts, scale0, volume):
    """OpenMM's δV sequence for a sequence of accept/reject outcomes (MonteCarloBarostatImpl::updateContextState:
    the counts are reset only when δV changes). ``volume``: V, constant here (never near the 0.3 V cap)."""
    scale, n_att, n_acc, out = scale0, 0, 0, []
    for a in accepts:
        n_acc += int(a)
        n_att += 1
        if n_att >= 10:
            if n_acc < 0.25 * n_att:
                scale, n_att, n_acc = scale / 1.1, 0, 0
            elif n_acc > 0.75 * n_att:
                scale, n_att, n_acc = min(scale * 1.1, 0.3 * volume), 0, 0
        out.append(scale)
    return np.asarray(out)


def test_step_adaptation_follows_openmm():
    """δV after each of 120 moves with a set accept/reject pattern equals OpenMM's rule (counts carry over while
    acceptance is between 25% and 75%, as OpenMM's do; resetting them every 10 attempts gives another sequence)."""
    rng = np.random.default_rng(3)
    # stretches of low, middling and high acceptance, so every branch (shrink, keep counting, grow) is taken
    accepts = np.concatenate([rng.random(40) < p for p in (0.1, 0.5, 0.9)])
    x = jnp.asarray(rng.uniform(0, 3, (6, 3)))
    mol = jnp.arange(6, dtype=jnp.int32)
    box = jnp.asarray([3.0, 3.0, 3.0])
    bs = barostat_init(box, jnp.float64)
    scales = []
    for i, a in enumerate(accepts):
        # w = ΔU ± 1e6 kJ/mol decides the move whatever the random draw; the box is kept so V stays 27 nm³
        acc, _, _, _, _, bs = monte_carlo_volume_move(
            jax.random.PRNGKey(i), bs, x, box, 0.0, lambda xn, bn, a=a: (-1e6 if a else 1e6, None),
            MoveSettings(mol, 6, 1.0, 2.5),
        )  # fmt: skip
        assert bool(acc) == bool(a)
        scales.append(float(bs.volume_scale))
    want = _openmm_adaptation(accepts, 0.27, 27.0)
    np.testing.assert_allclose(scales, want, rtol=1e-12)  # the same arithmetic in float64
    assert len(set(np.round(want, 9))) >= 4  # shrinks and grows both happened
