"""Monte Carlo barostats, as OpenMM's ``MonteCarloBarostat`` (isotropic) and ``MonteCarloAnisotropicBarostat``.

Every N steps a trial volume V' = V + ΔV (ΔV uniform in [−δV, δV]) is proposed. The box is scaled by
s = (V'/V)^(1/3) and each *molecule* is translated so that its geometric centre c moves to s·c: bond
lengths, constraints, rigid waters and virtual sites are unchanged (exactly: a molecule moves as a rigid
body). The move is accepted with probability min(1, exp(−w/kT)),

    w = ΔU + P ΔV − N_mol kT ln(V'/V),

which satisfies detailed balance for the isobaric–isothermal ensemble of molecular centres (the proposal
is symmetric in V). The step δV adapts as in OpenMM: start at 1% of V; once 10 or more attempts are counted,
δV /= 1.1 when fewer than 25% of them were accepted, δV *= 1.1 (at most ``max_fraction`` V, OpenMM's 0.3) when more
than 75% were, and only then are the counts reset (OpenMM keeps counting while acceptance is in between).

Anisotropic (``anisotropic=True``): each move picks one box axis k at random and scales only that length by
V'/V (the molecules' centres along k likewise); the acceptance rule is the same, and each axis has its own
adaptive δV_k (OpenMM's MonteCarloAnisotropicBarostat with the same pressure on the three axes).

Flexible cell (:func:`monte_carlo_flexible_move`, OpenMM's MonteCarloFlexibleBarostat): each move adds a uniform
step in [−δ, δ] (δ a length, nm) to all six elements of the reduced box rows (a_x; b_x, b_y; c_x, c_y, c_z), brings
the trial back to the reduced form (rows with a negative diagonal flipped, c −= b·round(c_y/b_y), c −= a·round(c_x/a_x),
b −= a·round(b_x/a_x): the same lattice), and moves molecular centres by the diagonal ratios (a_x'/a_x, b_y'/b_y,
c_z'/c_z). It is accepted with min(1, exp(−w/kT)),

    w = ΔU + P ΔV − (N_mol − 2) kT ln(V'/V) − kT ln(a_x'² b_y' / (a_x² b_y)),

the weight of the rotation-free (lower-triangular) flexible-cell ensemble, exp(−βPV) V^(N−2) a_x² b_y (Martyna,
Tobias and Klein, "Constant pressure molecular dynamics algorithms", 1994; OpenMM's rule). δ starts at 1% of V^(1/3)
and adapts as the volume step does (at most 0.3 V^(1/3)). A crystal's shear stiffness holds its shape; a fluid has
none, so under this move a fluid's box drifts in shape (use it for solids).

Units: nm, nm³, kJ/mol, bar (``P ΔV`` converted with :data:`dmd.base.units.BAR_NM3_IN_KJ_PER_MOL`).
Orthorhombic boxes (``[3]`` lengths) or triclinic ones (reduced ``[3, 3]`` rows a, b, c): there the move scales
box vectors (all three, or the picked one), so the cell angles are kept, and molecules keep their fractional
centres; a trial box that leaves OpenMM's reduced form is rejected (the ensemble is that of reduced boxes, as a
crystal far from that boundary never notices). See docs/crystals.md, "Constant pressure".
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.units import AMU_PER_NM3_IN_G_PER_CM3, BAR_NM3_IN_KJ_PER_MOL
from dmd.space import box_volume, scale_positions

__all__ = [
    "BarostatState",
    "MoveSettings",
    "barostat_init",
    "density_g_cm3",
    "find_molecules",
    "flexible_init",
    "monte_carlo_flexible_move",
    "monte_carlo_volume_move",
    "scale_molecules",
]


def find_molecules(system) -> np.ndarray:
    """``[n_atoms]`` int molecule index of each atom: connected components of bonds, constraints, rigid
    waters and virtual-site parents (atoms linked by none of these are molecules of their own).

    Bonds come from ``system.topology`` (an ``openmm.app.Topology``) when there is one.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = system.n_atoms
    edges = [np.zeros((0, 2), np.int64)]
    top = getattr(system, "topology", None)
    if top is not None and hasattr(top, "bonds"):
        b = [(a.index, c.index) for a, c in top.bonds()]
        if b:
            edges.append(np.asarray(b, np.int64))
    cons = getattr(system, "constraints", None)
    if cons is not None:
        edges.append(np.asarray(cons.pairs, np.int64).reshape(-1, 2))
        if cons.settle is not None and len(cons.settle):
            s = np.asarray(cons.settle, np.int64)
            edges += [s[:, [0, 1]], s[:, [0, 2]]]
    vs = getattr(system, "virtual_sites", None)
    if vs is not None and vs.n_sites:
        for sites, parents in (
            (vs.average_sites, vs.average_parents),
            (vs.out_of_plane_sites, vs.out_of_plane_parents),
            (vs.local_sites, vs.local_parents),
        ):
            sites, parents = np.asarray(sites, np.int64), np.asarray(parents, np.int64)
            for k in range(parents.shape[1] if parents.ndim == 2 else 0):
                edges.append(np.stack([sites, parents[:, k]], 1))
    e = np.concatenate(edges)
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels.astype(np.int32)


def scale_molecules(positions, molecules, n_molecules: int, scale):
    """Positions with every molecule's geometric centre c moved to ``scale · c`` (rigid translations).

    Args:
      positions: ``[n_atoms, 3]`` nm, molecules whole (unwrapped coordinates). molecules: ``[n_atoms]`` int.
      n_molecules: static count. scale: scalar (isotropic) or ``[3]``.
    Returns: ``[n_atoms, 3]`` nm.
    """
    ones = jnp.ones(positions.shape[0], positions.dtype)
    count = jax.ops.segment_sum(ones, molecules, n_molecules)
    centre = jax.ops.segment_sum(positions, molecules, n_molecules) / jnp.maximum(count, 1)[:, None]
    return positions + ((scale - 1.0) * centre)[molecules]


def density_g_cm3(total_mass_amu, volume_nm3):
    """Mass density in g/cm³ from a mass in amu and a volume in nm³."""
    return total_mass_amu / volume_nm3 * AMU_PER_NM3_IN_G_PER_CM3


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["volume_scale", "n_attempted", "n_accepted", "total_attempted", "total_accepted"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class BarostatState:
    """Adaptive state of the barostat (a pytree).

    Attributes:
      volume_scale: δV, nm³ (trial ΔV uniform in [−δV, δV]); ``[]`` isotropic, ``[3]`` (one per axis) anisotropic.
      n_attempted, n_accepted: int32 counts since δV last changed (OpenMM resets them only then), shaped as δV.
      total_attempted, total_accepted: int32 counts over the whole run (acceptance statistics).
    """

    volume_scale: jax.Array
    n_attempted: jax.Array
    n_accepted: jax.Array
    total_attempted: jax.Array
    total_accepted: jax.Array

    def replace(self, **kwargs) -> BarostatState:
        return dataclasses.replace(self, **kwargs)


def barostat_init(box, dtype=jnp.float32, *, anisotropic: bool = False) -> BarostatState:
    """Initial state: δV = 1% of the box volume (OpenMM's start). ``box``: ``[3]`` or reduced ``[3, 3]`` nm."""
    v = box_volume(jnp.asarray(box, dtype))
    shape = (3,) if anisotropic else ()
    z = jnp.zeros(shape, jnp.int32)
    zt = jnp.zeros((), jnp.int32)
    return BarostatState(jnp.full(shape, 0.01, dtype) * v, z, z, zt, zt)


def _adapt(bs: BarostatState, volume, max_fraction: float) -> BarostatState:
    """OpenMM's adaptation (MonteCarloBarostatImpl::updateContextState): once 10 or more attempts are counted,
    shrink δV by 1.1 below 25% acceptance or grow it by 1.1 above 75%, and reset the counts only then (between
    25% and 75% they keep accumulating); elementwise, per axis for the anisotropic barostat."""
    due = bs.n_attempted >= 10
    lo = due & (bs.n_accepted < 0.25 * bs.n_attempted)
    hi = due & (bs.n_accepted > 0.75 * bs.n_attempted)
    vs = jnp.where(
        lo,
        bs.volume_scale / 1.1,
        jnp.where(hi, jnp.minimum(bs.volume_scale * 1.1, max_fraction * volume), bs.volume_scale),
    )
    reset = lo | hi
    z = jnp.zeros_like(bs.n_attempted)
    return bs.replace(
        volume_scale=vs,
        n_attempted=jnp.where(reset, z, bs.n_attempted),
        n_accepted=jnp.where(reset, z, bs.n_accepted),
    )


def _is_reduced(box):
    """jit-able: box rows ``[3, 3]`` in OpenMM's reduced form (|b_x|, |c_x| ≤ a_x/2, |c_y| ≤ b_y/2)."""
    return (
        (jnp.abs(box[1, 0]) <= 0.5 * box[0, 0])
        & (jnp.abs(box[2, 0]) <= 0.5 * box[0, 0])
        & (jnp.abs(box[2, 1]) <= 0.5 * box[1, 1])
    )


@dataclasses.dataclass(frozen=True)
class MoveSettings:
    """What a Monte Carlo box move takes besides the state (:func:`monte_carlo_volume_move`,
    :func:`monte_carlo_flexible_move`); build it once per run.

    Attributes:
      molecules: ``[n_atoms]`` int molecule of each atom (:func:`find_molecules`). n_molecules: static count.
      pressure_bar: P, bar. kT: kJ/mol. adapt: apply OpenMM's step-size adaptation.
      max_fraction: the step never grows past this fraction of V (volume move; OpenMM: 0.3; :mod:`dmd.npt` lowers
        it so one move stays inside the neighbour list's margin) or of V^(1/3) (flexible move).
    """

    molecules: object
    n_molecules: int
    pressure_bar: float
    kT: float
    adapt: bool = True
    max_fraction: float = 0.3


def monte_carlo_volume_move(key, bs: BarostatState, positions, box, energy, trial_energy_fn, move: MoveSettings):
    """One Monte Carlo volume move (jit-able): isotropic when ``bs.volume_scale`` is a scalar, one random
    axis when it is ``[3]`` (:func:`barostat_init` with ``anisotropic=True``).

    Args:
      key: PRNG key. bs: :class:`BarostatState`. positions: ``[n_atoms, 3]`` nm. box: ``[3]`` or ``[3, 3]`` nm.
      energy: potential energy at (positions, box), kJ/mol.
      trial_energy_fn: ``(positions, box) -> (U kJ/mol, aux)`` at the trial state (aux: e.g. a neighbour
        list, returned when accepted).
      move: :class:`MoveSettings` (molecules, pressure, kT, step adaptation).

    Returns:
      ``(accepted bool, positions, box, energy, aux or None-for-rejected-as-trial-aux, new BarostatState)``;
      on rejection positions/box/energy are the inputs and ``aux`` is the trial's (callers keep their own).
    """
    k1, k2, k3 = jax.random.split(key, 3)
    dtype = positions.dtype
    molecules, n_molecules, kT = move.molecules, move.n_molecules, move.kT
    v = box_volume(box)
    anisotropic = jnp.ndim(bs.volume_scale) == 1
    if anisotropic:
        axis = jax.random.randint(k3, (), 0, 3)
        pick = jnp.arange(3) == axis
        step = jnp.sum(jnp.where(pick, bs.volume_scale, 0.0))
    else:
        pick = jnp.ones((), bool)
        step = bs.volume_scale
    dv = step * (2.0 * jax.random.uniform(k1, (), dtype) - 1.0)
    v_new = v + dv
    ok_volume = v_new > 0
    ratio = jnp.where(ok_volume, v_new / v, 1.0)
    s = jnp.where(jnp.arange(3) == axis, ratio, 1.0) if anisotropic else jnp.cbrt(ratio)
    if jnp.ndim(box) == 2:  # triclinic: scale the box vectors (angles kept), keep molecules' fractional centres
        box_new = box * jnp.broadcast_to(s, (3,))[:, None]
        x_new = scale_positions(positions, box, box_new, molecules, n_molecules)
        ok_volume = ok_volume & _is_reduced(box_new)  # moves out of OpenMM's reduced form are rejected
    else:
        x_new = scale_molecules(positions, molecules, n_molecules, s)
        box_new = box * s
    u_new, aux = trial_energy_fn(x_new, box_new)
    w = (
        (u_new - energy)
        + move.pressure_bar * BAR_NM3_IN_KJ_PER_MOL * dv
        - n_molecules * kT * jnp.log(jnp.where(ok_volume, v_new / v, 1.0))
    )
    accept, pos, box, energy, bs = _conclude(
        k2, bs, move, w, ok_volume, pick, (v_new, v), (x_new, box_new, u_new), (positions, box, energy)
    )
    return accept, pos, box, energy, aux, bs


def _conclude(key, bs: BarostatState, move: MoveSettings, w, ok, pick, sizes, trial, current):
    """The Metropolis test of a box move and its bookkeeping, shared by the volume and the flexible move.

    Args:
      key: PRNG key of the test. w: the move's work, kJ/mol (accepted with min(1, exp(−w/kT))). ok: bool, the trial
      is admissible (a trial with a non-finite energy never is). pick: bool (scalar, or ``[3]`` the axis moved): the
      per-axis counters the move counts on. sizes: (at the trial, now) of what the step adapts to (V, or V^(1/3)).
      trial, current: ``(positions, box, energy)`` of the trial and of the present state.

    Returns:
      ``(accepted, positions, box, energy, new BarostatState)``.
    """
    (x_new, box_new, u_new), (positions, box, energy) = trial, current
    u = jax.random.uniform(key, (), positions.dtype)
    accept = ok & jnp.isfinite(u_new) & ((w <= 0) | (u < jnp.exp(-w / move.kT)))
    one = jnp.ones((), jnp.int32)
    acc = accept.astype(jnp.int32)
    bs = bs.replace(
        n_attempted=bs.n_attempted + jnp.where(pick, one, 0),
        n_accepted=bs.n_accepted + jnp.where(pick, acc, 0),
        total_attempted=bs.total_attempted + one,
        total_accepted=bs.total_accepted + acc,
    )
    if move.adapt:
        bs = _adapt(bs, jnp.where(accept, *sizes), move.max_fraction)
    pos = jnp.where(accept, x_new, positions)
    box = jnp.where(accept, box_new, box)
    return accept, pos, box, jnp.where(accept, u_new, energy), bs


_LOWER = (np.array([0, 1, 1, 2, 2, 2]), np.array([0, 0, 1, 0, 1, 2]))  # a_x; b_x, b_y; c_x, c_y, c_z


def flexible_init(box, dtype=jnp.float32) -> BarostatState:
    """Initial state of the flexible-cell move: δ = 1% of V^(1/3), nm. ``box``: ``[3]`` or ``[3, 3]`` nm."""
    z = jnp.zeros((), jnp.int32)
    return BarostatState(0.01 * jnp.cbrt(box_volume(jnp.asarray(box, dtype))).astype(dtype), z, z, z, z)


def reduce_trial_box(box):
    """jit-able: box rows ``[3, 3]`` brought to OpenMM's reduced form as the flexible barostat does (rows with a
    negative diagonal flipped, then c −= b·round(c_y/b_y), c −= a·round(c_x/a_x), b −= a·round(b_x/a_x))."""
    box = box * jnp.where(jnp.diagonal(box) < 0, -1.0, 1.0)[:, None]
    box = box.at[2].add(-box[1] * jnp.round(box[2, 1] / box[1, 1]))
    box = box.at[2].add(-box[0] * jnp.round(box[2, 0] / box[0, 0]))
    return box.at[1].add(-box[0] * jnp.round(box[1, 0] / box[0, 0]))


def monte_carlo_flexible_move(key, bs: BarostatState, positions, box, energy, trial_energy_fn, move: MoveSettings):
    """One flexible-cell Monte Carlo move (jit-able; module docstring). Same arguments and returns as
    :func:`monte_carlo_volume_move` with ``box`` ``[3, 3]`` reduced rows nm and ``bs`` from :func:`flexible_init`
    (``volume_scale`` is the length step δ, nm; ``move.max_fraction`` caps it at that fraction of V^(1/3))."""
    k1, k2 = jax.random.split(key)
    dtype = positions.dtype
    molecules, n_molecules, kT = move.molecules, move.n_molecules, move.kT
    step = bs.volume_scale * (2.0 * jax.random.uniform(k1, (6,), dtype) - 1.0)
    box_new = reduce_trial_box(box.at[_LOWER].add(step))
    diag, diag_new = jnp.diagonal(box), jnp.diagonal(box_new)
    v, v_new = jnp.prod(diag), jnp.prod(diag_new)
    x_new = scale_molecules(positions, molecules, n_molecules, diag_new / diag)
    u_new, aux = trial_energy_fn(x_new, box_new)
    w = (
        (u_new - energy)
        + move.pressure_bar * BAR_NM3_IN_KJ_PER_MOL * (v_new - v)
        - (n_molecules - 2) * kT * jnp.log(v_new / v)
        - kT * jnp.log(diag_new[0] ** 2 * diag_new[1] / (diag[0] ** 2 * diag[1]))
    )
    accept, pos, box, energy, bs = _conclude(
        k2, bs, move, w, True, True, (jnp.cbrt(v_new), jnp.cbrt(v)), (x_new, box_new, u_new), (positions, box, energy)
    )
    return accept, pos, box, energy, aux, bs
