"""Integrators (jax-md based): seed-form Langevin, BAOAB / LangevinMiddle, velocity Verlet.

Seed-form Langevin (the "exact solution for fitting parameters to ensemble observables" note, eq. 4-5)::

    v_t = a v_{t-1} - b ∇E(x_{t-1}; θ) + c n_{t-1}
    x_t = x_{t-1} + v_t δt

with, per atom of mass m (amu), friction γ (1/ps), thermal energy kT (kJ/mol), step δt (ps):
a = exp(−γ δt), b = (1 − a)/(γ m) (→ δt/m as γ → 0), c = sqrt((1 − a²) kT / m).
The velocity update is the exact Ornstein-Uhlenbeck step for a force held constant over δt.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["BOLTZMANN_KJ_MOL_K", "langevin_coefficients"]

# k_B in kJ/(mol K), the value OpenMM uses (CODATA 2018 × N_A).
BOLTZMANN_KJ_MOL_K = 0.00831446261815324


def langevin_coefficients(dt, friction, kT, masses):
    """Seed-form Langevin coefficients (a, b, c).

    Args:
      dt: time step δt, ps.
      friction: γ, 1/ps (> 0; use velocity Verlet for γ = 0).
      kT: thermal energy, kJ/mol (= BOLTZMANN_KJ_MOL_K * temperature_K).
      masses: ``[n_atoms]`` amu.

    Returns:
      a: scalar; b: ``[n_atoms, 1]`` ps/amu; c: ``[n_atoms, 1]`` nm/ps.
    """
    masses = jnp.asarray(masses)
    a = jnp.exp(-friction * dt)
    b = ((1 - a) / (friction * masses))[:, None]
    c = jnp.sqrt((1 - a**2) * kT / masses)[:, None]
    return a, b, c
