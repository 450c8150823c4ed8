"""PME reciprocal space (dmd.forces.pme): OpenMM's parameter rule and the windowed charge spreading."""

import jax.numpy as jnp
import numpy as np
import pytest

from dmd.forces.pme import pme_grid_parameters, spread_windows


@pytest.mark.parametrize(
    "box, cutoff, tol",
    [
        ([4.6, 4.3, 3.7], 0.9, 5e-4),
        ([2.0, 2.0, 2.0], 1.0, 1e-5),
        ([[3.1, 0, 0], [0.4, 2.9, 0], [-0.7, 0.3, 2.6]], 0.8, 2e-4),
        ([0.9, 0.9, 0.9], 0.4, 0.5e-1),  # tiny grid: OpenMM 8.x minimum of 6 points
    ],
)
def test_grid_parameters_equal_openmm(box, cutoff, tol):
    mm = pytest.importorskip("openmm")
    b = np.diag(box) if np.ndim(box) == 1 else np.asarray(box, float)
    system = mm.System()
    system.setDefaultPeriodicBoxVectors(*(mm.Vec3(*row) for row in b))
    for _ in range(2):
        system.addParticle(1.0)
    force = mm.NonbondedForce()
    force.setNonbondedMethod(mm.NonbondedForce.PME)
    force.setCutoffDistance(cutoff)
    force.setEwaldErrorTolerance(tol)
    force.addParticle(1.0, 0.3, 0.0)
    force.addParticle(-1.0, 0.3, 0.0)
    system.addForce(force)
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions([mm.Vec3(0, 0, 0), mm.Vec3(0.3, 0.2, 0.1)])
    alpha, nx, ny, nz = force.getPMEParametersInContext(ctx)
    ours_alpha, ours_grid = pme_grid_parameters(cutoff, box, tol)
    # the same formula in double precision: α to rounding, the grid exactly
    assert ours_alpha == pytest.approx(alpha, rel=1e-14)
    assert ours_grid == (nx, ny, nz)


def test_spread_windows_equals_periodic_scalar_scatter():
    rng = np.random.default_rng(0)
    grid, p, n = (7, 6, 5), 5, 40  # windows wider than half the grid wrap more than once per axis
    vals = jnp.asarray(rng.normal(size=(n, p, p, p)))
    base = jnp.asarray(rng.integers(0, grid, size=(n, 3)), jnp.int32)
    ref = np.zeros(grid)
    off = np.arange(p)
    for i in range(n):
        ix = (int(base[i, 0]) + off) % grid[0]
        iy = (int(base[i, 1]) + off) % grid[1]
        iz = (int(base[i, 2]) + off) % grid[2]
        np.add.at(ref, np.ix_(ix, iy, iz), np.asarray(vals[i]))
    got = spread_windows(vals, base, grid)  # tests run with x64 on (tests/conftest.py): float64 sums
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=1e-13)
