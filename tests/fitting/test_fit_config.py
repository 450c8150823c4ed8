"""The dmd fit config reader (fitting.fit_config): a key whose value is not a number is refused with the key, the
file and the fix named, not an internal ValueError."""

import shutil
from pathlib import Path

import pytest
import yaml

from dmd.base.errors import UserInputError
from fitting.fit_config import load_fit_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fit" / "lj_rdf.yaml"


def _config(tmp_path, edit):
    for f in ("target_rdf.csv", "target_rdf_low.csv"):
        shutil.copy(EXAMPLE.parent / f, tmp_path / f)
    raw = yaml.safe_load(EXAMPLE.read_text())
    edit(raw)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


@pytest.mark.parametrize(
    "key, edit",
    [
        ("loss_guard", lambda raw: raw.update(loss_guard="abc")),
        ("optimizer.learning_rate", lambda raw: raw["optimizer"].update(learning_rate="abc")),
        ("optimizer.max_step", lambda raw: raw["optimizer"].update(max_step="big")),
        ("average_last", lambda raw: raw.update(average_last=2.5)),
        ("simulation.steps", lambda raw: raw["simulation"].update(steps="many")),
        ("simulation.dt", lambda raw: raw["simulation"].update(dt=[0.02])),
        ("weight", lambda raw: raw["targets"][0].update(weight="heavy")),
        ("start_scan.step", lambda raw: raw.update(start_scan={"points": 5, "step": "x"})),
    ],
)
def test_non_numeric_value_names_the_key_and_the_file(tmp_path, key, edit):
    path = _config(tmp_path, edit)
    with pytest.raises(UserInputError) as exc:
        load_fit_config(path)
    msg = str(exc.value)
    assert str(path) in msg and f"{key}: " in msg and "not a" in msg and "ValueError" not in msg


def test_numbers_as_strings_are_read(tmp_path):
    path = _config(tmp_path, lambda raw: raw.update(loss_guard="3", rounds="4"))
    cfg = load_fit_config(path)[3]
    assert cfg.loss_guard == 3.0 and cfg.rounds == 4


def test_a_bad_loss_surface_is_refused_at_load_naming_the_file(tmp_path):
    # lj_rdf.yaml fits 2 parameters: the loss parabola is for one; and a factor must exceed 1
    path = _config(tmp_path, lambda raw: raw.update(loss_surface=3))
    with pytest.raises(UserInputError, match=f"{path}: loss_surface: the loss parabola is for one fitted parameter"):
        load_fit_config(path)
    path = _config(tmp_path, lambda raw: (raw.update(loss_surface=0.5), raw.update(parameters=raw["parameters"][:1])))
    with pytest.raises(UserInputError, match=f"{path}: loss_surface 0.5: give a factor > 1"):
        load_fit_config(path)
