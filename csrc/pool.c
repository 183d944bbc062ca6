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
#include "gemm.h" /* fnn_scratch */
#include "activation.h"

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
    if (isa >= FNN_ISA_AVX512) return fnn_max_unpool_2x2s2_plane_avx512_f32(g, NULL, a, d, W, oh, ow);
    if (isa >= FNN_ISA_AVX2 && (ow % 8 == 0 || ow >= 24)) return fnn_max_unpool_2x2s2_plane_avx2_f32(g, NULL, a, d, W, oh, ow);
    return -1;
}

static int max_unpool_plane_2x2s2_simd_f64(int isa, const double *g, const int64_t *a, double *d, int64_t W,
                                           int64_t oh, int64_t ow)
{
    if (isa >= FNN_ISA_AVX512) return fnn_max_unpool_2x2s2_plane_avx512_f64(g, a, d, W, oh, ow);
    return -1;
}

/* The same two with the argmax as int32 (the fused convolution + pooling's;
 * its planes are below 2^31 elements): 1 (or, for the backward, 0 / 1 as
 * above) where a vector kernel took the plane. */
static int max_pool_plane_2x2s2_i32_simd_f32(int isa, const float *x, float *y, int32_t *am, int64_t W,
                                             int64_t oh, int64_t ow)
{
    if (W > INT32_MAX / 2) return 0;
    if (isa >= FNN_ISA_AVX512)
        fnn_max_pool_2x2s2_plane_i32_avx512_f32(x, y, am, W, oh, ow);
    else if (isa >= FNN_ISA_AVX2)
        fnn_max_pool_2x2s2_plane_i32_avx2_f32(x, y, am, W, oh, ow);
    else
        return 0;
    return 1;
}

static int max_pool_plane_2x2s2_i32_simd_f64(int isa, const double *x, double *y, int32_t *am, int64_t W,
                                             int64_t oh, int64_t ow)
{
    (void)isa; (void)x; (void)y; (void)am; (void)W; (void)oh; (void)ow;
    return 0;
}

static int max_unpool_plane_2x2s2_i32_simd_f32(int isa, const float *g, const float *relu_y, const int32_t *a,
                                               float *d, int64_t W, int64_t oh, int64_t ow)
{
    if (W > INT32_MAX / 2) return -1;
    if (isa >= FNN_ISA_AVX512) return fnn_max_unpool_2x2s2_plane_i32_avx512_f32(g, relu_y, a, d, W, oh, ow);
    if (isa >= FNN_ISA_AVX2 && (ow % 8 == 0 || ow >= 24))
        return fnn_max_unpool_2x2s2_plane_i32_avx2_f32(g, relu_y, a, d, W, oh, ow);
    return -1;
}

static int max_unpool_plane_2x2s2_i32_simd_f64(int isa, const double *g, const double *relu_y, const int32_t *a,
                                               double *d, int64_t W, int64_t oh, int64_t ow)
{
    (void)isa; (void)g; (void)relu_y; (void)a; (void)d; (void)W; (void)oh; (void)ow;
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

static int max_pool_small_f32(fnn_ctx ctx, int isa, const float *x, float *y, int64_t *am, int64_t planes,
                              int64_t H, int64_t W, int64_t oh, int64_t ow)
{
    const int lanes = pool_small_lanes(isa, 0, H, W, oh, ow);
    if (!lanes) return 0;
    const int64_t par_work = planes * H * W;
    FNN_PARALLEL_ON(fnn_team_for_work(ctx, par_work), , {
        int64_t r0, r1;
        pool_small_share(planes * oh, lanes / ow, FNN_THREAD_NUM, FNN_TEAM_SIZE, &r0, &r1);
        if (r0 < r1 && lanes == 16) fnn_max_pool_2x2s2_small_avx512_f32(x, y, am, r0, r1, oh, ow);
        else if (r0 < r1) fnn_max_pool_2x2s2_small_avx2_f32(x, y, am, r0, r1, oh, ow);
    });
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
    FNN_PARALLEL_ON(fnn_team_for_work(ctx, par_work), reduction(&:ok), {
        int64_t r0, r1;
        pool_small_share(planes * oh, 16 / ow, FNN_THREAD_NUM, FNN_TEAM_SIZE, &r0, &r1);
        if (r0 < r1) ok &= fnn_max_unpool_2x2s2_small_avx512_f32(g, am, dx, r0, r1, oh, ow);
    });
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
/* The row kernels run whole vectors: a row of 27 outputs (a 3x3 stride-2 pool
 * of 56 columns) spent most of its time in the 11-output scalar tail, once per
 * window offset. A multiple of every ISA's vector length. */
#define POOL_ROW_ROUND 16

/* Any other window: the outputs of a row whose windows no column edge clips
 * (all but a few at the ends), window offset by window offset. Offset o of
 * window j is src[o][j] (unit stride: at stride sw > 1 the rows are first
 * split into their sw column phases, as the direct convolution splits its
 * image, since strided loads made GCC end every vector loop in a scalar one);
 * best[j] is the window's max and code[j] koff[o] of its winning offset o (its
 * place from the window's top-left element, exact in T). Folding the offsets
 * in window order keeps the rule (the first maximum, or the first NaN); with
 * the offsets inner, per output, each compare was an unpredictable branch (a
 * 3x3 stride-2 pool of (32, 64, 56, 56) took 43 ms). n is a multiple of
 * POOL_ROW_ROUND: no scalar tail. */
#define DEFINE_POOL_ROW(T, I, NAME, TARGET, VBYTES)                                                 \
    TARGET static void NAME(const T *const *src, const T *koff, int64_t offsets, T *best, T *code,  \
                            int64_t n)                                                              \
    {                                                                                               \
        /* a block of windows in registers, as GCC vectors of the ISA's width in a fixed        \
         * number (the compiler's own vectorisation of this loop stored each offset's winners   \
         * by masked stores behind an unpredictable any-lane branch; one 64-byte vector on AVX2 \
         * or SSE2 was slower than the scalar loop) */                                            \
        typedef T lanes __attribute__((vector_size(VBYTES)));                                      \
        typedef I mask __attribute__((vector_size(VBYTES)));                                       \
        enum { L = (VBYTES) / (int)sizeof(T), NV = POOL_ROW_ROUND / L };                            \
        for (int64_t j0 = 0; j0 < n; j0 += POOL_ROW_ROUND) {                                        \
            lanes b[NV], c[NV];                                                                     \
            for (int u = 0; u < NV; u++) {                                                          \
                memcpy(&b[u], src[0] + j0 + u * L, sizeof(lanes));                                  \
                c[u] = (lanes){0} + koff[0];                                                        \
            }                                                                                       \
            for (int64_t o = 1; o < offsets; o++) {                                                 \
                const lanes k = (lanes){0} + koff[o];                                               \
                for (int u = 0; u < NV; u++) {                                                      \
                    lanes v;                                                                        \
                    memcpy(&v, src[o] + j0 + u * L, sizeof(lanes));                                 \
                    /* MAX_WINS, lane by lane: larger, or the first NaN */                        \
                    const mask win = (v > b[u]) | ((v != v) & (b[u] == b[u]));                      \
                    b[u] = (lanes)(((mask)v & win) | ((mask)b[u] & ~win));                          \
                    c[u] = (lanes)(((mask)k & win) | ((mask)c[u] & ~win));                          \
                }                                                                                   \
            }                                                                                       \
            memcpy(best + j0, b, sizeof(b));                                                        \
            memcpy(code + j0, c, sizeof(c));                                                        \
        }                                                                                           \
    }
/* Rows [ys, ys + rows) of the plane split into column phases: phase p of row r
 * at dst + (r * sw + p) * len holds columns p, p + sw, ... */
#define DEFINE_POOL_PHASES(T, NAME, TARGET)                                                         \
    TARGET static void NAME(const T *FNN_RESTRICT x, int64_t W, int64_t rows, int64_t sw,           \
                            T *FNN_RESTRICT dst, int64_t len)                                       \
    {                                                                                               \
        for (int64_t r = 0; r < rows; r++) {                                                        \
            const T *FNN_RESTRICT s = x + r * W;                                                    \
            T *FNN_RESTRICT d = dst + r * sw * len;                                                 \
            if (sw == 2) {                                                                          \
                for (int64_t m = 0; m < W / 2; m++) {                                               \
                    d[m] = s[2 * m];                                                                \
                    d[len + m] = s[2 * m + 1];                                                      \
                }                                                                                   \
                if (W % 2)                                                                          \
                    d[W / 2] = s[W - 1];                                                            \
                continue;                                                                           \
            }                                                                                       \
            for (int64_t p = 0; p < sw; p++)                                                        \
                for (int64_t m = 0; m * sw + p < W; m++)                                            \
                    d[p * len + m] = s[m * sw + p];                                                 \
        }                                                                                           \
    }
#define DEFINE_POOL_ROWS(T, I, SFX)                                                                 \
    DEFINE_POOL_ROW(T, I, max_pool_row_##SFX##_portable, , 16)                                      \
    DEFINE_POOL_PHASES(T, pool_phases_##SFX##_portable, )                                           \
    DEFINE_POOL_ROW_SIMD(T, I, SFX)                                                                 \
    typedef struct {                                                                                \
        void (*row)(const T *const *, const T *, int64_t, T *, T *, int64_t);                      \
        void (*phases)(const T *, int64_t, int64_t, int64_t, T *, int64_t);                        \
    } pool_rows_##SFX;                                                                              \
    static pool_rows_##SFX pool_rows_##SFX##_select(int isa)                                        \
    {                                                                                               \
        POOL_ROW_SELECT_SIMD(SFX)                                                                   \
        return (pool_rows_##SFX){max_pool_row_##SFX##_portable, pool_phases_##SFX##_portable};     \
    }
#if FNN_X86_SIMD
#define DEFINE_POOL_ROW_SIMD(T, I, SFX)                                                             \
    DEFINE_POOL_ROW(T, I, max_pool_row_##SFX##_avx2, FNN_TARGET_AVX2, 32)                           \
    DEFINE_POOL_PHASES(T, pool_phases_##SFX##_avx2, FNN_TARGET_AVX2)                                \
    DEFINE_POOL_ROW(T, I, max_pool_row_##SFX##_avx512, FNN_TARGET_AVX512, 64)                       \
    DEFINE_POOL_PHASES(T, pool_phases_##SFX##_avx512, FNN_TARGET_AVX512)
#define POOL_ROW_SELECT_SIMD(SFX)                                                                   \
    if (isa >= FNN_ISA_AVX512)                                                                      \
        return (pool_rows_##SFX){max_pool_row_##SFX##_avx512, pool_phases_##SFX##_avx512};         \
    if (isa >= FNN_ISA_AVX2)                                                                        \
        return (pool_rows_##SFX){max_pool_row_##SFX##_avx2, pool_phases_##SFX##_avx2};
#else
#define DEFINE_POOL_ROW_SIMD(T, I, SFX)
#define POOL_ROW_SELECT_SIMD(SFX) (void)isa;
#endif
DEFINE_POOL_ROWS(float, int32_t, f32)
DEFINE_POOL_ROWS(double, int64_t, f64)
#undef DEFINE_POOL_ROWS
#undef DEFINE_POOL_ROW_SIMD
#undef POOL_ROW_SELECT_SIMD
#undef DEFINE_POOL_ROW
#undef DEFINE_POOL_PHASES

/* The row kernels take a window's offsets as tables on the stack (their
 * codes and row pointers): larger windows take the scalar loop. */
#define POOL_MAX_WINDOW 1024


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
        /* the outputs [lo, hi) of each row: windows inside the columns */                          \
        int64_t lo = (padw + sw - 1) / sw, hi = W + padw - pw >= 0 ? (W + padw - pw) / sw + 1 : 0;   \
        lo = lo < ow ? lo : ow;                                                                     \
        hi = hi > ow ? ow : hi < lo ? lo : hi;                                                      \
        /* at stride sw > 1, the column phases of a row's windows' rows, each len long:          \
         * the values, then zeros that the lanes past the last window read */                     \
        const int64_t len = (W + sw - 1) / sw + POOL_ROW_ROUND;                                     \
        T *phases = NULL;                                                                           \
        if (hi > lo && sw > 1 && ph * pw <= POOL_MAX_WINDOW) {                                      \
            phases = (T *)fnn_scratch(FNN_SCRATCH_POOL_ROWS, (size_t)(ph * sw * len) * sizeof(T));  \
            for (int64_t q = 0; phases && q < ph * sw; q++)                                         \
                memset(phases + q * len + W / sw, 0, (size_t)(len - W / sw) * sizeof(T));           \
        }                                                                                           \
        if (ph * pw > POOL_MAX_WINDOW || (sw > 1 && !phases))                                       \
            hi = lo; /* the scalar loop below */                                                    \
        /* the window offsets' codes: their offsets from the window's top-left element,         \
         * exact in T (else the scalar loop) */                                                   \
        if ((double)((ph - 1) * W + pw) >= (sizeof(T) == 4 ? 0x1p24 : 0x1p53))                     \
            hi = lo;                                                                                \
        T offset[POOL_MAX_WINDOW];                                                                  \
        int64_t phase_at[POOL_MAX_WINDOW];                                                          \
        const T *src[POOL_MAX_WINDOW];                                                              \
        for (int64_t k = 0; hi > lo && k < ph * pw; k++)                                            \
            offset[k] = (T)(k / pw * W + k % pw);                                                   \
        /* column q of window lo within its row's phases (window lo + t, t further on) */         \
        for (int64_t q = 0; phases && hi > lo && q < pw; q++)                                       \
            phase_at[q] = (lo * sw - padw + q) % sw * len + (lo * sw - padw + q) / sw;              \
        const pool_rows_##SFX kern = pool_rows_##SFX##_select(isa);                                 \
        T best[POOL_ROW_CHUNK + POOL_ROW_ROUND] FNN_ALIGNED(64);                                    \
        T code[POOL_ROW_CHUNK + POOL_ROW_ROUND] FNN_ALIGNED(64);                                    \
        for (int64_t oy = 0; oy < oh; oy++) {                                                       \
            const int64_t y0 = oy * sh - padh;                                                      \
            const int64_t ys = y0 < 0 ? 0 : y0, ye = y0 + ph > H ? H : y0 + ph, rows = ye - ys;     \
            if (phases && hi > lo)                                                                  \
                kern.phases(xp + ys * W, W, rows, sw, phases, len);                                 \
            int64_t done = hi; /* the windows [lo, done) of the row done here */                  \
            for (int64_t c0 = lo; c0 < hi; c0 += POOL_ROW_CHUNK) {                                  \
                const int64_t n = hi - c0 < POOL_ROW_CHUNK ? hi - c0 : POOL_ROW_CHUNK;              \
                const int64_t col = c0 * sw - padw; /* of window c0 */                              \
                /* whole vectors: nv windows, those past n dropped. At stride 1 they read         \
                 * the plane itself: where that would run past its end, from nv - n               \
                 * windows before c0 on, or (a plane too small for that) in the scalar loop. */    \
                const int64_t nv = (n + POOL_ROW_ROUND - 1) / POOL_ROW_ROUND * POOL_ROW_ROUND;       \
                int64_t shift = 0;                                                                  \
                if (!phases && (ys + rows - 1) * W + col + pw - 1 + nv > H * W) {                   \
                    shift = nv - n;                                                                 \
                    if (ys * W + col < shift) {                                                     \
                        done = c0;                                                                  \
                        break;                                                                      \
                    }                                                                               \
                }                                                                                   \
                for (int64_t r = 0; r < rows; r++)                                                  \
                    for (int64_t q = 0; q < pw; q++)                                                \
                        src[r * pw + q] = phases ? phases + r * sw * len + phase_at[q] + (c0 - lo)  \
                                                 : xp + (ys + r) * W + col + q - shift;             \
                kern.row(src, offset, rows * pw, best, code, nv);                                   \
                memcpy(yp + oy * ow + c0, best + shift, (size_t)n * sizeof(T));                     \
                int64_t *ao = ap + oy * ow + c0;                                                    \
                const int64_t base = ys * W + col;                                                  \
                for (int64_t j = 0; j < n; j++)                                                     \
                    ao[j] = base + j * sw + (int64_t)code[j + shift];                               \
            }                                                                                       \
            for (int64_t ox = lo == 0 ? done : 0; ox < ow; ox = ox + 1 == lo ? done : ox + 1) {     \
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
        FNN_PARALLEL_FOR(par_work,                                                                  \
        for (p = 0; p < planes; p++) {                                                              \
            fnn_max_pool2d_plane_##SFX(isa, x + p * H * W, y + p * oh * ow, argmax + p * oh * ow,   \
                                       H, W, ph, pw, sh, sw, padh, padw);                           \
        });                                                                                         \
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
    /* fnn_max_pool2d_plane and fnn_max_pool2d_backward_plane with the argmax as int32;   \
     * `wide` (oh * ow) holds it as int64 where no int32 kernel takes the plane */          \
    void fnn_max_pool2d_plane_i32_##SFX(int isa, const T *x, T *y, int32_t *argmax, int64_t *wide,   \
                                        int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t sh,    \
                                        int64_t sw, int64_t padh, int64_t padw)                      \
    {                                                                                               \
        const int64_t oh = (H + 2 * padh - ph) / sh + 1, ow = (W + 2 * padw - pw) / sw + 1;         \
        if (ph == 2 && pw == 2 && sh == 2 && sw == 2 && padh == 0 && padw == 0 &&                   \
            max_pool_plane_2x2s2_i32_simd_##SFX(isa, x, y, argmax, W, oh, ow))                      \
            return;                                                                                 \
        fnn_max_pool2d_plane_##SFX(isa, x, y, wide, H, W, ph, pw, sh, sw, padh, padw);              \
        fnn_index_narrow(wide, argmax, oh * ow);                                                    \
    }                                                                                               \
                                                                                                    \
    void fnn_max_pool2d_backward_plane_i32_##SFX(int isa, const T *g, const T *relu_y, const int32_t *a, \
                                                 int64_t *wide, T *gbuf, T *d, int64_t H, int64_t W,   \
                                                 int64_t oh, int64_t ow)                                \
    {                                                                                               \
        if (oh >= 1 && ow >= 1 && oh == H / 2 && ow == W / 2 &&                                     \
            max_unpool_plane_2x2s2_i32_simd_##SFX(isa, g, relu_y, a, d, W, oh, ow) > 0) {           \
            if (H > 2 * oh) memset(d + 2 * oh * W, 0, (size_t)((H - 2 * oh) * W) * sizeof(T));      \
            return;                                                                                 \
        }                                                                                           \
        if (relu_y) {                                                                               \
            fnn_act_grad_from_y_mul_serial_##SFX(isa, g, relu_y, gbuf, oh * ow, FNN_ACT_RELU, 0.0); \
            g = gbuf;                                                                               \
        }                                                                                           \
        fnn_index_widen(a, wide, oh * ow);                                                          \
        fnn_max_pool2d_backward_plane_##SFX(isa, g, wide, d, H, W, oh, ow);                         \
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
        FNN_PARALLEL_FOR(par_work,                                                                  \
        for (p = 0; p < planes; p++) {                                                              \
            fnn_max_pool2d_backward_plane_##SFX(isa, dy + p * oh * ow, argmax + p * oh * ow,        \
                                                dx + p * H * W, H, W, oh, ow);                      \
        });                                                                                         \
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
        FNN_PARALLEL_FOR(par_work,                                                                 \
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
        });                                                                                         \
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
        FNN_PARALLEL_FOR(par_work,                                                                 \
        for (p = 0; p < planes; p++) {                                                              \
            T *d = dx + p * H * W;                                                                  \
            const T *g = dy + p * oh * ow;                                                          \
            memset(d, 0, (size_t)(H * W) * sizeof(T));                                              \
            if ((sh >= ph || oh == 1) && (sw >= pw || ow == 1)) {                                   \
                /* windows that do not overlap (2x2 stride 2, global pooling): an element takes  \
                 * at most one share, stored as 0 + share, the reference's sum (the loop below    \
                 * took 1.3 ms on (32, 512, 7, 7) globally pooled, 3.3 ns an element) */         \
                for (int64_t oy = 0; oy < oh; oy++)                                                 \
                    for (int64_t i = 0; i < ph; i++) {                                              \
                        const int64_t iy = oy * sh - padh + i;                                      \
                        if (iy < 0 || iy >= H) continue;                                            \
                        T *drow = d + iy * W;                                                       \
                        for (int64_t ox = 0; ox < ow; ox++) {                                       \
                            const T share = (T)0 + g[oy * ow + ox] / div;                           \
                            const int64_t x0 = ox * sw - padw;                                      \
                            const int64_t xs = x0 < 0 ? 0 : x0, xe = x0 + pw > W ? W : x0 + pw;     \
                            for (int64_t ix = xs; ix < xe; ix++) drow[ix] = share;                  \
                        }                                                                           \
                    }                                                                               \
                continue;                                                                           \
            }                                                                                       \
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
        });                                                                                         \
    }

DEFINE_POOL(float, f32)
DEFINE_POOL(double, f64)
