"""Regenerate the example data: a rutile TiO2 powder pattern (Cu Kα1, 2θ 10–80°, pseudo-Voigt FWHM 0.15°,
1 % Gaussian noise) computed from the published structure, and a distorted starting CIF (a +2 %, c −1.5 %,
O x = 0.29 instead of 0.3048).

    python examples/xrd_refine/make_example.py --out examples/xrd_refine    # regenerate the shipped files
    python examples/xrd_refine/make_example.py --out /tmp/xrd --quick       # 2θ step 0.2° instead of 0.04° (tests)

``--out`` is required: the shipped files are rewritten only when asked for by name.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (rutile_pattern.csv, rutile_start.cif)")
    ap.add_argument("--quick", action="store_true", help="2θ step 0.2° instead of 0.04° (a test-size run)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    import gemmi

    from dmd.base.io import atomic_path
    from dmd.cli.commands.xrd_refine import cif_text
    from fitting.xrd_refine import make_pattern_model
    from fitting.xrd_structures import expand_spec, get_structure

    spec = get_structure("TiO2-rutile")
    cell, pos, els = expand_spec(spec)
    grid = np.arange(10.0, 80.0, 0.2 if args.quick else 0.04)
    y = np.asarray(make_pattern_model(els, cell, grid, margin=0.0)(cell, pos))
    y = y / y.max() * 1000.0
    rng = np.random.default_rng(7)
    y = np.maximum(y + rng.normal(0, 10.0, y.shape), 0.0)  # 1 % of the strongest peak
    with atomic_path(os.path.join(args.out, "rutile_pattern.csv")) as tmp:
        np.savetxt(tmp, np.column_stack([grid, y]), delimiter=",", fmt="%.4f", header="two_theta_deg,intensity",
                   comments="")  # fmt: skip
    start_cell = [4.594 * 1.02, 4.594 * 1.02, 2.959 * 0.985, 90, 90, 90]
    ops = [op.triplet() for op in gemmi.SpaceGroup(spec.spacegroup).operations()]
    text = cif_text("rutile_start", start_cell, spec.spacegroup, ["Ti1", "O1"], ["Ti", "O"],
                     np.array([[0, 0, 0], [0.29, 0.29, 0.0]]), ops, "distorted rutile start")  # fmt: skip
    with atomic_path(os.path.join(args.out, "rutile_start.cif")) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    main()
