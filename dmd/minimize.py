"""Local energy minimisation before dynamics (what OpenMM users run as ``simulation.minimizeEnergy()``).

FIRE (Bitzek, Koskinen, Gähler, Moseler & Gumbsch 2006, Phys. Rev. Lett. 97, 170201,
doi:10.1103/PhysRevLett.97.170201): damped dynamics whose velocity is turned towards the force,
``v ← (1 − α) v + α |v| F̂``; while the power P = F·v stays positive the time step grows (× 1.1 after 5 such
iterations, up to ``dt_max``) and α shrinks (× 0.99); when P ≤ 0 the velocity is zeroed, the step halved and α
reset to 0.1. Each iteration is a semi-implicit Euler move with real masses (v ← v + δt F/m, x ← x + δt v, the
largest atom move capped at ``max_move_nm``), so it is the integrators' drift with the same constraint care:

* constraints: the move is SHAKEn/SETTLEd onto the constraint surface (:mod:`dmd.constraints`, reference the
  positions before the move), and the forces are projected onto its tangent space, F_c = M·RATTLE(M⁻¹F), the
  constraint forces removed, so convergence is judged on the forces that can still move atoms;
* virtual sites are put back on their sites after every move (their force is 0: the energy places them);
* the neighbour list is updated inside the loop as atoms move (rebuilt when one moved over half the skin), and
  reallocated larger, the minimisation redone, if it overflowed (:func:`dmd.runloop.redo_on_overflow`).

The loop is a jitted ``lax.while_loop`` of at most ``chunk`` iterations, called from Python until done (so Ctrl-C
is honoured within a chunk, and a ``stop`` callable such as the CLI's SIGINT flag is polled before every chunk; the
iterations, hence the result, are those of one long loop), compiled once per (system, settings). It stops when the
RMS of the (projected) force components is at most ``tolerance`` kJ/mol/nm, OpenMM's ``LocalEnergyMinimizer`` criterion
(default 10), or after ``max_iterations``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import RunInterrupted, UserInputError
from dmd.integrators import step_closures
from dmd.runloop import compiled_for, grow_neighbors, overflowed, positions_for_allocation, redo_on_overflow

__all__ = ["MinimizeResult", "minimize", "summary_line"]

_CACHE: collections.OrderedDict = collections.OrderedDict()  # dmd.runloop.compiled_for's store

# FIRE's constants (Bitzek et al. 2006, Table I)
N_MIN, F_INC, F_DEC, ALPHA_START, F_ALPHA = 5, 1.1, 0.5, 0.1, 0.99


@dataclasses.dataclass
class MinimizeResult:
    """What :func:`minimize` returns.

    Attributes:
      positions: ``[N, 3]`` nm, the minimised positions (on the constraint surface, sites placed).
      energy_before, energy_after: kJ/mol (the start is taken onto the constraint surface first).
      rms_force, max_force: kJ/mol/nm, RMS of the projected force components and the largest per-atom |F_c|.
      iterations: FIRE iterations taken. converged: ``rms_force <= tolerance``. tolerance: kJ/mol/nm.
    """

    positions: object
    energy_before: float
    energy_after: float
    rms_force: float
    max_force: float
    iterations: int
    converged: bool
    tolerance: float

    def summary(self) -> dict:
        """The run summary's ``minimization`` record (JSON-ready)."""
        return {
            "energy_before_kj_mol": self.energy_before,
            "energy_after_kj_mol": self.energy_after,
            "rms_force_kj_mol_nm": self.rms_force,
            "max_force_kj_mol_nm": self.max_force,
            "iterations": self.iterations,
            "converged": self.converged,
            "tolerance_kj_mol_nm": self.tolerance,
            "method": "FIRE (dmd.minimize)",
        }

    def line(self) -> str:
        """One summary line for logs and the CLI."""
        return summary_line(self.summary())


def summary_line(record: dict) -> str:
    """The one-line account of a :meth:`MinimizeResult.summary` record (also read back from a run summary)."""
    return (
        f"minimised: E {record['energy_before_kj_mol']:.1f} → {record['energy_after_kj_mol']:.1f} kJ/mol in "
        f"{record['iterations']} FIRE iterations; RMS |F| {record['rms_force_kj_mol_nm']:.2f}, max |F| "
        f"{record['max_force_kj_mol_nm']:.1f} kJ/mol/nm (tolerance {record['tolerance_kj_mol_nm']:g} RMS"
        f"{'' if record['converged'] else ', NOT reached'})"
    )


def _make_minimizer(system, tolerance: float, dt_start: float, dt_max: float, max_move: float, chunk: int):
    masses, efn, cons, place = step_closures(system)
    massive = masses > 0
    m_col = np.where(massive, masses, 0.0)[:, None]
    inv_col = np.where(massive, 1.0 / np.where(massive, masses, 1.0), 0.0)[:, None]
    n_comp = 3 * max(int(massive.sum()), 1)

    def project(f, x):
        """F_c = M·RATTLE(M⁻¹F): the force without its components along the constraint gradients."""
        if cons is None:
            return f * jnp.asarray(massive[:, None], f.dtype)
        return jnp.asarray(m_col, f.dtype) * cons.velocities(f * jnp.asarray(inv_col, f.dtype), x)

    def rms(f):
        return jnp.sqrt(jnp.sum(f * f) / n_comp)

    def forces(params, x, nbr):
        e, f, nbr = efn(params, x, nbr)
        return e, project(f, x), nbr

    def body(params, c):
        it, x, v, e, f, nbr, dt, alpha, n_pos = c
        dtype = x.dtype
        p = jnp.sum(f * v)
        fn = jnp.sqrt(jnp.sum(f * f)) + jnp.asarray(1e-30, dtype)
        vn = jnp.sqrt(jnp.sum(v * v))
        up = p > 0
        v = jnp.where(up, (1 - alpha) * v + alpha * vn * f / fn, jnp.zeros_like(v))
        grow = up & (n_pos >= N_MIN)
        dt = jnp.where(up, jnp.where(grow, jnp.minimum(dt * F_INC, dt_max), dt), dt * F_DEC)
        alpha = jnp.where(up, jnp.where(grow, alpha * F_ALPHA, alpha), ALPHA_START)
        n_pos = jnp.where(up, n_pos + 1, 0)
        v = v + dt * f * jnp.asarray(inv_col, dtype)
        dx = dt * v
        biggest = jnp.max(jnp.linalg.norm(dx, axis=-1))
        dx = dx * jnp.minimum(1.0, max_move / jnp.maximum(biggest, jnp.asarray(1e-30, dtype)))
        x_new = x + dx
        if cons is not None:
            x_new = cons.positions(x_new, x)
        x_new = place(x_new)
        v = (x_new - x) / dt
        e, f, nbr = forces(params, x_new, nbr)
        return it + 1, x_new, v, e, f, nbr, dt, alpha, n_pos

    @jax.jit
    def start(params, x, nbr):
        dtype = x.dtype
        x = place(cons.positions(x, x) if cons is not None else x)
        e0, f0, nbr = forces(params, x, nbr)
        zero = jnp.zeros((), jnp.int32)
        carry = (zero, x, jnp.zeros_like(x), e0, f0, nbr, jnp.asarray(dt_start, dtype), jnp.asarray(ALPHA_START, dtype))
        return (*carry, zero), e0

    @jax.jit
    def advance(params, c, max_iterations):
        """At most ``chunk`` more iterations, up to ``max_iterations`` in all (data: one compiled chunk serves every
        call), with the RMS and largest |F_c|."""
        stop = jnp.minimum(c[0] + chunk, max_iterations)
        c = jax.lax.while_loop(lambda c: (c[0] < stop) & (rms(c[4]) > tolerance), lambda c: body(params, c), c)
        return c, rms(c[4]), jnp.max(jnp.linalg.norm(c[4], axis=-1))

    def run(params, x, nbr, max_iterations, stop):
        # a Python loop over jitted chunks instead of one while_loop: Ctrl-C is honoured between chunks (a signal
        # reaches Python only when a compiled call returns), and so is a stop request (polled before each chunk,
        # the first included: a signal received while `start` compiled skips compiling `advance`); the iterations
        # are the same, so is the result
        c, e0 = start(params, x, nbr)
        while True:
            signum = stop() if stop is not None else 0
            if signum:
                raise RunInterrupted(
                    int(signum),
                    0,
                    message=f"interrupted during the minimisation, after {int(c[0])} FIRE iterations; nothing was "
                    "written (run again to start over)",
                )
            c, rms_f, max_f = advance(params, c, max_iterations)
            if int(c[0]) >= max_iterations or float(rms_f) <= tolerance or overflowed(c[5]):
                break
        return c[1], c[5], e0, c[3], rms_f, max_f, c[0]

    return run


def minimize(
    system,
    params=None,
    positions=None,
    *,
    tolerance: float = 10.0,
    max_iterations: int = 10000,
    dt_start: float = 0.002,
    dt_max: float = 0.01,
    max_move_nm: float = 0.01,
    chunk: int = 50,
    stop=None,
) -> MinimizeResult:
    """Minimise the energy of ``system`` from ``positions`` (default its start) to an RMS force of ``tolerance``.

    Args:
      system: :class:`dmd.System`. params: θ (default ``system.params``). positions: ``[N, 3]`` nm.
      tolerance: kJ/mol/nm, on the RMS of the constraint-projected force components (OpenMM's criterion and
        default, 10). max_iterations: FIRE iterations at most.
      dt_start, dt_max: FIRE's time steps, ps (with real masses, as the integrators'). max_move_nm: the largest
        move of any atom in one iteration, nm (keeps a clashing start from jumping; well under the list's skin).
      chunk: iterations per compiled call; Ctrl-C stops the minimisation within one chunk (the result does not
        depend on it).
      stop: callable polled before each chunk (e.g. :func:`dmd.cli.common.stop_on_signals`'s flag); a true value
        (a signal number) raises :class:`dmd.base.errors.RunInterrupted` with it. None: never stops early.

    Returns:
      :class:`MinimizeResult`.

    Raises:
      RunInterrupted: ``stop()`` asked for a stop (its ``signum``; nothing is returned, nothing was written).
    """
    if not tolerance > 0:
        raise UserInputError(f"minimisation tolerance {tolerance}: must be a positive force, kJ/mol/nm")
    if int(chunk) < 1:
        raise UserInputError(f"minimisation chunk {chunk}: must be at least 1 iteration")
    params = system.params if params is None else params
    x0 = jnp.asarray(system.positions if positions is None else positions)
    settings = (float(tolerance), float(dt_start), float(dt_max), float(max_move_nm), int(chunk))
    run = compiled_for(_CACHE, system, settings, lambda: _make_minimizer(system, *settings))
    logging.getLogger(__name__).info(f"minimising {system.name or 'system'} to RMS |F| ≤ {tolerance:g} kJ/mol/nm")
    nbr0 = system.allocate_neighbors(positions_for_allocation(system, x0))
    _, out, _ = redo_on_overflow(
        lambda nbr: run(params, x0, nbr, int(max_iterations), stop),
        nbr0,
        lambda result: result[1],
        lambda nbr, _, attempt: grow_neighbors(system, nbr, x0, attempt),
    )
    x, _, e0, e, rms_f, max_f, it = out
    return MinimizeResult(
        positions=x,
        energy_before=float(e0),
        energy_after=float(e),
        rms_force=float(rms_f),
        max_force=float(max_f),
        iterations=int(it),
        converged=bool(float(rms_f) <= tolerance),
        tolerance=float(tolerance),
    )
