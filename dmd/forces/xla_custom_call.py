"""numba kernels called from XLA programs as CPU custom calls (XLA's typed FFI), not as Python host callbacks.

A ``jax.pure_callback`` leaves XLA for the interpreter at every call (copies of its operands and results, the GIL),
and JAX's persistent compilation cache refuses programs that hold one ("uses host callbacks"), so every process
compiled a step with numba's kernels again. A custom call is a plain HLO instruction naming a registered C function:
the operands are handed over in place, and the program is cached like any other (docs/engine.md, "numba kernels as
XLA custom calls").

Usage: write the handler as a module-level Python function ``h(frame) -> 0`` in a module that imports numba, reading
its buffers with :mod:`dmd.forces.numba_ffi` (``arg1``/``arg2``/``scalar``/``ret1``/``ret2``, ``is_query``), and
call it from JAX with :func:`numba_call`::

    numba_call("dmd_pair_forces_v1", "dmd.forces.numba_kernels:pairs_handler", results, *operands)

The first use in a process imports that module, compiles the handler (``numba.cfunc``, cached on disk by numba) and
registers it with XLA under the name; this happens while the caller's program is traced, i.e. before XLA compiles it
or loads it from the persistent cache, so a cached program always finds its target. Change the name (``_v2``) when
a handler's operands change: the persistent cache keys programs by their HLO, which holds only the name.
Operands and results are row-major; a vmapped call runs once per batch member (``vmap_method="sequential"``).
CPU only: the targets are registered for the CPU platform.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
import threading
from collections.abc import Callable, Sequence

import jax

__all__ = ["deferred", "numba_call", "register_numba_target"]

_TARGETS: dict[str, object] = {}  # name -> the compiled cfunc (kept alive: XLA holds only its address)
_LOCK = threading.Lock()


def _capsule(address: int):
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    return new(address, b"xla._CUSTOM_CALL_TARGET", None)


def _load(handler: str | Callable[[], object]):
    if callable(handler):
        return handler()
    from dmd.forces.numba_ffi import ffi_cfunc
    from dmd.forces.numba_prefetch import take, wait

    wait(handler)  # a worker of dmd.forces.numba_prefetch compiling it: from numba's cache once it has stored it
    ready = take(handler)  # compiled here while waiting for another
    if ready is not None:
        return ready
    module, _, attr = handler.partition(":")
    return ffi_cfunc(getattr(importlib.import_module(module), attr))


def register_numba_target(name: str, handler: str | Callable[[], object], defer: bool | None = None) -> None:
    """Register ``handler`` as the XLA CPU FFI target ``name`` (once per process; later calls do nothing).

    ``handler``: ``"module:function"`` (a Python function ``h(frame) -> 0`` compiled by
    :func:`dmd.forces.numba_ffi.ffi_cfunc`), or a callable returning a compiled cfunc with ``.address``.
    ``defer``: register a stand-in (:func:`dmd.forces.numba_trampoline.stand_in`) whose first execution loads the
    handler, so that XLA can compile programs calling ``name`` before it exists; default: where a worker of
    :mod:`dmd.forces.numba_prefetch` has it (:func:`deferred`)."""
    with _LOCK:
        if name in _TARGETS:
            return
        address = None
        if defer if defer is not None else deferred(handler):
            from dmd.forces.numba_trampoline import stand_in

            def resolve():
                _TARGETS[name] = cfunc = _load(handler)  # kept alive: the stand-in jumps to its address
                return cfunc.address

            try:
                address = stand_in(resolve)
                _TARGETS[name] = None
            except OSError:  # no executable page here (a hardened kernel): wait for the handler instead
                address = None
        if address is None:
            _TARGETS[name] = cfunc = _load(handler)
            address = cfunc.address
        jax.ffi.register_ffi_target(name, _capsule(address), platform="cpu", api_version=1)


def deferred(handler) -> bool:
    """Whether :func:`register_numba_target` registers a stand-in for ``handler``: a worker of
    :mod:`dmd.forces.numba_prefetch` has it (queued or compiling), stand-ins work here
    (:func:`dmd.forces.numba_trampoline.supported`) and ``DMD_NUMBA_STAND_INS`` is not ``0``."""
    prefetch = sys.modules.get("dmd.forces.numba_prefetch")
    if not isinstance(handler, str) or prefetch is None or os.environ.get("DMD_NUMBA_STAND_INS") == "0":
        return False
    from dmd.forces.numba_trampoline import supported

    return supported() and prefetch.pending(handler)


def numba_call(name: str, handler, results, *operands, vmap_method: str = "sequential"):
    """Call the numba handler ``handler`` (see :func:`register_numba_target`) as the XLA custom call ``name`` on
    ``operands`` (arrays, row-major); ``results``: a ``jax.ShapeDtypeStruct`` or a sequence of them."""
    register_numba_target(name, handler)
    multiple = isinstance(results, Sequence)
    out = jax.ffi.ffi_call(name, results, vmap_method=vmap_method)(*operands)
    return tuple(out) if multiple else out
