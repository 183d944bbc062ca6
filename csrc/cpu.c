/* Run-time facts about the build and the CPU. */
#include "fastnn.h"

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
