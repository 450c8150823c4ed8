"""Per-shell merging statistics against a hand computation on a small triclinic set (no ties in d)."""

import gemmi
import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis.merging.io import group_observations
from analysis.merging.shells import format_shell_table, shell_table, write_shell_csv

CELL = np.array([10.0, 11.0, 12.0, 80.0, 85.0, 95.0])
D_MIN = 3.0


def _possible():
    hkl = np.asarray(gemmi.make_miller_array(gemmi.UnitCell(*CELL), gemmi.SpaceGroup("P 1"), D_MIN, 0, True), int)
    return hkl, cell_mod.inv_d2(hkl.astype(float), CELL)


def _observations(anomalous: bool, seed=0):
    rng = np.random.default_rng(seed)
    hkl, _ = _possible()
    keep = hkl[rng.random(len(hkl)) < 0.7]
    n_per = rng.integers(1, 5, len(keep))
    rows = np.repeat(keep, n_per, axis=0)
    if anomalous:  # a third of the observations measure the Friedel mate
        flip = rng.random(len(rows)) < 0.35
        rows = np.where(flip[:, None], -rows, rows)
    n = len(rows)
    u = group_observations(rows, rng.gamma(2.0, 50.0, n), np.full(n, 10.0), rng.integers(1, 9, n), CELL, "P 1",
                           anomalous=anomalous)  # fmt: skip
    return u, rng


def test_shell_table_matches_hand_computation(tmp_path):
    u, rng = _observations(anomalous=False)
    n_obs = np.bincount(u.refl, minlength=u.n_refl)
    i = rng.gamma(2.0, 30.0, u.n_refl)
    sig = rng.uniform(2.0, 8.0, u.n_refl)
    f0 = rng.normal(10.0, 2.0, u.n_refl)
    halves = np.stack([f0, f0 + rng.normal(0.0, 1.5, u.n_refl)])
    counts = rng.integers(0, 3, (2, u.n_refl))
    t = shell_table(u, n_obs, i, sig, halves=halves, half_counts=counts, n_shells=2)

    # by hand: two equal-count shells split at the median 1/d² of the merged reflections (a reflection at the median
    # goes to the outer shell)
    x = u.inv_d2
    assert np.unique(x).size == x.size
    cut = np.median(x)
    _, p_x = _possible()
    p_x = p_x[p_x <= x.max() * (1 + 1e-12)]  # completeness to the data's d_min (the highest-resolution reflection)
    both = (counts > 0).all(axis=0)
    for s, sel in enumerate((x < cut, x >= cut)):
        row = t["shells"][s]
        n_poss = np.count_nonzero(p_x < cut) if s == 0 else np.count_nonzero(p_x >= cut)
        assert row["n_unique"] == sel.sum() >= x.size // 2
        assert row["n_possible"] == n_poss
        assert row["completeness"] == pytest.approx(100.0 * sel.sum() / n_poss)
        assert row["n_obs"] == n_obs[sel].sum()
        assert row["multiplicity"] == pytest.approx(n_obs[sel].sum() / sel.sum())
        assert row["mean_i_over_sigma"] == pytest.approx(np.mean(i[sel] / sig[sel]))
        m = sel & both
        assert row["cc_half"] == pytest.approx(np.corrcoef(halves[0, m], halves[1, m])[0, 1], abs=1e-5)
        assert np.isnan(row["cc_anom"]) and np.isnan(row["anom_completeness"])
    o = t["overall"]
    assert o["n_possible"] == p_x.size and o["n_unique"] == u.n_refl
    assert o["completeness"] == pytest.approx(100.0 * u.n_refl / p_x.size)
    assert o["cc_half"] == pytest.approx(np.corrcoef(halves[0, both], halves[1, both])[0, 1], abs=1e-5)
    assert o["d_high"] == pytest.approx(1.0 / np.sqrt(x.max()))

    text = format_shell_table(t)
    assert "CC1/2" in text and "Compl%" in text and "CCanom" not in text and text.splitlines()[-1].endswith("overall")
    path = write_shell_csv(tmp_path / "s.csv", t)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("shell,d_low,d_high,n_obs") and len(lines) == 4 and lines[-1].startswith("overall")


def test_shell_table_anomalous_pairs_by_hand():
    u, rng = _observations(anomalous=True, seed=1)
    n_obs = np.bincount(u.refl, minlength=u.n_refl)
    asu = gemmi.ReciprocalAsu(gemmi.SpaceGroup("P 1"))
    plus = np.array([asu.is_in(list(map(int, h))) for h in u.hkl])
    key = {tuple(h): r for r, h in enumerate(u.hkl.tolist())}
    neg = [tuple(-np.array(h)) for h in u.hkl.tolist()]
    pairs = [(r, key[neg[r]]) for r in range(u.n_refl) if plus[r] and neg[r] in key]
    p_idx, m_idx = np.array(pairs).T
    halves = rng.normal(10.0, 2.0, (2, u.n_refl))
    halves[1] += 0.5 * (halves[0] - 10.0)
    counts = rng.integers(0, 3, (2, u.n_refl))
    t = shell_table(u, n_obs, np.ones(u.n_refl), np.ones(u.n_refl), halves=halves, half_counts=counts, n_shells=3)
    o = t["overall"]
    _, p_x = _possible()  # P 1 has no centric reflections: every possible reflection can pair
    p_x = p_x[p_x <= u.inv_d2.max() * (1 + 1e-12)]
    assert o["anom_completeness"] == pytest.approx(100.0 * len(pairs) / p_x.size)
    n_unique = len({tuple(h) if p else neg[r] for r, (h, p) in enumerate(zip(u.hkl.tolist(), plus, strict=True))})
    assert o["n_unique"] == n_unique and o["multiplicity"] == pytest.approx(u.n_obs / n_unique)
    ok = (counts[:, p_idx] > 0).all(axis=0) & (counts[:, m_idx] > 0).all(axis=0)
    da = halves[:, p_idx] - halves[:, m_idx]
    assert o["cc_anom"] == pytest.approx(np.corrcoef(da[0, ok], da[1, ok])[0, 1], abs=1e-5)
    assert all(np.isfinite(r["cc_anom"]) for r in t["shells"])
