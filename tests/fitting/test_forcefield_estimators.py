"""fitting.forcefield_estimators.StreamingCovariance: the fluctuation Jacobian −β cov(o, ∂U/∂z) accumulated over
frame chunks equals the batch estimator (fluctuation_jacobian on all frames) to round-off, for uneven chunks and
offset means (where a naive one-pass Σxy − n x̄ȳ would lose digits)."""

from __future__ import annotations

import numpy as np
import pytest

from fitting.forcefield_estimators import StreamingCovariance, fluctuation_jacobian


def test_streaming_covariance_equals_batch():
    rng = np.random.default_rng(3)
    f, k, p = 1000, 37, 3
    o = 1e3 + rng.normal(size=(f, k))  # large offsets: the co-moment update must stay centred
    du = -5e4 + rng.normal(size=(f, p)) + 0.3 * o[:, :p]
    beta = 0.4
    batch = fluctuation_jacobian(o, du, beta)
    acc = StreamingCovariance()
    for a, b in [(0, 1), (1, 8), (8, 8), (8, 333), (333, 334), (334, 1000)]:  # uneven chunks, one empty
        acc.add(o[a:b], du[a:b])
    assert acc.n == f
    np.testing.assert_allclose(acc.jacobian(beta), batch, rtol=1e-9, atol=1e-12 * np.abs(batch).max())
    np.testing.assert_allclose(acc.mean_o, o.mean(axis=0), rtol=1e-13)
    # memory: the accumulator holds K·P + K + P numbers, not frames
    assert acc.comoment.shape == (k, p)


def test_streaming_covariance_empty():
    with pytest.raises(ValueError, match="no frames"):
        StreamingCovariance().covariance()
