"""analysis.mtz_io, the one home of MTZ reading and writing: files written here read back by gemmi itself (the
oracle), files written by gemmi read here, and bad input refused with the file and the fix named."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from analysis import mtz_io
from dmd.base.errors import UserInputError

CELL = [30.1, 40.2, 50.3, 90.0, 101.5, 90.0]


def _reflections(n=200, seed=0):
    rng = np.random.default_rng(seed)
    hkl = rng.integers(-8, 9, (n, 3)).astype(np.int32)
    i = rng.gamma(2.0, 100.0, n)
    i[5] = np.nan  # a missing value
    return hkl, {"IOBS": i, "SIGIOBS": np.sqrt(np.abs(np.nan_to_num(i))) + 1.0}


def test_written_mtz_reads_back_in_gemmi(tmp_path):
    hkl, cols = _reflections()
    path = tmp_path / "out.mtz"
    mtz_io.write_mtz(path, hkl, cols, CELL, "C 1 2 1", column_types={"SIGIOBS": "Q"}, wavelength=1.0332)
    mtz = gemmi.read_mtz_file(str(path))
    assert [(c.label, c.type) for c in mtz.columns] == [
        ("H", "H"), ("K", "H"), ("L", "H"), ("IOBS", "J"), ("SIGIOBS", "Q")
    ]  # fmt: skip
    assert mtz.spacegroup.hm == "C 1 2 1"
    np.testing.assert_allclose(mtz.cell.parameters, CELL, rtol=1e-6)  # MTZ stores the cell as float32
    assert mtz.datasets[-1].wavelength == pytest.approx(1.0332, rel=1e-6)
    arr = np.asarray(mtz.array)
    np.testing.assert_array_equal(arr[:, :3], hkl)
    for j, v in enumerate(cols.values()):
        np.testing.assert_array_equal(arr[:, 3 + j], v.astype(np.float32))  # float32, MTZ's precision, NaN kept
    assert mtz_io.mtz_columns(path)[3:] == [("IOBS", "J"), ("SIGIOBS", "Q")]
    assert [p.name for p in tmp_path.iterdir()] == ["out.mtz"]  # the atomic write leaves no temporary file behind


def test_read_mtz_of_a_gemmi_written_file(tmp_path):
    hkl, cols = _reflections(seed=1)
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.find_spacegroup_by_name("P 21 21 21")
    mtz.set_cell_for_all(gemmi.UnitCell(40.0, 50.0, 60.0, 90, 90, 90))
    mtz.add_dataset("d")
    mtz.add_column("IOBS", "J")
    mtz.add_column("SIGIOBS", "Q")
    mtz.set_data(np.column_stack([hkl, cols["IOBS"], cols["SIGIOBS"]]).astype(np.float32))
    path = tmp_path / "gemmi.mtz"
    mtz.write_to_file(str(path))
    data = mtz_io.read_mtz(path, ["SIGIOBS", "IOBS"])
    assert data.spacegroup == "P 21 21 21"
    np.testing.assert_allclose(data.cell, [40, 50, 60, 90, 90, 90])
    assert data.hkl.dtype == np.int32
    np.testing.assert_array_equal(data.hkl, hkl)
    assert list(data.columns) == ["SIGIOBS", "IOBS"]  # in the order asked for
    np.testing.assert_array_equal(data.columns["IOBS"], cols["IOBS"].astype(np.float32))
    assert np.isnan(data.columns["IOBS"][5])


def test_bad_input_is_refused_with_the_fix(tmp_path):
    hkl, cols = _reflections(20)
    path = tmp_path / "a.mtz"
    mtz_io.write_mtz(path, hkl, cols, CELL)
    with pytest.raises(UserInputError, match="column\\(s\\) FOBS not found; columns present: .*IOBS \\(J\\)"):
        mtz_io.read_mtz(path, ["FOBS"])
    with pytest.raises(UserInputError, match="no such MTZ file"):
        mtz_io.read_mtz(tmp_path / "missing.mtz", ["IOBS"])
    (tmp_path / "junk.mtz").write_text("not an mtz")
    with pytest.raises(UserInputError, match="not a readable MTZ file"):
        mtz_io.read_mtz(tmp_path / "junk.mtz", ["IOBS"])
    with pytest.raises(UserInputError, match="overwrite an input"):
        mtz_io.write_mtz(path, hkl, cols, CELL, inputs=[path])
    with pytest.raises(ValueError, match="expected \\(20,\\)"):
        mtz_io.build_mtz(hkl, {"IOBS": cols["IOBS"][:-1]}, CELL)
