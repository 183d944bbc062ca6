/* Max and average pooling over (N*C) planes, forward and backward.
 *
 * Planes are independent, so OpenMP shares whole planes among threads and every
 * sum runs in a fixed order inside one plane: results do not depend on the
 * thread count. Windows are clipped to the real plane, which is how padding
 * "never wins" a max (ops guarantees every window holds a real element) and
 * how padding counts as zero in an average (divisor ph*pw regardless).
 *
 * Max: the first maximum in row-major window order wins ties; the first NaN wins
 * over everything (np.argmax semantics). The 2x2 stride-2 unpadded window, the
 * common case, has its own loops (AVX-512 and AVX2 in pool_simd.c for float32). */
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#ifdef FASTNN_HAVE_OPENMP
#include <omp.h>
#endif


/* does v replace the current best b? larger, or the first NaN (logical, not
 * bitwise: the 2x2 row loop below vectorises only in this form, as its bitwise
 * one mixes int and float lanes) */
#define MAX_WINS(v, b) ((v) > (b) || ((v) != (v) && (b) == (b)))

static int max_pool_plane_2x2s2_simd_f32(int isa, const float *x, float *y, int64_t *am, int64_t W,
                                         int64_t oh, int64_t ow)
{
    if (W > INT32_MAX / 2) return 0; /* the vector code keeps window offsets in int32 */
    if (isa >= FNN_ISA_AVX512)
        fnn_max_pool_2x2s2_plane_avx512_f32(x, y, am, W, oh, ow);
    else if (isa >= FNN_ISA_AVX2)
        fnn_max_pool_2x2s2_plane_avx2_f32(x, y, am, W, oh, ow);
    else
        return 0;
    return 1;
}

static int max_pool_plane_2x2s2_simd_f64(int isa, const double *x, double *y, int64_t *am, int64_t W,
                                         int64_t oh, int64_t ow)
{
    (void)isa; (void)x; (void)y; (void)am; (void)W; (void)oh; (void)ow;
    return 0;
}

/* The backward of 2x2 stride 2 in one pass (pool_simd.c): 1 when it wrote rows
 * [0, 2*oh) of the plane, 0 when an argmax lay outside its block, -1 where there is
 * no vector version worth running. The portable loop is the scatter: a scalar
 * one-pass loop measured slower than memset + scatter (its stores stall), and so
 * does the AVX2 one when a row has a long scalar tail (ow % 8 of ow). */
static int max_unpool_plane_2x2s2_simd_f32(int isa, const float *g, const int64_t *a, float *d, int64_t W,
                                           int64_t oh, int64_t ow)
{
    if (W > INT32_MAX / 2) return -1; /* the AVX-512 code compares block offsets in int32 */
    if (isa >= FNN_ISA_AVX512) return fnn_max_unpool_2x2s2_plane_avx512_f32(g, a, d, W, oh, ow);
    if (isa >= FNN_ISA_AVX2 && (ow % 8 == 0 || ow >= 24)) return fnn_max_unpool_2x2s2_plane_avx2_f32(g, a, d, W, oh, ow);
    return -1;
}

static int max_unpool_plane_2x2s2_simd_f64(int isa, const double *g, const int64_t *a, double *d, int64_t W,
                                           int64_t oh, int64_t ow)
{
    if (isa >= FNN_ISA_AVX512) return fnn_max_unpool_2x2s2_plane_avx512_f64(g, a, d, W, oh, ow);
    return -1;
}

/* Many small planes at once (pool_simd.c): 2x2 stride 2 unpadded over (2 oh,
 * 2 ow) planes with ow <= 8, in float32 on AVX-512, where the per-plane kernels
 * spend a call and a mostly masked vector step on each short row, and the
 * per-plane backward lost even to the scatter. 1 thread, us, forward / backward
 * through ops, per plane -> at once: (32, 64, 4, 4) 54-58 / 51-53 -> 13-17 /
 * 17-22; (32, 32, 8, 8) 51-58 / 48-52 -> 19-24 / 22-30; (32, 32, 14, 14) 82-85 /
 * 78-79 -> 49-58 / 50-62; (32, 32, 16, 16) 89-97 / 82-88 -> 61-62 / 59-70. The
 * threads take whole blocks of 16 / ow row pairs; each output is computed alone,
 * so the thread count does not change it. */
/* The lanes of a block where the small-plane path takes the planes, else 0:
 * 16 on AVX-512 (ow <= 8), 8 on AVX2 (ow <= 4, the forward only). */
static int pool_small_lanes(int isa, int backward, int64_t H, int64_t W, int64_t oh, int64_t ow)
{
    if (ow < 1 || W != 2 * ow || H != 2 * oh || H * W > (1 << 30)) return 0;
    if (isa >= FNN_ISA_AVX512 && ow <= 8) return 16;
    return isa == FNN_ISA_AVX2 && !backward && ow <= 4 ? 8 : 0;
}

/* row pairs [*r0, *r1) of thread t of nth, in whole blocks of g */
static void pool_small_share(int64_t pairs, int64_t g, int t, int nth, int64_t *r0, int64_t *r1)
{
    const int64_t blocks = (pairs + g - 1) / g, b0 = blocks * t / nth, b1 = blocks * (t + 1) / nth;
    *r0 = b0 * g;
    *r1 = b1 * g < pairs ? b1 * g : pairs;
}

#ifdef FASTNN_HAVE_OPENMP
#define POOL_SMALL_THREAD omp_get_thread_num()
#define POOL_SMALL_THREADS omp_get_num_threads()
#else
#define POOL_SMALL_THREAD 0
#define POOL_SMALL_THREADS 1
#endif

static int max_pool_small_f32(fnn_ctx ctx, int isa, const float *x, float *y, int64_t *am, int64_t planes,
                              int64_t H, int64_t W, int64_t oh, int64_t ow)
{
    const int lanes = pool_small_lanes(isa, 0, H, W, oh, ow);
    if (!lanes) return 0;
    const int64_t par_work = planes * H * W;
    FNN_PRAGMA(omp parallel num_threads(fnn_threads_of(ctx)) if(par_work >= FNN_PARALLEL_MIN_WORK))
    {
        int64_t r0, r1;
        pool_small_share(planes * oh, lanes / ow, POOL_SMALL_THREAD, POOL_SMALL_THREADS, &r0, &r1);
        if (r0 < r1 && lanes == 16) fnn_max_pool_2x2s2_small_avx512_f32(x, y, am, r0, r1, oh, ow);
        else if (r0 < r1) fnn_max_pool_2x2s2_small_avx2_f32(x, y, am, r0, r1, oh, ow);
    }
    return 1;
}

static int max_pool_small_f64(fnn_ctx ctx, int isa, const double *x, double *y, int64_t *am, int64_t planes,
                              int64_t H, int64_t W, int64_t oh, int64_t ow)
{
    (void)ctx; (void)isa; (void)x; (void)y; (void)am; (void)planes; (void)H; (void)W; (void)oh; (void)ow;
    return 0;
}

/* 1 when dx is written; 0 when an argmax lies outside its 2x2 block (the caller
 * then scatters every plane, over what was written) or the path does not apply */
static int max_unpool_small_f32(fnn_ctx ctx, int isa, const float *g, const int64_t *am, float *dx,
                                int64_t planes, int64_t H, int64_t W, int64_t oh, int64_t ow)
{
    if (!pool_small_lanes(isa, 1, H, W, oh, ow)) return 0;
    const int64_t par_work = planes * H * W;
    int ok = 1;
    FNN_PRAGMA(omp parallel num_threads(fnn_threads_of(ctx)) if(par_work >= FNN_PARALLEL_MIN_WORK) reduction(&:ok))
    {
        int64_t r0, r1;
        pool_small_share(planes * oh, 16 / ow, POOL_SMALL_THREAD, POOL_SMALL_THREADS, &r0, &r1);
        if (r0 < r1) ok &= fnn_max_unpool_2x2s2_small_avx512_f32(g, am, dx, r0, r1, oh, ow);
    }
    return ok;
}

static int max_unpool_small_f64(fnn_ctx ctx, int isa, const double *g, const int64_t *am, double *dx,
                                int64_t planes, int64_t H, int64_t W, int64_t oh, int64_t ow)
{
    (void)ctx; (void)isa; (void)g; (void)am; (void)dx; (void)planes; (void)H; (void)W; (void)oh; (void)ow;
    return 0;
}

/* The portable 2x2 row loop vectorises only where its compares may be
 * if-converted, which GCC does not do to code that could raise FP exceptions
 * (-ftrapping-math, the default; the kernels never read the FP flags), and
 * only with MAX_WINS in logical form. The portable path, 1 thread, float32 forward through ops, three
 * alternating processes per build: (32, 32, 28, 28) 2.56-2.60 -> 0.41-0.64 ms,
 * (64, 32, 28, 28) 5.11-5.17 -> 0.82-1.28 ms. */
#if defined(__GNUC__) && !defined(__clang__)
#define POOL_NO_TRAPPING_MATH __attribute__((optimize("no-trapping-math")))
#else
#define POOL_NO_TRAPPING_MATH
#endif
#define POOL_ROW_CHUNK 256

#define DEFINE_POOL(T, SFX)                                                                         \
    /* n windows of a row pair: yo = their max, code = the winner 0..3 (row-major) */            \
    POOL_NO_TRAPPING_MATH static void max_pool_row_2x2s2_##SFX(const T *FNN_RESTRICT r0,             \
                                                               const T *FNN_RESTRICT r1,             \
                                                               T *FNN_RESTRICT yo,                   \
                                                               T *FNN_RESTRICT code, int64_t n)      \
    {                                                                                               \
        for (int64_t j = 0; j < n; j++) {                                                           \
            const T v0 = r0[2 * j], v1 = r0[2 * j + 1], v2 = r1[2 * j], v3 = r1[2 * j + 1];        \
            T b = v0, k = 0;                                                                        \
            if (MAX_WINS(v1, b)) { b = v1; k = 1; }                                         \
            if (MAX_WINS(v2, b)) { b = v2; k = 2; }                                         \
            if (MAX_WINS(v3, b)) { b = v3; k = 3; }                                         \
            yo[j] = b;                                                                              \
            code[j] = k;                                                                            \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    static void max_pool_plane_2x2s2_##SFX(const T *FNN_RESTRICT x, T *FNN_RESTRICT y,              \
                                           int64_t *FNN_RESTRICT am, int64_t W, int64_t oh,         \
                                           int64_t ow)                                              \
    {                                                                                               \
        T code[POOL_ROW_CHUNK];                                                                     \
        for (int64_t oy = 0; oy < oh; oy++) {                                                       \
            const T *r0 = x + 2 * oy * W, *r1 = r0 + W;                                             \
            const int64_t base = 2 * oy * W;                                                        \
            for (int64_t c0 = 0; c0 < ow; c0 += POOL_ROW_CHUNK) {                                   \
                const int64_t n = ow - c0 < POOL_ROW_CHUNK ? ow - c0 : POOL_ROW_CHUNK;              \
                max_pool_row_2x2s2_##SFX(r0 + 2 * c0, r1 + 2 * c0, y + oy * ow + c0, code, n);      \
                int64_t *ao = am + oy * ow + c0;                                                    \
                for (int64_t j = 0; j < n; j++) {                                                   \
                    const int k = (int)code[j]; /* offset 0, 1, W, W + 1 */                         \
                    ao[j] = base + 2 * (c0 + j) + (k >> 1) * W + (k & 1);                           \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    /* one (H, W) plane: y and am (oh, ow) */                                                    \
    void fnn_max_pool2d_plane_##SFX(int isa, const T *xp, T *yp, int64_t *ap, int64_t H, int64_t W,  \
                                    int64_t ph, int64_t pw, int64_t sh, int64_t sw, int64_t padh,   \
                                    int64_t padw)                                                   \
    {                                                                                               \
        const int64_t oh = (H + 2 * padh - ph) / sh + 1, ow = (W + 2 * padw - pw) / sw + 1;         \
        if (ph == 2 && pw == 2 && sh == 2 && sw == 2 && padh == 0 && padw == 0) {                   \
            if (!max_pool_plane_2x2s2_simd_##SFX(isa, xp, yp, ap, W, oh, ow))                       \
                max_pool_plane_2x2s2_##SFX(xp, yp, ap, W, oh, ow);                                  \
            return;                                                                                 \
        }                                                                                           \
        for (int64_t oy = 0; oy < oh; oy++) {                                                       \
            const int64_t y0 = oy * sh - padh;                                                      \
            const int64_t ys = y0 < 0 ? 0 : y0, ye = y0 + ph > H ? H : y0 + ph;                     \
            for (int64_t ox = 0; ox < ow; ox++) {                                                   \
                const int64_t x0 = ox * sw - padw;                                                  \
                const int64_t xs = x0 < 0 ? 0 : x0, xe = x0 + pw > W ? W : x0 + pw;                 \
                int64_t bi = ys * W + xs;                                                           \
                T b = xp[bi];                                                                       \
                for (int64_t iy = ys; iy < ye; iy++)                                                \
                    for (int64_t ix = xs; ix < xe; ix++) {                                          \
                        const T v = xp[iy * W + ix];                                                \
                        if (MAX_WINS(v, b)) { b = v; bi = iy * W + ix; }                            \
                    }                                                                               \
                yp[oy * ow + ox] = b;                                                               \
                ap[oy * ow + ox] = bi;                                                              \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    void fnn_max_pool2d_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t *argmax, int64_t planes,       \
                              int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t sh,             \
                              int64_t sw, int64_t padh, int64_t padw)                               \
    {                                                                                               \
        const int64_t oh = (H + 2 * padh - ph) / sh + 1, ow = (W + 2 * padw - pw) / sw + 1;         \
        const int isa = fnn_isa_of(ctx);                                                            \
        if (ph == 2 && pw == 2 && sh == 2 && sw == 2 && padh == 0 && padw == 0 &&                   \
            max_pool_small_##SFX(ctx, isa, x, y, argmax, planes, H, W, oh, ow))                     \
            return;                                                                                 \
        int64_t p;                                                                                  \
        const int64_t par_work = planes * H * W;                                                    \
        FNN_OMP_FOR                                                                                 \
        for (p = 0; p < planes; p++)                                                                \
            fnn_max_pool2d_plane_##SFX(isa, x + p * H * W, y + p * oh * ow, argmax + p * oh * ow,   \
                                       H, W, ph, pw, sh, sw, padh, padw);                           \
    }                                                                                               \
                                                                                                    \
    /* one plane: d (H, W) from g and a (oh, ow), on the calling thread */                        \
    void fnn_max_pool2d_backward_plane_##SFX(int isa, const T *g, const int64_t *a, T *d, int64_t H,   \
                                             int64_t W, int64_t oh, int64_t ow)                     \
    {                                                                                               \
        const int64_t hw = H * W, ohw = oh * ow;                                                    \
        /* The output size of 2x2 stride 2 unpadded (other windows can share it: the              \
         * block check then sends their planes to the scatter). */                                  \
        if (oh >= 1 && ow >= 1 && oh == H / 2 && ow == W / 2 &&                                     \
            max_unpool_plane_2x2s2_simd_##SFX(isa, g, a, d, W, oh, ow) > 0) {                       \
            if (H > 2 * oh) memset(d + 2 * oh * W, 0, (size_t)((H - 2 * oh) * W) * sizeof(T));      \
            return;                                                                                 \
        }                                                                                           \
        memset(d, 0, (size_t)hw * sizeof(T));                                                       \
        for (int64_t i = 0; i < ohw; i++) {                                                         \
            const int64_t k = a[i];                                                                 \
            if (k >= 0 && k < hw) d[k] += g[i]; /* a foreign argmax must not write astray */        \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    void fnn_max_pool2d_backward_##SFX(fnn_ctx ctx, const T *dy, const int64_t *argmax, T *dx,      \
                                       int64_t planes, int64_t H, int64_t W, int64_t oh,            \
                                       int64_t ow)                                                  \
    {                                                                                               \
        const int isa = fnn_isa_of(ctx);                                                            \
        if (max_unpool_small_##SFX(ctx, isa, dy, argmax, dx, planes, H, W, oh, ow))                 \
            return;                                                                                 \
        int64_t p;                                                                                  \
        const int64_t par_work = planes * H * W;                                                    \
        FNN_OMP_FOR                                                                                 \
        for (p = 0; p < planes; p++)                                                                \
            fnn_max_pool2d_backward_plane_##SFX(isa, dy + p * oh * ow, argmax + p * oh * ow,        \
                                                dx + p * H * W, H, W, oh, ow);                      \
    }                                                                                               \
                                                                                                    \
    void fnn_avg_pool2d_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t planes, int64_t H, int64_t W,  \
                              int64_t ph, int64_t pw, int64_t sh, int64_t sw, int64_t padh,         \
                              int64_t padw)                                                         \
    {                                                                                               \
        const int64_t oh = (H + 2 * padh - ph) / sh + 1, ow = (W + 2 * padw - pw) / sw + 1;         \
        const T div = (T)(ph * pw);                                                                 \
        int64_t p;                                                                                  \
        (void)ctx;                                                                                  \
        const int64_t par_work = planes * H * W;                                                                  \
        FNN_OMP_FOR                                                                                \
        for (p = 0; p < planes; p++) {                                                              \
            const T *xp = x + p * H * W;                                                            \
            T *yp = y + p * oh * ow;                                                                \
            for (int64_t oy = 0; oy < oh; oy++) {                                                   \
                const int64_t y0 = oy * sh - padh;                                                  \
                const int64_t ys = y0 < 0 ? 0 : y0, ye = y0 + ph > H ? H : y0 + ph;                 \
                for (int64_t ox = 0; ox < ow; ox++) {                                               \
                    const int64_t x0 = ox * sw - padw;                                              \
                    const int64_t xs = x0 < 0 ? 0 : x0, xe = x0 + pw > W ? W : x0 + pw;             \
                    T s = 0;                                                                        \
                    for (int64_t iy = ys; iy < ye; iy++)                                            \
                        for (int64_t ix = xs; ix < xe; ix++) s += xp[iy * W + ix];                  \
                    yp[oy * ow + ox] = s / div;                                                     \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    void fnn_avg_pool2d_backward_##SFX(fnn_ctx ctx, const T *dy, T *dx, int64_t planes, int64_t H,  \
                                       int64_t W, int64_t ph, int64_t pw, int64_t sh, int64_t sw,   \
                                       int64_t padh, int64_t padw)                                  \
    {                                                                                               \
        const int64_t oh = (H + 2 * padh - ph) / sh + 1, ow = (W + 2 * padw - pw) / sw + 1;         \
        const T div = (T)(ph * pw);                                                                 \
        int64_t p;                                                                                  \
        (void)ctx;                                                                                  \
        const int64_t par_work = planes * H * W;                                                                  \
        FNN_OMP_FOR                                                                                \
        for (p = 0; p < planes; p++) {                                                              \
            T *d = dx + p * H * W;                                                                  \
            const T *g = dy + p * oh * ow;                                                          \
            memset(d, 0, (size_t)(H * W) * sizeof(T));                                              \
            /* window offset outer, as the reference sums: the same rounding */                     \
            for (int64_t i = 0; i < ph; i++)                                                        \
                for (int64_t j = 0; j < pw; j++)                                                    \
                    for (int64_t oy = 0; oy < oh; oy++) {                                           \
                        const int64_t iy = oy * sh - padh + i;                                      \
                        if (iy < 0 || iy >= H) continue;                                            \
                        for (int64_t ox = 0; ox < ow; ox++) {                                       \
                            const int64_t ix = ox * sw - padw + j;                                  \
                            if (ix >= 0 && ix < W) d[iy * W + ix] += g[oy * ow + ox] / div;         \
                        }                                                                           \
                    }                                                                               \
        }                                                                                           \
    }

DEFINE_POOL(float, f32)
DEFINE_POOL(double, f64)
