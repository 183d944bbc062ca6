/* fastnn: definitions shared by every C kernel.
 *
 * Conventions (every kernel follows them; see docs/BACKEND.md):
 *  - Arrays are C-contiguous; the Python side makes them so and validates all
 *    shapes before a kernel runs. Kernels never allocate Python objects and are
 *    called with the GIL released.
 *  - Sizes and indices are int64_t, so no product of dimensions wraps at 2^31.
 *  - Each kernel takes an fnn_ctx by value: the thread count and the instruction
 *    set to use. Kernels keep no global mutable state, so they are thread-safe,
 *    and the result depends only on the inputs and ctx (deterministic).
 *  - Each kernel exists as _f32 and _f64.
 */
#ifndef FASTNN_H
#define FASTNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef FASTNN_HAVE_OPENMP
#include <omp.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Instruction sets, in increasing order. A kernel given an ISA it was not
 * compiled for (or the CPU lacks) uses the best lower one. */
enum fnn_isa {
    FNN_ISA_PORTABLE = 0,
    FNN_ISA_AVX2 = 1,    /* AVX2 + FMA */
    FNN_ISA_AVX512 = 2   /* AVX-512F (+VL, DQ) */
};

/* Convolution algorithms for 3x3 stride-1 filters. */
enum fnn_conv_algo {
    FNN_CONV_AUTO = 0,     /* Winograd where it pays off (fnn_winograd_applies), else GEMM */
    FNN_CONV_GEMM = 1,     /* never Winograd: direct and implicit-im2col GEMM paths only */
    FNN_CONV_WINOGRAD = 2, /* Winograd F(2x2, 3x3) wherever it can run (3x3, stride 1, padding <= 2) */
    FNN_CONV_WINOGRAD4 = 3 /* Winograd F(4x4, 3x3) wherever it can run */
};

typedef struct {
    int nthreads;  /* >= 1 */
    int isa;       /* enum fnn_isa */
    int conv_algo; /* enum fnn_conv_algo */
} fnn_ctx;

/* Run-time CPU detection: the best ISA both compiled in and supported by this
 * CPU and OS. */
int fnn_cpu_best_isa(void);
/* 1 on an Intel CPU: a tuning fact (gemm_template.h's few-rows limit), never
 * a correctness one. */
int fnn_cpu_is_intel(void);
/* Bit mask (1 << isa) of the ISAs compiled into this build. */
int fnn_compiled_isas(void);
/* 1 when built with OpenMP. */
int fnn_have_openmp(void);
/* omp_get_max_threads() or 1. */
int fnn_omp_max_threads(void);
/* fp32 GFLOP/s of nthreads threads each running reps steps of 12 independent
 * FMA chains on `isa`'s vectors at once: the FMA pipes' measured peak at the
 * running clock (benchmarks report % of it). 0 for the portable ISA or where
 * the SIMD paths are not compiled in. */
double fnn_fma_probe_gflops(int isa, int nthreads, int64_t reps);
/* The compiler that built the kernels, e.g. "GCC 12.2.0". */
const char *fnn_compiler(void);

/* Per-function instruction-set targets, so default builds stay portable and the
 * SIMD paths are chosen at run time. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define FNN_X86_SIMD 1
#define FNN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define FNN_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#else
#define FNN_X86_SIMD 0
#define FNN_TARGET_AVX2
#define FNN_TARGET_AVX512
#endif

/* DEFINE(FN(base_portable), ) and, where the SIMD paths are compiled, its AVX2
 * and AVX-512 instances: the per-ISA copies of a function whose one C body the
 * compiler vectorises for each (DEFINE(NAME, TARGET) defines NAME; FN is the
 * including template's dtype suffixing) */
#if FNN_X86_SIMD
#define FNN_SIMD_INSTANCES(DEFINE, base)                                                                     \
    DEFINE(FN(base##_avx2), FNN_TARGET_AVX2)                                                                 \
    DEFINE(FN(base##_avx512), FNN_TARGET_AVX512)
#else
#define FNN_SIMD_INSTANCES(DEFINE, base)
#endif
#define FNN_PER_ISA(DEFINE, base) DEFINE(FN(base##_portable), ) FNN_SIMD_INSTANCES(DEFINE, base)

#if defined(__GNUC__) || defined(__clang__)
#define FNN_RESTRICT __restrict__
#define FNN_ALIGNED(n) __attribute__((aligned(n)))
#define FNN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FNN_RESTRICT
#define FNN_ALIGNED(n)
#define FNN_ALWAYS_INLINE inline
#endif

/* Work spans (csrc/cpu.c): units [0, units) split evenly over nth threads as
 * spans [front, back), each in one 64-bit word (front in the low half); thread t
 * takes its own span's units from the front, then the back unit of the span
 * with the most left. Without preemption every thread does its even share, so
 * each thread touches the same data in every call and every pass (images,
 * rows of C), which stays in its core's caches; a thread that starts late or
 * runs slower does fewer units instead of holding the others up, and the
 * units a thread takes stay in few runs (units taken in turn from one counter
 * put a thread boundary between every two). At most FNN_SPANS_MAX threads and
 * 2^31 units. */
#define FNN_SPANS_MAX 64
typedef struct {
    FNN_ALIGNED(64) volatile int64_t span; /* a cache line each */
} fnn_span;
void fnn_spans_init(fnn_span *spans, int nth, int64_t units);
/* thread t's next unit, or -1 where none is left */
int64_t fnn_spans_next(fnn_span *spans, int nth, int t);
/* ++*p, atomically, returning the new count. Acquire-release: what a thread wrote
 * before its increment is seen by the thread whose increment comes later, so
 * the thread that makes the last of a team's increments sees all of theirs. */
int64_t fnn_count_up(volatile int64_t *p);

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_H */
