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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["System", "Constraints"]


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

    @property
    def n_atoms(self) -> int:
        return int(np.shape(self.positions)[0])

    def allocate_neighbors(self, pos=None, **kwargs):
        """Allocate a neighbour list for ``pos`` (default: start positions), or None."""
        if self.neighbor_fn is None:
            return None
        pos = self.positions if pos is None else pos
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
