"""Constant pressure: TIP3P water at 300 K and 1 bar, dmd's Monte Carlo barostat (dmd.npt) side by side
with OpenMM's MonteCarloBarostat on the same box and settings, in ONE run.

Box: OpenMM ``Modeller.addSolvent`` with TIP3P in a cube of ``--box`` nm (2.5 nm: ~500 waters), amber14/tip3p,
PME 0.9 nm with the long-range dispersion correction, rigid waters, LangevinMiddle 2 fs, γ = 1/ps, a volume
move every 25 steps, OpenMM's adaptive ΔV (both engines). Each engine equilibrates ``--equil-ps`` then
samples ``--ps``; prints both mean densities (g/cm³) with block standard errors (10 blocks), their
difference in units of the combined error, and the speed ratio (steps/s, dmd / OpenMM CPU).

    python benchmarks/bench_barostat.py              # 20 ps + 60 ps each (a few minutes on 2 cores)
    python benchmarks/bench_barostat.py --ps 200     # tighter errors

``--lj``: the isotropic and the anisotropic barostat side by side on an LJ fluid (N = 500, T* = 2, P* = 1.7668,
r_c = 2.5σ with the analytic tail: JZG 1993 gives ρ* = 0.600): mean densities with block errors, their difference in
combined errors, acceptance, and the box edge ratios b/a, c/a of the anisotropic run (mean ± spread over the run: a
fluid has no shear or shape stiffness, so the ratios wander about 1 rather than being held there).

    python benchmarks/bench_barostat.py --lj --cycles 3000
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dmd.barostat import density_g_cm3
from dmd.estimators import block_average
from dmd.npt import run_npt
from dmd.openmm_system import system_from_openmm

T, P_BAR, DT, FRICTION, EVERY, CUTOFF = 300.0, 1.0, 0.002, 1.0, 25, 0.9


def water_box(edge_nm):
    import openmm.app as app
    import openmm.unit as u
    from openmm import Vec3

    ff = app.ForceField("amber14/tip3p.xml")
    mod = app.Modeller(app.Topology(), [])
    mod.addSolvent(ff, model="tip3p", boxSize=Vec3(edge_nm, edge_nm, edge_nm) * u.nanometer)
    omm = ff.createSystem(mod.topology, nonbondedMethod=app.PME, nonbondedCutoff=CUTOFF * u.nanometer, rigidWater=True)
    pos = np.asarray(mod.getPositions().value_in_unit(u.nanometer))
    return omm, mod.topology, pos


def run_openmm(omm, pos, n_equil, n_prod, threads):
    import openmm as mm
    import openmm.unit as u

    omm = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(omm))
    omm.addForce(mm.MonteCarloBarostat(P_BAR * u.bar, T * u.kelvin, EVERY))
    li = mm.LangevinMiddleIntegrator(T * u.kelvin, FRICTION / u.picosecond, DT * u.picoseconds)
    ctx = mm.Context(omm, li, mm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    ctx.setPositions(pos * u.nanometer)
    ctx.setVelocitiesToTemperature(T * u.kelvin, 1)
    li.step(n_equil * EVERY)
    mass = sum(omm.getParticleMass(i).value_in_unit(u.dalton) for i in range(omm.getNumParticles()))
    vols = []
    t0 = time.perf_counter()
    for _ in range(n_prod):
        li.step(EVERY)
        vols.append(ctx.getState().getPeriodicBoxVolume().value_in_unit(u.nanometer**3))
    rate = n_prod * EVERY / (time.perf_counter() - t0)
    return density_g_cm3(mass, np.asarray(vols)), rate


def run_dmd(omm, top, pos, n_equil, n_prod):
    system = system_from_openmm(omm, pos, topology=top, dtype=jnp.float32)
    kw = dict(dt=DT, temperature=T, friction=FRICTION, pressure_bar=P_BAR, every=EVERY, chunk=20)
    eq = run_npt(system, n_cycles=n_equil, **kw)
    out = run_npt(system, n_cycles=1, state=eq["state"], **kw)  # compile outside the timing
    t0 = time.perf_counter()
    out = run_npt(system, n_cycles=n_prod, state=out["state"], **kw)
    jax.block_until_ready(out["state"].positions)
    rate = n_prod * EVERY / (time.perf_counter() - t0)
    return out["density_g_cm3"], rate, out


def lj_compare(n_cycles, seed=5):
    """Isotropic vs anisotropic barostat on the JZG state point; prints densities, acceptance and edge ratios."""
    from dmd.base.units import BAR_NM3_IN_KJ_PER_MOL, KB_KJ_PER_MOL_K
    from dmd.lj_eos import jzg_density, tail_energy_per_atom
    from dmd.models import ARGON, lj_fluid

    sig, eps, n, t_star, p_star = ARGON["sigma"], ARGON["epsilon"], 500, 2.0, 1.7668
    temperature = t_star * eps / KB_KJ_PER_MOL_K
    system = lj_fluid(n, density=0.6, temperature=temperature)
    rc = system.metadata["cutoff_nm"] / sig
    kw = dict(
        dt=0.01, friction=1.0, every=10, chunk=100, temperature=temperature, seed=seed,
        pressure_bar=p_star * eps / sig**3 / BAR_NM3_IN_KJ_PER_MOL,
        extra_energy=lambda v: n * eps * tail_energy_per_atom(n * sig**3 / v, rc),
    )  # fmt: skip
    print(f"LJ N={n}, T*={t_star}, P*={p_star}, r_c={rc}σ + tail; JZG ρ* = {jzg_density(p_star, t_star):.4f}")
    res = {}
    for name in ("isotropic", "anisotropic"):
        boxes = []
        t0 = time.perf_counter()
        out = run_npt(
            system, n_cycles=n_cycles, anisotropic=name == "anisotropic", box_margin=0.06,
            on_chunk=lambda st, rec, boxes=boxes: boxes.append(np.asarray(rec["box"])), **kw,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        skip = n_cycles // 5
        rho = n * sig**3 / out["volume_nm3"][skip:]
        b = np.concatenate(boxes)[skip:]
        res[name] = block_average(rho, 10)
        m, e = res[name]
        ba, ca = b[:, 1] / b[:, 0], b[:, 2] / b[:, 0]
        print(
            f"{name:12s} ρ* = {m:.4f} ± {e:.4f}  acceptance {out['acceptance']:.3f}  b/a {ba.mean():.3f} ± "
            f"{ba.std():.3f}  c/a {ca.mean():.3f} ± {ca.std():.3f}  ({wall:.0f} s, {out['compilations']} "
            f"compilations, {out['rebuilds']} new grids)"
        )
    (mi, ei), (ma, ea) = res["isotropic"], res["anisotropic"]
    print(f"anisotropic − isotropic = {ma - mi:+.4f} = {(ma - mi) / np.hypot(ei, ea):+.2f} combined standard errors")
    print(f"machine load {os.getloadavg()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--box", type=float, default=2.5, help="cube edge, nm (default 2.5: ~500 waters)")
    ap.add_argument("--equil-ps", type=float, default=20.0)
    ap.add_argument("--ps", type=float, default=60.0, help="production per engine, ps")
    ap.add_argument("--threads", type=int, default=2, help="OpenMM CPU threads")
    ap.add_argument("--lj", action="store_true", help="isotropic vs anisotropic barostat on an LJ fluid instead")
    ap.add_argument("--cycles", type=int, default=3000, help="--lj: volume moves per barostat (10 steps each)")
    args = ap.parse_args()
    if args.lj:
        lj_compare(args.cycles)
        return
    n_equil = int(round(args.equil_ps / (DT * EVERY)))
    n_prod = int(round(args.ps / (DT * EVERY)))
    omm, top, pos = water_box(args.box)
    print(
        f"TIP3P, {top.getNumResidues()} waters, box {args.box} nm, {T} K, {P_BAR} bar, PME {CUTOFF} nm, "
        f"{args.equil_ps} ps + {args.ps} ps per engine (jax {jax.__version__}, {jax.default_backend()})"
    )
    rho_o, rate_o = run_openmm(omm, pos, n_equil, n_prod, args.threads)
    rho_d, rate_d, out = run_dmd(omm, top, pos, n_equil, n_prod)
    (m_d, e_d), (m_o, e_o) = block_average(rho_d, 10), block_average(rho_o, 10)
    z = (m_d - m_o) / np.hypot(e_d, e_o)
    print(
        f"dmd    density {m_d:.4f} ± {e_d:.4f} g/cm³  ({rate_d:7.1f} steps/s, acceptance {out['acceptance']:.2f}, "
        f"{out['rebuilds']} list rebuilds)"
    )
    print(f"OpenMM density {m_o:.4f} ± {e_o:.4f} g/cm³  ({rate_o:7.1f} steps/s, CPU {args.threads} threads)")
    print(
        f"difference {m_d - m_o:+.4f} g/cm³ = {z:+.2f} combined standard errors; speed dmd/OpenMM {rate_d / rate_o:.2f}"
    )


if __name__ == "__main__":
    main()
