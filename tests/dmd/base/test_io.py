"""The atomic-write contract of dmd.base.io, tested directly: a writer that fails leaves the earlier file as it was
and no temporary file behind; a writer that succeeds replaces the file whole, with a plain file's permissions; an
output that is one of the run's inputs is refused before anything is written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dmd.base.errors import UserInputError
from dmd.base.io import atomic_path, savez, to_jsonable, write_json


def test_failed_write_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "result.csv"
    out.write_text("earlier result\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(out) as tmp:
            assert tmp.parent == out.parent and tmp != out  # written beside the destination: rename is atomic
            tmp.write_text("half a res")
            raise RuntimeError("interrupted")
    assert out.read_text() == "earlier result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.csv"]  # the temporary was removed


def test_successful_write_replaces_the_file_with_plain_permissions(tmp_path):
    out = tmp_path / "sub" / "result.json"  # the folder is made
    write_json(out, {"a": np.arange(3), "nan": float("nan"), "inf": float("inf")})
    assert json.loads(out.read_text()) == {"a": [0, 1, 2], "nan": None, "inf": "inf"}
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp makes 0600 files; the output gets what open() would give (0666 & ~umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    savez(out.with_suffix(".npz"), x=np.ones(4))
    assert np.load(out.with_suffix(".npz"))["x"].tolist() == [1.0] * 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.json", "result.npz"]


def test_output_that_is_an_input_is_refused_before_writing(tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, x=np.arange(5))
    before = data.read_bytes()
    with pytest.raises(UserInputError, match="overwrite an input"):
        savez(tmp_path / "." / "data.npz", inputs=[data], x=np.zeros(1))  # the same file by another spelling
    assert data.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]


def test_to_jsonable_matches_what_write_json_writes(tmp_path):
    obj = {1: (np.float32(0.5), tmp_path), "x": [float("-inf")]}
    write_json(tmp_path / "o.json", obj)
    assert (
        json.loads((tmp_path / "o.json").read_text())
        == to_jsonable(obj)
        == {
            "1": [0.5, str(tmp_path)],
            "x": ["-inf"],
        }
    )
