"""dmd: differentiable molecular dynamics in JAX.

Units follow OpenMM on the MD side (nm, ps, kJ/mol, amu, e, K).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
