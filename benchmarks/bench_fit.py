"""Force-field fitting benchmark: the three gradient routes against finite differences of long-run averages.

For an LJ fluid (argon, ρσ³ = 0.8, 240 K) it estimates J = d⟨o⟩/dθ for o = [g(r) on 30 bins, U/N] and
θ = (ε, σ) with the pathwise, fluctuation and reweighting routes of :mod:`fitting.forcefield` (one round each),
and compares with central finite differences of long runs at θ ± δ (independent noise, block-averaged error
bars). It prints, per route and parameter, the relative error ‖J_route − J_FD‖/‖J_FD‖, the FD noise level on the
same scale, and the time per round; then the time of a whole recovery fit (ε, σ from g(r), 20% off).

    python benchmarks/bench_fit.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from dmd.models import lj_fluid
from fitting import observables as ob
from fitting.forcefield import FitConfig, FitParam, FitTarget, fit, sample


def _frames_mean(obs_fns, params, frames):
    vals = jax.vmap(lambda x: jnp.concatenate([f(params, x) for f in obs_fns]))(jnp.asarray(frames))
    return np.asarray(vals)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short runs (minutes)")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    temp = 240.0
    n = 128
    system = lj_fluid(n, density=0.8, temperature=temp, cutoff=0.75, dtype=jnp.float64, seed=1)
    g = ob.rdf(n, np.asarray(system.box), r_max=0.9, n_bins=30)
    u = ob.mean_energy(system, per_atom=True)
    steps = 4000 if args.quick else 20000
    fd_steps = 20000 if args.quick else 100000
    cfg = FitConfig(rounds=1, steps=steps, equilibration=1000, report_every=20, dt=0.005, temperature=temp,
                    friction=2.0, progress=False)  # fmt: skip
    names = ["lj/epsilon/A", "lj/sigma/A"]
    fps = [FitParam((nm,), lower=0.0) for nm in names]
    targets = [FitTarget(g, np.ones(30)), FitTarget(u, np.array([-5.0]))]

    routes = {}
    for est in ("fluctuation", "reweighting", "pathwise"):
        c = dataclasses.replace(cfg, estimator=est, steps=min(steps, 2000) if est == "pathwise" else steps)
        t0 = time.perf_counter()
        res = fit(system, fps, targets, c)
        routes[est] = (np.asarray(res.history[0]["jacobian_theta"]), time.perf_counter() - t0)

    # finite differences of long-run averages, δ = 2% of each parameter, 4 independent blocks each side
    theta0 = np.array([float(system.params["lj"]["epsilon"][0]), float(system.params["lj"]["sigma"][0])])
    fd_cols, fd_err = [], []
    t0 = time.perf_counter()
    for p in range(2):
        blocks = {}
        for sgn in (+1, -1):
            th = theta0.copy()
            th[p] *= 1 + sgn * 0.02
            params = {"lj": {"epsilon": jnp.array([th[0]]), "sigma": jnp.array([th[1]])}}
            means = []
            for b in range(4):
                frames, _ = sample(system, params, dataclasses.replace(cfg, steps=fd_steps // 4), seed=1000 + 10 * b)
                means.append(_frames_mean([g.per_frame, u.per_frame], params, frames).mean(0))
            blocks[sgn] = np.array(means)
        diff = (blocks[1] - blocks[-1]) / (2 * 0.02 * theta0[p])
        fd_cols.append(diff.mean(0))
        fd_err.append(diff.std(0, ddof=1) / 2)
    t_fd = time.perf_counter() - t0
    J_fd = np.array(fd_cols).T  # [K, 2]
    E_fd = np.array(fd_err).T

    print(f"LJ fluid N={n}, T={temp} K, observables g(r)[30] + U/N; FD: {fd_steps} steps per side ({t_fd:.0f} s)")
    print(f"{'route':<12} {'param':<14} {'rel.err vs FD':>14} {'FD noise':>10} {'s/round':>8}")
    for est, (J, secs) in routes.items():
        for p, nm in enumerate(names):
            err = np.linalg.norm(J[:, p] - J_fd[:, p]) / np.linalg.norm(J_fd[:, p])
            noise = np.linalg.norm(E_fd[:, p]) / np.linalg.norm(J_fd[:, p])
            print(f"{est:<12} {nm:<14} {err:14.3f} {noise:10.3f} {secs:8.1f}")

    # whole recovery fit, timed
    true = lj_fluid(n, density=0.8, temperature=temp, cutoff=0.75, dtype=jnp.float32, seed=1)
    frames, _ = sample(true, true.params, dataclasses.replace(cfg, steps=fd_steps // 2), seed=99)
    target = _frames_mean([g.per_frame], true.params, frames).mean(0)
    start = dataclasses.replace(true, params={"lj": {"sigma": true.params["lj"]["sigma"] * 0.8,
                                                     "epsilon": true.params["lj"]["epsilon"] * 1.2}})  # fmt: skip
    t0 = time.perf_counter()
    res = fit(start, fps, [FitTarget(g, target)], dataclasses.replace(cfg, rounds=8, steps=3000, average_last=4))
    secs = time.perf_counter() - t0
    for p, nm in enumerate(names):
        print(f"recovery {nm}: fitted {res.values[nm]:.5g}, true {theta0[p]:.5g}, "
              f"error {100 * (res.values[nm] / theta0[p] - 1):+.2f}%")  # fmt: skip
    print(f"recovery fit: 8 rounds in {secs:.1f} s ({secs / 8:.1f} s per round of 3,600 steps)")


if __name__ == "__main__":
    main()
