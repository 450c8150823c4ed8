"""Anomalous signal from unscaled real data (issue 22 item 3): the Xe-SAD set of the CCP4i2 tutorial (gamma, PDB
1GYU;
not shipped: tests/data/merging/gamma_xe.py says where to get it and prepares it),
44,953 observations on 100 images with AIMLESS's scales undone (I) and kept
(ISCALED).

Oracle: the conventional merge of the same integration (AIMLESS, gamma_xe_aimless_merged.mtz). Baselines measured
in the same run: the σ-weighted mean of the unscaled observations and a per-image scale + B fit
(:mod:`analysis.merging.classical`). The scale AIMLESS removed varies by a factor of two across images and detector
positions (SCALEUSED 0.87–1.82), much of it an absorption-like surface that no per-image term can represent: the
anomalous differences (a few % of I) are lost under it unless the scale model learns it from XDET, YDET, ROT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.merging import MergeConfig, french_wilson, inverse_variance_merge, merge, read_unmerged, scale_b_merge
from analysis.merging.reference import compare_with_reference, reference_on_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "data" / "merging"))
import gamma_xe  # noqa: E402  (tests/data/merging/gamma_xe.py: where the data are and how they are prepared)

# CCP4's tutorial data are not redistributed with dmd: the tests run where $DMD_GAMMA_XE names the folder
pytestmark = pytest.mark.skipif(
    gamma_xe.source_dir() is None,
    reason=f"real Xe-SAD data not found: set {gamma_xe.ENV} to CCP4's ccp4i2/demo_data/gamma (tests/data/merging)",
)
STEPS = 600
# one rotation sweep: the per-image scale and B drift smoothly (docs/merging.md, "Real anomalous data"); 5% held out
# as dmd merge does by default, so the closing all-data pass is tested too
CONFIG = MergeConfig(steps=STEPS, image_smooth_sd=0.001, image_b_smooth_sd=0.1, holdout_fraction=0.05)
META = ["XDET", "YDET", "ROT"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return gamma_xe.prepare(gamma_xe.source_dir(), tmp_path_factory.mktemp("gamma_xe"))


@pytest.fixture(scope="module")
def unscaled(files):
    return read_unmerged(files[0], anomalous=True, metadata=META)


@pytest.fixture(scope="module")
def reference(unscaled, files):
    return reference_on_rows(unscaled, files[1])


@pytest.fixture(scope="module")
def merged_unscaled(unscaled):
    return merge(unscaled, CONFIG)


def _line(name, c):
    return (
        f"{name}: CCanom {c['ccanom']['overall']:.4f} CC(I) {c['cc_i']['overall']:.4f} per shell "
        f"{np.round(c['cc_i']['per_shell'], 3)} CCanom per shell {np.round(c['ccanom']['per_shell'], 3)}"
    )


def _classical(u, i_ref, s_ref, method):
    ib, sb, *_ = method(u)
    f = french_wilson(ib, sb, u.inv_d2, u.epsilon, u.centric)[0]
    return compare_with_reference(u, ib, f, i_ref, s_ref)


@pytest.mark.slow  # 45k observations, 600 steps: ~20 CPU s (compilation included)
def test_anomalous_signal_from_unscaled_real_sad_data(unscaled, reference, merged_unscaled):
    u, out = unscaled, merged_unscaled
    assert (u.n_obs, u.n_refl) == (44953, 21874)  # 37 systematically absent rows of 44,990 dropped
    # nothing lost: every reflection of the input is merged, N per reflection is its number of observations
    assert np.array_equal(out.n_obs, u.multiplicity())
    assert np.all(np.isfinite(out.absolute["I"])) and np.all(np.isfinite(out.absolute["F"]))
    i_ref, s_ref = reference
    assert np.count_nonzero(np.isfinite(i_ref)) == u.n_refl  # the reference has every reflection and mate
    dmd = compare_with_reference(u, out.absolute["I"], out.absolute["F"], i_ref, s_ref)
    mean = _classical(u, i_ref, s_ref, inverse_variance_merge)
    scale_b = _classical(u, i_ref, s_ref, scale_b_merge)
    for name, c in (("dmd merge", dmd), ("unscaled mean", mean), ("per-image scale+B", scale_b)):
        print(_line(name, c))
    assert dmd["ccanom"]["n_pairs"] == 9692
    # measured (600 steps, 5% held out): CCanom 0.946 dmd; 0.920 without the smoothness prior (none held out),
    # 0.874 with the closing pass of before (restarted at the full lr, held-out-only reflections left at the prior);
    # 0.680 unscaled mean, 0.815 per-image scale + B. The lattice sampler is deterministic, so 0.935 leaves room for
    # BLAS/platform differences and fails without either fix
    ccanom = dmd["ccanom"]["overall"]
    assert ccanom > 0.935, ccanom
    assert ccanom > scale_b["ccanom"]["overall"] + 0.06
    assert ccanom > mean["ccanom"]["overall"] + 0.13
    # intensities: CC(I) with the conventional merge 0.999 overall (0.990 with the old closing pass), every shell
    # ≥ 0.986 (unscaled mean 0.992)
    assert dmd["cc_i"]["overall"] > 0.997
    assert np.all(dmd["cc_i"]["per_shell"] > 0.98)


@pytest.mark.slow  # a second 600-step merge: ~16 CPU s
def test_unscaled_anomalous_signal_at_least_that_of_the_scaled_observations(
    unscaled, reference, merged_unscaled, files
):
    """Acceptance: CCanom of the merge of unscaled data ≥ that of the merge of AIMLESS-scaled observations."""
    u = unscaled
    scaled = read_unmerged(files[0], anomalous=True, metadata=META, intensity="ISCALED", sigma="SIGISCALED")
    out = merge(scaled, CONFIG)
    assert np.array_equal(scaled.hkl, u.hkl)  # same rows: the two merges are compared reflection by reflection
    c_raw = compare_with_reference(u, merged_unscaled.absolute["I"], merged_unscaled.absolute["F"], *reference)
    c_scaled = compare_with_reference(u, out.absolute["I"], out.absolute["F"], *reference)
    print("\n" + _line("dmd merge, unscaled", c_raw))
    print(_line("dmd merge, AIMLESS-scaled", c_scaled))
    # measured: 0.9455 vs 0.9444; CC(I) 0.9990 vs 0.9984. 0.003 allows for platform differences in either fit
    assert c_raw["ccanom"]["overall"] >= c_scaled["ccanom"]["overall"] - 0.003
    assert c_raw["cc_i"]["overall"] >= c_scaled["cc_i"]["overall"] - 0.001
