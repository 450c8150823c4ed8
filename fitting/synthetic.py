"""Synthetic multi-state ensembles with known weights, for identifiability tests and the bundled example.

A toy crystal: ``n_atoms`` point scatterers (Gaussian form factor f(s) = Z·exp(−B s²/4)) in a P1 cell.
Each of ``n_states`` conformational states moves a random subset of atoms by ``shift`` Å; every frame is
its state's structure plus isotropic thermal noise of ``rms`` Å. Structure factors by direct sum::

    F(h, t) = Σ_j f(s) exp(2πi h·x_j(t)),   s = 1/d

"Experimental" data are the reweighted diffuse x′ for the true weights plus Gaussian noise scaled so that
CC(data, truth) equals ``target_cc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis import cell as cell_mod
from analysis.symmetry import generate_hkl

__all__ = ["SyntheticEnsemble", "make_ensemble", "direct_sum_f", "noisy_data", "diffuse_of_weights"]


@dataclass(frozen=True)
class SyntheticEnsemble:
    """Attributes:
    f: ``[n_frames, n_voxels]`` complex128 structure factors; hkl: int32 ``[n_voxels, 3]``;
    inv_d2: ``[n_voxels]`` Å⁻²; state: int ``[n_frames]`` state of each frame; cell: ``[6]`` Å/deg;
    pos_frac: ``[n_frames, n_atoms, 3]`` fractional coordinates.
    """

    f: np.ndarray
    hkl: np.ndarray
    inv_d2: np.ndarray
    state: np.ndarray
    cell: np.ndarray
    pos_frac: np.ndarray


def direct_sum_f(pos_frac, hkl, inv_d2, z_el: float = 6.0, b_iso: float = 10.0, chunk: int = 8) -> np.ndarray:
    """F(h,t) for point atoms, ``pos_frac [n_frames, n_atoms, 3]`` → ``[n_frames, n_voxels]`` complex128."""
    form = z_el * np.exp(-b_iso * inv_d2 / 4.0)
    out = np.empty((pos_frac.shape[0], hkl.shape[0]), np.complex128)
    for a in range(0, pos_frac.shape[0], chunk):
        phase = 2j * np.pi * np.einsum("tni,mi->tnm", pos_frac[a : a + chunk], hkl.astype(float))
        out[a : a + chunk] = form * np.exp(phase).sum(axis=1)
    return out


def make_ensemble(
    n_states: int = 3,
    frames_per_state: int = 10,
    *,
    n_atoms: int = 40,
    cell=(20.0, 22.0, 24.0, 90.0, 90.0, 90.0),
    d_min: float = 2.5,
    shift: float = 1.0,
    moving_fraction: float = 0.5,
    rms: float = 0.15,
    seed: int = 0,
) -> SyntheticEnsemble:
    """States × frames of a toy P1 crystal (see module docstring); frames ordered state by state."""
    rng = np.random.default_rng(seed)
    cell = np.asarray(cell, float)
    base = rng.uniform(0, 1, (n_atoms, 3))
    lengths = cell[:3]
    states = []
    for _ in range(n_states):
        move = rng.uniform(size=n_atoms) < moving_fraction
        disp = rng.normal(size=(n_atoms, 3))
        disp *= shift / np.linalg.norm(disp, axis=1, keepdims=True)
        states.append(base + move[:, None] * disp / lengths)
    pos = np.concatenate(
        [s + rng.normal(scale=rms, size=(frames_per_state, n_atoms, 3)) / lengths for s in states], axis=0
    )
    hkl = generate_hkl(cell, d_min, "P 1")
    inv_d2 = cell_mod.inv_d2(hkl.astype(float), cell)
    f = direct_sum_f(pos, hkl, inv_d2)
    state = np.repeat(np.arange(n_states), frames_per_state)
    return SyntheticEnsemble(f=f, hkl=hkl, inv_d2=inv_d2, state=state, cell=cell, pos_frac=pos)


def diffuse_of_weights(f, w) -> np.ndarray:
    """x′ = Σ w|F|² − |Σ wF|² in float64 (the reference the stores are checked against), ``[n_voxels]``."""
    w = np.asarray(w, np.float64)
    return np.einsum("t,tm->m", w, np.abs(f) ** 2) - np.abs(np.einsum("t,tm->m", w, f)) ** 2


def noisy_data(x_true, target_cc: float, seed: int = 0, hkl=None) -> np.ndarray:
    """x_true + Gaussian noise with variance var(x)(1/cc² − 1), so that E[CC(data, x_true)] ≈ target_cc.

    With ``hkl`` (int ``[m, 3]``) the noise is shared by Friedel mates h and −h, as in merged data.
    """
    rng = np.random.default_rng(seed)
    sd = np.std(x_true) * np.sqrt(1.0 / target_cc**2 - 1.0)
    noise = rng.normal(scale=sd, size=x_true.shape)
    if hkl is not None:
        from analysis.symmetry import canonical_hkl

        _, orbit = np.unique(canonical_hkl(np.asarray(hkl), "P 1"), axis=0, return_inverse=True)
        noise = rng.normal(scale=sd, size=orbit.max() + 1)[orbit.ravel()]
    return x_true + noise
