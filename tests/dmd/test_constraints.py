"""dmd.constraints: SETTLE's velocity projection solved in closed form (its agreement with converged RATTLE in
float64 is tests/dmd/test_integrators.py::test_settle_matches_converged_shake_rattle)."""

import jax
import jax.numpy as jnp
import numpy as np

from dmd.constraints import settle_velocities

D_OH, D_HH, M_O, M_H = 0.09572, 0.15139, 15.999, 1.008  # TIP3P, nm and amu


def test_settle_velocities_float32_closed_form_no_lapack(rigid_waters):
    x = rigid_waters(500, D_OH, D_HH, 0)
    v = np.random.default_rng(1).normal(size=x.shape)  # nm/ps, thermal scale ~1
    v64 = np.asarray(settle_velocities(jnp.asarray(v), jnp.asarray(x), M_O, M_H))
    v32 = settle_velocities(jnp.asarray(v, jnp.float32), jnp.asarray(x, jnp.float32), M_O, M_H)
    # float32 against float64: centres at ~1-3 nm round to ~2e-7 nm, i.e. ~2e-6 of a 0.1 nm bond vector, and the
    # 3 × 3 (G M⁻¹ Gᵀ of a water triangle) is well conditioned: measured 4.2e-6 (LAPACK's LU before it: 4.4e-6)
    assert np.max(np.abs(np.asarray(v32, np.float64) - v64)) < 2e-5
    # the relative velocity along each O-H, O-H, H-H bond vanishes: the constraint the projection enforces
    rel = lambda u: np.einsum("nkd,nkd->nk", u[:, [0, 0, 1]] - u[:, [1, 2, 2]], x[:, [0, 0, 1]] - x[:, [1, 2, 2]])  # noqa: E731
    assert np.max(np.abs(rel(v64))) < 1e-12 and np.max(np.abs(rel(v))) > 0.1
    # solved elementwise: no LU primitive (a batched LAPACK custom call, whose lowering imported scipy.linalg at
    # every start-up, ~0.6 s, and ran one tiny getrf per water per step)
    jaxpr = jax.make_jaxpr(lambda a, b: settle_velocities(a, b, M_O, M_H))(
        jnp.asarray(v, jnp.float32), jnp.asarray(x, jnp.float32)
    )
    assert "lu" not in {e.primitive.name for e in jaxpr.jaxpr.eqns} | _inner_primitives(jaxpr.jaxpr)


def _inner_primitives(jaxpr):
    """Every primitive of ``jaxpr`` and of the jaxprs nested in its equations' parameters (jit, solve, ...)."""
    names = set()
    for e in jaxpr.eqns:
        names.add(e.primitive.name)
        for p in e.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None:
                names |= _inner_primitives(getattr(inner, "jaxpr", inner))
    return names
