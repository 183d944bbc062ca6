/* Whether every value of an array is finite, written once for both dtypes and
 * compiled per ISA: csrc/conv_template.h and csrc/winograd_template.h include
 * it with T and FN defined. Not a public header. */

/* v - v is 0 exactly when v is finite: unlike isfinite() the compiler
 * vectorises this, compiled per ISA (built for the baseline's SSE2, the check
 * was 4% of conv D's forward + backward on one thread) */
#define DEFINE_ALL_FINITE(NAME, TARGET)                                                                      \
    TARGET static int NAME(const T *p, int64_t count)                                                         \
    {                                                                                                         \
        int ok = 1;                                                                                           \
        for (int64_t i = 0; i < count; i++)                                                                   \
            ok &= p[i] - p[i] == (T)0;                                                                        \
        return ok;                                                                                            \
    }
FNN_PER_ISA(DEFINE_ALL_FINITE, all_finite)
#undef DEFINE_ALL_FINITE

/* on the calling thread, with the ISA's build */
static int FN(all_finite_serial)(int isa, const T *p, int64_t count)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512)
        return FN(all_finite_avx512)(p, count);
    if (isa >= FNN_ISA_AVX2)
        return FN(all_finite_avx2)(p, count);
#endif
    (void)isa;
    return FN(all_finite_portable)(p, count);
}
