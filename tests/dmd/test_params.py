"""Parameter selection by name (dmd.params): tangents against central finite differences in float64, units
against the units OpenMM itself attaches to each force's parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmd import models
from dmd.params import all_param_names, param_unit, select


@pytest.fixture(scope="module")
def lj():
    return models.lj_fluid(128, density=0.7, n_types=2, cutoff=0.8, dtype=jnp.float64, seed=1)


def test_names_resolve_in_order_and_unknown_ones_are_refused(lj):
    sel = select(lj.param_labels, ["lj/epsilon/B", "lj/sigma"])
    assert sel.names == ("lj/epsilon/B", "lj/sigma/A", "lj/sigma/B") and sel.size == 3
    assert all_param_names(lj.param_labels) == ["lj/sigma/A", "lj/sigma/B", "lj/epsilon/A", "lj/epsilon/B"]
    theta = np.asarray(sel.get(lj.params))
    np.testing.assert_array_equal(theta, [lj.params["lj"]["epsilon"][1], *lj.params["lj"]["sigma"]])
    with pytest.raises(KeyError, match="valid names: lj/sigma/A, lj/sigma/B, lj/epsilon/A, lj/epsilon/B"):
        select(lj.param_labels, ["lj/epsilon/C"])


def test_tangents_and_set_give_the_finite_difference_derivatives(lj):
    sel = select(lj.param_labels, ["lj/epsilon/B", "lj/sigma/A"])
    energy = lambda p: lj.energy_fn(p, lj.positions)  # noqa: E731  (all pairs)
    theta = sel.get(lj.params)
    for p, tangent in enumerate(sel.tangents(lj.params)):
        _, jvp = jax.jvp(energy, (lj.params,), (tangent,))
        h = 1e-5 * float(theta[p])
        step = jnp.zeros(sel.size).at[p].set(h)
        fd = (energy(sel.set(lj.params, theta + step)) - energy(sel.set(lj.params, theta - step))) / (2 * h)
        # float64 central differences: truncation O(h²) and rounding ~1e-16·E/h, both ≲ 1e-8 relative here
        assert float(jvp) == pytest.approx(float(fd), rel=1e-7)


def test_units_are_the_ones_openmm_attaches():
    openmm = pytest.importorskip("openmm")
    u = pytest.importorskip("openmm.unit")
    names = {"kJ": u.kilojoule, "mol": u.mole, "nm": u.nanometer, "rad": u.radian, "e": u.elementary_charge}

    def parse(text):  # "kJ/mol/nm²" → kJ·mol⁻¹·nm⁻²
        return eval(text.replace("²", "**2"), {}, names)  # noqa: S307  (a fixed table of unit names)

    bond, angle, torsion, nonbonded = (
        openmm.HarmonicBondForce(),
        openmm.HarmonicAngleForce(),
        openmm.PeriodicTorsionForce(),
        openmm.NonbondedForce(),
    )
    bond.addBond(0, 1, 0.1, 100.0)
    angle.addAngle(0, 1, 2, 1.9, 300.0)
    torsion.addTorsion(0, 1, 2, 3, 2, 0.5, 3.0)
    nonbonded.addParticle(0.4, 0.3, 0.5)
    quantities = {
        "HarmonicBondForce/length/0": bond.getBondParameters(0)[2],
        "HarmonicBondForce/k/0": bond.getBondParameters(0)[3],
        "HarmonicAngleForce/angle/0": angle.getAngleParameters(0)[3],
        "HarmonicAngleForce/k/0": angle.getAngleParameters(0)[4],
        "PeriodicTorsionForce/phase/0": torsion.getTorsionParameters(0)[5],
        "PeriodicTorsionForce/k/0": torsion.getTorsionParameters(0)[6],
        "NonbondedForce/charge/0": nonbonded.getParticleParameters(0)[0],
        "NonbondedForce/sigma/0": nonbonded.getParticleParameters(0)[1],
        "NonbondedForce/epsilon/0": nonbonded.getParticleParameters(0)[2],
    }
    for name, q in quantities.items():
        # the value OpenMM stores, read in dmd's stated unit, is the value put in: the units are the same
        assert q.value_in_unit(parse(param_unit(name))) == pytest.approx(q.value_in_unit(q.unit), rel=1e-12), name
    assert param_unit("lj/sigma/A") == "nm" and param_unit("spring/k/0") == "kJ/mol/nm²" and param_unit("x") == ""
