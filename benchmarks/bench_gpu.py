"""The GPU table of issues 13 and 14 in one run: avicore cuda (device-resident and with host arrays), avicore cython
on every host thread, and the GPU peer where there is one, side by side, with agreement checks; JSON out.

Rows (full sizes; ``--quick`` shrinks every one so the script runs in seconds, e.g. under the CUDA simulator):

- forward-backward, 10,000 sequences × 1,000 steps, K = 32 — peer: eager PyTorch f64 (one matrix product per
  step over all sequences, scaled recursions, posteriors);
- Viterbi, the same problem;
- forward-backward, 10,000 × 1,000, K = 8;
- ``quadrature.expected_log_lik``, Bernoulli-logit, N = 10⁷, 20 nodes;
- ``chain.smoother``, 10,000 × 1,000, d = 4, p = 2;
- the HMM layouts timed against each other (one thread per sequence vs one block per sequence, K = 8 and 32),
  to set ``avicore.kernels._hmm_cuda.THREAD_LAYOUT_MAX_K``;
- then the fit rows of issue 14 (F-VI, A-VI, BayesianDecoder), from ``benchmarks/gpu_fit_rows.py`` when it exists.

Columns: ``avicore_cuda_s`` — inputs already on the GPU, outputs left there (device arrays in, device arrays
out; the time includes validation on the device and a final synchronisation); ``avicore_cuda_host_io_s`` — NumPy
in, NumPy out with ``backend="cuda"`` (through the pinned staging buffers); ``cython_s`` — ``backend="cython"`` on
all host threads; ``peer_s``; ``max_abs_diff`` — cuda against cython on the same input; ``transfer_floor_s`` —
the bytes a host-array call must move, divided by the pinned PCIe bandwidth measured at the start. Times are the
minimum over ``--repeats`` runs after one warm-up run (compilation).

Run on a GPU machine from the repository root::

    python3 setup.py build_ext --inplace -j 16
    PYTHONPATH=$PWD python benchmarks/bench_gpu.py --out gpu.json

Dry run without a GPU: ``NUMBA_ENABLE_CUDASIM=1 PYTHONPATH=$PWD python benchmarks/bench_gpu.py --quick``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import format_seconds, machine_line, measure

import avicore
from avicore import _config, _device, backends, chain, hmm, quadrature
from avicore.gp.likelihoods import Bernoulli
from avicore.kernels import _hmm_cuda

#: Largest |cuda - cython| a row may show and still count as agreeing (the outputs are O(1)-O(10⁴) sums).
AGREEMENT = 1e-6

ROW_KEYS = ("case", "avicore_cuda_s", "avicore_cuda_host_io_s", "cython_s", "peer", "peer_s", "max_abs_diff",
            "transfer_floor_s")

FULL = {"hmm_seqs": 10_000, "hmm_len": 1_000, "ell_n": 10_000_000, "chain_seqs": 10_000, "chain_len": 1_000,
        "pcie_bytes": 256 * 2**20}
TINY = {"hmm_seqs": 3, "hmm_len": 4, "ell_n": 64, "chain_seqs": 3, "chain_len": 4, "pcie_bytes": 2**16}


def sync() -> None:
    _device.cuda().synchronize()


def to_gpu(x: np.ndarray):
    """A device array of the kind avicore returns (CuPy when importable, else Numba)."""
    cp = _device._cupy()
    if cp is not None:
        return cp.asarray(x)
    return _device.cuda().to_device(np.ascontiguousarray(x))


def to_cpu(x) -> np.ndarray:
    return np.asarray(_device.as_numba(x, "result").copy_to_host())


def timed(fn: Callable[[], object], repeats: int) -> float:
    def run():
        fn()
        sync()
    return measure("", run, repeats=repeats, warmup=1).min


def row(case: str, cuda_s: float, host_s: float | None, cython_s: float, diff: float, floor: float | None,
        peer: str | None = None, peer_s: float | None = None) -> dict:
    return {"case": case, "avicore_cuda_s": cuda_s, "avicore_cuda_host_io_s": host_s, "cython_s": cython_s,
            "peer": peer, "peer_s": peer_s, "max_abs_diff": diff, "transfer_floor_s": floor}


# ---------------------------------------------------------------------------------------------------------------
# PCIe bandwidth
# ---------------------------------------------------------------------------------------------------------------

def measure_pcie(nbytes: int) -> dict[str, float]:
    """Pinned host→device and device→host bandwidth in bytes/s (best of 3 copies of ``nbytes``)."""
    nc = _device.cuda()
    pinned = nc.pinned_array(nbytes, dtype=np.uint8)
    pinned[:] = 1
    dev = nc.device_array(nbytes, dtype=np.uint8)
    up = measure("", lambda: (dev.copy_to_device(pinned), sync()), repeats=3).min
    down = measure("", lambda: (dev.copy_to_host(pinned), sync()), repeats=3).min
    return {"h2d_bytes_per_s": nbytes / up, "d2h_bytes_per_s": nbytes / down}


def floor(pcie: dict[str, float], bytes_in: int, bytes_out: int) -> float:
    return bytes_in / pcie["h2d_bytes_per_s"] + bytes_out / pcie["d2h_bytes_per_s"]


# ---------------------------------------------------------------------------------------------------------------
# HMM
# ---------------------------------------------------------------------------------------------------------------

def hmm_problem(n_seq: int, length: int, K: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    log_lik = rng.standard_normal((n_seq * length, K)) * 2.0
    A = rng.dirichlet(np.ones(K), size=K)
    return log_lik, np.log(A), np.log(rng.dirichlet(np.ones(K))), np.full(n_seq, length)


def torch_forward_backward(torch, log_lik, log_A, log_pi, n_seq: int, length: int):
    """Scaled forward-backward of equal-length sequences in eager PyTorch f64: one (S, K) @ (K, K) per step."""
    dev = "cuda"
    ll = torch.as_tensor(log_lik.reshape(n_seq, length, -1), device=dev)
    A = torch.as_tensor(np.exp(log_A), device=dev)
    pi = torch.as_tensor(np.exp(log_pi), device=dev)

    def run():
        m = ll.amax(dim=2, keepdim=True)
        e = torch.exp(ll - m)
        alpha = torch.empty_like(ll)
        c = torch.empty(n_seq, length, 1, device=dev, dtype=torch.float64)
        a = pi * e[:, 0]
        c[:, 0] = a.sum(1, keepdim=True)
        alpha[:, 0] = a / c[:, 0]
        for t in range(1, length):
            a = (alpha[:, t - 1] @ A) * e[:, t]
            c[:, t] = a.sum(1, keepdim=True)
            alpha[:, t] = a / c[:, t]
        beta = torch.ones(n_seq, A.shape[0], device=dev, dtype=torch.float64)
        post = torch.empty_like(ll)
        post[:, -1] = alpha[:, -1]
        for t in range(length - 2, -1, -1):
            beta = ((e[:, t + 1] * beta) @ A.T) / c[:, t + 1]
            post[:, t] = alpha[:, t] * beta
        log_evidence = (torch.log(c[..., 0]) + m[..., 0]).sum(1)
        return log_evidence, post

    return run


def hmm_rows(sizes: dict, repeats: int, pcie: dict, peers: dict) -> list[dict]:
    return (hmm_case(sizes, 32, repeats, pcie, peers, with_viterbi=True, with_peer=True)
            + hmm_case(sizes, 8, repeats, pcie, peers, with_viterbi=False, with_peer=False))


def hmm_case(sizes: dict, K: int, repeats: int, pcie: dict, peers: dict, *, with_viterbi: bool,
             with_peer: bool) -> list[dict]:
    n_seq, length = sizes["hmm_seqs"], sizes["hmm_len"]
    rows = []
    log_lik, log_A, log_pi, lengths = hmm_problem(n_seq, length, K)
    d_ll = to_gpu(log_lik)
    ref = hmm.forward_backward(log_lik, log_A, log_pi, lengths, backend="cython")
    got = hmm.forward_backward(d_ll, log_A, log_pi, lengths)
    sync()
    diff = max(float(np.max(np.abs(to_cpu(got.posteriors) - ref.posteriors))),
               float(np.max(np.abs(to_cpu(got.log_likelihood) - ref.log_likelihood))),
               float(np.max(np.abs(to_cpu(got.transition_counts) - ref.transition_counts))))
    cuda_s = timed(lambda d=d_ll: hmm.forward_backward(d, log_A, log_pi, lengths), repeats)
    host_s = timed(lambda: hmm.forward_backward(log_lik, log_A, log_pi, lengths, backend="cuda"), repeats)
    cy_s = timed(lambda: hmm.forward_backward(log_lik, log_A, log_pi, lengths, backend="cython"), repeats)
    peer, peer_s = None, None
    if with_peer:
        peer, peer_s = "eager PyTorch f64 (one matmul per step)", None
        torch = peers.get("torch")
        if torch is None:
            peer += f" — missing ({peers['torch_error']})"
        else:
            run = torch_forward_backward(torch, log_lik, log_A, log_pi, n_seq, length)
            _, post = run()
            torch.cuda.synchronize()
            peer_diff = float(np.max(np.abs(post.cpu().numpy().reshape(log_lik.shape) - ref.posteriors)))
            peer += f" (max |posterior diff| vs cython {peer_diff:.1e})"
            peer_s = measure("", lambda: (run(), torch.cuda.synchronize()), repeats=repeats).min
    nbytes = log_lik.nbytes
    rows.append(row(f"forward-backward {n_seq:,} x {length:,} x K={K}", cuda_s, host_s, cy_s, diff,
                    floor(pcie, nbytes, nbytes), peer, peer_s))
    if with_viterbi:
        ref_v = hmm.viterbi(log_lik, log_A, log_pi, lengths, backend="cython")
        got_v = hmm.viterbi(d_ll, log_A, log_pi, lengths)
        mismatched = int(np.sum(to_cpu(got_v.states) != ref_v.states))
        diff_v = float(np.max(np.abs(to_cpu(got_v.log_prob) - ref_v.log_prob)))
        if mismatched:
            print(f"note: Viterbi K={K}: {mismatched} states differ between cuda and cython (ties?)")
        rows.append(row(f"Viterbi {n_seq:,} x {length:,} x K={K}",
                        timed(lambda d=d_ll: hmm.viterbi(d, log_A, log_pi, lengths), repeats),
                        timed(lambda: hmm.viterbi(log_lik, log_A, log_pi, lengths, backend="cuda"), repeats),
                        timed(lambda: hmm.viterbi(log_lik, log_A, log_pi, lengths, backend="cython"), repeats),
                        diff_v, floor(pcie, nbytes, log_lik.shape[0] * 8)))
    return rows


def layout_rows(sizes: dict, repeats: int) -> list[dict]:
    """Forward-backward and Viterbi, device-resident, in each layout: which one is faster at K = 8 and 32."""
    n_seq, length = sizes["hmm_seqs"], sizes["hmm_len"]
    rows = []
    saved = _hmm_cuda.THREAD_LAYOUT_MAX_K
    try:
        for K in (8, 32):
            problem = hmm_problem(n_seq, length, K, seed=1)
            d_problem = (to_gpu(problem[0]), *problem[1:])
            cy_s = timed(lambda p=problem: hmm.forward_backward(*p, backend="cython"), repeats)
            ref = hmm.forward_backward(*problem, backend="cython").posteriors
            for name, limit in (("thread/sequence", 10**9), ("block/sequence", 0)):
                _hmm_cuda.THREAD_LAYOUT_MAX_K = limit
                got = to_cpu(hmm.forward_backward(*d_problem).posteriors)
                rows.append(row(f"layout {name}: forward-backward K={K}",
                                timed(lambda p=d_problem: hmm.forward_backward(*p), repeats),
                                None, cy_s, float(np.max(np.abs(got - ref))), None))
    finally:
        _hmm_cuda.THREAD_LAYOUT_MAX_K = saved
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Quadrature and chain
# ---------------------------------------------------------------------------------------------------------------

def ell_rows(sizes: dict, repeats: int, pcie: dict) -> list[dict]:
    n = sizes["ell_n"]
    rng = np.random.default_rng(2)
    y = (rng.random(n) < 0.5).astype(np.float64)
    mean, var = rng.standard_normal(n), rng.uniform(0.1, 2.0, n)
    lik = Bernoulli("logit")
    d_args = (to_gpu(y), to_gpu(mean), to_gpu(var))
    ref = quadrature.expected_log_lik(lik, y, mean, var, backend="cython")
    got = quadrature.expected_log_lik(lik, *d_args)
    diff = max(float(np.max(np.abs(to_cpu(getattr(got, f)) - getattr(ref, f))))
               for f in ("value", "grad_mean", "grad_var"))
    return [row(f"expected_log_lik Bernoulli-logit N={n:,}",
                timed(lambda: quadrature.expected_log_lik(lik, *d_args), repeats),
                timed(lambda: quadrature.expected_log_lik(lik, y, mean, var, backend="cuda"), repeats),
                timed(lambda: quadrature.expected_log_lik(lik, y, mean, var, backend="cython"), repeats),
                diff, floor(pcie, 3 * 8 * n, 3 * 8 * n))]


def chain_rows(sizes: dict, repeats: int, pcie: dict) -> list[dict]:
    n_seq, length, d, p = sizes["chain_seqs"], sizes["chain_len"], 4, 2
    rng = np.random.default_rng(3)
    A = rng.normal(size=(d, d))
    A *= 0.95 / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.normal(size=(d, d))
    params = (A, 0.1 * np.eye(d) + 0.05 * B @ B.T, rng.normal(size=(p, d)), 0.5 * np.eye(p), np.zeros(d), np.eye(d))
    x = rng.standard_normal((n_seq * length, p))
    lengths = np.full(n_seq, length)
    d_x = to_gpu(x)
    ref = chain.smoother(x, *params, lengths=lengths, backend="cython")
    got = chain.smoother(d_x, *params, lengths=lengths)
    diff = max(float(np.max(np.abs(to_cpu(getattr(got, f)) - getattr(ref, f))))
               for f in ("means", "covariances", "cross_covariances", "log_evidence"))
    out_bytes = x.shape[0] * (d + 2 * d * d) * 8
    return [row(f"chain.smoother {n_seq:,} x {length:,}, d={d}, p={p}",
                timed(lambda: chain.smoother(d_x, *params, lengths=lengths), repeats),
                timed(lambda: chain.smoother(x, *params, lengths=lengths, backend="cuda"), repeats),
                timed(lambda: chain.smoother(x, *params, lengths=lengths, backend="cython"), repeats),
                diff, floor(pcie, x.nbytes, out_bytes))]


# ---------------------------------------------------------------------------------------------------------------
# Issue 14's fit rows, report
# ---------------------------------------------------------------------------------------------------------------

def fit_rows(quick: bool, host_threads: int) -> list[dict]:
    try:
        module = importlib.import_module("gpu_fit_rows")
    except ModuleNotFoundError as exc:
        if exc.name != "gpu_fit_rows":
            raise
        print("\nnote: benchmarks/gpu_fit_rows.py is absent: no F-VI / A-VI / decoder fit rows in this run.")
        return []
    rows = list(module.run_fit_rows(quick=quick, host_threads=host_threads))
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"gpu_fit_rows.run_fit_rows returned a row without {missing}: {r}")
    return rows


def load_peers() -> dict:
    peers: dict = {}
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("torch.cuda.is_available() is False")
        peers["torch"] = torch
    except Exception as exc:  # ImportError, or a CPU-only build
        peers["torch"] = None
        peers["torch_error"] = f"{type(exc).__name__}: {exc}"
    return peers


def _fmt(t: float | None) -> str:
    return "—" if t is None else format_seconds(t)


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"


def print_report(rows: list[dict]) -> None:
    head = (f"| {'case':<48} | {'cuda (device)':>13} | {'cuda host I/O':>13} | {'cython':>10} | {'cy/cuda':>8} | "
            f"{'cy/host-I/O':>11} | {'peer':>10} | {'peer/cuda':>9} | {'max diff':>9} | {'PCIe floor':>10} |")
    print("\n" + head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['case']:<48} | {_fmt(r['avicore_cuda_s']):>13} | {_fmt(r['avicore_cuda_host_io_s']):>13} | "
              f"{_fmt(r['cython_s']):>10} | {_ratio(r['cython_s'], r['avicore_cuda_s']):>8} | "
              f"{_ratio(r['cython_s'], r['avicore_cuda_host_io_s']):>11} | {_fmt(r['peer_s']):>10} | "
              f"{_ratio(r['peer_s'], r['avicore_cuda_s']):>9} | {r['max_abs_diff']:>9.1e} | "
              f"{_fmt(r['transfer_floor_s']):>10} |")
    peers = [(r["case"], r["peer"]) for r in rows if r["peer"]]
    for case, peer in peers:
        print(f"peer of {case!r}: {peer}")
    bad = [r["case"] for r in rows if not r["max_abs_diff"] <= AGREEMENT]
    print(f"agreement cuda vs cython (max |diff| <= {AGREEMENT:g}): "
          + ("all rows" if not bad else f"FAILED for {bad}"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a dry run, e.g. under the simulator)")
    parser.add_argument("--sizes", choices=["full", "tiny"], default=None, help="same as --quick when 'tiny'")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (minimum reported)")
    parser.add_argument("--out", default=None, help="write the rows and the machine description as JSON here")
    parser.add_argument("--no-fits", action="store_true", help="skip the fit rows of benchmarks/gpu_fit_rows.py")
    args = parser.parse_args(argv)
    quick = args.quick or args.sizes == "tiny"
    sizes = TINY if quick else FULL
    if quick:
        _config.CUDA_THREADS_PER_BLOCK = 32 if backends.cuda_is_real_gpu() else 4
    status = backends.available()["cuda"]
    if not status.available:
        raise SystemExit(f"the cuda backend is unavailable here: {status.detail}")
    gpu = status.detail
    host_threads = _config.get_num_threads()
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"# avicore {avicore.__version__} GPU benchmark, {now:%Y-%m-%d %H:%M} UTC")
    print(f"cuda: {gpu}; device arrays returned as: {_device.output_kind()}")
    print(f"host: {machine_line()}; cython on {host_threads} threads; sizes: {'tiny' if quick else 'full'}")
    if not backends.cuda_is_real_gpu():
        print("note: not a real GPU (simulator): timings mean nothing; this run only checks the script.")
    t0 = time.perf_counter()
    pcie = measure_pcie(sizes["pcie_bytes"])
    print(f"pinned PCIe: host->device {pcie['h2d_bytes_per_s'] / 1e9:.1f} GB/s, "
          f"device->host {pcie['d2h_bytes_per_s'] / 1e9:.1f} GB/s")
    peers = load_peers()
    rows = hmm_rows(sizes, args.repeats, pcie, peers)
    rows += ell_rows(sizes, args.repeats, pcie)
    rows += chain_rows(sizes, args.repeats, pcie)
    rows += layout_rows(sizes, args.repeats)
    _device.release()
    if not args.no_fits:
        rows += fit_rows(quick, host_threads)
    print_report(rows)
    elapsed = time.perf_counter() - t0
    print(f"\ntotal {elapsed:.0f} s")
    report = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "gpu": gpu, "host": machine_line(), "host_threads": host_threads, "python": platform.python_version(),
              "numpy": np.__version__, "sizes": sizes, "quick": quick, "pcie": pcie,
              "device_array_kind": _device.output_kind(), "elapsed_s": elapsed, "rows": rows}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
