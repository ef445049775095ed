# Counter-based uniforms for avicore's Cython kernels: the same formulas, bit for bit, as
# avicore/kernels/_counter_rng.py (read its docstring):
#     mix64(z): z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^ (z >> 31)
#     uniform(h) = (h >> 11) * 2^-53
# and, for HMM posterior sampling, u[s, t] = uniform(mix64(mix64(mix64(seed) + (s + 1)·GAMMA) + (t + 1)·GAMMA)).
from libc.stdint cimport int64_t, uint64_t


cdef inline uint64_t cr_mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double cr_uniform(uint64_t h) noexcept nogil:
    return <double>(<int64_t>(h >> 11)) * (1.0 / 9007199254740992.0)


cdef inline uint64_t cr_hmm_sample_row(uint64_t key, int64_t sample) noexcept nogil:
    """mix64(key + (sample + 1)·GAMMA) with key = mix64(seed): one per posterior sample."""
    return cr_mix64(key + <uint64_t>(sample + 1) * <uint64_t>0x9E3779B97F4A7C15ULL)


cdef inline double cr_hmm_sample_uniform(uint64_t row, int64_t t) noexcept nogil:
    """u[sample, t] = uniform(mix64(row + (t + 1)·GAMMA)) for the sample's row key."""
    return cr_uniform(cr_mix64(row + <uint64_t>(t + 1) * <uint64_t>0x9E3779B97F4A7C15ULL))
