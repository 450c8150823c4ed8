"""Write a :class:`dmd.crystal.Crystal` as a P1 PDB file plus a JSON summary, atomically (dmd.base.io).

The PDB has CRYST1 of the supercell with space group ``P 1`` (OpenMM's PDBFile turns it into reduced box vectors,
mdtraj into unit-cell lengths and angles), one TER per chain, chain ids distinct per copy (the first character of
:func:`dmd.crystal.chain_label`, so neighbouring chains always differ), and atom / residue numbers that switch to
hexadecimal past 99999 / 9999 the way OpenMM writes and reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmd.base.errors import UserInputError
from dmd.base.io import atomic_path, write_json
from dmd.crystal.builder import Crystal, orthogonalization_matrix

__all__ = ["write_pdb", "write_crystal", "crystal_summary", "solvent_fraction", "summary_path"]


def _format_index(index: int, places: int) -> str:
    """Decimal while it fits, then hexadecimal offset as in OpenMM's PDB writer (and reader)."""
    if index < 10**places:
        return f"{index:{places}d}"
    return f"{(index - 10**places + 10 * 16 ** (places - 1)) % (16**places):{places}X}"


def _atom_name(name: str, element: str) -> str:
    if len(name) < 4 and len(element) == 1:
        return f" {name:<3s}"
    return f"{name:<4s}"[:4]


def cryst1_record(cell) -> str:
    """CRYST1 line (space group P 1, Z = 1) for (a, b, c, alpha, beta, gamma) in Å and degrees."""
    a, b, c, al, be, ga = cell
    return f"CRYST1{a:9.3f}{b:9.3f}{c:9.3f}{al:7.2f}{be:7.2f}{ga:7.2f} {'P 1':<11s}{1:4d}          "


def write_pdb(crystal: Crystal, path, inputs=()) -> Path:
    """Write the supercell as a PDB file at ``path`` (atomically); Å coordinates in the standard PDB frame."""
    at = crystal.atoms
    lines = [
        f"REMARK   1 P1 SUPERCELL {crystal.supercell[0]}x{crystal.supercell[1]}x{crystal.supercell[2]} OF "
        f"{crystal.spacegroup.upper()} BUILT BY DMD CRYSTAL",
        cryst1_record(crystal.supercell_cell),
    ]
    chains = at["chain"]
    serial = 1
    n = crystal.n_atoms
    for p in range(n):
        ch = str(chains[p])[:1]
        record = "HETATM" if at["het"][p] else "ATOM  "
        el = str(at["element"][p])
        x, y, z = crystal.positions[p]
        resid = int(at["resid"][p])
        res = _format_index(resid, 4) if resid >= 0 else f"{resid:4d}"
        lines.append(
            f"{record}{_format_index(serial, 5)} {_atom_name(str(at['name'][p]), el)} {str(at['resname'][p]):>3.3s} "
            f"{ch}{res}{str(at['icode'][p])[:1] or ' '}   {x:8.3f}{y:8.3f}{z:8.3f}"
            f"{float(at['occ'][p]):6.2f}{min(float(at['b'][p]), 999.99):6.2f}          {el.upper():>2s}  "
        )
        serial += 1
        if p == n - 1 or chains[p + 1] != chains[p]:
            lines.append(f"TER   {_format_index(serial, 5)}      {str(at['resname'][p]):>3.3s} {ch}{res}")
            serial += 1
    lines.append("END")
    with atomic_path(path, inputs) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return Path(path)


def solvent_fraction(crystal: Crystal, spacing: float = 0.5) -> float:
    """Fraction of the unit cell outside the molecules (gemmi's solvent mask, Refmac radii; 0..1).

    Computed on the crystal's molecules in the parent unit cell (the supercell has the same fraction); water added
    by ``--solvate`` (``op == -1``) counts as solvent.
    """
    import gemmi

    first = np.all(crystal.atoms["cell"] == 0, axis=1) & (crystal.atoms["op"] >= 0)
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*crystal.cell)
    st.spacegroup_hm = "P 1"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    res = gemmi.Residue()
    res.name = "UNK"
    orth = orthogonalization_matrix(crystal.cell)
    for f, el in zip(crystal.frac[first], crystal.atoms["element"][first], strict=True):
        atom = gemmi.Atom()
        atom.pos = gemmi.Position(*(orth @ f))
        atom.element = gemmi.Element(str(el))
        atom.name = str(el)
        res.add_atom(atom)
    chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    grid = gemmi.FloatGrid()
    grid.setup_from(st, spacing=spacing)
    gemmi.SolventMasker(gemmi.AtomicRadiiSet.Refmac).put_mask_on_float_grid(grid, st[0])
    return float(np.asarray(grid, dtype=float).mean())


def crystal_summary(crystal: Crystal, extra: dict | None = None) -> dict:
    """The OUT.json summary: copies, atoms, molecules, cells (Å, degrees), space group, solvent fraction, notes."""
    out = {
        "source": str(crystal.source),
        "kind": crystal.kind,
        "spacegroup": crystal.spacegroup,
        "operations": list(crystal.operations),
        "supercell": list(crystal.supercell),
        "cell": list(crystal.cell),
        "supercell_cell": list(crystal.supercell_cell),
        "box_vectors_angstrom": crystal.box,
        "copies": crystal.n_copies,
        "molecules": crystal.n_molecules,
        "atoms": crystal.n_atoms,
        "atoms_per_unit_cell": crystal.n_atoms // int(np.prod(crystal.supercell)),
        "special_positions": len(crystal.special_positions),
        "solvent_fraction": solvent_fraction(crystal),
        "notes": list(crystal.notes),
    }
    if extra:
        out.update(extra)
    return out


def summary_path(out) -> Path:
    """OUT.json beside OUT.pdb."""
    return Path(out).with_suffix(".json")


def check_outputs(out, inputs=(), overwrite: bool = False) -> None:
    """Refuse an output that exists (without ``overwrite``) or that is not a .pdb, before any work is done."""
    out = Path(out)
    if out.suffix.lower() != ".pdb":
        raise UserInputError(f"{out}: the supercell is written as PDB; give --out with a .pdb name, e.g. crystal.pdb")
    for p in (out, summary_path(out)):
        for inp in inputs:
            if Path(inp).exists() and Path(inp).resolve() == p.resolve():
                raise UserInputError(f"{p}: output would overwrite the input file; choose another --out path")
        if p.exists() and not overwrite:
            raise UserInputError(f"{p}: already exists; pass --overwrite to replace it, or choose another --out path")
    if not os.access(out.resolve().parent if out.resolve().parent.exists() else Path.cwd(), os.W_OK):
        raise UserInputError(f"{out}: the folder is not writable; choose another --out path")


def write_crystal(crystal: Crystal, out, inputs=(), overwrite: bool = False, extra: dict | None = None) -> dict:
    """Write OUT.pdb and OUT.json (atomically); returns the summary.

    Raises:
      UserInputError: OUT.pdb or OUT.json exists and ``overwrite`` is False, or ``out`` is not a .pdb path.
    """
    inputs = tuple(inputs) or (crystal.source,)
    check_outputs(out, inputs, overwrite)
    summary = crystal_summary(crystal, extra)
    write_pdb(crystal, out, inputs)
    write_json(summary_path(out), summary, inputs)
    return summary
