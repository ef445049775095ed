"""Host side of the CUDA HMM kernels: buffers, launches and the layout choice (the kernels are in
:mod:`avicore.kernels._hmm_cuda` and :mod:`avicore.kernels._hmm_cuda_small`, whose docstrings give the algorithm).

Device arrays in, device arrays out (``*_device``: outputs from ``alloc``, the caller's arrays by default); the
host-array entry points (``_*_cuda``, called by the dispatcher of :mod:`avicore.kernels.hmm`) upload through
:mod:`avicore._device`'s pinned staging buffers into its workspace and download the results the same way. Every
scratch buffer is a workspace view: no device allocation once the sizes have been seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import _config, _device
from . import _hmm_cuda as _hc

Alloc = Callable[[str, tuple, object], tuple[Any, Any]]


workspace_alloc = _device.workspace_alloc
user_alloc = _device.user_alloc


def _filter(kern: dict, log_lik: Any, log_transmat: np.ndarray, log_startprob: np.ndarray,
            offsets: np.ndarray, backward: bool, alloc: Alloc) -> SimpleNamespace:
    """Run the scaled pass over the device array ``log_lik``, then the log-space pass on the sequences it flagged.

    Leaves on the device: ``post`` (posteriors when ``backward``, else the forward filter: normalised for
    sequences with ``flags == 0``, log alpha for the others), ``loglik`` (both from ``alloc``) and, with
    ``backward``, the per-block transition-count buffers (workspace). Every other buffer is a workspace view.
    """
    from ._hmm_model import _prepare_model

    T, K = log_lik.shape
    n_seq = offsets.shape[0] - 1
    n_threads = _hc._block_threads(K)
    shared = _hc._check_shared(K, n_threads, 2)
    md = _prepare_model(log_transmat, log_startprob, pad=1)
    ws = _device.workspace()
    post_user, post = alloc("hmm.post", (T, K), np.float64)
    loglik_user, loglik = alloc("hmm.loglik", (n_seq,), np.float64)
    out = SimpleNamespace(
        K=K, md=md, offsets=ws.put("hmm.offsets", offsets), log_lik=log_lik,
        trans=ws.put("hmm.trans", md["A"].ravel()), trans_t=ws.put("hmm.trans_t", md["At"].ravel()),
        post=post, post_user=post_user, loglik=loglik, loglik_user=loglik_user,
        flags=ws.get("hmm.flags", n_seq, np.int8), n_scaled=0, n_log=0, layout="block")
    per_block = 8 * K * K if backward else 0
    if md["all_log"]:
        ids = np.arange(n_seq, dtype=np.int64)
        out.flags.copy_to_device(np.ones(n_seq, dtype=np.int8))
        out.host_flags = np.ones(n_seq, dtype=np.int8)
        out.scaled_counts = ws.get("hmm.scaled_counts", 1)
    elif _hc._thread_layout(K):
        from . import _hmm_cuda_small

        out.layout = "thread"
        out.n_scaled = n_thr = _hc._thread_grid(n_seq, per_block)
        out.scaled_counts = ws.get("hmm.scaled_counts", K * K * n_thr if backward else 1)
        with _hc._quiet():
            _hmm_cuda_small._kernels()["fb_scaled"][_device.launch_1d(n_thr)](
                log_lik, out.trans, out.trans_t, ws.put("hmm.pi", md["pi"]), md["check_reach"], out.offsets,
                post, ws.get("hmm.scale", T), ws.get("hmm.shift", T), loglik, out.flags,
                ws.get("hmm.work", 2 * K * n_thr), out.scaled_counts, backward)
        out.host_flags = out.flags.copy_to_host()
        ids = np.flatnonzero(out.host_flags).astype(np.int64)
    else:
        out.n_scaled = _hc._grid(n_seq, per_block)
        out.scaled_counts = ws.get("hmm.scaled_counts", max(1, out.n_scaled * K * K) if backward else 1)
        shared_counts = backward and shared + 8 * K * K <= _hc._SHARED_BYTES
        with _hc._quiet():
            kern["fb_scaled"][out.n_scaled, n_threads, 0, shared + (8 * K * K if shared_counts else 0)](
                log_lik, out.trans, out.trans_t, ws.put("hmm.pi", md["pi"]), md["check_reach"], out.offsets,
                post, ws.get("hmm.scale", T), ws.get("hmm.shift", T), loglik, out.flags, out.scaled_counts,
                backward, shared_counts)
        out.host_flags = out.flags.copy_to_host()
        ids = np.flatnonzero(out.host_flags).astype(np.int64)
    out.log_trans_t = ws.put("hmm.log_trans_t", md["log_transmat_t"].ravel())
    if ids.size:
        out.n_log = _hc._grid(ids.size, per_block)
        out.log_counts = ws.get("hmm.log_counts", out.n_log * K * K if backward else 1)
        with _hc._quiet():
            kern["fb_log"][out.n_log, n_threads, 0, shared](
                log_lik, ws.put("hmm.log_trans", log_transmat.ravel()), out.log_trans_t,
                ws.put("hmm.log_start", log_startprob), out.offsets, ws.put("hmm.ids", ids), post, loglik,
                out.log_counts, backward)
    else:
        out.log_counts = ws.get("hmm.log_counts", 1)
    out.log_ids = ids
    if not backward:
        out.n_scaled = out.n_log = 0
    return out


def _impossible_loglik(dev: SimpleNamespace) -> np.ndarray:
    """Host (n_sequences,) array: -inf for sequences with no possible path, else 0 (copies only the log-space
    sequences' values: only they can be -inf)."""
    flags = np.zeros(dev.host_flags.shape[0])
    if dev.log_ids.size:
        values = dev.loglik.copy_to_host()
        flags[dev.log_ids] = np.where(values[dev.log_ids] == -math.inf, -math.inf, 0.0)
    return flags


def forward_backward_device(log_lik: Any, log_transmat: np.ndarray, log_startprob: np.ndarray,
                            offsets: np.ndarray, alloc: Alloc = user_alloc) -> tuple[tuple, np.ndarray]:
    """Forward-backward of the device array ``log_lik`` (validated, C-contiguous float64).

    Returns ``((log_likelihood, posteriors, transition_counts, initial_counts), impossible)``: the four
    outputs as the objects ``alloc`` made (device arrays) and a host array that is -inf exactly for the
    sequences with no possible path.
    """
    kern = _hc._kernels()
    K = log_lik.shape[1]
    dev = _filter(kern, log_lik, log_transmat, log_startprob, offsets, True, alloc)
    counts_user, d_counts = alloc("hmm.counts", (K, K), np.float64)
    initial_user, d_initial = alloc("hmm.initial", (K,), np.float64)
    tpb = max(1, min(int(_config.CUDA_THREADS_PER_BLOCK), K * K))
    row_scale, step = (dev.n_scaled, 1) if dev.layout == "thread" else (1, K * K)
    with _hc._quiet():
        kern["reduce_counts"][-(-K * K // tpb), tpb](dev.trans, dev.scaled_counts, dev.n_scaled, row_scale, step,
                                                     dev.log_counts, dev.n_log, d_counts)
        kern["initial_counts"][-(-K // tpb), tpb](dev.post, dev.offsets, d_initial)
    return (dev.loglik_user, dev.post_user, counts_user, initial_user), _impossible_loglik(dev)


def _forward_backward_cuda(log_lik: np.ndarray, log_transmat: np.ndarray, log_startprob: np.ndarray,
                           offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward over a ragged batch of host arrays on the GPU (through the staging buffers and the
    workspace).

    Returns ``(log_likelihood (n_sequences,), posteriors (T, K), transition_counts (K, K), initial_counts (K,))``
    as float64 host arrays; see the module docstring for the algorithm.
    """
    d_log_lik = _device.upload(log_lik, "hmm.in.log_lik")
    outs, _ = forward_backward_device(d_log_lik, log_transmat, log_startprob, offsets, workspace_alloc)
    return tuple(_device.download(a) for a in outs)


def viterbi_device(log_lik: Any, log_transmat: np.ndarray, log_startprob: np.ndarray, offsets: np.ndarray,
                   alloc: Alloc = user_alloc) -> tuple[Any, Any]:
    """Viterbi of the device array ``log_lik``; returns ``(log_prob, states)`` as the objects ``alloc`` made."""
    kern = _hc._kernels()
    T, K = log_lik.shape
    n_seq = offsets.shape[0] - 1
    n_threads = _hc._block_threads(K)
    shared = _hc._check_shared(K, n_threads, 2)
    ws = _device.workspace()
    log_prob_user, d_log_prob = alloc("hmm.log_prob", (n_seq,), np.float64)
    states_user, d_states = alloc("hmm.states", (T,), np.int64)
    head = (log_lik, ws.put("hmm.log_trans", log_transmat.ravel()), ws.put("hmm.log_start", log_startprob),
            ws.put("hmm.offsets", offsets))
    tail = (ws.get("hmm.backptr", (T, K), np.int32), d_log_prob, d_states)
    with _hc._quiet():
        if _hc._thread_layout(K):
            from . import _hmm_cuda_small

            n_thr = _hc._thread_grid(n_seq)
            _hmm_cuda_small._kernels()["viterbi"][_device.launch_1d(n_thr)](*head, ws.get("hmm.work", 2 * K * n_thr),
                                                                     *tail)
        else:
            kern["viterbi"][_hc._grid(n_seq), n_threads, 0, shared](*head, *tail)
    return log_prob_user, states_user


def _viterbi_cuda(log_lik: np.ndarray, log_transmat: np.ndarray, log_startprob: np.ndarray,
                  offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most probable state path of every sequence; ties go to the lowest state index.

    Returns ``(log_prob (n_sequences,), states (T,) int64)``.
    """
    d_log_lik = _device.upload(log_lik, "hmm.in.log_lik")
    outs = viterbi_device(d_log_lik, log_transmat, log_startprob, offsets, workspace_alloc)
    return tuple(_device.download(a) for a in outs)


def sample_posterior_device(log_lik: Any, log_transmat: np.ndarray, log_startprob: np.ndarray,
                            offsets: np.ndarray, n_samples: int, seed: int,
                            alloc: Alloc = user_alloc) -> tuple[Any, np.ndarray]:
    """Posterior samples of the device array ``log_lik``: ``(samples (n_samples, T) int64 from alloc,
    impossible)`` with ``impossible`` as in :func:`forward_backward_device`."""
    from ._counter_rng import hmm_seed_key

    kern = _hc._kernels()
    T, K = log_lik.shape
    n_seq = offsets.shape[0] - 1
    ws_alloc = workspace_alloc
    dev = _filter(kern, log_lik, log_transmat, log_startprob, offsets, False, ws_alloc)
    samples_user, d_samples = alloc("hmm.samples", (n_samples, T), np.int64)
    blocks, tpb = _device.launch_1d(n_samples * n_seq)
    with _hc._quiet():
        kern["sample"][min(blocks, 65535), tpb](dev.post.reshape(T * K), dev.trans_t, dev.log_trans_t, K,
                                                dev.offsets, dev.flags, dev.loglik, np.uint64(hmm_seed_key(seed)),
                                                d_samples)
    return samples_user, _impossible_loglik(dev)


def _sample_posterior_cuda(log_lik: np.ndarray, log_transmat: np.ndarray, log_startprob: np.ndarray,
                           offsets: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
    """Exact posterior samples (forward filtering, backward sampling) with the counter-based uniforms.

    Returns ``(n_samples, T)`` int64; ``-1`` throughout a sequence with no possible path. Sample ``s`` at row
    ``t`` uses ``u[s, t]`` of :func:`avicore.kernels._counter_rng.hmm_sample_uniforms`, so the draws match the
    other backends (barring a uniform within rounding of a CDF step).
    """
    d_log_lik = _device.upload(log_lik, "hmm.in.log_lik")
    samples, _ = sample_posterior_device(d_log_lik, log_transmat, log_startprob, offsets, n_samples, seed,
                                         workspace_alloc)
    return _device.download(samples)
