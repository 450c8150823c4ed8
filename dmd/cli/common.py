"""Conventions shared by every ``dmd`` command: signals, logging levels, ``--json``, output-path checks.

Exit codes (documented in ``dmd --help``): 0 success; 2 bad usage or input; 3 no result (e.g. nothing
indexed); 4 the simulation diverged; 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings

EXIT_OK, EXIT_USAGE, EXIT_NO_RESULT, EXIT_DIVERGED = 0, 2, 3, 4
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM


class _Stop:
    """The stop callable :func:`stop_on_signals` yields: ``stop()`` gives the signal number received, or 0.

    With an early-exit message it also holds a watchdog thread woken by the C-level signal handler (through
    :func:`signal.set_wakeup_fd`): Python runs its own handlers only between bytecodes, so a signal that arrives
    while XLA compiles the first chunk (seconds, in C++) would wait for the compilation. Until the run calls
    :meth:`begin_writes` nothing has been written, so the watchdog prints the message and exits at once."""

    def __init__(self, received: list[int], exit_message: str | None):
        self.received = received
        self.exit_message = exit_message
        self.lock = threading.Lock()
        self.armed = exit_message is not None

    def __call__(self) -> int:
        return self.received[0] if self.received else 0

    def begin_writes(self) -> None:
        """The run is about to write its first frames: from here a signal only requests a stop."""
        with self.lock:
            self.armed = False

    def watch(self, fd: int) -> None:
        """The watchdog's loop: read signal numbers from the wake-up pipe ``fd`` until it is closed."""
        import os
        import sys

        while True:
            try:
                data = os.read(fd, 64)
            except OSError:
                return
            if not data:
                os.close(fd)
                return
            signum = data[0]
            if signum not in (signal.SIGINT, signal.SIGTERM):
                continue
            with self.lock:  # held while exiting, so begin_writes cannot let a write start meanwhile
                if self.armed:
                    from dmd.cli.native_stderr import drain

                    with contextlib.suppress(Exception):
                        sys.stderr.flush()
                        os.write(2, (self.exit_message + "\n").encode())  # the descriptor: no Python buffer between
                        drain()  # fd 2 may be the native-stderr filter's pipe: its pump forwards the line first
                    os._exit(128 + signum)


@contextlib.contextmanager
def stop_on_signals(exit_before_writes: str | None = None):
    """Within the block SIGINT/SIGTERM only *request* a stop: yields ``stop() -> signal number or 0``.

    A run loop polls ``stop()`` between chunks and saves its state before leaving (see
    :class:`dmd.simulate.RunConfig` ``stop``). A second signal while a stop is pending interrupts at once
    (KeyboardInterrupt). Outside the main thread signals cannot be caught: ``stop`` then always says 0.

    ``exit_before_writes``: a message (naming the command) for a signal that arrives before the run calls
    ``stop.begin_writes()`` (:func:`dmd.runloop.begin_writes`): the process prints it and exits with 128 + signal
    at once, even inside a compilation, since nothing has been written (``dmd simulate``: Ctrl-C during the first
    chunk's compilation took as long as the compilation, 5.9 s once for alanine dipeptide + water).
    """
    import os

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    stop = _Stop(received, exit_before_writes)
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    pipe = old_fd = None
    if exit_before_writes is not None:
        pipe = os.pipe()
        os.set_blocking(pipe[1], False)  # set_wakeup_fd needs a non-blocking descriptor
        old_fd = signal.set_wakeup_fd(pipe[1], warn_on_full_buffer=False)
        threading.Thread(target=stop.watch, args=(pipe[0],), daemon=True, name="dmd-signal-watchdog").start()
    try:
        yield stop
    finally:
        if pipe is not None:
            stop.begin_writes()
            signal.set_wakeup_fd(old_fd)
            os.close(pipe[1])  # the watchdog reads end-of-file, closes its end and returns
        for s, h in old.items():
            signal.signal(s, h)


def compilation_cache_dir() -> str:
    """The user cache directory for compiled XLA programs: ``$XDG_CACHE_HOME/dmd/jax/CPU`` (default
    ``~/.cache/dmd/jax/CPU``), where CPU names the processor model and its instruction-set flags
    (:func:`host_cpu_id`): a home directory shared by the nodes of a cluster holds one cache per kind of CPU,
    so a node never loads a program compiled for instructions it lacks (JAX's cache key does not include them)."""
    from dmd.base.paths import user_cache_dir

    return user_cache_dir("jax", host_cpu_id())


def host_cpu_id() -> str:
    """A short, stable name for this machine's kind of CPU: ``ARCH-HASH`` from the first processor's model name
    and flags in ``/proc/cpuinfo`` (``platform`` fields where there is none)."""
    import hashlib
    import platform

    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough: the others are the same kind
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    text = "|".join((fields.get("model name", platform.processor()), fields.get("flags", platform.platform())))
    return f"{platform.machine() or 'cpu'}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


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


# ---------------------------------------------------------------------------------------------------------------
# Input files and output paths, checked before any heavy import or work (one line each, exit code 2).

_STRUCTURE_EXTS = {".pdb": "ATOM/HETATM records", ".ent": "ATOM/HETATM records", ".cif": "_atom_site records",
                   ".mmcif": "_atom_site records"}  # fmt: skip


def check_input(path, flag: str = "", what: str = "file") -> None:
    """Refuse an input that is missing, a folder, empty, or (PDB / CIF) without a single atom record.

    Args:
      path: the file; None is skipped (an optional input not given).
      flag: the option that named it (``"--pdb"``), or ``""`` for a positional argument.
      what: a word for the message (``"structure"``, ``"trajectory"``, ``"MTZ"``).

    Raises:
      UserInputError: ``"--pdb x.pdb: empty file; pass a structure with ATOM/HETATM records"``.
    """
    import os

    from dmd.base.errors import UserInputError

    if path is None:
        return
    name = f"{flag} {path}" if flag else str(path)
    if not os.path.exists(path):
        raise UserInputError(f"{name}: no such file; pass an existing {what} (check the path)")
    if os.path.isdir(path):
        raise UserInputError(f"{name} is a folder; pass a {what} file")
    ext = os.path.splitext(str(path))[1].lower()
    records = _STRUCTURE_EXTS.get(ext)
    if os.path.getsize(path) == 0:
        raise UserInputError(f"{name}: empty file; pass a {what}" + (f" with {records}" if records else ""))
    if records is None:
        return
    with open(path, errors="replace") as fh:
        text = fh.read()
    if not text.strip():
        raise UserInputError(f"{name}: empty file; pass a {what} with {records}")
    if ext in (".pdb", ".ent"):
        found = any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines())
    else:
        found = "_atom_site" in text
    if not found:
        raise UserInputError(f"{name}: no {records} (no atoms); pass a {what} with atoms")


def check_outputs(out, *, inputs=(), overwrite: bool = False, folder: bool = False, writes=(),
                  flag: str = "--out", resume_hint: bool = False) -> None:  # fmt: skip
    """Refuse, before any work, an output path that would fail late or destroy something.

    Args:
      out: the path given to ``flag``.
      inputs: the run's input files (never overwritten).
      overwrite: the user passed ``--overwrite``: existing outputs may be replaced.
      folder: ``out`` is a folder that the command fills with the names in ``writes``; else ``out`` is a file
        and ``writes`` are the other files written beside it (full paths).
      flag: the option that named ``out``, for the message.
      resume_hint: the command also takes ``--resume`` (the message offers it).

    Raises:
      UserInputError: a parent of ``out`` is a file; ``out`` is a file where a folder is needed or a folder where
        a file is needed; an output is an input file; an output exists and ``overwrite`` is false; the folder is
        not writable. The message names the path and the fix.
    """
    import os
    from pathlib import Path

    from dmd.base.errors import UserInputError

    out = Path(out)
    fix = f"pass another {flag}"
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserInputError(f"{flag} {out}: {parent} is a file, not a folder; {fix}")
    if folder and out.exists() and not out.is_dir():
        raise UserInputError(f"{flag} {out} is a file, not a folder; {fix}")
    if not folder and out.is_dir():
        raise UserInputError(f"{flag} {out} is a folder; pass a file path{_example_in(out, writes)}")
    products = [out / w for w in writes] if folder else [out, *map(Path, writes)]
    given = [Path(i) for i in inputs if i is not None]
    for p in products:
        for i in given:
            if p.exists() and i.exists() and p.resolve() == i.resolve():
                raise UserInputError(f"{flag} {out}: would overwrite the input file {i}; {fix}")
    existing = [p for p in products if p.exists()]
    if existing and not overwrite:
        how = "--resume to continue it, " if resume_hint else ""
        raise UserInputError(f"{existing[0]} exists (an earlier result); pass {how}--overwrite to replace it, or {fix}")
    nearest = next((p for p in [out, *out.parents] if p.exists()), Path.cwd())
    if not os.access(nearest if nearest.is_dir() else nearest.parent, os.W_OK):
        raise UserInputError(f"{flag} {out}: {nearest} is not writable; {fix}")


def _example_in(folder, writes) -> str:
    from pathlib import Path

    names = [Path(w).name for w in writes]
    return f" such as {Path(folder) / names[0]}" if names else ""


def add_trajectory_arguments(parser) -> None:
    """``--traj``, ``--top``, ``--supercell``: a crystal trajectory as ``dmd diffuse`` and ``dmd reweight`` read it."""
    parser.add_argument("--traj", required=True, help="trajectory file mdtraj reads (dcd, xtc, trr, h5, nc, pdb)")
    parser.add_argument("--top", default=None, help="topology (pdb, prmtop, psf, ...) for trajectories without one")
    parser.add_argument(
        "--supercell",
        type=int,
        nargs=3,
        default=(1, 1, 1),
        metavar=("A", "B", "C"),
        help="the trajectory box holds A×B×C crystal unit cells (a P1 supercell); default 1 1 1",
    )


def add_forcefield_argument(parser, used_for: str = "") -> None:
    """``--forcefield F [F ...]``: OpenMM force-field XML names or paths (default :data:`DEFAULT_FORCEFIELD`);
    ``used_for`` ends the help, e.g. ``" for --add-hydrogens / --solvate"``."""
    from dmd.base.defaults import DEFAULT_FORCEFIELD

    parser.add_argument(
        "--forcefield",
        nargs="+",
        default=list(DEFAULT_FORCEFIELD),
        metavar="F",
        help=f"OpenMM force-field XML names or paths{used_for} (default: {' '.join(DEFAULT_FORCEFIELD)})",
    )


def add_overwrite_argument(parser, what: str = "the outputs", **kwargs) -> None:
    """``--overwrite``: replace earlier outputs (without it an existing output is refused, exit code 2); ``kwargs``
    go to ``add_argument`` (e.g. ``default=argparse.SUPPRESS`` for a command whose YAML config may set it)."""
    help_ = f"replace {what} if they exist (default: refuse)"
    parser.add_argument("--overwrite", action="store_true", help=help_, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Output conventions: the summary on stdout (text, or one JSON object with --json), everything else on stderr;
# -q silences progress bars and info lines, -v / -vv show more; third-party chatter is off in normal mode.

_STATE = {"verbosity": 0}
_PLAIN_FORMATWARNING = warnings.formatwarning
THIRD_PARTY = ("jax", "jaxlib", "absl", "openmm", "mdtraj", "matplotlib", "h5py", "tables", "PIL", "numexpr", "numba")
# numba's DEBUG records are its compiler's trace (11,700 lines for the engine's kernels on a first run, with the
# tracebacks of lowering attempts it recovers from): never shown, not even at -vv (NUMBA_DEBUG_* give them)
COMPILER_TRACES = ("numba",)


def verbosity() -> int:
    """-1 quiet (``-q``), 0 normal, 1 ``-v``, 2 ``-vv``."""
    return _STATE["verbosity"]


def setup_output(verbosity_level: int) -> None:
    """One setup of logging, warnings and progress bars for a ``dmd`` command.

    Levels: -1 (``-q``) errors only, no progress bars, no info lines; 0 our warnings, info lines and bars, and
    third-party libraries (jax, absl/XLA, OpenMM, mdtraj, ...) silenced below ERROR; 1 (``-v``) our INFO log
    records and third-party warnings; 2 (``-vv``) DEBUG everywhere. Log records go to stderr as
    ``dmd: LEVEL logger: message``. XLA's C++ logging is set through ``TF_CPP_MIN_LOG_LEVEL`` (acts before
    jax is imported).
    """
    import logging
    import os

    from dmd.base.progress import set_progress

    level = max(-1, min(2, int(verbosity_level)))
    _STATE["verbosity"] = level
    set_progress(level >= 0)
    ours = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[level]
    theirs = {-1: logging.ERROR, 0: logging.ERROR, 1: logging.WARNING, 2: logging.DEBUG}[level]
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_dmd", False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler()  # stderr, resolved at each record (pytest capture, redirects)
    handler._dmd = True
    handler.setFormatter(logging.Formatter("dmd: %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(ours)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(theirs, logging.INFO) if name in COMPILER_TRACES else theirs)
    if level < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if level == 1 else "3")  # XLA/absl C++ INFO lines
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if level < 1:
        pattern = r"(" + "|".join(THIRD_PARTY) + r")(\..*)?$"
        warnings.filterwarnings("ignore", module=pattern)
    if level < 0:
        warnings.filterwarnings("ignore")
    warnings.formatwarning = _format_warning if level < 2 else _PLAIN_FORMATWARNING


@contextlib.contextmanager
def output_settings(verbosity_level: int):
    """:func:`setup_output` for the duration of a block, then everything it changed put back: the root logger's
    level and handlers, third-party logger levels, warning filters and format, progress bars and the verbosity.
    ``dmd.cli.main`` runs each command inside it, so in-process callers (tests, notebooks) keep their settings."""
    import logging

    from dmd.base.progress import progress_enabled, set_progress

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in THIRD_PARTY},
             warnings.filters[:], warnings.formatwarning, progress_enabled(), _STATE["verbosity"])  # fmt: skip
    try:
        setup_output(verbosity_level)
        yield
    finally:
        level, handlers, theirs, filters, formatwarning, bars, verbosity_saved = saved
        root.setLevel(level)
        root.handlers[:] = handlers
        for name, lvl in theirs.items():
            logging.getLogger(name).setLevel(lvl)
        warnings.filters[:] = filters
        warnings.formatwarning = formatwarning
        set_progress(bars)
        _STATE["verbosity"] = verbosity_saved


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line ``dmd: warning: MESSAGE`` (``-vv`` keeps Python's form with file, line and source)."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    return f"dmd: warning: {first}\n"


def info(message: str) -> None:
    """A status line for the user (stderr), not part of the summary: shown unless ``-q``."""
    import sys

    if _STATE["verbosity"] >= 0:
        print(message, file=sys.stderr, flush=True)


def emit(args, summary: dict, text: str) -> None:
    """The command's closing summary on stdout: ``text`` for a human, or with ``--json`` ``summary`` as one JSON
    object (the same figures, full precision, arrays as lists) on one line."""
    import json

    from dmd.base.io import to_jsonable

    if getattr(args, "json", False):
        say(json.dumps(to_jsonable(summary)))
    elif text:
        say(text)


def say(text: str) -> None:
    """A line of the summary on stdout (inside :func:`stdout_for_summary_only` the one real stdout), after what was
    written to stderr before it (a progress bar's last refresh) has reached the screen."""
    import sys

    from dmd.cli.native_stderr import drain

    drain()
    print(text, file=_STATE.get("stdout") or sys.stdout, flush=True)


@contextlib.contextmanager
def stdout_for_summary_only():
    """Within the block ``print`` (a library's status line included) goes to stderr; only :func:`say` and
    :func:`emit` write to stdout, so that stdout is the summary (or the ``--json`` object) and nothing else."""
    import sys

    out = sys.stdout
    _STATE["stdout"] = out
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = out
        _STATE["stdout"] = None


@contextlib.contextmanager
def c_stdout_to_stderr(shown: bool = False):
    """Within the block, output that C libraries write to file descriptor 1 (mdtraj's VMD ``dcdplugin)`` lines on
    every DCD read, OpenMM plugin notes) goes to stderr when ``shown`` and nowhere otherwise, while Python's
    ``print`` still writes to the real stdout: stdout holds only the summary (or the ``--json`` object).

    Acts only when ``sys.stdout`` is the process's fd 1 (a terminal, pipe or file); under a Python-level capture
    (pytest's capsys, a StringIO) it changes nothing.
    """
    import os
    import sys

    from dmd.cli.native_stderr import flush_c_stdio

    try:
        real = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    sink = os.dup(2) if shown else os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)
    os.close(sink)
    old = sys.stdout
    sys.stdout = open(saved, "w", buffering=1, encoding=old.encoding, errors=old.errors, closefd=False)  # noqa: SIM115
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = old
        flush_c_stdio()  # C's own stdout buffer still holds chatter meant for the sink
        os.dup2(saved, 1)
        os.close(saved)
