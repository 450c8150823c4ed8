"""dmd.skin: the closed-form skin s* is the minimum of the cost model, found independently by a dense grid search."""

import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.skin import displacement_rate, optimal_skin, skin_cost


@pytest.mark.parametrize(
    "rate, ratio",
    [
        (0.02, 10.6),  # villin + water before issue 20's cheap rebuild: 0.2 nm lasted 10 steps, rebuild 10.6 pairs
        (0.02, 3.0),  # a cheaper rebuild: a tighter skin
        (0.005, 30.0),
        (0.1, 1.0),
    ],
)
def test_optimal_skin_is_the_minimum_of_the_cost_model(rate, ratio):
    rc = 0.9
    s = np.linspace(0.001, 1.0, 200_001)  # 5e-6 nm spacing
    grid = s[np.argmin(skin_cost(s, rc, rate, ratio))]
    best = optimal_skin(rc, rate, ratio, lo=0.0)
    assert abs(best - grid) < 1e-5  # two grid spacings: the closed form is the grid's minimum
    assert skin_cost(best, rc, rate, ratio) <= skin_cost(grid, rc, rate, ratio) + 1e-12


def test_skin_widens_with_rebuild_cost_and_speed_and_keeps_bounds():
    rc = 0.9
    assert optimal_skin(rc, 0.02, 3.0) < optimal_skin(rc, 0.02, 10.0) < optimal_skin(rc, 0.04, 10.0)
    assert optimal_skin(rc, 0.0, 10.0) == 0.02  # atoms at rest: the lower bound
    assert optimal_skin(rc, 1.0, 100.0, hi=0.3) == 0.3
    # 5 rebuilds in 50 steps at 0.2 nm: the sum of the two largest displacements grows 0.02 nm per step
    assert displacement_rate(0.2, 5, 50) == pytest.approx(0.02, rel=1e-12)
    with pytest.raises(UserInputError):
        displacement_rate(0.2, 1, 0)


def test_simulate_auto_skin_picks_the_rules_skin_from_the_first_chunk():
    import jax.numpy as jnp

    from dmd import models
    from dmd.simulate import RunConfig, simulate
    from dmd.skin import REBUILD_OVER_PAIR, chosen_skin

    sigma = models.ARGON["sigma"]
    # a tight skin (0.15 σ, ~0.05 nm) on argon at 120 K, 10 fs steps: rebuilt every few steps, so the rule widens it
    lj = models.lj_fluid(128, cutoff=2.2 * sigma, skin=0.15 * sigma, dtype=jnp.float32, seed=4)
    kw = dict(dt=0.01, temperature=119.8, integrator="baoab", report_every=50, chunk_steps=100, progress=False)
    probe = simulate(lj, RunConfig(steps=100, **kw)).summary  # the auto run's first chunk, same seed and skin
    n = probe["neighbor_rebuilds"]
    rate = displacement_rate(0.15 * sigma, n, 100)
    want = optimal_skin(2.2 * sigma, rate, REBUILD_OVER_PAIR, hi=lj.box[0] / 2 - 2.2 * sigma)
    assert want == pytest.approx(chosen_skin(lj, n, 100), rel=1e-12)
    assert abs(want - 0.15 * sigma) > 0.1 * 0.15 * sigma  # the rule moves this skin: the test sees the switch
    run = simulate(lj, RunConfig(steps=300, skin="auto", **kw))
    # float32 box edge in the bound: agreement to 1e-6 relative
    assert run.summary["neighbor_skin_nm"] == pytest.approx(want, rel=1e-6)
    assert np.all(np.isfinite(run.log)) and run.summary["final_step"] == 300
    # an explicit skin is honoured
    fixed = simulate(lj, RunConfig(steps=100, skin=0.2 * sigma, **kw))
    assert fixed.summary["neighbor_skin_nm"] == pytest.approx(0.2 * sigma, rel=1e-12)


def test_rebuild_cost_ratio_is_per_backend_and_a_gpu_gets_a_tighter_skin():
    from dmd.skin import REBUILD_OVER_PAIR, backend_rebuild_over_pair

    # the CPU keeps its measured 3.1; a GPU (H200 probe: rebuild ~1.1 pair evaluations) gets its own, smaller ρ;
    # a backend never measured falls back to the CPU's
    assert backend_rebuild_over_pair("cpu") == REBUILD_OVER_PAIR
    assert backend_rebuild_over_pair("gpu") == pytest.approx(1.1)
    assert backend_rebuild_over_pair("tpu") == REBUILD_OVER_PAIR
    import jax

    assert backend_rebuild_over_pair() == backend_rebuild_over_pair(jax.default_backend())
    # villin + water's measured rate (0.022 nm/step at r_c 0.9 nm): the cheap GPU rebuild tightens the skin by a third,
    # s* = (√((ρv)² + 3ρv r_c) − ρv)/3: 0.122 nm at ρ = 3.1, 0.078 nm at ρ = 1.1 (ratio 0.635)
    cpu = optimal_skin(0.9, 0.022, backend_rebuild_over_pair("cpu"))
    gpu = optimal_skin(0.9, 0.022, backend_rebuild_over_pair("gpu"))
    assert gpu / cpu == pytest.approx(0.635, abs=0.01)


def test_auto_skin_run_again_on_the_same_system_compiles_nothing(jax_compiles):
    # an "auto" run switches to a remade system after its first chunk; each call used to remake it, so a script
    # calling simulate(skin="auto") again on the same system traced and compiled its chunk and start again.
    # dmd.skin.skinned_like hands back the earlier switch's system (skin within the 10% kept anyway).
    import jax.numpy as jnp

    from dmd import models
    from dmd.simulate import RunConfig, simulate

    sigma = models.ARGON["sigma"]
    lj = models.lj_fluid(128, cutoff=2.2 * sigma, skin=0.15 * sigma, dtype=jnp.float32, seed=4)
    kw = dict(dt=0.01, temperature=119.8, integrator="baoab", report_every=50, chunk_steps=100, progress=False)
    first = simulate(lj, RunConfig(steps=300, skin="auto", **kw))
    assert abs(first.summary["neighbor_skin_nm"] - 0.15 * sigma) > 0.1 * 0.15 * sigma  # the switch happened
    with jax_compiles() as records:
        again = simulate(lj, RunConfig(steps=300, skin="auto", seed=7, **kw))
    compiled = [r.getMessage() for r in records if "Compiling" in r.getMessage()]
    assert not compiled, compiled
    assert again.summary["neighbor_skin_nm"] == first.summary["neighbor_skin_nm"]
    assert again.summary["final_step"] == 300 and np.all(np.isfinite(again.log))
