"""PME reciprocal space with numba's charge spreading and force gathering (CPU, float32, orthorhombic box).

XLA:CPU spreads the charges by a windowed scatter on one core (~1.5 ms for villin + water's 1.1 M window elements)
and gathers by the scatter's transpose (~2.4 ms); :mod:`dmd.forces.numba_pme` spreads (one core, 0.7 ms) and
gathers (all cores, 1.0 ms CPU). The FFTs and the η(m)·Q̂ product stay on XLA (:func:`dmd.forces.pme.grid_energy`
and its gradient φ = ∂E/∂Q). The kernels run
as XLA custom calls (:func:`dmd.forces.xla_custom_call.numba_call`, one per replica under vmap), as the pair kernel
(:mod:`dmd.forces.numba_pairs`), so programs holding them are stored in JAX's persistent cache, and only where the
derivative is with respect to positions alone. Everything else stays on XLA
(:func:`dmd.forces.pme.charge_grid`):

* float64 (the OpenMM parity tests), triclinic ``[3, 3]`` boxes, non-CPU backends;
* derivatives with respect to the charges (θ) or the box (virial, barostat): the energy's ``custom_jvp`` takes XLA's
  tangent where the charge or box tangent is not a symbolic zero;
* forward-mode tangents of the forces (:mod:`dmd.sensitivity`): the forces carry a ``custom_jvp`` whose rule is
  XLA's value and gradient, with no custom call.

``kernel``: "auto" (the kernels where they serve and the system has ``AUTO_MIN_ATOMS`` atoms or more, else XLA; XLA
too if numba cannot be imported), "numba" (a clear
error where they cannot serve) or "xla" (:func:`dmd.forces.pme.pme_reciprocal_energy`). NonbondedForce takes
it from :attr:`dmd.forces.nonbonded.NonbondedSpec.pair_kernel` (one switch for both kernels).
"""

from __future__ import annotations

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from dmd.base.numba_env import prepare_numba
from dmd.forces.numba_pairs import KERNELS
from dmd.forces.pme import bspline_moduli, charge_grid, grid_energy, pme_reciprocal_energy
from dmd.forces.xla_custom_call import numba_call

__all__ = ["AUTO_MIN_ATOMS", "host_gather", "host_spread", "numba_reciprocal_energy", "reciprocal_energy"]

_BLOCK = 32  # atoms per prange task
# the XLA FFI targets of dmd.forces.numba_pme's handlers (a new name when their operands change: the persistent
# compilation cache keys programs by their HLO, which holds only the name)
SPREAD, GATHER = "dmd_pme_spread_v1", "dmd_pme_gather_v1"
# "auto" takes the kernels from this many atoms: below, the two calls' launches eat the gain (measured with the
# former pure_callbacks, ~0.9 ms: alanine dipeptide + water, 1,447 atoms, grid 23³: gradient 0.63-1.10 ms by XLA
# against 0.89-1.19 by the kernels; villin + water, 8,867 atoms: 4.7 against 3.5; not re-measured as custom calls)
AUTO_MIN_ATOMS = 4000


def _f32(*arrays):
    # jax hands buffers over with byte-order format '=' which numba refuses: a view as the native dtype fixes it
    return [np.asarray(a).view(np.float32) for a in arrays]


def host_spread(pos, q, box, grid):
    """The charge grid Q ``[K_x, K_y, K_z]`` float32 from NumPy float32 arrays (numba is imported on the first call)."""
    from dmd.forces.numba_pme import spread

    pos, q, box = _f32(pos, q, box)
    return spread(pos, q, box, *grid)


def host_gather(phi, pos, q, box):
    """dE/dx ``[N, 3]`` float32 for φ = dE/dQ ``[K_x, K_y, K_z]``, from NumPy float32 arrays."""
    from dmd.forces.numba_pme import gather

    phi, pos, q, box = _f32(phi, pos, q, box)
    return gather(phi, pos, q, box, _BLOCK)


def _why_not(pos, box, order):
    """Why the kernels cannot serve these arrays (None: they can)."""
    if order != 5:
        return f"B-spline order {order} (the PME kernels are order 5, OpenMM's)"
    if pos.dtype != jnp.float32:
        return f"positions are {pos.dtype} (the PME kernels are float32 only)"
    if jnp.ndim(box) != 1:
        return "the box is a [3, 3] matrix (the PME kernels take an orthorhombic [3] box)"
    return None


def reciprocal_energy(charges, pos, box, alpha, grid, order=5, moduli=None, kernel="auto"):
    """:func:`dmd.forces.pme.pme_reciprocal_energy` with ``kernel`` "auto" | "numba" | "xla" (module docstring)."""
    if moduli is None:
        moduli = tuple(bspline_moduli(k, order) for k in grid)
    e = numba_reciprocal_energy(kernel, charges, pos, box, alpha, grid, order, moduli)
    return pme_reciprocal_energy(charges, pos, box, alpha, grid, order, moduli) if e is None else e


def numba_reciprocal_energy(kernel, charges, pos, box, alpha, grid, order, moduli):
    """:func:`dmd.forces.pme.pme_reciprocal_energy` by the numba kernels, or None where XLA serves (see the module
    docstring for ``kernel``)."""
    if kernel not in KERNELS:
        raise ValueError(f"PME kernel {kernel!r}: pass one of {', '.join(KERNELS)}")
    why = _why_not(pos, box, order)
    if kernel == "numba" and why is not None:
        raise ValueError(f"kernel='numba' cannot serve PME: {why}; use 'auto' or 'xla'")
    auto_skips = jax.default_backend() != "cpu" or pos.shape[-2] < AUTO_MIN_ATOMS
    if kernel == "xla" or why is not None or (kernel == "auto" and auto_skips):
        return None
    prepare_numba()  # before numba is imported (find_spec imports nothing)
    if importlib.util.find_spec("numba") is None:
        if kernel == "numba":
            raise ValueError("kernel='numba' needs numba installed; use 'auto' or 'xla'")
        return None
    return _energy_fn(tuple(grid), float(alpha), int(order), moduli)(charges, pos, box)


def _energy_fn(grid, alpha, order, moduli):
    def xla_energy(q, pos, box):
        return grid_energy(charge_grid(q, pos, box, grid, order), box, alpha, grid, moduli)

    def e_grid(qg, box):
        return grid_energy(qg, box, alpha, grid, moduli)

    out_flat = jax.ShapeDtypeStruct((int(np.prod(grid)),), jnp.float32)
    dims = jnp.asarray(grid, jnp.int32)

    def spread_cb(q, pos, box):
        flat = numba_call(SPREAD, "dmd.forces.numba_pme:spread_handler", out_flat, pos, q, box, dims)
        return flat.reshape(grid)

    @jax.custom_jvp
    def value_and_grad(q, pos, box):  # (E, ∂E/∂x): spread (numba), FFTs (XLA), gather (numba)
        e, phi = jax.value_and_grad(e_grid)(spread_cb(q, pos, box), box)
        out = jax.ShapeDtypeStruct(pos.shape, jnp.float32)
        cfg = jnp.asarray([*grid, _BLOCK], jnp.int32)
        return e, numba_call(GATHER, "dmd.forces.numba_pme:gather_handler", out, phi.reshape(-1), pos, q, box, cfg)

    @value_and_grad.defjvp
    def _value_and_grad_jvp(primals, tangents):  # forward mode: XLA's value and gradient, no custom call
        return jax.jvp(jax.value_and_grad(xla_energy, argnums=1), primals, tangents)

    @jax.custom_jvp
    def energy(q, pos, box):
        return e_grid(spread_cb(q, pos, box), box)

    @functools.partial(energy.defjvp, symbolic_zeros=True)
    def _energy_jvp(primals, tangents):
        dq, dpos, dbox = tangents
        if isinstance(dq, SymbolicZero) and isinstance(dbox, SymbolicZero):  # positions alone: the kernels
            e, g = value_and_grad(*primals)
            return e, jnp.zeros_like(e) if isinstance(dpos, SymbolicZero) else jnp.sum(g * dpos)
        full = [jnp.zeros(t.shape, t.dtype) if isinstance(t, SymbolicZero) else t for t in tangents]
        return jax.jvp(xla_energy, primals, tuple(full))

    def fn(charges, pos, box):
        return energy(jnp.asarray(charges, jnp.float32), pos, jnp.asarray(box, jnp.float32))

    return fn
