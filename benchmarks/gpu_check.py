"""GPU readiness (issue 20, item 6): engine, structure factors and reweighting on a GPU, when one exists.

Runs only where jax sees a GPU (jax with CUDA); otherwise prints why and exits 0, so it is safe anywhere
(CI never needs a GPU). On a GPU it reports:

* engine: BAOAB steps/s of alanine dipeptide in water (tests/data/alanine_dipeptide_water.pdb, amber14 +
  TIP3P-FB, PME 0.9 nm, rigid water, 2 fs, 300 K, γ = 1/ps, float32) against OpenMM's CUDA platform
  (LangevinMiddleIntegrator, same settings; OpenMM's CPU platform if CUDA is missing), compilation excluded;
  also the first energy against OpenMM's (kJ/mol) as a sanity check;
* structure factors: spread + FFT F(h) frames/s of 20,000 random atoms in a 50 Å P1 cell to 2 Å;
* reweighting: Boltzmann weights of 10⁵ frames and the reweighted diffuse intensity of a
  [2,000 frames, 32,633 reflections] F block;
* villin: the engine benchmark's solvated protein (OpenMM's test.pdb, 8,867 atoms, amber14 + TIP3P, PME 0.9 nm,
  HBonds, rigid water, 2 fs, float32; skin from ``dmd.skin``'s rule measured on this device, as
  ``bench_engine.py`` does), dmd BAOAB against OpenMM's LangevinMiddle on CUDA (mixed precision), with the
  number of list rebuilds.

    python benchmarks/gpu_check.py [--steps 2000] [--parts engine sf reweight villin]
    python benchmarks/gpu_check.py --cpu --steps 100 --frames 2   # smoke test of this script without a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT / "tests" / "data" / "alanine_dipeptide_water.pdb"
FF = ("amber14-all.xml", "amber14/tip3pfb.xml")


def _gpu():
    """The first jax GPU device, or None (with the reason printed)."""
    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError as exc:
        print(f"gpu_check: no GPU visible to jax ({str(exc).splitlines()[0]}); nothing to check.")
        print("gpu_check: install jax with CUDA (pip install 'jax[cuda12]') on a machine with an NVIDIA GPU.")
        return None
    return gpus[0] if gpus else None


def _block(x):
    import jax

    return jax.block_until_ready(x)


def engine(steps: int) -> None:
    import jax

    from dmd.integrators import make_integrator
    from dmd.openmm_system import system_from_pdb

    system = system_from_pdb(WATER, FF, nonbonded="PME", cutoff=0.9)
    integ = make_integrator("baoab", system, dt=0.002, temperature=300.0, friction=1.0)
    chunk = 100

    @jax.jit
    def run(state, params):
        return jax.lax.fori_loop(0, chunk, lambda i, s: integ.step(s, params), state)

    t0 = time.perf_counter()
    state = _block(integ.init(jax.random.PRNGKey(0), system.params))
    e0 = float(state.potential_energy)
    state = _block(run(state, system.params))
    compile_s = time.perf_counter() - t0
    n = max(1, steps // chunk)
    t0 = time.perf_counter()
    for _ in range(n):
        state = run(state, system.params)
        if bool(state.neighbor is not None and state.neighbor.did_buffer_overflow):
            state = integ.init(jax.random.PRNGKey(1), system.params, state.positions, state.velocities)
    _block(state.positions)
    dmd_sps = n * chunk / (time.perf_counter() - t0)
    omm_name, omm_e0, omm_sps = _openmm(n * chunk)
    print(f"engine   alanine dipeptide + water, {system.positions.shape[0]} atoms, PME 0.9 nm, float32")
    print(f"         first energy dmd {e0:.2f} kJ/mol, OpenMM {omm_e0:.2f} kJ/mol; init + compile {compile_s:.1f} s")
    print(f"         dmd {dmd_sps:.0f} steps/s, OpenMM {omm_name} {omm_sps:.0f} steps/s, ratio {dmd_sps / omm_sps:.2f}")


def _openmm(steps: int):
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u

    pdb = app.PDBFile(str(WATER))
    system = app.ForceField(*FF).createSystem(
        pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=None, rigidWater=True
    )
    names = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    name = "CUDA" if "CUDA" in names else "CPU"
    props = {"Precision": "mixed"} if name == "CUDA" else {}
    integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picoseconds)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(name), props)
    ctx.setPositions(pdb.positions)
    e0 = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    integ.step(100)
    ctx.getState(getPositions=True)
    t0 = time.perf_counter()
    integ.step(steps)
    ctx.getState(getPositions=True)
    return name, e0, steps / (time.perf_counter() - t0)


def structure_factors(frames: int = 20) -> None:
    import jax
    import numpy as np

    from analysis import symmetry
    from analysis.structure_factors import make_fft_plan, structure_factors_fft

    a, n_atoms = 50.0, 20_000
    cell = np.array([a, a, a, 90.0, 90.0, 90.0])
    hkl = symmetry.generate_hkl(cell, 2.0, "P 1", unique=True)
    rng = np.random.default_rng(0)
    elements = list(rng.choice(["H", "C", "N", "O", "S"], n_atoms, p=[0.5, 0.3, 0.08, 0.11, 0.01]))
    base = rng.random((n_atoms, 3))
    traj = (base[None] + rng.normal(0, 0.3 / a, (frames, n_atoms, 3))).astype(np.float32)
    plan = make_fft_plan(hkl, cell, elements)
    fn = jax.jit(lambda x: structure_factors_fft(plan, x, cell.astype(np.float32)))
    _block(fn(traj[0]))
    t0 = time.perf_counter()
    for x in traj:
        f = fn(x)
    _block(f)
    fps = frames / (time.perf_counter() - t0)
    print(f"sf       {n_atoms} atoms, {len(hkl)} reflections (50 Å P1, 2 Å): {fps:.1f} frames/s")


def reweighting() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from analysis.diffuse import diffuse_intensity
    from dmd.estimators import boltzmann_reweight

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    w, neff = boltzmann_reweight(rng.normal(0, 5, 100_000), 1 / 2.494)
    w_s = time.perf_counter() - t0
    T, M = 2000, 32_633
    F = jax.device_put((rng.standard_normal((T, M)) + 1j * rng.standard_normal((T, M))).astype(np.complex64))
    wt = jnp.asarray(w[:T], jnp.float32)
    fn = jax.jit(diffuse_intensity)
    _block(fn(F, wt))
    t0 = time.perf_counter()
    for _ in range(10):
        out = fn(F, wt)
    _block(out)
    per = (time.perf_counter() - t0) / 10
    print(f"reweight weights of 1e5 frames {w_s * 1e3:.1f} ms (N_eff {neff:.0f}); I_D of [{T}, {M}] {per * 1e3:.2f} ms")


def villin(steps: int, skin: float | None = None, pieces: bool = False) -> None:
    import jax
    import jax.numpy as jnp
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u
    from bench_engine import _villin_runner, choose_villin_skin, villin_pieces

    from dmd.openmm_system import openmm_system_from_pdb, system_from_pdb

    pdb = str(Path(app.__file__).parent / "data" / "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    t0 = time.perf_counter()
    skin, facts = choose_villin_skin(pdb, kw) if skin is None else (skin, "given")
    system = system_from_pdb(pdb, dtype=jnp.float32, skin=skin, **kw)
    integ, run = _villin_runner(system)  # jitted chunks of 50 steps, counting list rebuilds
    carry = run((integ.init(jax.random.PRNGKey(0), system.params), jnp.zeros((), jnp.int32)))
    carry = _block((carry[0], jnp.zeros((), jnp.int32)))
    setup_s = time.perf_counter() - t0
    n = max(1, steps // 50)
    t0 = time.perf_counter()
    for _ in range(n):
        carry = run(carry)
    _block(carry)
    dmd_sps = n * 50 / (time.perf_counter() - t0)
    omm, structure, _ = openmm_system_from_pdb(pdb, **kw)
    names = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    name = "CUDA" if "CUDA" in names else "CPU"
    li = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picoseconds)
    props = {"Precision": "mixed"} if name == "CUDA" else {}
    ctx = mm.Context(omm, li, mm.Platform.getPlatformByName(name), props)
    ctx.setPositions(structure.positions)
    li.step(100)
    ctx.getState(getEnergy=True)
    t0 = time.perf_counter()
    li.step(n * 50)
    ctx.getState(getEnergy=True)
    omm_sps = n * 50 / (time.perf_counter() - t0)
    print(f"villin   + water, {system.n_atoms} atoms, PME 0.9 nm, HBonds, float32; skin {skin} nm ({facts})")
    print(f"         skin probe + init + compile {setup_s:.1f} s; {int(carry[1])} list rebuilds in {n * 50} steps")
    print(f"         dmd {dmd_sps:.0f} steps/s, OpenMM {name} {omm_sps:.0f} steps/s, ratio {dmd_sps / omm_sps:.2f}")
    if pieces:  # where dmd's step time goes on this device (bench_engine's breakdown)
        for k, v in villin_pieces(system, carry[0].positions).items():
            print(f"         piece {k:38s} {v:9.3f}" + ("" if k.startswith("neighbours") else " ms"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="timed engine steps (default 2000)")
    ap.add_argument("--frames", type=int, default=20, help="timed structure-factor frames (default 20)")
    ap.add_argument("--cpu", action="store_true", help="run the checks on the CPU (smoke test without a GPU)")
    ap.add_argument(
        "--parts", nargs="+", default=["engine", "sf", "reweight", "villin"], help="which checks (default: all four)"
    )
    ap.add_argument("--skin", type=float, nargs="+", default=[None], help="villin list skin(s), nm (default: rule)")
    ap.add_argument("--pieces", action="store_true", help="villin: also time each piece of the force")
    args = ap.parse_args()
    dev = __import__("jax").devices("cpu")[0] if args.cpu else _gpu()
    if dev is None:
        return 0
    print(f"gpu_check on {dev.device_kind} ({dev}); jax default backend {__import__('jax').default_backend()}")
    for name, fn in (
        ("engine", lambda: engine(args.steps)),
        ("sf", lambda: structure_factors(args.frames)),
        ("reweight", reweighting),
        *(("villin", lambda s=s: villin(args.steps, s, args.pieces)) for s in args.skin),
    ):
        if name not in args.parts:
            continue
        try:
            fn()
        except Exception as exc:  # report every part: one failing part must not hide the others
            print(f"{name:<8} FAILED: {type(exc).__name__}: {exc}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
