"""CUDA HMM kernels for few states: one GPU thread per sequence (the layout :mod:`avicore.kernels._hmm_cuda`
picks for ``n_states <= THREAD_LAYOUT_MAX_K``).

With few states a block of threads over states is mostly idle (K = 8 would leave 24 of a warp's 32 lanes
unused) and pays a barrier and two tree reductions per step. Here each thread runs a whole sequence, the
recursions of the block kernels serially and term for term (same shift, same underflow tests, same summation
order in every matrix-vector product), with no barrier at all. Its vectors live in a workspace column
``work[k * n_threads + thread]``, so a warp's 32 threads touch 32 consecutive doubles (coalesced), and the model
matrices are read by every thread at the same address (broadcast). Its transition counts accumulate in a column
of ``counts[e * n_threads + thread]`` and are added over threads in a fixed order by the ``reduce_counts`` kernel of
:mod:`avicore.kernels._hmm_cuda`, so results are reproducible run to run.

A sequence the scaled pass flags goes, as in the block layout, to the log-space block kernel of
:mod:`avicore.kernels._hmm_cuda`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _device

cuda = None  # numba.cuda, bound by _kernels() on first use (a module global: the simulator swaps it)


@functools.cache
def _kernels() -> dict:
    """Compile (once per process) and return the one-thread-per-sequence kernels by name."""
    global cuda
    cuda = _device.cuda()
    from ._hmm_model import TINY

    tiny = TINY
    neg_inf = -math.inf
    u0 = np.uint64(0)
    u1 = np.uint64(1)

    @cuda.jit(device=True)
    def _dot_column(work, base, stride, mat, col, n):
        """sum_i work[base + i * stride] * mat[i * n + col] (i ascending)."""
        acc = 0.0
        i = u0
        w = base
        m = col
        while i < n:
            acc += work[w] * mat[m]
            w += stride
            m += n
            i += u1
        return acc

    @cuda.jit(device=True)
    def _reaches(work, base, stride, mat, col, n):
        i = u0
        w = base
        m = col
        while i < n:
            if work[w] > 0.0 and mat[m] > 0.0:
                return True
            w += stride
            m += n
            i += u1
        return False

    @cuda.jit
    def _fb_scaled_kernel(log_lik, trans, trans_t, start, check_reach, offsets, post, scale, shift, loglik, flags,
                          work, counts, backward):
        # work: flat (2K * n_threads); counts: flat (K*K * n_threads); thread t's entry k at k * n_threads + t.
        K = log_lik.shape[1]
        Ku = np.uint64(K)
        t = cuda.grid(1)
        n_thr = work.shape[0] // (2 * K)
        if t >= n_thr:
            return
        S = np.uint64(n_thr)
        tu = np.uint64(t)
        if backward:
            e = u0
            while e < Ku * Ku:
                counts[e * S + tu] = 0.0
                e += u1
        n_seq = offsets.shape[0] - 1
        for seq in range(t, n_seq, n_thr):
            begin = offsets[seq]
            end = offsets[seq + 1]
            total = 0.0
            bad = False
            for row in range(begin, end):
                cur = np.uint64((row - begin) % 2)
                cur_base = cur * Ku * S + tu
                nxt_base = (u1 - cur) * Ku * S + tu
                m = neg_inf
                for j in range(K):
                    ju = np.uint64(j)
                    if row == begin:
                        p = start[j]
                    else:
                        p = _dot_column(work, cur_base, S, trans, ju, Ku)
                    work[nxt_base + ju * S] = p
                    v = log_lik[row, j]
                    if p > 0.0 and v > m:
                        m = v
                if m == neg_inf:
                    bad = True
                    break
                c = 0.0
                for j in range(K):
                    ju = np.uint64(j)
                    p = work[nxt_base + ju * S]
                    v = log_lik[row, j]
                    u = 0.0
                    if p > 0.0:
                        if v > neg_inf:
                            u = math.exp(v - m) * p
                            if u < tiny:
                                bad = True
                    elif check_reach and row != begin and v > neg_inf and _reaches(work, cur_base, S, trans, ju, Ku):
                        bad = True
                    work[nxt_base + ju * S] = u
                    c += u
                if c == 0.0 or bad:
                    bad = True
                    break
                inv = 1.0 / c
                for j in range(K):
                    ju = np.uint64(j)
                    a = work[nxt_base + ju * S] * inv
                    work[nxt_base + ju * S] = a
                    post[row, j] = a
                scale[row] = c
                shift[row] = m
                total += math.log(c) + m
            flags[seq] = 1 if bad else 0
            loglik[seq] = total
            if bad or not backward or end == begin:
                continue
            # Backward: the w vector of the block kernel, in work column slot `cur`.
            last = end - 1
            c = scale[last]
            m = shift[last]
            for i in range(K):
                w = 0.0
                if post[last, i] > 0.0:
                    w = math.exp(log_lik[last, i] - m) / c
                work[np.uint64(i) * S + tu] = w
            cur = u0
            for row in range(last - 1, begin - 1, -1):
                cur_base = cur * Ku * S + tu
                nxt_base = (u1 - cur) * Ku * S + tu
                c = scale[row]
                m = shift[row]
                for i in range(K):
                    iu = np.uint64(i)
                    a = post[row, i]
                    w = 0.0
                    if a > 0.0:
                        b = 0.0
                        jj = u0
                        wi = cur_base
                        mi = iu
                        ci = iu * S + tu
                        while jj < Ku:
                            wj = work[wi]
                            b += wj * trans_t[mi]
                            counts[ci] += a * wj  # counts[(j*K + i) * S + t] += alpha_t[i] w_{t+1}[j]
                            wi += S
                            mi += Ku
                            ci += Ku * S
                            jj += u1
                        post[row, i] = a * b
                        w = math.exp(log_lik[row, i] - m) * b / c
                    work[nxt_base + iu * S] = w
                cur = u1 - cur

    @cuda.jit
    def _viterbi_kernel(log_lik, log_trans, log_start, offsets, work, backptr, log_prob, states):
        K = log_lik.shape[1]
        Ku = np.uint64(K)
        t = cuda.grid(1)
        n_thr = work.shape[0] // (2 * K)
        if t >= n_thr:
            return
        S = np.uint64(n_thr)
        tu = np.uint64(t)
        n_seq = offsets.shape[0] - 1
        for seq in range(t, n_seq, n_thr):
            begin = offsets[seq]
            end = offsets[seq + 1]
            if end == begin:
                log_prob[seq] = 0.0
                continue
            for row in range(begin, end):
                cur = np.uint64((row - begin) % 2)
                cur_base = cur * Ku * S + tu
                nxt_base = (u1 - cur) * Ku * S + tu
                for j in range(K):
                    if row == begin:
                        best = log_start[j]
                        arg = 0
                    else:
                        best = neg_inf
                        arg = 0
                        w = cur_base
                        mi = np.uint64(j)
                        for i in range(K):
                            x = work[w] + log_trans[mi]
                            if x > best:
                                best = x
                                arg = i
                            w += S
                            mi += Ku
                    work[nxt_base + np.uint64(j) * S] = best + log_lik[row, j]
                    backptr[row, j] = arg
            base = np.uint64((end - begin) % 2) * Ku * S + tu
            best = work[base]
            z = 0
            for j in range(1, K):
                x = work[base + np.uint64(j) * S]
                if x > best:
                    best = x
                    z = j
            log_prob[seq] = best
            states[end - 1] = z
            for row in range(end - 1, begin, -1):
                z = backptr[row, z]
                states[row - 1] = z

    return {"fb_scaled": _fb_scaled_kernel, "viterbi": _viterbi_kernel}
