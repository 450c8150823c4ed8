"""Assemble a :class:`dmd.System` from an ``openmm.System``: one named energy term per OpenMM force."""

from __future__ import annotations

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import UserInputError
from dmd.forces.neighbors import pair_neighbor_list
from dmd.openmm_system.bonded_forces import bonded_converter
from dmd.openmm_system.common import atom_labels, value
from dmd.openmm_system.constraints import constraints_from_openmm
from dmd.openmm_system.nonbonded_forces import lj14_term, nonbonded_term, tabulated_lj_term
from dmd.openmm_system.virtual_sites import virtual_sites_from_openmm
from dmd.space import check_reduced_box
from dmd.system import System

# the nonbonded pair list lists each pair once (the energy scatters the partner's share inside its block loop):
# half the pair work of a full list (docs/engine.md, "Half lists")
HALF_LIST = True

# neighbour capacity over the longest row at allocation. The pair kernel's cost is per column, padding included: villin
# + water's half list (longest row 276 at the PDB start, 264-269 over 200 steps; the parity rule's rows spread as a
# binomial, their longest over a long run a few % above) at 1.25 took 346 columns, at 1.1 304: a BAOAB step -2.4 to
# -7% CPU in one process (docs/engine.md, "Rebuild share and neighbour capacity"). A row past it is an overflow the
# run loop redoes wider (dmd.runloop.grow_neighbors).
OCCUPANCY_MULTIPLIER = 1.1
# ... but never fewer than 16 free slots: a 188-atom peptide crystal's rows (~60) got 7 at 1.1x, overflowed once in a
# fit round and compiled the chunk again (+17 CPU s of 51 in its CI test; 16 slots, as 1.25x gave, none)
MIN_ROW_HEADROOM = 16

_SUPPORTED = (
    "HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce, CMAPTorsionForce, NonbondedForce "
    "(NoCutoff/CutoffPeriodic/PME), CHARMM's CustomTorsionForce/CustomNonbondedForce/CustomBondForce, CMMotionRemover"
)


def _on_device(v, dtype):
    """``v`` as a jax array of ``dtype``, cast on the host and copied with ``device_put``: ``jnp.asarray`` of a
    host array compiles one small XLA program per array shape (start-up, docs/engine.md)."""
    if isinstance(v, jax.core.Tracer):
        return jnp.asarray(v, dtype)
    return jax.device_put(np.asarray(v, dtype=dtype))


def system_from_openmm(
    openmm_system,
    positions_nm,
    topology=None,
    box=None,
    atom_types=None,
    skin: float = 0.2,
    dtype=None,
    pair_kernel: str = "auto",
    rebuild_kernel: str | None = None,
    **_private,
) -> System:
    """A :class:`dmd.System` reproducing an ``openmm.System``.

    Args:
      openmm_system: the OpenMM System (forces listed in the :mod:`dmd.openmm_system` docstring).
      positions_nm: ``[n_atoms, 3]`` nm (array or OpenMM Quantity).
      topology: optional ``openmm.app.Topology`` (labels, water detection for SETTLE).
      box: ``[3]`` or ``[3, 3]`` nm; default: the System's default periodic box if it uses one.
      atom_types: optional per-atom type names for LJ θ labels (default: group by (σ, ε) values).
      skin: neighbour-list skin, nm.
      dtype: dtype for θ and positions.
      pair_kernel: real-space pair kernel of a cutoff NonbondedForce: "auto" (numba's compiled kernel for the
        energy and position forces on CPU in float32, XLA for the rest), "numba" or "xla"
        (:mod:`dmd.forces.numba_pairs`).
      rebuild_kernel: the neighbour-list rebuild: "auto" (numba's on CPU), "numba" or "xla"; None: the
        environment's ``DMD_REBUILD_KERNEL``, else auto (:func:`dmd.forces.neighbors.resolve_rebuild_kernel`).
    """
    import openmm.unit as unit

    pos = _positions(openmm_system, positions_nm)
    n = openmm_system.getNumParticles()
    vsites = virtual_sites_from_openmm(openmm_system)
    if vsites is not None:
        pos = vsites.place(pos)  # start on the sites, as OpenMM's computeVirtualSites would put them
    box = _periodic_box(openmm_system, box)
    build = _Terms()
    build.pair_kernel = pair_kernel
    _convert_forces(build, openmm_system, pos, box, atom_labels(topology, n), atom_types)

    # default: float64 values, which jax keeps as float64 under x64 and as float32 otherwise (no warning)
    dtype = jax.dtypes.canonicalize_dtype(np.float64) if dtype is None else dtype
    params = {t[0]: {k: _on_device(v, dtype) for k, v in t[1].items()} for t in build.terms}
    labels = {t[0]: {k: tuple(v) for k, v in t[2].items()} for t in build.terms}
    energy_fn, terms_fn = _energy_functions(tuple((t[0], t[3], t[4]) for t in build.terms), vsites)
    metadata = build.metadata
    neighbor_fn = None
    if any(t[4] for t in build.terms):
        neighbor_fn = pair_neighbor_list(
            n,
            box,
            build.neighbor_cutoff,
            skin=skin,
            excluded_pairs=build.excluded_for_nlist,
            full=not HALF_LIST,
            occupancy_multiplier=OCCUPANCY_MULTIPLIER,
            min_headroom=MIN_ROW_HEADROOM,
            rebuild_kernel=rebuild_kernel,
        )
        metadata["neighbor_skin_nm"] = skin
    masses = np.array([value(openmm_system.getParticleMass(i), unit.dalton) for i in range(n)])
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
        masses=_on_device(masses, dtype),
        positions=_on_device(pos, dtype),
        box=None if box is None else _on_device(box, dtype),
        terms_fn=terms_fn,
        neighbor_fn=neighbor_fn,
        constraints=constraints_from_openmm(openmm_system, topology),
        topology=topology,
        name="openmm-system",
        metadata=metadata,
        virtual_sites=vsites,
    )


def _positions(openmm_system, positions_nm):
    """``[n, 3]`` float64 nm from an array or OpenMM Quantity, checked against the System's particle count."""
    import openmm.unit as unit

    if hasattr(positions_nm, "value_in_unit"):
        positions_nm = positions_nm.value_in_unit(unit.nanometer)
    pos = np.asarray(positions_nm, dtype=np.float64)
    n = openmm_system.getNumParticles()
    if pos.shape != (n, 3) or not np.all(np.isfinite(pos)):
        raise UserInputError(f"positions must be a finite [{n}, 3] array in nm; got shape {pos.shape}")
    return pos


def _periodic_box(openmm_system, box):
    """The ``[3]`` box edges or reduced ``[3, 3]`` box vectors (rows), nm (``box`` if given, else the System's
    default box), or None if not periodic."""
    import openmm.unit as unit

    periodic = openmm_system.usesPeriodicBoundaryConditions()
    if box is None and periodic:
        vecs = openmm_system.getDefaultPeriodicBoxVectors()
        box = np.array([[value(v[k], unit.nanometer) for k in range(3)] for v in vecs])
    if box is not None:
        box = check_reduced_box(box, "periodic box")
        if box.ndim == 2 and np.abs(box - np.diag(np.diag(box))).max() <= 1e-12:
            box = np.diag(box).copy()  # orthorhombic: edge lengths
    if not periodic:
        box = None
    return box


class _Terms:
    """The terms built so far: ``(name, params, labels, fn(p, pos, box, nbr), needs_neighbor)`` and the shared
    neighbour-list settings and metadata."""

    def __init__(self):
        self.terms = []
        self.neighbor_cutoff = None
        self.excluded_for_nlist = None
        self.metadata = {"nonbonded_method": "NoCutoff", "cutoff_nm": None}
        self._names_used = defaultdict(int)
        self.pair_kernel = "auto"

    def add(self, name, params, labels, fn, needs_nbr=False):
        self._names_used[name] += 1
        if self._names_used[name] > 1:
            name = f"{name}_{self._names_used[name]}"
        self.terms.append((name, params, labels, fn, needs_nbr))


def _convert_forces(build: _Terms, openmm_system, pos, box, labels_of_atoms, atom_types):
    """Convert every force of the System into ``build`` (its ``getName()`` names the term)."""
    import openmm as mm

    n = openmm_system.getNumParticles()
    for force in openmm_system.getForces():
        kind = type(force).__name__
        name = force.getName() or kind
        if isinstance(force, mm.CMMotionRemover):
            continue
        convert = bonded_converter(force)
        if convert is not None:
            build.add(name, *convert(force))
        elif isinstance(force, mm.NonbondedForce):
            spec, params, labels, fn = nonbonded_term(
                force, openmm_system, n, atom_types, labels_of_atoms, box, pos, build.metadata, build.pair_kernel
            )
            if spec.method != "NoCutoff":
                build.neighbor_cutoff = spec.cutoff
                build.excluded_for_nlist = spec.excluded
            build.add(name, params, labels, fn, spec.method != "NoCutoff")
        elif isinstance(force, mm.CustomNonbondedForce):
            spec, params, labels, fn = tabulated_lj_term(force, openmm_system, n, atom_types, build.neighbor_cutoff)
            if spec.method != "NoCutoff":
                build.neighbor_cutoff = spec.cutoff
            build.add(name, params, labels, fn, spec.method != "NoCutoff")
        elif isinstance(force, mm.CustomBondForce):
            build.add(name, *lj14_term(force))
        else:
            raise UserInputError(f"OpenMM force {kind} ({name!r}) is not supported; supported: {_SUPPORTED}")


def _energy_functions(fns, vsites):
    """``(energy_fn, terms_fn)`` over the terms ``fns = ((name, fn, needs_neighbor), ...)``."""

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
        """Total potential energy, kJ/mol (see ``terms_fn``)."""
        terms = terms_fn(params, pos, box=box, neighbor=neighbor)
        return sum(terms.values(), jnp.zeros((), pos.dtype))

    return energy_fn, terms_fn
