"""Stand-in XLA FFI targets: register a custom call target now, supply its numba handler later (no numba import here).

XLA looks a custom call's target up by name when it compiles a program, so a target must be registered before the
program that calls it is compiled. A numba handler that a worker of :mod:`dmd.forces.numba_prefetch` is still
compiling (a machine's first run) would make the caller wait at tracing, and XLA's compilation of the step (~4.6 CPU s
for villin in water) could only start after it. :func:`stand_in` returns the address of a stable entry point for
such a target instead: 8 bytes of machine code, ``jmp qword ptr [rip + d]``, through a table slot that first holds a
Python function (:mod:`ctypes`) and later the handler's address. Registering that address lets XLA compile the
program at once; the first *execution* of the call then blocks in the Python function until ``resolve()`` returns
the handler's address (the worker's handler loaded from numba's cache, or compiled here), stores it in the slot and
runs it; every later call jumps straight to the handler (one indirect jump more than a direct target).

XLA calls a target once at registration with a metadata query (``dmd.forces.numba_ffi.is_query``): the Python
function answers it as the numba handlers do (FFI API 0.3, no traits). x86-64 Linux only (:func:`supported`);
elsewhere the caller registers the handler directly, waiting for it. docs/engine.md, "Start-up on an empty numba
cache".
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import signal
import sys
import threading
import traceback
from collections.abc import Callable

__all__ = ["API_MINOR", "EXECUTE", "METADATA", "answer_query", "resolved", "stand_in", "supported"]

EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
METADATA = 1  # XLA_FFI_Extension_Metadata
API_MINOR = 3  # the FFI API version (0, 3) whose layouts dmd.forces.numba_ffi reads
_SLOT = 8  # bytes of code per slot: FF 25 <disp32> (jmp qword ptr [rip + disp32]), then two int3
_HANDLER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)  # XLA_FFI_Error* (XLA_FFI_CallFrame*)
_LOCK = threading.RLock()
_PAGES: list = []  # [mmap, code address, table address, slots used]
_PENDING: set[int] = set()  # the slots whose handler is not resolved yet
_KEEP: list = []  # the first-call functions (ctypes thunks: freed while running, they would crash the process)


def supported() -> bool:
    """Whether stand-ins can be made here (the entry points are x86-64 machine code, mapped with Linux's mprotect)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _pages():
    """The code page (slots of ``jmp [table slot]``, then read + execute only) and the table page after it."""
    if _PAGES:
        return _PAGES
    page = mmap.PAGESIZE
    mem = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    code = ctypes.addressof(ctypes.c_char.from_buffer(mem))  # page-aligned; the mapping lives as long as the process
    table = code + page
    for k in range(page // _SLOT):
        disp = (table + 8 * k) - (code + _SLOT * k + 6)  # relative to the end of the 6-byte jmp
        mem[_SLOT * k : _SLOT * (k + 1)] = b"\xff\x25" + disp.to_bytes(4, "little", signed=True) + b"\xcc\xcc"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(code, page, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect of the stand-ins' code page failed")
    _PAGES.extend([mem, code, table, 0])
    return _PAGES


def _word(addr: int, i: int) -> ctypes.c_int64:
    return ctypes.c_int64.from_address(addr + 8 * i)


def answer_query(frame: int) -> bool:
    """True when this call is not an execution: XLA's metadata query (then filled in: FFI API (0, 3), no traits,
    no state; the words as ``dmd.forces.numba_ffi.is_query`` writes them) or another stage."""
    ext = _word(frame, 1).value
    if ext and (_word(ext, 1).value & 0xFFFFFFFF) == METADATA:
        md = _word(ext, 3).value  # XLA_FFI_Metadata {struct_size, api_version{3 words}, traits, state_type_id}
        for i, v in ((1, 24), (2, 0), (3, API_MINOR << 32), (4, 0), (5, 0)):
            _word(md, i).value = v
        return True
    return (_word(frame, 4).value & 0xFFFFFFFF) != EXECUTE


def _stop_interrupted() -> None:
    """End the process as an uncaught Ctrl-C would (killed by SIGINT: exit status 130 in a shell), with one line
    instead of a traceback: an exception cannot unwind through XLA's call into this stand-in, and returning without
    the handler would hand XLA an unfilled result. Only a program's first execution waits here, before it has
    produced anything."""
    sys.stderr.write("\ninterrupted while a compiled kernel was loading (a program's first run); stopped\n")
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # KeyboardInterrupt is raised on the main thread only
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(130)  # where the signal did not end the process


def stand_in(resolve: Callable[[], int]) -> int:
    """The address of a new stand-in FFI handler: its first executing call runs ``resolve()`` (the real handler's
    address; called once, under a lock), later calls jump to that handler. A failing ``resolve`` aborts the process
    with its traceback (the call cannot return an XLA error, and an unfilled result must not pass as one); a Ctrl-C
    while it runs ends the process as an uncaught one would, with one line (:func:`_stop_interrupted`)."""
    with _LOCK:
        pages = _pages()
        mem, code, table, k = pages
        if _SLOT * (k + 1) > mmap.PAGESIZE:
            raise RuntimeError("no stand-in slots left")
        pages[3] = k + 1

        def first(frame):
            if answer_query(frame):
                return None
            with _LOCK:
                if k in _PENDING:
                    try:
                        address = int(resolve())
                    except KeyboardInterrupt:  # Ctrl-C while the handler loads: XLA runs this on the main thread
                        _stop_interrupted()
                    except BaseException:  # reported, then the process ends
                        traceback.print_exc()
                        sys.stderr.flush()
                        os.abort()
                    ctypes.c_uint64.from_address(table + 8 * k).value = address
                    _PENDING.discard(k)
            return _HANDLER(ctypes.c_uint64.from_address(table + 8 * k).value)(frame)

        fn = _HANDLER(first)
        _KEEP.append(fn)
        _PENDING.add(k)
        ctypes.c_uint64.from_address(table + 8 * k).value = ctypes.cast(fn, ctypes.c_void_p).value
        return code + _SLOT * k


def resolved(address: int) -> bool:
    """Whether the stand-in at ``address`` has its handler (its first execution has run)."""
    with _LOCK:
        return not _PAGES or (address - _PAGES[1]) // _SLOT not in _PENDING
