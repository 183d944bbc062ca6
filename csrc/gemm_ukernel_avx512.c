/* AVX-512F microkernels: 8 x 32 float32 and 8 x 16 float64 (16 accumulator
 * zmm registers, 2 for B, 1 broadcast of A). Per step of k: two 64-byte loads
 * of B (streamed from L2), eight broadcasts of A (the micro-panel sits in L1),
 * sixteen FMAs.
 *
 * Two variants share one body: B as a packed micro-panel (row p at b + p*NR,
 * 64-byte aligned), and B "indirect" (row p at brow[p] + boff, unaligned), which
 * lets a stride-1 convolution read B straight from the padded image. */
#include "gemm.h"
#include "gemm_ukernel_common.h"

#if FNN_X86_SIMD
#include <immintrin.h>

#define DEFINE_AVX512_UKR(NAME, NV, T, VT, VL, MR, SET1, FMA, MUL, LOADB, LOADU, STOREU, SETZERO, APARAMS, AVAL, BPARAMS, BROW) \
    FNN_TARGET_AVX512 void NAME(int64_t k, APARAMS(), BPARAMS(), T *FNN_RESTRICT c, int64_t ldc,  \
                                T alpha, T beta)                                                             \
    {                                                                                                        \
        VT acc0[MR], acc1[MR];                                                                               \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                                \
        {                                                                                                    \
            acc0[i] = SETZERO();                                                                             \
            acc1[i] = acc0[i];                                                                               \
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);                                          \
            _mm_prefetch((const char *)(c + i * ldc + 2 * VL - 1), _MM_HINT_T0);                             \
        }                                                                                                    \
        _Pragma("GCC unroll 4") for (int64_t p = 0; p < k; p++)                                              \
        {                                                                                                    \
            const T *bp = BROW(p);                                                                           \
            VT b0 = LOADB(bp);                                                                               \
            VT b1 = NV > 1 ? LOADB(bp + VL) : b0;                                                             \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                            \
            {                                                                                                \
                VT ai = SET1(AVAL(i, p));                                                                          \
                acc0[i] = FMA(ai, b0, acc0[i]);                                                              \
                if (NV > 1) acc1[i] = FMA(ai, b1, acc1[i]);                                                  \
            }                                                                                                \
        }                                                                                                    \
        VT va = SET1(alpha), vb = SET1(beta);                                                                \
        if (alpha != 1) /* alpha = 1 (almost every call) saves MR * NV multiplies: 6% of a depth-16 tile */  \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                            \
            {                                                                                                \
                acc0[i] = MUL(va, acc0[i]);                                                                  \
                if (NV > 1) acc1[i] = MUL(va, acc1[i]);                                                      \
            }                                                                                                \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                                \
        {                                                                                                    \
            T *ci = c + i * ldc;                                                                             \
            if (beta == 0) {                                                                                 \
                STOREU(ci, acc0[i]);                                                                         \
                if (NV > 1) STOREU(ci + VL, acc1[i]);                                                        \
            } else {                                                                                         \
                STOREU(ci, FMA(vb, LOADU(ci), acc0[i]));                                                     \
                if (NV > 1) STOREU(ci + VL, FMA(vb, LOADU(ci + VL), acc1[i]));                               \
            }                                                                                                \
        }                                                                                                    \
    }

#define AVAL_PACKED_S(i, p) a[(p) * FNN_AVX512_MR_F32 + (i)]
#define AVAL_PACKED_D(i, p) a[(p) * FNN_AVX512_MR_F64 + (i)]
#define ROW_PACKED_S(p) (b + (p) * 32)
#define ROW_PACKED_D(p) (b + (p) * 16)

/* MR = 8: the rows switch also has these */
#define ROWS_SWITCH_MORE_CASES(BASE, SFX, CALL) \
    case 6: BASE##_r6_##SFX CALL; break; \
    case 7: BASE##_r7_##SFX CALL; break;

/* The intrinsics of each dtype, after MR in DEFINE_AVX512_UKR (B loaded aligned
 * from a packed panel, unaligned from an image row). */
#define OPS_F32(LOADB) _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, LOADB, _mm512_loadu_ps, _mm512_storeu_ps, \
                       _mm512_setzero_ps
#define OPS_F64(LOADB) _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, LOADB, _mm512_loadu_pd, _mm512_storeu_pd, \
                       _mm512_setzero_pd
#define PACKED_F32 OPS_F32(_mm512_load_ps), PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S
#define PACKED_F64 OPS_F64(_mm512_load_pd), PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D
#define IND_B_F32 OPS_F32(_mm512_loadu_ps), PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT
#define IND_B_F64 OPS_F64(_mm512_loadu_pd), PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT
#define IND_A_F32 OPS_F32(_mm512_load_ps), INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S
#define IND_A_F64 OPS_F64(_mm512_load_pd), INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D

/* One kernel family (BASE_SFX, e.g. fnn_ukr_avx512_f32): the full 8-row kernel
 * and, for bottom-edge tiles, BASE_rows_SFX(rows, ...), a switch over bodies
 * compiled for 1-7 rows (same packed layout), so a product with M = 25 or a
 * convolution with 30 filters does not pay for the zero rows of its last panel. */
#define DEFINE_AVX512_FAMILY(BASE, SFX, T, VT, VL, KIND, SIG, CALL)                                                 \
    DEFINE_AVX512_UKR(BASE##_##SFX, 2, T, VT, VL, 8, KIND)                                                      \
    DEFINE_AVX512_UKR(BASE##_r1_##SFX, 2, T, VT, VL, 1, KIND)                                                   \
    DEFINE_AVX512_UKR(BASE##_r2_##SFX, 2, T, VT, VL, 2, KIND)                                                   \
    DEFINE_AVX512_UKR(BASE##_r3_##SFX, 2, T, VT, VL, 3, KIND)                                                   \
    DEFINE_AVX512_UKR(BASE##_r4_##SFX, 2, T, VT, VL, 4, KIND)                                                   \
    DEFINE_AVX512_UKR(BASE##_r5_##SFX, 2, T, VT, VL, 5, KIND)                                                   \
    DEFINE_AVX512_UKR(BASE##_r6_##SFX, 2, T, VT, VL, 6, KIND)                                                   \
    DEFINE_AVX512_UKR(BASE##_r7_##SFX, 2, T, VT, VL, 7, KIND)                                                   \
    DEFINE_ROWS_SWITCH(FNN_TARGET_AVX512, BASE, SFX, T, SIG, CALL)

DEFINE_AVX512_FAMILY(fnn_ukr_avx512, f32, float, __m512, 16, PACKED_F32, SIG_PACKED_F32, CALL_PACKED)
DEFINE_AVX512_FAMILY(fnn_ukr_avx512, f64, double, __m512d, 8, PACKED_F64, SIG_PACKED_F64, CALL_PACKED)
DEFINE_AVX512_FAMILY(fnn_ukri_avx512, f32, float, __m512, 16, IND_B_F32, SIG_IND_B_F32, CALL_IND_B)
DEFINE_AVX512_FAMILY(fnn_ukri_avx512, f64, double, __m512d, 8, IND_B_F64, SIG_IND_B_F64, CALL_IND_B)
DEFINE_AVX512_FAMILY(fnn_ukra_avx512, f32, float, __m512, 16, IND_A_F32, SIG_IND_A_F32, CALL_IND_A)
DEFINE_AVX512_FAMILY(fnn_ukra_avx512, f64, double, __m512d, 8, IND_A_F64, SIG_IND_A_F64, CALL_IND_A)

/* a kernel from a KIND list (expanded into the macro's arguments first) */
#define DEFINE_AVX512_UKR_OF(...) DEFINE_AVX512_UKR(__VA_ARGS__)

/* Half-width tiles (8 x 16 float32, 8 x 8 float64) on the same packed panels:
 * the driver's right-edge tiles of at most NR/2 columns, so a product with
 * N = 100 does not pay a full 32-wide tile for its last 4 columns. */
DEFINE_AVX512_UKR_OF(fnn_ukrh_avx512_f32, 1, float, __m512, 16, 8, PACKED_F32)
DEFINE_AVX512_UKR_OF(fnn_ukrh_avx512_f64, 1, double, __m512d, 8, 8, PACKED_F64)
/* and on indirect B rows: a Winograd block's last panel when it holds at most
 * NR/2 tiles */
DEFINE_AVX512_UKR_OF(fnn_ukrih_avx512_f32, 1, float, __m512, 16, 8, IND_B_F32)
DEFINE_AVX512_UKR_OF(fnn_ukrih_avx512_f64, 1, double, __m512d, 8, 8, IND_B_F64)
/* Dot-product blocks of 6 x 4 (24 accumulators, 4 rows of b, 1 of a). */
#define UKRD_MASK_F32(rem) const __mmask16 tail = (__mmask16)((1u << (rem)) - 1u)
#define UKRD_MASK_F64(rem) const __mmask8 tail = (__mmask8)((1u << (rem)) - 1u)
#define UKRD_TAIL_F32(p) _mm512_maskz_loadu_ps(tail, p)
#define UKRD_TAIL_F64(p) _mm512_maskz_loadu_pd(tail, p)
DEFINE_UKRD(FNN_TARGET_AVX512, fnn_ukrd_avx512_f32, float, __m512, 16, FNN_AVX512_DM, FNN_AVX512_DN, _mm512_loadu_ps,
            UKRD_MASK_F32, UKRD_TAIL_F32, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, _mm512_setzero_ps)
DEFINE_UKRD(FNN_TARGET_AVX512, fnn_ukrd_avx512_f64, double, __m512d, 8, FNN_AVX512_DM, FNN_AVX512_DN, _mm512_loadu_pd,
            UKRD_MASK_F64, UKRD_TAIL_F64, _mm512_fmadd_pd, _mm512_add_pd, _mm512_storeu_pd, _mm512_setzero_pd)
DEFINE_UKRS(FNN_TARGET_AVX512, fnn_ukrs_avx512_f32, float, __m512, 16, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_add_ps,
            _mm512_storeu_ps, _mm512_setzero_ps, _mm512_set1_ps)
DEFINE_UKRS(FNN_TARGET_AVX512, fnn_ukrs_avx512_f64, double, __m512d, 8, _mm512_loadu_pd, _mm512_fmadd_pd, _mm512_add_pd,
            _mm512_storeu_pd, _mm512_setzero_pd, _mm512_set1_pd)
#endif
