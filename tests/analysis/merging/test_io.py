"""Unmerged/merged MTZ I/O for merging, checked through gemmi."""

import logging

import gemmi
import numpy as np
import pytest

from analysis import symmetry
from analysis.merging import SyntheticConfig, make_synthetic, read_merged, read_unmerged, write_merged, write_synthetic
from analysis.merging.io import write_unmerged
from dmd.base.errors import UserInputError

SMALL = SyntheticConfig(d_min=4.0, n_images=12, multiplicity=2.0, seed=5)


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(SMALL)


def _per_reflection(u):
    """{hkl: (n, ΣI)} — independent of row order."""
    n = np.bincount(u.refl, minlength=u.n_refl)
    s = np.bincount(u.refl, u.intensity, u.n_refl)
    return {tuple(h): (int(c), float(v)) for h, c, v in zip(u.hkl.tolist(), n, s, strict=True)}


@pytest.mark.parametrize("anomalous", [False, True])
def test_unmerged_roundtrip_groups_like_the_generator(tmp_path, anomalous):
    data = make_synthetic(
        SyntheticConfig(d_min=4.0, n_images=12, multiplicity=2.0, seed=5, anomalous_sd=0.1 if anomalous else 0.0)
    )
    path = tmp_path / "unmerged.mtz"
    write_synthetic(path, data)
    mtz = gemmi.read_mtz_file(str(path))
    assert "M/ISYM" in mtz.column_labels() and mtz.spacegroup.hm == "P 21 21 21"
    u = read_unmerged(path, anomalous=anomalous, metadata=["XDET", "YDET", "DHKL"])
    ref = _per_reflection(data.unmerged)
    got = _per_reflection(u)
    assert got.keys() == ref.keys()
    for h, (n, s) in ref.items():
        assert got[h][0] == n
        # MTZ stores float32: per-reflection sums agree to float32 rounding (1e-5 relative)
        assert abs(got[h][1] - s) <= 1e-5 * (abs(s) + 1e3)
    # DHKL metadata is computed from the cell: d = 1/sqrt(inv_d2) of the reflection
    np.testing.assert_allclose(u.metadata[:, 2], 1 / np.sqrt(u.inv_d2[u.refl]), rtol=1e-12)
    # every observation maps to its reflection's ASU index through gemmi (sign = Friedel side when anomalous)
    asu, isym = symmetry.to_asu(u.hkl_obs, u.spacegroup)
    row = u.hkl[u.refl]
    if anomalous:
        minus = (isym % 2 == 0) & ~u.centric[u.refl]
        np.testing.assert_array_equal(np.where(minus[:, None], -asu, asu), row)
        assert np.any(row < 0)
    else:
        np.testing.assert_array_equal(asu, row)


def test_bad_rows_are_counted_not_silent(tmp_path, synthetic, caplog):
    d = synthetic
    i = d.intensity.copy()
    s = d.sigma.copy()
    i[:3] = np.nan
    s[3:5] = 0.0
    s[5] = -1.0
    path = tmp_path / "bad.mtz"
    write_unmerged(path, d.hkl_obs, i, s, d.batch, SMALL.cell, SMALL.spacegroup, metadata={"XDET": d.xdet})
    with caplog.at_level(logging.WARNING):
        u = read_unmerged(path, metadata=["XDET"])
    assert u.rejected["nonfinite_intensity_or_sigma"] == 3
    assert u.rejected["sigma_not_positive"] == 3
    assert u.n_obs == d.intensity.size - 6
    assert "rejected 6 of" in caplog.text


def test_input_errors_name_the_fix(tmp_path, synthetic):
    with pytest.raises(UserInputError, match="no such file"):
        read_unmerged(tmp_path / "missing.mtz")
    path = tmp_path / "u.mtz"
    write_synthetic(path, synthetic)
    with pytest.raises(UserInputError, match="'ZDET' not found.*--metadata"):
        read_unmerged(path, metadata=["ZDET"])
    merged = tmp_path / "merged.mtz"
    write_merged(merged, [[1, 2, 3]], SMALL.cell, SMALL.spacegroup, {"F": ("F", [1.0])})
    with pytest.raises(UserInputError, match="BATCH.*unmerged"):
        read_unmerged(merged)


def test_merged_mtz_roundtrip_through_gemmi(tmp_path):
    hkl = np.array([[1, 0, 2], [2, 3, 1], [0, 0, 4]])
    cols = {
        "F": ("F", [1.5, 2.25, 0.5]),
        "SIGF": ("Q", [0.1, 0.2, 0.3]),
        "N": ("I", [3, 1, 2]),
        "F(-)": ("G", [1.0, np.nan, 2.0]),
    }
    out = tmp_path / "m.mtz"
    write_merged(out, hkl, (40, 50, 60, 90, 90, 90), "P 21 21 21", cols)
    mtz = gemmi.read_mtz_file(str(out))
    assert mtz.spacegroup.hm == "P 21 21 21"
    assert mtz.cell.parameters == pytest.approx((40, 50, 60, 90, 90, 90))
    assert [c.type for c in mtz.columns] == ["H", "H", "H", "F", "Q", "I", "G"]
    h, got, _ = read_merged(out)
    np.testing.assert_array_equal(h, hkl)
    np.testing.assert_allclose(got["F"], [1.5, 2.25, 0.5])  # exactly representable in float32
    assert np.isnan(got["F(-)"][1])
    with pytest.raises(UserInputError, match="overwrite an input"):
        write_merged(out, hkl, (40, 50, 60, 90, 90, 90), "P 21 21 21", cols, inputs=[out])


def test_all_zero_intensities_and_no_positive_sigma_are_errors_naming_the_column(tmp_path, synthetic):
    d = synthetic
    meta = {"XDET": d.xdet}
    zero = tmp_path / "zero.mtz"
    write_unmerged(zero, d.hkl_obs, 0.0 * d.intensity, d.sigma, d.batch, SMALL.cell, SMALL.spacegroup, metadata=meta)
    # all-zero I (an unfilled column) would otherwise "merge" to F = 0 everywhere without a word
    with pytest.raises(UserInputError, match="every intensity is zero.*--intensity"):
        read_unmerged(zero)
    bad_sigma = tmp_path / "sigma.mtz"
    s = np.where(np.arange(d.sigma.size) % 2 == 0, 0.0, -d.sigma)  # zeros and negatives: none usable
    write_unmerged(bad_sigma, d.hkl_obs, d.intensity, s, d.batch, SMALL.cell, SMALL.spacegroup, metadata=meta)
    with pytest.raises(UserInputError, match="every σ\\(I\\) is ≤ 0.*--sigma"):
        read_unmerged(bad_sigma)
