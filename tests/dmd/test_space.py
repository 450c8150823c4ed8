"""dmd.space, the one home of periodic geometry: minimum image against a brute-force search over lattice images
(float64 and float32), fractional coordinates, wrapping, box reduction and box scaling."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from dmd import space
from dmd.base.errors import UserInputError

# a reduced triclinic box (rows a, b, c; nm): |b_x|, |c_x| ≤ a_x/2, |c_y| ≤ b_y/2
TRICLINIC = np.array([[3.0, 0.0, 0.0], [1.2, 2.8, 0.0], [-0.9, 1.1, 3.2]])
ORTHORHOMBIC = np.array([3.0, 2.5, 4.0])


def _brute_force_image(dr, box_rows):
    """The shortest of dr − n B over every n in {−3..3}³ (numpy float64): the definition of the minimum image."""
    shifts = np.array(list(itertools.product(range(-3, 4), repeat=3)), float) @ box_rows  # [343, 3]
    cand = dr[:, None, :] - shifts[None]
    best = np.argmin(np.sum(cand**2, -1), axis=1)
    return cand[np.arange(len(dr)), best]


def _displacements(box_rows, n, seed=0):
    """n raw displacements whose minimum image is shorter than min(a_x, b_y, c_z)/2 (where the rule is exact),
    shifted by random lattice vectors up to ±2 cells."""
    rng = np.random.default_rng(seed)
    r_max = 0.49 * np.min(np.diagonal(box_rows))
    d = rng.normal(size=(n, 3))
    d *= (r_max * rng.uniform(0, 1, n) ** (1 / 3) / np.linalg.norm(d, axis=1))[:, None]
    return d + rng.integers(-2, 3, (n, 3)) @ box_rows, d


@pytest.mark.parametrize("box", [TRICLINIC, ORTHORHOMBIC], ids=["triclinic", "orthorhombic"])
def test_minimum_image_is_the_shortest_image(box):
    rows = np.diag(box) if box.ndim == 1 else box
    dr, short = _displacements(rows, 2000)
    want = _brute_force_image(dr, rows)
    np.testing.assert_allclose(want, short, atol=1e-12)  # the oracle recovers the planted short vectors
    got = np.asarray(space.minimum_image(jnp.asarray(dr, jnp.float64), box))
    np.testing.assert_allclose(got, want, atol=1e-12)  # float64: exact up to rounding of ~10 nm sums
    d, n = space.minimum_image_shift(jnp.asarray(dr, jnp.float64), box)
    np.testing.assert_allclose(np.asarray(n) @ rows, dr - want, atol=1e-12)  # the shifts are the lattice vectors
    np.testing.assert_array_equal(np.asarray(n), np.round(np.asarray(n)))  # and integer
    # float32 path (explicit dtype under the suite's x64): float32 rounding of ~10 nm values, ε·10 nm ≈ 1e-6 nm
    got32 = space.minimum_image(jnp.asarray(dr, jnp.float32), jnp.asarray(box, jnp.float32))
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got32, float), want, atol=1e-5)
    disp = space.periodic_displacement(box)
    np.testing.assert_allclose(np.asarray(disp(jnp.asarray(dr), jnp.zeros(3))), want, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(space.minimum_image(jnp.asarray(dr), None)), dr)  # free space


def test_fractional_coordinates_wrapping_and_volume():
    rng = np.random.default_rng(1)
    x = rng.uniform(-10, 10, (500, 3))
    s = np.asarray(space.to_fractional(jnp.asarray(x), TRICLINIC))
    np.testing.assert_allclose(s @ TRICLINIC, x, atol=1e-12)  # x = s B
    np.testing.assert_allclose(np.asarray(space.from_fractional(jnp.asarray(s), TRICLINIC)), x, atol=1e-12)
    w = np.asarray(space.wrap_positions(jnp.asarray(x), TRICLINIC))
    sw = w @ np.linalg.inv(TRICLINIC)
    assert sw.min() >= -1e-12 and sw.max() < 1 + 1e-12  # in the primary cell
    np.testing.assert_allclose(sw - s, np.round(sw - s), atol=1e-9)  # moved by whole lattice vectors only
    assert float(space.box_volume(jnp.asarray(TRICLINIC))) == pytest.approx(abs(np.linalg.det(TRICLINIC)), rel=1e-14)
    assert float(space.box_volume(jnp.asarray(ORTHORHOMBIC))) == pytest.approx(30.0, rel=1e-14)
    # face-to-face widths V/|b×c| etc., and the largest cutoff the minimum image serves
    widths = space.perpendicular_widths(TRICLINIC)
    a, b, c = TRICLINIC
    v = abs(np.linalg.det(TRICLINIC))
    np.testing.assert_allclose(widths, [v / np.linalg.norm(np.cross(b, c)), v / np.linalg.norm(np.cross(c, a)),
                                        v / np.linalg.norm(np.cross(a, b))], rtol=1e-12)  # fmt: skip
    assert space.max_cutoff(TRICLINIC) == pytest.approx(0.5 * min(3.0, 2.8, 3.2))


def test_reduce_box_keeps_the_lattice_and_reaches_the_reduced_form():
    skewed = np.array([[1, 0, 0], [1, 1, 0], [-1, 2, 1]]) @ TRICLINIC  # rows a, b + a, c + 2b − a: same lattice
    with pytest.raises(UserInputError, match="not in reduced form"):
        space.check_reduced_box(skewed)  # refused with the fix named
    r = space.reduce_box(skewed)
    np.testing.assert_allclose(r, TRICLINIC, atol=1e-12)  # the same lattice, back in OpenMM's reduced form
    np.testing.assert_array_equal(space.check_reduced_box(r), r)


def test_scale_positions_keeps_fractional_centres_and_molecule_shapes():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 3, (12, 3))
    mol = np.repeat(np.arange(4), 3)
    new_box = TRICLINIC * np.array([1.05, 0.97, 1.02])[:, None]
    y = np.asarray(space.scale_positions(jnp.asarray(x), TRICLINIC, new_box, jnp.asarray(mol)))
    inv, inv_new = np.linalg.inv(TRICLINIC), np.linalg.inv(new_box)
    for m in range(4):
        sel = mol == m
        np.testing.assert_allclose(y[sel].mean(0) @ inv_new, x[sel].mean(0) @ inv, atol=1e-12)  # centre's s kept
        np.testing.assert_allclose(y[sel] - y[sel].mean(0), x[sel] - x[sel].mean(0), atol=1e-12)  # rigid
    atoms = np.asarray(space.scale_positions(jnp.asarray(x), TRICLINIC, new_box))
    np.testing.assert_allclose(atoms @ inv_new, x @ inv, atol=1e-12)  # without molecules: every atom's s kept
