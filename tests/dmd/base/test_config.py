"""dmd.base.config: YAML/JSON config files read with errors that name the file and the fix."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dmd.base.config import check_keys, group_knobs, load_config, name_list, number, set_groups
from dmd.base.errors import UserInputError


def test_yaml_and_json_mappings_load(tmp_path):
    (tmp_path / "c.yaml").write_text("steps: 200\ndt: 0.002\nforcefield: [amber14-all.xml, tip3p.xml]\n")
    assert load_config(tmp_path / "c.yaml") == {
        "steps": 200,
        "dt": 0.002,
        "forcefield": ["amber14-all.xml", "tip3p.xml"],
    }
    (tmp_path / "c.json").write_text(json.dumps({"rounds": 3, "out": None}))
    assert load_config(tmp_path / "c.json") == {"rounds": 3, "out": None}  # JSON is a YAML subset
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == {}


def test_bad_files_are_refused_naming_the_file_and_the_fix(tmp_path):
    with pytest.raises(UserInputError, match="fit file not found; check the path"):
        load_config(tmp_path / "missing.yaml", what="fit")
    (tmp_path / "bad.yaml").write_text("steps: [1, 2\n")
    with pytest.raises(UserInputError, match="(?s)bad.yaml: not valid YAML .*fix the syntax"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserInputError, match="must be a mapping of keys to values, got list"):
        load_config(tmp_path / "list.yaml")


def test_unknown_keys_and_empty_name_lists_are_refused():
    check_keys({"steps": 1}, {"steps", "dt"}, where="c.yaml")  # known keys pass
    with pytest.raises(UserInputError, match=r"c.yaml: unknown key\(s\) \['stpes'\]; valid keys: \['dt', 'steps'\]"):
        check_keys({"stpes": 1}, {"steps", "dt"}, where="c.yaml")
    assert name_list("amber14-all.xml", if_empty="x") == ["amber14-all.xml"]  # one name is not split into letters
    assert name_list(("a.xml", "b.xml"), if_empty="x") == ["a.xml", "b.xml"]
    with pytest.raises(UserInputError, match="give at least one --forcefield"):
        name_list([], if_empty="give at least one --forcefield")


@dataclasses.dataclass(frozen=True)
class _Step:
    size: float = 0.1
    clip: float = 10.0


@dataclasses.dataclass(frozen=True, init=False)
class _Grouped:
    step: _Step

    def __init__(self, step=None, **knobs):
        set_groups(self, {"step": (step, _Step)}, knobs)


def test_set_groups_takes_groups_and_flat_knobs():
    # exact values: a flat knob overrides only its own field of the given (or default) group
    assert _Grouped().step == _Step()
    assert _Grouped(clip=2.0).step == _Step(0.1, 2.0)
    assert _Grouped(step=_Step(size=0.5), clip=2.0).step == _Step(0.5, 2.0)
    assert group_knobs(_Grouped(size=0.5), ["step"]) == {"size": 0.5, "clip": 10.0}
    with pytest.raises(TypeError, match="_Grouped: unknown knob"):
        _Grouped(sise=0.5)


def test_number_names_key_and_file_and_refuses_non_numbers():
    assert number("0.5", "loss_guard", "f.yaml") == 0.5 and number(4.0, "rounds", "f.yaml", int) == 4
    assert number(None, "decay_after", "f.yaml", int) is None
    for value, kind in (("abc", float), (True, float), (float("nan"), float), (2.5, int), ([1], float)):
        with pytest.raises(UserInputError, match=r"f\.yaml: key: .* is not a (whole )?number; write"):
            number(value, "key", "f.yaml", kind)
