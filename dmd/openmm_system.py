"""Build a :class:`dmd.System` from OpenMM: PDB/mmCIF + force-field XML, or an ``openmm.System``.

    from dmd.openmm_system import system_from_pdb
    system = system_from_pdb("villin.pdb", ["amber14-all.xml", "amber14/tip3pfb.xml"], nonbonded="PME")
    nbrs = system.allocate_neighbors()                      # None for NoCutoff
    e = jax.jit(system.energy_fn)(system.params, system.positions, box=system.box, neighbor=nbrs)

Each OpenMM force becomes one named term (its ``getName()``: "HarmonicBondForce",
"HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce", "CMAPTorsionForce",
"CustomTorsionForce" (CHARMM impropers), "LennardJones" and "LennardJones14" (CHARMM LJ)).
``system.terms_fn`` returns the energy of each, kJ/mol; they equal OpenMM's per-force-group
energies (Reference platform, float64) to ~1e-10 relative.

θ (``system.params``), per force:

* NonbondedForce: ``charge [n_atoms]`` e (labels ``"index:RESresid:ATOM"``), ``sigma [n_types]`` nm,
  ``epsilon [n_types]`` kJ/mol per force-field atom type (labels are OpenMM's atom-type names; each
  atom's σ, ε is a gather from its type, so one entry changes every atom of that type, like editing
  the XML). 1-4 exceptions follow θ with OpenMM's fixed scale factors (q_ij = s·q_i q_j,
  ε_ij = s·√(ε_i ε_j), σ_ij = (σ_i + σ_j)/2) wherever createSystem built them that way.
* HarmonicBondForce: ``k`` kJ/mol/nm², ``length`` nm; HarmonicAngleForce: ``k`` kJ/mol/rad², ``angle`` rad;
  PeriodicTorsionForce: ``k`` kJ/mol, ``phase`` rad (periodicity fixed); CustomTorsionForce: ``k``, ``theta0``;
  CMAPTorsionForce: ``maps [n_maps, size, size]`` kJ/mol; LennardJones: per-type ``sigma``, ``epsilon``
  (+ ``nbfix_sigma``, ``nbfix_epsilon``); LennardJones14: per-pair ``sigma``, ``epsilon``.

Nonbonded methods: NoCutoff (all pairs), CutoffPeriodic (reaction field, as OpenMM) and PME (OpenMM's
own α and grid, B-spline order 5). The cutoff is absolute, in nm, and never moves with σ. The
long-range dispersion correction is included exactly when OpenMM's force has it on (createSystem's
default for PME and CutoffPeriodic). Cutoff systems get ``neighbor_fn``: a full neighbour
list with exclusions (:mod:`dmd.forces.neighbors`) in real (not fractional) coordinates, radius
cutoff + skin (default 0.2 nm), orthorhombic boxes only.

Virtual sites (4-site water such as OPC ``amber19/opc.xml`` / TIP4P-Ew, 5-site TIP5P, lone pairs):
TwoParticleAverageSite, ThreeParticleAverageSite, OutOfPlaneSite and LocalCoordinatesSite are
supported (:class:`dmd.system.VirtualSites`); other types (SymmetrySite) and sites built on other
sites raise :class:`~dmd.base.errors.UserInputError`. ``energy_fn`` places the sites from their parents
before computing the energy, so the sites' forces reach the parents by the chain rule, as OpenMM
distributes them; ``system.positions`` start with the sites in place (OpenMM's ``computeVirtualSites``).
Their exclusions are OpenMM's NonbondedForce exceptions. Structures need the extra particles
(``Modeller.addExtraParticles(forcefield)``); rigid 4-site waters get SETTLE on (O, H1, H2).
"""

from __future__ import annotations

import os
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import UserInputError
from dmd.forces import bonded, nonbonded
from dmd.forces.neighbors import pair_neighbor_list
from dmd.system import Constraints, System, VirtualSites

__all__ = ["system_from_pdb", "system_from_openmm", "openmm_system_from_pdb", "NONBONDED_METHODS"]

NONBONDED_METHODS = ("NoCutoff", "CutoffPeriodic", "PME")
_CONSTRAINTS = {
    None: None,
    "None": None,
    "none": None,
    "HBonds": "HBonds",
    "AllBonds": "AllBonds",
    "HAngles": "HAngles",
}
_HARMONIC_TORSION = {"k*(theta-theta0)^2"}
_TAB_LJ = {"acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6", "acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6;"}
_LJ14 = {"4*epsilon*((sigma/r)^12-(sigma/r)^6)", "4*epsilon*((sigma/r)^12-(sigma/r)^6);"}


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


def _load_forcefield(forcefield):
    import openmm.app as app

    if isinstance(forcefield, str):
        forcefield = [forcefield]
    files = list(forcefield)
    if not files:
        raise UserInputError("no force field given; pass e.g. --forcefield amber14-all.xml amber14/tip3pfb.xml")
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


def _read_structure(path):
    import openmm.app as app

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: no such structure file; pass an existing .pdb or .cif/.mmcif path")
    try:
        if path.lower().endswith((".cif", ".mmcif", ".pdbx")):
            return app.PDBxFile(path)
        return app.PDBFile(path)
    except Exception as exc:
        raise UserInputError(
            f"{path}: could not read structure ({type(exc).__name__}: {exc}); check the file format"
        ) from None


def openmm_system_from_pdb(
    pdb_path,
    forcefield=("amber14-all.xml", "amber14/tip3pfb.xml"),
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
    structure = _read_structure(pdb_path)
    ff, files = _load_forcefield(forcefield)
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
    forcefield=("amber14-all.xml", "amber14/tip3pfb.xml"),
    nonbonded: str = "PME",
    cutoff: float = 1.0,
    constraints=None,
    rigid_water: bool = True,
    skin: float = 0.2,
    dtype=None,
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
    """
    omm_system, structure, ff = openmm_system_from_pdb(
        pdb_path, forcefield, nonbonded, cutoff, constraints, rigid_water
    )
    import openmm.unit as unit

    pos = np.asarray(structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
    types = _atom_type_names(ff, structure.topology)
    system = system_from_openmm(
        omm_system, pos, topology=structure.topology, atom_types=types, skin=skin, dtype=dtype, _check_vsites=True
    )
    meta = dict(system.metadata)
    meta.update(forcefield=files, source=os.fspath(pdb_path), constraints=constraints, rigid_water=rigid_water)
    import dataclasses

    return dataclasses.replace(system, metadata=meta, name=os.path.basename(os.fspath(pdb_path)))


def _atom_type_names(ff, topology):
    """OpenMM atom-type name of every atom (force-field template matching), or None if unavailable."""
    try:
        from openmm.app import ForceField

        data = ForceField._SystemData(topology)
        ff._matchAllResiduesToTemplates(data, topology, {}, False)
        return [str(data.atomType[a]) for a in topology.atoms()]
    except Exception:  # private OpenMM API: fall back to grouping by parameter values
        return None


def _unique(labels):
    seen = defaultdict(int)
    out = []
    for lab in labels:
        lab = str(lab).replace("/", "_")
        seen[lab] += 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return tuple(out)


def _atom_labels(topology, n):
    if topology is None:
        return tuple(str(i) for i in range(n))
    return _unique(f"{a.index}:{a.residue.name}{a.residue.id}:{a.name}" for a in topology.atoms())


def _idx_label(idx):
    return "-".join(str(int(i)) for i in idx)


def _vals(q, unit=None):
    return float(q.value_in_unit(unit)) if hasattr(q, "value_in_unit") else float(q)


def system_from_openmm(
    openmm_system, positions_nm, topology=None, box=None, atom_types=None, skin: float = 0.2, dtype=None, **_private
) -> System:
    """A :class:`dmd.System` reproducing an ``openmm.System``.

    Args:
      openmm_system: the OpenMM System (forces listed in the module docstring).
      positions_nm: ``[n_atoms, 3]`` nm (array or OpenMM Quantity).
      topology: optional ``openmm.app.Topology`` (labels, water detection for SETTLE).
      box: ``[3]`` or ``[3, 3]`` nm; default: the System's default periodic box if it uses one.
      atom_types: optional per-atom type names for LJ θ labels (default: group by (σ, ε) values).
      skin: neighbour-list skin, nm.
      dtype: dtype for θ and positions.
    """
    import openmm as mm
    import openmm.unit as unit

    if hasattr(positions_nm, "value_in_unit"):
        positions_nm = positions_nm.value_in_unit(unit.nanometer)
    pos = np.asarray(positions_nm, dtype=np.float64)
    n = openmm_system.getNumParticles()
    if pos.shape != (n, 3) or not np.all(np.isfinite(pos)):
        raise UserInputError(f"positions must be a finite [{n}, 3] array in nm; got shape {pos.shape}")
    vsites = _virtual_sites(openmm_system)
    if vsites is not None:
        pos = vsites.place(pos)  # start on the sites, as OpenMM's computeVirtualSites would put them
    periodic = openmm_system.usesPeriodicBoundaryConditions()
    if box is None and periodic:
        vecs = openmm_system.getDefaultPeriodicBoxVectors()
        box = np.array([[_vals(v[k], unit.nanometer) for k in range(3)] for v in vecs])
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        if box.shape == (3, 3):
            if np.abs(box - np.diag(np.diag(box))).max() > 1e-12:
                raise UserInputError("triclinic periodic boxes are not supported yet; use a rectangular box")
            box = np.diag(box).copy()
        if box.shape != (3,) or np.any(box <= 0):
            raise UserInputError(f"box must be [3] positive edge lengths in nm; got {box}")
    if not periodic:
        box = None

    atom_labels = _atom_labels(topology, n)
    terms = []  # (name, params, labels, fn(p, pos, box, nbr), needs_neighbor)
    neighbor_cutoff = None
    excluded_for_nlist = None
    metadata = {"nonbonded_method": "NoCutoff", "cutoff_nm": None}
    names_used = defaultdict(int)

    def add(name, params, labels, fn, needs_nbr=False):
        names_used[name] += 1
        if names_used[name] > 1:
            name = f"{name}_{names_used[name]}"
        terms.append((name, params, labels, fn, needs_nbr))

    for force in openmm_system.getForces():
        kind = type(force).__name__
        name = force.getName() or kind
        if isinstance(force, mm.CMMotionRemover):
            continue
        if isinstance(force, mm.HarmonicBondForce):
            rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
            idx = np.array([[r[0], r[1]] for r in rows], dtype=np.int32).reshape(-1, 2)
            length = np.array([_vals(r[2], unit.nanometer) for r in rows])
            k = np.array([_vals(r[3], unit.kilojoule_per_mole / unit.nanometer**2) for r in rows])
            lab = _unique(_idx_label(i) for i in idx)
            add(
                name,
                {"k": k, "length": length},
                {"k": lab, "length": lab},
                lambda p, x, b, nb, idx=idx: bonded.harmonic_bond_energy(p["k"], p["length"], x, idx),
            )
        elif isinstance(force, mm.HarmonicAngleForce):
            rows = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
            idx = np.array([[r[0], r[1], r[2]] for r in rows], dtype=np.int32).reshape(-1, 3)
            angle = np.array([_vals(r[3], unit.radian) for r in rows])
            k = np.array([_vals(r[4], unit.kilojoule_per_mole / unit.radian**2) for r in rows])
            lab = _unique(_idx_label(i) for i in idx)
            add(
                name,
                {"k": k, "angle": angle},
                {"k": lab, "angle": lab},
                lambda p, x, b, nb, idx=idx: bonded.harmonic_angle_energy(p["k"], p["angle"], x, idx),
            )
        elif isinstance(force, mm.PeriodicTorsionForce):
            rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
            idx = np.array([r[:4] for r in rows], dtype=np.int32).reshape(-1, 4)
            per = np.array([int(r[4]) for r in rows], dtype=np.int32)
            phase = np.array([_vals(r[5], unit.radian) for r in rows])
            k = np.array([_vals(r[6], unit.kilojoule_per_mole) for r in rows])
            lab = _unique(f"{_idx_label(i)}(n={m})" for i, m in zip(idx, per, strict=True))
            add(
                name,
                {"k": k, "phase": phase},
                {"k": lab, "phase": lab},
                lambda p, x, b, nb, idx=idx, per=per: bonded.periodic_torsion_energy(
                    p["k"], p["phase"], per.astype(x.dtype), x, idx
                ),
            )
        elif isinstance(force, mm.CustomTorsionForce):
            expr = force.getEnergyFunction().replace(" ", "")
            pnames = [force.getPerTorsionParameterName(i) for i in range(force.getNumPerTorsionParameters())]
            if expr not in _HARMONIC_TORSION or sorted(pnames) != ["k", "theta0"] or force.getNumGlobalParameters():
                raise UserInputError(f"CustomTorsionForce {expr!r} is not supported (only CHARMM's k*(theta-theta0)^2)")
            rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
            idx = np.array([r[:4] for r in rows], dtype=np.int32).reshape(-1, 4)
            vals = np.array([list(r[4]) for r in rows], dtype=np.float64).reshape(-1, len(pnames))
            k = vals[:, pnames.index("k")]
            theta0 = vals[:, pnames.index("theta0")]
            lab = _unique(_idx_label(i) for i in idx)
            add(
                name,
                {"k": k, "theta0": theta0},
                {"k": lab, "theta0": lab},
                lambda p, x, b, nb, idx=idx: bonded.harmonic_torsion_energy(p["k"], p["theta0"], x, idx),
            )
        elif isinstance(force, mm.CMAPTorsionForce):
            maps, sizes = [], set()
            for m in range(force.getNumMaps()):
                size, energy = force.getMapParameters(m)
                e = np.array([_vals(v, unit.kilojoule_per_mole) for v in energy]).reshape(size, size).T
                maps.append(e)
                sizes.add(size)
            if len(sizes) > 1:
                raise UserInputError("CMAP maps of different sizes are not supported")
            size = sizes.pop()
            rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
            map_index = np.array([r[0] for r in rows], dtype=np.int32)
            ia = np.array([r[1:5] for r in rows], dtype=np.int32).reshape(-1, 4)  # (0, 4) for water-only systems
            ib = np.array([r[5:9] for r in rows], dtype=np.int32).reshape(-1, 4)
            op = bonded.cmap_spline_operator(size)
            add(
                name,
                {"maps": np.stack(maps)},
                {
                    "maps": _unique(
                        f"map{m}[{i},{j}]" for m in range(len(maps)) for i in range(size) for j in range(size)
                    )
                },
                lambda p, x, b, nb, mi=map_index, ia=ia, ib=ib, op=op: bonded.cmap_energy(p["maps"], mi, op, x, ia, ib),
            )
        elif isinstance(force, mm.NonbondedForce):
            spec, params, labels = _convert_nonbonded(force, n, atom_types, atom_labels, box)
            if spec.method != "NoCutoff":
                neighbor_cutoff = spec.cutoff
                excluded_for_nlist = spec.excluded
                metadata.update(
                    nonbonded_method=spec.method,
                    cutoff_nm=spec.cutoff,
                    dispersion_correction=spec.dispersion_correction,
                    switch_distance_nm=spec.switch_distance,
                )
                if spec.method == "PME":
                    alpha, grid = _pme_parameters(openmm_system, force, pos)
                    spec = _replace(spec, alpha=alpha, grid=grid)
                    metadata.update(pme_alpha=alpha, pme_grid=list(grid), pme_order=5)
                if spec.method == "CutoffPeriodic":
                    metadata.update(reaction_field_dielectric=spec.rf_dielectric)
            add(
                name,
                params,
                labels,
                lambda p, x, b, nb, spec=spec: nonbonded.nonbonded_energy(spec, p, x, b, nb),
                spec.method != "NoCutoff",
            )
        elif isinstance(force, mm.CustomNonbondedForce):
            spec, params, labels = _convert_tabulated_lj(force, n, atom_types)
            custom_excl = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
            nb_forces = [f for f in openmm_system.getForces() if isinstance(f, mm.NonbondedForce)]
            nb_excl = (
                {
                    tuple(sorted(nb_forces[0].getExceptionParameters(k)[:2]))
                    for k in range(nb_forces[0].getNumExceptions())
                }
                if nb_forces
                else set()
            )
            if spec.method != "NoCutoff" and custom_excl != nb_excl:
                raise UserInputError(
                    "CustomNonbondedForce exclusions differ from the NonbondedForce exceptions; "
                    "not supported with cutoffs"
                )
            if spec.method != "NoCutoff":
                if neighbor_cutoff is not None and abs(neighbor_cutoff - spec.cutoff) > 1e-12:
                    raise UserInputError("CustomNonbondedForce and NonbondedForce cutoffs differ; not supported")
                neighbor_cutoff = spec.cutoff
            add(
                name,
                params,
                labels,
                lambda p, x, b, nb, spec=spec: nonbonded.tabulated_lj_energy(spec, p, x, b, nb),
                spec.method != "NoCutoff",
            )
        elif isinstance(force, mm.CustomBondForce):
            expr = force.getEnergyFunction().replace(" ", "")
            pnames = [force.getPerBondParameterName(i) for i in range(force.getNumPerBondParameters())]
            if expr not in _LJ14 or sorted(pnames) != ["epsilon", "sigma"] or force.getNumGlobalParameters():
                raise UserInputError(f"CustomBondForce {expr!r} is not supported (only CHARMM's 1-4 LJ)")
            if force.usesPeriodicBoundaryConditions():
                raise UserInputError("periodic CustomBondForce is not supported")
            rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
            idx = np.array([r[:2] for r in rows], dtype=np.int32).reshape(-1, 2)
            vals = np.array([list(r[2]) for r in rows], dtype=np.float64).reshape(-1, 2)
            lab = _unique(_idx_label(i) for i in idx)
            add(
                name,
                {"sigma": vals[:, pnames.index("sigma")], "epsilon": vals[:, pnames.index("epsilon")]},
                {"sigma": lab, "epsilon": lab},
                lambda p, x, b, nb, idx=idx: nonbonded.lj_bond_energy(p["sigma"], p["epsilon"], x, idx),
            )
        else:
            raise UserInputError(
                f"OpenMM force {kind} ({name!r}) is not supported; supported: HarmonicBondForce, HarmonicAngleForce, "
                "PeriodicTorsionForce, CMAPTorsionForce, NonbondedForce (NoCutoff/CutoffPeriodic/PME), CHARMM's "
                "CustomTorsionForce/CustomNonbondedForce/CustomBondForce, CMMotionRemover"
            )

    # default: float64 values, which jax keeps as float64 under x64 and as float32 otherwise (no warning)
    dtype = jax.dtypes.canonicalize_dtype(np.float64) if dtype is None else dtype
    params = {t[0]: {k: jnp.asarray(v, dtype) for k, v in t[1].items()} for t in terms}
    labels = {t[0]: {k: tuple(v) for k, v in t[2].items()} for t in terms}
    fns = tuple((t[0], t[3], t[4]) for t in terms)
    uses_nbr = any(t[4] for t in terms)

    def terms_fn(params, pos, *, box=None, neighbor=None):
        """Energy of each OpenMM force, ``{name: scalar}`` kJ/mol."""
        unknown = set(params) - {f[0] for f in fns}
        if unknown:
            raise KeyError(f"unknown forces in params: {sorted(unknown)}; valid: {[f[0] for f in fns]}")
        if vsites is not None:
            # sites follow their parents inside the energy: ∂E/∂x_site = 0 and the site's force reaches the
            # parents through the chain rule (OpenMM's force distribution)
            pos = vsites.place(pos)
        return {name: fn(params[name], pos, box, neighbor) for name, fn, _ in fns}

    def energy_fn(params, pos, *, box=None, neighbor=None):
        """Total potential energy, kJ/mol (see :func:`terms_fn`)."""
        terms = terms_fn(params, pos, box=box, neighbor=neighbor)
        return sum(terms.values(), jnp.zeros((), pos.dtype))

    neighbor_fn = None
    if uses_nbr:
        neighbor_fn = pair_neighbor_list(
            n, box, neighbor_cutoff, skin=skin, excluded_pairs=excluded_for_nlist, full=True
        )
        metadata["neighbor_skin_nm"] = skin
    masses = np.array([_vals(openmm_system.getParticleMass(i), unit.dalton) for i in range(n)])
    if vsites is not None:
        metadata["n_virtual_sites"] = vsites.n_sites
        heavy = vsites.indices[masses[vsites.indices] != 0]
        if len(heavy):
            raise UserInputError(
                f"virtual site particle {int(heavy[0])} has mass {masses[heavy[0]]} amu; OpenMM requires virtual "
                "sites to be massless: set their mass to 0 (System.setParticleMass)"
            )
    return System(
        energy_fn=energy_fn,
        params=params,
        param_labels=labels,
        masses=jnp.asarray(masses, dtype),
        positions=jnp.asarray(pos, dtype),
        box=None if box is None else jnp.asarray(box, dtype),
        terms_fn=terms_fn,
        neighbor_fn=neighbor_fn,
        constraints=_constraints(openmm_system, topology),
        topology=topology,
        name="openmm-system",
        metadata=metadata,
        virtual_sites=vsites,
    )


def _replace(spec, **kw):
    import dataclasses

    return dataclasses.replace(spec, **kw)


def _pme_parameters(openmm_system, force, pos):
    """OpenMM's own PME α (1/nm) and grid, from a throw-away Reference context."""
    import openmm as mm
    import openmm.unit as unit

    alpha, nx, ny, nz = force.getPMEParameters()
    alpha = _vals(alpha, unit.nanometer**-1)
    if alpha > 0 and nx > 0:
        return float(alpha), (int(nx), int(ny), int(nz))
    sys_copy = mm.System()
    for i in range(openmm_system.getNumParticles()):
        sys_copy.addParticle(openmm_system.getParticleMass(i))
    sys_copy.setDefaultPeriodicBoxVectors(*openmm_system.getDefaultPeriodicBoxVectors())
    f = mm.XmlSerializer.clone(force)
    sys_copy.addForce(f)
    ctx = mm.Context(sys_copy, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    alpha, nx, ny, nz = f.getPMEParametersInContext(ctx)
    del ctx
    return float(alpha), (int(nx), int(ny), int(nz))


def _lj_types(sigma, epsilon, atom_types):
    """Group atoms into LJ types: by force-field type name when consistent, else by (σ, ε) values."""
    n = len(sigma)
    if atom_types is not None and len(atom_types) == n:
        names, index = [], np.zeros(n, dtype=np.int32)
        key_of = {}
        for i, t in enumerate(atom_types):
            key = (t, sigma[i], epsilon[i])
            if key not in key_of:
                key_of[key] = len(names)
                names.append(t)
            index[i] = key_of[key]
        labels = _unique(names)
    else:
        keys = {}
        index = np.zeros(n, dtype=np.int32)
        for i in range(n):
            index[i] = keys.setdefault((sigma[i], epsilon[i]), len(keys))
        labels = tuple(f"lj{k}" for k in range(len(keys)))
    t_count = len(labels)
    sig_t = np.zeros(t_count)
    eps_t = np.zeros(t_count)
    sig_t[index] = sigma
    eps_t[index] = epsilon
    return index, sig_t, eps_t, labels


def _convert_nonbonded(force, n, atom_types, atom_labels, box):
    import openmm as mm
    import openmm.unit as unit

    method_map = {
        mm.NonbondedForce.NoCutoff: "NoCutoff",
        mm.NonbondedForce.CutoffPeriodic: "CutoffPeriodic",
        mm.NonbondedForce.PME: "PME",
    }
    m = force.getNonbondedMethod()
    if m not in method_map:
        names = {mm.NonbondedForce.CutoffNonPeriodic: "CutoffNonPeriodic", mm.NonbondedForce.Ewald: "Ewald"}
        raise UserInputError(
            f"NonbondedForce method {names.get(m, 'LJPME')} is not supported; use NoCutoff, CutoffPeriodic or PME"
        )
    method = method_map[m]
    q = np.zeros(n)
    sig = np.zeros(n)
    eps = np.zeros(n)
    for i in range(n):
        c, s, e = force.getParticleParameters(i)
        q[i], sig[i], eps[i] = (
            _vals(c, unit.elementary_charge),
            _vals(s, unit.nanometer),
            _vals(e, unit.kilojoule_per_mole),
        )
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise UserInputError("NonbondedForce parameter offsets are not supported")
    tindex, sig_t, eps_t, tlabels = _lj_types(sig, eps, atom_types)
    seps = np.sqrt(eps_t[tindex])
    excluded, exc = [], []
    for k in range(force.getNumExceptions()):
        i, j, cp, s, e = force.getExceptionParameters(k)
        i, j = (i, j) if i < j else (j, i)
        excluded.append((i, j))
        cp, s, e = _vals(cp, unit.elementary_charge**2), _vals(s, unit.nanometer), _vals(e, unit.kilojoule_per_mole)
        if cp == 0.0 and e == 0.0:
            continue
        qq = q[i] * q[j]
        q_scale = cp / qq if qq != 0.0 else 0.0
        q_fixed = 0.0 if qq != 0.0 else cp
        se = seps[i] * seps[j]
        e_scale = e / se if se != 0.0 else 0.0
        e_fixed = 0.0 if se != 0.0 else e
        mix = 0.5 * (sig[i] + sig[j])
        sig_mix = abs(s - mix) <= 1e-12 * max(abs(mix), 1e-30)
        exc.append((i, j, q_scale, q_fixed, e_scale, e_fixed, sig_mix, s))
    excluded = np.array(excluded, dtype=np.int32).reshape(-1, 2)
    exc_pairs = np.array([[r[0], r[1]] for r in exc], dtype=np.int32).reshape(-1, 2)
    col = lambda k, dt=np.float64: np.array([r[k] for r in exc], dtype=dt)  # noqa: E731
    cutoff = None if method == "NoCutoff" else float(_vals(force.getCutoffDistance(), unit.nanometer))
    nocutoff_pairs = None
    if method == "NoCutoff":
        iu, ju = np.triu_indices(n, 1)
        keep = np.ones(len(iu), dtype=bool)
        if len(excluded):
            key = iu.astype(np.int64) * n + ju
            keep = ~np.isin(key, excluded[:, 0].astype(np.int64) * n + excluded[:, 1])
        nocutoff_pairs = np.stack([iu[keep], ju[keep]], axis=1).astype(np.int32)
    switch = None
    if method != "NoCutoff" and force.getUseSwitchingFunction():
        switch = float(_vals(force.getSwitchingDistance(), unit.nanometer))
        if force.getUseDispersionCorrection():
            raise UserInputError("a switching function together with the dispersion correction is not supported yet")
    spec = nonbonded.NonbondedSpec(
        method=method,
        cutoff=cutoff,
        type_index=tindex,
        type_counts=np.bincount(tindex, minlength=len(tlabels)),
        excluded=excluded,
        exc_pairs=exc_pairs,
        exc_q_scale=col(2),
        exc_q_fixed=col(3),
        exc_eps_scale=col(4),
        exc_eps_fixed=col(5),
        exc_sig_mix=col(6, bool),
        exc_sig_fixed=col(7),
        exceptions_periodic=bool(force.getExceptionsUsePeriodicBoundaryConditions()) and method != "NoCutoff",
        rf_dielectric=float(force.getReactionFieldDielectric()),
        switch_distance=switch,
        dispersion_correction=bool(force.getUseDispersionCorrection()) and method != "NoCutoff",
        nocutoff_pairs=nocutoff_pairs,
    )
    params = {"charge": q, "sigma": sig_t, "epsilon": eps_t}
    labels = {"charge": atom_labels, "sigma": tlabels, "epsilon": tlabels}
    return spec, params, labels


def _convert_tabulated_lj(force, n, atom_types):
    import openmm as mm

    expr = force.getEnergyFunction().replace(" ", "")
    if (
        expr not in _TAB_LJ
        or force.getNumPerParticleParameters() != 1
        or force.getNumTabulatedFunctions() != 2
        or force.getNumGlobalParameters()
        or force.getNumInteractionGroups()
        or force.getNumComputedValues()
    ):
        raise UserInputError(f"CustomNonbondedForce {expr!r} is not supported (only CHARMM's tabulated LJ)")
    if force.getUseLongRangeCorrection() and force.getNonbondedMethod() != mm.CustomNonbondedForce.NoCutoff:
        raise UserInputError("the LJ long-range correction of CustomNonbondedForce is not supported yet; use NoCutoff")
    m = force.getNonbondedMethod()
    methods = {mm.CustomNonbondedForce.NoCutoff: "NoCutoff", mm.CustomNonbondedForce.CutoffPeriodic: "CutoffPeriodic"}
    if m not in methods:
        raise UserInputError("CustomNonbondedForce CutoffNonPeriodic is not supported")
    method = methods[m]
    tables = {}
    for k in range(2):
        nx, ny, values = force.getTabulatedFunction(k).getFunctionParameters()
        tables[force.getTabulatedFunctionName(k)] = np.array(values, dtype=np.float64).reshape(ny, nx).T
    a, b = tables["acoef"], tables["bcoef"]
    nt = a.shape[0]
    diag_a, diag_b = np.diag(a), np.diag(b)
    ok = (diag_a > 0) & (diag_b > 0)
    sig_t = np.where(ok, (np.where(ok, diag_a, 1) / np.where(ok, diag_b, 1)) ** (1 / 6), 0.1)
    eps_t = np.where(ok, diag_b**2 / (4 * np.where(ok, diag_a, 1)), 0.0)
    tindex = np.array([int(round(force.getParticleParameters(i)[0])) for i in range(n)], dtype=np.int32)
    nbfix, nbfix_sig, nbfix_eps = [], [], []
    for i in range(nt):
        for j in range(i, nt):
            s = 0.5 * (sig_t[i] + sig_t[j])
            e = np.sqrt(eps_t[i] * eps_t[j])
            ea, eb = 4 * e * s**12, 4 * e * s**6
            if abs(ea - a[i, j]) > 1e-9 * max(abs(a[i, j]), 1e-30) or abs(eb - b[i, j]) > 1e-9 * max(
                abs(b[i, j]), 1e-30
            ):
                okp = a[i, j] > 0 and b[i, j] > 0
                nbfix.append((i, j))
                nbfix_sig.append((a[i, j] / b[i, j]) ** (1 / 6) if okp else 0.1)
                nbfix_eps.append(b[i, j] ** 2 / (4 * a[i, j]) if okp else 0.0)
    names = [[] for _ in range(nt)]
    if atom_types is not None:
        for i, t in enumerate(atom_types):
            if t not in names[tindex[i]]:
                names[tindex[i]].append(t)
    tlabels = _unique("+".join(v) if v else f"type{k}" for k, v in enumerate(names))
    excl = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
    pairs = None
    if method == "NoCutoff":
        iu, ju = np.triu_indices(n, 1)
        keep = np.ones(len(iu), dtype=bool)
        if excl:
            ex = np.array(sorted(excl), dtype=np.int64)
            keep = ~np.isin(iu.astype(np.int64) * n + ju, ex[:, 0] * n + ex[:, 1])
        pairs = np.stack([iu[keep], ju[keep]], axis=1).astype(np.int32)
    import openmm.unit as unit

    switch = float(_vals(force.getSwitchingDistance(), unit.nanometer)) if force.getUseSwitchingFunction() else None
    spec = nonbonded.TabulatedLJSpec(
        method=method,
        cutoff=None if method == "NoCutoff" else float(_vals(force.getCutoffDistance(), unit.nanometer)),
        type_index=tindex,
        nbfix_pairs=np.array(nbfix, dtype=np.int32).reshape(-1, 2),
        pairs=pairs,
        switch_distance=switch if method != "NoCutoff" else None,
    )
    params = {"sigma": sig_t, "epsilon": eps_t}
    labels = {"sigma": tlabels, "epsilon": tlabels}
    if nbfix:
        params.update(nbfix_sigma=np.array(nbfix_sig), nbfix_epsilon=np.array(nbfix_eps))
        nl = _unique(f"{tlabels[i]}:{tlabels[j]}" for i, j in nbfix)
        labels.update(nbfix_sigma=nl, nbfix_epsilon=nl)
    return spec, params, labels


_VSITE_TYPES = "TwoParticleAverageSite, ThreeParticleAverageSite, OutOfPlaneSite, LocalCoordinatesSite"


def _virtual_sites(openmm_system) -> VirtualSites | None:
    """The System's virtual sites as :class:`dmd.system.VirtualSites` index/weight arrays, or None if it has none."""
    import openmm as mm
    import openmm.unit as unit

    n = openmm_system.getNumParticles()
    average, oop, local = [], [], []
    for i in range(n):
        if not openmm_system.isVirtualSite(i):
            continue
        site = openmm_system.getVirtualSite(i)
        parents = [int(site.getParticle(k)) for k in range(site.getNumParticles())]
        nested = [p for p in parents if openmm_system.isVirtualSite(p)]
        if nested:
            raise UserInputError(
                f"virtual site {i} is built on virtual site {nested[0]}; dmd places sites from real particles only: "
                "define the site directly from real atoms (e.g. in the force-field XML's <VirtualSite>)"
            )
        if isinstance(site, (mm.TwoParticleAverageSite, mm.ThreeParticleAverageSite)):
            average.append((i, parents, [float(site.getWeight(k)) for k in range(len(parents))]))
        elif isinstance(site, mm.OutOfPlaneSite):
            w = (float(site.getWeight12()), float(site.getWeight13()), _vals(site.getWeightCross(), unit.nanometer**-1))
            oop.append((i, parents, w))
        elif isinstance(site, mm.LocalCoordinatesSite):
            weights = [
                [float(v) for v in site.getOriginWeights()],
                [float(v) for v in site.getXWeights()],
                [float(v) for v in site.getYWeights()],
            ]
            loc = site.getLocalPosition()
            loc = [_vals(loc[k], unit.nanometer) for k in range(3)]
            local.append((i, parents, weights, loc))
        else:
            raise UserInputError(
                f"particle {i} is an OpenMM {_site_type_name(openmm_system, i, site)} virtual site, which dmd does "
                "not support "
                f"(supported: {_VSITE_TYPES}); use a force field whose extra sites are of a supported type "
                "(e.g. amber19/opc.xml or amber14/tip4pew.xml water)"
            )
    if not (average or oop or local):
        return None

    def padded(rows, width):
        parents = np.zeros((len(rows), width), np.int32)
        for s, r in enumerate(rows):
            parents[s, : len(r[1])] = r[1]
        return parents

    k_avg = max((len(r[1]) for r in average), default=1)
    w_avg = np.zeros((len(average), k_avg))
    for s, r in enumerate(average):
        w_avg[s, : len(r[2])] = r[2]
    k_loc = max((len(r[1]) for r in local), default=1)
    w_loc = np.zeros((len(local), 3, k_loc))
    for s, r in enumerate(local):
        for j in range(3):
            w_loc[s, j, : len(r[2][j])] = r[2][j]
    return VirtualSites(
        average_sites=np.array([r[0] for r in average], np.int32),
        average_parents=padded(average, k_avg),
        average_weights=w_avg,
        out_of_plane_sites=np.array([r[0] for r in oop], np.int32),
        out_of_plane_parents=padded(oop, 3),
        out_of_plane_weights=np.array([r[2] for r in oop], np.float64).reshape(-1, 3),
        local_sites=np.array([r[0] for r in local], np.int32),
        local_parents=padded(local, k_loc),
        local_weights=w_loc,
        local_positions=np.array([r[3] for r in local], np.float64).reshape(-1, 3),
    )


def _site_type_name(openmm_system, i, site) -> str:
    """OpenMM class name of virtual site ``i`` (SWIG returns some types, e.g. SymmetrySite, as the base class)."""
    import openmm as mm

    if type(site) is not mm.VirtualSite:
        return type(site).__name__
    import xml.etree.ElementTree as ET

    try:  # error path only: the serialized System names the site's type
        particles = ET.fromstring(mm.XmlSerializer.serialize(openmm_system)).find("Particles")
        return particles[i][0].tag
    except Exception:
        return "VirtualSite (unknown type)"


def _constraints(openmm_system, topology):
    nc = openmm_system.getNumConstraints()
    if nc == 0:
        return None
    import openmm.unit as unit

    rows = [openmm_system.getConstraintParameters(k) for k in range(nc)]
    pairs = {tuple(sorted((int(r[0]), int(r[1])))): _vals(r[2], unit.nanometer) for r in rows}
    settle = []
    geometry = None
    if topology is not None:
        for res in topology.residues():
            # a 4/5-site water's extra sites are massless virtual sites, placed after SETTLE moves O, H1, H2
            atoms = [a for a in res.atoms() if not openmm_system.isVirtualSite(a.index)]
            if len(atoms) != 3:
                continue
            els = [a.element.symbol if a.element is not None else "" for a in atoms]
            if sorted(els) != ["H", "H", "O"]:
                continue
            o = atoms[els.index("O")].index
            h = [a.index for a, e in zip(atoms, els, strict=True) if e == "H"]
            keys = [tuple(sorted((o, h[0]))), tuple(sorted((o, h[1]))), tuple(sorted((h[0], h[1])))]
            if not all(k in pairs for k in keys):
                continue
            d_oh, d_oh2, d_hh = (pairs[k] for k in keys)
            if abs(d_oh - d_oh2) > 1e-12 or (
                geometry is not None and (abs(geometry[0] - d_oh) + abs(geometry[1] - d_hh)) > 1e-12
            ):
                continue
            geometry = (d_oh, d_hh)
            settle.append((o, h[0], h[1]))
            for k in keys:
                pairs.pop(k)
    keys = sorted(pairs)
    return Constraints(
        pairs=np.array(keys, dtype=np.int32).reshape(-1, 2),
        lengths=np.array([pairs[k] for k in keys], dtype=np.float64),
        settle=np.array(settle, dtype=np.int32).reshape(-1, 3) if settle else None,
        settle_geometry=geometry,
    )
