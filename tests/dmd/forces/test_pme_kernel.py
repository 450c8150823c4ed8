"""PME spreading and gathering by numba (dmd.forces.pme_kernel's route through dmd.forces.numba_pme) against OpenMM's
reciprocal space (Reference platform, float64, its reciprocal-space force group alone) and the XLA route, on bundled
alanine dipeptide in TIP3P-FB water (1,447 atoms, PME 0.9 nm, float32); and the rule that keeps float64, θ and box
derivatives and force tangents on XLA."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd.forces.pme import ONE_4PI_EPS0, bspline_moduli
from dmd.forces.pme_kernel import SPREAD, reciprocal_energy
from dmd.openmm_system import openmm_system_from_pdb

PDB = os.path.join(os.path.dirname(__file__), "..", "..", "data", "alanine_dipeptide_water.pdb")
# SPREAD: the numba spreading's XLA custom call, in every program that runs the kernels (energy and forces)
KW = dict(forcefield=["amber14-all.xml", "amber14/tip3pfb.xml"], nonbonded="PME", cutoff=0.9, rigid_water=False)


@pytest.fixture(scope="module")
def ala():
    """Charges, positions (shifted by whole and half boxes so that windows wrap and coordinates are negative), box,
    α, grid, and OpenMM's reciprocal energy and forces there. OpenMM's reciprocal force group also holds the Ewald
    self energy and the exclusions' erf corrections: the charges go into a NonbondedForce of their own without
    exceptions, whose reciprocal group is then E_rec − ke α/√π Σq² (a constant, no force)."""
    import openmm as mm
    import openmm.unit as u

    omm, structure, _ = openmm_system_from_pdb(PDB, **KW)
    nb = next(f for f in omm.getForces() if isinstance(f, mm.NonbondedForce))
    n = nb.getNumParticles()
    q = np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(n)])
    box = np.diag(np.array([v.value_in_unit(u.nanometer) for v in omm.getDefaultPeriodicBoxVectors()]))
    pos = np.array(structure.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    pos[::3] += box * np.array([1.0, -1.0, 2.0])  # other images: the kernels wrap like XLA does
    pos[1::5] -= 0.5 * box
    sys = mm.System()
    sys.setDefaultPeriodicBoxVectors(*omm.getDefaultPeriodicBoxVectors())
    force = mm.NonbondedForce()
    force.setNonbondedMethod(mm.NonbondedForce.PME)
    force.setCutoffDistance(nb.getCutoffDistance())
    force.setReciprocalSpaceForceGroup(1)
    for i in range(n):
        sys.addParticle(1.0)
        force.addParticle(q[i], 0.1, 0.0)
    sys.addForce(force)
    ctx = mm.Context(sys, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    st = ctx.getState(getEnergy=True, getForces=True, groups={1})
    alpha, nx, ny, nz = force.getPMEParametersInContext(ctx)
    self_energy = -ONE_4PI_EPS0 * alpha / math.sqrt(math.pi) * np.sum(q * q)
    return dict(
        q=q,
        pos=pos,
        box=box,
        alpha=alpha,
        grid=(nx, ny, nz),
        e=st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) - self_energy,
        f=st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer),
    )


def _energy(ala, kernel, dtype=jnp.float32):
    mod = tuple(bspline_moduli(k, 5) for k in ala["grid"])
    q, box = jnp.asarray(ala["q"], dtype), jnp.asarray(ala["box"], dtype)
    return lambda y, q=q, box=box: reciprocal_energy(q, y, box, ala["alpha"], ala["grid"], 5, mod, kernel)


def test_numba_reciprocal_energy_and_forces_match_openmm_and_xla(ala):
    x = jnp.asarray(ala["pos"], jnp.float32)
    out = {}
    for k in ("xla", "numba"):
        fn = jax.value_and_grad(_energy(ala, k))
        assert (SPREAD in str(jax.make_jaxpr(fn)(x))) == (k == "numba")
        e, g = jax.jit(fn)(x)
        out[k] = float(e), -np.asarray(g, np.float64)
    f_ref, f_scale = ala["f"], np.sqrt(np.mean(ala["f"] ** 2))
    for k, (e, f) in out.items():
        # float32 (the float64 XLA route agrees with OpenMM to 1e-13): E sums ~31k positive η·|Q̂|² terms and the
        # grid ~60 window products per point, ~15 ulps of rounding each (measured 2.2e-6 for both routes); forces
        # measured 8e-7 (numba) and 9e-7 (XLA) RMS: 1e-5 is ~80 float32 ulps
        assert abs(e - ala["e"]) <= 1e-5 * abs(ala["e"]), (k, e, ala["e"])
        assert np.sqrt(np.mean((f - f_ref) ** 2)) <= 1e-5 * f_scale, k
    # numba against XLA: the same float32 arithmetic in another order (measured 0 and 9e-7 of the scales)
    assert abs(out["numba"][0] - out["xla"][0]) <= 1e-6 * abs(ala["e"])
    assert np.max(np.abs(out["numba"][1] - out["xla"][1])) <= 1e-5 * np.max(np.abs(f_ref))


def test_charge_and_box_gradients_tangents_and_float64_stay_on_xla(ala):
    x = jnp.asarray(ala["pos"], jnp.float32)
    q, box = jnp.asarray(ala["q"], jnp.float32), jnp.asarray(ala["box"], jnp.float32)
    mod = tuple(bspline_moduli(k, 5) for k in ala["grid"])

    def u(kernel):
        return lambda qq, y, b: reciprocal_energy(qq, y, b, ala["alpha"], ala["grid"], 5, mod, kernel)

    # θ (charges) and box gradients: XLA's, no callback in their programs (the kernels forced: "auto" would not take
    # them for 1,447 atoms at all)
    for argnums in (0, 2):
        fn = jax.grad(u("numba"), argnums=argnums)
        assert SPREAD not in str(jax.make_jaxpr(fn)(q, x, box))
        a, b = jax.jit(fn)(q, x, box), jax.jit(jax.grad(u("xla"), argnums=argnums))(q, x, box)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # forward over reverse (dmd.sensitivity's force tangents): XLA's tangent, no callback
    v = jax.random.normal(jax.random.PRNGKey(0), x.shape, jnp.float32) * 1e-3

    def hvp(kernel):
        return lambda y: jax.jvp(lambda z: jax.grad(u(kernel), argnums=1)(q, z, box), (y,), (v,))[1]

    assert SPREAD not in str(jax.make_jaxpr(hvp("numba"))(x))
    ta, tx = np.asarray(jax.jit(hvp("numba"))(x)), np.asarray(jax.jit(hvp("xla"))(x))
    # the same XLA arithmetic traced through another structure (value_and_grad's tangent): float32 round-off
    np.testing.assert_allclose(ta, tx, rtol=1e-4, atol=1e-4 * np.abs(tx).max())
    # "auto" leaves a system this small on XLA (AUTO_MIN_ATOMS); float64 too; a forced numba kernel says why not
    assert SPREAD not in str(jax.make_jaxpr(_energy(ala, "auto"))(x))
    assert SPREAD in str(jax.make_jaxpr(_energy(ala, "numba"))(x))
    with jax.enable_x64(True):
        x64 = jnp.asarray(ala["pos"], jnp.float64)
        assert SPREAD not in str(jax.make_jaxpr(_energy(ala, "auto", jnp.float64))(x64))
        with pytest.raises(ValueError, match="float32 only"):
            _energy(ala, "numba", jnp.float64)(x64)


def test_vmapped_replicas_match_one_by_one(ala):
    x = jnp.asarray(ala["pos"], jnp.float32)
    xs = x[None] + jax.random.normal(jax.random.PRNGKey(1), (2,) + x.shape, jnp.float32) * 1e-3
    g = jax.grad(_energy(ala, "numba"))
    assert SPREAD in str(jax.make_jaxpr(jax.vmap(g))(xs))  # one kernel call per replica
    batched = jax.jit(jax.vmap(g))(xs)
    for r in range(2):
        np.testing.assert_array_equal(np.asarray(batched[r]), np.asarray(jax.jit(g)(xs[r])))
