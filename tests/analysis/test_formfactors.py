"""analysis.formfactors: IT92 form factors against gemmi's own evaluation (the oracle), in float64 and float32."""

from __future__ import annotations

import gemmi
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import formfactors as ff


def test_form_factors_match_gemmi_it92():
    table = ff.form_factor_table(["C", "fe", "O", "C", " N ", "D"])
    assert table.symbols == ("C", "Fe", "O", "N", "H")  # order of first appearance, case folded, D → H
    np.testing.assert_array_equal(table.types, [0, 1, 2, 0, 3, 4])
    inv_d2 = np.linspace(0.0, 1.0 / 0.8**2, 60)  # 1/d² from 0 to d = 0.8 Å
    f = np.asarray(ff.form_factor(jnp.asarray(inv_d2), table.a, table.b, table.c))
    assert f.shape == (5, 60)
    for t, sym in enumerate(table.symbols):
        want = [gemmi.Element(sym).it92.calculate_sf(s2 / 4) for s2 in inv_d2]  # gemmi's argument: (sin θ/λ)²
        np.testing.assert_allclose(f[t], want, rtol=1e-6)  # same coefficients; gemmi evaluates in float32 (~1e-7)
    assert f[1, 0] == pytest.approx(26.0, abs=0.05)  # f(0) ≈ Z for Fe (the IT92 fit's sum a + c)
    f32 = ff.form_factor(jnp.asarray(inv_d2, jnp.float32), table.a, table.b, table.c)
    assert f32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(f32, float), f, rtol=2e-6)  # float32 rounding of ~10 exp terms


def test_unknown_elements_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown element symbol 'Qq'"):
        ff.form_factor_table(["C", "Qq"])
    with pytest.raises(ValueError, match="empty element symbol"):
        ff.normalize_element(" ")
    with pytest.raises(ValueError, match="'X' \\(unknown\\) has no form factor"):
        ff.normalize_element("X")
