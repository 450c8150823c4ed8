"""Exceptions raised for bad user input.

Every message names the offending file or argument *and* the fix, e.g.
``"traj.dcd: 12 atoms but topology top.pdb has 14; pass the matching --top"``.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user (file, shape, unit, option). The CLI prints it without a traceback."""


class NoResult(RuntimeError):
    """A command ran correctly but found nothing to report (e.g. no cell indexes the lines); exit code 3."""


class SimulationDiverged(RuntimeError):
    """A simulation produced NaN/inf or exploding coordinates.

    Attributes:
      step: the first step at which the state was bad.
      last_good_checkpoint: path of the last good checkpoint written, or None.
    """

    def __init__(self, message: str, step: int, last_good_checkpoint: str | None = None):
        super().__init__(message)
        self.step = step
        self.last_good_checkpoint = last_good_checkpoint


class RunInterrupted(KeyboardInterrupt):
    """A run stopped on SIGINT/SIGTERM after saving its frames, log and checkpoint.

    Attributes:
      signum: the signal number (2 SIGINT, 15 SIGTERM); the CLI exits with 128 + signum.
      step: the step reached (the checkpoint's step).
      checkpoint: path of the checkpoint written, or None (a run without output files).
      message: the account to print instead of the default "interrupted at step N; checkpoint ..." (e.g. a run
        stopped during its minimisation, before anything was written).
    """

    def __init__(self, signum: int, step: int, checkpoint: str | None = None, message: str | None = None):
        where = f"; checkpoint {checkpoint} (continue with --resume)" if checkpoint else ""
        super().__init__(message or f"interrupted at step {step}{where}")
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
