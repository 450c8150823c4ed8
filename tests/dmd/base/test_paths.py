"""dmd.base.paths: the per-user cache directory."""

import os

from dmd.base.paths import user_cache_dir


def test_user_cache_dir_follows_xdg_and_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir("numba") == os.path.join(str(tmp_path), "dmd", "numba")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir("jax", "x") == os.path.join(str(tmp_path / "home"), ".cache", "dmd", "jax", "x")
