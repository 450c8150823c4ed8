"""Likelihoods of an observed intensity I given the model prediction Î = scale·F².

* Normal:     log p(I | Î) = −½((I − Î)/σ)² − log σ − ½ log 2π
* Student-t:  log p(I | Î) = log t_ν((I − Î)/σ) − log σ  (heavy tails: robust to outliers)

Optional learned error model (SdFac/SdB/SdAdd, as in SCALA/AIMLESS; Evans 2006, Acta Cryst. D62, 72-82,
doi:10.1107/S0907444905036693), replacing σ by
    σ' = SdFac · sqrt(σ² + SdB·Î + (SdAdd·Î)²)
with SdFac = exp(log_sdfac), SdB = softplus(sdb_raw), SdAdd = softplus(sdadd_raw) (all ≥ 0).

Shapes: ``intensity``, ``sigma`` ``[n_obs]``; ``i_pred`` ``[..., n_obs]`` (samples leading).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import t as student_t

__all__ = ["LIKELIHOODS", "log_likelihood", "init_error_model", "error_model_sigma", "error_model_values"]

LIKELIHOODS = ("normal", "student")
_LOG_SQRT_2PI = float(0.5 * np.log(2 * np.pi))


def log_likelihood(kind: str, intensity, i_pred, sigma, dof: float = 16.0):
    """Per-observation log p(I | Î) (see module docstring)."""
    if kind == "normal":
        z = (intensity - i_pred) / sigma
        return -0.5 * z**2 - jnp.log(sigma) - _LOG_SQRT_2PI
    if kind == "student":
        z = (intensity - i_pred) / sigma
        return student_t.logpdf(z, dof) - jnp.log(sigma)
    raise ValueError(f"unknown likelihood {kind!r}; choose one of {LIKELIHOODS}")


def init_error_model(dtype=jnp.float32) -> dict:
    """SdFac = 1, SdB ≈ 0, SdAdd ≈ 0.01."""
    return {
        "log_sdfac": jnp.zeros((), dtype),
        "sdb_raw": jnp.asarray(-6.0, dtype),
        "sdadd_raw": jnp.asarray(float(np.log(np.expm1(0.01))), dtype),
    }


def error_model_values(params: dict) -> dict:
    """{SdFac, SdB, SdAdd} as numbers."""
    return {
        "SdFac": float(jnp.exp(params["log_sdfac"])),
        "SdB": float(jax.nn.softplus(params["sdb_raw"])),
        "SdAdd": float(jax.nn.softplus(params["sdadd_raw"])),
    }


def error_model_sigma(params: dict, sigma, i_pred):
    """σ' = SdFac·sqrt(σ² + SdB·Î + (SdAdd·Î)²); Î is clipped at 0 in the SdB term."""
    sdfac = jnp.exp(params["log_sdfac"])
    sdb = jax.nn.softplus(params["sdb_raw"])
    sdadd = jax.nn.softplus(params["sdadd_raw"])
    var = sigma**2 + sdb * jnp.maximum(i_pred, 0.0) + (sdadd * i_pred) ** 2
    return sdfac * jnp.sqrt(var)
