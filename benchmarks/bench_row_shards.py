"""Both cores for villin + water (issue 20 item 2): the real-space pairs' neighbour-list rows over 1 vs 2 host devices.

    python benchmarks/bench_row_shards.py [--steps 100] [--repeat 3] [--skin 0.125]

One process with two host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``), two systems that differ
only in ``pair_energy_full(..., row_shards=K)`` (K = 1, the default, and 2: ``shard_map`` of the rows), measured
interleaved A/B ``--repeat`` times: the total force (energy gradient, one list) and a BAOAB step (50-step chunks,
rebuilds included), wall ms and CPU ms (process user + system: 2× wall means both cores busy), with the machine's
load before each arm. The peer is the 1-device arm of the same run; the ratio printed is 2-device / 1-device wall.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _cpu():
    t = os.times()
    return t.user + t.system


def _timed(fn, n):
    """(wall ms, CPU ms) per call of ``fn`` over ``n`` calls (``fn`` blocks)."""
    c0, t0 = _cpu(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) * 1e3 / n, (_cpu() - c0) * 1e3 / n


def build(shards: int, pdb: str, kw: dict, skin: float):
    """(system, force fn, chunk fn, state) with the real-space rows over ``shards`` devices."""
    from dmd.forces import nonbonded
    from dmd.integrators import make_integrator
    from dmd.openmm_system import system_from_pdb

    original = nonbonded.pair_energy_full
    if shards > 1:  # the energy builder looks the kernel up when it is traced: patched for this system's traces
        nonbonded.pair_energy_full = functools.partial(original, row_shards=shards)
    try:
        system = system_from_pdb(pdb, dtype=jnp.float32, skin=skin, **kw)
        integ = make_integrator("baoab", system, dt=0.002, temperature=300.0, friction=1.0)
        st = integ.init(jax.random.PRNGKey(0), system.params)
        nb = st.neighbor
        grad = jax.jit(jax.grad(lambda y: system.energy_fn(system.params, y, box=system.box, neighbor=nb)))
        body = lambda c, _: (integ.step(c, system.params), None)  # noqa: E731
        chunk = jax.jit(lambda s: jax.lax.scan(body, s, None, length=50)[0])
        jax.block_until_ready(grad(st.positions))  # compile inside the patch
        st = jax.block_until_ready(chunk(st))
    finally:
        nonbonded.pair_energy_full = original
    return grad, chunk, st


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per arm and repeat (multiples of 50)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved A/B rounds")
    ap.add_argument("--skin", type=float, default=0.125, help="list skin, nm (bench_engine's rule gives ~0.12-0.13)")
    args = ap.parse_args()
    import openmm.app as app

    pdb = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    kw = dict(forcefield=["amber14-all.xml", "amber14/tip3p.xml"], nonbonded="PME", cutoff=0.9, constraints="HBonds")
    print(f"devices: {jax.devices()}; load {os.getloadavg()}", flush=True)
    arms = {k: list(build(k, pdb, kw, args.skin)) for k in (1, 2)}
    n_chunks = max(1, args.steps // 50)
    rows = {k: [] for k in arms}
    for r in range(args.repeat):
        for k, arm in arms.items():
            grad, chunk, st = arm
            load = os.getloadavg()[0]
            f_wall, f_cpu = _timed(lambda grad=grad, st=st: jax.block_until_ready(grad(st.positions)), 10)

            def run(arm=arm):
                arm[2] = jax.block_until_ready(arm[1](arm[2]))

            s_wall, s_cpu = _timed(run, n_chunks)
            rows[k].append((f_wall, f_cpu, s_wall / 50, s_cpu / 50, load))
            print(
                f"round {r + 1} rows on {k} device(s): force {f_wall:.1f} ms wall / {f_cpu:.1f} ms CPU; "
                f"step {s_wall / 50:.1f} ms wall / {s_cpu / 50:.1f} ms CPU; load {load:.1f}",
                flush=True,
            )
    a, b = np.asarray(rows[1]), np.asarray(rows[2])
    print(
        f"median force wall 2-dev/1-dev {np.median(b[:, 0]) / np.median(a[:, 0]):.2f}, "
        f"step wall 2-dev/1-dev {np.median(b[:, 2]) / np.median(a[:, 2]):.2f}; step CPU/wall 1-dev "
        f"{np.median(a[:, 3] / a[:, 2]):.2f}, 2-dev {np.median(b[:, 3] / b[:, 2]):.2f}; load {os.getloadavg()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
