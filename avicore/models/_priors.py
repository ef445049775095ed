"""The global prior shared by the models with one scalar θ: flat (``scale=None``) or N(0, scale²)."""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_scalar

_LOG_2PI = math.log(2.0 * math.pi)


def flat_or_normal_log_prior(theta: np.ndarray, scale: float | None) -> tuple[np.ndarray, np.ndarray]:
    """log p(θ) per row of ``theta`` (S, d) and its gradient: 0 for the flat prior, else N(0, scale²) per entry."""
    if scale is None:
        return np.zeros(theta.shape[0]), np.zeros_like(theta)
    s2 = scale ** 2
    value = (-0.5 * theta ** 2 / s2 - 0.5 * _LOG_2PI - math.log(scale)).sum(axis=1)
    return value, -theta / s2


def draw_theta(rng: np.random.Generator, theta: float | None, scale: float | None) -> float:
    """``theta`` if given, else a draw from N(0, scale²), else 0.0 under the flat prior."""
    if theta is not None:
        return check_scalar(theta, "theta")
    if scale is not None:
        return float(rng.normal(0.0, scale))
    return 0.0
