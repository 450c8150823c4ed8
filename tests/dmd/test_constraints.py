"""Rigid-water SETTLE (dmd/constraints.py) against OpenMM's, float64 on both sides (Reference platform), and its
velocity projection in float32 solved in closed form (its agreement with converged RATTLE in float64 is
tests/dmd/test_integrators.py::test_settle_matches_converged_shake_rattle).

OpenMM's leapfrog Verlet step with no forces moves x → x + v·δt and then applies its SETTLE (Miyamoto & Kollman
1992) with the old positions as reference; ``Context.applyVelocityConstraints`` removes the velocity components
along the three distances. dmd's closed forms must give the same positions and velocities.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.constraints import n_constraint_dof, settle_positions, settle_velocities
from dmd.system import Constraints

openmm = pytest.importorskip("openmm")
unit = pytest.importorskip("openmm.unit")

M_O, M_H, D_OH = 15.9994, 1.008, 0.09572  # TIP3P: O–H 0.9572 Å, H–O–H 104.52°
D_HH = 2 * D_OH * math.sin(math.radians(104.52 / 2))
DT = 0.002  # ps


def _waters(n, seed):
    """``[n, 3, 3]`` nm rigid TIP3P waters, random orientations, 1 nm apart; velocities ``[n, 3, 3]`` nm/ps."""
    rng = np.random.default_rng(seed)
    h = D_OH * math.cos(math.radians(104.52 / 2))
    body = np.array([[0.0, 0.0, 0.0], [0.5 * D_HH, h, 0.0], [-0.5 * D_HH, h, 0.0]])
    out = []
    for w in range(n):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        out.append(body @ (q * np.sign(np.diag(r))).T + [w * 1.0, 0.0, 0.0])
    return np.array(out), rng.normal(scale=3.0, size=(n, 3, 3))  # fast molecules: a large rotation per step


def _openmm_context(n):
    system = openmm.System()
    for w in range(n):
        for m in (M_O, M_H, M_H):
            system.addParticle(m)
        system.addConstraint(3 * w, 3 * w + 1, D_OH)
        system.addConstraint(3 * w, 3 * w + 2, D_OH)
        system.addConstraint(3 * w + 1, 3 * w + 2, D_HH)
    integrator = openmm.VerletIntegrator(DT)
    integrator.setConstraintTolerance(1e-10)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))


def test_settle_positions_and_velocities_match_openmm():
    n = 6
    x, v = _waters(n, 0)
    context = _openmm_context(n)
    context.setPositions(x.reshape(-1, 3))
    context.setVelocities(v.reshape(-1, 3))
    context.getIntegrator().step(1)
    x_ref = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    x_new = np.asarray(settle_positions(jnp.asarray(x), jnp.asarray(x + DT * v), M_O, M_H, D_OH, D_HH))
    # OpenMM Reference's SETTLE misses the distances by up to 4.7e-9 nm (measured, at any constraint tolerance) and
    # differs from ours by 4.2e-9 nm; ours holds them to rounding (3e-16 nm): tolerance 2e-8 nm, the SETTLE move
    # itself is 1e-4 nm and more
    np.testing.assert_allclose(x_new.reshape(-1, 3), x_ref, rtol=0, atol=2e-8)
    d_oh = np.linalg.norm(x_new[:, 1:] - x_new[:, :1], axis=-1)
    d_hh = np.linalg.norm(x_new[:, 1] - x_new[:, 2], axis=-1)
    assert np.abs(d_oh - D_OH).max() < 1e-12 and np.abs(d_hh - D_HH).max() < 1e-12
    assert np.abs(x_new - (x + DT * v)).max() > 1e-4  # the constraint did work

    context.setPositions(x.reshape(-1, 3))
    context.setVelocities(v.reshape(-1, 3))
    context.applyVelocityConstraints(1e-12)
    v_ref = (
        context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    )
    v_new = np.asarray(settle_velocities(jnp.asarray(v), jnp.asarray(x), M_O, M_H))
    # OpenMM's velocity SETTLE is a closed form too: measured 5e-15 nm/ps apart (removed parts up to 6 nm/ps)
    np.testing.assert_allclose(v_new.reshape(-1, 3), v_ref, rtol=0, atol=1e-10)


def test_constrained_degrees_of_freedom():
    assert n_constraint_dof(None) == 0
    # 3 distances per rigid water remove 3 of its 9 degrees of freedom
    assert n_constraint_dof(Constraints(np.array([[0, 1], [0, 2], [1, 2]]), np.array([D_OH, D_OH, D_HH]))) == 3


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
