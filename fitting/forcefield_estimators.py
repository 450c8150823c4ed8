"""Force-field fitting: Jacobians of the observables by the fluctuation and pathwise estimators."""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["first_output", "theta_dict", "fluctuation_jacobian", "pathwise_jacobian"]


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
