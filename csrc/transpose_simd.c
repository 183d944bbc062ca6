/* Transposes of float32 blocks through registers (16 x 16 with AVX-512, 8 x 8
 * with AVX2): the convolution's weight gradient needs dy transposed into
 * NR-wide panels, and element-by-element copies of a transpose cost more than
 * the multiply-adds of a small-channel convolution. Also the col2im of a
 * stride-1 data gradient, gathered through registers. */
#include "gemm.h"

#if FNN_X86_SIMD
#include <immintrin.h>

/* dst[c*ldd + r] = src[r*lds + c] for r < 16, c < cols (cols <= 16); source rows
 * r >= rows read as 0. dst columns are written 16 wide. */
FNN_TARGET_AVX512 static void block16_avx512(const float *src, int64_t lds, int rows, int cols, float *dst,
                                             int64_t ldd)
{
    const __mmask16 cm = (__mmask16)(cols >= 16 ? 0xFFFF : (1u << cols) - 1u);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, src + i * lds) : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* r[4g + e]: rows 4g..4g+3 of element e + 4L in 128-bit lane L */
    for (int g = 0; g < 16; g += 4) {
        __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 1]);
        __m512d c = _mm512_castps_pd(t[g + 2]), d = _mm512_castps_pd(t[g + 3]);
        r[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* t[e] (e < 8): rows 0-7 of elements e (even lanes) and e + 8 (odd lanes);
     * t[8 + e] the same for rows 8-15 */
    for (int h = 0; h < 16; h += 8)
        for (int e = 0; e < 4; e++) {
            t[h + e] = _mm512_shuffle_f32x4(r[h + e], r[h + 4 + e], 0x88);
            t[h + 4 + e] = _mm512_shuffle_f32x4(r[h + e], r[h + 4 + e], 0xdd);
        }
    for (int e = 0; e < 8; e++) {
        __m512 even = _mm512_shuffle_f32x4(t[e], t[8 + e], 0x88);
        __m512 odd = _mm512_shuffle_f32x4(t[e], t[8 + e], 0xdd);
        if (e < cols)
            _mm512_storeu_ps(dst + e * ldd, even);
        if (e + 8 < cols)
            _mm512_storeu_ps(dst + (e + 8) * ldd, odd);
    }
}

FNN_TARGET_AVX512 void fnn_transpose_avx512_f32(const float *src, int64_t lds, int64_t rows, int64_t cols,
                                                int64_t rows_out, float *dst, int64_t ldd)
{
    for (int64_t r0 = 0; r0 < rows_out; r0 += 16) {
        const int64_t live = rows - r0 < 0 ? 0 : (rows - r0 > 16 ? 16 : rows - r0);
        for (int64_t c0 = 0; c0 < cols; c0 += 16)
            block16_avx512(src + r0 * lds + c0, lds, (int)live, (int)(cols - c0 < 16 ? cols - c0 : 16),
                           dst + c0 * ldd + r0, ldd);
    }
}

/* The same in 8 x 8 blocks. */
FNN_TARGET_AVX2 static void block8_avx2(const float *src, int64_t lds, int rows, int cols, float *dst, int64_t ldd)
{
    __m256 r[8], t[8];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i cm = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);
    for (int i = 0; i < 8; i++)
        r[i] = i < rows ? (cols >= 8 ? _mm256_loadu_ps(src + i * lds) : _mm256_maskload_ps(src + i * lds, cm))
                        : _mm256_setzero_ps();
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int g = 0; g < 8; g += 4) {
        r[g] = _mm256_shuffle_ps(t[g], t[g + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int e = 0; e < 4; e++) {
        if (e < cols)
            _mm256_storeu_ps(dst + e * ldd, _mm256_permute2f128_ps(r[e], r[4 + e], 0x20));
        if (e + 4 < cols)
            _mm256_storeu_ps(dst + (e + 4) * ldd, _mm256_permute2f128_ps(r[e], r[4 + e], 0x31));
    }
}

FNN_TARGET_AVX2 void fnn_transpose_avx2_f32(const float *src, int64_t lds, int64_t rows, int64_t cols,
                                            int64_t rows_out, float *dst, int64_t ldd)
{
    for (int64_t r0 = 0; r0 < rows_out; r0 += 8) {
        const int64_t live = rows - r0 < 0 ? 0 : (rows - r0 > 8 ? 8 : rows - r0);
        for (int64_t c0 = 0; c0 < cols; c0 += 8)
            block8_avx2(src + r0 * lds + c0, lds, (int)live, (int)(cols - c0 < 8 ? cols - c0 : 8),
                        dst + c0 * ldd + r0, ldd);
    }
}

/* The dcol row of tap row i that reaches dx row (ci, iy) from column x0 (tap
 * column j: this + j * p - j, as dx column x holds output column x + pw - j),
 * or NULL where tap row i does not reach that row. */
static inline const float *col2im_tap_row(const float *dcol, int64_t p, int64_t fh, int64_t fw, int64_t ph,
                                          int64_t pw, int64_t oh, int64_t ow, int64_t ci, int64_t iy, int64_t i,
                                          int64_t x0)
{
    const int64_t oy = iy + ph - i;
    return oy < 0 || oy >= oh ? NULL : dcol + (ci * fh + i) * fw * p + oy * ow + x0 + pw;
}

/* dx (c, h, w) of a stride-1 convolution from dcol (c*fh*fw rows of the oh*ow
 * output positions): each dx row, 32 columns at a time, is the sum of the taps
 * that reach it, added in registers in tap order, so it equals the scatter of
 * the taps into a zeroed dx (conv_template.h) bit for bit; the scatter did a
 * loop per tap and output row (25 x 24 of 24 values an image for a 5x5 filter
 * on 28 x 28: 7% of conv C). fw <= FNN_COL2IM_MAX_FW. */
FNN_TARGET_AVX512 void fnn_col2im_s1_avx512_f32(const float *dcol, int64_t c, int64_t h, int64_t w, int64_t fh,
                                                int64_t fw, int64_t ph, int64_t pw, int64_t oh, int64_t ow,
                                                float *dx)
{
    const int64_t p = oh * ow;
    for (int64_t x0 = 0; x0 < w; x0 += 32) {
        /* tap column j reaches dx columns [j - pw, ow + j - pw): which of this chunk's lanes */
        __mmask16 valid[FNN_COL2IM_MAX_FW][2];
        for (int64_t j = 0; j < fw; j++)
            for (int half = 0; half < 2; half++) {
                int64_t lo = j - pw - (x0 + 16 * half), hi = ow + j - pw - (x0 + 16 * half);
                const int64_t end = w - (x0 + 16 * half);
                hi = hi < end ? hi : end;
                lo = lo < 0 ? 0 : lo;
                hi = hi > 16 ? 16 : hi;
                valid[j][half] = hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
            }
        const __mmask16 keep0 = (__mmask16)(w - x0 >= 16 ? 0xFFFF : (1u << (w - x0)) - 1u);
        const __mmask16 keep1 = (__mmask16)(w - x0 >= 32 ? 0xFFFF : w - x0 <= 16 ? 0 : (1u << (w - x0 - 16)) - 1u);
        for (int64_t ci = 0; ci < c; ci++)
            for (int64_t iy = 0; iy < h; iy++) {
                __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
                for (int64_t i = 0; i < fh; i++) {
                    const float *tap = col2im_tap_row(dcol, p, fh, fw, ph, pw, oh, ow, ci, iy, i, x0);
                    for (int64_t j = 0; tap && j < fw; j++) {
                        const float *src = tap + j * p - j;
                        acc0 = _mm512_mask_add_ps(acc0, valid[j][0], acc0,
                                                  _mm512_maskz_loadu_ps(valid[j][0], src));
                        acc1 = _mm512_mask_add_ps(acc1, valid[j][1], acc1,
                                                  _mm512_maskz_loadu_ps(valid[j][1], src + 16));
                    }
                }
                float *row = dx + (ci * h + iy) * w + x0;
                _mm512_mask_storeu_ps(row, keep0, acc0);
                _mm512_mask_storeu_ps(row + 16, keep1, acc1);
            }
    }
}

/* lanes [lo, hi) of an 8-lane vector as a vmaskmovps mask (all bits set where valid) */
FNN_TARGET_AVX2 static inline __m256i lanes_mask_avx2(int64_t lo, int64_t hi)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i vlo = _mm256_set1_epi32((int)(lo < 0 ? 0 : lo > 8 ? 8 : lo));
    const __m256i vhi = _mm256_set1_epi32((int)(hi < 0 ? 0 : hi > 8 ? 8 : hi));
    /* lo <= idx < hi */
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(vlo, idx), _mm256_cmpgt_epi32(vhi, idx));
}

/* fnn_col2im_s1_avx512_f32 with 8-lane vectors, four a pass (32 columns): a
 * masked load gives 0 in the lanes a tap does not reach, and adding +0 leaves
 * a sum that started at +0 unchanged (it is never -0), so the same bits as the
 * masked adds of the AVX-512 version and as the scatter. */
FNN_TARGET_AVX2 void fnn_col2im_s1_avx2_f32(const float *dcol, int64_t c, int64_t h, int64_t w, int64_t fh,
                                            int64_t fw, int64_t ph, int64_t pw, int64_t oh, int64_t ow, float *dx)
{
    const int64_t p = oh * ow;
    for (int64_t x0 = 0; x0 < w; x0 += 32) {
        __m256i valid[FNN_COL2IM_MAX_FW][4], keep[4];
        for (int q = 0; q < 4; q++) {
            const int64_t base = x0 + 8 * q, end = w - base;
            for (int64_t j = 0; j < fw; j++) {
                /* tap column j reaches dx columns [j - pw, ow + j - pw) */
                const int64_t hi = ow + j - pw - base;
                valid[j][q] = lanes_mask_avx2(j - pw - base, hi < end ? hi : end);
            }
            keep[q] = lanes_mask_avx2(0, end);
        }
        for (int64_t ci = 0; ci < c; ci++)
            for (int64_t iy = 0; iy < h; iy++) {
                __m256 acc[4];
                for (int q = 0; q < 4; q++)
                    acc[q] = _mm256_setzero_ps();
                for (int64_t i = 0; i < fh; i++) {
                    const float *tap = col2im_tap_row(dcol, p, fh, fw, ph, pw, oh, ow, ci, iy, i, x0);
                    for (int64_t j = 0; tap && j < fw; j++) {
                        const float *src = tap + j * p - j;
                        for (int q = 0; q < 4; q++)
                            acc[q] = _mm256_add_ps(acc[q], _mm256_maskload_ps(src + 8 * q, valid[j][q]));
                    }
                }
                float *row = dx + (ci * h + iy) * w + x0;
                for (int q = 0; q < 4; q++)
                    _mm256_maskstore_ps(row + 8 * q, keep[q], acc[q]);
            }
    }
}

/* rows x row_dwords 32-bit words from src (row stride lds_dwords) to dst (ldd_dwords):
 * whole vectors, then one masked (a short row, as the compact layout's, is a
 * vector and a part: its bases' 24-element rows took 5% of conv C as a loop) */
FNN_TARGET_AVX512 void fnn_copy_rows_avx512(void *dst, int64_t ldd_dwords, const void *src, int64_t lds_dwords,
                                            int64_t rows, int64_t row_dwords)
{
    const int64_t full = row_dwords / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (row_dwords - full)) - 1u);
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *s = (const int32_t *)src + r * lds_dwords;
        int32_t *d = (int32_t *)dst + r * ldd_dwords;
        for (int64_t t = 0; t < full; t += 16)
            _mm512_storeu_si512((void *)(d + t), _mm512_loadu_si512((const void *)(s + t)));
        if (tail)
            _mm512_mask_storeu_epi32(d + full, tail, _mm512_maskz_loadu_epi32(tail, s + full));
    }
}

FNN_TARGET_AVX2 void fnn_copy_rows_avx2(void *dst, int64_t ldd_dwords, const void *src, int64_t lds_dwords,
                                        int64_t rows, int64_t row_dwords)
{
    const int64_t full = row_dwords / 8 * 8;
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(row_dwords - full)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *s = (const int32_t *)src + r * lds_dwords;
        int32_t *d = (int32_t *)dst + r * ldd_dwords;
        for (int64_t t = 0; t < full; t += 8)
            _mm256_storeu_si256((__m256i *)(d + t), _mm256_loadu_si256((const __m256i *)(s + t)));
        if (full < row_dwords)
            _mm256_maskstore_epi32(d + full, tail, _mm256_maskload_epi32(s + full, tail));
    }
}
#endif
