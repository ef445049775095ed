"""Benchmark avicore.chain.smoother (Kalman filter + RTS smoother) against what a user would write otherwise.

1. Scalar Gaussian random walk, T = 10⁶ (goal: ≥ 3× faster than SciPy): the posterior means and variances are the
   solution of the tridiagonal system J μ = h and the diagonal of J⁻¹. Anchors, all checked to give the same answers:
   - ``scipy.linalg.solveh_banded`` for μ plus diag(J⁻¹) from the banded Cholesky factor by the standard O(T)
     recursion Σ_tt = 1/l_t² + (s_t/l_t)² Σ_{t+1,t+1}, vectorised in NumPy by recursive doubling (log₂ passes
     until the products underflow) — the fastest form of the recursion NumPy allows;
   - the same with one factorisation only (``cholesky_banded`` + ``cho_solve_banded``), the fairest SciPy version;
   - the same recursion as a plain Python loop (what many users would write; one repeat).
2. 1,000 ragged sequences, d = 4, p = 2: 2 threads vs 1 (goal ≥ 1.7×), Cython and Numba. The compiled kernels
   copy covariance steps that repeat bitwise (the Riccati recursions' floating-point fixed point or short cycle;
   see avicore/kernels/chain.py); rows marked ``reuse=False`` recompute every step, for scale.
3. dynamax's ``lgssm_smoother`` (JAX, CPU, float64, ``vmap`` over sequences) when it is installed. dynamax has no
   ragged batches, so this comparison uses 1,000 equal-length sequences of the same total size.

Run: ``.venv/bin/python benchmarks/bench_chain.py`` (``--quick`` for small sizes).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from scipy.linalg import cho_solve_banded, cholesky_banded, solveh_banded

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import Timing, base_parser, machine_line, measure, print_table

import avicore
from avicore import chain
from avicore.kernels import chain as kchain

# ---------------------------------------------------------------------------------------------------------------
# 1. scalar random walk
# ---------------------------------------------------------------------------------------------------------------

def random_walk_precision(T: int, step: float = 1.0, obs: float = 1.0, init: float = 1.0) -> np.ndarray:
    """Lower banded storage (2, T) of the posterior precision J of the random walk."""
    q, r, p0 = step ** 2, obs ** 2, init ** 2
    ab = np.empty((2, T))
    ab[0] = 1.0 / r + 2.0 / q
    ab[0, 0] = 1.0 / r + 1.0 / p0 + 1.0 / q
    ab[0, -1] = 1.0 / r + 1.0 / q
    ab[1, :-1] = -1.0 / q
    ab[1, -1] = 0.0
    return ab


def inverse_diagonal_vectorised(factor: np.ndarray) -> np.ndarray:
    """diag(J⁻¹) from the lower banded Cholesky factor of a tridiagonal J, by recursive doubling.

    y_t = a_t + b_t y_{t+1} with a_t = 1/l_t², b_t = (s_t/l_t)²; each pass composes the affine maps of
    neighbours 2^k apart. All terms are positive (no cancellation); it stops once every product underflows.
    """
    diag, sub = factor[0], factor[1, :-1]
    y = 1.0 / diag ** 2
    b = np.zeros_like(y)
    b[:-1] = (sub / diag[:-1]) ** 2
    k = 1
    while k < y.size and b.any():
        y[:-k] += b[:-k] * y[k:]
        b[:-k] *= b[k:]
        b[-k:] = 0.0
        k *= 2
    return y


def inverse_diagonal_loop(factor: np.ndarray) -> np.ndarray:
    """The same recursion as a plain Python loop."""
    diag, sub = factor[0].tolist(), factor[1].tolist()
    T = len(diag)
    out = [0.0] * T
    out[-1] = 1.0 / diag[-1] ** 2
    for t in range(T - 2, -1, -1):
        lam = sub[t] / diag[t]
        out[t] = 1.0 / diag[t] ** 2 + lam * lam * out[t + 1]
    return np.array(out)


def scipy_solveh(x: np.ndarray, ab: np.ndarray, recursion=inverse_diagonal_vectorised):
    mean = solveh_banded(ab, x, lower=True)  # h = x / r with r = 1 and m0 = 0
    return mean, recursion(cholesky_banded(ab, lower=True))


def scipy_one_factorisation(x: np.ndarray, ab: np.ndarray):
    factor = cholesky_banded(ab, lower=True)
    return cho_solve_banded((factor, True), x), inverse_diagonal_vectorised(factor)


def bench_scalar(T: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal(T)) + rng.standard_normal(T)
    ab = random_walk_precision(T)

    def ours(backend: str):
        return lambda: chain.smoother(x, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, backend=backend)

    res = ours("cython")()
    for label, (mean, var) in [("solveh_banded", scipy_solveh(x, ab)),
                               ("cho_solve_banded", scipy_one_factorisation(x, ab))]:
        np.testing.assert_allclose(res.means[:, 0], mean, rtol=0, atol=1e-8, err_msg=label)
        np.testing.assert_allclose(res.covariances[:, 0, 0], var, rtol=1e-10, err_msg=label)
    np.testing.assert_allclose(ours("numba")().means, res.means, rtol=1e-10, atol=1e-10)
    print(f"scalar random walk T={T}: same means (atol 1e-8) and variances (rtol 1e-10) as SciPy: checked")

    cy = measure("chain.smoother cython", ours("cython"), repeats=repeats)
    nb = measure("chain.smoother numba", ours("numba"), repeats=repeats)
    a1 = measure("solveh_banded + diag(J^-1) vec", lambda: scipy_solveh(x, ab), repeats=repeats)
    a2 = measure("cholesky_banded+cho_solve+vec", lambda: scipy_one_factorisation(x, ab), repeats=repeats)
    a3 = measure("solveh_banded + diag loop", lambda: scipy_solveh(x, ab, inverse_diagonal_loop), repeats=1,
                 warmup=0)
    threads = avicore.get_num_threads()
    print_table(f"Scalar random walk, T = {T} (means + variances; avicore also returns cross-covariances and "
                f"log p(x)), {threads} threads available", [
                    ("vs solveh_banded + vectorised recursion", cy, a1),
                    ("vs one banded factorisation + vectorised", cy, a2),
                    ("vs solveh_banded + Python-loop recursion", cy, a3),
                    ("numba vs one banded factorisation", nb, a2),
                ], goal=">= 3x vs the fastest SciPy anchor")


# ---------------------------------------------------------------------------------------------------------------
# 2. ragged batch, d = 4: threads
# ---------------------------------------------------------------------------------------------------------------

def lgssm_params(d: int, p: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    A *= 0.95 / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.normal(size=(d, d))
    return {"A": A, "Q": 0.1 * np.eye(d) + 0.05 * B @ B.T, "C": rng.normal(size=(p, d)), "R": 0.5 * np.eye(p),
            "m0": np.zeros(d), "P0": np.eye(d)}


def simulate_batch(params: dict[str, np.ndarray], lengths: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d, p = params["A"].shape[0], params["C"].shape[0]
    n = int(lengths.sum())
    z = np.zeros((n, d))
    w = rng.standard_normal((n, d)) @ np.linalg.cholesky(params["Q"]).T
    start = np.zeros(n, dtype=bool)
    start[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    for t in range(n):  # vectorising over sequences is not worth it for a benchmark's data
        z[t] = w[t] if start[t] else params["A"] @ z[t - 1] + w[t]
    return z @ params["C"].T + np.sqrt(0.5) * rng.standard_normal((n, p))


def with_threads(n: int, fn):
    def run():
        old = avicore.get_num_threads()
        avicore.set_num_threads(n)
        try:
            return fn()
        finally:
            avicore.set_num_threads(old)
    return run


def recompute_every_step(x: np.ndarray, params: dict[str, np.ndarray], lengths: np.ndarray, backend: str):
    """The compiled kernel with the copying of repeated covariance steps turned off (same bits, more work)."""
    prm = chain.check_params(**params)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return kchain.run_smoother(x, offsets, prm.A, prm.Q, prm.C, prm.R, prm.m0, prm.P0, backend, reuse=False)


def measure_interleaved(fns: dict[str, object], repeats: int) -> dict[str, Timing]:
    """Time several callables in alternation (after one warm-up each), so that load from other processes on a
    shared machine falls on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(max(1, repeats)):
        for label, fn in fns.items():
            times[label].extend(measure(label, fn, repeats=1, warmup=0).times)
    return {label: Timing(label, tuple(t)) for label, t in times.items()}


def bench_threads(n_seq: int, low: int, high: int, repeats: int) -> None:
    params = lgssm_params(4, 2, 1)
    lengths = np.random.default_rng(2).integers(low, high + 1, size=n_seq)
    x = simulate_batch(params, lengths, 3)
    rows = []
    for backend in ("cython", "numba"):
        def run(backend=backend):
            return chain.smoother(x, **params, lengths=lengths, backend=backend)

        def run_full(backend=backend):
            return recompute_every_step(x, params, lengths, backend)

        t = measure_interleaved({f"{backend} 2 threads": with_threads(2, run),
                                 f"{backend} 1 thread": with_threads(1, run),
                                 f"{backend} 2t, recompute all": with_threads(2, run_full),
                                 f"{backend} 1t, recompute all": with_threads(1, run_full)}, repeats)
        rows.append((f"{backend}: 2 threads vs 1", t[f"{backend} 2 threads"], t[f"{backend} 1 thread"]))
        rows.append((f"{backend}, reuse=False: 2 threads vs 1", t[f"{backend} 2t, recompute all"],
                     t[f"{backend} 1t, recompute all"]))
    np.testing.assert_array_equal(with_threads(1, lambda: chain.smoother(x, **params, lengths=lengths,
                                                                         backend="cython"))().means,
                                  with_threads(2, lambda: chain.smoother(x, **params, lengths=lengths,
                                                                         backend="cython"))().means)
    print_table(f"{n_seq} ragged sequences (lengths {low}..{high}, {int(lengths.sum())} steps), d = 4, p = 2",
                rows, goal=">= 1.7x with 2 threads")
    # Wall-clock ratios need two idle cores; the CPU time a call consumes (all threads) shows the parallel
    # overhead whatever else runs: with no overhead it is the same for 1 and 2 threads.
    for backend in ("cython", "numba"):
        cpu = {}
        for n in (1, 2):
            fn = with_threads(n, lambda backend=backend: chain.smoother(x, **params, lengths=lengths,
                                                                         backend=backend))
            fn()
            samples = []
            for _ in range(max(1, repeats)):
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                samples.append((time.process_time() - c0, time.perf_counter() - w0))
            cpu[n] = min(samples)
        print(f"{backend}: CPU time per call {cpu[1][0] * 1e3:.0f} ms (1 thread) vs {cpu[2][0] * 1e3:.0f} ms "
              f"(2 threads, all threads summed); wall {cpu[1][1] * 1e3:.0f} vs {cpu[2][1] * 1e3:.0f} ms; "
              f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


# ---------------------------------------------------------------------------------------------------------------
# 3. dynamax
# ---------------------------------------------------------------------------------------------------------------

def dynamax_runner(params: dict[str, np.ndarray], batch: np.ndarray):
    """A jitted, vmapped dynamax lgssm_smoother over equal-length sequences, or the reason it is unavailable."""
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from dynamax.linear_gaussian_ssm.inference import (
            ParamsLGSSM,
            ParamsLGSSMDynamics,
            ParamsLGSSMEmissions,
            ParamsLGSSMInitial,
            lgssm_smoother,
        )
    except Exception as exc:  # ImportError, or a JAX/NumPy incompatibility surfacing at import
        return None, f"{type(exc).__name__}: {exc}"
    d, p = params["A"].shape[0], params["C"].shape[0]
    dx_params = ParamsLGSSM(
        initial=ParamsLGSSMInitial(mean=jnp.asarray(params["m0"]), cov=jnp.asarray(params["P0"])),
        dynamics=ParamsLGSSMDynamics(weights=jnp.asarray(params["A"]), bias=jnp.zeros(d),
                                     input_weights=jnp.zeros((d, 0)), cov=jnp.asarray(params["Q"])),
        emissions=ParamsLGSSMEmissions(weights=jnp.asarray(params["C"]), bias=jnp.zeros(p),
                                       input_weights=jnp.zeros((p, 0)), cov=jnp.asarray(params["R"])))
    smooth = jax.jit(jax.vmap(lambda y: lgssm_smoother(dx_params, y), in_axes=0))
    y = jnp.asarray(batch)

    def run():
        post = smooth(y)
        jax.block_until_ready(post.smoothed_covariances)
        return post

    return run, f"dynamax {__import__('dynamax').__version__}, jax {jax.__version__}, CPU, float64"


def bench_dynamax(n_seq: int, length: int, repeats: int) -> None:
    params = lgssm_params(4, 2, 1)
    lengths = np.full(n_seq, length)
    x = simulate_batch(params, lengths, 4)
    run, detail = dynamax_runner(params, x.reshape(n_seq, length, 2))
    if run is None:
        print(f"\n## dynamax lgssm_smoother: unavailable ({detail}); install it with `pip install dynamax`.")
        return
    ours = chain.smoother(x, **params, lengths=lengths, backend="cython")
    post = run()
    np.testing.assert_allclose(np.asarray(post.smoothed_means).reshape(-1, 4), ours.means, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(np.asarray(post.marginal_loglik), ours.log_evidence, rtol=1e-8)
    print(f"\ndynamax: {detail}; same smoothed means and log p(x) (rtol 1e-8): checked")
    threads = avicore.get_num_threads()

    def ours():
        return chain.smoother(x, **params, lengths=lengths, backend="cython")

    t = measure_interleaved({"dynamax lgssm_smoother (vmap)": run,
                             f"chain.smoother cython {threads}t": ours,
                             "chain.smoother cython 1t": with_threads(1, ours),
                             f"cython {threads}t recompute all":
                                 lambda: recompute_every_step(x, params, lengths, "cython")}, repeats)
    dx = t["dynamax lgssm_smoother (vmap)"]
    rows = [(f"cython, {threads} threads vs dynamax", t[f"chain.smoother cython {threads}t"], dx),
            ("cython, 1 thread vs dynamax", t["chain.smoother cython 1t"], dx),
            (f"cython reuse=False, {threads} threads vs dynamax", t[f"cython {threads}t recompute all"], dx)]
    print_table(f"{n_seq} equal-length sequences of {length} steps, d = 4, p = 2 (dynamax has no ragged batches; "
                "XLA uses every core)", rows)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    print(machine_line())
    avicore.show_config()
    if args.quick:
        bench_scalar(10_000, args.repeats)
        bench_threads(50, 50, 150, args.repeats)
        bench_dynamax(20, 100, args.repeats)
    else:
        bench_scalar(1_000_000, args.repeats)
        bench_threads(1000, 250, 750, args.repeats)
        bench_dynamax(1000, 500, args.repeats)


if __name__ == "__main__":
    main()
