"""The fd-2 filter of the CLI: XLA:CPU's false alarm about tuning-only features is dropped, everything else kept."""

from __future__ import annotations

import os
import subprocess
import sys

from dmd.cli.common import compilation_cache_dir, host_cpu_id
from dmd.cli.native_stderr import filter_chunk, is_noise

# the line jaxlib 0.10 logs on every cache load on AVX-512 hosts (shortened feature lists)
NOISE = (b"E1204 11:49:49.964955    5336 cpu_aot_loader.cc:195] Loading XLA:CPU AOT result. Target machine "
         b"feature +prefer-no-gather is not  supported on the host machine. Machine type used for XLA:CPU "
         b"compilation doesn't match the machine type for execution. Compile machine features: [+avx2] vs host "
         b"machine features: [avx2]. This could lead to execution errors such as SIGILL.\n")  # fmt: skip
# a real instruction-set mismatch (a cache written on another CPU) must stay visible
REAL = NOISE.replace(b"+prefer-no-gather", b"+avx512f")


def test_only_tuning_feature_lines_are_noise():
    assert is_noise(NOISE)
    assert is_noise(NOISE.replace(b"prefer-no-gather", b"prefer-no-scatter"))
    assert not is_noise(REAL)
    assert not is_noise(b"dmd energy: --pdb x.pdb: empty file\n")


def test_filter_chunk_drops_noise_keeps_order_and_progress_bars():
    data = b"first\n" + NOISE + b"second\n" + REAL + b"\rfit:  10%|#   | 1/10"
    out, pending = filter_chunk(data)
    assert out == b"first\nsecond\n" + REAL + b"\rfit:  10%|#   | 1/10"  # the bar's \r update is not held back
    assert pending == b""


def test_filter_chunk_holds_an_unfinished_log_line_until_its_newline():
    out, pending = filter_chunk(b"ok\n" + NOISE[:100])
    assert out == b"ok\n" and pending == NOISE[:100]
    out, pending = filter_chunk(pending + NOISE[100:])
    assert out == b"" and pending == b""
    out, pending = filter_chunk(b"Epoch 3 of 10")  # not an absl line: written at once
    assert out == b"Epoch 3 of 10" and pending == b""
    out, pending = filter_chunk(b"E1204 11:49", final=True)  # end of stream: nothing is held
    assert out == b"E1204 11:49" and pending == b""


SCRIPT = """
import os, sys
from dmd.cli.native_stderr import native_stderr_filtered
noise, real = sys.stdin.buffer.read().split(b"|||")
with native_stderr_filtered(keep_all=sys.argv[1] == "all"):
    os.write(2, b"native before\\n")
    os.write(2, noise)
    print("python line", file=sys.stderr, flush=True)
    os.write(2, real)
print("after", file=sys.stderr, flush=True)
"""


def _run_filtered(mode: str) -> str:
    # a fresh process whose fd 2 is a real pipe (pytest's capture replaces sys.stderr, so the filter would stand aside)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], input=NOISE + b"|||" + REAL, capture_output=True,
                          env=env, timeout=60, check=True)  # fmt: skip
    return proc.stderr.decode()


def test_fd2_filter_in_a_process():
    err = _run_filtered("default")
    assert err.startswith("native before\npython line\n") and err.endswith("after\n")
    assert "+prefer-no-gather" not in err and "+avx512f" in err
    assert "+prefer-no-gather" in _run_filtered("all")  # -vv shows everything


def test_compilation_cache_is_per_kind_of_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu = host_cpu_id()
    assert cpu == host_cpu_id() and len(cpu.split("-")[-1]) == 12
    assert compilation_cache_dir() == os.path.join(str(tmp_path), "dmd", "jax", cpu)


TTY_SCRIPT = """
import os, sys
from dmd.base.progress import progress_bar
from dmd.cli.native_stderr import native_stderr_filtered
with native_stderr_filtered():
    bar = progress_bar(10)
    print(bar.ncols, os.environ.get("COLUMNS"), os.environ.get("LINES"), os.isatty(2), flush=True)
    bar.close()
print(os.environ.get("COLUMNS"), os.environ.get("LINES"), flush=True)
"""


def test_progress_bars_keep_the_terminal_width_through_the_filter():
    # fd 2 of a fresh process is a pseudo-terminal of 132 x 41 characters; inside the filter fd 2 is a pipe, so
    # without the size published in the environment tqdm sees no width (ncols None: 10-character bars)
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 132, 0, 0))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    try:
        proc = subprocess.run([sys.executable, "-c", TTY_SCRIPT], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=slave, env=env, timeout=60, check=True)  # fmt: skip
    finally:
        os.close(slave)
        os.close(master)
    inside, after = proc.stdout.decode().splitlines()
    assert inside.split() == ["131", "132", "41", "False"]  # tqdm's width on a 132-column terminal is 131
    assert after.split() == ["None", "None"]  # the environment is restored on leaving


ORDER_SCRIPT = """
import sys
from dmd.cli.common import say, stdout_for_summary_only
from dmd.cli.native_stderr import native_stderr_filtered
with native_stderr_filtered(), stdout_for_summary_only():
    for i in range(20000):  # a progress bar's refreshes: ~1 MB through the filter's pipe, the last ones in flight
        sys.stderr.write(f"\\rsearching: {i} batch [00:01, 1.04 s/batch, best M 19866.8]")
    sys.stderr.write("\\n")
    say("TABLE")
"""


def test_the_summary_follows_the_last_progress_refresh_on_a_shared_stream():
    # `dmd index 2>&1 | cat`: stdout is written at once, stderr passes through the filter's pipe and thread, so the
    # results table landed before the bar's last refreshes (2 of 3 runs); say() now waits for the pipe to drain
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _ in range(3):  # the race went the wrong way in every run of this script without the drain (3 of 3)
        proc = subprocess.run([sys.executable, "-c", ORDER_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, timeout=60, check=True)  # fmt: skip
        out = proc.stdout.decode()
        assert out.endswith("searching: 19999 batch [00:01, 1.04 s/batch, best M 19866.8]\nTABLE\n"), out[-300:]
        assert "dmd-drain" not in out and "\0" not in out  # the drain's marker never reaches the screen
