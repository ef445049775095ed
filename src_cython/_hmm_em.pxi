# EM expectations for src_cython/hmm.pyx (textually included there: it uses that module's Model, Emission,
# _scaled_forward and workspace helpers). See the module docstring of hmm.pyx and avicore/kernels/hmm_em.py.

# ----------------------------------------------------------------------------------------------------------------
# EM expectations: forward-backward reduced to sufficient statistics in one pass, no posteriors materialised
# ----------------------------------------------------------------------------------------------------------------

cdef enum:
    HMM_FALLBACK = 5      # cy_em_expectations: the scaled pass failed; the caller redoes it with the generic kernel


cdef struct EmWork:
    double* ws            # per-step vectors, xiT, rank buffers, then the chunk's accumulators
    double* seq           # alpha (cap, Kp) then r (cap, Kp) of the current sequence: in L2 for typical lengths
    Py_ssize_t cap


cdef inline bint _em_reserve(EmWork* w, Py_ssize_t n, Py_ssize_t Kp) noexcept nogil:
    """Room for a sequence of n steps in w.seq (grown, never shrunk, by the thread that owns w)."""
    if n <= w.cap:
        return True
    _ws_free(w.seq)
    w.seq = _ws_alloc(2 * n * Kp)
    w.cap = n if w.seq != NULL else 0
    return w.seq != NULL


cdef void _em_backward(const Model* md, const double* alpha, const double* r, Py_ssize_t n, double* ws,
                       const double* F, Py_ssize_t nf, const int64_t* sym, Py_ssize_t n_symbols,
                       double* acc) noexcept nogil:
    """Backward pass over one sequence's alpha and r rows (Kp apart), adding its statistics into ``acc``.

    With w_{t+1} = r_{t+1} ⊙ beta_{t+1} (0 where alpha_{t+1} = 0; equal to gamma_{t+1} / pred_{t+1}, without the
    division): beta_t = A w_{t+1}, gamma_t = alpha_t ⊙ beta_t, Σ xi = A ⊙ Σ_t alpha_t w_{t+1}ᵀ (rank-NB updates).
    ``acc``: transition counts (K, K) | first-step posteriors (Kp) | Σ gamma (Kp) | Σ F[t, f] gamma (nf, Kp) |
    Σ [sym_t = m] gamma (n_symbols, Kp).
    """
    cdef Py_ssize_t K = md.K, Kp = md.Kp, t, i, j, nb = 0
    cdef double* beta = ws
    cdef double* v = ws + Kp
    cdef double* g = ws + 2 * Kp
    cdef double* xiT = ws + 3 * Kp
    cdef double* wbuf = xiT + Kp * Kp
    cdef double* abuf = wbuf + NB * Kp
    cdef double* start = acc + K * K
    cdef double* post = start + Kp
    cdef double* wsum = post + Kp
    cdef double* symc = wsum + nf * Kp
    cdef const double* a_t
    _fill(xiT, 0.0, Kp * Kp)
    _fill(beta, 0.0, Kp)
    _fill(beta, 1.0, K)
    avi_copy(g, alpha + (n - 1) * Kp, Kp)
    avi_em_add(g, F + (n - 1) * nf, nf, symc + sym[n - 1] * Kp if sym != NULL else NULL, post, wsum, Kp)
    for t in range(n - 2, -1, -1):
        a_t = alpha + t * Kp
        avi_masked_mul(v, a_t + Kp, r + (t + 1) * Kp, beta, Kp)
        avi_matvec(md.At, v, beta, K, Kp)
        nb = _buffer_xi(xiT, wbuf, abuf, nb, v, a_t, K, Kp)
        avi_mul(g, a_t, beta, Kp)
        avi_em_add(g, F + t * nf, nf, symc + sym[t] * Kp if sym != NULL else NULL, post, wsum, Kp)
    if nb:
        _rank_update(xiT, wbuf, abuf, nb, K, Kp)
    for j in range(Kp):
        start[j] += g[j]
    for i in range(K):
        for j in range(K):
            acc[i * K + j] += md.A[i * Kp + j] * xiT[j * Kp + i]


def cy_em_expectations(int mode, const double[:, ::1] log_lik, const double[:, ::1] X, const double[:, ::1] P,
                       const int64_t[::1] symbols, const double[:, ::1] A, const double[:, ::1] At,
                       const double[::1] pi, const double[:, ::1] log_transmat, const double[:, ::1] log_transmat_t,
                       const double[::1] log_startprob, bint all_log, bint check_reach,
                       const int64_t[::1] offsets, const int64_t[::1] chunks, const int64_t[::1] order,
                       const double[:, ::1] features, Py_ssize_t nf, Py_ssize_t n_symbols,
                       double[:, ::1] acc_out, double[::1] log_likelihood, signed char[::1] status,
                       int num_threads):
    """Forward-backward of every sequence reduced to EM's sufficient statistics, chunk c into acc_out[c].

    ``mode``: EMIT_ROWS (``log_lik`` rows), EMIT_DIAG, EMIT_FULL, EMIT_LINEAR (``X`` and the parameter block
    ``P``) or EMIT_TABLE (``symbols`` and ``P``); see ``Emission``. ``features`` (T, nf) are the per-row values whose posterior-weighted
    sums are wanted; ``n_symbols`` > 0 adds posterior-weighted symbol counts (``symbols``). Chunks run in ``order``
    (longest first) on a dynamic schedule, each into its own row of ``acc_out``: results do not depend on the
    thread count. Sequences the scaled pass cannot do get status HMM_FALLBACK and add nothing. Returns the number
    of failed allocations.
    """
    cdef Model md = _model(A, At, pi, log_transmat, log_transmat_t, log_startprob, all_log, check_reach)
    cdef Emission em
    cdef Py_ssize_t n_chunks = chunks.shape[0] - 1
    cdef Py_ssize_t K = md.K, Kp = md.Kp, i, c, s, b, e
    cdef Py_ssize_t acc_size = acc_out.shape[1]
    cdef Py_ssize_t vec_size = max(7 * Kp, 3 * Kp + Kp * Kp + 2 * NB * Kp)
    cdef EmWork* works
    cdef EmWork* w
    cdef double* acc
    cdef int failed = 0
    cdef const double* F = &features[0, 0]
    cdef const int64_t* sym = &symbols[0] if n_symbols > 0 else NULL
    em.mode = mode
    em.K = K
    em.Kp = Kp
    em.L = &log_lik[0, 0]
    em.X = &X[0, 0]
    em.D = X.shape[1]
    em.P = &P[0, 0]
    em.sym = &symbols[0]
    em.n_symbols = P.shape[0] // 3 if mode == EMIT_TABLE else 0
    if num_threads < 1:
        num_threads = 1
    works = <EmWork*> malloc(num_threads * sizeof(EmWork))
    if works == NULL:
        return 1
    w = NULL
    with nogil, parallel(num_threads=num_threads):
        w = works + threadid()
        w.ws = _ws_alloc(vec_size + acc_size)
        w.seq = NULL
        w.cap = 0
        for i in prange(n_chunks, schedule="dynamic"):
            c = order[i]
            if w.ws == NULL:
                failed += 1
                continue
            acc = w.ws + vec_size
            _fill(acc, 0.0, acc_size)
            for s in range(chunks[c], chunks[c + 1]):
                b = offsets[s]
                e = offsets[s + 1]
                if md.all_log:
                    status[s] = HMM_FALLBACK
                elif not _em_reserve(w, e - b, Kp):
                    status[s] = HMM_NO_MEMORY
                    failed += 1
                elif _scaled_forward(&md, &em, b, w.seq, Kp, w.seq + (e - b) * Kp, e - b, w.ws,
                                     &log_likelihood[s]) != 0:
                    status[s] = HMM_FALLBACK
                else:
                    _em_backward(&md, w.seq, w.seq + (e - b) * Kp, e - b, w.ws, F + b * nf, nf,
                                 sym + b if sym != NULL else NULL, n_symbols, acc)
                    status[s] = HMM_SCALED
            _load(&acc_out[c, 0], acc, acc_size)
        _ws_free(w.seq)
        _ws_free(w.ws)
    free(works)
    return failed
