/* Winograd F(2x2, 3x3) convolution: 3x3 filters, stride 1 (Lavin and Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * Each 2x2 output tile comes from a 4x4 input tile d and a filter g as
 *     Y = A^T [ (G g G^T) . (B^T d B) ] A         (. elementwise)
 * so the 9 multiply-adds per output of the direct convolution become 4, and
 * for every one of the 16 positions p of the transformed tile the sum over
 * channels is one GEMM:
 *     forward   M[p] (F x T) = U[p] (F x C) @ V[p] (C x T)   T tiles
 *     weights   dU[p] (F x C) += Z[p] (F x T) @ V[p]^T       Z = A dY A^T
 * and the data gradient is the forward with the flipped, channel-transposed
 * filters (padding 2 - pad), as on the direct path.
 *
 * Tiles run in blocks of whole tile rows, sized so the block's transformed
 * input and output (16 x (C + F) x T values) stay in L2; the transforms are
 * written once and compiled for each ISA (the compiler vectorises them along
 * the tiles of a row). The forward's products run on the indirect-B
 * microkernel straight from V, the weight gradient's on the GEMM driver. Blocks are split
 * statically over threads, so the forward result does not depend on the thread
 * count and the weight gradient (per-thread partial sums added in thread order)
 * is fixed for a given one.
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

#if defined(__GNUC__) || defined(__clang__)
#define FNN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FNN_ALWAYS_INLINE inline
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define FNN_NO_LIBC_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FNN_NO_LIBC_CALLS
#endif

/* The transforms of a tile row run over twv = tw rounded up to this many tiles,
 * so the compiler's vector loops have no scalar remainder (a row of 14 tiles
 * would otherwise run entirely scalar with 16-lane vectors). The extra lanes
 * hold values of zero padding: row r of a block writes lanes [r*tw, r*tw + twv),
 * and row r + 1, written next, overwrites the ones that are its own. */
#define FNN_WINO_LANES 16

/* Bytes of the per-block transformed input and output (fits L2 on the targets,
 * leaving room for the GEMM's packed panels). */
#define FNN_WINO_BLOCK_BYTES (1024 * 1024)

typedef struct {
    int64_t n, c, f, h, w, ph, pw; /* the convolution: x (n,c,h,w) -> (n,f,oh,ow) */
    int64_t oh, ow, th, tw;        /* output size; 2x2 tiles per column and row */
    int64_t twv;                   /* tw rounded up to FNN_WINO_LANES */
    int64_t rows;                  /* tile rows over the batch: n * th */
    int64_t block_rows;            /* tile rows per block */
    int64_t ldb;                   /* lane stride of a block: room for block_rows * tw + twv lanes */
    int64_t wpad;                  /* length of a zero-padded input row: 2 * twv + 2 */
} fnn_wino_geom;

static fnn_wino_geom wino_geom(int64_t n, int64_t c, int64_t h, int64_t w, int64_t f, int64_t ph, int64_t pw,
                               int64_t dtype_bytes, int nr, int nth)
{
    fnn_wino_geom g;
    g.n = n;
    g.c = c;
    g.f = f;
    g.h = h;
    g.w = w;
    g.ph = ph;
    g.pw = pw;
    g.oh = h + 2 * ph - 2;
    g.ow = w + 2 * pw - 2;
    g.th = (g.oh + 1) / 2;
    g.tw = (g.ow + 1) / 2;
    g.twv = (g.tw + FNN_WINO_LANES - 1) / FNN_WINO_LANES * FNN_WINO_LANES;
    g.rows = n * g.th;
    int64_t tiles = FNN_WINO_BLOCK_BYTES / (16 * (c + f) * dtype_bytes);
    int64_t br = tiles / g.tw;
    if (br < 1)
        br = 1;
    /* enough blocks to keep every thread busy */
    int64_t per_thread = (g.rows + nth - 1) / nth;
    if (br > per_thread)
        br = per_thread;
    if (br < 1)
        br = 1;
    g.block_rows = br;
    /* room for the last row's extra lanes, and for the products' last NR-wide panel */
    const int64_t tb = br * g.tw, panels = (tb + nr - 1) / nr * nr;
    g.ldb = ((tb + g.twv > panels ? tb + g.twv : panels) + 15) / 16 * 16;
    g.wpad = 2 * g.twv + 2;
    return g;
}

/* Elements between the 16 transformed matrices of a block (rows of ldb lanes
 * each). The transforms write all 16 at once; a stride that is a multiple of
 * 4 KiB (64 channels of 144 lanes is 9 x 4 KiB) would put all 16 streams in one
 * L1 set, so the stride is kept 128 bytes off such multiples. */
static inline int64_t wino_slab(const fnn_wino_geom *g, int64_t rows) { return rows * g->ldb + 32; }

int fnn_winograd_applies(fnn_ctx ctx, int64_t n, int64_t c, int64_t f, int64_t h, int64_t w, int64_t fh,
                         int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    if (ctx.conv_algo == FNN_CONV_GEMM || fh != 3 || fw != 3 || sh != 1 || sw != 1 || ph < 0 || pw < 0 ||
        ph > 2 || pw > 2 || h + 2 * ph < 3 || w + 2 * pw < 3)
        return 0;
    if (ctx.conv_algo == FNN_CONV_WINOGRAD)
        return 1;
    /* The products are F x C by C x tiles: with fewer than 16 input channels they
     * are too thin to repay the transforms. The filters are transformed on every
     * call, serially, about 30 cycles per (F, C) pair, while each tile saves about
     * 0.6 cycles per pair on one thread: below 256 tiles a thread that fixed cost
     * wins (1 x 32 x 7 x 7 into 64 channels ran 4x slower, 8 x 64 x 8 x 8 broke
     * even, 8 x 16 x 14 x 14 into 32 lost 16% on 2 threads). 16 output channels
     * fill the microkernel's rows only half as well: there Winograd needs 32 input
     * channels and 2048 tiles a thread (64 x 32 x 28 x 28 into 16, the data
     * gradient of a 16 -> 32 layer, gains 10-12% on 1 and 2 threads; 16 x 32 x 14
     * x 14 into 16 loses 9% on 1 thread and 46% on 2). */
    const int64_t tiles = n * ((h + 2 * ph - 1) / 2) * ((w + 2 * pw - 1) / 2);
    const int64_t nth = ctx.nthreads < 1 ? 1 : ctx.nthreads;
    if (c >= 16 && f >= 32)
        return tiles >= 256 * nth;
    return c >= 32 && f >= 16 && tiles >= 2048 * nth;
}

#define T float
#define SFX f32
#include "winograd_template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "winograd_template.h"
#undef T
#undef SFX
