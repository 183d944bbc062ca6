/* Run-time facts about the build and the CPU. */
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
