"""F(h, t) of every (strided) frame of an MD trajectory (mdtraj, nm → Å at this boundary), by either route."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from analysis.structure_factors.direct import structure_factors_direct
from analysis.structure_factors.fft import make_fft_plan, structure_factors_fft
from analysis.structure_io import trajectory_frames

__all__ = ["trajectory_structure_factors"]


def trajectory_structure_factors(
    traj,
    top=None,
    hkl=None,
    *,
    d_min: float | None = None,
    stride: int = 1,
    chunk: int = 50,
    method: str = "fft",
    dtype=np.float32,
    b_iso: float | Sequence[float] = 0.0,
    atom_indices=None,
    tolerance: float = 1e-5,
    progress: bool = False,
):
    """F(h, t) for every (strided) frame of a trajectory.

    Args:
      traj, top, stride, atom_indices: see :func:`analysis.structure_io.trajectory_frames`.
      hkl: int ``[M, 3]`` indices of the box cell; default: the P1 reciprocal ASU to ``d_min`` Å of the
        first frame's cell (half sphere; F(−h) = F(h)*).
      method: "fft" (default) or "direct". dtype: float32 (production) or float64.
      b_iso: Å², scalar or ``[N]`` (default 0: instantaneous positions).

    Returns:
      ``(hkl [M, 3] int32, F [T, M] complex, cells [T, 6])`` as numpy arrays.
    """
    from analysis import symmetry
    from dmd.base.progress import progress_bar

    plan = None
    out, cells_all = [], []
    bar = progress_bar(desc="frames", unit="frame", enabled=progress)
    for frac, cells, els in trajectory_frames(traj, top, stride=stride, chunk=chunk, atom_indices=atom_indices):
        if hkl is None:
            if d_min is None:
                raise ValueError("give hkl or d_min")
            hkl = symmetry.generate_hkl(cells[0], d_min, "P 1", unique=True)
        b = np.broadcast_to(np.asarray(b_iso, float), (len(els),))
        pos = jnp.asarray(frac, dtype)
        if method == "fft":
            if plan is None:
                plan = make_fft_plan(hkl, cells[0], els, b, tolerance=tolerance)
            F = structure_factors_fft(plan, pos, jnp.asarray(cells, dtype), jnp.asarray(b, dtype))
        else:
            F = structure_factors_direct(hkl, pos, jnp.asarray(cells, dtype), els, jnp.asarray(b, dtype))
        out.append(np.asarray(F))
        cells_all.append(cells)
        bar.update(len(frac))
    bar.close()
    if not out:
        from dmd.base.errors import UserInputError

        raise UserInputError(f"{traj}: no frames read (check --stride and the file)")
    return np.asarray(hkl, np.int32), np.concatenate(out), np.concatenate(cells_all)
