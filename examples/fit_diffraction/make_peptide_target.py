"""Make the diffuse target of peptide_diffuse.yaml: I_D of the 5E5Z peptide crystal (Amber14, PME) at the true ε.

Crystal: ``5e5z_cell.pdb``, one P 1 21 1 unit cell of PDB 5E5Z (LVHSSN + 1 water, 2 copies, 188 atoms with
hydrogens; monoclinic a 9.643, b 9.609, c 19.029 Å, β 101.22°), built by
``dmd crystal examples/crystal/5e5z.pdb --supercell 1 1 1 --add-hydrogens --solvate``. Force field amber14-all +
tip3p-fb, PME with a 0.42 nm real-space cutoff (+0.05 nm skin: what half the 0.96 nm cell allows), HBonds
constraints, NVT Langevin 300 K, dt 2 fs, γ = 2/ps.

Hidden truth: the Amber14 LJ diameter of the carbonyl-oxygen type ``protein-O`` (σ = 0.29599 nm: 12 of the cell's
188 atoms, the C=O oxygens of the backbone and the Asn side chain). I_D = ⟨|F|²⟩ − |⟨F⟩|² on the box lattice to
``--d-min`` Å (P 1, one reflection per Friedel pair; each frame re-centred on the lattice), averaged over ``--runs``
runs of ``--steps`` steps, written as an MTZ (column IDIFF, electrons²) on the monoclinic box cell. Scattering
factors per atom from the topology's elements.

``--scan TYPE --field epsilon|sigma``: the sensitivity instead: the loss of I_D at θ(TYPE) × {0.8, 0.9, 1.1, 1.2}
(2 runs) against the truth (4 runs; ``absolute`` objective, the fit's), and the noise floor (two halves of the
truth's runs against each other). Measured (10000 steps a run, load ~9): σ(protein-O) × 0.8, 0.9, 1.1, 1.2 →
loss 0.054, 0.062, 0.017, 0.166 against a noise floor of 0.011 (half vs half; ~0.008 expected for 2 vs 4 runs);
ε(protein-O) × 0.8 → 0.0065, inside the noise: the diffuse signal does not see the O well depth at this length,
it sees its diameter (the H-bond N···O contact). (The scan ran before the
re-centring used the circular mean, so its later frames may carry a drift error; the shipped target is after it.)

The target is the fit's own estimator at the truth: the mean over runs of each run's own I_D, a run being one fit
round's window (3000 steps, 150 frames, after 2000 steps of equilibration), and a replicated fit averages its
replicas' own I_D the same way (``fitting.forcefield_estimators.replica_averaged_prediction``). I_D of a window
grows with its length (|⟨F⟩|² carries the window mean's own fluctuation): the former target, 4 runs of 12000 steps,
stood ~5% above what a 150-frame round predicts at the truth (docs/fitting.md).

    python examples/fit_diffraction/make_peptide_target.py [--runs 16 --steps 3000 --out peptide_diffuse.mtz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from analysis.diffuse import diffuse_hkl
from analysis.mtz_io import write_mtz
from dmd.openmm_system import system_from_pdb
from dmd.params import select
from fitting import observables as ob
from fitting.fit_targets import box_cell, topology_elements
from fitting.forcefield import FitConfig, sample
from fitting.forcefield_sampling import make_sampler

HERE = Path(__file__).resolve().parent
PDB = HERE / "5e5z_cell.pdb"
FORCEFIELD = ["amber14-all.xml", "amber14/tip3pfb.xml"]
TYPE, FIELD = "protein-O", "sigma"
SETTINGS = dict(cutoff=0.42, skin=0.05, temperature=300.0, dt=0.002, friction=2.0, d_min=2.0, report_every=20)


def crystal(scale: float = 1.0, type_name: str = TYPE, field: str = FIELD):
    """The 5E5Z unit-cell system with θ = ``field`` (epsilon | sigma) of LJ type ``type_name`` × ``scale``
    (float32), and that θ."""
    s = system_from_pdb(str(PDB), forcefield=FORCEFIELD, nonbonded="PME", cutoff=SETTINGS["cutoff"],
                        constraints="HBonds", skin=SETTINGS["skin"])  # fmt: skip
    sel = select(s.param_labels, [f"NonbondedForce/{field}/{type_name}"])
    eps = np.asarray(sel.get(s.params), float)[0]
    import dataclasses

    return dataclasses.replace(s, params=sel.set(s.params, jnp.full((1,), eps * scale))), eps * scale


def diffuse_runs(system, runs: int, steps: int, d_min: float, seed0: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(hkl [M, 3], I_D per run [runs, M])`` at the system's θ."""
    cell = box_cell(system.box)
    hkl, _ = diffuse_hkl(cell, d_min)
    elements, atoms = topology_elements(system)
    obs = ob.diffuse_scattering(hkl, cell, elements, atom_indices=atoms, reference=system.positions)
    per = ob.frame_values(obs.per_frame)
    cfg = FitConfig(steps=steps, equilibration=2000, report_every=SETTINGS["report_every"], dt=SETTINGS["dt"],
                    temperature=SETTINGS["temperature"], friction=SETTINGS["friction"])  # fmt: skip
    sampler = make_sampler(system, cfg)
    out = []
    for r in range(runs):
        frames, _ = sample(system, system.params, cfg, seed=seed0 + r, sampler=sampler)
        out.append(np.asarray(obs.predict(np.asarray(per(system.params, jnp.asarray(frames))).mean(axis=0))))
    return hkl, np.asarray(out)


def absolute_loss(pred, data) -> float:
    """The fit's ``absolute`` objective: Σ ((pred − data)/rms(data))² / M."""
    return float(np.mean(((pred - data) / np.sqrt(np.mean(data**2))) ** 2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--d-min", type=float, default=SETTINGS["d_min"])
    ap.add_argument("--scan", default=None, help="an LJ type: print loss vs θ scale instead of writing the target")
    ap.add_argument("--field", default=FIELD, help="epsilon or sigma (--scan)")
    ap.add_argument("--out", default=str(HERE / "peptide_diffuse.mtz"))
    a = ap.parse_args(argv)
    if a.scan:
        system, _ = crystal(1.0, a.scan, a.field)
        _, truth = diffuse_runs(system, a.runs, a.steps, a.d_min)
        half = len(truth) // 2
        print(f"{a.scan}: noise floor (half vs half) {absolute_loss(truth[:half].mean(0), truth[half:].mean(0)):.3e}")
        for scale in (0.8, 0.9, 1.1, 1.2):
            sys_s, _ = crystal(scale, a.scan, a.field)
            _, i_d = diffuse_runs(sys_s, half, a.steps, a.d_min, seed0=300)
            print(f"{a.scan} {a.field} × {scale}: loss {absolute_loss(i_d.mean(0), truth.mean(0)):.3e}, mean I_D ratio "
                  f"{i_d.mean() / truth.mean():.3f}", flush=True)  # fmt: skip
        return
    system, _ = crystal()
    hkl, i_d = diffuse_runs(system, a.runs, a.steps, a.d_min)
    write_mtz(a.out, hkl, {"IDIFF": i_d.mean(0)}, box_cell(system.box), "P 1", column_types={"IDIFF": "J"})
    print(f"wrote {a.out}: {len(hkl)} reflections, mean I_D {i_d.mean():.3f} e²")


if __name__ == "__main__":
    main()
