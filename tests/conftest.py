"""Test setup shared by the whole suite.

* Four host CPU devices are forced *before* jax is imported, so sharding tests
  can run on CI's CPU-only machine (docs/conventions.md, "Parallelism").
* float64 is enabled for the test process through this setup (never toggled
  inside a test): derivative checks need it. Tests of float32 paths pass
  explicit ``dtype=jnp.float32`` arrays, which x64 mode leaves alone.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

# one example cell (a, b, c Å; α, β, γ degrees) per crystal family, none of them special beyond its family's rules
_FAMILY_CELLS = {
    "triclinic": [7.1, 8.3, 9.7, 78.0, 85.0, 101.0],
    "monoclinic": [12.2, 6.4, 9.9, 90.0, 104.3, 90.0],
    "orthorhombic": [40.1, 50.2, 60.3, 90.0, 90.0, 90.0],
    "tetragonal": [33.0, 33.0, 71.0, 90.0, 90.0, 90.0],
    "hexagonal": [45.0, 45.0, 120.0, 90.0, 90.0, 120.0],
    "rhombohedral": [10.0, 10.0, 10.0, 72.0, 72.0, 72.0],
    "cubic": [5.43, 5.43, 5.43, 90.0, 90.0, 90.0],
}


@pytest.fixture(scope="session")
def family_cells():
    """``{family: [a, b, c, α, β, γ]}``: one example cell per crystal family (Å, degrees)."""
    return dict(_FAMILY_CELLS)


@pytest.fixture(params=list(_FAMILY_CELLS))
def family(request):
    """Each crystal family in turn (the keys of ``family_cells``): a test taking it runs once per family."""
    return request.param


@pytest.fixture
def rigid_waters():
    """``make(n, d_oh, d_hh, seed)`` → ``[n, 3, 3]`` nm rigid (O, H1, H2) triangles with random orientations and
    centres (centres ~ N(0, 1) nm)."""
    import numpy as np

    def make(n, d_oh, d_hh, seed):
        rng = np.random.default_rng(seed)
        h = np.sqrt(d_oh**2 - (d_hh / 2) ** 2)
        tmpl = np.array([[0.0, 0.0, 0.0], [d_hh / 2, -h, 0.0], [-d_hh / 2, -h, 0.0]])
        q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
        return np.einsum("nij,aj->nai", q, tmpl) + rng.normal(size=(n, 1, 3))

    return make


@pytest.fixture
def jax_compiles():
    """``with jax_compiles() as records:`` collects the log records of every JAX compilation inside the block
    (``jax.log_compiles``), so a test can assert that a second call with new values but the same shapes compiled
    nothing (``"Compiling" in r.getMessage()``)."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def record():
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = logging.getLogger("jax")
        with jax.log_compiles():
            logger.addHandler(handler)
            try:
                yield records
            finally:
                logger.removeHandler(handler)

    return record


@pytest.fixture
def launch():
    """``launch(cmds, timeout=300, **env)`` starts every command of ``cmds`` (argv lists) at once as a subprocess
    on CPU JAX with this checkout on PYTHONPATH and without the suite's forced host devices (``env`` adds
    variables, e.g. ``XLA_FLAGS``), waits for all (``timeout`` s each) and returns ``(return codes, outputs)``,
    each output the process's stdout and stderr together. Multi-process tests (jax.distributed) share it."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(cmds, timeout=300, **extra):
        env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
        env.pop("XLA_FLAGS", None)
        env.update(extra)
        procs = [
            subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds
        ]
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
        return [p.returncode for p in procs], outs

    return run


@pytest.fixture
def distributed_flags():
    """``distributed_flags(i, port)``: the CLI options that make a command process ``i`` of 2 under
    jax.distributed, coordinated on ``localhost:port`` (:func:`dmd.distributed.free_local_port`)."""

    def flags(i, port):
        return ["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)]

    return flags
