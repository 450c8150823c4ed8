"""``rounds: 0`` (a fit measured by its start scan alone, as the peptide example) passes the CLI's number checks;
without a start scan it is refused, by the CLI and by :func:`fitting.forcefield.fit`, before any work."""

from pathlib import Path

import pytest

from dmd.base.errors import UserInputError
from dmd.cli.commands.fit import check_config_numbers

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "fit_diffraction" / "peptide_diffuse.yaml"


def test_the_peptide_example_with_rounds_0_passes_the_cli_checks():
    assert "rounds: 0" in EXAMPLE.read_text()  # the example this guards (the README's dmd fit command)
    check_config_numbers(EXAMPLE)  # raised "rounds: 0 must be > 0" before: the example could not run from the CLI


def test_rounds_0_without_a_start_scan_is_refused(tmp_path):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("rounds: 0\nsimulation: {steps: 10}\n")
    with pytest.raises(UserInputError, match="rounds: 0 must be > 0"):
        check_config_numbers(cfg)


def test_fit_refuses_rounds_0_without_a_start_scan():
    from fitting.forcefield import fit
    from fitting.forcefield_config import FitConfig

    with pytest.raises(UserInputError, match="rounds: 0 with a start_scan"):
        fit(None, None, [], FitConfig(rounds=0, progress=False))
