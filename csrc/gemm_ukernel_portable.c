/* Portable C microkernels: plain loops over a fixed MR x NR accumulator block
 * that any compiler vectorises (SSE2 on x86-64 without -march). Always built;
 * the reference point for the SIMD kernels and the fallback on other CPUs.
 * Packed-B and indirect-B variants (see gemm_ukernel_avx512.c). */
#include "gemm.h"

#define FNN_DEFINE_PORTABLE_UKR(NAME, T, MR, NR, APARAMS, AVAL, BPARAMS, BROW)                                     \
    void NAME(int64_t k, APARAMS, BPARAMS, T *FNN_RESTRICT c, int64_t ldc, T alpha, \
              T beta)                                                                              \
    {                                                                                              \
        T acc[MR][NR];                                                                             \
        for (int i = 0; i < MR; i++)                                                               \
            for (int j = 0; j < NR; j++)                                                           \
                acc[i][j] = 0;                                                                     \
        for (int64_t p = 0; p < k; p++) {                                                          \
            const T *bp = BROW(p);                                                                 \
            for (int i = 0; i < MR; i++) {                                                         \
                T ai = AVAL(i, p);                                                                      \
                for (int j = 0; j < NR; j++)                                                       \
                    acc[i][j] += ai * bp[j];                                                       \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < MR; i++) {                                                             \
            T *ci = c + i * ldc;                                                                   \
            if (beta == 0) {                                                                       \
                for (int j = 0; j < NR; j++)                                                       \
                    ci[j] = alpha * acc[i][j];                                                     \
            } else {                                                                               \
                for (int j = 0; j < NR; j++)                                                       \
                    ci[j] = alpha * acc[i][j] + beta * ci[j];                                      \
            }                                                                                      \
        }                                                                                          \
    }

#define PACKED_A_F32 const float *FNN_RESTRICT a
#define PACKED_A_F64 const double *FNN_RESTRICT a
#define INDIRECT_A_F32 const float *const *FNN_RESTRICT arow, int64_t aoff
#define INDIRECT_A_F64 const double *const *FNN_RESTRICT arow, int64_t aoff
#define AVAL_PACKED_S(i, p) a[(p) * FNN_PORTABLE_MR_F32 + (i)]
#define AVAL_PACKED_D(i, p) a[(p) * FNN_PORTABLE_MR_F64 + (i)]
#define AVAL_INDIRECT(i, p) arow[i][aoff + (p)]
#define PACKED_B_F32 const float *FNN_RESTRICT b
#define PACKED_B_F64 const double *FNN_RESTRICT b
#define INDIRECT_B_F32 const float *const *FNN_RESTRICT brow, int64_t boff
#define INDIRECT_B_F64 const double *const *FNN_RESTRICT brow, int64_t boff
#define ROW_PACKED_S(p) (b + (p) * FNN_PORTABLE_NR_F32)
#define ROW_PACKED_D(p) (b + (p) * FNN_PORTABLE_NR_F64)
#define ROW_INDIRECT(p) (brow[p] + boff)

FNN_DEFINE_PORTABLE_UKR(fnn_ukr_portable_f32, float, FNN_PORTABLE_MR_F32, FNN_PORTABLE_NR_F32,
                        PACKED_A_F32, AVAL_PACKED_S, PACKED_B_F32, ROW_PACKED_S)
FNN_DEFINE_PORTABLE_UKR(fnn_ukr_portable_f64, double, FNN_PORTABLE_MR_F64, FNN_PORTABLE_NR_F64,
                        PACKED_A_F64, AVAL_PACKED_D, PACKED_B_F64, ROW_PACKED_D)
FNN_DEFINE_PORTABLE_UKR(fnn_ukri_portable_f32, float, FNN_PORTABLE_MR_F32, FNN_PORTABLE_NR_F32,
                        PACKED_A_F32, AVAL_PACKED_S, INDIRECT_B_F32, ROW_INDIRECT)
FNN_DEFINE_PORTABLE_UKR(fnn_ukri_portable_f64, double, FNN_PORTABLE_MR_F64, FNN_PORTABLE_NR_F64,
                        PACKED_A_F64, AVAL_PACKED_D, INDIRECT_B_F64, ROW_INDIRECT)
FNN_DEFINE_PORTABLE_UKR(fnn_ukra_portable_f32, float, FNN_PORTABLE_MR_F32, FNN_PORTABLE_NR_F32,
                        INDIRECT_A_F32, AVAL_INDIRECT, PACKED_B_F32, ROW_PACKED_S)
FNN_DEFINE_PORTABLE_UKR(fnn_ukra_portable_f64, double, FNN_PORTABLE_MR_F64, FNN_PORTABLE_NR_F64,
                        INDIRECT_A_F64, AVAL_INDIRECT, PACKED_B_F64, ROW_PACKED_D)
