"""XDS_ASCII.HKL and CrystFEL stream input (analysis.merging.readers).

The CrystFEL stream is real (3 lysozyme XFEL images from reciprocalspaceship's test data, see data/README.md); its
reflection rows are counted here independently with a regular expression. XDS_ASCII.HKL is written here from the
synthetic data set in the documented layout (header items, σ < 0 for XDS's rejected misfits) and must group like
the same rows read from MTZ.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from analysis.merging import SyntheticConfig, group_observations, make_synthetic, write_synthetic
from analysis.merging.io import write_unmerged
from analysis.merging.readers import read_crystfel, read_observations, read_xds_ascii
from dmd.base.errors import UserInputError

STREAM = Path(__file__).parent / "data" / "crystfel_lysozyme.stream"


def test_crystfel_stream_every_reflection_row_one_observation_per_crystal():
    text = STREAM.read_text()
    rows = re.findall(r"^\s*(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s+\S+\s+\S+\s+p0$", text, re.M)
    u = read_observations(STREAM, spacegroup="P 43 21 2")
    assert len(rows) == 618 and text.count("--- Begin crystal") == 3
    # 2 rows are systematic absences of P 43 21 2 (00l, l ≠ 4n or h00, h odd): counted, not silent
    assert u.n_obs + u.rejected["systematically_absent"] == 618 and u.rejected["systematically_absent"] == 2
    assert u.n_images == 3
    np.testing.assert_allclose(u.cell, [79.2, 79.2, 38.0, 90, 90, 90])
    assert u.wavelength == pytest.approx(12398.42 / 9700.0)
    # the intensities are the file's (first data row: -37 11 -7, I = -15.11, sigma 20.15)
    assert np.sum(u.intensity) == pytest.approx(
        sum(float(r[3]) for r in rows) - sum(float(r[3]) for r in rows if _absent(r)), rel=1e-9
    )
    with pytest.raises(UserInputError, match="no space group"):
        read_observations(STREAM)


def _absent(r):
    h, k, l_ = (int(x) for x in r[:3])
    return (h == 0 and k == 0 and l_ % 4 != 0) or (k == 0 and l_ == 0 and h % 2) or (h == 0 and l_ == 0 and k % 2)


def _write_xds(path, data, merged=False):
    n = data.intensity.size
    sigma = data.sigma.copy()
    sigma[:5] = -sigma[:5]  # XDS marks misfits with σ < 0
    zd = (data.batch - 1) + 0.5
    lines = [
        "!FORMAT=XDS_ASCII    MERGE=" + ("TRUE" if merged else "FALSE") + "    FRIEDEL'S_LAW=TRUE",
        "!OUTPUT_FILE=XDS_ASCII.HKL        DATE= 4-Dec-2026",
        "!SPACE_GROUP_NUMBER=   19",
        "!UNIT_CELL_CONSTANTS=    40.000    50.000    60.000  90.000  90.000  90.000",
        "!X-RAY_WAVELENGTH=  1.000000",
        "!NUMBER_OF_ITEMS_IN_EACH_DATA_RECORD=12",
        "!ITEM_H=1",
        "!ITEM_K=2",
        "!ITEM_L=3",
        "!ITEM_IOBS=4",
        "!ITEM_SIGMA(IOBS)=5",
        "!ITEM_XD=6",
        "!ITEM_YD=7",
        "!ITEM_ZD=8",
        "!ITEM_RLP=9",
        "!ITEM_PEAK=10",
        "!ITEM_CORR=11",
        "!ITEM_PSI=12",
        "!END_OF_HEADER",
    ]
    for i in range(n):
        h, k, l_ = data.hkl_obs[i]
        lines.append(
            f"{h:6d}{k:6d}{l_:6d} {data.intensity[i]:.3E} {sigma[i]:.3E} {data.xdet[i]:7.1f} {data.ydet[i]:7.1f}"
            f" {zd[i]:8.1f} 0.01000 100 50 0.00"
        )
    lines.append("!END_OF_DATA")
    path.write_text("\n".join(lines) + "\n")


def test_xds_ascii_groups_like_the_same_rows_and_drops_misfits(tmp_path):
    data = make_synthetic(SyntheticConfig(d_min=4.0, n_images=20, seed=3))
    path = tmp_path / "XDS_ASCII.HKL"
    _write_xds(path, data)
    u = read_observations(path)
    ref = data.unmerged
    assert u.rejected["sigma_not_positive"] == 5 and u.n_obs == ref.n_obs - 5
    assert u.spacegroup == ref.spacegroup and u.n_images == ref.n_images
    assert u.metadata_names == ("XD", "YD", "ZD")
    # the same rows (misfits left out) grouped directly: same reflections, same observations (text: 4 digits)
    ok = slice(5, None)
    want = group_observations(
        data.hkl_obs[ok], data.intensity[ok], data.sigma[ok], data.batch[ok], ref.cell, ref.spacegroup
    )
    np.testing.assert_array_equal(u.hkl, want.hkl)
    np.testing.assert_array_equal(u.refl, want.refl)
    np.testing.assert_array_equal(u.image, want.image)
    np.testing.assert_allclose(u.intensity, want.intensity, rtol=1e-3, atol=1e-3 * np.abs(want.intensity).max())
    np.testing.assert_allclose(u.sigma, want.sigma, rtol=1e-3)
    _write_xds(path, data, merged=True)
    with pytest.raises(UserInputError, match="MERGE=TRUE"):
        read_xds_ascii(path)


def test_unknown_format_names_the_supported_ones(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("hello\n")
    with pytest.raises(UserInputError, match="neither MTZ, XDS_ASCII.HKL nor a CrystFEL stream"):
        read_observations(bad)
    with pytest.raises(UserInputError, match="CrystFEL stream format"):
        read_crystfel(bad, "P 1")


def test_mtz_space_group_mismatch_and_merged_data_are_errors_naming_the_fix(tmp_path):
    cfg = SyntheticConfig(d_min=4.0, n_images=12, multiplicity=2.0, seed=5)  # P 21 21 21 by default
    d = make_synthetic(cfg)
    path = tmp_path / "u.mtz"
    write_synthetic(path, d)
    assert read_observations(path, spacegroup=cfg.spacegroup).n_obs == d.intensity.size  # same group: accepted
    # an MTZ's indices live in its own group's ASU: a different --spacegroup must not be applied silently
    with pytest.raises(UserInputError, match="MTZ header says P 21 21 21, --spacegroup says P 1 21 1.*reindex"):
        read_observations(path, spacegroup="P 1 21 1")
    # merged data with a BATCH column: one row per reflection (the first observation of each), nothing to merge
    merged = tmp_path / "merged_as_unmerged.mtz"
    _write_first_observations(merged, read_observations(path))
    with pytest.raises(UserInputError, match="observed exactly once.*If this is merged data, give the unmerged"):
        read_observations(merged)


def _write_first_observations(path, u) -> int:
    """An unmerged MTZ of the first observation of each of ``u``'s reflections (on its own image); returns the count."""
    first = np.unique(u.refl, return_index=True)[1]
    write_unmerged(path, u.hkl_obs[first], u.intensity[first], u.sigma[first], u.batch[u.image[first]], u.cell,
                   u.spacegroup)  # fmt: skip
    return first.size


def test_xds_spacegroup_of_another_point_group_or_lattice_is_refused_naming_reindex(tmp_path):
    data = make_synthetic(SyntheticConfig(d_min=5.0, n_images=8, seed=4))  # header: 19 = P 21 21 21
    path = tmp_path / "XDS_ASCII.HKL"
    _write_xds(path, data)
    # same point group 222 and lattice P: only the screw axes change; the one absence rule dropped is h00/0k0/00l
    u = read_observations(path, spacegroup="P 2 2 2")
    assert u.spacegroup == "P 2 2 2" and u.n_obs == data.intensity.size - 5  # the 5 misfits only: none absent
    # another point group (2 ≠ 222), another lattice (C ≠ P): the rows cannot be relabelled, only reindexed
    for other, why in (("P 1 21 1", "point group 2, lattice P\\)"), ("C 2 2 21", "lattice C")):
        with pytest.raises(UserInputError, match=f"SPACE_GROUP_NUMBER=19 .*{why}.*Reindex first"):
            read_observations(path, spacegroup=other)


def test_every_reflection_once_names_merged_and_sparse_stills_and_no_image_terms(tmp_path):
    # sparse stills: each image sees its own reflections, none measured twice (not merged data, still unscalable)
    data = make_synthetic(SyntheticConfig(d_min=4.0, n_images=6, multiplicity=2.0, seed=6))
    path = tmp_path / "stills.mtz"
    n = _write_first_observations(path, data.unmerged)
    with pytest.raises(UserInputError, match="on 6 images.*merged data.*sparse set of stills.*--no-image-terms"):
        read_observations(path)
    # without per-image scales there is nothing to tie images together: the set is read, every row kept
    v = read_observations(path, image_scales=False)
    assert v.n_obs == v.n_refl == n and v.n_images == 6
