"""Force-field fitting: the residuals of all targets of one state point, from the frame-averaged observables ⟨o⟩
or from the targets' predictions (flat), as the fit's estimators need them (:mod:`fitting.forcefield`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fitting import objectives

__all__ = ["Objective", "per_frame_all"]


def per_frame_all(targets):
    """Concatenate every target's per-frame vector: (params, pos, box) → [K_total]."""
    fns = [t.observable.per_frame for t in targets]
    return lambda params, pos, box=None: jnp.concatenate([jnp.atleast_1d(f(params, pos, box)) for f in fns])


class Objective:
    """Residuals r = sqrt(w/K)·(prediction − data)/scale for all targets, concatenated (a named metric of
    :mod:`fitting.objectives` where the target sets one); prediction = combine(⟨o⟩) per target.

    Built at the start θ ``params`` and positions ``pos0`` ``[N, 3]`` nm (box ``box``): they fix the size of each
    target's per-frame vector and the shape of its prediction."""

    def __init__(self, targets, params, pos0, box):
        self.targets = targets
        o0 = [jnp.atleast_1d(t.observable.per_frame(params, pos0, box)) for t in targets]
        self.offsets = np.cumsum([0] + [int(np.size(o)) for o in o0])
        self.spans = list(zip(self.offsets[:-1], self.offsets[1:], strict=True))  # each target's slice of ⟨o⟩
        shapes = [np.shape(t.observable.predict(o)) for t, o in zip(targets, o0, strict=True)]
        cuts = np.cumsum([0] + [int(np.prod(sh)) for sh in shapes])
        self.blocks = list(zip(cuts[:-1], cuts[1:], shapes, strict=True))  # each prediction's slice of the flat one
        self.scales, self.data, self.weights = [], [], []
        for t in targets:
            data = np.asarray(t.data, float)
            scale = np.sqrt(np.mean(data**2)) if t.sigma is None else np.asarray(t.sigma, float)
            scale = np.where(np.asarray(scale) > 0, scale, 1.0)
            self.scales.append(scale)
            self.data.append(data)
            self.weights.append(float(t.weight))

    def predict_all(self, mean):
        """Each target's prediction from ⟨o⟩ ``[K_total]`` (jax arrays, traceable)."""
        return [t.observable.predict(mean[a:b]) for t, (a, b) in zip(self.targets, self.spans, strict=True)]

    def residuals(self, mean):
        """Residuals from ⟨o⟩ ``[K_total]``."""
        return self.residuals_of(self.predict_all(mean))

    def flat(self, mean):
        """All predictions from ⟨o⟩, raveled and concatenated ``[Kp]``."""
        return jnp.concatenate([jnp.ravel(p) for p in self.predict_all(mean)])

    def unflat(self, flat):
        """``[Kp]`` → one prediction array per target (numpy)."""
        return [np.asarray(flat[a:b]).reshape(sh) for a, b, sh in self.blocks]

    def residuals_of_flat(self, flat):
        """Residuals from flat predictions ``[Kp]`` (traceable)."""
        return self.residuals_of([flat[a:b].reshape(sh) for a, b, sh in self.blocks])

    def residuals_of(self, preds):
        """Residuals of the targets' predictions (a list, one array per target)."""
        out = []
        for i, t in enumerate(self.targets):
            pred = preds[i]
            if t.objective is not None:  # a named metric shared with reweighting (fitting.objectives)
                r = objectives.objective_residuals(t.objective, pred, self.data[i], sigma=t.sigma, weights=t.weights)
            else:
                r = (pred - self.data[i]) / self.scales[i] / np.sqrt(self.data[i].size)
            out.append(np.sqrt(self.weights[i]) * r)
        return jnp.concatenate(out)
