"""Gradients of ensemble observables d⟨A⟩/dθ from a trajectory: pathwise, fluctuation, reweighting.

Three estimators of the derivative of a time/ensemble average ⟨A⟩ = (1/F) Σ_t A(x_t; θ) with respect to the
selected parameters θ_p, with β = 1/(k_B T):

* **pathwise** (from the tangents of :func:`dmd.sensitivity.run_sensitivities`, seed eq. 3)::

      d⟨A⟩/dθ_p = ⟨ ∂A/∂x_t · dx_t/dθ_p + ∂A/∂θ_p ⟩

  Exact for the trajectory at hand and unbiased for ensemble averages only while dx_t/dθ stays bounded:
  short horizons, or non-chaotic (e.g. harmonic) systems. In chaotic dynamics ‖dx_t/dθ‖ ~ e^{λt} and the
  estimate is a sum of huge terms of random sign (see :mod:`dmd.chaos`).
* **fluctuation** (thermodynamic; the derivative of the Boltzmann average)::

      d⟨A⟩/dθ_p = ⟨∂A/∂θ_p⟩ − β cov(A, ∂U/∂θ_p)

  Valid when the frames sample the equilibrium (canonical) distribution of U(θ) at temperature T (discard
  equilibration; the integrator's discretisation error biases it by O(δt²)-ish terms). The ⟨∂A/∂θ⟩ term is
  needed whenever A depends explicitly on θ (e.g. A = U); omitting it is only right for A(x) alone.
* **reweighting** (finite central difference, no new simulation)::

      ⟨A⟩_{θ±δ} = Σ_t w_t^± A(x_t; θ±δ) / Σ_t w_t^±,   w_t^± ∝ exp(−β [U(x_t; θ±δ) − U(x_t; θ)])
      d⟨A⟩/dθ_p ≈ (⟨A⟩_{θ+δ} − ⟨A⟩_{θ−δ}) / 2δ

  Valid for small δ where the perturbed ensembles overlap the sampled one; monitor the Kish effective sample
  size N_eff = (Σw)²/Σw² and re-simulate when it drops (DiffTRe / chemtrain use N_eff < 0.9 N). As δ → 0 it
  tends to the fluctuation estimator.

Error bars: frames are correlated, so each estimator's standard error is a jackknife over contiguous blocks
(block averaging): the estimator is recomputed leaving out one block at a time.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.params import select

__all__ = [
    "GradientEstimate",
    "block_average",
    "block_jackknife",
    "kish_neff",
    "boltzmann_weights",
    "boltzmann_reweight",
    "pathwise_gradient",
    "fluctuation_gradient",
    "reweighting_gradient",
    "ensemble_gradients",
]


@dataclasses.dataclass(frozen=True)
class GradientEstimate:
    """d⟨A⟩/dθ from one estimator.

    Attributes:
      value: ``[P]`` (units of A per unit θ_p).
      stderr: ``[P]`` block-jackknife standard error.
      method: "pathwise", "fluctuation" or "reweighting".
      n_eff: ``[P]`` smallest Kish effective sample size of the ± reweighted ensembles (reweighting only).
      notes: validity warnings.
    """

    value: np.ndarray
    stderr: np.ndarray
    method: str
    n_eff: np.ndarray | None = None
    notes: tuple[str, ...] = ()


def _blocks(n: int, n_blocks: int) -> list[np.ndarray]:
    n_blocks = max(2, min(int(n_blocks), n))
    return np.array_split(np.arange(n), n_blocks)


def block_average(x, n_blocks: int = 20):
    """Mean of ``x [F, ...]`` over frames and its standard error from ``n_blocks`` contiguous block means."""
    x = np.asarray(x, float)
    means = np.stack([x[b].mean(axis=0) for b in _blocks(len(x), n_blocks)])
    return x.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(len(means))


def block_jackknife(estimator, arrays, n_blocks: int = 20):
    """Value of ``estimator(*arrays)`` and its delete-one-block jackknife standard error.

    Args:
      estimator: function of arrays with frames on axis 0, returning an array.
      arrays: tuple of ``[F, ...]`` arrays.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    value = np.asarray(estimator(*arrays))
    blocks = _blocks(n, n_blocks)
    reps = []
    for b in blocks:
        keep = np.ones(n, bool)
        keep[b] = False
        reps.append(np.asarray(estimator(*(a[keep] for a in arrays))))
    reps = np.stack(reps)
    nb = len(blocks)
    return value, np.sqrt((nb - 1) / nb * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0))


def kish_neff(weights) -> float:
    """Kish effective sample size N_eff = (Σw)²/Σw² of non-negative weights ``[F]`` (F for uniform, 1 for one frame).

    The one home of N_eff: Boltzmann weights of the estimators and experimental frame weights of reweighting both
    use it.
    """
    w = np.asarray(weights, np.float64)
    return float(w.sum() ** 2 / np.sum(w * w))


def boltzmann_weights(delta_u, beta):
    """Normalised Boltzmann weights w_t ∝ exp(−β ΔU_t), log-sum-exp stabilised (host numpy, float64).

    Args:
      delta_u: ``[F]`` U(x_t; θ′) − U(x_t; θ), kJ/mol.
      beta: 1/(k_B T), mol/kJ.

    Returns:
      ``[F]`` weights summing to 1.
    """
    logw = -beta * np.asarray(delta_u, np.float64)
    logw -= logw.max()
    w = np.exp(logw)
    return w / w.sum()


def boltzmann_reweight(delta_u, beta):
    """Normalised Boltzmann weights w_t ∝ exp(−β ΔU_t) (log-sum-exp stabilised) and their Kish N_eff.

    Named apart from :func:`fitting.reweight.reweight`, which fits experimental frame weights.

    Args:
      delta_u: ``[F]`` U(x_t; θ′) − U(x_t; θ), kJ/mol.
      beta: 1/(k_B T), mol/kJ.
    """
    w = boltzmann_weights(delta_u, beta)
    return w, kish_neff(w)


def pathwise_gradient(total_dA, n_blocks: int = 20) -> GradientEstimate:
    """Pathwise d⟨A⟩/dθ from per-frame total derivatives.

    Args:
      total_dA: ``[F, P]`` dA(x_t; θ)/dθ_p = ∂A/∂x_t · dx_t/dθ_p + ∂A/∂θ_p (from the tangents).
    """
    value, err = block_average(total_dA, n_blocks)
    return GradientEstimate(np.atleast_1d(value), np.atleast_1d(err), "pathwise")


def fluctuation_gradient(A, dU_dtheta, beta, dA_dtheta=None, n_blocks: int = 20) -> GradientEstimate:
    """d⟨A⟩/dθ_p = ⟨∂A/∂θ_p⟩ − β cov(A, ∂U/∂θ_p).

    Args:
      A: ``[F]`` observable per frame.
      dU_dtheta: ``[F, P]`` ∂U/∂θ_p per frame (positions fixed), kJ/mol per unit θ_p.
      beta: 1/(k_B T), mol/kJ.
      dA_dtheta: ``[F, P]`` explicit ∂A/∂θ_p, or None when A does not depend on θ.
    """
    A = np.asarray(A, float)
    dU = np.asarray(dU_dtheta, float).reshape(len(A), -1)
    dA = np.zeros_like(dU) if dA_dtheta is None else np.asarray(dA_dtheta, float).reshape(dU.shape)

    def est(a, du, da):
        return da.mean(axis=0) - beta * ((a - a.mean())[:, None] * (du - du.mean(axis=0))).mean(axis=0)

    value, err = block_jackknife(est, (A, dU, dA), n_blocks)
    return GradientEstimate(value, err, "fluctuation")


def reweighting_gradient(A_plus, A_minus, dU_plus, dU_minus, beta, delta, n_blocks: int = 20) -> GradientEstimate:
    """Central difference of reweighted averages, (⟨A⟩_{θ+δ} − ⟨A⟩_{θ−δ}) / 2δ, per parameter.

    Args:
      A_plus, A_minus: ``[F, P]`` A(x_t; θ ± δ_p e_p) (equal to A(x_t) when A has no explicit θ).
      dU_plus, dU_minus: ``[F, P]`` U(x_t; θ ± δ_p e_p) − U(x_t; θ), kJ/mol.
      beta: 1/(k_B T); delta: ``[P]`` step in each θ_p.
    """
    arrays = tuple(np.asarray(a, float).reshape(len(a), -1) for a in (A_plus, A_minus, dU_plus, dU_minus))
    delta = np.broadcast_to(np.asarray(delta, float), (arrays[0].shape[1],))

    def avg(a, du):
        logw = -beta * du
        logw = logw - logw.max(axis=0)
        w = np.exp(logw)
        return (w * a).sum(axis=0) / w.sum(axis=0), w

    def est(ap, am, dup, dum):
        return (avg(ap, dup)[0] - avg(am, dum)[0]) / (2 * delta)

    value, err = block_jackknife(est, arrays, n_blocks)
    n = len(arrays[0])
    neff = np.array(
        [
            min(kish_neff(avg(a, d)[1][:, p]) for a, d in ((arrays[0], arrays[2]), (arrays[1], arrays[3])))
            for p in range(len(delta))
        ]
    )
    notes = ()
    if np.any(neff < 0.9 * n):
        notes = (
            f"reweighting: Kish N_eff down to {neff.min():.3g} of {n} frames (< 0.9 N): the perturbed ensembles "
            "overlap poorly; use a smaller delta or re-simulate at the new θ",
        )
    return GradientEstimate(value, err, "reweighting", n_eff=neff, notes=notes)


def _frame_values(system, fn, positions):
    """``fn(nbr, z) -> pytree`` per frame in one jitted scan; ``positions [F, 1 + P, N, 3]`` (x then dx/dθ_p),
    neighbour list carried and updated from x."""
    from dmd.integrators import wrap_for_neighbors
    from dmd.runloop import grow_neighbors, redo_on_overflow

    positions = jnp.asarray(positions)
    nbr = system.allocate_neighbors(positions[0, 0]) if system.neighbor_fn is not None else None
    wrap = wrap_for_neighbors(system, nbr)

    @jax.jit
    def run(nbr, positions):
        def body(nbr, z):
            nbr = None if nbr is None else nbr.update(wrap(z[0]))
            return nbr, fn(nbr, z)

        return jax.lax.scan(body, nbr, positions)

    _, (_, vals), _ = redo_on_overflow(
        lambda nbr: run(nbr, positions),
        nbr,
        lambda result: result[0],
        lambda nbr, _, attempt: grow_neighbors(system, nbr, positions[0, 0], attempt),
    )
    return jax.device_get(vals)


def ensemble_gradients(
    system,
    result,
    observable=None,
    *,
    equilibration: float = 0.1,
    delta_rel: float = 1e-3,
    n_blocks: int = 20,
) -> dict[str, GradientEstimate]:
    """All three estimators of d⟨A⟩/dθ for the parameters of a :class:`~dmd.sensitivity.SensitivityResult`.

    Args:
      system: the System the run used (same params).
      result: from :func:`dmd.sensitivity.run_sensitivities`.
      observable: ``A(params, pos, *, box=None, neighbor=None) -> scalar`` (the energy_fn contract), or None for
        the potential energy U itself. May depend explicitly on params.
      equilibration: fraction of the frames dropped at the start.
      delta_rel: reweighting step δ_p = delta_rel·|θ_p| (or delta_rel where θ_p = 0).
      n_blocks: blocks for the jackknife error bars.

    Returns:
      ``{"pathwise", "fluctuation", "reweighting"}`` → :class:`GradientEstimate`; read ``result.estimator_advice``
      for which one to trust.
    """
    if not 0 <= equilibration < 1:
        raise UserInputError(f"equilibration={equilibration}; pass a fraction in [0, 1)")
    obs = system.energy_fn if observable is None else observable
    sel = select(system.param_labels, list(result.names))
    theta = sel.get(system.params)
    params, box = system.params, system.box
    beta = 1.0 / (KB_KJ_PER_MOL_K * result.temperature)
    start = int(equilibration * result.n_frames)
    pos = jnp.asarray(result.positions[start:])
    dx = jnp.asarray(result.dx[start:], pos.dtype)
    delta = jnp.where(theta != 0, jnp.abs(theta) * delta_rel, delta_rel).astype(theta.dtype)
    eye = jnp.eye(sel.size, dtype=theta.dtype)

    def a_of(th, x, nbr):
        return obs(sel.set(params, th), x, box=box, neighbor=nbr)

    def u_of(th, x, nbr):
        return system.energy_fn(sel.set(params, th), x, box=box, neighbor=nbr)

    def per_frame(nbr, x, dx_t):
        a, da_dth = jax.value_and_grad(a_of)(theta, x, nbr)
        total = jax.vmap(lambda e, d: jax.jvp(lambda th, xx: a_of(th, xx, nbr), (theta, x), (e, d))[1])(eye, dx_t)
        shifted = jax.vmap(lambda s: theta + s)
        ap = jax.vmap(lambda th: a_of(th, x, nbr))(shifted(eye * delta[:, None]))
        am = jax.vmap(lambda th: a_of(th, x, nbr))(shifted(-eye * delta[:, None]))
        u0 = u_of(theta, x, nbr)
        dup = jax.vmap(lambda th: u_of(th, x, nbr))(shifted(eye * delta[:, None])) - u0
        dum = jax.vmap(lambda th: u_of(th, x, nbr))(shifted(-eye * delta[:, None])) - u0
        du_dth = jax.grad(u_of)(theta, x, nbr)
        return a, da_dth, total, ap, am, dup, dum, du_dth

    pos_dx = jnp.concatenate([pos[:, None], dx], axis=1)  # frames carry x and dx together through the scan
    vals = _frame_values(system, lambda nbr, z: per_frame(nbr, z[0], z[1:]), pos_dx)
    a, da_dth, total, ap, am, dup, dum, du_dth = (np.asarray(v, float) for v in vals)
    out = {
        "pathwise": pathwise_gradient(total, n_blocks),
        "fluctuation": fluctuation_gradient(a, du_dth, beta, da_dth, n_blocks),
        "reweighting": reweighting_gradient(ap, am, dup, dum, beta, np.asarray(delta), n_blocks),
    }
    if not np.all(np.isfinite(total)):
        p = out["pathwise"]
        out["pathwise"] = dataclasses.replace(p, notes=p.notes + ("tangents non-finite: pathwise estimate invalid",))
    return out
