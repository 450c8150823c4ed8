"""The ``dmd reweight`` pipeline (MTZ + trajectory in, files out); it lives in :mod:`fitting.reweight.pipeline`,
:mod:`fitting.reweight.data_map` and :mod:`fitting.reweight.outputs` (this name is kept for existing imports)."""

from fitting.reweight.data_map import DataOnBox, check_and_map
from fitting.reweight.outputs import write_outputs
from fitting.reweight.pipeline import available_memory, run_reweight

__all__ = ["DataOnBox", "available_memory", "check_and_map", "run_reweight", "write_outputs"]
