"""The :class:`System`: a jit-able energy of positions and an explicit parameter pytree θ.

Units (OpenMM): positions nm, energies kJ/mol, masses amu, charges e, box nm.

Contract used by integrators, sensitivities and fitting::

    E = system.energy_fn(params, pos, box=box, neighbor=neighbor)   # scalar, kJ/mol
    terms = system.terms_fn(params, pos, box=box, neighbor=neighbor)  # {force_name: kJ/mol}

* ``params`` is a two-level dict ``{force_name: {field: array}}`` (e.g.
  ``params["NonbondedForce"]["epsilon"]`` per atom type). ``param_labels`` has
  the same structure with a tuple of human-readable labels per leaf element,
  so parameters can be selected by name (:mod:`dmd.params`).
* ``neighbor`` is a ``jax_md.partition.NeighborList`` when ``neighbor_fn`` is
  set (cutoff systems), else ``None``. Callers allocate with
  ``system.neighbor_fn.allocate(pos, box=...)`` outside jit, update with
  ``neighbor.update(pos)`` inside, and check ``neighbor.did_buffer_overflow``.
* ``box`` is ``[3]`` (orthorhombic) or ``[3, 3]`` (triclinic, rows = box
  vectors) in nm, or ``None`` for non-periodic systems. It is an argument, not
  a closure constant, so changing it does not recompile.
* ``virtual_sites`` (OpenMM virtual sites, e.g. the M site of OPC / TIP4P water): massless
  particles whose positions follow from their parents'. ``energy_fn`` places them itself
  (``pos = virtual_sites.place(pos)``) before computing the energy, so ∂E/∂x of a site is 0 and its
  force reaches the parents by the chain rule, exactly as OpenMM distributes it. Integrators give
  massless particles zero velocity and put the sites back in place after every position update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["System", "Constraints", "VirtualSites"]


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Holonomic distance constraints (OpenMM ``System.getConstraint``).

    Attributes:
      pairs: ``[n_constraints, 2]`` int atom indices.
      lengths: ``[n_constraints]`` nm.
      settle: ``[n_waters, 3]`` int (O, H1, H2) for rigid waters solved
        analytically (SETTLE); their three distances are *not* in ``pairs``.
      settle_geometry: (d_OH, d_HH) in nm, or None.
    """

    pairs: np.ndarray
    lengths: np.ndarray
    settle: np.ndarray | None = None
    settle_geometry: tuple[float, float] | None = None

    @property
    def n_constraints(self) -> int:
        n_settle = 0 if self.settle is None else 3 * len(self.settle)
        return int(len(self.pairs)) + n_settle


@dataclasses.dataclass(frozen=True)
class VirtualSites:
    """Virtual sites: massless particles placed from the positions of real (parent) particles, as OpenMM does.

    For a site v with parents x_k (nm), by OpenMM type:

    * Two/ThreeParticleAverageSite:  x_v = Σ_k w_k x_k
    * OutOfPlaneSite:  x_v = x_1 + w12 r12 + w13 r13 + w_cross (r12 × r13),  r12 = x_2 − x_1, r13 = x_3 − x_1
    * LocalCoordinatesSite:  o = Σ_k wo_k x_k, d_x = Σ_k wx_k x_k, d_y = Σ_k wy_k x_k, d_z = d_x × d_y,
      d_y ← d_z × d_x, each d normalized;  x_v = o + p_x d_x + p_y d_y + p_z d_z

    Parents are real particles (a site built on another site is refused when the System is built), so
    the groups can be placed in any order. Arrays are numpy (static); :meth:`place` is jit-able and
    vectorized over the sites of each type.

    Attributes:
      average_sites: ``[S_a]`` int site indices; ``average_parents``: ``[S_a, K]`` int (padded with
        parent 0 and weight 0); ``average_weights``: ``[S_a, K]``.
      out_of_plane_sites: ``[S_o]`` int; ``out_of_plane_parents``: ``[S_o, 3]`` int;
        ``out_of_plane_weights``: ``[S_o, 3]`` (w12, w13, w_cross; w_cross in 1/nm).
      local_sites: ``[S_l]`` int; ``local_parents``: ``[S_l, K]`` int (padded, weights 0);
        ``local_weights``: ``[S_l, 3, K]`` (origin, x, y weights); ``local_positions``: ``[S_l, 3]`` nm.
    """

    average_sites: np.ndarray
    average_parents: np.ndarray
    average_weights: np.ndarray
    out_of_plane_sites: np.ndarray
    out_of_plane_parents: np.ndarray
    out_of_plane_weights: np.ndarray
    local_sites: np.ndarray
    local_parents: np.ndarray
    local_weights: np.ndarray
    local_positions: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        """``[n_sites]`` int: every virtual-site index, sorted."""
        return np.sort(np.concatenate([self.average_sites, self.out_of_plane_sites, self.local_sites]))

    @property
    def n_sites(self) -> int:
        return int(len(self.average_sites) + len(self.out_of_plane_sites) + len(self.local_sites))

    def site_positions(self, pos, xp=jnp):
        """``[(site indices, [S, 3] site positions)]`` per type, from ``pos: [n_atoms, 3]`` nm (``xp``: jnp or np)."""
        out = []
        dtype = pos.dtype
        if len(self.average_sites):
            w = xp.asarray(self.average_weights, dtype)
            out.append((self.average_sites, xp.einsum("sk,skd->sd", w, pos[self.average_parents])))
        if len(self.out_of_plane_sites):
            p = pos[self.out_of_plane_parents]  # [S, 3 parents, 3]
            w = xp.asarray(self.out_of_plane_weights, dtype)
            r12, r13 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
            x = p[:, 0] + w[:, 0:1] * r12 + w[:, 1:2] * r13 + w[:, 2:3] * xp.cross(r12, r13)
            out.append((self.out_of_plane_sites, x))
        if len(self.local_sites):
            p = pos[self.local_parents]  # [S, K, 3]
            w = xp.asarray(self.local_weights, dtype)
            origin, dx, dy = (xp.einsum("sk,skd->sd", w[:, j], p) for j in range(3))
            dz = xp.cross(dx, dy)
            dy = xp.cross(dz, dx)
            unit = lambda d: d / xp.linalg.norm(d, axis=-1, keepdims=True)  # noqa: E731
            loc = xp.asarray(self.local_positions, dtype)
            x = origin + loc[:, 0:1] * unit(dx) + loc[:, 1:2] * unit(dy) + loc[:, 2:3] * unit(dz)
            out.append((self.local_sites, x))
        return out

    def place(self, pos):
        """``pos: [n_atoms, 3]`` nm with every virtual site moved onto its place (jit-able, differentiable).

        A jax array gives a jax array (sites overwritten with ``.at[].set``, so the result does not depend
        on the sites' input coordinates: their gradient is 0); a numpy array gives a new numpy array.
        """
        if isinstance(pos, np.ndarray):
            pos = pos.copy()
            for idx, x in self.site_positions(pos, np):
                pos[idx] = x
            return pos
        for idx, x in self.site_positions(pos, jnp):
            pos = pos.at[idx].set(x)
        return pos


@dataclasses.dataclass(frozen=True)
class System:
    """A molecular system: energy function, parameters θ, masses, start state.

    Attributes:
      energy_fn: ``(params, pos, *, box=None, neighbor=None) -> scalar`` kJ/mol; jit-able,
        differentiable in ``params`` and ``pos`` (``pos: [n_atoms, 3]`` nm).
      params: θ, ``{force_name: {field: array}}``.
      param_labels: same structure as ``params``; each leaf a tuple of labels, one per
        element of the corresponding array (e.g. atom-type names, atom-index tuples).
      masses: ``[n_atoms]`` amu.
      positions: ``[n_atoms, 3]`` nm, starting coordinates.
      box: ``[3]`` or ``[3, 3]`` nm, or None.
      terms_fn: ``(params, pos, *, box=None, neighbor=None) -> {force_name: scalar}``, kJ/mol.
      neighbor_fn: ``jax_md.partition.NeighborListFns`` for cutoff systems, else None.
      constraints: :class:`Constraints` or None.
      virtual_sites: :class:`VirtualSites` or None; ``energy_fn`` places them itself, integrators keep
        them on their sites (massless particles: ``masses`` 0).
      topology: ``openmm.app.Topology`` (or None for model systems).
      name: a short description for logs and summaries.
      metadata: free-form facts (nonbonded method, cutoff nm, force-field files...).
    """

    energy_fn: Callable[..., Any]
    params: dict
    param_labels: dict
    masses: Any
    positions: Any
    box: Any = None
    terms_fn: Callable[..., Any] | None = None
    neighbor_fn: Any = None
    constraints: Constraints | None = None
    topology: Any = None
    name: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)
    virtual_sites: VirtualSites | None = None

    @property
    def n_atoms(self) -> int:
        return int(np.shape(self.positions)[0])

    def allocate_neighbors(self, pos=None, *, build: bool = True, **kwargs):
        """Allocate a neighbour list for ``pos`` (default: start positions), or None.

        ``build=False``: a list sized for ``pos`` but built by its first ``update`` (for a caller whose compiled
        step updates the list before using it: the build is then compiled once, not also at allocation;
        docs/engine.md, "Start-up"). Lists other than :func:`dmd.forces.neighbors.pair_neighbor_list`'s are built
        at once either way."""
        if self.neighbor_fn is None:
            return None
        pos = self.positions if pos is None else pos
        if not build:
            from dmd.forces.neighbors import NeighborListFns

            if isinstance(self.neighbor_fn, NeighborListFns):
                kwargs["build"] = False
        if self.box is not None:
            kwargs.setdefault("box", self.box)
        try:
            return self.neighbor_fn.allocate(pos, **kwargs)
        except Exception as exc:  # TypeError, or jax-md's UnexpectedBoxException for space.periodic
            if "box" not in kwargs or ("box" not in str(exc) and not isinstance(exc, TypeError)):
                raise
            kwargs.pop("box")
            return self.neighbor_fn.allocate(pos, **kwargs)

    def energy(self, pos=None, params=None) -> float:
        """Convenience, not for hot loops: total energy (kJ/mol) at ``pos`` (default: start)."""
        pos = self.positions if pos is None else pos
        params = self.params if params is None else params
        nbr = self.allocate_neighbors(pos)
        return float(jax.jit(self.energy_fn)(params, pos, box=self.box, neighbor=nbr))

    def param_names(self) -> list[str]:
        """Every selectable parameter name, ``"force/field/label"`` (see :mod:`dmd.params`)."""
        from dmd.params import all_param_names

        return all_param_names(self.param_labels)
