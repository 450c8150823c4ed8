"""Force-field fitting: Jacobians of the observables by the fluctuation and pathwise estimators."""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["first_output", "theta_dict", "fluctuation_jacobian", "StreamingCovariance", "pathwise_jacobian"]


def first_output(fn, z, *, o_j, u0, frames):
    return fn(z, o_j, u0, frames)[0]


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

    def covariance(self) -> np.ndarray:
        """Population covariance cov(o, ∂U/∂z) ``[K, P]`` (divided by the number of frames)."""
        if self.n == 0:
            raise ValueError("StreamingCovariance: no frames added")
        return self.comoment / self.n

    def jacobian(self, beta: float) -> np.ndarray:
        """d⟨o⟩/dz = −β cov(o, ∂U/∂z) ``[K, P]``, as :func:`fluctuation_jacobian`."""
        return -beta * self.covariance()


def pathwise_jacobian(o_of_z, z, frames, dx_dz, explicit):
    """⟨∂o/∂x · dx/dz (+ ∂o/∂z)⟩ by jvps, [K, Pz]."""
    dx_dz = jnp.asarray(dx_dz, frames.dtype)

    @jax.jit
    def per_frame(x, dxs):
        def col(dxp, ez):
            return jax.jvp(lambda xx, zz: o_of_z(zz, xx), (x, z), (dxp, ez if explicit else jnp.zeros_like(z)))[1]

        return jax.vmap(col)(dxs, jnp.eye(z.shape[0], dtype=z.dtype))  # [Pz, K]

    jac = jax.lax.map(lambda a: per_frame(*a), (frames, dx_dz))
    return np.asarray(jac).mean(axis=0).T
