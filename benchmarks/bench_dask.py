"""avicore on a Dask cluster (avicore.distributed): equality with the in-process fit, and what distribution costs.

1. Equality: distributed F-VI and A-VI fits (linear model, 2-worker LocalCluster, full batch and minibatches) against
   the same fits in one process with the same seed: the largest difference in any parameter, trace entry and ELBO.
   Goal ≤ 1e-10.
2. Overhead: the linear model's F-VI iteration (S = 1) on a LocalCluster of 2 worker processes × 1 thread against
   the same fit in this process on 2 threads (``avicore.set_num_threads(2)``), at large N (10⁶, 10⁷; quick 10⁵,
   10⁶). Time per iteration from the fit's own timestamps (``VIResult.trace_seconds``; the first iteration
   excluded). Goal: within 1.5× at N = 10⁷.
3. The fixed per-iteration overhead (the N → 0 limit): the same fit with 64 rows per worker. Goal ≤ 5 ms.
4. Bytes moved per iteration: the pickled size of the message each worker receives and of each chunk's answer
   (Dask's own framing adds a few hundred bytes per message), against the chunk's compute time — what a real cluster
   would add is a network round trip per iteration plus these bytes over its links.

5. ``--scale``: the width-vs-n experiment's fits at N = 10⁶ (nonlinear model, S = 10; F-VI and A-VI with a
   two-layer MLP(8) encoder), distributed on the 2-worker cluster and in one process on 2 threads: seconds per
   iteration, and the projected wall time of the experiment's ladder at N = 10⁶ and 10⁷ (2,000 iterations a fit).

Run: ``python benchmarks/bench_dask.py`` (``--quick`` for small sizes; ``--scale`` adds part 5). Needs the dask extra
(``pip install -e ".[dask]"``).
"""

from __future__ import annotations

import logging
import os
import pickle
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import Timing, base_parser, format_seconds, machine_line, print_table

import avicore
from avicore.encoders import Polynomial
from avicore.models import LinearHierarchical
from avicore.optim import ConvergenceWarning


def to_cluster(client, x: np.ndarray, rows: int):
    """x as a dask array whose chunks were scattered to the workers (no 80 MB task graph)."""
    import dask.array as da

    parts = [x[i:i + rows] for i in range(0, x.shape[0], rows)]
    futures = client.scatter(parts)
    return da.concatenate([da.from_delayed(f, shape=p.shape, dtype=p.dtype) for f, p in zip(futures, parts)])


def per_iteration(res) -> float:
    """Median seconds per iteration from the fit's timestamps (first iteration excluded)."""
    return float(statistics.median(np.diff(res.trace_seconds)))


def equality(client) -> None:
    import dask.array as da

    model = LinearHierarchical()
    x = model.simulate(20_000, seed=0).x
    dx = da.from_array(x, chunks=(3_000, 1))
    print("\n## 1. Distributed == in-process (20,000 rows in 7 chunks on 2 workers, 100 iterations)  (goal: ≤ 1e-10)")
    print("| fit | batch | max |Δ| parameters | max relative |Δ| trace | relative |Δ| ELBO |")
    print("|---|---|---|---|---|")
    for label, engine in (("F-VI", lambda b: avicore.FVI(model, n_samples=5, batch_size=b, elbo_samples=200)),
                          ("A-VI Polynomial(2)", lambda b: avicore.AVI(model, Polynomial(2), n_samples=5,
                                                                       batch_size=b, elbo_samples=200))):
        for batch in (None, 2_500):
            local = engine(batch).fit(x, n_iter=100, lr=0.02, seed=1)
            dist = engine(batch).fit(dx, n_iter=100, lr=0.02, seed=1, client=client)
            diffs = [np.max(np.abs(dist.global_mean - local.global_mean)),
                     np.max(np.abs(dist.global_sd - local.global_sd)),
                     np.max(np.abs(client.compute(dist.local_mean).result() - local.local_mean)),
                     np.max(np.abs(client.compute(dist.local_sd).result() - local.local_sd))]
            if local.encoder_params is not None:
                diffs.append(np.max(np.abs(dist.encoder_params - local.encoder_params)))
            print(f"| {label} | {batch or 'full'} | {max(diffs):.1e} | "
                  f"{np.max(np.abs(dist.trace - local.trace) / np.abs(local.trace)):.1e} | "
                  f"{abs(dist.elbo - local.elbo) / abs(local.elbo):.1e} |")


def overhead(client, sizes: list[int], n_iter: int, repeats: int) -> dict:

    model = LinearHierarchical()
    rows, out = [], {}
    for n in sizes:
        x = model.simulate(n, seed=0).x
        dx = to_cluster(client, x, -(-n // 2))  # one chunk per worker
        fvi = avicore.FVI(model, n_samples=1, backend="cython", elbo_samples=2)
        avicore.set_num_threads(2)
        local = [per_iteration(fvi.fit(x, n_iter=n_iter, lr=1e-3, seed=r)) for r in range(repeats)]
        dist = [per_iteration(fvi.fit(dx, n_iter=n_iter, lr=1e-3, seed=r, client=client)) for r in range(repeats)]
        anchor, cand = Timing("1 process, 2 threads", tuple(local)), Timing("2 workers x 1 thread", tuple(dist))
        rows.append((f"F-VI linear, S = 1, N = {n:,}", cand, anchor))
        out[n] = (cand, anchor)
    print_table("2./3. Seconds per F-VI iteration: 2-worker LocalCluster vs one process on 2 threads", rows,
                goal="within 1.5x at N = 10^7; fixed overhead (N -> 0) <= 5 ms")
    return out


def bytes_moved(n_samples: int = 1, global_dim: int = 1, n_chunks: int = 2) -> tuple[int, int]:
    """(bytes to one worker, bytes back from one chunk) per F-VI iteration, as pickled."""
    theta = np.zeros((n_samples, global_dim))
    message = (False, 1e-3, [None], theta, 12345, 17, 1.0)
    answer = (np.zeros(n_samples), np.zeros((n_samples, global_dim)), 0.0, 0.0, 0.0)
    return len(pickle.dumps(message, protocol=5)), len(pickle.dumps([answer], protocol=5))


def scale(client, n_obs: int = 1_000_000, n_iter: int = 8) -> None:
    """Part 5: seconds per iteration of the width-vs-n fits at N = n_obs, and the ladder's projected wall time."""

    from avicore.encoders import MLP
    from avicore.models import NonlinearHierarchical

    model = NonlinearHierarchical()
    x = model.simulate(n_obs, seed=0).x
    dx = to_cluster(client, x, -(-n_obs // 2))
    avicore.set_num_threads(2)
    engines = {"F-VI": avicore.FVI(model, n_samples=10, elbo_samples=2),
               "A-VI MLP(8)": avicore.AVI(model, MLP(8, depth=2), n_samples=10, elbo_samples=2)}
    print(f"\n## 5. width-vs-n fits at N = {n_obs:,} (S = 10): seconds per iteration")
    print("| fit | 2 workers x 1 thread | 1 process, 2 threads |")
    print("|---|---|---|")
    per_iter = {}
    for label, engine in engines.items():
        dist = per_iteration(engine.fit(dx, n_iter=n_iter, lr=1e-3, seed=0, client=client))
        local = per_iteration(engine.fit(x, n_iter=n_iter, lr=1e-3, seed=0))
        per_iter[label] = min(dist, local)
        print(f"| {label} | {format_seconds(dist)} | {format_seconds(local)} |")
    # The ladder stopping at width 8 (as at N = 10^3-10^4): F-VI + MLP(1, 2, 4, 8), 2,000 iterations each, per
    # seed; MLP(1-4) cost about MLP(8) or less, so 4 x MLP(8) bounds them. 2 seeds share the 2 cores.
    seed_seconds = 2_000 * (per_iter["F-VI"] + 4 * per_iter["A-VI MLP(8)"])
    for n in (n_obs, 10 * n_obs):
        factor = n / n_obs
        print(f"projected width-vs-n at N = {n:,}: ~{seed_seconds * factor / 3600:.1f} h per seed on the 2 cores "
              f"(2 seeds: ~{2 * seed_seconds * factor / 3600:.1f} h), F-VI + MLP(1, 2, 4, 8) x 2,000 iterations")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="part 5: the width-vs-n fits at N = 10^6")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)  # short timing fits: their convergence is not the point
    from distributed import Client, LocalCluster

    print(f"# bench_dask — {machine_line()}, dask {__import__('dask').__version__}")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster, set_as_default=False)
    try:
        equality(client)
        sizes = [128, 100_000, 1_000_000] if args.quick else [128, 1_000_000, 10_000_000]
        n_iter = 30 if args.quick else 60
        t0 = time.perf_counter()
        timings = overhead(client, sizes, n_iter, args.repeats)
        fixed = timings[128][0].median
        print(f"\nfixed per-iteration overhead (N = 128, 64 rows per worker): {format_seconds(fixed)} "
              f"(in-process at the same N: {format_seconds(timings[128][1].median)})")
        big = sizes[-1]
        cand, anchor = timings[big]
        print(f"N = {big:,}: distributed / in-process time per iteration = {cand.median / anchor.median:.2f}x "
              f"(goal <= 1.5x at 10^7)")
        to_worker, from_chunk = bytes_moved()
        per_row = max(cand.median - fixed, 0.0) / (big / 2)
        print(f"bytes per iteration: {to_worker} B to each worker, {from_chunk} B back from each chunk "
              f"(F-VI, S = 1, dim θ = 1; S·(1 + dim θ)·8 B of sums grow with S, nothing grows with N); "
              f"chunk compute ≈ {per_row * 1e9:.1f} ns per row on one worker thread "
              f"({format_seconds(per_row * big / 2)} for a chunk of {big // 2:,} rows)")
        print(f"(overhead part took {time.perf_counter() - t0:.0f} s)")
        if args.scale:
            scale(client)
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
