"""Conventions shared by every ``dmd`` command: signals, logging levels, ``--json``, output-path checks.

Exit codes (documented in ``dmd --help``): 0 success; 2 bad usage or input; 3 no result (e.g. nothing
indexed); 4 the simulation diverged; 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_OK, EXIT_USAGE, EXIT_NO_RESULT, EXIT_DIVERGED = 0, 2, 3, 4
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM


@contextlib.contextmanager
def stop_on_signals():
    """Within the block SIGINT/SIGTERM only *request* a stop: yields ``stop() -> signal number or 0``.

    A run loop polls ``stop()`` between chunks and saves its state before leaving (see
    :class:`dmd.simulate.RunConfig` ``stop``). A second signal while a stop is pending interrupts at once
    (KeyboardInterrupt). Outside the main thread signals cannot be caught: ``stop`` then always says 0.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[0] if received else 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def compilation_cache_dir() -> str:
    """The user cache directory for compiled XLA programs: ``$XDG_CACHE_HOME/dmd/jax`` (default
    ``~/.cache/dmd/jax``)."""
    import os

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "dmd", "jax")


def setup_compilation_cache(enabled: bool = True, path: str | None = None) -> str | None:
    """Turn JAX's persistent compilation cache on (or off), so that a second run of the same system skips
    the XLA compilations of the first (``dmd energy`` / ``dmd simulate`` start-up; ``--no-cache`` turns it off).

    On: the directory is ``path``, else a ``JAX_COMPILATION_CACHE_DIR`` set by the user, else
    :func:`compilation_cache_dir`; every program is stored, even small ones (the ~20 small compilations
    of ``dmd simulate`` cost ~1 s uncached). It sets the environment that jax reads at import, so it acts
    only before jax is imported (a fresh ``dmd`` process); in a process that already imported jax (``main()``
    called from Python, tests) it changes nothing, leaving that process's jax config alone. Returns the
    directory, or None when the cache is off, the directory cannot be created, or jax was already imported.
    """
    import os
    import sys

    if "jax" in sys.modules:
        return None
    if enabled:
        path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or compilation_cache_dir()
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            enabled, path = False, None
    settings = {"jax_enable_compilation_cache": enabled}
    if enabled:
        settings.update(jax_compilation_cache_dir=path, jax_persistent_cache_min_compile_time_secs=0)
    for name, value in settings.items():
        os.environ[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return path
