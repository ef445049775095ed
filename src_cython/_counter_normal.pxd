# Counter-based standard normal draws for avicore's Cython kernels (cimport from _counter_normal).
#
# The same recipe, bit for bit on the fast path, as avicore/kernels/_counter_normal.py (read its docstring for the
# keying): row = mix(key + index·GAMMA), h₀ = mix(row + (c + 1)·GAMMA), next(h) = mix(h + RETRY_GAMMA), and a
# 256-layer ziggurat whose tables come from _ziggurat.h (the literals of avicore/kernels/_ziggurat_tables.py).
# ``mix`` is the 64-bit mixer of avicore/kernels/_counter_rng.py (cr_mix64 of _counter_rng.pxd).
from libc.math cimport exp, log
from libc.stdint cimport int64_t, uint64_t

from _counter_rng cimport cr_mix64 as cn_mix64


cdef extern from "_ziggurat.h":
    const double AVICORE_ZIG_R
    const double AVICORE_ZIG_X[257]
    const double AVICORE_ZIG_F[257]


cdef inline uint64_t cn_row_key(uint64_t key, int64_t index) noexcept nogil:
    return cn_mix64(key + <uint64_t>index * <uint64_t>0x9E3779B97F4A7C15ULL)


cdef inline uint64_t cn_first_hash(uint64_t row, int64_t counter) noexcept nogil:
    return cn_mix64(row + <uint64_t>(counter + 1) * <uint64_t>0x9E3779B97F4A7C15ULL)


cdef inline uint64_t cn_next(uint64_t h) noexcept nogil:
    return cn_mix64(h + <uint64_t>0xD1B54A32D192ED03ULL)


cdef inline double cn_open_uniform(uint64_t h) noexcept nogil:
    return (<double>(<int64_t>(h >> 11)) + 0.5) * (1.0 / 9007199254740992.0)


cdef inline double cn_ziggurat_slow(uint64_t h, int layer, double sign, double x) noexcept nogil:
    """The rare paths of the ziggurat (tail and wedges), entered after the fast test failed for (h, layer, x)."""
    cdef double a, b, y
    while True:
        h = cn_next(h)
        if layer == 0:
            while True:
                a = -log(cn_open_uniform(h)) / AVICORE_ZIG_R
                h = cn_next(h)
                b = -log(cn_open_uniform(h))
                h = cn_next(h)
                if 2.0 * b > a * a:
                    return sign * (AVICORE_ZIG_R + a)
        y = AVICORE_ZIG_F[layer + 1] + cn_open_uniform(h) * (AVICORE_ZIG_F[layer] - AVICORE_ZIG_F[layer + 1])
        if y < exp(-0.5 * x * x):
            return sign * x
        h = cn_next(h)
        layer = <int>(h & 255)
        sign = 1.0 - 2.0 * <double>(<int>((h >> 8) & 1))
        x = <double>(<int64_t>(h >> 11)) * (1.0 / 9007199254740992.0) * AVICORE_ZIG_X[layer]
        if x < AVICORE_ZIG_X[layer + 1]:
            return sign * x


cdef inline double cn_normal(uint64_t row, int64_t counter) noexcept nogil:
    """ε for draw ``counter`` (= s·dim + j) of the row keyed ``row``."""
    cdef uint64_t h = cn_first_hash(row, counter)
    cdef int layer = <int>(h & 255)
    cdef double sign = 1.0 - 2.0 * <double>(<int>((h >> 8) & 1))
    cdef double x = <double>(<int64_t>(h >> 11)) * (1.0 / 9007199254740992.0) * AVICORE_ZIG_X[layer]
    if x < AVICORE_ZIG_X[layer + 1]:
        return sign * x
    return cn_ziggurat_slow(h, layer, sign, x)


cdef inline double cn_normal_fast(uint64_t row, int64_t counter, int* miss) noexcept nogil:
    """The ziggurat's fast path alone, branch-free (loops over it vectorise): ε for draw ``counter`` when
    ``miss`` is left 0; when it is set to 1 (about 1.5 % of draws) the value is not ε and :func:`cn_normal` must be
    called instead."""
    cdef uint64_t h = cn_first_hash(row, counter)
    cdef int layer = <int>(h & 255)
    cdef double sign = 1.0 - 2.0 * <double>(<int>((h >> 8) & 1))
    cdef double x = <double>(<int64_t>(h >> 11)) * (1.0 / 9007199254740992.0) * AVICORE_ZIG_X[layer]
    miss[0] = x >= AVICORE_ZIG_X[layer + 1]
    return sign * x
