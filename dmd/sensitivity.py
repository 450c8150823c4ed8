"""Forward-mode parameter sensitivities dx_t/dθ, dv_t/dθ through seed-form Langevin dynamics.

Seed: Y. Zhao, "An exact solution for fitting parameters to ensemble observables" (shared/seeds/003).
The integrator is the seed's Langevin form, eq. (4)-(5), with the coefficients of
:func:`dmd.integrators.langevin_coefficients`::

    v_t = a v_{t-1} − b ∇E(x_{t-1}; θ) + c n_{t-1}          (eq. 4)
    x_t = x_{t-1} + v_t δt                                  (eq. 5)

Differentiating with respect to one selected scalar parameter θ_p (the noise n does not depend on θ)::

    dv_t/dθ = a dv_{t-1}/dθ − b ζE(x_{t-1}; θ)
    dx_t/dθ = dx_{t-1}/dθ + δt dv_t/dθ
    ζE(x; θ) = (∂²E/∂x²)(dx/dθ) + ∂²E/∂x∂θ                   (eq. 7, the ζ operator)

and, for x_0, v_0 independent of θ, these sum to the seed's geometric series::

    dx_t/dθ = −b δt Σ_{i=0}^{t−1} S^a_{t−i} ζE(x_i; θ),   S^a_n = 1 + a + … + a^{n−1}   (eq. 8-9)

Two methods (``method=``):

* ``"tangent"`` (default): carry (dx/dθ, dv/dθ) through every step, i.e. the forward-mode derivative of the
  step. Exact (same numbers as ``jax.jacfwd`` through the whole trajectory) and O(1) memory in the number of
  steps. ζE is a Hessian-vector product, ``jax.jvp`` of ``jax.grad(E)`` in the direction (dx/dθ_p, e_p); the
  dense (N, 3, N, 3) Hessian is never built. P parameters are done at once: the jvp is vmapped over the P
  tangent directions, the primal force is computed once.
* ``"window"`` with ``window=k``: the seed's rolling geometric-series window, eq. (9)-(10). The last k ζ terms
  keep their exact partial-sum coefficients S^a_n; older ones are folded into a running sum R with the
  converged coefficient S^a_∞ = 1/(1−a)::

      dx_t/dθ ≈ −b δt ( Σ_{i=t−k}^{t−1} S^a_{t−i} ζ_i + R_t/(1−a) ),   R_t = Σ_{i<t−k} ζ_i

  The windowed sum Q_t = Σ_{i=t−k}^{t−1} S^a_{t−i} ζ_i is updated in O(1) per step with S^a_{n+1} = 1 + a S^a_n:
  Q_{t+1} = ζ_t + (B_t − ζ_{t−k}) + a (Q_t − S^a_k ζ_{t−k}), B_t = Σ_{i=t−k}^{t−1} ζ_i, a ring buffer holding
  the k ζ terms. Memory O(k·P·N), time O(t). For k ≥ steps it is exact; otherwise the error is about
  a^k/(1−a) per folded term and feeds back into later ζ through H·dx/dθ (see DESIGN.md).

Neighbour lists. A ``jax_md`` neighbour list is an integer structure (which pairs are evaluated). It is
rebuilt from positions but is treated as piecewise constant in θ: the tangent flows through the energy of
the pairs in the list, not through the list itself. This is exact as long as every pair inside the cutoff
is in the list (the list's skin guarantees it) and the energy is continuous at the cutoff (a pair crossing a
plain, unshifted cutoff adds a jump that no derivative sees).

Constraints. With holonomic constraints the step becomes x_t = C(x_{t-1} + v δt), v_t = (x_t − x_{t-1})/δt,
where C is the constraint projection (SHAKE/RATTLE-type solver). The tangent method differentiates the whole
step, C included, with ``jax.jvp``: if C is a differentiable JAX function, the tangent is the derivative of
the solver's output (to the solver's tolerance, the tangent projected onto the constraint manifold,
dC·(dx + dv δt)). The window method's geometric series assumes the unconstrained update and is refused for
constrained systems.

Ensemble observables, the estimators and their validity: :mod:`dmd.estimators`. Chaos diagnostics and the
"which estimator to trust" verdict: :mod:`dmd.chaos`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from dmd.errors import SimulationDiverged, UserInputError
from dmd.integrators import BOLTZMANN_KJ_MOL_K, langevin_coefficients
from dmd.params import select

__all__ = [
    "SensitivityResult",
    "run_sensitivities",
    "write_sensitivities",
    "read_sensitivities",
    "langevin_keys",
    "langevin_noise",
]

METHODS = ("tangent", "window")


@dataclasses.dataclass(frozen=True)
class SensitivityResult:
    """Frames of a Langevin run with their parameter sensitivities.

    F frames (every ``report_every`` steps, the start state excluded), P parameters, N atoms.

    Attributes:
      positions: ``[F, N, 3]`` nm.
      velocities: ``[F, N, 3]`` nm/ps.
      dx: ``[F, P, N, 3]`` dx_t/dθ_p, nm per unit of parameter p.
      dv: ``[F, P, N, 3]`` dv_t/dθ_p, nm/ps per unit of parameter p.
      names: the P parameter names ``"force/field/label"``.
      energies: ``[F]`` potential energy, kJ/mol.
      dU_dtheta: ``[F, P]`` ∂U/∂θ_p at each frame (explicit dependence, positions fixed), kJ/mol per unit θ_p;
        the input of the fluctuation estimator.
      growth: ``[F, P]`` ‖dx_t/dθ_p‖ (Frobenius norm over atoms), nm per unit θ_p.
      times: ``[F]`` ps since the start.
      lyapunov: finite-time Lyapunov estimate from the growth of ‖dx_t/dθ‖, 1/ps (max over parameters).
      estimator_advice: which ensemble-gradient estimator to trust, in words (:func:`dmd.chaos.assess`).
      warnings: messages about chaos, overflowing tangents, neighbour-list retries.
      method: "tangent" or "window"; window: k or None.
      dt: ps; friction: 1/ps; temperature: K; seed: PRNG seed; report_every: steps per frame.
      first_nonfinite_frame: first frame whose tangents are inf/NaN (float32 overflow), or None.
    """

    positions: np.ndarray
    velocities: np.ndarray
    dx: np.ndarray
    dv: np.ndarray
    names: tuple[str, ...]
    energies: np.ndarray
    dU_dtheta: np.ndarray
    growth: np.ndarray
    times: np.ndarray
    lyapunov: float
    estimator_advice: str
    warnings: list[str]
    method: str = "tangent"
    window: int | None = None
    dt: float = 0.0
    friction: float = 0.0
    temperature: float = 0.0
    seed: int = 0
    report_every: int = 1
    first_nonfinite_frame: int | None = None

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])


# --------------------------------------------------------------------------------------------------------------
# the jitted chunk runner


def langevin_keys(seed):
    """(noise key, start-velocity key) for a run with PRNG ``seed``."""
    key, key_vel = jax.random.split(jax.random.PRNGKey(seed))
    return key, key_vel


def langevin_noise(key, t, shape, dtype):
    """The standard normal noise n_t of step ``t`` (eq. 4), ``shape`` e.g. ``[N, 3]``.

    It depends only on (key, t), never on θ or on how the run is chunked: re-runs with other θ see the same
    noise (finite differences with the same noise) and a chunk redone after a neighbour-list overflow is the
    same trajectory.
    """
    return jax.random.normal(jax.random.fold_in(key, t), shape, dtype)


def allocate_neighbors(system, x, **kwargs):
    """``system.allocate_neighbors`` that also accepts jax-md lists whose displacement takes no ``box``."""
    try:
        return system.allocate_neighbors(x, **kwargs)
    except Exception as exc:  # jax_md.space.UnexpectedBoxException is not a TypeError
        if "box" not in str(exc):
            raise
        return system.neighbor_fn.allocate(x, **kwargs)


def update_neighbors(nbr, x, box=None):
    """``nbr.update(x, box=box)``; lists whose displacement takes no ``box`` (jax-md ``space.periodic``) get none."""
    if nbr is None:
        return None
    if box is None:
        return nbr.update(x)
    try:
        return nbr.update(x, box=box)
    except Exception as exc:  # raised while tracing, not at run time
        if "box" not in str(exc):
            raise
        return nbr.update(x)


def _scaled_norm(d):
    """‖d‖ over the trailing (N, 3) axes without overflowing the squares in float32. ``d: [P, N, 3]``."""
    m = jnp.max(jnp.abs(d), axis=(-2, -1))
    safe = jnp.where(m > 0, m, 1.0)
    return m * jnp.sqrt(jnp.sum((d / safe[:, None, None]) ** 2, axis=(-2, -1)))


@functools.lru_cache(maxsize=64)
def _build_chunk(energy_fn, sel, method: str, window: int | None, report_every: int, n_tangents: int):
    """A jitted ``chunk(carry, consts, n_frames) -> (carry, frames)``; cached so re-runs do not recompile.

    ``energy_fn`` and the selection ``sel`` define the structure; θ, the full params, box and Langevin
    coefficients are arguments (``consts``), so finite-difference re-runs with other θ reuse the compiled code.
    """

    def energy_of(theta, params, x, nbr, box):
        return energy_fn(sel.set(params, theta), x, box=box, neighbor=nbr)

    grad_x = jax.grad(energy_of, argnums=2)

    def force_and_zeta(theta, params, x, dx, nbr, box):
        """∇E and ζE (eq. 7) for P directions: jvp of the gradient, vmapped over (e_p, dx_p)."""
        if n_tangents == 0:
            return grad_x(theta, params, x, nbr, box), None
        eye = jnp.eye(n_tangents, dtype=theta.dtype)

        def one(e_p, dx_p):
            return jax.jvp(lambda th, xx: grad_x(th, params, xx, nbr, box), (theta, x), (e_p, dx_p))

        return jax.vmap(one, out_axes=(None, 0))(eye, dx)

    def step(carry, consts):
        theta, params, box, a, b, c, dt, key = consts
        x, v, dx, dv, nbr, t = carry["x"], carry["v"], carry["dx"], carry["dv"], carry["nbr"], carry["t"]
        g, zeta = force_and_zeta(theta, params, x, dx, nbr, box)
        v_new = a * v - b * g + c * langevin_noise(key, t, x.shape, x.dtype)  # eq. 4
        x_new = x + dt * v_new  # eq. 5
        out = dict(carry, x=x_new, v=v_new, nbr=update_neighbors(nbr, x_new, box), t=t + 1)
        if n_tangents == 0:
            return out
        if method == "tangent":
            dv_new = a * dv - b[None] * zeta
            dx_new = dx + dt * dv_new
            return dict(out, dx=dx_new, dv=dv_new)
        # method == "window": eq. (9) with the last k ζ terms exact and older ones folded (see module docstring)
        k = window
        slot = t % k
        old = jnp.where(t >= k, carry["Z"][slot], jnp.zeros_like(zeta))
        s_k = (1 - a**k) / (1 - a)
        q_new = zeta + (carry["B"] - old) + a * (carry["Q"] - s_k * old)
        b_new = carry["B"] - old + zeta
        r_new = carry["R"] + old
        dx_new = -dt * b[None] * (q_new + r_new / (1 - a))
        dv_new = (dx_new - dx) / dt
        return dict(out, dx=dx_new, dv=dv_new, Z=carry["Z"].at[slot].set(zeta), B=b_new, Q=q_new, R=r_new)

    energy_and_dtheta = jax.value_and_grad(energy_of, argnums=0)

    def frame(carry, consts):
        carry = jax.lax.fori_loop(0, report_every, lambda _, c: step(c, consts), carry)
        theta, params, box = consts[0], consts[1], consts[2]
        e, du = energy_and_dtheta(theta, params, carry["x"], carry["nbr"], box)
        out = {"x": carry["x"], "v": carry["v"], "e": e, "du": du}
        if n_tangents:
            out.update(dx=carry["dx"], dv=carry["dv"], growth=_scaled_norm(carry["dx"]))
        return carry, out

    @functools.partial(jax.jit, static_argnums=2)
    def chunk(carry, consts, n_frames):
        return jax.lax.scan(lambda c, _: frame(c, consts), carry, None, length=n_frames)

    return chunk


def _init_carry(x, v, nbr, n_tangents, method, window):
    carry = {"x": x, "v": v, "nbr": nbr, "t": jnp.asarray(0, jnp.int32)}
    if n_tangents:
        zeros = jnp.zeros((n_tangents, *x.shape), x.dtype)
        carry.update(dx=zeros, dv=zeros)
        if method == "window":
            carry.update(Z=jnp.zeros((window, n_tangents, *x.shape), x.dtype), B=zeros, Q=zeros, R=zeros)
    else:
        carry.update(dx=None, dv=None)
    return carry


# --------------------------------------------------------------------------------------------------------------
# validation


def _positive(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"{name}={value!r} is not a number; pass a positive number") from None
    if not (math.isfinite(value) and value > 0):
        raise UserInputError(f"{name}={value!r} must be a finite positive number; pass e.g. {name}=1.0")
    return value


def _state_array(name, arr, shape, dtype):
    arr = np.asarray(arr)
    if arr.shape != tuple(shape):
        raise UserInputError(f"{name}: shape {arr.shape}, expected {tuple(shape)} (nm or nm/ps); pass one row per atom")
    if not np.all(np.isfinite(arr)):
        raise UserInputError(f"{name}: contains NaN/inf; pass finite coordinates (check the input file)")
    return jnp.asarray(arr, dtype)


def _check_args(system, names, steps, dt, temperature, friction, method, window, report_every):
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise UserInputError("names: no parameter selected; pass e.g. names=['lj/epsilon/A'] (--sensitivity NAME)")
    try:
        sel = select(system.param_labels, names)
    except KeyError as exc:
        raise UserInputError(f"--sensitivity: {exc.args[0]}") from None
    if method not in METHODS:
        raise UserInputError(f"method={method!r}; use one of {METHODS} (--sensitivity-method)")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise UserInputError(f"steps={steps!r} must be a positive integer")
    if not isinstance(report_every, (int, np.integer)) or report_every < 1 or steps % report_every:
        raise UserInputError(f"report_every={report_every!r} must be a positive integer dividing steps={steps}")
    dt, temperature, friction = (
        _positive("dt", dt),
        _positive("temperature", temperature),
        _positive("friction", friction),
    )
    if method == "window":
        if not isinstance(window, (int, np.integer)) or window < 1:
            raise UserInputError(f"window={window!r}: method='window' needs an integer window k >= 1 (--window K)")
        if system.constraints is not None:
            raise UserInputError(
                "method='window': the geometric series (eq. 9) assumes unconstrained dynamics and this system has "
                "constraints; use method='tangent'"
            )
    elif window is not None:
        raise UserInputError(
            "window is only used with method='window'; drop --window or pass --sensitivity-method window"
        )
    return sel, int(steps), dt, temperature, friction, int(report_every)


# --------------------------------------------------------------------------------------------------------------
# public API


def run_sensitivities(
    system,
    names,
    *,
    steps,
    dt,
    temperature,
    friction,
    seed=0,
    method="tangent",
    window=None,
    report_every=1,
    pos=None,
    vel=None,
    chunk_steps=2000,
    progress=None,
) -> SensitivityResult:
    """Run seed-form Langevin dynamics (eq. 4-5) carrying dx_t/dθ, dv_t/dθ for the parameters ``names``.

    Args:
      system: a :class:`dmd.system.System`.
      names: P parameter names ``"force/field/label"`` (or ``"force/field"`` for a whole leaf), see
        :mod:`dmd.params`.
      steps: number of time steps; dt: ps; temperature: K; friction: γ, 1/ps (> 0).
      seed: PRNG seed. The noise of step t is drawn from ``fold_in(key, t)``, so the same seed gives the same
        noise sequence for any θ (finite-difference re-runs with the same noise).
      method: "tangent" (exact tangent carry, default) or "window" (the seed's rolling window, eq. 9).
      window: k, the number of recent ζ terms kept exactly (``method="window"`` only).
      report_every: steps between stored frames (must divide ``steps``).
      pos: ``[N, 3]`` nm start positions (default ``system.positions``); vel: ``[N, 3]`` nm/ps start velocities
        (default Maxwell-Boltzmann at ``temperature`` from the seed). The start state is taken as independent
        of θ (dx_0/dθ = dv_0/dθ = 0).
      chunk_steps: steps per jitted chunk (progress, neighbour-list checks and host transfers between chunks).
      progress: show a tqdm bar (default: when more than one chunk).

    Returns:
      :class:`SensitivityResult`; its ``warnings`` and ``estimator_advice`` come from :func:`dmd.chaos.assess`.

    Raises:
      UserInputError: bad names, shapes, non-positive dt/temperature/friction, window misuse.
      SimulationDiverged: positions became NaN/inf.

    Example::

        res = run_sensitivities(system, ["lj/epsilon/A"], steps=1000, dt=0.002, temperature=120.0, friction=1.0,
                                report_every=10)
        res.dx.shape   # (100, 1, n_atoms, 3), nm per kJ/mol
    """
    from dmd.chaos import assess

    sel, steps, dt, temperature, friction, report_every = _check_args(
        system, names, steps, dt, temperature, friction, method, window, report_every
    )
    frames, chunk, carry, consts = _prepare(
        system, sel, steps, dt, temperature, friction, seed, method, window, report_every, pos, vel
    )
    outs, notes = _run_chunks(system, chunk, carry, consts, frames, report_every, chunk_steps, progress)
    out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    times = dt * report_every * np.arange(1, frames + 1)
    dx = out["dx"]
    bad = ~np.all(np.isfinite(out["growth"]), axis=1)
    first_bad = int(np.argmax(bad)) if bad.any() else None
    report = assess(times, out["growth"], dtype=dx.dtype, first_nonfinite_frame=first_bad, steps_per_frame=report_every)
    for msg in report.warnings:
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return SensitivityResult(
        positions=out["x"],
        velocities=out["v"],
        dx=dx,
        dv=out["dv"],
        names=sel.names,
        energies=out["e"],
        dU_dtheta=out["du"],
        growth=out["growth"],
        times=times,
        lyapunov=report.lyapunov,
        estimator_advice=report.advice,
        warnings=notes + list(report.warnings),
        method=method,
        window=None if method == "tangent" else int(window),
        dt=dt,
        friction=friction,
        temperature=temperature,
        seed=int(seed),
        report_every=report_every,
        first_nonfinite_frame=first_bad,
    )


def _prepare(
    system, sel, steps, dt, temperature, friction, seed, method, window, report_every, pos, vel, n_tangents=None
):
    """Start state, constants and the compiled chunk function (shared with the benchmark's plain-dynamics run)."""
    dtype = jnp.asarray(system.positions).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    shape = np.shape(system.positions)
    x = _state_array("pos", system.positions if pos is None else pos, shape, dtype)
    kT = BOLTZMANN_KJ_MOL_K * temperature
    masses = jnp.asarray(system.masses, dtype)
    key, key_vel = langevin_keys(seed)
    if vel is None:
        v = jnp.sqrt(kT / masses)[:, None] * jax.random.normal(key_vel, shape, dtype)
    else:
        v = _state_array("vel", vel, shape, dtype)
    a, b, c = langevin_coefficients(
        jnp.asarray(dt, dtype), jnp.asarray(friction, dtype), jnp.asarray(kT, dtype), masses
    )
    theta = sel.get(system.params)
    n_tangents = sel.size if n_tangents is None else n_tangents
    nbr = allocate_neighbors(system, x)
    carry = _init_carry(x, v, nbr, n_tangents, method, window)
    consts = (theta, system.params, system.box, a, b, c, jnp.asarray(dt, dtype), key)
    chunk = _build_chunk(system.energy_fn, sel, method, window, report_every, n_tangents)
    return steps // report_every, chunk, carry, consts


def _run_chunks(system, chunk, carry, consts, frames, report_every, chunk_steps, progress):
    """Run ``frames`` frames in fixed-size jitted chunks (at most two compilations: full and last chunk)."""
    per_chunk = max(1, min(frames, int(chunk_steps) // report_every))
    n_chunks = -(-frames // per_chunk)
    bar = None
    if progress or (progress is None and n_chunks > 1):
        from tqdm.auto import tqdm

        bar = tqdm(total=frames * report_every, unit="step", desc="sensitivities")
    outs, notes, done = [], [], 0
    while done < frames:
        nf = min(per_chunk, frames - done)
        new_carry, out = chunk(carry, consts, nf)
        nbr = new_carry["nbr"]
        if nbr is not None and bool(nbr.did_buffer_overflow):
            # the neighbour list overflowed during this chunk: re-allocate with more room at the chunk's start
            # and redo it (the noise is keyed by step index, so the redo is the same trajectory)
            extra = max(8, int(0.25 * nbr.idx.shape[-1])) * (1 + len(notes))
            carry = dict(carry, nbr=allocate_neighbors(system, carry["x"], extra_capacity=extra))
            notes.append(f"neighbour list overflowed near step {done * report_every}; re-allocated (+{extra})")
            continue
        out = jax.device_get(out)
        if not np.all(np.isfinite(out["x"])):
            bad = int(np.argmax(~np.all(np.isfinite(out["x"]), axis=(1, 2))))
            step = (done + bad + 1) * report_every
            raise SimulationDiverged(
                f"positions became NaN/inf by step {step}; reduce dt or check the start structure", step=step
            )
        outs.append(out)
        carry, done = new_carry, done + nf
        if bar is not None:
            bar.update(nf * report_every)
    if bar is not None:
        bar.close()
    return outs, notes


def write_sensitivities(path_h5, result: SensitivityResult, inputs=()):
    """Write a :class:`SensitivityResult` to HDF5 atomically.

    Datasets: ``dx`` [frames, P, atoms, 3] (nm per unit θ_p), ``dv``, ``names`` [P] (utf-8), ``positions``
    [frames, atoms, 3] nm, ``energies`` [frames] kJ/mol, ``dU_dtheta`` [frames, P], ``growth`` [frames, P],
    ``times`` [frames] ps. Attributes: ``units``, ``method``, ``window`` (0 = none), ``dt``, ``friction``,
    ``temperature``, ``seed``, ``report_every``, ``lyapunov_per_ps``, ``estimator_advice``, ``warnings``.
    """
    import json

    import h5py

    from dmd.io_utils import atomic_path

    with atomic_path(path_h5, inputs) as tmp:
        with h5py.File(tmp, "w") as fh:
            for key in ("dx", "dv", "positions", "velocities", "energies", "dU_dtheta", "growth", "times"):
                fh.create_dataset(key, data=np.asarray(getattr(result, key)))
            fh.create_dataset("names", data=np.array(result.names, dtype=object), dtype=h5py.string_dtype())
            fh.attrs["units"] = (
                "positions nm; velocities nm/ps; dx nm per unit of parameter; dv nm/ps per unit of parameter; "
                "energies kJ/mol; dU_dtheta kJ/mol per unit of parameter; times ps; parameter units as in the "
                "force field (OpenMM: nm, kJ/mol, rad, e)"
            )
            fh.attrs["method"] = result.method
            fh.attrs["window"] = 0 if result.window is None else int(result.window)
            for key in ("dt", "friction", "temperature"):
                fh.attrs[key] = float(getattr(result, key))
            fh.attrs["seed"] = int(result.seed)
            fh.attrs["report_every"] = int(result.report_every)
            fh.attrs["lyapunov_per_ps"] = float(result.lyapunov)
            fh.attrs["estimator_advice"] = result.estimator_advice
            fh.attrs["warnings"] = json.dumps(list(result.warnings))
            fh.attrs["first_nonfinite_frame"] = (
                -1 if result.first_nonfinite_frame is None else result.first_nonfinite_frame
            )
    return path_h5


def read_sensitivities(path_h5) -> SensitivityResult:
    """Read back a file written by :func:`write_sensitivities`."""
    import json
    from pathlib import Path

    import h5py

    if not Path(path_h5).exists():
        raise UserInputError(f"{path_h5}: no such file; pass the .h5 written by dmd simulate --sensitivity")
    with h5py.File(path_h5, "r") as fh:
        if "dx" not in fh or "names" not in fh:
            raise UserInputError(f"{path_h5}: not a sensitivity file (no 'dx'/'names'); pass the --sensitivity output")
        arrays = {key: fh[key][()] for key in fh if key != "names"}
        names = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in fh["names"][()])
        at = dict(fh.attrs)
    bad = int(at["first_nonfinite_frame"])
    return SensitivityResult(
        names=names,
        lyapunov=float(at["lyapunov_per_ps"]),
        estimator_advice=str(at["estimator_advice"]),
        warnings=json.loads(at["warnings"]),
        method=str(at["method"]),
        window=int(at["window"]) or None,
        dt=float(at["dt"]),
        friction=float(at["friction"]),
        temperature=float(at["temperature"]),
        seed=int(at["seed"]),
        report_every=int(at["report_every"]),
        first_nonfinite_frame=None if bad < 0 else bad,
        **arrays,
    )
