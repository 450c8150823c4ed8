"""Per-frame structure factors F(h, t), computed once and stored as the sufficient-statistics design matrix.

The reweighted diffuse prediction (seed, "x′(h)")::

    x′(h) = Σ_t w_t |F(h,t)|² − |Σ_t w_t F(h,t)|²,   Σ_t w_t = 1

is invariant to a per-voxel shift F → F − c(h) when the weights sum to one, so the store keeps the centered
G = F − F̄ (F̄ = uniform frame mean), which removes the Bragg part |F̄|² and the float32 cancellation that
comes with it. Each frame's row of the store is

    Z_t = [ |G_t|², Re G_t, Im G_t ]        Z: [n_frames, 3, n_voxels] float

so that the sufficient statistics S = Σ_t w_t Z_t are one matrix–vector product (memory-bound, streamed
once per evaluation) and x′ = S₀ − S₁² − S₂² (:func:`fitting.reweight.diffuse_from_stats`). Its gradient in w
is the transposed product Z·(∂L/∂S): a second streaming pass.

A store lives in memory (numpy, handed to JAX on use) or, when too big, in a chunked HDF5 file
(:func:`open_store`), read frame-chunk by frame-chunk by :func:`stream_stats` / :func:`stream_vjp`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FrameStore",
    "aligned_empty",
    "store_from_array",
    "build_store",
    "open_store",
    "iter_chunks",
    "stream_stats",
    "stream_vjp",
    "store_from_trajectory",
]


@dataclass(frozen=True)
class FrameStore:
    """Centered sufficient-statistics rows of every frame.

    Attributes:
      z: ``[n_frames, 3, n_voxels]`` float (numpy array or h5py dataset): |G|², Re G, Im G, G = F − F̄.
      f_mean: ``[n_voxels]`` complex, F̄ = uniform frame mean of F (electrons), needed only for
        unnormalized weights (:func:`fitting.baselines.sigmoid_baseline`) and Bragg output.
      path: HDF5 file backing ``z``, or None when in memory.
    """

    z: object
    f_mean: np.ndarray
    path: str | None = None

    @property
    def n_frames(self) -> int:
        return int(self.z.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.z.shape[2])

    @property
    def dtype(self):
        return np.dtype(self.z.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.z.shape)) * self.dtype.itemsize

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def array(self) -> np.ndarray:
        """The whole ``z`` as an in-memory numpy array (reads the file for an on-disk store)."""
        return np.asarray(self.z[...]) if self.on_disk else np.asarray(self.z)


def aligned_empty(shape, dtype) -> np.ndarray:
    """Uninitialized C-contiguous array whose data start on a 64-byte boundary, which JAX on CPU can use
    without a copy (:func:`fitting.reweight.make_problem` then shares an in-memory store instead of
    duplicating it)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = np.empty(n * dtype.itemsize + 64, np.uint8)
    off = -buf.ctypes.data % 64
    return buf[off : off + n * dtype.itemsize].view(dtype).reshape(shape)


def _rows(f: np.ndarray, f_mean: np.ndarray, dtype) -> np.ndarray:
    g = f - f_mean
    out = aligned_empty((f.shape[0], 3, f.shape[1]), dtype)
    out[:, 0], out[:, 1], out[:, 2] = g.real**2 + g.imag**2, g.real, g.imag
    return out


def store_from_array(f, dtype=None) -> FrameStore:
    """In-memory store from per-frame structure factors ``f [n_frames, n_voxels]`` complex.

    Args:
      dtype: float dtype of the store; default float32 for complex64 input, float64 for complex128.
    """
    f = np.asarray(f)
    if f.ndim != 2 or not np.iscomplexobj(f):
        raise ValueError(f"F must be complex [n_frames, n_voxels], got {f.dtype} {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("F contains NaN/inf values: recompute the structure factors of the offending frames")
    dtype = np.dtype(dtype or (np.float64 if f.dtype == np.complex128 else np.float32))
    f_mean = f.mean(axis=0, dtype=np.complex128)
    return FrameStore(z=_rows(f, f_mean, dtype), f_mean=f_mean)


def build_store(
    chunks: Iterable[np.ndarray],
    n_frames: int,
    n_voxels: int,
    *,
    path: str | os.PathLike | None = None,
    dtype=np.float32,
    frames_per_chunk: int = 16,
    progress: bool = True,
) -> FrameStore:
    """Stream per-frame F chunks ``[n_chunk, n_voxels]`` complex into a store (memory, or HDF5 at ``path``).

    Two passes: the first writes Re F, Im F and accumulates F̄ in float64; the second centers each chunk
    and fills |G|². With ``path`` the store is an HDF5 file chunked by ``frames_per_chunk`` frames, written
    through :func:`dmd.base.io.atomic_path` (a temporary file renamed into place on success, removed on failure).
    """
    from dmd.base.io import atomic_path
    from dmd.base.progress import progress_bar

    dtype = np.dtype(dtype)
    shape = (n_frames, 3, n_voxels)
    with contextlib.ExitStack() as stack:  # on exit the HDF5 file closes first, then atomic_path renames it
        h5 = None
        if path is None:
            z = aligned_empty(shape, dtype)
        else:
            import h5py

            h5 = stack.enter_context(h5py.File(stack.enter_context(atomic_path(path)), "w"))
            chunks_h5 = (min(frames_per_chunk, n_frames), 3, n_voxels)
            z = h5.create_dataset("z", shape=shape, dtype=dtype, chunks=chunks_h5)
        bar = progress_bar(n_frames, desc="F(h,t)", unit="frame", enabled=progress)
        f_mean = _fill_store(z, chunks, n_frames, n_voxels, dtype, frames_per_chunk, bar)
        if h5 is None:
            return FrameStore(z=z, f_mean=f_mean)
        h5.create_dataset("f_mean", data=f_mean)
    return open_store(path)


def _fill_store(z, chunks, n_frames, n_voxels, dtype, frames_per_chunk, bar) -> np.ndarray:
    """The two passes of :func:`build_store` over ``z [n_frames, 3, n_voxels]``; returns F̄ ``[n_voxels]``."""
    acc = np.zeros(n_voxels, np.complex128)
    t = 0
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[1] != n_voxels:
            raise ValueError(f"F chunk has shape {chunk.shape}; expected [n, {n_voxels}]")
        if not np.all(np.isfinite(chunk)):
            raise ValueError(f"F of frames {t}..{t + len(chunk) - 1} contains NaN/inf: check those frames")
        n = chunk.shape[0]
        if t + n > n_frames:
            raise ValueError(f"more frames than announced ({n_frames})")
        block = np.zeros((n, 3, n_voxels), dtype)
        block[:, 1], block[:, 2] = chunk.real, chunk.imag
        z[t : t + n] = block
        acc += chunk.sum(axis=0, dtype=np.complex128)
        t += n
        bar.update(n)
    bar.close()
    if t != n_frames:
        raise ValueError(f"got {t} frames, expected {n_frames}")
    f_mean = acc / n_frames
    for s in range(0, n_frames, frames_per_chunk):
        block = np.asarray(z[s : s + frames_per_chunk])
        f = block[:, 1].astype(np.float64) + 1j * block[:, 2]
        z[s : s + frames_per_chunk] = _rows(f, f_mean, dtype)
    return f_mean


def open_store(path: str | os.PathLike) -> FrameStore:
    """Open an HDF5 store written by :func:`build_store` (kept open read-only; ``z`` stays on disk)."""
    import h5py

    fh = h5py.File(path, "r")
    if "z" not in fh or "f_mean" not in fh:
        raise ValueError(f"{path}: not a frame store (needs datasets 'z' and 'f_mean'); rebuild it with build_store")
    return FrameStore(z=fh["z"], f_mean=np.asarray(fh["f_mean"]), path=str(path))


def iter_chunks(store: FrameStore, frames_per_chunk: int = 64):
    """Yield ``(first_frame, block [n, 3, n_voxels])`` numpy chunks of the store in frame order."""
    for a in range(0, store.n_frames, frames_per_chunk):
        yield a, np.asarray(store.z[a : a + frames_per_chunk])


def stream_stats(store: FrameStore, w: np.ndarray, frames_per_chunk: int = 64) -> np.ndarray:
    """S = Σ_t w_t Z_t read chunk by chunk (float64 accumulation).

    Args:
      w: ``[n_frames]`` weights, or ``[batch, n_frames]`` for several weight vectors in one pass.

    Returns ``[3, n_voxels]`` (or ``[batch, 3, n_voxels]``) float64.
    """
    w = np.asarray(w, np.float64)
    w2 = w.reshape(-1, store.n_frames)
    s = np.zeros((w2.shape[0], 3, store.n_voxels), np.float64)
    for a, block in iter_chunks(store, frames_per_chunk):
        s += np.tensordot(w2[:, a : a + len(block)], block, axes=(1, 0))
    return s.reshape(*w.shape[:-1], 3, store.n_voxels)


def stream_vjp(store: FrameStore, g_stats: np.ndarray, frames_per_chunk: int = 64) -> np.ndarray:
    """∂L/∂w_t = ⟨Z_t, ∂L/∂S⟩ for every frame, read chunk by chunk.

    Args:
      g_stats: ``[3, n_voxels]`` cotangent of S, or ``[batch, 3, n_voxels]``.

    Returns ``[n_frames]`` (or ``[batch, n_frames]``) float64.
    """
    g = np.asarray(g_stats)
    g2 = g.reshape(-1, 3, store.n_voxels)
    out = np.empty((g2.shape[0], store.n_frames), np.float64)
    for a, block in iter_chunks(store, frames_per_chunk):
        out[:, a : a + len(block)] = np.tensordot(g2.astype(block.dtype), block, axes=([1, 2], [1, 2]))
    return out.reshape(*g.shape[:-2], store.n_frames)


def store_from_trajectory(
    traj,
    top,
    hkl,
    *,
    method: str = "fft",
    dtype=np.float32,
    path: str | os.PathLike | None = None,
    stride: int = 1,
    chunk: int = 16,
    progress: bool = True,
) -> tuple[FrameStore, np.ndarray]:
    """Compute F(h, t) of every frame once, streaming trajectory chunks straight into a store.

    Args:
      traj, top: trajectory and topology paths (any mdtraj format) or an ``mdtraj.Trajectory``.
      hkl: int ``[n_voxels, 3]`` indices in the trajectory box's reciprocal lattice.
      method: ``"fft"`` (spread + FFT, :func:`analysis.structure_factors.structure_factors_fft`) or
        ``"direct"``; dtype: float32 (production) or float64.
      path: HDF5 file for an on-disk store (None: in memory).

    Returns:
      ``(store, cells)`` with ``cells [n_frames, 6]`` (Å, degrees) of every frame.
    """
    import jax.numpy as jnp

    from analysis import structure_factors as sf
    from analysis.structure_io import trajectory_frames

    hkl = np.asarray(hkl, np.int32)
    cells_all: list[np.ndarray] = []
    state = {}

    def chunks():
        for frac, cells, els in trajectory_frames(traj, top, stride=stride, chunk=chunk):
            cells_all.append(cells)
            pos = jnp.asarray(frac, dtype)
            if method == "fft":
                if "plan" not in state:
                    state["plan"] = sf.make_fft_plan(hkl, cells[0], els)
                f = sf.structure_factors_fft(state["plan"], pos, jnp.asarray(cells, dtype))
            else:
                f = sf.structure_factors_direct(hkl, pos, jnp.asarray(cells, dtype), els)
            yield np.asarray(f)

    n_frames = _count_frames(traj, top, stride)
    store = build_store(
        chunks(), n_frames, hkl.shape[0], path=path, dtype=dtype, frames_per_chunk=chunk, progress=progress
    )
    return store, np.concatenate(cells_all)


def _count_frames(traj, top, stride: int) -> int:
    import mdtraj

    if isinstance(traj, mdtraj.Trajectory):
        return len(range(0, traj.n_frames, stride))
    from analysis.structure_io import trajectory_frames

    n = 0
    for frac, _, _ in trajectory_frames(traj, top, stride=stride, chunk=1000):
        n += len(frac)
    return n
