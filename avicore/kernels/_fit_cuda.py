"""CUDA kernels of the device-resident F-VI / A-VI iteration for the built-in scalar hierarchical models.

Driven by :mod:`avicore._device_fit` (the device executor of :class:`avicore.FVI` / :class:`avicore.AVI`); every
array stays on the device for the whole fit and one iteration is two launches (A-VI adds the encoder's dense
layers, :mod:`avicore._encoders_cuda`):

``fvi_local`` / ``avi_local`` (one thread per batch row)
    draw ε[n, s] from the counter generator, evaluate the model's density and gradients (the device functions of
    :mod:`avicore.kernels._elbo_cuda`, the formulas of :mod:`avicore.kernels.elbo`), and reduce Σₙ log p and
    Σₙ ∂θ per sample into one partial row per block. F-VI applies the row's Adam step in the same kernel (dense, or
    lazy with per-row step counts under minibatches: the arithmetic of ``avicore._cy.optim``); A-VI writes the
    per-row gradients (N/B)·(∂mₙ, ∂log sₙ + 1) for the encoder's backward pass.
``global_step`` (one block)
    add the block partials in block order (fixed: reproducible run to run), form the ELBO estimate and the
    gradient in (μ, log σ) exactly as the host loop of :mod:`avicore.inference` does, flag divergence, take the
    Adam step of [μ, log σ, φ], write the trace entry, and draw θ for the next iteration.

Layouts: ``loc`` (6, N) = [m, log s, Adam m/v of m, Adam m/v of log s]; ``gstate`` (3, P) = [params, Adam m, v];
``part`` (blocks, S(1 + G) + 2) = [Σ log p (S) | Σ ∂θ (S·G) | Σ log sₙ | non-finite count]; per chunk of iterations
``keys`` (c, 2) uint64 = (local, global) stream keys, ``sched`` (c, 4) = (lr, dense Adam step, √(1 − β₂ᵗ), N/B),
``rows`` (c, B) int64 with ``n_batch`` (c,) — or ``rows`` of shape (1, 0) for the full batch.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np

from ._counter_normal_cuda import device_functions
from ._elbo_cuda import density_functions

cuda = None  # numba.cuda, bound on first use (the simulator swaps this module global while kernels run)

# Slots of the float64 ``cfg`` vector shared by the kernels of one fit.
(C_CONST_LOCAL, C_CONST_GLOBAL, C_PRIOR_SCALE, C_POINT, C_FIXED, C_WEIGHT_DECAY, C_BETA1, C_BETA2, C_EPS,
 C_AVI) = range(10)
N_CFG = 10
_LOG_2PI = math.log(2.0 * math.pi)
# FitHealth.scales (issue 20): a local sd is usable in [ε, 1e150]; a global sd from ε·max(|μ|, 1) to 1e150.
_LOG_EPS = math.log(float(np.finfo(np.float64).eps))
_LOG_MAX_SD = math.log(1e150)
# exp overflows to +inf above this (the largest double below ln(DBL_MAX) rounds up to it).
_EXP_OVERFLOW = 709.782712893384
_INF = math.inf
# Sums reduced per barrier-synchronised tree: 8 samples × (log p, ∂θ) in the local kernels, 16 columns in the
# global reduction (one tree per tile instead of one per value: 8–16× fewer barriers).
TILE = 16
_NAN = math.nan


@functools.cache
def shared_device_functions(threads: int):  # pragma: no cover - compiled (the simulator runs it in Python)
    """``exp_``, ``tree``, ``adam_one``, ``adam_entry``: device helpers of the fit kernels (here and the decoder's)."""
    global cuda
    from numba import cuda

    @cuda.jit(device=True, inline=True)
    def exp_(v):
        # math.exp with IEEE overflow to +inf (the GPU's behaviour; the simulator's Python math.exp raises instead)
        return _INF if v >= _EXP_OVERFLOW else math.exp(v)

    @cuda.jit(device=True)
    def tree(sh, tid):
        # Row sums of the (k, threads) shared tile into sh[:, 0], pairwise over threads in a fixed order.
        cuda.syncthreads()
        stride = threads // 2
        while stride > 0:
            if tid < stride:
                for k in range(sh.shape[0]):
                    sh[k, tid] += sh[k, tid + stride]
            cuda.syncthreads()
            stride //= 2

    @cuda.jit(device=True)
    def row_totals(sh, tid, ls, bad, off, part, blk, col, first):
        # Block sums of three per-thread values (in the fits: the rows' log sₙ, non-finite counts, out-of-range log sₙ)
        # → part[blk, col … col + 2], written (first) or added, in a fixed-order tree.
        sh[0, tid] = ls
        sh[1, tid] = bad
        sh[2, tid] = off
        tree(sh, tid)
        if tid == 0:
            for k in range(3):
                if first:
                    part[blk, col + k] = sh[k, 0]
                else:
                    part[blk, col + k] += sh[k, 0]
        cuda.syncthreads()

    @cuda.jit(device=True, inline=True)
    def adam_one(p, m, v, g, offset, step, sqrt_bc2, beta1, beta2, eps):
        # avicore._cy.optim: ĝ = 1·g + offset, m ← β₁m + (1−β₁)ĝ, v ← β₂v + (1−β₂)ĝ², p ← p + step·m/(√v/√bc₂ + ε)
        gi = 1.0 * g + offset
        mi = beta1 * m + (1.0 - beta1) * gi
        vi = beta2 * v + (1.0 - beta2) * gi * gi
        bad = 0.0 if math.isfinite(gi) else 1.0
        return p + step * mi / (math.sqrt(vi) / sqrt_bc2 + eps), mi, vi, bad

    @cuda.jit(device=True, inline=True)
    def adam_entry(gstate, q, g, step, sqrt_bc2, cfg):
        # Dense Adam step of entry q of gstate = [params, m, v] (3, P); → 1.0 if the gradient is not finite.
        p, m, v, bad = adam_one(gstate[0, q], gstate[1, q], gstate[2, q], g, 0.0, step, sqrt_bc2, cfg[C_BETA1],
                                cfg[C_BETA2], cfg[C_EPS])
        gstate[0, q] = p
        gstate[1, q] = m
        gstate[2, q] = v
        return bad

    @cuda.jit(device=True, inline=True)
    def glob_grad(sum_g, sum_ge, n_samples, log_sd, cfg):
        # ∂/∂(μ, log σ) of one coordinate from Σ_s g_θ and Σ_s g_θ η_s (the host loop's g_glob): point masses
        # have no log σ gradient, a fixed q(θ) none at all.
        if cfg[C_FIXED] != 0.0:
            return 0.0, 0.0
        g_ls = 0.0 if cfg[C_POINT] != 0.0 else sum_ge / n_samples * exp_(log_sd) + 1.0
        return sum_g / n_samples, g_ls

    @cuda.jit(device=True, inline=True)
    def global_off(mu, log_sd):
        # FitHealth.scales for one q(θ) coordinate: sd outside [ε·max(|μ|, 1), 1e150] (point masses skipped)
        return log_sd != -_INF and (log_sd < _LOG_EPS + math.log(max(abs(mu), 1.0)) or log_sd > _LOG_MAX_SD)

    return SimpleNamespace(exp_=exp_, tree=tree, row_totals=row_totals, adam_one=adam_one, adam_entry=adam_entry,
                           glob_grad=glob_grad, global_off=global_off)


@functools.cache
def fit_kernels(threads: int):  # pragma: no cover - compiled (the simulator runs it in Python)
    """(fvi_local, avi_local, global_step, draw, fvi_persistent) for blocks of ``threads`` (a power of two)."""
    global cuda
    from numba import cuda, float64, uint64

    dev = device_functions()
    counter_normal, row_key = dev.counter_normal, dev.row_key
    linear_density, nonlinear_density = density_functions()
    helpers = shared_device_functions(threads)
    exp_, tree, adam_one, adam_entry = helpers.exp_, helpers.tree, helpers.adam_one, helpers.adam_entry
    glob_grad, global_off, row_totals = helpers.glob_grad, helpers.global_off, helpers.row_totals

    @cuda.jit(device=True)
    def sample_loop(model, mparams, xn, mn, scale, rk, theta, active, sh, tid, part, blk, first):
        # Σ_s of the row's gradients (registers) and the block sums of log p, ∂θ per sample (partial row blk),
        # 8 samples per tree: log p in tile rows 0–7, ∂θ in rows 8–15.
        n_samples = theta.shape[0]
        half = TILE // 2
        acc_m = 0.0
        acc_ls = 0.0
        for s0 in range(0, n_samples, half):
            width = min(half, n_samples - s0)
            for k in range(width):
                s = s0 + k
                lp = 0.0
                gt = 0.0
                if active:
                    e = counter_normal(rk, s)
                    z = mn + scale * e
                    if model == 0:
                        lp, gz, gt = linear_density(mparams, xn, z, theta[s, 0])
                    elif math.isfinite(z):
                        lp, gz, gt = nonlinear_density(mparams, xn, z, theta[s, 0])
                    else:  # sin/cos of ±inf are NaN (the simulator's Python math raises instead)
                        lp = _NAN
                        gz = _NAN
                        gt = _NAN
                    acc_m += gz
                    acc_ls += gz * e
                sh[k, tid] = lp
                sh[half + k, tid] = gt
            tree(sh, tid)
            if tid == 0:
                for k in range(width):
                    if first:
                        part[blk, s0 + k] = sh[k, 0]
                        part[blk, n_samples + s0 + k] = sh[half + k, 0]
                    else:  # a further tile of rows of this block (grid-stride loop of the persistent kernel)
                        part[blk, s0 + k] += sh[k, 0]
                        part[blk, n_samples + s0 + k] += sh[half + k, 0]
            cuda.syncthreads()
        return acc_m, acc_ls

    @cuda.jit(device=True, inline=True)
    def off_range(ls):
        # 1 when a local log sd is outside FitHealth's usable range (NaN is not: it stops as non-finite)
        return 1 if (ls < _LOG_EPS or ls > _LOG_MAX_SD) else 0

    @cuda.jit(device=True, inline=True)
    def batch_row(rows, n_batch, i, n, n_all):
        # (active, dataset row) of batch position n at chunk iteration i; rows of shape (1, 0) = the full batch.
        if rows.shape[1] == 0:
            return n < n_all, n
        if n < n_batch[i]:
            return True, rows[i, n]
        return False, 0

    @cuda.jit(device=True)
    def row_pass(model, mparams, x, keys, i, row, active, mn, ls, theta, sh, tid, part, blk, first):
        # The row's sample loop from its q(zₙ) = N(mn, exp(ls)²) → (Σ_s ∂z, Σ_s ∂z·ε, exp(ls)).
        rk = uint64(0)
        scale = 0.0
        xn = 0.0
        if active:
            rk = row_key(keys[i, 0], row)
            scale = exp_(ls)
            xn = x[row, 0]
        acc_m, acc_ls = sample_loop(model, mparams, xn, mn, scale, rk, theta, active, sh, tid, part, blk, first)
        return acc_m, acc_ls, scale

    @cuda.jit(device=True)
    def fvi_tile(model, mparams, cfg, x, loc, counts, theta, keys, sched, rows, n_batch, i, part, sh, tid, blk,
                 tile, first, scale_state):
        # One tile of `threads` batch rows: draws, gradients, the rows' fused Adam step, block partials.
        active, row = batch_row(rows, n_batch, i, tile * threads + tid, loc.shape[1])
        n_samples = theta.shape[0]
        mn = loc[0, row] if active else 0.0
        ls = loc[1, row] if active else 0.0
        acc_m, acc_ls, scale = row_pass(model, mparams, x, keys, i, row, active, mn, ls, theta, sh, tid, part, blk,
                                        first)
        bad = 0.0
        if active:
            inv_s = 1.0 / n_samples
            g_mean = acc_m * inv_s
            g_log_scale = acc_ls * inv_s * scale
            beta1 = cfg[C_BETA1]
            beta2 = cfg[C_BETA2]
            eps = cfg[C_EPS]
            if rows.shape[1] == 0:  # dense step: every row at the iteration's step count
                step = sched[i, 1]
                sqrt_bc2 = sched[i, 2]
            else:  # lazy Adam: the row's own step count
                c = counts[row] + 1
                counts[row] = c
                step = sched[i, 0] / (1.0 - beta1 ** float64(c))
                sqrt_bc2 = math.sqrt(1.0 - beta2 ** float64(c))
            p, m, v, b = adam_one(mn, loc[2, row], loc[3, row], g_mean, 0.0, step, sqrt_bc2, beta1, beta2, eps)
            loc[0, row] = p
            loc[2, row] = m
            loc[3, row] = v
            bad += b
            # ∂ELBO/∂log sₙ = grad_log_scale + 1 (the entropy's gradient as Adam's offset)
            p, m, v, b = adam_one(ls, loc[4, row], loc[5, row], g_log_scale, 1.0, step, sqrt_bc2, beta1, beta2, eps)
            loc[1, row] = p
            loc[4, row] = m
            loc[5, row] = v
            bad += b
            change = off_range(p) - off_range(ls)  # rows whose log sd is out of range, kept up to date
            if change != 0:
                cuda.atomic.add(scale_state, 0, change)
        row_totals(sh, tid, ls, bad, 0.0, part, blk, 2 * n_samples, first)

    @cuda.jit(device=True)
    def fvi_rows(model, mparams, cfg, x, loc, counts, theta, keys, sched, rows, n_batch, i, part, sh, blk, n_blk,
                 scale_state):
        # Block blk of n_blk takes the row tiles blk, blk + n_blk, … (one tile each when n_blk covers the batch);
        # a block without a tile writes zero partials.
        tid = cuda.threadIdx.x
        n_all = loc.shape[1] if rows.shape[1] == 0 else n_batch[i]
        n_tiles = (n_all + threads - 1) // threads
        first = True
        for tile in range(blk, n_tiles, n_blk):
            fvi_tile(model, mparams, cfg, x, loc, counts, theta, keys, sched, rows, n_batch, i, part, sh, tid, blk,
                     tile, first, scale_state)
            first = False
        if first:
            for c in range(tid, part.shape[1], threads):
                part[blk, c] = 0.0

    @cuda.jit
    def fvi_local(model, mparams, cfg, x, loc, counts, theta, keys, sched, rows, n_batch, i, part, scale_state):
        sh = cuda.shared.array((TILE, threads), float64)
        fvi_rows(model, mparams, cfg, x, loc, counts, theta, keys, sched, rows, n_batch, i, part, sh,
                 cuda.blockIdx.x, cuda.gridDim.x, scale_state)

    @cuda.jit
    def avi_local(model, mparams, x, enc_out, enc_grad, theta, keys, sched, rows, n_batch, i, part):
        sh = cuda.shared.array((TILE, threads), float64)
        tid = cuda.threadIdx.x
        blk = cuda.blockIdx.x
        n = blk * threads + tid
        active, row = batch_row(rows, n_batch, i, n, x.shape[0])
        n_samples = theta.shape[0]
        mn = enc_out[n, 0] if active else 0.0
        ls = enc_out[n, 1] if active else 0.0
        bad = 0.0 if math.isfinite(mn) and math.isfinite(ls) else 1.0
        acc_m, acc_ls, scale = row_pass(model, mparams, x, keys, i, row, active, mn, ls, theta, sh, tid, part, blk,
                                        True)
        if active:
            inv_s = 1.0 / n_samples
            g_mean = acc_m * inv_s
            g_log_scale = acc_ls * inv_s * scale + 1.0
            batch_scale = sched[i, 3]
            if batch_scale != 1.0:
                g_log_scale *= batch_scale
                g_mean = g_mean * batch_scale
            enc_grad[n, 0] = g_mean
            enc_grad[n, 1] = g_log_scale
        row_totals(sh, tid, ls, bad, float64(off_range(ls)) if active else 0.0, part, blk, 2 * n_samples, True)

    @cuda.jit(device=True)
    def draw_theta(gstate, key, theta, eta, point, tid):
        # θ_s = μ + exp(log σ) ⊙ η_s, η the global stream of (seed, step) (GlobalNoise / draw_global on the host)
        n_samples, dim = theta.shape
        row = row_key(key, 0)
        for q in range(tid, n_samples * dim, threads):
            s = q // dim
            j = q - s * dim
            mu = gstate[0, j]
            if point:
                eta[s, j] = 0.0
                theta[s, j] = mu
            else:
                e = counter_normal(row, s * dim + j)
                eta[s, j] = e
                theta[s, j] = mu + exp_(gstate[0, dim + j]) * e

    @cuda.jit
    def draw(gstate, cfg, keys, i, theta, eta, scale_state):
        draw_theta(gstate, keys[i, 1], theta, eta, cfg[C_POINT] != 0.0, cuda.threadIdx.x)
        if cuda.threadIdx.x == 0:  # F-VI's out-of-range local count for the state iteration i sees
            scale_state[1 + i] = scale_state[0]

    @cuda.jit(device=True)
    def global_body(part, n_parts, sums, theta, eta, gstate, grad, cfg, sched, keys, i, n_chunk, trace, status, sh,
                    scale_state):
        tid = cuda.threadIdx.x
        n_samples, dim = theta.shape
        n_cols = sums.shape[0]
        # Column sums of the block partials, TILE columns per tree: per-thread strided sums over the blocks, then
        # the tree (a fixed order: reproducible run to run).
        for c0 in range(0, n_cols, TILE):
            width = min(TILE, n_cols - c0)
            for k in range(TILE):
                sh[k, tid] = 0.0
            for blk in range(tid, n_parts, threads):
                for k in range(width):
                    sh[k, tid] += part[blk, c0 + k]
            tree(sh, tid)
            if tid == 0:
                for k in range(width):
                    sums[c0 + k] = sh[k, 0]
            cuda.syncthreads()
        point = cfg[C_POINT] != 0.0
        if tid == 0:  # the host loop's arithmetic (avicore.inference._Engine._run), in its order
            batch_scale = sched[i, 3]
            prior_scale = cfg[C_PRIOR_SCALE]
            ok = True
            acc = 0.0
            for s in range(n_samples):
                lp = 0.0
                for j in range(dim):
                    th = theta[s, j]
                    if not math.isfinite(th):
                        ok = False
                    if prior_scale > 0.0:
                        lp += -0.5 * (th * th) / (prior_scale * prior_scale) - 0.5 * _LOG_2PI - math.log(prior_scale)
                acc += lp + batch_scale * sums[s]
            elbo = acc / n_samples + batch_scale * sums[n_samples * (1 + dim)] + cfg[C_CONST_LOCAL]
            if not point:
                tot = 0.0
                for j in range(dim):
                    tot += gstate[0, dim + j]
                elbo += tot + cfg[C_CONST_GLOBAL]
            ok = ok and math.isfinite(elbo)
            for j in range(dim):
                g_mu = 0.0
                g_ls = 0.0
                for s in range(n_samples):
                    gp = 0.0
                    if prior_scale > 0.0:
                        gp = -theta[s, j] / (prior_scale * prior_scale)
                    g_theta = gp + batch_scale * sums[n_samples + s * dim + j]
                    g_mu += g_theta
                    g_ls += g_theta * eta[s, j]
                g_mu, g_ls = glob_grad(g_mu, g_ls, n_samples, gstate[0, dim + j], cfg)
                ok = ok and math.isfinite(g_mu) and math.isfinite(g_ls)
                grad[j] = g_mu
                grad[dim + j] = g_ls
            # FitHealth.scales on the state this iteration evaluates: a global sd outside [ε·max(|μ|, 1), 1e150]
            # (point masses skipped), a local sd outside [ε, 1e150] (F-VI: every row; A-VI: the batch).
            off = sums[n_samples * (1 + dim) + 2] > 0.0 if cfg[C_AVI] != 0.0 else scale_state[1 + i] > 0
            for j in range(dim):
                if global_off(gstate[0, j], gstate[0, dim + j]):
                    off = True
            bad_rows = sums[n_samples * (1 + dim) + 1] > 0.0
            code = 0
            if not ok or (bad_rows and cfg[C_AVI] != 0.0):
                code = 1  # non-finite before the trace entry (A-VI: the encoder's output)
            elif off:
                code = 3  # a scale left float64's usable range: refused before the trace entry (FitHealth)
            elif bad_rows:
                code = 2  # F-VI: a non-finite local gradient, found in the update after the trace entry
            status[i] = code
            trace[i] = elbo
        cuda.syncthreads()
        step = sched[i, 1]
        sqrt_bc2 = sched[i, 2]
        decay = cfg[C_WEIGHT_DECAY]
        bad = 0.0
        for k in range(tid, gstate.shape[1], threads):
            g = grad[k]
            if k >= 2 * dim and decay != 0.0:
                g -= decay * gstate[0, k]
            bad += adam_entry(gstate, k, g, step, sqrt_bc2, cfg)
        sh[0, tid] = bad
        tree(sh, tid)
        if tid == 0 and status[i] == 0 and sh[0, 0] > 0.0:
            status[i] = 2  # a non-finite encoder gradient: found in the update, after the trace entry
        cuda.syncthreads()
        if i + 1 < n_chunk:
            draw_theta(gstate, keys[i + 1, 1], theta, eta, point, tid)
            if tid == 0:  # every local update of iteration i is done: the count the next iteration sees
                scale_state[2 + i] = scale_state[0]

    @cuda.jit
    def global_step(part, n_parts, sums, theta, eta, gstate, grad, cfg, sched, keys, i, n_chunk, trace, status,
                    scale_state):
        sh = cuda.shared.array((TILE, threads), float64)
        global_body(part, n_parts, sums, theta, eta, gstate, grad, cfg, sched, keys, i, n_chunk, trace, status, sh,
                    scale_state)

    @cuda.jit
    def fvi_persistent(model, mparams, cfg, x, loc, counts, theta, eta, keys, sched, rows, n_batch, part, sums,
                       gstate, grad, trace, status, n_chunk, scale_state):
        # A whole chunk of F-VI iterations in one cooperative launch: every block runs its row tiles, the grid
        # synchronises, block 0 reduces the partials in block order and takes the global step (drawing the next
        # θ), the grid synchronises again. Same device functions, hence the same numbers, as the two-launch path
        # with the same grid.
        sh = cuda.shared.array((TILE, threads), float64)
        grid = cuda.cg.this_grid()
        blk = cuda.blockIdx.x
        n_blk = cuda.gridDim.x
        if blk == 0:
            draw_theta(gstate, keys[0, 1], theta, eta, cfg[C_POINT] != 0.0, cuda.threadIdx.x)
            if cuda.threadIdx.x == 0:
                scale_state[1] = scale_state[0]
        grid.sync()
        for i in range(n_chunk):
            fvi_rows(model, mparams, cfg, x, loc, counts, theta, keys, sched, rows, n_batch, i, part, sh, blk, n_blk,
                     scale_state)
            grid.sync()
            if blk == 0:
                global_body(part, n_blk, sums, theta, eta, gstate, grad, cfg, sched, keys, i, n_chunk, trace,
                            status, sh, scale_state)
            grid.sync()

    return fvi_local, avi_local, global_step, draw, fvi_persistent
