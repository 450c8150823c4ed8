"""The ``dmd fit`` YAML config: system, parameters, targets, estimator, optimizer, rounds.

Example (``examples/fit/lj_rdf.yaml``)::

    system:
      model: lj_fluid            # or: pdb: protein.pdb + forcefield: [amber14-all.xml] + nonbonded: NoCutoff
      n_atoms: 512
      density: 0.4096            # reduced by the start σ: the target's box
      cutoff: 0.75               # nm, absolute
      sigma: 0.272               # start values (nm, kJ/mol)
      epsilon: 1.195
    parameters:
      - {name: lj/epsilon/A, lower: 0}
      - {name: lj/sigma/A, lower: 0}
    targets:
      - {observable: rdf, file: target_rdf.csv, r_max: 0.9, n_bins: 30, weight: 1.0}
    states:                      # further state points (optional), see below
      - name: low_density
        system: {density: 0.2048}
        targets: [{observable: rdf, file: target_rdf_low.csv, r_max: 0.9, n_bins: 30}]
    estimator: fluctuation       # fluctuation | pathwise | reweighting
    optimizer: {name: lm, learning_rate: 1.0, max_step: 0.2}
    rounds: 10
    decay_after: 4             # Robbins-Monro: from round 4 the iterate is the running mean of the round estimates
    simulation: {steps: 4000, equilibration: 500, report_every: 40, dt: 0.02, temperature: 240, friction: 2.0}

Several state points: the ``states:`` list adds further states, simulated every round with the same parameters;
each entry has ``targets:`` and optionally ``name:``, ``temperature:`` (K, default the simulation's) and ``system:``
(keys that override the main system's, as the other density above). ``average_last: n`` (instead of
``decay_after``) reports the mean θ of the last n rounds with its standard error (docs/fitting.md).

Target files are CSV with a header; the first column is the observable's axis (``r_nm`` for rdf, ``q_per_nm`` for
structure_factor, ``harmonic_n`` for dihedral_cosines, ``index`` otherwise) and the second the values. Paths are
relative to the config file.

Diffraction targets (docs/fitting.md): ``{observable: diffuse, file: data.mtz, column, d_min, supercell, objective,
shells}`` (MTZ checked against the box as ``dmd reweight`` does) and ``{observable: powder, file: pattern.csv,
wavelength, two_theta: [min, max], profile: {...}, objective: rwp | cc | absolute}``; an FCC crystal system is
``model: lj_fluid`` with ``fcc_cells: n`` (examples/fit_diffraction/).

Constant pressure (docs/fitting.md, "Constant pressure (NPT) fits"): ``simulation: {pressure: BAR, barostat:
isotropic | anisotropic | flexible, barostat_every: N}`` samples every state NPT; then ``{observable: density,
value: 1.40, units: g_cm3 | number}`` targets and powder ``peaks: positions`` (refused under NVT) follow θ.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from dmd.base.config import check_keys, load_config
from dmd.base.errors import UserInputError
from fitting.forcefield import FitConfig, FitParam, FitState, FitTarget

__all__ = [
    "build_system",
    "load_fit_config",
    "read_target_csv",
    "fcc_positions",
    "diffuse_target",
    "powder_target",
    "powder_observable",
    "box_cell",
    "topology_elements",
]

_SIM_KEYS = {"steps", "equilibration", "report_every", "dt", "temperature", "friction", "integrator", "seed",
             "pressure", "barostat", "barostat_every", "restart"}  # fmt: skip
_DENSITY_UNITS = {"g_cm3": "g_cm3", "g/cm3": "g_cm3", "number": "number_nm3", "number_nm3": "number_nm3"}
_TOP_KEYS = {"system", "parameters", "targets", "estimator", "optimizer", "rounds", "simulation", "average_last",
             "decay_after", "sensitivity_method", "window", "neff_fraction", "max_reuse", "states",
             "replicas", "replica_gradient", "loss_guard"}  # fmt: skip
_STATE_KEYS = {"name", "system", "targets", "temperature"}


def read_target_csv(path: Path, observable) -> np.ndarray:
    """Read a target file and check it against the observable's axis (name, units, grid)."""
    if not path.exists():
        raise UserInputError(f"{path}: target file not found; give a path relative to the config file")
    try:
        with open(path) as fh:
            header = fh.readline().strip().split(",")
        arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise UserInputError(f"{path}: not a numeric CSV with a header line ({exc})") from None
    if arr.shape[1] < 2:
        raise UserInputError(f"{path}: needs two columns ({observable.axis_name}, value); found {arr.shape[1]}")
    axis_col = header[0].strip()
    axis = np.asarray(observable.axis, float)
    if observable.axis_name == "r_nm" and (
        axis_col.lower() in {"r_a", "r_angstrom"} or arr[:, 0].max() > 5 * axis.max()
    ):
        raise UserInputError(
            f"{path}: the r column ({axis_col!r}, up to {arr[:, 0].max():g}) looks like Å; the rdf axis is in nm "
            f"(up to {axis.max():g}): divide r by 10 and name the column r_nm"
        )
    if axis_col != observable.axis_name:
        raise UserInputError(
            f"{path}: first column is {axis_col!r} but observable {observable.name!r} is on {observable.axis_name!r}; "
            f"write the target on that axis (units in the name)"
        )
    if arr.shape[0] != axis.size or not np.allclose(arr[:, 0], axis, rtol=1e-4, atol=1e-9):
        raise UserInputError(
            f"{path}: {arr.shape[0]} rows on {axis_col} from {arr[0, 0]:g} to {arr[-1, 0]:g}, but observable "
            f"{observable.name!r} has {axis.size} points from {axis[0]:g} to {axis[-1]:g}; resample the target "
            "onto the observable's grid (or change r_max / n_bins / q in the config)"
        )
    if not np.all(np.isfinite(arr[:, 1])):
        raise UserInputError(f"{path}: the target values contain NaN/inf")
    return arr[:, 1]


def fcc_positions(cells: int, box) -> np.ndarray:
    """Perfect FCC lattice of ``cells``³ conventional cells (4 atoms each) filling the cubic ``box [3]`` nm.

    Returns ``[4 cells³, 3]`` nm.
    """
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    frac = ((grid + basis[None]) / cells).reshape(-1, 3)
    return frac * np.asarray(box, float)[None, :]


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

        n_sh = int(spec["shells"])
        shells = shell_index(data.inv_d2, shell_edges(data.inv_d2, n_sh))
        counts = np.maximum(np.bincount(shells, minlength=n_sh), 1)
        y = np.bincount(shells, y, minlength=n_sh) / counts
        reduce = shells if reduce is None else shells[reduce]
        sigma = None
    elements, atoms = topology_elements(system, spec.get("element", "Ar"))
    obs = ob.diffuse_scattering(data.hkl_box, box_cell_, elements, atom_indices=atoms, reduce_index=reduce,
                                method=spec.get("method", "fft"), reference=np.asarray(system.positions))  # fmt: skip
    return FitTarget(obs, y, weight=float(spec.get("weight", 1.0)), sigma=sigma,
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
    lam = float(spec["wavelength"])
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
    return FitTarget(obs, y[keep], weight=float(spec.get("weight", 1.0)), objective=objective)


def _crystal_positions(spec, base: Path):
    """``crystal: {file, supercell}`` → P 1 supercell positions ``[N, 3]`` nm and the cubic box edge (nm), built
    with :func:`dmd.crystal.build_crystal` from the CIF/PDB ``file`` (relative to the config)."""
    from dmd.crystal import build_crystal, read_asymmetric_unit

    if not isinstance(spec, dict) or "file" not in spec:
        raise UserInputError("system.crystal: give {file: structure.cif, supercell: [A, B, C]}")
    bad = set(spec) - {"file", "supercell"}
    if bad:
        raise UserInputError(f"system.crystal: unknown keys {sorted(bad)} (use file, supercell)")
    sc = spec.get("supercell", [1, 1, 1])
    sc = [int(sc)] * 3 if np.isscalar(sc) else [int(v) for v in sc]
    path = base / spec["file"]
    if not path.exists():
        raise UserInputError(f"system.crystal: {path} not found (file is relative to the config)")
    cr = build_crystal(read_asymmetric_unit(str(path)), tuple(sc))
    box = np.asarray(cr.box, float) / 10.0
    edge = float(box[0, 0])
    if np.abs(box - edge * np.eye(3)).max() > 1e-6 * edge:
        raise UserInputError(
            f"system.crystal: {path} with supercell {sc} gives a non-cubic box; lj_fluid systems need a cubic box "
            "(choose a supercell making a = b = c, 90° angles)"
        )
    return np.mod(np.asarray(cr.positions, float) / 10.0, edge), edge


def build_system(spec: dict, base: Path):
    import jax.numpy as jnp

    spec = dict(spec)
    if "model" in spec:
        from dmd import models

        name = spec.pop("model")
        factories = {"lj_fluid": models.lj_fluid, "harmonic_chain": models.harmonic_chain,
                     "harmonic_oscillator": models.harmonic_oscillator}  # fmt: skip
        if name not in factories:
            raise UserInputError(f"system.model {name!r}: use one of {', '.join(factories)}")
        dtype = {"float32": jnp.float32, "float64": jnp.float64}[spec.pop("dtype", "float32")]
        all_pairs = spec.pop("neighbor_list", True) is False  # small systems: all pairs, no list to rebuild
        cells = spec.pop("fcc_cells", None)
        if cells is not None:  # an FCC crystal of cells³ conventional cells (4 atoms each), at the given density
            spec["n_atoms"] = 4 * int(cells) ** 3
        xtal = None
        if "crystal" in spec:
            if name != "lj_fluid":
                raise UserInputError("system.crystal: a crystal is available with model: lj_fluid (one atom type)")
            xtal, edge = _crystal_positions(spec.pop("crystal"), base)
            spec["n_atoms"] = len(xtal)  # reduced density n σ³ / V: lj_fluid's cube is then the supercell
            spec["density"] = len(xtal) * float(spec.get("sigma", models.ARGON["sigma"])) ** 3 / edge**3
        try:
            system = factories[name](dtype=dtype, **spec)
        except TypeError as exc:
            raise UserInputError(f"system: {exc}") from None
        if xtal is not None:
            system = dataclasses.replace(system, positions=jnp.asarray(xtal, dtype))
        if cells is not None:
            system = dataclasses.replace(system, positions=jnp.asarray(fcc_positions(int(cells), system.box), dtype))
        if all_pairs:  # every pair by minimum image (cutoff < half the box); NPT then never recompiles for a list
            system = dataclasses.replace(system, neighbor_fn=None)
        return system
    if "pdb" in spec:
        from dmd.openmm_system import system_from_pdb

        pdb = base / spec.pop("pdb")
        ff = spec.pop("forcefield", None)
        if not ff:
            raise UserInputError("system: a pdb system needs forcefield: [file.xml, ...]")
        return system_from_pdb(str(pdb), forcefield=list(ff), **spec)
    raise UserInputError("system: give either model: lj_fluid|harmonic_chain|harmonic_oscillator or pdb: + forcefield:")


def _observable(spec: dict, system, temperature: float = 300.0):
    from fitting import observables as ob

    spec = dict(spec)
    kind = spec.pop("observable", None)
    for k in ("file", "weight", "sigma", "value"):
        spec.pop(k, None)
    box = None if system.box is None else np.asarray(system.box, float)
    if kind == "rdf":
        return ob.rdf(system.n_atoms, box, **spec)
    if kind == "structure_factor":
        return ob.structure_factor(system.n_atoms, box, **spec)
    if kind == "mean_energy":
        return ob.mean_energy(system, **spec)
    if kind == "density":
        units = str(spec.pop("units", "g_cm3"))
        if units not in _DENSITY_UNITS or spec.keys() - {"value"}:
            raise UserInputError(
                f"density target: units {units!r}, keys {sorted(spec)}: give {{observable: density, value: 1.40, "
                "units: g_cm3 | number}} (g/cm³ or atoms per nm³) or file: instead of value:"
            )
        return ob.density(system, units=_DENSITY_UNITS[units])
    if kind == "pressure":
        if "temperature" not in spec:
            spec["temperature"] = temperature
        return ob.pressure(system, **spec)
    if kind == "dihedral_cosines":
        return ob.dihedral_cosines(**spec)
    raise UserInputError(
        f"target observable {kind!r}: use rdf, structure_factor, mean_energy, pressure, density or dihedral_cosines "
        "(diffuse: an MTZ target, see docs/fitting.md; powder targets and custom JAX functions are available from "
        "Python: fitting.observables)"
    )


def load_fit_config(path, out=None, resume: bool = False):
    """Parse a ``dmd fit`` config. Returns (system, [FitParam], [FitTarget], FitConfig, [FitState])."""
    path = Path(path)
    raw = load_config(path)
    check_keys(raw, _TOP_KEYS, where=str(path))
    for key in ("system", "parameters", "targets"):
        if key not in raw:
            raise UserInputError(f"{path}: missing '{key}:' section (see examples/fit/lj_rdf.yaml)")
    base = path.parent
    sim = _simulation_settings(raw.get("simulation"), path)
    npt = sim.get("pressure") is not None
    system = build_system(raw["system"], base)
    params = []
    for p in raw["parameters"]:
        names = p.get("tie") or [p["name"]]
        params.append(FitParam(tuple(names), name=p.get("name"), lower=p.get("lower"), upper=p.get("upper"),
                               transform=p.get("transform", "auto"), truth=p.get("truth")))  # fmt: skip
    system = _with_starts(system, raw["parameters"], path)
    sim_temp = float((raw.get("simulation") or {}).get("temperature", FitConfig.temperature))
    targets = _targets(raw["targets"], system, base, path, "", sim_temp, npt)
    states = []
    extra = raw.get("states") or []
    if not isinstance(extra, list):
        raise UserInputError(f"{path}: 'states:' must be a list of state points (name, system, targets, temperature)")
    for i, st in enumerate(extra):
        where = f"states[{i}]"
        if not isinstance(st, dict) or "targets" not in st:
            raise UserInputError(f"{path}: {where} needs targets: (and optionally name, system, temperature)")
        bad = set(st) - _STATE_KEYS
        if bad:
            raise UserInputError(f"{path}: {where} has unknown keys {sorted(bad)}; valid: {sorted(_STATE_KEYS)}")
        spec = dict(raw["system"], **(st.get("system") or {}))
        st_system = _with_starts(build_system(spec, base), raw["parameters"], path)
        name = st.get("name") or f"state{i + 1}"
        temp = st.get("temperature")
        st_targets = _targets(st["targets"], st_system, base, path, f" of state {name!r}",
                              sim_temp if temp is None else float(temp), npt)  # fmt: skip
        states.append(FitState(st_system, tuple(st_targets), None if temp is None else float(temp), name))
    opt = raw.get("optimizer", {})
    opt = {"name": opt} if isinstance(opt, str) else dict(opt)
    cfg = FitConfig(
        rounds=int(raw.get("rounds", 20)),
        estimator=raw.get("estimator", "fluctuation"),
        optimizer=opt.get("name", "lm"),
        learning_rate=float(opt.get("learning_rate", 1.0)),
        max_step=float(opt.get("max_step", 0.2)),
        damping=float(opt.get("damping", 1e-3)),
        average_last=int(raw.get("average_last", 0)),
        decay_after=None if raw.get("decay_after") is None else int(raw["decay_after"]),
        sensitivity_method=raw.get("sensitivity_method", "tangent"),
        window=raw.get("window"),
        neff_fraction=float(raw.get("neff_fraction", 0.9)),
        max_reuse=int(raw.get("max_reuse", 5)),
        replicas=raw.get("replicas", 1),  # checked by fit (a positive whole number)
        replica_gradient=str(raw.get("replica_gradient", "pooled")),  # checked by fit
        loss_guard=None if raw.get("loss_guard") is None else float(raw["loss_guard"]),
        out=out,
        resume=resume,
    )
    cfg = dataclasses.replace(cfg, **sim)
    if npt:
        from fitting.forcefield_sampling import check_npt_settings

        check_npt_settings(system, cfg, f"{path}: ")
        for st in states:
            check_npt_settings(st.system, cfg, f"{path}: state {st.name!r}: ")
    return system, params, targets, cfg, states


def _with_starts(system, raw_params, path: Path):
    """The system with each parameter's θ entries set to its ``start:`` value, if given (the start of a force-field
    system's fit, whose θ otherwise comes from its XML files)."""
    import jax.numpy as jnp

    from dmd.params import select

    for p in raw_params:
        start = p.get("start")
        if start is None:
            continue
        names = p.get("tie") or [p["name"]]
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not np.isfinite(start):
            raise UserInputError(f"{path}: parameter {names[0]!r}: start: {start!r} is not a number")
        try:
            sel = select(system.param_labels, list(names))
        except KeyError as exc:
            raise UserInputError(f"{path}: parameter {names[0]!r}: {exc.args[0]}") from None
        system = dataclasses.replace(system, params=sel.set(system.params, jnp.full((sel.size,), float(start))))
    return system


def _simulation_settings(sim, path: Path) -> dict:
    """The ``simulation:`` section, checked up front (keys, and the types of the constant-pressure keys)."""
    sim = dict(sim or {})
    bad = set(sim) - _SIM_KEYS
    if bad:
        raise UserInputError(f"{path}: unknown simulation keys {sorted(bad)}; valid: {sorted(_SIM_KEYS)}")
    npt_keys = {"barostat", "barostat_every"} & set(sim)
    if npt_keys and sim.get("pressure") is None:
        raise UserInputError(
            f"{path}: simulation.{sorted(npt_keys)[0]} is set but pressure is not; add pressure: BAR (constant "
            "pressure) or remove the barostat keys (constant volume)"
        )
    if sim.get("pressure") is not None:
        p = sim["pressure"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (np.isfinite(p) and p > 0):
            raise UserInputError(f"{path}: simulation.pressure {p!r}: give a positive number in bar (e.g. 1.0)")
        sim["pressure"] = float(p)
        every = sim.get("barostat_every", 25)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserInputError(f"{path}: simulation.barostat_every {every!r}: give a positive number of steps")
        if not isinstance(sim.get("barostat", "isotropic"), str):
            raise UserInputError(f"{path}: simulation.barostat: give isotropic, anisotropic or flexible")
    return sim


def _targets(specs, system, base: Path, path: Path, where: str, temperature: float, npt: bool = False) -> list:
    targets = []
    for t in specs:
        if t.get("observable") == "diffuse":
            targets.append(diffuse_target(t, system, base, path))
            continue
        if t.get("observable") == "powder":
            targets.append(powder_target(t, system, base, path, npt))
            continue
        obs = _observable(t, system, temperature)
        if "value" in t:  # a scalar target given inline (density, pressure, mean energy)
            if "file" in t or np.size(obs.axis) != 1:
                raise UserInputError(
                    f"{path}: target {t.get('observable')!r}{where}: value: is for one-number targets without file:"
                )
            data = np.array([float(t["value"])])
        elif "file" not in t:
            raise UserInputError(
                f"{path}: target {t.get('observable')!r}{where} needs file: (CSV of axis,value) or value: (a number)"
            )
        else:
            data = read_target_csv(base / t["file"], obs)
        targets.append(FitTarget(obs, data, weight=float(t.get("weight", 1.0)), sigma=t.get("sigma")))
    for tg in targets if npt else []:
        if not tg.observable.follows_box:
            raise UserInputError(
                f"{path}: target {tg.observable.name!r}{where} is built on the start box (a fixed lattice or density) "
                "and cannot follow the box under simulation.pressure; fit it at constant volume (no pressure:) or "
                "use rdf, density or powder targets under pressure"
            )
    return targets
