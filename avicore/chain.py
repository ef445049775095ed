"""Exact inference in linear-Gaussian state-space models: the Gaussian forward-backward pass (Kalman + RTS).

The model, time-invariant, with state dimension d and observation dimension p::

    z_1 ~ N(m0, P0),    z_t = A z_{t-1} + w_t,  w_t ~ N(0, Q),    x_t = C z_t + v_t,  v_t ~ N(0, R).

:func:`smoother` returns the exact posterior marginals p(z_t | x), the lag-one cross-covariances and log p(x) for
every sequence of a ragged batch (hmmlearn-style ``lengths``), on the numpy, cython, numba or cuda backend.

GPU arrays: when ``x`` is a device array (``__cuda_array_interface__`` or CUDA DLPack: CuPy, PyTorch, JAX, Numba),
the work runs on the GPU with no host round trip and the array results are device arrays — CuPy arrays when CuPy is
importable, else Numba device arrays (:mod:`avicore._device`). ``x`` is checked where it lives (float64,
C-contiguous; its values on the device); ``backend`` must then be ``"auto"`` or ``"cuda"``. The model parameters
and ``lengths`` may live on either side; ``offsets`` stays a host array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_float_array, check_device_array, check_lengths, check_spd_matrix

__all__ = ["ChainNumericalError", "LinearGaussianParams", "SmootherResult", "check_params", "smoother"]


class ChainNumericalError(ArithmeticError):
    """The Kalman recursion broke down numerically (a covariance lost positive-definiteness, or log p(x) is
    not finite). ``sequence`` is the index of the offending sequence."""

    def __init__(self, message: str, sequence: int) -> None:
        super().__init__(message)
        self.sequence = sequence


@dataclass(frozen=True)
class LinearGaussianParams:
    """Validated parameters of a time-invariant linear-Gaussian state-space model (float64, C-contiguous).

    Attributes
    ----------
    A : ndarray of shape (d, d)
        State transition matrix.
    Q : ndarray of shape (d, d)
        Transition noise covariance (symmetric positive-definite).
    C : ndarray of shape (p, d)
        Observation matrix.
    R : ndarray of shape (p, p)
        Observation noise covariance (symmetric positive-definite).
    m0 : ndarray of shape (d,)
        Mean of the first state.
    P0 : ndarray of shape (d, d)
        Covariance of the first state (symmetric positive-definite).
    """

    A: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    R: np.ndarray
    m0: np.ndarray
    P0: np.ndarray

    @property
    def state_dim(self) -> int:
        """d, the dimension of z_t."""
        return self.A.shape[0]

    @property
    def obs_dim(self) -> int:
        """p, the dimension of x_t."""
        return self.C.shape[0]


@dataclass(frozen=True)
class SmootherResult:
    """Exact posterior of a linear-Gaussian state-space model given a batch of sequences.

    Attributes
    ----------
    means : ndarray of shape (n_samples, d)
        E[z_t | x] (each sequence conditioned on its own observations only).
    covariances : ndarray of shape (n_samples, d, d)
        Cov(z_t | x).
    cross_covariances : ndarray of shape (n_samples, d, d)
        Row t holds Cov(z_{t+1}, z_t | x), the lag-one cross-covariance between step t and the next step of the
        same sequence. At the last step of each sequence there is no next step and the row is zero.
    log_evidence : ndarray of shape (n_sequences,)
        log p(x) of each sequence.
    offsets : ndarray of shape (n_sequences + 1,), int64
        Sequence i occupies rows ``offsets[i]:offsets[i + 1]``.
    """

    means: np.ndarray
    covariances: np.ndarray
    cross_covariances: np.ndarray
    log_evidence: np.ndarray
    offsets: np.ndarray


def _as_matrix(m: object, name: str, shape: tuple[int | None, int | None]) -> np.ndarray:
    """A finite float64 matrix; a scalar is read as 1x1 where the shape allows it."""
    arr = as_float_array(m, name)
    if np.ndim(m) == 0:
        arr = arr.reshape(1, 1)
    expected = tuple("any" if s is None else s for s in shape)
    if arr.ndim != 2 or any(want is not None and want != got for want, got in zip(shape, arr.shape)):
        raise ValueError(f"{name} must have shape {expected}; got {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one entry; got shape {arr.shape}.")
    return arr


def check_params(A: object, Q: object, C: object, R: object, m0: object, P0: object) -> LinearGaussianParams:
    """Validate the parameters of a linear-Gaussian state-space model.

    Scalars are accepted for the 1x1 matrices and the length-1 mean of a scalar model.

    Parameters
    ----------
    A : array-like of shape (d, d)
    Q : array-like of shape (d, d), symmetric positive-definite
    C : array-like of shape (p, d)
    R : array-like of shape (p, p), symmetric positive-definite
    m0 : array-like of shape (d,)
    P0 : array-like of shape (d, d), symmetric positive-definite

    Returns
    -------
    LinearGaussianParams
        The parameters as float64 C-contiguous arrays (covariances exactly symmetrised).

    Raises
    ------
    ValueError
        On a shape mismatch, non-finite entries, or a covariance that is not symmetric positive-definite.
    TypeError
        On non-numeric input.

    Examples
    --------
    >>> from avicore.chain import check_params
    >>> check_params(1.0, 1.0, 1.0, 1.0, 0.0, 1.0).state_dim
    1
    """
    A = _as_matrix(A, "A", (None, None))
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (d, d) matrix; got shape {A.shape}.")
    d = A.shape[0]
    Q = check_spd_matrix(Q, "Q", size=d)
    C = _as_matrix(C, "C", (None, d))
    p = C.shape[0]
    R = check_spd_matrix(R, "R", size=p)
    m0_arr = as_float_array(m0, "m0")
    if np.ndim(m0) == 0:
        m0_arr = m0_arr.reshape(1)
    m0 = m0_arr
    if m0.shape != (d,):
        raise ValueError(f"m0 must have shape ({d},); got {m0.shape}.")
    P0 = check_spd_matrix(P0, "P0", size=d)
    return LinearGaussianParams(A=A, Q=Q, C=np.ascontiguousarray(C), R=R, m0=np.ascontiguousarray(m0), P0=P0)


def check_observations(x: object, obs_dim: int, name: str = "x") -> np.ndarray:
    """Observations as float64 C-contiguous (n_samples, obs_dim); a 1-D ``x`` is accepted when obs_dim == 1."""
    arr = as_float_array(x, name)
    if arr.ndim == 1 and obs_dim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != obs_dim:
        alt = " or (n_samples,)" if obs_dim == 1 else ""
        raise ValueError(f"{name} must have shape (n_samples, {obs_dim}){alt} to match C's {obs_dim} rows; "
                         f"got {arr.shape}.")
    return np.ascontiguousarray(arr)


_STATUS_MESSAGES = {
    2: "log p(x) is not finite",
    3: "a predicted covariance lost positive-definiteness",
    4: "the kernel could not allocate its workspace",
}


def smoother(x: object, A: object, Q: object, C: object, R: object, m0: object, P0: object, *,
             lengths: object = None, backend: str = "auto") -> SmootherResult:
    """Exact posterior marginals, lag-one cross-covariances and log-evidence of a linear-Gaussian chain.

    Runs a Kalman filter (Joseph-form covariance update, Cholesky-factored innovation covariance) followed by a
    Rauch–Tung–Striebel smoother (Joseph form as well) over each sequence of a ragged batch; sequences run in
    parallel on the cython, numba and cuda backends.

    Parameters
    ----------
    x : array-like of shape (n_samples, p) or (n_samples,) when p = 1
        Observations of all sequences, concatenated along axis 0.
    A : array-like of shape (d, d)
        State transition matrix.
    Q : array-like of shape (d, d)
        Transition noise covariance, symmetric positive-definite.
    C : array-like of shape (p, d)
        Observation matrix.
    R : array-like of shape (p, p)
        Observation noise covariance, symmetric positive-definite.
    m0 : array-like of shape (d,)
        Mean of each sequence's first state.
    P0 : array-like of shape (d, d)
        Covariance of each sequence's first state, symmetric positive-definite.
    lengths : array-like of int, optional
        Length of each sequence (hmmlearn convention); default one sequence of length n_samples.
    backend : {"auto", "numpy", "cython", "numba", "cuda"}
        Implementation; all agree to ~1e-10. ``"auto"`` picks cython when built.

    Returns
    -------
    SmootherResult
        ``means`` (n_samples, d), ``covariances`` (n_samples, d, d), ``cross_covariances`` (n_samples, d, d) with
        row t = Cov(z_{t+1}, z_t | x) and zeros at each sequence's last step, ``log_evidence`` (n_sequences,),
        ``offsets`` (n_sequences + 1,).

    Raises
    ------
    ValueError, TypeError
        On invalid input (checked before any kernel runs).
    ChainNumericalError
        If the recursion breaks down numerically (carries the index of the sequence).

    Notes
    -----
    Scalars are accepted for 1x1 parameters. Computation is in float64. Cost O(n_samples (d³ + p³ + d²p + dp²))
    for the NumPy reference. The model is time-invariant, so the covariance recursions do not depend on x and, in
    floating point, settle into a fixed point or a short cycle; the compiled backends then copy the repeated
    covariance steps instead of recomputing them (bitwise the same results), so a long sequence costs little
    more than its O(d² + dp) mean updates and the writing of its outputs. The scalar model (d = p = 1) has
    dedicated kernels.

    The compiled CPU backends run long batches as several kernel calls over consecutive whole sequences
    (bit-identical to one call), so ``KeyboardInterrupt`` stops them within a fraction of a second; a single
    sequence is not interruptible mid-way.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore import chain
    >>> res = chain.smoother(np.array([0.5, 1.0, -0.2]), A=1.0, Q=1.0, C=1.0, R=1.0, m0=0.0, P0=1.0,
    ...                      backend="numpy")
    >>> res.means.shape, res.covariances.shape, res.log_evidence.shape
    ((3, 1), (3, 1, 1), (1,))
    """
    from . import _device

    params = check_params(*(_device.host_param(m, name) for m, name in zip((A, Q, C, R, m0, P0),
                                                                           ("A", "Q", "C", "R", "m0", "P0"))))
    if _device.is_device_array(x):
        from .kernels._chain_cuda import smoother_device

        _device.require_cuda(backend)
        x = check_device_array(x, "x", shape=(None, params.obs_dim) if len(x.shape) == 2 else (None,))
        if len(x.shape) == 1 and params.obs_dim != 1:
            raise ValueError(f"x must have shape (n_samples, {params.obs_dim}) to match C's {params.obs_dim} "
                             f"rows; got {tuple(x.shape)}.")
        x = x.reshape(x.shape[0], params.obs_dim)
        offsets = check_lengths(_device.host_param(lengths, "lengths"), x.shape[0])
        (means, covs, cross, log_evidence), status = smoother_device(x, offsets, params.A, params.Q, params.C,
                                                                     params.R, params.m0, params.P0)
    else:
        from .kernels.chain import run_smoother

        x = check_observations(x, params.obs_dim)
        offsets = check_lengths(lengths, x.shape[0])
        means, covs, cross, log_evidence, status = run_smoother(x, offsets, params.A, params.Q, params.C,
                                                                params.R, params.m0, params.P0, backend=backend)
    bad = np.flatnonzero(status)
    if bad.size:
        i = int(bad[0])
        code = int(status[i])
        if code == 4:
            raise MemoryError(f"chain.smoother: {_STATUS_MESSAGES[code]}.")
        raise ChainNumericalError(f"the Kalman recursion failed on sequence {i}: "
                                  f"{_STATUS_MESSAGES.get(code, f'status {code}')}. Check the scales of x, Q, R "
                                  f"and P0.", sequence=i)
    return SmootherResult(means=means, covariances=covs, cross_covariances=cross, log_evidence=log_evidence,
                          offsets=offsets)
