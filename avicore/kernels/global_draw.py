"""The engine's reparameterised draw of a large global factor, θ_s = μ + exp(log σ) ⊙ η_s, fused in one Numba pass.

η[s, j] is the counter-based generator's global stream (:func:`avicore.kernels._counter_normal.global_normals`,
bit-identical), so the fused pass changes only the speed: for a decoder with 10⁵–10⁶ weights the NumPy path
(vectorised ziggurat, then ``exp``, a product and a sum as separate passes) costs ~10× more than this one. Serial on
purpose: it runs between BLAS-heavy passes whose spinning threads a parallel region would fight (see
:mod:`avicore.kernels.decoder`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._counter_normal import STREAM_GLOBAL, normal_nb, row_key_nb, stream_key


@njit(cache=True)
def _draw_global_nb(key: np.uint64, mu: np.ndarray, log_sd: np.ndarray, theta: np.ndarray, eta: np.ndarray,
                    sd: np.ndarray) -> None:
    n_samples, dim = eta.shape
    row = row_key_nb(key, 0)
    for j in range(dim):
        s_j = np.exp(log_sd[j])
        sd[j] = s_j
        for s in range(n_samples):
            e = normal_nb(row, s * dim + j)
            eta[s, j] = e
            theta[s, j] = mu[j] + s_j * e


def draw_global(seed: int, step: int, mu: np.ndarray, log_sd: np.ndarray,
                n_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(θ (S, dim), η (S, dim), σ (dim,)) with η = ``global_normals(seed, step, S, dim)`` and θ = μ + σ ⊙ η.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.kernels.global_draw import draw_global
    >>> theta, eta, sd = draw_global(0, 0, np.zeros(3), np.zeros(3), 2)
    >>> theta.shape, bool(np.all(theta == eta))
    ((2, 3), True)
    """
    dim = mu.size
    theta = np.empty((n_samples, dim))
    eta = np.empty((n_samples, dim))
    sd = np.empty(dim)
    _draw_global_nb(np.uint64(stream_key(seed, step, STREAM_GLOBAL)), np.ascontiguousarray(mu),
                    np.ascontiguousarray(log_sd), theta, eta, sd)
    return theta, eta, sd
