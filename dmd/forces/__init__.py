"""Force-field terms matching OpenMM (bonded, nonbonded, PME) and the neighbour list they use."""

from dmd.forces import bonded, neighbors, nonbonded, pme

__all__ = ["bonded", "neighbors", "nonbonded", "pme"]
