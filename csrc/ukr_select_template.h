/* Selection of the indirect microkernels (csrc/gemm.h) for an ISA, written once
 * for the templates that use them: conv_template.h and winograd_template.h
 * include this file with T, SFX and FN(name) defined. Not a public header. */

typedef void (*FN(ukri_fn))(int64_t, const T *, const T *const *, int64_t, T *, int64_t, T, T);
typedef void (*FN(ukri_rows_fn))(int, int64_t, const T *, const T *const *, int64_t, T *, int64_t, T, T);
typedef void (*FN(ukra_fn))(int64_t, const T *const *, int64_t, const T *, T *, int64_t, T, T);
typedef void (*FN(ukra_rows_fn))(int, int64_t, const T *const *, int64_t, const T *, T *, int64_t, T, T);

/* select_KIND(isa, &rows): the KIND microkernel for `isa`, and in *rows its
 * fewer-rows variant (NULL for the portable kernel) */
#define DEFINE_SELECT_UKR(KIND)                                                                             \
    static FN(KIND##_fn) FN(select_##KIND)(int isa, FN(KIND##_rows_fn) *rows)                              \
    {                                                                                                       \
        *rows = NULL;                                                                                       \
        SELECT_SIMD_UKR(KIND)                                                                               \
        return FN(fnn_##KIND##_portable);                                                                   \
    }
#if FNN_X86_SIMD
#define SELECT_SIMD_UKR(KIND)                                                                               \
    if (isa >= FNN_ISA_AVX512) {                                                                            \
        *rows = FN(fnn_##KIND##_avx512_rows);                                                               \
        return FN(fnn_##KIND##_avx512);                                                                     \
    }                                                                                                       \
    if (isa >= FNN_ISA_AVX2) {                                                                              \
        *rows = FN(fnn_##KIND##_avx2_rows);                                                                 \
        return FN(fnn_##KIND##_avx2);                                                                       \
    }
#else
#define SELECT_SIMD_UKR(KIND) (void)isa;
#endif

/* indirect B: B's rows read in place (a padded image, a Winograd block) */
DEFINE_SELECT_UKR(ukri)
/* indirect A: A's rows read in place (the direct weight gradient's padded image) */
DEFINE_SELECT_UKR(ukra)

/* the indirect-B half-width kernel (NR/2 columns) for an ISA, NULL for the portable one */
static inline FN(ukri_fn) FN(select_ukri_half)(int isa)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512)
        return FN(fnn_ukrih_avx512);
    if (isa >= FNN_ISA_AVX2)
        return FN(fnn_ukrih_avx2);
#else
    (void)isa;
#endif
    return NULL;
}

typedef void (*FN(ukrd_fn))(int64_t, const T *const *, const T *const *, T *);

/* the dot-product microkernel for an ISA with its block (dm x dn) and vector
 * lanes; NULL for the portable path */
static inline FN(ukrd_fn) FN(select_ukrd)(int isa, int *dm, int *dn, int *lanes)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        *dm = FNN_AVX512_DM;
        *dn = FNN_AVX512_DN;
        *lanes = 64 / (int)sizeof(T);
        return FN(fnn_ukrd_avx512);
    }
    if (isa >= FNN_ISA_AVX2) {
        *dm = FNN_AVX2_DM;
        *dn = FNN_AVX2_DN;
        *lanes = 32 / (int)sizeof(T);
        return FN(fnn_ukrd_avx2);
    }
#else
    (void)isa;
#endif
    *dm = *dn = *lanes = 1;
    return NULL;
}

typedef void (*FN(ukrs_fn))(int64_t, const T *, const int32_t *, const T *, int64_t, int, T *);

/* the gathered-row microkernel for an ISA and its vector lanes; NULL for the
 * portable path */
static inline FN(ukrs_fn) FN(select_ukrs)(int isa, int *lanes)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        *lanes = 64 / (int)sizeof(T);
        return FN(fnn_ukrs_avx512);
    }
    if (isa >= FNN_ISA_AVX2) {
        *lanes = 32 / (int)sizeof(T);
        return FN(fnn_ukrs_avx2);
    }
#else
    (void)isa;
#endif
    *lanes = 1;
    return NULL;
}

#undef DEFINE_SELECT_UKR
#undef SELECT_SIMD_UKR
