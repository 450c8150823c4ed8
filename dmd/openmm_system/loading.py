"""Read a structure and force-field XML and let OpenMM build its System; :func:`system_from_pdb` converts it."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from dmd.base.config import name_list
from dmd.base.defaults import DEFAULT_FORCEFIELD
from dmd.base.errors import UserInputError
from dmd.openmm_system.assembly import system_from_openmm
from dmd.openmm_system.common import NONBONDED_METHODS
from dmd.system import System

_CONSTRAINTS = {
    None: None,
    "None": None,
    "none": None,
    "HBonds": "HBonds",
    "AllBonds": "AllBonds",
    "HAngles": "HAngles",
}


def _ff_names_hint() -> str:
    import openmm.app as app

    data = os.path.join(os.path.dirname(app.__file__), "data")
    names = sorted(f for f in os.listdir(data) if f.endswith(".xml"))
    subs = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))
    return (
        f"valid names are OpenMM's bundled files, e.g. 'amber14-all.xml', 'amber14/tip3pfb.xml', "
        f"'charmm36.xml' (top level: {', '.join(names[:25])}...; folders: {', '.join(subs)}; "
        f'list them with: python -c "import openmm.app, os; print(os.listdir(os.path.join('
        f"os.path.dirname(openmm.app.__file__), 'data')))\"), or a path to your own XML file"
    )


def load_forcefield(forcefield):
    """``(openmm.app.ForceField, files)`` for XML names or paths; UserInputError naming a file that fails."""
    import openmm.app as app

    fix = "no force field given; pass e.g. --forcefield amber14-all.xml amber14/tip3pfb.xml"
    files = name_list(forcefield, if_empty=fix)
    try:
        return app.ForceField(*files), files
    except Exception as exc:  # OpenMM raises ValueError/OSError for unknown names: find the culprit
        for f in files:
            try:
                app.ForceField(f)
            except Exception as exc_one:
                raise UserInputError(
                    f"force-field file {f!r} could not be loaded ({exc_one}); {_ff_names_hint()}"
                ) from None
        raise UserInputError(f"force-field files {files} could not be combined: {exc}") from None


def read_structure(path):
    """``openmm.app.PDBFile`` or ``PDBxFile`` (.cif/.mmcif/.pdbx) for ``path``; UserInputError if unreadable."""
    import openmm.app as app
    import openmm.unit as unit

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: no such structure file; pass an existing .pdb or .cif/.mmcif path")
    try:
        structure = app.PDBxFile(path) if path.lower().endswith((".cif", ".mmcif", ".pdbx")) else app.PDBFile(path)
    except Exception as exc:
        raise UserInputError(
            f"{path}: could not read structure ({type(exc).__name__}: {exc}); check the file format"
        ) from None
    box = structure.topology.getPeriodicBoxVectors()
    if box is not None:
        from dmd.crystal.reader import is_placeholder_cell

        lengths_a = [10.0 * float(np.linalg.norm(v.value_in_unit(unit.nanometer))) for v in box]
        if is_placeholder_cell(lengths_a):  # NMR / cryo-EM CRYST1 1 x 1 x 1 Å: no crystal, not a 1 Å box
            structure.topology.setPeriodicBoxVectors(None)
            print(f"note: {path}: CRYST1 is the 1 x 1 x 1 Å placeholder; treated as no box", file=sys.stderr)
    return structure


def openmm_system_from_pdb(
    pdb_path,
    forcefield=DEFAULT_FORCEFIELD,
    nonbonded: str = "PME",
    cutoff: float = 1.0,
    constraints=None,
    rigid_water: bool = True,
):
    """The ``(openmm.System, structure, ForceField)`` OpenMM builds for this input (errors as UserInputError)."""
    import openmm.app as app
    import openmm.unit as unit

    if nonbonded not in NONBONDED_METHODS:
        raise UserInputError(f"nonbonded method {nonbonded!r} is not one of {', '.join(NONBONDED_METHODS)}")
    if constraints not in _CONSTRAINTS:
        raise UserInputError(f"constraints={constraints!r}; use None, 'HBonds', 'AllBonds' or 'HAngles'")
    structure = read_structure(pdb_path)
    ff, files = load_forcefield(forcefield)
    if nonbonded != "NoCutoff" and structure.topology.getPeriodicBoxVectors() is None:
        raise UserInputError(
            f"{pdb_path}: {nonbonded} needs a periodic box but the file has none; add a CRYST1 record "
            "(e.g. with Modeller.addSolvent or a text editor) or use --nonbonded NoCutoff for a molecule in vacuum"
        )
    method = getattr(app, nonbonded)
    cons = _CONSTRAINTS[constraints]
    kwargs = dict(
        nonbondedMethod=method, constraints=None if cons is None else getattr(app, cons), rigidWater=rigid_water
    )
    if nonbonded != "NoCutoff":
        kwargs["nonbondedCutoff"] = float(cutoff) * unit.nanometer
    try:
        omm_system = ff.createSystem(structure.topology, **kwargs)
    except ValueError as exc:
        msg = str(exc)
        if "template" in msg.lower():
            raise UserInputError(
                f"{pdb_path}: {msg.splitlines()[0]} with force field {files}. Missing hydrogens are the usual "
                "cause: add them with openmm.app.Modeller(topology, positions).addHydrogens(forcefield) (and "
                "addExtraParticles for water models with virtual sites), or load a template XML for the residue "
                "as an extra --forcefield file"
            ) from None
        raise UserInputError(f"{pdb_path}: OpenMM could not build the system: {msg}") from None
    return omm_system, structure, ff


def system_from_pdb(
    pdb_path,
    forcefield=DEFAULT_FORCEFIELD,
    nonbonded: str = "PME",
    cutoff: float = 1.0,
    constraints=None,
    rigid_water: bool = True,
    skin: float = 0.2,
    dtype=None,
    pair_kernel: str = "auto",
    rebuild_kernel: str | None = None,
) -> System:
    """A :class:`dmd.System` for a PDB/mmCIF file and OpenMM force-field XML names.

    Args:
      pdb_path: structure (.pdb, or .cif/.mmcif); CRYST1 / cell gives the periodic box.
      forcefield: XML names OpenMM knows (``"amber14-all.xml"``, ``"amber14/tip3pfb.xml"``,
        ``"charmm36.xml"``...) or paths.
      nonbonded: "PME", "NoCutoff" or "CutoffPeriodic" (reaction field).
      cutoff: nonbonded cutoff, nm (absolute; ignored for NoCutoff).
      constraints: None, "HBonds", "AllBonds" or "HAngles" (OpenMM's createSystem).
      rigid_water: rigid waters (SETTLE geometry in ``system.constraints``).
      skin: neighbour-list skin, nm.
      dtype: dtype of θ and positions (default float64 numpy, which jax turns into float32 unless x64).
      pair_kernel, rebuild_kernel: "auto", "numba" or "xla" (:func:`dmd.openmm_system.assembly.system_from_openmm`).
    """
    omm_system, structure, ff = openmm_system_from_pdb(
        pdb_path, forcefield, nonbonded, cutoff, constraints, rigid_water
    )
    import openmm.unit as unit

    pos = np.asarray(structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
    types = atom_type_names(ff, structure.topology)
    system = system_from_openmm(
        omm_system,
        pos,
        topology=structure.topology,
        atom_types=types,
        skin=skin,
        dtype=dtype,
        pair_kernel=pair_kernel,
        rebuild_kernel=rebuild_kernel,
        _check_vsites=True,
    )
    meta = dict(system.metadata)
    meta.update(forcefield=files, source=os.fspath(pdb_path), constraints=constraints, rigid_water=rigid_water)
    return dataclasses.replace(system, metadata=meta, name=os.path.basename(os.fspath(pdb_path)))


def atom_type_names(ff, topology) -> list[str] | None:
    """OpenMM atom-type name of every atom of ``topology`` under ForceField ``ff`` (its template matching), or None
    if unavailable (the LJ θ then group atoms by their (σ, ε) values)."""
    try:
        from openmm.app import ForceField

        data = ForceField._SystemData(topology)
        ff._matchAllResiduesToTemplates(data, topology, {}, False)
        return [str(data.atomType[a]) for a in topology.atoms()]
    except Exception:  # private OpenMM API: fall back to grouping by parameter values
        return None
