/* Winograd F(m x m, 3x3) convolution, m = 2 or 4: 3x3 filters, stride 1 (Lavin
 * and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * Each m x m output tile comes from an a x a input tile d (a = m + 2) and a
 * filter g as
 *     Y = A^T [ (G g G^T) . (B^T d B) ] A         (. elementwise)
 * so the 9 multiply-adds per output of the direct convolution become 4 (m = 2)
 * or 2.25 (m = 4), and for every one of the a*a positions p of the transformed
 * tile the sum over channels is one GEMM:
 *     forward   M[p] (F x T) = U[p] (F x C) @ V[p] (C x T)   T tiles
 *     weights   dU[p] (F x C) += Z[p] (F x T) @ V[p]^T       Z = A dY A^T
 *     data      dV[p] (C x T) = U[p]^T (C x F) @ Z[p]        dd = B dV B^T
 * where the data gradient's input tiles dd overlap (by 2 rows and columns)
 * and are added up into dx. The two gradients share Z, in one pass.
 *
 * Tiles run in blocks of whole tile rows, sized so the block's transformed
 * input and output (a*a x (C + F) x T values) stay about the size of L2; each
 * tile of a block is a lane, its values gathered into lane arrays (the input
 * transform's left side already applied to the image rows), and the
 * transforms are flat loops over all the block's lanes, written once and
 * compiled for each ISA.
 * The forward's and the data gradient's products run on the indirect-B
 * microkernel straight from V or Z, the weight gradient's on the indirect-A
 * one. Blocks are split statically over threads, so the forward result and the
 * data gradient (its tiles' overlaps added in tile order, across threads too)
 * do not depend on the thread count, and the weight gradient (per-thread
 * partial sums added in thread order) is fixed for a given one.
 *
 * Transforms add and subtract input values, so an inf would meet another in
 * a tile as inf - inf = NaN where the direct convolution gives inf: the callers
 * take this path for finite inputs only. */
#include "conv.h"

#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "activation.h"
#include "kernels.h"

/* a loop to vectorise as it stands (not folded into the loops around it) */
#if defined(FASTNN_HAVE_OPENMP)
#define FNN_SIMD_LOOP FNN_PRAGMA(omp simd)
#else
#define FNN_SIMD_LOOP
#endif
/* the loop's iterations are independent (what GCC cannot prove for many streams) */
#if defined(__clang__)
#define FNN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define FNN_IVDEP _Pragma("GCC ivdep")
#else
#define FNN_IVDEP
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define FNN_NO_LIBC_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FNN_NO_LIBC_CALLS
#endif

/* The output transform's lanes are rounded up to this many (its results past
 * the block's tiles are ignored). */
#define FNN_WINO_LANES 16

/* A gather may write up to this many lanes from a tile row's first, past its
 * last tile (the next row's gather, or the input block's zeroing, rewrites
 * them): an 8-lane AVX2 store is one instruction where a masked one is slow on
 * AMD cores. */
#define FNN_WINO_GATHER_SLACK 8

/* Bytes of the per-block transformed input and output: at most this much, at
 * least half of it (a little over the 1 MiB L2 of the targets: V and M are
 * each written once and read once per block, and 1 MiB cut conv E's blocks to
 * 7 tile rows of 8, which pad to 64 lanes as 8 rows do: 8 rows are 10% faster). */
#define FNN_WINO_BLOCK_BYTES (1280 * 1024)

/* G of F(2x2, 3x3) and F(4x4, 3x3), a x 3, row-major */
static const double wino_g2[4 * 3] = {1, 0, 0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0, 0, 1};
static const double wino_g4[6 * 3] = {1.0 / 4,  0,         0,         -1.0 / 6, -1.0 / 6, -1.0 / 6,
                                      -1.0 / 6, 1.0 / 6,   -1.0 / 6,  1.0 / 24, 1.0 / 12, 1.0 / 6,
                                      1.0 / 24, -1.0 / 12, 1.0 / 6,   0,        0,        1};
static const double *wino_G(int m) { return m == 4 ? wino_g4 : wino_g2; }

typedef struct {
    int m, a, np;                  /* output tile m x m, input tile a x a (a = m + 2), np = a*a positions */
    int64_t n, c, f, h, w, ph, pw; /* the convolution: x (n,c,h,w) -> (n,f,oh,ow) */
    int64_t oh, ow, th, tw;        /* output size; m x m tiles per column and row */
    int64_t rows;                  /* tile rows over the batch: n * th */
    int64_t block_rows;            /* tile rows per block */
    int64_t ldb;                   /* lane stride of a block: room for its NR-wide panels and FNN_WINO_LANES */
    int nr;                        /* the products' panel width (lanes of V read past the tiles) */
} fnn_wino_geom;

static fnn_wino_geom wino_geom(int m, int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t ph, int64_t pw,
                               int64_t dtype_bytes, int nr, int gran, int nth)
{
    fnn_wino_geom g;
    g.m = m;
    g.a = m + 2;
    g.np = g.a * g.a;
    g.n = n;
    g.c = c;
    g.f = f;
    g.h = h;
    g.w = w;
    g.ph = ph;
    g.pw = pw;
    g.oh = h + 2 * ph - 2;
    g.ow = w + 2 * pw - 2;
    g.th = (g.oh + m - 1) / m;
    g.tw = (g.ow + m - 1) / m;
    g.rows = n * g.th;
    const int64_t row_bytes = g.np * (c + f) * dtype_bytes * g.tw;
    int64_t most = FNN_WINO_BLOCK_BYTES / row_bytes;
    /* a thread's share of the tile rows (wino_thread_rows) */
    const int64_t per_thread = (g.rows + nth - 1) / nth;
    if (most > per_thread)
        most = per_thread;
    if (most < 1)
        most = 1;
    /* The forward's products (and the backward's data gradient's) compute whole
     * panels of `gran` tiles (NR, or NR/2 where the ISA has a half-width kernel),
     * so a block of 56 tiles costs as much as one of 64 there (the transforms do
     * not). Each thread cuts its share into blocks from its start, the last
     * one shorter. Of the block sizes from half the budget up, take the
     * largest of those whose busiest thread computes the fewest padded lanes
     * (gran 1, the weight gradient alone: the largest): 100 8x8 images into 64 channels
     * on 2 threads (100 rows of 2 tiles a thread) take blocks of 32 rows, 64 +
     * 64 + 64 + 8 lanes (208 computed), where blocks of 25 rows cut over the
     * whole batch gave each thread 4 of 50 lanes, padded to 64 (256). */
    int64_t br = most, best = -1;
    for (int64_t cand = most; cand >= 1 && 2 * cand >= most; cand--) {
        const int64_t full = per_thread / cand, rest = per_thread % cand;
        const int64_t lanes = full * ((cand * g.tw + gran - 1) / gran * gran) +
                              (rest * g.tw + gran - 1) / gran * gran;
        if (best < 0 || lanes < best) {
            br = cand;
            best = lanes;
        }
    }
    g.block_rows = br;
    /* room for the products' last NR-wide panel, the output transform's lanes and
     * the gathers' whole-vector stores past the last tile */
    const int64_t tb = br * g.tw, panels = (tb + nr - 1) / nr * nr, gathered = tb + FNN_WINO_GATHER_SLACK;
    g.ldb = ((gathered > panels ? gathered : panels) + FNN_WINO_LANES - 1) / FNN_WINO_LANES * FNN_WINO_LANES;
    g.nr = nr;
    return g;
}

/* A block's transformed matrices are channel-major: channel (or filter) ci's
 * a*a lane rows at base + ci * wino_chan(g) + p * g->ldb, so that a transform
 * writes or reads one run of a*a rows, where position-major matrices put its
 * a*a rows a whole C x T matrix apart (a*a streams for the prefetchers and the
 * L1: the input gather was 13% of conv E's samples, 10.6% so; E 2.5-3% faster
 * with V, M and Z so). The products take their rows through pointers or a
 * leading dimension, in any order. The stride is kept 32 elements off a
 * multiple of 4 KiB, so that one position's rows (one a channel) do not all
 * fall in one L1 set. */
static inline int64_t wino_chan(const fnn_wino_geom *g) { return g->np * g->ldb + 32; }

/* The tile rows [lo, hi) of thread t of tn: an even split of the batch's rows,
 * which the thread cuts into blocks of g->block_rows from lo (the last one
 * shorter), so only each thread's last block pads its products' panels. */
/* A run of a block's tile rows in one image, from tile row r0 + r (of at most nr - r):
 * image ni, its first tile row ty0, run tile rows; their windows read the input rows
 * [first, first + count), of which [lo, hi) lie inside the image. */
typedef struct {
    int64_t ni, ty0, run, first, count, lo, hi;
} wino_run;

static inline wino_run wino_run_at(const fnn_wino_geom *g, int64_t r0, int64_t r, int64_t nr)
{
    wino_run u;
    u.ni = (r0 + r) / g->th;
    u.ty0 = (r0 + r) % g->th;
    u.run = g->th - u.ty0 < nr - r ? g->th - u.ty0 : nr - r;
    u.first = g->m * u.ty0 - g->ph;
    u.count = g->m * u.run + 2;
    u.lo = u.first < 0 ? 0 : u.first;
    u.hi = u.first + u.count > g->h ? g->h : u.first + u.count;
    return u;
}

/* Offsets of the zero-window mask's scratch (winograd_template.h, wino_zero_layout_of). */
typedef struct {
    int64_t ored, ored_elems, span, scratch, total;
} wino_zero_layout;

static inline void wino_thread_rows(const fnn_wino_geom *g, int t, int tn, int64_t *lo, int64_t *hi)
{
    *lo = g->rows * t / tn;
    *hi = g->rows * (t + 1) / tn;
}

int fnn_winograd_applies(fnn_ctx ctx, int64_t n, int64_t c, int64_t f, int64_t h, int64_t w, int64_t fh,
                         int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    if (ctx.conv_algo == FNN_CONV_GEMM || fh != 3 || fw != 3 || sh != 1 || sw != 1 || ph < 0 || pw < 0 ||
        ph > 2 || pw > 2 || h + 2 * ph < 3 || w + 2 * pw < 3)
        return 0;
    if (ctx.conv_algo == FNN_CONV_WINOGRAD || ctx.conv_algo == FNN_CONV_WINOGRAD4)
        return ctx.conv_algo == FNN_CONV_WINOGRAD4 ? 4 : 2;
    /* Measured on 1 and 2 threads, F(4x4, 3x3) against the GEMM paths and
     * F(2x2, 3x3) (forward of 3x3 pad-1 layers, n x c x h x w into f):
     * - F(4x4) is the faster Winograd wherever either pays off: 4x fewer
     *   multiplies instead of 2.25x, and fewer transformed values per output
     *   (36 per 16 instead of 16 per 4). 64x16x28x28 into 32: 1.6x the GEMM
     *   paths, F(2x2) 1.1x; 1x64x56x56 into 64: 1.9x and 1.4x.
     * - The filters are transformed on every call, shared by the threads:
     *   small problems lose (1x32x7x7 into 64: 0.25x). Counted in 2x2 output
     *   tiles, Winograd needs about 128 a thread with 16+ input and 32+ output
     *   channels (8x16x8x8 into 32, 8x64x8x8 into 64: 1.29x and 1.54x on 1
     *   thread; 4x16x12x12 into 32, 144: 1.00-1.02x; 4x32x8x8 into 32, 64:
     *   0.82-0.97x). It was 256 while the filters' transform and packing were
     *   separate passes (0.22 of 0.39 ms of 1x64x14x14 into 64).
     * - Thinner products (16 output or 8 input channels) repay the transforms
     *   more slowly: 256 tiles a thread (8x8x12x12 into 32: 1.10x, 16x16x8x8
     *   into 16: 1.17x; 8x16x12x12 into 16: 1.00x; 2x16x32x32 into 16: 1.23x on
     *   2 threads), and only when the 4x4 tiles are nearly full: 14x14 outputs
     *   fill 77% of theirs and never gain (16x16x14x14 into 16: 0.89-0.91x).
     *   8 output channels never gain (64x32x28x28 into 8: 0.9x). */
    const int64_t tiles = n * ((h + 2 * ph - 1) / 2) * ((w + 2 * pw - 1) / 2);
    const int64_t nth = ctx.nthreads < 1 ? 1 : ctx.nthreads;
    const int64_t oh = h + 2 * ph - 2, ow = w + 2 * pw - 2;
    const int full = 10 * oh * ow >= 9 * 16 * ((oh + 3) / 4) * ((ow + 3) / 4); /* 90% of the 4x4 tiles' outputs */
    int take = 0;
    if (c >= 16 && f >= 32)
        take = tiles >= 128 * nth;
    else if ((c >= 16 && f >= 16) || (c >= 8 && f >= 32))
        take = full && tiles >= 256 * nth;
    return take ? 4 : 0;
}

#if FNN_X86_SIMD
#include <immintrin.h>

/* the lanes of 16 columns from column c0 that lie inside [0, w) */
static FNN_ALWAYS_INLINE __mmask16 wino_cols16(int64_t c0, int64_t w)
{
    int64_t lo = -c0, hi = w - c0; /* valid lanes [lo, hi) */
    lo = lo < 0 ? 0 : lo;
    hi = hi > 16 ? 16 : hi;
    return hi <= lo ? (__mmask16)0 : (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* 16 values of a row from column c0 (zero outside [0, w), and for a NULL row) */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE __m512 wino_load16_avx512(const float *src, int64_t c0, int64_t w)
{
    const __mmask16 valid = wino_cols16(c0, w);
    if (!src || !valid)
        return _mm512_setzero_ps();
    return _mm512_maskz_loadu_ps(valid, src + c0);
}

/* The gather of a tile row in float32 on AVX-512, for rows of up to 15 tiles
 * (the 7 to 14 of 28- and 32-wide images): the compiler leaves the generic loop
 * scalar (a few elements per phase), a quarter of conv D's time on F(4x4). A
 * row is read as 16-lane vectors (masked: zero outside the row, no access
 * outside it), phases q < m are picked by two-source permutes, and phases m
 * and m + 1 are phases 0 and 1 one tile on. Returns 0 where it does not apply.
 * Both fast gathers are inlined into each tile size's gather, where m, nrows
 * and nq are constants: called, their loops over those, the spills of v and
 * the mask reloads cost 5% of conv E's forward + backward and 10% of conv D's
 * (one thread, AVX-512). */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE int wino_gather_fast_avx512(int m, float *dst, int64_t ls, int64_t count,
                                                                        const float *plane, int64_t h, int64_t w,
                                                                        int64_t hi0, int64_t pad, int nrows, int nq)
{
    if ((m != 2 && m != 4) || count > 15 || count < 1)
        return 0;
    const __mmask16 keep = (__mmask16)((1u << count) - 1);
    /* lane k of phase q < m: element q + m*k of the row window. m = 4: the 32
     * values of (r0, r1) give lanes 0-7, those of (r2, r3) lanes 8-15; m = 2:
     * (r0, r1) give all 16 */
    __m512i pick[4];
    for (int q = 0; q < m; q++) {
        int idx[16];
        for (int k = 0; k < 16; k++)
            idx[k] = m == 4 ? q + 4 * (k & 7) : q + 2 * k;
        pick[q] = _mm512_loadu_si512(idx);
    }
    const int nregs = m; /* vectors of the row window */
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < nrows; i++) {
        float *d = dst + (int64_t)i * nq * ls;
        const int64_t row = hi0 + i;
        __m512 v[6];
        if (row < 0 || row >= h) {
            for (int q = 0; q < nq; q++)
                v[q] = zero;
        } else {
            /* r[j] lane l = column 16j + l - pad of the row, zero outside [0, w) */
            const float *src = plane + row * w;
            __m512 r[4];
            for (int j = 0; j < nregs; j++)
                r[j] = wino_load16_avx512(src, 16 * j - pad, w);
            for (int q = 0; q < m && q < nq; q++) {
                if (m == 4) {
                    const __m512 a = _mm512_permutex2var_ps(r[0], pick[q], r[1]);
                    const __m512 b = _mm512_permutex2var_ps(r[2], pick[q], r[3]);
                    v[q] = _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0));
                } else {
                    v[q] = _mm512_permutex2var_ps(r[0], pick[q], r[1]);
                }
            }
            for (int q = m; q < nq; q++)
                v[q] = _mm512_castsi512_ps(
                    _mm512_alignr_epi32(_mm512_setzero_si512(), _mm512_castps_si512(v[q - m]), 1));
        }
        for (int q = 0; q < nq; q++)
            _mm512_mask_storeu_ps(d + q * ls, keep, v[q]);
    }
    return 1;
}
#define WINO_GATHER_FAST_AVX512(...) wino_gather_fast_avx512(__VA_ARGS__)

/* Two tile rows of up to 8 tiles each (28- and 32-wide images) as one vector:
 * their lanes are adjacent in the block (tile row r's from r * count), so
 * each phase is one 16-lane store for both rows instead of a half-empty store
 * for each, from two permutes and a blend instead of three permutes each. */

/* whether the pair gathers below take tile rows of count tiles of size m */
#define WINO_PAIR_FITS_AVX512(m, count) (((m) == 2 || (m) == 4) && (count) >= 1 && 2 * (count) <= 16)

/* The permutes' indices: lane l of phase q < m is column m * l + q - pad of the
 * first row's window (l < count), m * (l - count) + q - pad of the second's (at
 * most 31 from the window's start, so two vectors hold it); and the masks of
 * the lanes stored (both rows', or with `both` 0 the first's alone) and of the
 * second row's lanes */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE void wino_pair_picks_avx512(int m, int64_t count, int both,
                                                                        __m512i pick_a[4], __m512i pick_b[4],
                                                                        __mmask16 *keep, __mmask16 *second)
{
    *keep = (__mmask16)((1u << (both ? 2 * count : count)) - 1);
    *second = (__mmask16)(((1u << (2 * count)) - 1) & ~((1u << count) - 1));
    for (int q = 0; q < m; q++) {
        int ia[16], ib[16];
        for (int l = 0; l < 16; l++) {
            ia[l] = l < count ? q + m * l : 0;
            ib[l] = l >= count && l < 2 * count ? q + m * (l - count) : 0;
        }
        pick_a[q] = _mm512_loadu_si512(ia);
        pick_b[q] = _mm512_loadu_si512(ib);
    }
}

/* Phases q < nq of one row of both tile rows (src_a, src_b; NULL: zeros), the
 * second's lanes from `second` on. Phases q >= m (phases q - m one tile on)
 * are picked from the rows read from column m - pad. */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE void wino_pair_phases_avx512(int m, int nq, const __m512i pick_a[4],
                                                                         const __m512i pick_b[4], __mmask16 second,
                                                                         const float *src_a, const float *src_b,
                                                                         int64_t w, int64_t pad, __m512 phase[6])
{
    const __m512 a0 = wino_load16_avx512(src_a, -pad, w), a1 = wino_load16_avx512(src_a, 16 - pad, w);
    const __m512 b0 = wino_load16_avx512(src_b, -pad, w), b1 = wino_load16_avx512(src_b, 16 - pad, w);
    __m512 as0 = a0, as1 = a1, bs0 = b0, bs1 = b1;
    if (nq > m) {
        as0 = wino_load16_avx512(src_a, m - pad, w);
        as1 = wino_load16_avx512(src_a, m + 16 - pad, w);
        bs0 = wino_load16_avx512(src_b, m - pad, w);
        bs1 = wino_load16_avx512(src_b, m + 16 - pad, w);
    }
    for (int q = 0; q < nq; q++) {
        const int qq = q < m ? q : q - m;
        const __m512 va = q < m ? _mm512_permutex2var_ps(a0, pick_a[qq], a1)
                                : _mm512_permutex2var_ps(as0, pick_a[qq], as1);
        const __m512 vb = q < m ? _mm512_permutex2var_ps(b0, pick_b[qq], b1)
                                : _mm512_permutex2var_ps(bs0, pick_b[qq], bs1);
        phase[q] = _mm512_mask_blend_ps(second, va, vb);
    }
}

/* Row i of the first tile row is at plane_a + (hi0_a + i) * w, of the second at
 * plane_b + (hi0_b + i) * w (zero outside [0, h)). Returns 0 where it does not
 * apply. */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE int wino_gather_pair_avx512(int m, float *dst, int64_t ls, int64_t count,
                                                                        const float *plane_a, const float *plane_b,
                                                                        int64_t h, int64_t w, int64_t hi0_a,
                                                                        int64_t hi0_b, int64_t pad, int nrows, int nq)
{
    if (!WINO_PAIR_FITS_AVX512(m, count))
        return 0;
    __mmask16 keep, second;
    __m512i pick_a[4], pick_b[4];
    wino_pair_picks_avx512(m, count, 1, pick_a, pick_b, &keep, &second);
    for (int i = 0; i < nrows; i++) {
        float *d = dst + (int64_t)i * nq * ls;
        const int64_t ra = hi0_a + i, rb = hi0_b + i;
        __m512 phase[6];
        wino_pair_phases_avx512(m, nq, pick_a, pick_b, second, ra >= 0 && ra < h ? plane_a + ra * w : NULL,
                                rb >= 0 && rb < h ? plane_b + rb * w : NULL, w, pad, phase);
        for (int q = 0; q < nq; q++)
            _mm512_mask_storeu_ps(d + q * ls, keep, phase[q]);
    }
    return 1;
}
#define WINO_GATHER_PAIR_FAST_AVX512(...) wino_gather_pair_avx512(__VA_ARGS__)

/* The pair gather of the input followed by the right side B of its transform
 * (WINO2_BT, WINO4_BT in winograd_template.h): the phases of each window row
 * (rows_a, rows_b: a rows of w values, times B^T already) are combined in
 * registers and stored as V's positions a*i + j of that row, at out + (a*i +
 * j) * ldp, so the lane arrays are never written and read back (conv D's
 * gather and input transform, one thread: 23.2% -> 20.9% of its forward +
 * backward; conv E's, with 64 channels' 36 rows of V to store into, stayed at
 * 12-13%). rows_b NULL: one tile row. Lanes past the tiles are not written.
 * Returns 0 where it does not apply (the same for every call with these m and
 * count). */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE int wino_gather_pair_bt_avx512(int m, float *out, int64_t ldp,
                                                                           int64_t count, const float *rows_a,
                                                                           const float *rows_b, int64_t w,
                                                                           int64_t pad)
{
    if (!WINO_PAIR_FITS_AVX512(m, count))
        return 0;
    const int a = m + 2;
    __mmask16 keep, second;
    __m512i pick_a[4], pick_b[4];
    wino_pair_picks_avx512(m, count, rows_b != NULL, pick_a, pick_b, &keep, &second);
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    for (int i = 0; i < a; i++) {
        __m512 c[6], o[6];
        wino_pair_phases_avx512(m, a, pick_a, pick_b, second, rows_a + i * w, rows_b ? rows_b + i * w : NULL, w,
                                pad, c);
        if (m == 4) {
            const __m512 c3m1 = _mm512_sub_ps(c[3], c[1]), c4m2 = _mm512_sub_ps(c[4], c[2]);
            o[0] = _mm512_add_ps(_mm512_fmsub_ps(four, c[0], _mm512_mul_ps(five, c[2])), c[4]);
            o[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(c[1], c[2]), _mm512_add_ps(c[3], c[4]));
            o[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(c[1], c[2]), _mm512_sub_ps(c[4], c[3]));
            o[3] = _mm512_fmadd_ps(two, c3m1, c4m2);
            o[4] = _mm512_fnmadd_ps(two, c3m1, c4m2);
            o[5] = _mm512_add_ps(_mm512_fmsub_ps(four, c[1], _mm512_mul_ps(five, c[3])), c[5]);
        } else {
            o[0] = _mm512_sub_ps(c[0], c[2]);
            o[1] = _mm512_add_ps(c[1], c[2]);
            o[2] = _mm512_sub_ps(c[2], c[1]);
            o[3] = _mm512_sub_ps(c[1], c[3]);
        }
        for (int j = 0; j < a; j++)
            _mm512_mask_storeu_ps(out + (int64_t)(a * i + j) * ldp, keep, o[j]);
    }
    return 1;
}
#define WINO_GATHER_PAIR_BT_FAST_AVX512(...) wino_gather_pair_bt_avx512(__VA_ARGS__)
#define WINO_GATHER_PAIR_BT_FITS_AVX512(m, count) WINO_PAIR_FITS_AVX512(m, count)

/* A (a x m) of F(m x m, 3x3) on m vectors of any width (GCC's vector
 * arithmetic; the target's FMA contracts b02 and b13): out[k] = sum_i A[k][i]
 * in[i], as WINO2_A and WINO4_A in winograd_template.h */
#define WINO_A_VECTORS(m, in, out)                                                                        \
    do {                                                                                                  \
        if ((m) == 4) {                                                                                   \
            const __typeof__((in)[0]) a02 = (in)[0] + (in)[2], a13 = (in)[1] + (in)[3];                   \
            const __typeof__((in)[0]) b02 = (in)[0] + 4.0f * (in)[2], b13 = 2.0f * ((in)[1] + 4.0f * (in)[3]); \
            (out)[0] = (in)[0];                                                                           \
            (out)[1] = a02 + a13;                                                                         \
            (out)[2] = a02 - a13;                                                                         \
            (out)[3] = b02 + b13;                                                                         \
            (out)[4] = b02 - b13;                                                                         \
            (out)[5] = (in)[3];                                                                           \
        } else {                                                                                          \
            (out)[0] = (in)[0];                                                                           \
            (out)[1] = (in)[0] + (in)[1];                                                                 \
            (out)[2] = (in)[0] - (in)[1];                                                                 \
            (out)[3] = -(in)[1];                                                                          \
        }                                                                                                 \
    } while (0)

FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE void wino_a_avx512(int m, const __m512 *in, __m512 *out)
{
    WINO_A_VECTORS(m, in, out);
}

/* The pair gather of the gradient dy (pad 0, m phases) followed by both sides
 * of its transform, Z = A dY A^T, in registers, storing Z's a*a positions of
 * both tile rows at out + p * ldp (as wino_gather_pair_bt_avx512 does for V):
 * the gathered tiles and the transform's temporaries are never written and
 * read back. plane_b NULL: one tile row. Returns 0 where it does not apply
 * (the same for every call with these m and count). Each lane is computed
 * alike wherever its tile row falls, so Z does not depend on the pairing. */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE int wino_gather_pair_z_avx512(int m, float *out, int64_t ldp,
                                                                          int64_t count, const float *plane_a,
                                                                          const float *plane_b, int64_t h, int64_t w,
                                                                          int64_t hi0_a, int64_t hi0_b)
{
    if (!WINO_PAIR_FITS_AVX512(m, count))
        return 0;
    const int a = m + 2;
    __mmask16 keep, second;
    __m512i pick_a[4], pick_b[4];
    wino_pair_picks_avx512(m, count, plane_b != NULL, pick_a, pick_b, &keep, &second);
    __m512 e[4][6]; /* e[q][i]: phase q (column) of dy's row i of the tiles */
    for (int i = 0; i < m; i++) {
        const int64_t ra = hi0_a + i, rb = hi0_b + i;
        __m512 phase[6];
        wino_pair_phases_avx512(m, m, pick_a, pick_b, second, ra >= 0 && ra < h ? plane_a + ra * w : NULL,
                                plane_b && rb >= 0 && rb < h ? plane_b + rb * w : NULL, w, 0, phase);
        for (int q = 0; q < m; q++)
            e[q][i] = phase[q];
    }
    __m512 t[6][4]; /* t[k][q] = sum_i A[k][i] e[q][i] */
    for (int q = 0; q < m; q++) {
        __m512 col[6];
        wino_a_avx512(m, e[q], col);
        for (int k = 0; k < a; k++)
            t[k][q] = col[k];
    }
    for (int k = 0; k < a; k++) {
        __m512 z[6];
        wino_a_avx512(m, t[k], z);
        for (int l = 0; l < a; l++)
            _mm512_mask_storeu_ps(out + (int64_t)(a * k + l) * ldp, keep, z[l]);
    }
    return 1;
}
#define WINO_GATHER_PAIR_Z_FAST_AVX512(...) wino_gather_pair_z_avx512(__VA_ARGS__)

/* The data gradient's scatter of one tile row (wino_scatter_body in
 * winograd_template.h) in float32 on AVX-512, for rows of up to 15 tiles: the
 * a phases of each row of the tiles are one vector each (lane tx: tile tx),
 * phases m and m + 1 are added to phases 0 and 1 one lane on (tile tx - 1's
 * share of the columns it shares with tile tx, then the row's last two
 * columns in lane count), and two-source permutes interleave the m phases
 * into the row's columns, 16 at a time, stored or added with masks to the
 * columns inside [0, w). The generic loop went element by element: 17% of
 * conv D's backward. The sums are those of the generic loop (each of two
 * terms). Returns -1 where it does not apply, else 0 where a value stored or
 * added is not finite. */
FNN_TARGET_AVX512 static FNN_ALWAYS_INLINE int wino_scatter_fast_avx512(int m, const float *dd, int64_t ls,
                                                                         int64_t count, float *plane, float *seam,
                                                                         int64_t h, int64_t w, int64_t row0,
                                                                         int64_t pad, int add_rows)
{
    const int a = m + 2;
    if ((m != 2 && m != 4) || count > 15 || count < 1 || pad > 2)
        return -1;
    const int64_t span = m * (count + 1);               /* columns -pad .. span - 1 - pad of the row */
    const int nvec = (int)((span + 15) / 16);           /* at most 4 of 16 */
    const __mmask16 keep = (__mmask16)((1u << count) - 1);
    /* idx[k]: vector k of the row from phases (0, 1) and from (2, 3): column
     * 16k + l is phase l % m of lane 16k/m + l/m (two-source index: phase 1 or 3 from the second) */
    __m512i idx[4];
    for (int k = 0; k < nvec; k++) {
        int ix[16];
        for (int l = 0; l < 16; l++) {
            const int lane = (16 * k + l) / m, q = (16 * k + l) % m;
            ix[l] = (lane & 15) + ((q & 1) ? 16 : 0);
        }
        idx[k] = _mm512_loadu_si512(ix);
    }
    const __mmask16 odd_pair = m == 4 ? (__mmask16)0xCCCC : (__mmask16)0; /* phases 2, 3 of F(4x4) */
    /* column masks of each vector: inside [0, w) */
    __mmask16 cols[4];
    for (int k = 0; k < nvec; k++)
        cols[k] = wino_cols16(16 * k - pad, w);
    __mmask16 bad = 0;
    for (int i = 0; i < a; i++) {
        const int64_t row = row0 + i;
        if (row < 0 || row >= h)
            continue;
        const float *src = dd + (int64_t)a * i * ls;
        __m512 ph[6];
        for (int j = 0; j < a; j++)
            ph[j] = _mm512_maskz_loadu_ps(keep, src + j * ls);
        /* lane tx of phase q < 2: tile tx's column m*tx + q plus tile tx-1's (its phase m + q) */
        for (int q = 0; q < 2; q++)
            ph[q] = _mm512_add_ps(ph[q], _mm512_castsi512_ps(_mm512_alignr_epi32(
                                              _mm512_castps_si512(ph[m + q]), _mm512_setzero_si512(), 15)));
        const int add = i < add_rows && !seam;
        float *dst = i < add_rows && seam ? seam + i * w : plane + row * w;
        for (int k = 0; k < nvec; k++) {
            if (!cols[k])
                continue;
            __m512 vals = _mm512_permutex2var_ps(ph[0], idx[k], ph[1]);
            if (m == 4)
                vals = _mm512_mask_blend_ps(odd_pair, vals, _mm512_permutex2var_ps(ph[2], idx[k], ph[3]));
            bad |= _mm512_mask_fpclass_ps_mask(cols[k], vals, 0x99); /* NaN, +inf, -inf */
            float *d = dst + 16 * k - pad;
            if (add)
                vals = _mm512_add_ps(_mm512_maskz_loadu_ps(cols[k], d), vals);
            _mm512_mask_storeu_ps(d, cols[k], vals);
        }
    }
    return bad ? 0 : 1;
}
#define WINO_SCATTER_FAST_AVX512(...) wino_scatter_fast_avx512(__VA_ARGS__)

/* One side of F(4x4)'s output transform, A^T (WINO4_AT) on six vectors: the
 * same operations in the same order as the lane loop's, so the same bits */
#define WINO4_AT_VECTORS(s, out)                                                                          \
    do {                                                                                                  \
        const __m512 a12 = _mm512_add_ps(s[1], s[2]), d12 = _mm512_sub_ps(s[1], s[2]);                    \
        const __m512 a34 = _mm512_add_ps(s[3], s[4]), d34 = _mm512_sub_ps(s[3], s[4]);                    \
        out[0] = _mm512_add_ps(_mm512_add_ps(a12, a34), s[0]);                                            \
        out[1] = _mm512_add_ps(d12, _mm512_mul_ps(_mm512_set1_ps(2.0f), d34));                            \
        out[2] = _mm512_add_ps(a12, _mm512_mul_ps(_mm512_set1_ps(4.0f), a34));                            \
        out[3] = _mm512_add_ps(_mm512_add_ps(d12, _mm512_mul_ps(_mm512_set1_ps(8.0f), d34)), s[5]);       \
    } while (0)

/* F(4x4)'s output transform Y = A^T M A for one filter, 16 lanes at a time in
 * registers (M[p] at mm + p*ldp, len a multiple of 16), where the lane loops
 * went through tmp, stored each output alone at its place in o and then read
 * o again for the finite check (perf share of conv D's forward 20.3% -> 15.5%;
 * the forward 1.98-2.06 -> 1.87-1.95 ms, one thread, alternating builds). Row
 * k of lane b goes to o[k*4*len + 4*b + q], each row's four vectors (q)
 * interleaved by a 4 x 16 transpose. The same operations in the same order as
 * the lane loops, so the same bits. Returns whether the outputs of the lanes
 * below tb are finite, or -1 where it does not apply (F(2x2)). */
FNN_TARGET_AVX512 static int wino_output_fast_avx512(int m, const float *mm, int64_t ldp, int64_t len, int64_t tb,
                                                     float *o)
{
    if (m != 4)
        return -1;
    __mmask16 bad = 0;
    for (int64_t b0 = 0; b0 < len; b0 += 16) {
        const __mmask16 live = wino_cols16(b0, tb); /* the tiles' lanes, not the padding past them */
        __m512 t[4][6];
        for (int j = 0; j < 6; j++) {
            __m512 s[6], c[4];
            const float *col = mm + j * ldp + b0; /* M[6i + j]: rows 6 ldp apart */
            for (int i = 0; i < 6; i++, col += 6 * ldp)
                s[i] = _mm512_loadu_ps(col);
            WINO4_AT_VECTORS(s, c);
            for (int k = 0; k < 4; k++)
                t[k][j] = c[k];
        }
        for (int k = 0; k < 4; k++) {
            __m512 y[4];
            WINO4_AT_VECTORS(t[k], y);
            for (int q = 0; q < 4; q++)
                bad = _kor_mask16(bad, _mm512_mask_fpclass_ps_mask(live, y[q], 0x99)); /* NaN, +inf, -inf */
            /* lane b of y[q] -> element 4b + q of the row's 64: pairs within
             * 128-bit quarters, then the quarters (u_q holds lanes q, q+4, q+8, q+12) */
            const __m512 t0 = _mm512_unpacklo_ps(y[0], y[1]), t1 = _mm512_unpackhi_ps(y[0], y[1]);
            const __m512 t2 = _mm512_unpacklo_ps(y[2], y[3]), t3 = _mm512_unpackhi_ps(y[2], y[3]);
            const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xEE);
            const __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xEE);
            const __m512 v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u2, u3, 0x44);
            const __m512 v2 = _mm512_shuffle_f32x4(u0, u1, 0xEE), v3 = _mm512_shuffle_f32x4(u2, u3, 0xEE);
            float *row = o + (int64_t)k * 4 * len + 4 * b0;
            _mm512_storeu_ps(row, _mm512_shuffle_f32x4(v0, v1, 0x88));
            _mm512_storeu_ps(row + 16, _mm512_shuffle_f32x4(v0, v1, 0xDD));
            _mm512_storeu_ps(row + 32, _mm512_shuffle_f32x4(v2, v3, 0x88));
            _mm512_storeu_ps(row + 48, _mm512_shuffle_f32x4(v2, v3, 0xDD));
        }
    }
    return bad ? 0 : 1;
}
#define WINO_OUTPUT_FAST_AVX512(...) wino_output_fast_avx512(__VA_ARGS__)

/* The scatter on AVX2 for F(4x4) rows of up to 7 tiles (28-wide images): the
 * phases as above (lane tx: tile tx, with lane count for the row's last two
 * columns), a 4 x 8 transpose making each pair of tiles' 8 columns one vector,
 * stored or added whole where all 8 columns lie inside the row, element by
 * element at its two ends (a masked store, vmaskmovps, is slow on AMD cores). */
FNN_TARGET_AVX2 static FNN_ALWAYS_INLINE int wino_scatter_fast_avx2(int m, const float *dd, int64_t ls,
                                                                     int64_t count, float *plane, float *seam,
                                                                     int64_t h, int64_t w, int64_t row0,
                                                                     int64_t pad, int add_rows)
{
    if (m != 4 || count > 7 || count < 1 || pad > 2)
        return -1;
    const int a = 6;
    const int nvec = (int)((4 * (count + 1) + 7) / 8);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    /* lanes past the tile row hold the next tile row's tiles (the loads stay
     * inside the block's lanes: FNN_WINO_GATHER_SLACK): zeroed */
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), lane));
    const __m256i up = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    const __m256 zero = _mm256_setzero_ps();
    int64_t lo[4], hi[4];
    __m256 inside[4];
    for (int k = 0; k < nvec; k++) {
        const int64_t c0 = 8 * k - pad;
        lo[k] = c0 < 0 ? -c0 : 0;
        hi[k] = w - c0 < 8 ? w - c0 : 8;
        const __m256i col = _mm256_add_epi32(_mm256_set1_epi32((int)c0), lane);
        inside[k] = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                                                            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), col)));
    }
    __m256 bad = zero;
    for (int i = 0; i < a; i++) {
        const int64_t row = row0 + i;
        if (row < 0 || row >= h)
            continue;
        const float *src = dd + (int64_t)a * i * ls;
        __m256 ph[6];
        for (int j = 0; j < a; j++)
            ph[j] = _mm256_and_ps(_mm256_loadu_ps(src + j * ls), keep);
        for (int q = 0; q < 2; q++)
            ph[q] = _mm256_add_ps(ph[q], _mm256_blend_ps(_mm256_permutevar8x32_ps(ph[4 + q], up), zero, 0x01));
        const __m256 t0 = _mm256_unpacklo_ps(ph[0], ph[1]), t1 = _mm256_unpackhi_ps(ph[0], ph[1]);
        const __m256 t2 = _mm256_unpacklo_ps(ph[2], ph[3]), t3 = _mm256_unpackhi_ps(ph[2], ph[3]);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 vals[4];
        vals[0] = _mm256_permute2f128_ps(u0, u1, 0x20);
        vals[1] = _mm256_permute2f128_ps(u2, u3, 0x20);
        vals[2] = _mm256_permute2f128_ps(u0, u1, 0x31);
        vals[3] = _mm256_permute2f128_ps(u2, u3, 0x31);
        const int add = i < add_rows && !seam;
        float *dst = i < add_rows && seam ? seam + i * w : plane + row * w;
        for (int k = 0; k < nvec; k++) {
            if (hi[k] <= lo[k])
                continue;
            /* x - x is NaN for an inf or a NaN, 0 otherwise */
            bad = _mm256_or_ps(bad, _mm256_and_ps(inside[k], _mm256_cmp_ps(_mm256_sub_ps(vals[k], vals[k]), zero,
                                                                           _CMP_NEQ_UQ)));
            float *d = dst + 8 * k - pad;
            if (lo[k] == 0 && hi[k] == 8) {
                _mm256_storeu_ps(d, add ? _mm256_add_ps(_mm256_loadu_ps(d), vals[k]) : vals[k]);
            } else {
                float part[8];
                _mm256_storeu_ps(part, vals[k]);
                for (int64_t l = lo[k]; l < hi[k]; l++)
                    d[l] = add ? d[l] + part[l] : part[l];
            }
        }
    }
    return _mm256_movemask_ps(bad) ? 0 : 1;
}
#define WINO_SCATTER_FAST_AVX2(...) wino_scatter_fast_avx2(__VA_ARGS__)

/* The same on AVX2 for F(4x4) rows of up to 8 tiles (28- and 32-wide images):
 * eight values of a row (two tiles) are put phase-major by one permute, a 4x4
 * transpose of value pairs makes each phase's eight tiles one vector, and
 * phases 4 and 5 are phases 0 and 1 one tile on (the ninth tile's from a fifth
 * vector). Each phase is stored as 8 whole lanes (FNN_WINO_GATHER_SLACK): a
 * masked store (vmaskmovps) made the gather slower than the scalar loop on
 * this AMD core. */
/* Phases q < nq of one row of a tile row of up to 8 F(4x4) tiles (src: the
 * row, NULL for zeros; w <= 64): lane tx of v[q] is column 4*tx + q - pad */
FNN_TARGET_AVX2 static FNN_ALWAYS_INLINE void wino_row_phases_avx2(const float *src, int64_t w, int64_t pad, int nq,
                                                                    __m256 v[6])
{
    if (!src) {
        for (int q = 0; q < nq; q++)
            v[q] = _mm256_setzero_ps();
        return;
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i pairs = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7); /* (tile 0, tile 1) of phase 0, 1, 2, 3 */
    const __m256i next = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    const int nregs = nq > 4 ? 5 : 4;
    /* r[j] lane l = column 8j + l - pad of the row, zero outside [0, w) */
    __m256 r[5], p[4];
    for (int j = 0; j < nregs; j++) {
        const int c0 = 8 * j - (int)pad;
        const __m256i col = _mm256_add_epi32(_mm256_set1_epi32(c0), lane);
        const __m256i ok = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                                               _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), col));
        r[j] = _mm256_maskload_ps(src + c0, ok);
    }
    for (int j = 0; j < 4; j++)
        p[j] = _mm256_permutevar8x32_ps(r[j], pairs);
    const __m256d t0 = _mm256_unpacklo_pd(_mm256_castps_pd(p[0]), _mm256_castps_pd(p[1]));
    const __m256d t1 = _mm256_unpackhi_pd(_mm256_castps_pd(p[0]), _mm256_castps_pd(p[1]));
    const __m256d t2 = _mm256_unpacklo_pd(_mm256_castps_pd(p[2]), _mm256_castps_pd(p[3]));
    const __m256d t3 = _mm256_unpackhi_pd(_mm256_castps_pd(p[2]), _mm256_castps_pd(p[3]));
    v[0] = _mm256_castpd_ps(_mm256_permute2f128_pd(t0, t2, 0x20));
    v[1] = _mm256_castpd_ps(_mm256_permute2f128_pd(t1, t3, 0x20));
    v[2] = _mm256_castpd_ps(_mm256_permute2f128_pd(t0, t2, 0x31));
    v[3] = _mm256_castpd_ps(_mm256_permute2f128_pd(t1, t3, 0x31));
    for (int q = 4; q < nq; q++)
        v[q] = _mm256_blend_ps(_mm256_permutevar8x32_ps(v[q - 4], next),
                               _mm256_permutevar8x32_ps(r[4], _mm256_set1_epi32(q - 4)), 0x80);
}

FNN_TARGET_AVX2 static FNN_ALWAYS_INLINE int wino_gather_fast_avx2(int m, float *dst, int64_t ls, int64_t count,
                                                                    const float *plane, int64_t h, int64_t w,
                                                                    int64_t hi0, int64_t pad, int nrows, int nq)
{
    if (m != 4 || count > 8 || count < 1 || w > 64)
        return 0;
    for (int i = 0; i < nrows; i++) {
        const int64_t row = hi0 + i;
        __m256 v[6];
        wino_row_phases_avx2(row >= 0 && row < h ? plane + row * w : NULL, w, pad, nq, v);
        for (int q = 0; q < nq; q++)
            _mm256_storeu_ps(dst + (int64_t)i * nq * ls + q * ls, v[q]);
    }
    return 1;
}
#define WINO_GATHER_FAST_AVX2(...) wino_gather_fast_avx2(__VA_ARGS__)

FNN_TARGET_AVX2 static FNN_ALWAYS_INLINE void wino4_a_avx2(const __m256 *in, __m256 *out)
{
    WINO_A_VECTORS(4, in, out);
}

/* The gradient's gather with both sides of A dY A^T in registers, straight
 * into Z, on AVX2 for F(4x4) tile rows of up to 8 tiles, one tile row after
 * the other (as wino_gather_pair_z_avx512): each position is stored as 8 whole
 * lanes, the lanes past the tile row (zeros: columns past the row) rewritten
 * by the next tile row's or lying in the block's slack. */
FNN_TARGET_AVX2 static FNN_ALWAYS_INLINE int wino_gather_z_avx2(int m, float *out, int64_t ldp, int64_t count,
                                                                 const float *plane_a, const float *plane_b,
                                                                 int64_t h, int64_t w, int64_t hi0_a, int64_t hi0_b)
{
    if (m != 4 || count > 8 || count < 1 || w > 64)
        return 0;
    for (int half = 0; half < 2; half++) {
        const float *plane = half ? plane_b : plane_a;
        const int64_t hi0 = half ? hi0_b : hi0_a;
        if (!plane)
            break;
        __m256 e[4][4]; /* e[q][i]: phase q of row i of the tiles */
        for (int i = 0; i < 4; i++) {
            const int64_t row = hi0 + i;
            __m256 v[6];
            wino_row_phases_avx2(row >= 0 && row < h ? plane + row * w : NULL, w, 0, 4, v);
            for (int q = 0; q < 4; q++)
                e[q][i] = v[q];
        }
        __m256 t[6][4];
        for (int q = 0; q < 4; q++) {
            __m256 col[6];
            wino4_a_avx2(e[q], col);
            for (int k = 0; k < 6; k++)
                t[k][q] = col[k];
        }
        float *o = out + half * count;
        for (int k = 0; k < 6; k++) {
            __m256 z[6];
            wino4_a_avx2(t[k], z);
            for (int l = 0; l < 6; l++)
                _mm256_storeu_ps(o + (int64_t)(6 * k + l) * ldp, z[l]);
        }
    }
    return 1;
}
#define WINO_GATHER_PAIR_Z_FAST_AVX2(...) wino_gather_z_avx2(__VA_ARGS__)
#endif

#define T float
#define TBITS uint32_t /* T's bits, for the masks of wino_zero_windows */
#define SFX f32
#include "winograd_template.h"
#undef T
#undef TBITS
#undef SFX
#undef WINO_GATHER_FAST_AVX512
#undef WINO_GATHER_PAIR_FAST_AVX512
#undef WINO_GATHER_PAIR_BT_FAST_AVX512
#undef WINO_GATHER_PAIR_BT_FITS_AVX512
#undef WINO_GATHER_PAIR_Z_FAST_AVX512
#undef WINO_GATHER_FAST_AVX2
#undef WINO_GATHER_PAIR_Z_FAST_AVX2
#undef WINO_SCATTER_FAST_AVX512
#undef WINO_OUTPUT_FAST_AVX512
#undef WINO_SCATTER_FAST_AVX2

#define T double
#define TBITS uint64_t
#define SFX f64
#include "winograd_template.h"
#undef T
#undef TBITS
#undef SFX
