"""``dmd index``: powder indexing of a peak list (or a folder of them).

Powder indexing: batched generate-and-test search (SVD-Index / ML-Index style) in JAX.

Examples::

    dmd index peaks.txt --units 2theta --wavelength 1.5406 --lattice monoclinic
    dmd index peaks_d.txt --units d --json
    dmd index folder/ --units q2 --jobs 2 --out results.json
"""

from __future__ import annotations

import argparse
import os

from dmd.cli.common import add_overwrite_argument, check_input, check_outputs, emit, info

_PEAK_EXTS = (".txt", ".dat", ".csv", ".peaks", ".lst")


HELP = "index a powder peak list (unit cell, Bravais lattice, M20/F20)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd index`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument("peaks", help="peak-list file (position [intensity] per line) or a folder of them (batch mode)")
    p.add_argument("--wavelength", type=float, default=None, help="wavelength in Å (needed for 2θ input)")
    p.add_argument("--units", default=None, help="2theta | d | q2 (default: the file's '# units:' line)")
    p.add_argument(
        "--lattice", default=None, help="lattice system or Bravais lattice (e.g. monoclinic, mP); default all"
    )
    p.add_argument("--top", type=int, default=5, help="number of solutions reported (default 5)")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.add_argument("--plot", default=None, help="PNG: observed peaks against the best solution's ticks")
    p.add_argument("--zero-shift", action="store_true", help="refine a 2θ zero shift (2θ input only)")
    p.add_argument("--tolerance", type=float, default=1.0, help="scale k of σ(q²)=k(8.7e-5+9.2e-4 q²) (default 1)")
    p.add_argument("--candidates", default="prior", choices=("prior", "random", "uniform"), help="candidate source")
    p.add_argument("--n-candidates", type=int, default=None, help="candidates per batch")
    p.add_argument("--max-batches", type=int, default=None, help="batches per lattice system")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--jobs", type=int, default=None, help="parallel workers in batch mode (default: all cores)")
    add_overwrite_argument(p, "the --out and --plot files")


def _config(args):
    from analysis.indexing import SearchConfig

    kw = {"tol_k": args.tolerance, "candidates": args.candidates, "refine_zero": args.zero_shift, "seed": args.seed}
    if args.n_candidates:
        kw["n_candidates"] = args.n_candidates
    if args.max_batches:
        kw["max_batches"] = args.max_batches
    return SearchConfig(**kw)


def _read_peaks(path, args):
    """The validated peak list of ``path`` (UserInputError naming the file, line and fix)."""
    from analysis.indexing import lattice_systems_for, read_peak_file

    systems, _ = lattice_systems_for(args.lattice)
    system = systems[0] if len(systems) == 1 else None
    return read_peak_file(path, units=args.units, wavelength=args.wavelength, system=system)


def _index_file(path, args, progress=None, peaks=None):
    from analysis.indexing import index_peaks

    peaks = _read_peaks(path, args) if peaks is None else peaks
    result = index_peaks(peaks, args.lattice, config=_config(args), top=args.top, progress=progress)
    out = {"file": os.fspath(path), "n_peaks": peaks.n, "units": peaks.units, "wavelength": peaks.wavelength}
    out["notes"] = list(peaks.notes)
    out.update(result.to_dict())
    return peaks, result, out


def _worker(job):
    path, args = job
    from dmd.base.errors import UserInputError

    try:
        return _index_file(path, args)[2]
    except UserInputError as exc:
        return {"file": os.fspath(path), "error": str(exc), "solutions": []}


def _table(out: dict) -> str:
    lines = [f"{out['file']}: {out['n_peaks']} peaks ({out['units']})"]
    sols = out["solutions"]
    if not sols:
        lines.append("  no solution found" + (f": {out['error']}" if "error" in out else ""))
        return "\n".join(lines)
    hdr = f"  {'#':>2} {'lattice':<7} {'a':>9} {'b':>9} {'c':>9} {'alpha':>7} {'beta':>7} {'gamma':>7} "
    hdr += f"{'V':>9} {'M20':>9} {'F20':>8} {'indexed':>7} {'zero':>7}"
    lines.append(hdr)
    for i, s in enumerate(sols, 1):
        a, b, c, al, be, ga = s["cell"]
        f20 = "-" if s["F20"] is None else _figure(s["F20"], 99999)
        m20 = _figure(s["M20"], 999999)
        lines.append(
            f"  {i:>2} {s['bravais']:<7} {a:9.4f} {b:9.4f} {c:9.4f} {al:7.2f} {be:7.2f} {ga:7.2f} "
            f"{s['volume']:9.2f} {m20:>9} {f20:>8} {s['n_indexed']:>3}/{out['n_peaks']:<3} {s['zero_shift']:7.4f}"
        )
    best = sols[0]
    niggli = (
        " ".join(f"{v:.4f}" for v in best["niggli_cell"][:3])
        + " "
        + " ".join(f"{v:.2f}" for v in best["niggli_cell"][3:])
    )
    esd = " ".join(f"{v:.2g}" for v in best["cell_esd"][:3])
    lines.append(f"  best: Niggli cell {niggli} (Å, °); esd of a b c {esd} Å")
    if best["unindexed"]:
        lines.append(f"  unindexed peaks (1-based): {' '.join(str(i + 1) for i in best['unindexed'])}")
    if best.get("reason"):
        lines.append(f"  why first: {best['reason']}")
    if out.get("sigma_scale") is not None:
        lines.append(
            f"  peak-position error of the data: {out['sigma_scale']:.3g} x the built-in σ(q²) model (√χ²_ν, best cell)"
        )
    for system, why in out.get("skipped", {}).items():
        lines.append(f"  {system}: {why}")
    return "\n".join(lines)


def _figure(value, cap: float) -> str:
    """A figure of merit to 0.1, or ``>cap`` when it is above the cap (a perfect fit gives huge or infinite M20)."""
    return f">{cap:g}" if value is None or not value <= cap else f"{value:.1f}"


def _plot(peaks, solution, path, inputs) -> None:
    from dmd.base.plotting import pyplot

    plt = pyplot()
    import numpy as np

    from analysis import cell as cell_mod
    from analysis.indexing.reference import reference_rows
    from dmd.base.io import atomic_path

    ref = reference_rows(solution.system)
    rows = ref.rows[ref.allowed[solution.centring]]
    q_calc = rows @ solution.x
    q_max = peaks.inv_d2.max() * 1.05
    q_calc = np.unique(np.round(q_calc[(q_calc > 0) & (q_calc <= q_max)], 10))
    to_x = (lambda q: cell_mod.two_theta_from_inv_d2(q, peaks.wavelength)) if peaks.wavelength else (lambda q: q)
    xlabel = "2θ (degrees)" if peaks.wavelength else "q² = 1/d² (Å⁻²)"
    h = peaks.intensity if peaks.intensity is not None else np.ones(peaks.n)
    h = h / h.max()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    bad = np.zeros(peaks.n, bool)
    bad[solution.unindexed] = True
    ax.vlines(to_x(peaks.inv_d2[~bad]), 0, h[~bad], color="C0", lw=1.5, label="observed (indexed)")
    if bad.any():
        ax.vlines(to_x(peaks.inv_d2[bad]), 0, h[bad], color="C3", lw=1.5, label="observed (unindexed)")
    ax.vlines(to_x(q_calc), -0.12, -0.02, color="k", lw=0.8, label=f"calculated {solution.bravais}")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_yticks([])
    a, b, c, al, be, ga = solution.cell
    ax.set_title(
        f"{solution.bravais}  a={a:.4f} b={b:.4f} c={c:.4f} α={al:.2f} β={be:.2f} γ={ga:.2f}  M20={solution.M20:.1f}"
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, inputs) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def run(args) -> int:
    from dmd.base.errors import UserInputError
    from dmd.base.io import write_json

    if args.top < 1:
        raise UserInputError(f"--top {args.top}: give a positive number of solutions")
    if not os.path.exists(args.peaks):
        raise UserInputError(f"{args.peaks}: no such file or folder; pass a peak-list file or a folder of them")
    if os.path.isdir(args.peaks):
        files = sorted(os.path.join(args.peaks, f) for f in os.listdir(args.peaks) if f.lower().endswith(_PEAK_EXTS))
    else:
        check_input(args.peaks, "", "peak list")
        files = [args.peaks]
    for path, flag in ((args.out, "--out"), (args.plot, "--plot")):
        if path is not None:
            check_outputs(path, inputs=files, overwrite=args.overwrite, flag=flag)
    if args.out is not None and args.plot is not None and os.path.abspath(args.out) == os.path.abspath(args.plot):
        raise UserInputError(f"--out and --plot are both {args.out}; give two different files")
    if os.path.isdir(args.peaks):
        if not files:
            raise UserInputError(f"{args.peaks}: no peak files ({', '.join(_PEAK_EXTS)}) in this folder")
        if args.plot:
            raise UserInputError("--plot draws one pattern; drop it in batch (folder) mode")
        from dmd.base.progress import track

        jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(files)))
        results = []
        if jobs == 1:
            for f in track(files, desc="indexing", unit="pattern"):
                results.append(_worker((f, args)))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # JAX is not fork-safe
            with ctx.Pool(jobs) as pool:
                for r in track(
                    pool.imap(_worker, [(f, args) for f in files]),
                    total=len(files),
                    desc="indexing",
                    unit="pattern",
                ):
                    results.append(r)
        payload = {"patterns": results}
        if args.out:
            write_json(args.out, payload, inputs=files)
        tables = [_table({"n_peaks": r.get("n_peaks", 0), "units": r.get("units", "?"), **r}) for r in results]
        emit(args, payload, "\n".join(tables))
        n_ok = sum(bool(r["solutions"]) for r in results)
        info(f"indexed {n_ok}/{len(results)} patterns")
        if n_ok == 0:
            from dmd.base.errors import NoResult

            raise NoResult(f"{args.peaks}: no pattern in this folder indexed; check --units/--wavelength/--lattice")
        return 0

    from dmd.base.progress import progress_bar

    peaks = _read_peaks(args.peaks, args)  # bad input fails here, before the search and its progress bar
    bar = progress_bar(desc="searching", unit="batch", enabled=not args.json)

    def progress(system, batch, best):
        bar.set_postfix_str(f"{system} best M≈{float(__import__('numpy').exp(best)):.1f}")
        bar.update(1)

    try:
        peaks, result, out = _index_file(args.peaks, args, progress=progress, peaks=peaks)
    finally:
        bar.close()
    for note in out["notes"]:
        info(f"dmd index: note: {note}")
    if args.out:
        write_json(args.out, out, inputs=[args.peaks])
    if args.plot and result.solutions:
        _plot(peaks, result.solutions[0], args.plot, [args.peaks])
    emit(args, out, _table(out))
    info(f"searched {sum(out['n_candidates'].values())} candidates in {sum(out['seconds'].values()):.1f} s")
    if not result.solutions:
        from dmd.base.errors import NoResult

        fix = "check --units/--wavelength, give --lattice, or raise --tolerance"
        raise NoResult(f"{args.peaks}: no cell indexes these lines; {fix}")
    return 0
