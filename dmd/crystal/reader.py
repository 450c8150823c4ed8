"""Read the asymmetric unit of a crystal (PDB, mmCIF or small-molecule CIF) through gemmi.

The result is an :class:`AsymmetricUnit`: per-atom records (numpy arrays), fractional coordinates, the unit cell
and the space group. Errors name the file and the fix (:class:`dmd.base.errors.UserInputError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmd.base.errors import UserInputError

__all__ = ["AsymmetricUnit", "read_asymmetric_unit", "is_placeholder_cell", "find_spacegroup"]

#: a CRYST1 of 1 x 1 x 1 Å (NMR, cryo-EM and models) means "no crystal", not a 1 Å box
PLACEHOLDER_TOL_A = 1e-3


@dataclass
class AsymmetricUnit:
    """The atoms the symmetry operations act on.

    Attributes:
      path: the file read.
      kind: ``"macromolecular"`` (PDB/mmCIF: molecules are whole as deposited) or ``"small"`` (small-molecule CIF:
        molecules are found from covalent bonds across symmetry mates).
      frac: (N, 3) fractional coordinates.
      cell: (a, b, c, alpha, beta, gamma) in Å and degrees.
      spacegroup: the gemmi ``SpaceGroup``.
      atoms: per-atom arrays of length N: ``name``, ``resname``, ``resid`` (int), ``icode``, ``chain``, ``element``
        (symbol, capitalised as in the periodic table), ``het`` (bool), ``occ``, ``b``.
      notes: human-readable notes (placeholder cells, alternative conformations removed, ...).
    """

    path: str
    kind: str
    frac: np.ndarray
    cell: tuple
    spacegroup: object
    atoms: dict
    notes: list = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        return int(self.frac.shape[0])


def is_placeholder_cell(cell) -> bool:
    """True for the 1 x 1 x 1 Å, 90° CRYST1 that NMR / cryo-EM entries carry instead of a crystal cell.

    Args:
      cell: a gemmi ``UnitCell`` or (a, b, c, alpha, beta, gamma) in Å and degrees.
    """
    par = (cell.a, cell.b, cell.c) if hasattr(cell, "a") else tuple(cell[:3])
    return all(abs(x - 1.0) < PLACEHOLDER_TOL_A for x in par)


def find_spacegroup(symbol: str, path: str, what: str = "space group"):
    """gemmi ``SpaceGroup`` for a Hermann-Mauguin symbol, Hall symbol or number; UserInputError naming ``path``."""
    import gemmi

    sym = str(symbol).strip()
    sg = None
    if sym:
        try:
            sg = gemmi.SpaceGroup(int(sym)) if sym.isdigit() else gemmi.find_spacegroup_by_name(sym)
            if sg is None and "_" in sym:  # CIF style 'P2_1/c'
                sg = gemmi.find_spacegroup_by_name(sym.replace("_", ""))
        except (ValueError, RuntimeError):
            sg = None
        if sg is None:
            try:
                sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(sym))
            except (ValueError, RuntimeError):
                sg = None
    if sg is None:
        raise UserInputError(
            f"{path}: unknown {what} symbol {sym!r}; give a Hermann-Mauguin symbol such as 'P 21 21 21', "
            "'P 1 21 1', 'C 2', 'P 31 2 1' or the International Tables number with --spacegroup"
        )
    return sg


def _cell_tuple(cell) -> tuple:
    return (cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)


def _is_small_molecule_cif(path: Path) -> bool:
    if path.suffix.lower() not in (".cif", ".mmcif") and not path.name.lower().endswith(".cif.gz"):
        return False
    import gemmi

    try:
        block = gemmi.cif.read(str(path)).sole_block()
    except (RuntimeError, ValueError):
        return False
    return len(block.find_values("_atom_site.Cartn_x")) == 0 and len(block.find_values("_atom_site_fract_x")) > 0


def _has_cell_record(path: Path) -> bool:
    """Whether the file states a cell at all (gemmi reports a missing one as the 1 Å default)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", errors="replace") as fh:
        text = fh.read()
    return "CRYST1" in text or "_cell.length_a" in text or "_cell_length_a" in text


def _check_cell(path, cell, has_cell: bool):
    if not has_cell or not (cell.a > 0 and cell.b > 0 and cell.c > 0 and cell.volume > 0):
        raise UserInputError(
            f"{path}: no unit cell (no CRYST1 record / _cell.length_a); a crystal needs its cell and space group: "
            "use the crystal structure as deposited (with CRYST1, or _cell and _symmetry in a CIF)"
        )
    if is_placeholder_cell(cell):
        raise UserInputError(
            f"{path}: the CRYST1 record is the 1 x 1 x 1 Å placeholder of NMR, cryo-EM and model entries, treated "
            "as no box: the file has no crystal cell, so no crystal can be built; use a crystal structure (a "
            "diffraction entry with its cell and space group)"
        )


def _check_compatible(path, cell, sg):
    if not cell.is_compatible_with_spacegroup(sg, 1e-3):
        raise UserInputError(
            f"{path}: the cell ({cell.a:g}, {cell.b:g}, {cell.c:g} Å, {cell.alpha:g}, {cell.beta:g}, {cell.gamma:g}°) "
            f"does not fit the {sg.crystal_system_str()} space group {sg.hm}; check the cell or pass the right "
            "--spacegroup"
        )


def _spacegroup_of(path, file_symbol, override):
    if override:
        return find_spacegroup(override, path, "--spacegroup")
    if not str(file_symbol or "").strip():
        raise UserInputError(
            f"{path}: no space group in the file (CRYST1 columns 56-66 / _symmetry.space_group_name_H-M are empty); "
            "give it with --spacegroup, e.g. --spacegroup 'P 21 21 21'"
        )
    return find_spacegroup(file_symbol, path)


def _gemmi_read(read, path: Path, what: str, fix: str):
    """``read(str(path))`` with gemmi's errors turned into a UserInputError naming the file, ``what`` and ``fix``."""
    try:
        return read(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise UserInputError(f"{path}: cannot read {what} ({exc}); {fix}") from None


def _read_macromolecular(path: Path, spacegroup):
    import gemmi

    st = _gemmi_read(gemmi.read_structure, path, "the structure", "give a PDB or mmCIF file")
    notes = []
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise UserInputError(f"{path}: no atoms in the first model; give a structure with coordinates")
    if len(st) > 1:
        notes.append(f"{len(st)} models in the file: the first is used")
    cell = st.cell
    _check_cell(path, cell, _has_cell_record(path))
    sg = _spacegroup_of(path, st.spacegroup_hm, spacegroup)
    _check_compatible(path, cell, sg)
    n_before = st[0].count_atom_sites()
    st.remove_alternative_conformations()
    n_after = st[0].count_atom_sites()
    if n_after < n_before:
        notes.append(f"alternative conformations removed: {n_before - n_after} atoms (the first conformer is kept)")
    rows = {k: [] for k in ("name", "resname", "resid", "icode", "chain", "element", "het", "occ", "b", "pos")}
    for chain in st[0]:
        for res in chain:
            for at in res:
                rows["name"].append(at.name)
                rows["resname"].append(res.name)
                rows["resid"].append(res.seqid.num)
                rows["icode"].append(res.seqid.icode.strip())
                rows["chain"].append(chain.name)
                rows["element"].append(at.element.name)
                rows["het"].append(res.het_flag == "H")
                rows["occ"].append(at.occ)
                rows["b"].append(at.b_iso)
                rows["pos"].append(at.pos.tolist())
    pos = np.asarray(rows.pop("pos"), dtype=np.float64)
    frac_mat = np.asarray(cell.frac.mat.tolist())
    frac = pos @ frac_mat.T + np.asarray(cell.frac.vec.tolist())
    atoms = {k: np.asarray(v) for k, v in rows.items()}
    return AsymmetricUnit(str(path), "macromolecular", frac, _cell_tuple(cell), sg, atoms, notes)


def _read_small(path: Path, spacegroup):
    import gemmi

    small = _gemmi_read(gemmi.read_small_structure, path, "the small-molecule CIF", "check the file")
    notes = []
    if len(small.sites) == 0:
        raise UserInputError(f"{path}: no atom sites (_atom_site_fract_x) in the CIF; give a CIF with coordinates")
    _check_cell(path, small.cell, _has_cell_record(path))
    symbol = small.spacegroup_hm or small.spacegroup_hall
    if spacegroup:
        sg = find_spacegroup(spacegroup, path, "--spacegroup")
    elif symbol:
        sg = find_spacegroup(symbol, path)
    else:
        sg = _spacegroup_of(path, "", None)
    _check_compatible(path, small.cell, sg)
    sites = list(small.sites)
    frac = np.asarray([[s.fract.x, s.fract.y, s.fract.z] for s in sites], dtype=np.float64)
    n = len(sites)
    atoms = {
        "name": np.asarray([s.label[:4] for s in sites]),
        "resname": np.asarray(["MOL"] * n),
        "resid": np.ones(n, dtype=int),
        "icode": np.asarray([""] * n),
        "chain": np.asarray(["A"] * n),
        "element": np.asarray([s.element.name for s in sites]),
        "het": np.ones(n, dtype=bool),
        "occ": np.asarray([s.occ for s in sites], dtype=float),
        "b": np.asarray([s.u_iso * 8 * np.pi**2 for s in sites], dtype=float),
    }
    return AsymmetricUnit(str(path), "small", frac, _cell_tuple(small.cell), sg, atoms, notes)


def read_asymmetric_unit(path, spacegroup: str | None = None) -> AsymmetricUnit:
    """Read the asymmetric unit, its cell and its space group from ``path``.

    Args:
      path: PDB (.pdb/.ent), mmCIF (.cif/.mmcif, with ``_atom_site.Cartn_x``) or small-molecule CIF
        (``_atom_site_fract_x``), optionally gzipped.
      spacegroup: symbol or number that overrides the file's space group.

    Raises:
      UserInputError: missing file, no cell, placeholder 1 Å cell, no or unknown space group, a cell that does not
        fit the space group.
    """
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{path}: no such file; give the path of a PDB, mmCIF or small-molecule CIF")
    if _is_small_molecule_cif(p):
        return _read_small(p, spacegroup)
    return _read_macromolecular(p, spacegroup)
