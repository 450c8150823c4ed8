"""Validation on synthetic data with known truth: VI merging vs the classical baselines.

Low-multiplicity (2), low-I/σ (1.5) case with per-image scale and B variation, a detector-position term
and 0.5% outliers; ~2,500 unique reflections. CC with the true amplitudes is computed on
resolution-normalized amplitudes, overall and in 10 equal-count resolution shells.
"""

import dataclasses

import numpy as np
import pytest

from analysis.merging import (
    MergeConfig,
    SyntheticConfig,
    amplitudes,
    cc_truth,
    fit,
    fit_half_datasets,
    image_halves,
    inverse_variance_merge,
    make_synthetic,
    posterior_summary,
    scale_b_merge,
)

LOW = SyntheticConfig(d_min=3.0, n_images=60, multiplicity=2.0, isigi=1.5, seed=11)
STEPS = 400


@pytest.fixture(scope="module")
def low():
    return make_synthetic(LOW)


@pytest.fixture(scope="module")
def vi_student(low):
    cfg = MergeConfig(likelihood="student", dof=4.0, steps=STEPS, holdout_fraction=0.0)
    return fit(low.unmerged, cfg)


def _cc(f, data):
    u = data.unmerged
    seen = np.bincount(u.refl, minlength=u.n_refl) > 0
    return cc_truth(f, data.f_true, u.inv_d2, 10, mask=seen & np.isfinite(f))


def test_vi_beats_averaging_per_shell_and_scale_b_overall(low, vi_student):
    u = low.unmerged
    f_vi = posterior_summary(vi_student.params, vi_student.config)["F"]
    cc_vi = _cc(f_vi, low)
    ib, sb, _ = inverse_variance_merge(u)
    cc_avg = _cc(amplitudes(ib, sb, u), low)
    ib, sb, _, _, _ = scale_b_merge(u)
    cc_sb = _cc(amplitudes(ib, sb, u), low)
    cc_fw = _cc(amplitudes(ib, sb, u, "french_wilson"), low)
    print(
        "CC(true) overall: VI, average, scale+B, scale+B+FW:",
        cc_vi["overall"],
        cc_avg["overall"],
        cc_sb["overall"],
        cc_fw["overall"],
    )
    print("per shell VI − average:", np.round(cc_vi["per_shell"] - cc_avg["per_shell"], 3))
    print("per shell VI − scale+B:", np.round(cc_vi["per_shell"] - cc_sb["per_shell"], 3))
    print("per shell VI − scale+B+FW:", np.round(cc_vi["per_shell"] - cc_fw["per_shell"], 3))
    # measured (seed 11): VI 0.872, averaging 0.805, scale+B 0.790, scale+B+French-Wilson 0.818; per shell
    # VI − averaging 0.03…0.08, VI − scale+B 0.01…0.19. The standard error of a CC near 0.85 on ~240
    # reflections per shell is ~0.02 (on ~2,400 overall ~0.006), so the bars below leave room for
    # platform-level numerical differences while still failing without the scale model or the prior.
    assert np.all(cc_vi["per_shell"] > cc_avg["per_shell"])
    assert cc_vi["overall"] > cc_avg["overall"] + 0.04
    assert cc_vi["overall"] > cc_sb["overall"] + 0.04
    assert cc_vi["overall"] > cc_fw["overall"] + 0.025
    assert np.count_nonzero(cc_vi["per_shell"] > cc_sb["per_shell"]) >= 9


def test_half_datasets_split_and_cchalf(low, vi_student):
    halves = image_halves(LOW.n_images, seed=0)
    # repeatable, balanced, and a different seed gives a different split
    np.testing.assert_array_equal(halves, image_halves(LOW.n_images, seed=0))
    assert halves.sum() == LOW.n_images // 2
    assert np.any(halves != image_halves(LOW.n_images, seed=1))
    summaries, counts = fit_half_datasets(vi_student, steps=150, seed=0)
    u = low.unmerged
    both = (counts[0] > 0) & (counts[1] > 0)
    assert counts.sum() == u.n_obs  # every training observation in exactly one half
    f1, f2 = summaries[0]["F"], summaries[1]["F"]
    cc12 = np.corrcoef(f1[both], f2[both])[0, 1]
    # each half merged with the frozen scales: halves agree with each other, and each half is worse than
    # the full data set against the truth (half the multiplicity)
    cc_full = _cc(posterior_summary(vi_student.params, vi_student.config)["F"], low)["overall"]
    cc_half_true = _cc(np.where(counts[0] > 0, f1, np.nan), low)["overall"]
    assert 0.5 < cc12 < 0.95
    assert cc_half_true < cc_full - 0.01


def test_minibatch_by_image(low, vi_student):
    from analysis.merging import ImageBatcher

    u = low.unmerged
    batcher = ImageBatcher(u.image, u.n_images, 15, seed=0)
    idx, mask = batcher.draw(3)
    for t in range(3):
        rows = idx[t][mask[t] > 0]
        imgs = np.unique(u.image[rows])
        # a batch is made of whole images: exactly 15 of them, with all of their observations
        assert imgs.size == 15
        assert rows.size == np.isin(u.image, imgs).sum() == np.unique(rows).size
    cfg = MergeConfig(likelihood="student", dof=4.0, steps=STEPS, holdout_fraction=0.0, batch_images=15)
    res = fit(u, cfg)
    cc_mb = _cc(posterior_summary(res.params, cfg)["F"], low)["overall"]
    cc_full = _cc(posterior_summary(vi_student.params, vi_student.config)["F"], low)["overall"]
    # a quarter of the images per step (noisier gradients, same number of steps) stays close to full batch
    assert cc_mb > cc_full - 0.02


def test_held_out_observations_are_merged_too():
    # Issue 22 item 1: hold-out only scores CCpred; the merged output has every input reflection (and Friedel mate)
    # with N equal to its number of input observations. Before the closing all-data pass, 5% hold-out dropped
    # reflections whose few observations were all held out and under-counted N everywhere.
    from analysis.merging import merge, merged_columns

    data = make_synthetic(SyntheticConfig(d_min=4.0, n_images=30, multiplicity=1.5, isigi=3.0, anomalous_sd=0.1,
                                          seed=5))  # fmt: skip
    u = data.unmerged
    out = merge(u, MergeConfig(steps=150, holdout_fraction=0.05, seed=1))
    counts = np.bincount(u.refl, minlength=u.n_refl)
    held = np.asarray(out.result.data.weight) == 0
    assert held.sum() > 0.03 * u.n_obs  # the hold-out really held observations out of the fit
    only_held = np.bincount(u.refl[~held], minlength=u.n_refl) == 0
    assert only_held.sum() > 0  # ... including every observation of some reflections
    assert out.result.final_steps >= 100
    assert np.isfinite(out.quality["ccpred"]["overall"])
    np.testing.assert_array_equal(out.n_obs, counts)
    hkl, cols = merged_columns(u, out.posterior, out.n_obs)
    # every input observation is counted once in the output, and no merged value is missing for a seen reflection
    assert cols["N"][1].sum() == u.n_obs
    n_pm = np.nan_to_num(cols["N(+)"][1]) + np.nan_to_num(cols["N(-)"][1])
    np.testing.assert_array_equal(n_pm, cols["N"][1])
    assert np.all(np.isfinite(cols["F"][1]))
    # reflections seen only in held-out rows were merged from those rows: their F follow the truth
    f = out.posterior["F"]
    cc_held = np.corrcoef(f[only_held], data.f_true[only_held])[0, 1]
    # measured 0.84 on 43 reflections (SE ~0.05); without the closing pass they keep q(F)'s prior start: CC −0.01
    assert cc_held > 0.65, (only_held.sum(), cc_held)


def test_auto_likelihood_takes_student_t_for_zingers_and_normal_for_understated_sigma():
    """likelihood="auto" keeps the likelihood that predicts held-out observations better (CCpred).

    3% zingers (+5…15σ): Normal is pulled by them; measured CC(true) auto (Student-t) 0.901 vs Normal 0.850.
    No outliers but σ understated 3× (as on the bundled Laue data): Student-t (ν 4) down-weights every strong
    reflection and loses (CC(true) 0.929 vs Normal 0.937); auto keeps Normal and gives its fit exactly.
    """
    import dataclasses

    cases = {}
    for name, outliers, sigma_factor in (("zingers", 0.03, 1.0), ("understated", 0.0, 1.0 / 3.0)):
        data = make_synthetic(SyntheticConfig(d_min=3.5, n_images=40, outlier_fraction=outliers, seed=5))
        u = dataclasses.replace(data.unmerged, sigma=data.unmerged.sigma * sigma_factor)
        cfg = MergeConfig(likelihood="auto", dof=4.0, steps=300)
        res = fit(u, cfg)
        assert res.config.likelihood == res.likelihood_choice["chosen"]
        cases[name] = (res, _cc(posterior_summary(res.params, res.config)["F"], data)["overall"], u, data)
    res, cc_auto, u, data = cases["zingers"]
    assert res.likelihood_choice["chosen"] == "student", res.likelihood_choice
    normal = fit(u, MergeConfig(likelihood="normal", steps=300, holdout_fraction=0.05))
    cc_normal = _cc(posterior_summary(normal.params, normal.config)["F"], data)["overall"]
    assert cc_auto > cc_normal + 0.025, (cc_auto, cc_normal)
    res, cc_auto, u, data = cases["understated"]
    assert res.likelihood_choice["chosen"] == "normal", res.likelihood_choice
    ccp = res.likelihood_choice["ccpred"]
    assert ccp["normal"] > ccp["student"]


def test_half_dataset_merges_written_and_scored_outside_dmd(tmp_path):
    # Issue 22 item 2: CC1/2 is computed the same way for dmd and careless from the programs' half-dataset files
    # (benchmarks/bench_merge.py); dmd writes OUT_half1/2.mtz. Read back on the unmerged rows, they give the CC1/2
    # and CCanom1/2 that merge() computed in process from the same halves (float32 MTZ storage: 1e-4).
    from analysis.merging import merge, quality, write_outputs
    from analysis.merging.io import read_merged
    from analysis.merging.reference import values_on_rows

    data = make_synthetic(SyntheticConfig(d_min=4.0, n_images=30, multiplicity=3.0, isigi=3.0, anomalous_sd=0.15,
                                          seed=3))  # fmt: skip
    u = data.unmerged
    out = merge(u, MergeConfig(steps=100, holdout_fraction=0.0), half_datasets=True, half_steps=40)
    paths = write_outputs(tmp_path / "m.mtz", out)
    halves, counts = [], []
    for i in (1, 2):
        hkl, cols, _ = read_merged(paths[f"half{i}_mtz"])
        halves.append(values_on_rows(u, hkl, cols["F(+)"], cols["F(-)"]))
        counts.append(np.nan_to_num(values_on_rows(u, hkl, cols["N(+)"], cols["N(-)"])))
    counts = np.stack(counts)
    assert counts.sum() == u.n_obs  # every observation in exactly one half file
    np.testing.assert_array_equal(counts, out.halves[1])
    q = out.quality
    ch = quality.cc_half(halves[0], halves[1], u.inv_d2, counts)
    ca = quality.cc_anom(halves, u.hkl, u.spacegroup, u.inv_d2, counts=counts)
    assert ch["n_pairs"] == q["cchalf"]["n_pairs"] > 100
    assert abs(ch["overall"] - q["cchalf"]["overall"]) < 1e-4
    assert abs(ca["overall"] - q["ccanom_half"]["overall"]) < 1e-4


def test_closing_pass_moves_q_of_partly_held_out_reflections():
    # Issue 22 items 1-2: after a fit with observations held out (CCpred), the closing all-data pass must bring the
    # reflections that lost some observations to the posterior of all of them. Compared with the fit that never
    # held anything out: measured mean |ΔF| 0.0049 on 275 partly held-out reflections, as on the untouched ones
    # (0.0048: the two fits' own difference). With the old closing pass (q at the tail lr, 0.0009) 0.043 against
    # 0.0030, and the hard set lost CC(E) 0.872 -> 0.865. Bars: within 2x of the untouched ones and < 0.015.
    from analysis.merging import merge

    data = make_synthetic(SyntheticConfig(d_min=4.0, n_images=30, multiplicity=3.0, isigi=3.0, seed=4))
    u = data.unmerged
    cfg = MergeConfig(steps=150, likelihood="student", dof=4.0, seed=1)
    ref = merge(u, cfg).posterior["F"]
    out = merge(u, dataclasses.replace(cfg, holdout_fraction=0.1))
    held = np.asarray(out.result.data.weight) == 0
    n_held = np.bincount(u.refl[held], minlength=u.n_refl)
    part = (n_held > 0) & (n_held < np.bincount(u.refl, minlength=u.n_refl))
    assert part.sum() > 100
    d = np.abs(out.posterior["F"] - ref)
    assert d[part].mean() < min(2.0 * d[n_held == 0].mean(), 0.015), (d[part].mean(), d[n_held == 0].mean())
