/* Winograd F(2x2, 3x3), written once for both dtypes: csrc/winograd.c includes
 * this file with T (float/double) and SFX (f32/f64) defined. Not a public header. */

#define CAT2_(a, b) a##_##b
#define CAT2(a, b) CAT2_(a, b)
#define FN(name) CAT2(name, SFX)

/* ---- the transforms, along one tile row (tx < tw) ------------------------ */

/* The loops below run over chunks of FNN_WINO_LANES tiles with a fixed inner
 * trip count, so the compiler emits straight-line vector code for each chunk
 * (a row holds only 14 or 16 tiles on the MNIST and CIFAR shapes: the loop
 * set-up of a variable-length vector loop would cost more than its body). */
#define WINO_CHUNKS(tx0, count) for (int64_t tx0 = 0; tx0 < (count); tx0 += FNN_WINO_LANES)
#define WINO_LANES(l) _Pragma("GCC ivdep") for (int l = 0; l < FNN_WINO_LANES; l++)

/* V = B^T d B for the tiles of four zero-padded input rows d0..d3, each stored
 * split: its even columns, then its odd ones, twv + 1 of each (tile tx covers
 * columns 2*tx .. 2*tx+3: even[tx], odd[tx], even[tx+1], odd[tx+1], so every
 * access below is unit-stride). out[p * ldp + tx], p = 4*i + j, for tx < twv
 * (a multiple of FNN_WINO_LANES). tmp holds 4 rows. */
static FNN_ALWAYS_INLINE void FN(wino_input_row_body)(const T *FNN_RESTRICT d0, const T *FNN_RESTRICT d1,
                                                      const T *FNN_RESTRICT d2, const T *FNN_RESTRICT d3,
                                                      int64_t twv, T *FNN_RESTRICT tmp, T *FNN_RESTRICT out,
                                                      int64_t ldp)
{
    const int64_t half = twv + 1, wpad = 2 * half;
    T *FNN_RESTRICT t0 = tmp, *FNN_RESTRICT t1 = tmp + wpad, *FNN_RESTRICT t2 = tmp + 2 * wpad,
                    *FNN_RESTRICT t3 = tmp + 3 * wpad;
    for (int64_t q = 0; q < wpad; q++) {
        t0[q] = d0[q] - d2[q];
        t1[q] = d1[q] + d2[q];
        t2[q] = d2[q] - d1[q];
        t3[q] = d1[q] - d3[q];
    }
    for (int i = 0; i < 4; i++) {
        const T *FNN_RESTRICT te = tmp + i * wpad, *FNN_RESTRICT to = te + half;
        T *FNN_RESTRICT o0 = out + (4 * i) * ldp, *FNN_RESTRICT o1 = o0 + ldp, *FNN_RESTRICT o2 = o1 + ldp,
                        *FNN_RESTRICT o3 = o2 + ldp;
        WINO_CHUNKS(tx0, twv)
        {
            WINO_LANES(l)
            {
                const int64_t tx = tx0 + l;
                o0[tx] = te[tx] - te[tx + 1];
                o1[tx] = to[tx] + te[tx + 1];
                o2[tx] = te[tx + 1] - to[tx];
                o3[tx] = to[tx] - to[tx + 1];
            }
        }
    }
}

/* Y = A^T M A for one filter, m[p * ldp + b] for the lanes b < len (a multiple
 * of FNN_WINO_LANES: the block's tile rows one after another): o0[2b], o0[2b+1]
 * and o1[2b], o1[2b+1] are the tile's two output rows. tmp holds 8 * len. */
static FNN_ALWAYS_INLINE void FN(wino_output_body)(const T *FNN_RESTRICT m, int64_t ldp, int64_t len,
                                                   T *FNN_RESTRICT tmp, T *FNN_RESTRICT o0, T *FNN_RESTRICT o1)
{
    /* rows of A^T M: s0[j] = m[j] + m[4+j] + m[8+j], s1[j] = m[4+j] - m[8+j] - m[12+j] */
    for (int j = 0; j < 4; j++) {
        const T *FNN_RESTRICT m0 = m + j * ldp, *FNN_RESTRICT m1 = m + (4 + j) * ldp,
                              *FNN_RESTRICT m2 = m + (8 + j) * ldp, *FNN_RESTRICT m3 = m + (12 + j) * ldp;
        T *FNN_RESTRICT s0 = tmp + j * len, *FNN_RESTRICT s1 = tmp + (4 + j) * len;
        for (int64_t b = 0; b < len; b++) {
            s0[b] = m0[b] + m1[b] + m2[b];
            s1[b] = m1[b] - m2[b] - m3[b];
        }
    }
    for (int a = 0; a < 2; a++) {
        const T *FNN_RESTRICT s = tmp + 4 * a * len;
        T *FNN_RESTRICT o = a ? o1 : o0;
        for (int64_t b = 0; b < len; b++) {
            T s0 = s[b], s1 = s[len + b], s2 = s[2 * len + b], s3 = s[3 * len + b];
            o[2 * b] = s0 + s1 + s2;
            o[2 * b + 1] = s1 - s2 - s3;
        }
    }
}

/* Z = A dY A^T for the 2x2 tiles of two gradient rows e0, e1, each stored split
 * (twv even columns, then twv odd ones, zero-padded): out[p * ldp + tx]. tmp
 * holds 4 rows of 2*twv. */
static FNN_ALWAYS_INLINE void FN(wino_grad_row_body)(const T *FNN_RESTRICT e0, const T *FNN_RESTRICT e1,
                                                     int64_t twv, T *FNN_RESTRICT tmp, T *FNN_RESTRICT out,
                                                     int64_t ldp)
{
    const int64_t len = 2 * twv;
    T *FNN_RESTRICT r0 = tmp, *FNN_RESTRICT r1 = tmp + len, *FNN_RESTRICT r2 = tmp + 2 * len,
                    *FNN_RESTRICT r3 = tmp + 3 * len;
    for (int64_t q = 0; q < len; q++) {
        r0[q] = e0[q];
        r1[q] = e0[q] + e1[q];
        r2[q] = e0[q] - e1[q];
        r3[q] = -e1[q];
    }
    for (int i = 0; i < 4; i++) {
        const T *FNN_RESTRICT re = tmp + i * len, *FNN_RESTRICT ro = re + twv;
        T *FNN_RESTRICT o0 = out + (4 * i) * ldp, *FNN_RESTRICT o1 = o0 + ldp, *FNN_RESTRICT o2 = o1 + ldp,
                        *FNN_RESTRICT o3 = o2 + ldp;
        WINO_CHUNKS(tx0, twv)
        {
            WINO_LANES(l)
            {
                const int64_t tx = tx0 + l;
                o0[tx] = re[tx];
                o1[tx] = re[tx] + ro[tx];
                o2[tx] = re[tx] - ro[tx];
                o3[tx] = -ro[tx];
            }
        }
    }
}

/* A row of len values placed at column pad of a zero row, stored split: even
 * columns in e[0, half), odd ones in o[0, half). Plain loops: the rows are short,
 * and a call to memset costs more than the fill (GCC would turn the loop into one). */
static FNN_ALWAYS_INLINE void FN(wino_split_row_body)(T *FNN_RESTRICT e, T *FNN_RESTRICT o, int64_t half,
                                                 const T *FNN_RESTRICT src, int64_t len, int64_t pad)
{
    for (int64_t k = 0; k < half; k++) {
        e[k] = 0;
        o[k] = 0;
    }
    if (!src)
        return;
    /* column q = 2k (even) or 2k + 1 (odd) holds src[q - pad] for 0 <= q - pad < len */
    const int64_t e0 = (pad + 1) / 2, e1 = (len + pad + 1) / 2, o0 = pad / 2, o1 = (len + pad) / 2;
    for (int64_t k = e0; k < e1; k++)
        e[k] = src[2 * k - pad];
    for (int64_t k = o0; k < o1; k++)
        o[k] = src[2 * k + 1 - pad];
}

static FNN_ALWAYS_INLINE void FN(wino_copy_body)(T *FNN_RESTRICT dst, const T *FNN_RESTRICT src, int64_t len)
{
    for (int64_t q = 0; q < len; q++)
        dst[q] = src[q];
}

typedef struct {
    void (*input_row)(const T *, const T *, const T *, const T *, int64_t, T *, T *, int64_t);
    void (*output)(const T *, int64_t, int64_t, T *, T *, T *);
    void (*grad_row)(const T *, const T *, int64_t, T *, T *, int64_t);
    void (*split_row)(T *, T *, int64_t, const T *, int64_t, int64_t);
    void (*copy)(T *, const T *, int64_t);
} FN(wino_kernels);

/* one instance of the three transforms per ISA: the same loops, vectorised by
 * the compiler for that ISA's registers */
#define DEFINE_WINO_KERNELS(ISA, TARGET)                                                                      \
    TARGET static void FN(wino_input_row_##ISA)(const T *d0, const T *d1, const T *d2, const T *d3, int64_t tw, \
                                                 T *tmp, T *out, int64_t ldp)                                   \
    {                                                                                                         \
        FN(wino_input_row_body)(d0, d1, d2, d3, tw, tmp, out, ldp);                                           \
    }                                                                                                         \
    TARGET static void FN(wino_output_##ISA)(const T *m, int64_t ldp, int64_t len, T *tmp, T *o0, T *o1)      \
    {                                                                                                         \
        FN(wino_output_body)(m, ldp, len, tmp, o0, o1);                                                       \
    }                                                                                                         \
    TARGET static void FN(wino_grad_row_##ISA)(const T *e0, const T *e1, int64_t tw, T *tmp, T *out,           \
                                                int64_t ldp)                                                  \
    {                                                                                                         \
        FN(wino_grad_row_body)(e0, e1, tw, tmp, out, ldp);                                                    \
    }                                                                                                         \
    TARGET static FNN_NO_LIBC_CALLS void FN(wino_split_row_##ISA)(T *e, T *o, int64_t half, const T *src,       \
                                                                 int64_t len, int64_t pad)                    \
    {                                                                                                         \
        FN(wino_split_row_body)(e, o, half, src, len, pad);                                                   \
    }                                                                                                         \
    TARGET static FNN_NO_LIBC_CALLS void FN(wino_copy_##ISA)(T *dst, const T *src, int64_t len)                 \
    {                                                                                                         \
        FN(wino_copy_body)(dst, src, len);                                                                    \
    }

DEFINE_WINO_KERNELS(portable, )
#if FNN_X86_SIMD
DEFINE_WINO_KERNELS(avx2, FNN_TARGET_AVX2)
DEFINE_WINO_KERNELS(avx512, FNN_TARGET_AVX512)
#endif
#undef DEFINE_WINO_KERNELS

static FN(wino_kernels) FN(wino_select)(int isa)
{
    FN(wino_kernels) k = {FN(wino_input_row_portable), FN(wino_output_portable), FN(wino_grad_row_portable),
                          FN(wino_split_row_portable), FN(wino_copy_portable)};
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        k.input_row = FN(wino_input_row_avx512);
        k.output = FN(wino_output_avx512);
        k.grad_row = FN(wino_grad_row_avx512);
        k.split_row = FN(wino_split_row_avx512);
        k.copy = FN(wino_copy_avx512);
    } else if (isa >= FNN_ISA_AVX2) {
        k.input_row = FN(wino_input_row_avx2);
        k.output = FN(wino_output_avx2);
        k.grad_row = FN(wino_grad_row_avx2);
        k.split_row = FN(wino_split_row_avx2);
        k.copy = FN(wino_copy_avx2);
    }
#else
    (void)isa;
#endif
    return k;
}

/* ---- filter transforms (once per call) ----------------------------------- */

/* u[p * f * c + fi * c + ci] = (G g G^T)[p] for the filter g = wt[fi, ci] */
static void FN(wino_filter_transform)(const T *wt, int64_t f, int64_t c, T *u)
{
    const int64_t fc = f * c;
    for (int64_t fi = 0; fi < f; fi++)
        for (int64_t ci = 0; ci < c; ci++) {
            const T *g = wt + (fi * c + ci) * 9;
            T gg[4][3];
            for (int k = 0; k < 3; k++) {
                gg[0][k] = g[k];
                gg[1][k] = (T)0.5 * (g[k] + g[3 + k] + g[6 + k]);
                gg[2][k] = (T)0.5 * (g[k] - g[3 + k] + g[6 + k]);
                gg[3][k] = g[6 + k];
            }
            T *dst = u + fi * c + ci;
            for (int i = 0; i < 4; i++) {
                dst[(4 * i) * fc] = gg[i][0];
                dst[(4 * i + 1) * fc] = (T)0.5 * (gg[i][0] + gg[i][1] + gg[i][2]);
                dst[(4 * i + 2) * fc] = (T)0.5 * (gg[i][0] - gg[i][1] + gg[i][2]);
                dst[(4 * i + 3) * fc] = gg[i][2];
            }
        }
}

/* dw[fi, ci] = G^T dU G from du laid out as u above, or with each dU[p]
 * transposed (C x F) when `transposed` */
static void FN(wino_filter_grad)(const T *du, int64_t f, int64_t c, int transposed, T *dw)
{
    const int64_t fc = f * c;
    for (int64_t fi = 0; fi < f; fi++)
        for (int64_t ci = 0; ci < c; ci++) {
            const T *src = du + (transposed ? ci * f + fi : fi * c + ci);
            T rows[3][4];
            for (int j = 0; j < 4; j++) {
                T u0 = src[j * fc], u1 = src[(4 + j) * fc], u2 = src[(8 + j) * fc], u3 = src[(12 + j) * fc];
                rows[0][j] = u0 + (T)0.5 * (u1 + u2);
                rows[1][j] = (T)0.5 * (u1 - u2);
                rows[2][j] = (T)0.5 * (u1 + u2) + u3;
            }
            T *g = dw + (fi * c + ci) * 9;
            for (int k = 0; k < 3; k++) {
                g[3 * k] = rows[k][0] + (T)0.5 * (rows[k][1] + rows[k][2]);
                g[3 * k + 1] = (T)0.5 * (rows[k][1] - rows[k][2]);
                g[3 * k + 2] = (T)0.5 * (rows[k][1] + rows[k][2]) + rows[k][3];
            }
        }
}

/* ---- blocks of tile rows -------------------------------------------------- */

/* Elements of the per-thread row scratch: the padded input rows of a block's
 * tile rows plus the transforms' temporaries. */
static int64_t FN(wino_rows_elems)(const fnn_wino_geom *g)
{
    const int64_t out = 12 * (g->block_rows * g->tw + FNN_WINO_LANES);
    const int64_t in = (2 * g->block_rows + 6) * g->wpad;
    return out > in ? out : in;
}

/* V of the tile rows [r0, r0 + nr): v[p * slab(c) + ci * ldb + (r - r0) * tw + tx].
 * Each run of tile rows in one image pads its input rows once per channel. */
static void FN(wino_input_block)(const FN(wino_kernels) *k, const fnn_wino_geom *g, const T *x, int64_t r0,
                                 int64_t nr, T *v, T *rows)
{
    const int64_t wpad = g->wpad;
    for (int64_t r = 0; r < nr;) {
        const int64_t ni = (r0 + r) / g->th, ty0 = (r0 + r) % g->th;
        const int64_t seg = g->th - ty0 < nr - r ? g->th - ty0 : nr - r;
        const int64_t prows = 2 * seg + 2;
        T *tmp = rows + prows * wpad;
        for (int64_t ci = 0; ci < g->c; ci++) {
            const T *plane = x + (ni * g->c + ci) * g->h * g->w;
            for (int64_t q = 0; q < prows; q++) {
                const int64_t hi = 2 * ty0 - g->ph + q;
                k->split_row(rows + q * wpad, rows + q * wpad + wpad / 2, wpad / 2,
                                   hi < 0 || hi >= g->h ? NULL : plane + hi * g->w, g->w, g->pw);
            }
            for (int64_t s = 0; s < seg; s++) {
                const T *d = rows + 2 * s * wpad;
                k->input_row(d, d + wpad, d + 2 * wpad, d + 3 * wpad, g->twv, tmp,
                             v + ci * g->ldb + (r + s) * g->tw, wino_slab(g, g->c));
            }
        }
        r += seg;
    }
}

/* Z of the gradient dy (n, f, oh, ow) for the tile rows [r0, r0 + nr), laid out as V */
static void FN(wino_grad_block)(const FN(wino_kernels) *k, const fnn_wino_geom *g, const T *dy, int64_t r0,
                                int64_t nr, T *z, T *rows)
{
    const int64_t len = 2 * g->twv;
    T *e0 = rows, *e1 = rows + len;
    /* filters outer: the block's rows of one plane are read in one sequential run */
    for (int64_t fi = 0; fi < g->f; fi++) {
        for (int64_t r = 0; r < nr; r++) {
            const int64_t ni = (r0 + r) / g->th, ty = (r0 + r) % g->th;
            const T *plane = dy + (ni * g->f + fi) * g->oh * g->ow;
            k->split_row(e0, e0 + g->twv, g->twv, plane + 2 * ty * g->ow, g->ow, 0);
            k->split_row(e1, e1 + g->twv, g->twv, 2 * ty + 1 < g->oh ? plane + (2 * ty + 1) * g->ow : NULL, g->ow,
                               0);
            k->grad_row(e0, e1, g->twv, rows + 2 * len, z + fi * g->ldb + r * g->tw, wino_slab(g, g->f));
        }
    }
}

#include "ukr_select_template.h"

/* The forward's products: U packed once as MR-row micro-panels over the depth C
 * (up[p * f_alloc * c + (fi / MR) * c * MR + ci * MR + fi % MR], zero rows up to
 * f_alloc), shared by the threads. */
typedef struct {
    const T *up;
    int64_t f_alloc;
    int mr, nr;
    FN(ukri_fn) ukr; /* the indirect-B microkernel: it reads V in place, no packing of B */
} FN(wino_products);

static void FN(wino_pack_u)(const T *u, int64_t f, int64_t c, int mr, int64_t f_alloc, T *up)
{
    for (int p = 0; p < 16; p++)
        for (int64_t fp = 0; fp < f_alloc; fp += mr) {
            T *dst = up + p * f_alloc * c + fp * c;
            for (int64_t ci = 0; ci < c; ci++)
                for (int i = 0; i < mr; i++)
                    dst[ci * mr + i] = fp + i < f ? u[(p * f + fp + i) * c + ci] : (T)0;
        }
}

/* y for the tile rows [r0, r0 + nr): transformed input, 16 products, output
 * transform with the fused bias and activation */
static void FN(wino_forward_block)(const FN(wino_kernels) *k, const FN(wino_products) *pr, const fnn_wino_geom *g,
                                   int isa, const T *x, int64_t r0, int64_t nr, const T *bias, int act,
                                   double act_alpha, T *y, T *v, T *m, T *rows, const T **brow)
{
    const int64_t tb = nr * g->tw, c = g->c, f = g->f, ldb = g->ldb, fa = pr->f_alloc;
    FN(wino_input_block)(k, g, x, r0, nr, v, rows);
    for (int p = 0; p < 16; p++) {
        for (int64_t ci = 0; ci < c; ci++)
            brow[ci] = v + p * wino_slab(g, c) + ci * ldb;
        const T *up = pr->up + p * fa * c;
        T *mp = m + p * wino_slab(g, fa);
        /* lanes past tb (up to the next multiple of NR, within ldb) are computed and ignored */
        for (int64_t j = 0; j < tb; j += pr->nr)
            for (int64_t fp = 0; fp < fa; fp += pr->mr)
                pr->ukr(c, up + fp * c, brow, j, mp + fp * ldb + j, ldb, (T)1, (T)0);
    }
    /* the output transform, bias and activation over all the block's lanes at
     * once (one call each per filter: per tile row they would cost more in calls
     * than in work), then the rows copied to y */
    const int64_t len = (tb + FNN_WINO_LANES - 1) / FNN_WINO_LANES * FNN_WINO_LANES;
    T *o0 = rows, *o1 = rows + 2 * len, *tmp = rows + 4 * len;
    const int epilogue = bias != NULL || act != FNN_ACT_IDENTITY;
    for (int64_t fi = 0; fi < f; fi++) {
        k->output(m + fi * ldb, wino_slab(g, fa), len, tmp, o0, o1);
        if (epilogue)
            FN(fnn_bias_act)(isa, o0, 0, o0, 0, NULL, bias ? bias + fi : NULL, 0, 1, 4 * len, act, act_alpha);
        for (int64_t r = 0; r < nr; r++) {
            const int64_t ni = (r0 + r) / g->th, ty = (r0 + r) % g->th;
            T *yrow = y + ((ni * f + fi) * g->oh + 2 * ty) * g->ow;
            k->copy(yrow, o0 + 2 * r * g->tw, g->ow);
            if (2 * ty + 1 < g->oh)
                k->copy(yrow + g->ow, o1 + 2 * r * g->tw, g->ow);
        }
    }
}

static int FN(wino_threads)(fnn_ctx ctx)
{
#ifdef FASTNN_HAVE_OPENMP
    return fnn_threads_of(ctx);
#else
    (void)ctx;
    return 1;
#endif
}

int FN(fnn_winograd_conv2d)(fnn_ctx ctx, const T *x, int64_t n, int64_t c, int64_t h, int64_t w, const T *wt,
                            int64_t f, const T *bias, int64_t ph, int64_t pw, int act, double act_alpha, T *y)
{
    const int isa = fnn_isa_of(ctx);
    int nth = FN(wino_threads)(ctx);
    FN(wino_products) pr;
    fnn_gemm_tile_shape(isa, (int)sizeof(T), &pr.mr, &pr.nr);
    FN(ukri_rows_fn) unused_rows; /* U's zero rows pad F up to MR: full tiles only */
    pr.ukr = FN(select_ukri)(isa, &unused_rows);
    pr.f_alloc = (f + pr.mr - 1) / pr.mr * pr.mr;
    const fnn_wino_geom g = wino_geom(n, c, h, w, f, ph, pw, (int64_t)sizeof(T), pr.nr, nth);
    if (n == 0)
        return 0;
    T *u = (T *)malloc((size_t)(16 * f * c + 16 * pr.f_alloc * c) * sizeof(T));
    if (!u)
        return -1;
    T *up = u + 16 * f * c;
    FN(wino_filter_transform)(wt, f, c, u);
    FN(wino_pack_u)(u, f, c, pr.mr, pr.f_alloc, up);
    pr.up = up;
    const FN(wino_kernels) k = FN(wino_select)(isa);
    const int64_t nblocks = (g.rows + g.block_rows - 1) / g.block_rows;
    if (nth > nblocks)
        nth = (int)nblocks;
    int err = 0;
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nth) if(nth > 1) reduction(| : err)
#endif
    {
        T *v = (T *)fnn_scratch(FNN_SCRATCH_WINO_V, (size_t)(16 * wino_slab(&g, c)) * sizeof(T));
        T *m = (T *)fnn_scratch(FNN_SCRATCH_WINO_M, (size_t)(16 * wino_slab(&g, pr.f_alloc)) * sizeof(T));
        T *rows = (T *)fnn_scratch(FNN_SCRATCH_WINO_ROWS, (size_t)FN(wino_rows_elems)(&g) * sizeof(T));
        const T **brow = (const T **)fnn_scratch(FNN_SCRATCH_WINO_DU, (size_t)c * sizeof(T *));
        if (!v || !m || !rows || !brow)
            err = 1;
#ifdef FASTNN_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t b = 0; b < nblocks; b++) {
            const int64_t r0 = b * g.block_rows;
            const int64_t nr = g.rows - r0 < g.block_rows ? g.rows - r0 : g.block_rows;
            if (!err)
                FN(wino_forward_block)(&k, &pr, &g, isa, x, r0, nr, bias, act, act_alpha, y, v, m, rows, brow);
        }
    }
    free(u);
    return err ? -1 : 0;
}

/* acc[fi] += the sum of row fi of z over lanes [0, tb), in a fixed order (16 lanes, then the lanes) */
static void FN(wino_row_sums)(const T *z, int64_t ldb, int64_t f, int64_t tb, T *acc)
{
    for (int64_t fi = 0; fi < f; fi++) {
        T lanes[16] = {0};
        FN(fnn_lane_acc)(lanes, z + fi * ldb, tb);
        acc[fi] += FN(fnn_lane_total)(lanes);
    }
}

int FN(fnn_winograd_wgrad)(fnn_ctx ctx, const T *dy, const T *x, int64_t n, int64_t c, int64_t h, int64_t w,
                           int64_t f, int64_t ph, int64_t pw, T *dw, T *db)
{
    const int isa = fnn_isa_of(ctx);
    int nth = FN(wino_threads)(ctx);
    int mr, nr_lanes;
    fnn_gemm_tile_shape(isa, (int)sizeof(T), &mr, &nr_lanes);
    const fnn_wino_geom g = wino_geom(n, c, h, w, f, ph, pw, (int64_t)sizeof(T), nr_lanes, nth);
    /* the 16 dU matrices, then db: position (1, 1) of A dY A^T is the sum of the
     * tile's four gradients, so db comes from Z with no pass of its own over dy */
    const int64_t du_elems = 16 * f * c + f;
    /* dU[p] as C x F when that fills the microkernel's NR-wide tiles better
     * (16 channels on a 32-wide AVX-512 tile would run the half-width kernel) */
    const int transposed = (c + nr_lanes - 1) / nr_lanes * nr_lanes - c > (f + nr_lanes - 1) / nr_lanes * nr_lanes - f;
    const int64_t nblocks = (g.rows + g.block_rows - 1) / g.block_rows;
    if (nth > nblocks)
        nth = nblocks < 1 ? 1 : (int)nblocks;
    if (nth > 256)
        nth = 256;
    T *du = (T *)malloc((size_t)du_elems * sizeof(T));
    if (!du)
        return -1;
    T *partials[256];
    int err = 0;
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nth) if(nth > 1) reduction(| : err)
#endif
    {
#ifdef FASTNN_HAVE_OPENMP
        const int t = omp_get_thread_num(), tn = omp_get_num_threads();
#else
        const int t = 0, tn = 1;
#endif
        const FN(wino_kernels) k = FN(wino_select)(isa);
        fnn_ctx one = {1, isa, FNN_CONV_AUTO};
        T *v = (T *)fnn_scratch(FNN_SCRATCH_WINO_V, (size_t)(16 * wino_slab(&g, c)) * sizeof(T));
        T *z = (T *)fnn_scratch(FNN_SCRATCH_WINO_M, (size_t)(16 * wino_slab(&g, f)) * sizeof(T));
        T *rows = (T *)fnn_scratch(FNN_SCRATCH_WINO_ROWS, (size_t)FN(wino_rows_elems)(&g) * sizeof(T));
        /* thread 0 sums straight into du */
        T *mine = t == 0 ? du : (T *)fnn_scratch(FNN_SCRATCH_WINO_DU, (size_t)du_elems * sizeof(T));
        partials[t] = mine;
        if (!v || !z || !rows || !mine) {
            err = 1;
        } else {
            const int64_t b0 = nblocks * t / tn, b1 = nblocks * (t + 1) / tn;
            if (b0 == b1)
                memset(mine, 0, (size_t)du_elems * sizeof(T));
            for (int64_t b = b0; b < b1 && !err; b++) {
                const int64_t r0 = b * g.block_rows;
                const int64_t nr = g.rows - r0 < g.block_rows ? g.rows - r0 : g.block_rows;
                const int64_t tb = nr * g.tw;
                FN(wino_input_block)(&k, &g, x, r0, nr, v, rows);
                FN(wino_grad_block)(&k, &g, dy, r0, nr, z, rows);
                for (int p = 0; p < 16 && !err; p++) {
                    const T *zp = z + p * wino_slab(&g, f), *vp = v + p * wino_slab(&g, c);
                    const T beta = b == b0 ? (T)0 : (T)1;
                    err |= (transposed ? FN(fnn_gemm)(one, 0, 1, c, f, tb, (T)1, vp, g.ldb, zp, g.ldb, beta,
                                                      mine + p * f * c, f, NULL)
                                       : FN(fnn_gemm)(one, 0, 1, f, c, tb, (T)1, zp, g.ldb, vp, g.ldb, beta,
                                                      mine + p * f * c, c, NULL)) != 0;
                }
                if (b == b0)
                    memset(mine + 16 * f * c, 0, (size_t)f * sizeof(T));
                FN(wino_row_sums)(z + 5 * wino_slab(&g, f), g.ldb, f, tb, mine + 16 * f * c);
            }
        }
#ifdef FASTNN_HAVE_OPENMP
#pragma omp barrier
#endif
        /* fixed-order sum of the partials, split over elements */
        int ok = 1;
        for (int q = 0; q < tn; q++)
            ok &= partials[q] != NULL;
        if (ok) {
            const int64_t e0 = du_elems * t / tn, e1 = du_elems * (t + 1) / tn;
            for (int q = 1; q < tn; q++) {
                const T *pq = partials[q];
                for (int64_t e = e0; e < e1; e++)
                    du[e] += pq[e];
            }
        }
    }
    if (!err) {
        FN(wino_filter_grad)(du, f, c, transposed, dw);
        if (db)
            memcpy(db, du + 16 * f * c, (size_t)f * sizeof(T));
    }
    free(du);
    return err ? -1 : 0;
}

#undef FN
#undef CAT2
#undef CAT2_
