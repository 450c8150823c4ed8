"""Refine the distorted rutile start against the example pattern with the space-group constraint.

    python examples/xrd_refine/run_example.py [OUT_DIR]      (default: runs/xrd_refine_example)

Equivalent to: dmd xrd-refine examples/xrd_refine/rutile_pattern.csv --start examples/xrd_refine/rutile_start.cif
               --constraint spacegroup --energy-weight 0.2 --steps 300 --starts 2 --out OUT_DIR
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def main(argv=None):
    from dmd.cli import main as dmd_main

    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else "runs/xrd_refine_example"
    return dmd_main([
        "xrd-refine", os.path.join(HERE, "rutile_pattern.csv"), "--start", os.path.join(HERE, "rutile_start.cif"),
        "--constraint", "spacegroup", "--energy-weight", "0.2", "--steps", "300", "--starts", "2", "--out", out,
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
