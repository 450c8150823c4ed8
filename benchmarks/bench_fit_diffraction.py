"""Benchmark of force-field fitting to diffuse scattering (examples/fit_diffraction/argon_diffuse.yaml).

Prints, in one run on the same machine:

* per-frame structure factors F(h, t) of the fit's diffuse observable (108-atom argon FCC box, 1051 reflections to
  2 Å) through the production route (spread + FFT, vmapped over frames by ``fitting.observables.frame_values``) and
  through the direct sum (:func:`analysis.structure_factors.structure_factors_direct`), in frames per second and
  their ratio;
* seconds per fit round (simulation + estimator + update) of a short fit from ε + 20%.

``--routes``: the gradient routes on the fit's objective (issue 18 item 5). At the example's start (ε = 1.195,
20% above the truth) d(loss)/dε of the diffuse objective (12 shell means, ``absolute``) by

* fluctuation: ⟨∂o/∂ε⟩ − β cov(o, ∂Ũ/∂ε) on one equilibrium run (the fit's streaming estimator),
* reweighting (DiffTRe): secant of the loss of the frames reweighted to ε(1 ± δ) on the same run (its derivative at
  ε itself equals the fluctuation estimate to round-off), with the Kish N_eff fraction,
* pathwise: ⟨∂o/∂x · dx/dε⟩ from tangents carried along runs of each ``--horizons`` length
  (:func:`dmd.sensitivity.run_sensitivities`, with the Lyapunov verdict of :func:`dmd.chaos.assess`),

each over ``--route-seeds`` independent runs (noise: their standard deviation), against central finite differences
of the loss from ``--fd-blocks`` pairs of long runs at ε(1 ± δ) with common seeds. Prints the table and a one-line
verdict of which route to trust; ``--out`` keeps everything as JSON.

``--memory``: peak memory (max RSS of a fresh process) of one fit round of the example at two frame counts
(``--memory-frames``, same 3000 steps, frames every 3000/F steps): the fluctuation estimator streams over frames
(``frame_chunk`` at a time), so the peak should not grow with F beyond the frames themselves (N·3 floats each).

    python benchmarks/bench_fit_diffraction.py [--frames 200 --rounds 3 --steps 1500]
    python benchmarks/bench_fit_diffraction.py --memory [--memory-frames 150,1500]
    nice -n 19 python benchmarks/bench_fit_diffraction.py --routes [--route-seeds 4 --fd-blocks 4 --out routes.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "fit_diffraction"))

from make_target import box_cell, crystal  # noqa: E402

from analysis.diffuse import diffuse_hkl  # noqa: E402
from dmd.base.io import write_json  # noqa: E402
from dmd.estimators import boltzmann_reweight  # noqa: E402
from dmd.integrators import BOLTZMANN_KJ_MOL_K  # noqa: E402
from dmd.sensitivity import run_sensitivities  # noqa: E402
from fitting import objectives  # noqa: E402
from fitting import observables as ob  # noqa: E402
from fitting.fit_config import load_fit_config  # noqa: E402
from fitting.forcefield import fit, sample, sampled_energy_fn  # noqa: E402
from fitting.forcefield_estimators import streaming_fluctuation  # noqa: E402


def frames_per_second(obs, frames, repeats: int = 3) -> float:
    run = ob.frame_values(obs.per_frame)
    jax.block_until_ready(run(None, frames))  # compile
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(run(None, frames))
    return repeats * frames.shape[0] / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--routes", action="store_true", help="only the gradient-routes table against FD")
    ap.add_argument("--route-steps", type=int, default=3000, help="steps of each fluctuation/reweighting run")
    ap.add_argument("--route-seeds", type=int, default=4)
    ap.add_argument("--horizons", type=lambda t: [int(x) for x in t.split(",")], default=[100, 500, 3000],
                    help="pathwise run lengths, steps (comma-separated)")  # fmt: skip
    ap.add_argument("--fd-steps", type=int, default=6000, help="steps of each FD run")
    ap.add_argument("--fd-blocks", type=int, default=4, help="independent FD run pairs")
    ap.add_argument("--fd-delta", type=float, default=0.05, help="relative FD step δ")
    ap.add_argument("--out", type=Path, default=None, help="JSON report (--routes, --memory)")
    ap.add_argument("--memory", action="store_true", help="only peak memory of a fit round at two frame counts")
    ap.add_argument("--memory-frames", default="150,1500", help="frame counts of --memory (comma-separated)")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.memory_child is not None:
        return memory_child(a.memory_child)
    if a.memory:
        report = memory_in_frames([int(x) for x in a.memory_frames.split(",")])
        if a.out is not None:
            write_json(a.out, report)
        return
    if a.routes:
        report = gradient_routes(a)
        if a.out is not None:
            write_json(a.out, report)
        return
    system = crystal(3)
    cell = box_cell(system)
    hkl, _ = diffuse_hkl(cell, 2.0)
    rng = np.random.default_rng(0)
    frames = jnp.asarray(np.asarray(system.positions)[None] + rng.normal(0, 0.01, (a.frames, system.n_atoms, 3)),
                         jnp.float32)  # fmt: skip
    rates = {}
    for method in ("fft", "direct"):
        obs = ob.diffuse_scattering(hkl, cell, ["Ar"] * system.n_atoms, method=method, reference=system.positions)
        rates[method] = frames_per_second(obs, frames)
        print(f"F(h,t) {method:6s}: {rates[method]:9.1f} frames/s ({len(hkl)} reflections, {system.n_atoms} atoms)")
    print(f"FFT / direct sum throughput: {rates['fft'] / rates['direct']:.2f}x")

    s, p, t, c, _ = load_fit_config(ROOT / "examples" / "fit_diffraction" / "argon_diffuse.yaml")
    c = dataclasses.replace(c, rounds=a.rounds, steps=a.steps, equilibration=500, progress=False)
    res = fit(s, p, t, c)
    secs = [h["seconds"] for h in res.history]
    print(f"seconds per round ({a.steps} steps, {a.steps // c.report_every} frames): first (with compilation) "
          f"{secs[0]:.1f}, later mean {np.mean(secs[1:]):.1f}; ε after {a.rounds} rounds: "
          f"{res.values['lj/epsilon/A']:.4f} (truth 0.996)")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# gradient routes on the diffuse objective (issue 18 item 5)


def _loss_parts(target):
    """(mean ⟨o⟩ → loss, mean → prediction) of one fit target: loss = Σ r² of its named objective."""
    obs = target.observable

    def loss(mean):
        r = objectives.objective_residuals(target.objective, obs.predict(mean), jnp.asarray(target.data, mean.dtype),
                                           sigma=target.sigma, weights=target.weights)  # fmt: skip
        return jnp.sum(r * r)

    return jax.jit(loss), jax.jit(jax.grad(loss))


def _with_epsilon(system, eps):
    lj = dict(system.params["lj"])
    lj["epsilon"] = jnp.asarray([eps], jnp.asarray(lj["epsilon"]).dtype)
    return {**system.params, "lj": lj}


def gradient_routes(a):
    """d(loss)/dε of the diffuse fit (examples/fit_diffraction/argon_diffuse.yaml at its start, ε = 1.195) by the
    fluctuation, reweighting and pathwise routes against central finite differences of long runs; each route over
    ``--route-seeds`` independent runs (its noise: the standard deviation over runs). Returns the report dict.

    Over 100 lines: the routes are measured in sequence on one loaded config and share its frames, finite-difference
    reference and report rows; split, each piece would take all of them back.
    """
    s, _, (target,), c, _ = load_fit_config(ROOT / "examples" / "fit_diffraction" / "argon_diffuse.yaml")
    eps0 = float(s.params["lj"]["epsilon"][0])
    beta = 1.0 / (BOLTZMANN_KJ_MOL_K * c.temperature)
    obs = target.observable
    loss, dloss_dmean = _loss_parts(target)
    o_frames = ob.frame_values(obs.per_frame)
    u_sampled = sampled_energy_fn(s)
    du_frames = jax.jit(jax.vmap(jax.grad(lambda e, x: u_sampled(_with_epsilon(s, e), x, s.box)), (None, 0)))
    u_frames = jax.jit(jax.vmap(lambda e, x: u_sampled(_with_epsilon(s, e), x, s.box), (None, 0)))
    params0 = _with_epsilon(s, eps0)
    cfg = dataclasses.replace(c, steps=a.route_steps, equilibration=1000, progress=False)
    seeds = range(a.route_seeds)
    settings = dict(eps0=eps0, route_steps=a.route_steps, fd_steps=a.fd_steps, fd_blocks=a.fd_blocks,
                    fd_delta=a.fd_delta, horizons=a.horizons, load=os.getloadavg())  # fmt: skip
    report = {"settings": settings}

    def dl_of(mean, dmean):
        return float(dloss_dmean(jnp.asarray(mean, jnp.float32)) @ jnp.asarray(dmean, jnp.float32))

    # central finite differences of long runs at ε0(1 ± δ), common seeds on both sides, blocks of independent runs
    t0 = time.perf_counter()
    fd, losses = [], {}
    for b in range(a.fd_blocks):
        side = {}
        for sgn in (+1, -1):
            p = _with_epsilon(s, eps0 * (1 + sgn * a.fd_delta))
            fr, _ = sample(s, p, dataclasses.replace(cfg, steps=a.fd_steps), seed=1000 + b)
            side[sgn] = float(loss(jnp.asarray(np.asarray(o_frames(p, fr)).mean(0), jnp.float32)))
        fd.append((side[1] - side[-1]) / (2 * a.fd_delta * eps0))
        losses[b] = side
    fd = np.array(fd)
    g_fd, e_fd = float(fd.mean()), float(fd.std(ddof=1) / np.sqrt(len(fd)))
    report["fd"] = {"dloss_deps": g_fd, "error": e_fd, "blocks": fd.tolist(), "seconds": time.perf_counter() - t0}
    print(f"FD: d(loss)/dε = {g_fd:.4f} ± {e_fd:.4f} ({a.fd_blocks} blocks × {a.fd_steps} steps per side, "
          f"δ = {a.fd_delta:.0%}; {report['fd']['seconds']:.0f} s)", flush=True)  # fmt: skip

    rows = {"fluctuation": [], "reweighting": [], "reweighting N_eff": []}
    t_fl = []
    for seed in seeds:
        t0 = time.perf_counter()
        fr, _ = sample(s, params0, cfg, seed=seed)
        fr = jnp.asarray(fr)
        mean, jac, o = streaming_fluctuation(lambda z, x, b: o_frames(params0, x), lambda z, x, b: du_frames(eps0, x),
                                             None, fr, beta, keep=True)  # fmt: skip
        rows["fluctuation"].append(dl_of(mean, jac[:, 0]))
        t_fl.append(time.perf_counter() - t0)
        # reweighting (DiffTRe) on the same frames: the loss of the reweighted ensembles at ε0(1 ± δ), secant slope
        # (its jvp at ε0 is the fluctuation estimate itself, to round-off)
        u0 = np.asarray(u_frames(eps0, fr), np.float64)
        lw, neffs = [], []
        for sgn in (+1, -1):
            e = eps0 * (1 + sgn * a.fd_delta)
            w, neff = boltzmann_reweight(np.asarray(u_frames(e, fr), np.float64) - u0, beta)
            neffs.append(neff / len(w))
            lw.append(float(loss(jnp.asarray(w @ o, jnp.float32))))
        rows["reweighting"].append((lw[0] - lw[1]) / (2 * a.fd_delta * eps0))
        rows["reweighting N_eff"].append(min(neffs))
    report["seconds_fluctuation_run"] = float(np.mean(t_fl))

    per = jax.jit(jax.vmap(lambda xx, dd: jax.jvp(lambda y: obs.per_frame(params0, y, s.box), (xx,), (dd,))))
    for h in a.horizons:
        key = f"pathwise {h} steps"
        rows[key], grow = [], []
        for seed in seeds:
            fr, _ = sample(s, params0, dataclasses.replace(cfg, steps=2 * cfg.report_every), seed=500 + seed)
            res = run_sensitivities(dataclasses.replace(s, params=params0), ["lj/epsilon/A"], steps=h, dt=cfg.dt,
                                    temperature=cfg.temperature, friction=cfg.friction, seed=seed,
                                    report_every=cfg.report_every, pos=jnp.asarray(fr[-1]), progress=False)  # fmt: skip
            x = jnp.asarray(res.positions, jnp.float32)
            dx = jnp.asarray(res.dx[:, 0], jnp.float32)
            o_t, do_t = per(x, dx)
            rows[key].append(dl_of(np.asarray(o_t).mean(0), np.asarray(do_t).mean(0)))
            grow.append(res)
        report[key + " advice"] = grow[0].estimator_advice
        report[key + " lyapunov_per_ps"] = [float(r.lyapunov) for r in grow]

    print(f"d(loss)/dε at ε = {eps0:.4f} (truth 0.996), loss {np.mean([v[1] for v in losses.values()]):.4f}; "
          f"FD {g_fd:.4f} ± {e_fd:.4f}; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("{:<24} {:>10} {:>10} {:>10} {:>10}".format("route", "mean", "sd (runs)", "vs FD", "(mean-FD)/σ"))
    table = []
    for name, vals in rows.items():
        v = np.array(vals, float)
        if name.endswith("N_eff"):
            print(f"{'  ' + name:<24} {v.mean():10.3f}")
            report["reweighting_neff_fraction"] = v.tolist()
            continue
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        sig = np.hypot(sd / np.sqrt(len(v)), e_fd)
        row = {"route": name, "mean": float(v.mean()), "sd": sd, "ratio_to_fd": float(v.mean() / g_fd),
               "z": float((v.mean() - g_fd) / sig), "values": v.tolist()}  # fmt: skip
        table.append(row)
        print(f"{name:<24} {row['mean']:10.4f} {sd:10.4f} {row['ratio_to_fd']:10.3f} {row['z']:10.2f}")
    report["routes"] = table
    for h in a.horizons:
        key = f"pathwise {h} steps"
        print(f"{key}: λ ≈ {np.mean(report[key + ' lyapunov_per_ps']):.3g}/ps; {report[key + ' advice']}")
    trust = _trust(table, report, a.horizons)
    report["trust"] = trust
    print("trust: " + trust)
    return report


def _trust(table, report, horizons):
    """One sentence for the run summary: the routes within 3σ and 25% of FD, and the pathwise verdict (dmd.chaos:
    pathwise only below the Lyapunov horizon)."""
    ok = [r["route"] for r in table if abs(r["z"]) < 3 and abs(r["ratio_to_fd"] - 1) < 0.25]
    off = [r["route"] for r in table if r["route"] not in ok]
    bounded = [h for h in horizons if report[f"pathwise {h} steps advice"].startswith("trust: pathwise")]
    lam = max(max(report[f"pathwise {h} steps lyapunov_per_ps"]) for h in horizons)
    if bounded:
        pathwise = (f"tangents stay bounded up to {max(bounded)} steps (λ ≤ {lam:.2g}/ps: below the Lyapunov horizon), "
                    "so pathwise is admissible there, but it is noisier and, where off, biased by the start state it "
                    "treats as fixed")  # fmt: skip
    else:
        pathwise = "no pathwise horizon tried stays below the Lyapunov horizon: do not use pathwise"
    return (f"within 3σ and 25% of FD: {', '.join(ok) or 'none'}; off: {', '.join(off) or 'none'}. Trust the "
            f"fluctuation route (reweighting for steps while N_eff stays high); {pathwise}.")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# memory against frames (issue 18: the fit's estimator streams over frames)


def memory_child(n_frames: int) -> None:
    """One fluctuation round of argon_diffuse.yaml with ``n_frames`` frames over 3000 steps; prints a JSON line."""
    import json
    import resource

    s, p, t, c, _ = load_fit_config(ROOT / "examples" / "fit_diffraction" / "argon_diffuse.yaml")
    c = dataclasses.replace(c, rounds=1, steps=3000, report_every=3000 // n_frames, equilibration=1000, progress=False)
    t0 = time.perf_counter()
    res = fit(s, p, t, c)
    h = res.history[0]
    print(json.dumps({"frames": h["n_frames"], "seconds": time.perf_counter() - t0, "loss": h["loss"],
                      "dpred_deps_mean": float(np.mean(h["jacobian_theta"])), "chunk": c.frame_chunk,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))  # fmt: skip


def memory_in_frames(counts) -> dict:
    """Peak RSS of one fit round per frame count, each in a fresh process (RSS peaks never come down)."""
    import json
    import subprocess

    rows = []
    for n in counts:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]  # fmt: skip
        rows.append(json.loads(out))
        r = rows[-1]
        print(f"{r['frames']:5d} frames: peak RSS {r['peak_rss_mb']:.0f} MB, round {r['seconds']:.1f} s, "
              f"loss {r['loss']:.4f}; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    m = 1051  # reflections of the example: per-frame o = [|F|², Re F, Im F]
    batch_mb = [r["frames"] * 3 * m * 4 / 2**20 for r in rows]
    ratio, more = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], rows[-1]["frames"] / rows[0]["frames"]
    print(
        f"peak RSS ratio {ratio:.3f} for {more:.0f}× the frames; holding all o [F, 3M] would need "
        f"{batch_mb[0]:.1f} → {batch_mb[-1]:.1f} MB (× P more for ∂o/∂θ)"
    )
    return {"memory_in_frames": rows, "batch_o_mb": batch_mb, "load": os.getloadavg()}


if __name__ == "__main__":
    main()
