"""The gamma Xe-SAD set (CCP4i2 tutorial data, PDB 1GYU) prepared for `dmd merge`: AIMLESS's scales undone.

The data are not shipped with dmd: they are CCP4's tutorial data (CCP4 licence,
https://www.ccp4.ac.uk/ccp4license.php), in every CCP4 installation (``$CCP4/share/ccp4i2/demo_data/gamma``) and in
the ccp4i2 repository (github.com/ccp4/ccp4i2, ``demo_data/gamma``). Point ``DMD_GAMMA_XE`` at that folder; the
test ``tests/analysis/merging/test_real_sad.py`` and ``benchmarks/bench_merge_real_sad.py`` read two of its files:

- ``HKLOUT_unmerged.mtz``: AIMLESS 0.7.8 ``OUTPUT UNMERGED``, 44,990 observations on 100 images (Cu Kα, P2₁2₁2₁,
  1.79 Å, MOSFLM, partials summed), columns I SIGI (scaled) and SCALEUSED, XDET YDET ROT;
- ``merged_intensities_Xe.mtz``: the conventional merge of the same integration (AIMLESS, Iplus/Iminus): the oracle.

:func:`prepare` writes ``gamma_xe_unmerged.mtz`` with I, SIGI = AIMLESS's scaled values × SCALEUSED (its model is
I_obs = g·I_true with g = SCALEUSED: the scales undone; SCALEUSED's high/low-resolution ratio falls from 1.14 on
images 1–10 to 1.05 on images 91–100, the falloff of radiation decay, which the other reading would turn into
intensities that grow with dose) and ISCALED, SIGISCALED = the scaled values as written.

    python tests/data/merging/gamma_xe.py $CCP4/share/ccp4i2/demo_data/gamma OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ENV = "DMD_GAMMA_XE"
UNMERGED_IN = "HKLOUT_unmerged.mtz"
MERGED = "merged_intensities_Xe.mtz"
KEEP = ("H", "K", "L", "M/ISYM", "BATCH", "I", "SIGI", "ISCALED", "SIGISCALED", "SCALEUSED", "XDET", "YDET", "ROT")


def source_dir() -> Path | None:
    """The folder named by ``$DMD_GAMMA_XE`` when it holds both files, else None."""
    folder = os.environ.get(ENV)
    if folder and (Path(folder) / UNMERGED_IN).is_file() and (Path(folder) / MERGED).is_file():
        return Path(folder)
    return None


def prepare(src: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/gamma_xe_unmerged.mtz`` (scales undone, see the module docstring); returns its path and the
    path of the AIMLESS merge in ``src``."""
    import gemmi

    mtz = gemmi.read_mtz_file(str(Path(src) / UNMERGED_IN))
    data = np.array(mtz, copy=True)
    labels = [c.label for c in mtz.columns]
    col = {name: data[:, labels.index(name)] for name in labels}
    col["ISCALED"], col["SIGISCALED"] = col["I"].copy(), col["SIGI"].copy()
    col["I"], col["SIGI"] = col["ISCALED"] * col["SCALEUSED"], col["SIGISCALED"] * col["SCALEUSED"]
    types = {c.label: c.type for c in mtz.columns} | {"ISCALED": "J", "SIGISCALED": "Q"}
    out = gemmi.Mtz()
    out.spacegroup, out.cell, out.title = mtz.spacegroup, mtz.cell, "gamma Xe-SAD, AIMLESS scales undone"
    out.add_dataset("HKL_base")
    ds = mtz.column_with_label("I").dataset
    out.add_dataset(ds.dataset_name).wavelength = ds.wavelength
    out.datasets[-1].crystal_name, out.datasets[-1].project_name, out.datasets[-1].cell = (
        ds.crystal_name,
        "dmd",
        ds.cell,
    )
    for name in KEEP:
        out.add_column(name, types[name], dataset_id=0 if name in ("H", "K", "L") else 1)
    out.set_data(np.stack([col[name] for name in KEEP], axis=1).astype(np.float32))
    out.batches = mtz.batches
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gamma_xe_unmerged.mtz"
    out.write_to_file(str(path))
    return path, Path(src) / MERGED


if __name__ == "__main__":
    print(*prepare(Path(sys.argv[1]), Path(sys.argv[2])), sep="\n")
