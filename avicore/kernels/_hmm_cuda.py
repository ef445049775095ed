"""CUDA (numba-cuda) kernels for the HMM family: forward-backward, Viterbi and posterior sampling.

Called only by the dispatcher in :mod:`avicore.kernels.hmm` (whose docstring states the contract every backend
meets) with validated, C-contiguous float64 arrays and ``offsets`` (int64, ``n_sequences + 1``). Importing this
module imports nothing from Numba; the kernels are compiled on first use (:func:`_kernels`).

Layout of the work
------------------
One thread block per sequence (grid-stride when there are more sequences than blocks), threads over states: a
block has ``S = min(CUDA_THREADS_PER_BLOCK, next power of two >= K)`` threads and thread ``tid`` owns states
``tid, tid + S, ...``, so any K works (up to the 48 KiB of shared memory: about 2,900 states). The filter vector
lives in shared memory (two buffers, swapped each step); the per-step max and sum are shared-memory trees. Inner
loops over K read flat K*K matrices with ``uint64`` indices (see :func:`_kernels`). This layout serves
``n_states > THREAD_LAYOUT_MAX_K``; below it the scaled forward-backward and Viterbi run one thread per sequence
(:mod:`avicore.kernels._hmm_cuda_small`). Buffers and launches: :mod:`avicore.kernels._hmm_cuda_launch` (device
arrays stay on the device; host arrays go through pinned staging buffers into a cached workspace; only the
per-sequence fallback flags, n_sequences bytes, come to the host mid-call).

Forward-backward (the same maths as the Numba and Cython kernels of :mod:`avicore.kernels.hmm`)
----------------------------------------------------------------------------------------------
Forward, probability space with per-step normalisation, ``pred_t = start`` (t = 0) or ``A^T alpha_{t-1}`` and the
shift ``m_t`` = max of ``log_lik[t, k]`` over states with ``pred_t[k] > 0``::

    e_t = exp(log_lik[t] - m_t),   u_t = e_t * pred_t,   c_t = sum(u_t),   alpha_t = u_t / c_t,
    log p(x) = sum_t (log c_t + m_t)

Backward, with ``w_{t+1} = e_{t+1} * beta_{t+1} / c_{t+1}`` (0 where ``alpha_{t+1} = 0``; ``beta_{T-1} = 1``)::

    beta_t = A w_{t+1},   gamma_t = alpha_t * beta_t,   sum_t xi_t = A ⊙ sum_t alpha_t w_{t+1}^T

The posteriors overwrite the stored filter in place. The last sum is accumulated in a buffer private to each block
(in shared memory while ``K² + 2K + 2·threads`` doubles fit in 48 KiB, else in global memory; no atomics) and a
second kernel adds the buffers in a fixed order, so results are bitwise reproducible.

A sequence is redone by the log-space kernel (decided per sequence, on the device; the reference recursions of
:mod:`avicore.kernels.hmm`) as soon as the scaled pass could lose accuracy: a state whose exact ``u`` is positive
gets ``u < TINY = 1e-280`` (an underflow of ``e``, of ``pred`` or of their product), an exactly-zero ``pred`` that
is reachable (scanned only when ``log_transmat`` has finite entries below -90), or a step with no reachable state
that can emit (the log-space kernel then finds ``log p(x) = -inf``, zero posteriors, no counts). Until the first
such step, zeros in ``alpha`` are exact zeros. If ``log_transmat`` or ``log_startprob`` hold finite entries below
-700, every sequence runs in log space.

Viterbi: max-product in log space, back-pointers in a device (T, K) int32 array, the lowest index on ties.
Posterior sampling: the forward filter as above (normalised, or log alpha for fallback sequences), then one thread
per (sample, sequence) samples backwards with the counter-based uniforms of :mod:`avicore.kernels._counter_rng`
(a device copy of ``mix64``), so a seed draws the same samples on every backend.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings

import numpy as np

from .. import _config, _device

# Most blocks a launch uses (grid-stride beyond): an H200 holds 132 SMs x 32 resident blocks.
_MAX_BLOCKS = 8192
# Cap on the per-block transition-count buffers (blocks x K x K float64).
_COUNT_BUFFER_BYTES = 512 * 2**20
# Dynamic shared memory one block may use without opting in (48 KiB).
_SHARED_BYTES = 48 * 1024
# Up to this many states the scaled forward-backward and Viterbi run one thread per sequence
# (kernels/_hmm_cuda_small.py); above it, one block per sequence with threads over states. A tunable: the
# crossover is measured by benchmarks/bench_gpu.py (it times both layouts).
THREAD_LAYOUT_MAX_K = 16
# Most threads a one-thread-per-sequence launch uses (grid-stride beyond): 132 SMs x 2048 resident threads.
_MAX_THREADS = 1 << 18

cuda = None  # numba.cuda, bound by _kernels() on first use (importing this module imports no Numba)


def _block_threads(n_states: int) -> int:
    """Threads per block: a power of two, at most CUDA_THREADS_PER_BLOCK, no more than K rounded up."""
    cap = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
    cap = 1 << (cap.bit_length() - 1)  # reductions need a power of two
    need = 1 << max(0, (n_states - 1).bit_length())
    return min(cap, need)


def _grid(n_items: int, per_block_bytes: int = 0) -> int:
    """Blocks for a grid-stride launch over n_items, capped so the per-block count buffers stay small."""
    limit = _MAX_BLOCKS
    if per_block_bytes:
        limit = min(limit, max(1, _COUNT_BUFFER_BYTES // per_block_bytes))
    return max(1, min(n_items, limit))


def _thread_grid(n_items: int, per_thread_bytes: int = 0) -> int:
    """Threads for a one-thread-per-sequence launch, capped so the per-thread count columns stay small."""
    limit = _MAX_THREADS
    if per_thread_bytes:
        limit = min(limit, max(1, _COUNT_BUFFER_BYTES // per_thread_bytes))
    return max(1, min(n_items, limit))


def _thread_layout(n_states: int) -> bool:
    return n_states <= THREAD_LAYOUT_MAX_K


def _check_shared(n_states: int, n_threads: int, n_vectors: int) -> int:
    nbytes = 8 * (n_vectors * n_states + 2 * n_threads + 2)
    if nbytes > _SHARED_BYTES:
        most = (_SHARED_BYTES // 8 - 2 * n_threads - 2) // n_vectors
        raise ValueError(f"log_lik must have at most {most} states for backend='cuda'; got n_states={n_states}. "
                         "Use backend='cython' or 'numba' for larger state spaces.")
    return nbytes


@functools.cache
def _kernels():
    """Compile (lazily, once per process) and return the CUDA kernels by name.

    Inner loops over K run on flat (K*K) matrices with ``uint64`` indices in ``while`` loops: with signed
    indices Numba adds a negative-index fix-up and a stride multiply to every load (~25 integer instructions per
    multiply-add instead of ~3).
    """
    global cuda  # a module global: the CUDA simulator swaps it for its fake module while a kernel runs
    _device.ensure_numpy_compat()
    from numba import cuda, float64

    from ._counter_rng import GAMMA, MIX_M1, MIX_M2
    from ._hmm_model import TINY

    tiny = TINY
    gamma = np.uint64(GAMMA)
    mix_m1 = np.uint64(MIX_M1)
    mix_m2 = np.uint64(MIX_M2)
    s11, s27, s30, s31 = np.uint64(11), np.uint64(27), np.uint64(30), np.uint64(31)
    two_m53 = 1.0 / 9007199254740992.0
    neg_inf = -math.inf
    u0 = np.uint64(0)
    u1 = np.uint64(1)

    # ----- block-wide reductions over a power-of-two number of threads (every thread must call them) -----

    @cuda.jit(device=True)
    def _block_max(red, value, tid, n_threads):
        red[tid] = value
        cuda.syncthreads()
        step = n_threads // 2
        while step > 0:
            if tid < step and red[tid + step] > red[tid]:
                red[tid] = red[tid + step]
            cuda.syncthreads()
            step //= 2
        out = red[0]
        cuda.syncthreads()
        return out

    @cuda.jit(device=True)
    def _block_sum(red, value, tid, n_threads):
        red[tid] = value
        cuda.syncthreads()
        step = n_threads // 2
        while step > 0:
            if tid < step:
                red[tid] += red[tid + step]
            cuda.syncthreads()
            step //= 2
        out = red[0]
        cuda.syncthreads()
        return out

    @cuda.jit(device=True)
    def _block_argmax(red, red_idx, value, index, tid, n_threads):
        # Largest value; among equal values the lowest index (np.argmax's rule).
        red[tid] = value
        red_idx[tid] = index
        cuda.syncthreads()
        step = n_threads // 2
        while step > 0:
            if tid < step:
                v = red[tid + step]
                k = red_idx[tid + step]
                if v > red[tid] or (v == red[tid] and k < red_idx[tid]):
                    red[tid] = v
                    red_idx[tid] = k
            cuda.syncthreads()
            step //= 2
        best = red[0]
        best_idx = red_idx[0]
        cuda.syncthreads()
        return best, best_idx

    # ----- per-thread loops over one column of a flat n x n matrix: mat[i * n + col], i = 0..n-1 -----

    @cuda.jit(device=True)
    def _dot_column(vec, off, mat, col, n):
        """sum_i vec[off + i] * mat[i * n + col]."""
        acc = 0.0
        idx = col
        v = off
        end = off + n
        while v < end:
            acc += vec[v] * mat[idx]
            idx += n
            v += u1
        return acc

    @cuda.jit(device=True)
    def _dot_column_outer(vec, off, mat, col, n, counts, counts_off, a):
        """_dot_column, and counts[counts_off + i * n + col] += a * vec[off + i]."""
        acc = 0.0
        idx = col
        v = off
        end = off + n
        while v < end:
            w = vec[v]
            acc += w * mat[idx]
            counts[counts_off + idx] += a * w
            idx += n
            v += u1
        return acc

    @cuda.jit(device=True)
    def _reaches(vec, off, mat, col, n):
        """True if some i has vec[off + i] > 0 and mat[i * n + col] > 0."""
        idx = col
        v = off
        end = off + n
        while v < end:
            if vec[v] > 0.0 and mat[idx] > 0.0:
                return True
            idx += n
            v += u1
        return False

    @cuda.jit(device=True)
    def _log_dot_column(vec, off, log_mat, col, n):
        """log sum_i exp(vec[off + i] + log_mat[i * n + col])."""
        mx = neg_inf
        idx = col
        v = off
        end = off + n
        while v < end:
            x = vec[v] + log_mat[idx]
            if x > mx:
                mx = x
            idx += n
            v += u1
        if mx == neg_inf:
            return neg_inf
        acc = 0.0
        idx = col
        v = off
        while v < end:
            x = vec[v] + log_mat[idx]
            if x > neg_inf:
                acc += math.exp(x - mx)
            idx += n
            v += u1
        return mx + math.log(acc)

    @cuda.jit(device=True)
    def _log_outer(vec, off, log_mat, col, n, counts, counts_off, shift):
        """counts[counts_off + i * n + col] += exp(shift + vec[off + i] + log_mat[i * n + col])."""
        idx = col
        v = off
        end = off + n
        while v < end:
            x = vec[v] + log_mat[idx]
            if x > neg_inf:
                counts[counts_off + idx] += math.exp(shift + x)
            idx += n
            v += u1

    @cuda.jit(device=True)
    def _max_column(vec, off, log_mat, col, n):
        """(max_i vec[off + i] + log_mat[i * n + col], the lowest i attaining it)."""
        best = neg_inf
        arg = u0
        i = u0
        idx = col
        while i < n:
            x = vec[off + i] + log_mat[idx]
            if x > best:
                best = x
                arg = i
            idx += n
            i += u1
        return best, arg

    # ----- forward-backward, probability space with per-step normalisation -----

    @cuda.jit(device=True)
    def _scaled_forward(log_lik, trans, start, check_reach, begin, end, alpha, scale, shift, sh, tid, n_threads):
        """Normalised forward pass of one sequence into alpha[begin:end]; returns (log p(x), needs_log_space)."""
        K = log_lik.shape[1]
        Ku = np.uint64(K)
        flag = 2 * K + 2 * n_threads
        red = sh[2 * K:2 * K + n_threads]
        total = 0.0
        bad = False
        if tid == 0:
            sh[flag] = 0.0  # set by any thread that sees underflow; read after the next reduction's barriers
        for row in range(begin, end):
            cur = (row - begin) % 2
            nxt = 1 - cur
            # pred = start or A^T alpha_{t-1}, kept in sh[nxt]; the shift is the max log_lik over reachable states.
            local_max = neg_inf
            for j in range(tid, K, n_threads):
                if row == begin:
                    p = start[j]
                else:
                    p = _dot_column(sh, np.uint64(cur * K), trans, np.uint64(j), Ku)
                sh[nxt * K + j] = p
                if p > 0.0 and log_lik[row, j] > local_max:
                    local_max = log_lik[row, j]
            m = _block_max(red, local_max, tid, n_threads)
            if m == neg_inf:  # no reachable state can emit this observation (or pred underflowed: log space)
                bad = True
                break
            local_sum = 0.0
            for j in range(tid, K, n_threads):
                p = sh[nxt * K + j]
                v = log_lik[row, j]
                u = 0.0
                if p > 0.0:
                    if v > neg_inf:
                        u = math.exp(v - m) * p
                        if u < tiny:
                            sh[flag] = 1.0
                elif (check_reach and row != begin and v > neg_inf
                      and _reaches(sh, np.uint64(cur * K), trans, np.uint64(j), Ku)):
                    sh[flag] = 1.0  # alpha_{t-1}[i] * A[i, j] underflowed to an exact zero
                sh[nxt * K + j] = u
                local_sum += u
            c = _block_sum(red, local_sum, tid, n_threads)
            if c == 0.0 or sh[flag] != 0.0:
                bad = True
                break
            inv = 1.0 / c
            for j in range(tid, K, n_threads):
                a = sh[nxt * K + j] * inv
                sh[nxt * K + j] = a
                alpha[row, j] = a
            if tid == 0:
                scale[row] = c
                shift[row] = m
                total += math.log(c) + m
            cuda.syncthreads()  # alpha_t complete before the next step's matrix-vector product reads it
        cuda.syncthreads()
        return total, bad

    @cuda.jit
    def _fb_scaled_kernel(log_lik, trans, trans_t, start, check_reach, offsets, post, scale, shift, loglik, flags,
                          counts, backward, shared_counts):
        # trans, trans_t: flat K*K; counts: flat (gridDim.x * K * K), this block's slice at blockIdx.x * K * K.
        # shared_counts: the block accumulates its counts in shared memory (after the vectors, the reduction
        # buffer and the flag: sh[2K + 2 n_threads + 2:]) and writes them to its slice once, at the end.
        K = log_lik.shape[1]
        Ku = np.uint64(K)
        n_threads = cuda.blockDim.x
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(0, dtype=float64)
        counts_off = np.uint64(cuda.blockIdx.x) * Ku * Ku
        acc_off = np.uint64(2 * K + 2 * n_threads + 2)
        if backward:
            for e in range(tid, K * K, n_threads):
                if shared_counts:
                    sh[acc_off + np.uint64(e)] = 0.0
                else:
                    counts[counts_off + np.uint64(e)] = 0.0
        n_seq = offsets.shape[0] - 1
        for seq in range(cuda.blockIdx.x, n_seq, cuda.gridDim.x):
            begin = offsets[seq]
            end = offsets[seq + 1]
            total, bad = _scaled_forward(log_lik, trans, start, check_reach, begin, end, post, scale, shift, sh, tid,
                                         n_threads)
            if tid == 0:
                flags[seq] = 1 if bad else 0
                loglik[seq] = total
            if bad or not backward or end == begin:
                continue
            # Backward: sh[cur*K + j] holds w_{t+1}[j] = e_{t+1}[j] beta_{t+1}[j] / c_{t+1}, 0 off the support
            # (there beta may be huge but is always multiplied by an exact zero).
            last = end - 1
            c = scale[last]
            m = shift[last]
            for i in range(tid, K, n_threads):
                w = 0.0
                if post[last, i] > 0.0:
                    w = math.exp(log_lik[last, i] - m) / c
                sh[i] = w
            cuda.syncthreads()
            cur = 0
            for row in range(last - 1, begin - 1, -1):
                nxt = 1 - cur
                c = scale[row]
                m = shift[row]
                for i in range(tid, K, n_threads):
                    a = post[row, i]
                    w = 0.0
                    if a > 0.0:
                        if shared_counts:
                            b = _dot_column_outer(sh, np.uint64(cur * K), trans_t, np.uint64(i), Ku, sh, acc_off, a)
                        else:
                            b = _dot_column_outer(sh, np.uint64(cur * K), trans_t, np.uint64(i), Ku, counts,
                                                  counts_off, a)
                        post[row, i] = a * b
                        w = math.exp(log_lik[row, i] - m) * b / c
                    sh[nxt * K + i] = w
                cuda.syncthreads()
                cur = nxt
        if backward and shared_counts:
            cuda.syncthreads()
            for e in range(tid, K * K, n_threads):
                counts[counts_off + np.uint64(e)] = sh[acc_off + np.uint64(e)]

    # ----- forward-backward in log space (sequences the scaled pass flagged) -----

    @cuda.jit(device=True)
    def _block_logsumexp(red, vec, off, n, tid, n_threads):
        """log sum_k exp(vec[off + k]) over k < n, for every thread of the block (-inf when all are -inf)."""
        local_max = neg_inf
        for k in range(tid, n, n_threads):
            if vec[off + k] > local_max:
                local_max = vec[off + k]
        mx = _block_max(red, local_max, tid, n_threads)
        if mx == neg_inf:
            return neg_inf
        local_sum = 0.0
        for k in range(tid, n, n_threads):
            x = vec[off + k]
            if x > neg_inf:
                local_sum += math.exp(x - mx)
        return mx + math.log(_block_sum(red, local_sum, tid, n_threads))

    @cuda.jit(device=True)
    def _log_forward(log_lik, log_trans, log_start, begin, end, alpha, sh, tid, n_threads):
        """Log-space forward pass normalised every step (alpha = log alpha_t - log p(x_1..t)); returns log p(x).

        Normalising each step keeps the log-alphas near 0, so a long sequence loses no precision to large
        magnitudes (the CPU backends' recursion, kernels/hmm.py).
        """
        K = log_lik.shape[1]
        Ku = np.uint64(K)
        red = sh[2 * K:2 * K + n_threads]
        total = 0.0
        for row in range(begin, end):
            cur = (row - begin) % 2
            nxt = 1 - cur
            for j in range(tid, K, n_threads):
                if row == begin:
                    s = log_start[j]
                else:
                    s = _log_dot_column(sh, np.uint64(cur * K), log_trans, np.uint64(j), Ku)
                sh[nxt * K + j] = log_lik[row, j] + s
            cuda.syncthreads()
            c = _block_logsumexp(red, sh, nxt * K, K, tid, n_threads)
            if c == neg_inf:  # every thread sees the same c: no possible path
                return neg_inf
            for j in range(tid, K, n_threads):
                la = sh[nxt * K + j] - c
                sh[nxt * K + j] = la
                alpha[row, j] = la
            total += c
            cuda.syncthreads()
        return total

    @cuda.jit
    def _fb_log_kernel(log_lik, log_trans, log_trans_t, log_start, offsets, ids, post, loglik, counts, backward):
        K = log_lik.shape[1]
        Ku = np.uint64(K)
        n_threads = cuda.blockDim.x
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(0, dtype=float64)
        counts_off = np.uint64(cuda.blockIdx.x) * Ku * Ku
        if backward:
            for e in range(tid, K * K, n_threads):
                counts[counts_off + np.uint64(e)] = 0.0
        for k in range(cuda.blockIdx.x, ids.shape[0], cuda.gridDim.x):
            seq = ids[k]
            begin = offsets[seq]
            end = offsets[seq + 1]
            total = _log_forward(log_lik, log_trans, log_start, begin, end, post, sh, tid, n_threads)
            if tid == 0:
                loglik[seq] = total
            if not backward or end == begin:
                continue
            if total == neg_inf:  # no possible path: zero posteriors, no counts
                for row in range(begin, end):
                    for j in range(tid, K, n_threads):
                        post[row, j] = 0.0
                continue
            # Backward with normalised betas: sh[cur*K + j] holds log_lik[t+1, j] + log beta_{t+1}[j] - D_{t+1}
            # (D any per-step constant); the step's own normaliser Z_t = logsumexp_i(log alpha_t[i] + log beta_t[i])
            # turns both the posteriors and the transition counts into probabilities.
            red = sh[2 * K:2 * K + n_threads]
            last = end - 1
            for i in range(tid, K, n_threads):
                sh[i] = log_lik[last, i]
                post[last, i] = math.exp(post[last, i])  # the normalised filter at the last step is the posterior
            cuda.syncthreads()
            cur = 0
            for row in range(last - 1, begin - 1, -1):
                nxt = 1 - cur
                local_max = neg_inf
                for i in range(tid, K, n_threads):
                    lb = _log_dot_column(sh, np.uint64(cur * K), log_trans_t, np.uint64(i), Ku)
                    sh[nxt * K + i] = lb
                    if post[row, i] + lb > local_max:
                        local_max = post[row, i] + lb
                mx = _block_max(red, local_max, tid, n_threads)
                local_sum = 0.0
                for i in range(tid, K, n_threads):
                    x = post[row, i] + sh[nxt * K + i]
                    if x > neg_inf:
                        local_sum += math.exp(x - mx)
                z = mx + math.log(_block_sum(red, local_sum, tid, n_threads))
                for i in range(tid, K, n_threads):
                    la = post[row, i]
                    lb = sh[nxt * K + i]
                    gamma = 0.0
                    if la > neg_inf:
                        gamma = math.exp(la + lb - z)
                        _log_outer(sh, np.uint64(cur * K), log_trans_t, np.uint64(i), Ku, counts, counts_off,
                                   la - z)
                    post[row, i] = gamma
                    sh[nxt * K + i] = log_lik[row, i] + lb
                cuda.syncthreads()
                d = _block_logsumexp(red, sh, nxt * K, K, tid, n_threads)
                if d > neg_inf:
                    for i in range(tid, K, n_threads):
                        sh[nxt * K + i] -= d
                cuda.syncthreads()
                cur = nxt

    @cuda.jit
    def _reduce_counts_kernel(trans, scaled_counts, n_scaled, row_scale, step, log_counts, n_log, out):
        # out[i, j] = trans[i, j] * sum_b scaled_counts[e * row_scale + b * step] + sum_b log_counts[b, j, i] with
        # e = j*K + i, partial buffers b in order: (row_scale, step) = (1, K*K) for the per-block buffers [b, j, i]
        # of the block layout, (n_scaled, 1) for the per-thread columns [j, i, b] of kernels/_hmm_cuda_small.py.
        K = out.shape[0]
        idx = cuda.grid(1)
        if idx >= K * K:
            return
        j = idx // K
        i = idx - j * K
        KK = np.uint64(K * K)
        e = np.uint64(idx) * np.uint64(row_scale)
        stride = np.uint64(step)
        s = 0.0
        for _ in range(n_scaled):
            s += scaled_counts[e]
            e += stride
        total = 0.0
        t = trans[i * K + j]
        if t > 0.0:
            total = t * s
        e = np.uint64(idx)
        s = 0.0
        for _ in range(n_log):
            s += log_counts[e]
            e += KK
        out[i, j] = total + s

    # ----- Viterbi -----

    @cuda.jit
    def _viterbi_kernel(log_lik, log_trans, log_start, offsets, backptr, log_prob, states):
        K = log_lik.shape[1]
        Ku = np.uint64(K)
        n_threads = cuda.blockDim.x
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(0, dtype=float64)
        red = sh[2 * K:2 * K + n_threads]
        red_idx = sh[2 * K + n_threads:2 * K + 2 * n_threads]
        n_seq = offsets.shape[0] - 1
        for seq in range(cuda.blockIdx.x, n_seq, cuda.gridDim.x):
            begin = offsets[seq]
            end = offsets[seq + 1]
            if end == begin:
                if tid == 0:
                    log_prob[seq] = 0.0
                continue
            for row in range(begin, end):
                cur = (row - begin) % 2
                nxt = 1 - cur
                for j in range(tid, K, n_threads):
                    if row == begin:
                        best = log_start[j]
                        arg = u0
                    else:
                        best, arg = _max_column(sh, np.uint64(cur * K), log_trans, np.uint64(j), Ku)
                    sh[nxt * K + j] = best + log_lik[row, j]
                    backptr[row, j] = arg
                cuda.syncthreads()
            off = ((end - begin) % 2) * K
            best = neg_inf
            last_state = K  # sentinel for a thread that owns no state
            for j in range(tid, K, n_threads):
                if last_state == K or sh[off + j] > best:
                    best = sh[off + j]
                    last_state = j
            best, arg_f = _block_argmax(red, red_idx, best, float(last_state), tid, n_threads)
            if tid == 0:
                log_prob[seq] = best
                z = int(arg_f)
                states[end - 1] = z
                for row in range(end - 1, begin, -1):
                    z = backptr[row, z]
                    states[row - 1] = z
            cuda.syncthreads()

    # ----- posterior sampling: counter-based uniforms (kernels/_counter_rng.py), backward sampling -----

    @cuda.jit(device=True)
    def _mix64(z):
        z = (z ^ (z >> s30)) * mix_m1
        z = (z ^ (z >> s27)) * mix_m2
        return z ^ (z >> s31)

    @cuda.jit(device=True)
    def _sample_uniform(sample_key, t):
        """uniform(mix64(sample_key + (t + 1)·GAMMA)) = u[s, t] of _counter_rng.hmm_sample_uniforms."""
        h = _mix64(sample_key + np.uint64(t + 1) * gamma)
        return np.float64(np.int64(h >> s11)) * two_m53

    @cuda.jit(device=True)
    def _draw(alpha, a_off, mat, m_off, use_mat, log_mode, n, u):
        """Inverse CDF at u over w_k = alpha[a_off + k] * mat[m_off + k] (log mode: exp(x_k - max x), x_k =
        alpha + mat); mat is skipped when use_mat is False. The smallest k with u·Σw < w_0 + ... + w_k, else the
        largest k with w_k > 0, else 0 (kernels/hmm.py's rule, sums left to right)."""
        mx = 0.0
        if log_mode:
            mx = neg_inf
            for k in range(n):
                x = alpha[a_off + np.uint64(k)]
                if use_mat:
                    x += mat[m_off + np.uint64(k)]
                if x > mx:
                    mx = x
        total = 0.0
        for k in range(n):
            x = alpha[a_off + np.uint64(k)]
            if log_mode:
                if use_mat:
                    x += mat[m_off + np.uint64(k)]
                w = 0.0
                if x > neg_inf:
                    w = math.exp(x - mx)
            else:
                w = x * mat[m_off + np.uint64(k)] if use_mat else x
            total += w
        target = u * total
        acc = 0.0
        last_positive = 0
        for k in range(n):
            x = alpha[a_off + np.uint64(k)]
            if log_mode:
                if use_mat:
                    x += mat[m_off + np.uint64(k)]
                w = 0.0
                if x > neg_inf:
                    w = math.exp(x - mx)
            else:
                w = x * mat[m_off + np.uint64(k)] if use_mat else x
            acc += w
            if target < acc:
                return k
            if w > 0.0:
                last_positive = k
        return last_positive

    @cuda.jit
    def _sample_kernel(alpha, trans_t, log_trans_t, K, offsets, flags, loglik, key, samples):
        # One thread per (sample s, sequence q), s fastest (threads of a warp share the sequence's alpha rows).
        # alpha: flat (T*K) filter, normalised (flags[q] == 0) or log (flags[q] != 0); trans_t, log_trans_t flat.
        n_seq = offsets.shape[0] - 1
        n_samples = samples.shape[0]
        Ku = np.uint64(K)
        item = cuda.grid(1)
        while item < n_samples * n_seq:
            q = item // n_samples
            s = item - q * n_samples
            begin = offsets[q]
            end = offsets[q + 1]
            log_mode = flags[q] != 0
            if log_mode and loglik[q] == neg_inf:  # no possible path
                for row in range(begin, end):
                    samples[s, row] = -1
            else:
                sample_key = _mix64(key + np.uint64(s + 1) * gamma)
                mat = log_trans_t if log_mode else trans_t
                z = 0
                for row in range(end - 1, begin - 1, -1):
                    u = _sample_uniform(sample_key, row)
                    z = _draw(alpha, np.uint64(row) * Ku, mat, np.uint64(z) * Ku, row != end - 1, log_mode, K, u)
                    samples[s, row] = z
            item += cuda.gridsize(1)

    @cuda.jit
    def _initial_counts_kernel(post, offsets, out):
        # out[k] = sum over sequences q, in order, of post[offsets[q], k].
        k = cuda.grid(1)
        if k < out.shape[0]:
            s = 0.0
            for q in range(offsets.shape[0] - 1):
                s += post[offsets[q], k]
            out[k] = s

    return {
        "initial_counts": _initial_counts_kernel,
        "mix64": _mix64,
        "sample_uniform": _sample_uniform,
        "sample": _sample_kernel,
        "fb_scaled": _fb_scaled_kernel,
        "fb_log": _fb_log_kernel,
        "reduce_counts": _reduce_counts_kernel,
        "viterbi": _viterbi_kernel,
    }


@contextlib.contextmanager
def _quiet():
    """Silence, around a launch, Numba's low-occupancy hint (one block per sequence is the design: a single
    long sequence is one block) and, under the simulator, NumPy's warnings about the hash's intended uint64
    wrap-around (there the device code runs on NumPy scalars)."""
    from numba.core.errors import NumbaPerformanceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        if os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in {"", "0"}:
            warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)
        yield


# The host side (buffers, launches, layout choice) lives in _hmm_cuda_launch.py; its entry points are reachable here
# too (for the dispatcher of kernels/hmm.py and the tests), loaded on first access: the two modules import each other.
_LAUNCH_NAMES = frozenset({"_forward_backward_cuda", "_sample_posterior_cuda", "_viterbi_cuda",
                           "forward_backward_device", "sample_posterior_device", "viterbi_device"})


def __getattr__(name: str):
    if name in _LAUNCH_NAMES:
        from . import _hmm_cuda_launch

        return getattr(_hmm_cuda_launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
