# Build and CPU facts for fastnn.show_config() and the backend selection.
from fastnn._fastnn cimport (fnn_compiled_isas, fnn_compiler, fnn_cpu_best_isa, fnn_fma_probe_gflops,
                             fnn_have_openmp, fnn_omp_max_threads)


def cpu_best_isa():
    """Best instruction set compiled in and supported by this CPU: 0 portable, 1 AVX2+FMA, 2 AVX-512."""
    return fnn_cpu_best_isa()


def compiled_isas():
    """ISA numbers compiled into this build."""
    cdef int mask = fnn_compiled_isas()
    return [i for i in range(3) if mask & (1 << i)]


def have_openmp():
    return bool(fnn_have_openmp())


def omp_max_threads():
    return fnn_omp_max_threads()


def compiler():
    return fnn_compiler().decode("ascii")


def fma_probe_gflops(int isa, int threads, long long reps):
    """fp32 GFLOP/s of `threads` threads running independent FMA chains on `isa`'s vectors at once
    (0.0 for the portable ISA or a build without the SIMD paths)."""
    cdef double g
    with nogil:
        g = fnn_fma_probe_gflops(isa, threads, reps)
    return g
