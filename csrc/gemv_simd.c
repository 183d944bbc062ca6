/* One-row products (batch-1 inference) and products with B = T and a few rows
 * (batch-1 to 16 input gradients, x @ W^T), with AVX-512 and AVX2 intrinsics:
 * gemv_template.h once per ISA and dtype. The portable path keeps the loops of
 * gemm_template.h's small_m. */
#include "gemm.h"

#if FNN_X86_SIMD
#include <immintrin.h>



FNN_TARGET_AVX2 static inline float hsum_avx2_f32(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

FNN_TARGET_AVX2 static inline double hsum_avx2_f64(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

FNN_TARGET_AVX2 static inline __m256i mask_avx2_f32(int count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

FNN_TARGET_AVX2 static inline __m256i mask_avx2_f64(int count)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
}

/* ---- AVX-512: 8 vectors of columns, 4 x 4 dot tiles ---- */
#define TARGET FNN_TARGET_AVX512
#define G 8
#define SPLIT 8
#define DA 4
#define DB 4

#define T float
#define VT __m512
#define L 16
#define SFX avx512_f32
#define MASK_T __mmask16
#define MASK(n) ((__mmask16)(0xFFFFu >> (16 - (n))))
#define LOADU _mm512_loadu_ps
#define MLOADZ(p, m) _mm512_maskz_loadu_ps(m, p)
#define MSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define STOREU _mm512_storeu_ps
#define FMA _mm512_fmadd_ps
#define MUL _mm512_mul_ps
#define ADD _mm512_add_ps
#define SET1 _mm512_set1_ps
#define SETZERO _mm512_setzero_ps
#define HSUM _mm512_reduce_add_ps
#include "gemv_template.h"

#define T double
#define VT __m512d
#define L 8
#define SFX avx512_f64
#define MASK_T __mmask8
#define MASK(n) ((__mmask8)(0xFFu >> (8 - (n))))
#define LOADU _mm512_loadu_pd
#define MLOADZ(p, m) _mm512_maskz_loadu_pd(m, p)
#define MSTORE(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#define STOREU _mm512_storeu_pd
#define FMA _mm512_fmadd_pd
#define MUL _mm512_mul_pd
#define ADD _mm512_add_pd
#define SET1 _mm512_set1_pd
#define SETZERO _mm512_setzero_pd
#define HSUM _mm512_reduce_add_pd
#include "gemv_template.h"

#undef TARGET
#undef G
#undef SPLIT
#undef DA
#undef DB

/* ---- AVX2 (16 registers): 8 vectors of columns, the depth not split (the
 * split takes 2 registers a vector: 4 sweeps of 32 columns over a 784 x 512
 * B took 44 us against the row buffer's 37, 8 of 64 columns unsplit
 * 27.4-27.8; and a split for fewer vectors only would make a column's sum
 * depend on the group it falls in, so on the thread count), 2 x 4 dot tiles */
#define TARGET FNN_TARGET_AVX2
#define G 8
#define SPLIT 0
#define DA 2
#define DB 4

#define T float
#define VT __m256
#define L 8
#define SFX avx2_f32
#define MASK_T __m256i
#define MASK(n) mask_avx2_f32(n)
#define LOADU _mm256_loadu_ps
#define MLOADZ(p, m) _mm256_maskload_ps(p, m)
#define MSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#define STOREU _mm256_storeu_ps
#define FMA _mm256_fmadd_ps
#define MUL _mm256_mul_ps
#define ADD _mm256_add_ps
#define SET1 _mm256_set1_ps
#define SETZERO _mm256_setzero_ps
#define HSUM hsum_avx2_f32
#include "gemv_template.h"

#define T double
#define VT __m256d
#define L 4
#define SFX avx2_f64
#define MASK_T __m256i
#define MASK(n) mask_avx2_f64(n)
#define LOADU _mm256_loadu_pd
#define MLOADZ(p, m) _mm256_maskload_pd(p, m)
#define MSTORE(p, m, v) _mm256_maskstore_pd(p, m, v)
#define STOREU _mm256_storeu_pd
#define FMA _mm256_fmadd_pd
#define MUL _mm256_mul_pd
#define ADD _mm256_add_pd
#define SET1 _mm256_set1_pd
#define SETZERO _mm256_setzero_pd
#define HSUM hsum_avx2_f64
#include "gemv_template.h"

#undef TARGET
#undef G
#undef SPLIT
#undef DA
#undef DB
#endif
