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
