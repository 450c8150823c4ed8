"""Force-field terms matching OpenMM (bonded, nonbonded, PME) and the neighbour list they use.

The submodules are imported on first access (``dmd.forces.pme``), not with the package: the numba handlers'
modules live here too, and a worker of :mod:`dmd.forces.numba_prefetch` that imports one of them needs neither jax
nor the force field (importing them cost each worker ~0.6 CPU s)."""

import importlib

__all__ = ["bonded", "neighbors", "nonbonded", "pme"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
