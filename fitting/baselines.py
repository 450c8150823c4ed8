"""Baselines that frame reweighting must beat; they live in :mod:`fitting.reweight.baselines` (this name is kept
for existing imports)."""

from fitting.reweight.baselines import greedy_elimination, sigmoid_baseline

__all__ = ["greedy_elimination", "sigmoid_baseline"]
