"""A loss-guarded step for stochastic fits: a round whose loss rose far above the best round's is rejected.

Why: on the peptide example (docs/fitting.md, issue 18 4c) one round's fluctuation gradient can point the wrong way
for several rounds in a row while the round's loss, measured on the same frames, rises clearly (seed 2 at 8
replicas, learning rate 0.3: losses 0.026 → 0.091 → 0.144 → 0.314 with every step going up). The loss is the
better-resolved number there, so a round whose loss exceeds ``factor`` × the best accepted round's loss is taken
as a bad step: θ returns to the best round's θ, each state's replicas to that round's last frames (so no memory of
the bad region is carried on), the optimizer restarts and the step halves (it regrows ×1.5 per accepted round).

The best loss is itself one noisy measurement and might be a lucky low draw that would reject every later round;
so the round after a rejection (sampled again at the best θ) is always accepted and its loss *replaces* the best.
``factor`` should exceed the loss's round-to-round noise at a fixed θ (on the peptide, rounds at the truth scatter
by ~2×: 0.0069-0.013), or rounds near the optimum are rejected for noise alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmd.base.errors import UserInputError

__all__ = ["LossGuard"]


@dataclasses.dataclass
class LossGuard:
    """State of the guard (``factor`` None: off). ``z``: the best accepted round's θ in the optimizer's variables;
    ``positions`` / ``boxes``: each state's start for the next round after that round (``[N, 3]`` or ``[R, N, 3]``
    nm; box or None)."""

    factor: float | None
    loss: float | None = None
    z: np.ndarray | None = None
    positions: list | None = None
    boxes: list | None = None
    remeasure: bool = False

    def __post_init__(self):
        if self.factor is not None and not float(self.factor) > 1:
            raise UserInputError(
                f"loss_guard {self.factor!r}: give a factor > 1 (a round is rejected when its loss exceeds factor × "
                "the best round's; ~3 where the loss scatters 2× between rounds at one θ), or leave it out"
            )

    def rejects(self, loss: float) -> bool:
        """True when this round's loss exceeds ``factor`` × the best accepted round's (never on the re-measuring
        round right after a rejection)."""
        if self.factor is None or self.loss is None or self.remeasure:
            return False
        return not loss <= self.factor * self.loss  # a NaN loss is rejected too

    def accept(self, loss: float, z, evals) -> None:
        """Record an accepted round sampled at ``z`` (call after ``end_round``: ``evals``' positions are its ends)."""
        if self.factor is None:
            return
        if self.loss is None or self.remeasure or loss < self.loss:
            self.loss, self.z = float(loss), np.array(z)
            self.positions = [np.array(e.positions) for e in evals]
            self.boxes = [None if e.box is None else np.array(e.box) for e in evals]
        self.remeasure = False

    def restore(self, evals):
        """Put every state back at the best round's ends; returns the best θ (z). The next round re-measures."""
        for e, pos, box in zip(evals, self.positions, self.boxes, strict=True):
            e.positions, e.box = np.array(pos), None if box is None else np.array(box)
        self.remeasure = True
        return self.z

    def to_arrays(self) -> dict:
        """The guard's state for a checkpoint (``np.savez`` keys ``guard_*``); empty when off or nothing accepted."""
        if self.factor is None or self.loss is None:
            return {}
        d = {"guard_loss": self.loss, "guard_z": self.z, "guard_remeasure": self.remeasure,
             "guard_n": len(self.positions)}  # fmt: skip
        for i, (p, b) in enumerate(zip(self.positions, self.boxes, strict=True)):
            d[f"guard_positions_{i}"] = p
            if b is not None:
                d[f"guard_box_{i}"] = b
        return d

    @classmethod
    def from_arrays(cls, factor, d) -> LossGuard:
        """Inverse of :meth:`to_arrays` (``d``: an open ``np.load`` of a checkpoint or a dict)."""
        guard = cls(factor)
        if factor is None or "guard_loss" not in d:
            return guard
        n = int(d["guard_n"])
        guard.loss, guard.z = float(d["guard_loss"]), np.asarray(d["guard_z"])
        guard.remeasure = bool(d["guard_remeasure"])
        guard.positions = [np.asarray(d[f"guard_positions_{i}"]) for i in range(n)]
        guard.boxes = [np.asarray(d[f"guard_box_{i}"]) if f"guard_box_{i}" in d else None for i in range(n)]
        return guard
