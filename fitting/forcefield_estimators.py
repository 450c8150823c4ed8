"""Force-field fitting: Jacobians of the observables by the fluctuation and pathwise estimators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "first_output",
    "theta_dict",
    "fluctuation_jacobian",
    "StreamingCovariance",
    "streaming_fluctuation",
    "pathwise_jacobian",
    "replica_averaged_prediction",
    "replica_predictions",
    "cross_replica_gradient",
    "cross_replica_terms",
    "gradient_snr",
]


def first_output(fn, z, *, o_j, u0, frames, boxes=None):
    return fn(z, o_j, u0, frames, boxes)[0]


def theta_dict(mapping, z):
    theta = np.asarray(mapping.theta_of(jnp.asarray(z)))
    return {fp.label: float(v) for fp, v in zip(mapping.fit_params, theta, strict=True)}


def fluctuation_jacobian(o, du, beta):
    """d⟨o⟩/dz = −β cov(o, ∂U/∂z) (explicit ⟨∂o/∂z⟩ added by the caller). o: [F, K], du: [F, P] → [K, P]."""
    oc = o - o.mean(axis=0)
    dc = du - du.mean(axis=0)
    return -beta * (oc.T @ dc) / o.shape[0]


class StreamingCovariance:
    """cov(o, ∂U/∂z) accumulated chunk by chunk over frames (Chan et al.'s pairwise update of the means and the
    co-moment), so memory is O(K·P) whatever the number of frames: ``add(o [f, K], du [f, P])`` per chunk, then
    :meth:`jacobian` gives −β cov ``[K, P]``, equal to :func:`fluctuation_jacobian` on the concatenated frames to
    round-off (float64 accumulators)."""

    def __init__(self):
        self.n = 0
        self.mean_o = self.mean_d = self.comoment = None

    def add(self, o, du) -> None:
        o, du = np.asarray(o, np.float64), np.asarray(du, np.float64)
        m = o.shape[0]
        if m == 0:
            return
        o, du = o.reshape(m, -1), du.reshape(m, -1)
        mo, md = o.mean(axis=0), du.mean(axis=0)
        c = (o - mo).T @ (du - md)
        if self.n == 0:
            self.n, self.mean_o, self.mean_d, self.comoment = m, mo, md, c
            return
        n = self.n + m
        do, dd = mo - self.mean_o, md - self.mean_d
        self.comoment = self.comoment + c + np.outer(do, dd) * (self.n * m / n)
        self.mean_o = self.mean_o + do * (m / n)
        self.mean_d = self.mean_d + dd * (m / n)
        self.n = n

    @property
    def mean(self) -> np.ndarray:
        """⟨o⟩ ``[K]`` over the frames added (float64)."""
        if self.n == 0:
            raise ValueError("StreamingCovariance: no frames added")
        return self.mean_o

    def covariance(self) -> np.ndarray:
        """Population covariance cov(o, ∂U/∂z) ``[K, P]`` (divided by the number of frames)."""
        if self.n == 0:
            raise ValueError("StreamingCovariance: no frames added")
        return self.comoment / self.n

    def jacobian(self, beta: float) -> np.ndarray:
        """d⟨o⟩/dz = −β cov(o, ∂U/∂z) ``[K, P]``, as :func:`fluctuation_jacobian`."""
        return -beta * self.covariance()


def streaming_fluctuation(o_fn, du_fn, z, frames, beta, *, boxes=None, do_dz_fn=None, chunk=128, keep=False):
    """⟨o⟩ and d⟨o⟩/dz = −β cov(o, ∂U/∂z) (+ ⟨∂o/∂z⟩) over frames, ``chunk`` frames at a time.

    Memory is O(chunk·K·P + K·P) whatever the number of frames F: per-frame values of one chunk at a time feed a
    :class:`StreamingCovariance` and a running sum of ∂o/∂z (the explicit term ``[chunk, K, P]``), never the
    ``[F, K, P]`` array. Equal to :func:`fluctuation_jacobian` on all frames to round-off.

    Args:
      o_fn, du_fn, do_dz_fn: ``(z, frames [f, N, 3], boxes [f, ...] or None) -> [f, K]``, ``[f, P]``, ``[f, K, P]``
        (e.g. :func:`fitting.observables.frame_values`); ``do_dz_fn`` None when o has no explicit θ.
      z: ``[P]``. frames: ``[F, N, 3]`` nm. beta: 1/kT, mol/kJ. boxes: ``[F, 3]`` or ``[F, 3, 3]`` nm per frame
        (constant pressure) or None. chunk: frames per evaluation. keep: also return the per-frame o ``[F, K]``
        (the reweighting route needs them).

    Returns:
      (mean ``[K]``, jacobian ``[K, P]``, o ``[F, K]`` or None), float64.
    """
    acc = StreamingCovariance()
    explicit = None
    kept = []
    n = int(frames.shape[0])
    chunk = max(1, int(chunk))
    for a in range(0, n, chunk):
        x = frames[a : a + chunk]
        b = None if boxes is None else boxes[a : a + chunk]
        m = int(x.shape[0])
        if a and m < chunk:  # a short last chunk padded with its last frame (values dropped): no second compilation
            x, b = (None if v is None else np.concatenate([v, np.repeat(v[-1:], chunk - m, axis=0)]) for v in (x, b))
        o = np.asarray(o_fn(z, x, b))[:m]
        acc.add(o, np.asarray(du_fn(z, x, b))[:m])
        if keep:
            kept.append(o)
        if do_dz_fn is not None:
            part = np.asarray(do_dz_fn(z, x, b), np.float64)[:m].sum(axis=0)
            explicit = part if explicit is None else explicit + part
    jac = acc.jacobian(beta)
    if explicit is not None:
        jac = jac + explicit / n
    return acc.mean, jac, (np.concatenate(kept) if keep else None)


def pathwise_jacobian(o_of_z, z, frames, dx_dz, explicit):
    """⟨∂o/∂x · dx/dz (+ ∂o/∂z)⟩ by jvps, [K, Pz] (frames ``[F, N, 3]``, dx_dz ``[F, Pz, N, 3]``)."""
    dx_dz = jnp.asarray(dx_dz, frames.dtype)
    return np.asarray(_pathwise_fn(o_of_z, bool(explicit))(jnp.asarray(z), frames, dx_dz)).mean(axis=0).T


@functools.lru_cache(maxsize=16)
def _pathwise_fn(o_of_z, explicit: bool):
    """The jitted per-frame jvp map of :func:`pathwise_jacobian`, one per observable function: z is an argument,
    not a closed-over constant, so a fit's later rounds reuse the first round's compilation (a closure made per
    call was traced and compiled again every round)."""

    def per_frame(z, x, dxs):
        def col(dxp, ez):
            return jax.jvp(lambda xx, zz: o_of_z(zz, xx), (x, z), (dxp, ez if explicit else jnp.zeros_like(z)))[1]

        return jax.vmap(col)(dxs, jnp.eye(z.shape[0], dtype=z.dtype))  # [Pz, K]

    return jax.jit(lambda z, frames, dx_dz: jax.lax.map(lambda a: per_frame(z, *a), (frames, dx_dz)))


def replica_averaged_prediction(pred_fn, pred_jac_fn, moments, dtype):
    """The prediction of R replicas: each replica's own prediction from its own moments, averaged.

    ``moments``: one ``(⟨o⟩_r [K], J_r [K, P], ...)`` per replica (its frames alone). Returns ``(P [Kp], dP/dz
    [Kp, P])`` = (mean_r pred(⟨o⟩_r), mean_r pred'(⟨o⟩_r)·J_r), float64. One replica: pred(⟨o⟩) and its chain rule.

    Not pred(mean_r ⟨o⟩_r): for a nonlinear prediction the two differ. I_D = ⟨|F|²⟩ − |⟨F⟩|² of pooled replicas
    adds the spread of the replicas' mean structures (replicas that left one start in different slow states stay
    apart for many rounds) to every replica's own fluctuation, and its fluctuation Jacobian gains the covariance of
    R replica means of F and ∂U/∂z: four samples, amplified by |⟨F⟩| (the Bragg amplitude, ~6× I_D in the peptide
    crystal). A target made as the mean of runs' own I_D (make_peptide_target.py) is matched by this average.
    """
    preds, jacs = replica_predictions(pred_fn, pred_jac_fn, moments, dtype)
    return preds.mean(axis=0), jacs.mean(axis=0)


def replica_predictions(pred_fn, pred_jac_fn, moments, dtype):
    """Each replica's own prediction and its Jacobian: ``(preds [R, Kp], jacs [R, Kp, P])``, float64 (``moments`` as
    :func:`replica_averaged_prediction`, which averages them)."""
    preds, jacs = [], []
    for m in moments:
        mean = jnp.asarray(m[0], dtype)
        preds.append(np.asarray(pred_fn(mean), np.float64))
        jacs.append(np.asarray(pred_jac_fn(mean), np.float64) @ np.asarray(m[1], np.float64))
    return np.stack(preds), np.stack(jacs)


def cross_replica_gradient(resid_fn, resid_jac_fn, preds, jacs, dtype):
    """The loss gradient 2 Jᵀr of R ≥ 2 replicas with Jacobian and residual never from the same replica
    (leave-one-out cross-fitting): mean over i of 2 (∂r/∂P · J_i)ᵀ r(P̄₋ᵢ), P̄₋ᵢ the mean prediction of the others.

    The pooled 2 J̄ᵀ r(P̄) holds the R terms J_iᵀ r(P_i) whose noise is correlated (a replica whose frames give a large
    fluctuation I_D also gives a large fluctuation Jacobian), a bias of order 1/R that does not shrink with rounds;
    independent replicas make every cross term unbiased (docs/fitting.md, peptide). ``resid_fn``/``resid_jac_fn``:
    prediction [Kp] → residuals [M] and their Jacobian [M, Kp]; ``preds`` [R, Kp], ``jacs`` [R, Kp, P] from
    :func:`replica_predictions`. Returns ``[P]`` float64."""
    n = len(preds)
    if n < 2:
        raise ValueError("cross_replica_gradient: needs at least 2 replicas")
    return cross_replica_terms(resid_fn, resid_jac_fn, preds, jacs, dtype).mean(axis=0)


def cross_replica_terms(resid_fn, resid_jac_fn, preds, jacs, dtype):
    """The R terms ``[R, P]`` whose mean is :func:`cross_replica_gradient`: 2 (∂r/∂P · J_i)ᵀ r(P̄₋ᵢ) (their spread is
    the round's gradient noise, :func:`gradient_snr`)."""
    n = len(preds)
    if n < 2:
        raise ValueError("cross_replica_gradient: needs at least 2 replicas")
    total = preds.sum(axis=0)
    terms = []
    for i in range(n):
        rest = jnp.asarray((total - preds[i]) / (n - 1), dtype)
        r = np.asarray(resid_fn(rest), np.float64)
        terms.append(2.0 * (np.asarray(resid_jac_fn(rest), np.float64) @ jacs[i]).T @ r)
    return np.stack(terms)


def gradient_snr(terms) -> float:
    """‖mean‖ / its standard error of R gradient terms ``[R, P]`` (s.e.: √(Σ_p var_p / R), sample variances): how
    far one round's gradient stands above its own noise (leave-one-out terms share residuals, so this is a guide)."""
    terms = np.asarray(terms, np.float64)
    se = np.sqrt(np.sum(np.var(terms, axis=0, ddof=1)) / len(terms))
    return float(np.linalg.norm(terms.mean(axis=0)) / se) if se > 0 else float("inf")
