"""dmd.openmm_system.common.value: OpenMM quantities to floats (a fast path when the unit is already the one asked
for, which is how OpenMM returns force-field parameters)."""

import openmm.unit as u
import pytest

from dmd.openmm_system.common import value


def test_value_converts_other_units_and_passes_matching_ones():
    # the fast path (unit identical or equal) and the conversion agree with OpenMM's own value_in_unit, exactly:
    # both are one float multiplication at most
    assert value(0.3 * u.nanometer, u.nanometer) == 0.3
    assert value(3.0 * u.angstrom, u.nanometer) == pytest.approx(0.3, rel=1e-15)
    assert value(1.0 * u.kilocalorie_per_mole, u.kilojoule_per_mole) == pytest.approx(4.184, rel=1e-15)
    e2 = u.elementary_charge**2  # a new Unit object equal to the one OpenMM attaches to exception charges
    assert value(0.25 * u.elementary_charge * u.elementary_charge, e2) == 0.25
    assert value(2, u.nanometer) == 2.0 and isinstance(value(2, u.nanometer), float)
    with pytest.raises(TypeError):  # incompatible units still refused, not silently passed through
        value(1.0 * u.nanometer, u.kilojoule_per_mole)
