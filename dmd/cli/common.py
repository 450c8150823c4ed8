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
