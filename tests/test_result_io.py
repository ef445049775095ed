"""VIResult.save / avicore.load_result: bit-exact round trips for every model and encoder, no pickle, clear errors."""

from __future__ import annotations

import dataclasses
import math
import warnings
import zipfile

import numpy as np
import pytest

import avicore
from avicore.encoders import MLP, Constant, Polynomial
from avicore.gp import RBF, Bernoulli, Gaussian, Matern12, Periodic, Poisson, StudentT
from avicore.models import (
    BayesianDecoder,
    CustomHierarchical,
    GaussianProcess,
    GaussianRandomWalk,
    LinearGaussianSSM,
    LinearHierarchical,
    NonlinearHierarchical,
    SawTimeSeries,
)
from avicore.optim import ConvergenceWarning
from tests.test_gradcheck import _poisson  # a compiled Poisson log density (one copy)


def _gp(kernel, likelihood, fit=False):
    t = np.linspace(0.0, 3.0, 12)[:, None]
    return GaussianProcess(kernel, likelihood, t, fit=fit)


def _cases():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(12, 1)).astype(float)
    ssm = LinearGaussianSSM(A=[[0.9, 0.1], [0.0, 0.8]], Q=np.eye(2) * 0.5, C=[[1.0, 0.5]], R=[[0.3]], m0=[0.0, 0.1],
                            P0=np.eye(2))
    return [
        ("linear", LinearHierarchical(tau=1.2, sigma=2.0), LinearHierarchical().simulate(30, seed=1).x, {}),
        ("nonlinear-prior", NonlinearHierarchical(theta_prior_scale=3.0),
         NonlinearHierarchical().simulate(30, seed=1).x, {}),
        ("saw", SawTimeSeries(a=0.7), SawTimeSeries().simulate(20, seed=1).x, {"window": (0, 1)}),
        ("random-walk", GaussianRandomWalk(step_scale=0.5, obs_scale=2.0), GaussianRandomWalk().simulate(20, seed=1).x,
         {"window": (-1, 0, 1)}),
        ("ssm", ssm, ssm.simulate(15, seed=1).x, {}),
        ("decoder", BayesianDecoder(2, hidden=(3,)), np.random.default_rng(2).uniform(size=(10, 4)), {}),
        ("gp-poisson-fit", _gp(Matern12(1.5, 0.4) + RBF(0.5, 1.0), Poisson(), fit=("left.log_lengthscale",)),
         counts, {}),
        ("gp-bernoulli", _gp(Periodic(1.0, 0.5, 1.5) * RBF(), Bernoulli("probit")), (counts > 1).astype(float), {}),
        ("gp-gaussian", _gp(RBF(1.0, [0.5]), Gaussian(0.2)), rng.normal(size=(12, 1)), {}),
        ("gp-student", _gp(Matern12(), StudentT(3.0, 0.5)), rng.normal(size=(12, 1)), {}),
    ]


@pytest.fixture(autouse=True)
def _short_fits_are_fine():
    """The fits here are a few iterations long on purpose (the round trip is under test, not the fit): their
    ConvergenceWarning is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _assert_same(a, b):
    for f in dataclasses.fields(a):
        if f.name.startswith("_"):
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert vb.dtype == va.dtype and vb.shape == va.shape, f.name
            assert va.tobytes() == vb.tobytes(), f.name  # to the bit, NaN payloads included
        elif f.name in ("model", "encoder"):
            assert type(va) is type(vb) and repr(va) == repr(vb), f.name
        elif isinstance(va, float) and math.isnan(va):
            assert math.isnan(vb), f.name
        else:
            assert va == vb and type(va) is type(vb), f.name


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_round_trip_is_bit_exact_for_every_model(case, tmp_path):
    _, model, x, _ = case
    res = avicore.FVI(model, n_samples=2, elbo_samples=4, backend="numpy").fit(x, n_iter=3, lr=0.01, seed=3)
    path = tmp_path / "fit.npz"
    res.save(path)
    back = avicore.load_result(path)
    _assert_same(res, back)
    # The rebuilt model is the same model: the same exact references and log joint.
    if res.log_evidence is not None:
        assert back.model.log_evidence(back.x) == res.model.log_evidence(res.x)


@pytest.mark.parametrize("encoder", [Constant(), Polynomial(2), Polynomial(1, whiten=True),
                                     MLP(3, depth=1, activation="tanh", heads="separate")], ids=repr)
@pytest.mark.parametrize("case", [c for c in _cases() if c[0] in ("linear", "saw", "random-walk", "gp-poisson-fit")],
                         ids=lambda c: c[0])
def test_loaded_avi_result_encodes_new_data_like_the_original(case, encoder, tmp_path):
    _, model, x, kwargs = case
    res = avicore.AVI(model, encoder, n_samples=2, elbo_samples=4, backend="numpy", **kwargs).fit(
        x, n_iter=3, lr=0.01, seed=4)
    res.save(tmp_path / "fit")  # numpy adds the .npz suffix
    back = avicore.load_result(tmp_path / "fit.npz")
    _assert_same(res, back)
    # A GP encodes data at its own inputs (one row per input); the others take any new rows.
    x_new = x[::-1].copy() if isinstance(model, GaussianProcess) else x[:3] + 0.25
    for a, b in zip(res.encode(x_new), back.encode(x_new)):
        assert a.tobytes() == b.tobytes()


def test_custom_model_must_be_passed_again(tmp_path):
    model = CustomHierarchical(_poisson, 1, 1, 1)
    x = np.array([[0.0], [1.0], [3.0], [2.0]])
    res = avicore.FVI(model, n_samples=2, elbo_samples=4, backend="numpy").fit(x, n_iter=2, lr=0.01, seed=0)
    res.save(tmp_path / "c.npz")
    with pytest.raises(ValueError, match=r"CustomHierarchical.*pass the model again"):
        avicore.load_result(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="model must be the CustomHierarchical the result was fitted with"):
        avicore.load_result(tmp_path / "c.npz", model=CustomHierarchical(_poisson, 1, 1, 2))
    _assert_same(res, avicore.load_result(tmp_path / "c.npz", model=model))


def test_foreign_corrupt_and_pickled_files_are_refused(tmp_path):
    np.savez(tmp_path / "foreign.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="is not an avicore result file"):
        avicore.load_result(tmp_path / "foreign.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        avicore.load_result(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", __avicore__=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="is not an avicore result file"):  # never unpickled
        avicore.load_result(tmp_path / "obj.npz")
    np.savez(tmp_path / "listmeta.npz", __avicore__=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    with pytest.raises(ValueError, match=r"is not an avicore result file \(format 'list'\)"):
        avicore.load_result(tmp_path / "listmeta.npz")
    with pytest.raises(FileNotFoundError):
        avicore.load_result(tmp_path / "missing.npz")


def test_truncated_and_tampered_files_are_refused(tmp_path):
    model = LinearHierarchical()
    res = avicore.FVI(model, n_samples=2, elbo_samples=4, backend="numpy").fit(
        model.simulate(10, seed=0).x, n_iter=2, lr=0.01, seed=0)
    res.save(tmp_path / "ok.npz")
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz"):
        avicore.load_result(tmp_path / "cut.npz")
    # A file whose metadata names a class outside avicore's list: refused by name, nothing imported.
    with zipfile.ZipFile(tmp_path / "ok.npz") as zf, np.load(tmp_path / "ok.npz") as data:
        arrays = {k[:-4]: data[k[:-4]] for k in zf.namelist()}
    meta = arrays["__avicore__"].tobytes().decode().replace('"LinearHierarchical"', '"os.system"')
    arrays["__avicore__"] = np.frombuffer(meta.encode(), dtype=np.uint8)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ValueError, match=r"unknown class 'os\.system'"):
        avicore.load_result(tmp_path / "evil.npz")


def test_save_rejects_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="result must be an avicore VIResult"):
        from avicore._result_io import save_result

        save_result(object(), tmp_path / "x.npz")
