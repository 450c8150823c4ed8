"""The neighbour-list skin that minimises the expected cost per step (docs/engine.md, "Choosing the skin").

A list of radius r_c + s costs, per step, one pair evaluation over the listed pairs plus a share of a rebuild:

    cost(s) = (P + R · v / s) · ((r_c + s) / r_c)³

* ``P``: the pair (force) evaluation and ``R``: one rebuild, both as they would cost for a list of radius r_c; both
  scale with the list volume (the pair kernel with the listed neighbours per row, the rebuild with the cell
  stencil's candidates and the listed slots), hence the common factor.
* ``v``: the displacement rate, nm per step, of the quantity the rebuild test watches (the two largest displacements
  since the build, :func:`dmd.neighbors.needs_rebuild`). It grows about linearly over the few tens of femtoseconds
  between rebuilds (ballistic motion), so a list lasts ``s / v`` steps. Measured from a run: a skin ``s₀`` rebuilt
  ``n`` times in ``k`` steps gives ``v = n s₀ / k`` (:func:`displacement_rate`).

Setting d cost / ds = 0 gives 3 s² + 2ρv s − ρv r_c = 0 with ρ = R / P, so

    s* = (√((ρv)² + 3 ρv r_c) − ρv) / 3

(:func:`optimal_skin`). A dearer rebuild (larger ρ) or faster atoms (larger v) widen the skin; a cheap rebuild lets
a tight skin cut the pair work, which grows as the cube of the list radius.
"""

from __future__ import annotations

import math

from dmd.base.errors import UserInputError

__all__ = ["displacement_rate", "optimal_skin", "skin_cost"]


def displacement_rate(skin: float, n_rebuilds: int, n_steps: int) -> float:
    """nm per step of the rebuild test's displacement sum, from a run of ``n_steps`` steps with ``skin`` nm that
    rebuilt ``n_rebuilds`` times (each rebuild came when the sum passed the skin)."""
    if n_steps <= 0 or n_rebuilds < 0 or skin <= 0:
        raise UserInputError(f"displacement_rate: need skin > 0 and steps > 0, got {skin=}, {n_steps=}")
    return skin * max(n_rebuilds, 0.5) / n_steps  # no rebuild seen: at most one per 2 n_steps (a bound, not 0)


def skin_cost(skin: float, cutoff: float, rate: float, rebuild_over_pair: float) -> float:
    """Expected cost per step of a list with ``skin`` nm, in units of one pair evaluation at radius ``cutoff`` nm:
    ``(1 + ρ v / s) ((r_c + s)/r_c)³`` with ``rate`` v nm/step and ``rebuild_over_pair`` ρ."""
    return (1.0 + rebuild_over_pair * rate / skin) * ((cutoff + skin) / cutoff) ** 3


def optimal_skin(cutoff: float, rate: float, rebuild_over_pair: float, *, lo: float = 0.02, hi: float | None = None):
    """The skin s* (nm) minimising :func:`skin_cost`, clipped to ``[lo, hi]`` (``hi``: e.g. what the box allows).

    Args:
      cutoff: r_c, nm. rate: v, nm per step (:func:`displacement_rate`). rebuild_over_pair: ρ, one rebuild's cost
        over one pair evaluation's, at the same list radius (measured, e.g. ``benchmarks/bench_engine.py``).
    """
    if cutoff <= 0 or rate < 0 or rebuild_over_pair < 0:
        raise UserInputError(
            f"optimal_skin: need cutoff > 0, rate >= 0 and rebuild_over_pair >= 0; got {cutoff}, {rate}, "
            f"{rebuild_over_pair}"
        )
    a = rebuild_over_pair * rate
    s = (math.sqrt(a * a + 3.0 * a * cutoff) - a) / 3.0
    s = max(s, lo)
    return s if hi is None else min(s, hi)
