"""Engine speed: steps/s of this engine vs stock jax-md vs OpenMM's CPU platform, in ONE run.

LJ fluid (ρσ³ = 0.8, cutoff 2.5σ, T* = 1, argon units, float32, Langevin γ = 1/ps, δt = 0.01 ps) at
N = 1,000 and 8,000, and villin in water (OpenMM's test.pdb, amber14 + tip3p, PME 0.9 nm, HBonds,
2 fs) when the PME loader is available. Prints steps/s and the ratios dmd/jax-md and dmd/OpenMM.
Both JAX engines use a 0.5σ skin (jax-md's ``dr_threshold``; measured best for dmd at N = 8,000 on
this machine: 0.3σ rebuilds every ~8 steps, 0.7σ drops to 6 cells per side).

    python benchmarks/bench_engine.py            # full
    python benchmarks/bench_engine.py --quick    # N = 1,000 only, short runs

Stock jax-md is written as a user would: ``energy.lennard_jones_neighbor_list`` +
``simulate.nvt_langevin`` in a jitted ``lax.fori_loop`` chunk, reallocating on overflow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--row-shards" in sys.argv:  # host devices must exist before jax starts
    _k = sys.argv[sys.argv.index("--row-shards") + 1]
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_k}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dmd import models  # noqa: E402
from dmd.base.units import KB_KJ_PER_MOL_K  # noqa: E402
from dmd.integrators import make_integrator  # noqa: E402

SIGMA, EPS, MASS = models.ARGON["sigma"], models.ARGON["epsilon"], models.ARGON["mass"]
T_STAR = EPS / KB_KJ_PER_MOL_K


class _Clock:
    """Wall time and CPU utilisation (process CPU seconds / wall seconds: 2.0 = both cores busy) of a block.

    Both engines run in this process (OpenMM's CPU platform threads included), so ``os.times`` counts their work.
    """

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.util = (_cpu_seconds() - self.c0) / max(self.wall, 1e-9)


def _cpu_seconds():
    t = os.times()
    return t.user + t.system


def _load():
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def _time(fn, state, n_chunks):
    state = fn(state)  # compile + warm up
    jax.block_until_ready(state)
    with _Clock() as clock:
        for _ in range(n_chunks):
            state = fn(state)
        jax.block_until_ready(state)
    _time.util = clock.util
    return clock.wall, state


def _time_call(fn, *args, repeat=10):
    """Milliseconds per call of a jitted ``fn`` (compiled and warmed up first)."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / repeat * 1e3


# the LJ kernels --lj-kernel names: "auto" = lj_fluid's defaults (numba half list + numba rebuild on a CPU), "xla" =
# the XLA full list and XLA cell build (the engine before the numba LJ kernel)
LJ_KERNELS = {"auto": {}, "xla": dict(half_list=False, pair_kernel="xla", rebuild_kernel="xla")}


def bench_dmd(n, steps, chunk=100, skin=0.5, kernel="auto"):
    kw = LJ_KERNELS[kernel]
    system = models.lj_fluid(n, density=0.8, cutoff=2.5 * SIGMA, skin=skin * SIGMA, dtype=jnp.float32, **kw)
    integ = make_integrator("baoab", system, dt=0.01, temperature=T_STAR, friction=1.0)
    st = integ.init(jax.random.PRNGKey(0), system.params)
    run = jax.jit(lambda s: jax.lax.scan(lambda c, _: (integ.step(c, system.params), None), s, None, length=chunk)[0])
    # equilibrate a little so the list sees fluid-like occupancy, then reallocate with room to spare
    st = run(st)
    st = st.replace(neighbor=system.neighbor_fn.grow(st.neighbor, st.positions, factor=1.15, fit=True))
    for _ in range(3):  # a list that overflowed in the timed run (a half list's short rows vary more) grows, rerun
        wall, end = _time(run, st, max(1, steps // chunk))
        if not bool(end.neighbor.overflow):
            break
        st = st.replace(neighbor=system.neighbor_fn.grow(st.neighbor, st.positions, factor=1.15))
    assert not bool(end.neighbor.overflow)
    st = end
    rebuilds = int(st.neighbor.n_rebuilds)
    bench_dmd.util = _time.util
    return steps / wall, rebuilds


def bench_jaxmd(n, steps, chunk=100):
    from jax_md import energy, partition, simulate, space

    box = (n / 0.8) ** (1 / 3) * SIGMA
    displacement, shift = space.periodic(box)
    neighbor_fn, energy_fn = energy.lennard_jones_neighbor_list(
        displacement,
        box,
        sigma=SIGMA,
        epsilon=EPS,
        r_cutoff=2.5,
        dr_threshold=0.5 * SIGMA,
        format=partition.NeighborListFormat.Dense,
    )
    init, apply = simulate.nvt_langevin(energy_fn, shift, 0.01, EPS, gamma=1.0)
    pos = jnp.asarray(models.lj_fluid(n, dtype=jnp.float32).positions)
    nbrs = neighbor_fn.allocate(pos)
    state = init(jax.random.PRNGKey(0), pos, mass=MASS, neighbor=nbrs)

    @jax.jit
    def run(carry):
        def body(i, c):
            s, nb = c
            s = apply(s, neighbor=nb)
            return s, nb.update(s.position)

        return jax.lax.fori_loop(0, chunk, body, carry)

    carry = run((state, nbrs))
    jax.block_until_ready(carry)
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        new = run(carry)
        if new[1].did_buffer_overflow:  # as the jax-md docs do: reallocate and redo
            carry = (carry[0], neighbor_fn.allocate(carry[0].position))
            continue
        carry = new
        done += chunk
    jax.block_until_ready(carry)
    return steps / (time.perf_counter() - t0)


def bench_openmm_lj(n, steps, threads=2):
    import openmm as mm
    import openmm.unit as u

    system = models.lj_fluid(n, dtype=jnp.float32)
    box = float(system.box[0])
    s = mm.System()
    s.setDefaultPeriodicBoxVectors(mm.Vec3(box, 0, 0), mm.Vec3(0, box, 0), mm.Vec3(0, 0, box))
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(2.5 * SIGMA)
    nb.setUseDispersionCorrection(False)
    for _ in range(n):
        s.addParticle(MASS)
        nb.addParticle(0.0, SIGMA, EPS)
    s.addForce(nb)
    integ = mm.LangevinMiddleIntegrator(T_STAR * u.kelvin, 1.0 / u.picosecond, 0.01 * u.picoseconds)
    ctx = mm.Context(s, integ, mm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    ctx.setPositions(np.asarray(system.positions, float))
    ctx.setVelocitiesToTemperature(T_STAR * u.kelvin, 1)
    integ.step(200)
    ctx.getState(getEnergy=True)
    with _Clock() as clock:
        integ.step(steps)
        ctx.getState(getEnergy=True)
    bench_openmm_lj.util = clock.util
    return steps / clock.wall


def villin_pieces(system, x, row_shards=1, pair_kernel="xla"):
    """Milliseconds per evaluation of each piece of the villin force (float32, gradients w.r.t. positions):
    real-space pairs, PME reciprocal sum, exclusion/exception corrections, bonded terms, neighbour update
    (without and with a rebuild)."""
    from dmd.forces.nonbonded import pair_energy_full
    from dmd.forces.pme import bspline_moduli, pme_reciprocal_energy

    p, box, md = system.params, system.box, system.metadata
    nb = system.neighbor_fn.allocate(x)
    alpha, grid = md["pme_alpha"], tuple(md["pme_grid"])
    q = p["NonbondedForce"]["charge"]
    moduli = tuple(bspline_moduli(k, 5) for k in grid)
    spec_sig = jnp.full(system.n_atoms, 0.3, x.dtype)
    spec_eps = jnp.full(system.n_atoms, 0.5, x.dtype)
    pair = pair_energy_full("PME", md["cutoff_nm"], alpha=alpha, half=not nb.full, pair_kernel=pair_kernel)
    out = {"neighbours per row" + ("" if nb.full else " (half list)"): nb.idx.shape[1]}
    out[f"real-space pairs ({pair_kernel})"] = _time_call(
        jax.jit(jax.grad(lambda y: pair(y, box, nb.idx, q, spec_sig, spec_eps))), x
    )
    if row_shards > 1:
        pair_k = pair_energy_full("PME", md["cutoff_nm"], alpha=alpha, row_shards=row_shards, half=not nb.full)
        out[f"real-space pairs, rows on {row_shards} devices"] = _time_call(
            jax.jit(jax.grad(lambda y: pair_k(y, box, nb.idx, q, spec_sig, spec_eps))), x
        )
    out["PME reciprocal"] = _time_call(
        jax.jit(jax.grad(lambda y: pme_reciprocal_energy(q, y, box, alpha, grid, 5, moduli))), x
    )
    for name in p:
        out[f"term {name}"] = _time_call(
            jax.jit(jax.grad(lambda y, name=name: system.terms_fn(p, y, box=box, neighbor=nb)[name])), x
        )
    out["total force"] = _time_call(jax.jit(jax.grad(lambda y: system.energy_fn(p, y, box=box, neighbor=nb))), x)
    out["neighbour check (no rebuild)"] = _time_call(jax.jit(lambda y, n: n.update(y)), x, nb)
    out["neighbour rebuild"] = _time_call(jax.jit(lambda y, n: n.update(y + 0.3)), x, nb, repeat=2)
    return out


def _villin_runner(system, chunk=50, energy_every_step=False):
    """(integrator, jitted chunk of ``chunk`` steps carrying (state, rebuild count)). As ``dmd.simulate`` runs
    reports ≥ ``dmd.runloop.LAZY_ENERGY_EVERY`` steps apart, the steps skip the potential energy and the chunk
    computes it once at its end (a checkout without that: every step, as ``energy_every_step``)."""
    import inspect

    integ = make_integrator("baoab", system, dt=0.002, temperature=300.0, friction=1.0)
    lazy = not energy_every_step and "energy" in inspect.signature(integ.step).parameters
    kw = {"energy": False} if lazy else {}

    def body(carry, _):  # counts list rebuilds (a rebuild moves the reference positions)
        s, n = carry
        s2 = integ.step(s, system.params, **kw)
        moved = jnp.any(s2.neighbor.reference_position != s.neighbor.reference_position)
        return (s2, n + moved.astype(jnp.int32)), None

    def run(c):
        c = jax.lax.scan(body, c, None, length=chunk)[0]
        if lazy:
            from dmd.runloop import with_energy

            c = with_energy(system, system.params, c)
        return c

    _villin_runner.lazy = lazy
    return integ, jax.jit(run)


def choose_villin_skin(pdb, kw, probe_skin=0.2, chunks=2, chunk=50, pair_kernel="auto"):
    """The skin of :func:`dmd.skin.optimal_skin` for villin + water: displacement rate from ``chunks`` chunks at
    ``probe_skin`` (after one to settle), pair and rebuild costs timed at that skin. Returns (skin, facts)."""
    from dmd.forces.nonbonded import pair_energy_full
    from dmd.openmm_system import system_from_pdb
    from dmd.skin import displacement_rate, optimal_skin

    system = system_from_pdb(pdb, dtype=jnp.float32, skin=probe_skin, pair_kernel=pair_kernel, **kw)
    integ, run = _villin_runner(system, chunk)
    carry = run((integ.init(jax.random.PRNGKey(1), system.params), jnp.zeros((), jnp.int32)))
    carry = (carry[0], jnp.zeros((), jnp.int32))
    for _ in range(chunks):
        carry = run(carry)
    rate = displacement_rate(probe_skin, int(carry[1]), chunks * chunk)
    x, p, md = carry[0].positions, system.params, system.metadata
    nb = system.neighbor_fn.allocate(x)
    q = p["NonbondedForce"]["charge"]
    sig = jnp.full(system.n_atoms, 0.3, x.dtype)
    pair = pair_energy_full("PME", md["cutoff_nm"], alpha=md["pme_alpha"], half=not nb.full, pair_kernel=pair_kernel)
    pair_ms = _time_call(jax.jit(jax.grad(lambda y: pair(y, system.box, nb.idx, q, sig, sig))), x)
    rebuild_ms = _time_call(jax.jit(lambda y, n: n.update(y + 0.3)), x, nb, repeat=3)
    rc = float(md["cutoff_nm"])
    skin = optimal_skin(rc, rate, rebuild_ms / pair_ms)
    facts = f"probe skin {probe_skin} nm: v = {rate:.4f} nm/step, pairs {pair_ms:.1f} ms, rebuild {rebuild_ms:.1f} ms"
    return round(skin, 3), facts


def bench_villin(steps, threads=2, pieces=True, row_shards=1, skin=None, pair_kernel="auto"):
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u

    from dmd.openmm_system import openmm_system_from_pdb, system_from_pdb

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    res = {}
    if skin is None:  # chosen by dmd.skin's rule from a probe run
        skin, res["skin rule"] = choose_villin_skin(pdb, kw, pair_kernel=pair_kernel)
    res["skin"] = skin
    system = system_from_pdb(pdb, dtype=jnp.float32, skin=skin, pair_kernel=pair_kernel, **kw)
    integ, run = _villin_runner(system)
    chunk = 50
    st = integ.init(jax.random.PRNGKey(0), system.params)
    carry = run((st, jnp.zeros((), jnp.int32)))  # compile + equilibrate the list occupancy a little
    carry = jax.block_until_ready((carry[0], jnp.zeros((), jnp.int32)))
    n_chunks = max(1, steps // chunk)
    with _Clock() as clock:
        for _ in range(n_chunks):
            carry = run(carry)
        jax.block_until_ready(carry)
    st = carry[0]
    res.update({"dmd": n_chunks * chunk / clock.wall, "dmd util": clock.util, "atoms": system.n_atoms})
    res["lazy"] = _villin_runner.lazy
    res["rebuilds"] = f"{int(carry[1])} / {n_chunks * chunk} steps"
    if pieces:
        res["pieces"] = villin_pieces(system, st.positions, row_shards, pair_kernel)
    omm, structure, _ = openmm_system_from_pdb(pdb, **kw)
    li = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picoseconds)
    ctx = mm.Context(omm, li, mm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    ctx.setPositions(structure.positions)
    li.step(20)
    ctx.getState(getEnergy=True)
    with _Clock() as clock:
        li.step(steps)
        ctx.getState(getEnergy=True)
    res.update(openmm=steps / clock.wall, **{"openmm util": clock.util})
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 1,000 only, short runs, no villin")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per engine (default 2000; quick 300)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="LJ sizes N (default 1000 8000)")
    ap.add_argument("--no-villin", action="store_true", help="skip villin + water PME")
    ap.add_argument(
        "--row-shards", type=int, default=1, help="also time villin's real-space pairs with rows over K host devices"
    )
    ap.add_argument("--villin-only", action="store_true", help="only villin + water PME (with its force pieces)")
    ap.add_argument(
        "--pair-kernel",
        nargs="+",
        default=["auto"],
        choices=["auto", "numba", "xla"],
        help="villin's real-space pair kernel(s), each timed with OpenMM beside it (e.g. xla auto: before/after)",
    )
    ap.add_argument(
        "--lj-kernel",
        nargs="+",
        default=["auto"],
        choices=sorted(LJ_KERNELS),
        help="LJ fluid kernel(s), each timed with OpenMM beside it (xla auto: before/after the numba LJ kernels)",
    )
    ap.add_argument("--no-jaxmd", action="store_true", help="skip stock jax-md (A/B runs of dmd vs OpenMM)")
    ap.add_argument("--no-pieces", action="store_true", help="skip the villin force-piece timings")
    ap.add_argument(
        "--skin", type=float, default=None, help="villin list skin, nm (default: dmd.skin's rule from a probe run)"
    )
    args = ap.parse_args()
    steps = args.steps or (300 if args.quick else 2000)
    sizes = [] if args.villin_only else (args.sizes or ([1000] if args.quick else [1000, 8000]))
    print(
        f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPUs, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r} (timings on a shared machine are noisy: compare the ratios, measured "
        f"in this same run; CPU = process CPU seconds per wall second, 2.0 = both cores) | {_load()}"
    )
    stocks = {}  # stock jax-md once per size: it does not depend on dmd's kernel arm
    for n, kernel in ((n, k) for n in sizes for k in args.lj_kernel):
        s = steps if n <= 1000 else max(200, steps // 4)
        if n not in stocks:
            stocks[n] = float("nan") if args.no_jaxmd else bench_jaxmd(n, max(100, s // 4))
        ours, rebuilds = bench_dmd(n, s, kernel=kernel)
        stock = stocks[n]
        omm = bench_openmm_lj(n, s)
        print(
            f"LJ N={n:5d} ({kernel}): dmd {ours:8.1f} steps/s ({rebuilds} rebuilds / {s} steps, "
            f"CPU {bench_dmd.util:.2f}) | "
            f"stock jax-md {stock:7.1f} | OpenMM CPU(2) {omm:7.1f} (CPU {bench_openmm_lj.util:.2f}) | "
            f"dmd/jax-md {ours / stock:5.2f}x | dmd/OpenMM {ours / omm:5.2f}x | {_load()}",
            flush=True,
        )
    for kernel in args.pair_kernel if args.villin_only or not (args.quick or args.no_villin) else ():
        try:
            r = bench_villin(
                max(50, steps // 20),
                pieces=not args.no_pieces,
                row_shards=args.row_shards,
                skin=args.skin,
                pair_kernel=kernel,
            )
            if "skin rule" in r:
                print(f"  villin skin {r['skin']} nm from dmd.skin.optimal_skin ({r['skin rule']})")
            for k, v in r.get("pieces", {}).items():
                print(f"  villin piece {k:38s} {v:9.2f}" + ("" if k.startswith("neighbours") else " ms"))
            print(
                f"villin+water PME ({r['atoms']} atoms, skin {r['skin']} nm, pair kernel {kernel}): dmd {r['dmd']:.1f}"
                f" steps/s ({r['rebuilds']} rebuilds, energy {'once per 50-step chunk' if r['lazy'] else 'every step'},"
                f" CPU {r['dmd util']:.2f}, {1e3 * r['dmd util'] / r['dmd']:.1f} CPU ms/step) | OpenMM CPU(2)"
                f" {r['openmm']:.1f} (CPU {r['openmm util']:.2f}, {1e3 * r['openmm util'] / r['openmm']:.1f} CPU"
                " ms/step) | "
                f"dmd/OpenMM {r['dmd'] / r['openmm']:.2f}x | {_load()}",
                flush=True,
            )
        except Exception as exc:  # the PME loader may be missing in this checkout: say so, do not hide it
            print(f"villin+water PME: not measured ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    main()
