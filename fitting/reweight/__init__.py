"""Frame reweighting against experimental diffuse scattering.

Frame weights are a softmax of free logits z, so they stay on the simplex (w_t ≥ 0, Σ_t w_t = 1) and the
prediction stays a variance (docs/diffuse.md, "Frame reweighting")::

    w = softmax(z),   x′(h) = Σ_t w_t |F(h,t)|² − |Σ_t w_t F(h,t)|²

computed from the sufficient statistics S = Σ_t w_t Z_t of a :class:`fitting.fstore.FrameStore`
(x′ = S₀ − S₁² − S₂², :func:`diffuse_from_stats`). These are experimental frame weights, not the Boltzmann
weights exp(−βΔU) of :mod:`dmd.estimators`. The loss is an objective from :mod:`fitting.objectives` plus a pull
toward prior weights w₀ (BME / BioEn)::

    L(z) = objective(x′(w), y) + θ · KL(w‖w₀),   KL(w‖w₀) = Σ_t w_t log(w_t / w₀_t)

optimized with optax Adam or L-BFGS. θ is chosen by cross-validation on held-out voxels (whole symmetry orbits
or whole resolution shells); one fold is never used for fitting or for choosing θ: it gives the reported test CC.
Reports: train/test CC (total and anisotropic), Kish N_eff = (Σw)²/Σw², entropy, weights over frame index, and
an identifiability analysis of block weights.

Modules, lowest first:

* :mod:`~fitting.reweight.prediction` — x′ from statistics, KL, entropy, N_eff;
* :mod:`~fitting.reweight.problem` — :class:`Problem` (data bound to a store), the objective, prediction and
  evaluation of weights;
* :mod:`~fitting.reweight.streaming` — out-of-core Adam (the store streamed from disk every step);
* :mod:`~fitting.reweight.fit` — batched in-memory fits (:func:`fit_batch`);
* :mod:`~fitting.reweight.crossval` — held-out folds and θ selection;
* :mod:`~fitting.reweight.baselines` — uniform, greedy elimination, sigmoid prototype;
* :mod:`~fitting.reweight.identifiability` — flat directions of the group weights;
* :mod:`~fitting.reweight.procedure` — the whole cross-validated :func:`reweight`;
* :mod:`~fitting.reweight.data_map`, :mod:`~fitting.reweight.outputs`, :mod:`~fitting.reweight.pipeline` —
  MTZ + trajectory in, files out (``dmd reweight``, ``dmd quickstart``).
"""

from fitting.reweight.baselines import greedy_elimination, sigmoid_baseline
from fitting.reweight.crossval import holdout_folds, select_theta
from fitting.reweight.data_map import DataOnBox, check_and_map, topology_spacegroup
from fitting.reweight.fit import fit_batch
from fitting.reweight.identifiability import identifiability
from fitting.reweight.outputs import write_outputs
from fitting.reweight.pipeline import EXAMPLE_DIR, available_memory, quickstart_stage, run_reweight
from fitting.reweight.prediction import (
    diffuse_from_stats,
    diffuse_unnormalized,
    entropy,
    kish_neff,
    kl_divergence,
    to_data_voxels,
    x_from_stats,
    x_from_weights,
)
from fitting.reweight.problem import (
    FitSpec,
    OptimizerSettings,
    Problem,
    evaluate_weights,
    make_problem,
    objective_value,
    predict,
    weighted_stats,
)
from fitting.reweight.procedure import ReweightConfig, ReweightResult, reweight
from fitting.reweight.streaming import fit_streaming, stream_adam

__all__ = [
    "EXAMPLE_DIR",
    "DataOnBox",
    "FitSpec",
    "OptimizerSettings",
    "Problem",
    "ReweightConfig",
    "ReweightResult",
    "available_memory",
    "check_and_map",
    "diffuse_from_stats",
    "diffuse_unnormalized",
    "entropy",
    "evaluate_weights",
    "fit_batch",
    "fit_streaming",
    "greedy_elimination",
    "holdout_folds",
    "identifiability",
    "kish_neff",
    "kl_divergence",
    "make_problem",
    "objective_value",
    "predict",
    "quickstart_stage",
    "reweight",
    "run_reweight",
    "select_theta",
    "sigmoid_baseline",
    "stream_adam",
    "to_data_voxels",
    "topology_spacegroup",
    "weighted_stats",
    "write_outputs",
    "x_from_stats",
    "x_from_weights",
]
