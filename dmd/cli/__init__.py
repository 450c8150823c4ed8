"""The ``dmd`` command line.

Each sub-command lives in its own module under :mod:`dmd.cli.commands` and exposes
``HELP`` (its line in ``dmd -h``; the module docstring is its ``dmd NAME -h`` description),
``add_arguments(parser)`` and ``run(args) -> int``, and optionally ``check(args)``:
cheap checks of arguments and files, run before jax is imported (and before the float64 context of a command
that defaults to it).
Heavy imports (jax, openmm, gemmi) happen inside ``run`` so that ``dmd --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dmd.base.errors import NoResult, RunInterrupted, SimulationDiverged, UserInputError
from dmd.base.progress import close_all

__all__ = ["main", "build_parser", "output_level", "COMMANDS", "EXIT_OK", "EXIT_INTERNAL", "EXIT_INPUT",
           "EXIT_NO_RESULT", "EXIT_DIVERGED"]  # fmt: skip

# Exit codes (also in ``dmd --help``): scripts can tell a bad input from a run that found nothing or diverged.
EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_NO_RESULT, EXIT_DIVERGED = 0, 1, 2, 3, 4
EPILOG = """output:
  the closing summary goes to stdout (with --json: one JSON object, the same figures at full precision);
  progress bars, info lines and errors go to stderr. -q: errors only; -v / -vv: more log records.
  Commands that write files refuse to replace earlier outputs unless given --overwrite (simulate, fit: --resume).

exit codes:
  0    success
  1    internal error (a bug: please report it with the output of --debug)
  2    bad input: arguments, files or output paths (nothing was written)
  3    no result (e.g. dmd index found no cell that indexes the lines)
  4    the simulation diverged (the last good checkpoint is named)
  130  interrupted by Ctrl-C (143: SIGTERM); a long run saves its checkpoint first (continue with --resume)
"""

# name on the command line -> module under dmd.cli.commands
COMMANDS: dict[str, str] = {
    "quickstart": "quickstart",
    "energy": "energy",
    "simulate": "simulate",
    "diffuse": "diffuse",
    "xrd": "xrd",
    "reweight": "reweight",
    "fit": "fit",
    "index": "index",
    "merge": "merge",
    "xrd-refine": "xrd_refine",
    "crystal": "crystal",
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows every option's default: ``(default: X)`` is added where the help text names none."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if not action.option_strings or action.nargs == 0 or "default" in text or d in (None, "", argparse.SUPPRESS):
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


class CommandHelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``dmd NAME -h``: the command's module docstring as written (examples keep their lines), defaults shown."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmd",
        description="Differentiable molecular dynamics and crystallographic analysis in JAX.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    import dmd

    parser.add_argument("--version", action="version", version=f"dmd {dmd.__version__}")
    parser.add_argument("--x64", action="store_true", help="run in float64 (jax_enable_x64)")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    no_cache = "do not read or write the compiled-program cache (default: $XDG_CACHE_HOME/dmd/jax)"
    parser.add_argument("--no-cache", action="store_true", help=no_cache)
    _add_output_arguments(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"dmd.cli.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dmd.cli.commands.{module_name}":
                continue  # command not built yet in this checkout
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__, formatter_class=CommandHelpFormatter)
        module.add_arguments(p)
        p.add_argument("--no-cache", action="store_true", default=argparse.SUPPRESS, help=no_cache)
        _add_output_arguments(p, argparse.SUPPRESS)
        p.set_defaults(_run=module.run, _check=getattr(module, "check", None))
    return parser


def _add_output_arguments(parser, default) -> None:
    """``-v``/``-q``/``--json`` on the main parser (real defaults) and on each command (``default`` SUPPRESS, so
    ``dmd -q energy`` and ``dmd energy -q`` both work; the ``-v`` of both places add up, see :func:`output_level`)."""
    parser.add_argument("-v", "--verbose", action="count", default=0 if default is None else default,
                        dest="verbose" if default is None else "verbose_command",
                        help="more log records on stderr (-vv: debug, third-party libraries included)")  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", default=False if default is None else default,
                        help="no progress bars or info lines: only the summary and errors")  # fmt: skip
    parser.add_argument("--json", action="store_true", default=False if default is None else default,
                        help="print the closing summary as one JSON object on stdout")  # fmt: skip


def output_level(args) -> int:
    """-1 with ``-q``, else the number of ``-v`` given before and after the command name."""
    return -1 if args.quiet else int(args.verbose) + int(getattr(args, "verbose_command", 0))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from dmd.cli.common import c_stdout_to_stderr, output_settings, setup_compilation_cache, stdout_for_summary_only
    from dmd.cli.native_stderr import native_stderr_filtered

    level = output_level(args)
    with output_settings(level):
        setup_compilation_cache(enabled=not args.no_cache)
        with (
            c_stdout_to_stderr(shown=level >= 2),
            native_stderr_filtered(keep_all=level >= 2),
            stdout_for_summary_only(),
        ):
            return _run(args)


def _run(args) -> int:
    # float64 for the whole command when --x64 is given or the command defaults to it (energy; its --fp32 opts
    # out); set through a context so that in-process callers (tests, notebooks) keep their own setting afterwards
    x64 = True if args.x64 else getattr(args, "default_x64", None)
    try:
        if args._check is not None:  # a command's cheap checks of its inputs, before jax is imported
            args._check(args)
        if x64 is not None:
            import jax

            with jax.enable_x64(x64):
                return int(args._run(args) or 0)
        return int(args._run(args) or 0)
    except Exception as exc:  # one line per error, never a traceback unless asked for
        close_all()
        if args.debug:
            raise
        code, message = _describe(exc)
        print(f"dmd {args.command}: {message}", file=sys.stderr)
        return code
    except RunInterrupted as exc:
        close_all()
        print(f"dmd {args.command}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        close_all()
        print(f"dmd {args.command}: interrupted", file=sys.stderr)
        return 130


def _describe(exc: Exception) -> tuple[int, str]:
    """(exit code, one-line message) of an error that ended a command."""
    if isinstance(exc, UserInputError):
        return EXIT_INPUT, f"error: {exc}"
    if isinstance(exc, NoResult):
        return EXIT_NO_RESULT, f"no result: {exc}"
    if isinstance(exc, SimulationDiverged):
        where = f"; last good checkpoint {exc.last_good_checkpoint}" if exc.last_good_checkpoint else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "simulation diverged"
        return EXIT_DIVERGED, f"diverged: {first}{where}"
    if isinstance(exc, (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError, FileNotFoundError)):
        # output paths that cannot be written (a folder that is a file, no permission...) and missing inputs
        path = exc.filename or ""
        fix = "choose another --out or fix the path" if not isinstance(exc, FileNotFoundError) else "check the path"
        return EXIT_INPUT, f"error: {path}: {exc.strerror or exc}; {fix}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
