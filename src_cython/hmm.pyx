# cython: language_level=3
"""HMM forward-backward, Viterbi and posterior sampling over ragged batches (avicore._cy.hmm).

The maths, the fallback rule and the tie and sampling rules are those of avicore/kernels/hmm.py (read its
docstring); this file is the fast CPU implementation. Called only by that dispatcher, with validated C-contiguous
float64 input and the padded probability-space model it prepares (``_prepare_model``).

Memory layout: the probability-space transition matrix ``A`` and its transpose ``At`` are padded to ``Kp`` (K
rounded up to a multiple of 4) with zeros, so every inner loop runs over whole 4-lane vectors in contiguous memory
(the SIMD primitives are in ``_hmm_simd.h``); the per-step state vectors live in a per-thread workspace, padded.

Forward: ``exp`` once per (t, k), vectorised, shifted by the step's maximum over all states (off the alpha
dependency chain; redone with the maximum over reachable states if that underflows a reachable one); only the
scaled alphas (in the posterior output) and the normalisers (as one running product, turned into a log every
~1e20) are kept. Backward: recomputes ``pred_t = alpha_{t-1} A`` (K² multiply-adds, cheaper than storing it or K
more ``exp``), ``beta_t = A w_{t+1}``, and accumulates the transition counts ``Σ_t w_{t+1} alpha_tᵀ`` as one
register-blocked rank-16 update every 16 steps, so neither a T×K×K temporary nor a per-step read-modify-write of
the K×K accumulator exists. The log-space fallback (per sequence) shifts each log_lik row by its maximum and
normalises per step, so its values stay O(1) on any sequence length.

Work is split into fixed chunks of sequences (independent of the thread count), each with its own count
accumulator, summed in chunk order: results are bit-identical for any number of threads. Chunks are handed out
longest first on a dynamic schedule, so a thread that draws a long chunk late does not leave the others idle.

``cy_em_expectations`` is EM's E-step in one pass (avicore/kernels/hmm_em.py): the same scaled forward pass, kept
with the scaled emissions r_t = e_t / c_t in a per-thread buffer instead of the posterior output, then a backward
pass with w_t = r_t ⊙ beta_t (no division, no recomputed alpha A) that adds each step's posterior into the
sufficient statistics; the emission log-likelihoods can be computed in the forward pass from X (diagonal and full
Gaussians, Poisson) or read from a pre-exponentiated table (categorical), so no (T, K) array is written or read.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, exp, log
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc

from _common cimport logsumexp_vec
from _counter_rng cimport cr_hmm_sample_row, cr_hmm_sample_uniform


cdef extern from "_hmm_simd.h" nogil:
    void avi_matvec(const double* M, const double* v, double* out, Py_ssize_t K, Py_ssize_t Kp)
    void avi_rank_update(double* xiT, const double* W, const double* Aa, Py_ssize_t nb, Py_ssize_t K, Py_ssize_t Kp)
    void avi_exp_shift(const double* l, double m, double* e, Py_ssize_t Kp)
    int avi_emit(const double* e, const double* l, const double* p, double* u, double tiny, Py_ssize_t Kp,
                 double* total)
    double avi_max(const double* l, Py_ssize_t Kp)
    double avi_masked_max(const double* l, const double* p, Py_ssize_t Kp)
    void avi_ratio(double* w, const double* a, const double* g, const double* p, Py_ssize_t Kp)
    void avi_dual_matvec(const double* A, const double* w, const double* a, double* beta, double* pred,
                         Py_ssize_t K, Py_ssize_t Kp)
    void avi_viterbi_step(const double* delta, const double* logA, const double* l, double* out, int32_t* bp,
                          Py_ssize_t K, Py_ssize_t Kp)

cdef extern from "_hmm_em_simd.h" nogil:
    void avi_copy(double* dst, const double* src, Py_ssize_t Kp)
    void avi_scale(double* dst, const double* src, double s, Py_ssize_t Kp)
    void avi_scale2(double* a, const double* u, double* r, const double* e, double inv, Py_ssize_t Kp)
    void avi_masked_mul(double* v, const double* a, const double* r, const double* b, Py_ssize_t Kp)
    void avi_mul(double* g, const double* a, const double* b, Py_ssize_t Kp)
    void avi_em_add(const double* g, const double* Ft, Py_ssize_t nf, double* symrow, double* post, double* wsum,
                    Py_ssize_t Kp)
    void avi_diag_row(double* out, const double* x, Py_ssize_t D, const double* P, Py_ssize_t Kp)
    void avi_full_row(double* out, const double* x, Py_ssize_t D, const double* P, Py_ssize_t Kp)
    void avi_linear_row(double* out, const double* x, Py_ssize_t D, const double* P, Py_ssize_t Kp)

# Status codes per sequence (same values as avicore/kernels/hmm.py).
cdef enum:
    HMM_SCALED = 0        # probability space, per-step normalisation
    HMM_IMPOSSIBLE = 1    # no path has positive probability: log p(x) = -inf, zero posteriors
    HMM_LOG_SPACE = 3     # probability space would have underflowed: computed in log space
    HMM_NO_MEMORY = 4

# A state whose exact forward value is positive but whose scaled value falls below this sends the sequence to
# log space (every value kept above it is a normal double with full relative precision).
cdef double TINY = 1e-280
# Time steps of (w_{t+1}, alpha_t) buffered before one rank-NB update of the transition counts.
cdef enum:
    NB = 16
# From this padded size on (A is 18 KiB and up) the backward step reads A once for both of its mat-vecs.
cdef enum:
    DUAL_MIN_KP = 48


cdef struct Model:
    Py_ssize_t K
    Py_ssize_t Kp
    const double* A        # (Kp, Kp) exp(log_transmat), zero-padded
    const double* At       # (Kp, Kp) its transpose
    const double* pi       # (Kp,) exp(log_startprob), zero-padded
    const double* logA     # (K, K) log_transmat
    const double* logAt    # (K, K) its transpose
    const double* logpi    # (K,)
    bint all_log           # some finite log-probability underflows in probability space: log space throughout
    bint check_reach       # A has entries below ~1e-40: a zero predicted value may be an underflow


# ----------------------------------------------------------------------------------------------------------------
# small vector helpers (n is a multiple of 4 where padded vectors are used)
# ----------------------------------------------------------------------------------------------------------------

cdef inline double* _ws_alloc(Py_ssize_t n) noexcept nogil:
    """A per-thread workspace of n doubles with a 128-byte guard on each side, so that two threads' workspaces
    never share a cache line (or an adjacent-line prefetch pair): at small K every step touches both ends."""
    cdef double* raw = <double*> malloc((n + 32) * sizeof(double))
    if raw == NULL:
        return NULL
    return raw + 16


cdef inline void _ws_free(double* ws) noexcept nogil:
    if ws != NULL:
        free(ws - 16)


cdef inline void _load(double* dst, const double* src, Py_ssize_t K) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(K):
        dst[i] = src[i]


cdef inline void _fill(double* dst, double value, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = value


cdef inline bint _reaches(const Model* md, const double* alpha, Py_ssize_t j) noexcept nogil:
    """True if some state i with alpha[i] > 0 may move to j (exact test on log_transmat)."""
    cdef Py_ssize_t i
    for i in range(md.K):
        if alpha[i] > 0.0 and md.logAt[j * md.K + i] > -INFINITY:
            return True
    return False


# ----------------------------------------------------------------------------------------------------------------
# forward-backward, one sequence
# ----------------------------------------------------------------------------------------------------------------

cdef struct Emission:
    int mode               # EMIT_ROWS: rows of log_lik; EMIT_TABLE: log table; from X: EMIT_DIAG, EMIT_FULL
                           # (Gaussians), EMIT_LINEAR (c + W x: Poisson without its per-row log x! term)
    Py_ssize_t K
    Py_ssize_t Kp
    const double* L        # EMIT_ROWS: log_lik (T, K)
    const double* X        # EMIT_DIAG: observations (T, D)
    Py_ssize_t D
    const double* P        # EMIT_DIAG: means (D, Kp), ½ precisions (D, Kp), constants (Kp, -inf padded);
                           # EMIT_FULL: means (D, Kp), lower triangle of L⁻¹ by rows (D(D+1)/2, Kp), constants;
                           # EMIT_LINEAR: W (D, Kp), constants; EMIT_TABLE: log table (n_symbols, Kp), -inf padded,
                           # then exp(row - its max) (n_symbols, Kp), then the maxima (column 0 of n_symbols rows)
    const int64_t* sym     # EMIT_TABLE: symbol of each row
    Py_ssize_t n_symbols   # EMIT_TABLE


cdef enum:
    EMIT_ROWS = 0
    EMIT_DIAG = 1
    EMIT_TABLE = 2
    EMIT_FULL = 3
    EMIT_LINEAR = 4


cdef inline void _emission_row(const Emission* em, Py_ssize_t t, double* out) noexcept nogil:
    """Row t of the batch's log-likelihoods into out[0:K] (EMIT_ROWS) or out[0:Kp] (-inf padding)."""
    if em.mode == EMIT_ROWS:
        _load(out, em.L + t * em.K, em.K)
    elif em.mode == EMIT_TABLE:
        avi_copy(out, em.P + em.sym[t] * em.Kp, em.Kp)
    elif em.mode == EMIT_DIAG:  # -½ Σ_d (x_d - μ_kd)² / σ²_kd + c_k, as avicore.emissions.gaussian_diag_log_lik
        avi_diag_row(out, em.X + t * em.D, em.D, em.P, em.Kp)
    elif em.mode == EMIT_FULL:  # -½ ‖L_k⁻¹ (x - μ_k)‖² + c_k, as avicore.emissions.gaussian_full_log_lik
        avi_full_row(out, em.X + t * em.D, em.D, em.P, em.Kp)
    else:
        avi_linear_row(out, em.X + t * em.D, em.D, em.P, em.Kp)


cdef int _scaled_forward(const Model* md, const Emission* em, Py_ssize_t row0, double* alpha, Py_ssize_t stride,
                         double* r, Py_ssize_t n, double* ws, double* loglik) noexcept nogil:
    """Normalised forward pass over rows row0..row0+n-1; alpha rows (``stride`` apart, K or Kp values) get the
    filtered probabilities, and r rows (unless r is NULL; then stride must be Kp) the scaled emissions e_t / c_t.
    0, or 1: use log space.

    The next step's predictions are computed from u_t = alpha_t c_t and the normaliser applied to its emissions
    (u_{t+1} = (e_{t+1} / c_t) ⊙ (u_t A)), so the reciprocal of c_t is off the dependency chain from one step to
    the next; after a c_t below 1e-20 the step normalises first (u_t A could otherwise underflow unnoticed).
    The shift m_t is first the step's maximum over all states, which keeps the K exps off the alpha dependency
    chain; only if that underflows for a reachable state is the step redone with the maximum over reachable
    states (the shift of the module docstring), and only if that underflows too does the sequence go to log space.
    """
    cdef Py_ssize_t K = md.K, Kp = md.Kp, t, j
    cdef double* cur = ws            # u_{t-1} (alpha_{t-1} · c_{t-1}), or alpha_{t-1} after a tiny c; zero-padded
    cdef double* pred = ws + Kp      # cur A: pred_t times c_{t-1} (or 1)
    cdef double* lrow = ws + 2 * Kp  # log_lik[t], padded with -inf
    cdef double* e = ws + 3 * Kp     # exp(log_lik[t] - m)
    cdef double* u = ws + 4 * Kp     # e * pred_t
    cdef double* lnext = ws + 5 * Kp # log_lik[t + 1], copied a step ahead: the scalar stores have long retired
    cdef double* es = ws + 6 * Kp    # e / c_{t-1} (or e)
    cdef double* swap                # when the row is read back as vectors (no store-forwarding stall)
    cdef double m, c, inv, total = 0.0
    cdef double scale = 1.0          # 1 / c_{t-1} while cur holds u_{t-1}
    cdef double prod = 1.0           # product of the c_t not yet added to total as a log
    cdef int64_t symbol
    cdef bint table = em.mode == EMIT_TABLE
    _fill(cur, 0.0, Kp)
    _fill(u, 0.0, Kp)
    _fill(lrow + K, -INFINITY, Kp - K)
    _fill(lnext + K, -INFINITY, Kp - K)
    _emission_row(em, row0, lrow)
    for t in range(n):
        if t + 1 < n:
            _emission_row(em, row0 + t + 1, lnext)
        if table:                    # the table's rows come shifted and exponentiated
            symbol = em.sym[row0 + t]
            m = em.P[(2 * em.n_symbols + symbol) * Kp]
            avi_copy(e, em.P + (em.n_symbols + symbol) * Kp, Kp)
        else:
            m = avi_max(lrow, Kp)
        if m == -INFINITY:           # every emission impossible at this step
            return 1
        if not table:
            avi_exp_shift(lrow, m, e, Kp)
        if t == 0:
            _load(pred, md.pi, Kp)
        else:
            avi_matvec(md.A, cur, pred, K, Kp)
        avi_scale(es, e, scale, Kp)  # u_t = (e_t / c_{t-1}) (u_{t-1} A): the division is off the u chain
        if md.check_reach and t > 0:
            for j in range(K):
                if pred[j] == 0.0 and lrow[j] > -INFINITY and _reaches(md, cur, j):
                    return 1
        if avi_emit(es, lrow, pred, u, TINY, Kp, &c) or c == 0.0:
            m = avi_masked_max(lrow, pred, Kp)
            if m == -INFINITY:
                return 1
            avi_exp_shift(lrow, m, e, Kp)
            avi_scale(es, e, scale, Kp)
            if avi_emit(es, lrow, pred, u, TINY, Kp, &c):
                return 1
        inv = 1.0 / c
        if r != NULL:                # EM: alpha and r rows, Kp apart
            avi_scale2(alpha + t * Kp, u, r + t * Kp, e, inv, Kp)
        else:
            for j in range(stride):
                alpha[t * stride + j] = u[j] * inv
        if c >= 1e-20:               # u_t A stays >= 1e-20 pred_{t+1}: no underflow TINY would not catch
            swap = cur
            cur = u
            u = swap
            scale = inv
        else:
            for j in range(Kp):
                cur[j] = u[j] * inv
            scale = 1.0
        swap = lrow
        lrow = lnext
        lnext = swap
        total += m
        prod *= c                    # c >= TINY, so prod >= 1e-20 * TINY stays a normal double
        if prod < 1e-20:
            total += log(prod)
            prod = 1.0
    loglik[0] = total + log(prod)
    return 0


cdef inline Py_ssize_t _buffer_xi(double* xiT, double* wbuf, double* abuf, Py_ssize_t nb, const double* w,
                                  const double* a, Py_ssize_t K, Py_ssize_t Kp) noexcept nogil:
    """Buffer (w_{t+1}, alpha_t) as row nb; every NB rows, add them to xiT as one rank-NB update. Returns the new nb."""
    avi_copy(wbuf + nb * Kp, w, Kp)
    avi_copy(abuf + nb * Kp, a, Kp)
    if nb + 1 < NB:
        return nb + 1
    _rank_update(xiT, wbuf, abuf, NB, K, Kp)
    return 0


cdef void _rank_update(double* xiT, const double* wbuf, const double* abuf, Py_ssize_t nb, Py_ssize_t K,
                       Py_ssize_t Kp) noexcept nogil:
    """avi_rank_update as a function of its own: called every NB steps, it keeps the per-step code small."""
    avi_rank_update(xiT, wbuf, abuf, nb, K, Kp)


cdef void _scaled_backward(const Model* md, double* post, Py_ssize_t n, double* ws, double* counts) noexcept nogil:
    """Backward pass over the scaled alphas in ``post`` (overwritten with the posteriors); counts += A ⊙ Σ xi.

    With w_t = e_t beta_t / c_t = gamma_t / pred_t (zero where alpha_t = 0):
    beta_t = A w_{t+1}, gamma_t = alpha_t beta_t, xi_t = A ⊙ (alpha_t w_{t+1}^T). The outer products are buffered
    NB steps at a time and added to xiT (= Σ_t w_{t+1} alpha_t^T) as one rank-NB update.
    """
    cdef Py_ssize_t K = md.K, Kp = md.Kp, t, i, j, nb = 0
    cdef double* a_cur = ws
    cdef double* a_prev = ws + Kp
    cdef double* pred = ws + 2 * Kp
    cdef double* beta = ws + 3 * Kp
    cdef double* w = ws + 4 * Kp
    cdef double* xiT = ws + 5 * Kp
    cdef double* wbuf = xiT + Kp * Kp            # (NB, Kp)
    cdef double* abuf = wbuf + NB * Kp           # (NB, Kp)
    cdef double* swap
    if n < 2:
        return
    _fill(ws, 0.0, 5 * Kp + Kp * Kp)
    _load(a_cur, post + (n - 1) * K, K)
    _load(a_prev, post + (n - 2) * K, K)
    avi_matvec(md.A, a_prev, pred, K, Kp)
    avi_ratio(w, a_cur, a_cur, pred, Kp)
    for t in range(n - 2, -1, -1):
        swap = a_cur
        a_cur = a_prev
        a_prev = swap
        if t > 0 and Kp >= DUAL_MIN_KP:   # A in L2: one pass gives beta_t = A w_{t+1} and pred_t = alpha_{t-1} A
            _load(a_prev, post + (t - 1) * K, K)
            avi_dual_matvec(md.A, w, a_prev, beta, pred, K, Kp)
        else:
            avi_matvec(md.At, w, beta, K, Kp)
        nb = _buffer_xi(xiT, wbuf, abuf, nb, w, a_cur, K, Kp)
        for i in range(Kp):
            beta[i] = a_cur[i] * beta[i]
        _load(post + t * K, beta, K)
        if t > 0:
            if Kp < DUAL_MIN_KP:
                _load(a_prev, post + (t - 1) * K, K)
                avi_matvec(md.A, a_prev, pred, K, Kp)
            avi_ratio(w, a_cur, beta, pred, Kp)
    if nb:
        _rank_update(xiT, wbuf, abuf, nb, K, Kp)
    for i in range(K):
        for j in range(K):
            counts[i * K + j] += md.A[i * Kp + j] * xiT[j * Kp + i]


cdef double _log_forward(const Model* md, const double* L, double* la, Py_ssize_t n, double* tmp,
                         double* log_c) noexcept nogil:
    """Log-space forward pass, each log_lik row shifted by its maximum M_t and normalised per step: la rows get
    the normalised log alphas; log_c (if not NULL) gets log c_t in [0, n) and M_t in [n, 2n). Returns
    log p(x) = Σ (log c_t + M_t), or -inf (remaining rows left as they are) once a step is impossible."""
    cdef Py_ssize_t K = md.K, t, i, j
    cdef const double* row
    cdef const double* Lt
    cdef double c, m, total = 0.0
    for t in range(n):
        Lt = L + t * K
        m = -INFINITY
        for j in range(K):
            if Lt[j] > m:
                m = Lt[j]
        if m == -INFINITY:
            return -INFINITY
        for j in range(K):
            if t == 0:
                la[j] = md.logpi[j] + (Lt[j] - m)
            else:
                row = md.logAt + j * K
                for i in range(K):
                    tmp[i] = la[(t - 1) * K + i] + row[i]
                la[t * K + j] = (Lt[j] - m) + logsumexp_vec(tmp, K)
        c = logsumexp_vec(la + t * K, K)
        if c == -INFINITY:
            return -INFINITY
        for j in range(K):
            la[t * K + j] -= c
        if log_c != NULL:
            log_c[t] = c
            log_c[n + t] = m
        total += c + m
    return total


cdef int _log_forward_backward(const Model* md, const double* L, double* post, Py_ssize_t n, double* ws,
                               double* loglik, double* counts) noexcept nogil:
    """Forward-backward in shifted, per-step-normalised log space (the fallback). Returns HMM_LOG_SPACE,
    HMM_IMPOSSIBLE or HMM_NO_MEMORY."""
    cdef Py_ssize_t K = md.K, t, i, j
    cdef double* tmp = ws
    cdef double* v = ws + K          # l_{t+1} + lb_{t+1} - log c_{t+1}
    cdef double* v_new = ws + 2 * K
    cdef double* swap
    cdef double* log_c               # log c_t, then the shifts M_t
    cdef double ll, lb, la_i, x
    cdef const double* row
    log_c = <double*> malloc(2 * n * sizeof(double))
    if log_c == NULL:
        return HMM_NO_MEMORY
    ll = _log_forward(md, L, post, n, tmp, log_c)
    loglik[0] = ll
    if ll == -INFINITY:
        free(log_c)
        _fill(post, 0.0, n * K)
        return HMM_IMPOSSIBLE
    for j in range(K):
        v[j] = (L[(n - 1) * K + j] - log_c[2 * n - 1]) - log_c[n - 1]
        post[(n - 1) * K + j] = exp(post[(n - 1) * K + j])
    for t in range(n - 2, -1, -1):
        for i in range(K):
            row = md.logA + i * K
            for j in range(K):
                tmp[j] = row[j] + v[j]
            lb = logsumexp_vec(tmp, K)
            la_i = post[t * K + i]
            if la_i > -INFINITY:
                for j in range(K):
                    x = la_i + tmp[j]
                    if x > -INFINITY:
                        counts[i * K + j] += exp(x)
                post[t * K + i] = exp(la_i + lb)
            else:
                post[t * K + i] = 0.0
            v_new[i] = ((L[t * K + i] - log_c[n + t]) + lb) - log_c[t]
        swap = v
        v = v_new
        v_new = swap
    free(log_c)
    return HMM_LOG_SPACE


cdef int _forward_backward_one(const Model* md, const Emission* em, Py_ssize_t row0, double* post, Py_ssize_t n,
                               double* ws, double* loglik, double* counts) noexcept nogil:
    """One sequence (rows row0.., log_lik rows in em.L): scaled pass, or the log-space fallback where scaling would
    underflow. Returns a status."""
    cdef const double* L = em.L + row0 * md.K
    if not md.all_log and _scaled_forward(md, em, row0, post, md.K, NULL, n, ws, loglik) == 0:
        _scaled_backward(md, post, n, ws, counts)
        return HMM_SCALED
    return _log_forward_backward(md, L, post, n, ws, loglik, counts)


cdef Emission _rows(const double* L, Py_ssize_t K, Py_ssize_t Kp) noexcept nogil:
    """The emission source of the kernels that take log_lik rows."""
    cdef Emission em
    em.mode = EMIT_ROWS
    em.K = K
    em.Kp = Kp
    em.L = L
    em.X = NULL
    em.D = 0
    em.P = NULL
    em.sym = NULL
    em.n_symbols = 0
    return em


cdef Model _model(const double[:, ::1] A, const double[:, ::1] At, const double[::1] pi,
                  const double[:, ::1] log_transmat, const double[:, ::1] log_transmat_t,
                  const double[::1] log_startprob, bint all_log, bint check_reach):
    cdef Model md
    md.K = log_transmat.shape[0]
    md.Kp = A.shape[0]
    md.A = &A[0, 0]
    md.At = &At[0, 0]
    md.pi = &pi[0]
    md.logA = &log_transmat[0, 0]
    md.logAt = &log_transmat_t[0, 0]
    md.logpi = &log_startprob[0]
    md.all_log = all_log
    md.check_reach = check_reach
    return md


def cy_forward_backward(const double[:, ::1] log_lik, const double[:, ::1] A, const double[:, ::1] At,
                        const double[::1] pi, const double[:, ::1] log_transmat, const double[:, ::1] log_transmat_t,
                        const double[::1] log_startprob, bint all_log, bint check_reach,
                        const int64_t[::1] offsets, const int64_t[::1] chunks, const int64_t[::1] order,
                        double[:, ::1] posteriors, double[::1] log_likelihood, double[:, :, ::1] counts,
                        signed char[::1] status, int num_threads):
    """Forward-backward of every sequence; chunk c (sequences chunks[c]:chunks[c+1]) adds into counts[c]. Chunks
    run in ``order`` (longest first) on a dynamic schedule.

    ``A``, ``At``, ``pi``: the padded probability-space model (see avicore/kernels/hmm.py ``_prepare_model``).
    Returns the number of chunks whose workspace could not be allocated (0 on success).
    """
    cdef Model md = _model(A, At, pi, log_transmat, log_transmat_t, log_startprob, all_log, check_reach)
    cdef Py_ssize_t n_chunks = chunks.shape[0] - 1
    cdef Py_ssize_t K = md.K, Kp = md.Kp, i, c, s, b, e
    cdef Py_ssize_t ws_size = 6 * Kp + Kp * Kp + 2 * NB * Kp + 3 * K
    cdef double* ws
    cdef int failed = 0
    cdef Emission em = _rows(&log_lik[0, 0], K, Kp)
    cdef double* post = &posteriors[0, 0]
    ws = NULL
    with nogil, parallel(num_threads=num_threads):
        ws = _ws_alloc(ws_size)
        for i in prange(n_chunks, schedule="dynamic"):
            c = order[i]
            if ws == NULL:
                failed += 1
                continue
            for s in range(chunks[c], chunks[c + 1]):
                b = offsets[s]
                e = offsets[s + 1]
                status[s] = _forward_backward_one(&md, &em, b, post + b * K, e - b, ws,
                                                  &log_likelihood[s], &counts[c, 0, 0])
                if status[s] == HMM_NO_MEMORY:
                    failed += 1
        _ws_free(ws)
    return failed


# ----------------------------------------------------------------------------------------------------------------
# Viterbi
# ----------------------------------------------------------------------------------------------------------------

cdef void _viterbi_one(const double* logA, const double* logpi, const double* L, Py_ssize_t n, Py_ssize_t K,
                       Py_ssize_t Kp, double* ws, int32_t* bp, int64_t* states, double* log_prob) noexcept nogil:
    """Max-product in log space; ties go to the lowest state index (strict > scanning states upwards).

    ``logA`` is log_transmat padded to (Kp, Kp) with -inf; the per-step vectors are padded with -inf too.
    """
    cdef Py_ssize_t t, j
    cdef double* delta = ws
    cdef double* nd = ws + Kp
    cdef double* lrow = ws + 2 * Kp
    cdef double* swap
    cdef double best
    cdef int64_t z
    _fill(delta, -INFINITY, Kp)
    _fill(nd, -INFINITY, Kp)
    _fill(lrow, -INFINITY, Kp)
    for j in range(K):
        delta[j] = logpi[j] + L[j]
    for t in range(1, n):
        _load(lrow, L + t * K, K)
        avi_viterbi_step(delta, logA, lrow, nd, bp + t * K, K, Kp)
        swap = delta
        delta = nd
        nd = swap
    best = -INFINITY
    z = 0
    for j in range(K):
        if delta[j] > best:
            best = delta[j]
            z = j
    log_prob[0] = best
    states[n - 1] = z
    for t in range(n - 1, 0, -1):
        z = bp[t * K + z]
        states[t - 1] = z


def cy_viterbi(const double[:, ::1] log_lik, const double[:, ::1] log_transmat_pad, const double[::1] log_startprob,
               const int64_t[::1] offsets, int32_t[:, ::1] backpointers, double[::1] log_prob, int64_t[::1] states,
               int num_threads):
    """Viterbi path of every sequence (prange over sequences). ``log_transmat_pad``: (Kp, Kp), -inf padding.
    Returns the number of failed allocations."""
    cdef Py_ssize_t n_seq = offsets.shape[0] - 1
    cdef Py_ssize_t K = log_lik.shape[1], Kp = log_transmat_pad.shape[0], s, b, e
    cdef double* ws
    cdef int failed = 0
    cdef const double* logA = &log_transmat_pad[0, 0]
    cdef const double* logpi = &log_startprob[0]
    ws = NULL
    with nogil, parallel(num_threads=num_threads):
        ws = _ws_alloc(3 * Kp)
        for s in prange(n_seq, schedule="dynamic"):
            if ws == NULL:
                failed += 1
                continue
            b = offsets[s]
            e = offsets[s + 1]
            _viterbi_one(logA, logpi, &log_lik[b, 0], e - b, K, Kp, ws, &backpointers[b, 0], &states[b],
                         &log_prob[s])
        _ws_free(ws)
    return failed


# ----------------------------------------------------------------------------------------------------------------
# posterior sampling: forward filter (per sequence), then backward sampling (per sample and sequence)
# ----------------------------------------------------------------------------------------------------------------

cdef int _filter_one(const Model* md, const Emission* em, Py_ssize_t row0, double* alpha, Py_ssize_t n,
                     double* ws, double* loglik) noexcept nogil:
    """Scaled alphas (HMM_SCALED), log alphas (HMM_LOG_SPACE) or HMM_IMPOSSIBLE into ``alpha``."""
    cdef const double* L = em.L + row0 * md.K
    if not md.all_log and _scaled_forward(md, em, row0, alpha, md.K, NULL, n, ws, loglik) == 0:
        return HMM_SCALED
    loglik[0] = _log_forward(md, L, alpha, n, ws, NULL)
    return HMM_IMPOSSIBLE if loglik[0] == -INFINITY else HMM_LOG_SPACE


cdef inline int64_t _pick(const double* w, Py_ssize_t K, double u) noexcept nogil:
    """Inverse CDF: smallest k with u·Σw < w_0 + … + w_k (sums left to right); else the last k with w_k > 0."""
    cdef Py_ssize_t k
    cdef double total = 0.0, target, acc = 0.0
    for k in range(K):
        total += w[k]
    target = u * total
    for k in range(K):
        acc += w[k]
        if target < acc:
            return k
    for k in range(K - 1, -1, -1):
        if w[k] > 0.0:
            return k
    return 0


cdef void _sample_one(const Model* md, const double* alpha, Py_ssize_t n, int mode, uint64_t row_key,
                      int64_t t0, double* w, int64_t* out) noexcept nogil:
    """One backward-sampled path of one sequence (rows t0..t0+n-1 of the batch) into out[0:n]."""
    cdef Py_ssize_t K = md.K, t, k
    cdef int64_t z
    cdef double mx, x
    cdef const double* at
    cdef const double* col
    if mode == HMM_IMPOSSIBLE:
        for t in range(n):
            out[t] = -1
        return
    at = alpha + (n - 1) * K
    if mode == HMM_SCALED:
        for k in range(K):
            w[k] = at[k]
    else:
        mx = -INFINITY
        for k in range(K):
            if at[k] > mx:
                mx = at[k]
        for k in range(K):
            w[k] = exp(at[k] - mx)
    z = _pick(w, K, cr_hmm_sample_uniform(row_key, t0 + n - 1))
    out[n - 1] = z
    for t in range(n - 2, -1, -1):
        at = alpha + t * K
        if mode == HMM_SCALED:
            col = md.At + z * md.Kp
            for k in range(K):
                w[k] = at[k] * col[k]
        else:
            col = md.logAt + z * K
            mx = -INFINITY
            for k in range(K):
                x = at[k] + col[k]
                w[k] = x
                if x > mx:
                    mx = x
            for k in range(K):
                w[k] = exp(w[k] - mx)
        z = _pick(w, K, cr_hmm_sample_uniform(row_key, t0 + t))
        out[t] = z


def cy_sample_posterior(const double[:, ::1] log_lik, const double[:, ::1] A, const double[:, ::1] At,
                        const double[::1] pi, const double[:, ::1] log_transmat, const double[:, ::1] log_transmat_t,
                        const double[::1] log_startprob, bint all_log, bint check_reach,
                        const int64_t[::1] offsets, uint64_t key, double[:, ::1] alpha, double[::1] log_likelihood,
                        signed char[::1] status, int64_t[:, ::1] samples, int num_threads):
    """Forward-filter every sequence (prange over sequences), then draw every (sample, sequence) path (prange).

    ``key`` = mix64(seed) (see avicore/kernels/_counter_rng.py). Returns the number of failed allocations.
    """
    cdef Model md = _model(A, At, pi, log_transmat, log_transmat_t, log_startprob, all_log, check_reach)
    cdef Py_ssize_t n_seq = offsets.shape[0] - 1
    cdef Py_ssize_t n_samples = samples.shape[0]
    cdef Py_ssize_t K = md.K, Kp = md.Kp, s, b, e, item, q
    cdef double* ws
    cdef int failed = 0
    cdef Emission em = _rows(&log_lik[0, 0], K, Kp)
    cdef double* al = &alpha[0, 0]
    ws = NULL
    with nogil, parallel(num_threads=num_threads):
        ws = _ws_alloc(7 * Kp + K)
        for s in prange(n_seq, schedule="dynamic"):
            if ws == NULL:
                failed += 1
                continue
            b = offsets[s]
            e = offsets[s + 1]
            status[s] = _filter_one(&md, &em, b, al + b * K, e - b, ws, &log_likelihood[s])
        _ws_free(ws)
    if failed:
        return failed
    ws = NULL
    with nogil, parallel(num_threads=num_threads):
        ws = _ws_alloc(K)
        for item in prange(n_samples * n_seq, schedule="dynamic", chunksize=4):
            if ws == NULL:
                failed += 1
                continue
            s = item // n_seq
            q = item - s * n_seq
            b = offsets[q]
            e = offsets[q + 1]
            _sample_one(&md, al + b * K, e - b, status[q], cr_hmm_sample_row(key, s), b, ws, &samples[s, b])
        _ws_free(ws)
    return failed


# ----------------------------------------------------------------------------------------------------------------
# EM expectations (cy_em_expectations): in _hmm_em.pxi, to keep this file readable
# ----------------------------------------------------------------------------------------------------------------

include "_hmm_em.pxi"
