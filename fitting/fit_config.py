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
``start_scan: {points: 5, step: 0.1}`` measures the round loss at θ₀ · e^(k · step), k = −2..2, before round 0 and
starts the rounds at the lowest (``pick: parabola``: the vertex through it and its neighbours; 1 or 2 fitted
parameters; :mod:`fitting.start_scan`). ``loss_surface: 3`` reports the vertex of a parabola fitted to the scan's
and rounds' losses within 3 × the lowest instead of the iterates (one parameter; :mod:`fitting.loss_surface`);
``start_scan: {..., design: 5, design_step: 0.06, repeats: 2}`` adds designed points about the scan's vertex and
``loss_surface: {log: true, window: 0.2, robust: true}`` fits a robust ln-loss parabola near it (the peptide example).

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

from dmd.base.config import check_keys, load_config, number
from dmd.base.errors import UserInputError
from fitting.fit_targets import diffuse_target, powder_target
from fitting.forcefield import FitConfig, FitParam, FitState, FitTarget
from fitting.loss_surface import check_factor as check_loss_surface
from fitting.start_scan import StartScan

__all__ = [
    "build_system",
    "load_fit_config",
    "read_target_csv",
    "fcc_positions",
]

_SIM_KEYS = {"steps", "equilibration", "report_every", "dt", "temperature", "friction", "integrator", "seed",
             "pressure", "barostat", "barostat_every", "restart"}  # fmt: skip
_DENSITY_UNITS = {"g_cm3": "g_cm3", "g/cm3": "g_cm3", "number": "number_nm3", "number_nm3": "number_nm3"}
_TOP_KEYS = {"system", "parameters", "targets", "estimator", "optimizer", "rounds", "simulation", "average_last",
             "decay_after", "sensitivity_method", "window", "neff_fraction", "max_reuse", "states",
             "replicas", "replica_gradient", "loss_guard", "start_scan",
             "loss_surface"}  # fmt: skip
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
    sim_temp = sim.get("temperature", FitConfig.temperature)
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
        temp = number(st.get("temperature"), f"{where}.temperature", path)
        st_targets = _targets(st["targets"], st_system, base, path, f" of state {name!r}",
                              sim_temp if temp is None else temp, npt)  # fmt: skip
        states.append(FitState(st_system, tuple(st_targets), temp, name))
    opt = raw.get("optimizer", {})
    opt = {"name": opt} if isinstance(opt, str) else dict(opt)

    def num(where, key, default, kind=float):  # a number, or an error naming the key and the file
        return number(where.get(key, default), key if where is raw else f"optimizer.{key}", path, kind)

    cfg = FitConfig(
        rounds=num(raw, "rounds", 20, int),
        estimator=raw.get("estimator", "fluctuation"),
        optimizer=opt.get("name", "lm"),
        learning_rate=num(opt, "learning_rate", 1.0),
        max_step=num(opt, "max_step", 0.2),
        damping=num(opt, "damping", 1e-3),
        average_last=num(raw, "average_last", 0, int),
        decay_after=num(raw, "decay_after", None, int),
        sensitivity_method=raw.get("sensitivity_method", "tangent"),
        window=raw.get("window"),
        neff_fraction=num(raw, "neff_fraction", 0.9),
        max_reuse=num(raw, "max_reuse", 5, int),
        replicas=raw.get("replicas", 1),  # checked by fit (a positive whole number)
        replica_gradient=str(raw.get("replica_gradient", "pooled")),  # checked by fit
        loss_guard=num(raw, "loss_guard", None),
        start_scan=StartScan.from_spec(raw.get("start_scan"), path),
        loss_surface=surface
        if isinstance(surface := raw.get("loss_surface"), dict)
        else num(raw, "loss_surface", None),
        out=out,
        resume=resume,
    )
    cfg = dataclasses.replace(cfg, **sim)
    check_loss_surface(cfg.loss_surface, len(raw.get("parameters") or []), str(path))  # named, before any work
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
    for key in {"steps", "equilibration", "report_every", "seed", "dt", "temperature", "friction"} & set(sim):
        kind = float if key in ("dt", "temperature", "friction") else int
        sim[key] = number(sim[key], f"simulation.{key}", path, kind)
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
            data = np.array([number(t["value"], f"target {t.get('observable')!r}{where}: value", path)])
        elif "file" not in t:
            raise UserInputError(
                f"{path}: target {t.get('observable')!r}{where} needs file: (CSV of axis,value) or value: (a number)"
            )
        else:
            data = read_target_csv(base / t["file"], obs)
        targets.append(FitTarget(obs, data, weight=number(t.get("weight", 1.0), "weight", path), sigma=t.get("sigma")))
    for tg in targets if npt else []:
        if not tg.observable.follows_box:
            raise UserInputError(
                f"{path}: target {tg.observable.name!r}{where} is built on the start box (a fixed lattice or density) "
                "and cannot follow the box under simulation.pressure; fit it at constant volume (no pressure:) or "
                "use rdf, density or powder targets under pressure"
            )
    return targets
