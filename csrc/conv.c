/* Convolution forward and backward on the GEMM driver (csrc/gemm.c).
 *
 * Per image n, with P = oh*ow output positions and CK = C*fh*fw:
 *   forward   y[n] (F x P)   = W (F x CK) @ col^T (CK x P)   B packed from the image
 *   weights   dW  (F x CK)  += dy[n] (F x P) @ col (P x CK)  B packed from the image
 *   data      dcol^T (CK x P) = W^T @ dy[n], then scattered into dx[n] in
 *             column chunks small enough to stay in L2 (no full col buffer)
 * Small per-image products run batch-parallel (one image per thread at a time,
 * single-threaded GEMMs); dW is then summed per thread and the partial sums
 * added in thread order, so results are fixed for a given thread count.
 */
#include "conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "gemm.h"
#include "kernels.h"

#if FNN_X86_SIMD
#include <immintrin.h>
#endif

/* Batch-parallel when the per-image product is below this many multiply-adds
 * (or the batch is large enough to balance): intra-GEMM threading of small
 * products costs more in barriers than it gains. */
#define FNN_CONV_MIN_MACS_INNER_PARALLEL (1 << 22)
/* Elements of the row buffer of the forward packer (on the stack, in L1). */
#define FNN_CONV_PACK_ROW 1024
/* Bytes of the per-thread dcol^T chunk of the data gradient (half of L2). */
#define FNN_CONV_DX_CHUNK_BYTES (256 * 1024)

typedef struct {
    int64_t c, h, w, fh, fw, sh, sw, ph, pw, oh, ow;
} fnn_conv_geom;

static fnn_conv_geom conv_geom(int64_t c, int64_t h, int64_t w, int64_t fh, int64_t fw, int64_t sh, int64_t sw,
                               int64_t ph, int64_t pw)
{
    fnn_conv_geom g = {c, h, w, fh, fw, sh, sw, ph, pw, 0, 0};
    g.oh = (h + 2 * ph - fh) / sh + 1;
    g.ow = (w + 2 * pw - fw) / sw + 1;
    return g;
}

/* Output columns ox whose input column ox*sw + j - pw lies in [0, W): [lo, hi). */
static inline void valid_ox(const fnn_conv_geom *g, int64_t j, int64_t *lo, int64_t *hi)
{
    int64_t off = g->pw - j; /* wi = ox*sw - off */
    int64_t l = off > 0 ? (off + g->sw - 1) / g->sw : 0;
    int64_t last = g->w - 1 + off; /* wi <= W-1  <=>  ox <= (W-1+off)/sw */
    int64_t h = last >= 0 ? last / g->sw + 1 : 0;
    if (h > g->ow)
        h = g->ow;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

#define T float
#define SFX f32
#include "conv_template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "conv_template.h"
#undef T
#undef SFX
