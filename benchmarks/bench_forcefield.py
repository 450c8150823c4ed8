"""Energy + force evaluation time: dmd (float64, float32) vs OpenMM CPU (2 threads) and Reference, same run.

System: OpenMM's bundled villin in TIP3P-FB water (test.pdb, 8,867 atoms), amber14, PME, cutoff 1.0 nm.
Prints medians (ms) and the ratios dmd / OpenMM CPU. Run: python benchmarks/bench_forcefield.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)  # script, not library: float64 must be available for the comparison

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import openmm as mm  # noqa: E402
import openmm.app as app  # noqa: E402
import openmm.unit as unit  # noqa: E402
from timing import call_times  # noqa: E402

from dmd.openmm_system import openmm_system_from_pdb, system_from_pdb  # noqa: E402


def _median_time(fn, repeats):
    return float(np.median(call_times(fn, repeats)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--nonbonded", default="PME", choices=["PME", "CutoffPeriodic"])
    args = ap.parse_args(argv)
    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    ff = ["amber14-all.xml", "amber14/tip3pfb.xml"]
    omm, structure, _ = openmm_system_from_pdb(pdb, ff, args.nonbonded, 1.0)
    pos = structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    results = {}
    for name, props in [("OpenMM CPU (2 threads)", {"Threads": "2"}), ("OpenMM Reference", {})]:
        platform = mm.Platform.getPlatformByName("CPU" if props else "Reference")
        ctx = mm.Context(omm, mm.VerletIntegrator(0.001), platform, props)
        ctx.setPositions(pos)
        ctx.getState(getEnergy=True, getForces=True)
        results[name] = _median_time(lambda c=ctx: c.getState(getEnergy=True, getForces=True), args.repeats)
        del ctx
    system = system_from_pdb(pdb, ff, nonbonded=args.nonbonded, cutoff=1.0)
    for dtype in (jnp.float64, jnp.float32):
        params = jax.tree.map(lambda a, d=dtype: jnp.asarray(a, d), system.params)
        x = jnp.asarray(system.positions, dtype)
        box = jnp.asarray(system.box, dtype)
        t = time.perf_counter()
        nbrs = system.neighbor_fn.allocate(x, box=box)
        jax.block_until_ready(nbrs.idx)
        t_alloc = time.perf_counter() - t
        vg = jax.jit(jax.value_and_grad(lambda x, nb, p=params, b=box: system.energy_fn(p, x, box=b, neighbor=nb)))
        t = time.perf_counter()
        jax.block_until_ready(vg(x, nbrs))
        t_compile = time.perf_counter() - t
        label = f"dmd {jnp.dtype(dtype).name}"
        results[label] = _median_time(lambda f=vg, x=x, nb=nbrs: jax.block_until_ready(f(x, nb)), args.repeats)
        update = jax.jit(lambda x, nb, b=box: nb.update(x, box=b))
        shifted = x + 0.15  # every atom moved > skin/2: forces a rebuild
        jax.block_until_ready(update(shifted, nbrs).idx)
        t_rebuild = _median_time(
            lambda u=update, y=shifted, nb=nbrs: jax.block_until_ready(u(y, nb).idx), max(2, args.repeats // 2)
        )
        print(
            f"{label}: neighbour list {tuple(nbrs.idx.shape)} allocate {t_alloc:.2f} s, "
            f"rebuild {t_rebuild * 1e3:.0f} ms, first call (compile) {t_compile:.1f} s"
        )
    ref = results["OpenMM CPU (2 threads)"]
    print(f"villin+water ({system.n_atoms} atoms), {args.nonbonded}, energy+forces, median of {args.repeats}:")
    for name, t in results.items():
        print(f"  {name:24s} {t * 1e3:9.1f} ms   ratio to OpenMM CPU: {t / ref:6.2f}x")


if __name__ == "__main__":
    main()
