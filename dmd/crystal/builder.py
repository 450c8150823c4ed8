"""Build the P1 supercell of a crystal from its asymmetric unit and the space group's operations.

Every symmetry mate is generated in fractional coordinates with gemmi's operations (``SpaceGroup.operations()``:
rotation ``rot/DEN`` and translation ``tran/DEN``), each molecule is kept whole and placed with its centre in the
unit cell, and the unit cell is translated over A x B x C (docs/crystals.md, "Building a crystal").

* Macromolecular input (PDB / mmCIF): molecules are whole as deposited, so each symmetry copy of the asymmetric unit
  is moved as one block by the lattice vector that brings its centre into [0, 1)^3 (ligands and waters stay next to
  their protein).
* Small-molecule CIF: the asymmetric unit often holds part of a molecule, so molecules are found from covalent bonds
  (sum of covalent radii + 0.45 Å) across symmetry mates and unwrapped along the bonds; an extended (network) solid
  keeps its atoms in the cell.

A water, ion or ligand atom whose images coincide (a special position, within 0.5 Å) is kept once, with its whole
residue; any other images closer than ``min_distance`` (1 Å) are an overlap and raise :class:`UserInputError`
naming the pair and the distance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from dmd.base.errors import UserInputError
from dmd.crystal.reader import AsymmetricUnit, read_asymmetric_unit

__all__ = ["Crystal", "build_crystal", "symmetry_operations", "orthogonalization_matrix", "chain_label"]

BOND_TOLERANCE_A = 0.45
#: Å: images of one atom closer than this are one atom on a special position
SPECIAL_POSITION_A = 0.5
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass
class Crystal:
    """A P1 supercell.

    Attributes:
      positions: (M, 3) Cartesian positions in Å (standard PDB frame: a along x, b in the xy plane).
      frac: (M, 3) fractional coordinates in the *parent* cell (0 <= x < A for a molecule's centre, etc.).
      atoms: per-atom arrays of length M: ``name``, ``resname``, ``resid``, ``icode``, ``chain`` (distinct per copy),
        ``element``, ``het``, ``occ``, ``b``, ``asu_index`` (atom of the asymmetric unit), ``op`` (index into
        ``operations``), ``cell`` ((M, 3) integer unit-cell index), ``molecule`` (index over the supercell).
      cell: parent cell (a, b, c, alpha, beta, gamma), Å and degrees.
      supercell: (A, B, C).
      box: (3, 3) supercell vectors as rows, Å.
      spacegroup: Hermann-Mauguin symbol of the parent space group.
      operations: the operations as gemmi triplets ("x,y,z", "-x,y+1/2,-z", ...).
      n_copies: symmetry copies of the asymmetric unit in the supercell (operations x cells).
      n_molecules: molecules in the supercell (macromolecular: chains and non-polymer residues).
      special_positions: asymmetric-unit atoms on special positions (kept once).
      kind, source, notes: input kind, input path, human-readable notes.
    """

    positions: np.ndarray
    frac: np.ndarray
    atoms: dict
    cell: tuple
    supercell: tuple
    box: np.ndarray
    spacegroup: str
    operations: list
    n_copies: int
    n_molecules: int
    special_positions: list
    kind: str
    source: str
    notes: list = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def supercell_cell(self) -> tuple:
        a, b, c, al, be, ga = self.cell
        na, nb, nc = self.supercell
        return (a * na, b * nb, c * nc, al, be, ga)


def chain_label(i: int) -> str:
    """Distinct chain id for the i-th chain: A..Z a..z 0..9, then A1, B1, ... (PDB files keep the first character)."""
    return _ALPHABET[i % 62] + (str(i // 62) if i >= 62 else "")


def orthogonalization_matrix(cell) -> np.ndarray:
    """(3, 3) matrix O with x_cart = O @ x_frac (Å), PDB convention: a along x, b in the xy plane."""
    a, b, c, al, be, ga = cell
    al, be, ga = np.radians([al, be, ga])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz = np.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
    return np.array([[a, b * np.cos(ga), cx], [0.0, b * np.sin(ga), cy], [0.0, 0.0, cz]])


def symmetry_operations(spacegroup):
    """(rotations (K, 3, 3), translations (K, 3), triplets) of a gemmi ``SpaceGroup``, fractional, identity first."""
    ops = list(spacegroup.operations())
    rot = np.array([np.asarray(op.rot, dtype=float) / op.DEN for op in ops])
    tran = np.array([np.asarray(op.tran, dtype=float) / op.DEN for op in ops])
    return rot, tran, [op.triplet() for op in ops]


def _periodic_pairs(frac, orth, r):
    """Pairs (i, j, shift) with |orth @ (frac[j] + shift - frac[i])| < r, i < j (or shift != 0 for i == j).

    ``frac`` must lie in [0, 1); ``r`` below half the cell's shortest width. Returns (i, j, shift, d).
    """
    from scipy.spatial import cKDTree

    pos = frac @ orth.T
    tree = cKDTree(pos)
    out_i, out_j, out_s = [], [], []
    for s in itertools.product((-1, 0, 1), repeat=3):
        if s < (0, 0, 0):
            continue  # (i, j, s) is the pair (j, i, -s)
        shift = np.asarray(s, dtype=int)
        hits = tree.query_ball_point(pos + orth @ shift, r)
        lens = np.fromiter((len(h) for h in hits), dtype=int, count=len(hits))
        if lens.sum() == 0:
            continue
        j = np.repeat(np.arange(len(pos)), lens)  # the shifted atom
        i = np.concatenate([np.asarray(h, dtype=int) for h in hits if len(h)])
        keep = i < j if s == (0, 0, 0) else np.ones(len(i), dtype=bool)
        out_i.append(i[keep])
        out_j.append(j[keep])
        out_s.append(np.tile(shift, (int(keep.sum()), 1)))
    if not out_i:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3), int), np.zeros(0)
    i, j, sh = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    d = np.linalg.norm((frac[j] + sh - frac[i]) @ orth.T, axis=1)
    return i, j, sh, d


def _special_positions(frac_ops, orth, tol, allowed=None):
    """keep (K, N) bool: False where image k of atom i coincides with an earlier kept image (special position).

    ``allowed`` (N,) bool: atoms that may sit on a special position (others' coinciding images are overlaps).
    """
    k_ops, n, _ = frac_ops.shape
    keep = np.ones((k_ops, n), dtype=bool)
    allowed = np.ones(n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    for k in range(1, k_ops):
        for j in range(k):
            df = frac_ops[k] - frac_ops[j]
            df -= np.round(df)
            d = np.linalg.norm(df @ orth.T, axis=1)
            keep[k] &= ~((d < tol) & keep[j] & allowed)
    return keep


def _atom_tag(asu: AsymmetricUnit, i: int, triplet: str) -> str:
    a = asu.atoms
    res = f"{a['chain'][i]} {a['resname'][i]} {a['resid'][i]}{a['icode'][i]}".strip()
    return f"{a['name'][i]} ({res}, operation {triplet})"


def _check_overlaps(asu, frac_cell, unwrapped, asu_index, op_index, unit, orth, triplets, min_distance, bonds=()):
    """Raise UserInputError naming the closest pair of images closer than min_distance (Å).

    Pairs within one unit (a copy of the asymmetric unit, or a molecule) at their own distance, and covalent
    ``bonds`` {(i, j)}, are not overlaps.
    """
    wrapped = frac_cell - np.floor(frac_cell)
    i, j, s, d = _periodic_pairs(wrapped, orth, min_distance)
    if len(i) == 0:
        return
    same_unit = unit[i] == unit[j]
    direct = np.linalg.norm((unwrapped[j] - unwrapped[i]) @ orth.T, axis=1)
    intramolecular = same_unit & (direct < min_distance + 1e-6)
    if bonds:
        intramolecular |= np.array([(a, b) in bonds or (b, a) in bonds for a, b in zip(i, j, strict=True)])
    i, j, d = i[~intramolecular], j[~intramolecular], d[~intramolecular]
    if len(i) == 0:
        return
    k = int(np.argmin(d))
    p, q = int(i[k]), int(j[k])
    tag_p = _atom_tag(asu, asu_index[p], triplets[op_index[p]])
    tag_q = _atom_tag(asu, asu_index[q], triplets[op_index[q]])
    raise UserInputError(
        f"{asu.path}: symmetry mates overlap: atom {tag_p} and atom {tag_q} are {d[k]:.3f} Å apart "
        f"({len(i)} pair(s) closer than {min_distance:g} Å); check the space group (--spacegroup) and the cell, or "
        "remove the overlapping atoms (e.g. a disordered molecule on a symmetry axis) from the input"
    )


def _small_molecules(frac, elements, orth):
    """Unwrap molecules along covalent bonds.

    Returns (unwrapped frac (N, 3), molecule id (N,), number of network fragments, bonded pairs {(i, j), i < j}).
    """
    import gemmi

    radii = np.array([gemmi.Element(e).covalent_r for e in elements])
    rmax = 2 * radii.max() + BOND_TOLERANCE_A
    i, j, s, d = _periodic_pairs(frac, orth, rmax)
    bonded = d < radii[i] + radii[j] + BOND_TOLERANCE_A
    i, j, s = i[bonded], j[bonded], s[bonded]
    n = len(frac)
    nbrs = [[] for _ in range(n)]
    for a, b, sh in zip(i.tolist(), j.tolist(), s.tolist(), strict=True):
        nbrs[a].append((b, np.asarray(sh)))
        nbrs[b].append((a, -np.asarray(sh)))
    offset = np.zeros((n, 3), dtype=int)
    mol = -np.ones(n, dtype=int)
    network = []
    n_mol = 0
    for start in range(n):
        if mol[start] >= 0:
            continue
        mol[start] = n_mol
        stack, members, periodic = [start], [start], False
        while stack:
            a = stack.pop()
            for b, sh in nbrs[a]:
                if mol[b] < 0:
                    mol[b] = n_mol
                    offset[b] = offset[a] + sh
                    stack.append(b)
                    members.append(b)
                elif not np.array_equal(offset[b], offset[a] + sh):
                    periodic = True
        if periodic:
            network.append(members)
            offset[members] = 0
        n_mol += 1
    unwrapped = frac + offset
    for m in range(n_mol):
        sel = mol == m
        unwrapped[sel] -= np.floor(unwrapped[sel].mean(axis=0))
    # an extended (network) fragment has no molecules: each of its atoms is a residue of its own
    for members in network:
        mol[members[1:]] = n_mol + np.arange(len(members) - 1)
        n_mol += len(members) - 1
    return (
        unwrapped,
        np.unique(mol, return_inverse=True)[1],
        len(network),
        set(zip(i.tolist(), j.tolist(), strict=True)),
    )


def _unit_cell_macromolecular(asu, rot, tran, orth, triplets, min_distance):
    frac_ops = np.einsum("kab,nb->kna", rot, asu.frac) + tran[:, None, :]
    # only non-polymer atoms (waters, ions, ligands) may sit on a special position; a polymer atom on one is an overlap
    keep = _special_positions(frac_ops, orth, SPECIAL_POSITION_A, allowed=asu.atoms["het"])
    special = sorted({int(i) for i in np.nonzero(~keep)[1]})
    # molecules: a polymer chain, or one non-polymer residue, per copy
    a = asu.atoms
    keys = [
        (c,) if not h else (c, r, ic) for c, r, ic, h in zip(a["chain"], a["resid"], a["icode"], a["het"], strict=True)
    ]
    _, mol_asu = np.unique(np.array([str(k) for k in keys]), return_inverse=True)
    # a non-polymer residue (a water, an ion, a ligand) touching a special position is kept once, whole, in the
    # first copy (its hydrogens need not sit on the symmetry element)
    for k, i in zip(*np.nonzero(~keep), strict=True):
        if a["het"][i]:
            keep[k, mol_asu == mol_asu[i]] = False
    shifts = np.floor(frac_ops.mean(axis=1))  # one lattice shift per copy: its centre in [0, 1)
    frac_ops = frac_ops - shifts[:, None, :]
    k_idx, n_idx = np.nonzero(keep)
    frac = frac_ops[k_idx, n_idx]
    n_mol_asu = int(mol_asu.max()) + 1
    molecule = k_idx * n_mol_asu + mol_asu[n_idx]
    _check_overlaps(asu, frac, frac, n_idx, k_idx, k_idx, orth, triplets, min_distance)
    return frac, k_idx, n_idx, molecule, special, 0


def _unit_cell_small(asu, rot, tran, orth, triplets, min_distance):
    frac_ops = np.einsum("kab,nb->kna", rot, asu.frac) + tran[:, None, :]
    frac_ops -= np.floor(frac_ops)
    keep = _special_positions(frac_ops, orth, SPECIAL_POSITION_A)
    k_idx, n_idx = np.nonzero(keep)
    frac = frac_ops[k_idx, n_idx]
    frac -= np.floor(frac)
    unwrapped, molecule, n_network, bonds = _small_molecules(frac, asu.atoms["element"][n_idx], orth)
    _check_overlaps(asu, frac, unwrapped, n_idx, k_idx, molecule, orth, triplets, min_distance, bonds)
    order = np.lexsort((n_idx, k_idx, molecule))
    special = sorted({int(i) for i in np.nonzero(~keep)[1]})
    return unwrapped[order], k_idx[order], n_idx[order], molecule[order], special, n_network


def unique_atom_names(names, elements, residue) -> np.ndarray:
    """Atom names made unique within each residue (element + running number where the input repeats a name)."""
    names = np.asarray(names).astype(object)
    for r in np.unique(residue):
        sel = np.nonzero(residue == r)[0]
        if len(set(names[sel])) < len(sel):
            counts: dict = {}
            for i in sel:
                counts[elements[i]] = counts.get(elements[i], 0) + 1
                names[i] = f"{elements[i]}{counts[elements[i]]}"[:4]
    return names.astype(str)


def build_crystal(structure, supercell=(1, 1, 1), spacegroup: str | None = None, min_distance: float = 1.0) -> Crystal:
    """Build the P1 supercell of a crystal.

    Args:
      structure: path of a PDB / mmCIF / small-molecule CIF, or an :class:`AsymmetricUnit`.
      supercell: (A, B, C) unit cells along a, b, c (positive integers).
      spacegroup: symbol or number overriding the file's space group.
      min_distance: Å; images closer than this are an overlap (error), except a covalent bond of a small-molecule
        crystal and images of one non-polymer atom within SPECIAL_POSITION_A (0.5 Å: a special position, kept once).

    Returns:
      A :class:`Crystal`; atoms ordered by unit cell (c fastest), then symmetry operation and the asymmetric
      unit's order (macromolecular) or molecule (small-molecule).

    Raises:
      UserInputError: bad file, cell, space group, supercell, or overlapping symmetry mates.
    """
    na, nb, nc = (int(x) for x in supercell)
    if len(tuple(supercell)) != 3 or min(na, nb, nc) < 1 or any(int(x) != x for x in supercell):
        raise UserInputError(f"--supercell {supercell}: give three positive integers, e.g. --supercell 2 2 2")
    asu = structure if isinstance(structure, AsymmetricUnit) else read_asymmetric_unit(structure, spacegroup)
    orth = orthogonalization_matrix(asu.cell)
    rot, tran, triplets = symmetry_operations(asu.spacegroup)
    build = _unit_cell_small if asu.kind == "small" else _unit_cell_macromolecular
    frac_uc, op_uc, asu_uc, mol_uc, special, n_network = build(asu, rot, tran, orth, triplets, min_distance)
    notes = list(asu.notes)
    if special:
        notes.append(
            f"{len(special)} atom(s) on special positions kept once (images closer than {SPECIAL_POSITION_A} Å)"
        )
    if n_network:
        notes.append(f"{n_network} extended (network) fragment(s): no discrete molecules, atoms kept in the cell")
    cells = np.array(list(itertools.product(range(na), range(nb), range(nc))), dtype=int)
    n_uc = len(frac_uc)
    n_mol_uc = int(mol_uc.max()) + 1 if n_uc else 0
    frac = (frac_uc[None, :, :] + cells[:, None, :]).reshape(-1, 3)
    rep = lambda v: np.tile(v, len(cells))  # noqa: E731
    atoms = {k: rep(v[asu_uc]) for k, v in asu.atoms.items()}
    atoms["asu_index"] = rep(asu_uc)
    atoms["op"] = rep(op_uc)
    atoms["cell"] = np.repeat(cells, n_uc, axis=0)
    atoms["molecule"] = (np.arange(len(cells))[:, None] * n_mol_uc + mol_uc[None, :]).reshape(-1)
    atoms["chain"], atoms["resid"] = _chains(asu, atoms, mol_uc, n_uc, len(cells))
    if asu.kind == "small":
        names = unique_atom_names(asu.atoms["name"][asu_uc], asu.atoms["element"][asu_uc], mol_uc)
        atoms["name"] = np.tile(names, len(cells))
    positions = frac @ orth.T
    box = (orth * np.array([na, nb, nc], dtype=float)).T
    n_mol = len(np.unique(atoms["molecule"]))
    return Crystal(
        positions=positions,
        frac=frac,
        atoms=atoms,
        cell=tuple(float(x) for x in asu.cell),
        supercell=(na, nb, nc),
        box=box,
        spacegroup=asu.spacegroup.hm,
        operations=triplets,
        n_copies=len(triplets) * len(cells),
        n_molecules=n_mol,
        special_positions=special,
        kind=asu.kind,
        source=asu.path,
        notes=notes,
    )


def _chains(asu, atoms, mol_uc, n_uc, n_cells):
    """Chain ids distinct per copy (a new id wherever the copy or the input chain changes); residue numbers.

    Small-molecule crystals get one chain per unit cell and one residue per molecule.
    """
    cell_idx = np.repeat(np.arange(n_cells), n_uc)
    if asu.kind == "small":
        key = cell_idx
        resid = np.tile(mol_uc + 1, n_cells)
    else:
        chain_in_asu = np.unique(asu.atoms["chain"], return_inverse=True)[1]
        key = (cell_idx * (atoms["op"].max() + 1) + atoms["op"]) * (chain_in_asu.max() + 1)
        key = key + chain_in_asu[atoms["asu_index"]]
        resid = atoms["resid"]
    running = np.concatenate([[0], np.cumsum(key[1:] != key[:-1])]) if len(key) else key
    labels = np.array([chain_label(i) for i in range(int(running.max()) + 1 if len(key) else 0)])
    return labels[running], np.asarray(resid, dtype=int)
