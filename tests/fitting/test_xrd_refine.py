"""Gradients of the refinement loss (every parameterization and metric, smoothing, energy) vs central finite
differences in float64 (conftest enables x64)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fitting import xrd_params as xp
from fitting.xrd_energy import element_parameters, make_energy_model
from fitting.xrd_refine import AdamSettings, RefineConfig, make_loss_fn, make_pattern_model, smooth_pattern
from fitting.xrd_structures import STRUCTURES, expand_spec, spacegroup_param

SPEC = STRUCTURES["TiO2-rutile"]
GRID = np.arange(20.0, 60.0, 0.04)


def _setup():
    cell, pos, els = expand_spec(SPEC)
    rng = np.random.default_rng(0)
    obs = np.asarray(make_pattern_model(els, cell, GRID, margin=0.0)(cell, pos))
    c0, p0 = xp.perturb_structure(rng, cell, pos, strain=0.01, displacement=0.03)
    return cell, pos, els, obs, c0, p0


def _fd_check(loss, params, rng, n_dirs=3, h=1e-6):
    """Max relative error of jax.grad vs central differences along random directions."""
    g = jax.grad(loss)(params)
    errs = []
    for _ in range(n_dirs):
        d = jax.tree_util.tree_map(lambda x: rng.normal(size=np.shape(x)), params)
        plus = jax.tree_util.tree_map(lambda x, v: x + h * v, params, d)
        minus = jax.tree_util.tree_map(lambda x, v: x - h * v, params, d)
        fd = (float(loss(plus)) - float(loss(minus))) / (2 * h)
        leaves = zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(d), strict=True)
        an = sum(float(jnp.sum(a * b)) for a, b in leaves)
        errs.append(abs(fd - an) / max(abs(fd), 1e-8))
    return max(errs)


@pytest.mark.parametrize("kind", ["p1", "family", "spacegroup"])
def test_loss_gradient_each_parameterization(kind):
    cell, pos, els, obs, c0, p0 = _setup()
    if kind == "p1":
        par, sg = xp.P1Param(tuple(els)), "P 1"
    elif kind == "family":
        par, sg = xp.FamilyParam(tuple(els), crystal_family="tetragonal"), "P 1"
    else:
        par, sg = spacegroup_param(SPEC), SPEC.spacegroup
    pm = make_pattern_model(els, c0, GRID, spacegroup=sg)
    energy = make_energy_model(els, c0, cutoff=5.0)
    loss_fn = make_loss_fn(par, pm, obs, "cosine", energy)
    params = jax.tree_util.tree_map(jnp.asarray, par.init(c0, p0))
    # smoothed metric (σ = 0.2°) plus energy (w = 0.3): every term of the objective is differentiated
    err = _fd_check(jax.jit(lambda p: loss_fn(p, 0.2, 0.3)[0]), params, np.random.default_rng(1))
    print(f"{kind}: gradient rel. error {err:.2e}")
    # float64 central differences with h = 1e-6 on an O(1) loss: truncation+rounding ≈ 1e-8 relative
    assert err < 1e-6, err


def test_loss_gradient_each_metric():
    cell, pos, els, obs, c0, p0 = _setup()
    par = xp.P1Param(tuple(els))
    pm = make_pattern_model(els, c0, GRID)
    metrics = ("cosine", "pearson", "rwp", "wasserstein")
    fns = [make_loss_fn(par, pm, obs, m) for m in metrics]
    params = jax.tree_util.tree_map(jnp.asarray, par.init(c0, p0))
    # all four metrics in one compiled function (one compilation), gradients row by row via jacrev
    losses = jax.jit(lambda p: jnp.stack([f(p, 0.0, 0.0)[0] for f in fns]))
    jac = jax.jit(jax.jacrev(losses))(params)
    rng = np.random.default_rng(2)
    h = 1e-6
    for _ in range(2):
        d = jax.tree_util.tree_map(lambda x: rng.normal(size=np.shape(x)), params)
        plus = jax.tree_util.tree_map(lambda x, v: x + h * v, params, d)
        minus = jax.tree_util.tree_map(lambda x, v: x - h * v, params, d)
        fd = (np.asarray(losses(plus)) - np.asarray(losses(minus))) / (2 * h)
        an = sum(
            np.asarray(jnp.tensordot(j, v, axes=v.ndim))
            for j, v in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(d), strict=True)
        )
        err = np.abs(fd - an) / np.maximum(np.abs(fd), 1e-8)
        print("metric gradient rel. errors", dict(zip(metrics, err, strict=True)))
        # float64 central differences, h = 1e-6; Wasserstein's |CDF difference| kinks are avoided by generic
        # random directions, so the same tolerance holds for all
        assert np.all(err < 1e-6), err


def test_energy_gradient_cell_and_positions():
    cell, pos, els, obs, c0, p0 = _setup()
    model = make_energy_model(els, c0, charge_scale=0.5)  # with the DSF Coulomb term
    rng = np.random.default_rng(3)
    args = (jnp.asarray(c0), jnp.asarray(p0))
    g = jax.grad(model, argnums=(0, 1))(*args)
    for i, x in enumerate(args):
        d = rng.normal(size=x.shape)
        h = 1e-6
        xs_p = list(args)
        xs_m = list(args)
        xs_p[i] = x + h * d
        xs_m[i] = x - h * d
        fd = (float(model(*xs_p)) - float(model(*xs_m))) / (2 * h)
        an = float(jnp.sum(g[i] * d))
        print(f"energy gradient rel. error ({'cell' if i == 0 else 'positions'}): {abs(fd - an) / abs(fd):.2e}")
        assert abs(fd - an) / abs(fd) < 1e-6  # float64 central differences


def test_energy_is_translation_invariant_and_finite_at_truth():
    cell, pos, els = expand_spec(STRUCTURES["NaCl"])
    model = make_energy_model(els, cell)
    e0 = float(model(cell, pos))
    e1 = float(model(cell, pos + np.array([0.13, -0.41, 0.27])))
    assert np.isfinite(e0) and abs(e0 - e1) < 1e-12  # periodic images: rigid shifts change nothing
    # the NaCl minimum along the cell scale lies within 3 % of the experimental a (element radii sum 2.83 Å)
    scales = np.linspace(0.9, 1.1, 41)
    es = [float(model(np.r_[cell[:3] * s, cell[3:]], pos)) for s in scales]
    assert abs(scales[int(np.argmin(es))] - 1) <= 0.03


def test_smoothing_preserves_area_and_widens():
    x = np.arange(0, 40, 0.02)
    y = np.exp(-0.5 * ((x - 20) / 0.05) ** 2)
    ys = np.asarray(smooth_pattern(jnp.asarray(y), 0.02, 0.5))
    assert abs(ys.sum() / y.sum() - 1) < 1e-6  # Gaussian kernel of unit area, no wrap-around
    var = np.sum(ys * (x - 20) ** 2) / ys.sum()
    assert abs(np.sqrt(var) - np.sqrt(0.05**2 + 0.5**2)) < 1e-3  # variances add under convolution


def test_windowed_gaussian_profile_equals_dense_profile_and_gradient():
    cell, pos, els, obs, c0, p0 = _setup()
    pm = make_pattern_model(els, c0, GRID, shape="gaussian")
    assert 0 < pm.window < GRID.size // 10  # each peak really is evaluated on a short window only
    dense = dataclasses.replace(pm, window=0)  # analysis.powder.profile on the whole grid
    c1, p1 = xp.perturb_structure(np.random.default_rng(4), cell, pos, strain=0.03, displacement=0.2)
    y_w, y_d = np.asarray(pm(c1, p1)), np.asarray(dense(c1, p1))
    # ± 5 FWHM window: the neglected Gaussian tails are < e⁻⁶⁹ of a peak, so only float64 round-off remains
    assert np.max(np.abs(y_w - y_d)) < 1e-12 * np.max(y_d)
    par = xp.P1Param(tuple(els))
    q = jax.tree_util.tree_map(jnp.asarray, par.init(c1, p1))
    g_w = jax.jit(jax.grad(lambda q: make_loss_fn(par, pm, obs)(q, 0.2, 0.0)[0]))(q)
    g_d = jax.jit(jax.grad(lambda q: make_loss_fn(par, dense, obs)(q, 0.2, 0.0)[0]))(q)
    for k in g_d:  # same tolerance reason: the two gradients differ by round-off only
        assert float(jnp.max(jnp.abs(g_w[k] - g_d[k]))) < 1e-10 * float(jnp.max(jnp.abs(g_d[k])))


def test_energy_image_set_is_complete_and_tight():
    # an oblique, strained cell: the image bound uses interplanar spacings, which matter when angles ≠ 90°
    spec = STRUCTURES["Al2O3-corundum"]
    cell, pos, els = expand_spec(spec)
    c1, p1 = xp.perturb_structure(np.random.default_rng(2), cell, pos, strain=0.1, displacement=0.3)
    radius, charge, _ = element_parameters(els)
    kw = {"charge_scale": 0.5, "radius": radius, "charge": charge}  # with the DSF Coulomb term
    tight = make_energy_model(els, c1, margin=1.0, **kw)
    many = make_energy_model(els, c1, margin=2.5, **kw)  # far more images than the cutoff needs
    assert tight.covers(c1) and len(tight.shifts) * 3 < len(many.shifts)
    e_t, e_m = float(tight(c1, p1)), float(many(c1, p1))
    assert abs(e_t - e_m) < 1e-12 * max(1.0, abs(e_m))  # identical sums: the extra images are beyond the cutoff


def test_energy_finite_when_atoms_coincide():
    # two atoms nearly on top of each other: (r_ij/r)¹² overflows float32 without the linear core, and the
    # resulting NaN would poison the gradient of every start in a batch even at energy weight 0
    cell, pos, els = expand_spec(STRUCTURES["NaCl"])
    model = make_energy_model(els, cell)
    pos_c = pos.copy()
    pos_c[1] = pos_c[0] + np.array([1e-4, 0.0, 0.0])  # two Na atoms 5.6e-4 Å apart (a like-charged WCA pair)
    e32, g32 = jax.value_and_grad(model, argnums=1)(jnp.asarray(cell, jnp.float32), jnp.asarray(pos_c, jnp.float32))
    assert np.isfinite(float(e32)) and bool(jnp.all(jnp.isfinite(g32)))
    # still repulsive inside the core: the energy rises as the pair closes, and the gradient pushes them apart
    e_far = float(model(cell, np.where(np.arange(len(pos))[:, None] == 1, pos[0] + [0.05, 0, 0], pos)))
    assert float(model(cell, pos_c)) > e_far
    g = np.asarray(jax.grad(model, argnums=1)(jnp.asarray(cell), jnp.asarray(pos_c)))
    assert g[1, 0] < 0 < g[0, 0]  # separating the pair (atom 1 to +x, atom 0 to −x) lowers E


def test_refine_config_flat_settings_land_in_their_groups():
    # exact values: each flat name sets its group's field; the groups keep the rest of their defaults
    cfg = RefineConfig(steps=200, learning_rate=0.02, smooth_start=1.0, energy_weight=0.5)
    assert cfg.adam == AdamSettings(learning_rate=0.02)
    assert (cfg.steps, cfg.smoothing.smooth_start, cfg.smoothing.smooth_end_fraction) == (200, 1.0, 0.7)
    assert (cfg.energy.energy_weight, cfg.energy.energy_hold) == (0.5, 0.5)
    assert dataclasses.replace(cfg, clip=1.0).adam.clip == 1.0
    with pytest.raises(ValueError, match="smooth_start must be"):
        RefineConfig(smooth_start=-1.0)
