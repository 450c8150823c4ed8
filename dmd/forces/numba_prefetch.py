"""Compile numba's XLA FFI handlers in worker processes while the caller builds its system (a machine's first run).

On a machine whose numba cache is empty, the handlers that a force-field run on CPU uses (the neighbour-list
rebuild, the pair force, PME's spreading and gathering) cost ~15-25 CPU s of numba compilation, one after the
other in the process that needs them. :func:`prefetch` keeps the first needed (the rebuild's host call at
allocation) for this process and queues the rest for one worker process per idle core, all cores but one at most
(:func:`auto_workers`; ``python -m dmd.forces.numba_prefetch``, fed one handler name at a time on its stdin by a
thread here): each worker compiles the next queued handler into numba's on-disk cache
(:func:`dmd.forces.numba_ffi.ffi_cfunc`, the same cache entries the caller reads) and prints its name when it is
stored. The caller goes on (reads the structure, builds the force field, compiles its own share, traces); a queued
handler's XLA target is a stand-in (:mod:`dmd.forces.numba_trampoline`, via :func:`pending`), so XLA compiles the
step while the workers still compile, and only the step's first execution :func:`wait` for the handlers (then
loaded from the cache); while it waits, this process takes the handlers no worker has started from the queue's end.
numba compiles under one lock per process, so threads would compile one handler at a time; processes compile them
side by side.

Handlers already cached are not prefetched (no worker on a second run), nor any where no core is idle (load
average: a worker there only adds its own start-up); a worker that fails only costs its time: the caller then
compiles the handler itself, as without prefetching. ``DMD_NUMBA_PREFETCH``: ``0`` turns it off, a number sets
the workers (whatever the load), ``auto`` (the default) as above. docs/engine.md,
"Start-up on an empty numba cache", has the measurements.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path

__all__ = [
    "CELL_ROWS",
    "GATHER",
    "PAIRS",
    "SPREAD",
    "auto_workers",
    "forcefield_handlers",
    "idle_cores",
    "pending",
    "prefetch",
    "release",
    "take",
    "wait",
]

_MOD = "dmd.forces."
CELL_ROWS = _MOD + "numba_neighbors:cell_rows_handler_f32"
PAIRS = _MOD + "numba_kernels:pairs_handler"
SPREAD = _MOD + "numba_pme:spread_handler"
GATHER = _MOD + "numba_pme:gather_handler"
WAIT_S = 600.0  # the longest wait for a worker's handler before compiling it here

_QUEUE: list[str] = []  # the workers' handlers not started yet, in order of need (this process may take them)
_EVENTS: dict[str, threading.Event] = {}  # handler -> set when the worker that took it has stored it (or failed)
_DONE: set[str] = set()  # the handlers workers have stored in numba's cache
_OWN: list[str] = []  # this process's share, not compiled yet
_READY: dict[str, object] = {}  # handler -> its cfunc, compiled here while waiting for a worker
_FEEDING = [0]  # the workers still taking handlers from the queue
_WORKERS: list = []
_LOCK = threading.RLock()


class _Worker:
    """One worker process and the thread that feeds it: the thread takes the next handler from the queue, sends its
    name on the worker's stdin and waits for the worker to print it back (stored), until the queue is empty; it then
    closes the worker's stdin and reaps it (its CPU time counts as this process's children's)."""

    def __init__(self, first: str):
        import dmd

        env = dict(os.environ)  # NUMBA_CACHE_DIR and OMP_WAIT_POLICY from prepare_numba: the caller's cache
        root = str(Path(dmd.__file__).resolve().parents[1])  # the same dmd as the caller's (its cache entries)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dmd.forces.numba_prefetch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        _EVENTS[first] = threading.Event()  # taken now: a wait() right after prefetch() finds it started
        _FEEDING[0] += 1
        self.thread = threading.Thread(target=self._serve, args=(first,), name="dmd-numba-prefetch", daemon=True)
        self.thread.start()
        if not _WORKERS:
            atexit.register(_reap)
        _WORKERS.append(self)

    def _serve(self, name: str) -> None:
        try:
            while True:
                event = _EVENTS[name]
                try:
                    self.proc.stdin.write(name.encode() + b"\n")
                    stored = self.proc.stdout.readline().decode().strip() == name
                except OSError:
                    stored = False
                if stored:
                    _DONE.add(name)
                event.set()
                with _LOCK:
                    if not stored or not _QUEUE:  # a failed worker leaves the rest of the queue to this process
                        _FEEDING[0] -= 1
                        return
                    name = _QUEUE.pop(0)
                    _EVENTS[name] = threading.Event()
        finally:
            self.proc.stdin.close()
            self.proc.wait()


def _reap(timeout: float = 2.0) -> None:
    """At exit: no more handlers for the workers; give each a moment to finish and be reaped (a worker reaped here
    counts in this process's children's CPU time; one still compiling is left to finish filling numba's cache)."""
    with _LOCK:
        _QUEUE.clear()
    for worker in _WORKERS:
        worker.thread.join(timeout)


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
        known = set(_QUEUE) | set(_EVENTS) | set(_OWN)
        todo = [h for h in dict.fromkeys(handlers) if h not in known and not is_cached(_handler(h))]
        if len(todo) < 2:  # one handler: compiled here when first needed, as without prefetching
            return []
        _OWN.append(todo[0])  # the first needed (the rebuild's host call at allocation): this process
        _QUEUE.extend(todo[1:])
        for _ in range(min(workers, len(todo) - 1)):
            _Worker(_QUEUE.pop(0))
        started = todo[1:]
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


def pending(handler: str) -> bool:
    """Whether ``handler`` was given to the workers by :func:`prefetch` (queued, or taken by one): its XLA target
    may then be a stand-in (:mod:`dmd.forces.numba_trampoline`) until the program first runs."""
    with _LOCK:
        return handler in _QUEUE or handler in _EVENTS


def wait(handler: str, timeout: float = WAIT_S, steal: bool = True) -> bool:
    """Wait until a worker started by :func:`prefetch` has cached ``handler``; False if none took it (or it failed):
    the caller then compiles it itself (a queued handler no worker has started leaves the queue, unless ``steal``
    is False: the rebuild's host call needs only the kernel it shares). While the worker is not done, this process
    compiles its own share first, then the queue's last handlers (kept for :func:`take`)."""
    from dmd.forces.numba_ffi import ffi_cfunc

    with _LOCK:
        if handler in _QUEUE:
            if steal:
                _QUEUE.remove(handler)
            return False
    event = _EVENTS.get(handler)
    if event is None:
        return False
    while not event.is_set():
        with _LOCK:
            name = _OWN.pop(0) if _OWN else _QUEUE.pop() if _QUEUE else None
        if name is None:
            break
        cfunc = ffi_cfunc(_handler(name))
        with _LOCK:
            _READY[name] = cfunc
    event.wait(timeout)
    return handler in _DONE


def release(handler: str) -> bool:
    """Hand this process's ``handler`` to the workers (the end of their queue) once its kernel is compiled here:
    the rebuild's host call at allocation compiles the kernel its handler shares, and a worker then compiles the
    handler's own layer around it (~1 CPU s), loading the kernel from numba's cache. True if queued (a worker is
    still taking handlers)."""
    with _LOCK:
        if handler not in _OWN or not _FEEDING[0]:
            return False
        _OWN.remove(handler)
        _QUEUE.append(handler)
        return True


def take(handler: str):
    """The handler's cfunc if :func:`wait` compiled it here while waiting, else None (the caller compiles it:
    it leaves this process's share)."""
    with _LOCK:
        if handler in _OWN:
            _OWN.remove(handler)
        return _READY.pop(handler, None)


def _main(names: list[str]) -> int:
    """Compile the handlers named in ``names``, then those named on stdin (one a line, until it closes), printing
    each name once numba has stored the handler in its cache."""
    from dmd.forces.numba_ffi import ffi_cfunc

    for name in itertools.chain(names, iter(sys.stdin.readline, "")):
        if name.strip():
            ffi_cfunc(_handler(name.strip()))
            print(name.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
