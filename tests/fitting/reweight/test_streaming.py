"""Out-of-core reweighting: a store larger than the memory cap stays on disk and every evaluation of the
cross-validated run (θ fits, final fit, baselines, identifiability) streams it; results equal in-memory ones."""

import json

import numpy as np
import pytest

from fitting import fstore, synthetic
from fitting import reweight as rw
from fitting.fstore import FrameStore

TRUE = np.array([0.6, 0.3, 0.1])


@pytest.fixture(scope="module")
def data():
    ens = synthetic.make_ensemble(3, 4, d_min=3.0, seed=3)
    x = synthetic.diffuse_of_weights(ens.f, np.repeat(TRUE, 4) / 4)
    return ens, synthetic.noisy_data(x, 0.95, seed=4, hkl=ens.hkl)


def _never_loaded(self):
    raise AssertionError("the out-of-core path must not load the whole store into memory")


def test_out_of_core_reweight_equals_in_memory(data, tmp_path, monkeypatch):
    ens, y = data
    chunks = (ens.f[i : i + 5] for i in range(0, 12, 5))
    disk = fstore.build_store(chunks, 12, ens.f.shape[1], path=tmp_path / "f.h5", dtype=np.float64, progress=False)
    folds = rw.holdout_folds(ens.hkl, 4)
    config = rw.ReweightConfig(
        steps=40, learning_rate=0.1, theta_grid=(0.0, 1e-2), n_folds=4, greedy_max_removals=2, sigmoid_steps=20
    )
    mem = rw.reweight(rw.make_problem(fstore.store_from_array(ens.f), y), folds, config, progress=False)

    # a memory cap below the store's size forces streaming; the store is never read whole
    prob = rw.make_problem(disk, y, max_memory=disk.nbytes - 1, frames_per_chunk=5)
    assert prob.out_of_core and prob.z is None and prob.store is disk
    reads = []
    orig = fstore.iter_chunks
    monkeypatch.setattr(FrameStore, "array", _never_loaded)
    monkeypatch.setattr(fstore, "iter_chunks", lambda *a, **k: (reads.append(1), orig(*a, **k))[1])
    ooc = rw.reweight(prob, folds, config, progress=False)

    # acceptance: same weights ≤ 1e-6 (float64 both ways; only the summation order differs, measured 1.1e-16)
    np.testing.assert_allclose(ooc.weights, mem.weights, rtol=0, atol=1e-6)
    assert ooc.theta == mem.theta and ooc.summary["out_of_core"] and not mem.summary["out_of_core"]
    for key in ("cc_train", "cc_test", "n_eff"):
        assert abs(ooc.summary[key] - mem.summary[key]) < 1e-9, key
    np.testing.assert_allclose(ooc.cv["per_fold"], mem.cv["per_fold"], atol=1e-9)
    for name in ("greedy", "sigmoid"):
        np.testing.assert_allclose(ooc.baselines_weights[name], mem.baselines_weights[name], atol=1e-6)
    np.testing.assert_allclose(
        ooc.summary["identifiability"]["cc_drop"], mem.summary["identifiability"]["cc_drop"], atol=1e-9
    )
    # the store was streamed: 2 passes per Adam step for the θ batch, the final fit and the sigmoid baseline
    assert len(reads) >= 2 * (2 * config.steps + config.sigmoid_steps)
    # a real fit, not a no-op: 40 steps move the state weights well toward the truth (measured L1 0.15 vs 0.53)
    err = np.abs(np.bincount(ens.state, ooc.weights, minlength=3) - TRUE).sum()
    assert err < 0.5 * np.abs(1 / 3 - TRUE).sum()


def test_out_of_core_refuses_lbfgs_with_fix(data, tmp_path):
    ens, y = data
    disk = fstore.build_store([ens.f], 12, ens.f.shape[1], path=tmp_path / "f.h5", dtype=np.float64, progress=False)
    prob = rw.make_problem(disk, y, max_memory=0)
    with pytest.raises(ValueError, match="optimizer 'adam'"):
        rw.fit_batch(prob, rw.FitSpec(optimizer="lbfgs", steps=2), np.zeros((1, 12)), np.ones((1, len(y)), bool), [0])
    # under the cap the same on-disk store is loaded into memory
    assert not rw.make_problem(disk, y, max_memory=disk.nbytes).out_of_core


def test_cli_store_streams_when_over_memory_cap(tmp_path, capsys):
    from dmd.cli import main

    ex = rw.EXAMPLE_DIR
    args = ["reweight", "--traj", str(ex / "traj.dcd"), "--top", str(ex / "top.pdb"), "--data", str(ex / "data.mtz")]
    args += ["--column", "IDIFF", "--d-min", "3.5", "--steps", "20", "--learning-rate", "0.1", "--folds", "3"]
    args += ["--theta-grid", "0", "--blocks", "3", "--no-greedy", "--quiet", "--out", str(tmp_path / "o")]
    store = tmp_path / "f.h5"
    assert main(args + ["--store", str(store), "--max-memory", "0"]) == 0
    assert "store streamed from disk" in capsys.readouterr().out
    assert store.exists()
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["out_of_core"]
    w = np.loadtxt(tmp_path / "o" / "weights.csv", delimiter=",", skiprows=1)[:, 1]
    assert len(w) == 60 and abs(w.sum() - 1) < 1e-6  # 8 significant digits per weight in the CSV
    assert s["cc_train"] > s["baselines"]["uniform"]["cc_train"]  # 20 streamed Adam steps improved the fit
    assert main(args[:-2] + ["--out", str(tmp_path / "p"), "--max-memory", "1"]) == 2  # --max-memory needs --store
