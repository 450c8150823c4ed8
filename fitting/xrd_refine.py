"""Powder-XRD-driven structure refinement: objectives, annealed smoothing, energy guidance, multi-start optax.

Forward model (all from :mod:`analysis.powder`, differentiable in the cell and the fractional coordinates for a
fixed reflection list chosen once with a margin)::

    y_calc(2θ) = profile(2θ; sticks(hkl, m, pos_frac, cell)),    sticks: I = m |F|² LP

Objectives (lower is better), on one 2θ grid, both patterns optionally smoothed by a Gaussian of standard
deviation σ (degrees 2θ) — the *multi-scale smoothed metric*, whose σ anneals from ``smooth_start`` to 0::

    cosine:      L = 1 − cos(y_o^σ, y_c^σ)
    pearson:     L = 1 − CC(y_o^σ, y_c^σ)
    rwp:         L = Rwp(y_o^σ, y_c^σ)               (unit-area patterns, analysis.powder.rwp)
    wasserstein: L = W₁(y_o^σ, y_c^σ) / 1°           (analysis.powder.wasserstein_distance)

    total(θ, t) = L(θ; σ_t) + w_t · E(cell(θ), pos(θ))          (E: fitting.xrd_energy, eV/atom)

Smoothing y^σ = y ∗ N(0, σ²) is done by FFT on the uniform grid (zero-padded, no wrap-around). Widening the
peaks merges neighbouring reflections and lengthens the basin of attraction of each peak position (the seed
paper's rough landscape comes from narrow peaks); annealing σ → 0 returns to the exact metric. The energy
weight w_t is held at ``energy_weight`` for the first ``energy_hold`` fraction of the steps and then ramps
linearly to 0 at ``energy_off``, so the energy chooses the basin and the diffraction data alone fix the final
structure (the element-based energy's own minimum is a few % off the true cells).

Optimizer: Adam (optax) on the internal parameters of :mod:`fitting.xrd_params`, learning rate with cosine
decay, gradient clipping. Multi-start: the whole ``lax.scan`` over steps is ``vmap``-ed over starts, compiled
once per (parameterization, number of starts, steps); schedules enter as scanned arrays (no recompilation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis import powder
from analysis.formfactors import FormFactorTable, form_factor_table
from dmd.base.config import set_groups

__all__ = [
    "METRICS",
    "PatternModel",
    "make_pattern_model",
    "windowed_gaussian_profile",
    "smooth_pattern",
    "xrd_loss",
    "RefineConfig",
    "AdamSettings",
    "Smoothing",
    "EnergyRamp",
    "RefineResult",
    "schedules",
    "make_loss_fn",
    "Refiner",
    "refine",
    "stack_params",
]

METRICS = ("cosine", "pearson", "rwp", "wasserstein")


@dataclass(frozen=True)
class PatternModel:
    """Fixed pieces of the forward model: reflection list, form factors, profile, grid.

    Attributes:
      two_theta: ``[G]`` uniform grid (degrees).
      hkl: int32 ``[M, 3]``; multiplicity ``[M]`` (for the symmetry the structure keeps during the refinement:
        the space group for space-group-constrained runs, P1 (Friedel pairs merged) otherwise).
      table: form-factor table of the P1 atoms ``[n_atoms]``.
      wavelength: Å. U, V, W: Caglioti parameters (deg²); eta: pseudo-Voigt Lorentz fraction; shape.
      b_iso: ``[n_atoms]`` Å² or None.
      window: Gaussian shape only: each peak is evaluated on the ``window`` grid points nearest to it
        (:func:`windowed_gaussian_profile`, ± ≥ 5 FWHM: identical to the dense profile in float64) instead of
        on all G points; 0 = dense (:func:`analysis.powder.profile`). Pseudo-Voigt is always dense (its
        Lorentzian tails reach across the pattern).
    """

    two_theta: np.ndarray
    hkl: np.ndarray
    multiplicity: np.ndarray
    table: FormFactorTable
    wavelength: float
    U: float = 0.0
    V: float = 0.0
    W: float = 0.0225
    eta: float = 0.5
    shape: str = "pseudo-voigt"
    b_iso: np.ndarray | None = None
    window: int = 0

    @property
    def step(self) -> float:
        return float(self.two_theta[1] - self.two_theta[0])

    def __call__(self, cell, pos_frac):
        """Profiled pattern ``[G]`` scaled to unit sum for ``cell [6]``, ``pos_frac [N, 3]``."""
        pos_frac = jnp.asarray(pos_frac)
        dt = pos_frac.dtype
        st = powder.stick_pattern(
            self.hkl,
            self.multiplicity,
            pos_frac,
            jnp.asarray(cell, dt),
            self.table,
            None if self.b_iso is None else jnp.asarray(self.b_iso, dt),
            None,
            wavelength=self.wavelength,
        )
        grid = jnp.asarray(self.two_theta, dt)
        if self.shape == "gaussian" and self.window > 0:
            fwhm = powder.caglioti_fwhm(jnp.where(jnp.isfinite(st["two_theta"]), st["two_theta"], 0.0), self.U,
                                        self.V, self.W)  # fmt: skip
            y = windowed_gaussian_profile(grid, st["two_theta"], st["intensity"], fwhm, self.window)
        else:
            y = powder.profile(
                grid, st["two_theta"], st["intensity"], U=self.U, V=self.V, W=self.W, eta=self.eta, shape=self.shape
            )
        return y / jnp.sum(y)


def windowed_gaussian_profile(grid, two_theta, intensity, fwhm, window: int):
    """Gaussian-profiled pattern evaluating each peak only on the ``window`` grid points around it.

    Same equation as :func:`analysis.powder.profile` (shape "gaussian": each stick adds its intensity as peak
    area, per degree), but the cost is M·window instead of M·G: with a window of ± 5 FWHM (± 11.8 σ) the
    neglected tail is below e⁻⁶⁹ of the peak, so the result equals the dense profile to float64 round-off.
    The window start is an integer index (no gradient; the values inside are differentiable in position,
    intensity and width), and peaks are scatter-added onto the grid; points off the grid are dropped.

    Args:
      grid: ``[G]`` uniform grid (degrees). two_theta, intensity, fwhm: ``[M]`` sticks (NaN positions ignored).
      window: static number of grid points per peak (even; centred on the peak).

    Returns:
      ``[G]`` intensity.
    """
    g = grid.shape[0]
    dt = grid.dtype
    ok = jnp.isfinite(two_theta)
    pos = jnp.where(ok, two_theta, grid[0] - 1e3)  # NaN sticks: far off the grid, then masked
    inten = jnp.where(ok, intensity, 0.0)
    step = grid[1] - grid[0]
    first = jnp.floor((jax.lax.stop_gradient(pos) - grid[0]) / step).astype(jnp.int32) - (window // 2 - 1)
    idx = first[:, None] + jnp.arange(window, dtype=jnp.int32)[None, :]  # [M, window]
    on_grid = (idx >= 0) & (idx < g)
    idx = jnp.clip(idx, 0, g - 1)
    sigma = (fwhm / (2 * jnp.sqrt(2 * jnp.log(2.0)))).astype(dt)
    dx = grid[idx] - pos[:, None]
    peak = jnp.exp(-0.5 * (dx / sigma[:, None]) ** 2) / (sigma[:, None] * jnp.sqrt(2 * jnp.pi).astype(dt))
    vals = jnp.where(on_grid, inten[:, None] * peak, 0.0)
    return jnp.zeros(g, dt).at[idx.ravel()].add(vals.ravel())


def make_pattern_model(
    elements,
    cell,
    two_theta,
    *,
    spacegroup="P 1",
    wavelength: float = 1.54056,
    U: float = 0.0,
    V: float = 0.0,
    W: float = 0.0225,
    eta: float = 0.5,
    shape: str = "pseudo-voigt",
    margin: float = 0.15,
    b_iso=None,
    window_fwhm: float = 5.0,
) -> PatternModel:
    """Build a :class:`PatternModel` for P1 atoms ``elements`` starting from ``cell`` (Å, degrees).

    The reflection list covers the grid's 2θ range widened by ``margin`` (relative, in 1/d) so that it stays
    complete while the cell changes by up to about that fraction. For the Gaussian shape, each peak is
    evaluated within ± ``window_fwhm`` × the largest FWHM (over the grid widened by 10°) of its centre
    (0 = on the whole grid); see :func:`windowed_gaussian_profile`.
    """
    grid = np.asarray(two_theta, float)
    if grid.ndim != 1 or grid.size < 8:
        raise ValueError(f"two_theta grid must be 1-D with ≥ 8 points, got shape {grid.shape}")
    steps = np.diff(grid)
    if np.any(steps <= 0) or np.ptp(steps) > 1e-6 * max(1.0, abs(steps.mean())) + 1e-9:
        raise ValueError("two_theta grid must be uniform and increasing (resample the pattern first)")
    hkl, mult = powder.powder_hkl(
        np.asarray(cell, float), spacegroup, wavelength, (max(grid[0], 1.0), min(grid[-1], 179.0)), margin=margin
    )
    table = form_factor_table(list(elements))
    window = 0
    if shape == "gaussian" and window_fwhm > 0:
        wide = np.linspace(max(grid[0] - 10.0, 0.1), min(grid[-1] + 10.0, 179.9), 512)
        fwhm_max = float(np.max(np.asarray(powder.caglioti_fwhm(wide, U, V, W))))
        window = 2 * int(np.ceil(window_fwhm * fwhm_max / float(steps.mean()))) + 2
        window = 0 if window >= grid.size else window  # a window as wide as the grid saves nothing
    return PatternModel(
        two_theta=grid,
        hkl=hkl,
        multiplicity=mult,
        table=table,
        wavelength=float(wavelength),
        U=U,
        V=V,
        W=W,
        eta=eta,
        shape=shape,
        b_iso=None if b_iso is None else np.asarray(b_iso, float),
        window=window,
    )


def smooth_pattern(y, step: float, sigma):
    """Gaussian smoothing of a pattern on a uniform grid, by FFT with zero padding.

    Args:
      y: ``[G]`` pattern. step: grid spacing (degrees). sigma: standard deviation (degrees, traced OK; 0 → y).

    Returns:
      ``[G]`` y ∗ N(0, σ²) (area preserved).
    """
    y = jnp.asarray(y)
    g = y.shape[-1]
    n = 1 << int(np.ceil(np.log2(2 * g)))
    freq = jnp.fft.rfftfreq(n, d=step).astype(y.dtype)
    kernel = jnp.exp(-2.0 * (jnp.pi * freq * sigma) ** 2)
    return jnp.fft.irfft(jnp.fft.rfft(y, n=n) * kernel, n=n)[..., :g].astype(y.dtype)


def xrd_loss(metric: str, observed, calculated, two_theta, sigma=0.0):
    """Loss of ``calculated`` vs ``observed`` (``[G]`` each) under ``metric`` at smoothing ``sigma`` (module table)."""
    grid = jnp.asarray(two_theta, jnp.asarray(calculated).dtype)
    step = float(np.asarray(two_theta)[1] - np.asarray(two_theta)[0])
    yo = smooth_pattern(observed, step, sigma)
    yc = smooth_pattern(calculated, step, sigma)
    if metric == "cosine":
        return 1.0 - powder.cosine_similarity(yo, yc)
    if metric == "pearson":
        return 1.0 - powder.pearson_similarity(yo, yc)
    if metric == "rwp":
        return powder.rwp(yo, yc, None, grid)
    if metric == "wasserstein":
        return powder.wasserstein_distance(yo, yc, grid)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class AdamSettings:
    """The Adam step of the refinement.

    Attributes:
      learning_rate: Adam peak rate (internal units: 0.01 ≈ 1 % length, 0.57°, 0.01 frac).
      lr_final_fraction: cosine-decay floor as a fraction of ``learning_rate``.
      clip: global gradient-norm clip.
      lattice_lr_scale: multiplies the lattice parameters' steps: a 1 % change of a length moves a peak at
        2θ = 70° by 0.6°, several peak widths, so the lattice needs smaller steps than the coordinates.
    """

    learning_rate: float = 0.01
    lr_final_fraction: float = 0.05
    clip: float = 10.0
    lattice_lr_scale: float = 0.25


@dataclass(frozen=True)
class Smoothing:
    """The multi-scale metric's smoothing σ schedule (module docstring).

    Attributes:
      smooth_start: initial smoothing σ (degrees 2θ); 0 disables the multi-scale metric.
      smooth_end_fraction: fraction of the steps after which σ = 0 (σ decays geometrically to 2 % first).
    """

    smooth_start: float = 0.0
    smooth_end_fraction: float = 0.7


@dataclass(frozen=True)
class EnergyRamp:
    """The energy term's weight schedule (module docstring).

    Attributes:
      energy_weight: w of the energy term (per eV/atom); 0 disables it.
      energy_hold, energy_off: fractions of the steps where w starts ramping down and reaches 0
        (energy_off = 1 with energy_hold = 1 keeps w constant).
    """

    energy_weight: float = 0.0
    energy_hold: float = 0.5
    energy_off: float = 0.8


@dataclass(frozen=True, init=False)
class RefineConfig:
    """Refinement settings (see module docstring): the metric, the number of steps, and three groups.

    Built from groups, from the groups' flat field names (``RefineConfig(steps=200, smooth_start=1.0)``), or both.

    Attributes:
      metric: one of :data:`METRICS`.
      steps: optimizer steps.
      adam: :class:`AdamSettings`; smoothing: :class:`Smoothing`; energy: :class:`EnergyRamp`.
    """

    metric: str
    steps: int
    adam: AdamSettings
    smoothing: Smoothing
    energy: EnergyRamp

    def __init__(self, metric="cosine", steps=300, *, adam=None, smoothing=None, energy=None, **knobs):
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "steps", steps)
        groups = {"adam": (adam, AdamSettings), "smoothing": (smoothing, Smoothing), "energy": (energy, EnergyRamp)}
        set_groups(self, groups, knobs)
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; expected one of {', '.join(METRICS)}")
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        if self.energy.energy_weight < 0 or self.smoothing.smooth_start < 0:
            raise ValueError("energy_weight and smooth_start must be ≥ 0")


def schedules(config: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-step smoothing σ ``[T]`` (degrees) and energy weight ``[T]``."""
    sm, en = config.smoothing, config.energy
    t = np.arange(config.steps) / max(config.steps, 1)
    if sm.smooth_start > 0:
        frac = np.clip(t / sm.smooth_end_fraction, 0.0, 1.0)
        sigma = sm.smooth_start * (0.02**frac)
        sigma = np.where(t < sm.smooth_end_fraction, sigma, 0.0)
    else:
        sigma = np.zeros_like(t)
    if en.energy_weight > 0:
        hold, off = en.energy_hold, max(en.energy_off, en.energy_hold + 1e-9)
        ramp = np.clip((off - t) / (off - hold), 0.0, 1.0)
        w = en.energy_weight * np.where(t < hold, 1.0, ramp)
    else:
        w = np.zeros_like(t)
    return sigma, w


def make_loss_fn(param, pattern: PatternModel, observed, metric: str = "cosine", energy=None):
    """``loss(params, sigma, energy_weight) -> (total, (xrd, energy))`` for one start (pure, differentiable).

    Args:
      param: a parameterization from :mod:`fitting.xrd_params`.
      pattern: the forward model; observed: ``[G]`` pattern on ``pattern.two_theta``.
      energy: optional callable ``energy(cell, pos_frac) -> eV/atom`` (:class:`fitting.xrd_energy.EnergyModel`).
    """
    obs = jnp.asarray(observed)

    def loss(params, sigma, e_weight):
        cell, pos = param.crystal(params)
        calc = pattern(cell, pos)
        x = xrd_loss(metric, obs.astype(calc.dtype), calc, pattern.two_theta, sigma)
        e = energy(cell, pos) if energy is not None else jnp.zeros((), x.dtype)
        return x + e_weight * e, (x, e)

    return loss


def stack_params(params_list):
    """Stack a list of parameter pytrees into one with a leading ``[n_starts]`` axis."""
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *params_list)


@dataclass
class RefineResult:
    """Result of :func:`refine`.

    Attributes:
      params: batched final parameters (leading ``[n_starts]``).
      cell: ``[n_starts, 6]``; pos_frac: ``[n_starts, n_atoms, 3]`` final P1 structures.
      xrd_loss: ``[n_starts]`` final unsmoothed XRD loss; energy: ``[n_starts]`` eV/atom.
      best: index of the start with the lowest final XRD loss.
      history: dict of ``[steps, n_starts]`` arrays: ``loss`` (total), ``xrd`` (smoothed), ``energy``;
        plus ``sigma`` and ``energy_weight`` ``[steps]``.
      seconds: run wall time (compilation excluded); compile_seconds: compilation (0 when cached);
        seconds_per_start: ``seconds / n_starts``.
    """

    params: dict
    cell: np.ndarray
    pos_frac: np.ndarray
    xrd_loss: np.ndarray
    energy: np.ndarray
    best: int
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    compile_seconds: float = 0.0

    @property
    def seconds_per_start(self) -> float:
        return self.seconds / max(len(self.xrd_loss), 1)


class Refiner:
    """A compiled multi-start refinement for one (parameterization, pattern model, metric, energy).

    The observed pattern and the per-start schedules are *arguments*, so one compilation serves every
    start, perturbation size, smoothing schedule and energy weight of a structure (the benchmark runs the
    P1, P1 + energy and annealed-metric methods in one call this way).

    Args:
      param, pattern, metric, energy: as in :func:`make_loss_fn` (energy may be None: weights then ignored).
      config: supplies ``steps`` and ``adam`` (learning rate, its cosine-decay floor, clip, lattice step scale).
    """

    def __init__(self, param, pattern: PatternModel, metric: str = "cosine", energy=None, config=None):
        config = config or RefineConfig(metric=metric)
        self.param, self.pattern, self.metric, self.energy, self.config = param, pattern, metric, energy, config
        sched = optax.cosine_decay_schedule(
            config.adam.learning_rate, config.steps, alpha=config.adam.lr_final_fraction
        )
        opt = optax.chain(optax.clip_by_global_norm(config.adam.clip), optax.adam(sched))

        def one(p0, obs, sigma, e_w):
            loss_fn = make_loss_fn(param, pattern, obs, metric, energy)
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

            def step(carry, xs):
                p, s = carry
                (total, (x, e)), g = grad_fn(p, xs[0], xs[1])
                upd, s = opt.update(g, s, p)
                upd = {k: v * config.adam.lattice_lr_scale if k == "lattice" else v for k, v in upd.items()}
                return (optax.apply_updates(p, upd), s), (total, x, e)

            (p, _), hist = jax.lax.scan(step, (p0, opt.init(p0)), (sigma, e_w))
            zero = jnp.zeros((), obs.dtype)
            _, (x_final, e_final) = loss_fn(p, zero, zero)
            cell, pos = param.crystal(p)
            return p, cell, pos, x_final, e_final, hist

        self._run = jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0)))
        self._compiled: dict = {}

    def __call__(self, starts, observed, sigma, energy_weight) -> RefineResult:
        """Run all starts.

        Args:
          starts: list of parameter pytrees or a pytree with leading ``[n_starts]`` axis.
          observed: ``[G]`` pattern on ``pattern.two_theta`` (any positive scale).
          sigma, energy_weight: ``[steps]`` (shared) or ``[n_starts, steps]`` schedules.
        """
        observed = np.asarray(observed, float)
        if observed.shape != self.pattern.two_theta.shape:
            raise ValueError(f"observed pattern has shape {observed.shape}; grid has {self.pattern.two_theta.shape}")
        if not np.all(np.isfinite(observed)) or observed.sum() <= 0:
            raise ValueError("observed pattern must be finite with a positive sum; clean NaN/inf points")
        if isinstance(starts, dict) and np.ndim(starts["lattice"]) == 1:
            starts = [starts]  # a single start
        if isinstance(starts, (list, tuple)):
            starts = stack_params(starts)
        dtype = jnp.asarray(jax.tree_util.tree_leaves(starts)[0]).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.float32
        starts = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), starts)
        n = jax.tree_util.tree_leaves(starts)[0].shape[0]
        sigma = np.broadcast_to(np.asarray(sigma, float), (n, self.config.steps))
        energy_weight = np.broadcast_to(np.asarray(energy_weight, float), (n, self.config.steps))
        if self.energy is None and np.any(energy_weight > 0):
            raise ValueError("energy_weight > 0 needs an energy model (fitting.xrd_energy.make_energy_model)")
        obs = jnp.asarray(observed / observed.sum(), dtype)
        args = (starts, obs, jnp.asarray(sigma, dtype), jnp.asarray(energy_weight, dtype))
        key = jax.tree_util.tree_structure(args), tuple((x.shape, x.dtype) for x in jax.tree_util.tree_leaves(args))
        t0 = time.perf_counter()
        if key not in self._compiled:  # ahead-of-time compile, timed apart from the run
            self._compiled[key] = self._run.lower(*args).compile()
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        p, cell, pos, x_final, e_final, hist = self._compiled[key](*args)
        jax.block_until_ready(x_final)
        seconds = time.perf_counter() - t0
        x_final = np.asarray(x_final)
        return RefineResult(
            params=jax.tree_util.tree_map(np.asarray, p),
            cell=np.asarray(cell),
            pos_frac=np.asarray(pos),
            xrd_loss=x_final,
            energy=np.asarray(e_final),
            best=int(np.argmin(np.where(np.isfinite(x_final), x_final, np.inf))),
            history={
                "loss": np.asarray(hist[0]).T,
                "xrd": np.asarray(hist[1]).T,
                "energy": np.asarray(hist[2]).T,
                "sigma": sigma.T,
                "energy_weight": energy_weight.T,
            },
            seconds=seconds,
            compile_seconds=compile_seconds,
        )


def refine(param, starts, pattern: PatternModel, observed, config: RefineConfig | None = None, energy=None):
    """Refine a batch of starting points against an observed pattern (multi-start, vmapped).

    Args:
      param: parameterization (:mod:`fitting.xrd_params`).
      starts: one parameter pytree, a list of them, or a pytree with leading ``[n_starts]`` axis.
      pattern: :class:`PatternModel`; observed: ``[G]`` on ``pattern.two_theta`` (any positive scale).
      config: :class:`RefineConfig`. energy: optional energy callable (eV/atom), needed when
        ``config.energy.energy_weight > 0``.

    Returns:
      :class:`RefineResult` (``history`` arrays are ``[steps, n_starts]``).
    """
    config = config or RefineConfig()
    if config.energy.energy_weight > 0 and energy is None:
        raise ValueError("energy_weight > 0 needs an energy model (fitting.xrd_energy.make_energy_model)")
    sigma, e_w = schedules(config)
    return Refiner(param, pattern, config.metric, energy if config.energy.energy_weight > 0 else None, config)(
        starts, observed, sigma, e_w
    )
