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
list with exclusions (:mod:`dmd.forces.neighbors`), radius cutoff + skin (default 0.2 nm), in an
orthorhombic or reduced triclinic box (:func:`dmd.space.check_reduced_box`).

Virtual sites (4-site water such as OPC ``amber19/opc.xml`` / TIP4P-Ew, 5-site TIP5P, lone pairs):
TwoParticleAverageSite, ThreeParticleAverageSite, OutOfPlaneSite and LocalCoordinatesSite are
supported (:class:`dmd.system.VirtualSites`); other types (SymmetrySite) and sites built on other
sites raise :class:`~dmd.base.errors.UserInputError`. ``energy_fn`` places the sites from their parents
before computing the energy, so the sites' forces reach the parents by the chain rule, as OpenMM
distributes them; ``system.positions`` start with the sites in place (OpenMM's ``computeVirtualSites``).
Their exclusions are OpenMM's NonbondedForce exceptions. Structures need the extra particles
(``Modeller.addExtraParticles(forcefield)``); rigid 4-site waters get SETTLE on (O, H1, H2).

Modules, by concern: :mod:`~dmd.openmm_system.loading` (structure and force-field files, OpenMM's createSystem),
:mod:`~dmd.openmm_system.assembly` (one term per force, the System), :mod:`~dmd.openmm_system.bonded_forces`,
:mod:`~dmd.openmm_system.nonbonded_forces`, :mod:`~dmd.openmm_system.virtual_sites`,
:mod:`~dmd.openmm_system.constraints` and :mod:`~dmd.openmm_system.common` (units, labels).
"""

from __future__ import annotations

from dmd.openmm_system.assembly import system_from_openmm
from dmd.openmm_system.common import NONBONDED_METHODS
from dmd.openmm_system.loading import (
    atom_type_names,
    load_forcefield,
    openmm_system_from_pdb,
    read_structure,
    system_from_pdb,
)

__all__ = [
    "system_from_pdb",
    "system_from_openmm",
    "openmm_system_from_pdb",
    "read_structure",
    "load_forcefield",
    "atom_type_names",
    "NONBONDED_METHODS",
]
