"""Naive dense references for linear-Gaussian chains: build the joint Gaussian of (z, x) and condition.

Independent of avicore's recursions: the joint covariance is assembled from its definition and conditioned with
dense linear algebra, so it only suits tiny T.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import multivariate_normal


def joint_moments(T: int, A, Q, C, R, m0, P0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and covariance of z (T·d) and x (T·p), and Cov(z, x), stacked time-major."""
    A, Q, C, R, P0 = (np.atleast_2d(np.asarray(m, dtype=float)) for m in (A, Q, C, R, P0))
    m0 = np.atleast_1d(np.asarray(m0, dtype=float))
    d = A.shape[0]
    mu = np.zeros((T, d))
    marg = np.zeros((T, d, d))
    mu[0], marg[0] = m0, P0
    for t in range(1, T):
        mu[t] = A @ mu[t - 1]
        marg[t] = A @ marg[t - 1] @ A.T + Q
    Szz = np.zeros((T * d, T * d))
    for t in range(T):
        for s in range(t + 1):
            # Cov(z_t, z_s) = A^{t-s} Cov(z_s, z_s) for t >= s
            block = np.linalg.matrix_power(A, t - s) @ marg[s]
            Szz[t * d:(t + 1) * d, s * d:(s + 1) * d] = block
            Szz[s * d:(s + 1) * d, t * d:(t + 1) * d] = block.T
    Cbig = np.kron(np.eye(T), C)
    Sxx = Cbig @ Szz @ Cbig.T + np.kron(np.eye(T), R)
    Szx = Szz @ Cbig.T
    return mu.reshape(-1), Szz, (Cbig @ mu.reshape(-1)), Sxx, Szx


def condition(x: np.ndarray, A, Q, C, R, m0, P0) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior mean (T, d), full posterior covariance (T·d, T·d) and log p(x) of one sequence x (T, p)."""
    x = np.asarray(x, dtype=float)
    T = x.shape[0]
    d = np.atleast_2d(A).shape[0]
    mz, Szz, mx, Sxx, Szx = joint_moments(T, A, Q, C, R, m0, P0)
    xf = x.reshape(-1)
    gain = np.linalg.solve(Sxx, Szx.T).T
    post_mean = mz + gain @ (xf - mx)
    post_cov = Szz - gain @ Szx.T
    log_px = float(multivariate_normal(mean=mx, cov=Sxx).logpdf(xf))
    return post_mean.reshape(T, d), 0.5 * (post_cov + post_cov.T), log_px


def marginals(post_cov: np.ndarray, T: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal blocks Cov(z_t | x) and lag-one blocks Cov(z_{t+1}, z_t | x) (zero at t = T-1)."""
    covs = np.array([post_cov[t * d:(t + 1) * d, t * d:(t + 1) * d] for t in range(T)])
    cross = np.zeros((T, d, d))
    for t in range(T - 1):
        cross[t] = post_cov[(t + 1) * d:(t + 2) * d, t * d:(t + 1) * d]
    return covs, cross


def random_model(d: int, p: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random stable model with well-conditioned covariances."""
    A = rng.normal(size=(d, d))
    A *= 0.9 / max(1e-12, np.max(np.abs(np.linalg.eigvals(A))))

    def spd(n: int) -> np.ndarray:
        B = rng.normal(size=(n, n))
        return B @ B.T / n + 0.5 * np.eye(n)

    return {"A": A, "Q": spd(d), "C": rng.normal(size=(p, d)), "R": spd(p), "m0": rng.normal(size=d),
            "P0": spd(d)}
