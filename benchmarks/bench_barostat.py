"""Constant pressure: TIP3P water at 300 K and 1 bar, dmd's Monte Carlo barostat (dmd.npt) side by side
with OpenMM's MonteCarloBarostat on the same box and settings, in ONE run.

Box: OpenMM ``Modeller.addSolvent`` with TIP3P in a cube of ``--box`` nm (2.5 nm: 501 waters), amber14/tip3p,
PME 0.9 nm with the long-range dispersion correction, rigid waters, minimised once (OpenMM) so both engines start from
the same configuration; then each runs LangevinMiddle/BAOAB 2 fs, γ = 1/ps, 300 K, a volume move every 25 steps with
OpenMM's adaptive ΔV (dmd float32; OpenMM CPU platform, ``--threads``). The engines run in alternating segments of
``--block-ps`` (OpenMM then dmd; OpenMM's ``--openmm-factor`` times as long, as it is the faster engine: for a given
wall time the combined error is least with each engine's time ∝ 1/√(cost per ps)), so both have their share whenever
the run stops: at ``--ps`` of dmd production, or once ``--wall-min`` minutes have passed (a loaded machine).
``--equil-ps`` is discarded.
Prints, per engine, the mean density (g/cm³) with block standard errors for blocks of 1, 2 and 4 segments (the
quoted SE is the largest: blocks must be longer than the volume's correlation time), the kinetic temperature
(2⟨KE⟩/(n_dof k_B), n_dof = 3N − constraints, − 3 more for OpenMM's CMMotionRemover), the difference in units of the
combined SE, steps/s and the machine load.

    python benchmarks/bench_barostat.py                          # 20 ps equilibration + 200 ps each
    python benchmarks/bench_barostat.py --equil-ps 10 --block-ps 5 --openmm-factor 2 --ps 400 --wall-min 58

The second (2 cores at load 5–11, 59 min): dmd 130 ps 0.9834 ± 0.0013, OpenMM 260 ps 0.9820 ± 0.0011 g/cm³,
+0.85 combined SE; T_kin 299.9 / 300.7 K; dmd 31 steps/s, OpenMM (1 thread) 119 steps/s (docs/crystals.md).

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
from options import add_options

from dmd.barostat import density_g_cm3
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.estimators import block_average
from dmd.npt import run_npt
from dmd.openmm_system import system_from_openmm

T, P_BAR, DT, FRICTION, EVERY, CUTOFF = 300.0, 1.0, 0.002, 1.0, 25, 0.9


def water_box(edge_nm):
    """(openmm.System, topology, minimised positions nm, box [3] nm): the shared start of both engines."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u
    from openmm import Vec3

    ff = app.ForceField("amber14/tip3p.xml")
    mod = app.Modeller(app.Topology(), [])
    mod.addSolvent(ff, model="tip3p", boxSize=Vec3(edge_nm, edge_nm, edge_nm) * u.nanometer)
    omm = ff.createSystem(mod.topology, nonbondedMethod=app.PME, nonbondedCutoff=CUTOFF * u.nanometer, rigidWater=True)
    ctx = mm.Context(omm, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    ctx.setPositions(mod.getPositions())
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 500)
    pos = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    return omm, mod.topology, np.asarray(pos), np.full(3, edge_nm)


class OpenMMRun:
    """OpenMM's MonteCarloBarostat + LangevinMiddleIntegrator on the CPU platform; ``segment(n_cycles)`` returns the
    density g/cm³ and kinetic energy kJ/mol after each barostat period."""

    def __init__(self, omm, pos, threads, seed=1):
        import openmm as mm
        import openmm.unit as u

        self.u = u
        omm = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(omm))
        baro = mm.MonteCarloBarostat(P_BAR * u.bar, T * u.kelvin, EVERY)
        baro.setRandomNumberSeed(seed)
        omm.addForce(baro)
        self.li = mm.LangevinMiddleIntegrator(T * u.kelvin, FRICTION / u.picosecond, DT * u.picoseconds)
        self.li.setRandomNumberSeed(seed)
        self.ctx = mm.Context(omm, self.li, mm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
        self.ctx.setPositions(pos * u.nanometer)
        self.ctx.setVelocitiesToTemperature(T * u.kelvin, seed)
        self.mass = sum(omm.getParticleMass(i).value_in_unit(u.dalton) for i in range(omm.getNumParticles()))
        remover = any(f.getName() == "CMMotionRemover" for f in omm.getForces())
        self.n_dof = 3 * omm.getNumParticles() - omm.getNumConstraints() - 3 * remover
        self.steps = 0

    def segment(self, n_cycles):
        rho, ke = [], []
        for _ in range(n_cycles):
            self.li.step(EVERY)
            st = self.ctx.getState(getEnergy=True)
            rho.append(density_g_cm3(self.mass, st.getPeriodicBoxVolume().value_in_unit(self.u.nanometer**3)))
            ke.append(st.getKineticEnergy().value_in_unit(self.u.kilojoule_per_mole))
        self.steps += n_cycles * EVERY
        return np.asarray(rho), np.asarray(ke)


class DmdRun:
    """dmd's NPT (float32, dmd.npt.run_npt) continued segment by segment with one compiled chunk (``cache``)."""

    def __init__(self, omm, top, pos, seed=1):
        self.system = system_from_openmm(omm, pos, topology=top, dtype=jnp.float32)
        self.kw = dict(dt=DT, temperature=T, friction=FRICTION, pressure_bar=P_BAR, every=EVERY, chunk=20, seed=seed)
        self.n_dof = 3 * omm.getNumParticles() - omm.getNumConstraints()  # no centre-of-mass motion removal in dmd
        self.state, self.cache, self.steps, self.out = None, {}, 0, None

    def segment(self, n_cycles):
        ke = []
        self.out = run_npt(
            self.system, n_cycles=n_cycles, state=self.state, cache=self.cache,
            on_chunk=lambda st, rec: ke.append(np.asarray(rec["kinetic"])), **self.kw,
        )  # fmt: skip
        self.state = self.out["state"]
        self.steps += n_cycles * EVERY
        return self.out["density_g_cm3"], np.concatenate(ke)


def _summary(name, rho, ke, n_dof, seg_cycles):
    """Mean density, the SE for blocks of 1, 2 and 4 segments (quoted: the largest), kinetic temperature."""
    n_seg = len(rho) // seg_cycles
    ses = [block_average(rho[: n_seg * seg_cycles], n_seg // k)[1] for k in (1, 2, 4) if n_seg // k >= 4]
    t_kin = 2.0 * ke.mean() / (n_dof * KB_KJ_PER_MOL_K)
    t_se = 2.0 * block_average(ke, max(n_seg, 2))[1] / (n_dof * KB_KJ_PER_MOL_K)
    se = max(ses) if ses else float("nan")
    print(
        f"{name:6s} density {rho.mean():.4f} ± {se:.4f} g/cm³ (SE for blocks of 1/2/4 segments: "
        f"{', '.join(f'{e:.4f}' for e in ses)}); T_kin {t_kin:.2f} ± {t_se:.2f} K (n_dof {n_dof})",
        flush=True,
    )
    return rho.mean(), se


def water_compare(args):
    t_start = time.perf_counter()
    seg = int(round(args.block_ps / (DT * EVERY)))
    n_equil = int(round(args.equil_ps / (DT * EVERY)))
    omm, top, pos, _ = water_box(args.box)
    print(
        f"TIP3P, {top.getNumResidues()} waters, box {args.box} nm, {T} K, {P_BAR} bar, PME {CUTOFF} nm + dispersion "
        f"correction, rigid water, {DT * 1e3:.0f} fs, γ {FRICTION}/ps, volume move every {EVERY} steps; "
        f"{args.equil_ps} ps equilibration + up to {args.ps} ps in {args.block_ps} ps segments per engine "
        f"(jax {jax.__version__}, {jax.default_backend()}; load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    engines = {"OpenMM": OpenMMRun(omm, pos, args.threads), "dmd": DmdRun(omm, top, pos)}
    rec = {k: ([], []) for k in engines}
    wall = dict.fromkeys(engines, 0.0)
    for name, eng in engines.items():  # equilibration (discarded), the dmd one includes its compilation
        t0 = time.perf_counter()
        eng.segment(n_equil)
        print(f"{name} equilibrated {args.equil_ps} ps in {time.perf_counter() - t0:.0f} s", flush=True)
    done_ps = 0.0
    while done_ps < args.ps - 1e-9 and (time.perf_counter() - t_start) < 60 * args.wall_min:
        for name, eng in engines.items():
            t0 = time.perf_counter()
            rho, ke = eng.segment(seg * (args.openmm_factor if name == "OpenMM" else 1))
            wall[name] += time.perf_counter() - t0
            rec[name][0].append(rho)
            rec[name][1].append(ke)
        done_ps += args.block_ps
        print(
            f"  dmd {done_ps:6.1f} ps: " + ", ".join(f"{k} {np.concatenate(rec[k][0]).mean():.4f}" for k in engines)
            + f"  (wall {time.perf_counter() - t_start:.0f} s, load {os.getloadavg()[0]:.1f})",
            flush=True,
        )  # fmt: skip
    n_seg = len(rec["dmd"][0])
    print(
        f"production dmd {done_ps:.0f} ps, OpenMM {done_ps * args.openmm_factor:.0f} ps (segments of {args.block_ps} "
        f"ps), after {args.equil_ps} ps each"
    )
    res = {}
    for name, eng in engines.items():
        n = seg * (args.openmm_factor if name == "OpenMM" else 1)
        res[name] = _summary(name, np.concatenate(rec[name][0]), np.concatenate(rec[name][1]), eng.n_dof, n)
    (m_d, e_d), (m_o, e_o) = res["dmd"], res["OpenMM"]
    rate = {k: n_seg * seg * EVERY * (args.openmm_factor if k == "OpenMM" else 1) / wall[k] for k in engines}
    out = engines["dmd"].out
    print(
        f"difference dmd − OpenMM {m_d - m_o:+.4f} g/cm³ = {(m_d - m_o) / np.hypot(e_d, e_o):+.2f} combined SE; "
        f"dmd acceptance {out['acceptance']:.2f}, final δV {float(out['state'].barostat.volume_scale):.4f} nm³"
    )
    print(
        f"speed dmd {rate['dmd']:.0f} steps/s, OpenMM CPU ({args.threads} thread) {rate['OpenMM']:.0f} steps/s, "
        f"ratio {rate['dmd'] / rate['OpenMM']:.2f}; total wall {time.perf_counter() - t_start:.0f} s, "
        f"load {os.getloadavg()}"
    )


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
    add_options(
        ap,
        (
            ("--box", float, 2.5, "cube edge, nm (default 2.5: 501 waters)"),
            ("--equil-ps", float, 20.0, "discarded start per engine, ps"),
            ("--ps", float, 200.0, "dmd production, ps"),
            ("--block-ps", float, 10.0, "segment (and block) length, ps"),
            ("--wall-min", float, 1e9, "stop after this many minutes (at a round's end)"),
            ("--openmm-factor", int, 1, "OpenMM simulates this many times dmd's ps"),
            ("--threads", int, 1, "OpenMM CPU threads"),
            ("--cycles", int, 3000, "--lj: volume moves per barostat (10 steps each)"),
        ),
    )
    ap.add_argument("--lj", action="store_true", help="isotropic vs anisotropic barostat on an LJ fluid instead")
    args = ap.parse_args()
    if args.lj:
        lj_compare(args.cycles)
    else:
        water_compare(args)


if __name__ == "__main__":
    main()
