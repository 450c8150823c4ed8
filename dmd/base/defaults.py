"""Defaults shared by the engine and the command line (plain constants: importing this costs nothing).

The simulation defaults follow what OpenMM users run: the amber14 protein force field with its TIP3P-FB water,
hydrogen-bond constraints, the LangevinMiddle (BAOAB) integrator at 2 fs and 300 K.
"""

from __future__ import annotations

#: OpenMM force-field XML names used when none is given (``dmd energy``, ``dmd simulate``, ``dmd crystal``)
DEFAULT_FORCEFIELD: tuple[str, ...] = ("amber14-all.xml", "amber14/tip3pfb.xml")
#: integrator of ``dmd simulate`` (``langevin``, the seed form, when sensitivities are asked for)
DEFAULT_INTEGRATOR = "baoab"
#: bond constraints of ``dmd simulate`` (none when the window sensitivity method is asked for)
DEFAULT_CONSTRAINTS = "HBonds"
