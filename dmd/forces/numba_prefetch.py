"""Compile numba's XLA FFI handlers in worker processes while the caller builds its system (a machine's first run).

On a machine whose numba cache is empty, the handlers that a force-field run on CPU uses (the neighbour-list
rebuild, the pair force, PME's spreading and gathering) cost ~15-25 CPU s of numba compilation, one after the
other in the process that needs them. :func:`prefetch` shares them between that process and one worker process
per idle core, all cores but one at most (:func:`auto_workers`; ``python -m dmd.forces.numba_prefetch HANDLER
...``): each worker compiles its share into numba's on-disk cache (:func:`dmd.forces.numba_ffi.ffi_cfunc`, the
same cache entries the caller reads) and prints each handler's name when it is stored. The caller goes on
(reads the structure, builds the force field, traces, compiles its own share); where it needs a worker's handler
(:func:`dmd.forces.xla_custom_call.register_numba_target`, the rebuild's host call at allocation) it
:func:`wait`\\ s for it and then loads it from the cache. numba compiles under one lock per process, so threads
would compile one handler at a time; processes compile them side by side.

Handlers already cached are not prefetched (no worker on a second run), nor any where no core is idle (load
average: a worker there only adds its own start-up); a worker that fails only costs its time: the caller then
compiles the handler itself, as without prefetching. ``DMD_NUMBA_PREFETCH``: ``0`` turns it off, a number sets
the workers (whatever the load), ``auto`` (the default) as above. docs/engine.md,
"Start-up on an empty numba cache", has the measurements.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = [
    "CELL_ROWS",
    "GATHER",
    "PAIRS",
    "SPREAD",
    "auto_workers",
    "forcefield_handlers",
    "idle_cores",
    "prefetch",
    "take",
    "wait",
]

_MOD = "dmd.forces."
CELL_ROWS = _MOD + "numba_neighbors:cell_rows_handler_f32"
PAIRS = _MOD + "numba_kernels:pairs_handler"
SPREAD = _MOD + "numba_pme:spread_handler"
GATHER = _MOD + "numba_pme:gather_handler"
WAIT_S = 600.0  # the longest wait for a worker's handler before compiling it here

_WORKERS: dict[str, _Worker] = {}  # handler -> the worker compiling it
_OWN: list[str] = []  # this process's share, not compiled yet
_READY: dict[str, object] = {}  # handler -> its cfunc, compiled here while waiting for a worker
_LOCK = threading.RLock()


class _Worker:
    def __init__(self, handlers: list[str]):
        import dmd

        env = dict(os.environ)  # NUMBA_CACHE_DIR and OMP_WAIT_POLICY from prepare_numba: the caller's cache
        root = str(Path(dmd.__file__).resolve().parents[1])  # the same dmd as the caller's (its cache entries)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dmd.forces.numba_prefetch", *handlers],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        self.handlers, self.done, self.buf, self.closed = set(handlers), set(), b"", False

    def read(self, timeout: float) -> None:
        """Take the names the worker printed within ``timeout`` s (0: those already there) into ``done``."""
        fd = self.proc.stdout.fileno()
        if self.closed or not select.select([fd], [], [], timeout)[0]:
            return
        chunk = os.read(fd, 4096)
        if not chunk:  # the worker exited: reap it (its CPU time is then counted as this process's children's)
            self.closed = True
            self.proc.wait()
            return
        *lines, self.buf = (self.buf + chunk).split(b"\n")
        self.done.update(line.decode() for line in lines)

    def wait_for(self, handler: str, timeout: float) -> bool:
        """Block until the worker has stored ``handler`` (True) or exited / timed out without it (False)."""
        end = time.monotonic() + timeout
        while handler not in self.done and not self.closed and time.monotonic() < end:
            self.read(end - time.monotonic())
        return handler in self.done


def _handler(name: str):
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def forcefield_handlers(nonbonded: str | None, pair_kernel: str, n_atoms: int, pme_min_atoms: int) -> list[str]:
    """The handlers a float32 force-field run on CPU will call: the cell-list rebuild for a cutoff method
    (unless ``DMD_REBUILD_KERNEL=xla``), the pair force for PME (unless ``pair_kernel`` is "xla"), PME's spreading
    and gathering from ``pme_min_atoms`` atoms (:data:`dmd.forces.pme_kernel.AUTO_MIN_ATOMS`). Empty where the
    backend is not CPU."""
    if not _cpu_backend():
        return []
    out = []
    if nonbonded not in (None, "NoCutoff") and (os.environ.get("DMD_REBUILD_KERNEL") or "auto") != "xla":
        out.append(CELL_ROWS)
    if nonbonded == "PME" and pair_kernel != "xla":
        out.append(PAIRS)
        if n_atoms >= pme_min_atoms or pair_kernel == "numba":
            out += [GATHER, SPREAD]  # dealt round-robin: with one worker this process takes cell rows and gather
    return out


def _cpu_backend() -> bool:
    """Whether jax will run on the CPU: ``JAX_PLATFORMS`` names cpu first, or no GPU plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    from importlib.metadata import entry_points

    gpu = ("cuda", "rocm", "tpu")  # e.g. jax-cuda12-plugin's "xla_cuda12 = jax_cuda12_plugin"
    return not any(g in ep.name + ep.value for ep in entry_points(group="jax_plugins") for g in gpu)


def prefetch(handlers: list[str], workers: int | None = None) -> list[str]:
    """Start compiling some of those of ``handlers`` that numba's cache lacks in worker processes. The handlers
    are dealt round-robin, in the order given, over this process and ``workers`` workers (default:
    :func:`auto_workers`); this process compiles its share when it first needs them. Returns the handlers given to
    workers (none where no core is idle: a worker would only take CPU from this process)."""
    from dmd.base.numba_env import prepare_numba

    setting = os.environ.get("DMD_NUMBA_PREFETCH", "auto")
    if setting == "0" or importlib.util.find_spec("numba") is None:
        return []
    if workers is None:
        workers = int(setting) if setting.isdigit() else auto_workers()
    if workers < 1:
        return []
    prepare_numba()  # before numba is imported; the workers inherit its cache directory
    from dmd.forces.numba_ffi import is_cached

    with _LOCK:
        todo = [h for h in dict.fromkeys(handlers) if h not in _WORKERS and not is_cached(_handler(h))]
        k = min(len(todo) - 1, workers)
        started = []
        for share in (todo[i :: k + 1] for i in range(1, k + 1)):  # share 0, the first needed: this process
            worker = _Worker(share)
            _WORKERS.update(dict.fromkeys(share, worker))
            started += share
        if started:
            _OWN.extend(todo[:: k + 1])
    return started


def auto_workers() -> int:
    """Workers for ``DMD_NUMBA_PREFETCH=auto``: the idle cores, at most all cores but this process's one. The 1-minute
    load average lags (a job that just ended still counts ~1 for a minute), so one idle core by it is enough.
    Measured (docs/engine.md, "Start-up on an empty numba cache"): quiet 2-core machine, villin's first run with
    empty caches 24.3 → 16.3 s wall with one worker; at load 7 a forced worker cost +1.2 CPU s and gained nothing."""
    return min(idle_cores(), _cores() - 1)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def idle_cores() -> int:
    """Usable cores minus the 1-minute load average (rounded): the cores a worker would not take from others."""
    return max(0, round(_cores() - os.getloadavg()[0]))


def wait(handler: str, timeout: float = WAIT_S) -> bool:
    """Wait until a worker started by :func:`prefetch` has cached ``handler``; False if none was compiling it (or
    it failed): the caller then compiles it itself. While the worker is not done, this process first compiles
    its own share (kept for :func:`take`)."""
    worker = _WORKERS.get(handler)
    if worker is None:
        return False
    with _LOCK:
        worker.read(0)
        while _OWN and handler not in worker.done:
            name = _OWN.pop(0)
            from dmd.forces.numba_ffi import ffi_cfunc

            _READY[name] = ffi_cfunc(_handler(name))
            worker.read(0)
        return worker.wait_for(handler, timeout)


def take(handler: str):
    """The handler's cfunc if :func:`wait` compiled it here while waiting, else None (the caller compiles it:
    it leaves this process's share)."""
    with _LOCK:
        if handler in _OWN:
            _OWN.remove(handler)
        return _READY.pop(handler, None)


def _main(names: list[str]) -> int:
    from dmd.forces.numba_ffi import ffi_cfunc

    for name in names:
        ffi_cfunc(_handler(name))
        print(name, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
