"""The base layer of dmd: what every other layer may import.

Nothing here imports jax, OpenMM or gemmi at module level, so importing the base is cheap and has no
side effects. Modules:

- :mod:`dmd.base.errors`: exceptions for bad user input and diverged runs.
- :mod:`dmd.base.io`: atomic writes (temporary file + rename), JSON and NPZ writers.
- :mod:`dmd.base.plotting`: the one way figures are made and saved (Agg backend, atomic PNG).
- :mod:`dmd.base.progress`: the one progress-bar factory (tqdm on stderr, one on/off flag).
- :mod:`dmd.base.units`: unit conversions between the MD side (nm) and the crystallographic side (Å).
- :mod:`dmd.base.config`: YAML/JSON config loading with errors that name the file.
"""

from dmd.base.errors import SimulationDiverged, UserInputError
from dmd.base.io import atomic_path, savez, write_json

__all__ = ["SimulationDiverged", "UserInputError", "atomic_path", "savez", "write_json"]
