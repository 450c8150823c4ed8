"""Make the targets of lj_rdf.yaml (and the recovery test): g(r) of the LJ fluid at the hidden parameters.

Hidden truth: argon σ = 0.34 nm, ε = 0.996 kJ/mol; N = 512 atoms at 240 K, cutoff 0.75 nm, Langevin dt = 0.02 ps,
γ = 2/ps (the settings of the fit, so the integrator's O(δt) sampling bias is the same in target and fit). g(r) on
30 bins to 0.9 nm, averaged over ``--runs`` independent runs of ``--steps`` steps each, at two state points:
``target_rdf.csv`` at ρσ³ = 0.8 (dense liquid) and ``target_rdf_low.csv`` at ρσ³ = 0.4 (``--density 0.4``).

Why two states: ε enters a dense liquid's g(r) only through T* = kT/ε and its estimate is strongly correlated with
σ's (correlation −0.98): a dense g(r) alone pins ln ε to only ~2% per 5,000-step round. At ρσ³ = 0.4 the attraction
shapes the first peak and the correlation is much weaker, so the two g(r) together determine both parameters.
Why long: the shipped targets average 10 × 20,000 steps each, so that target noise (sd of ln ε ~0.4% from the dense
target alone) stays below what the recovery test checks.

Resumable: each finished run is stored in ``<target>_runs.npz`` next to the CSV and skipped on restart.

    python examples/fit/make_target.py --out examples/fit/target_rdf.csv [--runs 10 --steps 20000]
    python examples/fit/make_target.py --density 0.4 --out examples/fit/target_rdf_low.csv
    python examples/fit/make_target.py --out /tmp/g.csv --quick    # 2 runs × 500 steps after 500 (tests)

``--out`` is required: the shipped targets are rewritten only when asked for by name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from dmd.base.io import atomic_path, savez, write_json
from dmd.models import lj_fluid
from fitting import observables as ob
from fitting.forcefield import FitConfig, sample

SETTINGS = dict(n_atoms=512, density=0.8, temperature=240.0, cutoff=0.75, dt=0.02, friction=2.0, r_max=0.9, n_bins=30)


def true_system(dtype=jnp.float32, density=None):
    """The LJ fluid at the hidden parameters; ``density`` is ρσ³ (default the dense state, 0.8)."""
    s = SETTINGS
    density = s["density"] if density is None else density
    return lj_fluid(s["n_atoms"], density=density, temperature=s["temperature"], cutoff=s["cutoff"], dtype=dtype,
                    seed=1)  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="independent runs averaged (default 10)")
    ap.add_argument("--steps", type=int, default=20000, help="production steps per run (default 20,000)")
    ap.add_argument("--density", type=float, default=SETTINGS["density"], help="ρσ³ of the state (default 0.8)")
    ap.add_argument("--equilibration", type=int, default=3000, help="steps before each run (default 3,000)")
    ap.add_argument("--quick", action="store_true", help="2 runs × 500 steps after 500 (a test-size run)")
    ap.add_argument("--out", type=Path, required=True, help="target CSV (JSON and _runs.npz are written beside it)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.steps, args.equilibration = 2, 500, 500
    s = dict(SETTINGS, density=args.density)
    true = true_system(density=args.density)
    g = ob.rdf(s["n_atoms"], np.asarray(true.box), r_max=s["r_max"], n_bins=s["n_bins"])
    cfg = FitConfig(steps=args.steps, equilibration=args.equilibration, report_every=20, dt=s["dt"],
                    temperature=s["temperature"], friction=s["friction"], progress=False)  # fmt: skip
    per_frame = ob.frame_values(g.per_frame, batch=16)  # lax.map in batches: memory ∝ batch × pairs × bins
    store = args.out.with_name(args.out.stem + "_runs.npz")
    means = []
    if store.exists():
        with np.load(store) as d:
            if int(d["steps"]) == args.steps and float(d.get("density", SETTINGS["density"])) == args.density:
                means = list(d["means"])
    for run in range(len(means), args.runs):
        frames, _ = sample(true, true.params, cfg, seed=1000 + run)
        means.append(np.asarray(per_frame(true.params, jnp.asarray(frames))).mean(0))
        savez(store, means=np.array(means), steps=args.steps, density=args.density)
        print(f"run {run + 1}/{args.runs} done", flush=True)
    means = np.array(means)
    target = means.mean(0)
    with atomic_path(args.out) as tmp:
        np.savetxt(tmp, np.column_stack([g.axis, target]), delimiter=",", header="r_nm,g", comments="", fmt="%.8g")
    write_json(
        args.out.with_suffix(".json"),
        {
            "settings": s,
            "sigma_nm": float(true.params["lj"]["sigma"][0]),
            "epsilon_kj_mol": float(true.params["lj"]["epsilon"][0]),
            "runs": len(means),
            "steps_per_run": args.steps,
            "equilibration": cfg.equilibration,
            "stderr_g": (means.std(0, ddof=1) / np.sqrt(len(means))).tolist() if len(means) > 1 else None,
        },
    )
    print(f"wrote {args.out} ({len(means)} runs × {args.steps} steps)")


if __name__ == "__main__":
    main()
