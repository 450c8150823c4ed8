"""``dmd xrd-refine``: refine a starting structure against a powder pattern.

    dmd xrd-refine PATTERN.csv --start STRUCTURE.cif [--constraint p1|family|spacegroup] [--energy-weight W]
                   [--metric cosine] [--smooth 1.0] [--steps 400] [--starts 4] --out DIR

PATTERN.csv: two columns, 2θ (degrees) and intensity (comma, semicolon or whitespace separated; ``#`` comments
and header lines before the first numeric row are skipped). A non-uniform grid is resampled to
its median step. Writes into DIR: ``refined.cif`` (space-group CIF for ``spacegroup``, P1 otherwise),
``pattern.png`` (observed vs fitted, difference, loss history), ``fitted_pattern.csv`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import os

from dmd.base.errors import UserInputError
from dmd.cli.common import add_overwrite_argument, check_input, check_outputs, emit, info

OUTPUTS = ("refined.cif", "pattern.png", "fitted_pattern.csv", "summary.json")


HELP = "refine a structure against a powder XRD pattern (symmetry constraints, energy guidance)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd xrd-refine`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("pattern", help="observed pattern CSV: 2θ (degrees), intensity")
    p.add_argument("--start", required=True, help="starting structure (.cif small-molecule CIF, or .pdb)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--constraint", choices=("p1", "family", "spacegroup"), default="spacegroup",
                   help="free parameters: all P1 coordinates, the family's cell, or the space group's")  # fmt: skip
    p.add_argument("--family", default=None, help="crystal family for --constraint family (default: from the CIF)")
    p.add_argument("--energy-weight", type=float, default=0.0, help="weight of the contact energy (per eV/atom)")
    p.add_argument("--metric", choices=("cosine", "pearson", "rwp", "wasserstein"), default="cosine",
                   help="pattern agreement minimized")  # fmt: skip
    p.add_argument("--smooth", type=float, default=1.0, help="initial smoothing σ (degrees 2θ), annealed; 0 = off")
    p.add_argument("--steps", type=int, default=400, help="Adam steps per start")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (internal units, see xrd_params)")
    p.add_argument("--starts", type=int, default=4, help="number of starts (start 0 = the given structure)")
    p.add_argument("--jitter", type=float, nargs=2, default=(0.02, 0.1), metavar=("STRAIN", "DISP_A"),
                   help="perturbation of the extra starts: lattice strain and displacement (Å)")  # fmt: skip
    p.add_argument("--wavelength", default="CuKa1", help="Å or an anode name (CuKa1, CuKa, MoKa, ...)")
    p.add_argument("--caglioti", type=float, nargs=3, default=(0.0, 0.0, 0.0225), metavar=("U", "V", "W"),
                   help="peak width model FWHM² = U tan²θ + V tanθ + W (deg²)")  # fmt: skip
    p.add_argument("--eta", type=float, default=0.5, help="pseudo-Voigt Lorentz fraction")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the extra starts' perturbations")
    add_overwrite_argument(p, "the files of an earlier run in --out")


def read_pattern_csv(path):
    """(two_theta [G] uniform, intensity [G]) from a two-column text file; raises UserInputError."""
    import re

    import numpy as np

    if not os.path.exists(path):
        raise UserInputError(f"{path}: no such pattern file; check the path")
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [x for x in re.split(r"[,;\s]+", line) if x]
            try:
                rows.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError) as exc:
                if not rows:
                    continue  # header lines before the data
                raise UserInputError(f"{path}: cannot read line {line!r}; need two numbers: 2θ, intensity") from exc
    if len(rows) < 16:
        raise UserInputError(f"{path}: {len(rows)} data rows; need at least 16 (2θ in degrees, intensity)")
    data = np.array(rows)
    if not np.all(np.isfinite(data)):
        raise UserInputError(f"{path}: NaN or inf values; remove those rows")
    data = data[np.argsort(data[:, 0], kind="stable")]
    tt, y = data[:, 0], data[:, 1]
    if np.any(np.diff(tt) <= 0):
        raise UserInputError(f"{path}: repeated 2θ values; give one intensity per angle")
    if tt[0] <= 0 or tt[-1] >= 180:
        raise UserInputError(f"{path}: 2θ must lie in (0, 180) degrees; is the first column 2θ in degrees?")
    if y.max() <= 0:
        raise UserInputError(f"{path}: no positive intensity; the second column must hold counts")
    step = float(np.median(np.diff(tt)))
    grid = np.arange(tt[0], tt[-1] + step / 2, step)
    if len(grid) != len(tt) or np.max(np.abs(grid - tt)) > 1e-3 * step:
        y = np.interp(grid, tt, y)
    return grid, np.maximum(y, 0.0)


def cif_text(name, cell, spacegroup, labels, elements, pos_frac, ops=None, comment=""):
    lines = [f"# {comment}" if comment else "# written by dmd xrd-refine", f"data_{name}"]
    for key, v in zip(("a", "b", "c", "alpha", "beta", "gamma"), cell, strict=True):
        tag = f"_cell_length_{key}" if key in "abc" else f"_cell_angle_{key}"
        lines.append(f"{tag} {float(v):.6f}")
    lines.append(f"_symmetry_space_group_name_H-M '{spacegroup}'")
    if ops:
        lines += ["loop_", "_symmetry_equiv_pos_as_xyz"] + [f"'{o}'" for o in ops]
    lines += ["loop_", "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y",
              "_atom_site_fract_z", "_atom_site_occupancy"]  # fmt: skip
    for lab, el, x in zip(labels, elements, pos_frac, strict=True):
        lines.append(f"{lab} {el} {x[0]:.6f} {x[1]:.6f} {x[2]:.6f} 1.0")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    """Run ``dmd xrd-refine`` (module docstring).

    Over 100 lines: a linear pipeline (checks, read, multi-start refinement, outputs, summary) over one set of
    options and paths; each step is a call into :mod:`fitting.xrd_refine`, the rest is option mapping.
    """
    if args.steps < 1 or args.starts < 1:
        raise UserInputError("--steps and --starts must be ≥ 1")
    if args.energy_weight < 0 or args.smooth < 0:
        raise UserInputError("--energy-weight and --smooth must be ≥ 0")
    check_input(args.pattern, "", "pattern CSV")
    check_input(args.start, "--start", "structure")
    inputs = [args.pattern, args.start]
    check_outputs(args.out, inputs=inputs, overwrite=args.overwrite, folder=True, writes=OUTPUTS)

    import time

    import gemmi
    import jax
    import numpy as np

    from analysis import powder
    from analysis.structure_io import read_structure
    from dmd.base.io import atomic_path, write_json
    from fitting import xrd_params as xp
    from fitting.xrd_energy import make_energy_model
    from fitting.xrd_refine import RefineConfig, refine

    try:
        lam = powder.wavelength_of(args.wavelength)
    except ValueError as exc:
        raise UserInputError(f"--wavelength: {exc}") from exc
    grid, y_obs = read_pattern_csv(args.pattern)
    xs = read_structure(args.start)
    if np.any(np.abs(np.asarray(xs.occ) - 1) > 1e-6):
        raise UserInputError(f"{args.start}: partial occupancies are not supported; give fully occupied sites")
    try:
        sg_param = xp.SpaceGroupParam(xs.spacegroup, tuple(xs.elements), np.asarray(xs.pos_frac))
    except ValueError as exc:
        raise UserInputError(f"{args.start}: {exc}") from exc
    cell0 = np.asarray(xs.cell, float)
    _, pos0 = sg_param.crystal(sg_param.init(cell0))
    pos0 = np.asarray(pos0, float)
    elements = sg_param.elements
    b_iso = np.asarray(xs.b_iso, float)[sg_param._atom_site]

    if args.constraint == "spacegroup":
        param, sg_hkl = sg_param, xs.spacegroup
    elif args.constraint == "family":
        fam = args.family or xp.family_of_spacegroup(xs.spacegroup)
        if fam not in xp.FAMILIES:
            raise UserInputError(f"--family {fam!r}: use one of {', '.join(xp.FAMILIES)}")
        param, sg_hkl = xp.FamilyParam(elements, crystal_family=fam), "P 1"
    else:
        param, sg_hkl = xp.P1Param(elements), "P 1"

    from fitting.xrd_refine import make_pattern_model

    try:
        pm = make_pattern_model(elements, cell0, grid, spacegroup=sg_hkl, wavelength=lam, U=args.caglioti[0],
                                V=args.caglioti[1], W=args.caglioti[2], eta=args.eta, b_iso=b_iso)  # fmt: skip
    except ValueError as exc:
        raise UserInputError(f"{args.pattern}: {exc}") from exc
    energy = make_energy_model(elements, cell0) if args.energy_weight > 0 else None

    rng = np.random.default_rng(args.seed)
    starts = [param.init(cell0, pos0)]
    for _ in range(args.starts - 1):
        c, p = xp.perturb_structure(rng, cell0, pos0, strain=args.jitter[0], displacement=args.jitter[1])
        starts.append(param.init(c, p))
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    starts = [jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), s) for s in starts]
    config = RefineConfig(metric=args.metric, steps=args.steps, learning_rate=args.lr, smooth_start=args.smooth,
                          energy_weight=args.energy_weight)  # fmt: skip
    info(f"xrd-refine: {len(elements)} atoms, constraint {args.constraint} ({param.n_free()} parameters), "
          f"{len(pm.hkl)} reflections, {len(grid)} points, {args.starts} starts × {args.steps} steps")  # fmt: skip
    t0 = time.perf_counter()
    res = refine(param, starts, pm, y_obs, config, energy)
    wall = time.perf_counter() - t0
    b = res.best
    cell_f, pos_f = res.cell[b], res.pos_frac[b]
    if not (np.all(np.isfinite(cell_f)) and np.all(np.isfinite(pos_f))):
        raise UserInputError("refinement diverged (NaN); lower --lr or give a closer --start structure")
    y_obs_n = y_obs / y_obs.sum()
    y_start = np.asarray(pm(*param.crystal(starts[0])))
    y_fit = np.asarray(pm(cell_f.astype(dtype), pos_f.astype(dtype)))
    metrics = {}
    for name, yc in (("start", y_start), ("refined", y_fit)):
        metrics[name] = {
            "cosine": float(powder.cosine_similarity(y_obs_n, yc)),
            "pearson": float(powder.pearson_similarity(y_obs_n, yc)),
            "rwp": float(powder.rwp(y_obs_n, yc, None, grid)),
            "wasserstein_deg": float(powder.wasserstein_distance(y_obs_n, yc, grid)),
        }

    out = args.out
    os.makedirs(out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.start))[0]
    if args.constraint == "spacegroup":
        asu = param.asymmetric_unit(jax.tree_util.tree_map(lambda x: np.asarray(x)[b], res.params))
        group = gemmi.SpaceGroup(xs.spacegroup)
        ops = [op.triplet() for op in group.operations()]
        labels = [f"{el}{i + 1}" for i, el in enumerate(xs.elements)]
        text = cif_text(stem, cell_f, xs.spacegroup, labels, xs.elements, asu, ops, "refined by dmd xrd-refine")
    else:
        labels = [f"{el}{i + 1}" for i, el in enumerate(elements)]
        text = cif_text(stem, cell_f, "P 1", labels, elements, np.mod(pos_f, 1.0), ["x,y,z"], "refined (P1)")
    with atomic_path(os.path.join(out, "refined.cif"), inputs) as tmp:
        tmp.write_text(text)
    # least-squares scale of the fit onto the observed counts, for the plot and the CSV
    scale = float(y_obs_n @ y_fit / max(float(y_fit @ y_fit), 1e-300))
    y_fit_scaled, y_start_scaled = y_fit * scale, y_start * float(y_obs_n @ y_start / max(y_start @ y_start, 1e-300))
    with atomic_path(os.path.join(out, "fitted_pattern.csv"), inputs) as tmp:
        scale = y_obs.sum()
        np.savetxt(tmp, np.column_stack([grid, y_obs, y_fit_scaled * scale]), delimiter=",", fmt="%.6g",
                   header="two_theta_deg,observed,fitted", comments="")  # fmt: skip
    anneal_end = int(config.smoothing.smooth_end_fraction * config.steps) if config.smoothing.smooth_start > 0 else None
    _plot(os.path.join(out, "pattern.png"), grid, y_obs_n, y_start_scaled, y_fit_scaled, res.history, b, inputs,
          anneal_end=anneal_end, metric=args.metric)  # fmt: skip
    summary = {
        "pattern": os.path.abspath(args.pattern),
        "start": os.path.abspath(args.start),
        "constraint": args.constraint,
        "family": param.family,
        "spacegroup": xs.spacegroup,
        "n_atoms_p1": len(elements),
        "n_parameters": param.n_free(),
        "n_reflections": len(pm.hkl),
        "wavelength_A": lam,
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "start_cell": cell0,
        "refined_cell": cell_f,
        "metrics": metrics,
        "final_xrd_loss_per_start": res.xrd_loss,
        "best_start": b,
        "energy_eV_per_atom": float(res.energy[b]) if energy is not None else None,
        "wall_seconds": wall,
        "compile_seconds": res.compile_seconds,
        "outputs": ["refined.cif", "pattern.png", "fitted_pattern.csv", "summary.json"],
    }
    write_json(os.path.join(out, "summary.json"), summary, inputs)
    text = (f"dmd xrd-refine: cosine {metrics['start']['cosine']:.4f} → {metrics['refined']['cosine']:.4f}, "
            f"Rwp {metrics['start']['rwp']:.3f} → {metrics['refined']['rwp']:.3f}; cell "
            f"{' '.join(f'{v:.4f}' for v in cell_f)}; {wall:.1f} s; wrote {out}/refined.cif")  # fmt: skip
    emit(args, summary, text)
    return 0


def _plot(path, grid, y_obs, y_start, y_fit, history, best, inputs, anneal_end=None, metric=""):
    """Observed / start / refined patterns, the residual, and the loss of every start per step.

    With the multi-scale metric the loss is measured on smoothed patterns until ``anneal_end`` and on the exact
    metric after it, so the curve steps there: the line marks it.
    """
    from dmd.base.plotting import new_figure, save_figure

    fig, axes = new_figure(3, 1, figsize=(8, 8), gridspec_kw={"height_ratios": [3, 1, 1.5]})
    axes[0].plot(grid, y_obs, "k", lw=1, label="observed")
    axes[0].plot(grid, y_fit, "r", lw=0.8, label="refined")
    axes[0].plot(grid, y_start, "b", lw=0.6, alpha=0.5, label="start")
    axes[0].set_ylabel("intensity (observed: unit sum)")
    axes[0].legend(fontsize=8)
    axes[1].plot(grid, y_obs - y_fit, "g", lw=0.8, label="observed − refined")
    axes[1].axhline(0.0, color="k", lw=0.5)
    axes[1].set_ylabel("obs − fit")
    axes[1].set_xlabel("2θ (degrees)")
    axes[1].legend(fontsize=8)
    axes[2].semilogy(history["xrd"], lw=0.6, alpha=0.5)
    axes[2].semilogy(history["xrd"][:, best], "k", lw=1.2, label="best start (others faint)")
    if anneal_end is not None:
        axes[2].axvline(anneal_end, color="tab:orange", ls="--", lw=1, label="smoothing ends: exact metric after")
    axes[2].set_xlabel("optimizer step")
    axes[2].set_ylabel(f"XRD loss ({metric})" if metric else "XRD loss")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, inputs, dpi=110)
