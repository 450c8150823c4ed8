"""dmd.base.units: the constants the engine shares with OpenMM (issue 16: one home per constant)."""

import openmm.unit as u

from dmd.base import units


def test_boltzmann_constant_is_openmms_to_the_last_bit():
    """k_B (kJ/mol/K) must be OpenMM's own R/1000, so temperatures, kT and Langevin noise match its integrators bit
    for bit (a value rounded to 10 digits, as one copy had, differs at 2e-11 relative)."""
    r = u.MOLAR_GAS_CONSTANT_R.value_in_unit(u.kilojoule_per_mole / u.kelvin)
    kb_na = (u.BOLTZMANN_CONSTANT_kB * u.AVOGADRO_CONSTANT_NA).value_in_unit(u.kilojoule_per_mole / u.kelvin)
    assert units.KB_KJ_PER_MOL_K == r == kb_na
    assert units.kT(300.0) == units.KB_KJ_PER_MOL_K * 300.0
