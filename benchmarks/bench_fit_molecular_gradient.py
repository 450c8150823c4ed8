"""Benchmark: the diffuse loss gradient dL/dσ of examples/fit_diffraction/peptide_diffuse.yaml at a fixed σ, round
after round, with the replicas continued (the fit's former default) or restarted from the crystal every round.

θ is held (sgd, learning rate 0) at ``--sigma`` nm for ``--rounds`` rounds of the example (4 replicas of 3000 steps,
each replica's own I_D averaged); each round's dL/dσ (nm⁻¹) is the ``absolute`` objective's
2/M Σ (pred − data)/rms(data)² · dpred/dσ from the round's prediction and fluctuation Jacobian (history). Printed
per round, with the mean ± its standard error over rounds and the load. A σ where the fit should move (say +6%) whose
continued replicas give a mean gradient near 0 while fresh replicas do not is a bias of continuing, not noise.

Drift (fit18j): the loss against the target of the mean prediction over all rounds (each round's prediction the mean
of its R replica windows), of the early and the late half of the rounds, and the loss that sampling noise alone
would give (the rounds' spread over their number, plus the target's own noise: a 16-window target, ``--target-runs``,
made as these windows are): at the truth, replicas that sample what the target sampled give the noise's loss, and
replicas that drift away from it give more, growing from the early half to the late one.

    nice -n 19 python benchmarks/bench_fit_molecular_gradient.py --sigma 0.3137 --restart continue --rounds 5
    nice -n 10 python benchmarks/bench_fit_molecular_gradient.py --sigma 0.29599 --restart continue --rounds 10
    nice -n 10 python benchmarks/bench_fit_molecular_gradient.py --sigma 0.29599 --restart crystal \
        --equilibration 2000 --rounds 8
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "fit_diffraction" / "peptide_diffuse.yaml"
NAME, TRUTH = "NonbondedForce/sigma/protein-O", 0.29599


def gradients(sigma: float, restart: str, equilibration: int, rounds: int, seed: int, replicas: int) -> list:
    """Per-round ``(dL/dσ, loss)`` at σ held fixed."""
    import jax.numpy as jnp

    from dmd.params import select
    from fitting.fit_config import load_fit_config
    from fitting.forcefield import fit

    system, params, targets, cfg, _ = load_fit_config(CONFIG)
    sel = select(system.param_labels, [NAME])
    system = dataclasses.replace(system, params=sel.set(system.params, jnp.full((1,), sigma, jnp.float32)))
    cfg = dataclasses.replace(cfg, rounds=rounds, seed=seed, restart=restart, equilibration=equilibration,
                              replicas=replicas, learning_rate=0.0, average_last=0, progress=False)  # fmt: skip
    res = fit(system, params, targets, cfg)
    data = np.asarray(targets[0].data, float)
    scale = np.mean(data**2)
    out = []
    for h in res.history:
        pred = np.asarray(h["prediction"][0], float)
        jac = np.asarray(h["jacobian_theta"], float)[:, 0]
        out.append((float(2 * np.mean((pred - data) * jac) / scale), float(np.mean((pred - data) ** 2) / scale),
                    h["loss"], h["seconds"], pred))  # fmt: skip
    return out


def drift(preds, data, replicas: int, target_runs: int = 16) -> dict:
    """Losses (the ``absolute`` objective) against ``data`` of the mean of the rounds' predictions ``preds [T, M]``
    (each the mean of ``replicas`` windows): all rounds, the early and the late half, and what sampling noise alone
    gives for each (the spread of the round means over the rounds averaged, plus a ``target_runs``-window target's own
    noise, taking the target's windows as noisy as these)."""
    preds, data = np.asarray(preds, float), np.asarray(data, float)
    scale, n, h = np.mean(data**2), len(preds), len(preds) // 2
    var_round = float(np.mean(preds.var(axis=0, ddof=1)) / scale)  # of one round's mean of R windows
    target = var_round * replicas / target_runs

    def loss(p):
        return float(np.mean((p.mean(axis=0) - data) ** 2) / scale)

    return {"all": loss(preds), "all_noise": var_round / n + target, "early": loss(preds[:h]),
            "late": loss(preds[h:]), "half_noise": var_round / h + target,
            "intensity_ratio": float(preds.mean() / data.mean())}  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sigma", type=float, default=1.06 * TRUTH)
    ap.add_argument("--restart", default="continue")
    ap.add_argument("--equilibration", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--target-runs", type=int, default=16, help="windows averaged in the target (drift's noise)")
    a = ap.parse_args(argv)
    t0 = time.process_time()
    rows = gradients(a.sigma, a.restart, a.equilibration, a.rounds, a.seed, a.replicas)
    g = np.array([r[0] for r in rows])
    for i, (gi, lo, lo_fit, s, _) in enumerate(rows):
        print(f"round {i}: dL/dσ {gi:+.3f} /nm (2Jᵀr in z = ln σ: {a.sigma * gi:+.3f}), loss {lo:.4f} "
              f"(fit's {lo_fit:.4f}), {s:.1f} s")  # fmt: skip
    se = g.std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else float("nan")
    print(f"σ {a.sigma:.4f} ({100 * (a.sigma / TRUTH - 1):+.1f}%), restart {a.restart}, equilibration "
          f"{a.equilibration}, seed {a.seed}, {a.replicas} replicas: mean dL/dσ {g.mean():+.3f} ± {se:.3f} /nm over "
          f"{len(g)} rounds, round 0 {g[0]:+.3f}; CPU {time.process_time() - t0:.0f} s, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    if len(rows) >= 2:
        from fitting.fit_config import load_fit_config

        d = drift([r[4] for r in rows], load_fit_config(CONFIG)[2][0].data, a.replicas, a.target_runs)
        print(f"drift: loss of the mean prediction of all {len(rows)} rounds {d['all']:.4f} (noise alone "
              f"{d['all_noise']:.4f}), early half {d['early']:.4f}, late half {d['late']:.4f} (noise alone "
              f"{d['half_noise']:.4f}); mean I_D / target {d['intensity_ratio']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
