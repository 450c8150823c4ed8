"""The ``dmd`` command line.

Each sub-command lives in its own module under :mod:`dmd.cli.commands` and exposes
``register(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int``.
Heavy imports (jax, openmm, gemmi) happen inside ``run`` so that ``dmd --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dmd.base.errors import RunInterrupted, SimulationDiverged, UserInputError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmd",
        description="Differentiable molecular dynamics and crystallographic analysis in JAX.",
    )
    parser.add_argument("--x64", action="store_true", help="run in float64 (jax_enable_x64)")
    no_cache = "do not read or write the compiled-program cache (default: $XDG_CACHE_HOME/dmd/jax)"
    parser.add_argument("--no-cache", action="store_true", help=no_cache)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"dmd.cli.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dmd.cli.commands.{module_name}":
                continue  # command not built yet in this checkout
            raise
        p = module.register(sub)
        p.add_argument("--no-cache", action="store_true", default=argparse.SUPPRESS, help=no_cache)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from dmd.cli.common import setup_compilation_cache

    setup_compilation_cache(enabled=not args.no_cache)
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    try:
        return int(args._run(args) or 0)
    except UserInputError as exc:  # a clear message, no traceback
        print(f"dmd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except SimulationDiverged as exc:  # one line, exit 1
        print(
            f"dmd {args.command}: error: {str(exc).splitlines()[0] if str(exc) else 'simulation diverged'}",
            file=sys.stderr,
        )
        return 1
    except RunInterrupted as exc:
        print(f"dmd {args.command}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"dmd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
