/* AVX-512F microkernels: 8 x 32 float32 and 8 x 16 float64 (16 accumulator
 * zmm registers, 2 for B, 1 broadcast of A). Per step of k: two 64-byte loads
 * of B (streamed from L2), eight broadcasts of A (the micro-panel sits in L1),
 * sixteen FMAs.
 *
 * Two variants share one body: B as a packed micro-panel (row p at b + p*NR,
 * 64-byte aligned), and B "indirect" (row p at brow[p] + boff, unaligned), which
 * lets a stride-1 convolution read B straight from the padded image. */
#include "gemm.h"

#if FNN_X86_SIMD
#include <immintrin.h>

#define DEFINE_AVX512_UKR(NAME, NV, T, VT, VL, MR, SET1, FMA, MUL, LOADB, LOADU, STOREU, SETZERO, APARAMS, AVAL, BPARAMS, BROW) \
    FNN_TARGET_AVX512 void NAME(int64_t k, APARAMS, BPARAMS, T *FNN_RESTRICT c, int64_t ldc,  \
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
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                                \
        {                                                                                                    \
            T *ci = c + i * ldc;                                                                             \
            if (beta == 0) {                                                                                 \
                STOREU(ci, MUL(va, acc0[i]));                                                                \
                if (NV > 1) STOREU(ci + VL, MUL(va, acc1[i]));                                               \
            } else {                                                                                         \
                STOREU(ci, FMA(vb, LOADU(ci), MUL(va, acc0[i])));                                            \
                if (NV > 1) STOREU(ci + VL, FMA(vb, LOADU(ci + VL), MUL(va, acc1[i])));                      \
            }                                                                                                \
        }                                                                                                    \
    }

#define PACKED_A_F32 const float *FNN_RESTRICT a
#define PACKED_A_F64 const double *FNN_RESTRICT a
#define INDIRECT_A_F32 const float *const *FNN_RESTRICT arow, int64_t aoff
#define INDIRECT_A_F64 const double *const *FNN_RESTRICT arow, int64_t aoff
#define AVAL_PACKED_S(i, p) a[(p) * FNN_AVX512_MR_F32 + (i)]
#define AVAL_PACKED_D(i, p) a[(p) * FNN_AVX512_MR_F64 + (i)]
#define AVAL_INDIRECT(i, p) arow[i][aoff + (p)]
#define PACKED_B_F32 const float *FNN_RESTRICT b
#define PACKED_B_F64 const double *FNN_RESTRICT b
#define INDIRECT_B_F32 const float *const *FNN_RESTRICT brow, int64_t boff
#define INDIRECT_B_F64 const double *const *FNN_RESTRICT brow, int64_t boff
#define ROW_PACKED_S(p) (b + (p) * 32)
#define ROW_PACKED_D(p) (b + (p) * 16)
#define ROW_INDIRECT(p) (brow[p] + boff)

DEFINE_AVX512_UKR(fnn_ukr_avx512_f32, 2, float, __m512, 16, FNN_AVX512_MR_F32, _mm512_set1_ps, _mm512_fmadd_ps,
                  _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                  PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64, 2, double, __m512d, 8, FNN_AVX512_MR_F64, _mm512_set1_pd, _mm512_fmadd_pd,
                  _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                  PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32, 2, float, __m512, 16, FNN_AVX512_MR_F32, _mm512_set1_ps, _mm512_fmadd_ps,
                  _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                  PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64, 2, double, __m512d, 8, FNN_AVX512_MR_F64, _mm512_set1_pd, _mm512_fmadd_pd,
                  _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                  PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32, 2, float, __m512, 16, FNN_AVX512_MR_F32, _mm512_set1_ps, _mm512_fmadd_ps,
                  _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                  INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64, 2, double, __m512d, 8, FNN_AVX512_MR_F64, _mm512_set1_pd, _mm512_fmadd_pd,
                  _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                  INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
/* Half-width tiles (8 x 16 float32, 8 x 8 float64) on the same packed panels:
 * the driver's right-edge tiles of at most NR/2 columns, so a product with
 * N = 100 does not pay a full 32-wide tile for its last 4 columns. */
DEFINE_AVX512_UKR(fnn_ukrh_avx512_f32, 1, float, __m512, 16, FNN_AVX512_MR_F32, _mm512_set1_ps, _mm512_fmadd_ps,
                  _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                  PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukrh_avx512_f64, 1, double, __m512d, 8, FNN_AVX512_MR_F64, _mm512_set1_pd, _mm512_fmadd_pd,
                  _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                  PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)

/* Bottom-edge tiles: the same bodies with fewer rows (rows < MR), so a product
 * with M = 25 or a convolution with 30 filters does not pay for the zero rows
 * of its last micro-panel. The packed panels keep their MR-row layout. */
DEFINE_AVX512_UKR(fnn_ukr_avx512_f32_r1, 2, float, __m512, 16, 1, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f32_r2, 2, float, __m512, 16, 2, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f32_r3, 2, float, __m512, 16, 3, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f32_r4, 2, float, __m512, 16, 4, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f32_r5, 2, float, __m512, 16, 5, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f32_r6, 2, float, __m512, 16, 6, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f32_r7, 2, float, __m512, 16, 7, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
FNN_TARGET_AVX512 void fnn_ukr_avx512_rows_f32(int rows, int64_t k, PACKED_A_F32, PACKED_B_F32, float *FNN_RESTRICT c, int64_t ldc,
        float alpha, float beta)
{
    switch (rows) {
    case 1: fnn_ukr_avx512_f32_r1(k, a, b, c, ldc, alpha, beta); break;
    case 2: fnn_ukr_avx512_f32_r2(k, a, b, c, ldc, alpha, beta); break;
    case 3: fnn_ukr_avx512_f32_r3(k, a, b, c, ldc, alpha, beta); break;
    case 4: fnn_ukr_avx512_f32_r4(k, a, b, c, ldc, alpha, beta); break;
    case 5: fnn_ukr_avx512_f32_r5(k, a, b, c, ldc, alpha, beta); break;
    case 6: fnn_ukr_avx512_f32_r6(k, a, b, c, ldc, alpha, beta); break;
    case 7: fnn_ukr_avx512_f32_r7(k, a, b, c, ldc, alpha, beta); break;
    default: fnn_ukr_avx512_f32(k, a, b, c, ldc, alpha, beta); break;
    }
}
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32_r1, 2, float, __m512, 16, 1, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32_r2, 2, float, __m512, 16, 2, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32_r3, 2, float, __m512, 16, 3, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32_r4, 2, float, __m512, 16, 4, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32_r5, 2, float, __m512, 16, 5, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32_r6, 2, float, __m512, 16, 6, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f32_r7, 2, float, __m512, 16, 7, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_loadu_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
FNN_TARGET_AVX512 void fnn_ukri_avx512_rows_f32(int rows, int64_t k, PACKED_A_F32, INDIRECT_B_F32, float *FNN_RESTRICT c, int64_t ldc,
        float alpha, float beta)
{
    switch (rows) {
    case 1: fnn_ukri_avx512_f32_r1(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 2: fnn_ukri_avx512_f32_r2(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 3: fnn_ukri_avx512_f32_r3(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 4: fnn_ukri_avx512_f32_r4(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 5: fnn_ukri_avx512_f32_r5(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 6: fnn_ukri_avx512_f32_r6(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 7: fnn_ukri_avx512_f32_r7(k, a, brow, boff, c, ldc, alpha, beta); break;
    default: fnn_ukri_avx512_f32(k, a, brow, boff, c, ldc, alpha, beta); break;
    }
}
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32_r1, 2, float, __m512, 16, 1, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32_r2, 2, float, __m512, 16, 2, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32_r3, 2, float, __m512, 16, 3, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32_r4, 2, float, __m512, 16, 4, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32_r5, 2, float, __m512, 16, 5, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32_r6, 2, float, __m512, 16, 6, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f32_r7, 2, float, __m512, 16, 7, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_setzero_ps,
                INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
FNN_TARGET_AVX512 void fnn_ukra_avx512_rows_f32(int rows, int64_t k, INDIRECT_A_F32, PACKED_B_F32, float *FNN_RESTRICT c, int64_t ldc,
        float alpha, float beta)
{
    switch (rows) {
    case 1: fnn_ukra_avx512_f32_r1(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 2: fnn_ukra_avx512_f32_r2(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 3: fnn_ukra_avx512_f32_r3(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 4: fnn_ukra_avx512_f32_r4(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 5: fnn_ukra_avx512_f32_r5(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 6: fnn_ukra_avx512_f32_r6(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 7: fnn_ukra_avx512_f32_r7(k, arow, aoff, b, c, ldc, alpha, beta); break;
    default: fnn_ukra_avx512_f32(k, arow, aoff, b, c, ldc, alpha, beta); break;
    }
}
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64_r1, 2, double, __m512d, 8, 1, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64_r2, 2, double, __m512d, 8, 2, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64_r3, 2, double, __m512d, 8, 3, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64_r4, 2, double, __m512d, 8, 4, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64_r5, 2, double, __m512d, 8, 5, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64_r6, 2, double, __m512d, 8, 6, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukr_avx512_f64_r7, 2, double, __m512d, 8, 7, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
FNN_TARGET_AVX512 void fnn_ukr_avx512_rows_f64(int rows, int64_t k, PACKED_A_F64, PACKED_B_F64, double *FNN_RESTRICT c, int64_t ldc,
        double alpha, double beta)
{
    switch (rows) {
    case 1: fnn_ukr_avx512_f64_r1(k, a, b, c, ldc, alpha, beta); break;
    case 2: fnn_ukr_avx512_f64_r2(k, a, b, c, ldc, alpha, beta); break;
    case 3: fnn_ukr_avx512_f64_r3(k, a, b, c, ldc, alpha, beta); break;
    case 4: fnn_ukr_avx512_f64_r4(k, a, b, c, ldc, alpha, beta); break;
    case 5: fnn_ukr_avx512_f64_r5(k, a, b, c, ldc, alpha, beta); break;
    case 6: fnn_ukr_avx512_f64_r6(k, a, b, c, ldc, alpha, beta); break;
    case 7: fnn_ukr_avx512_f64_r7(k, a, b, c, ldc, alpha, beta); break;
    default: fnn_ukr_avx512_f64(k, a, b, c, ldc, alpha, beta); break;
    }
}
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64_r1, 2, double, __m512d, 8, 1, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64_r2, 2, double, __m512d, 8, 2, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64_r3, 2, double, __m512d, 8, 3, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64_r4, 2, double, __m512d, 8, 4, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64_r5, 2, double, __m512d, 8, 5, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64_r6, 2, double, __m512d, 8, 6, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
DEFINE_AVX512_UKR(fnn_ukri_avx512_f64_r7, 2, double, __m512d, 8, 7, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_loadu_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
FNN_TARGET_AVX512 void fnn_ukri_avx512_rows_f64(int rows, int64_t k, PACKED_A_F64, INDIRECT_B_F64, double *FNN_RESTRICT c, int64_t ldc,
        double alpha, double beta)
{
    switch (rows) {
    case 1: fnn_ukri_avx512_f64_r1(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 2: fnn_ukri_avx512_f64_r2(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 3: fnn_ukri_avx512_f64_r3(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 4: fnn_ukri_avx512_f64_r4(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 5: fnn_ukri_avx512_f64_r5(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 6: fnn_ukri_avx512_f64_r6(k, a, brow, boff, c, ldc, alpha, beta); break;
    case 7: fnn_ukri_avx512_f64_r7(k, a, brow, boff, c, ldc, alpha, beta); break;
    default: fnn_ukri_avx512_f64(k, a, brow, boff, c, ldc, alpha, beta); break;
    }
}
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64_r1, 2, double, __m512d, 8, 1, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64_r2, 2, double, __m512d, 8, 2, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64_r3, 2, double, __m512d, 8, 3, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64_r4, 2, double, __m512d, 8, 4, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64_r5, 2, double, __m512d, 8, 5, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64_r6, 2, double, __m512d, 8, 6, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
DEFINE_AVX512_UKR(fnn_ukra_avx512_f64_r7, 2, double, __m512d, 8, 7, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_setzero_pd,
                INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
FNN_TARGET_AVX512 void fnn_ukra_avx512_rows_f64(int rows, int64_t k, INDIRECT_A_F64, PACKED_B_F64, double *FNN_RESTRICT c, int64_t ldc,
        double alpha, double beta)
{
    switch (rows) {
    case 1: fnn_ukra_avx512_f64_r1(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 2: fnn_ukra_avx512_f64_r2(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 3: fnn_ukra_avx512_f64_r3(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 4: fnn_ukra_avx512_f64_r4(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 5: fnn_ukra_avx512_f64_r5(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 6: fnn_ukra_avx512_f64_r6(k, arow, aoff, b, c, ldc, alpha, beta); break;
    case 7: fnn_ukra_avx512_f64_r7(k, arow, aoff, b, c, ldc, alpha, beta); break;
    default: fnn_ukra_avx512_f64(k, arow, aoff, b, c, ldc, alpha, beta); break;
    }
}
#endif
