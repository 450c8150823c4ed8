"""Bonded OpenMM forces (bonds, angles, torsions, CHARMM impropers, CMAP) as θ and :mod:`dmd.forces.bonded` terms.

Each converter returns ``(params, labels, fn)``: θ arrays by name, their labels, and
``fn(p, x, box, neighbor) -> energy`` (kJ/mol).
"""

from __future__ import annotations

import numpy as np

from dmd.base.errors import UserInputError
from dmd.forces import bonded
from dmd.openmm_system.common import index_label, unique_labels, value

_HARMONIC_TORSION = {"k*(theta-theta0)^2"}


def _term(idx, params: dict, energy, labels=None):
    """``(params, labels, fn)`` of a term with one row per index tuple of ``idx [M, k]``: every θ array labelled
    by its rows (``labels``, default the atom indices) and ``fn(p, x, box, neighbor) = energy(*θ in the order of
    params, x, idx)``."""
    lab = unique_labels(index_label(i) for i in idx) if labels is None else labels
    names = tuple(params)
    return params, {n: lab for n in names}, lambda p, x, b, nb: energy(*(p[n] for n in names), x, idx)


def harmonic_bond_term(force):
    """HarmonicBondForce: θ ``k`` kJ/mol/nm², ``length`` nm per bond."""
    import openmm.unit as unit

    rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
    idx = np.array([[r[0], r[1]] for r in rows], dtype=np.int32).reshape(-1, 2)
    length = np.array([value(r[2], unit.nanometer) for r in rows])
    k = np.array([value(r[3], unit.kilojoule_per_mole / unit.nanometer**2) for r in rows])
    return _term(idx, {"k": k, "length": length}, bonded.harmonic_bond_energy)


def harmonic_angle_term(force):
    """HarmonicAngleForce: θ ``k`` kJ/mol/rad², ``angle`` rad per angle."""
    import openmm.unit as unit

    rows = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
    idx = np.array([[r[0], r[1], r[2]] for r in rows], dtype=np.int32).reshape(-1, 3)
    angle = np.array([value(r[3], unit.radian) for r in rows])
    k = np.array([value(r[4], unit.kilojoule_per_mole / unit.radian**2) for r in rows])
    return _term(idx, {"k": k, "angle": angle}, bonded.harmonic_angle_energy)


def periodic_torsion_term(force):
    """PeriodicTorsionForce: θ ``k`` kJ/mol, ``phase`` rad per torsion (periodicity fixed)."""
    import openmm.unit as unit

    rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
    idx = np.array([r[:4] for r in rows], dtype=np.int32).reshape(-1, 4)
    per = np.array([int(r[4]) for r in rows], dtype=np.int32)
    phase = np.array([value(r[5], unit.radian) for r in rows])
    k = np.array([value(r[6], unit.kilojoule_per_mole) for r in rows])
    lab = unique_labels(f"{index_label(i)}(n={m})" for i, m in zip(idx, per, strict=True))

    def energy(k, phase, x, idx, per=per):
        return bonded.periodic_torsion_energy(k, phase, per.astype(x.dtype), x, idx)

    return _term(idx, {"k": k, "phase": phase}, energy, lab)


def harmonic_torsion_term(force):
    """CHARMM's improper CustomTorsionForce ``k*(theta-theta0)^2``: θ ``k``, ``theta0`` per torsion."""
    expr = force.getEnergyFunction().replace(" ", "")
    pnames = [force.getPerTorsionParameterName(i) for i in range(force.getNumPerTorsionParameters())]
    if expr not in _HARMONIC_TORSION or sorted(pnames) != ["k", "theta0"] or force.getNumGlobalParameters():
        raise UserInputError(f"CustomTorsionForce {expr!r} is not supported (only CHARMM's k*(theta-theta0)^2)")
    rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
    idx = np.array([r[:4] for r in rows], dtype=np.int32).reshape(-1, 4)
    vals = np.array([list(r[4]) for r in rows], dtype=np.float64).reshape(-1, len(pnames))
    k = vals[:, pnames.index("k")]
    theta0 = vals[:, pnames.index("theta0")]
    return _term(idx, {"k": k, "theta0": theta0}, bonded.harmonic_torsion_energy)


def cmap_term(force):
    """CMAPTorsionForce: θ ``maps [n_maps, size, size]`` kJ/mol (bicubic spline as OpenMM)."""
    import openmm.unit as unit

    maps, sizes = [], set()
    for m in range(force.getNumMaps()):
        size, energy = force.getMapParameters(m)
        e = np.array([value(v, unit.kilojoule_per_mole) for v in energy]).reshape(size, size).T
        maps.append(e)
        sizes.add(size)
    if len(sizes) > 1:
        raise UserInputError("CMAP maps of different sizes are not supported")
    size = sizes.pop()
    rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
    map_index = np.array([r[0] for r in rows], dtype=np.int32)
    ia = np.array([r[1:5] for r in rows], dtype=np.int32).reshape(-1, 4)  # (0, 4) for water-only systems
    ib = np.array([r[5:9] for r in rows], dtype=np.int32).reshape(-1, 4)
    op = bonded.cmap_spline_operator(size)
    return (
        {"maps": np.stack(maps)},
        {"maps": unique_labels(f"map{m}[{i},{j}]" for m in range(len(maps)) for i in range(size) for j in range(size))},
        lambda p, x, b, nb, mi=map_index, ia=ia, ib=ib, op=op: bonded.cmap_energy(p["maps"], mi, op, x, ia, ib),
    )


def bonded_converter(force):
    """The converter above for this OpenMM force, or None if it is not a bonded force."""
    import openmm as mm

    for cls, convert in (
        (mm.HarmonicBondForce, harmonic_bond_term),
        (mm.HarmonicAngleForce, harmonic_angle_term),
        (mm.PeriodicTorsionForce, periodic_torsion_term),
        (mm.CustomTorsionForce, harmonic_torsion_term),
        (mm.CMAPTorsionForce, cmap_term),
    ):
        if isinstance(force, cls):
            return convert
    return None
