"""The experiment runner's seeds as Dask tasks (``python -m avicore.experiments NAME --dask ADDRESS|local``)."""

from __future__ import annotations

import logging
from collections.abc import Callable


def _seed_task(module_name: str, config: dict, seed: int) -> dict:
    """One seed on a worker, with the worker's threads (the in-process runner's ``_run_one``)."""
    from .._config import set_num_threads
    from ..experiments._runner import _run_one
    from ._cluster import worker_threads

    set_num_threads(worker_threads())
    return _run_one(module_name, config, seed, False)


def run_seeds(module_name: str, config: dict, seeds: list[int], address: str, jobs: int,
              keep: Callable[[dict], None], log: Callable[[str], None]) -> None:
    """Submit every seed, keep each result as it arrives; ``address`` "local" starts a LocalCluster for the run:
    ``jobs`` threads in all, as one process per seed when there are fewer seeds than jobs (a single large seed then
    runs on every thread: results do not depend on the thread count), else ``jobs`` processes of 1 thread."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if address == "local":
        n_workers = max(1, min(jobs, len(seeds)))
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=max(1, jobs // n_workers), processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(cluster, set_as_default=False)
    else:
        client = Client(address, set_as_default=False)
    try:
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        log(f"{len(seeds)} seed(s) as Dask tasks on {n_workers} worker(s) at {client.scheduler.address}")
        with client.as_current():
            futures = [client.submit(_seed_task, module_name, config, seed, pure=False) for seed in seeds]
            for done_count, future in enumerate(as_completed(futures), start=1):
                result = future.result()
                log(f"seed {result['seed'] + 1} done ({done_count}/{len(seeds)}, {result['seconds']:.1f} s)")
                keep(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
