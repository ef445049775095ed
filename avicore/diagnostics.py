"""ELBO estimates with standard errors, and the amortization gap between two fitted approximations.

The ELBO of a Gaussian mean-field q(θ) ∏ₙ q(zₙ) is estimated by

    ELBO ≈ (1/S) Σ_s [log p(θ_s) + Σₙ log p(zₙ⁽ˢ⁾, xₙ | θ_s)] + Σₙ H[q(zₙ)] + H[q(θ)]

with θ_s = μ_θ + σ_θ ⊙ η_s, zₙ⁽ˢ⁾ = mₙ + sₙ ⊙ ε[n, s] and the entropies analytic. The S summands are independent, so
the standard error is their standard deviation over √S. Noise comes from avicore's counter-based generator, in
blocks of :data:`BLOCK` samples keyed by (seed, :data:`ESTIMATE_STEP0` + block): the draws depend only on the
seed, the sample number and the observation's index, never on the backend, the thread count or the values of q.
Two estimates with the same seed therefore use *common random numbers*, and the standard error of their
difference (:func:`amortization_gap`) is small when the two q are close.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backends
from ._validate import check_int, check_seed_int
from .models.base import LatentVariableModel

#: Monte-Carlo samples drawn per counter-generator step by the estimator.
BLOCK = 32
#: First step key of the estimator's noise (far from the iteration numbers a fit uses).
ESTIMATE_STEP0 = 1 << 40
_HALF_LOG_2PI_E = 0.5 * (1.0 + math.log(2.0 * math.pi))


@dataclass(frozen=True, eq=False)
class ELBOEstimate:
    """A Monte-Carlo estimate of the full ELBO.

    Attributes
    ----------
    elbo : float
        The estimate (every constant included).
    se : float
        Its Monte-Carlo standard error.
    n_samples : int
        Number of Monte-Carlo samples S.
    entropy : float
        Σₙ H[q(zₙ)] + H[q(θ)] (exact; point-mass coordinates of θ, sd 0, contribute nothing).
    samples : ndarray of shape (n_samples,)
        The per-sample values log p(θ_s) + Σₙ log p(zₙ⁽ˢ⁾, xₙ | θ_s) + entropy, whose mean is ``elbo``.
    """

    elbo: float
    se: float
    n_samples: int
    entropy: float
    samples: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class AmortizationGap:
    """ELBO(F-VI) − ELBO(A-VI) in nats, estimated with common random numbers.

    Attributes
    ----------
    gap : float
        The difference of the two ELBO estimates (≥ 0 up to Monte-Carlo and optimisation error when the first
        result is the F-VI fit: A-VI's family is a subset of F-VI's).
    se : float
        Standard error of ``gap`` (from the per-sample differences).
    elbo_fvi, elbo_avi : ELBOEstimate
        The two estimates.
    relative : float
        gap / |ELBO(F-VI)|.
    """

    gap: float
    se: float
    elbo_fvi: ELBOEstimate
    elbo_avi: ELBOEstimate
    relative: float


def _q_arrays(q: Any, model: LatentVariableModel, n_obs: int) -> tuple[np.ndarray, ...]:
    """(local_mean, local_log_sd, global_mean, global_log_sd) of a fit result or any object with the four fields."""
    from ._validate import as_float_array, is_dask_array

    out = []
    for name, shape in (("local_mean", (n_obs, model.latent_dim)), ("local_sd", (n_obs, model.latent_dim)),
                        ("global_mean", (model.global_dim,)), ("global_sd", (model.global_dim,))):
        if not hasattr(q, name):
            raise TypeError(f"q must have the attributes local_mean, local_sd, global_mean and global_sd (a "
                            f"VIResult or an FVIOptimum); got {type(q).__name__} without {name!r}.")
        log_name = name.replace("_sd", "_log_sd")  # VIResult keeps the exact log-scales
        value = getattr(q, log_name if name.endswith("_sd") and hasattr(q, log_name) else name)
        if name.startswith("local") and is_dask_array(value):  # a distributed fit's locals stay where they are
            out.append(value if name == "local_mean" or hasattr(q, log_name) else np.log(value))
            continue
        if name.endswith("_sd") and getattr(q, log_name, None) is not None:
            arr = np.asarray(getattr(q, log_name), dtype=np.float64).reshape(shape)
        else:
            arr = as_float_array(getattr(q, name), f"q.{name}").reshape(-1)
            if arr.size != math.prod(shape):
                raise ValueError(f"q.{name} must have shape {shape}; got {np.shape(getattr(q, name))}.")
            arr = arr.reshape(shape)
            if name.endswith("_sd"):
                # A global sd of 0 is a point mass (no entropy term); local factors must have sd > 0.
                bad = (arr < 0).any() if name == "global_sd" else (arr <= 0).any()
                if bad:
                    raise ValueError(f"q.{name} must be {'>= 0' if name == 'global_sd' else '> 0'}; got min "
                                     f"{float(arr.min())!r}.")
                with np.errstate(divide="ignore"):
                    arr = np.log(arr)
        out.append(np.ascontiguousarray(arr))
    return tuple(out)


def sample_values(model: LatentVariableModel, x: np.ndarray, local_mean: np.ndarray, local_log_sd: np.ndarray,
                  global_mean: np.ndarray, global_log_sd: np.ndarray, *, n_samples: int, seed: int,
                  backend: str) -> tuple[np.ndarray, float]:
    """Per-sample values of the ELBO estimator and the exact entropy (inputs validated, ``backend`` resolved).

    Returns ``(values (n_samples,), entropy)`` where ``values[s]`` = log p(θ_s) + Σₙ log p(zₙ⁽ˢ⁾, xₙ | θ_s) + entropy.
    """
    from ._validate import is_dask_array

    if is_dask_array(x):  # a distributed fit's data: chunk by chunk on the Dask workers
        from .distributed._estimate import sample_values_dask

        return sample_values_dask(model, x, local_mean, local_log_sd, global_mean, global_log_sd,
                                  n_samples=n_samples, seed=seed, backend=backend)
    n_obs, d = local_mean.shape
    log_prior, log_joint = sample_log_joint(model, x, local_mean, local_log_sd, global_mean, global_log_sd,
                                            n_samples=n_samples, seed=seed, backend=backend,
                                            index=np.arange(n_obs, dtype=np.int64))
    entropy = estimate_entropy(float(np.sum(local_log_sd)), n_obs * d, global_log_sd)
    return log_prior + log_joint + entropy, entropy


def estimate_entropy(sum_local_log_sd: float, n_local: int, global_log_sd: np.ndarray) -> float:
    """H[q] of a Gaussian mean-field q from Σ log sₙ over its ``n_local`` local coordinates and q(θ)'s log sd
    (coordinates with log σ = -inf are point masses: no entropy)."""
    spread = np.isfinite(global_log_sd)
    return (sum_local_log_sd + float(np.sum(global_log_sd[spread]))
            + _HALF_LOG_2PI_E * (n_local + int(spread.sum())))


def sample_log_joint(model: LatentVariableModel, x: np.ndarray, local_mean: np.ndarray, local_log_sd: np.ndarray,
                     global_mean: np.ndarray, global_log_sd: np.ndarray, *, n_samples: int, seed: int, backend: str,
                     index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log p(θ_s), Σ over the rows ``index`` of log p(zₙ⁽ˢ⁾, xₙ | θ_s)) for the estimate's samples, each (n_samples,).

    ``x`` and the local parameters hold the rows ``index`` of the data set (all of them, or one chunk of a
    distributed fit): the noise is keyed by the rows' indices, so chunk sums add up to the whole data set's.
    """
    from .kernels._counter_normal import global_normals

    d_theta = model.global_dim
    sd_theta = np.exp(global_log_sd)
    log_prior = np.empty(n_samples)
    log_joint = np.empty(n_samples)
    for block, s0 in enumerate(range(0, n_samples, BLOCK)):
        sb = min(BLOCK, n_samples - s0)
        step = ESTIMATE_STEP0 + block
        theta = np.ascontiguousarray(global_mean + sd_theta * global_normals(seed, step, sb, d_theta))
        log_prior[s0:s0 + sb] = model.log_prior_global(theta)[0]
        terms = model.local_terms(x, local_mean, local_log_sd, theta, seed=seed, step=step, index=index,
                                  backend=backend)
        log_joint[s0:s0 + sb] = terms.log_joint
    return log_prior, log_joint


def _summarise(values: np.ndarray, entropy: float) -> ELBOEstimate:
    s = values.size
    se = float(np.std(values, ddof=1) / math.sqrt(s)) if s > 1 else math.nan
    return ELBOEstimate(elbo=float(np.mean(values)), se=se, n_samples=s, entropy=entropy, samples=values)


def elbo_estimate(model: LatentVariableModel, x: object, q: Any, *, n_samples: int = 1000,
                  seed: int | np.random.Generator | None = 0, backend: str = "auto") -> ELBOEstimate:
    """Monte-Carlo estimate of the full ELBO of a Gaussian mean-field q, with its standard error.

    Parameters
    ----------
    model : LatentVariableModel
        The model.
    x : array-like of shape (n_obs, obs_dim)
        The data q approximates the posterior of.
    q : VIResult, FVIOptimum or any object with ``local_mean``, ``local_sd`` (n_obs, latent_dim), ``global_mean``
        and ``global_sd`` (global_dim,)
        The approximation.
    n_samples : int
        Monte-Carlo samples S (>= 1; the standard error needs >= 2).
    seed : int or numpy.random.Generator
        Key of the noise; equal seeds give common random numbers across calls.
    backend : str
        Backend of ``model.local_terms`` ("auto" or one of ``model.supported_backends``).

    Returns
    -------
    ELBOEstimate
        The estimate, its standard error, the exact entropy and the per-sample values.

    Notes
    -----
    Cost: S evaluations of log p(zₙ, xₙ | θ) per observation, in blocks of :data:`BLOCK` samples (memory O(N) on
    the compiled backends). This is the estimator behind ``VIResult.elbo`` and :func:`amortization_gap`.

    Examples
    --------
    >>> from avicore.models import LinearHierarchical
    >>> from avicore.diagnostics import elbo_estimate
    >>> model = LinearHierarchical()
    >>> x = model.simulate(200, seed=0).x
    >>> opt = model.fvi_optimum(x)
    >>> est = elbo_estimate(model, x, opt, n_samples=2000, seed=1)
    >>> bool(abs(est.elbo - opt.elbo) < 4 * est.se)
    True
    """
    if not isinstance(model, LatentVariableModel):
        raise TypeError(f"model must be an avicore.models.LatentVariableModel; got {type(model).__name__}.")
    xa = model.validate_data(x)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    key = check_seed_int(seed)
    resolved = backends.resolve(backend, size=xa.shape[0] * min(n_samples, BLOCK),
                                supported=model.supported_backends)
    arrays = _q_arrays(q, model, xa.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        values, entropy = sample_values(model, xa, *arrays, n_samples=n_samples, seed=key, backend=resolved)
    return _summarise(values, entropy)


def _same_data(a: Any, b: Any) -> bool:
    """Whether two fits saw the same x (dask arrays: the same array, or equal values computed where they live)."""
    from ._validate import is_dask_array

    if is_dask_array(a) or is_dask_array(b):
        if getattr(a, "name", None) is not None and getattr(a, "name", None) == getattr(b, "name", None):
            return True
        import dask.array as da

        return bool((da.asarray(a) == da.asarray(b)).all().compute())
    return bool(np.array_equal(a, b))


def _check_comparable(*results: Any) -> None:
    """Refuse a diverged fit, warn (naming it) about one that did not converge."""
    from .optim import ConvergenceWarning

    names = ("fvi_result", "avi_result")
    for name, res in zip(names, results):
        reason = getattr(res, "stop_reason", None)
        if reason == "diverged":
            raise ValueError(f"{name} must be a fit that did not diverge; got a {getattr(res, 'method', 'fit')} "
                             f"result with stop_reason='diverged' (stopped after {res.n_iter} iterations, state "
                             f"of iteration {getattr(res, 'state_iteration', '?')}). Refit it with a smaller "
                             f"lr before comparing.")
    for name, res in zip(names, results):
        if getattr(res, "converged", True) is False:
            warnings.warn(f"amortization_gap: {name} ({getattr(res, 'method', 'fit')}, stop_reason="
                          f"{res.stop_reason!r} after {res.n_iter} iterations) did not converge, so the gap "
                          f"includes its optimisation error.", ConvergenceWarning, stacklevel=3)


def amortization_gap(fvi_result: Any, avi_result: Any, *, n_samples: int = 1000,
                     seed: int | np.random.Generator | None = 0, backend: str | None = None) -> AmortizationGap:
    """The amortization gap ELBO(F-VI) − ELBO(A-VI) in nats, with a common-random-numbers standard error.

    Parameters
    ----------
    fvi_result, avi_result : VIResult
        Two fits of the same model to the same data (usually ``FVI(...).fit`` and ``AVI(...).fit``).
    n_samples : int
        Monte-Carlo samples (>= 2).
    seed : int or numpy.random.Generator
        Key of the noise, shared by both estimates.
    backend : str, optional
        Backend of the model's kernels; default: the one ``fvi_result`` was fitted with.

    Returns
    -------
    AmortizationGap
        ``gap``, ``se``, both ELBO estimates and the gap relative to |ELBO(F-VI)|.

    Raises
    ------
    ValueError
        If the two results were fitted to different models or data, or if either fit diverged
        (``stop_reason == "diverged"``: its state is not an optimum of anything, and a gap to it means nothing).

    Warns
    -----
    ConvergenceWarning
        If either result did not converge (``converged`` is False): the gap then mixes the amortization gap with
        optimisation error. The message names which result.

    Notes
    -----
    Both estimates draw the same ε[n, s] and η[s] (same seed, same keys), so the per-sample differences cancel
    most of the Monte-Carlo noise: the standard error is sd(values_F − values_A)/√S.

    Examples
    --------
    >>> import avicore
    >>> from avicore.encoders import Constant
    >>> from avicore.models import LinearHierarchical
    >>> model = LinearHierarchical()
    >>> x = model.simulate(300, seed=0).x
    >>> fvi = avicore.FVI(model, n_samples=10).fit(x, n_iter=1500, lr=0.05, seed=0)
    >>> avi = avicore.AVI(model, Constant(), n_samples=10).fit(x, n_iter=1500, lr=0.05, seed=0)
    >>> gap = avicore.amortization_gap(fvi, avi, seed=1)
    >>> bool(gap.gap > 10 * gap.se)
    True
    """
    for name, res in (("fvi_result", fvi_result), ("avi_result", avi_result)):
        if not hasattr(res, "model") or not hasattr(res, "x"):
            raise TypeError(f"{name} must be a VIResult; got {type(res).__name__}.")
    if fvi_result.model is not avi_result.model and repr(fvi_result.model) != repr(avi_result.model):
        raise ValueError(f"fvi_result and avi_result must be fits of the same model; got {fvi_result.model!r} and "
                         f"{avi_result.model!r}.")
    if fvi_result.x.shape != avi_result.x.shape or not _same_data(fvi_result.x, avi_result.x):
        raise ValueError(f"fvi_result and avi_result must be fits to the same data; got x of shapes "
                         f"{fvi_result.x.shape} and {avi_result.x.shape}"
                         f"{'' if fvi_result.x.shape != avi_result.x.shape else ' with different values'}.")
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    key = check_seed_int(seed)
    _check_comparable(fvi_result, avi_result)
    model, x = fvi_result.model, fvi_result.x
    resolved = backends.resolve(fvi_result.backend if backend is None else backend,
                                size=x.shape[0] * min(n_samples, BLOCK), supported=model.supported_backends)
    with np.errstate(over="ignore", invalid="ignore"):
        vf, hf = sample_values(model, x, *_q_arrays(fvi_result, model, x.shape[0]), n_samples=n_samples, seed=key,
                               backend=resolved)
        va, ha = sample_values(model, x, *_q_arrays(avi_result, model, x.shape[0]), n_samples=n_samples, seed=key,
                               backend=resolved)
    diff = vf - va
    est_f, est_a = _summarise(vf, hf), _summarise(va, ha)
    gap = float(np.mean(diff))
    return AmortizationGap(gap=gap, se=float(np.std(diff, ddof=1) / math.sqrt(n_samples)), elbo_fvi=est_f,
                           elbo_avi=est_a, relative=gap / abs(est_f.elbo) if est_f.elbo != 0 else math.inf)
