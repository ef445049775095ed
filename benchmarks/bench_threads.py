"""How avicore's CPU work scales with threads: forward-backward, an F-VI step and an A-VI step at 1, 2, 4, … cores.

Cases (issue 21), each timed at every thread count 1, 2, 4, … up to the CPUs this process may use
(``avicore.set_num_threads(n)``, backend ``"cython"``):

1. forward-backward of 1,000 ragged sequences (500–1,500 steps each), K = 10 states, through the public
   :func:`avicore.hmm.forward_backward` (validation included);
2. one F-VI iteration on the linear hierarchical model, N = 10⁶ rows, S = 1 sample (the fused pass + Adam);
3. one A-VI iteration on the nonlinear hierarchical model with an ``MLP(32)`` encoder, N = 10⁴, S = 100.

An iteration's time is the median of the per-iteration differences of a fit's own timestamps
(``VIResult.trace_seconds``, the first two iterations left out), so it includes everything the engine does each
iteration; forward-backward is the minimum over repeats. Speed-ups are against one thread in the same run.

The machine's streaming bandwidth is measured in the same run by a STREAM-like triad a = b + s·c (Numba, parallel,
arrays far larger than the caches, best of several repeats, 24 bytes per element: write-allocate not counted) at
each thread count. The F-VI step is memory-bound: it must read xₙ, mₙ, log sₙ and their four Adam moments and
write the new mₙ, log sₙ and moments — 104 bytes a row, counted the same way — so the table prints the bandwidth
it reaches and its fraction of the triad's (1.0 = at the streaming floor).

Peers, at all cores only (``pip install avicore[bench]``): PyTorch CPU float32 and float64 for the A-VI step and
NumPyro (float64, ``lax.fori_loop``) for the F-VI step, the implementations of ``bench_vi.py``; a peer that does not
import is reported with the reason.

Run: ``python benchmarks/bench_threads.py`` (``--quick``: smaller sizes, checks that the script runs).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import Timing, base_parser, format_seconds, machine_line

import avicore
from avicore.encoders import MLP
from avicore.models import LinearHierarchical, NonlinearHierarchical

#: Bytes an F-VI iteration must move per row (STREAM convention): read x, m, log s and the four moments (7 × 8),
#: write m, log s and the four moments (6 × 8).
FVI_BYTES_PER_ROW = 104


def thread_counts() -> list[int]:
    """1, 2, 4, … up to the CPUs available, and that number itself."""
    cpus = avicore._config.available_cpus()
    counts = [1]
    while counts[-1] * 2 <= cpus:
        counts.append(counts[-1] * 2)
    if counts[-1] != cpus:
        counts.append(cpus)
    return counts


# ---------------------------------------------------------------------------------------------------------------
# STREAM-like triad
# ---------------------------------------------------------------------------------------------------------------

def triad_bandwidth(n_elements: int, n_threads: int, repeats: int) -> float:
    """Best bytes/second of a[i] = b[i] + s·c[i] over ``n_elements`` float64 on ``n_threads`` Numba threads."""
    import numba

    kernel = _triad_kernel()
    a, b, c = np.empty(n_elements), np.full(n_elements, 1.0), np.full(n_elements, 2.0)
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    kernel(a, b, c, 3.0)  # compile, and touch every page
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        kernel(a, b, c, 3.0)
        best = min(best, time.perf_counter() - t0)
    return 24.0 * n_elements / best


_TRIAD = None


def _triad_kernel():
    global _TRIAD
    if _TRIAD is None:
        from numba import njit, prange

        @njit(parallel=True, cache=False)
        def triad(a, b, c, s):  # pragma: no cover - compiled
            for i in prange(a.shape[0]):
                a[i] = b[i] + s * c[i]

        _TRIAD = triad
    return _TRIAD


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------

def hmm_case(n_sequences: int, n_states: int, repeats: int):
    """A closure timing forward-backward of ragged sequences (500–1,500 steps) through the public API."""
    from avicore.hmm import forward_backward

    rng = np.random.default_rng(0)
    lengths = rng.integers(500, 1501, size=n_sequences)
    log_lik = rng.normal(size=(int(lengths.sum()), n_states))
    trans = rng.dirichlet(np.ones(n_states), size=n_states)
    log_trans, log_start = np.log(trans), np.full(n_states, -np.log(n_states))

    def run() -> float:
        forward_backward(log_lik, log_trans, log_start, lengths, backend="cython")  # warm-up
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            forward_backward(log_lik, log_trans, log_start, lengths, backend="cython")
            best = min(best, time.perf_counter() - t0)
        return best

    return run


def step_time(engine, x: np.ndarray, n_iter: int) -> float:
    """Median seconds per iteration of ``engine.fit`` from its own timestamps (first two iterations left out)."""
    res = engine.fit(x, n_iter=n_iter, lr=1e-3, seed=0)
    return float(np.median(np.diff(res.trace_seconds[1:])))


def fvi_case(n_obs: int, n_iter: int):
    model = LinearHierarchical()
    x = model.simulate(n_obs, seed=0).x
    engine = avicore.FVI(model, n_samples=1, backend="cython", elbo_samples=2)
    return (lambda: step_time(engine, x, n_iter)), x


def avi_case(n_obs: int, n_samples: int, n_iter: int):
    model = NonlinearHierarchical()
    x = model.simulate(n_obs, seed=0).x
    engine = avicore.AVI(model, MLP(32), n_samples=n_samples, backend="cython", elbo_samples=2)
    return (lambda: step_time(engine, x, n_iter)), x


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def print_scaling(title: str, counts: list[int], times: dict[int, float], bandwidth: dict[int, float] | None = None,
                  bytes_per_step: float | None = None, peers: list[tuple[str, Timing | None, str]] = ()) -> None:
    print(f"\n## {title}")
    extra = " | GB/s reached | of triad" if bytes_per_step else ""
    print(f"| threads | time | speed-up vs 1{extra} |")
    print("|---|---|---|" + ("---|---|" if bytes_per_step else ""))
    for n in counts:
        row = f"| {n} | {format_seconds(times[n])} | {times[1] / times[n]:.2f}x"
        if bytes_per_step:
            reached = bytes_per_step / times[n]
            row += f" | {reached / 1e9:.1f} | {reached / bandwidth[n]:.2f}"
        print(row + " |")
    if bytes_per_step:
        print(f"bytes per step (must move): {bytes_per_step / 1e6:.0f} MB; streaming floor at {counts[-1]} threads: "
              f"{format_seconds(bytes_per_step / bandwidth[counts[-1]])}")
    for label, timing, why in peers:
        if timing is None:
            print(f"peer {label}: unavailable ({why})")
        else:
            print(f"peer {timing.label} at {counts[-1]} threads: {format_seconds(timing.min)} "
                  f"(avicore {timing.min / times[counts[-1]]:.2f}x faster)")
    sys.stdout.flush()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-peers", action="store_true", help="leave out PyTorch and NumPyro")
    args = parser.parse_args()
    quick, repeats = args.quick, args.repeats
    counts = thread_counts()
    print(f"# bench_threads ({machine_line()}; thread counts {counts}; load average {os.getloadavg()[0]:.1f} at "
          f"the start: other work on the cores makes every multi-thread time slower)")

    n_triad = 1 << (23 if quick else 25)
    bandwidth = {}
    for n in counts:
        bandwidth[n] = triad_bandwidth(n_triad, n, max(3, repeats))
    print("\n## STREAM-like triad a = b + s·c (" + f"{n_triad * 24 / 1e6:.0f} MB per pass)")
    print("| threads | GB/s |\n|---|---|")
    for n in counts:
        print(f"| {n} | {bandwidth[n] / 1e9:.1f} |")

    n_seq = 100 if quick else 1000
    n_fvi = 10 ** 5 if quick else 10 ** 6
    n_avi, s_avi = (10 ** 3, 10) if quick else (10 ** 4, 100)
    n_iter = 20 if quick else 60
    cases = [
        (f"forward-backward, {n_seq} ragged sequences (500-1,500 steps), K=10 (public API)",
         hmm_case(n_seq, 10, repeats), None),
        (f"F-VI step, linear, N={n_fvi:.0e}, S=1", fvi_case(n_fvi, n_iter)[0], FVI_BYTES_PER_ROW * n_fvi),
        (f"A-VI step, MLP(32), nonlinear, N={n_avi:.0e}, S={s_avi}", avi_case(n_avi, s_avi, n_iter)[0], None),
    ]
    results = {}
    for title, run, nbytes in cases:
        times = dict.fromkeys(counts, np.inf)
        for _ in range(max(1, repeats if "step" in title else 1)):  # thread counts interleaved: load drifts
            for n in counts:
                avicore.set_num_threads(n)
                times[n] = min(times[n], run())
        results[title] = (times, nbytes)

    peers: dict[str, list] = {title: [] for title, _, _ in cases}
    if not args.no_peers:
        from bench_vi import numpyro_step, torch_avi_step

        avicore.set_num_threads(counts[-1])
        fvi_title, avi_title = cases[1][0], cases[2][0]
        x_fvi = LinearHierarchical().simulate(n_fvi, seed=0).x
        timing, why = numpyro_step(x_fvi, 1, n_iter, repeats)
        peers[fvi_title].append(("NumPyro", timing, why))
        x_avi = NonlinearHierarchical().simulate(n_avi, seed=0).x
        for dtype_name in ("float32", "float64"):
            timing, why = torch_avi_step(x_avi, 32, s_avi, n_iter, repeats, dtype_name)
            peers[avi_title].append((f"PyTorch {dtype_name}", timing, why))
    for title, _, _ in cases:
        times, nbytes = results[title]
        print_scaling(title, counts, times, bandwidth if nbytes else None, nbytes, peers[title])
    print(f"\n(peers at all cores; speed-ups against one thread in this run; load average {os.getloadavg()[0]:.1f} "
          f"at the end)")


if __name__ == "__main__":
    main()
