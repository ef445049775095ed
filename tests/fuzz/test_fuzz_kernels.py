"""Fuzz: the kernel entry points (HMM, emissions, quadrature, Gaussian chain, Adam) on hostile inputs.

Each input is given to the NumPy reference and to the compiled (Cython) backend: both refuse it with a
ValueError/TypeError naming an argument, or both return the same clean result.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.special import gammaln

from avicore import chain, emissions, hmm, quadrature
from avicore.gp import likelihoods
from avicore.optim import Adam

from ._harness import FUZZ, arguments, assert_clean, hostile, hostile_int, run

BACKENDS = ("numpy", "cython")


def _log_stochastic(rng, shape):
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if len(shape) > 1 else rng.dirichlet(np.ones(shape[0]))
    with np.errstate(divide="ignore"):
        return np.log(p)


def _normal(rng, shape):
    return rng.normal(size=shape)


def _positive(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


def _counts(rng, shape):
    return rng.poisson(3.0, size=shape).astype(np.float64)


def _spd(rng, shape):
    d = shape[-1]
    a = rng.normal(size=(*shape[:-2], d, d)) if len(shape) >= 2 else rng.normal(size=shape)
    return a @ np.swapaxes(a, -1, -2) + d * np.eye(d) if len(shape) >= 2 else a


def _lengths():
    return st.one_of(st.none(), st.just([2, 4]), st.just([6]), st.just([3, 3, 0]), st.just([7]), st.just([-1, 7]),
                     st.just([2.0, 4.0]), st.just([[6]]), st.just("6"))


def _agree(entry, results, fields):
    """Both backends refused, or both returned clean results equal to ~1e-10."""
    refused = [r is None for r in results]
    assert all(refused) or not any(refused), f"{entry}: one backend refused the input, the other did not"
    if refused[0]:
        return
    ref, got = results
    for f in fields:
        a, b = getattr(ref, f), getattr(got, f)
        assert_clean(entry, a, np.shape(b))
        assert_clean(entry, b)
        assert_allclose(b, a, rtol=1e-10, atol=1e-10, err_msg=f"{entry}.{f}: cython != numpy")


HMM_ARGS = ("log_lik", "log_transmat", "log_startprob", "lengths", "n_samples", "seed")


@FUZZ
@given(k=st.integers(1, 3), log_lik=st.data(), lengths=_lengths())
def test_fuzz_hmm_forward_backward_and_viterbi(k, log_lik, lengths):
    a = arguments(log_lik, {"ll": ((6, k), _normal), "tm": ((k, k), _log_stochastic), "sp": ((k,), _log_stochastic)})
    ll, tm, sp = a["ll"], a["tm"], a["sp"]
    fb = [run("hmm.forward_backward", lambda b=b: hmm.forward_backward(ll, tm, sp, lengths, backend=b), HMM_ARGS)
          for b in BACKENDS]
    _agree("hmm.forward_backward", fb, ("log_likelihood", "posteriors", "transition_counts", "initial_counts"))
    vi = [run("hmm.viterbi", lambda b=b: hmm.viterbi(ll, tm, sp, lengths, backend=b), HMM_ARGS) for b in BACKENDS]
    _agree("hmm.viterbi", vi, ("log_prob",))
    if vi[0] is not None:
        assert_allclose(vi[1].states, vi[0].states)
    n = log_lik.draw(hostile_int(1, 3))
    sp_res = [run("hmm.sample_posterior",
                  lambda b=b: hmm.sample_posterior(ll, tm, sp, lengths, n_samples=n, seed=3, backend=b), HMM_ARGS)
              for b in BACKENDS]
    assert (sp_res[0] is None) == (sp_res[1] is None)
    if sp_res[0] is not None:
        np.testing.assert_array_equal(sp_res[0], sp_res[1])
        assert sp_res[0].shape[0] == n and sp_res[0].min() >= 0 and sp_res[0].max() < k


EMISSION_ARGS = ("X", "means", "variances", "covariances", "rates", "symbols", "log_emissionprob")


@FUZZ
@given(n_feat=st.integers(1, 3), k=st.integers(1, 3), data=st.data())
def test_fuzz_emissions(n_feat, k, data):
    a = arguments(data, {"X": ((5, n_feat), _normal), "means": ((k, n_feat), _normal), "var": ((k, n_feat), _positive),
                         "cov": ((k, n_feat, n_feat), _spd), "counts": ((5, n_feat), _counts),
                         "rates": ((k, n_feat), _positive), "log_b": ((k, 3), _log_stochastic)})
    X, means, var, cov, counts, rates, log_b = (a[n] for n in ("X", "means", "var", "cov", "counts", "rates", "log_b"))
    out = run("emissions.gaussian_diag_log_lik", lambda: emissions.gaussian_diag_log_lik(X, means, var),
              EMISSION_ARGS)
    if out is not None:
        assert_clean("emissions.gaussian_diag_log_lik", out, (np.shape(X)[0], np.shape(means)[0]))
        full = emissions.gaussian_full_log_lik(X, means, np.asarray(var, dtype=float)[:, :, None]
                                               * np.eye(n_feat) if np.ndim(var) == 2 else var)
        assert_allclose(out, full, rtol=1e-9, atol=1e-9)
    out = run("emissions.gaussian_full_log_lik", lambda: emissions.gaussian_full_log_lik(X, means, cov),
              EMISSION_ARGS)
    if out is not None:
        assert_clean("emissions.gaussian_full_log_lik", out, (np.shape(X)[0], np.shape(means)[0]))
    out = run("emissions.poisson_log_lik", lambda: emissions.poisson_log_lik(counts, rates), EMISSION_ARGS)
    if out is not None:
        assert_clean("emissions.poisson_log_lik", out)
        c, r = np.asarray(counts, dtype=float).reshape(len(counts), -1), np.asarray(rates, dtype=float)
        r = r.reshape(r.shape[0], -1)
        ref = (c[:, None, :] * np.log(r)[None] - r[None] - gammaln(c + 1.0)[:, None, :]).sum(-1)
        assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    symbols = data.draw(hostile((5,), lambda rng, s: rng.integers(0, 3, size=s), valid_dtype=np.int64))
    out = run("emissions.categorical_log_lik", lambda: emissions.categorical_log_lik(symbols, log_b), EMISSION_ARGS)
    if out is not None:
        assert_clean("emissions.categorical_log_lik", out, (len(symbols), np.shape(log_b)[0]))


QUAD_ARGS = ("likelihood", "y", "mean", "var", "n_points", "noise", "df", "scale", "link")


@FUZZ
@given(which=st.sampled_from(["gaussian", "poisson", "bernoulli", "studentt"]), data=st.data())
def test_fuzz_quadrature(which, data):
    valid_y = {"gaussian": _normal, "studentt": _normal, "poisson": _counts,
               "bernoulli": lambda rng, s: rng.integers(0, 2, size=s).astype(float)}[which]
    a = arguments(data, {"y": ((4,), valid_y), "mean": ((4,), _normal), "var": ((4,), _positive)})
    y, mean, var = a["y"], a["mean"], a["var"]
    n_points = data.draw(st.one_of(st.integers(1, 30), st.sampled_from([0, 257, -3, 2.5, None])))
    param = data.draw(st.sampled_from([1.0, 0.5, 0.0, -1.0, np.nan, np.inf, 1e300, 1e-300, "x"]))

    def make():
        return {"gaussian": lambda: likelihoods.Gaussian(param), "poisson": likelihoods.Poisson,
                "bernoulli": lambda: likelihoods.Bernoulli(param if isinstance(param, str) else "logit"),
                "studentt": lambda: likelihoods.StudentT(df=4.0, scale=param)}[which]()

    lik = run("gp.likelihoods." + which, make, QUAD_ARGS)
    if lik is None:
        return
    res = [run("quadrature.expected_log_lik", lambda b=b: quadrature.expected_log_lik(
        lik, y, mean, var, n_points=n_points, backend=b), QUAD_ARGS) for b in BACKENDS]
    _agree("quadrature.expected_log_lik", res, ("value", "grad_mean", "grad_var"))
    n = data.draw(hostile_int(1, 40))
    gh = run("quadrature.gauss_hermite", lambda: quadrature.gauss_hermite(n), ("n_points",))
    if gh is not None:
        nodes, weights = gh
        assert_clean("quadrature.gauss_hermite", nodes, (n,), allow_inf=False)
        assert_allclose(weights.sum(), np.sqrt(np.pi) if abs(weights.sum() - 1) > 0.5 else 1.0, rtol=1e-12)


CHAIN_ARGS = ("x", "A", "Q", "C", "R", "m0", "P0", "lengths")


@FUZZ
@given(d=st.integers(1, 2), p=st.integers(1, 2), data=st.data())
def test_fuzz_chain_smoother(d, p, data):
    a = arguments(data, {"x": ((6, p), _normal), "A": ((d, d), lambda rng, s: 0.5 * rng.normal(size=s)),
                         "Q": ((d, d), _spd), "C": ((p, d), _normal), "R": ((p, p), _spd), "m0": ((d,), _normal),
                         "P0": ((d, d), _spd)})
    x, A, Q, C, R, m0, P0 = (a[n] for n in ("x", "A", "Q", "C", "R", "m0", "P0"))
    lengths = data.draw(st.one_of(st.none(), _lengths()))
    res = [run("chain.smoother", lambda b=b: chain.smoother(x, A, Q, C, R, m0, P0, lengths=lengths, backend=b),
               CHAIN_ARGS, numerical=(chain.ChainNumericalError,)) for b in BACKENDS]
    _agree("chain.smoother", res, ("means", "covariances", "cross_covariances", "log_evidence"))


ADAM_ARGS = ("params", "grad", "out", "rows", "shape", "scale", "offset", "step_rows")


@FUZZ
@given(shape=st.sampled_from([3, (2, 3), (4, 1)]), data=st.data())
def test_fuzz_adam(shape, data):
    full = (shape,) if isinstance(shape, int) else shape
    a = arguments(data, {"params": (full, _normal), "grad": (full, _normal)})
    params, grad = a["params"], a["grad"]
    opt = Adam(shape, lr=0.1)
    ref = Adam(shape, lr=0.1)
    ref._cy = None
    out = run("optim.Adam.step", lambda: opt.step(params, grad), ADAM_ARGS)
    if out is not None:
        want = ref.step(np.asarray(params, dtype=float), np.asarray(grad, dtype=float))
        assert out.shape == full
        assert_allclose(out, want, rtol=1e-14, atol=0)
        assert opt.finite == bool(np.isfinite(np.asarray(grad, dtype=float)).all())
    if len(full) == 2:
        rows = data.draw(st.one_of(st.just(np.arange(full[0])), st.just(np.array([1])), st.just(np.array([-1])),
                                   st.just(np.array([full[0]])), st.just(np.array([0, 0])), st.just([0.5]),
                                   st.just(np.array([], dtype=np.int64)), st.just(np.array([1, 0], np.int32))))
        g = data.draw(hostile((len(rows), full[1]), _normal))
        target = np.zeros(full)
        run("optim.Adam.step_rows", lambda: Adam(shape, lr=0.1).step_rows(target, g, rows), ADAM_ARGS)
        assert not np.isnan(target).any() or not np.isfinite(np.asarray(g, dtype=complex)).all()
