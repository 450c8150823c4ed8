"""The numba kernels as XLA custom calls (dmd.forces.xla_custom_call) are stored in and loaded from JAX's persistent
compilation cache: a program holding both (the numba rebuild and pair force) compiled in one process is a cache hit
in a second one, with the same numbers. A ``jax.pure_callback`` program, the route this replaced, misses again in
the second process (the control: what made every ``dmd simulate`` compile its step again)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba")

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, time
    t0 = time.perf_counter()
    import jax, jax.numpy as jnp, numpy as np
    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    from dmd.forces.neighbors import pair_neighbor_list
    from dmd.forces.nonbonded import pair_energy_full

    n, side, rc = 3000, 4.0, 0.8
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.uniform(0.0, side, (n, 3)), jnp.float32)
    box = jnp.full(3, side, jnp.float32)
    q, sig, seps = (jnp.asarray(a, jnp.float32) for a in (rng.uniform(-0.4, 0.4, n), rng.uniform(0.2, 0.3, n),
                                                        rng.uniform(0.3, 0.6, n)))
    fns = pair_neighbor_list(n, np.full(3, side), rc, 0.1, full=False, rebuild_kernel="numba")
    nb = fns.allocate(x, build=False)  # the first update rebuilds: the cell build's custom call runs
    pair = pair_energy_full("PME", rc, alpha=3.5, half=True, pair_kernel="numba")

    @jax.jit
    def run(x, nb):
        nb = fns.update(x, nb)
        e, g = jax.value_and_grad(lambda y: pair(y, box, nb.idx, q, sig, seps))(x)
        return e, g, nb.idx

    hlo = run.lower(x, nb).as_text()
    events.clear()
    t1 = time.perf_counter()
    e, g, idx = jax.block_until_ready(run(x, nb))
    t2 = time.perf_counter()
    run_events = list(events)
    events.clear()
    def control(v):
        return jax.pure_callback(np.cos, v, v, vmap_method="sequential")

    jax.block_until_ready(jax.jit(control)(x))
    sha = lambda a: hashlib.sha1(np.asarray(a).tobytes()).hexdigest()
    print(json.dumps(dict(
        first_call_s=t2 - t1, process_s=t2 - t0, events=run_events, callback_events=list(events), e=float(e),
        g=np.asarray(g).ravel().tolist(), idx=sha(idx), rows=int(np.sum(np.asarray(idx) < n)),
        targets=[t for t in ("dmd_cell_rows_f32_v1", "dmd_pair_forces_v1") if t in hlo])))
    """
)


def _run(cache_dir):
    env = dict(os.environ)
    env.update(
        JAX_ENABLE_COMPILATION_CACHE="true",
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONPATH=os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")]),
    )
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_programs_with_the_custom_calls_are_cached_across_processes(tmp_path):
    first = _run(tmp_path)
    assert first["targets"] == ["dmd_cell_rows_f32_v1", "dmd_pair_forces_v1"]  # both kernels in the program
    assert first["rows"] > 3000 * 20  # a real list: ~72 partners per atom within 0.9 nm at this density (half: 36)
    assert "/jax/compilation_cache/cache_misses" in first["events"]  # compiled, looked up: the cache was empty
    assert any(p.name.startswith("jit_run-") for p in tmp_path.iterdir())  # ... and written
    second = _run(tmp_path)
    assert "/jax/compilation_cache/cache_hits" in second["events"]
    assert "/jax/compilation_cache/cache_misses" not in second["events"]
    assert second["idx"] == first["idx"]  # the same list, element for element
    # the same numbers to float32 round-off: a process that compiled numba's handler (an empty numba cache, as on a
    # fresh CI machine) and one that loaded it may add the per-thread partial sums in another order (measured:
    # 2.4e-4 on forces of median 2.7e3; here up to 3e-5 on components near 1 that cancel terms of ~1e4, the median
    # |g|): 1e-6 of the energy; per component 1e-5 of itself plus 1e-6 of the median (a dropped pair moves one by ≫ 1)
    g1, g2 = np.asarray(first["g"]), np.asarray(second["g"])
    assert abs(second["e"] - first["e"]) <= 1e-6 * abs(first["e"])
    assert np.all(np.abs(g2 - g1) <= 1e-5 * np.abs(g1) + 1e-6 * np.median(np.abs(g1)))
    # the control: a program with a host callback is not stored, so it is compiled again in the second process
    assert "/jax/compilation_cache/cache_hits" not in second["callback_events"]
    assert not any(p.name.startswith("jit_control-") for p in tmp_path.iterdir())
    print(f"first call {first['first_call_s']:.2f} s (compiled), {second['first_call_s']:.2f} s (cache hit)")
