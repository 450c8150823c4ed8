"""Unit conversions at the boundary between the MD side (OpenMM units) and the crystallographic side.

MD: nm, ps, kJ/mol, amu, elementary charge, K. Crystallography: Å, 1/Å, degrees. ``inv_d2`` always means 1/d² in
Å⁻² (``s = 1/d``, ``inv_d2 = s²``).
"""

from __future__ import annotations

ANGSTROM_PER_NM = 10.0
NM_PER_ANGSTROM = 0.1
#: Boltzmann constant in kJ/(mol K): the molar gas constant R/1000 as OpenMM computes it (openmm.unit's
#: MOLAR_GAS_CONSTANT_R = BOLTZMANN_CONSTANT_kB · AVOGADRO_CONSTANT_NA, CODATA 2018), to the last bit. The one home
#: of k_B in dmd: import it from here.
KB_KJ_PER_MOL_K = 0.00831446261815324
#: 1 bar · nm³ in kJ/mol (for the PV term of a barostat: N_A · 1e5 Pa · 1e-27 m³ / 1000, N_A = 6.02214076e23 exactly
#: (CODATA 2018): OpenMM's MonteCarloBarostat's AVOGADRO·1e-25).
BAR_NM3_IN_KJ_PER_MOL = 0.0602214076
#: 1/(4π ε0) in kJ nm/(mol e²): the value OpenMM 8 uses (measured from a two-charge system; dmd.forces.pme
#: re-exports it).
ONE_4PI_EPS0 = 138.93545764438198
#: amu/nm³ → g/cm³ (1.66053906660e-24 g / 1e-21 cm³).
AMU_PER_NM3_IN_G_PER_CM3 = 1.66053906660e-3  # 1 amu/nm^3 = 1.6605e-24 g / 1e-21 cm^3


def kT(temperature_k: float) -> float:
    """Thermal energy k_B T in kJ/mol for a temperature in K."""
    return KB_KJ_PER_MOL_K * temperature_k


__all__ = [
    "AMU_PER_NM3_IN_G_PER_CM3",
    "ANGSTROM_PER_NM",
    "BAR_NM3_IN_KJ_PER_MOL",
    "ONE_4PI_EPS0",
    "KB_KJ_PER_MOL_K",
    "NM_PER_ANGSTROM",
    "kT",
]
