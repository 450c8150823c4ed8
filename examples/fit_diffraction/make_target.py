"""Make the diffuse target of argon_diffuse.yaml (and the recovery test): I_D of an LJ (argon-like) FCC crystal.

Hidden truth: argon σ = 0.34 nm, ε = 0.996 kJ/mol; an FCC crystal of ``--cells``³ conventional cells (4 atoms each)
at reduced density ρσ³ = 1.05 (fixed box, NVT), 60 K, cutoff 0.75 nm (or the largest the box allows: 0.67 nm at
3 cells), Langevin dt = 0.01 ps, γ = 2/ps (the fit's settings: the integrator's sampling bias is the same in
target and fit).
I_D = ⟨|F|²⟩ − |⟨F⟩|² on the box lattice to ``--d-min`` Å (P 1, one reflection per Friedel pair), averaged over
``--runs`` runs of ``--steps`` steps (each frame re-centred on the lattice: the thermostatted crystal's centre of mass
wanders), written as an MTZ (column IDIFF, electrons²) on the box cell.

Why ε is identifiable: in a (quasi-)harmonic crystal at fixed density every force constant scales with ε, so the
thermal displacements and I_D scale as kT/ε; the fit therefore uses the ``absolute`` objective (a profiled scale,
as ``cc`` has, would remove exactly that information).

    python examples/fit_diffraction/make_target.py [--cells 3 --runs 4 --steps 6000] --out argon_diffuse.mtz
    python examples/fit_diffraction/make_target.py --powder --runs 2 --steps 4000 --out argon_powder.csv
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from analysis.diffuse import diffuse_hkl
from analysis.mtz_io import write_mtz
from dmd.base.io import atomic_path
from dmd.models import lj_fluid
from fitting import observables as ob
from fitting.fit_config import fcc_positions
from fitting.fit_targets import powder_observable
from fitting.forcefield import FitConfig, sample

TRUTH = dict(sigma=0.34, epsilon=0.996)
POWDER = dict(wavelength=1.5406, profile={"W": 0.05})
SETTINGS = dict(density=1.05, temperature=60.0, dt=0.01, friction=2.0, d_min=2.0)


def crystal(cells: int, epsilon: float = TRUTH["epsilon"], dtype=jnp.float32):
    """The FCC argon crystal (``cells``³ cells) at ε; σ at the truth. Cutoff: 0.75 nm or just under half the box."""
    n = 4 * cells**3
    box = (n / SETTINGS["density"]) ** (1 / 3) * TRUTH["sigma"]
    cutoff = round(min(0.75, 0.49 * box - 0.11), 2)  # the neighbour skin (0.3σ) must fit in half the box too
    s = lj_fluid(n, SETTINGS["density"], SETTINGS["temperature"], cutoff=cutoff, sigma=TRUTH["sigma"],
                 epsilon=epsilon, dtype=dtype)  # fmt: skip
    import dataclasses

    return dataclasses.replace(s, positions=jnp.asarray(fcc_positions(cells, s.box), dtype))


def box_cell(system) -> np.ndarray:
    """``[6]`` Å, degrees of the cubic box."""
    return np.concatenate([10.0 * np.asarray(system.box, float), [90.0, 90.0, 90.0]])


def diffuse_of_runs(system, runs: int, steps: int, d_min: float, seed0: int = 100, report_every: int = 20):
    """``(hkl [M, 3], I_D [M])`` averaged over ``runs`` independent runs at the system's θ."""
    cell = box_cell(system)
    hkl, _ = diffuse_hkl(cell, d_min)
    obs = ob.diffuse_scattering(hkl, cell, ["Ar"] * system.n_atoms, reference=system.positions)
    return hkl, np.asarray(obs.predict(_mean_of_runs(system, obs, runs, steps, seed0, report_every)))


def powder_of_runs(system, runs: int, steps: int, seed0: int = 200, report_every: int = 20):
    """``(two_theta [G], pattern [G])`` of the powder example (Cu Kα1, 2θ 20-80° every 0.1°, W = 0.05 deg²)."""
    tt = np.round(np.arange(20.0, 80.0 + 1e-9, 0.1), 3)
    obs = powder_observable(system, tt, POWDER["wavelength"], POWDER["profile"])
    return tt, _mean_of_runs(system, obs, runs, steps, seed0, report_every)


def _mean_of_runs(system, obs, runs: int, steps: int, seed0: int, report_every: int) -> np.ndarray:
    """The observable's per-frame values averaged over frames, then over ``runs`` runs (seeds seed0, seed0 + 1, …)."""
    per = ob.frame_values(obs.per_frame)
    cfg = FitConfig(steps=steps, equilibration=1000, report_every=report_every, dt=SETTINGS["dt"],
                    temperature=SETTINGS["temperature"], friction=SETTINGS["friction"])  # fmt: skip
    means = []
    for r in range(runs):
        frames, _ = sample(system, system.params, cfg, seed=seed0 + r)
        means.append(np.asarray(per(system.params, jnp.asarray(frames))).mean(axis=0))
    return np.mean(means, axis=0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--d-min", type=float, default=SETTINGS["d_min"])
    ap.add_argument("--out", required=True, help="MTZ to write (the shipped one: argon_diffuse.mtz)")
    ap.add_argument("--powder", action="store_true", help="write the powder target CSV (argon_powder.csv) instead")
    a = ap.parse_args(argv)
    system = crystal(a.cells)
    if a.powder:
        tt, y = powder_of_runs(system, a.runs, a.steps)
        out = a.out
        with atomic_path(out) as tmp:
            np.savetxt(tmp, np.column_stack([tt, y]), delimiter=",", header="two_theta_deg,intensity", comments="")
        print(f"wrote {out}: {len(tt)} points")
        return
    hkl, i_d = diffuse_of_runs(system, a.runs, a.steps, a.d_min)
    write_mtz(a.out, hkl, {"IDIFF": i_d}, box_cell(system), "P 1", column_types={"IDIFF": "J"})
    print(f"wrote {a.out}: {len(hkl)} reflections, mean I_D {i_d.mean():.3f} e²")


if __name__ == "__main__":
    main()
