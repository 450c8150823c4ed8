"""Wall-clock timing shared by the benchmark scripts (``python benchmarks/bench_*.py`` puts this folder on the path)."""

from __future__ import annotations

import time

import numpy as np


def call_times(fn, repeats: int) -> np.ndarray:
    """Seconds taken by each of ``repeats`` calls of ``fn()``, ``[repeats]`` (``fn`` must block until done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)
