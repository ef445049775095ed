"""Mean-field VI for discrete-state HMMs with an exact ELBO: F-VI (free q(z_t)) and A-VI (an encoder's logits).

For an HMM with known parameters (``log_startprob`` π, ``log_transmat`` A, emission log-likelihoods ``log_lik``),
the mean-field family q(z) = Π_t q_t(z_t) with categorical q_t = softmax(η_t) has the exact ELBO

    ELBO(q) = Σ_t q_tᵀ log_lik_t + Σ_seq q_firstᵀ log π + Σ_{t, t+1 in one sequence} q_tᵀ (log A) q_{t+1}
              − Σ_t q_tᵀ log q_t,

sums over states, no Monte Carlo; ``log p(x)`` comes from forward-backward (:func:`avicore.hmm.forward_backward`),
so ``KL(q ‖ p(z | x)) = log p(x) − ELBO(q)`` is exact too. Its gradient in η_t is ``q_t ⊙ (g_t − q_tᵀ g_t)`` with
``g_t = log_lik_t + [first] log π + (log A)ᵀ q_{t−1} + (log A) q_{t+1} − log q_t``.

- :func:`mean_field_elbo` (and its gradient): the exact objective.
- :func:`fit_fvi`: F-VI by coordinate ascent (CAVI), vectorised: every even row, then every odd row, is set to
  its exact conditional optimum (rows of one parity never neighbour each other), so the ELBO never decreases.
- :func:`fit_avi`: A-VI; an :mod:`avicore.encoders` encoder maps the window ``x_{t+k}, k ∈ window`` to η_t and
  Adam (:class:`avicore.optim.Adam`) follows the exact gradient, back-propagated through the encoder.

A-VI's family is a subset of F-VI's, so ELBO*_A ≤ ELBO*_F ≤ log p(x). CAVI reaches a local optimum; started from
an A-VI solution it can only improve on it, which is how :func:`fit_fvi` (``starts=``) makes the F-VI reference.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax

from . import _config, _validate
from .encoders import Encoder, check_window, window_inputs
from .optim import Adam, exponential_decay

__all__ = ["DiscreteVIResult", "fit_avi", "fit_fvi", "log_evidence", "mean_field_elbo", "mean_field_elbo_grad"]


@dataclass(frozen=True)
class DiscreteVIResult:
    """A fitted mean-field approximation of a discrete-state HMM posterior.

    Attributes
    ----------
    elbo : float
        The exact ELBO of the final q (every constant included).
    log_evidence : float
        The exact ``log p(x)`` (forward-backward).
    q : ndarray of shape (n_samples, n_states)
        The factors q_t(k).
    trace : ndarray of shape (n_iter,)
        The exact ELBO at every iteration (CAVI sweep or Adam step).
    seconds : float
        Wall time of the fit.
    method : {"F-VI", "A-VI"}
    encoder : Encoder or None
    window : tuple of int
    encoder_params : ndarray or None
    """

    elbo: float
    log_evidence: float
    q: np.ndarray
    trace: np.ndarray
    seconds: float
    method: str
    encoder: Encoder | None = None
    window: tuple[int, ...] = (0,)
    encoder_params: np.ndarray | None = None

    @property
    def kl(self) -> float:
        """Exact ``KL(q ‖ p(z | x)) = log p(x) − ELBO`` (≥ 0)."""
        return self.log_evidence - self.elbo


@dataclass(frozen=True)
class _Problem:
    log_lik: np.ndarray
    log_transmat: np.ndarray
    log_startprob: np.ndarray
    offsets: np.ndarray
    first: np.ndarray      # bool (n,): row starts a sequence
    has_next: np.ndarray   # bool (n,): row t + 1 is in the same sequence


def _problem(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any) -> _Problem:
    from .hmm import _check_inputs

    ll, lt, ls, offsets = _check_inputs(log_lik, log_transmat, log_startprob, lengths)
    if not (np.isfinite(lt).all() and np.isfinite(ls).all() and np.isfinite(ll).all()):
        raise ValueError("log_lik, log_transmat and log_startprob must be finite for mean-field VI (a zero "
                         "probability makes 0 · log 0 terms of the ELBO ambiguous); got -inf entries.")
    n = ll.shape[0]
    first = np.zeros(n, dtype=bool)
    first[offsets[:-1]] = True
    has_next = np.ones(n, dtype=bool)
    has_next[offsets[1:] - 1] = False
    return _Problem(ll, lt, ls, offsets, first, has_next)


def _elbo_from_logits(p: _Problem, logits: np.ndarray, *, grad: bool) -> tuple[float, np.ndarray | None]:
    log_q = log_softmax(logits, axis=1)
    q = np.exp(log_q)
    nxt = np.flatnonzero(p.has_next)
    trans_out = q @ p.log_transmat            # row t: (log A)ᵀ q_t, the message to t + 1
    trans_in = q @ p.log_transmat.T           # row t: (log A) q_t, the message to t − 1
    elbo = (np.einsum("tk,tk->", q, p.log_lik) + float(q[p.first].sum(axis=0) @ p.log_startprob)
            + np.einsum("tk,tk->", trans_out[nxt], q[nxt + 1]) - np.einsum("tk,tk->", q, log_q))
    if not grad:
        return float(elbo), None
    g = p.log_lik - log_q
    g[p.first] += p.log_startprob
    g[nxt + 1] += trans_out[nxt]
    g[nxt] += trans_in[nxt + 1]
    g -= np.einsum("tk,tk->t", q, g)[:, None]
    return float(elbo), q * g


def mean_field_elbo(log_lik: Any, log_transmat: Any, log_startprob: Any, q: Any, lengths: Any = None) -> float:
    """Exact mean-field ELBO of factors ``q`` (n_samples, n_states), rows summing to 1.

    Parameters
    ----------
    log_lik : array-like of shape (n_samples, n_states)
        Emission log-likelihoods (finite), sequences concatenated.
    log_transmat, log_startprob : array-like
        Log transition matrix and log initial distribution (finite entries).
    q : array-like of shape (n_samples, n_states)
        The factors (> 0; rows sum to 1 within 1e-8).
    lengths : array-like of int, optional
        Sequence lengths.

    Returns
    -------
    float
        ``E_q[log p(x, z)] + H(q)``.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.discrete_vi import mean_field_elbo
    >>> ll = np.log([[0.5, 0.5]]); lt = np.log([[0.5, 0.5], [0.5, 0.5]]); ls = np.log([0.5, 0.5])
    >>> round(mean_field_elbo(ll, lt, ls, [[0.5, 0.5]]), 12) == round(float(np.log(0.5)), 12)
    True
    """
    p = _problem(log_lik, log_transmat, log_startprob, lengths)
    qq = _validate.as_float_array(q, "q", shape=p.log_lik.shape)
    if (qq <= 0).any() or (np.abs(qq.sum(axis=1) - 1.0) > 1e-8).any():
        raise ValueError("q must hold positive rows summing to 1 (categorical factors).")
    return _elbo_from_logits(p, np.log(qq), grad=False)[0]


def mean_field_elbo_grad(log_lik: Any, log_transmat: Any, log_startprob: Any, logits: Any,
                         lengths: Any = None) -> tuple[float, np.ndarray]:
    """Exact ELBO of ``q_t = softmax(logits_t)`` and its gradient in the logits, shape (n_samples, n_states)."""
    p = _problem(log_lik, log_transmat, log_startprob, lengths)
    eta = _validate.as_float_array(logits, "logits", shape=p.log_lik.shape)
    return _elbo_from_logits(p, eta, grad=True)


def log_evidence(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any = None, *,
                 backend: str = "auto") -> float:
    """Exact ``log p(x)`` of all sequences (forward-backward)."""
    from .hmm import forward_backward

    return forward_backward(log_lik, log_transmat, log_startprob, lengths, backend=backend).total_log_likelihood


def _cavi(p: _Problem, log_q: np.ndarray, n_sweeps: int, tol: float) -> tuple[np.ndarray, list[float]]:
    """Block coordinate ascent: even rows, then odd rows, each to its exact conditional optimum."""
    n = log_q.shape[0]
    nxt = np.flatnonzero(p.has_next)
    parity = [np.arange(0, n, 2), np.arange(1, n, 2)]
    trace: list[float] = []
    for _ in range(n_sweeps):
        for rows in parity:
            q = np.exp(log_q)
            field = p.log_lik.copy()
            field[p.first] += p.log_startprob
            field[nxt + 1] += q[nxt] @ p.log_transmat
            field[nxt] += q[nxt + 1] @ p.log_transmat.T
            log_q[rows] = log_softmax(field[rows], axis=1)
        trace.append(_elbo_from_logits(p, log_q, grad=False)[0])
        if len(trace) > 1 and trace[-1] - trace[-2] < tol:
            break
    return log_q, trace


def fit_fvi(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any = None, *, n_sweeps: int = 500,
            tol: float = 1e-10, starts: Sequence[np.ndarray] = (), backend: str = "auto") -> DiscreteVIResult:
    """F-VI: a free categorical q_t per step, fitted by vectorised coordinate ascent (CAVI) on the exact ELBO.

    Parameters
    ----------
    log_lik, log_transmat, log_startprob, lengths
        The HMM (finite log-probabilities).
    n_sweeps : int
        Most sweeps (each updates every row once).
    tol : float
        Stop when a sweep gains less than ``tol`` nats.
    starts : sequence of ndarray (n_samples, n_states)
        Extra starting factors (e.g. A-VI's q); CAVI runs from each and from the exact posterior marginals, and the
        best local optimum is returned (so the result is at least as good as every start).
    backend : str
        Forward-backward backend for ``log p(x)`` and the marginals.

    Returns
    -------
    DiscreteVIResult
        ``method="F-VI"``; ``trace`` is the ELBO after each sweep of the winning start.
    """
    from .hmm import forward_backward

    t0 = time.perf_counter()
    p = _problem(log_lik, log_transmat, log_startprob, lengths)
    n_sweeps = _validate.check_int(n_sweeps, "n_sweeps", minimum=1)
    fb = forward_backward(p.log_lik, p.log_transmat, p.log_startprob, np.diff(p.offsets), backend=backend)
    inits = [np.clip(fb.posteriors, 1e-300, None), *[_validate.as_float_array(s, "starts[i]", shape=p.log_lik.shape)
                                                    for s in starts]]
    best: tuple[float, np.ndarray, list[float]] | None = None
    for init in inits:
        log_q, trace = _cavi(p, log_softmax(np.log(np.clip(init, 1e-300, None)), axis=1), n_sweeps, tol)
        if best is None or trace[-1] > best[0]:
            best = (trace[-1], log_q, trace)
    elbo, log_q, trace = best
    return DiscreteVIResult(elbo=elbo, log_evidence=fb.total_log_likelihood, q=np.exp(log_q), trace=np.array(trace),
                            seconds=time.perf_counter() - t0, method="F-VI")


def fit_avi(x: Any, log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any = None, *, encoder: Encoder,
            window: Sequence[int] = (0,), n_iter: int = 2000, lr: float = 0.02, lr_final: float | None = None,
            skip_log_lik: bool = True, seed: int | np.random.Generator | None = 0,
            backend: str = "auto") -> DiscreteVIResult:
    """A-VI: q_t = softmax(log_lik_t + f_φ(x_{t+k}, k ∈ window)) with an :mod:`avicore.encoders` encoder, fitted by
    Adam on the exact ELBO gradient.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features) or (n_samples,)
        The encoder's per-step inputs (the observations).
    log_lik, log_transmat, log_startprob, lengths
        The HMM.
    encoder : Encoder
        e.g. ``MLP(32)``; its ``mean`` head (latent_dim = n_states) gives the logits.
    window : sequence of int
        Offsets of the expanded domain (:func:`avicore.encoders.window_inputs`; edges masked per sequence).
    n_iter : int
        Adam steps.
    lr, lr_final : float
        Learning rate, decaying geometrically to ``lr_final`` when given.
    skip_log_lik : bool
        Add the step's own emission log-likelihood to the encoder's output (a fixed skip connection: a function of
        x_t, which every window holds, so the family stays amortized over the window). The encoders start at the
        zero map, so q_t starts at p(z_t | x_t) under a uniform prior instead of uniform; from a uniform start the
        sticky-chain ELBO pulls every row to one state, where the softmax saturates and the gradient vanishes.
    seed : int or Generator
        Seeds the encoder's initial weights.

    Returns
    -------
    DiscreteVIResult
        ``method="A-VI"``; ``trace`` holds the exact ELBO at every step; the final q is the last iterate's.
    """
    t0 = time.perf_counter()
    p = _problem(log_lik, log_transmat, log_startprob, lengths)
    xx = _validate.as_float_array(x, "x")
    xx = xx[:, None] if xx.ndim == 1 else xx
    if xx.ndim != 2 or xx.shape[0] != p.log_lik.shape[0]:
        raise ValueError(f"x must have shape (n_samples={p.log_lik.shape[0]}, n_features); got {xx.shape}.")
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder must be an avicore.encoders.Encoder (e.g. MLP(32)); got {type(encoder).__name__}.")
    win = check_window(window)
    n_iter = _validate.check_int(n_iter, "n_iter", minimum=1)
    skip = p.log_lik if _validate.check_bool(skip_log_lik, "skip_log_lik") else 0.0
    u = window_inputs(xx, win, p.offsets)
    bound = encoder.bind(u, p.log_lik.shape[1], n_masks=sum(1 for k in win if k != 0))
    design = bound.design(u)
    params = bound.init_params(seed)
    opt = Adam(params.shape, lr=_validate.check_scalar(lr, "lr", positive=True), maximize=True)
    schedule = exponential_decay(lr, lr_final, n_iter) if lr_final is not None else None
    zeros = None
    trace = np.empty(n_iter)
    best_params, best_elbo = params.copy(), -np.inf
    with _config.serial_blas():
        for i in range(n_iter):
            logits, log_scale, cache = bound.forward(params, design, keep=True)
            elbo, g_logits = _elbo_from_logits(p, logits + skip, grad=True)
            trace[i] = elbo
            if elbo > best_elbo:
                best_elbo, best_params = elbo, params.copy()
            if zeros is None:
                zeros = np.zeros_like(log_scale)
            grad = bound.backward(params, cache, g_logits, zeros)
            if schedule is not None:
                opt.lr = schedule(i)
            params = opt.step(params, grad, out=params)
        logits = bound.forward(params, design)[0] + skip
        final = _elbo_from_logits(p, logits, grad=False)[0]
        if final < best_elbo:  # keep the best iterate seen (Adam's last step can overshoot)
            params, final = best_params, best_elbo
            logits = bound.forward(params, design)[0] + skip
    return DiscreteVIResult(elbo=final, log_evidence=log_evidence(p.log_lik, p.log_transmat, p.log_startprob,
                                                                  np.diff(p.offsets), backend=backend),
                            q=softmax(logits, axis=1), trace=trace, seconds=time.perf_counter() - t0,
                            method="A-VI", encoder=encoder, window=win, encoder_params=params.copy())
