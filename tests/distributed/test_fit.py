"""Distributed F-VI / A-VI fits equal the in-process fits with the same seed (≤ 1e-10), full batch and minibatches."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose

import avicore
from avicore.encoders import MLP, Polynomial
from avicore.models import LinearHierarchical, NonlinearHierarchical, SawTimeSeries

from ..tolerances import tol

N, CHUNK = 700, 200  # four chunks (the last one short) on two workers


@pytest.fixture(scope="module")
def data():
    model = LinearHierarchical()
    x = model.simulate(N, seed=11).x
    return model, x, da.from_array(x, chunks=(CHUNK, 1))


def _assert_same(local, dist, client):
    assert local.n_iter == dist.n_iter and local.stop_reason == dist.stop_reason
    assert_allclose(dist.trace, local.trace, **tol())
    for name in ("elbo", "elbo_se", "global_mean", "global_sd"):
        assert_allclose(getattr(dist, name), getattr(local, name), **tol(), err_msg=name)
    for name in ("local_mean", "local_sd", "local_log_sd"):
        value = getattr(dist, name)
        assert isinstance(value, da.Array), name
        assert value.chunks[0] == (CHUNK, CHUNK, CHUNK, N - 3 * CHUNK)
        assert_allclose(client.compute(value).result(), getattr(local, name), **tol(), err_msg=name)


@pytest.mark.parametrize("batch_size", [None, 96])
def test_distributed_fvi_equals_in_process(data, dask_client, batch_size):
    model, x, dx = data
    fvi = avicore.FVI(model, n_samples=3, backend="cython", batch_size=batch_size, elbo_samples=40)
    local = fvi.fit(x, n_iter=40, lr=0.05, seed=5)
    dist = fvi.fit(dx, n_iter=40, lr=0.05, seed=5, client=dask_client)
    _assert_same(local, dist, dask_client)


@pytest.mark.parametrize("batch_size", [None, 96])
def test_distributed_avi_equals_in_process(data, dask_client, batch_size):
    model, x, dx = data
    avi = avicore.AVI(model, Polynomial(2), n_samples=3, backend="cython", batch_size=batch_size, elbo_samples=40,
                      weight_decay=0.01)
    local = avi.fit(x, n_iter=40, lr=0.05, seed=5)
    dist = avi.fit(dx, n_iter=40, lr=0.05, seed=5, client=dask_client)
    _assert_same(local, dist, dask_client)
    assert_allclose(dist.encoder_params, local.encoder_params, **tol())


def test_distributed_avi_mlp_nonlinear_model(dask_client):
    model = NonlinearHierarchical()
    x = model.simulate(300, seed=2).x
    avi = avicore.AVI(model, MLP(4), n_samples=2, backend="numba", elbo_samples=20)
    local = avi.fit(x, n_iter=25, lr=0.02, seed=1)
    dist = avi.fit(da.from_array(x, chunks=(120, 1)), n_iter=25, lr=0.02, seed=1, client=dask_client)
    assert_allclose(dist.trace, local.trace, **tol())
    assert_allclose(dist.encoder_params, local.encoder_params, **tol())


def test_encode_dask_array_chunk_by_chunk(data, dask_client):
    model, x, dx = data
    res = avicore.AVI(model, Polynomial(1), n_samples=2, backend="cython", elbo_samples=20).fit(
        x, n_iter=20, lr=0.05, seed=0)
    mean, sd = res.encode(dx)
    assert isinstance(mean, da.Array) and mean.chunks[0] == dx.chunks[0]
    windowed = avicore.AVI(model, Polynomial(1), window=(0, 1), n_samples=2, elbo_samples=20).fit(
        x, n_iter=5, lr=0.05, seed=0)
    with pytest.raises(ValueError, match=r"x_new may be a dask array only for an encoder with window \(0,\)"):
        windowed.encode(dx)
    ref_mean, ref_sd = res.encode(x)
    assert_allclose(dask_client.compute(mean).result(), ref_mean, **tol())
    assert_allclose(dask_client.compute(sd).result(), ref_sd, **tol())


def test_callback_stop_and_one_dimensional_input(data, dask_client):
    model, x, dx = data
    seen = []

    def stop(state):
        seen.append(state.iteration)
        assert state.local_mean is None  # a distributed F-VI fit's locals stay on the workers
        return state.iteration == 7

    fvi = avicore.FVI(model, n_samples=2, backend="cython", elbo_samples=20)
    local = fvi.fit(x[:, 0], n_iter=30, lr=0.05, seed=2, callback=lambda s: s.iteration == 7)
    dist = fvi.fit(dx[:, 0], n_iter=30, lr=0.05, seed=2, client=dask_client, callback=stop)
    assert seen == list(range(1, 8)) and dist.stop_reason == "callback"
    _assert_same(local, dist, dask_client)


def test_rejects_what_it_cannot_distribute(data, dask_client):
    model, x, dx = data
    with pytest.raises(ValueError, match=r"window must be \(0,\) for a distributed A-VI fit"):
        avicore.AVI(model, Polynomial(1), window=(0, 1)).fit(dx, n_iter=2, lr=0.1, seed=0, client=dask_client)
    saw = SawTimeSeries()
    with pytest.raises(ValueError, match="x must be a NumPy array for SawTimeSeries"):
        avicore.FVI(saw).fit(da.from_array(saw.simulate(50, seed=0).x), n_iter=2, lr=0.1, seed=0,
                             client=dask_client)
    with pytest.raises(ValueError, match=r"x must have shape \(n_obs, 1\); got a dask array of shape \(700, 2\)"):
        avicore.FVI(model).fit(da.concatenate([dx, dx], axis=1), n_iter=2, lr=0.1, seed=0, client=dask_client)
    unknown = dx[dx[:, 0] > 0]
    with pytest.raises(ValueError, match="x must have known chunk sizes"):
        avicore.FVI(model).fit(unknown, n_iter=2, lr=0.1, seed=0, client=dask_client)
    with pytest.raises(TypeError, match=r"client must be a distributed\.Client or None; got str"):
        avicore.FVI(model).fit(dx, n_iter=2, lr=0.1, seed=0, client="tcp://nowhere")
    with pytest.raises(TypeError, match=r"need x as a dask\.array; got x of type ndarray"):
        avicore.FVI(model).fit(x, n_iter=2, lr=0.1, seed=0, client=dask_client)
    bad = da.from_array(np.where(np.arange(N)[:, None] == 650, np.nan, x), chunks=(CHUNK, 1))
    with pytest.raises(ValueError, match=r"got nan at index \(50, 0\)\. \(in the chunk of rows 600–699 of x\)"):
        avicore.FVI(model, backend="cython").fit(bad, n_iter=2, lr=0.1, seed=0, client=dask_client)


def test_without_a_client_a_local_cluster_runs_the_fit(data):
    model, x, dx = data
    fvi = avicore.FVI(model, n_samples=2, backend="cython", batch_size=300, elbo_samples=20)
    local = fvi.fit(x, n_iter=10, lr=0.05, seed=4)
    dist = fvi.fit(dx, n_iter=10, lr=0.05, seed=4)  # no current client: a LocalCluster started and closed
    assert_allclose(dist.trace, local.trace, **tol())
    # the cluster is gone: the locals were gathered into the client's memory (numpy-backed dask arrays)
    assert_allclose(dist.local_mean.compute(scheduler="sync"), local.local_mean, **tol())


def test_import_error_names_the_extra(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "avicore.distributed" or m.startswith("avicore.distributed.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"install the 'dask' extra, pip install -e \"\.\[dask\]\""):
        import avicore.distributed  # noqa: F401


@pytest.mark.parametrize("batch_size", [None, 100])
def test_a_diverging_fit_stops_where_the_in_process_fit_stops(dask_client, batch_size):
    # The workers apply each local Adam step at the start of the next call: a divergence must still end the fit at
    # the same iteration, with the same best state, as in one process.
    from avicore.optim import DivergenceWarning

    model = NonlinearHierarchical()
    x = model.simulate(600, seed=1).x
    fvi = avicore.FVI(model, n_samples=2, backend="cython", batch_size=batch_size, elbo_samples=20)
    with pytest.warns(DivergenceWarning) as local_warning:
        local = fvi.fit(x, n_iter=200, lr=5.0, seed=3)
    with pytest.warns(DivergenceWarning) as dist_warning:
        dist = fvi.fit(da.from_array(x, chunks=(150, 1)), n_iter=200, lr=5.0, seed=3, client=dask_client)
    assert dist.stop_reason == local.stop_reason == "diverged"
    assert (dist.n_iter, dist.state_iteration) == (local.n_iter, local.state_iteration)
    assert str(dist_warning[0].message) == str(local_warning[0].message)
    assert_allclose(dist.trace, local.trace, **tol())
    assert_allclose(dask_client.compute(dist.local_mean).result(), local.local_mean, **tol())
    assert_allclose(dist.global_mean, local.global_mean, **tol())


def test_amortization_gap_of_distributed_fits_equals_in_process(data, dask_client, tmp_path):
    model, x, dx = data
    fvi = avicore.FVI(model, n_samples=3, backend="cython", elbo_samples=20)
    avi = avicore.AVI(model, Polynomial(1), n_samples=3, backend="cython", elbo_samples=20)
    local = [fvi.fit(x, n_iter=30, lr=0.05, seed=2), avi.fit(x, n_iter=30, lr=0.05, seed=2)]
    dist = [fvi.fit(dx, n_iter=30, lr=0.05, seed=2, client=dask_client),
            avi.fit(dx, n_iter=30, lr=0.05, seed=2, client=dask_client)]
    with dask_client.as_current(), pytest.warns(avicore.optim.ConvergenceWarning):  # 30 iterations: unconverged
        gap = avicore.amortization_gap(*dist, n_samples=50)
    with pytest.warns(avicore.optim.ConvergenceWarning):
        ref = avicore.amortization_gap(*local, n_samples=50)
    assert_allclose([gap.gap, gap.se, gap.elbo_fvi.elbo, gap.elbo_avi.elbo],
                    [ref.gap, ref.se, ref.elbo_fvi.elbo, ref.elbo_avi.elbo], **tol())
    with pytest.raises(TypeError, match="save needs a result held in memory; got a distributed fit's result"):
        dist[0].save(tmp_path / "fit.npz")
