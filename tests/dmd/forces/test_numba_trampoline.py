"""Stand-in XLA FFI targets (dmd.forces.numba_trampoline): XLA compiles a program calling a target whose numba
handler does not exist yet (a worker of dmd.forces.numba_prefetch still compiling it); the program's first execution
loads the handler and gives the numbers of the same handler registered directly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("numba")

from dmd.forces import numba_trampoline  # noqa: E402
from dmd.forces.xla_custom_call import numba_call, register_numba_target  # noqa: E402

pytestmark = pytest.mark.skipif(not numba_trampoline.supported(), reason="stand-ins are x86-64 Linux only")

SPREAD = "dmd.forces.numba_pme:spread_handler"


def _inputs():
    rng = np.random.default_rng(3)
    n, grid = 500, (12, 10, 9)
    box = np.array([2.4, 2.1, 1.9], np.float32)
    pos = (rng.uniform(-0.5, 1.5, (n, 3)) * box).astype(np.float32)  # some outside the box: wrapped by the kernel
    q = rng.uniform(-0.8, 0.8, n).astype(np.float32)
    out = jax.ShapeDtypeStruct((int(np.prod(grid)),), jnp.float32)
    return out, jnp.asarray(pos), jnp.asarray(q), jnp.asarray(box), jnp.asarray(grid, jnp.int32)


def test_a_program_compiles_before_its_handler_exists_and_runs_it_when_first_executed():
    from dmd.forces.numba_ffi import ffi_cfunc
    from dmd.forces.numba_pme import spread_handler

    out, pos, q, box, dims = _inputs()
    loads = []

    def late_handler():  # what the stand-in's first execution calls: here, the handler compiled (or loaded) now
        loads.append(1)
        return ffi_cfunc(spread_handler)

    name = "dmd_test_spread_stand_in_v1"
    register_numba_target(name, late_handler, defer=True)

    def spread(pos, q, box):
        return jax.ffi.ffi_call(name, out, vmap_method="sequential")(pos, q, box, dims)

    compiled = jax.jit(spread).lower(pos, q, box).compile()
    assert loads == []  # XLA compiled the program (and queried the target's metadata) with no handler at all
    grid = np.asarray(compiled(pos, q, box))
    assert loads == [1]  # the first execution loaded it
    direct = jax.jit(lambda p, c, b: numba_call("dmd_pme_spread_v1", SPREAD, out, p, c, b, dims))(pos, q, box)
    direct = np.asarray(direct)
    np.testing.assert_array_equal(grid, direct)  # the same handler, the same bits (spread runs on one thread)
    assert abs(float(grid.sum()) - float(q.sum())) < 1e-4 * float(np.abs(q).sum())  # B-spline weights sum to 1
    again = np.asarray(compiled(pos + 0.01, q, box))  # later calls jump straight to the handler: no second load
    assert loads == [1] and not np.array_equal(again, grid)
    np.testing.assert_array_equal(np.asarray(jax.vmap(spread, (0, None, None))(jnp.stack([pos, pos]), q, box))[1], grid)


_CTRL_C = """
import os, signal, sys, time
import jax
from dmd.forces.numba_ffi import ffi_cfunc
from dmd.forces.numba_pme import spread_handler
from dmd.forces.xla_custom_call import register_numba_target
sys.path.insert(0, sys.argv[1])
from test_numba_trampoline import _inputs

signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Python (xdist's workers ignore SIGINT)
out, pos, q, box, dims = _inputs()


def late():  # a Ctrl-C arrives while the first execution waits for the handler
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1.0)
    return ffi_cfunc(spread_handler)


register_numba_target("dmd_test_ctrl_c_v1", late, defer=True)
f = jax.jit(lambda p, c, b: jax.ffi.ffi_call("dmd_test_ctrl_c_v1", out, vmap_method="sequential")(p, c, b, dims))
f(pos, q, box).block_until_ready()
print("ran on")
"""


def test_ctrl_c_while_a_stand_in_loads_stops_the_process_with_one_line():
    """XLA runs the stand-in on the main thread, where Python raises KeyboardInterrupt: the process must end as an
    uncaught Ctrl-C does (killed by SIGINT), with one line and no traceback or core dump (it aborted before)."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", _CTRL_C, here], capture_output=True, text=True, timeout=300)
    assert r.returncode == -2, (r.returncode, r.stderr[-2000:])  # -SIGINT: not SIGABRT (-6), not a normal exit
    assert "interrupted while a compiled kernel was loading" in r.stderr
    assert "Traceback" not in r.stderr and "ran on" not in r.stdout
