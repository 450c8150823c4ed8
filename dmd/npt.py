"""Constant pressure: Langevin (BAOAB) dynamics with a Monte Carlo barostat move every N steps.

``make_npt(system, ...)`` returns an :class:`NPT` whose ``cycle(state, params)`` runs N BAOAB steps at the
current box then one isotropic volume move (:mod:`dmd.barostat`); it is pure and jit-able, so
``lax.scan`` can run many cycles. :func:`run_npt` drives chunks of cycles from the host and records the
box volume and density per cycle.

The BAOAB step here is the one of :func:`dmd.integrators.langevin_middle` (OpenMM's
``LangevinMiddleIntegrator``) with the box carried as state: the integrators close over ``system.box``,
which is fixed, so the NPT step takes the box as data instead.

Neighbour list under box scaling ("scaled list"): the list is a :class:`dmd.neighbors.CellNeighborList` living in
a *reference* box b₀ (``nbr.box``, traced data) and queried with positions mapped to it, x·b₀/b. Distances in the
reference frame are real distances times b₀/b, so a list built with cutoff r_c/s_min lists every pair within r_c
as long as b/b₀ ≥ s_min (s_min = 1 − ``box_margin``). Energies always use the real box. Inside the compiled cycle,
once an edge ratio b/b₀ leaves [1 − margin/2, 1 + margin/2] the list moves to b₀ ← b and is rebuilt there (volume
trials are capped at margin/2 so that no trial leaves [1 − margin, ·]): a box change recompiles nothing. The cell
grid (cells per side) is static; it serves every box down to the one where cells would be narrower than
(cutoff + skin)/m. Only a box shrinking past that stops the chunk: the host lays out a new grid (one compilation)
and redoes the cycle. An overflowed list is grown and the chunk redone, as :func:`dmd.simulate.simulate` does.

Units: nm, ps, K, bar, kJ/mol, amu. Orthorhombic boxes. See docs/crystals.md, "Constant pressure".
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dmd.barostat import (
    BarostatState,
    MoveSettings,
    barostat_init,
    density_g_cm3,
    find_molecules,
    flexible_init,
    monte_carlo_flexible_move,
    monte_carlo_volume_move,
)
from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.constraints import make_constraint_fns
from dmd.integrators import baoab_move
from dmd.runloop import carry_overflow, overflowed, redo_on_overflow
from dmd.space import box_volume, check_reduced_box

__all__ = ["NPT", "NPTState", "make_npt", "run_npt"]

# redos of one overflowed chunk before giving up: more than dmd.runloop.MAX_REALLOCATIONS, as an NPT list grows by
# a fixed step per redo (``_Lists.grow``), not by 1.5^attempt
_MAX_OVERFLOW_REDOS = 20


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "positions",
        "velocities",
        "forces",
        "potential_energy",
        "box",
        "key",
        "step",
        "neighbor",
        "barostat",
        "stale",
    ],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class NPTState:
    """Dynamical state (pytree): positions ``[N, 3]`` nm (unwrapped), velocities ``[N, 3]`` nm/ps, forces
    ``[N, 3]`` kJ/mol/nm, potential_energy kJ/mol, box ``[3]`` nm, PRNG key, step int32, neighbour list or
    None, :class:`dmd.barostat.BarostatState`, and ``stale`` (bool: the box left the range the neighbour
    list was built for during this chunk; the host redoes the chunk)."""

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    potential_energy: jax.Array
    box: jax.Array
    key: jax.Array
    step: jax.Array
    neighbor: object
    barostat: BarostatState
    stale: jax.Array

    def replace(self, **kwargs) -> NPTState:
        return dataclasses.replace(self, **kwargs)


@dataclasses.dataclass(frozen=True)
class NPT:
    """``init(key, params, positions=None, box=None) -> NPTState``; ``cycle(state, params) -> NPTState``
    (``every`` BAOAB steps then one volume move); ``neighbor_fns`` (the list handling; ``grid_box``: the smallest
    box its static cell grid serves, nm, or the start box for box-aware lists)."""

    init: object
    cycle: object
    every: int
    dt: float
    temperature: float
    pressure_bar: float
    molecules: np.ndarray
    n_molecules: int
    neighbor_fns: object
    grid_box: tuple
    du_dparams: object = None
    masses: object = None


@dataclasses.dataclass(frozen=True)
class _Lists:
    """How the NPT cycle keeps a neighbour list valid while the box changes.

    ``scaled`` (a :class:`dmd.neighbors.CellNeighborListFns`, e.g. :func:`dmd.models.lj_fluid`): the list lives in
    its reference box b₀ (``nbr.box``, data) and sees positions x·b₀/b, with cutoff r_c/(1 − margin); ``fns`` holds
    the static cell grid laid out for ``grid`` (the smallest box it serves). See the module docstring.
    Otherwise (a ``box=``-aware list such as :func:`dmd.forces.neighbors.pair_neighbor_list`, the OpenMM
    systems): the list uses real coordinates and the real box, its all-pairs build (a cell grid is laid
    out for one box), and every volume trial rebuilds it at the trial state, so it is exact at any box.
    """

    fns: object
    scaled: bool
    grid: tuple

    def list_positions(self, x, box, nbr):
        """Positions as the list ``nbr`` sees them: x·b₀/b (scaled) or x."""
        return x * (nbr.box.astype(x.dtype) / box) if self.scaled else x

    def allocate(self, x, box, max_occupancy=None, cell_capacity=None, extra=0):
        """A list at (x, box); a scaled list's reference box is ``box``."""
        if self.scaled:
            return self.fns.allocate(x, max_occupancy=max_occupancy, cell_capacity=cell_capacity, box=box)
        # a box a hair off the list's default keeps the build off the fixed cell grid; then rebuilt exactly
        nbr = self.fns.allocate(x, box=np.asarray(box) * (1.0 + 1e-3), extra_capacity=extra)
        return self.rebuild(nbr, x, box)

    def grow(self, nbr, x, box):
        """A list with more room at (x, box), after an overflow."""
        if self.scaled:
            return self.fns.grow(nbr, self.list_positions(x, box, nbr))
        return self.allocate(x, box, extra=max(8, nbr.max_occupancy // 2))

    def update(self, nbr, x, box):
        return nbr.update(self.list_positions(x, box, nbr)) if self.scaled else nbr.update(x, box=box)

    def rebuild(self, nbr, x, box):
        """The list rebuilt at (x, box) (box-aware lists; a scaled list is only updated)."""
        if self.scaled:
            return self.update(nbr, x, box)
        far = x.at[:, 0].add(
            0.25 * (box[0, 0] if box.ndim == 2 else box[0])
        )  # every atom "moved" by b/4 > skin/2: the update rebuilds
        return nbr.set(reference_position=far).update(x, box=box)

    def rereference(self, nbr, x, box, margin):
        """jit-able, scaled lists: ``(nbr, stale)``. When an edge ratio b/b₀ left [1 − margin/2, 1 + margin/2] the
        list moves to b₀ ← b (rebuilt in place, same shapes: no compilation) if the static grid serves b; if not,
        ``stale`` is set and the host lays out a new grid (a new compilation)."""
        ratio = box / nbr.box.astype(box.dtype)
        out = jnp.any(jnp.abs(ratio - 1.0) > 0.5 * margin)
        served = self.fns.covers(box)
        nbr = jax.lax.cond(out & served, lambda n: self.fns.rebox(n, x, box), lambda n: n, nbr)
        return nbr, out & ~served


def _grid_box(box, fns, margin):
    """The smallest box of the static cell grid for a run starting at ``box`` [3] nm: the grid a box (1 − margin)·box
    would get, lowered to the least box with that many cells (cells exactly (r_c + skin)/m wide), so every box down
    to at least (1 − margin)·box, and every larger one, is served without a new grid; never below the half-box rule
    (2·(r_c + skin))."""
    lc, m = fns.list_cutoff, fns.subdivision
    n = np.floor(m * np.asarray(box, float) * (1.0 - margin) / lc)
    grid = n * lc / m if n.min() >= 2 * m + 1 else np.zeros(3)
    return tuple(float(g) for g in np.maximum(grid, 2.0 * lc) * (1.0 + 1e-9))


def _lists(system, box, margin):
    fns = system.neighbor_fn
    if fns is None:
        return None
    from dmd.neighbors import CellNeighborListFns

    if not isinstance(fns, CellNeighborListFns):
        return _Lists(fns, False, tuple(np.asarray(box, float).ravel().tolist()))
    if np.ndim(box) == 2:
        raise UserInputError(
            "NPT: a triclinic box or the flexible barostat needs a box-aware neighbour list (the OpenMM systems' "
            "pair list) or none; use the isotropic or anisotropic barostat with this system"
        )
    wide = dataclasses.replace(fns, cutoff=fns.cutoff / (1.0 - margin))
    if wide.list_cutoff > 0.5 * min(box):
        raise UserInputError(
            f"NPT: cutoff/(1 - box_margin) + skin = {wide.list_cutoff:.3f} nm exceeds half the box "
            f"({0.5 * min(box):.3f} nm): use a larger system or a smaller box_margin"
        )
    grid = _grid_box(box, wide, margin)
    return _Lists(dataclasses.replace(wide, box=grid), True, grid)


def make_npt(
    system,
    *,
    dt: float,
    temperature: float,
    friction: float,
    pressure_bar: float,
    every: int = 25,
    box_margin: float = 0.03,
    reference_box=None,
    adapt: bool = True,
    extra_energy=None,
    anisotropic: bool = False,
    flexible: bool = False,
) -> NPT:
    """An NPT propagator (BAOAB + Monte Carlo barostat every ``every`` steps).

    Args:
      system: :class:`dmd.System` with an orthorhombic ``box`` ``[3]`` nm.
      dt: ps. temperature: K. friction: 1/ps. pressure_bar: bar. every: steps between volume moves.
      box_margin: relative box change the scaled neighbour list covers: it moves to the current box (in the jitted
        cycle, no compilation) once an edge changed by more than box_margin/2 since its last move.
      reference_box: the box the static cell grid is laid out around (default ``system.box``; it serves boxes down
        to (1 − box_margin)·reference_box and every larger one).
      adapt: OpenMM's adaptive volume step.
      extra_energy: optional ``volume_nm3 -> kJ/mol`` added to U (e.g. an analytic long-range dispersion
        correction, which depends on V only).
      anisotropic: scale one random box axis per move (MonteCarloAnisotropicBarostat) instead of all three.
      flexible: move all six reduced box elements (MonteCarloFlexibleBarostat,
        :func:`dmd.barostat.monte_carlo_flexible_move`; box rows ``[3, 3]``, a ``[3]`` box is made diagonal rows):
        needs a box-aware neighbour list or none.

    With a scaled neighbour list, the volume step δV is capped at ``box_margin``·V/2 so that no trial leaves the
    range the list covers (dense liquids adapt to δV well below that).

    Over 100 lines because init, the BAOAB step, the volume cycle and ∂U/∂θ share one set of closures (masses,
    constraints, list handling) that jit needs as constants; split, they would pass ten arguments each.
    """
    if system.box is None:
        raise UserInputError("NPT needs a periodic box ([3] lengths or reduced [3, 3] vectors in nm); give it a box")
    check_reduced_box(system.box, "NPT box")
    if every < 1:
        raise UserInputError(f"barostat every={every}; pass a positive number of steps")
    if not (np.isfinite(pressure_bar) and pressure_bar > 0):
        raise UserInputError(f"pressure {pressure_bar} bar: pass a positive pressure in bar (e.g. 1.0)")
    if not 0 < box_margin < 0.3:
        raise UserInputError(f"box_margin={box_margin}; pass a relative margin in (0, 0.3), e.g. 0.03")
    if flexible and anisotropic:
        raise UserInputError("barostat: pick one of anisotropic and flexible")
    if flexible and np.ndim(system.box) == 1:
        system = dataclasses.replace(system, box=np.diag(np.asarray(system.box, float)))
    if flexible and reference_box is not None and np.ndim(reference_box) == 1:
        reference_box = np.diag(np.asarray(reference_box, float))
    kT = KB_KJ_PER_MOL_K * temperature
    masses = jnp.asarray(system.masses)
    massive = masses > 0
    safe = jnp.where(massive, masses, 1.0)
    inv_m = jnp.where(massive, 1.0 / safe, 0.0)[:, None]
    a = float(np.exp(-friction * dt))
    c = jnp.where(massive, jnp.sqrt((1 - a**2) * kT / safe), 0.0)[:, None]
    cons = make_constraint_fns(system.constraints, safe)
    vs = system.virtual_sites
    place = (lambda x: x) if vs is None or vs.n_sites == 0 else vs.place
    molecules = find_molecules(system)
    n_mol = int(molecules.max()) + 1
    mol_j = jnp.asarray(molecules)
    ref_a = np.asarray(system.box if reference_box is None else reference_box, float)
    ref = tuple(map(float, ref_a)) if ref_a.ndim == 1 else tuple(tuple(map(float, r)) for r in ref_a)
    lists = _lists(system, ref, box_margin)
    scaled = lists is not None and lists.scaled
    max_fraction = 0.5 * box_margin if scaled else 0.3
    settings = MoveSettings(mol_j, n_mol, pressure_bar, kT, adapt=adapt, max_fraction=max_fraction)
    extra = (lambda v: 0.0) if extra_energy is None else extra_energy

    def energy(params, x, box, nbr):
        if nbr is not None:
            nbr = lists.update(nbr, x, box)
        u = system.energy_fn(params, x, box=box, neighbor=nbr)
        return u + extra(box_volume(box)), nbr

    def energy_forces(params, x, box, nbr):
        (u, nbr), g = jax.value_and_grad(energy, argnums=1, has_aux=True)(params, x, box, nbr)
        return u, -g, nbr

    def init(key, params, positions=None, box=None):
        x = place(jnp.asarray(system.positions if positions is None else positions))
        box = jnp.asarray(system.box if box is None else box, x.dtype)
        box = jnp.diag(box) if flexible and box.ndim == 1 else box
        key, vkey = jax.random.split(key)
        v = jax.random.normal(vkey, x.shape, x.dtype) * jnp.sqrt(kT * inv_m).astype(x.dtype)
        if cons is not None:
            v = cons.velocities(v, x)
        nbr = None if lists is None else lists.allocate(x, box)
        u, f, nbr = energy_forces(params, x, box, nbr)
        return NPTState(
            x,
            v,
            f,
            u,
            box,
            key,
            jnp.zeros((), jnp.int32),
            nbr,
            flexible_init(box, x.dtype) if flexible else barostat_init(box, x.dtype, anisotropic=anisotropic),
            jnp.zeros((), bool),
        )

    def baoab(st, params):
        key, nkey = jax.random.split(st.key)
        x_new, v = baoab_move(st.positions, st.velocities, st.forces, nkey, dt=dt, inv_m=inv_m, a=a, c=c, cons=cons)
        x_new = place(x_new)
        u, f, nbr = energy_forces(params, x_new, st.box, st.neighbor)
        return st.replace(
            positions=x_new, velocities=v, forces=f, potential_energy=u, key=key, step=st.step + 1, neighbor=nbr
        )

    def cycle(st, params):
        st = jax.lax.fori_loop(0, every, lambda i, s: baoab(s, params), st)
        key, bkey = jax.random.split(st.key)

        def trial(x, box):
            nbr = st.neighbor
            if nbr is not None and not scaled:
                nbr = lists.rebuild(nbr, x, box)
            return energy(params, x, box, nbr)

        move = monte_carlo_flexible_move if flexible else monte_carlo_volume_move
        accept, x, box, u, nbr_trial, bs = move(
            bkey,
            st.barostat,
            st.positions,
            st.box,
            st.potential_energy,
            trial,
            settings,
        )
        nbr = st.neighbor
        if nbr is not None:
            nbr = jax.tree_util.tree_map(lambda n, o: jnp.where(accept, n, o), nbr_trial, nbr)
            nbr = carry_overflow(nbr, nbr_trial)  # a rejected trial scored with missing pairs: redo the chunk too
        stale = st.stale
        if scaled:  # the list follows the box (no compilation) while the grid serves it; else the host regrids
            nbr, off_grid = lists.rereference(nbr, x, box, box_margin)
            stale = stale | off_grid
        # forces at the new state (positions moved rigidly per molecule: recompute)
        _, f, nbr = energy_forces(params, x, box, nbr)
        return st.replace(
            positions=x,
            box=box,
            potential_energy=u,
            forces=jnp.where(accept, f, st.forces),
            key=key,
            neighbor=nbr,
            barostat=bs,
            stale=stale,
        )

    def du_dparams(st, params, tangents):
        """``[P]`` directional derivatives ∂U/∂θ·t_p at the state (positions and box fixed), one per tangent
        pytree t_p (e.g. :meth:`dmd.params.ParamSelection.tangents`)."""

        def u(p):
            return energy(p, st.positions, st.box, st.neighbor)[0]

        return jnp.stack([jax.jvp(u, (params,), (t,))[1] for t in tangents])

    grid = ref if lists is None else lists.grid
    return NPT(init, cycle, every, dt, temperature, pressure_bar, molecules, n_mol, lists, grid, du_dparams, masses)


def _run_chunk(npt, n_cycles, tangents=None, record_positions=False):
    """A jitted scan of ``n_cycles`` cycles that freezes at the last cycle whose box stayed in the
    neighbour list's range: once a cycle turns ``stale``, the state is held (stale set) and the host
    rebuilds the list there and redoes that cycle with the same key, so no cycle is lost or biased."""

    def body(st, params):
        new = npt.cycle(st, params)
        bad = new.stale & ~st.stale
        new = jax.tree_util.tree_map(lambda o, n: jnp.where(bad | st.stale, o, n), st, new)
        new = new.replace(stale=st.stale | bad)
        du = npt.du_dparams(new, params, tangents) if tangents else jnp.zeros(0)
        extra = {"box": new.box, "kinetic": 0.5 * jnp.sum(npt.masses[:, None] * new.velocities**2)}
        if record_positions:
            extra["positions"] = new.positions.astype(jnp.float32)
        return new, (box_volume(new.box), new.potential_energy, new.stale, du, extra)

    @jax.jit
    def run(st, params):
        return jax.lax.scan(lambda s, _: body(s, params), st, None, length=n_cycles)

    return run


def run_npt(
    system,
    *,
    n_cycles: int,
    chunk: int = 100,
    seed: int = 0,
    params=None,
    state: NPTState | None = None,
    tangents=None,
    on_chunk=None,
    record_positions: bool = False,
    cache: dict | None = None,
    **settings,
):
    """Run ``n_cycles`` NPT cycles (each ``every`` BAOAB steps plus one volume move).

    ``settings`` are the propagator's keywords of :func:`make_npt`, their one home (``dt``, ``temperature``,
    ``friction``, ``pressure_bar`` required; ``every``, ``box_margin``, ``extra_energy``, ``anisotropic``,
    ``flexible`` optional); ``reference_box`` is chosen here (the cell grid follows the box).

    The scaled neighbour list follows the box inside the compiled chunk (:meth:`_Lists.rereference`); only when the
    box shrinks below what the static cell grid serves does a chunk stop at the last cycle before, the host lays
    out a grid at that box (one compilation) and redoes the cycle that left with the same random numbers. A chunk
    whose list overflowed is redone with a larger capacity.

    Returns:
      dict with ``volume_nm3`` ``[n_cycles]``, ``density_g_cm3`` ``[n_cycles]``, ``potential_energy``
      ``[n_cycles]`` kJ/mol, ``acceptance`` (fraction of volume moves accepted), ``rebuilds`` (new cell grids),
      ``compilations`` (compiled chunks held in ``cache`` after the run, all runs sharing it together), the final
      ``state``, and ``du_dtheta`` ``[n_cycles, P]`` kJ/mol per
      unit θ at each cycle's end when ``tangents`` (P one-hot θ pytrees, :meth:`dmd.params.ParamSelection.tangents`)
      are given, else None (the NPT fluctuation estimator's ∂H/∂θ: H = U + PV, PV does not depend on θ).

    ``on_chunk(state, records)``, when given, is called after each completed chunk with the chunk's per-cycle
    ``records`` (``box`` ``[n, 3]``, ``potential``, ``kinetic`` kJ/mol, ``positions`` ``[n, N, 3]`` float32 when
    ``record_positions``); a true return value stops the run there (e.g. a signal). A ``state`` whose
    ``neighbor`` is None (a checkpoint) gets a list allocated at its box.

    ``cache``: a dict the caller keeps across runs of the same system, settings and ``tangents`` (a fit's rounds):
    propagators and compiled chunks are kept there by cell grid, and a run whose start box (``system.box``) a cached
    grid serves reuses it, with the list capacities it was compiled for when they suffice, instead of compiling
    again.

    Over 100 lines: the host loop's three outcomes (overflow redo, stale rebuild, record) share its counters.
    """
    params = system.params if params is None else params
    if "reference_box" in settings:
        raise TypeError("run_npt lays out the cell grid itself; pass no reference_box")
    build = functools.partial(make_npt, system, **settings)
    store = {} if cache is None else cache
    props = store.setdefault("propagators", {})

    capacities = store.setdefault("capacities", {})

    def propagator(box):
        for cached in props.values():  # a cached grid serves this box: no new compilation
            lists = cached.neighbor_fns
            if lists is None or not lists.scaled or lists.fns.covers(np.asarray(box, float)):
                return cached
        made = build(reference_box=np.asarray(box))
        props[made.grid_box] = made
        return made

    def allocate(npt, x, box, like=None):
        """A list at (x, box) with the capacities a compiled chunk has (``like``'s, else the cache's) when enough."""
        lists = npt.neighbor_fns
        if not lists.scaled:
            return lists.allocate(x, box)
        caps = (like.max_occupancy, like.cell_capacity) if like is not None else capacities.get(npt.grid_box)
        if caps is not None:
            nbr = lists.allocate(x, box, max_occupancy=caps[0], cell_capacity=caps[1])
            if not overflowed(nbr):
                return nbr
        return lists.allocate(x, box)

    npt = propagator(system.box if state is None else state.box)
    if state is None:
        state = npt.init(jax.random.PRNGKey(seed), params, positions=system.positions, box=system.box)
        if npt.neighbor_fns is not None and npt.grid_box in capacities:
            state = state.replace(neighbor=allocate(npt, state.positions, state.box))  # the compiled capacities
    elif state.neighbor is None and npt.neighbor_fns is not None:
        state = state.replace(neighbor=allocate(npt, state.positions, state.box))
    total_mass = float(np.sum(np.asarray(system.masses)))
    vols, pes, dus = [], [], []
    rebuilds = 0
    done = 0
    runners = store.setdefault("runners", {})
    while done < n_cycles:
        n = min(chunk, n_cycles - done)
        key = (id(npt), n, record_positions)
        if key not in runners:
            runners[key] = _run_chunk(npt, n, tangents, record_positions)
        run_chunk, fns = runners[key], npt.neighbor_fns
        # an overflowed list dropped pairs somewhere in the chunk: redo it with more room (dmd.runloop)
        state, (new, (v, u, stale, du, extra)), _ = redo_on_overflow(
            lambda st, run_chunk=run_chunk: run_chunk(st, params),
            state,
            neighbor_of=lambda out: out[0].neighbor,
            regrow=lambda st, _out, _attempt, fns=fns: st.replace(neighbor=fns.grow(st.neighbor, st.positions, st.box)),
            max_attempts=_MAX_OVERFLOW_REDOS,
        )
        good = int(np.sum(~np.asarray(stale)))
        vols.append(np.asarray(v)[:good])
        pes.append(np.asarray(u)[:good])
        dus.append(np.asarray(du)[:good])
        done += good
        state = new
        stop = on_chunk is not None and on_chunk(
            new, {k: np.asarray(a)[:good] for k, a in dict(extra, potential=u).items()}
        )
        if bool(new.stale):  # the box left what the cell grid serves after `good` cycles: a grid at this box
            rebuilds += 1
            npt = propagator(np.asarray(state.box))
            nbr = allocate(npt, state.positions, state.box, like=state.neighbor)
            state = state.replace(neighbor=nbr, stale=jnp.zeros((), bool))
        if npt.neighbor_fns is not None and npt.neighbor_fns.scaled:
            capacities[npt.grid_box] = (state.neighbor.max_occupancy, state.neighbor.cell_capacity)
        if stop:
            break
    vol = np.concatenate(vols) if vols else np.zeros(0)
    bs = state.barostat
    return {
        "volume_nm3": vol,
        "density_g_cm3": density_g_cm3(total_mass, vol),
        "potential_energy": np.concatenate(pes) if pes else np.zeros(0),
        "du_dtheta": np.concatenate(dus) if tangents and dus else None,
        "acceptance": float(bs.total_accepted) / max(int(bs.total_attempted), 1),
        "rebuilds": rebuilds,
        "compilations": sum(r._cache_size() for r in runners.values()),
        "state": state,
    }
