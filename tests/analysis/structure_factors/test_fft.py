"""The spread + FFT structure-factor route (analysis/structure_factors/fft.py) against the direct sum, batched over
frames with per-frame (NPT-like) cells, without recompiling. Its accuracy against gemmi on real structures is
tested with the direct sum in test_direct.py."""

from __future__ import annotations

import os

import numpy as np

from analysis import symmetry
from analysis.structure_factors import make_fft_plan, structure_factors, structure_factors_fft
from analysis.structure_io import read_structure

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data")


def r_factor(f, ref):
    return float(np.sum(np.abs(np.abs(f) - np.abs(ref))) / np.sum(np.abs(ref)))


def test_fft_frames_batch_matches_single_frames_and_no_recompile(jax_compiles):
    xs = read_structure(os.path.join(DATA, "sf_SiO2.cif")).expand_to_p1()
    hkl = symmetry.generate_hkl(xs.cell, 1.2, "P 1", unique=True)
    rng = np.random.default_rng(5)
    frames = (xs.pos_frac[None] + rng.normal(scale=0.01, size=(6,) + xs.pos_frac.shape)).astype(np.float32)
    cells = np.tile(xs.cell, (6, 1)).astype(np.float32)
    cells[:, :3] *= 1 + rng.normal(scale=0.002, size=(6, 1))  # NPT-like per-frame cells
    plan = make_fft_plan(hkl, xs.cell, xs.elements, tolerance=1e-5)
    batch = np.asarray(structure_factors_fft(plan, frames, cells, frame_batch=3))
    assert batch.dtype == np.complex64 and batch.shape == (6, len(hkl))
    direct = np.asarray(structure_factors(hkl, frames.astype(np.float64), cells.astype(np.float64), xs.elements))
    assert r_factor(batch, direct) < 5e-5  # float32 FFT route: ~1e-5 kernel + float32 rounding
    with jax_compiles() as records:
        structure_factors_fft(plan, frames + np.float32(0.001), cells, frame_batch=3)
    assert not [r for r in records if "Compiling" in r.getMessage() and "_fft" in r.getMessage()]
