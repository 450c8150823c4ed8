"""OpenMM constraints as :class:`dmd.system.Constraints`: rigid waters become SETTLE, the rest pair lengths."""

from __future__ import annotations

import numpy as np

from dmd.openmm_system.common import value
from dmd.system import Constraints


def constraints_from_openmm(openmm_system, topology) -> Constraints | None:
    """The System's constraints (nm): 3-site rigid waters of one geometry as SETTLE, the rest as pairs; None if none."""
    nc = openmm_system.getNumConstraints()
    if nc == 0:
        return None
    import openmm.unit as unit

    rows = [openmm_system.getConstraintParameters(k) for k in range(nc)]
    pairs = {tuple(sorted((int(r[0]), int(r[1])))): value(r[2], unit.nanometer) for r in rows}
    settle = []
    geometry = None
    if topology is not None:
        for res in topology.residues():
            # a 4/5-site water's extra sites are massless virtual sites, placed after SETTLE moves O, H1, H2
            atoms = [a for a in res.atoms() if not openmm_system.isVirtualSite(a.index)]
            if len(atoms) != 3:
                continue
            els = [a.element.symbol if a.element is not None else "" for a in atoms]
            if sorted(els) != ["H", "H", "O"]:
                continue
            o = atoms[els.index("O")].index
            h = [a.index for a, e in zip(atoms, els, strict=True) if e == "H"]
            keys = [tuple(sorted((o, h[0]))), tuple(sorted((o, h[1]))), tuple(sorted((h[0], h[1])))]
            if not all(k in pairs for k in keys):
                continue
            d_oh, d_oh2, d_hh = (pairs[k] for k in keys)
            if abs(d_oh - d_oh2) > 1e-12 or (
                geometry is not None and (abs(geometry[0] - d_oh) + abs(geometry[1] - d_hh)) > 1e-12
            ):
                continue
            geometry = (d_oh, d_hh)
            settle.append((o, h[0], h[1]))
            for k in keys:
                pairs.pop(k)
    keys = sorted(pairs)
    return Constraints(
        pairs=np.array(keys, dtype=np.int32).reshape(-1, 2),
        lengths=np.array([pairs[k] for k in keys], dtype=np.float64),
        settle=np.array(settle, dtype=np.int32).reshape(-1, 3) if settle else None,
        settle_geometry=geometry,
    )
