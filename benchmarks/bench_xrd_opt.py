"""Powder-XRD structure optimization study: how often does gradient descent recover the true structure?

For each structure of :mod:`fitting.xrd_structures`, a noiseless "observed" pattern is computed from the truth
(Cu Kα1, 2θ 10–80°, FWHM 0.15°; pseudo-Voigt on a 0.03° grid, or Gaussian on 0.05° in --quick). Starts are
the truth distorted at several magnitudes (lattice strain ±s, angles ±30·s degrees, Cartesian Gaussian
displacements of σ Å per axis; many random starts each), then refined by each method from the *same*
distorted P1 starts (each method projects the start onto its own parameter space, as a user who knows the
family/space group would):

  p1          XRD only, free lattice and coordinates (the seed paper's baseline)
  p1+energy   P1 + element-based contact energy (fitting.xrd_energy), weight annealed to 0
  p1+anneal   P1 + multi-scale smoothed metric, σ annealed from 1° to 0
  family      lattice constrained to the true crystal family, coordinates free
  spacegroup  lattice + Wyckoff free parameters of the true space group
  spacegroup+anneal   space group + annealed metric (ablation: the combined method without energy)
  combined    space group + energy + annealed metric

Success: pymatgen StructureMatcher (ltol 0.02, stol 0.05, angle_tol 1°, no volume scaling) against the truth.
"start" columns give the match rate of the (projected) starting points themselves. Figures printed: match
rate per method and magnitude, per-refinement time, and as the ratio to a peer measured in the same run, the
time of one loss + gradient evaluation vs one pymatgen XRDCalculator pattern (forward only).

Usage: python benchmarks/bench_xrd_opt.py [--quick] [--out runs/bench_xrd_opt] [--resume]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("p1", "p1+energy", "p1+anneal", "family", "spacegroup", "spacegroup+anneal", "combined")
QUICK_STRUCTURES = (
    "NaCl",
    "CsCl",
    "ZnS-zincblende",
    "FeS2-pyrite",
    "SrTiO3",
    "TiO2-rutile",
    "ZnO",
    "BaTiO3-tetragonal",
)
MAGNITUDES = ((0.03, 0.15), (0.06, 0.3), (0.10, 0.5))  # (strain, displacement Å)


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(ltol=0.02, stol=0.05, angle_tol=1.0, scale=False, attempt_supercell=False)


def energy_parameters(names, cache: Path) -> dict:
    """Per-structure radii/charges of the energy model (pymatgen), cached as JSON so the refinement phase
    can run where pymatgen is absent (e.g. a GPU machine)."""
    data = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [n for n in names if n not in data]
    if missing:
        from fitting.xrd_energy import element_parameters
        from fitting.xrd_structures import STRUCTURES, expand_spec

        for n in missing:
            radius, charge, _ = element_parameters(expand_spec(STRUCTURES[n])[2])
            data[n] = {"radius": radius.tolist(), "charge": charge.tolist()}
        from dmd.io_utils import write_json

        write_json(cache, data)
    return data


def run_structure(name, args, eparams):
    """Refine every start with every method; returns raw arrays (final and projected-start structures)."""
    import jax

    from fitting import xrd_params as xp
    from fitting.xrd_energy import make_energy_model
    from fitting.xrd_refine import RefineConfig, Refiner, make_pattern_model, schedules
    from fitting.xrd_structures import STRUCTURES, expand_spec, spacegroup_param

    spec = STRUCTURES[name]
    cell, pos, els = expand_spec(spec)
    grid = np.arange(10.0, 80.0, args.step)
    family = xp.family_of_spacegroup(spec.spacegroup)
    dtype = np.float64 if args.x64 else np.float32
    obs = np.asarray(
        make_pattern_model(els, cell, grid, margin=0.0, shape=args.shape)(cell.astype(dtype), pos.astype(dtype))
    )

    rng = np.random.default_rng([args.seed, sum(map(ord, name))])
    starts, mag_of = [], []
    for k, (strain, disp) in enumerate(MAGNITUDES):
        for _ in range(args.starts):
            starts.append(xp.perturb_structure(rng, cell, pos, strain=strain, displacement=disp))
            mag_of.append(k)
    n = len(starts)
    config = RefineConfig(steps=args.steps, learning_rate=args.lr)
    sigma_a, _ = schedules(RefineConfig(steps=args.steps, smooth_start=args.smooth))
    _, w_e = schedules(RefineConfig(steps=args.steps, energy_weight=args.energy_weight))
    zeros = np.zeros(args.steps)
    energy = make_energy_model(els, cell, radius=eparams["radius"], charge=eparams["charge"])

    def as_dtype(p):
        return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), p)

    def tile(*blocks):
        return np.concatenate([np.tile(b, (n, 1)) for b in blocks])

    raw = {"mag": np.array(mag_of), "truth_cell": cell, "truth_pos": pos}
    timing = {}

    def keep(method, res, sel, proj_cells, proj_pos, n_in_call):
        raw[f"{method}/cell"] = res.cell[sel]
        raw[f"{method}/pos"] = res.pos_frac[sel]
        raw[f"{method}/start_cell"] = np.asarray(proj_cells)
        raw[f"{method}/start_pos"] = np.asarray(proj_pos)
        raw[f"{method}/xrd_loss"] = res.xrd_loss[sel]
        timing[method] = {"seconds_per_refinement": res.seconds / n_in_call, "compile_seconds": res.compile_seconds}

    c0 = np.array([c for c, _ in starts])
    x0 = np.array([p for _, p in starts])
    if not args.spacegroup_only:
        # P1-shaped methods share one compiled, vmapped call: p1, p1+energy, p1+anneal
        par = xp.P1Param(tuple(els))
        pm = make_pattern_model(els, starts[0][0], grid, shape=args.shape)
        p_starts = [as_dtype(par.init(c, p)) for c, p in starts]
        ref = Refiner(par, pm, "cosine", energy, config)
        res = ref(p_starts * 3, obs, tile(zeros, zeros, sigma_a), tile(zeros, w_e, zeros))
        for j, m in enumerate(("p1", "p1+energy", "p1+anneal")):
            keep(m, res, np.arange(j * n, (j + 1) * n), c0, x0, 3 * n)
        # family
        par_f = xp.FamilyParam(tuple(els), crystal_family=family)
        f_starts = [as_dtype(par_f.init(c, p)) for c, p in starts]
        res_f = Refiner(par_f, pm, "cosine", None, config)(f_starts, obs, zeros, zeros)
        proj = [par_f.crystal(ps) for ps in f_starts]
        keep("family", res_f, np.arange(n), [np.asarray(c) for c, _ in proj], [np.asarray(p) for _, p in proj], n)
    # space group: plain, annealed, combined (+ energy + annealed metric), one compiled call
    par_s = spacegroup_param(spec)
    pm_s = make_pattern_model(els, starts[0][0], grid, spacegroup=spec.spacegroup, shape=args.shape)
    s_starts = [as_dtype(par_s.init(c, p)) for c, p in starts]
    ref_s = Refiner(par_s, pm_s, "cosine", energy, config)
    res_s = ref_s(s_starts * 3, obs, tile(zeros, sigma_a, sigma_a), tile(zeros, zeros, w_e))
    proj = [par_s.crystal(ps) for ps in s_starts]
    pc, pp = [np.asarray(c) for c, _ in proj], [np.asarray(p) for _, p in proj]
    for j, m in enumerate(("spacegroup", "spacegroup+anneal", "combined")):
        keep(m, res_s, np.arange(j * n, (j + 1) * n), pc, pp, 3 * n)
    return raw, {"n_atoms": len(els), "family": family, "spacegroup": spec.spacegroup, "timing": timing}


def match_structure(name, raw, matcher) -> dict:
    """Match rates (per magnitude) of the refined and the projected starting structures vs the truth."""
    from fitting.xrd_structures import STRUCTURES, expand_spec, to_pymatgen

    els = expand_spec(STRUCTURES[name])[2]
    truth = to_pymatgen(raw["truth_cell"], raw["truth_pos"], els)
    mag = raw["mag"]
    out = {}
    for m in [m for m in METHODS if f"{m}/cell" in raw]:

        def fits(cell, pos):
            if not (np.all(np.isfinite(cell)) and np.all(np.isfinite(pos))):
                return False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    return bool(matcher.fit(truth, to_pymatgen(cell, np.mod(pos, 1.0), els)))
                except Exception:  # degenerate lattices make pymatgen raise
                    return False

        ok = np.array([fits(c, p) for c, p in zip(raw[f"{m}/cell"], raw[f"{m}/pos"], strict=True)])
        ok0 = np.array([fits(c, p) for c, p in zip(raw[f"{m}/start_cell"], raw[f"{m}/start_pos"], strict=True)])
        out[m] = {
            "match": [float(ok[mag == k].mean()) for k in range(len(MAGNITUDES))],
            "start_match": [float(ok0[mag == k].mean()) for k in range(len(MAGNITUDES))],
        }
    return out


def peer_timing(name, args, which=("ours", "pymatgen")):
    """One jitted loss+grad evaluation (P1, float32) and one pymatgen XRDCalculator pattern, same structure."""
    import jax

    from fitting import xrd_params as xp
    from fitting.xrd_refine import make_loss_fn, make_pattern_model
    from fitting.xrd_structures import STRUCTURES, expand_spec, to_pymatgen

    spec = STRUCTURES[name]
    cell, pos, els = expand_spec(spec)
    out = {}
    if "ours" in which:
        grid = np.arange(10.0, 80.0, args.step)
        pm = make_pattern_model(els, cell, grid, shape=args.shape)
        par = xp.P1Param(tuple(els))
        p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), par.init(cell, pos))
        obs = np.asarray(pm(cell.astype(np.float32), pos.astype(np.float32)))
        f = jax.jit(jax.value_and_grad(make_loss_fn(par, pm, obs), has_aux=True))
        jax.block_until_ready(f(p, 0.0, 0.0))
        reps = 50
        t0 = time.perf_counter()
        for _ in range(reps):
            r = f(p, 0.0, 0.0)
        jax.block_until_ready(r)
        out["loss_grad_eval_ms"] = (time.perf_counter() - t0) / reps * 1e3
    if "pymatgen" in which:
        from pymatgen.analysis.diffraction.xrd import XRDCalculator

        calc = XRDCalculator("CuKa1")
        st = to_pymatgen(cell, pos, els)
        calc.get_pattern(st, two_theta_range=(10, 80))
        t0 = time.perf_counter()
        for _ in range(5):
            calc.get_pattern(st, two_theta_range=(10, 80))
        out["pymatgen_xrd_pattern_ms"] = (time.perf_counter() - t0) / 5 * 1e3
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 structures, 2 starts/magnitude, 150 steps, 0.05° grid")
    ap.add_argument("--structures", nargs="*", help="names from fitting.xrd_structures.STRUCTURES")
    ap.add_argument("--starts", type=int, default=None, help="random starts per magnitude (default 8; quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default 400; quick 150)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--smooth", type=float, default=1.0, help="initial smoothing σ (degrees 2θ)")
    ap.add_argument("--energy-weight", type=float, default=0.5)
    ap.add_argument("--step", type=float, default=None, help="2θ grid step (degrees; default 0.03, quick 0.05)")
    ap.add_argument("--shape", choices=("gaussian", "pseudo-voigt"), default=None, help="peak shape (quick: gaussian)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--out", default="runs/bench_xrd_opt")
    ap.add_argument(
        "--phase",
        choices=("all", "prepare", "run", "match", "landscape"),
        default="all",
        help="prepare: energy parameters (pymatgen); run: refinements only (jax, gemmi); match: StructureMatcher; "
        "landscape: scans and structure-vs-XRD similarity correlation (not part of 'all')",
    )
    ap.add_argument("--resume", action="store_true", help="skip structures already in OUT/raw.npz")
    ap.add_argument("--spacegroup-only", action="store_true", help="only the space-group methods (ablations)")
    args = ap.parse_args(argv)
    names = args.structures or (list(QUICK_STRUCTURES) if args.quick else None)
    if names is None:
        from fitting.xrd_structures import STRUCTURES

        names = list(STRUCTURES)
    args.starts = args.starts or (2 if args.quick else 8)
    args.steps = args.steps or (150 if args.quick else 400)
    args.step = args.step or (0.05 if args.quick else 0.03)
    args.shape = args.shape or ("gaussian" if args.quick else "pseudo-voigt")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path, run_path, res_path = out_dir / "raw.npz", out_dir / "run.json", out_dir / "results.json"
    cache = out_dir / "energy_params.json"
    if args.phase in ("all", "prepare"):
        energy_parameters(names, cache)
    if args.phase in ("all", "run"):
        run_phase(names, args, raw_path, run_path, cache)
    if args.phase in ("all", "match"):
        match_phase(args, raw_path, run_path, res_path)
    if args.phase == "landscape":
        landscape_phase(names, args, out_dir)
    return 0


def landscape_phase(names, args, out_dir):
    """Landscape diagnostics per structure (:func:`landscape_one`), summarized in OUT/landscape.json."""
    from dmd.io_utils import write_json

    report = {name: landscape_one(name, args, out_dir) for name in names}
    write_json(out_dir / "landscape.json", report)


def landscape_one(name, args, out_dir):
    """1-D scans along a (every metric; smoothed cosine), a 2-D P1 scan along random directions, and the
    structure-distance vs XRD-loss correlation per metric (Spearman ρ, mutual information)."""
    import jax
    import jax.numpy as jnp

    from fitting import xrd_landscape as xl
    from fitting import xrd_params as xp
    from fitting.xrd_refine import METRICS, make_loss_fn, make_pattern_model, xrd_loss
    from fitting.xrd_structures import STRUCTURES, expand_spec, spacegroup_param

    spec = STRUCTURES[name]
    cell, pos, els = expand_spec(spec)
    grid = np.arange(10.0, 80.0, args.step)
    pm = make_pattern_model(els, cell, grid, shape=args.shape, margin=0.12)
    obs = pm(cell, pos)
    par = spacegroup_param(spec)
    pm_s = make_pattern_model(els, cell, grid, spacegroup=spec.spacegroup, shape=args.shape, margin=0.12)
    p0 = jax.tree_util.tree_map(jnp.asarray, par.init(cell))
    la = np.linspace(-0.08, 0.08, 161)

    def scan(metric, sigma):
        f = make_loss_fn(par, pm_s, obs, metric)
        y = xl.scan_1d(lambda p: f(p, sigma, 0.0)[0], p0, "lattice", 0, p0["lattice"][0] + la)
        return (y - y.min()) / max(np.ptp(y), 1e-30)

    curves = {m: scan(m, 0.0) for m in METRICS}
    curves.update({f"cosine σ={s}°": scan("cosine", s) for s in (0.3, 1.0)})
    xl.plot_scan_1d(out_dir / f"scan1d_{name}.png", np.exp(p0["lattice"][0] + la), curves, xlabel="a (Å)",
                    title=f"{name}: loss along a (normalized)", truth=cell[0])  # fmt: skip
    p1 = xp.P1Param(tuple(els))
    q0 = jax.tree_util.tree_map(jnp.asarray, p1.init(cell, pos))
    g = make_loss_fn(p1, pm, obs, "cosine")
    key = jax.random.PRNGKey(0)
    d1, d2 = xl.random_direction(key, q0), xl.random_direction(jax.random.fold_in(key, 1), q0)
    al = np.linspace(-0.3, 0.3, 41)
    z = xl.scan_2d(lambda p: g(p, 0.0, 0.0)[0], q0, d1, d2, al, al)
    xl.plot_scan_2d(out_dir / f"scan2d_{name}.png", al, al, z, title=f"{name}: P1 cosine loss, random plane")
    rng = np.random.default_rng(args.seed)

    def corr(metric):
        return xl.similarity_correlation(lambda c, p: xrd_loss(metric, obs, pm(c, p), grid), cell, pos, rng, n=150)

    cor = {m: corr(m) for m in METRICS}
    xl.plot_correlation(out_dir / f"correlation_{name}.png", cor, title=name)
    # local minima of the 1-D scans: a rough landscape has many
    n_min = {k: int(np.sum((v[1:-1] < v[:-2]) & (v[1:-1] < v[2:]))) for k, v in curves.items()}
    entry = {
        "local_minima_along_a": n_min,
        "spearman": {m: c["spearman"] for m, c in cor.items()},
        "mutual_information_bits": {m: c["mutual_information"] for m, c in cor.items()},
    }
    print(name, json.dumps(entry))
    return entry


def run_phase(names, args, raw_path, run_path, cache):
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from tqdm import tqdm

    from dmd.io_utils import savez, write_json

    eparams = json.loads(cache.read_text())
    raw = dict(np.load(raw_path)) if (args.resume and raw_path.exists()) else {}
    info = json.loads(run_path.read_text())["structures"] if (args.resume and run_path.exists()) else {}
    t_start = time.perf_counter()
    for name in tqdm(names, desc="structures", file=sys.stderr):
        if name in info:
            continue
        r, meta = run_structure(name, args, eparams[name])
        raw.update({f"{name}::{k}": v for k, v in r.items()})
        info[name] = meta
        savez(raw_path, **raw)  # checkpoint after every structure (--resume continues from here)
        write_json(run_path, {"config": vars(args), "structures": info})
    peer = peer_timing("TiO2-rutile", args, which=("ours",))
    write_json(
        run_path,
        {
            "config": vars(args),
            "structures": info,
            "peer": peer,
            "run_wall_seconds": time.perf_counter() - t_start,
            "device": str(jax.devices()[0]),
        },
    )


def match_phase(args, raw_path, run_path, res_path):
    from dmd.io_utils import write_json

    run = json.loads(run_path.read_text())
    raw_all = dict(np.load(raw_path))
    matcher = _matcher()
    results = {}
    for name, meta in run["structures"].items():
        raw = {k.split("::", 1)[1]: v for k, v in raw_all.items() if k.startswith(f"{name}::")}
        results[name] = {**meta, "methods": match_structure(name, raw, matcher)}
    peer = dict(run.get("peer", {}))
    peer.update(peer_timing("TiO2-rutile", args, which=("pymatgen",)))
    summary = summarize(results, run)
    summary["peer"] = peer
    summary["device"] = run.get("device")
    summary["run_wall_seconds"] = run.get("run_wall_seconds")
    write_json(res_path, {"config": run["config"], "structures": results, "summary": summary})
    print_table(summary, run["config"])


def summarize(results, run):
    mags = [f"s={s:.2f},σ={d:.2f}Å" for s, d in MAGNITUDES]
    table = {}
    for m in [m for m in METHODS if all(m in results[n]["methods"] for n in results)]:
        match = np.array([results[n]["methods"][m]["match"] for n in results])  # [n_struct, n_mag]
        start = np.array([results[n]["methods"][m]["start_match"] for n in results])
        secs = np.array([results[n]["timing"][m]["seconds_per_refinement"] for n in results])
        comp = np.array([results[n]["timing"][m]["compile_seconds"] for n in results])
        table[m] = {
            "match_by_magnitude": match.mean(axis=0).tolist(),
            "match_overall": float(match.mean()),
            "start_match_overall": float(start.mean()),
            "structures_solved_any": int(np.sum(match.max(axis=1) > 0)),
            "seconds_per_refinement_median": float(np.median(secs)),
            "compile_seconds_median": float(np.median(comp)),
        }
    return {"magnitudes": mags, "n_structures": len(results), "table": table}


def print_table(summary, config):
    mags = summary["magnitudes"]
    print(
        f"\nXRD structure optimization: {summary['n_structures']} structures, {config['starts']} starts per "
        f"magnitude, {config['steps']} steps, refinements on {summary['device']}"
    )
    print("| method | " + " | ".join(mags) + " | overall | start | solved (any start) | s/refinement |")
    print("|" + "---|" * (len(mags) + 5))
    for m, row in summary["table"].items():
        cells = " | ".join(f"{100 * v:.0f}%" for v in row["match_by_magnitude"])
        print(
            f"| {m} | {cells} | {100 * row['match_overall']:.0f}% | {100 * row['start_match_overall']:.0f}% | "
            f"{row['structures_solved_any']}/{summary['n_structures']} | {row['seconds_per_refinement_median']:.3f} |"
        )
    p = summary["peer"]
    if "loss_grad_eval_ms" in p and "pymatgen_xrd_pattern_ms" in p:
        print(
            f"\nrutile P1 loss+grad eval (float32): {p['loss_grad_eval_ms']:.2f} ms; pymatgen XRDCalculator "
            f"pattern (forward only, CPU): {p['pymatgen_xrd_pattern_ms']:.1f} ms; ratio "
            f"{p['pymatgen_xrd_pattern_ms'] / p['loss_grad_eval_ms']:.1f}x. Refinement wall "
            f"{summary['run_wall_seconds']:.0f} s."
        )


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
