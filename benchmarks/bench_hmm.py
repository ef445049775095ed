"""Benchmark avicore.hmm against hmmlearn 0.3's compiled kernels, every anchor measured in the same run.

Cases (the Performance section of issue 3):

1. K = 10, T = 10⁶, one sequence, one thread: full forward-backward (log-likelihood, posteriors, transition
   counts). Anchors: hmmlearn's ``implementation="log"`` and ``"scaling"`` kernels (``_hmmc.forward_*``,
   ``backward_*``, ``compute_*_xi_sum``, then posteriors normalised as hmmlearn does). The scaling anchor is given
   ``exp(log_lik)`` precomputed (its exp is not timed); avicore starts from ``log_lik``. The outputs are compared.
   Goals: ≥ 10× the log anchor, ≥ 2× the scaling anchor.
2. K = 50, T = 10⁶, one thread. Goal: ≥ 3× hmmlearn scaling (the log anchor, ~1 min a run, with ``--all-anchors``).
3. 1,000 ragged sequences (lengths uniform in 100–2,000), K = 10, 2 features: hmmlearn's
   ``GaussianHMM.score_samples`` against ``avicore.emissions.gaussian_diag_log_lik`` + ``forward_backward``, both
   from the raw observations. Goals: ≥ 20× with one thread; 2 threads ≥ 1.7× faster than 1.
4. K = 100, T = 10⁵, one thread: achieved GFLOP/s next to a dense float64 matmul (``numpy.matmul``, n = 2,000, one
   BLAS thread) measured in the same run. Flops counted: 6·K² per step, the algorithm's multiply-adds (forward
   ``alpha A``, backward ``A w``, transition counts ``alpha wᵀ``), 2 flops each; the kernel executes 8·K² (it
   recomputes ``alpha A`` in the backward pass instead of storing it), shown too.
6. Estimator fits: ``avicore.hmm.GaussianHMM`` (diag K = 10 and 50, full K = 10), ``CategoricalHMM``,
   ``PoissonHMM`` against hmmlearn's on 1,000 ragged sequences (~10⁶ rows), 20 EM iterations from the same
   parameters, one thread. Goals: ≥ 20× (diag K = 10, categorical, Poisson), ≥ 10× (K = 50, full). Then the
   same avicore fits on every core against one thread (issue 21). ``--fit-only`` runs this case alone (full size:
   about 15 minutes on one 2.6 GHz core, 9 of them hmmlearn's log fits — ``--fit-anchors scaling`` skips those).
5. ``--backend cuda``: 10,000 sequences × 1,000 steps × K = 32 on the GPU against the cython backend (all CPU
   threads). Needs a real GPU.

Single-thread cases run with ``avicore.set_num_threads(1)`` and every BLAS/OpenMP pool limited to one thread
(threadpoolctl); hmmlearn's kernels are single-threaded. Timings are wall-clock minima over the repeats (avicore:
at least 10 after a warm-up call; hmmlearn anchors: ``--anchor-repeats``, default 2, no warm-up needed).

Run: ``.venv/bin/python benchmarks/bench_hmm.py`` (``--quick`` for small sizes, ``--backend cuda`` on a GPU,
``--bind`` to pin the OpenMP threads to distinct cores, ``--fit-only`` for case 6 alone, ``--fit-cases`` and
``--fit-anchors scaling`` to shorten it). Case 6 at full size on a quiet 2.6 GHz core: about 17 minutes with both
hmmlearn anchors and ``--anchor-repeats 2`` (hmmlearn's fits: diag K=10 12 s scaling / 59 s log, K=50 163 s scaling,
full 22 s / 81 s, categorical 8 s / 53 s, Poisson 30 s / 76 s, each timed twice), about 8 minutes with
``--fit-anchors scaling``, half that with ``--anchor-repeats 1``.
"""

from __future__ import annotations

import os
import sys

if "--bind" in sys.argv:  # must precede the first load of the OpenMP runtime (libgomp reads it once)
    os.environ.setdefault("OMP_PROC_BIND", "spread")
    os.environ.setdefault("OMP_PLACES", "cores")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import base_parser, machine_line, measure, print_table

import avicore
from avicore import emissions, hmm

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
    threadpool_limits = None


class _single_blas:
    """Limit BLAS/OpenMP pools (NumPy, SciPy) to one thread inside the block."""

    def __enter__(self):
        self._ctl = threadpool_limits(limits=1) if threadpool_limits else None
        return self

    def __exit__(self, *exc):
        if self._ctl is not None:
            self._ctl.unregister()


def problem(rng: np.random.Generator, T: int, K: int):
    log_lik = 2.0 * rng.standard_normal((T, K))
    A = rng.dirichlet(np.ones(K), size=K)
    pi = rng.dirichlet(np.ones(K))
    return log_lik, A, pi


# ---------------------------------------------------------------------------------------------------------------
# hmmlearn anchors (the same steps as hmmlearn's BaseHMM E-step, on one sequence)
# ---------------------------------------------------------------------------------------------------------------

def hmmlearn_log(log_lik, A, pi):
    from hmmlearn import _hmmc
    from hmmlearn.utils import log_normalize

    logprob, fwd = _hmmc.forward_log(pi, A, log_lik)
    bwd = _hmmc.backward_log(pi, A, log_lik)
    with np.errstate(under="ignore"):
        xi = np.exp(_hmmc.compute_log_xi_sum(fwd, A, bwd, log_lik))
    log_gamma = fwd + bwd
    log_normalize(log_gamma, axis=1)
    with np.errstate(under="ignore"):
        return logprob, np.exp(log_gamma), xi


def hmmlearn_scaling(frameprob, A, pi):
    from hmmlearn import _hmmc
    from hmmlearn.utils import normalize

    logprob, fwd, scaling = _hmmc.forward_scaling(pi, A, frameprob)
    bwd = _hmmc.backward_scaling(pi, A, frameprob, scaling)
    xi = _hmmc.compute_scaling_xi_sum(fwd, A, bwd, frameprob)
    post = fwd * bwd
    normalize(post, axis=1)
    return logprob, post, xi


def compare(label: str, ours: hmm.ForwardBackwardResult, theirs) -> None:
    logprob, post, xi = theirs
    rel = abs(ours.total_log_likelihood - logprob) / abs(logprob)
    print(f"   same outputs ({label}): |Δ log p| / |log p| = {rel:.1e}, "
          f"max |Δ posterior| = {np.max(np.abs(ours.posteriors - post)):.1e}, "
          f"max |Δ counts| / max counts = {np.max(np.abs(ours.transition_counts - xi)) / xi.max():.1e}")


def one_sequence_case(rng, T: int, K: int, repeats: int, with_log: bool, slow_repeats: int) -> list:
    log_lik, A, pi = problem(rng, T, K)
    log_A, log_pi = np.log(A), np.log(pi)
    frameprob = np.exp(log_lik)
    rows = []
    avicore.set_num_threads(1)
    with _single_blas():
        ours = measure("avicore cython, 1 thread", lambda: hmm.forward_backward(log_lik, log_A, log_pi,
                                                                                backend="cython"),
                       repeats=repeats)
        res = hmm.forward_backward(log_lik, log_A, log_pi, backend="cython")
        scaling = measure("hmmlearn scaling", lambda: hmmlearn_scaling(frameprob, A, pi), repeats=slow_repeats,
                          warmup=0)
        if T * K <= 2e7:
            compare("vs hmmlearn scaling", res, hmmlearn_scaling(frameprob, A, pi))
        rows.append((f"K={K}, T={T:.0e}, 1 seq", ours, scaling))
        if with_log:
            log = measure("hmmlearn log", lambda: hmmlearn_log(log_lik, A, pi), repeats=slow_repeats, warmup=0)
            rows.append((f"K={K}, T={T:.0e}, 1 seq", ours, log))
            if T * K <= 2e7:
                compare("vs hmmlearn log", res, hmmlearn_log(log_lik, A, pi))
        numba = measure("avicore numba, 1 thread", lambda: hmm.forward_backward(log_lik, log_A, log_pi,
                                                                                backend="numba"),
                        repeats=repeats)
        rows.append((f"K={K}, T={T:.0e}, 1 seq", numba, scaling))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Ragged Gaussian HMM
# ---------------------------------------------------------------------------------------------------------------

def ragged_case(rng, n_seq: int, lo: int, hi: int, K: int, D: int, repeats: int,
                slow_repeats: int) -> tuple[list, list]:
    from hmmlearn.hmm import GaussianHMM

    lengths = rng.integers(lo, hi + 1, size=n_seq)
    X = rng.standard_normal((int(lengths.sum()), D)) * 2.0
    model = GaussianHMM(n_components=K, covariance_type="diag")
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.transmat_ = rng.dirichlet(np.ones(K), size=K)
    model.means_ = rng.standard_normal((K, D)) * 2.0
    variances = rng.uniform(0.5, 2.0, size=(K, D))
    model.covars_ = variances
    log_A, log_pi = np.log(model.transmat_), np.log(model.startprob_)

    def ours():
        return hmm.forward_backward(emissions.gaussian_diag_log_lik(X, model.means_, variances), log_A, log_pi,
                                    lengths, backend="cython")

    log_lik = emissions.gaussian_diag_log_lik(X, model.means_, variances)

    def ours_kernel():
        return hmm.forward_backward(log_lik, log_A, log_pi, lengths, backend="cython")

    case = f"{n_seq} ragged seqs ({lengths.sum():.2e} rows), K={K}, D={D}"
    with _single_blas():
        avicore.set_num_threads(1)
        one = measure("avicore emissions+fb, 1 thr", ours, repeats=repeats)
        one_k = measure("avicore fb only, 1 thread", ours_kernel, repeats=repeats)
        anchor = measure("hmmlearn score_samples (log)", lambda: model.score_samples(X, lengths),
                         repeats=slow_repeats, warmup=0)
        model_s = GaussianHMM(n_components=K, covariance_type="diag", implementation="scaling")
        model_s.startprob_, model_s.transmat_, model_s.means_, model_s.covars_ = (
            model.startprob_, model.transmat_, model.means_, variances)
        anchor_s = measure("hmmlearn score_samples (scal.)", lambda: model_s.score_samples(X, lengths),
                           repeats=slow_repeats, warmup=0)
    avicore.set_num_threads(2)
    two = measure("avicore emissions+fb, 2 thr", ours, repeats=repeats)
    two_k = measure("avicore fb only, 2 threads", ours_kernel, repeats=repeats)
    avicore.set_num_threads(1)
    log_prob, post = model.score_samples(X, lengths)
    res = ours()
    print(f"   same outputs: |Δ log p| / |log p| = {abs(res.total_log_likelihood - log_prob) / abs(log_prob):.1e}, "
          f"max |Δ posterior| = {np.max(np.abs(res.posteriors - post)):.1e}")
    vs_hmmlearn = [(case, one, anchor), (case, one, anchor_s), (case, two, anchor)]
    threads = [(case, two, one), (case + " (fb only)", two_k, one_k)]
    return vs_hmmlearn, threads


# ---------------------------------------------------------------------------------------------------------------
# GFLOP/s at K = 100
# ---------------------------------------------------------------------------------------------------------------

def flops_case(rng, T: int, K: int, repeats: int, slow_repeats: int) -> list:
    log_lik, A, pi = problem(rng, T, K)
    log_A, log_pi = np.log(A), np.log(pi)
    n = 2000 if T >= 10_000 else 500
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    avicore.set_num_threads(1)
    with _single_blas():
        ours = measure("avicore cython, 1 thread", lambda: hmm.forward_backward(log_lik, log_A, log_pi,
                                                                                backend="cython"),
                       repeats=repeats)
        mm = measure(f"numpy matmul n={n}, 1 thread", lambda: a @ b, repeats=repeats)
        frameprob = np.exp(log_lik)
        scaling = measure("hmmlearn scaling", lambda: hmmlearn_scaling(frameprob, A, pi), repeats=slow_repeats,
                          warmup=0)
    alg, executed = 6.0 * K * K * T, 8.0 * K * K * T
    mm_rate = 2.0 * n**3 / mm.min / 1e9
    print(f"\n## K={K}, T={T:.0e}: achieved rate (one thread)")
    print(f"| {'what':<58} | {'GFLOP/s':>8} |")
    print(f"|{'-' * 60}|{'-' * 10}|")
    print(f"| {'avicore forward-backward, algorithmic flops (6 K² T)':<58} | {alg / ours.min / 1e9:>8.2f} |")
    print(f"| {'avicore forward-backward, executed flops (8 K² T)':<58} | {executed / ours.min / 1e9:>8.2f} |")
    print(f"| {'hmmlearn scaling, algorithmic flops (6 K² T)':<58} | {alg / scaling.min / 1e9:>8.2f} |")
    print(f"| {f'dense float64 matmul (numpy, n={n}, 1 thread)':<58} | {mm_rate:>8.2f} |")
    return [(f"K={K}, T={T:.0e}, 1 seq", ours, scaling)]


# ---------------------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------------------

def cuda_case(rng, n_seq: int, length: int, K: int, repeats: int) -> list:
    from avicore import backends

    if not backends.cuda_is_real_gpu():
        print("\n--backend cuda: no real GPU here (the simulator is not a benchmark); skipped.")
        return []
    log_lik = 2.0 * rng.standard_normal((n_seq * length, K))
    A = rng.dirichlet(np.ones(K), size=K)
    log_A, log_pi = np.log(A), np.log(rng.dirichlet(np.ones(K)))
    lengths = np.full(n_seq, length)
    avicore.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    case = f"{n_seq} seqs x {length} steps, K={K}"
    rows = []
    for name, fn in [("forward_backward", hmm.forward_backward), ("viterbi", hmm.viterbi)]:
        gpu = measure(f"avicore cuda {name}", lambda fn=fn: fn(log_lik, log_A, log_pi, lengths, backend="cuda"),
                      repeats=repeats)
        cpu = measure(f"avicore cython {name}, {avicore.get_num_threads()} thr",
                      lambda fn=fn: fn(log_lik, log_A, log_pi, lengths, backend="cython"), repeats=repeats)
        rows.append((case, gpu, cpu))
    a = hmm.forward_backward(log_lik, log_A, log_pi, lengths, backend="cuda")
    b = hmm.forward_backward(log_lik, log_A, log_pi, lengths, backend="cython")
    print(f"   same outputs: max |Δ posterior| = {np.max(np.abs(a.posteriors - b.posteriors)):.1e}, "
          f"max |Δ log p| = {np.max(np.abs(a.log_likelihood - b.log_likelihood)):.1e}")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 6. Estimator fits (avicore.hmm.GaussianHMM, CategoricalHMM, PoissonHMM) vs hmmlearn's, same start, one thread
# ---------------------------------------------------------------------------------------------------------------

def _twin_fit(ours_cls, theirs_cls, X, lengths, n_iter, params: dict, implementation: str, **kw):
    """Callables fitting avicore's and hmmlearn's estimator from the same parameters for exactly ``n_iter`` EM
    iterations (``init_params=""``, ``tol=-inf``); each call starts from a fresh copy of ``params``, and leaves the
    fitted model in its ``last`` attribute (the trajectories are compared without fitting again)."""
    def make(cls, **extra):
        def fit():
            m = cls(init_params="", n_iter=n_iter, tol=-np.inf, **kw, **extra)
            for name, value in params.items():
                setattr(m, name, np.array(value, copy=True))
            fit.last = m.fit(X, lengths)
            return fit.last
        return fit
    return make(ours_cls, backend="cython"), make(theirs_cls, implementation=implementation)


FIT_CASES = ("diag10", "diag50", "full10", "categorical", "poisson")


def fit_cases(rng, quick: bool, repeats: int, slow_repeats: int, anchors: str = "both",
              only: tuple[str, ...] = FIT_CASES) -> None:
    """Case 6: 20 EM iterations (quick: 5) on ragged sequences from the same initial parameters; the histories
    of the two fits are compared, then the wall times (avicore one thread, cython; hmmlearn's scaling and, with
    ``anchors="both"``, log implementation); then avicore on every core against one thread."""
    from hmmlearn import hmm as hl

    from avicore.hmm import CategoricalHMM, GaussianHMM, PoissonHMM

    n_seq, lo, hi, n_iter = (100, 10, 200, 5) if quick else (1_000, 100, 2_000, 20)
    lengths = rng.integers(lo, hi + 1, size=n_seq)
    n = int(lengths.sum())
    rows = []

    def gaussian_params(K, D, cov):
        p = {"startprob_": rng.dirichlet(np.ones(K)), "transmat_": rng.dirichlet(np.ones(K), size=K),
             "means_": rng.standard_normal((K, D)) * 2.0}
        if cov == "diag":
            p["covars_"] = rng.uniform(0.5, 2.0, size=(K, D))
        else:
            a = rng.standard_normal((K, D, D)) * 0.3
            p["covars_"] = a @ a.transpose(0, 2, 1) + np.eye(D)
        return p

    X = rng.standard_normal((n, 2)) * 2.0
    cases = [("Gaussian diag K=10", GaussianHMM, hl.GaussianHMM, X, gaussian_params(10, 2, "diag"),
              {"n_components": 10, "covariance_type": "diag"}),
             ("Gaussian diag K=50", GaussianHMM, hl.GaussianHMM, X, gaussian_params(50, 2, "diag"),
              {"n_components": 50, "covariance_type": "diag"}),
             ("Gaussian full K=10", GaussianHMM, hl.GaussianHMM, X, gaussian_params(10, 2, "full"),
              {"n_components": 10, "covariance_type": "full"})]
    sym = rng.integers(0, 20, size=(n, 1))
    cases.append(("Categorical K=10, 20 symbols", CategoricalHMM, hl.CategoricalHMM, sym,
                  {"startprob_": rng.dirichlet(np.ones(10)), "transmat_": rng.dirichlet(np.ones(10), size=10),
                   "emissionprob_": rng.dirichlet(np.ones(20), size=10)}, {"n_components": 10}))
    counts = rng.poisson(rng.uniform(1.0, 10.0, size=(1, 3)), size=(n, 3))
    cases.append(("Poisson K=10, 3 features", PoissonHMM, hl.PoissonHMM, counts,
                  {"startprob_": rng.dirichlet(np.ones(10)), "transmat_": rng.dirichlet(np.ones(10), size=10),
                   "lambdas_": rng.uniform(1.0, 10.0, size=(10, 3))}, {"n_components": 10}))
    threads = []
    n_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with _single_blas():
        for key, (label, ours_cls, theirs_cls, data, params, kw) in zip(FIT_CASES, cases):
            if key not in only:
                continue
            avicore.set_num_threads(1)
            case = f"{label}: {n_seq} seqs ({n:.1e} rows), {n_iter} EM iters"
            ours, theirs = _twin_fit(ours_cls, theirs_cls, data, lengths, n_iter, params, "scaling", **kw)
            t_ours = measure("avicore fit, 1 thread", ours, repeats=max(2, repeats // 5))
            t_scal = measure("hmmlearn fit (scaling)", theirs, repeats=slow_repeats, warmup=0)
            rows.append((case, t_ours, t_scal))
            if n_cores > 1:
                avicore.set_num_threads(n_cores)
                threads.append((case, measure(f"avicore fit, {n_cores} threads", ours,
                                              repeats=max(2, repeats // 5)), t_ours))
                avicore.set_num_threads(1)
            if anchors == "both" and "K=50" not in label:  # hmmlearn's log kernels at K = 50 take minutes
                _, theirs_log = _twin_fit(ours_cls, theirs_cls, data, lengths, n_iter, params, "log", **kw)
                rows.append((case, t_ours, measure("hmmlearn fit (log, default)", theirs_log,
                                                   repeats=slow_repeats, warmup=0)))
            a, b = ours.last, theirs.last
            rel = np.max(np.abs(np.array(a.monitor_.history) - np.array(b.monitor_.history))
                         / np.abs(np.array(b.monitor_.history)))
            print(f"   {label}: same EM trajectory, max relative |Δ log-likelihood| over iterations = {rel:.1e}")
    print_table("6. estimator fits vs hmmlearn, same start, one thread", rows,
                goal=">= 20x (diag K=10, Categorical, Poisson), >= 10x (K=50, full)")
    if threads:
        print_table(f"6b. the same avicore fits, {n_cores} threads vs 1 (anchor: 1 thread)", threads,
                    goal="report (issue 21: the E-step batch scales with the threads)")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: cases 1-4; cuda: case 5 (GPU against the cython backend)")
    parser.add_argument("--anchor-repeats", type=int, default=2,
                        help="timed repeats of each hmmlearn anchor (no warm-up; they take seconds)")
    parser.add_argument("--bind", action="store_true",
                        help="pin OpenMP threads to distinct cores (OMP_PROC_BIND=spread): on a shared machine the "
                             "scheduler may otherwise stack both threads on one core")
    parser.add_argument("--all-anchors", action="store_true",
                        help="also time hmmlearn's log kernels at K=50 (about a minute per run)")
    parser.add_argument("--fit-only", action="store_true", help="run case 6 (estimator fits) alone")
    parser.add_argument("--fit-anchors", choices=["both", "scaling"], default="both",
                        help="case 6: hmmlearn's scaling and log fits (both) or the scaling ones only (faster)")
    parser.add_argument("--fit-cases", default=",".join(FIT_CASES),
                        help=f"case 6: comma-separated subset of {','.join(FIT_CASES)} (diag50's hmmlearn fits take "
                             f"~3 minutes each at full size)")
    args = parser.parse_args()
    rng = np.random.default_rng(20241128)
    q = args.quick
    print(f"# avicore.hmm benchmark — {machine_line()}; OMP_PROC_BIND={os.environ.get('OMP_PROC_BIND', 'unset')}; "
          f"load average {os.getloadavg()[0]:.2f} at start")
    if args.backend == "cuda":
        rows = cuda_case(rng, 200 if q else 10_000, 100 if q else 1_000, 32, args.repeats)
        if rows:
            print_table("GPU: cuda backend vs cython (all CPU threads)", rows, goal="report the ratio")
        return

    try:
        import hmmlearn
    except ImportError as exc:
        print(f"The peer hmmlearn is missing ({exc}): every CPU case here is a comparison with it. Install it with "
              f"`pip install hmmlearn` (or `pip install -e \".[bench]\"`) and rerun; `--backend cuda` needs no "
              f"peer.", file=sys.stderr)
        sys.exit(2)
    print(f"hmmlearn {hmmlearn.__version__} (anchors: its 'log' and 'scaling' implementations, both reported); "
          f"avicore kernels: cython (AOT, -O3 -march=native), numba")

    T1 = 50_000 if q else 1_000_000
    repeats = max(args.repeats, 10)
    slow = args.anchor_repeats
    if args.fit_only:
        fit_cases(rng, q, repeats, slow, args.fit_anchors, tuple(args.fit_cases.split(",")))
        return
    rows = one_sequence_case(rng, T1, 10, repeats, with_log=True, slow_repeats=slow)
    print_table(f"1. K=10, T={T1:.0e}, one sequence, one thread", rows,
                goal=">= 10x hmmlearn log, >= 2x hmmlearn scaling")
    rows = one_sequence_case(rng, T1 // 5 if q else T1, 50, repeats, with_log=args.all_anchors,
                             slow_repeats=slow)
    print_table(f"2. K=50, T={(T1 // 5 if q else T1):.0e}, one thread", rows, goal=">= 3x hmmlearn scaling")
    vs, threads = ragged_case(rng, 100 if q else 1_000, 100, 2_000, 10, 2, repeats, slow)
    print_table("3a. ragged Gaussian HMM vs hmmlearn GaussianHMM.score_samples", vs, goal=">= 20x (1 thread)")
    print_table("3b. ragged Gaussian HMM, 2 threads vs 1 (anchor: 1 thread)", threads, goal=">= 1.7x")
    rows = flops_case(rng, 10_000 if q else 100_000, 100, repeats, slow)
    print_table("4. K=100 vs hmmlearn scaling, one thread", rows, goal="report GFLOP/s")
    avicore.set_num_threads(1)
    log_lik, A, pi = problem(rng, T1, 10)
    with _single_blas():
        from hmmlearn import _hmmc

        v_ours = measure("avicore cython viterbi", lambda: hmm.viterbi(log_lik, np.log(A), np.log(pi)),
                         repeats=repeats)
        v_theirs = measure("hmmlearn viterbi", lambda: _hmmc.viterbi(pi, A, log_lik), repeats=slow, warmup=0)
        s_ours = measure("avicore cython, 10 samples", lambda: hmm.sample_posterior(
            log_lik, np.log(A), np.log(pi), n_samples=10, seed=0), repeats=repeats)
    print_table(f"extra: Viterbi and posterior sampling, K=10, T={T1:.0e}, one thread",
                [("viterbi", v_ours, v_theirs), ("sample_posterior (10 paths)", s_ours, None)])
    fit_cases(rng, q, repeats, slow, args.fit_anchors, tuple(args.fit_cases.split(",")))


if __name__ == "__main__":
    main()
