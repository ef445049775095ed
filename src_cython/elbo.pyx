# cython: language_level=3
"""Fused reparameterised ELBO-gradient pass for the built-in hierarchical models (avicore._cy.elbo).

The same computation as avicore/kernels/elbo.py (read its docstring for the maths, the model ids and the parameter
vectors): one pass over the rows, parallel over fixed-size chunks of rows (prange, dynamic schedule), ε drawn on the
fly from the counter generator of _counter_normal.pxd, no N × S temporaries. Each chunk writes its own partial sums
of log_joint and grad_global; the caller adds them in chunk order, so results do not depend on the thread count.
The built-in models are scalar (latent, global and observation dimension 1: the dispatcher guarantees it), and
the chunk loop is written for them: per-row constants (the row key, exp(log_scale), x, mean) come from a first,
vectorisable pass over the chunk (exp by the branch-free fast_exp of _fast_exp.pxd, within a few ulp of libm).
Each row then runs in blocks of EPS_BLOCK draws: the ziggurat's branch-free fast path over the block (the ~1.5 %
it misses redone by cn_normal), the model over the block in a loop gcc vectorises — the nonlinear model's sin and
cos come from the polynomial fast_sincos of _fast_sincos.pxd (within an ulp of libm; libm for |z| > 1e5) — and
then the sums. Interleaving draws across SIMD lanes is what pays: the polynomials are long dependency chains.
Vector-valued user models run the generic Numba loop.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport cos, exp, fabs, sin
from libc.stdint cimport int64_t, uint64_t

from _counter_normal cimport cn_first_hash, cn_normal, cn_normal_fast, cn_row_key
from _adam cimport adam_span, avicore_adam_coef
from _counter_rng cimport cr_mix64
from _fast_exp cimport fast_exp, fast_exp_checked
from _fast_sincos cimport fast_sincos, fast_sincos_checked

cdef enum:
    MODEL_LINEAR = 0
    MODEL_NONLINEAR = 1
    MAX_CHUNK = 4096   # rows per chunk (avicore.kernels.elbo.chunk_rows never exceeds it)
    EPS_BLOCK = 64     # draws of one row buffered at a time by the nonlinear model's blocked loop

MAX_CHUNK_ROWS = MAX_CHUNK


cdef inline double _linear(const double* p, const double* x, const double* z, const double* th, double* gz,
                           double* gt) noexcept nogil:
    """log p(z, x | θ) of the linear model, p = (τ, 1/σ², −log 2π − log σ); writes ∂z and ∂θ."""
    cdef double r = x[0] - th[0] - p[0] * z[0]
    cdef double t = p[1] * r
    gz[0] = p[0] * t - z[0]
    gt[0] = t
    return p[2] - 0.5 * z[0] * z[0] - 0.5 * r * t


cdef inline double _nonlinear(const double* p, const double* x, const double* z, double sz, double cz,
                              const double* th, double* gz, double* gt) noexcept nogil:
    """log p(z, x | θ) of the nonlinear model given sz = sin z, cz = cos z, p = (−log 2π,); writes ∂z and ∂θ."""
    cdef double zz = z[0]
    cdef double w = fast_exp(-2.0 * cz)  # argument in [-2, 2]
    cdef double r = x[0] - th[0] - zz - zz * sz
    cdef double wr = w * r
    gz[0] = -zz + sz + wr * (1.0 + sz + zz * cz) - wr * r * sz
    gt[0] = wr
    return p[0] - cz - 0.5 * zz * zz - 0.5 * wr * r

cdef inline void _block_normals(uint64_t row, Py_ssize_t b0, Py_ssize_t nb, double* eps) noexcept nogil:
    """ε for draws b0 … b0 + nb − 1 of a row (nb ≤ EPS_BLOCK): the branch-free fast path over the block, then
    cn_normal for the few draws it missed (bit-identical to cn_normal for every draw)."""
    cdef int miss[EPS_BLOCK]
    cdef int any_miss = 0
    cdef Py_ssize_t s
    for s in range(nb):
        eps[s] = cn_normal_fast(row, b0 + s, &miss[s])
    for s in range(nb):
        any_miss = any_miss | miss[s]
    if any_miss:
        for s in range(nb):
            if miss[s]:
                eps[s] = cn_normal(row, b0 + s)


cdef void _row_terms(int model, const double* params, double xn, double mn, double scale, const double* theta,
                     Py_ssize_t n_samples, uint64_t row, double* lj, double* gg, double* acc_m,
                     double* acc_ls) noexcept nogil:
    """One row, in blocks of EPS_BLOCK draws: ε (_block_normals), then the model over the block in a branch-free
    loop the compiler vectorises (the nonlinear model's polynomial sin/cos/exp are long dependency chains that only
    pipeline across lanes), then the sums. Same numbers per draw as _linear / _nonlinear."""
    cdef double eps[EPS_BLOCK]
    cdef double lpb[EPS_BLOCK]
    cdef double gzb[EPS_BLOCK]
    cdef double gtb[EPS_BLOCK]
    cdef Py_ssize_t b0 = 0, b1, s, nb
    cdef double zz, sz, cz
    cdef int far
    while b0 < n_samples:
        b1 = b0 + EPS_BLOCK if b0 + EPS_BLOCK < n_samples else n_samples
        nb = b1 - b0
        far = 0
        _block_normals(row, b0, nb, eps)
        if model == MODEL_LINEAR:
            for s in range(nb):
                zz = mn + scale * eps[s]
                lpb[s] = _linear(params, &xn, &zz, theta + b0 + s, &gzb[s], &gtb[s])
        else:
            for s in range(nb):
                zz = mn + scale * eps[s]
                far = far | (fabs(zz) > 1e5)  # NaN stays on the fast path and stays NaN
                fast_sincos(zz, &sz, &cz)
                lpb[s] = _nonlinear(params, &xn, &zz, sz, cz, theta + b0 + s, &gzb[s], &gtb[s])
            if far:  # some |z| > 1e5 (a diverging fit): redo the block with libm's sin and cos
                for s in range(nb):
                    zz = mn + scale * eps[s]
                    lpb[s] = _nonlinear(params, &xn, &zz, sin(zz), cos(zz), theta + b0 + s, &gzb[s], &gtb[s])
        for s in range(nb):
            lj[b0 + s] += lpb[s]
            gg[b0 + s] += gtb[s]
            acc_m[0] += gzb[s]
            acc_ls[0] += gzb[s] * eps[s]
        b0 = b1


cdef void _local_terms_chunk(int model, const double* params, const double* x, const double* mean,
                             const double* log_scale, const double* theta, Py_ssize_t n_samples, uint64_t key,
                             const int64_t* index, int64_t first, Py_ssize_t n0, Py_ssize_t n1, double* lj,
                             double* gg, double* grad_mean, double* grad_log_scale) noexcept nogil:
    """Rows n0 ≤ n < n1 (at most MAX_CHUNK) of a scalar model: per-row gradients, and the chunk's sums into
    lj (S,) and gg (S,). Row n is data-set row index[n], or first + n when index is NULL."""
    cdef Py_ssize_t n, s
    cdef uint64_t row
    cdef uint64_t rows[MAX_CHUNK]
    cdef double scale, acc_m, acc_ls, xn, mn, ls
    cdef double inv_s = 1.0 / n_samples
    for s in range(n_samples):
        lj[s] = 0.0
        gg[s] = 0.0
    # Per-row constants first, in a loop the compiler vectorises: exp(log_scale) (kept in grad_log_scale until the
    # row is done) and the row keys.
    for n in range(n0, n1):
        grad_log_scale[n] = fast_exp(log_scale[n])
        rows[n - n0] = cn_row_key(key, index[n] if index != NULL else first + n)
    for n in range(n0, n1):
        row = rows[n - n0]
        ls = log_scale[n]
        scale = grad_log_scale[n] if -708.0 <= ls <= 709.0 else exp(ls)
        xn = x[n]
        mn = mean[n]
        acc_m = 0.0
        acc_ls = 0.0
        _row_terms(model, params, xn, mn, scale, theta, n_samples, row, lj, gg, &acc_m, &acc_ls)
        grad_mean[n] = acc_m * inv_s
        grad_log_scale[n] = acc_ls * inv_s * scale


def cy_local_terms(int model, const double[::1] params, const double[:, ::1] x, const double[:, ::1] mean,
                   const double[:, ::1] log_scale, const double[:, ::1] theta, uint64_t key,
                   const int64_t[::1] index, Py_ssize_t chunk, double[:, ::1] part, double[:, ::1] grad_mean,
                   double[:, ::1] grad_log_scale, int num_threads):
    """Fill the per-chunk partials (rows of ``part``: [log_joint (S) | grad_global (S) | padding]) and the
    per-row gradients.

    Inputs are validated by the caller: rows of x/mean/log_scale/index/grad_* agree, n_chunks = ceil(rows/chunk),
    every dimension is 1, model ∈ {0, 1}.
    """
    cdef Py_ssize_t n_rows = mean.shape[0]
    cdef Py_ssize_t n_samples = theta.shape[0]
    cdef Py_ssize_t n_chunks = part.shape[0]
    cdef Py_ssize_t stride = part.shape[1]
    cdef Py_ssize_t c, n1
    cdef const double* p_params = &params[0]
    cdef const double* p_x = &x[0, 0]
    cdef const double* p_mean = &mean[0, 0]
    cdef const double* p_ls = &log_scale[0, 0]
    cdef const double* p_theta = &theta[0, 0]
    cdef const int64_t* p_index = &index[0]
    cdef double* p_part = &part[0, 0]
    cdef double* p_gm = &grad_mean[0, 0]
    cdef double* p_gls = &grad_log_scale[0, 0]
    for c in prange(n_chunks, nogil=True, schedule="dynamic", num_threads=num_threads):
        n1 = (c + 1) * chunk
        if n1 > n_rows:
            n1 = n_rows
        _local_terms_chunk(model, p_params, p_x, p_mean, p_ls, p_theta, n_samples, key, p_index, 0, c * chunk,
                           n1, p_part + c * stride, p_part + c * stride + n_samples, p_gm, p_gls)


cdef enum:
    FUSED_SUM_LS = 0   # extra columns of a fused pass's partial row, after [log_joint (S) | grad_global (S)]
    FUSED_MIN_LS = 1
    FUSED_MAX_LS = 2
    FUSED_BAD = 3
    FUSED_EXTRA = 4

FUSED_EXTRA_COLUMNS = FUSED_EXTRA


cdef void _adam_chunk(const double* mean, const double* log_scale, const double* gm, const double* gls,
                      double* m_mean, double* v_mean, double* m_ls, double* v_ls, double* mean_out, double* ls_out,
                      Py_ssize_t n_rows, const avicore_adam_coef* coef, double* extra) noexcept nogil:
    """Adam on one chunk's rows (their gradients gm, gls still in cache; adam_span of _adam.h, as the dense step),
    and the chunk's Σ log sₙ (four interleaved partial sums, added in a fixed order), min, max and count of
    non-finite ĝ; ĝ = 1·g + 0 for the means, 1·g + 1 for the log scales (the entropy), as the engine's unfused
    Adam steps."""
    cdef Py_ssize_t n, n4 = n_rows - n_rows % 4
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, lo = log_scale[0], hi = log_scale[0], ls
    for n in range(0, n4, 4):
        s0 += log_scale[n]
        s1 += log_scale[n + 1]
        s2 += log_scale[n + 2]
        s3 += log_scale[n + 3]
    for n in range(n4, n_rows):
        s0 += log_scale[n]
    for n in range(n_rows):
        ls = log_scale[n]
        lo = ls if ls < lo else lo
        hi = ls if ls > hi else hi
    extra[FUSED_SUM_LS] = (s0 + s1) + (s2 + s3)
    extra[FUSED_MIN_LS] = lo
    extra[FUSED_MAX_LS] = hi
    extra[FUSED_BAD] = <double> (adam_span(mean, gm, m_mean, v_mean, mean_out, n_rows, 1.0, 0.0, coef)
                                 + adam_span(log_scale, gls, m_ls, v_ls, ls_out, n_rows, 1.0, 1.0, coef))


def cy_local_terms_adam(int model, const double[::1] params, const double[:, ::1] x, const double[:, ::1] mean,
                        const double[:, ::1] log_scale, const double[:, ::1] theta, uint64_t key, Py_ssize_t chunk,
                        double[:, ::1] part, double[:, ::1] m_mean, double[:, ::1] v_mean, double[:, ::1] m_ls,
                        double[:, ::1] v_ls, double[:, ::1] mean_out, double[:, ::1] ls_out,
                        const double[::1] coef, double[:, ::1] scratch, int num_threads):
    """The full-batch pass of cy_local_terms (rows 0 … N − 1, row n = data-set row n) with the dense Adam step of
    every local parameter fused into it: each chunk's per-row gradients stay in a per-chunk buffer and are used at
    once, so the per-row state is swept once per iteration. New parameters go to ``mean_out``/``ls_out`` (distinct
    from ``mean``/``log_scale``, which stay the state the ELBO estimate belongs to); the moments update in place.

    Rows of ``part``: [log_joint (S) | grad_global (S) | Σ log sₙ, min log sₙ, max log sₙ, non-finite ĝ | padding].
    Every sum is per chunk (sequential within it), added in chunk order by the caller: no thread-count dependence.
    ``scratch`` (num_threads, 2·MAX_CHUNK) holds each thread's chunk gradients. Inputs are validated by the caller
    (shapes agree, every dimension 1, chunk ≤ MAX_CHUNK, model ∈ {0, 1}).
    """
    cdef Py_ssize_t n_rows = mean.shape[0]
    cdef Py_ssize_t n_samples = theta.shape[0]
    cdef Py_ssize_t n_chunks = part.shape[0]
    cdef Py_ssize_t stride = part.shape[1]
    cdef Py_ssize_t c, n0, n1
    cdef const double* p_params = &params[0]
    cdef const double* p_x = &x[0, 0]
    cdef const double* p_mean = &mean[0, 0]
    cdef const double* p_ls = &log_scale[0, 0]
    cdef const double* p_theta = &theta[0, 0]
    cdef avicore_adam_coef adam
    adam.step, adam.beta1, adam.beta2, adam.sqrt_bc2, adam.eps = coef[0], coef[1], coef[2], coef[3], coef[4]
    cdef double* p_part = &part[0, 0]
    cdef double* p_mm = &m_mean[0, 0]
    cdef double* p_vm = &v_mean[0, 0]
    cdef double* p_mls = &m_ls[0, 0]
    cdef double* p_vls = &v_ls[0, 0]
    cdef double* p_mo = &mean_out[0, 0]
    cdef double* p_lo = &ls_out[0, 0]
    cdef double* p_scratch = &scratch[0, 0]
    cdef Py_ssize_t scratch_stride = scratch.shape[1]
    cdef double* gm = NULL
    cdef double* gls = NULL
    with nogil, parallel(num_threads=num_threads):
        gm = p_scratch + threadid() * scratch_stride
        gls = gm + MAX_CHUNK
        for c in prange(n_chunks, schedule="dynamic"):
            n0 = c * chunk
            n1 = n0 + chunk
            if n1 > n_rows:
                n1 = n_rows
            _local_terms_chunk(model, p_params, p_x + n0, p_mean + n0, p_ls + n0, p_theta, n_samples, key, NULL,
                               n0, 0, n1 - n0, p_part + c * stride, p_part + c * stride + n_samples, gm, gls)
            _adam_chunk(p_mean + n0, p_ls + n0, gm, gls, p_mm + n0, p_vm + n0, p_mls + n0, p_vls + n0, p_mo + n0,
                        p_lo + n0, n1 - n0, &adam, p_part + c * stride + 2 * n_samples)


def cy_counter_normals(uint64_t key, const int64_t[::1] index, Py_ssize_t n_samples, Py_ssize_t dim,
                       double[:, :, ::1] out):
    """ε[n, s, j] for the rows ``index`` of one stream key (tests compare it with the NumPy generator)."""
    cdef Py_ssize_t n, s, j
    cdef uint64_t row
    with nogil:
        for n in range(index.shape[0]):
            row = cn_row_key(key, index[n])
            for s in range(n_samples):
                for j in range(dim):
                    out[n, s, j] = cn_normal(row, s * dim + j)


def cy_counter_first_hashes(uint64_t key, const int64_t[::1] index, uint64_t[:, ::1] out):
    """The first hash h₀ of every (row, counter) (tests check bit-equality with the NumPy generator)."""
    cdef Py_ssize_t n, c
    cdef uint64_t row
    with nogil:
        for n in range(index.shape[0]):
            row = cn_row_key(key, index[n])
            for c in range(out.shape[1]):
                out[n, c] = cn_first_hash(row, c)


def cy_mix64(uint64_t z):
    """The 64-bit mixer (tests check it against avicore.kernels._counter_rng)."""
    return cr_mix64(z)


def cy_fast_exp(const double[::1] x, double[::1] out):
    """fast_exp_checked elementwise (tests compare it with NumPy's exp)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(x.shape[0]):
            out[i] = fast_exp_checked(x[i])


def cy_fast_sincos(const double[::1] x, double[::1] sin_out, double[::1] cos_out):
    """fast_sincos_checked elementwise (tests compare it with NumPy's sin and cos)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(x.shape[0]):
            fast_sincos_checked(x[i], &sin_out[i], &cos_out[i])
