"""Frame store, prediction from sufficient statistics, baselines (fitting.fstore, .reweight, .baselines)."""

import jax
import numpy as np
import pytest

from fitting import baselines, fstore, synthetic
from fitting import reweight as rw


@pytest.fixture(scope="module")
def ens():
    return synthetic.make_ensemble(3, 4, d_min=3.0, seed=7)


def test_store_prediction_matches_direct_formula(ens):
    w = np.random.default_rng(0).dirichlet(np.ones(12))
    ref = synthetic.diffuse_of_weights(ens.f, w)  # Σw|F|² − |ΣwF|² in float64 on raw F
    y = ref + 1.0
    p64 = rw.make_problem(fstore.store_from_array(ens.f), y)
    np.testing.assert_allclose(np.asarray(rw.predict(p64, w)), ref, rtol=1e-10, atol=1e-9 * ref.max())
    p32 = rw.make_problem(fstore.store_from_array(ens.f.astype(np.complex64)), y)
    x32 = np.asarray(rw.predict(p32, w))
    assert x32.dtype == np.float32
    # centered float32 storage: error relative to the diffuse scale, not to the Bragg |F̄|² (≫ x′ here)
    assert np.max(np.abs(x32 - ref)) / ref.max() < 1e-5
    assert np.abs(ens.f.mean(0)).max() ** 2 > 5 * ref.max()  # the Bragg part would dominate uncentered sums


def test_unnormalized_formula_matches_direct(ens):
    w = np.random.default_rng(1).uniform(0.1, 0.9, 12)  # Σw ≠ 1
    store = fstore.store_from_array(ens.f)
    s = np.einsum("t,tcm->cm", w, store.z)
    got = np.asarray(rw.diffuse_unnormalized(s, w.sum(), store.f_mean))
    ref = synthetic.diffuse_of_weights(ens.f, w)  # (the reference takes unnormalized w as given)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_hdf5_store_streams_like_memory(ens, tmp_path):
    chunks = (ens.f[i : i + 5] for i in range(0, 12, 5))
    disk = fstore.build_store(chunks, 12, ens.f.shape[1], path=tmp_path / "f.h5", dtype=np.float64, progress=False)
    mem = fstore.store_from_array(ens.f)
    assert disk.on_disk and (tmp_path / "f.h5").exists()
    np.testing.assert_allclose(disk.array(), mem.z, rtol=1e-12, atol=1e-12)  # same float64 arithmetic
    w = np.random.default_rng(2).dirichlet(np.ones(12))
    s = fstore.stream_stats(disk, w, frames_per_chunk=5)
    np.testing.assert_allclose(s, np.einsum("t,tcm->cm", w, mem.z), rtol=1e-12, atol=1e-10)
    g = np.random.default_rng(3).normal(size=s.shape)
    np.testing.assert_allclose(fstore.stream_vjp(disk, g, 5), np.einsum("tcm,cm->t", mem.z, g), rtol=1e-10)
    with pytest.raises(ValueError, match="NaN"):
        bad = ens.f.copy()
        bad[3, 2] = np.nan
        fstore.store_from_array(bad)


def test_greedy_candidates_match_brute_force(ens):
    x = synthetic.diffuse_of_weights(ens.f, np.repeat([0.6, 0.3, 0.1], 4) / 4)
    y = synthetic.noisy_data(x, 0.95, seed=1)
    p = rw.make_problem(fstore.store_from_array(ens.f), y)
    mask = np.ones(len(y), bool)
    res = baselines.greedy_elimination(p, mask, max_removals=3, progress=False)
    # brute force: recompute CC for every single-frame removal from raw F
    active = np.ones(12, bool)
    for j in res["removed"]:
        ccs = []
        for k in range(12):
            if not active[k]:
                ccs.append(-np.inf)
                continue
            a = active.copy()
            a[k] = False
            ccs.append(np.corrcoef(synthetic.diffuse_of_weights(ens.f, a / a.sum()), y)[0, 1])
        assert int(np.argmax(ccs)) == j  # the vectorized scorer picks the same frame
        np.testing.assert_allclose(max(ccs), res["cc_path"][len(np.flatnonzero(~active)) + 1], rtol=1e-10)
        active[j] = False
    assert res["cc_path"][-1] > res["cc_path"][0]  # elimination raised the training CC


def test_sigmoid_baseline_and_neff(ens):
    x = synthetic.diffuse_of_weights(ens.f, np.repeat([0.6, 0.3, 0.1], 4) / 4)
    y = synthetic.noisy_data(x, 0.95, seed=1)
    p = rw.make_problem(fstore.store_from_array(ens.f), y)
    mask = np.ones(len(y), bool)
    s = baselines.sigmoid_baseline(p, mask, steps=50, learning_rate=0.05)
    ref = synthetic.diffuse_of_weights(ens.f, s["weights"])
    np.testing.assert_allclose(s["x"], ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    # it optimizes from σ(0) = 0.5 per frame (Σw = 6: the Bragg leak makes the start poor)
    assert s["cc_history"][-1] > s["cc_history"][0] + 0.05
    assert rw.kish_neff(np.full(12, 2.0)) == pytest.approx(12.0)
    assert rw.kish_neff(np.eye(12)[0]) == pytest.approx(1.0)
    assert rw.entropy(np.full(12, 1 / 12)) == pytest.approx(np.log(12))
    z = np.log(np.random.default_rng(4).dirichlet(np.ones(12)))
    w = np.exp(z)
    kl = float(rw.kl_divergence(z, np.log(np.full(12, 1 / 12))))
    assert kl == pytest.approx(np.sum(w * np.log(w * 12)), rel=1e-12)


def test_holdout_folds_keep_orbits_together(ens):
    folds = rw.holdout_folds(ens.hkl, 5)
    key = {tuple(h): f for h, f in zip(ens.hkl.tolist(), folds, strict=True)}
    # Friedel mates (the P 1 orbit) always share a fold: no leak of x′(h) = x′(−h) into the test set
    assert all(key[tuple(-np.asarray(h))] == f for h, f in key.items())
    assert set(np.unique(folds)) == set(range(5))
    shells = rw.holdout_folds(ens.hkl, 4, kind="shells", inv_d2=ens.inv_d2)
    assert set(np.unique(shells)) == set(range(4))
    with pytest.raises(ValueError, match="inv_d2"):
        rw.holdout_folds(ens.hkl, 4, kind="shells")


def test_fit_does_not_recompile(ens, jax_compiles):
    x = synthetic.diffuse_of_weights(ens.f, np.repeat([0.6, 0.3, 0.1], 4) / 4)
    p = rw.make_problem(fstore.store_from_array(ens.f), x)
    spec = rw.FitSpec(steps=5)
    mask = np.ones((1, len(x)), bool)
    rw.fit_batch(p, spec, np.zeros((1, 12)), mask, [0.0])
    with jax_compiles() as records:
        rw.fit_batch(p, spec, np.ones((1, 12)), mask, [0.1])  # new data values, same shapes
    assert not [r for r in records if "Compiling" in r.getMessage() and "_fit_one" in r.getMessage()]


def test_weight_gradient_matches_central_differences(ens):
    """∂L/∂logits through the store's hand-written backward pass (Z·ḡ) vs float64 central differences."""
    from jax.test_util import check_grads

    from fitting.sharding import local_stats

    y = synthetic.noisy_data(synthetic.diffuse_of_weights(ens.f, np.full(12, 1 / 12)), 0.9, seed=3)
    p = rw.make_problem(fstore.store_from_array(ens.f), y)
    spec = rw.FitSpec(objective="gaussian")
    loss = lambda lg: rw.objective_value(
        spec, rw.x_from_weights(local_stats, p.z, jax.nn.softmax(lg), p.data, 0), p.data, None
    )
    lg = np.random.default_rng(5).normal(size=12)
    check_grads(loss, (lg,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)  # float64: FD error ~1e-8


def test_streaming_fit_from_disk_matches_in_memory(ens, tmp_path):
    x = synthetic.diffuse_of_weights(ens.f, np.repeat([0.6, 0.3, 0.1], 4) / 4)
    y = synthetic.noisy_data(x, 0.95, seed=1)
    chunks = (ens.f[i : i + 4] for i in range(0, 12, 4))
    disk = fstore.build_store(chunks, 12, ens.f.shape[1], path=tmp_path / "f.h5", dtype=np.float64, progress=False)
    p = rw.make_problem(fstore.store_from_array(ens.f), y)
    train = rw.holdout_folds(ens.hkl, 5) != 0
    spec = rw.FitSpec(steps=30, learning_rate=0.1)
    lg_mem, h_mem = rw.fit_batch(p, spec, np.asarray(p.log_w0)[None], train[None], [0.01])
    lg_disk, h_disk = rw.fit_streaming(disk, p.data, spec, train, 0.01, frames_per_chunk=5, progress=False)
    # same float64 loss and Adam updates; only summation order differs
    np.testing.assert_allclose(np.asarray(lg_disk), np.asarray(lg_mem[0]), atol=1e-8)
    np.testing.assert_allclose(h_disk["cc"], np.asarray(h_mem["cc"][0]), atol=1e-10)


def test_batched_sharded_backward_pass_is_a_store_times_gradient_product(ens):
    """The batched fit over frames sharded on 4 devices computes ∂L/∂w as Z_blk · Gᵀ ([frames, batch] out),
    never as G · Z_blkᵀ: XLA folds the batch transpose into the product otherwise, and XLA:CPU runs that form
    about 10x slower (measured 642 vs 50 ms at 250 × 60000 per device), which made the sharded
    cross-validation 4.7x slower in CPU seconds than the unsharded one (benchmarks/bench_sharded_cv.py)."""
    import re

    from fitting.reweight import fit as fit_mod
    from fitting.sharding import frame_mesh

    assert len(jax.devices()) == 4  # forced by tests/conftest.py
    f = np.tile(ens.f.astype(np.complex64), (2, 1))  # 24 frames: 6 per device
    p = rw.make_problem(fstore.store_from_array(f), synthetic.diffuse_of_weights(ens.f, np.full(12, 1 / 12)),
                        mesh=frame_mesh())  # fmt: skip
    spec = rw.FitSpec(steps=2, n_data=p.n_data, n_shells=p.n_shells)
    b, k = 3, p.z.shape[1]
    args = (p.z, p.data, p.log_w0, np.zeros((b, 24), np.float32), np.ones((b, len(p.y)), bool), np.zeros(b, np.float32))
    hlo = fit_mod._batched_fitter(spec, p.stats_fn).lower(*args).compile().as_text()
    dots = re.findall(r"= f32\[([\d,]+)\]\{[\d,]+\} dot\(", hlo)
    assert f"{b},{k}" in dots  # the forward product W · Z_blk (the test sees the products)
    assert "6,3" in dots and "3,6" not in dots  # backward: Z_blk · Gᵀ, not G · Z_blkᵀ
