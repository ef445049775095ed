"""Check a model's hand-written gradients against central finite differences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import backends
from ._validate import as_float_array, check_int, check_random_state, check_scalar
from .models.base import LatentVariableModel


@dataclass(frozen=True)
class GradientCheck:
    """How far a model's analytic gradients are from central finite differences, block by block.

    Attributes
    ----------
    max_abs_error : dict of str to float
        max |analytic − finite difference| over the coordinates of each block: ``"mean"`` (∂/∂mₙ),
        ``"log_scale"`` (∂/∂log sₙ), ``"global"`` (∂/∂θ of log p(z, x | θ); when ``global_dim > 0``) and ``"prior"``
        (∂/∂θ of log p(θ); when the prior is not flat).
    max_rel_error : dict of str to float
        ``max_abs_error`` divided by the block's largest finite-difference magnitude (at least 1e-8).
    passed : bool
        Every ``max_rel_error`` is at most ``rtol``.
    rtol : float
        The tolerance ``passed`` used.
    backend : str
        The backend whose ``local_terms`` was checked.
    """

    max_abs_error: dict[str, float]
    max_rel_error: dict[str, float]
    passed: bool
    rtol: float
    backend: str


def _block_errors(analytic: np.ndarray, numeric: np.ndarray) -> tuple[float, float]:
    abs_err = float(np.max(np.abs(analytic - numeric))) if analytic.size else 0.0
    scale = max(float(np.max(np.abs(numeric))) if numeric.size else 0.0, 1e-8)
    return abs_err, abs_err / scale


def check_gradients(model: LatentVariableModel, x: object, *, theta: object = None, n_points: int = 5,
                    n_samples: int = 2, seed: int | np.random.Generator | None = None, backend: str = "auto",
                    step: float = 1e-5, rtol: float = 1e-6) -> GradientCheck:
    """Compare the gradients of ``model.local_terms`` (and ``log_prior_global``) with central finite differences.

    With the Monte-Carlo noise held fixed by (seed, step), ``local_terms`` is a deterministic function of the
    variational parameters, so F = (1/S) Σ_s log_joint[s] can be differenced: ∂F/∂mₙ must equal ``grad_mean``,
    ∂F/∂log sₙ must equal ``grad_log_scale`` and ∂ log_joint[s]/∂θ_s must equal ``grad_global[s]``.

    Parameters
    ----------
    model : LatentVariableModel
        The model to check (built-in or :class:`~avicore.models.CustomHierarchical`).
    x : array-like of shape (n_obs, obs_dim)
        Observations; ``n_points`` rows are picked at random.
    theta : array-like of shape (global_dim,), optional
        Value of the global parameters used for every Monte-Carlo sample. Default: standard normal draws, one per
        sample.
    n_points : int
        Rows of ``x`` to check (>= 1; capped at n_obs).
    n_samples : int
        Monte-Carlo samples S (>= 1).
    seed : int, numpy.random.Generator or None
        Picks the rows, the variational parameters and the noise.
    backend : str
        Backend of ``local_terms`` ("auto" resolves among ``model.supported_backends``).
    step : float
        Finite-difference step, relative to max(1, |coordinate|).
    rtol : float
        Largest relative error (per block) for ``passed``.

    Returns
    -------
    GradientCheck
        Errors per block and the verdict.

    Notes
    -----
    Costs 2 (2 n_points latent_dim + global_dim) + 1 calls of ``local_terms`` on ``n_points`` rows. The rows are
    a random subset passed as one batch (with their dataset indices); for models whose terms couple neighbouring
    rows (time series), pass ``n_points >= n_obs`` so that the batch is the whole sequence.

    Examples
    --------
    >>> import avicore
    >>> from avicore.models import NonlinearHierarchical
    >>> model = NonlinearHierarchical()
    >>> report = avicore.check_gradients(model, model.simulate(50, seed=0).x, seed=1, backend="numpy")
    >>> report.passed, sorted(report.max_rel_error)
    (True, ['global', 'log_scale', 'mean'])
    """
    if not isinstance(model, LatentVariableModel):
        raise TypeError(f"model must be an avicore LatentVariableModel; got {type(model).__name__}.")
    xa = model.validate_data(x)
    n_points = check_int(n_points, "n_points", minimum=1)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    step = check_scalar(step, "step", positive=True)
    rtol = check_scalar(rtol, "rtol", positive=True)
    name = backends.resolve(backend, supported=model.supported_backends)
    rng = check_random_state(seed)
    d, n_global = model.latent_dim, model.global_dim
    if theta is None:
        th = rng.standard_normal((n_samples, n_global))
    else:
        th0 = as_float_array(theta, "theta").reshape(-1)
        if th0.shape != (n_global,):
            raise ValueError(f"theta must hold global_dim={n_global} values; got shape {np.shape(theta)}.")
        th = np.repeat(th0[None, :], n_samples, axis=0)
    rows = np.sort(rng.choice(xa.shape[0], size=min(n_points, xa.shape[0]), replace=False)).astype(np.int64)
    xs = np.ascontiguousarray(xa[rows])
    mean = rng.standard_normal((rows.size, d))
    log_scale = np.log(0.5) + 0.2 * rng.standard_normal((rows.size, d))
    noise_seed = int(rng.integers(0, 2**62))

    def run(m: np.ndarray, ls: np.ndarray, t: np.ndarray):
        return model.local_terms(xs, m, ls, t, seed=noise_seed, step=0, index=rows, backend=name)

    def objective(m: np.ndarray, ls: np.ndarray) -> float:
        return float(run(m, ls, th).log_joint.mean())

    def h_of(v: float) -> float:
        return step * max(1.0, abs(v))

    base = run(mean, log_scale, th)
    max_abs, max_rel = {}, {}
    for block, arr, analytic in (("mean", mean, base.grad_mean), ("log_scale", log_scale, base.grad_log_scale)):
        numeric = np.empty_like(arr)
        for i in np.ndindex(arr.shape):
            h = h_of(arr[i])
            plus, minus = arr.copy(), arr.copy()
            plus[i] += h
            minus[i] -= h
            fp = objective(plus, log_scale) if block == "mean" else objective(mean, plus)
            fm = objective(minus, log_scale) if block == "mean" else objective(mean, minus)
            numeric[i] = (fp - fm) / (2.0 * h)
        max_abs[block], max_rel[block] = _block_errors(analytic, numeric)
    if n_global:
        numeric = np.empty_like(th)
        prior_numeric = np.empty_like(th)
        for k in range(n_global):
            h = np.array([h_of(v) for v in th[:, k]])
            plus, minus = th.copy(), th.copy()
            plus[:, k] += h
            minus[:, k] -= h
            numeric[:, k] = (run(mean, log_scale, plus).log_joint - run(mean, log_scale, minus).log_joint) / (2 * h)
            prior_numeric[:, k] = (model.log_prior_global(plus)[0] - model.log_prior_global(minus)[0]) / (2 * h)
        max_abs["global"], max_rel["global"] = _block_errors(base.grad_global, numeric)
        prior_grad = model.log_prior_global(th)[1]
        if np.any(prior_grad != 0) or np.any(prior_numeric != 0):
            max_abs["prior"], max_rel["prior"] = _block_errors(prior_grad, prior_numeric)
    passed = all(v <= rtol for v in max_rel.values())
    return GradientCheck(max_abs_error=max_abs, max_rel_error=max_rel, passed=passed, rtol=rtol, backend=name)
