"""One LocalCluster of 2 worker processes (1 thread each) for every distributed test of the session."""

from __future__ import annotations

import logging
import warnings

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """A ``distributed.Client`` on 2 local worker processes; not the default client (tests pass it explicitly)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster, set_as_default=False)
    yield client
    with warnings.catch_warnings():
        # Shutting a cluster down may report its workers' closing comms; they say nothing about the results.
        warnings.filterwarnings("ignore", module="distributed")
        client.close()
        cluster.close()
