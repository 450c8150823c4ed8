"""OpenMM virtual sites as :class:`dmd.system.VirtualSites` index/weight arrays."""

from __future__ import annotations

import numpy as np

from dmd.base.errors import UserInputError
from dmd.openmm_system.common import value
from dmd.system import VirtualSites

_VSITE_TYPES = "TwoParticleAverageSite, ThreeParticleAverageSite, OutOfPlaneSite, LocalCoordinatesSite"


def virtual_sites_from_openmm(openmm_system) -> VirtualSites | None:
    """The System's virtual sites as :class:`dmd.system.VirtualSites` index/weight arrays, or None if it has none."""
    import openmm as mm
    import openmm.unit as unit

    n = openmm_system.getNumParticles()
    average, oop, local = [], [], []
    for i in range(n):
        if not openmm_system.isVirtualSite(i):
            continue
        site = openmm_system.getVirtualSite(i)
        parents = [int(site.getParticle(k)) for k in range(site.getNumParticles())]
        nested = [p for p in parents if openmm_system.isVirtualSite(p)]
        if nested:
            raise UserInputError(
                f"virtual site {i} is built on virtual site {nested[0]}; dmd places sites from real particles only: "
                "define the site directly from real atoms (e.g. in the force-field XML's <VirtualSite>)"
            )
        if isinstance(site, (mm.TwoParticleAverageSite, mm.ThreeParticleAverageSite)):
            average.append((i, parents, [float(site.getWeight(k)) for k in range(len(parents))]))
        elif isinstance(site, mm.OutOfPlaneSite):
            w = (float(site.getWeight12()), float(site.getWeight13()), value(site.getWeightCross(), unit.nanometer**-1))
            oop.append((i, parents, w))
        elif isinstance(site, mm.LocalCoordinatesSite):
            weights = [
                [float(v) for v in site.getOriginWeights()],
                [float(v) for v in site.getXWeights()],
                [float(v) for v in site.getYWeights()],
            ]
            loc = site.getLocalPosition()
            loc = [value(loc[k], unit.nanometer) for k in range(3)]
            local.append((i, parents, weights, loc))
        else:
            raise UserInputError(
                f"particle {i} is an OpenMM {_site_type_name(openmm_system, i, site)} virtual site, which dmd does "
                "not support "
                f"(supported: {_VSITE_TYPES}); use a force field whose extra sites are of a supported type "
                "(e.g. amber19/opc.xml or amber14/tip4pew.xml water)"
            )
    if not (average or oop or local):
        return None

    def padded(rows, width):
        parents = np.zeros((len(rows), width), np.int32)
        for s, r in enumerate(rows):
            parents[s, : len(r[1])] = r[1]
        return parents

    k_avg = max((len(r[1]) for r in average), default=1)
    w_avg = np.zeros((len(average), k_avg))
    for s, r in enumerate(average):
        w_avg[s, : len(r[2])] = r[2]
    k_loc = max((len(r[1]) for r in local), default=1)
    w_loc = np.zeros((len(local), 3, k_loc))
    for s, r in enumerate(local):
        for j in range(3):
            w_loc[s, j, : len(r[2][j])] = r[2][j]
    return VirtualSites(
        average_sites=np.array([r[0] for r in average], np.int32),
        average_parents=padded(average, k_avg),
        average_weights=w_avg,
        out_of_plane_sites=np.array([r[0] for r in oop], np.int32),
        out_of_plane_parents=padded(oop, 3),
        out_of_plane_weights=np.array([r[2] for r in oop], np.float64).reshape(-1, 3),
        local_sites=np.array([r[0] for r in local], np.int32),
        local_parents=padded(local, k_loc),
        local_weights=w_loc,
        local_positions=np.array([r[3] for r in local], np.float64).reshape(-1, 3),
    )


def _site_type_name(openmm_system, i, site) -> str:
    """OpenMM class name of virtual site ``i`` (SWIG returns some types, e.g. SymmetrySite, as the base class)."""
    import openmm as mm

    if type(site) is not mm.VirtualSite:
        return type(site).__name__
    import xml.etree.ElementTree as ET

    try:  # error path only: the serialized System names the site's type
        particles = ET.fromstring(mm.XmlSerializer.serialize(openmm_system)).find("Particles")
        return particles[i][0].tag
    except Exception:
        return "VirtualSite (unknown type)"
