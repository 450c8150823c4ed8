"""An opt-in coarse scan of the loss around the start θ, before a stochastic fit's gradient rounds (``start_scan``).

Why: on the peptide example (docs/fitting.md, issue 18 4c) the start, 20% above the truth, lies on a flat, noisy
plateau of the loss (+20..+35%: ~0.05 against ~0.01 at the truth) where one round's gradient is sign noise with a
heavy tail, so the first gradient steps random-walk. The round *loss* resolves the plateau from the valley in one
round, where its gradient does not. So, with ``start_scan: {points: 5, step: 0.1}``, the fit first measures the round
loss at ``points`` θ on a grid symmetric about the start in the fit's internal variable z (ln θ for a positive
parameter): z_k = z₀ + k · step, k = −K..K (K = (points − 1) / 2; with two fitted parameters the points × points
product grid). Each point is one round of the fit's own machinery (its replicas, estimator and targets), every
replica starting from the fit's start positions (``equilibration`` steps first, as round 0 does) with its own round
seed (:data:`SCAN_ROUND` + k). The gradient rounds then start at the lowest-loss point (``pick: min``) or, with one
parameter and ``pick: parabola`` (the default), at the vertex of the parabola in z through the lowest point and its
two neighbours (within ±step/2 of the lowest point, by construction; an end point of the grid is taken as it is),
from the lowest point's last frames. The grid is set by the start and ``step`` only, never by the truth.

With one parameter, ``design: D`` (odd) then measures the loss at D more points about that start (the centre),
z_c + j · ``design_step``, j = −(D−1)/2..(D−1)/2, each ``repeats`` times with fresh seeds: a designed experiment for
the loss parabola (:mod:`fitting.loss_surface`, its ``window`` centred on z_c), in place of gradient rounds whose
fixed point is biased where the estimator's Jacobian is (the peptide: docs/fitting.md, fit18k). These rows carry
``design_centre`` (θ at z_c); the gradient rounds, if any, still start at z_c.

Outputs: history rows of ``status: scan`` (``round: -1``, ``scan_point`` k, ``theta``, ``loss``, ``seconds``)
before round 0, ``start_scan`` in summary.json, their own marker in loss.png and params.png. Each finished point is
checkpointed in ``start_scan.npz`` (loss, θ and every state's last frames), so ``--resume`` during the scan redoes
no finished point; once the scan ends, ``checkpoint.npz`` holds round 0's start.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from dmd.base.config import number
from dmd.base.errors import SimulationDiverged, UserInputError
from dmd.base.io import atomic_path

__all__ = ["StartScan", "SCAN_ROUND", "SCAN_FILE", "grid", "pick", "run_start_scan", "resumes_scan"]

SCAN_ROUND = 1_000_000  # scan point k samples with the round seed of round SCAN_ROUND + k (streams of their own)
SCAN_FILE = "start_scan.npz"
_KEYS = {"points", "step", "pick", "design", "design_step", "repeats"}
_HINT = "e.g. start_scan: {points: 5, step: 0.1}"


@dataclasses.dataclass(frozen=True)
class StartScan:
    """``points``: odd, ≥ 3 (per fitted parameter); ``step``: grid spacing in z (0.1 in ln θ: ×1.105);
    ``pick``: "parabola" (one parameter) or "min"; ``design``: 0 or odd, points about the start afterwards (one
    parameter), ``design_step`` apart, each ``repeats`` times."""

    points: int = 5
    step: float = 0.1
    pick: str = "parabola"
    design: int = 0
    design_step: float = 0.06
    repeats: int = 1

    def __post_init__(self):
        if not (isinstance(self.points, int) and self.points >= 3 and self.points % 2 == 1):
            raise UserInputError(f"start_scan.points {self.points!r}: give an odd number ≥ 3 (a grid symmetric "
                                 f"about the start), {_HINT}")  # fmt: skip
        if not (np.isfinite(self.step) and self.step > 0):
            raise UserInputError(f"start_scan.step {self.step!r}: give a spacing > 0 in the fit's internal "
                                 f"variable (ln θ for a positive parameter; 0.1 is ×1.105), {_HINT}")  # fmt: skip
        if self.pick not in ("parabola", "min"):
            raise UserInputError(f"start_scan.pick {self.pick!r}: use parabola (vertex through the lowest point "
                                 "and its neighbours) or min (the lowest point)")  # fmt: skip
        if not (isinstance(self.design, int) and (self.design == 0 or self.design % 2 == 1 and self.design > 0)
                and np.isfinite(self.design_step) and self.design_step > 0 and self.repeats >= 1):  # fmt: skip
            raise UserInputError(
                f"start_scan design {self.design!r}, design_step {self.design_step!r}, repeats "
                f"{self.repeats!r}: give design 0 or odd, design_step > 0 and repeats ≥ 1, e.g. "
                "start_scan: {points: 7, step: 0.1, design: 5, design_step: 0.06, repeats: 2}"
            )

    @classmethod
    def from_spec(cls, spec, where: str = "config") -> StartScan | None:
        """The config mapping (``None``: off), numbers parsed with the key and ``where`` (the file) named in any
        error."""
        if spec is None:
            return None
        if not isinstance(spec, dict) or set(spec) - _KEYS:
            bad = sorted(set(spec) - _KEYS) if isinstance(spec, dict) else spec
            raise UserInputError(f"{where}: start_scan: {bad!r} is not a scan setting; give a mapping of "
                                 f"{', '.join(sorted(_KEYS))}, {_HINT}")  # fmt: skip
        kinds = {"points": int, "step": float, "design": int, "design_step": float, "repeats": int}
        kw = {k: number(spec[k], f"start_scan.{k}", where, kinds[k], _HINT) for k in kinds if k in spec}
        if "pick" in spec:
            kw["pick"] = str(spec["pick"])
        try:
            return cls(**kw)
        except UserInputError as exc:  # name the file, as the number errors do
            raise UserInputError(f"{where}: {exc}") from None

    def check(self, n_params: int) -> None:
        if n_params > 2:
            raise UserInputError(
                f"start_scan: {n_params} fitted parameters, but the scan grids 1 or 2 (points^P rounds); remove "
                "start_scan from the config, or fit at most 2 parameters"
            )
        if n_params > 1 and self.design:
            raise UserInputError("start_scan.design measures points about one fitted parameter's start; with 2 "
                                 "fitted parameters leave design out")  # fmt: skip
        if n_params > 1 and self.pick == "parabola":
            raise UserInputError("start_scan.pick parabola fits one parameter; with 2 fitted parameters set "
                                 "pick: min (the lowest grid point)")  # fmt: skip


def grid(z0, scan: StartScan) -> np.ndarray:
    """``[points^P, P]``: z₀ + k · step for k = −K..K (the product grid for P = 2), symmetric about z₀."""
    z0 = np.asarray(z0, float)
    half = (scan.points - 1) // 2
    ks = np.arange(-half, half + 1, dtype=float) * scan.step
    mesh = np.meshgrid(*([ks] * z0.size), indexing="ij")
    return z0[None, :] + np.stack([m.ravel() for m in mesh], axis=1)


def pick(z_grid, losses, scan: StartScan) -> tuple[np.ndarray, int]:
    """The start of the gradient rounds and the grid point whose frames it continues (module docstring).

    Non-finite losses (a diverged point) never win; when every point failed, the centre (the start) is kept."""
    z_grid, losses = np.asarray(z_grid, float), np.asarray(losses, float)
    finite = np.isfinite(losses)
    if not finite.any():
        i = len(losses) // 2
        return z_grid[i].copy(), i
    i = int(np.argmin(np.where(finite, losses, np.inf)))
    z = z_grid[i].copy()
    if scan.pick == "parabola" and z_grid.shape[1] == 1 and 0 < i < len(losses) - 1 and finite[i - 1 : i + 2].all():
        lm, l0, lp = losses[i - 1], losses[i], losses[i + 1]
        curv = lm - 2 * l0 + lp  # ≥ 0: the middle point is the lowest; the vertex is within ±step/2 of it
        if curv > 0:
            z[0] += scan.step * 0.5 * (lm - lp) / curv
    return z, i


def resumes_scan(out, resume: bool) -> bool:
    """True when ``--resume`` should go on with an unfinished scan (its file there, no round checkpoint yet)."""
    return bool(resume and out is not None and not (Path(out) / "checkpoint.npz").exists()
                and (Path(out) / SCAN_FILE).exists())  # fmt: skip


def _save(path, z_grid, rows, ends):
    arrays = {f"end_{k}_{s}_{what}": a for k, per in ends.items() for s, pair in enumerate(per)
              for what, a in zip(("pos", "box"), pair, strict=True) if a is not None}  # fmt: skip
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, z_grid=z_grid, rows=json.dumps(rows), **arrays)


def _load(path, z_grid, n_states):
    with np.load(path, allow_pickle=False) as d:
        if d["z_grid"].shape != z_grid.shape or not np.allclose(d["z_grid"], z_grid):
            raise UserInputError(f"--resume: {path} scanned another grid (start or start_scan changed); resume with "
                                 "the same config or start a new --out folder")  # fmt: skip
        rows = json.loads(str(d["rows"]))
        ends = {r["scan_point"]: [tuple(np.asarray(d[f"end_{r['scan_point']}_{s}_{w}"]) if f"end_{r['scan_point']}_"
                                        f"{s}_{w}" in d else None for w in ("pos", "box")) for s in range(n_states)]
                for r in rows}  # fmt: skip
    return rows, ends


def run_start_scan(scan: StartScan, z0, evals, measure, theta_of, out=None, resume=False, writer=True, log=print):
    """Measure the round loss on the grid about ``z0`` and return ``(z_start, rows)``; leaves every state's
    positions (and box) at the chosen point's last frames.

    Args:
      evals: the fit's states (``positions``, ``box`` and ``end_round()``: the next round's start after a round).
      measure: ``(z, rnd) -> loss``: one round of the fit's machinery at z (samples every state; may raise
        :class:`SimulationDiverged`).
      theta_of: z ↦ θ by label (the history's ``theta``).
      out / resume / writer: the fit's folder, ``--resume`` and whether this process writes files.
    """
    z_grid = grid(z0, scan)
    path = None if out is None else Path(out) / SCAN_FILE
    start = [(np.array(e.positions), None if e.box is None else np.array(e.box)) for e in evals]
    rows, ends = [], {}
    if resumes_scan(out, resume):
        rows, ends = _load(path, z_grid, len(evals))
        log(f"start scan: resuming after {len(rows)} of {len(z_grid)} points ({path})")
    done = {r["scan_point"] for r in rows}
    n_all = len(z_grid) + scan.design * scan.repeats

    def run(points, extra):
        for k, zk in points:
            if k in done:
                continue
            t0 = time.perf_counter()
            for e, (pos, box) in zip(evals, start, strict=True):  # every point from the fit's start
                e.positions, e.box = np.array(pos), None if box is None else np.array(box)
            row = {"round": -1, "status": "scan", "scan_point": k, "theta": theta_of(zk), **extra}
            try:
                loss = float(measure(zk, SCAN_ROUND + k))
            except SimulationDiverged as exc:
                loss, row["message"] = float("inf"), str(exc)
            else:
                for e in evals:
                    e.end_round()
            ends[k] = [(np.array(e.positions), None if e.box is None else np.array(e.box)) for e in evals]
            rows.append(dict(row, loss=loss, seconds=time.perf_counter() - t0))
            log(f"start scan {len(rows)}/{n_all}: θ {row['theta']} loss {loss:.4g}")
            if path is not None and writer:
                path.parent.mkdir(parents=True, exist_ok=True)
                _save(path, z_grid, rows, ends)

    run(enumerate(z_grid), {})
    rows.sort(key=lambda r: r["scan_point"])
    losses = [r["loss"] for r in rows[: len(z_grid)]]
    z, i = pick(z_grid, losses, scan)
    if scan.design:  # the designed points about the pick, each from the fit's start with its own seed
        half = (scan.design - 1) // 2
        offsets = np.tile(np.arange(-half, half + 1) * scan.design_step, scan.repeats)
        (centre,) = theta_of(z).values()
        run([(len(z_grid) + j, z + dz) for j, dz in enumerate(offsets)], {"design_centre": float(centre)})
        rows.sort(key=lambda r: r["scan_point"])
    for e, (pos, box) in zip(evals, ends[i], strict=True):
        e.positions, e.box = np.array(pos), box
    rows[i]["picked"] = True
    log(f"start scan: lowest loss {losses[i]:.4g} at point {i}; rounds start at θ {theta_of(z)}")
    return z, rows


def summary(history) -> dict | None:
    """``start_scan`` for summary.json and the run's printout: θ and loss per point and the picked start."""
    rows = [h for h in history if h.get("status") == "scan"]
    if not rows:
        return None
    first = next((h for h in history if h.get("status") != "scan"), None)
    return {"theta": [r["theta"] for r in rows], "loss": [r["loss"] for r in rows],
            "lowest_point": next(r["scan_point"] for r in rows if r.get("picked")),
            "rounds_start": None if first is None else first["theta"],
            "seconds": sum(r["seconds"] for r in rows)}  # fmt: skip
