"""The closing summary's warning on a run far hotter than its thermostat (dmd.cli.commands.simulate)."""

import pytest

from dmd.cli.commands.simulate import temperature_warning


@pytest.mark.parametrize(
    "mean_k, target_k, minimized, expect",
    [
        (2766.0, 300.0, False, "--minimize"),  # the bundled solvated dipeptide, 10 unminimised steps
        (2766.0, 300.0, True, "--dt"),  # hot even after minimising: the time step or constraints
        (171.8, 300.0, True, None),  # the same 10 steps after --minimize: below the target, no warning
        (330.0, 300.0, False, None),  # a sound run's spread
        (150.0, 50.0, False, None),  # 3x a cold target but only 100 K over it: a small system's noise at 50 K
        (float("nan"), 300.0, False, None),  # a diverged run reports elsewhere
        (500.0, 0.0, False, None),  # no thermostat target to compare with
    ],
)
def test_warns_only_when_far_above_the_target(mean_k, target_k, minimized, expect):
    line = temperature_warning(mean_k, target_k, minimized)
    if expect is None:
        assert line is None
    else:
        assert line.startswith("warning: ⟨T⟩ 2766 K is 9.2× the 300 K target") and expect in line
