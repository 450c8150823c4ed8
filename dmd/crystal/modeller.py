"""Hydrogens and water for crystals, through OpenMM's ``Modeller`` (``dmd crystal --add-hydrogens / --solvate``).

* :func:`add_hydrogens` protonates the *asymmetric unit* (``Modeller.addHydrogens`` with the chosen force field and
  pH) before the symmetry expansion, so every copy carries the same, symmetry-exact hydrogens.
* :func:`solvate` fills the solvent region of the periodic supercell with water (``Modeller.addSolvent`` with the
  supercell's reduced box vectors: a pre-equilibrated box of the water model, at its density, tiled over the cell;
  waters within the van der Waals reach of the crystal's atoms, periodic images included, are dropped). The crystal's
  molecules are not moved. No ions are added.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmd.base.errors import UserInputError
from dmd.crystal.builder import Crystal, chain_label, orthogonalization_matrix
from dmd.crystal.reader import AsymmetricUnit

__all__ = ["add_hydrogens", "solvate", "openmm_topology"]

WATERS_PER_CHAIN = 9999  # residue numbers stay in the PDB's four columns


def _forcefield(files, path):
    import openmm.app as app

    files = [files] if isinstance(files, str) else list(files)
    try:
        return app.ForceField(*files)
    except Exception as exc:  # OpenMM raises ValueError / OSError for unknown names
        raise UserInputError(
            f"{path}: force field {files} could not be loaded ({exc}); give OpenMM XML names such as "
            "--forcefield amber14-all.xml amber14/tip3pfb.xml, or paths to your own XML files"
        ) from None


def openmm_topology(atoms: dict, positions_a: np.ndarray, box=None):
    """OpenMM ``Topology`` and positions (nm) from per-atom arrays (``chain``, ``resname``, ``resid``, ``icode``,
    ``name``, ``element``) and (N, 3) positions in Å; standard and disulfide bonds are added."""
    import openmm.app as app
    import openmm.unit as u

    top = app.Topology()
    chain = residue = None
    last_chain = last_res = None
    for i in range(len(positions_a)):
        ch = str(atoms["chain"][i])
        key = (ch, int(atoms["resid"][i]), str(atoms["icode"][i]), str(atoms["resname"][i]))
        if ch != last_chain:
            chain, last_chain, last_res = top.addChain(ch), ch, None
        if key != last_res:
            residue = top.addResidue(key[3], chain, str(key[1]), key[2])
            last_res = key
        el = app.Element.getBySymbol(str(atoms["element"][i]))
        top.addAtom(str(atoms["name"][i]), el, residue)
    if box is not None:
        top.setPeriodicBoxVectors(np.asarray(box) / 10.0 * u.nanometer)
    top.createStandardBonds()
    pos = u.Quantity(np.asarray(positions_a, dtype=float) / 10.0, u.nanometer)
    top.createDisulfideBonds(pos)
    return top, pos


def _arrays_from_topology(top, positions_nm) -> tuple[dict, np.ndarray]:
    rows = {k: [] for k in ("name", "resname", "resid", "icode", "chain", "element")}
    for atom in top.atoms():
        res = atom.residue
        rows["name"].append(atom.name)
        rows["resname"].append(res.name)
        rows["resid"].append(int(res.id) if str(res.id).lstrip("-").isdigit() else res.index + 1)
        rows["icode"].append(res.insertionCode.strip())
        rows["chain"].append(res.chain.id)
        rows["element"].append(atom.element.symbol if atom.element is not None else "X")
    out = {k: np.asarray(v) for k, v in rows.items()}
    return out, np.asarray(positions_nm, dtype=float) * 10.0


def add_hydrogens(asu: AsymmetricUnit, forcefield, ph: float = 7.0) -> tuple[AsymmetricUnit, int]:
    """Add hydrogens to the asymmetric unit (OpenMM ``Modeller.addHydrogens``); returns (new unit, hydrogens added)."""
    import openmm.app as app
    import openmm.unit as u

    if asu.kind == "small":
        raise UserInputError(
            f"{asu.path}: --add-hydrogens uses OpenMM's residue templates (proteins, nucleic acids, water); a "
            "small-molecule CIF should carry its hydrogens: drop --add-hydrogens"
        )
    ff = _forcefield(forcefield, asu.path)
    orth = orthogonalization_matrix(asu.cell)
    top, pos = openmm_topology(asu.atoms, asu.frac @ orth.T)
    modeller = app.Modeller(top, pos)
    try:
        modeller.addHydrogens(ff, pH=ph)
    except Exception as exc:  # OpenMM: ValueError "No template found for residue ..."
        raise UserInputError(
            f"{asu.path}: adding hydrogens failed ({exc}); give a force field with templates for every residue "
            "(--forcefield); complete residues with missing heavy atoms first (e.g. PDBFixer) or remove unknown ones"
        ) from None
    atoms, cart = _arrays_from_topology(modeller.topology, modeller.positions.value_in_unit(u.nanometer))
    het_res = {str(r) for r, h in zip(asu.atoms["resname"], asu.atoms["het"], strict=True) if h}
    n = len(cart)
    atoms["het"] = np.array([r in het_res for r in atoms["resname"]])
    atoms["occ"] = np.ones(n)
    # heavy atoms keep their B factor; a hydrogen takes its residue's mean
    b = np.zeros(n)
    old = {
        (c, r, nm): bb
        for c, r, nm, bb in zip(asu.atoms["chain"], asu.atoms["resid"], asu.atoms["name"], asu.atoms["b"], strict=True)
    }
    for i in range(n):
        b[i] = old.get((atoms["chain"][i], int(atoms["resid"][i]), atoms["name"][i]), np.nan)
    for key in set(zip(atoms["chain"], atoms["resid"], strict=True)):
        sel = (atoms["chain"] == key[0]) & (atoms["resid"] == key[1])
        mean = np.nanmean(b[sel]) if np.isfinite(b[sel]).any() else 0.0
        b[sel & ~np.isfinite(b)] = mean
    atoms["b"] = b
    frac = cart @ np.linalg.inv(orth).T
    notes = list(asu.notes) + [f"hydrogens added by OpenMM Modeller at pH {ph:g}: {n - asu.n_atoms}"]
    new = dataclasses.replace(asu, frac=frac, atoms=atoms, notes=notes)
    return new, n - asu.n_atoms


def solvate(crystal: Crystal, forcefield, water_model: str = "tip3p") -> tuple[Crystal, int]:
    """Fill the supercell's solvent region with water; returns (new crystal, waters added).

    The crystal's atoms keep their positions; waters (``op == -1``, ``asu_index == -1``) are appended in chains of
    at most 9999 residues.
    """
    import openmm.app as app
    import openmm.unit as u
    from openmm.app.internal.unitcell import reducePeriodicBoxVectors

    ff = _forcefield(forcefield, crystal.source)
    top, pos = openmm_topology(crystal.atoms, crystal.positions)
    box = reducePeriodicBoxVectors(u.Quantity(crystal.box / 10.0, u.nanometer))
    modeller = app.Modeller(top, pos)
    try:
        modeller.addSolvent(ff, model=water_model, boxVectors=box, neutralize=False)
    except Exception as exc:  # OpenMM: unknown water model, residues without templates
        raise UserInputError(
            f"{crystal.source}: --solvate failed ({exc}); every residue needs a template in --forcefield "
            "(add --add-hydrogens for a structure without hydrogens) and --water-model must be one of OpenMM's "
            "(tip3p, spce, tip4pew, tip5p, swm4ndp)"
        ) from None
    n0 = crystal.n_atoms
    all_pos = np.asarray(modeller.positions.value_in_unit(u.nanometer), dtype=float) * 10.0
    if not np.allclose(all_pos[:n0], crystal.positions, atol=1e-6):
        raise RuntimeError("OpenMM Modeller moved the crystal's atoms")  # a bug, not a user error
    water_atoms = list(modeller.topology.atoms())[n0:]
    n_w_atoms = len(water_atoms)
    res_index = np.array([a.residue.index for a in water_atoms])
    res_dense = np.unique(res_index, return_inverse=True)[1] if n_w_atoms else res_index
    n_waters = int(res_dense.max()) + 1 if n_w_atoms else 0
    n_chains_before = len(set(crystal.atoms["chain"].tolist()))
    chain_of = res_dense // WATERS_PER_CHAIN
    orth = orthogonalization_matrix(crystal.cell)
    wfrac = all_pos[n0:] @ np.linalg.inv(orth).T
    add = {
        "name": np.array([a.name for a in water_atoms]),
        "resname": np.array([a.residue.name for a in water_atoms]),
        "resid": res_dense % WATERS_PER_CHAIN + 1,
        "icode": np.array([""] * n_w_atoms),
        "chain": np.array([chain_label(n_chains_before + int(c)) for c in chain_of]),
        "element": np.array([a.element.symbol for a in water_atoms]),
        "het": np.ones(n_w_atoms, dtype=bool),
        "occ": np.ones(n_w_atoms),
        "b": np.zeros(n_w_atoms),
        "asu_index": -np.ones(n_w_atoms, dtype=int),
        "op": -np.ones(n_w_atoms, dtype=int),
        "cell": np.floor(wfrac).astype(int),
        "molecule": crystal.atoms["molecule"].max() + 1 + res_dense,
    }
    atoms = {k: np.concatenate([np.asarray(v), add[k]]) for k, v in crystal.atoms.items()}
    notes = list(crystal.notes) + [f"solvated with {n_waters} {water_model} waters (OpenMM Modeller.addSolvent)"]
    new = dataclasses.replace(
        crystal,
        positions=all_pos,
        frac=np.concatenate([crystal.frac, wfrac]),
        atoms=atoms,
        n_molecules=crystal.n_molecules + n_waters,
        notes=notes,
    )
    return new, n_waters
