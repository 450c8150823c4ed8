"""``dmd crystal``: the P1 supercell of a crystal from a PDB / mmCIF / small-molecule CIF (docs/crystals.md).

Build the P1 supercell of a crystal: every symmetry mate from the space group's operations (gemmi), each molecule
whole with its centre in the unit cell, translated over A x B x C unit cells. Writes OUT.pdb (CRYST1 of the
supercell, space group P 1) and OUT.json (summary).

    dmd crystal 5e5z.pdb --supercell 2 2 1 --out crystal.pdb
    dmd crystal 5e5z.pdb --supercell 2 2 1 --add-hydrogens --solvate --out crystal.pdb --overwrite

Writes OUT.pdb (CRYST1 of the supercell, space group P 1, chain ids distinct per copy) and OUT.json (copies, atoms,
cells, solvent fraction, notes). Nothing is written when the input is refused.
"""

from __future__ import annotations

import argparse

from dmd.cli.common import add_forcefield_argument, add_overwrite_argument

__all__ = ["HELP", "add_arguments", "run"]


HELP = "build the P1 supercell of a crystal (every symmetry mate, molecules whole) from PDB/mmCIF/CIF"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd crystal`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("structure", help="PDB, mmCIF or small-molecule CIF with a cell and a space group")
    p.add_argument(
        "--supercell", nargs=3, type=int, default=[1, 1, 1], metavar=("A", "B", "C"), help="unit cells along a, b, c"
    )
    p.add_argument("--out", required=True, help="output PDB path (OUT.json is written beside it)")
    p.add_argument("--spacegroup", default=None, help="override the file's space group, e.g. 'P 1 21 1' or 4")
    p.add_argument("--add-hydrogens", action="store_true", help="add hydrogens (OpenMM Modeller, --forcefield, --ph)")
    p.add_argument(
        "--solvate",
        action="store_true",
        help="fill the solvent region of the periodic cell with water at the density of --water-model; the "
        "crystal's molecules stay where they are",
    )
    add_forcefield_argument(p, " for --add-hydrogens / --solvate")
    p.add_argument("--water-model", default="tip3p", help="water model for --solvate (OpenMM name, default tip3p)")
    p.add_argument("--ph", type=float, default=7.0, help="pH for --add-hydrogens (default 7.0)")
    p.add_argument(
        "--min-distance",
        type=float,
        default=1.0,
        help="Å: symmetry images closer than this overlap and are refused (default 1.0); images of one water, ion "
        "or ligand atom within 0.5 Å are a special position and kept once",
    )
    add_overwrite_argument(p, "OUT.pdb / OUT.json")


def run(args) -> int:
    import time
    from pathlib import Path

    from dmd.base.errors import UserInputError
    from dmd.cli.common import check_input, check_outputs, emit, info

    if not args.min_distance > 0:
        raise UserInputError(f"--min-distance {args.min_distance}: must be a positive number of Å, e.g. 1.0")
    if min(args.supercell) < 1:
        raise UserInputError(f"--supercell {' '.join(map(str, args.supercell))}: give three positive integers")
    if Path(args.out).suffix.lower() != ".pdb":
        raise UserInputError(f"--out {args.out}: the supercell is written as PDB; give a .pdb name, e.g. crystal.pdb")
    check_input(args.structure, "", "structure")
    json_path = Path(args.out).with_suffix(".json")
    check_outputs(args.out, inputs=[args.structure], overwrite=args.overwrite, writes=[json_path])  # before any work

    from dmd.crystal import build_crystal, read_asymmetric_unit
    from dmd.crystal.writer import write_crystal

    t0 = time.perf_counter()
    asu = read_asymmetric_unit(args.structure, args.spacegroup)
    extra = {}
    if args.add_hydrogens:
        from dmd.crystal.modeller import add_hydrogens

        asu, n_h = add_hydrogens(asu, args.forcefield, ph=args.ph)
        extra["hydrogens_added_per_asymmetric_unit"] = n_h
    crystal = build_crystal(asu, tuple(args.supercell), min_distance=args.min_distance)
    if args.solvate:
        from dmd.crystal.modeller import solvate

        crystal, n_w = solvate(crystal, args.forcefield, water_model=args.water_model)
        extra["waters_added"] = n_w
        extra["water_model"] = args.water_model
    extra["build_seconds"] = round(time.perf_counter() - t0, 3)
    summary = write_crystal(crystal, args.out, (args.structure,), args.overwrite, extra)
    text = (
        f"{args.out}: {summary['atoms']} atoms, {summary['copies']} copies ({len(crystal.operations)} operations of "
        f"{crystal.spacegroup} x {'x'.join(map(str, crystal.supercell))} cells), {summary['molecules']} molecules, "
        f"solvent fraction {summary['solvent_fraction']:.3f}"
    )
    for note in summary["notes"]:
        info(f"note: {note}")
    emit(args, summary, text)
    return 0
