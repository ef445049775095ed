"""A small k-means (k-means++ seeding, Lloyd iterations) for initialising Gaussian emission means.

hmmlearn initialises means with scikit-learn's KMeans; avicore does not depend on scikit-learn at run time, so this
is a compact equivalent (best of ``n_init`` runs by inertia). Its result is a starting point, not a reference.
"""

from __future__ import annotations

import numpy as np


def _sq_dist(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d = (X * X).sum(axis=1)[:, None] - 2.0 * X @ centers.T + (centers * centers).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def _seed(X: np.ndarray, k: int, rs) -> np.ndarray:
    n = X.shape[0]
    centers = np.empty((k, X.shape[1]))
    centers[0] = X[rs.randint(n) if hasattr(rs, "randint") else rs.integers(n)]
    closest = _sq_dist(X, centers[:1])[:, 0]
    for j in range(1, k):
        total = closest.sum()
        u = (rs.rand() if hasattr(rs, "rand") else rs.random()) * total
        idx = int(np.searchsorted(np.cumsum(closest), u, side="right")) if total > 0 else 0
        centers[j] = X[min(idx, n - 1)]
        closest = np.minimum(closest, _sq_dist(X, centers[j:j + 1])[:, 0])
    return centers


def kmeans(X: np.ndarray, k: int, rs, *, n_init: int = 3, max_iter: int = 100) -> np.ndarray:
    """Cluster centres (k, n_features) of ``X`` (n_samples, n_features); ``rs`` a RandomState or Generator.

    An empty cluster keeps its previous centre. With fewer distinct points than ``k`` some centres coincide.
    """
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = _seed(X, k, rs)
        for _ in range(max_iter):
            labels = np.argmin(_sq_dist(X, centers), axis=1)
            counts = np.bincount(labels, minlength=k)
            sums = np.zeros_like(centers)
            np.add.at(sums, labels, X)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
            if np.allclose(new, centers, rtol=0.0, atol=1e-10 * (1.0 + np.abs(centers).max())):
                centers = new
                break
            centers = new
        inertia = float(np.min(_sq_dist(X, centers), axis=1).sum())
        if inertia < best_inertia:
            best, best_inertia = centers, inertia
    return best
