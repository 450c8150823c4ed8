"""dmd.forces.numba_ffi: a numba handler reads XLA's buffers (shapes, dtypes, rank-0 operands) and writes its results
in place through the typed FFI call frame, under jit and vmap, and passes XLA's metadata query at registration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("numba")

from dmd.forces.numba_ffi import arg1, arg2, ffi_cfunc, is_query, ret1, ret2, scalar  # noqa: E402
from dmd.forces.xla_custom_call import numba_call  # noqa: E402


def _handler(frame):
    """out = a · s + b[None, :] (float32 [R, C]); shape = (R, C, the int32 operand) [3]."""
    if is_query(frame):
        return 0
    f4, i4 = np.float32(0), np.int32(0)
    a, b, s, k = arg2(frame, 0, f4), arg1(frame, 1, f4), scalar(frame, 2, f4), scalar(frame, 3, i4)
    out = ret2(frame, 0, f4)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] * s + b[j]
    shape = ret1(frame, 1, i4, 3)
    shape[0], shape[1], shape[2] = a.shape[0], a.shape[1], k
    return 0


def _call(a, b, s, k):
    results = (jax.ShapeDtypeStruct(a.shape, jnp.float32), jax.ShapeDtypeStruct((3,), jnp.int32))
    return numba_call("dmd_test_numba_ffi_v1", lambda: ffi_cfunc(_handler), results, a, b, s, k)


def test_handler_reads_and_writes_the_call_frames_buffers():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)  # not square: rows and columns must not be swapped
    b = jnp.asarray(rng.normal(size=7), jnp.float32)
    s, k = jnp.float32(2.5), jnp.int32(-3)
    out, shape = jax.jit(_call)(a, b, s, k)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(a) * np.float32(2.5) + np.asarray(b)[None])
    assert np.asarray(shape).tolist() == [5, 7, -3]
    # vmap: one call per member (each sees its own [5, 7] slice and its own scalar)
    a3, s3 = jnp.stack([a, 2 * a, -a]), jnp.asarray([1.0, 0.5, 3.0], jnp.float32)
    out3, shape3 = jax.jit(jax.vmap(_call, in_axes=(0, None, 0, None)))(a3, b, s3, k)
    want = np.asarray(a3) * np.asarray(s3)[:, None, None] + np.asarray(b)[None, None]
    np.testing.assert_array_equal(np.asarray(out3), want)
    assert np.asarray(shape3).tolist() == [[5, 7, -3]] * 3
