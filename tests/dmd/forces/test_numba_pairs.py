"""The numba pair kernel (dmd.forces.numba_pairs) against the XLA kernel on bundled alanine dipeptide in TIP3P-FB
water (1,447 atoms, PME 0.9 nm, float32), and the rule that keeps float64, θ gradients and tangents on XLA."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erfc

from dmd.forces.nonbonded import pair_energy_full
from dmd.forces.numba_pairs import TABLE_SIZE, erfc_table
from dmd.forces.pme import ONE_4PI_EPS0
from dmd.integrators import make_integrator
from dmd.openmm_system import openmm_system_from_pdb, system_from_openmm, system_from_pdb

PDB = os.path.join(os.path.dirname(__file__), "..", "..", "data", "alanine_dipeptide_water.pdb")
KW = dict(forcefield=["amber14-all.xml", "amber14/tip3pfb.xml"], nonbonded="PME", cutoff=0.9, rigid_water=False)
F32_ULP = 2.0**-24  # float32's relative rounding
KERNEL_CALL = "dmd_pair_forces_v1"  # the numba kernel's XLA custom call (dmd.forces.numba_pairs.TARGET)


@pytest.fixture(scope="module")
def ala():
    """float32 systems with each kernel, the start, its half list and the per-atom (q, σ, √ε) from OpenMM's force."""
    import openmm as mm

    omm, structure, _ = openmm_system_from_pdb(PDB, **KW)
    for k in reversed(range(omm.getNumForces())):  # the nonbonded force alone: quicker compilations
        if not isinstance(omm.getForce(k), mm.NonbondedForce):
            omm.removeForce(k)
    pos = structure.getPositions(asNumpy=True)
    top = structure.topology
    systems = {
        k: system_from_openmm(omm, pos, topology=top, dtype=jnp.float32, pair_kernel=k)
        for k in ("xla", "numba", "auto")
    }
    s = systems["xla"]
    nb = s.neighbor_fn.allocate(s.positions, box=s.box)
    force = omm.getForce(0)
    qse = np.array([[v._value for v in force.getParticleParameters(i)] for i in range(force.getNumParticles())])
    q, sig, seps = qse[:, 0], qse[:, 1], np.sqrt(qse[:, 2])
    md = s.metadata
    return dict(
        systems=systems, x=s.positions, box=s.box, nb=nb, qse=(q, sig, seps), rc=md["cutoff_nm"], alpha=md["pme_alpha"]
    )


def _abs_sums(x, box, idx, q, sig, seps, rc, alpha):
    """Σ over the pairs inside r_c of |e_ij| (Coulomb, r⁻¹² and r⁻⁶ parts apart) and per atom Σ_j |∂e_ij/∂r|, float64:
    the scales that float32 round-off of each pair term is relative to."""
    x, box = np.asarray(x, np.float64), np.asarray(box, np.float64)
    idx = np.asarray(idx)
    n = len(x)
    i, k = np.nonzero(idx < n)
    j = idx[i, k]
    d = x[j] - x[i]
    d -= box * np.round(d / box)
    r = np.sqrt(np.sum(d * d, -1))
    m = r < rc
    i, j, r = i[m], j[m], r[m]
    qq = ONE_4PI_EPS0 * q[i] * q[j]
    s6 = ((0.5 * (sig[i] + sig[j])) / r) ** 6
    eps = seps[i] * seps[j]
    e = np.abs(qq * erfc(alpha * r) / r) + 4 * eps * (s6 * s6 + s6)
    g = np.abs(qq) * (erfc(alpha * r) / r + 2 * alpha / math.sqrt(math.pi) * np.exp(-((alpha * r) ** 2))) / r
    g = g + 4 * eps * (12 * s6 * s6 + 6 * s6) / r
    return float(e.sum()), np.bincount(i, g, n) + np.bincount(j, g, n)


def test_erfc_table_interpolation_below_float32_rounding():
    rc, alpha = 0.9, 3.47  # OpenMM's α for 0.9 nm at its default tolerance 5e-4 is 3.0; a larger α is harder
    t = erfc_table(rc, alpha).astype(np.float64)
    h = rc / TABLE_SIZE
    r = np.linspace(0.0, rc, 200_001)
    k = np.minimum((r / h).astype(int), TABLE_SIZE)
    fr = r / h - k
    err = np.max(np.abs(t[k, 0] + fr * (t[k + 1, 0] - t[k, 0]) - erfc(alpha * r)))
    # linear interpolation errs by ≤ h²/8·max|f''|; f = erfc(αr): f'' = (4/√π) α³ r e^{−α²r²} ≤ (4/√π) α² e^{−½}/√2;
    # float32 storage adds ≤ ½ ulp of erfc ≤ 1
    bound = h * h / 8 * 4 / math.sqrt(math.pi) * alpha**2 * math.exp(-0.5) / math.sqrt(2) + F32_ULP / 2
    assert err <= bound
    assert err < 1.5e-7  # within the A&S 7.1.26 error of the XLA kernel's float32 erfc (~1.4 float32 ulps)


def test_numba_pair_energy_and_forces_match_xla(ala):
    x, box, idx = ala["x"], ala["box"], ala["nb"].idx
    args = [jnp.asarray(a, jnp.float32) for a in ala["qse"]]
    out = {}
    for k in ("xla", "numba"):
        pair = pair_energy_full("PME", ala["rc"], alpha=ala["alpha"], half=True, pair_kernel=k)
        out[k] = jax.jit(jax.value_and_grad(lambda y, pair=pair: pair(y, box, idx, *args)))(x)
    assert out["numba"][0].dtype == jnp.float32 and out["numba"][1].dtype == jnp.float32
    e_abs, g_abs = _abs_sums(x, box, idx, *ala["qse"], ala["rc"], ala["alpha"])
    # each pair term is rounded to float32 in both kernels (a few ulps: r, 1/r, the erfc factor, each ≤ 1.5e-7 from
    # A&S and ≤ 1 ulp from the table) and summed in float32 rows: 16 ulps of Σ|e_ij| bounds the difference
    de = abs(float(out["numba"][0]) - float(out["xla"][0]))
    assert de <= 16 * F32_ULP * e_abs, (de, e_abs)
    # forces, relative to Σ_j |∂e_ij/∂r| of each atom: the kernels wrap displacements differently (selects vs
    # round(d/L)·L), which differ by up to an ulp of the 2.5 nm box, 1e-6 of a 0.15 nm contact, and the r⁻¹³
    # repulsion's derivative multiplies that by 13: 1e-5 (measured 2.1e-6)
    df = np.linalg.norm(np.asarray(out["numba"][1], np.float64) - np.asarray(out["xla"][1], np.float64), axis=1)
    assert np.all(df <= 1e-5 * g_abs), float(np.max(df / g_abs))


def test_system_kernels_agree_and_auto_uses_numba_in_float32(ala):
    x, box, nb = ala["x"], ala["box"], ala["nb"]
    res = {}
    for k, s in ala["systems"].items():
        fn = jax.value_and_grad(lambda y, s=s: s.energy_fn(s.params, y, box=box, neighbor=nb))
        res[k] = jax.jit(fn)(x)
        assert (KERNEL_CALL in str(jax.make_jaxpr(fn)(x))) == (k != "xla"), k
    _, g_abs = _abs_sums(x, box, nb.idx, *ala["qse"], ala["rc"], ala["alpha"])
    for k in ("numba", "auto"):
        df = np.linalg.norm(np.asarray(res[k][1], np.float64) - np.asarray(res["xla"][1], np.float64), axis=1)
        assert np.all(df <= 1e-5 * g_abs)  # as in test_numba_pair_energy_and_forces_match_xla


def test_short_langevin_runs_match_within_float32_roundoff(ala):
    """10 BAOAB steps of 1 fs from the same state and seed (same noise): the trajectories differ by the float32
    round-off of the forces, which ten steps of 1 fs move positions by ~δF·t²/m: ≤ 1e-6 nm for δF ~ 1e-2
    kJ/mol/nm, against the ≥ 1e-2 nm the fastest atoms move."""
    pos = {}
    for k in ("xla", "numba"):
        s = ala["systems"][k]
        integ = make_integrator("baoab", s, dt=0.001, temperature=300.0, friction=1.0)
        st = integ.start(jax.random.PRNGKey(3), s.params)  # the forces come in the run's program, as dmd.simulate

        def run(st, s=s, integ=integ):
            st = integ.advance(st, s.params, False)
            return jax.lax.fori_loop(0, 10, lambda _, c: integ.step(c, s.params), st)

        pos[k] = np.asarray(jax.jit(run)(st).positions, np.float64)
    moved = np.max(np.abs(pos["xla"] - np.asarray(ala["x"], np.float64)))
    assert moved > 1e-2  # the atoms moved
    assert np.max(np.abs(pos["numba"] - pos["xla"])) <= 1e-4 * moved


def test_auto_keeps_float64_theta_gradients_and_tangents_on_xla(ala):
    x, box, nb = ala["x"], ala["box"], ala["nb"]
    auto, xla = ala["systems"]["auto"], ala["systems"]["xla"]

    def u(s, p, y):
        return s.energy_fn(p, y, box=box, neighbor=nb)

    # θ gradients (fitting): the jvp asks for more than positions, so XLA; same values as the XLA system
    gp = {k: jax.jit(jax.grad(lambda p, s=s: u(s, p, x)))(s.params) for k, s in (("auto", auto), ("xla", xla))}
    assert KERNEL_CALL not in str(jax.make_jaxpr(jax.grad(lambda p: u(auto, p, x)))(auto.params))
    for a, b in zip(jax.tree.leaves(gp["auto"]), jax.tree.leaves(gp["xla"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))
    # forward over reverse (dmd.sensitivity's force tangents): no kernel call, the XLA kernel's tangent
    v = jax.random.normal(jax.random.PRNGKey(0), x.shape, jnp.float32) * 1e-3

    def hvp(s):
        return lambda y: jax.jvp(lambda z: jax.grad(lambda w: u(s, s.params, w))(z), (y,), (v,))[1]

    assert KERNEL_CALL not in str(jax.make_jaxpr(hvp(auto))(x))
    ta, tx = jax.jit(hvp(auto))(x), jax.jit(hvp(xla))(x)
    np.testing.assert_allclose(np.asarray(ta), np.asarray(tx), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(tx))))
    # float64: XLA (the parity tests' 1e-12), and a forced numba kernel says why it cannot serve
    s64 = system_from_pdb(PDB, dtype=jnp.float64, pair_kernel="auto", **KW)
    x64 = s64.positions
    nb64 = s64.neighbor_fn.allocate(x64, box=s64.box)
    f64 = jax.grad(lambda y: s64.energy_fn(s64.params, y, box=s64.box, neighbor=nb64))
    assert KERNEL_CALL not in str(jax.make_jaxpr(f64)(x64))
    forced = system_from_pdb(PDB, dtype=jnp.float64, pair_kernel="numba", **KW)
    with pytest.raises(ValueError, match="float32 only"):
        forced.energy_fn(forced.params, x64, box=forced.box, neighbor=nb64)


def test_vmapped_replicas_match_one_by_one(ala):
    s, box, nb = ala["systems"]["numba"], ala["box"], ala["nb"]
    xs = ala["x"][None] + jax.random.normal(jax.random.PRNGKey(1), (2,) + ala["x"].shape, jnp.float32) * 1e-3
    g = jax.grad(lambda y: s.energy_fn(s.params, y, box=box, neighbor=nb))
    assert KERNEL_CALL in str(jax.make_jaxpr(jax.vmap(g))(xs))  # one kernel call per replica
    batched = jax.jit(jax.vmap(g))(xs)
    for r in range(2):
        one = np.asarray(jax.jit(g)(xs[r]))  # the pairs equal; PME's float32 sums may round differently vmapped
        np.testing.assert_allclose(np.asarray(batched[r]), one, rtol=1e-5, atol=1e-6 * np.abs(one).max())


def test_custom_call_gives_the_kernels_numbers(ala):
    """The XLA custom call hands XLA's buffers to the numba kernel in place: energy and dE/dx equal the kernel's own
    (called from NumPy), alone and for each member of a vmapped batch (one call per member). Measured: equal to the
    bit; allowed: the order of the per-thread partial sums (a few float32 ulps of Σ|e_ij| and of each atom's
    Σ_j|∂e_ij/∂r|), which is all that may differ between two calls of a multi-threaded kernel."""
    from dmd.forces.numba_pairs import pairs_vec

    box, idx = ala["box"], ala["nb"].idx
    q, sig, seps = (jnp.asarray(a, jnp.float32) for a in ala["qse"])
    pair = pair_energy_full("PME", ala["rc"], alpha=ala["alpha"], half=True, pair_kernel="numba")
    xs = ala["x"][None] + jax.random.normal(jax.random.PRNGKey(2), (2,) + ala["x"].shape, jnp.float32) * 1e-3
    one = jax.jit(jax.value_and_grad(lambda y: pair(y, box, idx, q, sig, seps)))
    batch = jax.jit(jax.vmap(jax.value_and_grad(lambda y: pair(y, box, idx, q, sig, seps))))(xs)
    host = [np.asarray(a) for a in (box, idx, q, sig, seps)]
    for r in range(2):
        e, g = pairs_vec(np.asarray(xs[r]), *host, ala["rc"], ala["alpha"], True)
        e_abs, g_abs = _abs_sums(xs[r], box, idx, *ala["qse"], ala["rc"], ala["alpha"])
        for e1, g1 in (one(xs[r]), (batch[0][r], batch[1][r])):
            assert abs(float(e1) - float(np.float32(e))) <= 4 * F32_ULP * e_abs
            df = np.linalg.norm(np.asarray(g1, np.float64) - g, axis=1)
            assert np.all(df <= 4 * F32_ULP * g_abs), float(np.max(df / g_abs))
