"""Energy minimisation before dynamics: ``dmd.minimize`` vs OpenMM's ``LocalEnergyMinimizer`` (issue: the bundled
alanine dipeptide in water starts unminimised and its first steps run hot).

System: tests/data/alanine_dipeptide_water.pdb (1,447 atoms; amber14-all + amber14/tip3pfb, PME 1.0 nm, HBonds,
rigid water). Both minimisers start from the PDB positions with the same tolerance, 10 kJ/mol/nm on the RMS force
(OpenMM's default and criterion). Prints each one's energy before/after (each engine's own energy, and the final
positions of each scored by OpenMM, the energy oracle), its iterations and CPU seconds; then ``--steps`` of BAOAB
(2 fs, 300 K, γ = 1/ps) in dmd without and with ``--minimize`` and in OpenMM after its minimisation: T at step 100
and ⟨T⟩ (the thermostat's 300 K is the target).

    python benchmarks/bench_minimize.py [--steps 3000] [--tolerance 10]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PDB = ROOT / "tests" / "data" / "alanine_dipeptide_water.pdb"
FF = ["amber14-all.xml", "amber14/tip3pfb.xml"]


def openmm_context(omm_system, positions):
    import openmm as mm
    import openmm.unit as u

    integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picoseconds)
    integ.setRandomNumberSeed(1)
    ctx = mm.Context(omm_system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(positions)
    return ctx, integ


def energy_of(ctx, x=None):
    import openmm.unit as u

    if x is not None:
        ctx.setPositions(np.asarray(x, float) * u.nanometer)
    return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--tolerance", type=float, default=10.0, help="RMS force, kJ/mol/nm")
    args = ap.parse_args()
    import openmm as mm
    import openmm.unit as u

    from dmd.base.units import KB_KJ_PER_MOL_K
    from dmd.minimize import minimize
    from dmd.openmm_system import openmm_system_from_pdb, system_from_pdb
    from dmd.simulate import RunConfig, simulate

    print(f"load before: {os.getloadavg()[0]:.2f}")
    kw = dict(forcefield=FF, nonbonded="PME", cutoff=1.0, constraints="HBonds", rigid_water=True)
    system = system_from_pdb(str(PDB), **kw)
    omm_system, structure, _ = openmm_system_from_pdb(str(PDB), *kw.values())
    ctx, integ = openmm_context(omm_system, structure.positions)

    t = time.process_time()
    res = minimize(system, tolerance=args.tolerance)
    cpu_dmd = time.process_time() - t
    print(f"dmd    : {res.line()}; {cpu_dmd:.1f} CPU s (with compilation)")
    e0_omm = energy_of(ctx)

    t = time.process_time()
    mm.LocalEnergyMinimizer.minimize(ctx, args.tolerance)
    cpu_omm = time.process_time() - t
    e1_omm = energy_of(ctx)
    st = ctx.getState(getPositions=True, getForces=True)
    x_omm = st.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    rms, fmax = np.sqrt(np.mean(f**2)), np.max(np.linalg.norm(f, axis=1))
    print(
        f"OpenMM : E {e0_omm:.1f} → {e1_omm:.1f} kJ/mol (L-BFGS); RMS |F| {rms:.2f}, max |F| {fmax:.1f} kJ/mol/nm "
        f"(constraint forces included); {cpu_omm:.1f} CPU s"
    )
    print(f"CPU s ratio dmd/OpenMM (dmd with compilation): {cpu_dmd / cpu_omm:.2f}")
    e_dmd_by_omm = energy_of(ctx, res.positions)
    print(f"dmd's minimum scored by OpenMM: {e_dmd_by_omm:.1f} kJ/mol (dmd's own {res.energy_after:.1f})")
    print(f"OpenMM's minimum scored by dmd: {system.energy(np.asarray(x_omm)):.1f} kJ/mol (OpenMM's own {e1_omm:.1f})")
    print(f"final energy difference dmd − OpenMM (both by OpenMM): {e_dmd_by_omm - e1_omm:+.1f} kJ/mol")

    def temps(minimize_tol):
        cfg = RunConfig(steps=args.steps, integrator="baoab", report_every=100, progress=False, minimize=minimize_tol)
        out = simulate(system, cfg)
        return out.log[0, 4], out.summary["mean_temperature_K"]

    for label, tol in (("dmd, no minimisation", None), ("dmd --minimize", args.tolerance)):
        t100, mean_t = temps(tol)
        print(f"{label:22s}: T(step 100) = {t100:.0f} K, ⟨T⟩ over {args.steps} steps = {mean_t:.1f} K")
    ctx.setPositions(x_omm * u.nanometer)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    n_dof = 3 * omm_system.getNumParticles() - omm_system.getNumConstraints() - 3
    ts = []
    for _ in range(args.steps // 100):
        integ.step(100)
        ke = ctx.getState(getEnergy=True).getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        ts.append(2 * ke / (n_dof * KB_KJ_PER_MOL_K))
    label = "OpenMM after minimise"
    print(f"{label:22s}: T(step 100) = {ts[0]:.0f} K, ⟨T⟩ over {args.steps} steps = {np.mean(ts):.1f} K")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
