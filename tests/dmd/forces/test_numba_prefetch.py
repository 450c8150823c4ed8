"""Start-up on an empty numba cache (issue 20 item 5): a worker of dmd.forces.numba_prefetch compiles its handler
into numba's cache while the caller compiles its own share, the caller then loads it instead of compiling it; the
handlers compile no error-message formatting and the host rebuild shares the handler's kernel specialisation."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

# In a fresh process with an empty numba cache: the worker takes spread; waiting for it, this process compiles
# gather (its share) while the worker runs, then loads spread from the cache.
SCRIPT = r"""
import time
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
c0 = time.process_time()
ok = p.wait(p.SPREAD)  # compiles this process's share (gather) first, beside the worker
cpu = time.process_time() - c0
n_gather = len(names)
ffi_cfunc(spread_handler)  # from the cache the worker filled: nothing compiled here
own = p.take(p.GATHER) is not None
again = p.prefetch([p.SPREAD], workers=1)
print(started == [p.SPREAD], ok, own, is_cached(spread_handler), len(names) - n_gather, again)
print(cpu, "gather" in names, sorted({n for n in names if "raise" in n or "str" in n}))
"""


def test_a_worker_compiles_beside_the_caller_which_then_loads_its_handler(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "DMD_NUMBA_PREFETCH")}
    env["XDG_CACHE_HOME"] = str(tmp_path)  # empty numba cache (dmd.base.numba_env)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = out.stdout.splitlines()[-2:]
    # the worker took spread; while waiting for it this process compiled gather (its share); spread was cached when
    # wait returned; loading it compiled nothing here; a second prefetch of a cached handler starts no worker
    assert first == "True True True True 0 []"
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
