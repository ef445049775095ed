"""Data and hmmlearn twins shared by the estimator tests."""

from __future__ import annotations

import numpy as np


def ragged_gaussian(rng: np.random.Generator, n_states: int = 3, n_features: int = 2, n_seq: int = 12,
                    sep: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Ragged sequences from a well-separated Gaussian HMM (sticky transitions); centres in ``LAST_CENTRES``."""
    lengths = rng.integers(1, 40, size=n_seq)
    lengths[0] = 1  # a length-1 sequence has no transitions
    centres = rng.normal(0.0, sep, (n_states, n_features))
    trans = np.full((n_states, n_states), 0.1 / (n_states - 1)) + np.eye(n_states) * (0.9 - 0.1 / (n_states - 1))
    z = np.empty(lengths.sum(), dtype=int)
    t = 0
    for length in lengths:
        z[t] = rng.integers(n_states)
        for s in range(1, length):
            z[t + s] = rng.choice(n_states, p=trans[z[t + s - 1]])
        t += length
    LAST_CENTRES[:] = [centres]
    return centres[z] + rng.normal(size=(z.size, n_features)), lengths


#: The state means of the last ``ragged_gaussian`` draw (EM started near them does not collapse a state).
LAST_CENTRES: list[np.ndarray] = []


def random_covars(rng: np.random.Generator, covariance_type: str, n_states: int, n_features: int) -> np.ndarray:
    if covariance_type == "spherical":
        return rng.uniform(0.5, 2.0, n_states)
    if covariance_type == "diag":
        return rng.uniform(0.5, 2.0, (n_states, n_features))
    a = rng.normal(size=(n_states, n_features, n_features))
    full = a @ a.transpose(0, 2, 1) + np.eye(n_features)
    return full[0] if covariance_type == "tied" else full


def set_params(models, **values) -> None:
    for m in models:
        for k, v in values.items():
            setattr(m, k, np.array(v, copy=True))


def history(model) -> np.ndarray:
    return np.array(model.monitor_.history)
