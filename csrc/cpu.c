/* Run-time facts about the build and the CPU. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c11, for the build without OpenMP */
#endif
#include "fastnn.h"

#include <stdint.h>
#if defined(_MSC_VER)
#include <intrin.h>
#endif

int fnn_compiled_isas(void)
{
    int mask = 1 << FNN_ISA_PORTABLE;
#if FNN_X86_SIMD
    mask |= (1 << FNN_ISA_AVX2) | (1 << FNN_ISA_AVX512);
#endif
    return mask;
}

int fnn_cpu_best_isa(void)
{
#if FNN_X86_SIMD
    /* __builtin_cpu_supports also checks that the OS saves the wide registers. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return FNN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FNN_ISA_AVX2;
#endif
    return FNN_ISA_PORTABLE;
}

int fnn_cpu_is_intel(void)
{
#if FNN_X86_SIMD
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
#else
    return 0;
#endif
}

int fnn_have_openmp(void)
{
#ifdef FASTNN_HAVE_OPENMP
    return 1;
#else
    return 0;
#endif
}

int fnn_omp_max_threads(void)
{
#ifdef FASTNN_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#define FNN_STR2(x) #x
#define FNN_STR(x) FNN_STR2(x)

const char *fnn_compiler(void)
{
#if defined(__clang__)
    return "clang " FNN_STR(__clang_major__) "." FNN_STR(__clang_minor__) "." FNN_STR(__clang_patchlevel__);
#elif defined(__GNUC__)
    return "GCC " FNN_STR(__GNUC__) "." FNN_STR(__GNUC_MINOR__) "." FNN_STR(__GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
    return "MSVC " FNN_STR(_MSC_VER);
#else
    return "unknown C compiler";
#endif
}

/* ---- work spans ---------------------------------------------------------- */

static int span_cas(volatile int64_t *p, int64_t *expected, int64_t desired)
{
#if defined(_MSC_VER)
    const int64_t prev = _InterlockedCompareExchange64((volatile __int64 *)p, desired, *expected);
    if (prev == *expected)
        return 1;
    *expected = prev;
    return 0;
#else
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
#endif
}

int64_t fnn_count_up(volatile int64_t *p)
{
#if defined(_MSC_VER)
    return _InterlockedIncrement64((volatile __int64 *)p); /* a full barrier */
#else
    return __atomic_add_fetch(p, 1, __ATOMIC_ACQ_REL);
#endif
}

static int64_t span_word(int64_t front, int64_t back) { return (int64_t)((uint64_t)back << 32 | (uint64_t)front); }

void fnn_spans_init(fnn_span *spans, int nth, int64_t units)
{
    for (int t = 0; t < nth; t++)
        spans[t].span = span_word(units * t / nth, units * (t + 1) / nth);
}

/* the front unit of s (from_back 0) or its back unit, or -1 where none is left */
static int64_t span_take(fnn_span *s, int from_back)
{
    int64_t old = s->span;
    for (;;) {
        const int64_t front = old & 0xffffffff, back = (int64_t)((uint64_t)old >> 32);
        if (front >= back)
            return -1;
        if (span_cas(&s->span, &old, from_back ? span_word(front, back - 1) : span_word(front + 1, back)))
            return from_back ? back - 1 : front;
    }
}

int64_t fnn_spans_next(fnn_span *spans, int nth, int t)
{
    int64_t u = span_take(&spans[t], 0);
    while (u < 0) {
        int victim = -1;
        int64_t most = 0;
        for (int v = 0; v < nth; v++) {
            const int64_t sp = spans[v].span, left = (int64_t)((uint64_t)sp >> 32) - (sp & 0xffffffff);
            if (left > most) {
                most = left;
                victim = v;
            }
        }
        if (victim < 0)
            return -1;
        u = span_take(&spans[victim], 1);
    }
    return u;
}

/* ---- FMA throughput probe ------------------------------------------------ */

#if FNN_X86_SIMD
#include <immintrin.h>
#ifndef FASTNN_HAVE_OPENMP
#include <time.h>
#endif

/* 12 independent accumulator chains: more than FMA latency x FMA pipes on
 * every x86 core (4-5 cycles x 2), so the pipes, not the chains, set the pace,
 * and with the two operands 14 registers, so AVX2's 16 hold them without
 * spilling. x * m + a with m just under 1 keeps every value finite for any rep
 * count. */
#define FNN_PROBE_CHAINS 12
#define FNN_PROBE_CHAIN_LIST(X, ...)                                                                         \
    X(0, __VA_ARGS__) X(1, __VA_ARGS__) X(2, __VA_ARGS__) X(3, __VA_ARGS__) X(4, __VA_ARGS__)                \
    X(5, __VA_ARGS__) X(6, __VA_ARGS__) X(7, __VA_ARGS__) X(8, __VA_ARGS__) X(9, __VA_ARGS__)                \
    X(10, __VA_ARGS__) X(11, __VA_ARGS__)
#define FNN_PROBE_DECLARE(i, VT, SET1, FMA, ADD) VT x##i = SET1((float)(i));
#define FNN_PROBE_STEP(i, VT, SET1, FMA, ADD) x##i = FMA(x##i, m, a);
#define FNN_PROBE_SUM(i, VT, SET1, FMA, ADD) sum = ADD(sum, x##i);
#define FNN_DEFINE_PROBE(NAME, TARGET, VT, SET1, FMA, ADD, REDUCE)                                           \
    TARGET static float NAME(int64_t reps)                                                                   \
    {                                                                                                        \
        const VT m = SET1(1.0f - 1.0f / 1048576.0f), a = SET1(1.0f / 1024.0f);                              \
        FNN_PROBE_CHAIN_LIST(FNN_PROBE_DECLARE, VT, SET1, FMA, ADD)                                          \
        for (int64_t r = 0; r < reps; r++) {                                                                 \
            FNN_PROBE_CHAIN_LIST(FNN_PROBE_STEP, VT, SET1, FMA, ADD)                                         \
        }                                                                                                    \
        VT sum = x0;                                                                                         \
        FNN_PROBE_CHAIN_LIST(FNN_PROBE_SUM, VT, SET1, FMA, ADD)                                              \
        return REDUCE(sum);                                                                                  \
    }

FNN_TARGET_AVX2 static float reduce_avx2(__m256 v)
{
    float lanes[8];
    _mm256_storeu_ps(lanes, v);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

FNN_DEFINE_PROBE(probe_avx512, FNN_TARGET_AVX512, __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
                 _mm512_reduce_add_ps)
FNN_DEFINE_PROBE(probe_avx2, FNN_TARGET_AVX2, __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, reduce_avx2)

static double probe_now(void)
{
#ifdef FASTNN_HAVE_OPENMP
    return omp_get_wtime();
#else
    struct timespec ts;
#ifdef _WIN32
    timespec_get(&ts, TIME_UTC);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}
#endif

double fnn_fma_probe_gflops(int isa, int nthreads, int64_t reps)
{
#if FNN_X86_SIMD
    if (isa > fnn_cpu_best_isa())
        isa = fnn_cpu_best_isa();
    if (isa == FNN_ISA_PORTABLE || nthreads < 1 || reps < 1)
        return 0.0;
    const int lanes = isa == FNN_ISA_AVX512 ? 16 : 8;
    double slowest = 0.0;
    float values = 0.0f;
    int used = 1;
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nthreads) reduction(max : slowest) reduction(+ : values)
#endif
    {
#ifdef FASTNN_HAVE_OPENMP
#pragma omp single
        used = omp_get_num_threads();
        /* the single's barrier: every thread starts its chains together */
#endif
        const double t0 = probe_now();
        values += isa == FNN_ISA_AVX512 ? probe_avx512(reps) : probe_avx2(reps);
        const double t = probe_now() - t0;
        slowest = t > slowest ? t : slowest;
    }
    volatile float sink = values; /* the chains' results are used */
    (void)sink;
    return slowest > 0.0 ? (double)used * (double)reps * FNN_PROBE_CHAINS * lanes * 2.0 / slowest / 1e9 : 0.0;
#else
    (void)isa;
    (void)nthreads;
    (void)reps;
    return 0.0;
#endif
}
