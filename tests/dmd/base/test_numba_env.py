"""numba's cache directory and OpenMP wait policy are set before dmd imports numba (dmd.base.numba_env)."""

import os
import subprocess
import sys

CODE = "import os, dmd.forces.numba_kernels, numba; print(numba.config.CACHE_DIR, os.environ['OMP_WAIT_POLICY'])"


def _run(env):
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout


def test_numba_caches_in_the_user_cache_dir_and_user_settings_win(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "OMP_WAIT_POLICY")}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    # numba's default ("" = beside the source, inside site-packages) would leave files that pip uninstall keeps
    assert _run(env).split() == [str(tmp_path / "dmd" / "numba"), "PASSIVE"]
    env.update(NUMBA_CACHE_DIR=str(tmp_path / "mine"), OMP_WAIT_POLICY="ACTIVE")
    assert _run(env).split() == [str(tmp_path / "mine"), "ACTIVE"]
