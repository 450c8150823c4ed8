"""Known false alarms that compiled libraries write straight to file descriptor 2, kept off the user's screen.

jaxlib 0.10's XLA:CPU logs an ERROR line of ~3 KB every time it loads a program from the persistent compilation
cache on CPUs whose LLVM tuning attributes include ``+prefer-no-gather`` / ``+prefer-no-scatter`` (AVX-512
machines such as this project's CI hosts): "Target machine feature +prefer-no-gather is not supported on the host
machine … This could lead to execution errors such as SIGILL". Those are tuning preferences, not instruction-set
features; the program was compiled on the same machine and loads and runs correctly (the check is fixed upstream:
openxla/xla issue 44565, jax issue 38445, later XLA skips ``prefer-``/``fast-`` features). With dmd's cache on by
default every cached ``dmd`` command printed a screenful of them.

:func:`native_stderr_filtered` routes fd 2 through a pipe for the duration of a CLI command and drops exactly
those lines; everything else (Python's stderr, progress bars with their carriage returns, other native log lines,
and a real instruction-set mismatch such as ``+avx512f``) passes through unchanged and in order. ``-vv`` keeps
everything.

Inside the block fd 2 is a pipe, so nothing can ask it for the terminal's size (tqdm drew 10-character bars). When
fd 2 is a terminal on entry, :func:`terminal_size_env` publishes its size as ``COLUMNS``/``LINES`` for the duration
of the block (read by ``shutil.get_terminal_size`` and by :mod:`dmd.base.progress`, whose bars take that width when
their stream is not a terminal) and restores the environment on leaving.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

# a tuning-only feature in XLA:CPU's AOT loader check (absl format: "E1204 11:49:49.96 PID cpu_aot_loader.cc:195] ")
_NOISE = re.compile(rb"cpu_aot_loader\.cc:\d+\] Loading XLA:CPU AOT result\. Target machine feature \+(prefer|fast)-")
# written by drain() into the pipe and removed by the pump, which then signals that it forwarded everything before it
_DRAIN_MARK = b"\0dmd-drain\0"
_PUMP: dict = {}  # the running pump's "drained" semaphore, while fd 2 is the filter's pipe
# the start of an absl log line ("E" or "W" + MMDD) that may still turn out to be noise once its newline arrives
_LOG_START = re.compile(rb"[EWI]\d{0,4}$|[EWI]\d{4}[ 0-9:.]*")


def is_noise(line: bytes) -> bool:
    """True for a line :func:`native_stderr_filtered` drops (bytes, without or with its newline)."""
    return _NOISE.search(line) is not None


def filter_chunk(data: bytes, final: bool = False) -> tuple[bytes, bytes]:
    """Split ``data`` (what arrived on the pipe, after any held-back tail) into what to write now and a tail to
    hold back: an unfinished line that may still become a noise line. ``final`` (end of stream) holds nothing.

    Returns:
      (out, pending) as bytes.
    """
    lines = data.split(b"\n")
    tail = lines.pop()
    out = [line + b"\n" for line in lines if not is_noise(line)]
    if tail and (final or _LOG_START.match(tail) is None or b"\r" in tail):
        if not is_noise(tail):
            out.append(tail)
        tail = b""
    return b"".join(out), tail


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def native_stderr_filtered(keep_all: bool = False):
    """Within the block, fd 2 goes through a filter that drops :func:`is_noise` lines (see the module docstring).

    Acts only when ``sys.stderr`` is the process's fd 2 (a terminal, pipe or file) and ``keep_all`` is False;
    under a Python-level capture it changes nothing. On leaving, fd 2 is restored and everything written inside
    the block has been forwarded.
    """
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if keep_all or not real:
        yield
        return
    with terminal_size_env(2), _filtered_fd2():
        yield


@contextlib.contextmanager
def terminal_size_env(fd: int = 2):
    """Within the block, ``COLUMNS`` and ``LINES`` hold the size (characters) of the terminal on ``fd``, when ``fd``
    is a terminal now. Variables the user set are left alone; the environment is restored on leaving."""
    try:
        cols, lines = os.get_terminal_size(fd) if os.isatty(fd) else (0, 0)
    except OSError:
        cols, lines = 0, 0
    wanted = {"COLUMNS": str(cols), "LINES": str(lines)} if cols > 1 and lines > 0 else {}
    added = [name for name in wanted if name not in os.environ]
    for name in added:
        os.environ[name] = wanted[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def _filtered_fd2():
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    drained = threading.Semaphore(0)

    def pump() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                chunk = b""
            eof, marks = not chunk, chunk.count(_DRAIN_MARK)
            chunk = chunk.replace(_DRAIN_MARK, b"") if marks else chunk
            try:
                out, pending = filter_chunk(pending + chunk, final=eof)
                _write_all(saved, out)
            except Exception:  # never stop draining the pipe: a full pipe would block every writer
                _write_all(saved, pending + chunk)
                pending = b""
            for _ in range(marks):
                drained.release()
            if eof:
                break
        os.close(read_end)

    thread = threading.Thread(target=pump, name="dmd-native-stderr", daemon=True)
    thread.start()
    _PUMP["drained"] = drained
    try:
        yield
    finally:
        _PUMP.pop("drained", None)
        sys.stderr.flush()
        flush_c_stdio()
        os.dup2(saved, 2)  # closes the pipe's last write end held by this process: the pump sees end of file
        thread.join(timeout=5.0)
        if not thread.is_alive():  # a child process that still holds the pipe keeps the pump (daemon) alive
            os.close(saved)


def drain(timeout_s: float = 1.0) -> None:
    """Wait (at most ``timeout_s``) until everything written to fd 2 so far has passed the filter to the real
    stderr. Call before writing to stdout what must follow it on a shared terminal or ``2>&1`` pipe: the closing
    summary after a progress bar's last refresh (``dmd index``'s table came before it in 2 of 3 runs). Outside a
    filtered block it only flushes ``sys.stderr``."""
    sys.stderr.flush()
    drained = _PUMP.get("drained")
    if drained is None:
        return
    flush_c_stdio()
    try:
        _write_all(2, _DRAIN_MARK)  # 12 bytes, one atomic write: never split between two of the pump's reads
    except OSError:
        return
    drained.acquire(timeout=timeout_s)


def flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (output of compiled libraries not yet written to its descriptor)."""
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
