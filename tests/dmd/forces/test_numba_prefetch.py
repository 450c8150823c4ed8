"""Start-up on an empty numba cache (issue 20 item 5): a worker of dmd.forces.numba_prefetch compiles its handler
into numba's cache while the caller compiles a program calling it (the target a stand-in until the program first
runs, dmd.forces.numba_trampoline) and its own share, the caller then loads it instead of compiling it; the
handlers compile no error-message formatting and the host rebuild shares the handler's kernel specialisation."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

# In a fresh process with an empty numba cache: the worker takes spread; XLA compiles a program calling spread's
# target at once (a stand-in); its first run waits for the worker, compiling gather (this process's share)
# meanwhile, then loads spread from the cache; the numbers are those of spread registered directly.
SCRIPT = r"""
import time
import jax, jax.numpy as jnp, numpy as np
from dmd.base.numba_env import prepare_numba
prepare_numba()
import numba.core.event as ev
from dmd.forces import numba_prefetch as p
from dmd.forces.numba_ffi import ffi_cfunc, is_cached
from dmd.forces.numba_pme import gather_handler, spread_handler

names = []
class Names(ev.Listener):
    def on_start(self, event):
        d = getattr(event.data.get("dispatcher"), "py_func", None)
        names.append(getattr(d, "__qualname__", ""))
    def on_end(self, event):
        pass
ev.register("numba:compile", Names())
started = p.prefetch([p.GATHER, p.SPREAD], workers=1)
from dmd.forces import xla_custom_call as xc

rng = np.random.default_rng(1)
pos = jnp.asarray(rng.uniform(0.0, 2.0, (300, 3)), jnp.float32)
q, box = jnp.asarray(rng.uniform(-1, 1, 300), jnp.float32), jnp.full(3, 2.0, jnp.float32)
dims = jnp.asarray([8, 8, 8], jnp.int32)
out = jax.ShapeDtypeStruct((512,), jnp.float32)
def spread(name):
    return jax.jit(lambda x, c, b: xc.numba_call(name, p.SPREAD, out, x, c, b, dims)).lower(pos, q, box).compile()
program = spread("dmd_pme_spread_v1")  # XLA compiles it now, its target a stand-in
stand_in = xc._TARGETS["dmd_pme_spread_v1"] is None and len(names) == 0  # no handler here yet, nothing compiled
c0 = time.process_time()
grid = np.asarray(program(pos, q, box))  # waits for spread, compiling this process's share (gather) meanwhile
cpu = time.process_time() - c0
ok = p.wait(p.SPREAD)
n_gather = len(names)
direct = np.asarray(spread("dmd_test_spread_direct")(pos, q, box))  # registered directly, from numba's cache
own = p.take(p.GATHER) is not None
again = p.prefetch([p.SPREAD], workers=1)
print(started == [p.SPREAD], stand_in, ok, own, is_cached(spread_handler), len(names) - n_gather, again)
print(np.array_equal(grid, direct), abs(grid.sum() - float(q.sum())) < 1e-4 * float(jnp.abs(q).sum()))
print(cpu, "gather" in names, sorted({n for n in names if "raise" in n or "str" in n}))
"""


def test_a_worker_compiles_beside_the_caller_which_then_loads_its_handler(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "DMD_NUMBA_PREFETCH")}
    env["XDG_CACHE_HOME"] = str(tmp_path)  # empty numba cache (dmd.base.numba_env)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    first, same, second = out.stdout.splitlines()[-3:]
    # the worker took spread; XLA compiled the program before any handler existed here (a stand-in target); while
    # its first run waited for spread this process compiled gather (its share); spread was cached when the wait
    # returned; loading it compiled nothing here; a second prefetch of a cached handler starts no worker
    assert first == "True True True True True 0 []"
    # the stand-in ran the same handler: the same grid as spread registered directly, bit for bit; its charges sum
    assert same == "True True"
    cpu, gather_compiled, formatting = second.split(" ", 2)
    assert gather_compiled == "True"
    # no error-message formatting compiled (a `ret2(...)[:] = g` result copy compiles numba's int and str
    # formatting for its shape-mismatch message: ~2.6 CPU s of the 5-6 a handler took)
    assert formatting == "[]"
    # wait's CPU time is gather's compilation (the worker's is not counted): 3.5-5 CPU s on the 2-core reference
    # machine at load 7 (6 s before the formatting went); 20 s: a gross regression (a specialisation explosion)
    assert float(cpu) < 20.0


def test_host_rebuild_uses_the_handlers_specialisation():
    """Allocation's host call with read-only arrays (np.asarray of jax arrays) compiles the cell build for the
    operand types of its XLA handler (C-contiguous, writeable): one specialisation, not two (3-4 CPU s each)."""
    from numba import types

    from dmd.forces.numba_neighbors import cell_rows, cell_rows_signatures

    rng = np.random.default_rng(0)
    n = 64
    wrapped = rng.random((n, 3), dtype=np.float32) * 2.0
    cid = np.zeros(n, np.int32)
    excl, n_excl = np.full((n, 1), n, np.int32), np.zeros(n, np.int32)
    for a in (wrapped, cid, excl, n_excl):
        a.setflags(write=False)
    stencil = np.zeros((1, 3), np.int64)
    idx, counts, largest = cell_rows(wrapped, cid, (1, 1, 1), stencil, np.full(3, 2.0), 0.8, True, 80, excl, n_excl)
    assert largest == n and counts.max() <= n - 1

    def arr(dt, nd):
        return types.Array(dt, nd, "C")

    f4, i4, i8 = types.float32, types.int32, types.int64
    handler_types = (arr(f4, 2), arr(i4, 1), arr(i8, 1), arr(i8, 2), arr(f4, 2), f4, types.boolean)
    handler_types += (arr(i4, 2), arr(i4, 1), arr(i4, 2), arr(i4, 1))
    assert handler_types in cell_rows_signatures()
    assert all(s == handler_types for s in cell_rows_signatures() if s[0].dtype == f4)
