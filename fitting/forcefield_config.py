"""Force-field fitting: configuration dataclasses and the bounded parameter transforms (θ ↔ z)."""

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import UserInputError
from dmd.params import select
from fitting.observables import Observable

__all__ = [
    "ESTIMATORS",
    "OPTIMIZERS",
    "FitParam",
    "FitTarget",
    "FitState",
    "FitConfig",
    "FitResult",
    "to_internal",
    "from_internal",
    "ParamMapping",
]

ESTIMATORS = ("fluctuation", "pathwise", "reweighting")
OPTIMIZERS = ("lm", "adam", "sgd")


@dataclasses.dataclass(frozen=True)
class FitParam:
    """One fitted scalar.

    Attributes:
      name: display name (defaults to the first θ entry).
      entries: θ names ``"force/field/label"`` (or ``"force/field"`` for a whole leaf) set to this value.
      lower, upper: bounds in θ units (None: unbounded). ``lower=0`` → positive (log transform).
      transform: "auto" (log if lower is 0 and no upper, logit if both bounds, else identity), "log",
        "logit" or "identity".
      truth: the known value of a synthetic recovery (θ units), drawn on ``params.png``; never used by the fit.
    """

    entries: tuple[str, ...]
    name: str | None = None
    lower: float | None = None
    upper: float | None = None
    transform: str = "auto"
    truth: float | None = None

    @property
    def label(self) -> str:
        return self.name or self.entries[0]

    def kind(self) -> str:
        if self.transform != "auto":
            return self.transform
        if self.lower is not None and self.upper is not None:
            return "logit"
        if self.lower is not None and self.lower == 0:
            return "log"
        return "identity"


@dataclasses.dataclass(frozen=True)
class FitTarget:
    """Target data for one observable.

    Attributes:
      observable: :class:`fitting.observables.Observable`.
      data: ``[K]`` target values on ``observable.axis``.
      weight: weight of this target in the loss.
      sigma: ``[K]`` or scalar uncertainty; default the RMS of ``data`` (a dimensionless, scale-free loss).
      objective: None (plain residuals (prediction − data)/σ) or a name in
        :data:`fitting.objectives.RESIDUAL_OBJECTIVES` ("absolute", "cc", "gaussian": scale and offset profiled out,
        the same metrics reweighting uses).
      weights: optional ``[K]`` per-point weights of a named objective (resolution weighting).
    """

    observable: Observable
    data: np.ndarray
    weight: float = 1.0
    sigma: np.ndarray | float | None = None
    objective: str | None = None
    weights: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class FitState:
    """A further state point of a multi-state fit, simulated every round beside the main system.

    One set of fitted parameters z is shared by all states; each state has its own system (box, N, start positions,
    unfitted parameters), targets and temperature, its own sampler and its own estimator terms (β of its own
    temperature). The loss sums the residuals of all states, so parameters that one state point leaves correlated
    (ε and σ of a dense liquid's g(r)) are pinned by the combination.

    Attributes:
      system: :class:`dmd.System` whose parameters include every fitted entry.
      targets: list of :class:`FitTarget` evaluated on this state's frames.
      temperature: K (None: ``FitConfig.temperature``).
      name: label in the history (default ``state1``, ``state2``, ...).
    """

    system: object
    targets: tuple
    temperature: float | None = None
    name: str | None = None


@dataclasses.dataclass
class FitConfig:
    """Settings of a fit (the ``dmd fit`` YAML keys).

    Attributes:
      rounds: optimizer rounds. steps: production steps per simulation. equilibration: steps discarded first.
      report_every: steps between frames. dt: ps. temperature: K. friction: 1/ps. integrator: see
        :func:`dmd.integrators.make_integrator`.
      estimator: "fluctuation", "pathwise" or "reweighting".
      sensitivity_method / window: for the pathwise route (:func:`dmd.sensitivity.run_sensitivities`).
      optimizer: "lm", "adam" or "sgd"; learning_rate: optax learning rate (lm: fraction of the LM step).
      damping: LM λ. max_step: largest norm of one update in z (trust region).
      neff_fraction: reweighting re-simulates below this fraction of frames; max_reuse: most steps per trajectory.
      seed: PRNG seed (round r uses seed + r). out: folder for checkpoint/history/plots (None: in memory).
      resume: continue from ``out/checkpoint.npz``. progress: show a per-round progress bar.
      average_last: report the mean θ of the last this-many good rounds (Polyak-Ruppert iterate averaging damps
        the sampling noise of stochastic gradients; keep full steps, no ``decay_after``, over those rounds) with its
        standard error (:attr:`FitResult.stderr`); 0 reports the last iterate.
      decay_after: from this round on, steps shrink as 1/(1 + r − decay_after) (Robbins-Monro), so the iterate
        becomes a running average of the per-round estimates instead of jumping with the sampling noise;
        None keeps full steps.
      pressure: bar; when set, every state is sampled at constant pressure (NPT: :func:`dmd.npt.run_npt`, a Monte
        Carlo volume move every ``barostat_every`` steps, ``barostat`` "isotropic", "anisotropic" or "flexible"),
        frames carry their boxes and box-dependent observables (density, powder peak positions) follow θ. None: NVT.
      frame_chunk: frames per evaluation of the fluctuation estimator (memory ∝ chunk, not frames).
      replicas: R independent replicas per state point and round (NVT; fluctuation or reweighting estimator), each
        with its own velocities and noise (:func:`fitting.forcefield_sampling.sample_states`): vmapped on one
        device, sharded over the host's devices and, under ``dmd fit --distributed``, over one mesh of every
        process's devices when the process count divides R (else the (state, replica) pairs split). Observables
        and estimator terms are averages over the R·F pooled frames; each replica continues from its own last
        frame in the next round (unless ``restart`` is "crystal").
      restart: "continue" (each round's simulations go on from the last round's last frames) or "crystal" (each
        round starts again from the system's start positions and re-equilibrates, fresh velocities: the window a
        target made from fresh runs of ``equilibration`` + ``steps`` samples; docs/fitting.md, peptide).
      replica_gradient: "pooled" (2 J̄ᵀr of the replicas' mean prediction) or "cross" (each replica's Jacobian with
        the residual of the others' mean: :func:`fitting.forcefield_estimators.cross_replica_gradient`; replicas ≥
        2, fluctuation estimator, sgd or adam).
      loss_guard: a factor > 1 or None (off): a round whose loss exceeds factor × the best accepted round's is
        rejected: θ and every replica go back to that round's θ and last frames, the step halves, and the next
        round's loss replaces the best (:class:`fitting.loss_guard.LossGuard`; docs/fitting.md).
      start_scan: a :class:`fitting.start_scan.StartScan` or None (off): before round 0, the round loss on a grid
        symmetric about the start θ (1 or 2 fitted parameters); the rounds start at its lowest point.
      loss_surface: a factor > 1 or None (off): report the vertex of a parabola in z fitted to the scan's and the
        rounds' losses within factor × the lowest (one fitted parameter; fresh replicas, ``restart: crystal``),
        instead of the iterates (:func:`fitting.loss_surface.loss_vertex`; docs/fitting.md, peptide); or a mapping
        ``{factor, log, window, robust}``: ln loss, only the points within ``window`` in z of the scan's design
        centre, a robust (IRLS) fit (:func:`fitting.loss_surface.surface_options`).
    """

    rounds: int = 20
    steps: int = 4000
    equilibration: int = 1000
    report_every: int = 20
    dt: float = 0.005
    temperature: float = 300.0
    friction: float = 1.0
    integrator: str = "langevin"
    estimator: str = "fluctuation"
    sensitivity_method: str = "tangent"
    window: int | None = None
    optimizer: str = "lm"
    learning_rate: float = 1.0
    damping: float = 1e-3
    max_step: float = 0.2
    neff_fraction: float = 0.9
    max_reuse: int = 5
    seed: int = 0
    out: str | Path | None = None
    resume: bool = False
    progress: bool = True
    average_last: int = 0
    decay_after: int | None = None
    pressure: float | None = None
    barostat: str = "isotropic"
    barostat_every: int = 25
    frame_chunk: int = 128
    replicas: int = 1
    restart: str = "continue"
    replica_gradient: str = "pooled"
    loss_guard: float | None = None
    start_scan: object | None = None
    loss_surface: float | dict | None = None


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      values: fitted θ by :attr:`FitParam.label` (averaged over the last rounds when ``average_last``).
      last: the last iterate θ. history: one dict per round. params: θ pytree of ``values``.
      converged_loss: loss of the last good round.
      stderr: standard error of each averaged θ (``average_last`` ≥ 2; :func:`fitting.forcefield_outputs.
        averaged_theta`), else None.
    """

    values: dict
    last: dict
    history: list
    params: dict
    converged_loss: float
    stderr: dict | None = None


# ----------------------------------------------------------------------------------------------------------------
# parameter transforms


def to_internal(kind, lo, hi, theta):
    """θ → z."""
    if kind == "log":
        return math.log(theta - (lo or 0.0))
    if kind == "logit":
        u = (theta - lo) / (hi - lo)
        return math.log(u / (1 - u))
    return float(theta)


def from_internal(kind, lo, hi, z):
    """z → θ (jax, differentiable)."""
    if kind == "log":
        return (lo or 0.0) + jnp.exp(z)
    if kind == "logit":
        return lo + (hi - lo) * jax.nn.sigmoid(z)
    return z


class ParamMapping:
    """z ``[Pz]`` → params pytree, with ties and transforms (differentiable)."""

    def __init__(self, system, fit_params):
        self.base = system.params
        self.fit_params = list(fit_params)
        self.selections = []
        for fp in self.fit_params:
            try:
                self.selections.append(select(system.param_labels, list(fp.entries)))
            except KeyError as exc:
                raise UserInputError(f"fit parameter {fp.label!r}: {exc.args[0]}") from None
        self.kinds = [fp.kind() for fp in self.fit_params]
        for fp, kind in zip(self.fit_params, self.kinds, strict=True):
            if kind == "logit" and not (fp.lower is not None and fp.upper is not None and fp.lower < fp.upper):
                raise UserInputError(f"fit parameter {fp.label!r}: a logit transform needs lower < upper")
            if kind == "log" and fp.lower is None:
                raise UserInputError(f"fit parameter {fp.label!r}: a log transform needs a lower bound (e.g. 0)")

    def theta_of(self, z):
        return jnp.stack(
            [
                from_internal(k, fp.lower, fp.upper, z[i])
                for i, (k, fp) in enumerate(zip(self.kinds, self.fit_params, strict=True))
            ]
        )

    def params_of(self, z, base=None):
        params = self.base if base is None else base
        theta = self.theta_of(z)
        for i, sel in enumerate(self.selections):
            params = sel.set(params, jnp.full((sel.size,), theta[i]))
        return params

    def z_of_params(self, params):
        z = []
        for fp, kind, sel in zip(self.fit_params, self.kinds, self.selections, strict=True):
            vals = np.asarray(sel.get(params), float)
            z.append(to_internal(kind, fp.lower, fp.upper, float(vals.mean())))
        return np.array(z)

    def check_start(self, params):
        for fp, sel in zip(self.fit_params, self.selections, strict=True):
            v = np.asarray(sel.get(params), float)
            if np.ptp(v) > 1e-12 * max(1.0, np.abs(v).max()):
                raise UserInputError(
                    f"fit parameter {fp.label!r} ties entries with different start values {v.min():g}..{v.max():g}; "
                    "give them a common start value or fit them separately"
                )
            lo = -np.inf if fp.lower is None else fp.lower
            hi = np.inf if fp.upper is None else fp.upper
            if not (lo < v[0] < hi) and not (fp.kind() == "identity" and lo <= v[0] <= hi):
                raise UserInputError(f"fit parameter {fp.label!r}: start value {v[0]:g} is outside ({lo:g}, {hi:g})")


# ----------------------------------------------------------------------------------------------------------------
# sampling
