"""Crystallographic analysis in JAX: unit cells, hkl & symmetry, structure factors,
diffuse scattering, powder patterns, powder indexing, and VI scaling/merging.

Units: Å and 1/Å (s = 1/d, inv_d2 = 1/d²); angles in degrees at the boundary.
"""

__all__: list[str] = []
