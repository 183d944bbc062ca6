/* Portable C microkernels: plain loops over a fixed MR x NR accumulator block
 * that any compiler vectorises (SSE2 on x86-64 without -march). Always built;
 * the reference point for the SIMD kernels and the fallback on other CPUs. */
#include "gemm.h"

#define FNN_DEFINE_PORTABLE_UKR(T, SFX, MR, NR)                                                     \
    void fnn_ukr_portable_##SFX(int64_t k, const T *FNN_RESTRICT a, const T *FNN_RESTRICT b,       \
                                T *FNN_RESTRICT c, int64_t ldc, T alpha, T beta)                   \
    {                                                                                              \
        T acc[MR][NR];                                                                             \
        for (int i = 0; i < MR; i++)                                                               \
            for (int j = 0; j < NR; j++)                                                           \
                acc[i][j] = 0;                                                                     \
        for (int64_t p = 0; p < k; p++) {                                                          \
            const T *bp = b + p * NR;                                                              \
            const T *ap = a + p * MR;                                                              \
            for (int i = 0; i < MR; i++) {                                                         \
                T ai = ap[i];                                                                      \
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

FNN_DEFINE_PORTABLE_UKR(float, f32, FNN_PORTABLE_MR_F32, FNN_PORTABLE_NR_F32)
FNN_DEFINE_PORTABLE_UKR(double, f64, FNN_PORTABLE_MR_F64, FNN_PORTABLE_NR_F64)
