/* AVX-512F microkernels: 8 x 32 float32 and 8 x 16 float64 (16 accumulator
 * zmm registers, 2 for B; the broadcasts of A fold into the FMAs as {1toN}
 * memory operands). Per step of k: two 64-byte loads of the packed B
 * micro-panel (streamed from L2), eight broadcasts of A (L1), sixteen FMAs. */
#include "gemm.h"

#if FNN_X86_SIMD
#include <immintrin.h>

#define MR_S FNN_AVX512_MR_F32
#define MR_D FNN_AVX512_MR_F64

FNN_TARGET_AVX512 void fnn_ukr_avx512_f32(int64_t k, const float *FNN_RESTRICT a, const float *FNN_RESTRICT b,
                                          float *FNN_RESTRICT c, int64_t ldc, float alpha, float beta)
{
    __m512 acc0[MR_S], acc1[MR_S];
#pragma GCC unroll 16
    for (int i = 0; i < MR_S; i++) {
        acc0[i] = _mm512_setzero_ps();
        acc1[i] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 31), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        __m512 b0 = _mm512_load_ps(b);
        __m512 b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 16
        for (int i = 0; i < MR_S; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
        }
        a += MR_S;
        b += 32;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR_S; i++) {
        float *ci = c + i * ldc;
        if (beta == 0.0f) {
            _mm512_storeu_ps(ci, _mm512_mul_ps(va, acc0[i]));
            _mm512_storeu_ps(ci + 16, _mm512_mul_ps(va, acc1[i]));
        } else {
            _mm512_storeu_ps(ci, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), _mm512_mul_ps(va, acc0[i])));
            _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), _mm512_mul_ps(va, acc1[i])));
        }
    }
}

FNN_TARGET_AVX512 void fnn_ukr_avx512_f64(int64_t k, const double *FNN_RESTRICT a, const double *FNN_RESTRICT b,
                                          double *FNN_RESTRICT c, int64_t ldc, double alpha, double beta)
{
    __m512d acc0[MR_D], acc1[MR_D];
#pragma GCC unroll 16
    for (int i = 0; i < MR_D; i++) {
        acc0[i] = _mm512_setzero_pd();
        acc1[i] = _mm512_setzero_pd();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        __m512d b0 = _mm512_load_pd(b);
        __m512d b1 = _mm512_load_pd(b + 8);
#pragma GCC unroll 16
        for (int i = 0; i < MR_D; i++) {
            __m512d ai = _mm512_set1_pd(a[i]);
            acc0[i] = _mm512_fmadd_pd(ai, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_pd(ai, b1, acc1[i]);
        }
        a += MR_D;
        b += 16;
    }
    __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR_D; i++) {
        double *ci = c + i * ldc;
        if (beta == 0.0) {
            _mm512_storeu_pd(ci, _mm512_mul_pd(va, acc0[i]));
            _mm512_storeu_pd(ci + 8, _mm512_mul_pd(va, acc1[i]));
        } else {
            _mm512_storeu_pd(ci, _mm512_fmadd_pd(vb, _mm512_loadu_pd(ci), _mm512_mul_pd(va, acc0[i])));
            _mm512_storeu_pd(ci + 8, _mm512_fmadd_pd(vb, _mm512_loadu_pd(ci + 8), _mm512_mul_pd(va, acc1[i])));
        }
    }
}
#endif
