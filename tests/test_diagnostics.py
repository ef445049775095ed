"""ELBO estimates and the amortization gap against closed-form ELBOs; common random numbers; errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import avicore
from avicore.diagnostics import BLOCK, amortization_gap, elbo_estimate
from avicore.encoders import Constant
from avicore.inference import AVI, FVI
from avicore.models import LinearHierarchical

from .reference_vi import ConjugateGaussian


@pytest.fixture(scope="module")
def linear():
    model = LinearHierarchical()
    x = model.simulate(500, seed=3).x
    opt = model.fvi_optimum(x)
    # The best Constant-encoder q: every mean 0 (the average of the optimal means), the rest as F-VI's optimum.
    const = SimpleNamespace(local_mean=np.zeros_like(opt.local_mean), local_sd=opt.local_sd,
                            global_mean=opt.global_mean, global_sd=opt.global_sd)
    return model, x, opt, const


def _as_result(model, x, q, backend="cython"):
    return SimpleNamespace(model=model, x=x, backend=backend, local_mean=q.local_mean, local_sd=q.local_sd,
                           global_mean=q.global_mean, global_sd=q.global_sd)


def test_elbo_estimate_matches_the_closed_form(linear):
    model, x, opt, const = linear
    for q in (opt, const):
        exact = model.exact_elbo(x, q.local_mean, q.local_sd, q.global_mean, q.global_sd)
        est = elbo_estimate(model, x, q, n_samples=2000, seed=1, backend="cython")
        assert abs(est.elbo - exact) < 4 * est.se
        assert est.samples.shape == (2000,) and est.n_samples == 2000
        assert est.se == pytest.approx(np.std(est.samples, ddof=1) / math.sqrt(2000))


def test_elbo_estimate_on_a_vector_latent_model():
    model = ConjugateGaussian([[1.0, 0.5], [-0.3, 0.8]], [0.7, 1.2])
    x = model.simulate(60, seed=1).x
    lm, ls, gm, gs = model.fvi_optimum(x)
    q = SimpleNamespace(local_mean=lm + 0.1, local_sd=ls * 1.2, global_mean=gm - 0.2, global_sd=gs * 0.7)
    est = elbo_estimate(model, x, q, n_samples=500, seed=2)
    assert abs(est.elbo - model.exact_elbo(x, q.local_mean, q.local_sd, q.global_mean, q.global_sd)) < 4 * est.se
    # The entropy is exact: Σ ½ log(2πe s²) over every coordinate of every factor.
    entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e * q.local_sd ** 2)) + 0.5 * np.sum(
        np.log(2 * np.pi * np.e * q.global_sd ** 2))
    assert est.entropy == pytest.approx(entropy, rel=1e-13)


def test_point_mass_global_has_no_entropy(linear):
    model, x, opt, _ = linear
    point = SimpleNamespace(local_mean=opt.local_mean, local_sd=opt.local_sd, global_mean=opt.global_mean,
                            global_sd=np.zeros(1))
    est = elbo_estimate(model, x, point, n_samples=1000, seed=4, backend="cython")
    entropy = 0.5 * float(np.sum(np.log(2 * np.pi * np.e * opt.local_sd ** 2)))
    assert est.entropy == pytest.approx(entropy, rel=1e-13)
    tiny = 1e-9  # the closed form at a vanishing sd, without that Gaussian's entropy
    exact = (model.exact_elbo(x, opt.local_mean, opt.local_sd, opt.global_mean, [tiny])
             - 0.5 * math.log(2 * math.pi * math.e * tiny ** 2))
    assert abs(est.elbo - exact) < 4 * est.se


def test_standard_error_is_honest(linear):
    model, x, opt, _ = linear
    estimates = [elbo_estimate(model, x[:50], SimpleNamespace(
        local_mean=opt.local_mean[:50], local_sd=opt.local_sd[:50], global_mean=opt.global_mean,
        global_sd=opt.global_sd), n_samples=64, seed=s, backend="cython") for s in range(40)]
    values = np.array([e.elbo for e in estimates])
    mean_se = float(np.mean([e.se for e in estimates]))
    # The spread of independent estimates matches the reported standard error (within sampling error of an SD).
    assert 0.7 < values.std(ddof=1) / mean_se < 1.3


def test_noise_depends_only_on_seed_and_sample_number(linear):
    model, x, opt, _ = linear
    a = elbo_estimate(model, x, opt, n_samples=BLOCK + 7, seed=5, backend="cython")
    b = elbo_estimate(model, x, opt, n_samples=3 * BLOCK, seed=5, backend="cython")
    c = elbo_estimate(model, x, opt, n_samples=BLOCK + 7, seed=5, backend="numpy")
    assert np.array_equal(a.samples, b.samples[:BLOCK + 7])
    np.testing.assert_allclose(a.samples, c.samples, rtol=1e-12)


def test_gap_between_closed_form_optima_with_common_random_numbers(linear):
    model, x, opt, const = linear
    c = model.sigma ** 2 + model.tau ** 2
    theory = model.tau ** 2 * float(np.sum((x - x.mean()) ** 2)) / (2 * model.sigma ** 2 * c)
    gap = amortization_gap(_as_result(model, x, opt), _as_result(model, x, const), n_samples=400, seed=9)
    assert abs(gap.gap - theory) < 4 * gap.se
    # Common random numbers: smaller than the SE of two independent estimates ...
    assert gap.se < 0.6 * math.hypot(gap.elbo_fvi.se, gap.elbo_avi.se)
    assert gap.relative == pytest.approx(gap.gap / abs(gap.elbo_fvi.elbo))
    # ... and far smaller when the two approximations are close (the case the gap is hardest to resolve in).
    near = SimpleNamespace(local_mean=opt.local_mean * 0.98, local_sd=opt.local_sd, global_mean=opt.global_mean,
                           global_sd=opt.global_sd)
    small = amortization_gap(_as_result(model, x, opt), _as_result(model, x, near), n_samples=400, seed=9)
    exact = (model.exact_elbo(x, opt.local_mean, opt.local_sd, opt.global_mean, opt.global_sd)
             - model.exact_elbo(x, near.local_mean, near.local_sd, near.global_mean, near.global_sd))
    assert abs(small.gap - exact) < 4 * small.se
    assert small.se < 0.05 * math.hypot(small.elbo_fvi.se, small.elbo_avi.se)


def test_gap_of_a_result_with_itself_is_exactly_zero(linear):
    model, x, opt, _ = linear
    r = _as_result(model, x, opt)
    gap = amortization_gap(r, r, n_samples=50, seed=0)
    assert gap.gap == 0.0 and gap.se == 0.0


def test_gap_of_fitted_results(linear):
    model, x, _, _ = linear
    avicore.set_num_threads(1)
    fvi = FVI(model, n_samples=10, backend="cython").fit(x, n_iter=1000, lr=avicore.optim.exponential_decay(
        0.05, 1e-3, 1000), seed=0)
    avi = AVI(model, Constant(), n_samples=10, backend="cython").fit(x, n_iter=300, lr=0.05, seed=0)
    gap = avicore.amortization_gap(fvi, avi, seed=1)
    exact = (model.exact_elbo(x, fvi.local_mean, fvi.local_sd, fvi.global_mean, fvi.global_sd)
             - model.exact_elbo(x, avi.local_mean, avi.local_sd, avi.global_mean, avi.global_sd))
    assert abs(gap.gap - exact) < 4 * gap.se + 1e-9
    assert gap.gap > 50 * gap.se


@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda m, x, q: amortization_gap(_as_result(m, x, q), _as_result(m, x[:-1], SimpleNamespace(
        local_mean=q.local_mean[:-1], local_sd=q.local_sd[:-1], global_mean=q.global_mean,
        global_sd=q.global_sd))), ValueError,
     r"fvi_result and avi_result must be fits to the same data; got x of shapes \(500, 1\) and \(499, 1\)\."),
    (lambda m, x, q: amortization_gap(_as_result(m, x, q), _as_result(m, x + 1.0, q)), ValueError,
     r"must be fits to the same data; got x of shapes \(500, 1\) and \(500, 1\) with different values\."),
    (lambda m, x, q: amortization_gap(_as_result(m, x, q), _as_result(LinearHierarchical(tau=2.0), x, q)),
     ValueError, r"fvi_result and avi_result must be fits of the same model"),
    (lambda m, x, q: amortization_gap(_as_result(m, x, q), _as_result(m, x, q), n_samples=1), ValueError,
     r"n_samples must be >= 2; got 1\."),
    (lambda m, x, q: amortization_gap(q, q), TypeError, r"fvi_result must be a VIResult; got FVIOptimum\."),
    (lambda m, x, q: elbo_estimate(m, x, object()), TypeError,
     r"q must have the attributes local_mean, local_sd, global_mean and global_sd"),
    (lambda m, x, q: elbo_estimate(m, x, SimpleNamespace(local_mean=q.local_mean, local_sd=-q.local_sd,
                                                         global_mean=q.global_mean, global_sd=q.global_sd)),
     ValueError, r"q\.local_sd must be > 0; got min -0\.9\d+\."),
    (lambda m, x, q: elbo_estimate(m, x, SimpleNamespace(local_mean=q.local_mean, local_sd=q.local_sd,
                                                         global_mean=q.global_mean, global_sd=[-1.0])),
     ValueError, r"q\.global_sd must be >= 0; got min -1\.0\."),
    (lambda m, x, q: elbo_estimate(m, x[:10], q), ValueError, r"q\.local_mean must have shape \(10, 1\); got "
                                                              r"\(500, 1\)\."),
    (lambda m, x, q: elbo_estimate(m, x, q, n_samples=0), ValueError, r"n_samples must be >= 1; got 0\."),
    (lambda m, x, q: elbo_estimate("m", x, q), TypeError, r"model must be an avicore\.models\.LatentVariableModel"),
])
def test_bad_input(linear, make, exc, match):
    model, x, opt, _ = linear
    with pytest.raises(exc, match=match):
        make(model, x, opt)
