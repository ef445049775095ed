"""Fuzz: the user-level entry points — models' simulate/validate_data, FVI/AVI.fit, encoders, dataset loaders."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from avicore import AVI, FVI, datasets, encoders
from avicore.models import GaussianRandomWalk, LinearHierarchical, NonlinearHierarchical, SawTimeSeries

from ._harness import FUZZ, FUZZ_SLOW, assert_clean, hostile, hostile_int, run

MODELS = {
    "LinearHierarchical": LinearHierarchical,
    "NonlinearHierarchical": NonlinearHierarchical,
    "SawTimeSeries": SawTimeSeries,
    "GaussianRandomWalk": GaussianRandomWalk,
}
MODEL_ARGS = ("x", "n", "seed", "tau", "sigma", "a", "step_scale", "obs_scale", "init_scale", "theta_prior_scale")


def _normal(rng, shape):
    return rng.normal(size=shape)


@FUZZ
@given(name=st.sampled_from(sorted(MODELS)), data=st.data())
def test_fuzz_models_simulate_and_validate_data(name, data):
    model = MODELS[name]()
    n = data.draw(hostile_int(1, 6), label="n")
    seed = data.draw(st.one_of(st.integers(0, 2**32), st.sampled_from([-1, 2.5, "0", np.random.default_rng(0)])))
    sim = run(f"models.{name}.simulate", lambda: model.simulate(n, seed=seed), MODEL_ARGS)
    if sim is not None:
        assert sim.x.shape[0] == n, f"{name}.simulate: {sim.x.shape[0]} observations, asked for {n}"
        assert_clean(f"models.{name}.simulate", sim.x, allow_inf=False)
    x = data.draw(hostile((5, model.obs_dim), _normal), label="x")
    out = run(f"models.{name}.validate_data", lambda: model.validate_data(x), MODEL_ARGS)
    if out is not None:
        assert out.dtype == np.float64 and out.flags.c_contiguous and out.ndim == 2
        assert_clean(f"models.{name}.validate_data", out, (np.shape(x)[0], model.obs_dim), allow_inf=False)
        np.testing.assert_array_equal(out.reshape(np.shape(x)), np.asarray(x, dtype=np.float64))


FIT_ARGS = ("x", "n_iter", "lr", "seed", "tol", "tol_window", "n_samples", "batch_size", "elbo_samples", "encoder",
            "window", "backend", "global_q", "callback", "weight_decay")


def _lr():
    return st.one_of(st.sampled_from([0.05, 0.01]), st.sampled_from([0.0, -0.1, np.nan, np.inf, "0.1", None, 1e300]),
                     st.sampled_from([lambda t: 0.05, lambda t: np.nan, lambda t: -1.0, lambda t: "x"]))


@FUZZ_SLOW
@given(method=st.sampled_from(["FVI", "AVI"]), data=st.data())
def test_fuzz_fit(method, data):
    """One knob hostile at a time (or none), the others valid, so most fits run to the end."""
    model = LinearHierarchical()
    target = data.draw(st.sampled_from([None, "x", "n_samples", "batch_size", "n_iter", "lr", "tol", "tol_window",
                                        "encoder"]), label="hostile knob")

    def knob(name, valid, bad):
        return data.draw(bad if name == target else valid, label=name)

    x = knob("x", st.just(np.random.default_rng(1).normal(size=8)), hostile((8,), _normal))
    kw = {"n_samples": knob("n_samples", st.integers(1, 4), hostile_int(1, 4))}
    batch = knob("batch_size", st.sampled_from([None, 3, 8, 20]), hostile_int(1, 8))
    if batch is not None:
        kw["batch_size"] = batch
    enc = knob("encoder", st.sampled_from([encoders.Constant(), encoders.Polynomial(1), encoders.MLP(2)]),
               st.sampled_from(["mlp", None, encoders.Polynomial(2, whiten=True), encoders.MLP(1, heads="separate")]))

    def make():
        return FVI(model, backend="cython", **kw) if method == "FVI" else AVI(model, enc, backend="cython", **kw)

    engine = run(f"inference.{method}", make, FIT_ARGS)
    if engine is None:
        return
    n_iter = knob("n_iter", st.integers(1, 30), hostile_int(1, 30))
    lr = knob("lr", st.sampled_from([0.05, 0.01]), _lr())
    tol = knob("tol", st.just(None), st.sampled_from([1e-3, 0.0, -1.0, np.nan, "x"]))
    tol_window = knob("tol_window", st.just(100), st.sampled_from([5, 1, 0, -1, 10**9, 2.0]))
    res = run(f"inference.{method}.fit", lambda: engine.fit(x, n_iter=n_iter, lr=lr, seed=0, tol=tol,
                                                            tol_window=tol_window), FIT_ARGS)
    if res is not None:
        assert np.isfinite(res.elbo), f"{method}.fit: non-finite ELBO {res.elbo}"
        assert_clean(f"inference.{method}.fit", res.local_mean, (np.shape(x)[0], 1))
        assert_clean(f"inference.{method}.fit", res.global_mean)


ENC_ARGS = ("degree", "whiten", "width", "depth", "activation", "heads", "x", "window", "offsets")


@FUZZ
@given(data=st.data())
def test_fuzz_encoders(data):
    n = data.draw(hostile_int(1, 3))
    which = data.draw(st.sampled_from(["Polynomial", "MLP", "Constant"]))
    kind = {"Polynomial": lambda: encoders.Polynomial(n), "MLP": lambda: encoders.MLP(n, depth=n),
            "Constant": encoders.Constant}[which]
    enc = run(f"encoders.{which}", kind, ENC_ARGS)
    x = data.draw(hostile((5, 2), _normal), label="x")
    window = data.draw(st.sampled_from([(0,), (0, 1), (-1, 0, 1), (), (0, 0), [0.5], "0", None, (10**12,)]))
    out = run("encoders.window_inputs", lambda: encoders.window_inputs(x, window), ENC_ARGS)
    if out is not None:
        xa = np.asarray(x, dtype=np.float64)
        k = len(window)
        assert_clean("encoders.window_inputs", out, (xa.shape[0], k * xa.shape[1] + sum(1 for w in window if w)))
        for i, w in enumerate(window):
            rows = np.arange(xa.shape[0])
            inside = (rows + w >= 0) & (rows + w < xa.shape[0])
            np.testing.assert_array_equal(out[inside, i * xa.shape[1]:(i + 1) * xa.shape[1]], xa[rows[inside] + w])
    if enc is not None and out is not None:
        bound = run(f"encoders.{which}.bind", lambda: enc.bind(out, 1), (*ENC_ARGS, "u", "latent_dim"))
        if bound is not None:
            mean, log_scale = bound(bound.init_params(seed=0), out)
            assert_clean(f"encoders.{which}.bind", mean, (out.shape[0], 1), allow_inf=False)
            assert_clean(f"encoders.{which}.bind", log_scale, (out.shape[0], 1), allow_inf=False)


def _idx_bytes(draw):
    """An IDX file: valid, or corrupted in its magic, type code, rank, dimensions or length; maybe gzipped."""
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    type_code = draw(st.sampled_from([0x08, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]))
    size = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(type_code, 1)
    body = bytes(draw(st.integers(0, 255)) for _ in range(int(np.prod(shape)) * size))
    head = bytes([0, 0, type_code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    corrupt = draw(st.sampled_from([None, None, "magic", "rank0", "huge_dim", "truncate", "extra", "empty"]))
    if corrupt == "magic":
        head = b"\x01" + head[1:]
    elif corrupt == "rank0":
        head = head[:3] + b"\x00"
    elif corrupt == "huge_dim":
        head = head[:4] + struct.pack(">I", 2**32 - 1) + head[8:]
        shape = [2**32 - 1, *shape[1:]]
    elif corrupt == "truncate":
        body = body[: len(body) // 2] if body else b""
        head = head[:-1] if not body else head
    elif corrupt == "extra":
        body += b"\x00"
    raw = b"" if corrupt == "empty" else head + body
    if draw(st.booleans()):
        raw = gzip.compress(raw)
        if draw(st.booleans()) and len(raw) > 12:
            raw = raw[: len(raw) - 6]  # a truncated gzip stream
    return raw, shape, corrupt


@FUZZ
@given(data=st.data())
def test_fuzz_read_idx(tmp_path_factory, data):
    raw, shape, _corrupt = data.draw(st.composite(lambda draw: _idx_bytes(draw))())
    path = tmp_path_factory.mktemp("idx") / "f.idx"
    path.write_bytes(raw)
    arr = run("datasets.read_idx", lambda: datasets.read_idx(path), ("path",))
    if arr is not None:
        assert arr.shape == tuple(shape)
    images = run("datasets.load_idx", lambda: datasets.load_idx(path), ("path", "labels_path", "n_images"))
    if images is not None:
        assert_clean("datasets.load_idx", images.x, allow_inf=False)
        assert images.x.min() >= 0.0 and images.x.max() <= 1.0


@pytest.mark.parametrize("path", [None, 3, b"\x00", "/nonexistent/avicore-fuzz"])
def test_fuzz_loaders_refuse_bad_paths(path):
    for entry, call in (("datasets.read_idx", lambda: datasets.read_idx(path)),
                        ("datasets.load_fashion_mnist", lambda: datasets.load_fashion_mnist(path=path))):
        try:
            run(entry, call, ("path", "split", "n"))
        except FileNotFoundError as exc:  # Python's convention for a missing file; it names the path
            assert "avicore-fuzz" in str(exc)
