"""Crystals from structure files: the P1 supercell of any space group (``dmd crystal``; docs/crystals.md).

>>> from dmd.crystal import build_crystal, write_crystal
>>> crystal = build_crystal("5e5z.pdb", supercell=(2, 2, 1))
>>> write_crystal(crystal, "crystal.pdb")      # also writes crystal.json
"""

from dmd.crystal.builder import Crystal, build_crystal, chain_label, orthogonalization_matrix, symmetry_operations
from dmd.crystal.reader import AsymmetricUnit, find_spacegroup, is_placeholder_cell, read_asymmetric_unit
from dmd.crystal.writer import write_crystal

__all__ = [
    "AsymmetricUnit",
    "Crystal",
    "build_crystal",
    "chain_label",
    "find_spacegroup",
    "is_placeholder_cell",
    "orthogonalization_matrix",
    "read_asymmetric_unit",
    "symmetry_operations",
    "write_crystal",
]
