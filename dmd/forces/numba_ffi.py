"""numba helpers for writing XLA FFI handlers (this module imports numba: import it only where they run).

An XLA CPU custom call of the typed FFI (``api_version=1``) is a C function ``XLA_FFI_Error* h(XLA_FFI_CallFrame*)``.
:func:`ffi_cfunc` compiles a Python function ``h(frame) -> 0`` with that ABI (both pointers as 64-bit integers) as a
numba ``cfunc`` cached on disk. Inside it, :func:`is_query` answers XLA's metadata query (XLA calls every handler
once at registration with a metadata extension and no buffers), and :func:`arg1`, :func:`arg2`, :func:`scalar`,
:func:`ret1` and :func:`ret2` view the call's buffers as numpy arrays without a copy. The layouts follow
``jaxlib/include/xla/ffi/api/c_api.h`` (FFI API 0.3), read as 64-bit words: CallFrame {struct_size,
extension_start, api, ctx, stage, args{struct_size, extension_start, size, types, args}, rets{...}, ...}; Buffer
{struct_size, extension_start, dtype, data, rank, dims}. Errors are not reported through XLA (the kernels cannot
fail once the Python side has checked their inputs). :mod:`dmd.forces.xla_custom_call` registers the handlers.
"""

from __future__ import annotations

import os

from dmd.base.numba_env import prepare_numba

prepare_numba()  # before numba is imported: its cache directory and thread waits

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from dmd.forces.numba_trampoline import API_MINOR as _API_MINOR  # noqa: E402
from dmd.forces.numba_trampoline import EXECUTE as _EXECUTE  # noqa: E402
from dmd.forces.numba_trampoline import METADATA as _METADATA  # noqa: E402

__all__ = ["SIGNATURE", "arg1", "arg2", "ffi_cfunc", "is_cached", "is_query", "put1", "put2", "ret1", "ret2", "scalar"]

SIGNATURE = types.int64(types.int64)  # XLA_FFI_Error* (NULL: success) of an XLA_FFI_CallFrame*


def ffi_cfunc(pyfunc):
    """``pyfunc(frame: int64) -> int64`` (0) compiled as an XLA FFI handler, cached on disk.

    numba's cache checks only ``pyfunc``'s own source file for changes, but the handler inlines this module's
    helpers: its cache entry is stamped with both files (a stale handler after an edit here answered XLA's metadata
    query wrongly). numba's threading layer is started first: a ``parallel=True`` kernel loaded from numba's cache
    into a ``cfunc`` does not start it (a segfault on the first call in a fresh process)."""
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()
    handler = _cfunc(pyfunc)
    handler.compile()
    return handler


def is_cached(pyfunc) -> bool:
    """Whether numba's on-disk cache holds ``pyfunc``'s handler for this source and this CPU (nothing compiled)."""
    handler = _cfunc(pyfunc)
    cache = handler._cache
    key = cache._index_key(handler._sig, handler._targetdescr.target_context.codegen())
    return key in cache._cache_file._load_index()


def _cfunc(pyfunc):
    """The (not yet compiled) ``cfunc`` of ``pyfunc`` with its cache, stamped as :func:`ffi_cfunc` says."""
    import inspect

    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    handler = CFunc(pyfunc, sigutils.normalize_signature(SIGNATURE), locals={}, options={})  # numba.cfunc's steps
    handler.enable_caching()
    stamps = []
    for path in (inspect.getfile(pyfunc), __file__):
        st = os.stat(path)
        stamps.append((st.st_mtime, st.st_size))
    handler._cache._cache_file._source_stamp = tuple(stamps)  # numba's (mtime, size) of pyfunc's file, and ours
    return handler


@intrinsic
def _pointer(typingctx, addr, like):
    """``addr`` (int64) as a pointer to ``like``'s scalar type (``like``: a scalar, or an array of that dtype)."""
    ptr = types.CPointer(like.dtype if isinstance(like, types.Array) else like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(types.int64, like), codegen


@numba.njit(cache=True, inline="always")
def _words(addr, n):
    return numba.carray(_pointer(addr, np.int64(0)), (n,))


@numba.njit(cache=True)
def is_query(frame):
    """True when this call is not an execution: XLA's metadata query (the metadata is then filled in: FFI API
    (0, 3), no traits, no state) or another stage."""
    fr = _words(frame, 5)
    if fr[1] != 0:
        ext = _words(fr[1], 4)  # XLA_FFI_Metadata_Extension {struct_size, type, next, metadata*}
        if (ext[1] & 0xFFFFFFFF) == _METADATA:
            md = _words(ext[3], 6)  # XLA_FFI_Metadata {struct_size, api_version{3 words}, traits, state_type_id}
            md[1] = 24  # XLA_FFI_Api_Version's struct_size (as the C++ API's PopulateMetadata writes them)
            md[2] = 0
            md[3] = _API_MINOR << 32  # major 0 (low word), minor
            md[4] = 0
            md[5] = 0
            return True
    return (fr[4] & 0xFFFFFFFF) != _EXECUTE


@intrinsic
def _word(typingctx, addr, i):
    """The int64 at ``addr + 8 i``. An intrinsic, not an inlined ``njit`` helper: numba inlines those at its IR
    level, copying and re-running its passes on them for every call site (80 inlinings in a handler once cost
    ~40% of its ``cfunc``'s compilation)."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.int64)))
        return builder.load(builder.gep(ptr, [args[1]]))

    return types.int64(types.int64, types.int64), codegen


@numba.njit(cache=True, inline="always")
def arg1(frame, k, like):
    """Operand ``k`` (rank 1) as a C-contiguous array of ``like``'s dtype (no copy). The call frame's words 9 and
    14 point to the operands' and results' XLA_FFI_Buffer pointers; a buffer's words 3 and 5: data, dims."""
    b = _word(_word(frame, 9), k)
    return numba.carray(_pointer(_word(b, 3), like), (_word(_word(b, 5), 0),))


@numba.njit(cache=True, inline="always")
def arg2(frame, k, like):
    """Operand ``k`` (rank 2), as :func:`arg1`."""
    b = _word(_word(frame, 9), k)
    dims = _word(b, 5)
    return numba.carray(_pointer(_word(b, 3), like), (_word(dims, 0), _word(dims, 1)))


@numba.njit(cache=True, inline="always")
def scalar(frame, k, like):
    """The value of operand ``k`` (rank 0, or the first element)."""
    return _pointer(_word(_word(_word(frame, 9), k), 3), like)[0]


@numba.njit(cache=True, inline="always")
def ret1(frame, k, like, n):
    """Result ``k``'s buffer as a flat array of ``n`` elements of ``like``'s dtype (written in place)."""
    return numba.carray(_pointer(_word(_word(_word(frame, 14), k), 3), like), (n,))


@numba.njit(cache=True, inline="always")
def ret2(frame, k, like):
    """Result ``k``'s buffer (rank 2) as a C-contiguous array (written in place)."""
    b = _word(_word(frame, 14), k)
    dims = _word(b, 5)
    return numba.carray(_pointer(_word(b, 3), like), (_word(dims, 0), _word(dims, 1)))


@numba.njit(cache=True, inline="always")
def put1(frame, k, src):
    """Result ``k`` (a flat buffer of ``src.size`` elements) = ``src`` (any rank, C order), copied element by
    element: ``ret1(...)[:] = src`` compiles numba's shape-mismatch error message (its int and str formatting: ~2.6
    CPU s per process on an empty cache, docs/engine.md "Start-up on an empty numba cache")."""
    flat = src.reshape(src.size)
    dst = ret1(frame, k, flat, flat.size)
    for i in range(flat.size):
        dst[i] = flat[i]


@numba.njit(cache=True, inline="always")
def put2(frame, k, src):
    """Result ``k`` (rank 2, ``src``'s shape) = ``src``, element by element (see :func:`put1`)."""
    dst = ret2(frame, k, src)
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]
