"""Ensemble observables that force-field fitting can target.

An :class:`Observable` is a per-frame vector ``o(θ, x) ∈ R^K`` plus a ``combine`` map from the ensemble mean
``⟨o⟩`` to the prediction compared with data::

    prediction = combine(⟨o⟩),   ⟨o⟩ = (1/F) Σ_t o(θ, x_t)

Most observables are plain averages (``combine`` = identity). Diffuse scattering is not: with per-frame
``o = [|F|², Re F, Im F]`` the prediction is I_D = ⟨|F|²⟩ − |⟨F⟩|² (Guinier), a function of two averages.
Writing every observable this way lets one chain rule serve all gradient routes: for a loss L(prediction),
``dL/dθ = (∂L/∂⟨o⟩) · d⟨o⟩/dθ`` and d⟨o⟩/dθ comes from the pathwise, fluctuation or reweighting estimator.

Units: positions nm, box nm, energies kJ/mol, r in nm, q in 1/nm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.errors import UserInputError
from dmd.space import minimum_image

__all__ = [
    "Observable",
    "rdf",
    "structure_factor",
    "mean_energy",
    "density",
    "pressure",
    "dihedral_cosines",
    "diffuse_scattering",
    "powder_pattern",
    "custom",
    "frame_values",
]


@dataclasses.dataclass(frozen=True)
class Observable:
    """A per-frame vector observable and the map from its ensemble mean to the prediction.

    Attributes:
      name: label used in histories and error messages.
      per_frame: ``(params, pos [N, 3] nm, box) -> [K]``; jit-able; may depend on ``params`` explicitly.
      axis: ``[K_pred]`` abscissa of the prediction (r in nm, q in 1/nm, 2θ in degrees, or indices).
      axis_name: what ``axis`` is, with units (checked against target files).
      combine: ``[K] -> [K_pred]`` map from ⟨o⟩ to the prediction (identity by default).
      explicit_params: True when ``per_frame`` depends on θ directly (e.g. the potential energy).
      follows_box: True when ``per_frame`` uses the frame's ``box`` (constant-pressure frames); False for
        observables built on a fixed lattice or density (structure_factor, diffuse), which NPT fits refuse.
    """

    name: str
    per_frame: Callable
    axis: np.ndarray
    axis_name: str = "index"
    combine: Callable | None = None
    explicit_params: bool = False
    follows_box: bool = True

    def predict(self, mean):
        return mean if self.combine is None else self.combine(mean)


def _min_image(d, box):
    return d - box * jnp.round(d / box)


def rdf(n_atoms: int, box, r_max: float, n_bins: int = 50, smoothing: float | None = None) -> Observable:
    """Radial distribution function g(r) of a periodic one-component system, Gaussian-smoothed.

    Each pair distance contributes a normalized Gaussian of width ``smoothing`` (nm; default one bin) at the
    bin centres, so g(r) is differentiable in positions (needed by the pathwise route)::

        g(r_b) = V / (N (N−1)/2) · Σ_{i<j} G(r_b − r_ij) / (4π r_b²)

    Args:
      n_atoms: N; box: ``[3]`` nm (NVT; constant-pressure frames pass their own orthorhombic box, which sets the
        minimum image and V); r_max: nm (≤ half the box); n_bins: bins on (0, r_max].
    """
    box = np.asarray(box, float)
    if r_max > box.min() / 2 + 1e-9:
        raise UserInputError(f"rdf: r_max={r_max} nm exceeds half the box ({box.min() / 2:.3f} nm); lower r_max")
    dr = r_max / n_bins
    centres = (np.arange(n_bins) + 0.5) * dr
    width = dr if smoothing is None else float(smoothing)
    i, j = np.triu_indices(n_atoms, 1)
    norm = 1.0 / (n_atoms * (n_atoms - 1) / 2) / (4 * math.pi * centres**2)  # × V

    def per_frame(params, pos, box_=None):
        b = jnp.asarray(box if box_ is None else box_, pos.dtype)
        d = _min_image(pos[i] - pos[j], b)
        r = jnp.sqrt(jnp.sum(d * d, -1))
        z = (jnp.asarray(centres, pos.dtype)[:, None] - r[None, :]) / width
        dens = jnp.sum(jnp.exp(-0.5 * z * z), axis=1) / (width * math.sqrt(2 * math.pi))
        return dens * jnp.asarray(norm, pos.dtype) * jnp.prod(b)

    return Observable("rdf", per_frame, centres, "r_nm")


def structure_factor(
    n_atoms: int, box, q_values, r_max: float | None = None, n_bins: int = 100, smoothing: float | None = None
) -> Observable:
    """Static structure factor S(q) from g(r) by the radial Fourier transform with a Lorch window::

        S(q) = 1 + 4πρ ∫₀^{r_max} r² (g(r) − 1) sin(qr)/(qr) · W(r) dr,   W(r) = sin(πr/r_max)/(πr/r_max)

    (The window damps the truncation ripples of a finite r_max.) q in 1/nm.
    """
    box = np.asarray(box, float)
    r_max = box.min() / 2 if r_max is None else float(r_max)
    g = rdf(n_atoms, box, r_max, n_bins, smoothing)
    r = g.axis
    dr = r[1] - r[0]
    q = np.asarray(q_values, float)
    rho = n_atoms / float(np.prod(box))
    window = np.sinc(r / r_max)
    kernel = 4 * math.pi * rho * dr * (r**2 * np.sinc(np.outer(q, r) / math.pi) * window)  # [Q, R]

    def combine(g_mean):
        return 1.0 + jnp.asarray(kernel, g_mean.dtype) @ (g_mean - 1.0)

    return Observable("structure_factor", g.per_frame, q, "q_per_nm", combine=combine, follows_box=False)


def mean_energy(system, per_atom: bool = False) -> Observable:
    """⟨U⟩ (kJ/mol, or kJ/mol per atom). Depends on θ explicitly, so ⟨∂U/∂θ⟩ enters every estimator."""
    scale = 1.0 / system.n_atoms if per_atom else 1.0

    def per_frame(params, pos, box=None):
        return jnp.reshape(system.energy_fn(params, pos, box=system.box if box is None else box) * scale, (1,))

    return Observable("mean_energy", per_frame, np.zeros(1), "index", explicit_params=True)


# 1 kJ/mol/nm³ in bar: 1e3 J / 6.02214076e23 / 1e-27 m³ = 1.66054e6 Pa
KJ_MOL_NM3_TO_BAR = 16.605390671738467


def pressure(system, temperature: float, *, units: str = "bar") -> Observable:
    """Instantaneous virial pressure of a periodic box (bar, or kJ/mol/nm³ with ``units="kj_mol_nm3"``)::

        P = (n_dof kT − dU(λx, λL)/dλ|_{λ=1}) / (3V)

    The configurational part is the derivative of U under a uniform dilation of positions and box (equal to the
    pair virial Σ r_ij·f_ij / 3V for pair potentials, and right for any U(x, box), PME included); the kinetic part
    is its exact thermostat average n_dof kT / 3V (frames carry no velocities). Depends on θ explicitly.

    Why it is here: the engine samples at constant volume, where the density cannot move. The NVT route to a density
    target ρ_exp at pressure P_ext is to build the box at ρ_exp and fit ⟨P⟩ = P_ext (equivalent to ⟨ρ⟩_NPT = ρ_exp in
    the thermodynamic limit). Atom-wise dilation stretches constrained bonds, so systems with constraints are
    refused (their pressure needs the molecular virial).
    """
    if system.box is None:
        raise UserInputError("pressure: the system has no periodic box; pressure needs a box")
    cons = getattr(system, "constraints", None)
    if cons is not None and (np.size(getattr(cons, "pairs", [])) or getattr(cons, "settle", None) is not None):
        raise UserInputError(
            "pressure: the system has constraints; the atomic virial is wrong for rigid bonds/water (the molecular "
            "virial is needed): build the system without constraints (constraints=None) for a pressure target"
        )
    if units not in ("bar", "kj_mol_nm3"):
        raise UserInputError(f"pressure: units {units!r}: use 'bar' or 'kj_mol_nm3'")
    from dmd.base.units import KB_KJ_PER_MOL_K
    from dmd.integrators import n_degrees_of_freedom

    kinetic = n_degrees_of_freedom(system) * KB_KJ_PER_MOL_K * float(temperature)
    scale = KJ_MOL_NM3_TO_BAR if units == "bar" else 1.0

    def per_frame(params, pos, box=None):
        b = jnp.asarray(system.box if box is None else box, pos.dtype)
        vol = jnp.prod(b) if b.ndim == 1 else jnp.abs(jnp.linalg.det(b))
        dilate = jax.grad(lambda lam: system.energy_fn(params, pos * lam, box=b * lam, neighbor=None))
        du = dilate(jnp.ones((), pos.dtype))
        return jnp.reshape(scale * (kinetic - du) / (3 * vol), (1,))

    return Observable("pressure", per_frame, np.zeros(1), "index", explicit_params=True)


def density(system, units: str = "g_cm3") -> Observable:
    """Density of the periodic box: mass density (g/cm³, ``units="g_cm3"``) or number density (atoms per nm³,
    ``units="number_nm3"``; virtual sites and massless particles not counted).

    NVT runs keep the box, so this is constant and its θ-gradient is zero: a density target needs constant-pressure
    sampling (:func:`fitting.forcefield.fit` with ``FitConfig.pressure``: each frame's box gives ρ_t, and
    d⟨ρ⟩/dθ = −β cov(ρ, ∂U/∂θ), the NPT estimator of :mod:`fitting.npt_density`). Under NVT the fit refuses it
    and points to :func:`pressure` (box built at the target density, ⟨P⟩ fitted to the external pressure).
    """
    if system.box is None:
        raise UserInputError("density: the system has no periodic box; density needs a box")
    if units not in ("g_cm3", "number_nm3"):
        raise UserInputError(f"density: units {units!r}: use 'g_cm3' (mass density) or 'number_nm3' (atoms/nm³)")
    amu_g = 1.66053906660e-24
    masses = np.asarray(system.masses, float)
    if units == "g_cm3":
        amount, per_volume = float(np.sum(masses)) * amu_g, 1e-21  # g per cm³
    else:
        amount, per_volume = float(np.sum(masses > 0)), 1.0  # atoms per nm³

    def per_frame(params, pos, box=None):
        b = jnp.asarray(system.box if box is None else box, pos.dtype)
        vol = (jnp.prod(b) if b.ndim == 1 else jnp.abs(jnp.linalg.det(b))) * per_volume
        return jnp.reshape(amount / vol, (1,))

    return Observable("density", per_frame, np.zeros(1), "index")


def dihedral_cosines(quads, harmonics=(1, 2, 3)) -> Observable:
    """⟨cos nφ⟩ averaged over the dihedrals ``quads [n_dihedrals, 4]`` (atom indices), for each n.

    φ is the IUPAC dihedral (OpenMM's convention). A torsion barrier V_n shifts ⟨cos nφ⟩ directly, so these
    moments identify torsion force constants.
    """
    quads = np.asarray(quads, int).reshape(-1, 4)
    ns = np.asarray(harmonics, float)

    def per_frame(params, pos, box=None):
        p0, p1, p2, p3 = (pos[quads[:, k]] for k in range(4))
        b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
        n1, n2 = jnp.cross(b0, b1), jnp.cross(b1, b2)
        m1 = jnp.cross(n1, b1 / jnp.linalg.norm(b1, axis=-1, keepdims=True))
        phi = jnp.arctan2(jnp.sum(m1 * n2, -1), jnp.sum(n1 * n2, -1))
        return jnp.mean(jnp.cos(jnp.asarray(ns, pos.dtype)[:, None] * phi[None, :]), axis=1)

    return Observable("dihedral_cosines", per_frame, ns, "harmonic_n")


def _lattice_drift(dr, box, frac_mat):
    """The crystal's mean drift ``[3]`` nm from its lattice positions, ``dr [N, 3]`` = positions − lattice, modulo
    the box's lattice vectors (a shift by one of them leaves every F(h) of the box lattice unchanged).

    A thermostatted crystal's centre of mass random-walks (a 188-atom peptide cell at 300 K, γ = 2/ps: ~0.45 nm in
    30 ps, half its 0.96 nm cell); once the drift nears half a box edge the atoms' minimum images split between two
    lattice images and their plain mean is wrong by up to half a cell. So the drift is first the circular mean of the
    fractional displacements (insensitive to that split), then refined by the minimum-image mean about it."""
    frac = (10.0 * dr) @ jnp.asarray(frac_mat, dr.dtype).T  # [N, 3] fractional displacements
    ang = 2.0 * jnp.pi * frac
    coarse_frac = jnp.arctan2(jnp.mean(jnp.sin(ang), 0), jnp.mean(jnp.cos(ang), 0)) / (2.0 * jnp.pi)
    coarse = (coarse_frac @ jnp.asarray(np.linalg.inv(frac_mat).T, dr.dtype)) / 10.0  # fractional → nm
    return coarse + jnp.mean(minimum_image(dr - coarse, box), axis=0)


def diffuse_scattering(
    hkl, cell, elements, *, b_iso=None, atom_indices=None, method: str = "fft", reduce_index=None, reference=None
) -> Observable:
    """Diffuse intensity I_D(h) = ⟨|F(h)|²⟩ − |⟨F(h)⟩|² of the simulation box taken as the unit cell.

    Per frame o = [|F|², Re F, Im F] (3M values); ``combine`` forms I_D with
    :func:`analysis.diffuse.diffuse_from_moments` (the one home of that formula). Structure factors come from
    :mod:`analysis.structure_factors`: the spread + FFT route (default, plan built once here; the fit's frame loop
    vmaps it over frames) or the direct sum (``method="direct"``, for checks). Positions nm → Å at this boundary.

    Args:
      hkl: ``[M, 3]`` indices of the box lattice; cell: ``[6]`` (Å, degrees) of the box;
      elements: element symbols per (selected) atom; b_iso: ``[n]`` Å² (default 0);
      atom_indices: atoms that scatter (default all).
      reduce_index: optional int ``[M]``: data voxel of each reflection (symmetry equivalents of a non-P1 data set,
        :func:`fitting.reweight.data_map.check_and_map`); the prediction is then the mean of I_D over each voxel's
        reflections, ``[n_voxels]``.
      reference: optional ``[N, 3]`` nm lattice positions of a crystal: each frame is first translated by minus its
        mean (minimum-image, :func:`dmd.space.minimum_image`, any reduced triclinic cell) displacement from them.
        A thermostatted crystal's centre of mass wanders; uncorrected, the wandering smears ⟨F⟩ at the Bragg
        positions and their I_D grows with the run length.
    """
    from analysis import cell as cell_mod
    from analysis.diffuse import diffuse_from_moments
    from analysis.structure_factors import make_fft_plan, structure_factors_direct, structure_factors_fft

    hkl = np.asarray(hkl, np.int32)
    m = hkl.shape[0]
    idx = None if atom_indices is None else np.asarray(atom_indices, int)
    cell = np.asarray(cell, float)
    frac_mat = np.asarray(cell_mod.fractionalization_matrix(cell))
    n_sel = len(elements)
    b = np.zeros(n_sel) if b_iso is None else np.asarray(b_iso, float)
    if method == "fft":
        plan = make_fft_plan(hkl, cell, elements, b)

        def sf(frac, x):
            return structure_factors_fft(plan, frac, jnp.asarray(cell, x.dtype), jnp.asarray(b, x.dtype))
    elif method == "direct":

        def sf(frac, x):
            return structure_factors_direct(hkl, frac, jnp.asarray(cell, x.dtype), elements, jnp.asarray(b, x.dtype))
    else:
        raise UserInputError(f"diffuse: method {method!r}: use 'fft' (production) or 'direct' (checks)")

    ref = None if reference is None else np.asarray(reference, float)
    # the box in nm for the minimum image of ``reference``: edges [3] (orthorhombic) or reduced rows [3, 3]
    # (a along x, b in the xy plane: the cell's orthogonalization, as OpenMM and CRYST1 lay a triclinic box out)
    box_nm = np.linalg.inv(frac_mat).T / 10.0
    box_nm = np.diag(box_nm).copy() if np.allclose(box_nm, np.diag(np.diag(box_nm)), atol=1e-9) else box_nm

    def per_frame(params, pos, box=None):
        if ref is not None:
            pos = pos - _lattice_drift(pos - jnp.asarray(ref, pos.dtype), jnp.asarray(box_nm, pos.dtype), frac_mat)
        x = pos if idx is None else pos[idx]
        frac = (10.0 * x) @ jnp.asarray(frac_mat, x.dtype).T
        f = sf(frac, x)
        return jnp.concatenate([jnp.real(f) ** 2 + jnp.imag(f) ** 2, jnp.real(f), jnp.imag(f)])

    if reduce_index is None:
        n_out = m

        def combine(mean):
            return diffuse_from_moments(mean[:m], mean[m : 2 * m], mean[2 * m :])
    else:
        red = np.asarray(reduce_index, np.int32)
        n_out = int(red.max()) + 1
        counts = np.maximum(np.bincount(red, minlength=n_out), 1).astype(float)

        def combine(mean):
            i_d = diffuse_from_moments(mean[:m], mean[m : 2 * m], mean[2 * m :])
            return jax.ops.segment_sum(i_d, red, n_out) / jnp.asarray(counts, i_d.dtype)

    return Observable("diffuse", per_frame, np.arange(n_out, dtype=float), "reflection_index", combine=combine,
                      follows_box=False)  # fmt: skip


def powder_pattern(
    structure_fn, hkl, multiplicity, elements, two_theta, *, wavelength: float = 1.54184, **profile_kwargs
) -> Observable:
    """Profiled powder pattern averaged over frames (stick pattern and profile from :mod:`analysis.powder`).

    Args:
      structure_fn: ``(pos [N, 3] nm) -> (cell [6] Å/deg, frac [n, 3])``: a frame as a P1 crystal; or
        ``(pos, box) -> (cell, frac)``, which follows each frame's box (constant pressure: the peak positions
        move with the lattice, ``follows_box``). The reflection list ``hkl`` stays fixed: give it the 2θ margin
        the lattice may sweep (:func:`analysis.powder.powder_hkl` ``margin``).
      hkl: ``[M, 3]`` reflections (fixed list); multiplicity: ``[M]``; elements: n symbols.
      two_theta: ``[K]`` degrees, the grid of the target pattern.
      profile_kwargs: width model for :func:`analysis.powder.profile` (U, V, W, eta, shape).
    """
    import inspect

    from analysis import powder

    grid = np.asarray(two_theta, float)
    with_box = len(inspect.signature(structure_fn).parameters) >= 2

    def per_frame(params, pos, box=None):
        cell, frac = structure_fn(pos, box) if with_box else structure_fn(pos)
        st = powder.stick_pattern(hkl, multiplicity, frac, cell, elements, wavelength=wavelength)
        return powder.profile(jnp.asarray(grid, pos.dtype), st["two_theta"], st["intensity"], **profile_kwargs)

    return Observable("powder", per_frame, grid, "two_theta_deg", follows_box=with_box)


def custom(fn: Callable, name: str = "custom", axis=None, explicit_params: bool = False) -> Observable:
    """Wrap a user's JAX function ``fn(params, pos, box) -> [K]`` (or ``fn(pos) -> [K]``) as an observable."""
    import inspect

    n_args = len(inspect.signature(fn).parameters)
    per_frame = fn if n_args >= 2 else (lambda params, pos, box=None: fn(pos))
    ax = np.arange(1.0) if axis is None else np.asarray(axis, float)
    return Observable(name, lambda p, x, box=None: jnp.atleast_1d(per_frame(p, x, box)), ax, "index", None,
                      explicit_params)  # fmt: skip


def frame_values(fn, box=None, batch: int = 64):
    """Compile ``fn(params, pos, box)`` over frames once: ``f(params, frames [F, N, 3], boxes=None) -> [F, ...]``.

    Frames are evaluated with ``lax.map`` in vmapped batches of ``batch`` (memory ∝ batch), inside one jit,
    so repeated rounds with new θ or new frames of the same shape never recompile. ``boxes`` (``[F, 3]`` or
    ``[F, 3, 3]`` nm, constant-pressure frames) gives each frame its own box; None uses ``box`` for all.
    """

    @jax.jit
    def run(params, frames, boxes=None):
        if boxes is None:
            return jax.lax.map(lambda x: fn(params, x, box), frames, batch_size=batch)
        return jax.lax.map(lambda xb: fn(params, xb[0], xb[1]), (frames, boxes), batch_size=batch)

    return run
