"""Density targets at constant pressure: the NPT fluctuation estimator and a density fit.

A ``density`` target needs NPT sampling (:mod:`dmd.npt`: Langevin dynamics with a Monte Carlo barostat).
Per frame t the box volume V_t gives ρ_t = M/V_t (g/cm³, M the total mass). In the isothermal–isobaric ensemble
the weight of a state is exp(−βH) with the enthalpy H = U + PV, so

    d⟨ρ⟩/dθ = −β cov(ρ, ∂H/∂θ) = −β cov(ρ, ∂U/∂θ)

(∂(PV)/∂θ = 0 at fixed positions and box; ρ has no explicit θ). :func:`density_estimate` evaluates it with
:func:`dmd.estimators.fluctuation_gradient` (block-jackknife errors) and :func:`fit_density` drives a
Gauss–Newton fit of positive parameters in log space, one NPT run per round, each starting from the last
round's configuration. See docs/crystals.md, "Constant pressure".

Units: nm, nm³, K, bar, kJ/mol, g/cm³.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from dmd.barostat import density_g_cm3, find_molecules, scale_molecules
from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.estimators import block_average, fluctuation_gradient
from dmd.npt import run_npt
from dmd.params import select

__all__ = ["DensityEstimate", "density_estimate", "sample_density", "fit_density"]


@dataclasses.dataclass(frozen=True)
class DensityEstimate:
    """⟨ρ⟩ (g/cm³) with its block standard error, and d⟨ρ⟩/dθ ``[P]`` (g/cm³ per unit θ) with its jackknife error."""

    mean: float
    error: float
    gradient: np.ndarray
    gradient_error: np.ndarray


def density_estimate(volumes_nm3, du_dtheta, total_mass_amu: float, temperature: float, n_blocks: int = 10):
    """NPT density and its θ-gradient from per-frame volumes ``[F]`` nm³ and ∂U/∂θ ``[F, P]`` kJ/mol per unit θ."""
    rho = density_g_cm3(float(total_mass_amu), np.asarray(volumes_nm3, float))
    mean, err = block_average(rho, n_blocks)
    g = fluctuation_gradient(rho, du_dtheta, 1.0 / (KB_KJ_PER_MOL_K * temperature), n_blocks=n_blocks)
    return DensityEstimate(float(mean), float(err), np.asarray(g.value), np.asarray(g.stderr))


def sample_density(system, params, names, *, temperature, n_cycles, equil_cycles=0, **npt_kwargs):
    """One NPT run at θ = ``params``: (:class:`DensityEstimate` for the parameters ``names``, run_npt's output).

    ``npt_kwargs`` go to :func:`dmd.npt.run_npt` (pressure_bar, dt, friction, every, seed, box_margin, ...);
    the first ``equil_cycles`` cycles are dropped.
    """
    sel = select(system.param_labels, names)
    out = run_npt(
        system,
        n_cycles=n_cycles + equil_cycles,
        temperature=temperature,
        params=params,
        tangents=sel.tangents(params),
        **npt_kwargs,
    )
    mass = float(np.sum(np.asarray(system.masses)))
    est = density_estimate(out["volume_nm3"][equil_cycles:], out["du_dtheta"][equil_cycles:], mass, temperature)
    return est, out


def fit_density(
    system,
    names,
    target_g_cm3: float,
    *,
    temperature: float,
    n_cycles: int,
    equil_cycles: int = 0,
    rounds: int = 5,
    max_step: float = 0.25,
    tolerance: float | None = None,
    scale_box: bool = False,
    **npt_kwargs,
):
    """Fit the positive parameters ``names`` so that the NPT density at (P, T) equals ``target_g_cm3``.

    ``npt_kwargs`` go to :func:`sample_density` and on to :func:`dmd.npt.run_npt` (``pressure_bar`` P required,
    dt, friction, every, seed, ...).

    Each round runs :func:`sample_density` at the current θ (from the previous round's positions and box), then
    takes the minimum-norm Gauss–Newton step in z = ln θ, Δz = −J (ρ − ρ_target)/|J|², clipped to ``max_step``
    in norm (0.25: ±25% per round). J = dρ/dz starts as the NPT fluctuation estimate θ·d⟨ρ⟩/dθ of the first
    round; later rounds update it with Broyden's secant rule from the measured densities, J ← J + (Δρ − J·Δz)
    Δzᵀ/|Δz|², which is far less noisy than a fresh covariance of two fluctuating quantities. Stops after
    ``rounds`` or when |ρ − ρ_target| is below ``tolerance`` (default: twice the run's standard error).
    ``scale_box`` (one length parameter such as an LJ σ): the next round starts from the last box and molecule
    centres scaled by θ_new/θ_old, the configuration of the same reduced density, so the box need not relax
    through the whole change by volume moves (which lag and bias the measured density).

    Returns:
      dict: ``params`` (fitted θ pytree), ``theta`` ``[P]``, ``names``, ``history`` (per round: theta, density,
      error, gradient).
    """
    if not target_g_cm3 > 0:
        raise UserInputError(f"density target {target_g_cm3} g/cm³: pass a positive density")
    sel = select(system.param_labels, names)
    params = system.params
    theta = np.asarray(sel.get(params), float)
    if np.any(theta <= 0):
        raise UserInputError(f"fit_density fits positive parameters in log space; {names} has θ = {theta}")
    history = []
    jac = prev = None
    for _ in range(rounds):
        est, out = sample_density(
            system,
            params,
            sel.names,
            temperature=temperature,
            n_cycles=n_cycles,
            equil_cycles=equil_cycles,
            **npt_kwargs,
        )
        history.append(
            {"theta": theta.tolist(), "density": est.mean, "error": est.error, "gradient": est.gradient.tolist()}
        )
        r = est.mean - target_g_cm3
        tol = 2.0 * est.error if tolerance is None else tolerance
        if abs(r) < tol:
            break
        z = np.log(theta)
        if jac is None:
            jac = est.gradient * theta
        else:
            dz, drho = z - prev[0], est.mean - prev[1]
            jac = jac + (drho - jac @ dz) * dz / float(dz @ dz)
        prev = (z, est.mean)
        if not np.all(np.isfinite(jac)) or float(jac @ jac) == 0.0:
            raise UserInputError(f"density gradient {est.gradient} carries no information about {list(sel.names)}")
        dz = -jac * r / float(jac @ jac)
        norm = float(np.linalg.norm(dz))
        if norm > max_step:
            dz *= max_step / norm
        theta = theta * np.exp(dz)
        params = sel.set(params, jnp.asarray(theta))
        st = out["state"]
        x, box = st.positions, st.box
        if scale_box:
            f = float(np.exp(dz).mean())
            mol = find_molecules(system)
            x = scale_molecules(x, jnp.asarray(mol), int(mol.max()) + 1, f)
            box = box * f
        system = dataclasses.replace(system, positions=x, box=box, params=params)
    return {"params": params, "theta": theta, "names": list(sel.names), "history": history}
