"""Alanine dipeptide in vacuum (amber14, HBonds, 2 fs, 300 K) with OpenMM's LangevinMiddle scheme.

    python examples/alanine_dipeptide_md.py [OUT_DIR]

Uses the bundled dmd/data/alanine_dipeptide.pdb; writes an XTC trajectory and its log to OUT_DIR
(default ./ala-example).
"""

import sys
from pathlib import Path

import dmd.data
from dmd.openmm_system import system_from_pdb
from dmd.simulate import RunConfig, simulate

out = Path(sys.argv[1] if len(sys.argv) > 1 else "ala-example")
pdb = Path(dmd.data.__file__).with_name("alanine_dipeptide.pdb")
system = system_from_pdb(pdb, forcefield=["amber14-all.xml"], nonbonded="NoCutoff", constraints="HBonds")
result = simulate(
    system,
    RunConfig(
        steps=1000,
        dt=0.002,
        temperature=300.0,
        friction=1.0,
        integrator="baoab",
        report_every=100,
        out=str(out / "traj.xtc"),
        inputs=(pdb,),
        progress=False,
    ),
)
s = result.summary
print(
    f"{s['system']}: {s['final_step']} steps, <U> = {s['mean_potential_kj_mol']:.1f} kJ/mol, "
    f"<T> = {s['mean_temperature_K']:.1f} K, {s['steps_per_s']:.0f} steps/s"
)
