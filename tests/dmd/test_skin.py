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
