"""``dmd energy``: potential energy of a structure with OpenMM force fields, per force.

Potential energy of a structure (kJ/mol), total and per OpenMM force, computed by dmd's JAX engine, in float64 by
default (parity with OpenMM's Reference platform to ~1e-13 relative; --fp32 for float32).

    dmd energy --pdb villin.pdb --forcefield amber14-all.xml amber14/tip3pfb.xml --nonbonded PME --json
    {"total_kj_mol": -114898.11, "terms": {"HarmonicBondForce": 542.27, "NonbondedForce": -118598.59, ...}, ...}

Energies in kJ/mol at the file's positions (the table to 0.001 kJ/mol, --json at full precision); term names
are OpenMM's force names.
"""

from __future__ import annotations

import argparse

from dmd.cli.common import add_forcefield_argument

__all__ = ["HELP", "add_arguments", "check", "run"]


HELP = "potential energy (kJ/mol) of a PDB/mmCIF with OpenMM force fields, per force"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd energy`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("--pdb", required=True, help="structure file (.pdb, .cif/.mmcif); CRYST1 gives the periodic box")
    add_forcefield_argument(p)
    p.add_argument(
        "--nonbonded",
        choices=["PME", "NoCutoff", "CutoffPeriodic"],
        default=None,
        help="nonbonded method (default: PME if the file has a box, else NoCutoff)",
    )
    p.add_argument("--cutoff", type=float, default=1.0, help="nonbonded cutoff in nm (default 1.0)")
    p.add_argument(
        "--fp32",
        dest="default_x64",
        action="store_false",
        help="evaluate in float32 (default: float64, which agrees with OpenMM's Reference platform to ~1e-13)",
    )


def check(args) -> None:
    """Refuse a bad --cutoff or an empty / atom-less --pdb before jax is imported."""
    import math

    from dmd.base.errors import UserInputError
    from dmd.cli.common import check_input

    if not (args.cutoff > 0 and math.isfinite(args.cutoff)):
        raise UserInputError(f"--cutoff {args.cutoff}: must be a positive number of nm, e.g. --cutoff 1.0")
    check_input(args.pdb, "--pdb", "structure")


def run(args) -> int:
    import math

    import jax

    from dmd.base.errors import UserInputError
    from dmd.cli.common import emit
    from dmd.openmm_system import system_from_pdb

    method = args.nonbonded
    if method is None:
        from dmd.openmm_system import read_structure

        method = "PME" if read_structure(args.pdb).topology.getPeriodicBoxVectors() is not None else "NoCutoff"
    # one evaluation: XLA kernels, whose programs JAX's persistent cache stores (a program with numba's host
    # callback is compiled again in every process and would not repay numba's speed here)
    system = system_from_pdb(
        args.pdb, args.forcefield, nonbonded=method, cutoff=args.cutoff, pair_kernel="xla", rebuild_kernel="xla"
    )
    nbrs = system.allocate_neighbors()
    terms = jax.jit(lambda p, x, nb: system.terms_fn(p, x, box=system.box, neighbor=nb))(
        system.params, system.positions, nbrs
    )
    terms = {k: float(v) for k, v in terms.items()}
    total = float(sum(terms.values()))
    if not math.isfinite(total):
        raise UserInputError(f"{args.pdb}: the energy is not finite (overlapping atoms?); check the coordinates")
    dtype = str(jax.numpy.asarray(system.positions).dtype)
    width = max(len(k) for k in terms) if terms else 5
    lines = [f"{k:<{width}}  {v:14.3f} kJ/mol" for k, v in terms.items()]
    lines.append(f"{'total':<{width}}  {total:14.3f} kJ/mol  ({method}, {dtype})")
    summary = {"total_kj_mol": total, "terms": terms, "nonbonded": method, "dtype": dtype, "pdb": args.pdb}
    emit(args, summary, "\n".join(lines))
    return 0
