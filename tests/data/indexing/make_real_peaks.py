"""Peak lists of measured 11-BM (APS) powder patterns, for the real-data indexing tests.

Sources (GSAS-II tutorial data, https://github.com/AdvancedPhotonSource/GSAS-II, folder Exercises/):

* ``Exercises/LaB6/11bmb_3844.fxye.zip`` (commit 57b81cfb): NIST SRM 660a LaB6, 11-BM, 295 K,
  λ = 0.413128 Å (calibrated, file header), step 0.0005° 2θ;
* ``Exercises/sucrose/11bmb_8714.xye`` (commit 75eee460): sucrose, 11-BM, 100 K, λ = 0.413319 Å, step 0.001°.

The peak positions are found here without any cell: local maxima of the measured profile with a
prominence above ``--min-rel`` of the strongest peak and 20 esd of the counts, each then fitted
(pseudo-Voigt on a linear background, scipy curve_fit, window ±4 half widths) for its centre; the first
``--n`` lines are written as 2θ (degrees, 4 decimals) with the fitted height as intensity.

    python tests/data/indexing/make_real_peaks.py 11bmb_3844.fxye --wavelength 0.413128 \\
        --label "LaB6 NIST SRM 660a, 11-BM run 3844" --out tests/data/indexing/lab6_11bm.txt
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import curve_fit
from scipy.signal import find_peaks, peak_widths


def read_profile(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2θ (degrees), counts, esd of a GSAS FXYE (2θ in centidegrees after a BANK line) or XYE file."""
    rows, fxye = [], False
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            s = line.split()
            if not s or line.startswith(("#", "/*", "*/")) or s[0] in ("#", "*/"):
                continue
            if s[0] == "BANK":
                fxye = "FXYE" in s
                continue
            try:
                rows.append([float(v) for v in s[:3]])
            except ValueError:
                continue
    a = np.array(rows)
    x = a[:, 0] / 100.0 if fxye else a[:, 0]
    return x, a[:, 1], a[:, 2]


def pseudo_voigt(x, x0, h, w, eta, b0, b1):
    g = np.exp(-np.log(2) * ((x - x0) / w) ** 2)
    lor = 1 / (1 + ((x - x0) / w) ** 2)
    return h * (eta * lor + (1 - eta) * g) + b0 + b1 * (x - x0)


def peak_list(x, y, e, min_rel: float, n: int):
    step = float(np.median(np.diff(x)))
    prom = max(min_rel * (y.max() - np.median(y)), 20 * float(np.median(e)))
    idx, _ = find_peaks(y, prominence=prom)
    half = peak_widths(y, idx, rel_height=0.5)[0] * step / 2
    out = []
    for i, hw in zip(idx, half, strict=True):
        hw = max(hw, 2 * step)
        win = np.abs(x - x[i]) <= 4 * hw
        p0 = [x[i], y[i] - np.median(y[win]), hw, 0.5, float(np.min(y[win])), 0.0]
        try:
            p, _ = curve_fit(pseudo_voigt, x[win], y[win], p0=p0, sigma=e[win], maxfev=20000)
        except RuntimeError:
            continue
        # a fit that drifted, turned negative or spread over neighbours is not a peak position
        if abs(p[0] - x[i]) < hw and p[1] > 0 and 0 < abs(p[2]) < 3 * hw:
            out.append((p[0], p[1]))
        if len(out) >= n:
            break
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--wavelength", type=float, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--source", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--min-rel", type=float, default=0.005)
    ap.add_argument("--tth-min", type=float, default=0.0)
    args = ap.parse_args()
    x, y, e = read_profile(args.profile)
    keep = (x >= args.tth_min) & (e > 0)
    pk = peak_list(x[keep], y[keep], e[keep], args.min_rel, args.n)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(f"# {args.label}\n")
        if args.source:
            fh.write(f"# source: {args.source}\n")
        fh.write("# peak positions: pseudo-Voigt fits of the measured profile (make_real_peaks.py)\n")
        fh.write("# units: 2theta\n")
        fh.write(f"# wavelength: {args.wavelength}\n")
        for t, h in pk:
            fh.write(f"{t:.4f} {100 * h / pk[:, 1].max():.1f}\n")
    print(f"{len(pk)} peaks written to {args.out}")


if __name__ == "__main__":
    main()
