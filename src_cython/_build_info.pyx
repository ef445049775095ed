# cython: language_level=3
"""How the compiled kernels were built: OpenMP, Cython version, compiler flags, thread count."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int avicore_openmp_enabled(void) { return 1; }
    static int avicore_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int avicore_openmp_enabled(void) { return 0; }
    static int avicore_omp_max_threads(void) { return 1; }
    #endif
    #ifndef AVICORE_CYTHON_VERSION
    #define AVICORE_CYTHON_VERSION "unknown"
    #endif
    #ifndef AVICORE_COMPILE_FLAGS
    #define AVICORE_COMPILE_FLAGS ""
    #endif
    """
    int avicore_openmp_enabled() nogil
    int avicore_omp_max_threads() nogil
    const char* AVICORE_CYTHON_VERSION
    const char* AVICORE_COMPILE_FLAGS

OPENMP = bool(avicore_openmp_enabled())
CYTHON_VERSION = AVICORE_CYTHON_VERSION.decode()
COMPILE_FLAGS = AVICORE_COMPILE_FLAGS.decode()


def openmp_max_threads() -> int:
    """OpenMP's default team size (1 when built without OpenMP)."""
    return avicore_omp_max_threads()
