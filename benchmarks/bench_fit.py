"""Force-field fitting benchmark: the three gradient routes against finite differences of long-run averages.

For an LJ fluid (argon, N = 128, ρσ³ = 0.8, 240 K, plain cutoff 0.75 nm, float64) it estimates J = d⟨o⟩/dθ for
o = [g(r) on 30 bins, U/N] and θ = (ε, σ) with the pathwise, fluctuation and reweighting routes of
:mod:`fitting.forcefield` (one round each), and compares with central finite differences of long runs at θ ± 2%
(common random numbers on both sides, block error bars). Printed per route and parameter: the relative error
‖J_route − J_FD‖/‖J_FD‖ over all 31 rows and over the 30 g(r) rows, the FD noise on the same scale, and seconds per
round. The fluctuation route is also given with its block-jackknife error (the sampling noise of the route itself)
and with the *plain* truncated U instead of the sampled cut-and-shifted Ũ (:func:`fitting.forcefield.
sampled_energy_fn`), which shows the size of the cutoff-jump bias. Then the time of one recovery fit.
Results are appended to ``--out`` (JSON) as they come, so a cut-off run leaves its figures.
``--powder-npt`` runs only the constant-pressure powder → σ recovery of examples/fit/argon_powder_npt.yaml over
``--recovery-seeds`` (σ started 20% low; ~1 min a seed on 2 cores).

    nice -n 19 python benchmarks/bench_fit.py [--quick] [--out bench_fit.json]
    nice -n 19 python benchmarks/bench_fit.py --powder-npt --recovery-seeds 0,1,2,3 --out bench_powder_npt.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dmd.base.io import write_json
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.estimators import block_jackknife
from dmd.models import lj_fluid
from fitting import observables as ob
from fitting.forcefield import FitConfig, FitParam, FitState, FitTarget, fit, sample, sampled_energy_fn


def _frame_obs(obs_fns, params, frames):
    fn = jax.jit(jax.vmap(lambda x: jnp.concatenate([f(params, x) for f in obs_fns])))
    return np.asarray(fn(jnp.asarray(frames)))


def _rel(J, J_fd, rows=slice(None)):
    return float(np.linalg.norm(J[rows] - J_fd[rows]) / np.linalg.norm(J_fd[rows]))


def main():
    """The benchmark (module docstring).

    Over 100 lines: a linear script (options, the gradient-route comparison, the recovery fits, the report) whose
    sections share the options and the report dict; each measurement is a call, the rest is printing.
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (minutes)")
    ap.add_argument("--out", type=Path, default=Path("bench_fit.json"))
    ap.add_argument("--skip-recovery", action="store_true", help="only the gradient comparison")
    ap.add_argument("--skip-routes", action="store_true", help="only the recovery fits")
    ap.add_argument("--recovery-seeds", default="0", help="comma-separated fit seeds of the recovery runs (default 0)")
    ap.add_argument(
        "--recovery-dense-only",
        action="store_true",
        help="also fit from the dense g(r) alone (one state point), for comparison",
    )
    ap.add_argument(
        "--powder-npt", action="store_true", help="only the NPT powder → σ recovery (argon_powder_npt.yaml)"
    )
    ap.add_argument("--streaming-memory", action="store_true", help="estimator memory, 2 frame counts")
    args = ap.parse_args()
    if args.streaming_memory:
        return streaming_memory(args)
    if args.powder_npt:  # float32, as the example runs
        return powder_npt_recovery(args)
    jax.config.update("jax_enable_x64", True)
    temp, n = 240.0, 128
    beta = 1.0 / (KB_KJ_PER_MOL_K * temp)
    system = lj_fluid(n, density=0.8, temperature=temp, cutoff=0.75, dtype=jnp.float64, seed=1)
    g = ob.rdf(n, np.asarray(system.box), r_max=0.9, n_bins=30)
    u = ob.mean_energy(system, per_atom=True)
    steps = 4000 if args.quick else 40000
    fd_steps = 20000 if args.quick else 100000
    cfg = FitConfig(rounds=1, steps=steps, equilibration=1000, report_every=20, dt=0.005, temperature=temp,
                    friction=2.0, progress=False)  # fmt: skip
    names = ["lj/epsilon/A", "lj/sigma/A"]
    fps = [FitParam((nm,), lower=0.0) for nm in names]
    targets = [FitTarget(g, np.ones(30)), FitTarget(u, np.array([-5.0]))]
    report = {"settings": {"n_atoms": n, "temperature": temp, "route_steps": steps, "fd_steps_per_side": fd_steps}}

    def save():
        write_json(args.out, report)

    if not args.skip_routes:
        # the three routes, one round each (the pathwise one on a shorter horizon: tangents grow ~e^{λt})
        routes = {}
        for est in ("fluctuation", "reweighting", "pathwise"):
            c = dataclasses.replace(cfg, estimator=est, steps=min(steps, 2000) if est == "pathwise" else steps)
            t0 = time.perf_counter()
            res = fit(system, fps, targets, c)
            routes[est] = (np.asarray(res.history[0]["jacobian_theta"]), time.perf_counter() - t0)

        # the fluctuation route by hand on the same frames: block-jackknife error, and plain U versus sampled Ũ
        theta0 = np.array([float(system.params["lj"]["epsilon"][0]), float(system.params["lj"]["sigma"][0])])

        def params_of(th):
            return {"lj": {"epsilon": th[:1], "sigma": th[1:]}}

        # the frames of the fluctuation round: the fit samples at θ = exp(ln θ) (log transform), and LJ dynamics is
        # chaotic enough (λ ≈ 2/ps) that a 1e-16 change of θ gives another realization; use the fit's exact θ
        theta_fit = np.asarray(jnp.exp(jnp.asarray(np.log(theta0))))  # as the fit's log transform computes it
        frames, _ = sample(system, params_of(jnp.asarray(theta_fit)), cfg, seed=cfg.seed)
        o = _frame_obs([g.per_frame, u.per_frame], system.params, frames)

        shifted = sampled_energy_fn(system)
        du = {}
        for label, ufn in (("sampled", lambda th, x: shifted(params_of(th), x, system.box)),
                           ("plain", lambda th, x: system.energy_fn(params_of(th), x))):  # fmt: skip
            du_fn = jax.jit(jax.vmap(jax.grad(ufn), (None, 0)))
            du[label] = np.asarray(du_fn(jnp.asarray(theta0), jnp.asarray(frames)))
        du_plain_u = np.asarray(  # explicit ⟨∂(U/N)/∂θ⟩ of the energy observable (the plain U is what it reports)
            jax.vmap(jax.grad(lambda th, x: system.energy_fn(params_of(th), x) / n), (None, 0))(
                jnp.asarray(theta0), jnp.asarray(frames)
            )
        ).mean(0)

        def fluct(o_, du_):
            oc, dc = o_ - o_.mean(0), du_ - du_.mean(0)
            return -beta * (oc.T @ dc) / len(o_)

        by_hand = {}
        for label in ("sampled", "plain"):
            J, err = block_jackknife(fluct, (o, du[label]), n_blocks=20)
            J = J.copy()
            J[30] += du_plain_u
            by_hand[label] = (J, err)

        # finite differences of long-run averages, δ = 2% of each parameter, 4 blocks each side (common seeds ±)
        fd_cols, fd_err = [], []
        t0 = time.perf_counter()
        for p in range(2):
            blocks = {}
            for sgn in (+1, -1):
                th = theta0.copy()
                th[p] *= 1 + sgn * 0.02
                params = params_of(jnp.asarray(th))
                means = []
                for b in range(4):
                    fr, _ = sample(system, params, dataclasses.replace(cfg, steps=fd_steps // 4), seed=1000 + 10 * b)
                    means.append(_frame_obs([g.per_frame, u.per_frame], params, fr).mean(0))
                blocks[sgn] = np.array(means)
            diff = (blocks[1] - blocks[-1]) / (2 * 0.02 * theta0[p])
            fd_cols.append(diff.mean(0))
            fd_err.append(diff.std(0, ddof=1) / 2)
        t_fd = time.perf_counter() - t0
        J_fd, E_fd = np.array(fd_cols).T, np.array(fd_err).T  # [31, 2]
        report["fd_seconds"] = t_fd

        print(
            f"LJ fluid N={n}, T={temp} K, o = g(r)[30] + U/N; routes {steps} steps (pathwise {min(steps, 2000)}); "
            f"FD {fd_steps} steps per side ({t_fd:.0f} s); loaded machine: compare seconds within this run"
        )
        head = ("route", "param", "err all", "err g(r)", "FD noise", "route noise", "s/round")
        print("{:<22} {:<14} {:>8} {:>9} {:>9} {:>12} {:>8}".format(*head))
        rows = []
        entries = [(est, J, None, secs) for est, (J, secs) in routes.items()]
        entries += [(f"fluctuation {lab} U", J, err, None) for lab, (J, err) in by_hand.items()]
        for est, J, err, secs in entries:
            for p, nm in enumerate(names):
                scale = np.linalg.norm(J_fd[:, p])
                row = dict(route=est, param=nm, err_all=_rel(J[:, p], J_fd[:, p]),
                           err_g=_rel(J[:30, p], J_fd[:30, p]),
                           fd_noise=float(np.linalg.norm(E_fd[:, p]) / np.linalg.norm(J_fd[:, p])),
                           route_noise=None if err is None else float(np.linalg.norm(err[:, p]) / scale),
                           seconds=secs)  # fmt: skip
                rows.append(row)
                rn = "" if row["route_noise"] is None else f"{row['route_noise']:.3f}"
                sc = "" if secs is None else f"{secs:.1f}"
                cols = (est, nm, row["err_all"], row["err_g"], row["fd_noise"], rn, sc)
                print("{:<22} {:<14} {:8.3f} {:9.3f} {:9.3f} {:>12} {:>8}".format(*cols))
        report["routes"] = rows
        save()
    if args.skip_recovery:
        return

    # whole recovery fits, timed: the shipped long targets and the settings of the test (fewer rounds in --quick),
    # two state points (ρσ³ = 0.8 and 0.4) and, for comparison, the dense state alone; one fit per seed
    here = Path(__file__).resolve().parents[1] / "examples" / "fit"
    import sys

    sys.path.insert(0, str(here))
    import make_target

    s = make_target.SETTINGS
    dense, low = make_target.true_system(), make_target.true_system(density=0.4)

    def start_of(true):
        lj = true.params["lj"]
        return dataclasses.replace(true, params={"lj": {"sigma": lj["sigma"] * 0.8, "epsilon": lj["epsilon"] * 1.2}})

    def target_of(true, csv):
        g = ob.rdf(s["n_atoms"], np.asarray(true.box), r_max=s["r_max"], n_bins=s["n_bins"])
        return FitTarget(g, np.loadtxt(here / csv, delimiter=",", skiprows=1)[:, 1])

    low_state = FitState(start_of(low), (target_of(low, "target_rdf_low.csv"),), name="low_density")
    rounds = 4 if args.quick else args.recovery_rounds
    true_theta = [float(dense.params["lj"]["epsilon"][0]), float(dense.params["lj"]["sigma"][0])]
    report["recovery"] = []
    modes = ["two_states"] + (["dense_only"] if args.recovery_dense_only else [])
    for mode in modes:
        for seed in [int(x) for x in args.recovery_seeds.split(",")]:
            rcfg = FitConfig(rounds=rounds, steps=args.recovery_steps, equilibration=500, report_every=40,
                             dt=s["dt"], temperature=s["temperature"], friction=s["friction"], progress=False,
                             decay_after=args.recovery_decay, seed=seed)  # fmt: skip
            t0 = time.perf_counter()
            states = [low_state] if mode == "two_states" else []
            res = fit(start_of(dense), fps, [target_of(dense, "target_rdf.csv")], rcfg, states=states)
            secs = time.perf_counter() - t0
            rec = {"mode": mode, "seed": seed, "seconds": secs, "rounds": rounds}
            for p, nm in enumerate(names):
                e = 100 * (res.values[nm] / true_theta[p] - 1)
                rec[nm] = {"fitted": res.values[nm], "true": true_theta[p], "error_percent": e}
            report["recovery"].append(rec)
            errs = ", ".join(f"{nm} {rec[nm]['error_percent']:+.2f}%" for nm in names)
            print(f"recovery ({mode}, seed {seed}): {errs}; {rounds} rounds in {secs:.1f} s", flush=True)
            save()
    print(json.dumps({"written": str(args.out)}))


def streaming_memory(args):
    """Peak memory (tracemalloc, numpy) of the fluctuation estimator on K = 30,000 per-frame values (3M of a diffuse
    target with 10,000 reflections) and P = 2 parameters, at 400 and 1,600 frames: the batch route (all o [F, K],
    then cov) grows with F; the fit's streaming route (128-frame chunks) stays flat."""
    import tracemalloc

    from fitting.forcefield_estimators import fluctuation_jacobian, streaming_fluctuation

    k, p = 30_000, 2
    w = np.random.default_rng(0).normal(size=(3, k))

    def o_fn(z, x, b):  # a cheap stand-in for per-frame |F|², Re F, Im F
        return np.cos(np.asarray(x)[:, :3] @ w)

    def du_fn(z, x, b):
        return np.asarray(x)[:, :p] ** 2

    report = {"streaming_memory": []}
    for n in (400, 1600):
        frames = np.random.default_rng(1).normal(size=(n, 3))
        tracemalloc.start()
        fluctuation_jacobian(o_fn(None, frames, None), du_fn(None, frames, None), 1.0)
        batch = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        tracemalloc.start()
        streaming_fluctuation(o_fn, du_fn, None, frames, 1.0, chunk=128)
        stream = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        report["streaming_memory"].append({"frames": n, "batch_peak_mb": batch, "streaming_peak_mb": stream})
        print(f"{n} frames × {k} values: batch peak {batch:.0f} MB, streaming peak {stream:.0f} MB", flush=True)
    write_json(args.out, report)


def powder_npt_recovery(args):
    """σ of the argon FCC crystal from its powder pattern at constant pressure (examples/fit/argon_powder_npt.yaml,
    start 20% low, truth 0.34 nm), once per fit seed: fitted σ, error, seconds per round and peak memory (max RSS)."""
    import resource

    from fitting.fit_config import load_fit_config

    cfg_path = Path(__file__).resolve().parents[1] / "examples" / "fit" / "argon_powder_npt.yaml"
    report = {"powder_npt": [], "config": str(cfg_path), "sigma_true_nm": 0.34}
    for seed in [int(x) for x in args.recovery_seeds.split(",")]:
        system, fps, targets, cfg, states = load_fit_config(cfg_path)
        cfg = dataclasses.replace(cfg, seed=seed, progress=False, rounds=6 if args.quick else cfg.rounds)
        t0 = time.perf_counter()
        res = fit(system, fps, targets, cfg, states=states)
        secs = time.perf_counter() - t0
        sigma = res.values["lj/sigma/A"]
        rec = {"seed": seed, "sigma_nm": sigma, "error_percent": 100 * (sigma / 0.34 - 1), "seconds": secs,
               "seconds_per_round": [h.get("seconds") for h in res.history],
               "sigma_per_round": [h["theta"]["lj/sigma/A"] for h in res.history],
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip
        report["powder_npt"].append(rec)
        print(f"powder NPT (seed {seed}): σ = {sigma:.5f} nm ({rec['error_percent']:+.2f}%), {len(res.history)} "
              f"rounds in {secs:.1f} s, peak RSS {rec['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        write_json(args.out, report)
    print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
