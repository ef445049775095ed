"""Benchmark one epoch of the Bayesian-decoder deep generative model against the same model in PyTorch (CPU).

Model (:class:`avicore.models.BayesianDecoder`): zₙ ~ N(0, I_d), xₙ ~ N(Ω_θ(zₙ), σ² I), Ω a leaky-ReLU MLP decoder
with a mean-field Gaussian over every weight and bias; A-VI with an ``MLP(k)`` encoder (two ReLU layers of k, one
shared head for mean and log-scale, standardised inputs) and F-VI (a free q(zₙ) per image), minibatches of B,
S Monte-Carlo samples (one θ_s per sample), Adam, float64 on both sides. The PyTorch twin computes the same
minibatch ELBO (N/B-scaled likelihood, local prior and local entropy; log p(θ) and H[q(θ)] once) with autograd
and ``torch.optim.Adam`` (dense over F-VI's (N, d) local parameters, as a PyTorch user would write it).

Time per epoch is measured after one warm-up epoch: avicore's from the fit's per-iteration timestamps
(``VIResult.trace_seconds``: noise, fused passes, ELBO estimate, checks, Adam), PyTorch's around its loop.

Cases: the digits (N = 1,797, 8×8, d = 8, hidden (64, 64), B = 100, S = 1; goal ≥ 1.5× faster) and the paper's
FashionMNIST size with synthetic data of that shape (N = 10,000, 28×28, d = 64, hidden (256, 256), B = 100, S = 1;
a few hundred iterations, reported per epoch).

Run: ``.venv/bin/python benchmarks/bench_dgm.py`` (``--repeats R``: R timed epochs per case and side, after the
warm-up epoch, min and median reported; ``--quick``: 2 epochs of the digits and 20 iterations of the FashionMNIST
size; ``--skip-fashion``). The fits run a fixed number of iterations, so they end unconverged: their
ConvergenceWarning is expected and silenced here.

Measured (2 shared cores, AVX2, PyTorch 2.13.0+cpu, float64; other jobs were running, so ±30 %), speed-up =
PyTorch time per epoch / avicore's, avicore's time per epoch in brackets:

=====================================  ==========================  ===================================
case                                   default threads             ``OPENBLAS_NUM_THREADS=1``
=====================================  ==========================  ===================================
digits, A-VI MLP(64)                   2.34× (31 ms)               2.92× (33 ms)
digits, F-VI                           2.33× (28 ms)               3.29× (31 ms)
FashionMNIST-shaped, A-VI MLP(64)      1.64× (1.94 s, 19 ms/it)    1.63× (1.90 s)
FashionMNIST-shaped, F-VI              2.01× (1.55 s, 15 ms/it)    1.89× (1.54 s)
=====================================  ==========================  ===================================

Threads: with NumPy's default multi-threaded OpenBLAS, an iteration at the FashionMNIST size used to take ~25 ms
inside the fit (~14 ms with ``OPENBLAS_NUM_THREADS=1``): OpenBLAS's worker threads spin after every product and
fight avicore's own parallel threads (the OpenMP Adam update) for the two cores. The engines now run every fit
with one BLAS thread (:func:`avicore._config.serial_blas`, threadpoolctl), so avicore's times no longer depend on
the variable (the two columns agree to noise; the PyTorch column moves between runs, its own pool is unaffected).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import Timing, base_parser, machine_line, print_table

import avicore
from avicore.encoders import MLP
from avicore.models import BayesianDecoder
from avicore.optim import ConvergenceWarning

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def avicore_epoch(x: np.ndarray, method: str, latent_dim: int, hidden: tuple[int, ...], width: int, batch: int,
                  n_samples: int, n_iter: int) -> Timing:
    """Seconds per epoch of avicore's fit (iterations after the first epoch, scaled to one epoch)."""
    per_epoch = math.ceil(x.shape[0] / batch)
    model = BayesianDecoder(latent_dim, hidden=hidden, obs_scale=0.1)
    if method == "A-VI":
        engine = avicore.AVI(model, MLP(width), n_samples=n_samples, batch_size=batch, elbo_samples=2,
                             backend="numba")
    else:
        engine = avicore.FVI(model, n_samples=n_samples, batch_size=batch, elbo_samples=2, backend="numba")
    with warnings.catch_warnings():  # a timing run, not a fit to convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = engine.fit(x, n_iter=per_epoch + n_iter, lr=1e-3, seed=0)  # a warm-up epoch, then n_iter timed
    ts = res.trace_seconds
    per_iter = np.diff(ts[per_epoch - 1:])  # iteration t's cost = time between consecutive trace entries
    step = min(per_epoch, len(per_iter))
    chunks = [float(per_iter[i:i + step].mean()) * per_epoch for i in range(0, len(per_iter) - step + 1, step)]
    return Timing(f"avicore {method} numba", tuple(chunks))


def torch_epoch(x: np.ndarray, method: str, latent_dim: int, hidden: tuple[int, ...], width: int, batch: int,
                n_samples: int, n_iter: int) -> tuple[Timing | None, str]:
    """Seconds per epoch of the same model, family, minibatch ELBO and Adam in PyTorch on the CPU."""
    try:
        import torch
    except ImportError as exc:
        return None, str(exc)
    torch.set_num_threads(avicore.get_num_threads())
    torch.manual_seed(0)
    dt = torch.float64
    n, dim = x.shape
    xt = torch.from_numpy(x)
    sd = x.std(axis=0)
    xs = torch.from_numpy((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0))
    widths = (latent_dim, *hidden, dim)
    mus, log_sds = [], []
    for fi, fo in itertools.pairwise(widths):
        for shape in ((fi, fo), (fo,)):
            mus.append((torch.randn(shape, dtype=dt) * math.sqrt(2.0 / fi)).requires_grad_())
            log_sds.append(torch.full(shape, math.log(0.01), dtype=dt, requires_grad=True))
    params = mus + log_sds
    obs_scale, scale = 0.1, n / batch
    if method == "A-VI":
        enc = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                  torch.nn.ReLU(), torch.nn.Linear(width, 2 * latent_dim)).to(dt)
        params += list(enc.parameters())
    else:
        loc_mean = torch.zeros(n, latent_dim, dtype=dt, requires_grad=True)
        loc_log_sd = torch.full((n, latent_dim), math.log(0.01), dtype=dt, requires_grad=True)
        params += [loc_mean, loc_log_sd]
    opt = torch.optim.Adam(params, lr=1e-3, maximize=True)
    n_layers = len(widths) - 1
    n_theta = sum(p.numel() for p in mus)

    def step(rows: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        if method == "A-VI":
            out = enc(xs[rows])
            m, ls = out[:, :latent_dim], out[:, latent_dim:]
        else:
            m, ls = loc_mean[rows], loc_log_sd[rows]
        xb = xt[rows]
        z = m + torch.exp(ls) * torch.randn(n_samples, len(rows), latent_dim, dtype=dt)
        thetas = [mu + torch.exp(lsd) * torch.randn((n_samples, *mu.shape), dtype=dt)
                  for mu, lsd in zip(mus, log_sds)]
        h = z
        for layer in range(n_layers):
            w, b = thetas[2 * layer], thetas[2 * layer + 1]
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if layer < n_layers - 1:
                h = torch.nn.functional.leaky_relu(h, 0.01)
        lik = (-0.5 / obs_scale ** 2 * ((xb - h) ** 2).sum() / n_samples
               - len(rows) * dim * (HALF_LOG_2PI + math.log(obs_scale)))
        prior_z = -0.5 * (z * z).sum() / n_samples - len(rows) * latent_dim * HALF_LOG_2PI
        prior_theta = sum(-0.5 * (t * t).sum() for t in thetas) / n_samples - n_theta * HALF_LOG_2PI
        entropy = scale * ls.sum() + sum(lsd.sum() for lsd in log_sds)
        elbo = prior_theta + scale * (lik + prior_z) + entropy
        elbo.backward()
        opt.step()

    per_epoch = math.ceil(n / batch)
    perm = torch.randperm(n)
    batches = [torch.sort(perm[i:i + batch]).values for i in range(0, n, batch)]
    for i in range(per_epoch):  # warm-up epoch
        step(batches[i])
    times = []
    left = n_iter
    while left > 0:
        k = min(per_epoch, left)
        t0 = time.perf_counter()
        for i in range(k):
            step(batches[i])
        times.append((time.perf_counter() - t0) * per_epoch / k)
        left -= k
    return Timing(f"PyTorch {torch.__version__} float64", tuple(times)), ""


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip-fashion", action="store_true", help="only the digits case")
    args = parser.parse_args()
    print(f"# bench_dgm — {machine_line()}, avicore threads {avicore.get_num_threads()}")
    cases = []
    from avicore.datasets import load_digits

    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer; got {args.repeats}")
    epochs = min(args.repeats, 2) if args.quick else args.repeats  # timed epochs per case and side
    digits = load_digits().x
    per_epoch = math.ceil(digits.shape[0] / 100)
    cases.append(("digits N=1797 d=8 (64,64) B=100 S=1", digits, 8, (64, 64), 64, 100, 1, epochs * per_epoch))
    if not args.skip_fashion:
        rng = np.random.default_rng(0)
        fashion = rng.uniform(0.0, 1.0, (10_000, 784)) * (rng.uniform(size=(10_000, 1)) < 0.5)
        cases.append(("FashionMNIST-shaped N=10000 d=64 (256,256) B=100", fashion, 64, (256, 256), 64, 100, 1,
                      20 if args.quick else epochs * 100))
    print(f"{epochs} timed epoch(s) per case and side after a warm-up epoch"
          + (" (FashionMNIST size: 20 iterations, scaled to an epoch)" if args.quick and not args.skip_fashion
             else ""))
    for method in ("A-VI", "F-VI"):
        rows = []
        for label, x, d, hidden, width, batch, s, n_iter in cases:
            anchor, why = torch_epoch(x, method, d, hidden, width, batch, s, n_iter)
            ours = avicore_epoch(x, method, d, hidden, width, batch, s, n_iter)
            if anchor is None:
                print(f"PyTorch unavailable ({why}); install it with `pip install torch`.")
            rows.append((label + (f" MLP({width})" if method == "A-VI" else ""), ours, anchor))
        print_table(f"{method}: seconds per epoch", rows, goal="≥ 1.5× faster on digits")


if __name__ == "__main__":
    main()
