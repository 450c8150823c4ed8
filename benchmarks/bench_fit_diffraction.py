"""Benchmark of force-field fitting to diffuse scattering (examples/fit_diffraction/argon_diffuse.yaml).

Prints, in one run on the same machine:

* per-frame structure factors F(h, t) of the fit's diffuse observable (108-atom argon FCC box, 1051 reflections to
  2 Å) through the production route (spread + FFT, vmapped over frames by ``fitting.observables.frame_values``) and
  through the direct sum (:func:`analysis.structure_factors.structure_factors_direct`), in frames per second and
  their ratio;
* seconds per fit round (simulation + estimator + update) of a short fit from ε + 20%.

    python benchmarks/bench_fit_diffraction.py [--frames 200 --rounds 3 --steps 1500]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from fitting import observables as ob  # noqa: E402
from fitting.fit_config import load_fit_config  # noqa: E402
from fitting.forcefield import fit  # noqa: E402


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
    a = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
