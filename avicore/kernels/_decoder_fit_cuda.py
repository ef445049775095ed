"""CUDA kernels of the device-resident BayesianDecoder fit (F-VI and A-VI), driven by :mod:`avicore._decoder_fit`.

The decoder's per-sample pass reuses the elementwise kernels of :mod:`avicore.kernels._decoder_cuda` (bias +
activation, activation gradient, residual, column sums, local accumulation) with the products on
:class:`avicore.kernels._dense_cuda.Dense`; what is here is the rest of an iteration, with the host loop's
arithmetic (:meth:`avicore.inference._Engine._run`, :meth:`avicore.models.BayesianDecoder.local_terms`):

``draw_global`` (grid over (j, s))
    θ[s, j] = μ_j + exp(log σ_j) η[s, j] (the global stream), with block partials of Σⱼ θ², the non-finite θ
    count and Σⱼ log σⱼ.
``gather_locals`` / ``draw_latents`` (one thread per batch row)
    the batch's q(zₙ) parameters (F-VI's rows of ``loc``; A-VI's encoder output), its rows of x, and
    zₙ⁽ˢ⁾ = mₙ + exp(log sₙ) ⊙ ε[n, s] keyed by the row's dataset index.
``local_update`` (one thread per batch row)
    ∂mₙ = Σ_s gₙ/S, ∂log sₙ = Σ_s gₙεₙ · exp(log sₙ)/S, then F-VI's Adam step of the row (dense, or lazy with its
    own step count) or A-VI's (N/B)-scaled gradients for the encoder; block partials of Σ log sₙ and non-finite
    counts; the accumulators are zeroed for the next iteration.
``global_update`` (one thread per entry of [μ, log σ, φ])
    the gradient in (μ, log σ) from the per-sample ∂θ and the prior's −θ/s², and Adam on every entry (φ with its
    weight decay); non-finite counts split by where the host loop finds them.
``assemble`` (one thread)
    the ELBO estimate from the partial sums, in the host loop's order, its status code and trace entry.
"""

from __future__ import annotations

import functools
import math

from ._counter_normal_cuda import device_functions
from ._fit_cuda import (
    _LOG_EPS,
    _LOG_MAX_SD,
    C_AVI,
    C_BETA1,
    C_BETA2,
    C_CONST_GLOBAL,
    C_CONST_LOCAL,
    C_EPS,
    C_POINT,
    C_PRIOR_SCALE,
    C_WEIGHT_DECAY,
    N_CFG,
    shared_device_functions,
)

cuda = None  # numba.cuda, bound on first use (the simulator swaps this module global while kernels run)

#: Extra ``cfg`` slots of the decoder: 1/σ² of the likelihood, the log joint's constant per row, the number of
#: weights (for the prior's constant).
C_INV_VAR, C_ROW_CONST, C_N_THETA = N_CFG, N_CFG + 1, N_CFG + 2
N_DECODER_CFG = N_CFG + 3
_LOG_2PI = math.log(2.0 * math.pi)


@functools.cache
def decoder_fit_kernels(threads: int):  # pragma: no cover - compiled (the simulator runs it in Python)
    global cuda
    from numba import cuda, float64

    dev = device_functions()
    counter_normal, row_key = dev.counter_normal, dev.row_key

    helpers = shared_device_functions(threads)
    exp_, adam_one, adam_entry = helpers.exp_, helpers.adam_one, helpers.adam_entry
    glob_grad, global_off, row_totals = helpers.glob_grad, helpers.global_off, helpers.row_totals

    @cuda.jit(device=True, inline=True)
    def off_range(ls):
        # 1 when a local log sd is outside FitHealth's usable range [log ε, log 1e150]
        return 1 if (ls < _LOG_EPS or ls > _LOG_MAX_SD) else 0

    @cuda.jit
    def draw_global(gstate, cfg, keys, i, theta, eta, part, scale_state):
        sh = cuda.shared.array((3, threads), float64)
        tid = cuda.threadIdx.x
        if tid == 0 and cuda.blockIdx.x == 0 and cuda.blockIdx.y == 0:  # before this iteration's local updates
            scale_state[1 + i] = scale_state[0]
        j = cuda.blockIdx.x * threads + tid
        s = cuda.blockIdx.y
        dim = theta.shape[1]
        sq = 0.0
        bad = 0.0
        log_sd = 0.0
        if j < dim:
            mu = gstate[0, j]
            if cfg[C_POINT] != 0.0:
                th = mu
                eta[s, j] = 0.0
            else:
                log_sd = gstate[0, dim + j]
                e = counter_normal(row_key(keys[i, 1], 0), s * dim + j)
                eta[s, j] = e
                th = mu + exp_(log_sd) * e
            theta[s, j] = th
            sq = th * th
            bad = 0.0 if math.isfinite(th) else 1.0
        row_totals(sh, tid, sq, bad, log_sd, part[s], cuda.blockIdx.x, 0, True)

    @cuda.jit
    def gather_locals(loc, rows, n_batch, i, n_rows, mean, log_scale):
        n = cuda.grid(1)
        if n < n_rows:
            row = n if rows.shape[1] == 0 else rows[i, n]
            for j in range(mean.shape[1]):
                mean[n, j] = loc[0, row, j]
                log_scale[n, j] = loc[1, row, j]

    @cuda.jit
    def split_out(out, n_rows, mean, log_scale):
        n = cuda.grid(1)
        if n < n_rows:
            d = mean.shape[1]
            for j in range(d):
                mean[n, j] = out[n, j]
                log_scale[n, j] = out[n, d + j]

    @cuda.jit
    def draw_latents(keys, i, rows, n_batch, n_rows, x, mean, log_scale, z, eps, xb):
        n = cuda.grid(1)
        if n < n_rows:
            row = n if rows.shape[1] == 0 else rows[i, n]
            for c in range(x.shape[1]):
                xb[n, c] = x[row, c]
            rk = row_key(keys[i, 0], row)
            n_samples, _, d = z.shape
            for s in range(n_samples):
                for j in range(d):
                    e = counter_normal(rk, s * d + j)
                    eps[s, n, j] = e
                    z[s, n, j] = mean[n, j] + exp_(log_scale[n, j]) * e

    @cuda.jit
    def local_update(cfg, sched, i, rows, n_rows, n_samples, loc, counts, mean, log_scale, gm, gls, enc_grad,
                     part, scale_state):
        sh = cuda.shared.array((3, threads), float64)
        tid = cuda.threadIdx.x
        n = cuda.blockIdx.x * threads + tid
        d = mean.shape[1]
        sum_ls = 0.0
        bad = 0.0
        off_before = 0
        off_after = 0
        if n < n_rows:
            avi = cfg[C_AVI] != 0.0
            beta1 = cfg[C_BETA1]
            beta2 = cfg[C_BETA2]
            eps = cfg[C_EPS]
            row = n if rows.shape[1] == 0 else rows[i, n]
            step = sched[i, 1]
            sqrt_bc2 = sched[i, 2]
            if not avi and rows.shape[1] != 0:  # lazy Adam: the row's own step count
                c = counts[row] + 1
                counts[row] = c
                step = sched[i, 0] / (1.0 - beta1 ** float64(c))
                sqrt_bc2 = math.sqrt(1.0 - beta2 ** float64(c))
            batch_scale = sched[i, 3]
            for j in range(d):
                ls = log_scale[n, j]
                mn = mean[n, j]
                sum_ls += ls
                off_before = max(off_before, off_range(ls))
                g_mean = gm[n, j] / n_samples
                g_log_scale = gls[n, j] * (exp_(ls) / n_samples)
                gm[n, j] = 0.0
                gls[n, j] = 0.0
                if avi:
                    if not (math.isfinite(mn) and math.isfinite(ls)):
                        bad += 1.0
                    g_log_scale = g_log_scale + 1.0
                    if batch_scale != 1.0:
                        g_log_scale *= batch_scale
                        g_mean = g_mean * batch_scale
                    enc_grad[n, j] = g_mean
                    enc_grad[n, d + j] = g_log_scale
                else:
                    p, m, v, b = adam_one(mn, loc[2, row, j], loc[3, row, j], g_mean, 0.0, step, sqrt_bc2, beta1,
                                          beta2, eps)
                    loc[0, row, j] = p
                    loc[2, row, j] = m
                    loc[3, row, j] = v
                    bad += b
                    p, m, v, b = adam_one(ls, loc[4, row, j], loc[5, row, j], g_log_scale, 1.0, step, sqrt_bc2,
                                          beta1, beta2, eps)
                    loc[1, row, j] = p
                    loc[4, row, j] = m
                    loc[5, row, j] = v
                    bad += b
                    off_after = max(off_after, off_range(p))
            if not avi and off_after != off_before:  # F-VI: rows with a log sd out of range, kept up to date
                cuda.atomic.add(scale_state, 0, off_after - off_before)
        row_totals(sh, tid, sum_ls, bad, float64(off_before), part, cuda.blockIdx.x, 0, True)

    @cuda.jit
    def global_update(gstate, grad, theta, eta, g_theta, cfg, sched, i, part):
        sh = cuda.shared.array((3, threads), float64)
        tid = cuda.threadIdx.x
        k = cuda.blockIdx.x * threads + tid
        n_samples, dim = theta.shape
        n_params = gstate.shape[1]
        step = sched[i, 1]
        sqrt_bc2 = sched[i, 2]
        bad_glob = 0.0
        bad_phi = 0.0
        off = 0.0
        if k < dim:
            off = 1.0 if global_off(gstate[0, k], gstate[0, dim + k]) else 0.0  # before the update
            batch_scale = sched[i, 3]
            neg_inv_s2 = -1.0 / (cfg[C_PRIOR_SCALE] * cfg[C_PRIOR_SCALE])
            g_mu = 0.0
            g_ls = 0.0
            for s in range(n_samples):
                g = theta[s, k] * neg_inv_s2 + batch_scale * g_theta[s, k]
                g_mu += g
                g_ls += g * eta[s, k]
            g_mu, g_ls = glob_grad(g_mu, g_ls, n_samples, gstate[0, dim + k], cfg)
            if not (math.isfinite(g_mu) and math.isfinite(g_ls)):
                bad_glob = 1.0
            adam_entry(gstate, k, g_mu, step, sqrt_bc2, cfg)
            adam_entry(gstate, dim + k, g_ls, step, sqrt_bc2, cfg)
        elif 2 * dim <= k < n_params:
            g = grad[k]
            decay = cfg[C_WEIGHT_DECAY]
            if decay != 0.0:
                g -= decay * gstate[0, k]
            bad_phi = adam_entry(gstate, k, g, step, sqrt_bc2, cfg)
        row_totals(sh, tid, bad_glob, bad_phi, off, part, cuda.blockIdx.x, 0, True)

    @cuda.jit
    def assemble(part_g, part_l, n_local_blocks, part_u, row_sq, row_zz, n_rows, cfg, sched, i, trace, status,
                 scale_state):
        if cuda.threadIdx.x != 0 or cuda.blockIdx.x != 0:
            return
        n_samples = part_g.shape[0]
        batch_scale = sched[i, 3]
        prior_scale = cfg[C_PRIOR_SCALE]
        const_prior = cfg[C_N_THETA] * (0.5 * _LOG_2PI + math.log(prior_scale))
        s2 = prior_scale * prior_scale
        ok = True
        acc = 0.0
        for s in range(n_samples):
            sq = 0.0
            bad = 0.0
            for b in range(part_g.shape[1]):
                sq += part_g[s, b, 0]
                bad += part_g[s, b, 1]
            if bad > 0.0:
                ok = False
            lp = -0.5 * sq / s2 - const_prior
            r_sq = 0.0
            r_zz = 0.0
            for n in range(n_rows):
                r_sq += row_sq[s, n]
                r_zz += row_zz[s, n]
            lj = -0.5 * cfg[C_INV_VAR] * r_sq - 0.5 * r_zz - n_rows * cfg[C_ROW_CONST]
            acc += lp + batch_scale * lj
        sum_ls = 0.0
        bad_local = 0.0
        off = 0.0
        for b in range(n_local_blocks):
            sum_ls += part_l[b, 0]
            bad_local += part_l[b, 1]
            off += part_l[b, 2]
        avi = cfg[C_AVI] != 0.0
        if not avi:
            off = float64(scale_state[1 + i])
        elbo = acc / n_samples + batch_scale * sum_ls + cfg[C_CONST_LOCAL]
        if cfg[C_POINT] == 0.0:
            tot = 0.0
            for b in range(part_g.shape[1]):
                tot += part_g[0, b, 2]
            elbo += tot + cfg[C_CONST_GLOBAL]
        bad_glob = 0.0
        bad_phi = 0.0
        for b in range(part_u.shape[0]):
            bad_glob += part_u[b, 0]
            bad_phi += part_u[b, 1]
            off += part_u[b, 2]
        ok = ok and math.isfinite(elbo) and bad_glob == 0.0
        code = 0
        if not ok or (avi and bad_local > 0.0):
            code = 1
        elif off > 0.0:
            code = 3  # a scale left float64's usable range (FitHealth.scales), before the trace entry
        elif bad_local > 0.0 or bad_phi > 0.0:
            code = 2
        status[i] = code
        trace[i] = elbo

    return draw_global, gather_locals, split_out, draw_latents, local_update, global_update, assemble
