"""Gaussian-process benchmarks (issue 6).

Part 1 — expected log-likelihood with gradients, Bernoulli-logit, 20 Gauss–Hermite points, N = 10⁶:
avicore (every CPU backend) against a straightforward vectorised NumPy implementation written here as a user
would write it (goal: ≥ 5× faster), and against GPyTorch's ``GaussHermiteQuadrature1D`` (CPU torch, float64,
gradients by autograd) when GPyTorch is installed. A second table does the same for Bernoulli-probit against
GPyTorch's own ``BernoulliLikelihood.expected_log_prob`` (a probit likelihood). Every contender computes the same
three arrays (value, d/dmean, d/dvar) and the script prints how far apart their answers are.

Run:  python benchmarks/bench_gp.py            (N = 10⁶)
      python benchmarks/bench_gp.py --quick    (N = 10⁴: checks the script, not the goals)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import Timing, base_parser, machine_line, measure, print_table

import avicore
from avicore.gp.likelihoods import Bernoulli
from avicore.quadrature import expected_log_lik

N_POINTS = 20


def numpy_logit_expected_log_lik(y: np.ndarray, mean: np.ndarray, var: np.ndarray, n_points: int = N_POINTS
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a NumPy user writes: broadcast the nodes, evaluate log σ(s f) and its derivatives, contract."""
    x, w = np.polynomial.hermite_e.hermegauss(n_points)
    w = w / w.sum()
    s = (2.0 * y - 1.0)[:, None]
    f = mean[:, None] + np.sqrt(var)[:, None] * x[None, :]
    log_p = -np.logaddexp(0.0, -s * f)                 # log σ(s f)
    sig = 0.5 * (1.0 + np.tanh(0.5 * f))               # σ(f), overflow-free
    d1 = np.where(s > 0, 1.0 - sig, -sig)              # d/df log σ(s f) = s σ(−s f)
    d2 = -sig * (1.0 - sig)                            # d²/df²
    return log_p @ w, d1 @ w, 0.5 * (d2 @ w)


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = 2.0 * rng.standard_normal(n)
    var = rng.uniform(0.05, 3.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-mean))).astype(np.float64)
    return y, mean, var


def max_diff(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> float:
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


def gpytorch_runner(y: np.ndarray, mean: np.ndarray, var: np.ndarray, link: str
                    ) -> tuple[Callable[[], tuple[np.ndarray, ...]] | None, str]:
    """A callable computing (value, grad_mean, grad_var) with GPyTorch on CPU torch, or (None, why not)."""
    try:
        import gpytorch
        import torch
    except Exception as exc:  # ImportError, or a broken torch install
        return None, f"{type(exc).__name__}: {exc}"
    torch.set_num_threads(avicore.get_num_threads())
    y_t = torch.from_numpy(y)
    mean_np, var_np = mean, var

    if link == "logit":
        quad = gpytorch.utils.quadrature.GaussHermiteQuadrature1D(num_locs=N_POINTS).double()
        sign = 2.0 * y_t - 1.0

        def expected(mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            dist = torch.distributions.Normal(mu, v.sqrt())
            return quad(lambda f: torch.nn.functional.logsigmoid(sign * f), dist)
    else:
        lik = gpytorch.likelihoods.BernoulliLikelihood().double()
        lik.quadrature = gpytorch.utils.quadrature.GaussHermiteQuadrature1D(num_locs=N_POINTS).double()

        def expected(mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return lik.expected_log_prob(y_t, torch.distributions.Normal(mu, v.sqrt()))

    def run() -> tuple[np.ndarray, ...]:
        mu = torch.from_numpy(mean_np).clone().requires_grad_(True)
        v = torch.from_numpy(var_np).clone().requires_grad_(True)
        value = expected(mu, v)
        value.sum().backward()
        return value.detach().numpy(), mu.grad.numpy(), v.grad.numpy()

    return run, f"gpytorch {gpytorch.__version__}, torch {torch.__version__} (CPU, float64, autograd)"


def bench_expected_log_lik(n: int, repeats: int) -> None:
    y, mean, var = make_data(n)
    cpu_backends = [b for b in ("cython", "numba") if avicore.backends.available()[b].available]
    print(f"\nexpected_log_lik, {N_POINTS} Gauss–Hermite points, N = {n:,}, value + gradients in mean and var; "
          f"{avicore.get_num_threads()} threads")

    for link in ("logit", "probit"):
        lik = Bernoulli(link)
        results: dict[str, tuple[np.ndarray, ...]] = {}
        timings: dict[str, Timing] = {}
        for backend in cpu_backends:
            def call(backend: str = backend, lik: Bernoulli = lik) -> tuple[np.ndarray, ...]:
                r = expected_log_lik(lik, y, mean, var, n_points=N_POINTS, backend=backend)
                return r.value, r.grad_mean, r.grad_var

            results[backend] = call()
            timings[backend] = measure(f"avicore {backend}", call, repeats=repeats)
        rows = []
        if link == "logit":
            results["numpy_user"] = numpy_logit_expected_log_lik(y, mean, var)
            anchor = measure("vectorised NumPy", lambda: numpy_logit_expected_log_lik(y, mean, var),
                             repeats=repeats)
            rows += [(f"Bernoulli-logit N={n:,} vs NumPy", timings[b], anchor) for b in cpu_backends]
        run, detail = gpytorch_runner(y, mean, var, link)
        if run is None:
            print(f"GPyTorch: unavailable ({detail})")
        else:
            results["gpytorch"] = run()
            peer = measure("GPyTorch GH-1D", run, repeats=repeats)
            rows += [(f"Bernoulli-{link} N={n:,} vs GPyTorch", timings[b], peer) for b in cpu_backends]
            print(f"GPyTorch: {detail}")
        goal = "≥ 5× faster than vectorised NumPy" if link == "logit" else "report the ratio"
        print_table(f"expected_log_lik, Bernoulli-{link}, {N_POINTS} points, with gradients", rows, goal=goal)
        ref = results[cpu_backends[0]]
        for name, res in results.items():
            if name != cpu_backends[0]:
                print(f"  max |{name} − avicore {cpu_backends[0]}| over (value, grad_mean, grad_var): "
                      f"{max_diff(res, ref):.2e}")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="number of points (default 10⁶, --quick 10⁴)")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 1_000_000)
    print(machine_line())
    bench_expected_log_lik(n, args.repeats)


if __name__ == "__main__":
    main()
