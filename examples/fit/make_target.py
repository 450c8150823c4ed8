"""Make target_rdf.csv for lj_rdf.yaml: g(r) of the LJ fluid at the hidden parameters (σ = 0.34 nm,
ε = 0.996 kJ/mol, ρσ³ = 0.8, 240 K), averaged over a long run. Usage: python examples/fit/make_target.py"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dmd.io_utils import atomic_path
from dmd.models import lj_fluid
from fitting import observables as ob
from fitting.forcefield import FitConfig, sample


def main(out=Path(__file__).with_name("target_rdf.csv"), steps=20000):
    true = lj_fluid(128, density=0.8, temperature=240.0, cutoff=0.75, dtype=jnp.float32, seed=1)
    g = ob.rdf(128, np.asarray(true.box), r_max=0.9, n_bins=30)
    cfg = FitConfig(steps=steps, equilibration=2000, report_every=20, dt=0.005, temperature=240.0, friction=2.0)
    frames, _ = sample(true, true.params, dataclasses.replace(cfg), seed=99)
    target = np.asarray(jax.vmap(lambda x: g.per_frame(true.params, x))(jnp.asarray(frames))).mean(0)
    with atomic_path(out) as tmp:
        np.savetxt(tmp, np.column_stack([g.axis, target]), delimiter=",", header="r_nm,g", comments="", fmt="%.8g")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
