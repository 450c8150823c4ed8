"""Make the target of argon_powder_npt.yaml: the powder pattern of an LJ (argon-like) FCC crystal at constant pressure.

Hidden truth: σ = 0.34 nm, ε = 0.996 kJ/mol; 108 atoms (3³ FCC cells) at 60 K and ``PRESSURE_BAR``, plain cutoff
0.6 nm over all pairs (no neighbour list: the box may shrink to 0.8× in the fit, and 0.6 nm stays under half of it),
Langevin dt = 0.01 ps, γ = 2/ps, a Monte Carlo volume move every 10 steps (the fit's settings). The pattern (Cu Kα1,
2θ 15–60° every 0.1°, a broad profile W = 25 deg², FWHM ≈ 5°) is the mean over ``--runs`` NPT runs of the per-frame
pattern, each frame taken as the P 1 cell of its own box (:func:`fitting.fit_targets.powder_observable` with
``follow_box``), so the peak positions carry the lattice constant and with it σ.

Why the broad profile: the fit starts 20% off in σ, i.e. every peak ~20% off in d (the (111) at 36.6° instead of
29.5°). A gradient of an R_wp between patterns needs their peaks to overlap; with sharp peaks a 7° shift leaves the
loss flat in σ. A synthetic target can choose its width; real data would be fitted coarse to fine.

    python examples/fit/make_powder_npt_target.py [--runs 2 --steps 6000] --out argon_powder_npt.csv
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from dmd.base.io import atomic_path
from dmd.models import lj_fluid
from fitting import observables as ob
from fitting.fit_config import fcc_positions
from fitting.fit_targets import powder_observable
from fitting.forcefield import FitConfig, sample_npt

TRUTH = dict(sigma=0.34, epsilon=0.996)
PRESSURE_BAR = 1.0
POWDER = dict(wavelength=1.5406, profile={"W": 25.0}, two_theta=(15.0, 60.0))
SETTINGS = dict(density=1.05, temperature=60.0, dt=0.01, friction=2.0, cutoff=0.6, barostat_every=10)


def crystal(sigma: float = TRUTH["sigma"], dtype=jnp.float32):
    """The 108-atom FCC crystal at σ (box from ρσ³ = 1.05), all pairs (no neighbour list)."""
    s = lj_fluid(108, SETTINGS["density"], SETTINGS["temperature"], cutoff=SETTINGS["cutoff"], skin=0.02, sigma=sigma,
                 epsilon=TRUTH["epsilon"], dtype=dtype)  # fmt: skip
    return dataclasses.replace(s, positions=jnp.asarray(fcc_positions(3, s.box), dtype), neighbor_fn=None)


def grid() -> np.ndarray:
    lo, hi = POWDER["two_theta"]
    return np.round(np.arange(lo, hi + 1e-9, 0.1), 3)


def pattern_of_runs(system, runs: int, steps: int, seed0: int = 300):
    """``(two_theta [G], pattern [G], mean box nm)`` averaged over ``runs`` NPT runs at the system's θ."""
    tt = grid()
    obs = powder_observable(system, tt, POWDER["wavelength"], POWDER["profile"], follow_box=True)
    per = ob.frame_values(obs.per_frame)
    cfg = FitConfig(steps=steps, equilibration=2000, report_every=50, dt=SETTINGS["dt"],
                    temperature=SETTINGS["temperature"], friction=SETTINGS["friction"], pressure=PRESSURE_BAR,
                    barostat_every=SETTINGS["barostat_every"])  # fmt: skip
    means, boxes = [], []
    for r in range(runs):
        frames, box, _, _ = sample_npt(system, system.params, cfg, seed=seed0 + r)
        means.append(np.asarray(per(system.params, jnp.asarray(frames), jnp.asarray(box))).mean(axis=0))
        boxes.append(np.asarray(box).mean(axis=0))
    return tt, np.mean(means, axis=0), np.mean(boxes, axis=0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--out", type=Path, required=True, help="CSV to write (the shipped one: argon_powder_npt.csv)")
    args = ap.parse_args(argv)
    tt, y, box = pattern_of_runs(crystal(), args.runs, args.steps)
    header = (f"two_theta_deg,intensity  # argon FCC 108 atoms, sigma {TRUTH['sigma']} nm, epsilon {TRUTH['epsilon']}"
              f" kJ/mol, {SETTINGS['temperature']} K, {PRESSURE_BAR} bar, mean box {box[0]:.4f} nm, "
              f"{args.runs} x {args.steps} steps")  # fmt: skip
    with atomic_path(args.out) as tmp:
        np.savetxt(tmp, np.column_stack([tt, y]), delimiter=",", header=header.split("  #")[0], comments="",
                   fmt="%.6g")  # fmt: skip
    print(f"wrote {args.out}: {len(tt)} points, mean box {box} nm ({header.split('# ')[1]})")


if __name__ == "__main__":
    main()
