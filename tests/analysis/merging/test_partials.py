"""Raw partial observations: refused with the column and the fix, or summed back into full observations."""

import gemmi
import numpy as np
import pytest

from analysis.merging import SyntheticConfig, make_synthetic, read_unmerged, write_unmerged
from analysis.merging.io import hkl_rows
from analysis.merging.partials import detect_partials
from dmd.base.errors import UserInputError

CFG = SyntheticConfig(d_min=4.0, n_images=60, multiplicity=2.0, isigi=3.0, seed=4)


@pytest.fixture(scope="module")
def full_and_partials():
    """Full synthetic observations, and the same split into 1-3 parts on consecutive images (MOSFLM-like)."""
    data = make_synthetic(CFG)
    rng = np.random.default_rng(0)
    n_parts = rng.integers(1, 4, data.intensity.size)
    src = np.repeat(np.arange(data.intensity.size), n_parts)
    part = np.concatenate([np.arange(k) for k in n_parts])
    frac = np.concatenate([rng.dirichlet(np.ones(k)) if k > 1 else [1.0] for k in n_parts])
    raw = {
        "hkl": data.hkl_obs[src],
        "batch": data.batch[src] + part,  # one spot over consecutive images
        "I": data.intensity[src] * frac,
        "SIGI": data.sigma[src] * np.sqrt(frac),  # Σσ² of the parts = σ² of the spot
        "frac": frac,
    }
    return data, raw


def _write(path, data, raw, *, fraction_column=False, m_flag=False):
    meta = {"FRACTIONCALC": raw["frac"]} if fraction_column else None
    write_unmerged(path, raw["hkl"], raw["I"], raw["SIGI"], raw["batch"], CFG.cell, CFG.spacegroup, metadata=meta)
    if m_flag:  # the CCP4 partial flag: M/ISYM = 256·M + ISYM with M = 1 on partial rows
        mtz = gemmi.read_mtz_file(str(path))
        arr = np.array(mtz, copy=True)
        labels = mtz.column_labels()
        j_m, j_i = labels.index("M/ISYM"), labels.index("I")
        # a row is partial where its intensity is not one of the full intensities (fractions < 1)
        full = np.isin(arr[:, j_i], np.float32(raw["I"][raw["frac"] == 1.0]))
        arr[:, j_m] += np.where(full, 0, 256)
        mtz.set_data(arr)
        mtz.write_to_file(str(path))
    return path


def test_full_synthetic_data_are_not_taken_as_partials(full_and_partials):
    data, _ = full_and_partials
    assert detect_partials({}, data.hkl_obs, data.batch) is None


@pytest.mark.parametrize(
    "kind, column",
    [("fraction", "FRACTIONCALC"), ("mflag", "M/ISYM"), ("pattern", "BATCH")],
)
def test_partials_refused_naming_column_and_fix(full_and_partials, tmp_path, kind, column):
    data, raw = full_and_partials
    path = _write(tmp_path / "partials.mtz", data, raw, fraction_column=kind == "fraction", m_flag=kind == "mflag")
    with pytest.raises(UserInputError) as err:
        read_unmerged(path)
    msg = str(err.value)
    assert str(path) in msg and f"column {column}" in msg and "--partials sum" in msg
    if kind == "pattern":
        assert "consecutive images" in msg
    # kept on request: every raw row is an observation (the silent behaviour the issue reported)
    kept = read_unmerged(path, partials="keep")
    assert kept.n_obs == raw["I"].size > 1.5 * data.intensity.size


@pytest.mark.parametrize("kind", ["mflag", "pattern"])
def test_summed_partials_give_back_the_full_observations(full_and_partials, tmp_path, kind):
    data, raw = full_and_partials
    path = _write(tmp_path / "partials.mtz", data, raw, m_flag=kind == "mflag")
    u = read_unmerged(path, partials="sum")
    full = data.unmerged
    # a spot's parts sum to its full intensity, so every reflection's total intensity and Σσ² are those of the full
    # observations (float32 storage: 1e-5 relative); runs of two spots of one hkl on adjacent images (random images
    # in the synthetic data) are summed together, so the observation count may drop by a handful
    rows = hkl_rows(u.hkl, full.hkl)
    assert np.all(rows >= 0) and u.n_refl == full.n_refl
    tot = lambda t, v: np.bincount(t.refl, v, t.n_refl)
    np.testing.assert_allclose(tot(u, u.intensity)[rows], tot(full, full.intensity), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(tot(u, u.sigma**2)[rows], tot(full, full.sigma**2), rtol=1e-4)
    assert 0.98 * full.n_obs <= u.n_obs <= full.n_obs
    assert u.rejected["partials_summed"] == raw["I"].size - u.n_obs
