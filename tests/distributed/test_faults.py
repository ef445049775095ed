"""A worker lost mid-fit stops the fit with an error naming the iteration and chunks; checkpoints resume exactly."""

from __future__ import annotations

import os
import signal

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose

import avicore
from avicore.distributed import WorkerLostError
from avicore.encoders import Polynomial
from avicore.models import LinearHierarchical

from ..tolerances import tol


@pytest.fixture(scope="module")
def data():
    model = LinearHierarchical()
    x = model.simulate(600, seed=21).x
    return model, x, da.from_array(x, chunks=(150, 1))


def _kill_worker_at(client, iteration):
    """A callback that SIGKILLs the process of the worker holding the last chunks at ``iteration``."""
    pids = client.run(os.getpid)
    victim = sorted(pids)[-1]

    def callback(state):
        if state.iteration == iteration:
            os.kill(pids[victim], signal.SIGKILL)

    return callback


def test_killed_worker_names_iteration_and_chunks_and_checkpoint_resumes_exactly(data, dask_client, tmp_path):
    model, _, dx = data
    fvi = avicore.FVI(model, n_samples=2, backend="cython", batch_size=128, elbo_samples=20)
    whole = fvi.fit(dx, n_iter=30, lr=0.05, seed=8, client=dask_client)
    whole_local_mean = dask_client.compute(whole.local_mean).result()  # it lives on the workers: read it first
    with pytest.raises(WorkerLostError, match=r"was lost at iteration 13; it held chunks 2–3 \(rows 300–599\)") as err:
        fvi.fit(dx, n_iter=30, lr=0.05, seed=8, client=dask_client, callback=_kill_worker_at(dask_client, 13),
                checkpoint_dir=tmp_path, checkpoint_every=5)
    assert err.value.iteration == 13 and err.value.chunks == (2, 3)
    dask_client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    resumed = fvi.fit(dx, n_iter=30, lr=0.05, seed=8, client=dask_client, checkpoint_dir=tmp_path,
                      checkpoint_every=5)
    assert_allclose(resumed.trace, whole.trace, **tol())
    assert_allclose(resumed.global_mean, whole.global_mean, **tol())
    assert_allclose(dask_client.compute(resumed.local_mean).result(), whole_local_mean, **tol())
    assert resumed.elbo == pytest.approx(whole.elbo, rel=1e-12)
    assert np.all(np.diff(resumed.trace_seconds) >= 0)


def test_full_batch_fvi_checkpoint_resumes_exactly(data, dask_client, tmp_path):
    model, _, dx = data
    fvi = avicore.FVI(model, n_samples=2, backend="cython", elbo_samples=20)
    whole = fvi.fit(dx, n_iter=20, lr=0.05, seed=8, client=dask_client)
    fvi.fit(dx, n_iter=20, lr=0.05, seed=8, client=dask_client, checkpoint_dir=tmp_path, checkpoint_every=3,
            callback=lambda state: state.iteration == 10)  # interrupted after iteration 10: checkpoint at 9
    resumed = fvi.fit(dx, n_iter=20, lr=0.05, seed=8, client=dask_client, checkpoint_dir=tmp_path, checkpoint_every=3)
    assert_allclose(resumed.trace, whole.trace, **tol())
    assert_allclose(dask_client.compute(resumed.local_sd).result(), dask_client.compute(whole.local_sd).result(),
                    **tol())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chunk-00000-it18.npz", "chunk-00001-it18.npz", "chunk-00002-it18.npz", "chunk-00003-it18.npz",
        "fit-state.pkl"]  # only the latest checkpoint is kept


def test_avi_checkpoint_resumes_exactly(data, dask_client, tmp_path):
    model, _, dx = data
    avi = avicore.AVI(model, Polynomial(1), n_samples=2, backend="cython", elbo_samples=20)
    whole = avi.fit(dx, n_iter=20, lr=0.05, seed=8, client=dask_client)
    avi.fit(dx, n_iter=20, lr=0.05, seed=8, client=dask_client, checkpoint_dir=tmp_path, checkpoint_every=4,
            callback=lambda state: state.iteration == 10)  # interrupted after iteration 10: checkpoint at 8
    with pytest.raises(ValueError, match="n_iter must be the checkpointed fit's n_iter=20 to resume it; got 25"):
        avi.fit(dx, n_iter=25, lr=0.05, seed=8, client=dask_client, checkpoint_dir=tmp_path, checkpoint_every=4)
    resumed = avi.fit(dx, n_iter=20, lr=0.05, seed=8, client=dask_client, checkpoint_dir=tmp_path, checkpoint_every=4)
    assert_allclose(resumed.trace, whole.trace, **tol())
    assert_allclose(resumed.encoder_params, whole.encoder_params, **tol())


def test_checkpoint_of_another_fit_is_refused(data, dask_client, tmp_path):
    model, _, dx = data
    fvi = avicore.FVI(model, n_samples=2, backend="cython", elbo_samples=20)
    fvi.fit(dx, n_iter=4, lr=0.05, seed=1, client=dask_client, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(ValueError, match=r"checkpoint_dir must hold this fit's checkpoint or none; .* with other "
                                         r"seed \(seed=1\)"):
        fvi.fit(dx, n_iter=4, lr=0.05, seed=2, client=dask_client, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(ValueError, match="checkpoint_dir and checkpoint_every must be given together"):
        fvi.fit(dx, n_iter=4, lr=0.05, seed=2, client=dask_client, checkpoint_dir=tmp_path)
