"""Density targets at constant pressure (fitting.npt_density): bad input (the σ recovery from ρ at fixed P, start
20% off, is benchmarks/bench_density_fit.py)."""

from __future__ import annotations

import pytest

from dmd.base.errors import UserInputError
from dmd.base.units import BAR_NM3_IN_KJ_PER_MOL, KB_KJ_PER_MOL_K
from dmd.models import ARGON, lj_fluid
from fitting.npt_density import fit_density

SIG, EPS = ARGON["sigma"], ARGON["epsilon"]
T = 2.0 * EPS / KB_KJ_PER_MOL_K  # T* = 2
P = 1.7668 * EPS / SIG**3 / BAR_NM3_IN_KJ_PER_MOL  # P* = 1.7668


def _fluid(sigma):
    # N = 108, r_c = 2σ_true and skin 0.1 nm absolute (the list's r_c/(1 - margin) + skin must fit in half the box)
    return lj_fluid(108, density=0.55, temperature=T, cutoff=2.0 * SIG, skin=0.1, sigma=sigma)


def test_bad_density_target():
    with pytest.raises(UserInputError, match="positive density"):
        fit_density(_fluid(SIG), ["lj/sigma/A"], -1.0, pressure_bar=P, temperature=T, n_cycles=10)
