"""Powder-XRD structure optimization study: how often does gradient descent recover the true structure?

For each structure of :mod:`fitting.xrd_structures`, a noiseless "observed" pattern is computed from the truth
(Cu Kα1, 2θ 10–80°, FWHM 0.15°, Gaussian peaks on a 0.03° grid (0.05° in --quick); --shape pseudo-voigt
for Lorentzian tails, ~10-30× slower in P1 since those peaks must be evaluated on the whole grid). Starts are
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
HIST_EVERY = 10  # keep the loss history every this many steps


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
        from dmd.base.io import write_json

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
    calls = []  # (compile s, run s) of each compiled call: is compilation or the descent the cost?

    def keep(method, res, sel, proj_cells, proj_pos, n_in_call):
        raw[f"{method}/cell"] = res.cell[sel]
        # XRD-term history every HIST_EVERY steps ([n, steps // HIST_EVERY]): convergence of the runs
        raw[f"{method}/xrd_hist"] = res.history["xrd"][HIST_EVERY - 1 :: HIST_EVERY, sel].T.astype(np.float32)
        raw[f"{method}/pos"] = res.pos_frac[sel]
        raw[f"{method}/start_cell"] = np.asarray(proj_cells)
        raw[f"{method}/start_pos"] = np.asarray(proj_pos)
        raw[f"{method}/xrd_loss"] = res.xrd_loss[sel]
        timing[method] = {"seconds_per_refinement": res.seconds / n_in_call, "compile_seconds": res.compile_seconds}
        if not calls or calls[-1][2] is not res:
            calls.append((res.compile_seconds, res.seconds, res))

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
    meta = {
        "n_atoms": len(els),
        "family": family,
        "spacegroup": spec.spacegroup,
        "timing": timing,
        "compile_seconds": float(sum(c for c, _, _ in calls)),
        "descent_seconds": float(sum(r for _, r, _ in calls)),
        "n_compiled_calls": len(calls),
    }
    return raw, meta


def match_structure(name, raw, matcher) -> dict:
    """Match rates (per magnitude) of the refined and the projected starting structures vs the truth."""
    from fitting.xrd_structures import STRUCTURES, expand_spec, to_pymatgen

    els = expand_spec(STRUCTURES[name])[2]
    truth = to_pymatgen(raw["truth_cell"], raw["truth_pos"], els)
    mag = raw["mag"]
    out = {}
    start_fits = {}  # methods refined from the same projected starts (e.g. p1, p1+energy, p1+anneal) share them
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
        key = raw[f"{m}/start_cell"].tobytes() + raw[f"{m}/start_pos"].tobytes()
        if key not in start_fits:
            start_fits[key] = np.array(
                [fits(c, p) for c, p in zip(raw[f"{m}/start_cell"], raw[f"{m}/start_pos"], strict=True)]
            )
        ok0 = start_fits[key]
        out[m] = {
            "match": [float(ok[mag == k].mean()) for k in range(len(MAGNITUDES))],
            "n": [int(np.sum(mag == k)) for k in range(len(MAGNITUDES))],
            "start_match": [float(ok0[mag == k].mean()) for k in range(len(MAGNITUDES))],
        }
        if f"{m}/xrd_hist" in raw and m not in ("p1+anneal", "spacegroup+anneal", "combined"):  # σ = 0 runs only
            out[m]["t95_fraction"] = convergence_fraction(raw[f"{m}/xrd_hist"]).tolist()
    return out


def convergence_fraction(hist, frac: float = 0.95):
    """Fraction of the run after which a refinement has made ``frac`` of its XRD-loss decrease.

    Args:
      hist: ``[n, K]`` XRD term recorded every HIST_EVERY steps (σ = 0 methods: the exact metric).

    Returns:
      ``[n]`` in (0, 1]: first record k with L_k − L_end ≤ (1 − frac)(L_first − L_end), as (k + 1) / K
      (1 when a run has no net decrease); NaN rows for non-finite histories.
    """
    h = np.asarray(hist, float)
    first, last = h[:, :1], h[:, -1:]
    drop = np.maximum(first - last, 0.0)
    done = (h - last) <= (1 - frac) * drop
    k = np.argmax(done, axis=1)
    out = (k + 1) / h.shape[1]
    return np.where(np.all(np.isfinite(h), axis=1), out, np.nan)


def peer_timing(name, args, which=("ours", "pymatgen")):
    """One jitted loss+grad evaluation (P1, float32) and one pymatgen XRDCalculator pattern, same structure.

    ``"window"`` in ``which``: loss+grad per start, vmapped over 18 starts as in the study, with each Gaussian
    peak evaluated on its ± 5 FWHM window (the study's setting) and on the whole grid (dense), measured back to
    back in this process.
    """
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
    if "window" in which:
        import dataclasses

        grid = np.arange(10.0, 80.0, args.step)
        pm = make_pattern_model(els, cell, grid, shape="gaussian")
        par = xp.P1Param(tuple(els))
        rng = np.random.default_rng(0)
        ps = [par.init(*xp.perturb_structure(rng, cell, pos, strain=0.06, displacement=0.3)) for _ in range(18)]
        ps = jax.tree_util.tree_map(lambda *x: np.stack(x).astype(np.float32), *ps)
        obs = np.asarray(pm(cell.astype(np.float32), pos.astype(np.float32)))
        for label, model in (("windowed", pm), ("dense", dataclasses.replace(pm, window=0))):
            vg = jax.value_and_grad(make_loss_fn(par, model, obs), has_aux=True)
            f = jax.jit(jax.vmap(vg, in_axes=(0, None, None)))
            jax.block_until_ready(f(ps, 0.0, 0.0))
            t0 = time.perf_counter()
            for _ in range(10):
                r = f(ps, 0.0, 0.0)
            jax.block_until_ready(r)
            out[f"gaussian_{label}_loss_grad_ms"] = (time.perf_counter() - t0) / 10 / 18 * 1e3
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
    ap.add_argument("--starts", type=int, default=None, help="random starts per magnitude (default 6; quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default 250; quick 150)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--smooth", type=float, default=1.0, help="initial smoothing σ (degrees 2θ)")
    ap.add_argument("--energy-weight", type=float, default=0.5)
    ap.add_argument("--step", type=float, default=None, help="2θ grid step (degrees; default 0.03, quick 0.05)")
    ap.add_argument("--shape", choices=("gaussian", "pseudo-voigt"), default="gaussian", help="peak shape")
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
        from fitting.xrd_structures import STRUCTURES, expand_spec

        # smallest cells first, so a run cut off early still covers most structures (the 20-56-atom cells last)
        names = sorted(STRUCTURES, key=lambda n: len(expand_spec(STRUCTURES[n])[2]))
    args.starts = args.starts or (2 if args.quick else 6)
    args.steps = args.steps or (150 if args.quick else 250)
    args.step = args.step or (0.05 if args.quick else 0.03)
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
    from dmd.base.io import write_json

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

    from dmd.base.io import savez, write_json

    eparams = json.loads(cache.read_text())
    raw = dict(np.load(raw_path)) if (args.resume and raw_path.exists()) else {}
    info = json.loads(run_path.read_text())["structures"] if (args.resume and run_path.exists()) else {}
    t_start = time.perf_counter()
    for name in tqdm(names, desc="structures", file=sys.stderr):
        if name in info:
            continue
        t0 = time.perf_counter()
        r, meta = run_structure(name, args, eparams[name])
        meta["wall_seconds"] = time.perf_counter() - t0
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
    from dmd.base.io import write_json

    run = json.loads(run_path.read_text())
    raw_all = dict(np.load(raw_path))
    matcher = _matcher()
    # per-structure matches are cached (OUT/matches.json, valid for the same run settings): matching can follow
    # a run in progress, and a rerun only matches the structures added since
    cache_path = raw_path.parent / "matches.json"
    same = {k: v for k, v in run["config"].items() if k not in ("phase", "resume", "structures", "out")}
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if cache.get("config") != same:
        cache = {"config": same, "structures": {}}
    results = {}
    for name, meta in run["structures"].items():
        if name not in cache["structures"]:
            raw = {k.split("::", 1)[1]: v for k, v in raw_all.items() if k.startswith(f"{name}::")}
            cache["structures"][name] = match_structure(name, raw, matcher)
            write_json(cache_path, cache)
        results[name] = {**meta, "methods": cache["structures"][name]}
    peer = dict(run.get("peer", {}))
    peer.update(peer_timing("TiO2-rutile", args, which=("pymatgen", "window")))
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
        counts = np.array([results[n]["methods"][m].get("n", [run["config"]["starts"]] * len(mags)) for n in results])
        start = np.array([results[n]["methods"][m]["start_match"] for n in results])
        secs = np.array([results[n]["timing"][m]["seconds_per_refinement"] for n in results])
        comp = np.array([results[n]["timing"][m]["compile_seconds"] for n in results])
        hits = match * counts  # matched refinements per structure and magnitude
        t95 = np.concatenate([results[n]["methods"][m].get("t95_fraction", []) for n in results])
        table[m] = {
            "match_by_magnitude": (hits.sum(axis=0) / counts.sum(axis=0)).tolist(),
            "n_by_magnitude": counts.sum(axis=0).tolist(),
            "match_overall": float(hits.sum() / counts.sum()),
            "n_overall": int(counts.sum()),
            "start_match_overall": float((start * counts).sum() / counts.sum()),
            "structures_solved_any": int(np.sum(match.max(axis=1) > 0)),
            "structures_solved_majority": int(np.sum(hits.sum(axis=1) > counts.sum(axis=1) / 2)),
            "per_structure": {n: [int(round(h)) for h in hits[i]] for i, n in enumerate(results)},
            "t95_fraction_median": float(np.nanmedian(t95)) if t95.size else None,
            "seconds_per_refinement_median": float(np.median(secs)),
            "compile_seconds_median": float(np.median(comp)),
        }
    cost = {
        k: float(sum(results[n].get(k, 0.0) for n in results))
        for k in ("compile_seconds", "descent_seconds", "wall_seconds")
    }
    return {"magnitudes": mags, "n_structures": len(results), "table": table, "cost": cost}


def print_table(summary, config):
    mags = summary["magnitudes"]
    print(
        f"\nXRD structure optimization: {summary['n_structures']} structures, {config['starts']} starts per "
        f"magnitude, {config['steps']} steps, refinements on {summary['device']}"
    )
    n_s = summary["n_structures"]
    print(
        "| method | " + " | ".join(mags) + " | overall | start | solved (any start) | solved (majority) | "
        "t95/steps | s/refinement |"
    )
    print("|" + "---|" * (len(mags) + 7))
    for m, row in summary["table"].items():
        cells = " | ".join(
            f"{100 * v:.0f}% (n={k})" for v, k in zip(row["match_by_magnitude"], row["n_by_magnitude"], strict=True)
        )
        t95 = row.get("t95_fraction_median")
        print(
            f"| {m} | {cells} | {100 * row['match_overall']:.1f}% (n={row['n_overall']}) | "
            f"{100 * row['start_match_overall']:.0f}% | {row['structures_solved_any']}/{n_s} | "
            f"{row['structures_solved_majority']}/{n_s} | {'—' if t95 is None else f'{t95:.2f}'} | "
            f"{row['seconds_per_refinement_median']:.3f} |"
        )
    methods = list(summary["table"])
    first = summary["table"][methods[0]]["per_structure"]
    n_each = sum(summary["table"][methods[0]]["n_by_magnitude"]) // max(n_s, 1)
    print(f"\nPer structure: matched refinements out of {n_each} (per magnitude, small → large)")
    print("| structure | " + " | ".join(methods) + " |")
    print("|" + "---|" * (len(methods) + 1))
    for name in first:
        cells = []
        for m in methods:
            h = summary["table"][m]["per_structure"][name]
            cells.append(f"{sum(h)} ({'/'.join(map(str, h))})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    c = summary.get("cost", {})
    if c.get("wall_seconds"):
        print(
            f"\nCost: compilation {c['compile_seconds']:.0f} s, descent {c['descent_seconds']:.0f} s, structure wall "
            f"{c['wall_seconds']:.0f} s in all (compilation {c['compile_seconds'] / c['wall_seconds']:.0%} of it)"
        )
    p = summary["peer"]
    if "loss_grad_eval_ms" in p and "pymatgen_xrd_pattern_ms" in p:
        print(
            f"\nrutile P1 loss+grad eval (float32): {p['loss_grad_eval_ms']:.2f} ms; pymatgen XRDCalculator "
            f"pattern (forward only, CPU): {p['pymatgen_xrd_pattern_ms']:.1f} ms; ratio "
            f"{p['pymatgen_xrd_pattern_ms'] / p['loss_grad_eval_ms']:.1f}x. Refinement wall "
            f"{summary['run_wall_seconds']:.0f} s."
        )
    if "gaussian_dense_loss_grad_ms" in p:
        print(
            f"rutile P1 loss+grad per start (18 vmapped), Gaussian peaks on ± 5 FWHM windows "
            f"{p['gaussian_windowed_loss_grad_ms']:.2f} ms vs on the whole grid {p['gaussian_dense_loss_grad_ms']:.2f} "
            f"ms: {p['gaussian_dense_loss_grad_ms'] / p['gaussian_windowed_loss_grad_ms']:.1f}x (same process)."
        )


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
