/* AVX2 + FMA microkernels: 6 x 16 float32 and 6 x 8 float64 (12 accumulator
 * ymm registers, 2 for B, 1 broadcast of A: 15 of the 16). Per step of k: two
 * vector loads of the packed B micro-panel, six broadcasts of A, twelve FMAs. */
#include "gemm.h"

#if FNN_X86_SIMD
#include <immintrin.h>

#define MR_S FNN_AVX2_MR_F32
#define MR_D FNN_AVX2_MR_F64

FNN_TARGET_AVX2 void fnn_ukr_avx2_f32(int64_t k, const float *FNN_RESTRICT a, const float *FNN_RESTRICT b,
                                      float *FNN_RESTRICT c, int64_t ldc, float alpha, float beta)
{
    __m256 acc0[MR_S], acc1[MR_S];
#pragma GCC unroll 8
    for (int i = 0; i < MR_S; i++) {
        acc0[i] = _mm256_setzero_ps();
        acc1[i] = _mm256_setzero_ps();
    }
#pragma GCC unroll 2
    for (int64_t p = 0; p < k; p++) {
        __m256 b0 = _mm256_load_ps(b);
        __m256 b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR_S; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
        }
        a += MR_S;
        b += 16;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
    for (int i = 0; i < MR_S; i++) {
        float *ci = c + i * ldc;
        if (beta == 0.0f) {
            _mm256_storeu_ps(ci, _mm256_mul_ps(va, acc0[i]));
            _mm256_storeu_ps(ci + 8, _mm256_mul_ps(va, acc1[i]));
        } else {
            _mm256_storeu_ps(ci, _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), _mm256_mul_ps(va, acc0[i])));
            _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), _mm256_mul_ps(va, acc1[i])));
        }
    }
}

FNN_TARGET_AVX2 void fnn_ukr_avx2_f64(int64_t k, const double *FNN_RESTRICT a, const double *FNN_RESTRICT b,
                                      double *FNN_RESTRICT c, int64_t ldc, double alpha, double beta)
{
    __m256d acc0[MR_D], acc1[MR_D];
#pragma GCC unroll 8
    for (int i = 0; i < MR_D; i++) {
        acc0[i] = _mm256_setzero_pd();
        acc1[i] = _mm256_setzero_pd();
    }
#pragma GCC unroll 2
    for (int64_t p = 0; p < k; p++) {
        __m256d b0 = _mm256_load_pd(b);
        __m256d b1 = _mm256_load_pd(b + 4);
#pragma GCC unroll 8
        for (int i = 0; i < MR_D; i++) {
            __m256d ai = _mm256_broadcast_sd(a + i);
            acc0[i] = _mm256_fmadd_pd(ai, b0, acc0[i]);
            acc1[i] = _mm256_fmadd_pd(ai, b1, acc1[i]);
        }
        a += MR_D;
        b += 8;
    }
    __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
#pragma GCC unroll 8
    for (int i = 0; i < MR_D; i++) {
        double *ci = c + i * ldc;
        if (beta == 0.0) {
            _mm256_storeu_pd(ci, _mm256_mul_pd(va, acc0[i]));
            _mm256_storeu_pd(ci + 4, _mm256_mul_pd(va, acc1[i]));
        } else {
            _mm256_storeu_pd(ci, _mm256_fmadd_pd(vb, _mm256_loadu_pd(ci), _mm256_mul_pd(va, acc0[i])));
            _mm256_storeu_pd(ci + 4, _mm256_fmadd_pd(vb, _mm256_loadu_pd(ci + 4), _mm256_mul_pd(va, acc1[i])));
        }
    }
}
#endif
