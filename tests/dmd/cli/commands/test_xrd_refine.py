"""`dmd xrd-refine` end to end on the example data (examples/xrd_refine), output round trip through gemmi,
bad input reported without a traceback; landscape tools produce plots and sensible statistics."""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import pytest

from dmd.cli import main as dmd_main

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 4))
EX = os.path.join(ROOT, "examples", "xrd_refine")


def test_example_runs_end_to_end(tmp_path):
    sys.path.insert(0, EX)
    try:
        import run_example
    finally:
        sys.path.remove(EX)
    out = tmp_path / "out"
    assert run_example.main([str(out)]) == 0
    for name in ("refined.cif", "pattern.png", "fitted_pattern.csv", "summary.json"):
        assert (out / name).stat().st_size > 0
    from analysis.structure_io import read_structure

    xs = read_structure(str(out / "refined.cif"))  # gemmi reads what we wrote
    # start was a +2 %, c −1.5 %, O x = 0.29; published rutile: 4.594, 2.959, 0.3048. The pattern has 1 %
    # noise: 5e-3 Å and 3e-3 in x are well inside what noise allows and far from the start.
    np.testing.assert_allclose(xs.cell[:3], [4.594, 4.594, 2.959], atol=5e-3)
    o = [p for p, e in zip(xs.pos_frac, xs.elements, strict=True) if e == "O"][0]
    assert abs(o[0] - 0.3048) < 3e-3 and abs(o[0] - o[1]) < 1e-6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["refined"]["cosine"] > 0.98 > summary["metrics"]["start"]["cosine"]


def test_bad_pattern_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("2theta,I\n" + "\n".join(f"{10 + i * 0.1},{'nan' if i == 5 else 1.0}" for i in range(40)))
    rc = dmd_main(
        ["xrd-refine", str(bad), "--start", os.path.join(EX, "rutile_start.cif"), "--out", str(tmp_path / "o")]
    )
    assert rc == 2
    assert "NaN" in capsys.readouterr().err
    rc = dmd_main(["xrd-refine", str(tmp_path / "missing.csv"), "--start", "x.cif", "--out", str(tmp_path / "o")])
    assert rc == 2


def test_landscape_scan_minimum_and_correlation(tmp_path):
    import jax.numpy as jnp

    from fitting import xrd_landscape as xl
    from fitting import xrd_params as xp
    from fitting.xrd_refine import make_loss_fn, make_pattern_model, xrd_loss
    from fitting.xrd_structures import STRUCTURES, expand_spec

    cell, pos, els = expand_spec(STRUCTURES["CsCl"])
    grid = np.arange(15.0, 75.0, 0.05)
    pm = make_pattern_model(els, cell, grid, margin=0.1)
    obs = pm(cell, pos)
    par = xp.FamilyParam(tuple(els), crystal_family="cubic")
    loss_fn = make_loss_fn(par, pm, obs)
    p0 = jax.tree_util.tree_map(jnp.asarray, par.init(cell, pos))
    a = np.linspace(3.9, 4.35, 91)
    y = xl.scan_1d(lambda p: loss_fn(p, 0.0, 0.0)[0], p0, "lattice", 0, np.log(a))
    assert abs(a[np.argmin(y)] - 4.123) < 0.006  # global minimum of the scan at the true a (grid step 5 mm)
    d1 = xl.random_direction(jax.random.PRNGKey(0), p0)
    z = xl.scan_2d(lambda p: loss_fn(p, 0.0, 0.0)[0], p0, d1, xl.random_direction(jax.random.PRNGKey(1), p0),
                   np.linspace(-0.1, 0.1, 9), np.linspace(-0.1, 0.1, 9))  # fmt: skip
    assert z.shape == (9, 9) and np.argmin(z) == 40  # the truth sits at the centre of the plane
    xl.plot_scan_1d(tmp_path / "s1.png", a, {"cosine": y}, xlabel="a (Å)", truth=4.123)
    xl.plot_scan_2d(tmp_path / "s2.png", np.linspace(-0.1, 0.1, 9), np.linspace(-0.1, 0.1, 9), z)
    corr = {
        sig: xl.similarity_correlation(
            lambda c, p, sig=sig: xrd_loss("cosine", obs, pm(c, p), grid, sig), cell, pos,
            np.random.default_rng(0), n=40, max_strain=0.01, max_disp=0.2,
        )
        for sig in (0.0, 1.0)
    }  # fmt: skip
    # the exact cosine loss barely ranks structures by distance (measured ρ ≈ −0.2: the rough landscape); the
    # 1°-smoothed metric does (measured ρ ≈ 0.49, seed 0, n = 40): the reason for the annealed metric
    assert corr[1.0]["spearman"] > 0.3 and corr[1.0]["spearman"] > corr[0.0]["spearman"] + 0.3
    assert corr[1.0]["mutual_information"] > 0
    corr = corr[1.0]
    xl.plot_correlation(tmp_path / "c.png", {"cosine": corr})
    for f in ("s1.png", "s2.png", "c.png"):
        assert (tmp_path / f).stat().st_size > 1000


def test_mutual_information_estimator():
    from fitting.xrd_landscape import mutual_information

    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    # identical variables: log2(8 bins) = 3 bits; independent: ≈ 0 (bias ≈ (8-1)²/(2 n ln2) ≈ 0.009 bits)
    assert abs(mutual_information(x, x) - 3.0) < 1e-9
    assert mutual_information(x, rng.normal(size=4000)) < 0.03


@pytest.mark.parametrize("text", ["", "1,2\n"])
def test_too_short_pattern(tmp_path, text):
    from dmd.base.errors import UserInputError
    from dmd.cli.commands.xrd_refine import read_pattern_csv

    f = tmp_path / "p.csv"
    f.write_text(text)
    with pytest.raises(UserInputError, match="at least 16"):
        read_pattern_csv(str(f))
