"""A monoclinic peptide crystal from file to diffuse map: build, simulate under anisotropic NPT, diffuse, plot.

Data: ``5e5z.pdb`` beside this script (PDB 5E5Z, P 1 21 1; see README.md). Writes into ``--out``: the supercell
``crystal.pdb`` (+ ``.json``), the NPT trajectory ``md.dcd`` (+ logs, ``md.npt.csv`` box per frame), the diffuse
map ``diffuse.mtz`` (+ ``.json`` with the parent cell and the symmetry CC), and ``diffuse_h0l.png``.
``--quick``: 20 steps (for the test); default 2500 steps (5 ps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gemmi
import numpy as np

from dmd.base.plotting import new_figure, save_figure
from dmd.cli import main as dmd

HERE = Path(__file__).resolve().parent
SUPERCELL = ("2", "2", "1")


def run(out: Path, quick: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    crystal = out / "crystal.pdb"
    steps, every = ("20", "10") if quick else ("2500", "50")
    for path in out.glob("*"):  # a rerun starts afresh (the commands refuse to overwrite)
        path.unlink()
    assert dmd(["crystal", str(HERE / "5e5z.pdb"), "--supercell", *SUPERCELL, "--add-hydrogens", "--solvate",
                "--out", str(crystal)]) == 0  # fmt: skip
    assert dmd(["simulate", "--pdb", str(crystal), "--forcefield", "amber14-all.xml", "amber14/tip3pfb.xml",
                "--steps", steps, "--report-every", every, "--cutoff", "0.7", "--pressure", "1",
                "--barostat", "anisotropic", "--barostat-every", "10", "--no-progress",
                "--out", str(out / "md.dcd")]) == 0  # fmt: skip
    assert dmd(["diffuse", "--traj", str(out / "md.dcd"), "--top", str(crystal), "--d-min", "3",
                "--supercell", *SUPERCELL, "--spacegroup", "P 1 21 1", "--no-progress",
                "--out", str(out / "diffuse.mtz")]) == 0  # fmt: skip
    mtz = gemmi.read_mtz_file(str(out / "diffuse.mtz"))
    arr = np.asarray(mtz.array)
    labels = [c.label for c in mtz.columns]
    parent = arr[:, :3] / np.asarray(SUPERCELL, float)  # h = H / n on the parent reciprocal lattice
    plane = parent[:, 1] == 0
    fig, ax = new_figure()
    sc = ax.scatter(parent[plane, 0], parent[plane, 2], c=np.log10(np.maximum(arr[plane, labels.index("ID_SYM")],
                    1e-3)), s=12, cmap="viridis")  # fmt: skip
    ax.set_xlabel("h (parent cell)")
    ax.set_ylabel("l (parent cell)")
    ax.set_title("5E5Z supercell: log10 I_D (2/m average), k = 0")
    fig.colorbar(sc, ax=ax, label="log10 I_D (e²)")
    save_figure(fig, out / "diffuse_h0l.png")
    summary = json.loads((out / "diffuse.json").read_text())
    npt = np.loadtxt(out / "md.npt.csv", delimiter=",", skiprows=1, ndmin=2)
    result = {
        "n_atoms": json.loads((out / "crystal.json").read_text())["atoms"],
        "density_g_cm3": npt[:, 2].tolist(),
        "parent_cell": summary["parent_cell"],
        "cc_raw_vs_symmetry_averaged": summary["symmetry_cc"]["cc_total"],
        "n_reflections": summary["n_reflections"],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("crystal_example"))
    p.add_argument("--quick", action="store_true", help="20 steps (the test's run)")
    a = p.parse_args()
    run(a.out, a.quick)
