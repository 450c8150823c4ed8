"""Diffraction targets of a ``dmd fit`` config: diffuse scattering from an MTZ and powder patterns from a CSV, each
checked against the simulated box (the box's cell, the atoms' elements from the topology)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmd.base.config import number
from dmd.base.errors import UserInputError
from fitting.forcefield import FitTarget

__all__ = ["box_cell", "topology_elements", "diffuse_target", "powder_observable", "powder_target"]


def box_cell(box) -> np.ndarray:
    """``[6]`` cell (Å, degrees) of a ``[3]`` nm box (90° angles) or a reduced triclinic ``[3, 3]`` nm box (rows
    a, b, c; OpenMM's reduced form, checked by :func:`dmd.space.check_reduced_box`). The cell's standard
    orthogonalization (a along x, b in the xy plane) is that box again, so fractional coordinates agree."""
    from analysis.cell import cell_from_metric
    from dmd.space import check_reduced_box

    b = 10.0 * check_reduced_box(box)
    if b.ndim == 1:
        return np.concatenate([b, [90.0, 90.0, 90.0]])
    return np.asarray(cell_from_metric(b @ b.T), float)


def topology_elements(system, default: str | None = None):
    """``(elements, atom_indices)`` of the atoms that scatter: element symbols from the system's topology (an
    OpenMM or mdtraj Topology), atoms without an element (virtual sites, extra particles) left out; atom_indices is
    None when every atom scatters. A system without a topology (the LJ model systems) gives ``default`` for every
    atom (``None``: refused)."""
    top = getattr(system, "topology", None)
    if top is None:
        if default is None:
            raise UserInputError("this system has no topology, so no elements: give element: (e.g. Ar)")
        return [default] * system.n_atoms, None
    atoms = list(top.atoms() if callable(top.atoms) else top.atoms)
    symbols = [None if a.element is None else a.element.symbol for a in atoms]
    keep = [i for i, sym in enumerate(symbols) if sym and sym != "VS"]
    if not keep:
        raise UserInputError("the system's topology has no atom with an element; nothing scatters")
    return [symbols[i] for i in keep], (None if len(keep) == len(symbols) else np.asarray(keep))


def diffuse_target(spec: dict, system, base: Path, path: Path):
    """A diffuse-scattering target from an MTZ: ``{observable: diffuse, file, column, d_min, supercell, objective,
    element}``. The MTZ cell, space group and resolution are checked against the simulated box as ``dmd reweight``
    does (:func:`fitting.reweight.data_map.check_and_map`). The box may be orthorhombic or a reduced triclinic
    ``[3, 3]`` box (a monoclinic peptide crystal). Scattering factors per atom come from the topology's elements
    (virtual sites scatter nothing); ``element:`` (default Ar) is for the model systems that have no topology.
    Returns a :class:`FitTarget`."""
    from analysis.mtz_io import read_mtz
    from fitting import observables as ob
    from fitting.objectives import RESIDUAL_OBJECTIVES
    from fitting.reweight.data_map import check_and_map

    bad = set(spec) - {"observable", "file", "column", "sigma_column", "d_min", "supercell", "objective", "element",
                       "weight", "method", "shells"}  # fmt: skip
    if bad:
        raise UserInputError(f"{path}: diffuse target has unknown keys {sorted(bad)}")
    for key in ("file", "column"):
        if key not in spec:
            raise UserInputError(f"{path}: a diffuse target needs {key}: (MTZ file and its intensity column)")
    objective = spec.get("objective", "absolute")
    if objective not in RESIDUAL_OBJECTIVES:
        raise UserInputError(
            f"{path}: diffuse objective {objective!r}: use one of {', '.join(RESIDUAL_OBJECTIVES)} (cc-aniso and "
            "student are reweighting-only: they have no least-squares form)"
        )
    if system.box is None:
        raise UserInputError(f"{path}: a diffuse target needs a periodic box (the crystal's cell or supercell)")
    if getattr(system, "topology", None) is not None and "element" in spec:
        raise UserInputError(
            f"{path}: diffuse element: is for model systems without a topology; this system's elements come from "
            "its topology (remove element:)"
        )
    box_cell_ = _box_cell_checked(system.box, path)
    cols = [spec["column"]] + ([spec["sigma_column"]] if spec.get("sigma_column") else [])
    mtz_path = base / spec["file"]
    mtz = read_mtz(mtz_path, cols)
    data = check_and_map(mtz, spec["column"], box_cell_, sigma_column=spec.get("sigma_column"),
                         d_min=spec.get("d_min"), supercell=spec.get("supercell", (1, 1, 1)),
                         data_path=str(mtz_path))  # fmt: skip
    y, sigma, reduce = np.asarray(data.y, float), data.sigma, data.reduce_index
    if spec.get("shells"):  # fit resolution-shell means: fewer, less noisy residuals (the isotropic signal only)
        from analysis.stats import shell_edges, shell_index

        n_sh = number(spec["shells"], "diffuse target: shells", path, int)
        shells = shell_index(data.inv_d2, shell_edges(data.inv_d2, n_sh))
        counts = np.maximum(np.bincount(shells, minlength=n_sh), 1)
        y = np.bincount(shells, y, minlength=n_sh) / counts
        reduce = shells if reduce is None else shells[reduce]
        sigma = None
    elements, atoms = topology_elements(system, spec.get("element", "Ar"))
    obs = ob.diffuse_scattering(data.hkl_box, box_cell_, elements, atom_indices=atoms, reduce_index=reduce,
                                method=spec.get("method", "fft"), reference=np.asarray(system.positions))  # fmt: skip
    return FitTarget(obs, y, weight=number(spec.get("weight", 1.0), "weight", path), sigma=sigma,
                     objective=objective)  # fmt: skip


def _box_cell_checked(box, path) -> np.ndarray:
    """:func:`box_cell` with a refusal that names the config ``path`` and the fix."""
    try:
        return box_cell(box)
    except UserInputError as exc:
        raise UserInputError(
            f"{path}: a diffuse target needs an orthorhombic box [3] or a reduced triclinic box [3, 3] (nm): {exc}"
        ) from None


def _read_pattern(path: Path, wavelength: float) -> tuple[np.ndarray, np.ndarray]:
    """``(two_theta [G] degrees, intensity [G])`` of a powder CSV whose first column is ``two_theta_deg``."""
    if not path.exists():
        raise UserInputError(f"{path}: powder pattern not found; give a path relative to the config file")
    with open(path) as fh:
        col = fh.readline().strip().split(",")[0].strip().lower()
    try:
        arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise UserInputError(f"{path}: not a numeric CSV with a header line ({exc})") from None
    if col in {"d", "d_a", "d_angstrom", "q", "q_per_a", "q_per_nm"}:
        raise UserInputError(
            f"{path}: the first column is {col!r}, not 2θ; convert it to degrees, 2θ = 2·asin(λ/(2d)) with "
            f"λ = {wavelength} Å (q = 4π sin θ/λ), and name the column two_theta_deg"
        )
    if col not in {"two_theta_deg", "two_theta", "2theta"} or arr.shape[1] < 2:
        raise UserInputError(f"{path}: needs columns two_theta_deg,intensity (header line first); found {col!r}")
    return arr[:, 0], arr[:, 1]


def powder_observable(system, two_theta, wavelength: float, profile=None, element: str = "Ar", where: str = "powder",
                      follow_box: bool = False):  # fmt: skip
    """The frame-averaged profiled powder pattern of the box taken as a P 1 cell, on ``two_theta [G]`` degrees.

    The box may be orthorhombic (``[3]`` nm) or a reduced triclinic ``[3, 3]`` nm box (rows a, b, c: a monoclinic
    molecular crystal). Scattering factors per atom come from the topology's elements (virtual sites scatter
    nothing); ``element`` is for the model systems without a topology. Reflections cover the grid ±2°; ``profile``:
    keyword arguments of :func:`analysis.powder.profile`. ``follow_box`` (constant pressure): each frame is the P 1
    cell of its own box, so peak positions move with the lattice; the reflection list then covers cells ±30% of the
    start box (``powder_hkl`` margin 0.3).
    """
    import jax.numpy as jnp

    from analysis.cell import cell_from_metric
    from analysis.powder import powder_hkl
    from fitting import observables as ob

    if system.box is None:
        raise UserInputError(f"{where}: a powder target needs a periodic box (the crystal's cell or supercell)")
    try:
        cell = box_cell(system.box)
    except UserInputError as exc:
        raise UserInputError(
            f"{where}: a powder target needs an orthorhombic box [3] or a reduced triclinic box [3, 3] (nm): {exc}"
        ) from None
    elements, atoms = topology_elements(system, element)
    tt = np.asarray(two_theta, float)
    hkl, mult = powder_hkl(cell, "P 1", wavelength, (max(tt.min() - 2.0, 0.0), min(tt.max() + 2.0, 180.0)),
                           margin=0.3 if follow_box else 0.0)  # fmt: skip
    start_box = np.asarray(system.box, float)
    rows = 10.0 * (np.diag(start_box) if start_box.ndim == 1 else start_box)  # Å, rows a, b, c
    frac_mat = np.linalg.inv(rows)  # x = frac @ rows, so frac = x @ rows⁻¹

    def scatterers(pos):
        return pos if atoms is None else pos[atoms]

    if follow_box and start_box.ndim == 1:

        def structure_fn(pos, box=None):  # the frame's own orthorhombic box as the P 1 cell
            b = jnp.asarray(start_box if box is None else box, pos.dtype)
            angles = jnp.full((3,), 90.0, pos.dtype)
            return jnp.concatenate([10.0 * b, angles]), scatterers(pos) / b
    elif follow_box:

        def structure_fn(pos, box=None):  # the frame's own reduced triclinic box as the P 1 cell
            r = 10.0 * jnp.asarray(start_box if box is None else box, pos.dtype)
            return cell_from_metric(r @ r.T), (10.0 * scatterers(pos)) @ jnp.linalg.inv(r)
    else:

        def structure_fn(pos):
            return cell, (10.0 * scatterers(pos)) @ frac_mat

    return ob.powder_pattern(structure_fn, hkl, mult, elements, tt, wavelength=wavelength, **dict(profile or {}))


def powder_target(spec: dict, system, base: Path, path: Path, npt: bool = False):
    """A powder-pattern target: ``{observable: powder, file: pattern.csv, wavelength, two_theta: [min, max],
    profile: {U, V, W, eta, shape}, objective: rwp | cc, element, peaks: intensities | positions}``.

    The simulation box (orthorhombic or reduced triclinic) is the P 1 cell of the pattern (its reflections to the 2θ
    range); elements come from the topology (``element:``, default Ar, only for model systems). Lattice parameters
    follow θ only at constant pressure: under NVT the box and so every peak position is fixed, and
    ``peaks: positions`` (a lattice-constant target, e.g. σ) is refused; only intensities (ε through their fall-off
    with 2θ) follow θ. Under NPT (``npt``: simulation.pressure set) each frame's pattern is computed in its own box,
    so peak positions follow θ (default ``peaks: positions``)."""
    bad = set(spec) - {"observable", "file", "wavelength", "two_theta", "profile", "objective", "element", "weight",
                       "peaks"}  # fmt: skip
    if bad:
        raise UserInputError(f"{path}: powder target has unknown keys {sorted(bad)}")
    peaks = spec.get("peaks", "positions" if npt else "intensities")
    if peaks not in ("positions", "intensities"):
        raise UserInputError(f"{path}: powder peaks: {peaks!r}: use positions (NPT) or intensities")
    if peaks == "positions" and not npt:
        raise UserInputError(
            f"{path}: a powder peak-position target needs constant-pressure (NPT) sampling: lattice parameters "
            "follow θ only under NPT; under NVT the box, and with it every lattice parameter and peak position, is "
            "fixed, so positions cannot follow θ. Set simulation: {pressure: BAR} (and barostat, barostat_every), "
            "or fit intensities (peaks: intensities) under NVT"
        )
    objective = spec.get("objective", "rwp")
    if objective not in ("rwp", "cc", "absolute"):
        raise UserInputError(
            f"{path}: powder objective {objective!r}: use rwp, cc or absolute (wasserstein has no least-squares "
            "form; it stays a diagnostic, analysis.powder.wasserstein_distance)"
        )
    if "file" not in spec or "wavelength" not in spec:
        raise UserInputError(f"{path}: a powder target needs file: (CSV two_theta_deg,intensity) and wavelength: Å")
    lam = number(spec["wavelength"], "powder target: wavelength", path)
    if getattr(system, "topology", None) is not None and "element" in spec:
        raise UserInputError(
            f"{path}: powder element: is for model systems without a topology; this system's elements come from "
            "its topology (remove element:)"
        )
    tt, y = _read_pattern(base / spec["file"], lam)
    lo, hi = spec.get("two_theta", [float(tt.min()), float(tt.max())])
    keep = (tt >= lo) & (tt <= hi)
    if keep.sum() < 10:
        raise UserInputError(f"{path}: fewer than 10 pattern points inside two_theta [{lo}, {hi}]")
    obs = powder_observable(system, tt[keep], lam, spec.get("profile"), spec.get("element", "Ar"), where=str(path),
                            follow_box=npt)  # fmt: skip
    return FitTarget(obs, y[keep], weight=number(spec.get("weight", 1.0), "weight", path), objective=objective)
