"""Variational-inference scaling and merging of diffraction data (careless-style, in JAX).

Pipeline: :func:`read_unmerged` (gemmi) → :func:`merge` (ELBO fit of a Wilson prior, a surrogate q(F),
a scale model and a Normal/Student-t likelihood; optional half-dataset refits) → :func:`write_outputs`
(merged MTZ with F, I on a Wilson-scaled absolute scale (:mod:`analysis.merging.wilson`) and E; JSON
summary; plots, :mod:`analysis.merging.plots`). Baselines in :mod:`analysis.merging.classical`; synthetic data with
known truth in :mod:`analysis.merging.synth`. MTZ files go through :mod:`analysis.mtz_io` (the one MTZ home);
:mod:`analysis.merging.io` adds what is specific to unmerged data (batches, M/ISYM, metadata columns).

Modules of this package import each other by module path (``from analysis.merging.io import ...``), never
through this ``__init__``, which only re-exports.

Example::

    from analysis.merging import read_unmerged, merge, write_outputs, MergeConfig
    u = read_unmerged("unmerged.mtz", metadata=["XDET", "YDET"])
    out = merge(u, MergeConfig(likelihood="student", dof=4.0), half_datasets=True)
    write_outputs("merged.mtz", out)
"""

from analysis.merging.classical import amplitudes, french_wilson, inverse_variance_merge, scale_b_merge
from analysis.merging.fit import FitResult, ImageBatcher, fit, fit_half_datasets, image_halves, posterior_summary
from analysis.merging.io import (
    Unmerged,
    group_observations,
    hkl_keys,
    hkl_rows,
    in_asu,
    read_merged,
    read_unmerged,
    write_merged,
    write_unmerged,
)
from analysis.merging.model import MergeConfig, MergeData, negative_elbo
from analysis.merging.pipeline import (
    MergeOutput,
    absolute_scale,
    merge,
    merged_columns,
    plot_cc,
    plot_loss,
    write_outputs,
)
from analysis.merging.plots import plot_friedel, plot_shells
from analysis.merging.quality import cc_anom, cc_half, cc_truth
from analysis.merging.synth import SyntheticConfig, SyntheticData, make_synthetic, write_synthetic
from analysis.merging.wilson import WilsonFit, protein_sigma_n, wilson_fit

__all__ = [
    "Unmerged",
    "group_observations",
    "read_unmerged",
    "write_unmerged",
    "write_merged",
    "read_merged",
    "hkl_keys",
    "hkl_rows",
    "in_asu",
    "MergeConfig",
    "MergeData",
    "negative_elbo",
    "FitResult",
    "ImageBatcher",
    "fit",
    "fit_half_datasets",
    "image_halves",
    "posterior_summary",
    "MergeOutput",
    "merge",
    "absolute_scale",
    "merged_columns",
    "write_outputs",
    "plot_loss",
    "plot_cc",
    "plot_shells",
    "plot_friedel",
    "cc_truth",
    "cc_half",
    "cc_anom",
    "inverse_variance_merge",
    "scale_b_merge",
    "french_wilson",
    "amplitudes",
    "SyntheticConfig",
    "SyntheticData",
    "make_synthetic",
    "write_synthetic",
    "WilsonFit",
    "protein_sigma_n",
    "wilson_fit",
]
