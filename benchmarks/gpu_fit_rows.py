"""Issue 14's GPU fit rows: F-VI, A-VI and BayesianDecoder iterations, avicore cuda vs cython vs a GPU peer.

``run_fit_rows(quick, host_threads)`` returns one dict per case with the keys of ``benchmarks/bench_gpu.py``
(``case``, ``avicore_cuda_s``, ``avicore_cuda_host_io_s``, ``cython_s``, ``peer``, ``peer_s``, ``max_abs_diff``,
``transfer_floor_s``), all times in seconds per iteration, and prints the projected wall time of the paper's
FashionMNIST configuration. ``bench_gpu.py`` imports it; it also runs alone::

    PYTHONPATH=$PWD python benchmarks/gpu_fit_rows.py                # full sizes, on a GPU
    NUMBA_ENABLE_CUDASIM=1 PYTHONPATH=$PWD python benchmarks/gpu_fit_rows.py --quick   # dry run, tiny sizes

How each number is taken:

- avicore (``backend="cuda"`` and ``backend="cython"`` on ``host_threads`` threads — ``"numba"`` for the decoder,
  which has no cython kernels): two fits of n₁ < n₂
  iterations after a warm-up fit (compilation), seconds per iteration = (seconds₂ − seconds₁)/(n₂ − n₁), where
  ``VIResult.seconds`` is the optimisation's wall time (set-up, upload and the final ELBO estimate excluded by the
  difference). Every fit here runs device-resident (:mod:`avicore._device_fit`, :mod:`avicore._decoder_fit`).
  ``max_abs_diff`` compares the two n₂ fits (trace, q(θ), q(zₙ), φ).
- peers on the same GPU, written as a user would: NumPyro (``AutoNormal``, ``Trace_ELBO``, ``lax.fori_loop`` over
  ``svi.update``) for F-VI; eager PyTorch float64 (``torch.optim.Adam``) for A-VI and the decoder. A peer that does
  not import (or has no GPU) gives ``peer_s = None`` and the reason in the case text.
- the decoder rows use random images of the FashionMNIST shape (timing only: the cost does not depend on pixels).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time

import numpy as np

import avicore
from avicore import _config, backends
from avicore.encoders import MLP
from avicore.models import BayesianDecoder, LinearHierarchical, NonlinearHierarchical

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------------------------
# avicore
# ---------------------------------------------------------------------------------------------------------------

def _per_iteration(make, x, n1: int, n2: int):
    """(seconds per iteration, the n₂ fit) of ``make().fit`` from two fits after a warm-up fit."""
    fit = {"lr": 1e-3, "seed": 0}
    make().fit(x, n_iter=2, **fit)  # compilation, first-touch allocations
    r1 = make().fit(x, n_iter=n1, **fit)
    r2 = make().fit(x, n_iter=n2, **fit)
    return max(r2.seconds - r1.seconds, 0.0) / (n2 - n1), r2


def _max_abs_diff(a, b) -> float:
    diffs = [np.max(np.abs(getattr(a, f) - getattr(b, f))) for f in ("trace", "global_mean", "global_sd",
                                                                       "local_mean", "local_sd")]
    if a.encoder_params is not None:
        diffs.append(np.max(np.abs(a.encoder_params - b.encoder_params)))
    return float(max(diffs))


def _avicore_pair(make, x, n1: int, n2: int, host_threads: int, host: str = "cython"):
    """(cuda s/iteration, ``host`` backend s/iteration on ``host_threads`` threads, max |cuda − host|)."""
    cuda_s, rc = _per_iteration(lambda: make("cuda"), x, n1, n2)
    old = avicore.get_num_threads()
    avicore.set_num_threads(host_threads)
    try:
        cython_s, rh = _per_iteration(lambda: make(host), x, n1, n2)
    finally:
        avicore.set_num_threads(old)
    return cuda_s, cython_s, _max_abs_diff(rc, rh)


def _row(case, cuda_s, cython_s, diff, peer, peer_s, why) -> dict:
    if peer is not None and peer_s is None:
        case = f"{case} [{peer} missing: {why}]"
    return {"case": case, "avicore_cuda_s": cuda_s, "avicore_cuda_host_io_s": None, "cython_s": cython_s,
            "peer": peer, "peer_s": peer_s, "max_abs_diff": diff, "transfer_floor_s": None}


# ---------------------------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------------------------

def numpyro_fvi_step(x: np.ndarray, n_samples: int, n_iter: int) -> tuple[float | None, str]:
    """NumPyro's f64 F-VI step on the linear model on the GPU (``bench_vi.numpyro_step``: AutoNormal, Trace_ELBO,
    ``lax.fori_loop`` over ``svi.update``), or (None, why)."""
    try:
        import jax

        if jax.default_backend() != "gpu":
            return None, f"JAX runs on {jax.default_backend()!r}, not a GPU"
    except Exception as exc:  # ImportError or a broken install
        return None, f"{type(exc).__name__}: {exc}"
    from bench_vi import numpyro_step

    timing, why = numpyro_step(x, n_samples, n_iter, repeats=1)
    return (None, why) if timing is None else (timing.min, "")


def _torch_cuda():
    try:
        import torch
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not torch.cuda.is_available():
        return None, "torch.cuda.is_available() is False"
    return torch, ""


def _time_torch(torch, step, n_iter: int) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_iter):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n_iter


def torch_avi_step(x: np.ndarray, width: int, n_samples: int, n_iter: int) -> tuple[float | None, str]:
    """Eager PyTorch f64 A-VI step (MLP encoder, nonlinear model, Adam) on the GPU, or (None, why)."""
    torch, why = _torch_cuda()
    if torch is None:
        return None, why
    dev, dt = "cuda", torch.float64
    xt = torch.as_tensor(x, dtype=dt, device=dev)
    xs = (xt - xt.mean()) / xt.std()
    net = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                              torch.nn.ReLU(), torch.nn.Linear(width, 2)).to(device=dev, dtype=dt)
    glob = torch.zeros(2, dtype=dt, device=dev, requires_grad=True)
    opt = torch.optim.Adam([*net.parameters(), glob], lr=1e-3, maximize=True)
    n = x.shape[0]

    def step():
        out = net(xs)
        mean, log_scale = out[:, :1], out[:, 1:]
        z = mean + torch.exp(log_scale) * torch.randn(n, n_samples, dtype=dt, device=dev)
        theta = glob[0] + torch.exp(glob[1]) * torch.randn(n_samples, dtype=dt, device=dev)
        cz = torch.cos(z)
        r = xt - theta - z - z * torch.sin(z)
        log_joint = -0.5 * z * z - 2 * HALF_LOG_2PI - cz - 0.5 * r * r * torch.exp(-2.0 * cz)
        elbo = log_joint.sum(0).mean() + log_scale.sum() + glob[1]
        opt.zero_grad(set_to_none=True)
        elbo.backward()
        opt.step()

    return _time_torch(torch, step, n_iter), ""


def torch_decoder_step(x: np.ndarray, method: str, latent_dim: int, hidden: tuple[int, ...], width: int,
                       batch: int, n_samples: int, n_iter: int) -> tuple[float | None, str]:
    """Eager PyTorch f64 BayesianDecoder iteration (mean-field weights; F-VI locals or an MLP encoder) or (None,
    why)."""
    torch, why = _torch_cuda()
    if torch is None:
        return None, why
    dev, dt = "cuda", torch.float64
    torch.manual_seed(0)
    n, dim = x.shape
    xt = torch.as_tensor(x, dtype=dt, device=dev)
    widths = (latent_dim, *hidden, dim)
    mus, log_sds = [], []
    for fi, fo in itertools.pairwise(widths):
        for shape in ((fi, fo), (fo,)):
            mus.append((torch.randn(shape, dtype=dt, device=dev) * math.sqrt(2.0 / fi)).requires_grad_())
            log_sds.append(torch.full(shape, math.log(0.01), dtype=dt, device=dev, requires_grad=True))
    params = mus + log_sds
    if method == "A-VI":
        enc = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                  torch.nn.ReLU(), torch.nn.Linear(width, 2 * latent_dim)).to(device=dev, dtype=dt)
        params += list(enc.parameters())
    else:
        loc_mean = torch.zeros(n, latent_dim, dtype=dt, device=dev, requires_grad=True)
        loc_log_sd = torch.full((n, latent_dim), math.log(0.01), dtype=dt, device=dev, requires_grad=True)
        params += [loc_mean, loc_log_sd]
    opt = torch.optim.Adam(params, lr=1e-3, maximize=True)
    rows = torch.arange(min(batch, n), device=dev)
    scale = n / rows.numel()

    def step():
        opt.zero_grad(set_to_none=True)
        xb = xt[rows]
        if method == "A-VI":
            out = enc(xb)
            m, ls = out[:, :latent_dim], out[:, latent_dim:]
        else:
            m, ls = loc_mean[rows], loc_log_sd[rows]
        h = m + torch.exp(ls) * torch.randn(n_samples, rows.numel(), latent_dim, dtype=dt, device=dev)
        z = h
        thetas = [mu + torch.exp(lsd) * torch.randn((n_samples, *mu.shape), dtype=dt, device=dev)
                  for mu, lsd in zip(mus, log_sds)]
        for layer in range(len(widths) - 1):
            h = torch.baddbmm(thetas[2 * layer + 1].unsqueeze(1), h, thetas[2 * layer])
            if layer < len(widths) - 2:
                h = torch.nn.functional.leaky_relu(h, 0.01)
        lik = -0.5 * ((xb - h) ** 2).sum() / n_samples
        prior = -0.5 * (z * z).sum() / n_samples - sum(0.5 * (t * t).sum() for t in thetas) / n_samples
        elbo = scale * (lik + prior) + scale * ls.sum() + sum(lsd.sum() for lsd in log_sds)
        elbo.backward()
        opt.step()

    return _time_torch(torch, step, n_iter), ""


# ---------------------------------------------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------------------------------------------

def _sizes(quick: bool) -> dict:
    if quick:
        return {"fvi": [(16, 1), (8, 3), (24, 1)], "avi": (8, 2, 3), "iters": (1, 2), "peer_iters": 5,
                "dec": {"px": 6, "d": 2, "hidden": (3, 3), "batch": 3, "n": 6, "width": 2, "S": 1},
                "fashion_batch": 3}
    return {"fvi": [(1_000_000, 1), (10_000, 100), (10_000_000, 1)], "avi": (10_000, 100, 32), "iters": (100, 300),
            "peer_iters": 200, "dec": {"px": 784, "d": 64, "hidden": (256, 256), "batch": 100, "n": 10_000,
                                        "width": 64, "S": 1},
            "fashion_batch": 1_000}


def run_fit_rows(quick: bool, host_threads: int) -> list[dict]:
    """Every fit row of issue 14 (see the module docstring); prints the FashionMNIST projection."""
    sz = _sizes(quick)
    n1, n2 = sz["iters"]
    rows = []
    model = LinearHierarchical()
    for n_obs, n_samples in sz["fvi"]:
        x = model.simulate(n_obs, seed=0).x
        cuda_s, cython_s, diff = _avicore_pair(
            lambda b, s=n_samples: avicore.FVI(model, n_samples=s, backend=b, elbo_samples=2), x, n1, n2,
            host_threads)
        peer_s, why = numpyro_fvi_step(x, n_samples, sz["peer_iters"])
        rows.append(_row(f"F-VI step, linear, N={n_obs:.0e}, S={n_samples}, f64", cuda_s, cython_s, diff,
                         "NumPyro", peer_s, why))
    n_obs, n_samples, width = sz["avi"]
    nonlinear = NonlinearHierarchical()
    x = nonlinear.simulate(n_obs, seed=0).x
    cuda_s, cython_s, diff = _avicore_pair(
        lambda b: avicore.AVI(nonlinear, MLP(width), n_samples=n_samples, backend=b, elbo_samples=2), x, n1, n2,
        host_threads)
    peer_s, why = torch_avi_step(x, width, n_samples, sz["peer_iters"])
    rows.append(_row(f"A-VI step, MLP({width}), nonlinear, N={n_obs:.0e}, S={n_samples}", cuda_s, cython_s, diff,
                     "PyTorch eager f64", peer_s, why))
    dec = sz["dec"]
    images = np.random.default_rng(0).uniform(size=(dec["n"], dec["px"]))
    for method in ("F-VI", "A-VI"):
        # The decoder has no cython kernels: its host column is numba on all host threads.
        cuda_s, cython_s, diff = _avicore_pair(lambda b, m=method: _decoder_engine(m, dec, dec["batch"], b), images,
                                               n1, n2, host_threads, host="numba")
        peer_s, why = torch_decoder_step(images, method, dec["d"], dec["hidden"], dec["width"], dec["batch"],
                                         dec["S"], sz["peer_iters"])
        label = "" if method == "F-VI" else f" MLP({dec['width']})"
        rows.append(_row(f"BayesianDecoder {method}{label} iteration, FashionMNIST shape ({dec['px']} px, "
                         f"d={dec['d']}, hidden {dec['hidden']}, B={dec['batch']}; cython_s is numba)",
                         cuda_s, cython_s, diff, "PyTorch eager f64", peer_s, why))
    _print_fashion_projection(dec, sz["fashion_batch"], images, n1, n2)
    return rows


def _decoder_engine(method: str, dec: dict, batch: int, backend: str):
    model = BayesianDecoder(dec["d"], hidden=dec["hidden"])
    if method == "A-VI":
        return avicore.AVI(model, MLP(dec["width"]), n_samples=dec["S"], batch_size=batch, backend=backend,
                           elbo_samples=2)
    return avicore.FVI(model, n_samples=dec["S"], batch_size=batch, backend=backend, elbo_samples=2)


def _print_fashion_projection(dec: dict, batch: int, images: np.ndarray, n1: int, n2: int) -> None:
    """The paper's FashionMNIST configuration (10,000 images, minibatch 1,000, 5,000 epochs), projected."""
    per_epoch = math.ceil(images.shape[0] / batch)
    for method in ("F-VI", "A-VI"):
        step, _ = _per_iteration(lambda m=method: _decoder_engine(m, dec, batch, "cuda"), images, n1, n2)
        total = step * per_epoch * 5000
        print(f"projected FashionMNIST {method} (n={images.shape[0]}, minibatch {batch}, 5,000 epochs) on cuda: "
              f"{step * 1e3:.3g} ms/iteration × {per_epoch} iterations/epoch × 5,000 epochs = {total:.4g} s "
              f"({total / 60:.3g} min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a dry run, e.g. under the simulator)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="host threads of the cython rows")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if not backends.available()["cuda"].available:
        sys.exit(f"cuda backend unavailable: {backends.available()['cuda'].detail}")
    if not backends.cuda_is_real_gpu():
        _config.CUDA_THREADS_PER_BLOCK = 8  # the simulator runs every thread in Python
    rows = run_fit_rows(quick=args.quick, host_threads=args.threads)
    for r in rows:
        peer = "—" if r["peer_s"] is None else f"{r['peer_s'] * 1e3:.4g} ms"
        print(f"{r['case']}\n    cuda {r['avicore_cuda_s'] * 1e3:.4g} ms | cython-{args.threads} "
              f"{r['cython_s'] * 1e3:.4g} ms | {r['peer']} {peer} | max |cuda − cython| {r['max_abs_diff']:.2g}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
