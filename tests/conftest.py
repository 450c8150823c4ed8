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

jax.config.update("jax_enable_x64", True)
