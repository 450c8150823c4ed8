"""``dmd xrd``: powder X-ray diffraction pattern of a structure (.cif or .pdb).

Writes ``OUT`` (CSV: two_theta_deg, intensity; the profiled pattern scaled to a maximum of 100),
``OUT_sticks.csv`` (h, k, l, d, 2θ, |F|², multiplicity, LP, intensity scaled to 100), a PNG plot and a JSON
summary beside it. Form factors: IT92; Debye-Waller factors from the file's B (U) values.
"""

from __future__ import annotations

import argparse
import os

from dmd.base.errors import UserInputError
from dmd.cli.common import add_overwrite_argument, check_input, check_outputs, emit

HELP = "powder XRD pattern (sticks + profile) of a .cif/.pdb structure"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd xrd`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("structure", help="structure file: small-molecule CIF, mmCIF or PDB (with cell)")
    p.add_argument("--wavelength", default="CuKa", help="Å or anode name (CuKa, MoKa, ...); default CuKa")
    p.add_argument("--two-theta", type=float, nargs=2, default=(5.0, 90.0), metavar=("MIN", "MAX"), help="degrees")
    p.add_argument("--step", type=float, default=0.02, help="2θ step of the profiled pattern, degrees")
    p.add_argument(
        "--caglioti",
        type=float,
        nargs=3,
        default=(0.01, -0.005, 0.005),
        metavar=("U", "V", "W"),
        help="FWHM² = U tan²θ + V tanθ + W (degrees²)",
    )
    p.add_argument("--eta", type=float, default=0.5, help="pseudo-Voigt Lorentzian fraction (0 = Gaussian)")
    p.add_argument("--monochromator", type=float, default=None, help="monochromator 2θ (degrees) for LP")
    p.add_argument("--out", required=True, help="output CSV path (pattern)")
    add_overwrite_argument(p, "OUT.csv and the files beside it")


def run(args) -> int:
    lo, hi = args.two_theta
    if not (0 <= lo < hi <= 180):
        raise UserInputError(f"--two-theta {lo} {hi}: need 0 ≤ MIN < MAX ≤ 180 degrees")
    if args.step <= 0 or args.step > (hi - lo) / 10:
        raise UserInputError(f"--step {args.step}: give a positive step well below the 2θ range (e.g. 0.02)")
    if not 0 <= args.eta <= 1:
        raise UserInputError(f"--eta {args.eta}: must lie in [0, 1]")
    if not args.out.lower().endswith(".csv"):
        raise UserInputError(f"--out {args.out}: give a .csv path")
    check_input(args.structure, "", "structure")
    stem = os.path.splitext(args.out)[0]
    products = [f"{stem}_sticks.csv", f"{stem}.png", f"{stem}.json"]
    check_outputs(args.out, inputs=[args.structure], overwrite=args.overwrite, writes=products)

    import numpy as np

    from analysis import powder
    from analysis.structure_io import read_structure
    from dmd.base.io import atomic_path, write_json
    from dmd.base.plotting import save_figure

    try:
        lam = powder.wavelength_of(args.wavelength)
    except ValueError as exc:
        raise UserInputError(f"--wavelength: {exc}") from exc
    xs = read_structure(args.structure)
    try:
        sticks = powder.powder_sticks(
            xs, wavelength=lam, two_theta_range=(lo, hi), monochromator_two_theta=args.monochromator
        )
    except ValueError as exc:
        raise UserInputError(f"{args.structure}: {exc}") from exc
    scale = 100.0 / sticks.intensity.max()
    grid = np.arange(lo, hi + args.step / 2, args.step)
    U, V, W = args.caglioti
    shape = "gaussian" if args.eta == 0 else "pseudo-voigt"
    y = np.asarray(powder.profile(grid, sticks.two_theta, sticks.intensity, U=U, V=V, W=W, eta=args.eta, shape=shape))
    y = y / y.max() * 100.0
    inputs = [args.structure]
    with atomic_path(args.out, inputs) as tmp:
        np.savetxt(tmp, np.column_stack([grid, y]), delimiter=",", header="two_theta_deg,intensity", comments="",
                   fmt="%.6f")  # fmt: skip
    sticks_path = stem + "_sticks.csv"
    table = np.column_stack(
        [sticks.hkl, sticks.d, sticks.two_theta, sticks.f2, sticks.multiplicity, sticks.lp, sticks.intensity * scale]
    )
    with atomic_path(sticks_path, inputs) as tmp:
        np.savetxt(tmp, table, delimiter=",", header="h,k,l,d_A,two_theta_deg,F2,multiplicity,LP,intensity",
                   comments="", fmt=["%d", "%d", "%d", "%.6f", "%.6f", "%.6g", "%d", "%.6g", "%.6g"])  # fmt: skip

    from dmd.base.plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(grid, y, lw=1, label="profile")
    ax.vlines(sticks.two_theta, 0, sticks.intensity * scale, colors="C1", lw=1, label="sticks")
    strongest = np.argsort(sticks.intensity)[::-1][:8]
    for i in strongest:
        ax.annotate(" ".join(str(v) for v in sticks.hkl[i]), (sticks.two_theta[i], sticks.intensity[i] * scale),
                    fontsize=7, ha="center", va="bottom")  # fmt: skip
    ax.set_xlabel("2θ (degrees)")
    ax.set_ylabel("intensity (max = 100)")
    ax.set_title(f"{os.path.basename(args.structure)}  {xs.spacegroup}  λ = {lam:.5f} Å")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, stem + ".png", inputs, dpi=110)
    top = [
        {
            "hkl": sticks.hkl[i].tolist(),
            "two_theta": float(sticks.two_theta[i]),
            "intensity": float(sticks.intensity[i] * scale),
        }
        for i in strongest
    ]
    summary = {
        "structure": args.structure,
        "spacegroup": xs.spacegroup,
        "cell": xs.cell,
        "wavelength": lam,
        "two_theta_range": [lo, hi],
        "n_reflections": len(sticks.hkl),
        "caglioti_UVW": [U, V, W],
        "eta": args.eta,
        "strongest": top,
        "outputs": [args.out, sticks_path, stem + ".png", stem + ".json"],
    }
    write_json(stem + ".json", summary, inputs)
    text = (
        f"dmd xrd: {len(sticks.hkl)} reflections of {os.path.basename(args.structure)} ({xs.spacegroup}) in "
        f"2θ {lo}–{hi}° at λ = {lam:.5f} Å; strongest {tuple(int(v) for v in sticks.hkl[strongest[0]])} at "
        f"{sticks.two_theta[strongest[0]]:.3f}° → {args.out}"
    )
    emit(args, summary, text)
    return 0
