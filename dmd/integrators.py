"""Integrators: seed-form Langevin, BAOAB / LangevinMiddle, velocity Verlet.

Each integrator is a factory returning pure ``init`` and ``step`` functions over an
:class:`IntegratorState` pytree (positions, velocities, forces, potential energy, PRNG key, step,
neighbour list), as jax-md's ``simulate`` does; θ is an explicit argument of ``step``.

**Seed-form Langevin** (Y. Zhao, "An exact solution for fitting parameters to ensemble observables", technical
note, eq. 4-5; docs/sensitivities.md), :func:`langevin`::

    v_t = a v_{t-1} - b ∇E(x_{t-1}; θ) + c n_{t-1}
    x_t = x_{t-1} + v_t δt

with, per atom of mass m (amu), friction γ (1/ps), thermal energy kT (kJ/mol), step δt (ps):
a = exp(−γ δt), b = (1 − a)/(γ m) (→ δt/m as γ → 0), c = sqrt((1 − a²) kT / m).
The velocity update is the exact Ornstein-Uhlenbeck step for a force held constant over δt.

**LangevinMiddle / BAOAB** (Zhang, Liu, Zhang & Ju 2019, J. Phys. Chem. A 123, 6056,
doi:10.1021/acs.jpca.9b02771; OpenMM's ``LangevinMiddleIntegrator``), :func:`langevin_middle`::

    v ← v + δt F(x)/m                       (B, then constrain velocities)
    x' = x + v δt/2                           (A)
    v ← a v + c n                            (O, a = exp(−γ δt), c = sqrt((1 − a²) kT/m))
    x' ← x' + v δt/2                          (A)
    x'' = constrain(x');  v ← v + (x'' − x')/δt;  x ← x''   (as OpenMM)

Velocities are leapfrog (half-step) velocities, as in OpenMM.

**Velocity Verlet** (NVE), :func:`velocity_verlet`::

    v ← v + δt/2 F(x)/m;  x ← x + δt v;  v ← v + δt/2 F(x)/m

With constraints (:mod:`dmd.constraints`) positions are SHAKEn after each drift and velocities
RATTLEd after each kick; after SHAKE the velocity gets the constraint displacement,
v ← v + (x_c − x_unc)/δt (for the seed form and Verlet this equals (x_c − x)/δt).

**Massless particles** (mass 0: OpenMM virtual sites such as OPC's M site, or atoms OpenMM holds
fixed) get 1/m = 0 and zero noise, so their velocity stays 0 and they add nothing to the kinetic
energy or the degrees of freedom. Virtual sites (``system.virtual_sites``) are put back on their
sites (:meth:`dmd.system.VirtualSites.place`) in ``init`` and after every position update, as
OpenMM's integrators do, so trajectories show them where the energy puts them.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.runloop import compiled_for
from dmd.space import wrap_positions

__all__ = [
    "wrap_for_neighbors",
    "step_closures",
    "langevin_coefficients",
    "IntegratorState",
    "Integrator",
    "langevin",
    "langevin_middle",
    "baoab_move",
    "velocity_verlet",
    "make_integrator",
    "INTEGRATORS",
    "kinetic_energy",
    "n_degrees_of_freedom",
    "relax_overlaps",
]


def langevin_coefficients(dt, friction, kT, masses):
    """Seed-form Langevin coefficients (a, b, c) of "v ← a v − b∇E + c n; x ← x + v δt".

    Args:
      dt: time step δt, ps.
      friction: γ, 1/ps (> 0; use velocity Verlet for γ = 0).
      kT: thermal energy, kJ/mol (= KB_KJ_PER_MOL_K * temperature_K).
      masses: ``[n_atoms]`` amu.

    Returns:
      a: scalar; b: ``[n_atoms, 1]`` ps/amu; c: ``[n_atoms, 1]`` nm/ps (b = c = 0 for massless particles).
    """
    if isinstance(masses, np.ndarray):  # set-up outside jit: numpy, no small XLA compilations (docs/engine.md)
        xp, a = np, float(np.exp(-friction * dt))
    else:
        xp, masses = jnp, jnp.asarray(masses)
        a = jnp.exp(-friction * dt)
    massive, safe = _massive(masses)
    b = xp.where(massive, (1 - a) / (friction * safe), 0.0)[:, None]
    c = xp.where(massive, xp.sqrt((1 - a**2) * kT / safe), 0.0)[:, None]
    return a, b, c


def _massive(masses):
    """(m > 0 mask, masses with the zeros replaced by 1 so that 1/m and √(kT/m) stay finite under ``where``);
    numpy for numpy masses (set-up outside jit), jax otherwise."""
    xp = np if isinstance(masses, np.ndarray) else jnp
    massive = masses > 0
    return massive, xp.where(massive, masses, masses.dtype.type(1))


def _inverse_masses(masses):
    """``[n_atoms, 1]`` 1/m, amu⁻¹, 0 for massless particles (they never move on their own)."""
    xp = np if isinstance(masses, np.ndarray) else jnp
    massive, safe = _massive(masses)
    return xp.where(massive, 1 / safe, masses.dtype.type(0))[:, None]


def _site_placer(system):
    """``x -> x`` with virtual sites on their places (identity without virtual sites)."""
    vsites = getattr(system, "virtual_sites", None)
    if vsites is None or vsites.n_sites == 0:
        return lambda x: x
    return vsites.place


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["positions", "velocities", "forces", "potential_energy", "key", "step", "neighbor"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class IntegratorState:
    """Dynamical state (a pytree).

    Attributes:
      positions: ``[n_atoms, 3]`` nm (not wrapped into the box: trajectories stay continuous).
      velocities: ``[n_atoms, 3]`` nm/ps (half-step velocities for the Langevin forms).
      forces: ``[n_atoms, 3]`` kJ/mol/nm at ``positions``.
      potential_energy: scalar kJ/mol at ``positions``.
      key: PRNG key (split every step).
      step: int32 scalar, steps taken.
      neighbor: neighbour list (jax-md ``NeighborList`` or :class:`dmd.neighbors.CellNeighborList`) or None.
    """

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    potential_energy: jax.Array
    key: jax.Array
    step: jax.Array
    neighbor: object = None

    def replace(self, **kwargs) -> IntegratorState:
        return dataclasses.replace(self, **kwargs)


@dataclasses.dataclass(frozen=True)
class Integrator:
    """``init(key, params, positions=None, velocities=None, neighbor=None) -> IntegratorState`` and
    ``step(state, params) -> IntegratorState``, with the settings they were built with.

    For run loops that compile the energy once (docs/engine.md, "Start-up"): ``start`` takes ``init``'s arguments
    and returns the same state but for its forces and energy (zeros, not yet computed: nothing is compiled but the
    velocity draw), and ``advance(state, params, ready)`` is ``step`` when the traced bool ``ready`` is true, and
    when false computes the forces and energy at the state's positions without moving (the rest of ``init``). A
    loop whose body is ``advance`` holds one copy of the energy in its program and starts from ``start``'s state
    with ``ready`` false; ``advance(start(...), params, False)`` equals ``init(...)`` to float32 round-off.
    ``step`` and ``advance`` take ``energy=False`` to skip the potential energy (NaN in the state; the same
    trajectory): a loop that reports the energy every few steps computes it then (:mod:`dmd.simulate`).
    """

    init: Callable
    step: Callable
    name: str
    dt: float
    temperature: float | None
    friction: float | None
    n_dof: int
    start: Callable | None = None
    advance: Callable | None = None


def kinetic_energy(velocities, masses):
    """½ Σ m v², kJ/mol (velocities nm/ps, masses amu)."""
    return 0.5 * jnp.sum(masses[:, None] * velocities * velocities)


def n_degrees_of_freedom(system) -> int:
    """3 N_massive minus constraints (Langevin thermalizes the centre of mass too, so it is not removed).

    Massless particles (virtual sites) carry no kinetic energy and are not counted, as in OpenMM.
    """
    from dmd.constraints import n_constraint_dof

    dim = int(jnp.shape(system.positions)[1])
    n_massive = int(np.count_nonzero(np.asarray(system.masses) > 0))
    return dim * n_massive - n_constraint_dof(system.constraints)


def wrap_for_neighbors(system, neighbor):
    """Positions as the neighbour list wants them.

    jax-md's own cell lists bin positions without wrapping (negative coordinates land in wrong
    cells), so they get positions wrapped into an orthorhombic box; :mod:`dmd.neighbors` and
    minimum-image lists take unwrapped positions (wrapping would trigger needless rebuilds).
    """
    box = system.box
    if box is None or jnp.ndim(box) != 1 or getattr(neighbor, "cell_list_fn", None) is None:
        return lambda x: x
    return lambda x: wrap_positions(x, box)


def _energy_and_forces(system):
    """(params, x, neighbor, energy=True) -> (E kJ/mol, F = −∇E kJ/mol/nm, updated neighbor); with ``energy``
    false E is NaN and only the gradient is computed (the energy costs villin + water ~6 of ~50 CPU ms per step:
    docs/engine.md, "Villin step profile after fused pairs")."""
    box = system.box

    def fn(params, x, neighbor, energy=True):
        if neighbor is not None:
            neighbor = neighbor.update(wrap_for_neighbors(system, neighbor)(x))
        efn = lambda p: system.energy_fn(params, p, box=box, neighbor=neighbor)  # noqa: E731
        if not energy:
            g = jax.grad(efn)(x)
            return jnp.full((), jnp.nan, g.dtype), -g, neighbor
        e, g = jax.value_and_grad(efn)(x)
        return e, -g, neighbor

    return fn


def relax_overlaps(system, params, x, neighbor=None, *, dt: float, max_kick: float = 0.05, max_iter: int = 500):
    """Remove the overlaps that would blow up the first steps of dynamics; a no-op where there are none.

    Positions sampled at other parameters (a fit's previous round: σ raised by 20% puts neighbours at 0.8σ) can
    start dynamics with forces that move an atom a large fraction of σ in one step; the integrator then explodes
    by chance. Like OpenMM users' ``minimizeEnergy`` before a run, this walks down the force (steepest descent,
    the largest move 0.005 nm per iteration) until no atom would move more than ``max_kick`` nm from rest in one
    step, |F_i|/m_i·δt² ≤ max_kick, or ``max_iter`` iterations. Positions that already meet it are returned
    unchanged (bit for bit), so ordinary starts are unaffected. Systems with constraints or virtual sites are
    returned unchanged (their moves need the constraint projection the integrators apply).

    Args:
      system: :class:`dmd.System`. params: θ. x: ``[N, 3]`` nm. neighbor: its neighbour list or None.
      dt: the time step of the dynamics that follows, ps. max_kick: nm. max_iter: iterations at most.

    Returns:
      ``(x, neighbor, n_iter)``: relaxed positions, the list updated to them, iterations taken.
    """
    vsites = getattr(system, "virtual_sites", None)
    if system.constraints is not None or (vsites is not None and vsites.n_sites):
        return x, neighbor, 0
    settings = (float(dt), float(max_kick), int(max_iter))  # compiled once per system: a fit calls this every round
    relax = compiled_for(_RELAX_CACHE, system, settings, lambda: _make_relax(system, dt, max_kick, max_iter))
    x_new, nb, n = relax(params, jnp.asarray(x), neighbor)
    n = int(n)
    return (x, neighbor, 0) if n == 0 else (x_new, nb, n)


_RELAX_CACHE: collections.OrderedDict = collections.OrderedDict()  # dmd.runloop.compiled_for's store


def _make_relax(system, dt, max_kick, max_iter):
    efn = _energy_and_forces(system)
    m = np.asarray(system.masses, float)
    inv_m = np.where(m > 0, 1.0 / np.maximum(m, 1e-30), 0.0)[:, None]  # massless sites never move

    def kick(f):
        return jnp.max(jnp.linalg.norm(f * jnp.asarray(inv_m, f.dtype), axis=-1)) * dt * dt

    @jax.jit
    def run(params, x, neighbor):
        def cond(c):
            i, _, _, f = c
            return (i < max_iter) & (kick(f) > max_kick)

        def body(c):
            i, x, nb, f = c
            fn = jnp.linalg.norm(f, axis=-1)
            x = x + f * (0.005 / jnp.maximum(jnp.max(fn), 1e-30))
            _, f, nb = efn(params, x, nb)
            return i + 1, x, nb, f

        _, f0, nb0 = efn(params, x, neighbor)
        i, x, nb, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, nb0, f0))
        return x, nb, i

    return run


def _constraint_fns(system, masses):
    from dmd.base.errors import UserInputError
    from dmd.constraints import make_constraint_fns

    cons = system.constraints
    if cons is not None:
        m = np.asarray(masses)
        atoms = [np.asarray(cons.pairs).reshape(-1)]
        if cons.settle is not None:
            atoms.append(np.asarray(cons.settle).reshape(-1))
        atoms = np.concatenate(atoms).astype(np.int64)
        if atoms.size and np.any(m[atoms] <= 0):
            bad = int(atoms[m[atoms] <= 0][0])
            raise UserInputError(
                f"particle {bad} is massless but constrained; constraints need massive particles: drop the "
                "constraint or give the particle a mass"
            )
    # massless particles are never constrained (checked above): unit mass keeps SHAKE's 1/m finite
    return make_constraint_fns(cons, _massive(masses)[1])


def _maxwell_velocities(key, masses, kT, shape, dtype):
    massive, safe = _massive(masses)
    sd = jnp.where(massive, jnp.sqrt(kT / safe), 0.0)
    return jax.random.normal(key, shape, dtype) * sd[:, None]


_INIT_CACHE: collections.OrderedDict = collections.OrderedDict()  # dmd.runloop.compiled_for's store


def _make_init(system, kT, efn, cons, masses):
    """``(init, start)`` (:class:`Integrator`), each one compiled function: evaluated op by op, the first energy and
    gradient of a force-field system cost ~200 small XLA compilations (~10 s); jitted, one. Only the neighbour-list
    allocation (which sizes buffers from the positions) runs outside. ``start`` leaves the forces out (zeros, energy
    0), for loops that compute them in their own program (:attr:`Integrator.advance`). (Withdrawn once because a fit
    diverged with it: the first state agrees with the op-by-op one to float32 round-off; the divergence was chaos from
    a start overlapped by the new σ, which :func:`relax_overlaps` now removes.)"""
    place = _site_placer(system)
    vsites = getattr(system, "virtual_sites", None)
    place_jit = jax.jit(place) if vsites is not None and vsites.n_sites else place

    @functools.partial(jax.jit, static_argnums=5)
    def state_at(key, params, x, velocities, neighbor, with_forces):
        massive = (jnp.asarray(masses) > 0)[:, None]
        key, vkey = jax.random.split(key)
        if velocities is None:
            t = 0.0 if kT is None else kT
            v = _maxwell_velocities(vkey, masses.astype(x.dtype), t, x.shape, x.dtype)
        else:
            v = jnp.where(massive, jnp.asarray(velocities, x.dtype), 0.0)
        if cons is not None:
            v = cons.velocities(v, x)
        if with_forces:
            e, f, neighbor = efn(params, x, neighbor)
        else:
            e, f = jnp.zeros((), x.dtype), jnp.zeros_like(x)
        return IntegratorState(x, v, f, e, key, jnp.zeros((), jnp.int32), neighbor)

    def make(with_forces):
        def init(key, params, positions=None, velocities=None, neighbor=None):
            x = place_jit(jnp.asarray(system.positions if positions is None else positions))
            if neighbor is None and system.neighbor_fn is not None:
                # start: the first advance builds the list inside the caller's program (docs/engine.md)
                neighbor = system.allocate_neighbors(x, build=with_forces)
            return state_at(key, params, x, velocities, neighbor, with_forces)

        return init

    return make(True), make(False)


def _closures(system):
    """What every integrator's ``step`` closes over: (masses ``[N]`` amu, energy-and-forces, constraint
    functions or None, virtual-site placer)."""
    masses = np.asarray(jnp.asarray(system.masses))  # jax's dtype (float32 unless x64), numpy for the set-up
    return masses, _energy_and_forces(system), _constraint_fns(system, masses), _site_placer(system)


def step_closures(system):
    """The public form of what every step closes over, for other movers of atoms (:mod:`dmd.minimize`):
    ``(masses [N] amu numpy, (params, x, neighbor) -> (E kJ/mol, F kJ/mol/nm, neighbor), constraint functions or
    None, virtual-site placer)``."""
    return _closures(system)


def _shaken_drift(x, x_new, v, dt, cons):
    """(x_c, v) after a drift x → ``x_new``: with constraints, x_c = SHAKE(x_new) and v = (x_c − x)/δt (the seed
    form and Verlet; module docstring); without, ``(x_new, v)`` unchanged."""
    if cons is not None:
        x_new = cons.positions(x_new, x)
        v = (x_new - x) / dt
    return x_new, v


def _anchored_drift(x, v, dt, cons, anchors):
    """:func:`_shaken_drift` of x → x + δt v solved relative to each constraint cluster's anchor atom
    (:func:`dmd.constraints.constraint_anchors`), for float32 NVE.

    Differenced in nm-scale coordinates, v = (x_c − x)/δt carries the rounding of x (ulp(4 nm) = 4.8e-7 nm, i.e.
    ~2e-4 nm/ps per step at δt = 2 fs): a random kick every step that heats an NVE run (+3.6e-5 kJ/mol/ps/DOF on
    villin, 5× OpenMM mixed). Relative to the anchor (x − x_anchor is exact in floating point for nearby values and
    ≤ a few Å) the displacement d = x_c − x is resolved ~100× better, and v = d/δt; unconstrained atoms are their own
    anchor, so their v is untouched. Positions are still rounded once per step (x + d), as before.

    The new velocity is v + (x_c − x_u)/δt, x_u = x + δt v the unconstrained drift (equal to d/δt in exact
    arithmetic): XLA divides by the constant δt as a multiplication by its rounded reciprocal (δt·fl(1/δt) = 1 −
    1.4e-8 at 2 fs), so v = d/δt shrank every velocity by that factor each step (−2.7e-8 of the kinetic energy per
    step); only the small constraint correction is divided now, and unconstrained atoms keep v exactly.
    """
    x0 = x - x[anchors]
    xu = x0 + dt * v
    x1 = cons.positions(xu, x0)
    return x + (x1 - x0), v + (x1 - xu) / dt


def _assemble(system, kT, efn, cons, masses, move, finish, name, dt, temperature, friction) -> Integrator:
    """The :class:`Integrator` of a step written as ``move`` → forces → ``finish``, with its ``init`` and ``start``
    (:func:`_make_init`).

    ``move(state, params) -> (x', v', key')``: the position update (virtual sites placed) with the forces the state
    carries; ``finish(x', v', f') -> v''``: what the step does with the new forces ``f'`` (None: nothing).
    ``step`` runs the three; ``advance`` the same with ``move`` and ``finish`` masked out where ``ready`` is false
    (:class:`Integrator`), so the energy appears once in either.
    """

    def step(state, params, energy=True):
        x_new, v, key = move(state, params)
        e, f, nbr = efn(params, x_new, state.neighbor, energy)
        if finish is not None:
            v = finish(x_new, v, f)
        return IntegratorState(x_new, v, f, e, key, state.step + 1, nbr)

    def advance(state, params, ready, energy=True):
        ready = jnp.asarray(ready, bool)
        x_new, v, key = move(state, params)
        x_new = jnp.where(ready, x_new, state.positions)
        v = jnp.where(ready, v, state.velocities)
        key = jnp.where(ready, key, state.key)
        e, f, nbr = efn(params, x_new, state.neighbor, energy)
        if finish is not None:
            v = jnp.where(ready, finish(x_new, v, f), v)
        return IntegratorState(x_new, v, f, e, key, state.step + ready.astype(state.step.dtype), nbr)

    # one (init, start) per (system, kT, precision): a second integrator of the same system (each simulate() call
    # makes one) reuses the jitted state_at instead of compiling it again; its closures (efn, cons, masses) are
    # functions of the (frozen) system and of jax's precision, both in the key
    settings = (kT, masses.dtype.str)
    init, start = compiled_for(_INIT_CACHE, system, settings, lambda: _make_init(system, kT, efn, cons, masses))
    n_dof = n_degrees_of_freedom(system)
    return Integrator(init, step, name, dt, temperature, friction, n_dof, start=start, advance=advance)


def langevin(system, *, dt: float, temperature: float, friction: float) -> Integrator:
    """Seed-form Langevin "v ← a v − b∇E + c n; x ← x + v δt" (module docstring; coefficients from
    :func:`langevin_coefficients`).

    Args:
      system: :class:`dmd.System`.
      dt: ps. temperature: K. friction: γ, 1/ps (> 0).
    """
    if not friction > 0:
        raise ValueError("seed-form Langevin needs friction > 0; use velocity_verlet for NVE")
    kT = KB_KJ_PER_MOL_K * temperature
    masses, efn, cons, place = _closures(system)
    a, b, c = langevin_coefficients(dt, friction, kT, masses)

    def move(state, params):
        key, nkey = jax.random.split(state.key)
        x = state.positions
        noise = jax.random.normal(nkey, x.shape, x.dtype)
        # −b∇E = +b F
        v = a * state.velocities + b.astype(x.dtype) * state.forces + c.astype(x.dtype) * noise
        x_new, v = _shaken_drift(x, x + v * dt, v, dt, cons)
        return place(x_new), v, key

    return _assemble(system, kT, efn, cons, masses, move, None, "langevin", dt, temperature, friction)


def baoab_move(x, v, forces, noise_key, *, dt, inv_m, a, c, cons):
    """One BAOAB (LangevinMiddle) move of positions and velocities, as the module docstring writes it: the B kick
    with the forces at ``x``, A, O, A, then the constraints. The one home of the BAOAB update, shared by
    :func:`langevin_middle` (fixed box) and :func:`dmd.npt.make_npt` (box as state).

    Args:
      x, v, forces: ``[N, 3]`` nm, nm/ps, kJ/mol/nm. noise_key: PRNG key of the O step's noise. dt: ps.
      inv_m: ``[N, 1]`` 1/m, amu⁻¹ (0 for massless particles). a: exp(−γ δt), a scalar (array or float).
      c: ``[N, 1]`` sqrt((1 − a²) kT/m), nm/ps. cons: constraint functions (:mod:`dmd.constraints`) or None.

    Returns:
      (x'' ``[N, 3]`` before virtual sites are placed, v ``[N, 3]`` half-step velocities), in ``x.dtype``.
    """
    dtype = x.dtype
    v = v + (dt * inv_m.astype(dtype)) * forces
    if cons is not None:
        v = cons.velocities(v, x)
    x_new = x + (0.5 * dt) * v
    a = a.astype(dtype) if hasattr(a, "astype") else a
    v = a * v + c.astype(dtype) * jax.random.normal(noise_key, x.shape, dtype)
    x_new = x_new + (0.5 * dt) * v
    if cons is not None:
        x_unc = x_new
        x_new = cons.positions(x_unc, x)
        # OpenMM: v += (x_c − x_unc)/δt, which keeps the post-O velocity (not (x_c − x)/δt,
        # the mean of the pre- and post-O velocities, which would halve the noise and T)
        v = v + (x_new - x_unc) / dt
    return x_new, v


def langevin_middle(system, *, dt: float, temperature: float, friction: float) -> Integrator:
    """BAOAB / LangevinMiddle, matching OpenMM's ``LangevinMiddleIntegrator`` (module docstring).

    Args:
      system: :class:`dmd.System`. dt: ps. temperature: K. friction: γ, 1/ps (≥ 0).
    """
    kT = KB_KJ_PER_MOL_K * temperature
    masses, efn, cons, place = _closures(system)
    massive, safe = _massive(masses)
    a = float(np.exp(-friction * dt))
    c = np.where(massive, np.sqrt((1 - a**2) * kT / safe), masses.dtype.type(0))[:, None]
    inv_m = _inverse_masses(masses)

    def move(state, params):
        key, nkey = jax.random.split(state.key)
        x_new, v = baoab_move(
            state.positions, state.velocities, state.forces, nkey, dt=dt, inv_m=inv_m, a=a, c=c, cons=cons
        )
        return place(x_new), v, key

    return _assemble(system, kT, efn, cons, masses, move, None, "baoab", dt, temperature, friction)


def velocity_verlet(system, *, dt: float, temperature: float | None = None, friction=None) -> Integrator:
    """Velocity Verlet (NVE); ``temperature`` only sets the initial Maxwell-Boltzmann velocities.

    Args:
      system: :class:`dmd.System`. dt: ps. temperature: K for ``init`` (None: start at rest).
    """
    kT = None if temperature is None else KB_KJ_PER_MOL_K * temperature
    masses, efn, cons, place = _closures(system)
    inv_m = _inverse_masses(masses)
    anchors = None
    if cons is not None and masses.dtype == np.float32:
        from dmd.constraints import constraint_anchors

        anchors = jnp.asarray(constraint_anchors(system.constraints, len(masses)), jnp.int32)

    def move(state, params):
        x = state.positions
        v = state.velocities + (0.5 * dt) * inv_m.astype(x.dtype) * state.forces
        if anchors is None:
            x_new, v = _shaken_drift(x, x + dt * v, v, dt, cons)
        else:
            x_new, v = _anchored_drift(x, v, dt, cons, anchors)
        return place(x_new), v, state.key

    def finish(x_new, v, f):
        v = v + (0.5 * dt) * inv_m.astype(x_new.dtype) * f
        return v if cons is None else cons.velocities(v, x_new)

    return _assemble(system, kT, efn, cons, masses, move, finish, "verlet", dt, temperature, None)


INTEGRATORS = {"langevin": langevin, "baoab": langevin_middle, "verlet": velocity_verlet}


def make_integrator(name: str, system, *, dt: float, temperature: float, friction: float) -> Integrator:
    """Build an integrator by CLI name: ``langevin`` (seed form), ``baoab`` (LangevinMiddle), ``verlet``."""
    from dmd.base.errors import UserInputError

    if name not in INTEGRATORS:
        raise UserInputError(f"--integrator {name!r} is unknown; choose one of {', '.join(INTEGRATORS)}")
    if name == "langevin" and not friction > 0:
        raise UserInputError("--friction must be > 0 for the langevin integrator; use --integrator verlet for NVE")
    return INTEGRATORS[name](system, dt=dt, temperature=temperature, friction=friction)
