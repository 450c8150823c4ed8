"""Benchmark: blind powder indexing (lattice system not given) on textbook minerals.

The cells are literature cells (``tests/data/indexing/minerals.json``, source named per mineral).
``--write-data`` (re)generates the shipped peak lists ``tests/data/indexing/<name>_{clean,noisy}.txt``:
the lines allowed by the space group (gemmi absences), Cu Kα1 (1.5406 Å), 2θ ≤ 150°, the first 20
(fewer where the cell has fewer, e.g. silicon 11 below 140°):

* clean: exact positions, coincident reflections merged;
* noisy: σ(q²) = 8.7e-5 + 9.2e-4 q² (analysis.indexing.errors, k = 1), a zero shift drawn in ±0.03°,
  lines closer than 0.02° merged, 10 % of lines missed, one impurity line (seeded per mineral).

Every list is indexed blind (``index_peaks(peaks)``, 2θ zero shift refined on the noisy lists);
success = the first solution describes the literature lattice (reduce.same_lattice of the
primitive Niggli cells, tolerance 5e-3 clean, 2e-2 noisy) *and* carries its Bravais label.
Reported per list: label and cell found, M20, seconds; then the success rate and the median time
per pattern (the first pattern includes the JIT compilation; it is reported apart).

The table at the end gives, per lattice system and mode, how often the true lattice came first and the
median seconds, with the machine load (os.getloadavg) at the start and end of the run.

``--mlindex``: the peer, PyPI mlindex 0.1.3 in its model-free analytic mode (``run_analytical``; cubic,
tetragonal and hexagonal lattices only, so given the 7 Bravais lattices cF, cI, cP, tI, tP, hP, hR: blind
among those), on the same lists in the same run (separate virtualenv, benchmarks/bench_indexing.py
``ensure_mlindex_venv``; a fresh process per list, its interpreter start-up timed apart). Its success needs the
same lattice (tolerance as ours) and the literature Bravais label.

    python benchmarks/bench_index_blind.py                 # all minerals, clean and noisy
    python benchmarks/bench_index_blind.py --only halite,calcite --modes clean
    python benchmarks/bench_index_blind.py --mlindex --out minerals.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
import types

import numpy as np

from analysis import cell as cell_mod
from analysis import symmetry
from analysis.indexing import index_peaks, read_peak_file, same_lattice, sigma_inv_d2

DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "indexing"
WAVELENGTH = 1.5406
TTH_MAX = 150.0


def load_minerals() -> dict:
    with open(DATA / "minerals.json", encoding="utf-8") as fh:
        return {k: v for k, v in json.load(fh).items() if not k.startswith("_")}


def mineral_lines(entry: dict, noisy: bool, seed: int, n_peaks: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """2θ (degrees) and intensities of the first ``n_peaks`` lines of a mineral (module docstring)."""
    rng = np.random.default_rng(seed)
    cell = np.asarray(entry["cell"], float)
    d_min = WAVELENGTH / (2 * np.sin(np.deg2rad(TTH_MAX / 2)))
    hkl = symmetry.generate_hkl(cell, d_min, entry["sg"])
    q = np.asarray(cell_mod.inv_d2(hkl.astype(float), cell), float)
    q_line, mult = np.unique(np.round(q, 9), return_counts=True)
    tth = np.asarray(cell_mod.two_theta_from_inv_d2(q_line, WAVELENGTH), float)
    inten = mult * rng.exponential(1.0, tth.size) * np.exp(-2.0 * q_line)
    if noisy:
        tth = tth + rng.uniform(-0.03, 0.03)
        group = np.concatenate([[0], np.cumsum(np.diff(tth) > 0.02)])
        w = np.bincount(group, weights=inten)
        tth, inten = np.bincount(group, weights=inten * tth) / w, w
        keep = rng.uniform(size=tth.size) >= 0.1
        keep[:2] = True  # the two strongest low-angle lines are never missed in practice
        tth, inten = tth[keep], inten[keep]
        q_obs = np.asarray(cell_mod.inv_d2_from_two_theta(tth, WAVELENGTH), float)
        q_obs = q_obs + rng.normal(size=q_obs.size) * sigma_inv_d2(q_obs, 1.0)
        q_obs = np.append(q_obs, rng.uniform(0.5 * q_obs[0], q_obs[min(n_peaks, q_obs.size) - 1]))
        inten = np.append(inten, 0.3 * np.median(inten))
        order = np.argsort(q_obs)
        tth = np.asarray(cell_mod.two_theta_from_inv_d2(q_obs[order], WAVELENGTH), float)
        inten = inten[order]
    tth, inten = tth[:n_peaks], inten[:n_peaks]
    return tth, 100 * inten / inten.max()


def write_data() -> None:
    for i, (name, entry) in enumerate(load_minerals().items()):
        for mode in ("clean", "noisy"):
            tth, inten = mineral_lines(entry, mode == "noisy", seed=1000 + i)
            c = entry["cell"]
            lines = [
                f"# {name} ({entry['sg']}, {entry['bravais']}): cell {c}; {entry['source']}",
                f"# generated {mode} by benchmarks/bench_index_blind.py --write-data (Cu Ka1, 2theta <= {TTH_MAX:g})",
                "# units: 2theta",
                f"# wavelength: {WAVELENGTH}",
            ] + [f"{t:.4f} {v:.1f}" for t, v in zip(tth, inten, strict=True)]
            (DATA / f"{name}_{mode}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_one(name: str, entry: dict, mode: str) -> dict:
    from analysis.indexing import SearchConfig

    peaks = read_peak_file(DATA / f"{name}_{mode}.txt")
    t0 = time.perf_counter()
    res = index_peaks(peaks, config=SearchConfig(refine_zero=mode == "noisy"))
    dt = time.perf_counter() - t0
    tol = 5e-3 if mode == "clean" else 2e-2
    cen = {"hR": "R"}.get(entry["bravais"], entry["bravais"][1] if entry["bravais"][1] in "ICFA" else "P")
    top = res.solutions[0] if res.solutions else None
    ok = bool(
        top is not None
        and top.bravais == entry["bravais"]
        and same_lattice(top.cell, top.centring, entry["cell"], cen, tol)
    )
    return {
        "name": name,
        "mode": mode,
        "n_peaks": peaks.n,
        "ok": ok,
        "seconds": dt,
        "found": None if top is None else f"{top.bravais} {np.round(top.cell, 3).tolist()} M20 {top.M20:.1f}",
        "why": None if top is None else top.reason,
    }


SYSTEM_OF = {
    "c": "cubic",
    "t": "tetragonal",
    "h": "hexagonal",
    "o": "orthorhombic",
    "m": "monoclinic",
    "a": "triclinic",
}
MLINDEX_ALL = "cF,cI,cP,tI,tP,hP,hR"


def run_peer(py: str, name: str, entry: dict, mode: str, startup: float) -> dict:
    """mlindex ``run_analytical`` on the same list (module docstring); seconds include its start-up."""
    from bench_indexing import run_mlindex

    peaks = read_peak_file(DATA / f"{name}_{mode}.txt")
    pat = types.SimpleNamespace(
        inv_d2=peaks.inv_d2,
        system=SYSTEM_OF[entry["bravais"][0]],
        cell=np.asarray(entry["cell"], float),
        spacegroup=entry["sg"],
    )
    ok, dt, top, note = run_mlindex(py, pat, 1800.0, bravais=MLINDEX_ALL, tol=5e-3 if mode == "clean" else 2e-2)
    label_ok = top is not None and top[0] == entry["bravais"]
    return {
        "ok": bool(ok and label_ok),
        "seconds": dt,
        "seconds_without_startup": dt - startup,
        "found": None if top is None else f"{top[0]} {np.round(top[1], 3).tolist()}",
        "note": note,
    }


def table(rows: list, key: str = "ok", seconds: str = "seconds") -> None:
    """Per lattice system and mode: true lattice first (count) and median seconds."""
    for mode in dict.fromkeys(r["mode"] for r in rows):
        cells = []
        for letter, system in SYSTEM_OF.items():
            sel = [r for r in rows if r["mode"] == mode and r["bravais"][0] == letter and r.get(key) is not None]
            if sel:
                cells.append(
                    f"{system} {sum(r[key] for r in sel)}/{len(sel)} ({np.median([r[seconds] for r in sel]):.1f} s)"
                )
        sel = [r for r in rows if r["mode"] == mode and r.get(key) is not None]
        print(f"  {mode:5s} {sum(r[key] for r in sel)}/{len(sel)}: " + ", ".join(cells))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-data", action="store_true", help="regenerate the shipped peak lists and exit")
    ap.add_argument("--only", default="", help="comma-separated minerals")
    ap.add_argument("--modes", default="clean,noisy")
    ap.add_argument("--out", default=None, help="JSON lines of the results")
    ap.add_argument("--mlindex", action="store_true", help="run mlindex on the cubic/tetragonal/hexagonal lists too")
    ap.add_argument("--mlindex-venv", default=os.path.expanduser("~/.cache/dmd-bench/mlindex-venv"))
    args = ap.parse_args(argv)
    if args.write_data:
        write_data()
        return
    minerals = load_minerals()
    names = [n for n in args.only.split(",") if n] or list(minerals)
    rows = []
    load0 = os.getloadavg()
    py = startup = None
    if args.mlindex:
        from bench_indexing import ensure_mlindex_venv, mlindex_startup

        py = ensure_mlindex_venv(args.mlindex_venv)
        startup = mlindex_startup(py)
        print(f"mlindex start-up (interpreter + imports): {startup:.1f} s", flush=True)
    for mode in [m for m in args.modes.split(",") if m]:
        for name in names:
            r = run_one(name, minerals[name], mode)
            r["bravais"] = minerals[name]["bravais"]
            if py is not None and r["bravais"][0] in "cth":
                r["mlindex"] = run_peer(py, name, minerals[name], mode, startup)
                r["mlindex_ok"], r["mlindex_s"] = r["mlindex"]["ok"], r["mlindex"]["seconds"]
            r["load"] = os.getloadavg()[0]
            rows.append(r)
            peer = ""
            if "mlindex" in r:
                peer = (
                    f"  | mlindex {'OK ' if r['mlindex_ok'] else 'BAD'} {r['mlindex_s']:6.1f} s {r['mlindex']['found']}"
                )
            print(
                f"{mode:5s} {name:12s} {'OK ' if r['ok'] else 'BAD'} {r['seconds']:7.1f} s  {r['found']}{peer}",
                flush=True,
            )
            if args.out:
                with open(args.out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(r) + "\n")
    ok = sum(r["ok"] for r in rows)
    times = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    print(f"true lattice first: {ok}/{len(rows)} = {100 * ok / len(rows):.0f}%")
    print(f"per lattice system (ours; machine load {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end):")
    table(rows)
    if py is not None:
        both = [r for r in rows if "mlindex" in r]
        print("the same cubic / tetragonal / hexagonal lists, ours | mlindex (seconds with its start-up):")
        table(both)
        table(both, key="mlindex_ok", seconds="mlindex_s")
        t_o, t_m = sum(r["seconds"] for r in both), sum(r["mlindex_s"] for r in both)
        print(f"  total ours {t_o:.1f} s, mlindex {t_m:.1f} s ({t_m - startup * len(both):.1f} s without start-up)")
    print(
        f"first pattern (with JIT compilation) {rows[0]['seconds']:.1f} s; median per pattern after it "
        f"{np.median(times):.1f} s, total {sum(r['seconds'] for r in rows):.0f} s"
    )


if __name__ == "__main__":
    main()
