"""What every HMM backend shares about the model itself: the per-sequence status codes, the numerics thresholds and
the probability-space model the compiled kernels run on.

It sits one floor below :mod:`avicore.kernels.hmm` (NumPy reference, Numba kernels, dispatch) and the CUDA modules
(``_hmm_cuda*.py``), so that the CUDA side never imports the dispatcher back.
"""

from __future__ import annotations

import numpy as np

#: Per-sequence status codes (shared with the Cython kernels).
STATUS_SCALED = 0
STATUS_IMPOSSIBLE = 1
STATUS_LOG_SPACE = 3

#: Scaled values below this (for an exactly positive quantity) send a sequence to log space.
TINY = 1e-280
#: Finite log-probabilities below this underflow in probability space: log space for every sequence.
LOG_FLOOR = -700.0
#: Transition probabilities below exp(LOG_EXACT_ZERO) can make alpha·A underflow to an exact zero.
LOG_EXACT_ZERO = -90.0


def _prepare_model(log_transmat: np.ndarray, log_startprob: np.ndarray, pad: int) -> dict:
    """Probability-space model with K padded to a multiple of ``pad`` (zeros), and the two numerics flags."""
    K = log_transmat.shape[0]
    Kp = -(-K // pad) * pad
    A = np.zeros((Kp, Kp))
    A[:K, :K] = np.exp(log_transmat)
    pi = np.zeros(Kp)
    pi[:K] = np.exp(log_startprob)
    finite_min = min(np.min(np.where(np.isfinite(log_transmat), log_transmat, 0.0)),
                     np.min(np.where(np.isfinite(log_startprob), log_startprob, 0.0)))
    return {
        "A": A, "At": np.ascontiguousarray(A.T), "pi": pi,
        "log_transmat": log_transmat, "log_transmat_t": np.ascontiguousarray(log_transmat.T),
        "log_startprob": log_startprob,
        "all_log": bool(finite_min < LOG_FLOOR),
        "check_reach": bool(np.any(np.isfinite(log_transmat) & (log_transmat < LOG_EXACT_ZERO))),
    }
