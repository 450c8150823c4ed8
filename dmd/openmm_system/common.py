"""Helpers every OpenMM converter shares: unit stripping and θ labels."""

from __future__ import annotations

from collections import defaultdict

NONBONDED_METHODS = ("NoCutoff", "CutoffPeriodic", "PME")


def unique_labels(labels) -> tuple[str, ...]:
    """Labels as strings, '/' replaced by '_', repeats numbered ``lab#2``, ``lab#3``..."""
    seen = defaultdict(int)
    out = []
    for lab in labels:
        lab = str(lab).replace("/", "_")
        seen[lab] += 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return tuple(out)


def atom_labels(topology, n) -> tuple[str, ...]:
    """``"index:RESresid:ATOM"`` for each atom of ``topology``, or the indices if there is none."""
    if topology is None:
        return tuple(str(i) for i in range(n))
    return unique_labels(f"{a.index}:{a.residue.name}{a.residue.id}:{a.name}" for a in topology.atoms())


def index_label(idx) -> str:
    """Atom indices joined by '-', e.g. ``"4-5-6"``."""
    return "-".join(str(int(i)) for i in idx)


def value(q, unit=None) -> float:
    """``q`` as a float in ``unit`` (an OpenMM Quantity), or ``float(q)`` for a plain number."""
    if not hasattr(q, "value_in_unit"):
        return float(q)
    # OpenMM hands parameters back in the units asked for here (nm, kJ/mol, e): skip the conversion then, which
    # costs ~3 µs a value, 0.2 s of start-up for the ~60,000 parameters of a solvated protein
    if q.unit is unit or q.unit == unit:
        return float(q._value)
    return float(q.value_in_unit(unit))
