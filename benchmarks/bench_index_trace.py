"""Per-list trace of blind indexing on the generated lists of ``bench_indexing.py --blind`` (issue 21).

For each list (the benchmark's ``make_patterns``: the same lists, seed and error model; refine_zero on noisy lists),
one JSON line: success (true lattice and Bravais label, the benchmark's test), the answer, CPU s of this process,
seconds and candidates per lattice system, and the best approximate M of each search after each batch (the trace the
blind stopping rules were set from, search.BLIND_PATIENCE). Resumable; lists run system by system, each system's
first list untimed (warm-up)::

    nice -n 10 python benchmarks/bench_index_trace.py noisy 2024 trace_noisy_2024.jsonl [--systems triclinic]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_indexing import SYSTEMS, make_patterns, truth_centring  # noqa: E402

from analysis.indexing import SearchConfig, index_peaks, peaks_from_values, same_lattice  # noqa: E402


def trace_one(p, noisy: bool) -> dict:
    """Blind index one generated pattern; the record described in the module docstring."""
    pk = peaks_from_values(p.two_theta, "2theta", wavelength=p.wavelength)
    trace: dict = {}
    c0 = time.process_time()
    res = index_peaks(
        pk,
        None,
        config=SearchConfig(refine_zero=True) if noisy else SearchConfig(),
        progress=lambda s, b, best: trace.setdefault(s, []).append(round(float(best), 3)),
    )
    cpu = time.process_time() - c0
    best = res.solutions[0] if res.solutions else None
    ok = best is not None and best.bravais == p.bravais
    ok = ok and same_lattice(p.cell, truth_centring(p), best.cell, best.centring, 2e-2 if noisy else 5e-3)
    row = dict(ok=bool(ok), cpu_s=cpu, bravais=p.bravais, seconds=res.seconds, ncand=res.n_candidates, trace=trace)
    if best is not None:
        row.update(found=best.bravais, M20=best.M20, cell=[round(float(v), 4) for v in best.cell])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("clean", "noisy"))
    ap.add_argument("seed", type=int)
    ap.add_argument("out")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--n-per-system", type=int, default=10)
    args = ap.parse_args(argv)
    noisy = args.mode == "noisy"
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {json.loads(line)["key"] for line in f}
    with open(args.out, "a") as f:
        for system in args.systems.split(","):
            pats = make_patterns(system, args.n_per_system, args.seed, noisy)[0]
            for i in range(-1, args.n_per_system):
                key = f"{args.mode}/{system}/{i}"
                if key in done:
                    continue
                row = dict(key=key, **trace_one(pats[i + 1], noisy), load=os.getloadavg()[0])
                if i >= 0:  # the first list of each system is the warm-up (compilation)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                print(key, row["ok"], row.get("found"), f"{row['cpu_s']:.2f} CPU s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
