"""Diffuse scattering from an ensemble of frames (Guinier), symmetry averaging and agreement statistics.

Equations (weights normalized to Σ_t w_t = 1; uniform w_t = 1/T by default)::

    I_D(h) = Σ_t w_t |F(h,t)|² − |Σ_t w_t F(h,t)|²          (``diffuse_intensity``)
           = ⟨|F|²⟩ − |⟨F⟩|²   (total minus Bragg)

Agreement (``diffuse_cc``): Pearson CC (:func:`analysis.stats.pearson_cc`) of predicted vs observed,
*total* and *anisotropic* (each resolution shell's mean subtracted first, the "spherical-shell average"),
overall and per shell.

Grids: an MD box that holds n_a × n_b × n_c unit cells is a P1 supercell; integer indices H of the box
sample the parent reciprocal lattice at h = H / n (:func:`diffuse_hkl`). Frames → F(h, t) come from
:mod:`analysis.structure_factors`.

API::

    hkl_box, hkl_parent = diffuse_hkl(box_cell, d_min, supercell=(2, 2, 2))   # P1 half sphere (Friedel)
    acc = diffuse_init(M); acc = diffuse_update(acc, F_chunk); i_d, mean_f2, mean_f_sq = diffuse_finalize(acc)
    i_d, mean_f2, mean_f_sq = diffuse_intensity(F, weights)        # F [T, M] in memory
    i_sym = symmetry_average(hkl, i_d, "P 21 21 21")                # orbit means (Laue group)
    stats = diffuse_cc(pred, obs, inv_d2, n_shells=10)             # total / anisotropic, overall & per shell
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis import stats, symmetry

__all__ = [
    "DiffuseState",
    "diffuse_hkl",
    "diffuse_from_moments",
    "diffuse_intensity",
    "diffuse_init",
    "diffuse_update",
    "diffuse_finalize",
    "symmetry_average",
    "match_reflections",
    "diffuse_cc",
    "inv_d2_of",
]


def diffuse_hkl(box_cell, d_min: float, supercell=(1, 1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Reflections of a P1 box to ``d_min`` Å, one per Friedel pair (gemmi's P1 reciprocal ASU).

    Args:
      box_cell: ``[6]`` cell of the simulation box (Å, degrees).
      supercell: (n_a, n_b, n_c) unit cells per box edge.

    Returns:
      hkl_box: int32 ``[M, 3]`` indices of the box lattice; hkl_parent: float ``[M, 3]`` = hkl_box / n
      (parent-cell units; integer rows are Bragg positions).
    """
    n = np.asarray(supercell, int)
    if n.shape != (3,) or np.any(n < 1):
        raise ValueError(f"supercell must be three positive integers, got {supercell}")
    hkl = symmetry.generate_hkl(np.asarray(box_cell, float), d_min, "P 1", unique=True)
    return hkl, hkl / n


def diffuse_from_moments(mean_f2, mean_re, mean_im):
    """I_D = ⟨|F|²⟩ − |⟨F⟩|² from weighted moments (the one home of this formula; numpy or jax arrays).

    Args:
      mean_f2: ⟨|F|²⟩ ``[..., M]`` (electrons²). mean_re, mean_im: Re⟨F⟩ and Im⟨F⟩ ``[..., M]`` (electrons),
        all under the same normalized weights.

    Returns:
      I_D ``[..., M]`` (electrons²).
    """
    return mean_f2 - (mean_re**2 + mean_im**2)


def diffuse_intensity(F, weights=None):
    """I_D, ⟨|F|²⟩ and |⟨F⟩|² from structure factors of every frame (module equation).

    Args:
      F: ``[T, M]`` complex (electrons). weights: optional ``[T]`` ≥ 0 (normalized here to sum 1;
        pass softmax weights for reweighting). Differentiable in ``F`` and ``weights``.

    Returns:
      ``(i_d, mean_f2, mean_f_sq)`` each ``[M]`` real (electrons²).
    """
    F = jnp.asarray(F)
    T = F.shape[0]
    rdt = jnp.real(F).dtype
    w = jnp.full((T,), 1.0 / T, rdt) if weights is None else jnp.asarray(weights, rdt) / jnp.sum(weights)
    mean_f2 = jnp.einsum("t,tm->m", w, jnp.real(F) ** 2 + jnp.imag(F) ** 2)
    mean_f = jnp.einsum("t,tm->m", w.astype(F.dtype), F)
    mean_f_sq = jnp.real(mean_f) ** 2 + jnp.imag(mean_f) ** 2
    return diffuse_from_moments(mean_f2, jnp.real(mean_f), jnp.imag(mean_f)), mean_f2, mean_f_sq


class DiffuseState(NamedTuple):
    """Streaming sums (float64/complex128 numpy): Σw, Σw|F|², Σw F; ``n_frames`` frames seen."""

    sum_w: float
    sum_f2: np.ndarray
    sum_f: np.ndarray
    n_frames: int


def diffuse_init(n_refl: int) -> DiffuseState:
    """Empty accumulator for ``n_refl`` reflections."""
    return DiffuseState(0.0, np.zeros(n_refl), np.zeros(n_refl, np.complex128), 0)


def diffuse_update(state: DiffuseState, F_chunk, weights=None) -> DiffuseState:
    """Add frames ``F_chunk [t, M]`` (optional unnormalized ``weights [t]``), accumulating in float64."""
    F = np.asarray(F_chunk).astype(np.complex128)
    w = np.ones(F.shape[0]) if weights is None else np.asarray(weights, float)
    return DiffuseState(
        state.sum_w + float(w.sum()),
        state.sum_f2 + w @ (F.real**2 + F.imag**2),
        state.sum_f + w @ F,
        state.n_frames + F.shape[0],
    )


def diffuse_finalize(state: DiffuseState):
    """``(i_d, mean_f2, mean_f_sq)`` float64 ``[M]`` from the accumulated sums."""
    if state.sum_w <= 0:
        raise ValueError("no frames accumulated")
    mean_f2 = state.sum_f2 / state.sum_w
    mean_f = state.sum_f / state.sum_w
    mean_f_sq = mean_f.real**2 + mean_f.imag**2
    return diffuse_from_moments(mean_f2, mean_f.real, mean_f.imag), mean_f2, mean_f_sq


def symmetry_average(hkl, values, sg, *, mask=None, anomalous: bool = False, supercell=(1, 1, 1)) -> np.ndarray:
    """Replace each value by the mean over its symmetry orbit (Laue group of ``sg``; Friedel mates
    included unless ``anomalous``) among the reflections present.

    Args:
      hkl: int ``[M, 3]``; values: ``[M]``; mask: optional bool ``[M]`` (False: excluded from means,
        returned as NaN).
      supercell: (n_a, n_b, n_c) when ``hkl`` are box indices of a supercell; the parent's rotations act on
        them unchanged only if axes mixed by a rotation have equal n (checked: ``ValueError`` otherwise).

    Returns:
      float64 ``[M]``.
    """
    hkl = np.asarray(hkl)
    n = np.asarray(supercell, int)
    rots = symmetry.reciprocal_rotations(sg)
    mixes = np.any(rots != 0, axis=0) & (n[:, None] != n[None, :])
    if mixes.any():
        raise ValueError(
            f"supercell {tuple(n)} is incompatible with the symmetry of {sg}: its rotations mix axes with different "
            "numbers of cells; use equal counts along symmetry-related axes"
        )
    vals = np.asarray(values, float)
    ok = np.isfinite(vals) if mask is None else (np.asarray(mask, bool) & np.isfinite(vals))
    key = symmetry.hkl_keys(symmetry.canonical_hkl(hkl, sg, anomalous=anomalous))
    _, inv = np.unique(key, return_inverse=True)
    inv = inv.ravel()
    sums = np.bincount(inv, weights=np.where(ok, vals, 0.0))
    counts = np.bincount(inv, weights=ok.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return np.where(counts[inv] > 0, means[inv], np.nan)


def match_reflections(hkl_a, hkl_b) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) with ``hkl_a[ia] == hkl_b[ib]`` (common reflections, order of ``hkl_a``)."""
    ka = symmetry.hkl_keys(np.reshape(hkl_a, (-1, 3)))
    kb = symmetry.hkl_keys(np.reshape(hkl_b, (-1, 3)))
    order = np.argsort(kb)
    pos = np.searchsorted(kb[order], ka)
    pos = np.clip(pos, 0, len(kb) - 1)
    hit = kb[order][pos] == ka
    return np.nonzero(hit)[0], order[pos[hit]]


@partial(jax.jit, static_argnames=("n_shells",))
def _cc_all(pred, obs, shells, ok, n_shells: int):
    p_an = stats.shell_mean_subtract(pred, shells, n_shells, mask=ok)
    o_an = stats.shell_mean_subtract(obs, shells, n_shells, mask=ok)
    return (
        stats.pearson_cc(pred, obs, mask=ok),
        stats.pearson_cc(p_an, o_an, mask=ok),
        stats.cc_per_shell(pred, obs, shells, n_shells, ok),
        stats.cc_per_shell(p_an, o_an, shells, n_shells, ok),
    )


def diffuse_cc(pred, obs, inv_d2, *, n_shells: int = 10, mask=None) -> dict:
    """Total and anisotropic Pearson CC, overall and per resolution shell.

    Args:
      pred, obs: ``[M]`` intensities on the same reflections. inv_d2: ``[M]`` 1/d² (Å⁻²).
      n_shells: equal-count shells in 1/d². mask: optional bool ``[M]`` (NaN in either input is masked).

    Returns:
      dict with ``cc_total``, ``cc_anisotropic`` (floats), ``shell_edges_d`` (Å, ``[n_shells + 1]``),
      ``cc_total_shells``, ``cc_anisotropic_shells`` (``[n_shells]``), ``n_per_shell``.
    """
    pred = np.asarray(pred, float)
    obs = np.asarray(obs, float)
    inv_d2 = np.asarray(inv_d2, float)
    ok = np.isfinite(pred) & np.isfinite(obs)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    if ok.sum() < 3:
        raise ValueError("fewer than 3 reflections in common; check that predicted and observed grids match")
    pred0, obs0 = np.where(ok, pred, 0.0), np.where(ok, obs, 0.0)
    edges = stats.shell_edges(inv_d2[ok], n_shells)
    shells = stats.shell_index(inv_d2, edges)
    tot, ani, tot_sh, ani_sh = _cc_all(jnp.asarray(pred0), jnp.asarray(obs0), jnp.asarray(shells), ok, n_shells)
    out = {
        "cc_total": float(tot),
        "cc_anisotropic": float(ani),
        "shell_edges_d": 1.0 / np.sqrt(np.maximum(edges, 1e-30)),
        "cc_total_shells": np.asarray(tot_sh),
        "cc_anisotropic_shells": np.asarray(ani_sh),
        "n_per_shell": np.bincount(shells[ok], minlength=n_shells),
    }
    return out


def inv_d2_of(hkl, cell) -> np.ndarray:
    """1/d² (Å⁻²) for ``hkl [M, 3]`` in ``cell``: convenience re-export of :func:`analysis.cell.inv_d2`."""
    return np.asarray(cell_mod.inv_d2(np.asarray(hkl, float), np.asarray(cell, float)))
