"""Start-up guards (issue 20, item 5): the engine's import path does not pull in jax_md's model zoo
(flax, e3nn, nequip, sympy: ~7 s), and the ``dmd`` command caches compiled programs unless ``--no-cache``.

Each check runs a fresh interpreter, since both concern what happens at process start.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALA = ROOT / "dmd" / "data" / "alanine_dipeptide.pdb"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def test_engine_import_path_skips_jax_md_models():
    code = (
        "import sys, dmd, dmd.openmm_system, dmd.integrators, dmd.simulate, dmd.forces.neighbors;"
        "print([m for m in sys.modules if m.split('.')[0] in ('jax_md', 'flax', 'e3nn_jax', 'sympy')])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_import_dmd_is_light():
    code = "import sys, dmd; print(sorted(m for m in ('jax', 'openmm', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("no_cache", [False, True])
def test_cli_compilation_cache(tmp_path, no_cache):
    """``dmd energy`` stores its compiled energy function under $XDG_CACHE_HOME/dmd/jax/CPU; --no-cache stores
    nothing."""
    flags = ["--no-cache"] if no_cache else []
    cmd = [
        sys.executable,
        "-m",
        "dmd",
        "energy",
        *flags,
        "--pdb",
        str(ALA),
        "--forcefield",
        "amber14-all.xml",
        "--json",
    ]
    out = subprocess.run(cmd, env=_env(XDG_CACHE_HOME=str(tmp_path)), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # OpenMM Reference, same file and force field: -32.3318 kJ/mol (float32 here; 2e-3 kJ/mol is ~6e-5 relative)
    assert json.loads(out.stdout)["total_kj_mol"] == pytest.approx(-32.3318, abs=2e-3)
    cache = tmp_path / "dmd" / "jax"
    # one folder per kind of CPU (dmd.cli.common.host_cpu_id): nodes sharing a home never load another CPU's programs
    stored = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []
    if no_cache:
        assert stored == []
    else:
        from dmd.cli.common import host_cpu_id

        assert any(name.startswith(f"{host_cpu_id()}/jit_") for name in stored), stored
