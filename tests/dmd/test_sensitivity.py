"""Trajectory sensitivities dx_t/dθ (dmd.sensitivity) against independent oracles, float64.

Oracles: ``jax.jacfwd`` through a separately written seed-form Langevin loop (eq. 4-5) that uses all pairs
(no neighbour list), and central finite differences of re-runs with the same noise. Two force-field types:
a Lennard-Jones fluid with a neighbour list, and alanine dipeptide from OpenMM's amber14 (bonds, angles,
torsions, nonbonded; dmd.openmm_system).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.integrators import langevin_coefficients
from dmd.params import select
from dmd.sensitivity import read_sensitivities, run_sensitivities, write_sensitivities

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
LJ_RUN = dict(dt=0.01, temperature=120.0, friction=2.0)  # argon: τ ≈ 2.15 ps, so dt ≈ τ/215


@pytest.fixture(scope="module")
def lj():
    # 64 atoms at ρσ³ = 0.8; smooth switch 0.5-0.6 nm so that a pair crossing the cutoff adds no jump
    return models.lj_fluid(64, density=0.8, cutoff=0.6, switch_distance=0.5, skin=0.1, dtype=jnp.float64)


@pytest.fixture(scope="module")
def bonded():
    """Alanine dipeptide (ACE-ALA-NME, 22 atoms), amber14, no cutoff: bonds, angles, torsions, LJ + Coulomb."""
    from dmd.openmm_system import system_from_pdb

    return system_from_pdb(DATA / "alanine_dipeptide.pdb", ["amber14-all.xml"], nonbonded="NoCutoff")


def _reference_positions(system, names, theta, *, steps, dt, temperature, friction, seed=0):
    """x_1..x_T of eq. (4)-(5), written out independently of dmd.integrators: all pairs, no neighbour list, no
    tangents; the same PRNG use as the engine (velocities from split(key)[1], per-step noise from a split)."""
    sel = select(system.param_labels, names)
    x0 = jnp.asarray(system.positions)
    masses = jnp.asarray(system.masses)
    key, key_vel = jax.random.split(jax.random.PRNGKey(seed))
    v0 = jnp.sqrt(KB_KJ_PER_MOL_K * temperature / masses)[:, None] * jax.random.normal(key_vel, x0.shape, x0.dtype)
    a, b, c = langevin_coefficients(dt, friction, KB_KJ_PER_MOL_K * temperature, masses)
    grad = jax.grad(lambda x, th: system.energy_fn(sel.set(system.params, th), x, box=system.box, neighbor=None))

    def body(state, _):
        x, v, key = state
        key, nkey = jax.random.split(key)
        v = a * v - b * grad(x, theta) + c * jax.random.normal(nkey, x.shape, x.dtype)
        x = x + v * dt
        return (x, v, key), x

    return jax.lax.scan(body, (x0, v0, key), None, length=steps)[1]


def _rel(a, b):
    """Largest per-frame relative error ‖a − b‖/‖b‖ (norm over atoms × xyz) over frames (and parameters)."""
    return float(np.max(np.linalg.norm(a - b, axis=(-2, -1)) / np.linalg.norm(b, axis=(-2, -1))))


STEPS = 100
CASES = {
    # LJ: dt ≈ τ/215; window test at γ = 40/ps gives a = exp(−γδt) = 0.67
    "lj": (["lj/epsilon/A", "lj/sigma/A"], dict(dt=0.01, temperature=120.0, friction=2.0), 40.0),
    # alanine dipeptide: 0.5 fs steps (unconstrained X-H bonds); window test at γ = 800/ps gives the same a = 0.67
    "bonded": (
        ["HarmonicBondForce/k/4-5", "PeriodicTorsionForce/k/1-0-4-5(n=3)", "NonbondedForce/epsilon/protein-CT"],
        dict(dt=0.0005, temperature=300.0, friction=5.0),
        800.0,
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    """(system, names, run kwargs, window-test friction, tangent result over STEPS steps), one per force field."""
    system = request.getfixturevalue(request.param)
    names, run, window_friction = CASES[request.param]
    return system, names, run, window_friction, run_sensitivities(system, names, steps=STEPS, **run)


def test_tangent_matches_jacfwd_through_whole_scan(case):
    system, names, run, _, res = case
    theta = select(system.param_labels, names).get(system.params)

    def traj(th):
        x = _reference_positions(system, names, th, steps=STEPS, **run)
        return x, x

    ref_dx, ref_x = jax.jacfwd(traj, has_aux=True)(theta)
    ref_dx = np.moveaxis(np.asarray(ref_dx), -1, 1)  # [T, N, 3, P] -> [T, P, N, 3]
    # same floating-point operations up to summation order (and the neighbour list vs all pairs): agreement
    # to ~1e-14 times the growth; 1e-10 is the spec
    err_x, err_dx = _rel(res.positions, np.asarray(ref_x)), _rel(res.dx, ref_dx)
    print(f"{system.name}: positions vs reference {err_x:.2e}, tangent vs jacfwd {err_dx:.2e} (max per frame)")
    assert err_x < 1e-12
    assert err_dx < 1e-10
    assert res.dx.shape == (STEPS, len(names), system.n_atoms, 3)


def test_window_with_k_at_least_T_equals_tangent(case):
    system, names, run, _, tan = case
    win = run_sensitivities(system, names, steps=STEPS, method="window", window=STEPS, **run)
    # with k >= T no ζ term is folded: eq. (9) is the exact series, only the summation order differs
    print(f"{system.name}: window k = T vs tangent: dx {_rel(win.dx, tan.dx):.2e}, dv {_rel(win.dv, tan.dv):.2e}")
    assert _rel(win.dx, tan.dx) < 1e-10
    assert _rel(win.dv, tan.dv) < 1e-10
    assert win.method == "window" and win.window == STEPS


def test_tangent_matches_same_noise_central_differences(case):
    system, names, run, _, res = case
    sel = select(system.param_labels, names)
    theta = np.asarray(sel.get(system.params))
    for p in range(sel.size):
        # relative step: 1e-5 for LJ (σ enters as r⁻¹², so O(h²) truncation grows fast with h); 1e-4 for the
        # molecule, whose small parameters (torsion k ~ 1 kJ/mol) would otherwise be rounding-limited (eps/h)
        h = (1e-5 if system.metadata.get("model") == "lj_fluid" else 1e-4) * abs(theta[p])
        xs = []
        for sign in (1, -1):
            th = theta.copy()
            th[p] += sign * h
            sys_p = dataclasses.replace(system, params=sel.set(system.params, jnp.asarray(th)))
            xs.append(run_sensitivities(sys_p, names, steps=STEPS, **run).positions)
        fd = (xs[0] - xs[1]) / (2 * h)
        # relative error over the whole short trajectory (frames × atoms × xyz): O(h²) truncation plus rounding
        # eps·|x|/(h·|dx/dθ|), both ≲ 1e-7 with these steps; 1e-6 is the spec
        err = np.linalg.norm(res.dx[:, p] - fd) / np.linalg.norm(fd)
        print(f"{system.name} {names[p]}: tangent vs same-noise central FD, relative error {err:.2e}")
        assert err < 1e-6, names[p]


def test_window_error_falls_like_a_to_the_k(case):
    system, names, run, window_friction, _ = case
    run = dict(run, friction=window_friction)
    a = float(np.exp(-window_friction * run["dt"]))
    tan = run_sensitivities(system, names, steps=STEPS, **run)
    ks = np.array([4, 8, 12, 16, 24])
    err = np.array(
        [
            _rel(
                run_sensitivities(
                    system, names, steps=STEPS, method="window", window=int(k), window_capacity=STEPS, **run
                ).dx,
                tan.dx,
            )
            for k in ks
        ]
    )
    slope = np.polyfit(ks, np.log(err), 1)[0]
    print(f"{system.name}: a = {a:.3f}, ln a = {np.log(a):.3f}, fitted slope {slope:.3f}, errors {err}")
    # each folded term carries an error ≈ a^k/(1−a), fed back through H·dx/dθ: the log-error slope should be
    # ln a within a factor of two
    assert 0.5 * np.log(a) > slope > 2.0 * np.log(a), (slope, np.log(a), err)
    assert np.all(np.diff(err) < 0)


def test_float32_overflow_of_tangents_is_reported():
    # An inverted well E = −½k|x − c|² started 1e-20 nm from its top, nearly without noise: x − c and dx/dc both
    # grow like e^{ωt} (ω = 63/ps), but dx/dc ~ 1 while x − c ~ 1e-20, so the float32 tangent overflows (at
    # ~1.4 ps) while the positions are still finite (~1e18 nm): the run must report it, not return inf silently.
    system = models.harmonic_oscillator(1, dim=3, k=4000.0, mass=1.0, dtype=jnp.float32)
    spring = dict(system.params["spring"], k=-system.params["spring"]["k"])
    system = dataclasses.replace(system, params={"spring": spring})
    start = dict(pos=np.full((1, 3), 1e-20, np.float32), vel=np.zeros((1, 3), np.float32))
    run = dict(steps=2000, dt=0.001, temperature=1e-34, friction=1.0, report_every=10)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = run_sensitivities(system, ["spring/center"], **run, **start)
    assert res.first_nonfinite_frame is not None and np.all(np.isfinite(res.positions))
    assert not np.all(np.isfinite(res.dx))  # the overflow is there, and it was reported:
    assert any("non-finite" in w for w in res.warnings)
    assert res.estimator_advice.startswith("trust: fluctuation")
    assert res.dx.dtype == np.float32  # input dtype kept


def test_bad_input_raises_user_input_error(lj):
    run = dict(steps=10, **LJ_RUN)
    with pytest.raises(UserInputError, match="unknown parameter"):
        run_sensitivities(lj, ["lj/epsilon/Z"], **run)
    with pytest.raises(UserInputError, match="window"):
        run_sensitivities(lj, ["lj/epsilon/A"], method="window", **run)
    with pytest.raises(UserInputError, match="report_every"):
        run_sensitivities(lj, ["lj/epsilon/A"], report_every=3, **run)
    with pytest.raises(UserInputError, match="friction"):
        run_sensitivities(lj, ["lj/epsilon/A"], **dict(run, friction=0.0))
    with pytest.raises(UserInputError, match="pos"):
        run_sensitivities(lj, ["lj/epsilon/A"], pos=np.zeros((3, 3)), **run)


def test_hdf5_round_trip_and_no_recompilation(lj, tmp_path):
    names = ["lj/epsilon/A"]
    res = run_sensitivities(lj, names, steps=20, report_every=5, **LJ_RUN)
    from dmd.sensitivity import compiled_chunk_count as n_compiled

    before = n_compiled()
    res2 = run_sensitivities(lj, names, steps=20, report_every=5, seed=1, **LJ_RUN)
    assert n_compiled() == before  # a second run (other seed) reuses the compiled chunk
    assert not np.allclose(res2.positions, res.positions)
    path = write_sensitivities(tmp_path / "sens.h5", res)
    back = read_sensitivities(path)
    assert back.dx.shape == (4, 1, 64, 3) and back.names == tuple(names)
    np.testing.assert_array_equal(back.dx, res.dx)  # lossless: float64 stored as float64
    assert back.method == "tangent" and back.window is None and back.estimator_advice == res.estimator_advice
