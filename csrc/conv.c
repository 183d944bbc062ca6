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

/* The gathered weight gradient's patch rows of 32 floats on AVX-512
 * (conv_template.h, build_patches): each row is two vectors, [1, the taps]
 * then zeros, each assembled from the runs of taps that fall in it, two runs
 * at a time by a two-source permute of 16 floats loaded from each run's start,
 * then stored whole, where the vector copies of each run took six stores a
 * row (one split across cache lines). I's pooled backward, 1 thread, 0.77-0.78
 * -> 0.70-0.71 ms. */
#define FNN_PATCH_PAIRS 4 /* pairs of runs a vector at most */
typedef struct {
    int pairs[2];
    int64_t off_a[2][FNN_PATCH_PAIRS], off_b[2][FNN_PATCH_PAIRS]; /* the pair's runs in the padded image */
    int32_t idx[2][FNN_PATCH_PAIRS][16];                           /* lanes: j from run a, 16 + j from run b */
    uint16_t mask[2][FNN_PATCH_PAIRS];                             /* the lanes of the pair's runs */
} fnn_patch_plan;

/* The plan for `runs` runs of fw taps each at off[r]; 0 where the row is not
 * 32 floats or a vector would need more than FNN_PATCH_PAIRS pairs. */
static int fnn_patch_plan_f32(fnn_patch_plan *pl, int64_t runs, int64_t fw, const int64_t *off)
{
    const int64_t ck = runs * fw;
    if (fw > 16 || ck + 1 <= 16 || ck + 1 > 32)
        return 0;
    memset(pl, 0, sizeof(*pl));
    for (int v = 0; v < 2; v++) {
        int64_t list[32], count = 0;
        for (int64_t lane = 16 * v; lane < 16 * v + 16; lane++) {
            const int64_t r = lane >= 1 && lane <= ck ? (lane - 1) / fw : -1;
            if (r >= 0 && (count == 0 || list[count - 1] != r))
                list[count++] = r;
        }
        const int64_t pairs = (count + 1) / 2;
        if (pairs > FNN_PATCH_PAIRS)
            return 0;
        pl->pairs[v] = (int)pairs;
        for (int64_t q = 0; q < pairs; q++) {
            const int64_t ra = list[2 * q], rb = 2 * q + 1 < count ? list[2 * q + 1] : ra;
            pl->off_a[v][q] = off[ra];
            pl->off_b[v][q] = off[rb];
            for (int64_t lane = 16 * v; lane < 16 * v + 16; lane++) {
                const int64_t r = lane >= 1 && lane <= ck ? (lane - 1) / fw : -1, j = (lane - 1) % fw;
                if (r == ra || r == rb) {
                    pl->idx[v][q][lane - 16 * v] = (int32_t)(r == ra ? j : 16 + j);
                    pl->mask[v][q] |= (uint16_t)(1u << (lane - 16 * v));
                }
            }
        }
    }
    return 1;
}

#if FNN_X86_SIMD
/* Vector v's value in a patch row: its pairs of runs (P of them, a
 * compile-time count, so that the plan sits in registers) */
#define PATCH_VECTOR(vec, P, base)                                                                          \
    {                                                                                                       \
        vec = base;                                                                                         \
        _Pragma("GCC unroll 4") for (int q = 0; q < (P); q++) vec =                                         \
            _mm512_mask_mov_ps(vec, mask##vec[q],                                                           \
                               _mm512_permutex2var_ps(_mm512_loadu_ps(src + a##vec[q]), idx##vec[q],       \
                                                      _mm512_loadu_ps(src + b##vec[q])));                  \
    }
/* vector v's plan (P pairs) into locals: idxvV, maskvV, avV, bvV */
#define PATCH_PLAN(V, P)                                                                                    \
    __m512i idxv##V[(P) + 1];                                                                               \
    __mmask16 maskv##V[(P) + 1];                                                                            \
    int64_t av##V[(P) + 1], bv##V[(P) + 1];                                                                 \
    for (int q = 0; q < (P); q++) {                                                                         \
        idxv##V[q] = _mm512_loadu_si512(pl->idx[V][q]);                                                     \
        maskv##V[q] = pl->mask[V][q];                                                                       \
        av##V[q] = pl->off_a[V][q];                                                                         \
        bv##V[q] = pl->off_b[V][q];                                                                         \
    }
#define PATCH_LOOP(P0, P1)                                                                                  \
    {                                                                                                       \
        PATCH_PLAN(0, P0)                                                                                   \
        PATCH_PLAN(1, P1)                                                                                   \
        for (int64_t oy = 0; oy < oh; oy++)                                                                 \
            for (int64_t ox = 0; ox < ow; ox++) {                                                           \
                const float *src = xp + oy * sh * wp + ox * sw;                                             \
                float *dst = patches + (oy * ow + ox) * 32;                                                 \
                __m512 v0, v1;                                                                              \
                PATCH_VECTOR(v0, P0, base0)                                                                 \
                PATCH_VECTOR(v1, P1, zero)                                                                  \
                _mm512_storeu_ps(dst, v0);                                                                  \
                _mm512_storeu_ps(dst + 16, v1);                                                             \
            }                                                                                               \
        return;                                                                                             \
    }

/* The patch rows of an (oh, ow) output from the padded image xp (rows wp
 * apart, stride sh, sw), by the plan; each run's loads read 16 floats from its
 * start (xp has that slack). */
FNN_TARGET_AVX512 static void fnn_build_patches_avx512_f32(const fnn_patch_plan *pl, const float *xp, int64_t oh,
                                                           int64_t ow, int64_t sh, int64_t sw, int64_t wp,
                                                           float *patches)
{
    const __m512 base0 = _mm512_maskz_mov_ps(1, _mm512_set1_ps(1.0f)), zero = _mm512_setzero_ps();
    /* the second vector holds a run or more: the taps are 16 or more (rows of 32) */
    switch (pl->pairs[0] * 8 + pl->pairs[1]) {
    case 1 * 8 + 1: PATCH_LOOP(1, 1)
    case 1 * 8 + 2: PATCH_LOOP(1, 2)
    case 2 * 8 + 1: PATCH_LOOP(2, 1)
    case 2 * 8 + 2: PATCH_LOOP(2, 2)
    case 2 * 8 + 3: PATCH_LOOP(2, 3)
    case 3 * 8 + 1: PATCH_LOOP(3, 1)
    case 3 * 8 + 2: PATCH_LOOP(3, 2)
    case 3 * 8 + 3: PATCH_LOOP(3, 3)
    case 3 * 8 + 4: PATCH_LOOP(3, 4)
    case 4 * 8 + 1: PATCH_LOOP(4, 1)
    case 4 * 8 + 2: PATCH_LOOP(4, 2)
    case 4 * 8 + 3: PATCH_LOOP(4, 3)
    default: PATCH_LOOP(4, 4)
    }
}
#undef PATCH_LOOP
#undef PATCH_PLAN
#undef PATCH_VECTOR
#endif

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
