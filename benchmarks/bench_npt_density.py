"""Density target at constant pressure (fitting.npt_density.fit_density): recovery of an LJ σ from ⟨ρ⟩ at fixed P.

Argon LJ fluid, N = 108, T* = 2, P* = 1.7668. Target: ⟨ρ⟩ of an NPT run at the true σ (0.34 nm). Fit from
σ = 1.2 σ_true: the first step uses the NPT fluctuation estimate of dρ/dσ (negative: denser for smaller σ), then
secant steps. Prints σ_fit/σ_true (measured 1.009; pass criterion |σ_fit/σ_true − 1| < 2%) and the first
gradient (measured −4.3 g/cm³/nm vs ≈ −4.5 from ρ ∝ σ^-2.9). About 2.5 min on 2 cores (moved here from the
test suite, where it cost 146 s).

    python benchmarks/bench_npt_density.py
"""

from __future__ import annotations

import time

from dmd.lj_eos import state_point
from dmd.models import ARGON, lj_fluid
from fitting.npt_density import fit_density, sample_density

SIG = ARGON["sigma"]
T, P = state_point(2.0, 1.7668, SIG, ARGON["epsilon"])  # T* = 2, P* = 1.7668


def _fluid(sigma):
    # N = 108, r_c = 2σ_true and skin 0.1 nm absolute (the list's r_c/(1 - margin) + skin must fit in half the box)
    return lj_fluid(108, density=0.55, temperature=T, cutoff=2.0 * SIG, skin=0.1, sigma=sigma)


def main():
    t0 = time.perf_counter()
    kw = dict(dt=0.01, friction=1.0, every=5, chunk=50)
    truth = _fluid(SIG)
    est, _ = sample_density(
        truth, truth.params, ["lj/sigma/A"], pressure_bar=P, temperature=T, n_cycles=200, equil_cycles=100, seed=1, **kw
    )
    res = fit_density(
        _fluid(1.2 * SIG),
        ["lj/sigma/A"],
        est.mean,
        pressure_bar=P,
        temperature=T,
        n_cycles=120,
        equil_cycles=100,
        rounds=5,
        tolerance=0.004,
        max_step=0.15,
        scale_box=True,
        seed=2,
        **kw,
    )
    ratio = res["theta"][0] / SIG
    print(f"target rho = {est.mean:.4f} +- {est.error:.4f} g/cm3")
    print(f"first gradient d<rho>/dsigma = {res['history'][0]['gradient'][0]:.3f} g/cm3/nm (expected < 0, ~ -4.5)")
    print(f"sigma_fit / sigma_true = {ratio:.4f}  ({'PASS' if abs(ratio - 1) < 0.02 else 'FAIL'} at 2%)")
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
