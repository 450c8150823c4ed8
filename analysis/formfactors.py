"""X-ray atomic form factors from the International Tables (IT92), read from gemmi at run time.

IT92 four-Gaussian fit (International Tables for Crystallography Vol. C, 1992, Table 6.1.1.4;
ITC Vol. C §4.3.2.2 / gemmi ``docs/scattering.rst``)::

    f(s) = Σ_{i=1..4} a_i · exp(−b_i · s²/4) + c,      s = 1/d (Å⁻¹),  s²/4 = (sin θ / λ)²

``b_i`` are in Å², ``f`` in electrons. Coefficients are taken from ``gemmi.Element(sym).it92`` so that
our structure factors and gemmi's use the very same numbers (parity to float64 rounding).

API::

    table = form_factor_table(["C", "N", "O", "C"])      # FormFactorTable (unique types + per-atom index)
    f = form_factor(inv_d2, table.a, table.b, table.c)   # [..., n_types, M] electrons

Elements are upper/lower-case insensitive symbols ("C", "Fe", "FE"); unknown symbols raise ``ValueError``
naming the symbol. Ions use the neutral-atom table (as gemmi's StructureFactorCalculatorX does by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import gemmi
import jax.numpy as jnp
import numpy as np

__all__ = ["FormFactorTable", "it92_coefficients", "form_factor_table", "form_factor", "normalize_element"]


class FormFactorTable(NamedTuple):
    """Unique scattering types and the per-atom type index.

    Attributes:
      symbols: tuple of element symbols, one per type (``n_types``).
      types: int32 ``[n_atoms]`` index into the type axis.
      a: ``[n_types, 4]`` electrons; b: ``[n_types, 4]`` Å²; c: ``[n_types]`` electrons (float64 numpy).
    """

    symbols: tuple[str, ...]
    types: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray


def normalize_element(symbol: str) -> str:
    """'FE' / 'fe' / ' Fe ' → 'Fe'; deuterium 'D' → 'H'. Raises ``ValueError`` for unknown symbols."""
    s = str(symbol).strip()
    if not s:
        raise ValueError("empty element symbol; every atom needs an element (PDB columns 77-78)")
    s = s[0].upper() + s[1:].lower()
    if s == "D":
        return "H"
    el = gemmi.Element(s)
    if el.name == "X" and s != "X":
        raise ValueError(f"unknown element symbol {symbol!r}; use a periodic-table symbol such as 'C' or 'Fe'")
    if el.name == "X":
        raise ValueError("element 'X' (unknown) has no form factor; fix the element column of the structure")
    return el.name


def it92_coefficients(symbol: str) -> tuple[np.ndarray, np.ndarray, float]:
    """IT92 (a[4] electrons, b[4] Å², c electrons) for one element, from ``gemmi.Element(symbol).it92``."""
    el = gemmi.Element(normalize_element(symbol))
    coefs = np.asarray(el.it92.get_coefs(), dtype=np.float64)
    return coefs[:4].copy(), coefs[4:8].copy(), float(coefs[8])


def form_factor_table(elements: Sequence[str]) -> FormFactorTable:
    """Build the unique-type table for a list of per-atom element symbols (order of first appearance)."""
    norm = [normalize_element(e) for e in elements]
    symbols: list[str] = []
    index: dict[str, int] = {}
    types = np.empty(len(norm), np.int32)
    for i, s in enumerate(norm):
        if s not in index:
            index[s] = len(symbols)
            symbols.append(s)
        types[i] = index[s]
    coefs = [it92_coefficients(s) for s in symbols]
    a = np.array([c[0] for c in coefs]).reshape(-1, 4)
    b = np.array([c[1] for c in coefs]).reshape(-1, 4)
    c = np.array([c[2] for c in coefs]).reshape(-1)
    return FormFactorTable(tuple(symbols), types, a, b, c)


def form_factor(inv_d2, a, b, c):
    """IT92 form factors f(s) for every type at every reflection.

    Args:
      inv_d2: ``[..., M]`` s² = 1/d² (Å⁻²).
      a, b: ``[n_types, 4]`` (electrons, Å²); c: ``[n_types]`` electrons.

    Returns:
      ``[..., n_types, M]`` electrons, dtype of ``inv_d2``.
    """
    inv_d2 = jnp.asarray(inv_d2)
    dt = inv_d2.dtype
    a, b, c = (jnp.asarray(x, dt) for x in (a, b, c))
    x = inv_d2[..., None, None, :] / 4  # [..., 1, 1, M]  (sin θ/λ)²
    return jnp.sum(a[..., None] * jnp.exp(-b[..., None] * x), axis=-2) + c[:, None]
