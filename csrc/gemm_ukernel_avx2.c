/* AVX2 + FMA microkernels: 6 x 16 float32 and 6 x 8 float64 (12 accumulator
 * ymm registers, 2 for B, 1 broadcast of A: 15 of the 16). Per step of k: two
 * vector loads of B, six broadcasts of A, twelve FMAs. Packed-B and
 * indirect-B variants share one body (see gemm_ukernel_avx512.c). */
#include "gemm.h"
#include "gemm_ukernel_common.h"

#if FNN_X86_SIMD
#include <immintrin.h>

#define DEFINE_AVX2_UKR(NAME, NV, T, VT, VL, MR, SET1, BCAST, FMA, MUL, LOADB, LOADU, STOREU, SETZERO, APARAMS, AVAL, BPARAMS, BROW)  \
    FNN_TARGET_AVX2 void NAME(int64_t k, APARAMS(), BPARAMS(), T *FNN_RESTRICT c, int64_t ldc, T alpha, \
                              T beta)                                                                            \
    {                                                                                                            \
        VT acc0[MR], acc1[MR];                                                                                   \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                                     \
        {                                                                                                        \
            acc0[i] = SETZERO();                                                                                 \
            acc1[i] = acc0[i];                                                                                   \
        }                                                                                                        \
        _Pragma("GCC unroll 2") for (int64_t p = 0; p < k; p++)                                                  \
        {                                                                                                        \
            const T *bp = BROW(p);                                                                               \
            VT b0 = LOADB(bp);                                                                                   \
            VT b1 = NV > 1 ? LOADB(bp + VL) : b0;                                                                 \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                                 \
            {                                                                                                    \
                VT ai = BCAST(&AVAL(i, p));                                                                            \
                acc0[i] = FMA(ai, b0, acc0[i]);                                                                  \
                if (NV > 1) acc1[i] = FMA(ai, b1, acc1[i]);                                                      \
            }                                                                                                    \
        }                                                                                                        \
        VT va = SET1(alpha), vb = SET1(beta);                                                                    \
        if (alpha != 1) /* alpha = 1 (almost every call) saves MR * NV multiplies (gemm_ukernel_avx512.c) */     \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                                 \
            {                                                                                                    \
                acc0[i] = MUL(va, acc0[i]);                                                                      \
                if (NV > 1) acc1[i] = MUL(va, acc1[i]);                                                          \
            }                                                                                                    \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                                     \
        {                                                                                                        \
            T *ci = c + i * ldc;                                                                                 \
            if (beta == 0) {                                                                                     \
                STOREU(ci, acc0[i]);                                                                             \
                if (NV > 1) STOREU(ci + VL, acc1[i]);                                                            \
            } else {                                                                                             \
                STOREU(ci, FMA(vb, LOADU(ci), acc0[i]));                                                         \
                if (NV > 1) STOREU(ci + VL, FMA(vb, LOADU(ci + VL), acc1[i]));                                   \
            }                                                                                                    \
        }                                                                                                        \
    }

#define AVAL_PACKED_S(i, p) a[(p) * FNN_AVX2_MR_F32 + (i)]
#define AVAL_PACKED_D(i, p) a[(p) * FNN_AVX2_MR_F64 + (i)]
#define ROW_PACKED_S(p) (b + (p) * 16)
#define ROW_PACKED_D(p) (b + (p) * 8)

/* MR = 6: the rows switch also has these */
#define ROWS_SWITCH_MORE_CASES(BASE, SFX, CALL)

/* The intrinsics of each dtype, after MR in DEFINE_AVX2_UKR (B loaded aligned
 * from a packed panel, unaligned from an image row). */
#define OPS_F32(LOADB) _mm256_set1_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_mul_ps, LOADB, _mm256_loadu_ps, \
                       _mm256_storeu_ps, _mm256_setzero_ps
#define OPS_F64(LOADB) _mm256_set1_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_mul_pd, LOADB, _mm256_loadu_pd, \
                       _mm256_storeu_pd, _mm256_setzero_pd
#define PACKED_F32 OPS_F32(_mm256_load_ps), PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S
#define PACKED_F64 OPS_F64(_mm256_load_pd), PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D
#define IND_B_F32 OPS_F32(_mm256_loadu_ps), PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT
#define IND_B_F64 OPS_F64(_mm256_loadu_pd), PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT
#define IND_A_F32 OPS_F32(_mm256_load_ps), INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S
#define IND_A_F64 OPS_F64(_mm256_load_pd), INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D

/* One kernel family: the full 6-row kernel and its fewer-rows variants (see
 * DEFINE_AVX512_FAMILY in gemm_ukernel_avx512.c). */
#define DEFINE_AVX2_FAMILY(BASE, SFX, T, VT, VL, KIND, SIG, CALL)                                                   \
    DEFINE_AVX2_UKR(BASE##_##SFX, 2, T, VT, VL, 6, KIND)                                                        \
    DEFINE_AVX2_UKR(BASE##_r1_##SFX, 2, T, VT, VL, 1, KIND)                                                     \
    DEFINE_AVX2_UKR(BASE##_r2_##SFX, 2, T, VT, VL, 2, KIND)                                                     \
    DEFINE_AVX2_UKR(BASE##_r3_##SFX, 2, T, VT, VL, 3, KIND)                                                     \
    DEFINE_AVX2_UKR(BASE##_r4_##SFX, 2, T, VT, VL, 4, KIND)                                                     \
    DEFINE_AVX2_UKR(BASE##_r5_##SFX, 2, T, VT, VL, 5, KIND)                                                     \
    DEFINE_ROWS_SWITCH(FNN_TARGET_AVX2, BASE, SFX, T, SIG, CALL)

DEFINE_AVX2_FAMILY(fnn_ukr_avx2, f32, float, __m256, 8, PACKED_F32, SIG_PACKED_F32, CALL_PACKED)
DEFINE_AVX2_FAMILY(fnn_ukr_avx2, f64, double, __m256d, 4, PACKED_F64, SIG_PACKED_F64, CALL_PACKED)
DEFINE_AVX2_FAMILY(fnn_ukri_avx2, f32, float, __m256, 8, IND_B_F32, SIG_IND_B_F32, CALL_IND_B)
DEFINE_AVX2_FAMILY(fnn_ukri_avx2, f64, double, __m256d, 4, IND_B_F64, SIG_IND_B_F64, CALL_IND_B)
DEFINE_AVX2_FAMILY(fnn_ukra_avx2, f32, float, __m256, 8, IND_A_F32, SIG_IND_A_F32, CALL_IND_A)
DEFINE_AVX2_FAMILY(fnn_ukra_avx2, f64, double, __m256d, 4, IND_A_F64, SIG_IND_A_F64, CALL_IND_A)

/* a kernel from a KIND list (expanded into the macro's arguments first) */
#define DEFINE_AVX2_UKR_OF(...) DEFINE_AVX2_UKR(__VA_ARGS__)

/* Half-width tiles (6 x 8 float32, 6 x 4 float64) for right-edge tiles of at
 * most NR/2 columns (see gemm_ukernel_avx512.c). */
DEFINE_AVX2_UKR_OF(fnn_ukrh_avx2_f32, 1, float, __m256, 8, 6, PACKED_F32)
DEFINE_AVX2_UKR_OF(fnn_ukrh_avx2_f64, 1, double, __m256d, 4, 6, PACKED_F64)
DEFINE_AVX2_UKR_OF(fnn_ukrih_avx2_f32, 1, float, __m256, 8, 6, IND_B_F32)
DEFINE_AVX2_UKR_OF(fnn_ukrih_avx2_f64, 1, double, __m256d, 4, 6, IND_B_F64)
/* Dot-product blocks of 3 x 4 (12 accumulators, 4 rows of b; a's row is the
 * FMAs' memory operand). */
#define UKRD_MASK_F32(rem) \
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(rem)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define UKRD_MASK_F64(rem) \
    const __m256i tail = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(rem)), _mm256_setr_epi64x(0, 1, 2, 3))
#define UKRD_TAIL_F32(p) _mm256_maskload_ps(p, tail)
#define UKRD_TAIL_F64(p) _mm256_maskload_pd(p, tail)
DEFINE_UKRD(FNN_TARGET_AVX2, fnn_ukrd_avx2_f32, float, __m256, 8, FNN_AVX2_DM, FNN_AVX2_DN, _mm256_loadu_ps,
            UKRD_MASK_F32, UKRD_TAIL_F32, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, _mm256_setzero_ps)
DEFINE_UKRD(FNN_TARGET_AVX2, fnn_ukrd_avx2_f64, double, __m256d, 4, FNN_AVX2_DM, FNN_AVX2_DN, _mm256_loadu_pd,
            UKRD_MASK_F64, UKRD_TAIL_F64, _mm256_fmadd_pd, _mm256_add_pd, _mm256_storeu_pd, _mm256_setzero_pd)
DEFINE_UKRS(FNN_TARGET_AVX2, fnn_ukrs_avx2_f32, float, __m256, 8, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps,
            _mm256_storeu_ps, _mm256_setzero_ps, _mm256_set1_ps)
DEFINE_UKRS(FNN_TARGET_AVX2, fnn_ukrs_avx2_f64, double, __m256d, 4, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_add_pd,
            _mm256_storeu_pd, _mm256_setzero_pd, _mm256_set1_pd)
#endif
