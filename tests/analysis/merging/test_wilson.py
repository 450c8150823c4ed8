"""Absolute (Wilson) scale of the merged output: Σ_N of a protein, the Wilson-plot fit, and F, I on the absolute
scale in the merged MTZ (careless's column names; types read back by gemmi)."""

import gemmi
import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.merging import MergeConfig, SyntheticConfig, make_synthetic, merge, write_outputs
from analysis.merging.wilson import PROTEIN_RESIDUE, protein_sigma_n, wilson_fit

CELL = (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)


def test_protein_sigma_n_at_zero_angle_is_sum_of_z_squared():
    # at s = 0, f_j = Z_j (IT92: Σa + c equals Z to ~0.2 %): per residue Σ n Z² = 5·36 + 1.35·49 + 1.5·64 + 0.05·256
    # + 8·1 = 362.95 e²; residues in the cell V / (2.4 Å³/Da · 110 Da)
    n_res = 40 * 50 * 60 / (2.4 * 110)
    z2 = sum(n * gemmi.Element(el).atomic_number ** 2 for el, n in PROTEIN_RESIDUE.items())
    assert z2 == pytest.approx(362.95)
    s0, s_high = protein_sigma_n(np.array([0.0, 0.25]), CELL)
    assert s0 == pytest.approx(n_res * z2, rel=5e-3)
    assert s_high < 0.6 * s0  # form factors fall off: at d = 2 Å, f_C ≈ 0.55 Z


def test_wilson_fit_recovers_scale_and_b_on_protein_content():
    # I = k·ε·Σ_N(s)·exp(−B inv_d2/2)·Z, Z ~ Exp(1) (acentric Wilson intensities), 6,000 reflections to 2 Å
    group = symmetry.spacegroup("P 21 21 21")
    hkl = symmetry.generate_hkl(np.array(CELL), 2.0, group, unique=True)
    x = cell_mod.inv_d2(hkl.astype(float), np.array(CELL))
    eps = symmetry.epsilon_factors(hkl, group).astype(float)
    sigma_n = protein_sigma_n(x, CELL)
    k_true, b_true = 3.5e-3, 27.0
    rng = np.random.default_rng(0)
    i = k_true * eps * sigma_n * np.exp(-b_true * x / 2) * rng.exponential(1.0, x.size)
    wf = wilson_fit(i, x, eps, sigma_n)
    assert wf.d_range[0] <= 4.5 and wf.d_range[1] == pytest.approx(2.0, abs=0.01)
    # the fit's own standard errors (from the per-shell spread: ~0.04 in ln k, ~0.4 Å² in B here) bound the error
    assert abs(np.log(wf.scale / k_true)) < 3 * wf.ln_scale_se
    assert abs(wf.b - b_true) < 3 * wf.b_se
    assert wf.ln_scale_se < 0.1 and wf.b_se < 1.0


@pytest.fixture(scope="module")
def known_scale():
    # known absolute scale: I_true = 100·F², ⟨F²⟩ = ε·exp(−20·inv_d2/2), i.e. content Σ_N = 1, k = 100, B = 20 Å²
    # (no detector term: its resolution dependence would move the smooth scale by design)
    cfg = SyntheticConfig(d_min=2.8, n_images=20, multiplicity=3.0, isigi=5.0, detector_strength=0.0,
                          outlier_fraction=0.0, seed=3)  # fmt: skip
    data = make_synthetic(cfg)
    out = merge(data.unmerged, MergeConfig(steps=100, holdout_fraction=0.0, seed=0), sigma_n=1.0)
    return data, out


def test_merge_recovers_known_absolute_scale_and_b(known_scale):
    data, out = known_scale
    u = data.unmerged
    w = out.wilson
    # measured on seeds 3, 4, 5, 6: k 84.7, 94.2, 90.1, 95.2 and B 16.3, 19.1, 17.4, 18.5 Å², against the Wilson
    # fit of the true amplitudes of each draw 87.8, 99.1, 91.9, 97.3 and 17.0, 20.3, 17.6, 19.1 Å²: the merge adds
    # ≤ 0.05 in ln k and ≤ 1.3 Å² in B to the sampling error of the draw itself (fit SE ~0.09 in ln k, ~2 Å² in B)
    truth = wilson_fit(100.0 * data.f_true**2, u.inv_d2, u.epsilon, 1.0)
    assert abs(np.log(w["scale_k"] / truth.scale)) < 0.1
    assert abs(w["b_wilson"] - truth.b) < 2.5
    assert abs(np.log(w["scale_k"] / 100.0)) < 3 * w["ln_scale_se"]
    assert abs(w["b_wilson"] - 20.0) < 3 * w["b_se"]
    # k·I_abs is the merged intensity on the input's scale: its mean is that of the true 100·F² (measured 0.99),
    # and I_abs = F_abs² + SIGF² (posterior moments)
    seen = out.n_obs > 0
    f_abs = out.absolute["F"][seen]
    ratio = w["scale_k"] * np.mean(out.absolute["I"][seen]) / np.mean(100.0 * data.f_true[seen] ** 2)
    assert ratio == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(out.absolute["I"][seen], f_abs**2 + out.absolute["SIGF"][seen] ** 2, rtol=1e-6)
    # E: normalized, ⟨E²⟩ = 1 over the reflections (flat prior, ε divided out)
    assert np.mean(out.posterior["E"][seen] ** 2 + out.posterior["SIGE"][seen] ** 2) == pytest.approx(1.0, abs=0.1)


def test_merged_mtz_columns_and_types(known_scale, tmp_path):
    data, out = known_scale
    paths = write_outputs(tmp_path / "merged.mtz", out)
    mtz = gemmi.read_mtz_file(str(paths["mtz"]))
    # the per-shell table sits next to the MTZ (CSV) and in the JSON summary
    assert paths["shells_csv"].read_text().startswith("shell,d_low,d_high,")
    assert '"shells"' in paths["json"].read_text()
    types = {c.label: c.type for c in mtz.columns}
    expected = {"F": "F", "SIGF": "Q", "I": "J", "SIGI": "Q", "N": "I", "E": "E", "SIGE": "Q"}
    assert {k: types.get(k) for k in expected} == expected
    f = np.asarray(mtz.column_with_label("F").array, float)
    e = np.asarray(mtz.column_with_label("E").array, float)
    assert f.size == np.count_nonzero(out.n_obs) and np.all(np.isfinite(f)) and np.all(f > 0)
    # F on the absolute scale is E·sqrt(ε)·exp(−B inv_d2/4) (unit content, B = 20 Å²): the ratio read back from the
    # file follows it to the accuracy of the recovered k and B (≤ 0.1 in ln k and 2.5 Å² in B above: ≤ 10 %)
    hkl = np.asarray(mtz.make_miller_array(), int)
    x = cell_mod.inv_d2(hkl.astype(float), np.array(data.config.cell))
    eps = symmetry.epsilon_factors(hkl, mtz.spacegroup)
    expected_ratio = np.sqrt(eps) * np.exp(-20.0 * x / 4)
    np.testing.assert_allclose(f / e, expected_ratio, rtol=0.15)


def test_wilson_fit_refuses_without_a_plot():
    # three reflections make no Wilson plot (two shells, one with a single reflection): a clear error, which merge
    # turns into a warning and F, I on the normalized scale
    with pytest.raises(ValueError, match="fewer than 2 resolution shells"):
        wilson_fit(np.ones(3), np.array([0.01, 0.02, 0.03]), np.ones(3), 1.0)
