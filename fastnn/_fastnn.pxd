# Declarations shared by the Cython modules: csrc/fastnn.h.
from libc.stdint cimport int64_t

cdef extern from "fastnn.h" nogil:
    ctypedef struct fnn_ctx:
        int nthreads
        int isa
        int conv_algo
    int fnn_cpu_best_isa()
    int fnn_compiled_isas()
    int fnn_have_openmp()
    int fnn_omp_max_threads()
    double fnn_fma_probe_gflops(int isa, int nthreads, int64_t reps)
    const char *fnn_compiler()
