"""The real-space PME pair force as a compiled, multi-threaded numba kernel (CPU, float32, half list).

XLA:CPU evaluates every slot of a neighbour row (padding and partners beyond r_c included) and runs the pair loop
on one core; this kernel compacts each row to the partners inside r_c, vectorises the arithmetic over them and
splits the rows over numba's threads (all cores): villin + water's pair force costs 5.8 ms against XLA's 17.3 ms
and OpenMM CPU(2)'s direct space 9.2 ms (docs/engine.md, "Numba pair kernels"). XLA calls it as a custom call
(:mod:`dmd.forces.xla_custom_call`, target ``dmd_pair_forces_v1``: the buffers in place, the program cacheable)
from :func:`dmd.forces.nonbonded.pair_energy_full`'s ``forces`` hook, which uses it for the
energy and for derivatives with respect to positions alone. Everything else stays on XLA:

* float64 (the OpenMM parity tests): the kernel's erfc table is good to ~1e-7, not 1e-12;
* gradients with respect to θ or the box (fitting, virials): the hook's ``need`` is then more than positions;
* forward-mode tangents of the forces (:mod:`dmd.sensitivity`): the custom call has no JVP, so the forces carry a
  ``custom_jvp`` whose rule evaluates the XLA kernel, value and tangent, with no custom call at all;
* GPU backends, triclinic ``[3, 3]`` boxes, a LJ switch, reaction field, rows over several devices.

Kind "LJ" (the LJ fluid, :func:`dmd.models.lj_fluid`) has its own kernel (``lj_pairs``, target ``dmd_lj_pairs_v1``:
no Coulomb term, no table, no square root) under the same rules.

``pair_kernel``: "auto" (the kernel where it applies, else XLA; XLA too if numba cannot be imported), "numba" (the
kernel; a clear error where it cannot serve: float64, a matrix box) or "xla". Vmapped calls (replicas) run the
kernel once per replica (``vmap_method="sequential"``). numba is imported when a program with the kernel is first
traced; the kernel and its handler are compiled once per machine (4-7 CPU s) and cached on disk (``cache=True``, in
:func:`dmd.base.numba_env.numba_cache_dir`), so later processes load them in ~1 CPU s. JAX's persistent cache
stores programs holding the custom call like any other (docs/engine.md, "numba kernels as XLA custom calls").
"""

from __future__ import annotations

import functools
import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.numba_env import prepare_numba
from dmd.forces.xla_custom_call import numba_call, register_numba_target

__all__ = ["KERNELS", "pair_forces", "erfc_table", "lj_pairs_vec", "pairs_vec", "TABLE_SIZE"]

KERNELS = ("auto", "numba", "xla")
TABLE_SIZE = 4096  # points over [0, r_c] of the tabulated erfc terms (linear interpolation in r)
_BLOCK = 64  # rows per prange task (the probe's best, benchmarks/bench_numba_pairs.py)
TARGET, HANDLER = "dmd_pair_forces_v1", "dmd.forces.numba_kernels:pairs_handler"  # the XLA custom call
LJ_TARGET, LJ_HANDLER = "dmd_lj_pairs_v1", "dmd.forces.numba_kernels:lj_pairs_handler"  # kind "LJ" (lj_fluid)


def erfc_table(rc, alpha, size=TABLE_SIZE):
    """``[size + 2, 2]`` float32: erfc(αr) and erfc(αr) + 2αr/√π·exp(−α²r²) at r = k·r_c/size (the energy's and
    r·force's Coulomb factors); linear interpolation between the points errs by ≤ h²/8·max|f''|, h = r_c/size."""
    from scipy.special import erfc

    r = np.arange(size + 2, dtype=np.float64) * (rc / size)
    ar = alpha * r
    return np.stack([erfc(ar), erfc(ar) + 2.0 / math.sqrt(math.pi) * ar * np.exp(-ar * ar)], 1).astype(np.float32)


def pairs_vec(pos, box, idx, q, sig, seps, rc, alpha, half=True):
    """``(energy, dE/dx)`` of the kernel from NumPy float32 arrays (``idx`` int32, padding = N)."""
    te, tg = _tables(float(rc), float(alpha))
    prepare_numba()  # numba's cache directory and passive OpenMP waits, before numba is imported
    import numba

    from dmd.forces.numba_kernels import pairs  # numba is imported here, on the first call

    return pairs(pos, box, idx, q, sig, seps, np.float32(rc), te, tg, half, _BLOCK, numba.get_num_threads())


def lj_pairs_vec(pos, box, idx, sig, seps, rc, half=True):
    """``(energy, dE/dx)`` of the LJ-only kernel (kind "LJ", no switch) from NumPy float32 arrays."""
    prepare_numba()
    import numba

    from dmd.forces.numba_kernels import lj_pairs

    return lj_pairs(pos, box, idx, sig, seps, np.float32(rc), half, _BLOCK, numba.get_num_threads())


@functools.lru_cache(maxsize=8)
def _tables(rc, alpha):
    t = erfc_table(rc, alpha)
    return np.ascontiguousarray(t[:, 0]), np.ascontiguousarray(t[:, 1])


def _pool_threads():
    """numba's thread pool size (the kernel's per-thread force buffers: thread ids stay below it)."""
    prepare_numba()
    import numba

    return numba.config.NUMBA_NUM_THREADS


def _why_not(pos, box, idx):
    """Why the kernel cannot serve these arrays (None: it can)."""
    if pos.dtype != jnp.float32:
        return f"positions are {pos.dtype} (the kernel is float32 only: its erfc table is good to ~1e-7)"
    if jnp.ndim(box) != 1:
        return "the box is a [3, 3] matrix (the kernel takes an orthorhombic [3] box)"
    return None


def _numba_available():
    # find_spec, not an import: numba's import (~0.15 CPU s) waits for the first trace of a kernel, so a system
    # built and never run (an argument check that refuses it, a test of an error path) does not pay it
    prepare_numba()
    return importlib.util.find_spec("numba") is not None


def pair_forces(pair_kernel, kind, rc, alpha=None, switch=None, half=True, row_shards=1, xla_energy=None):
    """The ``forces`` hook of :func:`dmd.forces.nonbonded.pair_energy_full` for ``pair_kernel`` (see the module
    docstring), or None where the XLA kernel serves throughout.

    ``xla_energy()``: makes the XLA pair energy ``E(pos, box, idx, q, sig, seps)`` whose value and position gradient
    (and their tangents) replace the kernel under forward-mode differentiation. The hook returns ``(E, ∂E/∂x)``, or
    None for arrays the kernel does not take ("auto": float64, a matrix box, a non-CPU backend).
    """
    if pair_kernel not in KERNELS:
        raise ValueError(f"pair_kernel {pair_kernel!r}: pass one of {', '.join(KERNELS)}")
    forced = pair_kernel == "numba"
    unsupported = (kind not in ("PME", "LJ") and "reaction field") or (switch is not None and "a LJ switch")
    unsupported = unsupported or (row_shards > 1 and "rows over several devices")
    if pair_kernel == "xla" or (unsupported and not forced) or (not forced and not _numba_available()):
        return None
    if unsupported:
        raise ValueError(f"pair_kernel='numba' has no kernel for {unsupported}: use 'xla' or 'auto'")
    rc, xla_energy = float(rc), xla_energy()
    alpha = float(alpha) if kind == "PME" else None

    def xla_forces(pos, box, idx, q, sig, seps):
        return jax.value_and_grad(xla_energy)(pos, box, idx, q, sig, seps)

    @jax.custom_jvp
    def kernel(pos, box, idx, q, sig, seps):
        n = pos.shape[0]
        out = (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((n, 3), jnp.float32))
        if kind == "LJ":  # no Coulomb term, no table
            register_numba_target(LJ_TARGET, LJ_HANDLER)
            cfg = np.array([half, _BLOCK, _pool_threads()], np.int32)
            return numba_call(LJ_TARGET, LJ_HANDLER, out, pos, box, idx, sig, seps, np.float32(rc), cfg)
        register_numba_target(TARGET, HANDLER)  # imports numba: before reading its pool size
        te, tg = _tables(rc, alpha)
        cfg = np.array([half, _BLOCK, _pool_threads()], np.int32)
        return numba_call(TARGET, HANDLER, out, pos, box, idx, q, sig, seps, te, tg, np.float32(rc), cfg)

    @kernel.defjvp
    def _kernel_jvp(primals, tangents):  # forward mode: the XLA kernel, value and tangent (no custom call)
        pos, box, idx, q, sig, seps = primals
        dpos, dbox, _, dq, dsig, dseps = tangents
        fn = functools.partial(lambda i, p, b, qq, s, e: xla_forces(p, b, i, qq, s, e), idx)
        return jax.jvp(fn, (pos, box, q, sig, seps), (dpos, dbox, dq, dsig, dseps))

    def forces(pos, box, idx, q, sig, seps):
        backend = jax.default_backend()
        why = _why_not(pos, box, idx)
        if why is None and backend != "cpu":
            why = f"the backend is {backend} (the kernel is an XLA CPU custom call)"
        if why is None:
            f32 = (jnp.asarray(a, jnp.float32) for a in (box, q, sig, seps))  # θ may be float64 under x64
            return kernel(pos, next(f32), idx.astype(jnp.int32), *f32)
        if forced and why is not None:
            raise ValueError(f"pair_kernel='numba' cannot serve: {why}; use 'auto' or 'xla'")
        return None

    return forces
