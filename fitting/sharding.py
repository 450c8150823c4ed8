"""The frame axis of a store sharded across devices (jax.sharding Mesh + shard_map).

Each device holds a contiguous block of frames Z_t and computes its partial sufficient statistics
Σ_{t ∈ block} w_t Z_t; a ``psum`` over the ``frames`` mesh axis gives S on every device. The gradient in w
flows back through the psum to each device's own frames, so neither Z nor its gradient ever moves between
devices: only the [3, n_voxels] statistics do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["frame_mesh", "shard_frames", "sharded_stats_fn", "local_stats"]

AXIS = "frames"


@jax.custom_vjp
def local_stats(w, z):
    """S = Σ_t w_t Z_t: ``w [n_frames]``, ``z [n_frames, 3·n_voxels]`` (the store rows flattened) → ``[3, n_voxels]``.

    One matrix–vector product (a memory-bound stream of z). z must arrive 2-D: a [T, 3, N] → [T, 3N]
    reshape inside the jitted computation makes XLA:CPU emit the product as a naive loop (measured 7x
    slower, 1.76 s vs 0.27 s at T=1000, N=2e5); the reshape outside jit is a free view. The backward pass is
    written out as Z·ḡ (contracting the contiguous voxel axis). Z is data, not a parameter: its cotangent
    is zero.
    """
    return _stats_fwd(w, z)[0]


def _stats_fwd(w, z):
    # the barrier keeps XLA:CPU from fusing w's producer (softmax) into the product, which would turn the
    # library matrix-vector kernel into a naive loop
    wb = jax.lax.optimization_barrier(w.astype(z.dtype))
    return (wb @ z).reshape(3, -1), (z, w)


def _stats_bwd(res, g):
    z, w = res
    # batched (vmapped cross-validation fits) this is Z·Gᵀ [T, B], then moved to [B, T]. The outer barrier keeps
    # XLA from folding that transpose into the product as G·Zᵀ, which XLA:CPU runs ~10x slower (642 vs 50 ms at
    # [8, 6e4]·[6e4, 250]); the SPMD-partitioned (sharded) fit was folded so, 4.7x the CPU seconds of unsharded
    gw = jax.lax.optimization_barrier(z @ jax.lax.optimization_barrier(g.reshape(-1).astype(z.dtype)))
    return gw.astype(w.dtype), jnp.zeros_like(z)


local_stats.defvjp(_stats_fwd, _stats_bwd)


def frame_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``frames`` over ``devices`` (default: all devices)."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devs.reshape(-1), (AXIS,))


def shard_frames(z, mesh: Mesh):
    """Pad the frame axis with zero rows to a multiple of the mesh size and place it sharded.

    Zero rows contribute nothing to S; the weight vector is padded with zeros the same way by
    :func:`sharded_stats_fn`. ``z [n_frames, 3, n_voxels]`` (or already flattened); returns a jax array
    ``[n_padded, 3·n_voxels]`` (2-D, see :func:`local_stats`).
    """
    n_dev = mesh.devices.size
    t = z.shape[0]
    z = np.asarray(z).reshape(t, -1)
    pad = (-t) % n_dev
    if pad:
        z = np.concatenate([np.asarray(z), np.zeros((pad, *z.shape[1:]), z.dtype)], axis=0)
    return jax.device_put(z, NamedSharding(mesh, PartitionSpec(AXIS)))


def sharded_stats_fn(mesh: Mesh, n_frames: int):
    """``stats(w [n_frames], z_sharded [n_padded, 3·n_voxels]) -> S [3, n_voxels]``: psum of per-device sums."""
    n_dev = mesh.devices.size
    pad = (-n_frames) % n_dev

    def per_device(w_blk, z_blk):
        return jax.lax.psum(local_stats(w_blk, z_blk), AXIS)

    mapped = jax.shard_map(
        per_device, mesh=mesh, in_specs=(PartitionSpec(AXIS), PartitionSpec(AXIS)), out_specs=PartitionSpec()
    )

    def stats(w, z):
        return mapped(jnp.pad(w, (0, pad)), z)

    return stats
