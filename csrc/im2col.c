/* im2col / col2im in the layout of the book's common/util.py:
 * col[(n*oh + oy)*ow + ox, (c*fh + ky)*fw + kx] = xpad[n, c, oy*sh + ky, ox*sw + kx].
 *
 * im2col writes each col row once, so rows are shared among threads. col2im
 * sums overlapping windows: each (n, c) plane is owned by one thread and summed
 * in the book's order (ky, kx outer; oy, ox inner), so the result is the same
 * for every thread count. */
#include <string.h>

#include "kernels.h"

#define DEFINE_IM2COL(T, SFX)                                                                       \
    void fnn_im2col_##SFX(fnn_ctx ctx, const T *x, T *col, int64_t N, int64_t C, int64_t H,         \
                          int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t padh,  \
                          int64_t padw)                                                             \
    {                                                                                               \
        const int64_t oh = (H + 2 * padh - fh) / sh + 1, ow = (W + 2 * padw - fw) / sw + 1;         \
        const int64_t rows = N * oh, K = C * fh * fw;                                               \
        int64_t r;                                                                                  \
        (void)ctx;                                                                                  \
        const int64_t par_work = rows * ow * K;                                                     \
        FNN_PARALLEL_FOR(par_work,                                                                  \
        for (r = 0; r < rows; r++) {                                                                \
            const int64_t n = r / oh, oy = r % oh;                                                  \
            T *out = col + r * ow * K;                                                              \
            for (int64_t ox = 0; ox < ow; ox++, out += K) {                                         \
                const int64_t iy0 = oy * sh - padh, ix0 = ox * sw - padw;                           \
                const int64_t kx_lo = ix0 < 0 ? -ix0 : 0;                                           \
                const int64_t kx_hi = ix0 + fw > W ? W - ix0 : fw; /* kx in [kx_lo, kx_hi) */       \
                for (int64_t c = 0; c < C; c++) {                                                   \
                    const T *plane = x + (n * C + c) * H * W;                                       \
                    T *o = out + c * fh * fw;                                                       \
                    for (int64_t ky = 0; ky < fh; ky++, o += fw) {                                  \
                        const int64_t iy = iy0 + ky;                                                \
                        if (iy < 0 || iy >= H || kx_lo >= kx_hi) {                                  \
                            for (int64_t kx = 0; kx < fw; kx++) o[kx] = (T)0;                       \
                            continue;                                                               \
                        }                                                                           \
                        const T *src = plane + iy * W + ix0;                                        \
                        int64_t kx = 0;                                                             \
                        for (; kx < kx_lo; kx++) o[kx] = (T)0;                                      \
                        for (; kx < kx_hi; kx++) o[kx] = src[kx];                                   \
                        for (; kx < fw; kx++) o[kx] = (T)0;                                         \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
        });                                                                                         \
    }                                                                                               \
                                                                                                    \
    void fnn_col2im_##SFX(fnn_ctx ctx, const T *col, T *x, int64_t N, int64_t C, int64_t H,         \
                          int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t padh,  \
                          int64_t padw)                                                             \
    {                                                                                               \
        const int64_t oh = (H + 2 * padh - fh) / sh + 1, ow = (W + 2 * padw - fw) / sw + 1;         \
        const int64_t planes = N * C, K = C * fh * fw;                                              \
        int64_t p;                                                                                  \
        (void)ctx;                                                                                  \
        const int64_t par_work = planes * oh * ow * fh * fw;                                        \
        FNN_PARALLEL_FOR(par_work,                                                                  \
        for (p = 0; p < planes; p++) {                                                              \
            const int64_t n = p / C, c = p % C;                                                     \
            T *plane = x + p * H * W;                                                               \
            memset(plane, 0, (size_t)(H * W) * sizeof(T));                                          \
            for (int64_t ky = 0; ky < fh; ky++) {                                                   \
                for (int64_t kx = 0; kx < fw; kx++) {                                               \
                    const T *src = col + n * oh * ow * K + (c * fh + ky) * fw + kx;                 \
                    for (int64_t oy = 0; oy < oh; oy++) {                                           \
                        const int64_t iy = oy * sh - padh + ky;                                     \
                        if (iy < 0 || iy >= H) continue;                                            \
                        const T *s = src + oy * ow * K;                                             \
                        T *d = plane + iy * W;                                                      \
                        for (int64_t ox = 0; ox < ow; ox++) {                                       \
                            const int64_t ix = ox * sw - padw + kx;                                 \
                            if (ix >= 0 && ix < W) d[ix] += s[ox * K];                              \
                        }                                                                           \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
        });                                                                                         \
    }

DEFINE_IM2COL(float, f32)
DEFINE_IM2COL(double, f64)
