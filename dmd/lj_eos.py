"""Equation of state of the Lennard-Jones fluid: the modified Benedict–Webb–Rubin (MBWR) fit of
J. Karl Johnson, John A. Zollweg and Keith E. Gubbins, "The Lennard-Jones equation of state revisited",
Molecular Physics 78(3), 591–618 (1993), doi:10.1080/00268979300100411 (JZG 1993).

Reduced units: T* = k_B T/ε, ρ* = ρσ³, P* = Pσ³/ε. For the full (untruncated) LJ potential; a
simulation with a cutoff must add the long-range (tail) correction to match it
(:func:`tail_energy_per_atom`, :func:`tail_pressure`). The 32 linear coefficients x₁…x₃₂ and γ = 3 are
those of the paper's Table 10. See docs/crystals.md, "Constant pressure".
"""

from __future__ import annotations

import math

import numpy as np

from dmd.base.units import BAR_NM3_IN_KJ_PER_MOL, KB_KJ_PER_MOL_K

__all__ = [
    "JZG_GAMMA",
    "JZG_X",
    "jzg_density",
    "jzg_pressure",
    "state_point",
    "tail_energy_per_atom",
    "tail_pressure",
]

#: γ of the MBWR exponential, JZG 1993.
JZG_GAMMA = 3.0
#: x₁ … x₃₂ of JZG 1993, Table 10 (index 0 holds x₁).
JZG_X = (
    0.8623085097507421,
    2.976218765822098,
    -8.402230115796038,
    0.1054136629203555,
    -0.8564583828174598,
    1.582759470107601,
    0.7639421948305453,
    1.753173414312048,
    2.798291772190376e3,
    -4.8394220260857657e-2,
    0.9963265197721935,
    -3.698000291272493e1,
    2.084012299434647e1,
    8.305402124717285e1,
    -9.574799715203068e2,
    -1.477746229234994e2,
    6.398607852471505e1,
    1.603993673294834e1,
    6.805916615864377e1,
    -2.791293578795945e3,
    -6.245128304568454,
    -8.116836104958410e3,
    1.488735559561229e1,
    -1.059346754655084e4,
    -1.131607632802822e2,
    -8.867771540418822e3,
    -3.986982844450543e1,
    -4.689270299917261e3,
    2.593535277438717e2,
    -2.694523589434903e3,
    -7.218487631550215e2,
    1.721802063863269e2,
)


def _ab(t):
    x = (0.0,) + JZG_X  # x[i] is x_i
    a = (
        x[1] * t + x[2] * math.sqrt(t) + x[3] + x[4] / t + x[5] / t**2,
        x[6] * t + x[7] + x[8] / t + x[9] / t**2,
        x[10] * t + x[11] + x[12] / t,
        x[13],
        x[14] / t + x[15] / t**2,
        x[16] / t,
        x[17] / t + x[18] / t**2,
        x[19] / t**2,
    )
    b = (
        x[20] / t**2 + x[21] / t**3,
        x[22] / t**2 + x[23] / t**4,
        x[24] / t**2 + x[25] / t**3,
        x[26] / t**2 + x[27] / t**4,
        x[28] / t**2 + x[29] / t**3,
        x[30] / t**2 + x[31] / t**3 + x[32] / t**4,
    )
    return a, b


def jzg_pressure(density, temperature):
    """P* of the full LJ fluid at reduced density ρ* (scalar or array) and temperature T* (JZG 1993, eq. 7):

    P* = ρ*T* + Σ_{i=1..8} a_i ρ*^{i+1} + F Σ_{i=1..6} b_i ρ*^{2i+1},  F = exp(−γρ*²).
    """
    rho = np.asarray(density, float)
    a, b = _ab(float(temperature))
    f = np.exp(-JZG_GAMMA * rho**2)
    p = rho * temperature
    for i, ai in enumerate(a, start=1):
        p = p + ai * rho ** (i + 1)
    for i, bi in enumerate(b, start=1):
        p = p + f * bi * rho ** (2 * i + 1)
    return p


def jzg_density(pressure, temperature, *, lo: float = 1e-6, hi: float = 1.2) -> float:
    """ρ* at which :func:`jzg_pressure` equals P* (bisection on [lo, hi]; supercritical or one-phase states)."""
    f = lambda r: float(jzg_pressure(r, temperature)) - pressure  # noqa: E731
    if f(lo) * f(hi) > 0:
        raise ValueError(f"jzg_density: P*={pressure} is not bracketed in ρ* ∈ [{lo}, {hi}] at T*={temperature}")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(lo) * f(mid) <= 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def tail_energy_per_atom(density, cutoff):
    """Long-range correction U_tail/N in units of ε for a cutoff r_c (σ units), g(r) = 1 beyond r_c:
    (8/3)πρ*[(1/3) r_c⁻⁹ − r_c⁻³]."""
    return 8.0 / 3.0 * math.pi * density * (cutoff**-9 / 3.0 - cutoff**-3)


def tail_pressure(density, cutoff):
    """Long-range correction to P* for a cutoff r_c (σ units): (16/3)πρ*²[(2/3) r_c⁻⁹ − r_c⁻³]."""
    return 16.0 / 3.0 * math.pi * density**2 * (2.0 / 3.0 * cutoff**-9 - cutoff**-3)


def state_point(t_star: float, p_star: float, sigma: float, epsilon: float) -> tuple[float, float]:
    """``(T in K, P in bar)`` of the reduced state point (T*, P*) for LJ σ (nm) and ε (kJ/mol):
    T = T* ε/k_B, P = P* ε/σ³ (:mod:`dmd.base.units` constants)."""
    return t_star * epsilon / KB_KJ_PER_MOL_K, p_star * epsilon / sigma**3 / BAR_NM3_IN_KJ_PER_MOL
