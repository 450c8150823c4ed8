"""Structures (.cif / .pdb via gemmi) and trajectories (mdtraj) into crystallographic arrays.

API::

    xs = read_structure("LiFePO4.cif")     # CrystalStructure: cell [6] Å/deg, spacegroup HM, pos_frac [N,3],
                                            # elements [N], b_iso [N] Å², occ [N]
    p1 = xs.expand_to_p1()                  # all symmetry images, duplicates on special positions merged
    for pos_frac, cells, elements in trajectory_frames("traj.dcd", "top.pdb", stride=2): ...

Formats: small-molecule CIF (``_atom_site_fract_x``; U_iso/U_eq converted to B = 8π²U), mmCIF and PDB
(Cartesian Å fractionalized with the file's cell; occupancies taken as written, so waters on special
positions keep their file occupancy and are not merged). mdtraj gives nm: converted to Å here only.
"""

from __future__ import annotations

import dataclasses
import os

import gemmi
import numpy as np

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.formfactors import normalize_element
from dmd.base.errors import UserInputError

__all__ = ["CrystalStructure", "read_structure", "trajectory_frames"]


@dataclasses.dataclass(frozen=True)
class CrystalStructure:
    """An atomic model in a unit cell.

    Attributes:
      cell: ``[6]`` (a, b, c Å; α, β, γ degrees). spacegroup: HM symbol.
      pos_frac: ``[N, 3]`` fractional. elements: N symbols. b_iso: ``[N]`` Å². occ: ``[N]``.
      merge_special: merge coincident images when expanding (small-molecule convention).
    """

    cell: np.ndarray
    spacegroup: str
    pos_frac: np.ndarray
    elements: tuple[str, ...]
    b_iso: np.ndarray
    occ: np.ndarray
    merge_special: bool = True

    @property
    def n_atoms(self) -> int:
        return int(self.pos_frac.shape[0])

    def expand_to_p1(self, tol: float = 1e-3) -> CrystalStructure:
        """All symmetry images in [0, 1); images closer than ``tol`` Å to an earlier image of the same
        atom are dropped when ``merge_special`` (atoms on special positions)."""
        n_ops = len(symmetry.symmetry_operations(self.spacegroup)[0])
        imgs = symmetry.expand_to_p1(self.pos_frac, self.spacegroup).reshape(n_ops, self.n_atoms, 3)
        keep = np.ones((n_ops, self.n_atoms), bool)
        if self.merge_special and n_ops > 1:
            orth = cell_mod.orthogonalization_matrix(np.asarray(self.cell, float))
            for start in range(0, self.n_atoms, 2048):
                sl = slice(start, start + 2048)
                p = imgs[:, sl]  # [O, n, 3]
                d = p[:, None] - p[None, :]  # [O, O, n, 3]
                d -= np.round(d)
                dist = np.linalg.norm(d @ orth.T, axis=-1)  # [O, O, n]
                close = dist < tol
                earlier = np.tril(np.ones((n_ops, n_ops), bool), k=-1)[:, :, None]
                keep[:, sl] = ~np.any(close & earlier, axis=1)
        pos = imgs[keep]
        idx = np.broadcast_to(np.arange(self.n_atoms), (n_ops, self.n_atoms))[keep]
        return CrystalStructure(
            cell=np.asarray(self.cell, float),
            spacegroup="P 1",
            pos_frac=pos,
            elements=tuple(self.elements[i] for i in idx),
            b_iso=np.asarray(self.b_iso)[idx],
            occ=np.asarray(self.occ)[idx],
            merge_special=self.merge_special,
        )


def _is_small_molecule_cif(path: str) -> bool:
    try:
        block = gemmi.cif.read(path).sole_block()
    except (RuntimeError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot parse CIF ({exc}); give a valid CIF/mmCIF file") from exc
    return block.find_value("_atom_site_fract_x") is not None or bool(block.find_loop("_atom_site_fract_x"))


def _read_small(path: str) -> CrystalStructure:
    small = gemmi.read_small_structure(path)
    if small.spacegroup is None:
        small.determine_and_set_spacegroup("S.H1N")  # symop list first, then Hall / HM / number
    sg = small.spacegroup
    if not small.sites:
        raise UserInputError(f"{path}: no atom sites found; the CIF needs an _atom_site_ loop with fract_x/y/z")
    pos, els, b, occ = [], [], [], []
    for site in small.sites:
        pos.append([site.fract.x, site.fract.y, site.fract.z])
        try:
            els.append(normalize_element(site.element.name))
        except ValueError as exc:
            raise UserInputError(f"{path}: site {site.label}: {exc}") from exc
        u = site.u_iso
        if u == 0 and site.aniso.nonzero():
            # U_eq = tr(U_cart)/3 with U_cart = A N U Nᵀ Aᵀ, N = diag(a*, b*, c*) (CIF U^ij convention)
            a_mat = cell_mod.orthogonalization_matrix(np.array(small.cell.parameters, float))
            n_mat = np.diag(cell_mod.reciprocal_cell(np.array(small.cell.parameters, float))[:3])
            u_cif = np.array(site.aniso.as_mat33().tolist(), float)
            u = float(np.trace(a_mat @ n_mat @ u_cif @ n_mat @ a_mat.T) / 3)
        b.append(8 * np.pi**2 * u)
        occ.append(site.occ)
    return CrystalStructure(
        cell=np.array(small.cell.parameters, float),
        spacegroup=sg.xhm() if sg is not None else "P 1",  # xhm keeps the origin choice (e.g. "F d -3 m:1")
        pos_frac=np.array(pos, float),
        elements=tuple(els),
        b_iso=np.array(b, float),
        occ=np.array(occ, float),
        merge_special=True,
    )


def _read_macro(path: str) -> CrystalStructure:
    try:
        st = gemmi.read_structure(path)
    except (RuntimeError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read structure ({exc}); give a PDB or mmCIF file") from exc
    if len(st) == 0:
        raise UserInputError(f"{path}: no model/atoms found")
    if not st.cell.is_crystal():
        raise UserInputError(f"{path}: no unit cell (CRYST1 / _cell); add the cell to compute diffraction")
    sg = st.find_spacegroup() or gemmi.find_spacegroup_by_name("P 1")
    pos, els, b, occ = [], [], [], []
    for cra in st[0].all():
        at = cra.atom
        f = st.cell.fractionalize(at.pos)
        pos.append([f.x, f.y, f.z])
        try:
            els.append(normalize_element(at.element.name))
        except ValueError as exc:
            raise UserInputError(f"{path}: atom {cra}: {exc}") from exc
        b.append(at.b_iso)
        occ.append(at.occ)
    return CrystalStructure(
        cell=np.array(st.cell.parameters, float),
        spacegroup=sg.xhm(),
        pos_frac=np.array(pos, float).reshape(-1, 3),
        elements=tuple(els),
        b_iso=np.array(b, float),
        occ=np.array(occ, float),
        merge_special=False,
    )


def read_structure(path) -> CrystalStructure:
    """Read a small-molecule CIF, an mmCIF or a PDB file (gemmi).

    Raises:
      UserInputError: missing file, unparsable file, no cell, unknown element.
    """
    path = str(path)
    if not os.path.exists(path):
        raise UserInputError(f"{path}: no such structure file; check the path")
    ext = path.lower().rsplit(".", 1)[-1]
    if ext == "gz":
        ext = path.lower().rsplit(".", 2)[-2]
    if ext == "cif" and _is_small_molecule_cif(path):
        return _read_small(path)
    if ext in ("cif", "mmcif", "pdb", "ent", "pdbx"):
        return _read_macro(path)
    raise UserInputError(f"{path}: unknown structure format .{ext}; give a .cif, .mmcif or .pdb file")


def trajectory_frames(traj, top=None, *, stride: int = 1, chunk: int = 100, atom_indices=None):
    """Stream ``(pos_frac [t, N, 3], cells [t, 6] Å/deg, elements [N])`` chunks from a trajectory.

    Args:
      traj: path readable by mdtraj (dcd, xtc, trr, h5, nc, pdb, ...) or an ``mdtraj.Trajectory``.
      top: topology path (pdb, prmtop, psf, ...) when ``traj`` lacks one.
      stride: keep every ``stride``-th frame. chunk: frames per yielded chunk.
      atom_indices: optional subset of atoms.

    mdtraj coordinates are nm; cells are converted to Å here (fractional positions are unitless:
    x_frac = x_cart · B⁻¹ with B the rows of the box vectors, whatever their orientation).

    Raises:
      UserInputError: unreadable file, no unit cell, atoms without element.
    """
    import mdtraj

    if stride < 1:
        raise UserInputError(f"--stride must be ≥ 1, got {stride}")

    def convert(t):
        if t.unitcell_vectors is None:
            raise UserInputError(
                f"{traj}: the trajectory has no unit cell; structure factors need a periodic box "
                "(write the box with the trajectory, or add CRYST1 to the topology for single-frame files)"
            )
        boxes = np.asarray(t.unitcell_vectors, np.float64)  # [t, 3, 3] nm, rows = a, b, c
        xyz = np.asarray(t.xyz, np.float64)
        if not np.all(np.isfinite(xyz)):
            raise UserInputError(f"{traj}: non-finite coordinates in the trajectory; the simulation diverged")
        frac = np.einsum("tni,tij->tnj", xyz, np.linalg.inv(boxes))
        cells = np.concatenate(
            [np.asarray(t.unitcell_lengths, np.float64) * 10.0, np.asarray(t.unitcell_angles, np.float64)], axis=1
        )
        return frac, cells

    def elements_of(topology):
        out = []
        for atom in topology.atoms:
            sym = None if atom.element is None else atom.element.symbol
            if not sym or sym == "VS":
                raise UserInputError(
                    f"{top or traj}: atom {atom} has no element (virtual site?); select real atoms or fix the topology"
                )
            out.append(normalize_element(sym))
        return out

    if isinstance(traj, mdtraj.Trajectory):
        t = traj[::stride]
        if atom_indices is not None:
            t = t.atom_slice(atom_indices)
        els = elements_of(t.topology)
        for i in range(0, t.n_frames, chunk):
            frac, cells = convert(t[i : i + chunk])
            yield frac, cells, els
        return
    if not os.path.exists(str(traj)):
        raise UserInputError(f"{traj}: no such trajectory file; check --traj")
    if top is not None and not os.path.exists(str(top)):
        raise UserInputError(f"{top}: no such topology file; check --top")
    kwargs = {} if top is None else {"top": str(top)}
    try:
        it = mdtraj.iterload(str(traj), chunk=chunk, stride=stride, atom_indices=atom_indices, **kwargs)
        els = None
        for t in it:
            if els is None:
                els = elements_of(t.topology)
            frac, cells = convert(t)
            yield frac, cells, els
    except UserInputError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise UserInputError(
            f"{traj}: cannot read trajectory with topology {top} ({exc}); give a format mdtraj reads and the "
            "matching --top"
        ) from exc
