"""Forward-mode parameter sensitivities dx_t/dθ, dv_t/dθ through seed-form Langevin dynamics.

Method: Y. Zhao, "An exact solution for fitting parameters to ensemble observables" (technical note; notes in
docs/sensitivities.md). The integrator is that note's Langevin form, eq. (4)-(5), with the coefficients of
:func:`dmd.integrators.langevin_coefficients`::

    v_t = a v_{t-1} − b ∇E(x_{t-1}; θ) + c n_{t-1}          (eq. 4)
    x_t = x_{t-1} + v_t δt                                  (eq. 5)

Differentiating with respect to one selected scalar parameter θ_p (the noise n does not depend on θ)::

    dv_t/dθ = a dv_{t-1}/dθ − b ζE(x_{t-1}; θ)
    dx_t/dθ = dx_{t-1}/dθ + δt dv_t/dθ
    ζE(x; θ) = (∂²E/∂x²)(dx/dθ) + ∂²E/∂x∂θ                   (eq. 7, the ζ operator)

and, for x_0, v_0 independent of θ, these sum to Zhao's geometric series::

    dx_t/dθ = −b δt Σ_{i=0}^{t−1} S^a_{t−i} ζE(x_i; θ),   S^a_n = 1 + a + … + a^{n−1}   (eq. 8-9)

Two methods (``method=``):

* ``"tangent"`` (default): carry (dx/dθ, dv/dθ, dF/dθ) through every step: ``jax.jvp`` of the engine's
  seed-form step (:func:`dmd.integrators.langevin`, the step ``dmd simulate`` runs, so the frames are the plain
  run's frames) with the forces part of the differentiated state. The force tangent is −ζE, a Hessian-vector
  product (forward-over-reverse: jvp of the gradient in the direction (dx/dθ_p, e_p)); the dense
  (N, 3, N, 3) Hessian is never built. Exact (same numbers as ``jax.jacfwd`` through the whole trajectory) and
  O(1) memory in the number of steps. P parameters at once: the jvp is vmapped over the P tangent directions,
  the primal step is computed once.
* ``"window"`` with ``window=k``: Zhao's rolling geometric-series window, eq. (9)-(10). The last k ζ terms
  keep their exact partial-sum coefficients S^a_n; older ones are folded into a running sum R with the
  converged coefficient S^a_∞ = 1/(1−a)::

      dx_t/dθ ≈ −b δt ( Σ_{i=t−k}^{t−1} S^a_{t−i} ζ_i + R_t/(1−a) ),   R_t = Σ_{i<t−k} ζ_i

  The windowed sum Q_t = Σ_{i=t−k}^{t−1} S^a_{t−i} ζ_i is updated in O(1) per step with S^a_{n+1} = 1 + a S^a_n:
  Q_{t+1} = ζ_t + (B_t − ζ_{t−k}) + a (Q_t − S^a_k ζ_{t−k}), B_t = Σ_{i=t−k}^{t−1} ζ_i, a ring buffer holding
  the k ζ terms. Memory O(k·P·N), time O(t). For k ≥ steps it is exact; otherwise the error is about
  a^k/(1−a) per folded term and feeds back into later ζ through H·dx/dθ (docs/sensitivities.md).

Neighbour lists. A ``jax_md`` neighbour list is an integer structure (which pairs are evaluated). It is
rebuilt from positions but is treated as piecewise constant in θ: the tangent flows through the energy of
the pairs in the list, not through the list itself. This is exact as long as every pair inside the cutoff
is in the list (the list's skin guarantees it) and the energy is continuous at the cutoff (a pair crossing a
plain, unshifted cutoff adds a jump that no derivative sees).

Constraints. With holonomic constraints the engine's step is x_t = C(x_{t-1} + v δt), v_t = (x_t − x_{t-1})/δt,
C the SHAKE iteration of :mod:`dmd.constraints` (a ``lax.while_loop``). The tangent method differentiates the
whole step, C included, with ``jax.jvp``: the tangent of the converged iterate, i.e. (to the solver's
tolerance) dC·(dx + δt dv), the tangent projected onto the constraint manifold along the SHAKE directions.
The window method's geometric series (eq. 9) assumes the unconstrained update and is refused for constrained
systems.

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

from dmd.base.config import name_list
from dmd.base.errors import SimulationDiverged, UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.integrators import langevin_coefficients
from dmd.params import select

__all__ = [
    "prepare_run",
    "run_chunks",
    "compiled_chunk_count",
    "SensitivityResult",
    "run_sensitivities",
    "write_sensitivities",
    "read_sensitivities",
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
# the jitted chunk runner, built on the engine's seed-form Langevin step (dmd.integrators.langevin)


def _scaled_norm(d):
    """‖d‖ over the trailing (N, 3) axes without overflowing the squares in float32. ``d: [P, N, 3]``."""
    m = jnp.max(jnp.abs(d), axis=(-2, -1))
    safe = jnp.where(m > 0, m, 1.0)
    return m * jnp.sqrt(jnp.sum((d / safe[:, None, None]) ** 2, axis=(-2, -1)))


_CHUNK_CACHE: dict = {}


def compiled_chunk_count() -> tuple[int, int]:
    """(cached chunk functions, total jit compilations among them): to check that reruns do not recompile."""
    return len(_CHUNK_CACHE), sum(chunk._cache_size() for chunk, _ in _CHUNK_CACHE.values())


def _cache_key(system, sel, dt, temperature, friction, method, capacity, report_every, n_tangents):
    """What the compiled chunk depends on besides its array arguments (θ, params, k and the state are arguments)."""
    arr = (system.masses, system.box)
    return (
        system.energy_fn,
        system.neighbor_fn,
        id(system.constraints),
        tuple(np.asarray(a).tobytes() if a is not None else None for a in arr),
        sel,
        float(dt),
        float(temperature),
        float(friction),
        method,
        capacity,
        report_every,
        n_tangents,
    )


def _build_chunk(system, sel, dt, temperature, friction, method, capacity, report_every, n_tangents):
    """A jitted ``chunk(carry, theta, params, k, n_frames) -> (carry, frames)``, cached across runs.

    The primal step is :func:`dmd.integrators.langevin` (so positions equal ``dmd simulate``'s for the same seed),
    differentiated with ``jax.jvp`` in P directions (vmapped; the primal is computed once). The state's forces
    are part of the differentiated state: their tangent is −ζE (eq. 7), a Hessian-vector product.

    Over 100 lines: the tangent step, window bookkeeping and frame recording are closures over the integrator's
    coefficients and the parameter selection, which the jitted chunk needs as constants.
    """
    key = _cache_key(system, sel, dt, temperature, friction, method, capacity, report_every, n_tangents)
    if key in _CHUNK_CACHE:
        return _CHUNK_CACHE[key]
    from dmd.integrators import langevin

    integ = langevin(system, dt=dt, temperature=temperature, friction=friction)
    box = system.box
    a, b, _ = langevin_coefficients(dt, friction, KB_KJ_PER_MOL_K * temperature, jnp.asarray(system.masses))

    def energy_of(theta, params, x, nbr):
        return system.energy_fn(sel.set(params, theta), x, box=box, neighbor=nbr)

    def jvp_step(state, theta, params, dx, dv, dfrc):
        """One engine step and its tangents in P directions: (new state, dx', dv', dF')."""

        def f(x, v, frc, th):
            new = integ.step(state.replace(positions=x, velocities=v, forces=frc), sel.set(params, th))
            return (new.positions, new.velocities, new.forces), new

        eye = jnp.eye(n_tangents, dtype=theta.dtype)

        def one(dx_p, dv_p, df_p, e_p):
            return jax.jvp(
                f, (state.positions, state.velocities, state.forces, theta), (dx_p, dv_p, df_p, e_p), has_aux=True
            )

        _, tan, new = jax.vmap(one, out_axes=(None, 0, None))(dx, dv, dfrc, eye)
        return new, tan

    def step(carry, theta, params, k):
        state = carry["state"]
        if n_tangents == 0:
            return dict(carry, state=integ.step(state, params))
        if method == "tangent":
            new, (dx, dv, dfrc) = jvp_step(state, theta, params, carry["dx"], carry["dv"], carry["dF"])
            return dict(carry, state=new, dx=dx, dv=dv, dF=dfrc)
        # method == "window": eq. (9), the last k ζ terms exact, older ones folded with 1/(1−a)
        zeta = -carry["dF"]  # ζE(x_t) evaluated with the windowed dx_t/dθ
        t = state.step
        slot = t % k
        old = jnp.where(t >= k, carry["Z"][slot], jnp.zeros_like(zeta))
        s_k = (1 - a**k) / (1 - a)
        q_new = zeta + (carry["B"] - old) + a * (carry["Q"] - s_k * old)
        b_new = carry["B"] - old + zeta
        r_new = carry["R"] + old
        dx_new = (-dt * b[None] * (q_new + r_new / (1 - a))).astype(zeta.dtype)
        # feeding (dx_{t+1}, 0, 0) as the tangent of (x_t, v_t, F_t) makes the step's position tangent dx_{t+1}
        # (x_{t+1} = x_t + δt(a v_t + b F_t + c n)), so its force tangent is −ζE(x_{t+1}) with the windowed dx
        zeros = jnp.zeros_like(dx_new)
        new, (_, _, dfrc) = jvp_step(state, theta, params, dx_new, zeros, zeros)
        return dict(
            carry,
            state=new,
            dx=dx_new,
            dv=(dx_new - carry["dx"]) / dt,
            dF=dfrc,
            Z=carry["Z"].at[slot].set(zeta),
            B=b_new,
            Q=q_new,
            R=r_new,
        )

    energy_and_dtheta = jax.value_and_grad(energy_of, argnums=0)

    def frame(carry, theta, params, k):
        carry = jax.lax.fori_loop(0, report_every, lambda _, c: step(c, theta, params, k), carry)
        st = carry["state"]
        _, du = energy_and_dtheta(theta, params, st.positions, st.neighbor)
        out = {"x": st.positions, "v": st.velocities, "e": st.potential_energy, "du": du}
        if n_tangents:
            out.update(dx=carry["dx"], dv=carry["dv"], growth=_scaled_norm(carry["dx"]))
        return carry, out

    @functools.partial(jax.jit, static_argnums=4)
    def chunk(carry, theta, params, k, n_frames):
        return jax.lax.scan(lambda c, _: frame(c, theta, params, k), carry, None, length=n_frames)

    def init(seed, theta, params, pos, vel, nbr):
        """Engine start state and its θ-tangents: x_0, v_0 independent of θ, dF_0 = −∂²E/∂x∂θ."""

        def g(th):
            st = integ.init(jax.random.PRNGKey(seed), sel.set(params, th), positions=pos, velocities=vel, neighbor=nbr)
            return st.forces, st

        if n_tangents == 0:
            return {"state": g(theta)[1]}
        eye = jnp.eye(n_tangents, dtype=theta.dtype)
        _, dfrc, state = jax.vmap(lambda e: jax.jvp(g, (theta,), (e,), has_aux=True), out_axes=(None, 0, None))(eye)
        zeros = jnp.zeros_like(dfrc)
        carry = {"state": state, "dx": zeros, "dv": zeros, "dF": dfrc}
        if method == "window":
            carry.update(Z=jnp.zeros((capacity, *dfrc.shape), dfrc.dtype), B=zeros, Q=zeros, R=zeros)
        return carry

    if len(_CHUNK_CACHE) > 16:
        _CHUNK_CACHE.pop(next(iter(_CHUNK_CACHE)))
    _CHUNK_CACHE[key] = (chunk, init)
    return chunk, init


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


def _check_args(system, names, steps, dt, temperature, friction, method, window, report_every, window_capacity=None):
    fix = "names: no parameter selected; pass e.g. names=['lj/epsilon/A'] (--sensitivity NAME)"
    names = name_list(names, if_empty=fix)
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
        if window_capacity is not None and (
            not isinstance(window_capacity, (int, np.integer)) or window_capacity < window
        ):
            raise UserInputError(f"window_capacity={window_capacity!r} must be an integer >= window={window}")
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
    window_capacity=None,
    chunk_steps=2000,
    progress=None,
) -> SensitivityResult:
    """Run seed-form Langevin dynamics (eq. 4-5) carrying dx_t/dθ, dv_t/dθ for the parameters ``names``.

    Args:
      system: a :class:`dmd.system.System`.
      names: P parameter names ``"force/field/label"`` (or ``"force/field"`` for a whole leaf), see
        :mod:`dmd.params`.
      steps: number of time steps; dt: ps; temperature: K; friction: γ, 1/ps (> 0).
      seed: PRNG seed, used exactly as ``dmd simulate`` uses it (same start velocities, same noise: the frames
        equal the plain run's). The key chain does not depend on θ, so re-runs with other θ see the same noise
        (finite differences with the same noise).
      method: "tangent" (exact tangent carry, default) or "window" (the seed's rolling window, eq. 9).
      window: k, the number of recent ζ terms kept exactly (``method="window"`` only).
      window_capacity: ring-buffer size for ``method="window"`` (default k; must be ≥ k). Runs with the same
        capacity and different k share one compilation (scanning k).
      report_every: steps between stored frames (must divide ``steps``).
      pos: ``[N, 3]`` nm start positions (default ``system.positions``); vel: ``[N, 3]`` nm/ps start velocities
        (default Maxwell-Boltzmann at ``temperature`` from the seed, as the engine's ``init``). The start state
        is taken as independent of θ (dx_0/dθ = dv_0/dθ = 0).
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
        system, names, steps, dt, temperature, friction, method, window, report_every, window_capacity
    )
    run_args = (system, sel, steps, dt, temperature, friction, seed, method, window, report_every, pos, vel)
    frames, chunk, carry, consts = prepare_run(*run_args, capacity=window_capacity)
    outs, notes = run_chunks(system, chunk, carry, consts, frames, report_every, chunk_steps, progress)
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


def prepare_run(
    system,
    sel,
    steps,
    dt,
    temperature,
    friction,
    seed,
    method,
    window,
    report_every,
    pos,
    vel,
    n_tangents=None,
    capacity=None,
):
    """Start carry, arguments and the compiled chunk (shared with the benchmark's plain-dynamics run)."""
    dtype = jnp.asarray(system.positions).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    shape = np.shape(system.positions)
    x = _state_array("pos", system.positions if pos is None else pos, shape, dtype)
    v = None if vel is None else _state_array("vel", vel, shape, dtype)
    theta = sel.get(system.params)
    n_tangents = sel.size if n_tangents is None else n_tangents
    if method == "window":
        capacity = window if capacity is None else capacity
    else:
        window = capacity = None
    chunk, init = _build_chunk(system, sel, dt, temperature, friction, method, capacity, report_every, n_tangents)
    nbr = system.allocate_neighbors(x) if system.neighbor_fn is not None else None
    carry = init(seed, theta, system.params, x, v, nbr)
    args = (theta, system.params, jnp.asarray(0 if window is None else window, jnp.int32))
    return steps // report_every, chunk, carry, args


def run_chunks(system, chunk, carry, args, frames, report_every, chunk_steps, progress):
    """Run ``frames`` frames in fixed-size jitted chunks (at most two compilations: full and last chunk)."""
    from dmd.runloop import grown_state, redo_on_overflow

    per_chunk = max(1, min(frames, int(chunk_steps) // report_every))
    n_chunks = -(-frames // per_chunk)
    bar = None
    if progress or (progress is None and n_chunks > 1):
        from dmd.base.progress import progress_bar

        bar = progress_bar(frames * report_every, unit="step", desc="sensitivities")
    outs, notes, done = [], [], 0
    while done < frames:
        nf = min(per_chunk, frames - done)
        carry, (new_carry, out), grown = redo_on_overflow(
            lambda c, nf=nf: chunk(c, *args, nf),
            carry,
            lambda result: result[0]["state"].neighbor,
            lambda c, _, attempt: dict(c, state=grown_state(system, c["state"], attempt)),
        )
        if grown:
            notes.append(f"neighbour list overflowed near step {done * report_every}; grown ×{grown}, chunk redone")
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

    from dmd.base.io import atomic_path

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
