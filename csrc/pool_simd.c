/* AVX-512 and AVX2 max pooling for the common 2x2 stride-2 unpadded window
 * (float32).
 *
 * 16 outputs at a time: the two input rows are loaded 32 floats each and split
 * into even and odd columns, giving the four window elements as four vectors.
 * They are compared in row-major window order with the scalar rule (a larger
 * value wins, else the first NaN wins), carrying a 2-bit code of the winner
 * that becomes the int64 argmax h*W + w. Short rows (ow < 16) and row tails
 * use masked loads and stores, so no scalar loop is needed. */
#include "kernels.h"

#if FNN_X86_SIMD
#include <immintrin.h>

/* lanes where v replaces b: v > b, or v is NaN and b is not */
FNN_TARGET_AVX512 static inline __mmask16 max_wins_avx512(__m512 v, __m512 b)
{
    return _mm512_cmp_ps_mask(v, b, _CMP_GT_OQ) |
           (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(b, b, _CMP_ORD_Q));
}

/* the max of the windows' elements v0..v3 (row-major order) and, in *off, the
 * winner's offset in its window: 0, 1, W or W + 1 (c1, cW, cW1). Without a NaN
 * among them the rule is a plain v > best, one compare a step instead of three
 * (compares into masks share one port with the permutes: the 2x2 pooling of
 * the fused convolution was bound by it); two compares find any NaN. */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE __m512 window_max_avx512(__m512 v0, __m512 v1, __m512 v2, __m512 v3,
                                                                   __m512i c1, __m512i cW, __m512i cW1, __m512i *off)
{
    __m512 best = v0;
    __m512i o = _mm512_setzero_si512();
    if (!(_mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v2, v3, _CMP_UNORD_Q))) {
        __mmask16 w = _mm512_cmp_ps_mask(v1, best, _CMP_GT_OQ);
        best = _mm512_mask_mov_ps(best, w, v1);
        o = _mm512_mask_mov_epi32(o, w, c1);
        w = _mm512_cmp_ps_mask(v2, best, _CMP_GT_OQ);
        best = _mm512_mask_mov_ps(best, w, v2);
        o = _mm512_mask_mov_epi32(o, w, cW);
        w = _mm512_cmp_ps_mask(v3, best, _CMP_GT_OQ);
        best = _mm512_mask_mov_ps(best, w, v3);
        *off = _mm512_mask_mov_epi32(o, w, cW1);
        return best;
    }
    __mmask16 w = max_wins_avx512(v1, best);
    best = _mm512_mask_mov_ps(best, w, v1);
    o = _mm512_mask_mov_epi32(o, w, c1);
    w = max_wins_avx512(v2, best);
    best = _mm512_mask_mov_ps(best, w, v2);
    o = _mm512_mask_mov_epi32(o, w, cW);
    w = max_wins_avx512(v3, best);
    best = _mm512_mask_mov_ps(best, w, v3);
    *off = _mm512_mask_mov_epi32(o, w, cW1);
    return best;
}

/* One plane; the argmax written as int64 (STORE_INDEX_I64) or, for the fused
 * convolution + pooling, int32 (STORE_INDEX_I32: one add and one store where
 * int64 takes two widenings, three adds and two stores; the I workload's step
 * 4-8% faster with it) */
#define STORE_INDEX_I64(ao, ox, out, corner, off)                                                            \
    {                                                                                                        \
        const __m512i base = _mm512_add_epi64(_mm512_set1_epi64(corner), lane2_64);                          \
        _mm512_mask_storeu_epi64(ao + ox, (__mmask8)(out & 0xFF),                                            \
                                 _mm512_add_epi64(base, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(off)))); \
        _mm512_mask_storeu_epi64(ao + ox + 8, (__mmask8)(out >> 8),                                          \
                                 _mm512_add_epi64(_mm512_add_epi64(base, _mm512_set1_epi64(16)),             \
                                                  _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(off, 1)))); \
    }
#define STORE_INDEX_I32(ao, ox, out, corner, off)                                                            \
    _mm512_mask_storeu_epi32(ao + ox, out, _mm512_add_epi32(_mm512_add_epi32(_mm512_set1_epi32((int32_t)(corner)), even), off));
/* What the plane's elements are before they are pooled: as they are (POOL_AS_IS),
 * or for the fused convolution + pooling the convolution's raw sums plus the
 * filter's bias where it has one (POOL_BIASED: none is no add, which keeps a
 * -0 sum), then ReLU'd (POOL_RELU), which saves
 * the epilogue's own pass over the plane (6-7% of conv + ReLU + pool). ReLU
 * is applied after the window's max: max and first argmax of relu(u) are those
 * of u where that max is > 0 or NaN, else (all u <= 0) relu(u_0) at offset 0,
 * as the window's first zero wins its ties; max(0, u) is relu bit for bit
 * (-0 stays -0, NaN stays NaN). */
enum { POOL_AS_IS = 0, POOL_BIASED = 1, POOL_RELU = 2, POOL_BIASED_RELU = 3 };
#define DEFINE_MAX_POOL_2X2S2_AVX512(NAME, IDX, STORE_INDEX, PRE)                                            \
    FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE void NAME##_rows_avx512(const float *x, int64_t ldx, float bias, float *y, \
                                                                IDX *am, int64_t W, int64_t oh, int64_t ow)  \
    {                                                                                                        \
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);  \
        const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));                                    \
        const __m512i lane2_64 = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14); /* 2*j for j < 8 */         \
        const __m512i one = _mm512_set1_epi32(1), offW = _mm512_set1_epi32((int)W),                          \
                      offW1 = _mm512_set1_epi32((int)W + 1);                                                 \
        const __m512 bv = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();                                  \
        (void)lane2_64; (void)bv; (void)zero;                                                                \
        for (int64_t oy = 0; oy < oh; oy++) {                                                                \
            const float *r0 = x + 2 * oy * ldx, *r1 = r0 + ldx;                                              \
            float *yo = y + oy * ow;                                                                         \
            IDX *ao = am + oy * ow;                                                                          \
            for (int64_t ox = 0; ox < ow; ox += 16) {                                                        \
                const int64_t rem = ow - ox < 16 ? ow - ox : 16;                                             \
                const __mmask16 in_lo = rem >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * rem)) - 1u);  \
                const __mmask16 in_hi = rem > 8 ? (__mmask16)((1u << (2 * rem - 16)) - 1u) : (__mmask16)0;  \
                const __mmask16 out = (__mmask16)((1u << rem) - 1u);                                         \
                const int64_t ix = 2 * ox;                                                                   \
                __m512 a0 = _mm512_maskz_loadu_ps(in_lo, r0 + ix), a1 = _mm512_maskz_loadu_ps(in_hi, r0 + ix + 16); \
                __m512 b0 = _mm512_maskz_loadu_ps(in_lo, r1 + ix), b1 = _mm512_maskz_loadu_ps(in_hi, r1 + ix + 16); \
                if (PRE & POOL_BIASED) {                                                                     \
                    a0 = _mm512_add_ps(a0, bv), a1 = _mm512_add_ps(a1, bv);                                  \
                    b0 = _mm512_add_ps(b0, bv), b1 = _mm512_add_ps(b1, bv);                                  \
                }                                                                                            \
                __m512 v0 = _mm512_permutex2var_ps(a0, even, a1), v1 = _mm512_permutex2var_ps(a0, odd, a1);  \
                __m512 v2 = _mm512_permutex2var_ps(b0, even, b1), v3 = _mm512_permutex2var_ps(b0, odd, b1);  \
                __m512i off;                                                                                 \
                __m512 best = window_max_avx512(v0, v1, v2, v3, one, offW, offW1, &off);                     \
                if (PRE & POOL_RELU) {                                                                       \
                    const __mmask16 keep = _mm512_cmp_ps_mask(best, zero, _CMP_NLE_UQ);                      \
                    best = _mm512_mask_mov_ps(_mm512_max_ps(zero, v0), keep, best);                          \
                    off = _mm512_maskz_mov_epi32(keep, off);                                                 \
                }                                                                                            \
                _mm512_mask_storeu_ps(yo + ox, out, best);                                                   \
                /* argmax = 2*oy*W + 2*(ox + j) + off */                                                   \
                STORE_INDEX(ao, ox, out, 2 * oy * W + ix, off)                                               \
            }                                                                                                \
        }                                                                                                    \
    }
DEFINE_MAX_POOL_2X2S2_AVX512(plane_i64, int64_t, STORE_INDEX_I64, POOL_AS_IS)
DEFINE_MAX_POOL_2X2S2_AVX512(plane_i32, int32_t, STORE_INDEX_I32, POOL_AS_IS)
DEFINE_MAX_POOL_2X2S2_AVX512(plane_i32_biased, int32_t, STORE_INDEX_I32, POOL_BIASED)
DEFINE_MAX_POOL_2X2S2_AVX512(plane_i32_biased_relu, int32_t, STORE_INDEX_I32, POOL_BIASED_RELU)
DEFINE_MAX_POOL_2X2S2_AVX512(plane_i32_relu, int32_t, STORE_INDEX_I32, POOL_RELU)

/* The entry points of one ISA's 2x2 kernels: the plane as it is (int64 or
 * int32 argmax), and the fused convolution's biased (and ReLU'd) plane */
#define DEFINE_MAX_POOL_2X2S2_ENTRIES(TARGET, ISA)                                                           \
    TARGET void fnn_max_pool_2x2s2_plane_##ISA##_f32(const float *x, float *y, int64_t *am, int64_t W,       \
                                                     int64_t oh, int64_t ow)                                 \
    {                                                                                                        \
        plane_i64_rows_##ISA(x, W, 0.0f, y, am, W, oh, ow);                                                  \
    }                                                                                                        \
    TARGET void fnn_max_pool_2x2s2_plane_i32_##ISA##_f32(const float *x, float *y, int32_t *am, int64_t W,   \
                                                         int64_t oh, int64_t ow)                             \
    {                                                                                                        \
        plane_i32_rows_##ISA(x, W, 0.0f, y, am, W, oh, ow);                                                  \
    }                                                                                                        \
    TARGET void fnn_max_pool_2x2s2_bias_act_i32_##ISA##_f32(const float *x, int64_t ldx, const float *bias,  \
                                                            int relu, float *y, int32_t *am, int64_t W,      \
                                                            int64_t oh, int64_t ow)                          \
    {                                                                                                        \
        if (bias && relu)                                                                                    \
            plane_i32_biased_relu_rows_##ISA(x, ldx, *bias, y, am, W, oh, ow);                               \
        else if (bias)                                                                                       \
            plane_i32_biased_rows_##ISA(x, ldx, *bias, y, am, W, oh, ow);                                    \
        else if (relu)                                                                                       \
            plane_i32_relu_rows_##ISA(x, ldx, 0.0f, y, am, W, oh, ow);                                       \
        else                                                                                                 \
            plane_i32_rows_##ISA(x, ldx, 0.0f, y, am, W, oh, ow);                                            \
    }
DEFINE_MAX_POOL_2X2S2_ENTRIES(FNN_TARGET_AVX512, avx512)

/* Small planes (W = 2 ow, H = 2 oh, ow <= 8), many at once: the planes' row
 * pairs follow one another in memory, so G = 16 / ow row pairs are one block of
 * 4 ow G <= 64 floats of x and G ow <= 16 consecutive outputs, wherever the
 * planes begin and end. One block is four loads and, for each window element,
 * two two-source permutes and a blend; a plane of 4x4 (ow = 2) took two
 * mostly masked row steps of the per-plane kernel above and a call. The argmax
 * is plane-relative: each lane keeps the row pair within its plane (rp), moved
 * on by G mod oh a block. */
typedef struct {
    int64_t G;                            /* row pairs a block: lanes / ow */
    int32_t p0[16], jr[16], jc2[16], rp[16]; /* lane j's window (top left) in the block, its row pair in
                                             the block, 2 * its column; rp: its row pair in its plane */
} small_pool_layout;

/* The layout of blocks of `lanes` outputs, rp at the block of row pair r0
 * (unused lanes point at the block's first window). Plain ints: vectors kept
 * in a struct on the stack need an alignment a sanitizer's fake stack lacks. */
static void small_pool_layout_of(small_pool_layout *L, int lanes, int64_t ow, int64_t r0, int64_t oh)
{
    L->G = lanes / ow;
    for (int j = 0; j < 16; j++) {
        const int used = j < L->G * ow;
        L->jr[j] = used ? (int32_t)(j / ow) : 0;
        L->jc2[j] = used ? (int32_t)(2 * (j % ow)) : 0;
        L->p0[j] = (int32_t)(L->jr[j] * 4 * ow + L->jc2[j]);
        L->rp[j] = (int32_t)((r0 + L->jr[j]) % oh);
    }
}

FNN_TARGET_AVX512 static inline __m512i small_pool_next_rows(__m512i rp, __m512i step, __m512i oh)
{
    rp = _mm512_add_epi32(rp, step);
    return _mm512_mask_sub_epi32(rp, _mm512_cmpge_epi32_mask(rp, oh), rp, oh);
}

/* the 16 values at block positions p (p < 64) of z0..z3 */
FNN_TARGET_AVX512 static inline __m512 small_pool_pick(__m512 z0, __m512 z1, __m512 z2, __m512 z3, __m512i p,
                                                       __mmask16 hi)
{
    return _mm512_mask_blend_ps(hi, _mm512_permutex2var_ps(z0, p, z1), _mm512_permutex2var_ps(z2, p, z3));
}

/* Row pairs [r_begin, r_end) of planes of (2 oh, 2 ow); r_begin a multiple of G. */
FNN_TARGET_AVX512 void fnn_max_pool_2x2s2_small_avx512_f32(const float *x, float *y, int64_t *am, int64_t r_begin,
                                                           int64_t r_end, int64_t oh, int64_t ow)
{
    small_pool_layout L;
    small_pool_layout_of(&L, 16, ow, r_begin, oh);
    const int64_t W = 2 * ow;
    const __m512i c1 = _mm512_set1_epi32(1), cW = _mm512_set1_epi32((int)W), cW1 = _mm512_set1_epi32((int)W + 1),
                  c32 = _mm512_set1_epi32(32), jc2 = _mm512_loadu_si512(L.jc2);
    const __m512i p0 = _mm512_loadu_si512(L.p0), p1 = _mm512_add_epi32(p0, c1), p2 = _mm512_add_epi32(p0, cW),
                  p3 = _mm512_add_epi32(p2, c1);
    /* lanes whose element lies in the block's upper 32 floats */
    const __mmask16 hi0 = _mm512_cmpge_epi32_mask(p0, c32), hi1 = _mm512_cmpge_epi32_mask(p1, c32),
                    hi2 = _mm512_cmpge_epi32_mask(p2, c32), hi3 = _mm512_cmpge_epi32_mask(p3, c32);
    const __m512i step = _mm512_set1_epi32((int)(L.G % oh)), ohv = _mm512_set1_epi32((int)oh),
                  two_w = _mm512_set1_epi32((int)(2 * W));
    __m512i rp = _mm512_loadu_si512(L.rp);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += L.G) {
        const int64_t pairs = r_end - r0 < L.G ? r_end - r0 : L.G, n_in = pairs * 2 * W, n_out = pairs * ow;
        const float *xb = x + r0 * 2 * W;
        const __m512 z0 = _mm512_maskz_loadu_ps(n_in >= 16 ? 0xFFFF : (__mmask16)((1u << n_in) - 1u), xb);
        const __m512 z1 = _mm512_maskz_loadu_ps(n_in >= 32 ? 0xFFFF : n_in <= 16 ? 0 : (__mmask16)((1u << (n_in - 16)) - 1u), xb + 16);
        const __m512 z2 = _mm512_maskz_loadu_ps(n_in >= 48 ? 0xFFFF : n_in <= 32 ? 0 : (__mmask16)((1u << (n_in - 32)) - 1u), xb + 32);
        const __m512 z3 = _mm512_maskz_loadu_ps(n_in >= 64 ? 0xFFFF : n_in <= 48 ? 0 : (__mmask16)((1u << (n_in - 48)) - 1u), xb + 48);
        const __m512 v0 = small_pool_pick(z0, z1, z2, z3, p0, hi0), v1 = small_pool_pick(z0, z1, z2, z3, p1, hi1);
        const __m512 v2 = small_pool_pick(z0, z1, z2, z3, p2, hi2), v3 = small_pool_pick(z0, z1, z2, z3, p3, hi3);
        __m512i off;
        const __m512 best = window_max_avx512(v0, v1, v2, v3, c1, cW, cW1, &off);
        const __mmask16 out = (__mmask16)((1u << n_out) - 1u);
        _mm512_mask_storeu_ps(y + r0 * ow, out, best);
        /* argmax = 2 rp W + 2 column + off, within the plane */
        const __m512i idx = _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(rp, two_w), jc2), off);
        _mm512_mask_storeu_epi64(am + r0 * ow, (__mmask8)(out & 0xFF), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(idx)));
        _mm512_mask_storeu_epi64(am + r0 * ow + 8, (__mmask8)(out >> 8),
                                 _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(idx, 1)));
        rp = small_pool_next_rows(rp, step, ohv);
    }
}

/* The backward of the above: dx of row pairs [r_begin, r_end) in whole blocks of
 * 64 floats, each value the dy of its window where the argmax points at it, else
 * +0 (as the scatter's 0 + dy). 0 where an argmax lies outside its window (the
 * caller then scatters, as for any foreign argmax). */
FNN_TARGET_AVX512 int fnn_max_unpool_2x2s2_small_avx512_f32(const float *g, const int64_t *am, float *dx,
                                                            int64_t r_begin, int64_t r_end, int64_t oh, int64_t ow)
{
    small_pool_layout L;
    small_pool_layout_of(&L, 16, ow, r_begin, oh);
    const int64_t W = 2 * ow;
    /* for each of the block's 64 positions q*16 + i: its window (lane) and its offset in the window */
    int32_t lane_of[64], offset_of[64];
    for (int64_t p = 0; p < 64; p++) {
        const int64_t r = p / (2 * W), c = p % (2 * W), row = c / W, col = c % W;
        const int in_block = r < L.G;
        lane_of[p] = in_block ? (int32_t)(r * ow + col / 2) : 0;
        offset_of[p] = in_block ? (int32_t)(row * W + col % 2) : -1;
    }
    const __m512i step = _mm512_set1_epi32((int)(L.G % oh)), ohv = _mm512_set1_epi32((int)oh),
                  two_w = _mm512_set1_epi32((int)(2 * W)), c1 = _mm512_set1_epi32(1),
                  cW = _mm512_set1_epi32((int)W), cW1 = _mm512_set1_epi32((int)W + 1);
    const __m512 zero = _mm512_setzero_ps();
    const __m512i jc2 = _mm512_loadu_si512(L.jc2);
    __m512i rp = _mm512_loadu_si512(L.rp);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += L.G) {
        const int64_t pairs = r_end - r0 < L.G ? r_end - r0 : L.G, n_out = pairs * ow, n_dx = pairs * 2 * W;
        const __mmask16 in = (__mmask16)((1u << n_out) - 1u);
        const __m512 v = _mm512_add_ps(zero, _mm512_maskz_loadu_ps(in, g + r0 * ow));
        const __m512i base = _mm512_add_epi32(_mm512_mullo_epi32(rp, two_w), jc2);
        /* argmax - window base, saturated to int32, so a far-off index never aliases */
        const __m256i k0 = _mm512_cvtsepi64_epi32(_mm512_sub_epi64(
            _mm512_maskz_loadu_epi64((__mmask8)(in & 0xFF), am + r0 * ow), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(base))));
        const __m256i k1 = _mm512_cvtsepi64_epi32(_mm512_sub_epi64(
            _mm512_maskz_loadu_epi64((__mmask8)(in >> 8), am + r0 * ow + 8),
            _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(base, 1))));
        const __m512i k = _mm512_inserti64x4(_mm512_castsi256_si512(k0), k1, 1);
        const __mmask16 ok = _mm512_cmpeq_epi32_mask(k, _mm512_setzero_si512()) | _mm512_cmpeq_epi32_mask(k, c1) |
                             _mm512_cmpeq_epi32_mask(k, cW) | _mm512_cmpeq_epi32_mask(k, cW1);
        if ((__mmask16)(ok & in) != in) return 0;
        float *db = dx + r0 * 2 * W;
        for (int q = 0; q < 4 && 16 * q < n_dx; q++) {
            const __m512i lane = _mm512_loadu_si512(lane_of + 16 * q);
            const __mmask16 hit = _mm512_cmpeq_epi32_mask(_mm512_permutexvar_epi32(lane, k),
                                                          _mm512_loadu_si512(offset_of + 16 * q));
            const int64_t left = n_dx - 16 * q;
            _mm512_mask_storeu_ps(db + 16 * q, left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1u),
                                  _mm512_maskz_mov_ps(hit, _mm512_permutexvar_ps(lane, v)));
        }
        rp = small_pool_next_rows(rp, step, ohv);
    }
    return 1;
}

/* The same with AVX2: 8 outputs at a time. */
FNN_TARGET_AVX2 static inline __m256 max_wins_avx2(__m256 v, __m256 b)
{
    return _mm256_or_ps(_mm256_cmp_ps(v, b, _CMP_GT_OQ),
                        _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(b, b, _CMP_ORD_Q)));
}

/* window_max_avx512 with 8 lanes (and its path without NaN); the offsets travel
 * as float bit patterns */
FNN_TARGET_AVX2 static FNN_ALWAYS_INLINE __m256 window_max_avx2(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 c1,
                                                               __m256 cW, __m256 cW1, __m256 *off)
{
    __m256 best = v0, o = _mm256_setzero_ps(), w;
    if (!_mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(v0, v1, _CMP_UNORD_Q), _mm256_cmp_ps(v2, v3, _CMP_UNORD_Q)))) {
        w = _mm256_cmp_ps(v1, best, _CMP_GT_OQ);
        best = _mm256_blendv_ps(best, v1, w), o = _mm256_blendv_ps(o, c1, w);
        w = _mm256_cmp_ps(v2, best, _CMP_GT_OQ);
        best = _mm256_blendv_ps(best, v2, w), o = _mm256_blendv_ps(o, cW, w);
        w = _mm256_cmp_ps(v3, best, _CMP_GT_OQ);
        best = _mm256_blendv_ps(best, v3, w), *off = _mm256_blendv_ps(o, cW1, w);
        return best;
    }
    w = max_wins_avx2(v1, best);
    best = _mm256_blendv_ps(best, v1, w), o = _mm256_blendv_ps(o, c1, w);
    w = max_wins_avx2(v2, best);
    best = _mm256_blendv_ps(best, v2, w), o = _mm256_blendv_ps(o, cW, w);
    w = max_wins_avx2(v3, best);
    best = _mm256_blendv_ps(best, v3, w), *off = _mm256_blendv_ps(o, cW1, w);
    return best;
}

FNN_TARGET_AVX2 static inline __m256i lanes_below_avx2(int64_t n)
{
    /* int32 lanes [0, n) set; n may be <= 0 or >= 8 */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int k = n < 0 ? 0 : (n > 8 ? 8 : (int)n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), idx);
}

#define STORE_INDEX_AVX2_I64(ao, ox, rem, corner, offi)                                                      \
    {                                                                                                        \
        const __m256i base = _mm256_add_epi64(_mm256_set1_epi64x(corner), lane2_64);                         \
        __m256i lo = _mm256_add_epi64(base, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(offi)));            \
        __m256i hi = _mm256_add_epi64(_mm256_add_epi64(base, _mm256_set1_epi64x(8)),                         \
                                      _mm256_cvtepi32_epi64(_mm256_extracti128_si256(offi, 1)));             \
        if (rem == 8) {                                                                                      \
            _mm256_storeu_si256((__m256i *)(ao + ox), lo);                                                   \
            _mm256_storeu_si256((__m256i *)(ao + ox + 4), hi);                                               \
        } else { /* int64 lanes [0, k): int32 pairs [0, 2k) */                                             \
            _mm256_maskstore_epi64((long long *)(ao + ox), lanes_below_avx2(2 * rem), lo);                   \
            _mm256_maskstore_epi64((long long *)(ao + ox + 4), lanes_below_avx2(2 * rem - 8), hi);           \
        }                                                                                                    \
    }
#define STORE_INDEX_AVX2_I32(ao, ox, rem, corner, offi)                                                      \
    {                                                                                                        \
        const __m256i idx = _mm256_add_epi32(_mm256_add_epi32(_mm256_set1_epi32((int32_t)(corner)), lane2_32), offi); \
        if (rem == 8)                                                                                        \
            _mm256_storeu_si256((__m256i *)(ao + ox), idx);                                                  \
        else                                                                                                 \
            _mm256_maskstore_epi32((int *)(ao + ox), lanes_below_avx2(rem), idx);                           \
    }
#define DEFINE_MAX_POOL_2X2S2_AVX2(NAME, IDX, STORE_INDEX, PRE)                                              \
    FNN_TARGET_AVX2 static FNN_ALWAYS_INLINE void NAME##_rows_avx2(const float *x, int64_t ldx, float bias,   \
                                                                   float *y, IDX *am, int64_t W, int64_t oh, \
                                                                   int64_t ow)                               \
    {                                                                                                        \
        const __m256 bv = _mm256_set1_ps(bias), zero = _mm256_setzero_ps();                                  \
        (void)bv; (void)zero;                                                                                \
        const __m256 one = _mm256_castsi256_ps(_mm256_set1_epi32(1)),                                        \
                     offW = _mm256_castsi256_ps(_mm256_set1_epi32((int)W)),                                  \
                     offW1 = _mm256_castsi256_ps(_mm256_set1_epi32((int)W + 1));                             \
        const __m256i lane2_64 = _mm256_setr_epi64x(0, 2, 4, 6);                                             \
        const __m256i lane2_32 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);                               \
        (void)lane2_64;                                                                                      \
        (void)lane2_32;                                                                                      \
        for (int64_t oy = 0; oy < oh; oy++) {                                                                \
            const float *r0 = x + 2 * oy * ldx, *r1 = r0 + ldx;                                              \
            float *yo = y + oy * ow;                                                                         \
            IDX *ao = am + oy * ow;                                                                          \
            for (int64_t ox = 0; ox < ow; ox += 8) {                                                         \
                const int64_t rem = ow - ox < 8 ? ow - ox : 8, ix = 2 * ox;                                  \
                __m256 a0, a1, b0, b1;                                                                       \
                if (rem == 8) {                                                                              \
                    a0 = _mm256_loadu_ps(r0 + ix), a1 = _mm256_loadu_ps(r0 + ix + 8);                        \
                    b0 = _mm256_loadu_ps(r1 + ix), b1 = _mm256_loadu_ps(r1 + ix + 8);                        \
                } else {                                                                                     \
                    const __m256i m0 = lanes_below_avx2(2 * rem), m1 = lanes_below_avx2(2 * rem - 8);        \
                    a0 = _mm256_maskload_ps(r0 + ix, m0), a1 = _mm256_maskload_ps(r0 + ix + 8, m1);          \
                    b0 = _mm256_maskload_ps(r1 + ix, m0), b1 = _mm256_maskload_ps(r1 + ix + 8, m1);          \
                }                                                                                            \
                if (PRE & POOL_BIASED) {                                                                     \
                    a0 = _mm256_add_ps(a0, bv), a1 = _mm256_add_ps(a1, bv);                                  \
                    b0 = _mm256_add_ps(b0, bv), b1 = _mm256_add_ps(b1, bv);                                  \
                }                                                                                            \
                /* even and odd columns, in order: shuffle within lanes, then fix the lane order */         \
                __m256 v0 = _mm256_castpd_ps(_mm256_permute4x64_pd(                                         \
                    _mm256_castps_pd(_mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0))); \
                __m256 v1 = _mm256_castpd_ps(_mm256_permute4x64_pd(                                         \
                    _mm256_castps_pd(_mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0))); \
                __m256 v2 = _mm256_castpd_ps(_mm256_permute4x64_pd(                                         \
                    _mm256_castps_pd(_mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0))); \
                __m256 v3 = _mm256_castpd_ps(_mm256_permute4x64_pd(                                         \
                    _mm256_castps_pd(_mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0))); \
                __m256 off;                                                                                  \
                __m256 best = window_max_avx2(v0, v1, v2, v3, one, offW, offW1, &off);                       \
                if (PRE & POOL_RELU) {                                                                       \
                    const __m256 keep = _mm256_cmp_ps(best, zero, _CMP_NLE_UQ);                              \
                    best = _mm256_blendv_ps(_mm256_max_ps(zero, v0), best, keep);                            \
                    off = _mm256_and_ps(off, keep);                                                          \
                }                                                                                            \
                const __m256i offi = _mm256_castps_si256(off);                                               \
                if (rem == 8)                                                                                \
                    _mm256_storeu_ps(yo + ox, best);                                                         \
                else                                                                                         \
                    _mm256_maskstore_ps(yo + ox, lanes_below_avx2(rem), best);                               \
                STORE_INDEX(ao, ox, rem, 2 * oy * W + ix, offi)                                              \
            }                                                                                                \
        }                                                                                                    \
    }
DEFINE_MAX_POOL_2X2S2_AVX2(plane_i64, int64_t, STORE_INDEX_AVX2_I64, POOL_AS_IS)
DEFINE_MAX_POOL_2X2S2_AVX2(plane_i32, int32_t, STORE_INDEX_AVX2_I32, POOL_AS_IS)
DEFINE_MAX_POOL_2X2S2_AVX2(plane_i32_biased, int32_t, STORE_INDEX_AVX2_I32, POOL_BIASED)
DEFINE_MAX_POOL_2X2S2_AVX2(plane_i32_biased_relu, int32_t, STORE_INDEX_AVX2_I32, POOL_BIASED_RELU)
DEFINE_MAX_POOL_2X2S2_AVX2(plane_i32_relu, int32_t, STORE_INDEX_AVX2_I32, POOL_RELU)

DEFINE_MAX_POOL_2X2S2_ENTRIES(FNN_TARGET_AVX2, avx2)

FNN_TARGET_AVX2 void fnn_max_pool_2x2s2_small_avx2_f32(const float *x, float *y, int64_t *am, int64_t r_begin,
                                                       int64_t r_end, int64_t oh, int64_t ow)
{
    small_pool_layout L;
    small_pool_layout_of(&L, 8, ow, r_begin, oh);
    const int64_t G = L.G, W = 2 * ow;
    const __m256i p0 = _mm256_loadu_si256((const __m256i *)L.p0), jc2 = _mm256_loadu_si256((const __m256i *)L.jc2);
    const __m256i c1 = _mm256_set1_epi32(1), cW = _mm256_set1_epi32((int)W), cW1 = _mm256_set1_epi32((int)W + 1);
    const __m256i p1 = _mm256_add_epi32(p0, c1), p2 = _mm256_add_epi32(p0, cW), p3 = _mm256_add_epi32(p0, cW1);
    const __m256i step = _mm256_set1_epi32((int)(G % oh)), ohv = _mm256_set1_epi32((int)oh),
                  ohm1 = _mm256_set1_epi32((int)oh - 1), two_w = _mm256_set1_epi32((int)(2 * W));
    __m256i rp = _mm256_loadu_si256((const __m256i *)L.rp);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += G) {
        const int64_t pairs = r_end - r0 < G ? r_end - r0 : G, n_out = pairs * ow;
        const float *xb = x + r0 * 2 * W;
        const __m256i in = lanes_below_avx2(n_out);
        const __m256 inf = _mm256_castsi256_ps(in), zero = _mm256_setzero_ps();
        const __m256 v0 = _mm256_mask_i32gather_ps(zero, xb, p0, inf, 4), v1 = _mm256_mask_i32gather_ps(zero, xb, p1, inf, 4);
        const __m256 v2 = _mm256_mask_i32gather_ps(zero, xb, p2, inf, 4), v3 = _mm256_mask_i32gather_ps(zero, xb, p3, inf, 4);
        __m256 off;
        const __m256 best = window_max_avx2(v0, v1, v2, v3, _mm256_castsi256_ps(c1), _mm256_castsi256_ps(cW),
                                            _mm256_castsi256_ps(cW1), &off);
        _mm256_maskstore_ps(y + r0 * ow, in, best);
        const __m256i idx = _mm256_add_epi32(_mm256_add_epi32(_mm256_mullo_epi32(rp, two_w), jc2),
                                             _mm256_castps_si256(off));
        _mm256_maskstore_epi64((long long *)(am + r0 * ow), lanes_below_avx2(2 * n_out),
                               _mm256_cvtepi32_epi64(_mm256_castsi256_si128(idx)));
        _mm256_maskstore_epi64((long long *)(am + r0 * ow + 4), lanes_below_avx2(2 * n_out - 8),
                               _mm256_cvtepi32_epi64(_mm256_extracti128_si256(idx, 1)));
        rp = _mm256_add_epi32(rp, step);
        rp = _mm256_sub_epi32(rp, _mm256_and_si256(_mm256_cmpgt_epi32(rp, ohm1), ohv));
    }
}

/* ---- backward of the same window: dx from (dy, argmax) in one pass ----
 *
 * Each output's argmax should lie in its own 2x2 block (offset 0, 1, W or W+1
 * from the block's corner). The blocks are disjoint, so dx is dy (as 0 + dy,
 * the scatter's rounding: -0.0 becomes +0.0) at the argmax and 0 elsewhere:
 * both rows of a block row are written once, with no memset and no scatter.
 * Columns [2*ow, W) of those rows are zeroed here; rows [2*oh, H) by the caller.
 * Returns 0, having written part of the plane, when some argmax lies outside its
 * block (a foreign argmax, or another window with the same output size): the
 * caller then redoes the plane with the general scatter. W <= INT32_MAX / 2. */

/* int32 lanes: 0,16,1,17,... (the low halves interleaved) and 8,24,9,25,... */
#define FNN_INTERLEAVE_LO_32 _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define FNN_INTERLEAVE_HI_32 _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)

/* k: each output's argmax less its block's corner, as int32 lanes; from int64
 * saturated, so a far-off index never aliases; from int32 (below 2^31, as the
 * corners) exact */
#define BLOCK_OFFSETS_I64(ao, ox, in, corner)                                                                \
    _mm512_inserti64x4(                                                                                      \
        _mm512_castsi256_si512(_mm512_cvtsepi64_epi32(_mm512_sub_epi64(                                      \
            _mm512_maskz_loadu_epi64((__mmask8)(in & 0xFF), ao + ox),                                        \
            _mm512_add_epi64(_mm512_set1_epi64(corner), lane2_64)))),                                        \
        _mm512_cvtsepi64_epi32(_mm512_sub_epi64(_mm512_maskz_loadu_epi64((__mmask8)(in >> 8), ao + ox + 8),  \
                                                _mm512_add_epi64(_mm512_set1_epi64((corner) + 16), lane2_64))), \
        1)
#define BLOCK_OFFSETS_I32(ao, ox, in, corner)                                                                \
    _mm512_sub_epi32(_mm512_maskz_loadu_epi32(in, ao + ox),                                                  \
                     _mm512_add_epi32(_mm512_set1_epi32((int32_t)(corner)), lane2_32))
#define DEFINE_MAX_UNPOOL_2X2S2_AVX512(NAME, IDX, BLOCK_OFFSETS)                                             \
    FNN_TARGET_AVX512 int NAME(const float *g, const float *relu_y, const IDX *am, float *dx, int64_t W,    \
                               int64_t oh, int64_t ow)                                                       \
    {                                                                                                        \
        const __m512i ilo = FNN_INTERLEAVE_LO_32, ihi = FNN_INTERLEAVE_HI_32;                                \
        const __m512i lane2_64 = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);                               \
        const __m512i lane2_32 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30); \
        const __m512i c1 = _mm512_set1_epi32(1), cW = _mm512_set1_epi32((int)W),                             \
                      cW1 = _mm512_set1_epi32((int)W + 1);                                                   \
        const __m512 zero = _mm512_setzero_ps();                                                             \
        (void)lane2_64;                                                                                      \
        (void)lane2_32;                                                                                      \
        for (int64_t oy = 0; oy < oh; oy++) {                                                                \
            const float *go = g + oy * ow;                                                                   \
            const IDX *ao = am + oy * ow;                                                                    \
            float *d0 = dx + 2 * oy * W, *d1 = d0 + W;                                                       \
            for (int64_t ox = 0; ox < ow; ox += 16) {                                                        \
                const int64_t rem = ow - ox < 16 ? ow - ox : 16;                                             \
                const __mmask16 in = (__mmask16)((1u << rem) - 1u);                                          \
                const __mmask16 out_lo = rem >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * rem)) - 1u); \
                const __mmask16 out_hi = rem > 8 ? (__mmask16)((1u << (2 * rem - 16)) - 1u) : (__mmask16)0; \
                const int64_t ix = 2 * ox;                                                                   \
                __m512 v = _mm512_maskz_loadu_ps(in, go + ox);                                               \
                if (relu_y) /* dy * relu'(y), relu'(y) = y > 0 ? 1 : 0 (as fnn_act_grad_from_y_mul) */    \
                    v = _mm512_mul_ps(v, _mm512_maskz_mov_ps(                                                \
                        _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(in, relu_y + oy * ow + ox), zero, _CMP_GT_OQ), \
                        _mm512_set1_ps(1.0f)));                                                              \
                v = _mm512_add_ps(zero, v);                                                                  \
                const __m512i k = BLOCK_OFFSETS(ao, ox, in, 2 * oy * W + ix);                                \
                const __mmask16 m0 = _mm512_cmpeq_epi32_mask(k, _mm512_setzero_si512()),                     \
                                m1 = _mm512_cmpeq_epi32_mask(k, c1), m2 = _mm512_cmpeq_epi32_mask(k, cW),    \
                                m3 = _mm512_cmpeq_epi32_mask(k, cW1);                                        \
                if ((__mmask16)((m0 | m1 | m2 | m3) & in) != in) return 0;                                   \
                const __m512 e0 = _mm512_maskz_mov_ps(m0, v), o0 = _mm512_maskz_mov_ps(m1, v);               \
                const __m512 e1 = _mm512_maskz_mov_ps(m2, v), o1 = _mm512_maskz_mov_ps(m3, v);               \
                _mm512_mask_storeu_ps(d0 + ix, out_lo, _mm512_permutex2var_ps(e0, ilo, o0));                 \
                _mm512_mask_storeu_ps(d0 + ix + 16, out_hi, _mm512_permutex2var_ps(e0, ihi, o0));            \
                _mm512_mask_storeu_ps(d1 + ix, out_lo, _mm512_permutex2var_ps(e1, ilo, o1));                 \
                _mm512_mask_storeu_ps(d1 + ix + 16, out_hi, _mm512_permutex2var_ps(e1, ihi, o1));            \
            }                                                                                                \
            for (int64_t c = 2 * ow; c < W; c++) d0[c] = 0.0f, d1[c] = 0.0f;                               \
        }                                                                                                    \
        return 1;                                                                                            \
    }
DEFINE_MAX_UNPOOL_2X2S2_AVX512(fnn_max_unpool_2x2s2_plane_avx512_f32, int64_t, BLOCK_OFFSETS_I64)
/* the same from an int32 argmax (the fused convolution + pooling's) */
DEFINE_MAX_UNPOOL_2X2S2_AVX512(fnn_max_unpool_2x2s2_plane_i32_avx512_f32, int32_t, BLOCK_OFFSETS_I32)

FNN_TARGET_AVX512 int fnn_max_unpool_2x2s2_plane_avx512_f64(const double *g, const int64_t *am, double *dx,
                                                            int64_t W, int64_t oh, int64_t ow)
{
    const __m512i ilo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), ihi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    const __m512i lane2 = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i c1 = _mm512_set1_epi64(1), cW = _mm512_set1_epi64(W), cW1 = _mm512_set1_epi64(W + 1);
    const __m512d zero = _mm512_setzero_pd();
    for (int64_t oy = 0; oy < oh; oy++) {
        const double *go = g + oy * ow;
        const int64_t *ao = am + oy * ow;
        double *d0 = dx + 2 * oy * W, *d1 = d0 + W;
        for (int64_t ox = 0; ox < ow; ox += 8) {
            const int64_t rem = ow - ox < 8 ? ow - ox : 8;
            const __mmask8 in = (__mmask8)((1u << rem) - 1u);
            const __mmask8 out_lo = rem >= 4 ? (__mmask8)0xFF : (__mmask8)((1u << (2 * rem)) - 1u);
            const __mmask8 out_hi = rem > 4 ? (__mmask8)((1u << (2 * rem - 8)) - 1u) : (__mmask8)0;
            const int64_t ix = 2 * ox;
            const __m512d v = _mm512_add_pd(zero, _mm512_maskz_loadu_pd(in, go + ox));
            const __m512i base = _mm512_add_epi64(_mm512_set1_epi64(2 * oy * W + ix), lane2);
            const __m512i k = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(in, ao + ox), base);
            const __mmask8 m0 = _mm512_cmpeq_epi64_mask(k, _mm512_setzero_si512()),
                           m1 = _mm512_cmpeq_epi64_mask(k, c1), m2 = _mm512_cmpeq_epi64_mask(k, cW),
                           m3 = _mm512_cmpeq_epi64_mask(k, cW1);
            if ((__mmask8)((m0 | m1 | m2 | m3) & in) != in) return 0;
            const __m512d e0 = _mm512_maskz_mov_pd(m0, v), o0 = _mm512_maskz_mov_pd(m1, v);
            const __m512d e1 = _mm512_maskz_mov_pd(m2, v), o1 = _mm512_maskz_mov_pd(m3, v);
            _mm512_mask_storeu_pd(d0 + ix, out_lo, _mm512_permutex2var_pd(e0, ilo, o0));
            _mm512_mask_storeu_pd(d0 + ix + 8, out_hi, _mm512_permutex2var_pd(e0, ihi, o0));
            _mm512_mask_storeu_pd(d1 + ix, out_lo, _mm512_permutex2var_pd(e1, ilo, o1));
            _mm512_mask_storeu_pd(d1 + ix + 8, out_hi, _mm512_permutex2var_pd(e1, ihi, o1));
        }
        for (int64_t c = 2 * ow; c < W; c++) d0[c] = 0.0, d1[c] = 0.0;
    }
    return 1;
}

/* AVX2, float32: 8 outputs at a time; the offset checks in int64. */
/* m0..m3: the 32-bit lanes whose argmax is the block's corner, the one right
 * of it, below it, below right: from int64 compared in 64 bits, then the lane
 * masks narrowed (lanes 0-3 from the first four, 4-7 from the next), or from
 * int32 directly */
#define BLOCK_MASKS_AVX2_I64(ao, ox, corner)                                                                 \
    const __m256i a0 = _mm256_loadu_si256((const __m256i *)(ao + ox));                                       \
    const __m256i a1 = _mm256_loadu_si256((const __m256i *)(ao + ox + 4));                                   \
    const __m256i base = _mm256_add_epi64(_mm256_set1_epi64x(corner), lane2_64);                             \
    const __m256i k0 = _mm256_sub_epi64(a0, base), k1 = _mm256_sub_epi64(a1, _mm256_add_epi64(base, eight)); \
    const __m256i m0 = FNN_EQ32(_mm256_setzero_si256()), m1 = FNN_EQ32(c1_64), m2 = FNN_EQ32(cW_64),         \
                  m3 = FNN_EQ32(cW1_64);
#define FNN_EQ32(c)                                                                                          \
    _mm256_blend_epi32(_mm256_permutevar8x32_epi32(_mm256_cmpeq_epi64(k0, c), low_dwords),                   \
                       _mm256_permutevar8x32_epi32(_mm256_cmpeq_epi64(k1, c), low_dwords), 0xF0)
#define BLOCK_MASKS_AVX2_I32(ao, ox, corner)                                                                 \
    const __m256i k = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(ao + ox)),                       \
                                       _mm256_add_epi32(_mm256_set1_epi32((int32_t)(corner)), lane2_32));    \
    const __m256i m0 = _mm256_cmpeq_epi32(k, _mm256_setzero_si256()), m1 = _mm256_cmpeq_epi32(k, c1_32),     \
                  m2 = _mm256_cmpeq_epi32(k, cW_32), m3 = _mm256_cmpeq_epi32(k, cW1_32);
#define DEFINE_MAX_UNPOOL_2X2S2_AVX2(NAME, IDX, BLOCK_MASKS)                                                 \
    FNN_TARGET_AVX2 int NAME(const float *g, const float *relu_y, const IDX *am, float *dx, int64_t W,      \
                             int64_t oh, int64_t ow)                                                         \
    {                                                                                                        \
        const __m256i lane2_64 = _mm256_setr_epi64x(0, 2, 4, 6), eight = _mm256_set1_epi64x(8);              \
        const __m256i c1_64 = _mm256_set1_epi64x(1), cW_64 = _mm256_set1_epi64x(W),                          \
                      cW1_64 = _mm256_set1_epi64x(W + 1);                                                    \
        const __m256i lane2_32 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);                               \
        const __m256i c1_32 = _mm256_set1_epi32(1), cW_32 = _mm256_set1_epi32((int)W),                       \
                      cW1_32 = _mm256_set1_epi32((int)W + 1);                                                \
        const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);                                \
        const __m256 zero = _mm256_setzero_ps();                                                             \
        (void)lane2_64, (void)eight, (void)c1_64, (void)cW_64, (void)cW1_64, (void)low_dwords;               \
        (void)lane2_32, (void)c1_32, (void)cW_32, (void)cW1_32;                                              \
        for (int64_t oy = 0; oy < oh; oy++) {                                                                \
            const float *go = g + oy * ow;                                                                   \
            const IDX *ao = am + oy * ow;                                                                    \
            float *d0 = dx + 2 * oy * W, *d1 = d0 + W;                                                       \
            int64_t ox = 0;                                                                                  \
            for (; ox + 8 <= ow; ox += 8) {                                                                  \
                const int64_t ix = 2 * ox;                                                                   \
                __m256 v = _mm256_loadu_ps(go + ox);                                                         \
                if (relu_y) /* dy * relu'(y), as fnn_act_grad_from_y_mul */                                 \
                    v = _mm256_mul_ps(v, _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(relu_y + oy * ow + ox), zero, \
                                                                     _CMP_GT_OQ),                            \
                                                       _mm256_set1_ps(1.0f)));                               \
                v = _mm256_add_ps(zero, v);                                                                  \
                BLOCK_MASKS(ao, ox, 2 * oy * W + ix)                                                         \
                const int ok = _mm256_movemask_ps(                                                           \
                    _mm256_castsi256_ps(_mm256_or_si256(_mm256_or_si256(m0, m1), _mm256_or_si256(m2, m3)))); \
                if (ok != 0xFF) return 0;                                                                    \
                const __m256 e0 = _mm256_and_ps(_mm256_castsi256_ps(m0), v),                                 \
                             o0 = _mm256_and_ps(_mm256_castsi256_ps(m1), v);                                 \
                const __m256 e1 = _mm256_and_ps(_mm256_castsi256_ps(m2), v),                                 \
                             o1 = _mm256_and_ps(_mm256_castsi256_ps(m3), v);                                 \
                const __m256 l0 = _mm256_unpacklo_ps(e0, o0), h0 = _mm256_unpackhi_ps(e0, o0);               \
                const __m256 l1 = _mm256_unpacklo_ps(e1, o1), h1 = _mm256_unpackhi_ps(e1, o1);               \
                _mm256_storeu_ps(d0 + ix, _mm256_permute2f128_ps(l0, h0, 0x20));                             \
                _mm256_storeu_ps(d0 + ix + 8, _mm256_permute2f128_ps(l0, h0, 0x31));                         \
                _mm256_storeu_ps(d1 + ix, _mm256_permute2f128_ps(l1, h1, 0x20));                             \
                _mm256_storeu_ps(d1 + ix + 8, _mm256_permute2f128_ps(l1, h1, 0x31));                         \
            }                                                                                                \
            /* the tail: masked stores are slow on some CPUs; zero, then one store per block */             \
            for (int64_t c = 2 * ox; c < W; c++) d0[c] = 0.0f, d1[c] = 0.0f;                                 \
            int64_t bad = 0;                                                                                 \
            for (; ox < ow; ox++) {                                                                          \
                const int64_t k = (int64_t)ao[ox] - (2 * oy * W + 2 * ox);                                   \
                const int64_t ok = ((uint64_t)k <= 1) | ((uint64_t)(k - W) <= 1); /* k in {0, 1, W, W+1} */ \
                bad |= ok ^ 1;                                                                               \
                const float gv = relu_y ? go[ox] * (relu_y[oy * ow + ox] > 0 ? 1.0f : 0.0f) : go[ox];        \
                d0[2 * ox + (k & -ok)] = 0.0f + gv;                                                          \
            }                                                                                                \
            if (bad) return 0;                                                                               \
        }                                                                                                    \
        return 1;                                                                                            \
    }
DEFINE_MAX_UNPOOL_2X2S2_AVX2(fnn_max_unpool_2x2s2_plane_avx2_f32, int64_t, BLOCK_MASKS_AVX2_I64)
DEFINE_MAX_UNPOOL_2X2S2_AVX2(fnn_max_unpool_2x2s2_plane_i32_avx2_f32, int32_t, BLOCK_MASKS_AVX2_I32)
#undef FNN_EQ32

#else

void fnn_max_pool_2x2s2_plane_avx2_f32(const float *x, float *y, int64_t *am, int64_t W, int64_t oh,
                                       int64_t ow)
{ (void)x; (void)y; (void)am; (void)W; (void)oh; (void)ow; }

void fnn_max_pool_2x2s2_plane_avx512_f32(const float *x, float *y, int64_t *am, int64_t W, int64_t oh,
                                         int64_t ow)
{ (void)x; (void)y; (void)am; (void)W; (void)oh; (void)ow; }

void fnn_max_pool_2x2s2_plane_i32_avx512_f32(const float *x, float *y, int32_t *am, int64_t W, int64_t oh,
                                             int64_t ow)
{ (void)x; (void)y; (void)am; (void)W; (void)oh; (void)ow; }

void fnn_max_pool_2x2s2_bias_act_i32_avx512_f32(const float *x, int64_t ldx, const float *bias, int relu, float *y,
                                                int32_t *am, int64_t W, int64_t oh, int64_t ow)
{ (void)x; (void)ldx; (void)bias; (void)relu; (void)y; (void)am; (void)W; (void)oh; (void)ow; }

void fnn_max_pool_2x2s2_bias_act_i32_avx2_f32(const float *x, int64_t ldx, const float *bias, int relu, float *y,
                                              int32_t *am, int64_t W, int64_t oh, int64_t ow)
{ (void)x; (void)ldx; (void)bias; (void)relu; (void)y; (void)am; (void)W; (void)oh; (void)ow; }

int fnn_max_unpool_2x2s2_plane_avx512_f32(const float *g, const float *relu_y, const int64_t *am, float *dx, int64_t W,
                                          int64_t oh, int64_t ow)
{ (void)g; (void)relu_y; (void)am; (void)dx; (void)W; (void)oh; (void)ow; return 0; }

int fnn_max_unpool_2x2s2_plane_i32_avx512_f32(const float *g, const float *relu_y, const int32_t *am, float *dx, int64_t W,
                                              int64_t oh, int64_t ow)
{ (void)g; (void)relu_y; (void)am; (void)dx; (void)W; (void)oh; (void)ow; return 0; }

void fnn_max_pool_2x2s2_small_avx512_f32(const float *x, float *y, int64_t *am, int64_t r_begin, int64_t r_end,
                                         int64_t oh, int64_t ow)
{ (void)x; (void)y; (void)am; (void)r_begin; (void)r_end; (void)oh; (void)ow; }

int fnn_max_unpool_2x2s2_small_avx512_f32(const float *g, const int64_t *am, float *dx, int64_t r_begin,
                                          int64_t r_end, int64_t oh, int64_t ow)
{ (void)g; (void)am; (void)dx; (void)r_begin; (void)r_end; (void)oh; (void)ow; return 0; }

void fnn_max_pool_2x2s2_small_avx2_f32(const float *x, float *y, int64_t *am, int64_t r_begin, int64_t r_end,
                                       int64_t oh, int64_t ow)
{ (void)x; (void)y; (void)am; (void)r_begin; (void)r_end; (void)oh; (void)ow; }

int fnn_max_unpool_2x2s2_plane_avx512_f64(const double *g, const int64_t *am, double *dx, int64_t W,
                                          int64_t oh, int64_t ow)
{ (void)g; (void)am; (void)dx; (void)W; (void)oh; (void)ow; return 0; }

int fnn_max_unpool_2x2s2_plane_avx2_f32(const float *g, const float *relu_y, const int64_t *am, float *dx, int64_t W,
                                        int64_t oh, int64_t ow)
{ (void)g; (void)relu_y; (void)am; (void)dx; (void)W; (void)oh; (void)ow; return 0; }

int fnn_max_unpool_2x2s2_plane_i32_avx2_f32(const float *g, const float *relu_y, const int32_t *am, float *dx, int64_t W,
                                            int64_t oh, int64_t ow)
{ (void)g; (void)relu_y; (void)am; (void)dx; (void)W; (void)oh; (void)ow; return 0; }

void fnn_max_pool_2x2s2_plane_i32_avx2_f32(const float *x, float *y, int32_t *am, int64_t W, int64_t oh,
                                           int64_t ow)
{ (void)x; (void)y; (void)am; (void)W; (void)oh; (void)ow; }

#endif
