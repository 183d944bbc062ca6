/* The GEMM driver, written once for both dtypes: csrc/gemm.c includes this file
 * with T (float/double) and SFX (f32/f64) defined. Not a public header. */

#define CAT2_(a, b) a##_##b
#define CAT2(a, b) CAT2_(a, b)
#define FN(name) CAT2(name, SFX)

/* ---- packing (separate from compute) ---------------------------------- */

/* Full panels that the A^T pack copies a source row at a time (fnn_pack_matrix) */
#define FNN_PACK_A_RUN 16

/* a run of `panels` full panels of width W from source rows s0, s0 + ld, ... */
#define PACK_A_RUN(W)                                                                                 \
    for (int64_t k = 0; k < kc; k++)                                                                  \
        for (int64_t q = 0; q < panels; q++)                                                          \
            memcpy(d0 + q * kc * (W) + k * (W), s0 + k * ld + q * (W), (W) * sizeof(T));

/* w x kc block of rows of a row-major matrix into one panel (k-major): read w
 * row streams, write contiguously. W is a compile-time width where it matters. */
#define PACK_ROWS_T(W)                                                                                \
    for (int64_t k = 0; k < kc; k++) {                                                                \
        T *dk = d + k * (W);                                                                          \
        for (int i = 0; i < (W); i++)                                                                 \
            dk[i] = rowp[i][k];                                                                       \
    }

void FN(fnn_pack_matrix)(const void *srcv, int64_t r0, int64_t rows, int64_t k0, int64_t kc, int w, T *dst)
{
    const fnn_matrix_src *src = (const fnn_matrix_src *)srcv;
    const T *p = (const T *)src->p;
    const int64_t ld = src->ld;
    int64_t r = 0;
    if (src->trans && (w == 4 || w == 6 || w == 8)) {
        /* element (i, k) at p[k*ld + i]: each panel row is a contiguous piece of
         * source row k. Runs of FNN_PACK_A_RUN full panels go source row by
         * source row, so each row (its own page where ld is large) is visited
         * once a run, not once a panel: panel by panel, the 4320 x 100 A^T of
         * the I workload's weight gradient took a TLB miss every 32 bytes. */
        for (; rows - r >= w; r += FNN_PACK_A_RUN * w) {
            const int64_t panels = (rows - r) / w < FNN_PACK_A_RUN ? (rows - r) / w : FNN_PACK_A_RUN;
            T *d0 = dst + (r / w) * kc * w;
            const T *s0 = p + k0 * ld + r0 + r;
            switch (w) {
            case 4: PACK_A_RUN(4) break;
            case 6: PACK_A_RUN(6) break;
            default: PACK_A_RUN(8) break;
            }
            if (panels < FNN_PACK_A_RUN) {
                r += panels * w;
                break;
            }
        }
    }
    for (; r < rows; r += w) {
        int rr = (int)(rows - r < w ? rows - r : w);
        T *d = dst + (r / w) * kc * w;
        if (!src->trans) {
            /* element (i, k) at p[i*ld + k]: a w x kc transpose into the panel */
            if (w % 8 == 0) {
                FN(fnn_transpose)(src->isa, p + (r0 + r) * ld + k0, ld, rr, kc, w, d, w);
                continue;
            }
            if (rr == w && w <= 16) {
                const T *rowp[16];
                for (int i = 0; i < w; i++)
                    rowp[i] = p + (r0 + r + i) * ld + k0;
                switch (w) {
                case 4: PACK_ROWS_T(4) break;
                case 6: PACK_ROWS_T(6) break;
                case 8: PACK_ROWS_T(8) break;
                default: PACK_ROWS_T(w) break;
                }
                continue;
            }
            for (int i = 0; i < rr; i++) {
                const T *s = p + (r0 + r + i) * ld + k0;
                for (int64_t k = 0; k < kc; k++)
                    d[k * w + i] = s[k];
            }
            for (int i = rr; i < w; i++)
                for (int64_t k = 0; k < kc; k++)
                    d[k * w + i] = 0;
        } else {
            /* element (i, k) at p[k*ld + i]: the panels that the runs above leave */
            for (int64_t k = 0; k < kc; k++) {
                const T *s = p + (k0 + k) * ld + r0 + r;
                T *dk = d + k * w;
                for (int i = 0; i < rr; i++)
                    dk[i] = s[i];
                for (int i = rr; i < w; i++)
                    dk[i] = 0;
            }
        }
    }
}
void FN(fnn_pack_matrix_b)(const void *srcv, int64_t j0, int64_t cols, int64_t k0, int64_t kc, int w, T *dst)
{
    const fnn_matrix_src *src = (const fnn_matrix_src *)srcv;
    const T *p = (const T *)src->p;
    const int64_t ld = src->ld;
    for (int64_t j = 0; j < cols; j += w) {
        int jj = (int)(cols - j < w ? cols - j : w);
        T *d = dst + (j / w) * kc * w;
        if (!src->trans) {
            /* op(B)(k, j) = p[k*ld + j]: each panel row is a contiguous copy
             * (fixed-size copies for full panels, so they compile to vector moves) */
            const T *s0 = p + k0 * ld + j0 + j;
            if (jj == w && w == 32) {
                for (int64_t k = 0; k < kc; k++)
                    memcpy(d + k * 32, s0 + k * ld, 32 * sizeof(T));
                continue;
            }
            if (jj == w && w == 16) {
                for (int64_t k = 0; k < kc; k++)
                    memcpy(d + k * 16, s0 + k * ld, 16 * sizeof(T));
                continue;
            }
            if (jj == w && w == 8) {
                for (int64_t k = 0; k < kc; k++)
                    memcpy(d + k * 8, s0 + k * ld, 8 * sizeof(T));
                continue;
            }
            for (int64_t k = 0; k < kc; k++) {
                const T *s = p + (k0 + k) * ld + j0 + j;
                T *dk = d + k * w;
                for (int i = 0; i < jj; i++)
                    dk[i] = s[i];
                for (int i = jj; i < w; i++)
                    dk[i] = 0;
            }
        } else {
            /* op(B)(k, j) = p[j*ld + k]: a transpose through registers where the
             * ISA has one, else w row streams read with a fixed width */
            if (w % 8 == 0) {
                FN(fnn_transpose)(src->isa, p + (j0 + j) * ld + k0, ld, jj, kc, w, d, w);
                continue;
            }
            if (jj == w && (w == 8 || w == 16 || w == 32)) {
                const T *rowp[32];
                for (int i = 0; i < w; i++)
                    rowp[i] = p + (j0 + j + i) * ld + k0;
                switch (w) {
                case 8: PACK_ROWS_T(8) break;
                case 16: PACK_ROWS_T(16) break;
                default: PACK_ROWS_T(32) break;
                }
                continue;
            }
            for (int i = 0; i < jj; i++) {
                const T *s = p + (j0 + j + i) * ld + k0;
                for (int64_t k = 0; k < kc; k++)
                    d[k * w + i] = s[k];
            }
            for (int i = jj; i < w; i++)
                for (int64_t k = 0; k < kc; k++)
                    d[k * w + i] = 0;
        }
    }
}

#undef PACK_ROWS_T

/* ---- epilogue on a finished tile (hot in L1) --------------------------- */

/* dst[r][t] = act(src[r][t] + bias), bias = bvec[t] (bvec != NULL) or bs[r*bstep]: the
 * epilogue of the GEMM and of the convolution. One loop per activation, so the
 * activation is a constant in each and the loop vectorises without a branch per
 * element; compiled once per ISA because the rest of this file is built for the
 * baseline target. NaN passes through unchanged, as in the reference (see
 * docs/GEMM.md). dst may be src. */
#define BIAS_ACT_CASE_OF(A, ACT_OF_V)                                                                       \
    case A:                                                                                                 \
        for (int64_t r = 0; r < rows; r++) {                                                                \
            T *dr = dst + r * ldd;                                                                          \
            const T *sr = src + r * lds;                                                                    \
            if (bvec) {                                                                                     \
                for (int64_t t = 0; t < len; t++) {                                                         \
                    const T v = sr[t] + bvec[t];                                                            \
                    dr[t] = ACT_OF_V;                                                                       \
                }                                                                                           \
            } else if (bs) {                                                                                \
                const T b = bs[r * bstep];                                                                  \
                for (int64_t t = 0; t < len; t++) {                                                         \
                    const T v = sr[t] + b;                                                                  \
                    dr[t] = ACT_OF_V;                                                                       \
                }                                                                                           \
            } else { /* no bias: nothing added (+0 would turn a -0 sum into +0) */                         \
                for (int64_t t = 0; t < len; t++) {                                                         \
                    const T v = sr[t];                                                                      \
                    dr[t] = ACT_OF_V;                                                                       \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        break;
/* NaN passes through every activation unchanged; ReLU's own definition (x < 0 ?
 * 0 : x) already does, and without the check it compiles to one compare a
 * vector, not three (the SimpleConvNet's pooled forward: bias and ReLU 9% -> 6%
 * of its profile) */
#define BIAS_ACT_CASE(A) BIAS_ACT_CASE_OF(A, v == v ? FN(fnn_act)(A, v, aa) : v)
#define DEFINE_BIAS_ACT(NAME, TARGET)                                                                       \
    TARGET static void NAME(T *dst, int64_t ldd, const T *src, int64_t lds, const T *bvec, const T *bs,      \
                            int64_t bstep, int64_t rows, int64_t len, int act, T aa)                                       \
    {                                                                                                       \
        switch (act) {                                                                                      \
        BIAS_ACT_CASE_OF(FNN_ACT_RELU, FN(fnn_act)(FNN_ACT_RELU, v, aa))                                    \
        BIAS_ACT_CASE(FNN_ACT_LEAKY_RELU)                                                                   \
        BIAS_ACT_CASE(FNN_ACT_ELU)                                                                          \
        BIAS_ACT_CASE(FNN_ACT_SIGMOID)                                                                      \
        BIAS_ACT_CASE(FNN_ACT_TANH)                                                                         \
        BIAS_ACT_CASE(FNN_ACT_SOFTPLUS)                                                                     \
        default:                                                                                            \
            for (int64_t r = 0; r < rows; r++) {                                                            \
                T *dr = dst + r * ldd;                                                                      \
                const T *sr = src + r * lds;                                                                \
                if (bvec) {                                                                                 \
                    for (int64_t t = 0; t < len; t++)                                                       \
                        dr[t] = sr[t] + bvec[t];                                                            \
                } else if (bs) {                                                                            \
                    const T b = bs[r * bstep];                                                              \
                    for (int64_t t = 0; t < len; t++)                                                       \
                        dr[t] = sr[t] + b;                                                                  \
                } else if (dr != sr) {                                                                      \
                    memcpy(dr, sr, (size_t)len * sizeof(T));                                                \
                }                                                                                           \
            }                                                                                               \
            break;                                                                                          \
        }                                                                                                   \
    }
FNN_PER_ISA(DEFINE_BIAS_ACT, bias_act)
#undef DEFINE_BIAS_ACT
#undef BIAS_ACT_CASE
#undef BIAS_ACT_CASE_OF

void FN(fnn_bias_act)(int isa, T *dst, int64_t ldd, const T *src, int64_t lds, const T *bvec, const T *bs,
                      int64_t bstep, int64_t rows, int64_t len, int act, double alpha)
{
    /* contiguous rows of one bias are one long row: a plane of 24 x 24 in rows
     * of 24 left a third of each row to the vector loops' scalar remainder */
    if (rows > 1 && ldd == len && lds == len && !bvec && (!bs || bstep == 0)) {
        len *= rows;
        rows = 1;
    }
#if FNN_X86_SIMD
    /* float32 sigmoid, tanh, elu, softplus and leaky ReLU: the bias, then the
     * element-wise kernels' vector activation on each row (libm per element made
     * linear(..., activation=...) 0.5-1.2 ms slower than linear then the separate
     * op, which takes 0.02 ms, on 128 x 512 outputs, and the loops below leave
     * leaky ReLU scalar on AVX2); the fused and the separate ops then give the
     * same bits (FNN_OP_* matches enum fnn_act here) */
    if (sizeof(T) == 4 && isa >= FNN_ISA_AVX2 &&
        (act == FNN_ACT_SIGMOID || act == FNN_ACT_TANH || act == FNN_ACT_ELU || act == FNN_ACT_SOFTPLUS ||
         act == FNN_ACT_LEAKY_RELU)) {
        FN(fnn_bias_act)(isa, dst, ldd, src, lds, bvec, bs, bstep, rows, len, FNN_ACT_IDENTITY, alpha);
        for (int64_t r = 0; r < rows; r++) {
            float *row = (float *)(dst + r * ldd);
            if (isa >= FNN_ISA_AVX512)
                fnn_eltwise_chunk_avx512_f32(act, row, NULL, row, len, (float)alpha, 0);
            else
                fnn_eltwise_chunk_avx2_f32(act, row, NULL, row, len, (float)alpha, 0);
        }
        return;
    }
    if (isa >= FNN_ISA_AVX512) {
        FN(bias_act_avx512)(dst, ldd, src, lds, bvec, bs, bstep, rows, len, act, (T)alpha);
        return;
    }
    if (isa >= FNN_ISA_AVX2) {
        FN(bias_act_avx2)(dst, ldd, src, lds, bvec, bs, bstep, rows, len, act, (T)alpha);
        return;
    }
#endif
    (void)isa;
    FN(bias_act_portable)(dst, ldd, src, lds, bvec, bs, bstep, rows, len, act, (T)alpha);
}

void FN(fnn_transpose)(int isa, const T *src, int64_t lds, int64_t rows, int64_t cols, int64_t rows_out, T *dst,
                       int64_t ldd)
{
#if FNN_X86_SIMD
    if (sizeof(T) == 4 && isa >= FNN_ISA_AVX512 && rows_out % 16 == 0) {
        fnn_transpose_avx512_f32((const float *)src, lds, rows, cols, rows_out, (float *)dst, ldd);
        return;
    }
    if (sizeof(T) == 4 && isa >= FNN_ISA_AVX2 && rows_out % 8 == 0) {
        fnn_transpose_avx2_f32((const float *)src, lds, rows, cols, rows_out, (float *)dst, ldd);
        return;
    }
#endif
    (void)isa;
    for (int64_t c = 0; c < cols; c++) {
        T *dc = dst + c * ldd;
        for (int64_t r = 0; r < rows_out; r++)
            dc[r] = r < rows ? src[r * lds + c] : (T)0;
    }
}

/* out[t] = dy[t] * act'(z[t]), the derivative written from the output y = act(z)
 * (activation.h): the backward of a fused activation. One loop per activation,
 * compiled per ISA, as fnn_bias_act. The derivative goes through a variable:
 * written as one expression, GCC turns ReLU's dy * (y > 0 ? 1 : 0) into a
 * branch around a multiply, which it will not vectorise without AVX-512's
 * masks (a multiply may trap), and the AVX2 loop ran scalar with a branch (the
 * SimpleConvNet's conv + ReLU + pool backward 2.5 ms on AVX2, 1.7 on AVX-512). */
#define ACT_GRAD_CASE(A)                                                                                    \
    case A:                                                                                                 \
        for (int64_t t = 0; t < n; t++) {                                                                   \
            const T slope = FN(fnn_act_grad_from_y)(A, y[t], aa);                                           \
            out[t] = dy[t] * slope;                                                                         \
        }                                                                                                   \
        break;
#define DEFINE_ACT_GRAD(NAME, TARGET)                                                                       \
    TARGET static void NAME(const T *dy, const T *y, T *out, int64_t n, int act, T aa)                      \
    {                                                                                                       \
        switch (act) {                                                                                      \
        ACT_GRAD_CASE(FNN_ACT_RELU)                                                                         \
        ACT_GRAD_CASE(FNN_ACT_LEAKY_RELU)                                                                   \
        ACT_GRAD_CASE(FNN_ACT_ELU)                                                                          \
        ACT_GRAD_CASE(FNN_ACT_SIGMOID)                                                                      \
        ACT_GRAD_CASE(FNN_ACT_TANH)                                                                         \
        ACT_GRAD_CASE(FNN_ACT_SOFTPLUS)                                                                     \
        default:                                                                                            \
            for (int64_t t = 0; t < n; t++)                                                                 \
                out[t] = dy[t];                                                                             \
            break;                                                                                          \
        }                                                                                                   \
    }
FNN_PER_ISA(DEFINE_ACT_GRAD, act_grad)
#undef DEFINE_ACT_GRAD
#undef ACT_GRAD_CASE

void FN(fnn_act_grad_from_y_mul_serial)(int isa, const T *dy, const T *y, T *out, int64_t n, int act, double alpha)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        FN(act_grad_avx512)(dy, y, out, n, act, (T)alpha);
        return;
    }
    if (isa >= FNN_ISA_AVX2) {
        FN(act_grad_avx2)(dy, y, out, n, act, (T)alpha);
        return;
    }
#endif
    (void)isa;
    FN(act_grad_portable)(dy, y, out, n, act, (T)alpha);
}

/* Pieces of this many elements, split over the threads (elementwise: the result
 * does not depend on the split). On one thread, the 432,000 of the SimpleConvNet
 * step's pooled gradient were 8% of its fused conv + pool backward, serial. */
#define FNN_ACT_GRAD_PIECE ((int64_t)16384)

void FN(fnn_act_grad_from_y_mul)(fnn_ctx ctx, const T *dy, const T *y, T *out, int64_t n, int act, double alpha)
{
    const int isa = fnn_isa_of(ctx);
    const int64_t pieces = (n + FNN_ACT_GRAD_PIECE - 1) / FNN_ACT_GRAD_PIECE;
    const int64_t par_work = n;
    FNN_PARALLEL_FOR(par_work,
    for (int64_t p = 0; p < pieces; p++) {
        const int64_t off = p * FNN_ACT_GRAD_PIECE, len = n - off < FNN_ACT_GRAD_PIECE ? n - off : FNN_ACT_GRAD_PIECE;
        FN(fnn_act_grad_from_y_mul_serial)(isa, dy + off, y + off, out + off, len, act, alpha);
    });
}

static void FN(epilogue_tile)(int isa, T *c, int64_t ldc, int64_t i0, int64_t j0, int mr, int nr,
                              const fnn_epilogue *ep)
{
    const T *bias = (const T *)ep->bias;
    FN(fnn_bias_act)(isa, c, ldc, c, ldc, ep->bias_mode == FNN_BIAS_COL ? bias + j0 : NULL,
                     ep->bias_mode == FNN_BIAS_ROW ? bias + i0 : NULL, 1, mr, nr, ep->act, ep->act_alpha);
}

static int FN(epilogue_active)(const fnn_epilogue *ep)
{
    return ep != NULL && (ep->bias_mode != FNN_BIAS_NONE || ep->act != FNN_ACT_IDENTITY);
}

/* ---- microkernel selection --------------------------------------------- */

typedef void (*FN(ukr_fn))(int64_t, const T *, const T *, T *, int64_t, T, T);

typedef void (*FN(ukr_rows_fn))(int, int64_t, const T *, const T *, T *, int64_t, T, T);

/* The microkernel for `isa`, in *half its half-width variant and in *rows its
 * fewer-rows variant (NULL where there is none: the portable kernel's
 * compiler-vectorised loops gain little from either). */
static FN(ukr_fn) FN(select_ukr)(int isa, int *mr, int *nr, FN(ukr_fn) *half, FN(ukr_rows_fn) *rows)
{
    fnn_gemm_tile_shape(isa, (int)sizeof(T), mr, nr);
    *half = NULL;
    *rows = NULL;
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        *half = FN(fnn_ukrh_avx512);
        *rows = FN(fnn_ukr_avx512_rows);
        return FN(fnn_ukr_avx512);
    }
    if (isa >= FNN_ISA_AVX2) {
        *half = FN(fnn_ukrh_avx2);
        *rows = FN(fnn_ukr_avx2_rows);
        return FN(fnn_ukr_avx2);
    }
#endif
    return FN(fnn_ukr_portable);
}

/* ---- the blocked loops -------------------------------------------------- */

#include "ukr_select_template.h"

/* The last columns of a product, computed apart from the others (tail_columns,
 * below): C[:, n0:n0+r] = alpha * op(A) @ op(B)[:, n0:n0+r] + beta * C[:, n0:n0+r],
 * then the epilogue. A = N takes dot products of A's rows with the
 * columns' rows `brows` (op(B)'s columns as rows of k values: B's own rows
 * where B = T, else a copy); A = T a GEMV through A's rows per column into a
 * row of `res` first. Each element is one kernel's sum in a fixed order, so
 * any split of the rows gives the same bits. */
struct FN(tail_job_s) {
    int trans_a, trans_b, isa;
    int64_t m, n0, r, k;
    T alpha, beta;
    const T *a, *b, *brows;
    int64_t lda, ldb, ldr;
    T *res, *c;
    int64_t ldc;
    const fnn_epilogue *ep;
    /* the depth split's slices take the columns (A = N; tail_slice), each
     * copying its depth of B's columns to `bcopy` (B = N), else NULL */
    int slices;
    T *bcopy;
};
typedef struct FN(tail_job_s) FN(tail_job);
static void FN(tail_rows)(const FN(tail_job) *t, int64_t i0, int64_t i1);
static void FN(tail_run)(fnn_ctx ctx, const FN(tail_job) *t);
static void FN(tail_slice)(const FN(tail_job) *t, int64_t k0, int64_t ks, T *c, int64_t ldc, T beta);
static void FN(tail_copy_b)(const FN(tail_job) *t, T *dst, int64_t k0, int64_t ks);

typedef struct {
    int64_t m, n, k;
    T alpha, beta;
    void (*pack_a)(const void *, int64_t, int64_t, int64_t, int64_t, int, T *);
    const void *a_src;
    void (*pack_b)(const void *, int64_t, int64_t, int64_t, int64_t, int, T *);
    const void *b_src;
    T *c;
    int64_t ldc;
    const fnn_epilogue *ep;
    FN(ukr_fn) ukr;
    FN(ukr_fn) ukr_half;      /* right-edge tiles of at most nr/2 columns; may be NULL */
    FN(ukr_rows_fn) ukr_rows; /* bottom-edge tiles of full width; may be NULL */
    int mr, nr;
    int64_t mc, kc, nc;
    T *a_packs; /* one A block (its rows of MC x KC) per thread, a_stride elements apart */
    int64_t a_stride;
    T *b_packs; /* one KC x NC block per thread, b_stride elements apart */
    int64_t b_stride;
    int isa;
    int tn, tm; /* thread grid: tn splits the columns, tm the rows of each MC block */
    int shared_mode; /* FNN_GEMM_SHARED_A or _B: the shared-operand schedule; 0: the grid */
    int split_k;     /* the depth split (FNN_GEMM_SPLIT_K): its slices, else 0 */
    int64_t k0;      /* the depth of op(A)'s and op(B)'s column / row 0 of this job (a slice's) */
    T *partials;     /* the depth split's partial C of slices 1 .. split_k - 1 (m x ldp each) */
    int64_t ldp;     /* their row length: n, and the last columns' r where the slices take them */
    int64_t unit;    /* panels per unit of the shared-operand schedule */
    /* A = N read in place (a_in_place; NULL: packed): row i of A at
     * a_rows + i * lda, by the indirect-A microkernel */
    const T *a_rows;
    int64_t lda;
    FN(ukra_fn) ukra;
    FN(ukra_rows_fn) ukra_rows;
    /* the last columns, or NULL: in the depth split each slice's depth of them
     * (A = N), in the shared-B schedule each unit's rows with the unit */
    const FN(tail_job) *tail;
} FN(gemm_job);

/* C's rows x cols at ct = the edge buffer's (computed with beta 0) + beta_eff
 * * C, as a kernel with beta_eff would (C not read where beta_eff is 0) */
static FNN_ALWAYS_INLINE void FN(tile_from_edge)(int isa, T *ct, int64_t ldc, const T *edge, int lde, int rows,
                                                 int64_t cols, T beta_eff)
{
#if FNN_X86_SIMD
    if (isa >= FNN_ISA_AVX512) {
        FN(fnn_tile_from_edge_avx512)(ct, ldc, edge, lde, rows, cols, beta_eff);
        return;
    }
    if (isa >= FNN_ISA_AVX2) {
        FN(fnn_tile_from_edge_avx2)(ct, ldc, edge, lde, rows, cols, beta_eff);
        return;
    }
#else
    (void)isa;
#endif
    for (int r = 0; r < rows; r++) {
        T *ci = ct + r * ldc;
        const T *er = edge + r * lde;
        if (beta_eff == 0) {
            for (int64_t q = 0; q < cols; q++)
                ci[q] = er[q];
        } else {
            for (int64_t q = 0; q < cols; q++)
                ci[q] = er[q] + beta_eff * ci[q];
        }
    }
}

/* Tile (i, j) of C (mrr x nrr, at most MR x NR) from the packed micro-panels
 * ap (MR x kcur) and bp (kcur x NR), with the epilogue after the last depth
 * block. The same code, and so the same bits, whichever thread takes the tile. */
static FNN_ALWAYS_INLINE void FN(gemm_tile)(const FN(gemm_job) *job, const T *ap, const T *bp, int64_t kcur,
                                            int64_t i, int64_t j, int mrr, int nrr, T beta_eff, int last, T *edge)
{
    const int mr = job->mr, nr = job->nr;
    T *ct = job->c + i * job->ldc + j;
    if (mrr == mr && nrr == nr) {
        job->ukr(kcur, ap, bp, ct, job->ldc, job->alpha, beta_eff);
    } else if (nrr == nr && job->ukr_rows) {
        job->ukr_rows(mrr, kcur, ap, bp, ct, job->ldc, job->alpha, beta_eff);
    } else {
        /* edge tile: compute the tile into a buffer (half width when that
         * covers it), copy the valid part */
        if (nrr <= nr / 2 && job->ukr_half)
            job->ukr_half(kcur, ap, bp, edge, nr, job->alpha, (T)0);
        else
            job->ukr(kcur, ap, bp, edge, nr, job->alpha, (T)0);
        FN(tile_from_edge)(job->isa, ct, job->ldc, edge, nr, mrr, nrr, beta_eff);
    }
    if (last && FN(epilogue_active)(job->ep))
        FN(epilogue_tile)(job->isa, ct, job->ldc, i, j, mrr, nrr, job->ep);
}

/* gemm_tile with A read in place: rows [i, i + mrr) of op(A) from column pc */
static FNN_ALWAYS_INLINE void FN(gemm_tile_a_rows)(const FN(gemm_job) *job, int64_t pc, const T *bp, int64_t kcur,
                                                   int64_t i, int64_t j, int mrr, int nrr, T beta_eff, int last,
                                                   T *edge)
{
    const int mr = job->mr, nr = job->nr;
    const int full = nrr == nr;
    T *ct = job->c + i * job->ldc + j, *dst = full ? ct : edge;
    const int64_t ldd = full ? job->ldc : nr;
    const T beta_k = full ? beta_eff : (T)0;
    const T *arow[32];
    for (int r = 0; r < mr; r++) /* rows past mrr repeat the last (their results are dropped) */
        arow[r] = job->a_rows + (i + (r < mrr ? r : mrr - 1)) * job->lda;
    if (mrr == mr || !job->ukra_rows)
        job->ukra(kcur, arow, pc, bp, dst, ldd, job->alpha, beta_k);
    else
        job->ukra_rows(mrr, kcur, arow, pc, bp, dst, ldd, job->alpha, beta_k);
    if (!full)
        FN(tile_from_edge)(job->isa, ct, job->ldc, edge, nr, mrr, nrr, beta_eff);
    if (last && FN(epilogue_active)(job->ep))
        FN(epilogue_tile)(job->isa, ct, job->ldc, i, j, mrr, nrr, job->ep);
}

/* The whole job for thread `tid` of `nth` (nth == 1: no OpenMP involved). */
static void FN(gemm_thread)(const FN(gemm_job) *job, int tid, int nth)
{
    const int64_t m = job->m, n = job->n, k = job->k;
    const int mr = job->mr, nr = job->nr;
    const int64_t MC = job->mc, KC = job->kc, NC = job->nc;
    (void)nth;
    T *b_pack = job->b_packs + (int64_t)tid * job->b_stride;
    T *a_pack = job->a_packs + (int64_t)tid * job->a_stride;
    T FNN_ALIGNED(64) edge[32 * 32];

    /* this thread's column range, in whole NR panels */
    const int ti_n = tid % job->tn, ti_m = tid / job->tn;
    const int64_t n_panels = (n + nr - 1) / nr;
    const int64_t jn0 = n_panels * ti_n / job->tn * nr;
    int64_t jn1 = n_panels * (ti_n + 1) / job->tn * nr;
    if (jn1 > n)
        jn1 = n;

    for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mcur = m - ic < MC ? m - ic : MC;
        const int64_t m_panels = (mcur + mr - 1) / mr;
        const int64_t ir0 = m_panels * ti_m / job->tm * mr;
        const int64_t ir1 = m_panels * (ti_m + 1) / job->tm * mr;
        for (int64_t pc = 0; pc < k; pc += KC) {
            const int64_t kcur = k - pc < KC ? k - pc : KC;
            const T beta_eff = pc == 0 ? job->beta : (T)1;
            const int last = pc + KC >= k;
            /* each thread packs the rows of A it needs: no barrier anywhere, so a
             * preempted thread never stalls the others (A is re-packed once per
             * column group, a small cost next to the product) */
            if (ir0 < mcur && !job->a_rows) {
                const int64_t rows = (ir1 < mcur ? ir1 : mcur) - ir0;
                job->pack_a(job->a_src, ic + ir0, rows, job->k0 + pc, kcur, mr, a_pack);
            }
            for (int64_t jc = jn0; jc < jn1; jc += NC) {
                const int64_t ncur = jn1 - jc < NC ? jn1 - jc : NC;
                job->pack_b(job->b_src, jc, ncur, job->k0 + pc, kcur, nr, b_pack);
                for (int64_t ir = ir0; ir < ir1 && ir < mcur; ir += mr) {
                    const int mrr = (int)(mcur - ir < mr ? mcur - ir : mr);
                    for (int64_t jr = 0; jr < ncur; jr += nr) {
                        const int nrr = (int)(ncur - jr < nr ? ncur - jr : nr);
                        if (job->a_rows)
                            FN(gemm_tile_a_rows)(job, job->k0 + pc, b_pack + jr * kcur, kcur, ic + ir, jc + jr, mrr, nrr,
                                                 beta_eff, last, edge);
                        else
                            FN(gemm_tile)(job, a_pack + (ir - ir0) * kcur, b_pack + jr * kcur, kcur, ic + ir,
                                          jc + jr, mrr, nrr, beta_eff, last, edge);
                    }
                }
            }
        }
    }
}

/* Slice s of the depth split, on one thread with the packing buffers of thread
 * `tid`: op(A)'s columns and op(B)'s rows [k s / S, k (s + 1) / S) into C
 * (slice 0, with beta) or partial s (beta 0), no epilogue. */
static void FN(split_slice)(const FN(gemm_job) *job, int s, int tid)
{
    const int S = job->split_k;
    FN(gemm_job) sub = *job;
    sub.k0 = job->k * s / S;
    sub.k = job->k * (s + 1) / S - sub.k0;
    sub.c = s == 0 ? job->c : job->partials + (int64_t)(s - 1) * job->m * job->ldp;
    sub.ldc = s == 0 ? job->ldc : job->ldp;
    sub.beta = s == 0 ? job->beta : (T)0;
    sub.ep = NULL;
    sub.tn = sub.tm = 1;
    sub.a_packs = job->a_packs + (int64_t)tid * job->a_stride;
    sub.b_packs = job->b_packs + (int64_t)tid * job->b_stride;
    FN(gemm_thread)(&sub, 0, 1);
    /* the slice's depth of the last columns, while its rows of A are in cache
     * (after the slice, not after the whole product: A would come from memory) */
    if (job->tail)
        FN(tail_slice)(job->tail, sub.k0, sub.k, sub.c, sub.ldc, sub.beta);
}

/* Rows [i0, i1) of C += the partials of slices 1 .. S - 1, in that order, then
 * the epilogue */
static void FN(split_sum)(const FN(gemm_job) *job, int64_t i0, int64_t i1)
{
    const int64_t n = job->ldp; /* the last columns too, where the slices took them */
    for (int64_t i = i0; i < i1; i++) {
        T *FNN_RESTRICT ci = job->c + i * job->ldc;
        for (int s = 1; s < job->split_k; s++) {
            const T *FNN_RESTRICT p = job->partials + (int64_t)(s - 1) * job->m * n + i * n;
            for (int64_t j = 0; j < n; j++)
                ci[j] += p[j];
        }
    }
    if (i1 > i0 && FN(epilogue_active)(job->ep))
        FN(epilogue_tile)(job->isa, job->c + i0 * job->ldc, job->ldc, i0, 0, (int)(i1 - i0), (int)n, job->ep);
}

/* Thread t of nth's share of the depth split: slices [S t / nth, S (t + 1) / nth). */
static void FN(split_thread)(const FN(gemm_job) *job, int t, int nth)
{
    const int S = job->split_k;
    for (int s = S * t / nth; s < S * (t + 1) / nth; s++)
        FN(split_slice)(job, s, t);
}

/* The shared-operand schedule: every thread packs all of one operand (op(B)
 * in row mode, op(A) in column mode: small, at most FNN_GEMM_SHARED_BYTES), and
 * the other is cut into units of `unit` whole panels (of MR rows, or NR
 * columns), each done over the whole depth. Each thread starts on an even
 * share of the units and, when done, takes the last units of the share with
 * the most left (fnn_spans_next), so a thread that starts late or runs
 * slower does fewer, where a static split leaves the others waiting for it
 * (on this 2-vCPU guest one thread of a small product's static split often
 * ran 10-20% longer than the other, which one changing from run to run). A
 * tile's depth blocks are applied in order by the one thread that takes it:
 * the same bits as on one thread. */
static void FN(gemm_thread_shared)(const FN(gemm_job) *job, int tid, int nspans, fnn_span *spans)
{
    const int64_t m = job->m, n = job->n, k = job->k, KC = job->kc;
    const int mr = job->mr, nr = job->nr;
    const int rows_mode = job->shared_mode == FNN_GEMM_SHARED_B;
    const int64_t panels = rows_mode ? (m + mr - 1) / mr : (n + nr - 1) / nr;
    /* the whole operand every thread packs (each depth block's panels after
     * the last's: block pc at pc * its padded width), then one unit's panels */
    const int64_t n_pad = (n + nr - 1) / nr * nr, m_pad = (m + mr - 1) / mr * mr;
    T *whole = job->a_packs + (int64_t)tid * job->a_stride;
    T *piece = whole + (k * (rows_mode ? n_pad : m_pad) + 63) / 64 * 64;
    T FNN_ALIGNED(64) edge[32 * 32];
    for (int64_t pc = 0; pc < k; pc += KC) {
        const int64_t kcur = k - pc < KC ? k - pc : KC;
        if (rows_mode)
            job->pack_b(job->b_src, 0, n, pc, kcur, nr, whole + pc * n_pad);
        else
            job->pack_a(job->a_src, 0, m, pc, kcur, mr, whole + pc * m_pad);
    }
    for (;;) {
        const int64_t u = fnn_spans_next(spans, nspans, tid);
        if (u < 0)
            break;
        const int64_t p0 = u * job->unit, p1 = p0 + job->unit < panels ? p0 + job->unit : panels;
        /* the unit's rows [r0, r1) and columns [c0, c1) */
        const int64_t r0 = rows_mode ? p0 * mr : 0, r1 = rows_mode ? (p1 * mr < m ? p1 * mr : m) : m;
        const int64_t c0 = rows_mode ? 0 : p0 * nr, c1 = rows_mode ? n : (p1 * nr < n ? p1 * nr : n);
        for (int64_t pc = 0; pc < k; pc += KC) {
            const int64_t kcur = k - pc < KC ? k - pc : KC;
            const T beta_eff = pc == 0 ? job->beta : (T)1;
            const int last = pc + KC >= k;
            const T *a_blk, *b_blk;
            if (rows_mode) {
                if (!job->a_rows)
                    job->pack_a(job->a_src, r0, r1 - r0, pc, kcur, mr, piece);
                a_blk = piece;
                b_blk = whole + pc * n_pad;
            } else {
                job->pack_b(job->b_src, c0, c1 - c0, pc, kcur, nr, piece);
                a_blk = whole + pc * m_pad;
                b_blk = piece;
            }
            for (int64_t i = r0; i < r1; i += mr) {
                const int mrr = (int)(r1 - i < mr ? r1 - i : mr);
                for (int64_t j = c0; j < c1; j += nr) {
                    const int nrr = (int)(c1 - j < nr ? c1 - j : nr);
                    if (job->a_rows)
                        FN(gemm_tile_a_rows)(job, pc, b_blk + (j - c0) * kcur, kcur, i, j, mrr, nrr, beta_eff, last,
                                             edge);
                    else
                        FN(gemm_tile)(job, a_blk + (i - r0) * kcur, b_blk + (j - c0) * kcur, kcur, i, j, mrr, nrr,
                                      beta_eff, last, edge);
                }
            }
        }
        if (job->tail) /* rows mode: the unit's rows of the last columns too, not after the others */
            FN(tail_rows)(job->tail, r0, r1);
    }
}

/* The driver's depth block for depth k, from the cache's kc: equal blocks
 * (784 = 3 x 264, not 384 + 384 + 16), so no short last block pays the full
 * C-tile load/store for little work */
static int64_t FN(depth_block)(int64_t k, int64_t kc)
{
    const int64_t nb = (k + kc - 1) / kc, even = (k + nb - 1) / nb;
    return (even + 7) / 8 * 8 < kc ? (even + 7) / 8 * 8 : kc;
}

/* ctx's threads for a product of `macs` multiply-adds: fewer where a thread
 * would get less than FNN_GEMM_MIN_MACS_PER_THREAD (the fork/join would cost
 * more than it saves) */
static int FN(threads_for)(fnn_ctx ctx, double macs)
{
    int nth = ctx.nthreads < 1 ? 1 : ctx.nthreads;
#ifndef FASTNN_HAVE_OPENMP
    nth = 1;
#endif
    if (macs < FNN_GEMM_MIN_MACS_PER_THREAD * (double)nth)
        nth = (int)(macs / FNN_GEMM_MIN_MACS_PER_THREAD) < 1 ? 1 : (int)(macs / FNN_GEMM_MIN_MACS_PER_THREAD);
    return nth;
}

/* Whether an m x n x k product takes the depth split (FNN_GEMM_SPLIT_K): by
 * its shape alone, so that every thread count sums the same slices (gemm_main
 * gives it no other path either) */
static int FN(split_k_applies)(int64_t m, int64_t n, int64_t k)
{
    return k >= FNN_GEMM_SPLIT_K_RATIO * (m > n ? m : n) &&
           (double)(m < n ? m : n) * (double)k * sizeof(T) > FNN_GEMM_SHARED_BYTES &&
           (double)m * (double)n * (FNN_GEMM_SPLIT_K_SLICES - 1) * sizeof(T) <= FNN_GEMM_SPLIT_K_BYTES;
}

/* The job's geometry and schedule for an m x n x k product on ctx: the
 * microkernel, the cache blocks, the thread count (returned) and either the
 * shared-operand schedule or the thread grid. Everything but the operands. */
static int FN(gemm_plan)(fnn_ctx ctx, int64_t m, int64_t n, int64_t k, FN(gemm_job) *job)
{
    job->m = m; job->n = n; job->k = k;
    job->isa = ctx.isa;
    job->ukr = FN(select_ukr)(ctx.isa, &job->mr, &job->nr, &job->ukr_half, &job->ukr_rows);
    fnn_gemm_block_sizes(ctx.isa, (int)sizeof(T), &job->mc, &job->kc, &job->nc);
    job->kc = FN(depth_block)(k, job->kc);
    int nth = FN(threads_for)(ctx, (double)m * (double)n * (double)k);
    const int64_t n_panels = (n + job->nr - 1) / job->nr, m_panels = (m + job->mr - 1) / job->mr;
    if (nth > n_panels * m_panels)
        nth = (int)(n_panels * m_panels);

    /* The shared-operand schedule where one operand, packed whole, is small
     * (its copy on every thread costs what the grid's did: a row split packs
     * all of B on every thread too) and the other gives each thread two units
     * or more; of the two, the one that copies less. */
    job->shared_mode = 0;
    job->unit = 1;
    job->split_k = 0;
    job->k0 = 0;
    job->partials = NULL;
    job->ldp = n;
    job->tn = job->tm = 1;
    if (FN(split_k_applies)(m, n, k)) {
        int64_t kc0, mc0, nc0;
        fnn_gemm_block_sizes(ctx.isa, (int)sizeof(T), &mc0, &kc0, &nc0);
        job->split_k = FNN_GEMM_SPLIT_K_SLICES;
        job->kc = FN(depth_block)((k + FNN_GEMM_SPLIT_K_SLICES - 1) / FNN_GEMM_SPLIT_K_SLICES, kc0);
        return nth < FNN_GEMM_SPLIT_K_SLICES ? nth : FNN_GEMM_SPLIT_K_SLICES;
    }
    if (nth > 1 && nth <= FNN_SPANS_MAX) {
        const double bytes_b = (double)k * (double)(n_panels * job->nr) * sizeof(T);
        const double bytes_a = (double)k * (double)(m_panels * job->mr) * sizeof(T);
        const int rows_ok = m_panels >= 2 * nth && bytes_b <= FNN_GEMM_SHARED_BYTES;
        const int cols_ok = n_panels >= 2 * nth && bytes_a <= FNN_GEMM_SHARED_BYTES;
        if (rows_ok && (!cols_ok || bytes_b <= bytes_a))
            job->shared_mode = FNN_GEMM_SHARED_B;
        else if (cols_ok)
            job->shared_mode = FNN_GEMM_SHARED_A;
    }
    if (job->shared_mode) {
        const int64_t panels = job->shared_mode == FNN_GEMM_SHARED_B ? m_panels : n_panels;
        job->unit = 1 + panels / (16 * nth); /* up to about 16 units a thread */
        return nth;
    }

    /* thread grid: each thread packs all of A for its columns and all of B for
     * its rows, so split the longer of m and n (a 4320 x 100 weight gradient of
     * depth 100 split by columns packed all 432K values of A on both threads),
     * and the rows anyway when there are too few column panels */
    job->tn = nth;
    job->tm = 1;
    int rows_even = 0;
    if (nth > 1 && m_panels >= 2 * nth) {
        /* the busiest thread's rows or columns (whole panels each, the last
         * one short): 100 x 100 outputs in 32-wide panels split 64 / 36 by
         * columns, 56 / 44 by rows in 8-row panels (the SimpleConvNet's
         * 100 x 4320 by 4320 x 100 product on 2 threads: 575 -> 530 us, with
         * all of B packed on each thread); a 10% better balance at least, as
         * a row split packs all of B on every thread (128 x 512 by 512 x 784,
         * 0.51 by columns, 0.50 by rows: 526 -> 544 us by rows) */
        int64_t rows = 0, cols = 0;
        for (int t = 0; t < nth; t++) {
            const int64_t r1 = m_panels * (t + 1) / nth * job->mr, c1 = n_panels * (t + 1) / nth * job->nr;
            const int64_t r = (r1 < m ? r1 : m) - m_panels * t / nth * job->mr;
            const int64_t c = (c1 < n ? c1 : n) - n_panels * t / nth * job->nr;
            rows = r > rows ? r : rows;
            cols = c > cols ? c : cols;
        }
        rows_even = 1.1 * (double)rows / (double)m < (double)cols / (double)n;
    }
    while (job->tn > 1 && (n_panels < 2 * job->tn || m > n || rows_even) && m_panels >= 2 * job->tm * 2) {
        /* move a factor of the grid from columns to rows */
        int f = 2;
        while (job->tn % f)
            f++;
        job->tn /= f;
        job->tm *= f;
    }
    if (job->tn > n_panels) {
        job->tn = (int)n_panels;
        nth = job->tn * job->tm;
    }
    if (job->tm > 1 && job->tm > m_panels) {
        job->tm = (int)m_panels;
        nth = job->tn * job->tm;
    }
    return nth;
}


/* Runs the planned job on nth threads (gemm_plan's count). */
static int FN(gemm_run_job)(FN(gemm_job) *job, int nth)
{
    const int64_t m = job->m, n = job->n, k = job->k;
    if (job->shared_mode) {
        const int rows_mode = job->shared_mode == FNN_GEMM_SHARED_B;
        const int64_t panels = rows_mode ? (m + job->mr - 1) / job->mr : (n + job->nr - 1) / job->nr;
        const int64_t kc_alloc = k < job->kc ? k : job->kc;
        const int64_t whole = k * (rows_mode ? (n + job->nr - 1) / job->nr * job->nr : (m + job->mr - 1) / job->mr * job->mr);
        const int64_t piece = kc_alloc * job->unit * (rows_mode ? job->mr : job->nr);
        /* sizes rounded to 64 elements keep every block 64-byte aligned */
        job->a_stride = (whole + 63) / 64 * 64 + (piece + 63) / 64 * 64;
        job->a_packs = (T *)fnn_scratch(FNN_SCRATCH_PACK_A, (size_t)(job->a_stride * nth) * sizeof(T));
        if (job->a_packs == NULL)
            return -1;
        /* each thread's units start as an even split */
        fnn_span spans[FNN_SPANS_MAX];
        fnn_spans_init(spans, nth, (panels + job->unit - 1) / job->unit);
        /* fewer threads than asked (nested regions) take the others' units */
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nth)
        FN(gemm_thread_shared)(job, omp_get_thread_num(), nth, spans);
#else
        FN(gemm_thread_shared)(job, 0, nth, spans);
#endif
        return 0;
    }

    /* packed buffers: one A block and one B block per thread, all in the
     * calling thread's cached scratch, so repeated calls fault no fresh pages */
    if (nth > 1 && job->mc > 1024)
        job->mc = 1024 / job->mr * job->mr;
    const int64_t mc_alloc = (m < job->mc ? (m + job->mr - 1) / job->mr * job->mr : job->mc);
    const int64_t kc_alloc = k < job->kc ? k : job->kc;
    const int64_t ncap = (n < job->nc ? n : job->nc);
    const int64_t nc_alloc = (ncap + job->nr - 1) / job->nr * job->nr;
    /* sizes rounded to 64 elements keep every block 64-byte aligned */
    const size_t a_elems = job->a_rows ? 0 : (size_t)((mc_alloc * kc_alloc + 63) / 64 * 64); /* A in place */
    const size_t b_elems = (size_t)((kc_alloc * nc_alloc + 63) / 64 * 64);
    T *mem = (T *)fnn_scratch(FNN_SCRATCH_PACK_A, (a_elems + b_elems) * (size_t)nth * sizeof(T));
    if (mem == NULL)
        return -1;
    job->a_packs = mem;
    job->a_stride = (int64_t)a_elems;
    job->b_packs = mem + a_elems * (size_t)nth;
    job->b_stride = (int64_t)b_elems;
    if (job->split_k) {
        job->ldp = n + (job->tail ? job->tail->r : 0);
        job->partials = (T *)fnn_scratch(FNN_SCRATCH_GEMM_SPLIT,
                                         (size_t)(m * job->ldp * (job->split_k - 1)) * sizeof(T));
        if (job->partials == NULL)
            return -1;
        if (nth == 1) {
            FN(split_thread)(job, 0, 1);
            FN(split_sum)(job, 0, m);
            return 0;
        }
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nth)
        {
            const int t = omp_get_thread_num(), got = omp_get_num_threads();
            if (got == nth) {
                FN(split_thread)(job, t, nth);
#pragma omp barrier
                FN(split_sum)(job, m * t / nth, m * (t + 1) / nth);
            } else if (t == 0) {
                /* fewer threads than planned: the same slices in turn, the same bits */
                FN(split_thread)(job, 0, 1);
                FN(split_sum)(job, 0, m);
            }
        }
#endif
        return 0;
    }
    if (nth == 1) {
        FN(gemm_thread)(job, 0, 1);
    } else {
#ifdef FASTNN_HAVE_OPENMP
#pragma omp parallel num_threads(nth)
        {
            int got = omp_get_num_threads();
            if (got == nth) {
                FN(gemm_thread)(job, omp_get_thread_num(), nth);
            } else if (omp_get_thread_num() == 0) {
                /* the runtime gave fewer threads (nested or limited): do it alone */
                FN(gemm_job) solo = *job;
                solo.tn = 1;
                solo.tm = 1;
                FN(gemm_thread)(&solo, 0, 1);
            }
        }
#endif
    }
    return 0;
}

/* Whether the job reads A = N in place: where each thread's columns are a
 * few NR panels (all of them on the grid's one column of threads or in the
 * shared-B schedule), packing A would copy it for little reuse */
static int FN(a_in_place)(const FN(gemm_job) *job)
{
#if FNN_X86_SIMD
    if (job->shared_mode == FNN_GEMM_SHARED_A)
        return 0;
    const int64_t cols = job->shared_mode ? job->n : (job->n + job->tn - 1) / job->tn;
    return job->isa >= FNN_ISA_AVX2 && (cols + job->nr - 1) / job->nr <= FNN_GEMM_A_IN_PLACE_PANELS;
#else
    (void)job;
    return 0;
#endif
}

/* fnn_gemm_packed, and then or with it the last columns `tail` (NULL: none) */
static int FN(gemm_packed)(fnn_ctx ctx, int64_t m, int64_t n, int64_t k, T alpha,
                           void (*pack_a)(const void *, int64_t, int64_t, int64_t, int64_t, int, T *),
                           const void *a_src,
                           void (*pack_b)(const void *, int64_t, int64_t, int64_t, int64_t, int, T *),
                           const void *b_src, T beta, T *c, int64_t ldc, const fnn_epilogue *ep,
                           const FN(tail_job) *tail, const T *a_rows, int64_t lda)
{
    if (m <= 0 || n <= 0)
        return 0;
    if (k <= 0 || alpha == 0) {
        /* no product: C = beta*C, then the epilogue */
        for (int64_t i = 0; i < m; i++) {
            T *ci = c + i * ldc;
            for (int64_t j = 0; j < n; j++)
                ci[j] = beta == 0 ? (T)0 : beta * ci[j];
        }
        if (FN(epilogue_active)(ep))
            for (int64_t i = 0; i < m; i++)
                for (int64_t j0 = 0; j0 < n; j0 += 1024)
                    FN(epilogue_tile)(ctx.isa, c + i * ldc + j0, ldc, i, j0, 1, (int)(n - j0 < 1024 ? n - j0 : 1024), ep);
        return 0;
    }
    FN(gemm_job) job;
    int nth = FN(gemm_plan)(ctx, m, n, k, &job);
    job.alpha = alpha; job.beta = beta;
    job.pack_a = pack_a; job.a_src = a_src;
    job.pack_b = pack_b; job.b_src = b_src;
    job.c = c; job.ldc = ldc; job.ep = ep;
    job.a_rows = NULL;
    if (a_rows && FN(a_in_place)(&job)) {
        job.a_rows = a_rows;
        job.lda = lda;
        job.ukra = FN(select_ukra)(ctx.isa, &job.ukra_rows);
    }
    /* the last columns go with each slice's depth in the depth split (where
     * tail_prepare left B's copy to the slices), with each unit's rows where the
     * units are rows (shared B, on several threads), else after the others */
    job.tail = tail && (job.split_k ? tail->slices : nth > 1 && job.shared_mode == FNN_GEMM_SHARED_B) ? tail : NULL;
    const int rc = FN(gemm_run_job)(&job, nth);
    if (rc == 0 && tail && !job.tail) {
        if (tail->bcopy) /* left to slices that did not run (tail_prepare's split is gemm_plan's) */
            FN(tail_copy_b)(tail, tail->bcopy, 0, tail->k);
        FN(tail_run)(ctx, tail);
    }
    return rc;
}

int FN(fnn_gemm_packed)(fnn_ctx ctx, int64_t m, int64_t n, int64_t k, T alpha,
                        void (*pack_a)(const void *, int64_t, int64_t, int64_t, int64_t, int, T *),
                        const void *a_src,
                        void (*pack_b)(const void *, int64_t, int64_t, int64_t, int64_t, int, T *),
                        const void *b_src, T beta, T *c, int64_t ldc, const fnn_epilogue *ep)
{
    return FN(gemm_packed)(ctx, m, n, k, alpha, pack_a, a_src, pack_b, b_src, beta, c, ldc, ep, NULL, NULL, 0);
}

/* ---- one row (batch-1 inference) on the portable path: no packing ------- */

/* Row i of C from row i of op(A) and B read in place: with B = N, an axpy per
 * depth step into a row buffer in L1; with B = T, dot products with 16 fixed
 * lanes (a fixed summation order). The SIMD paths take csrc/gemv_simd.c's
 * kernels instead (gemv_path), and this only where A is a strided column and
 * B = T. */
static void FN(small_m)(int isa, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                        const T *FNN_RESTRICT a, int64_t lda, const T *FNN_RESTRICT b, int64_t ldb, T beta,
                        T *FNN_RESTRICT c, int64_t ldc, const fnn_epilogue *ep)
{
    enum { JB = 256 };
    T FNN_ALIGNED(64) rowacc[JB];
    for (int64_t j0 = 0; j0 < n; j0 += JB) {
        const int64_t jn = n - j0 < JB ? n - j0 : JB;
        for (int64_t i = 0; i < m; i++) {
            T *ci = c + i * ldc;
            if (!trans_b) {
                for (int64_t j = 0; j < jn; j++)
                    rowacc[j] = 0;
                for (int64_t p = 0; p < k; p++) {
                    const T ap = trans_a ? a[p * lda + i] : a[i * lda + p];
                    const T *FNN_RESTRICT bp = b + p * ldb + j0;
                    for (int64_t j = 0; j < jn; j++)
                        rowacc[j] += ap * bp[j];
                }
            } else {
                for (int64_t j = 0; j < jn; j++) {
                    const T *FNN_RESTRICT bj = b + (j0 + j) * ldb;
                    T lane[16] = {0};
                    int64_t p = 0;
                    if (!trans_a) {
                        const T *FNN_RESTRICT ai = a + i * lda;
                        for (; p + 16 <= k; p += 16)
                            for (int l = 0; l < 16; l++)
                                lane[l] += ai[p + l] * bj[p + l];
                        for (; p < k; p++)
                            lane[p & 15] += ai[p] * bj[p];
                    } else {
                        for (; p < k; p++)
                            lane[p & 15] += a[p * lda + i] * bj[p];
                    }
                    T s = 0;
                    for (int l = 0; l < 16; l++)
                        s += lane[l];
                    rowacc[j] = s;
                }
            }
            T *cj = ci + j0;
            if (beta == 0) {
                for (int64_t j = 0; j < jn; j++)
                    cj[j] = alpha * rowacc[j];
            } else {
                for (int64_t j = 0; j < jn; j++)
                    cj[j] = alpha * rowacc[j] + beta * cj[j];
            }
            if (FN(epilogue_active)(ep))
                FN(epilogue_tile)(isa, cj, ldc, i, j0, 1, (int)jn, ep);
        }
    }
}

/* Where m x n x k (trans_a, trans_b) is one row of C, or B = T with a few rows:
 * FNN_GEMM_ONE_ROW (fnn_gemv_n, or small_m on the portable path and for a
 * strided row of A with B = T), FNN_GEMM_DOTS (fnn_gemm_dots), else 0; *threads
 * (where nonzero): the columns split over that many. */
static int FN(gemv_path)(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, int *threads)
{
    *threads = 1;
    if (m <= 0 || n <= 0 || k <= 0)
        return 0;
#if FNN_X86_SIMD
    const int dots = trans_b && !trans_a &&
                     (m == 1 || (m <= 4 && k >= 96) || (m <= FNN_GEMM_DOT_ROWS && k >= FNN_GEMM_DOT_DEPTH));
    if (ctx.isa >= FNN_ISA_AVX2 && ((!trans_b && m == 1) || dots)) {
        /* units: 64-byte runs of a row of C (threads never share a line of C) */
        const int64_t units = (n * (int64_t)sizeof(T) + 63) / 64;
        int nth = FN(threads_for)(ctx, (double)m * (double)n * (double)k);
        if (nth > units / 2)
            nth = (int)(units / 2);
        *threads = nth < 1 ? 1 : nth;
        return trans_b ? FNN_GEMM_DOTS : FNN_GEMM_ONE_ROW;
    }
#else
    (void)ctx;
    (void)trans_a;
    (void)trans_b;
#endif
    return m == 1 ? FNN_GEMM_ONE_ROW : 0;
}

#if FNN_X86_SIMD
typedef void (*FN(gemv_n_fn))(int64_t n, int64_t k, T alpha, const T *a, int64_t inca, const T *b, int64_t ldb,
                              T beta, T *c);
typedef void (*FN(dots_fn))(int64_t m, int64_t j0, int64_t j1, int64_t k, T alpha, const T *a, int64_t lda,
                            const T *b, int64_t ldb, T beta, T *c, int64_t ldc);

typedef struct {
    FN(gemv_n_fn) gemv_n;
    FN(dots_fn) dots;
} FN(gemv_kernels_t);

/* csrc/gemv_simd.c's GEMV and dot-product kernels for isa (AVX2 or AVX-512) */
static FN(gemv_kernels_t) FN(gemv_kernels)(int isa)
{
    const int avx512 = isa >= FNN_ISA_AVX512;
    return (FN(gemv_kernels_t)){avx512 ? FN(fnn_gemv_n_avx512) : FN(fnn_gemv_n_avx2),
                                avx512 ? FN(fnn_gemm_dots_avx512) : FN(fnn_gemm_dots_avx2)};
}
#endif

/* The gemv_path product on nth threads, each a run of whole 64-byte units of
 * the columns (each element of C is one kernel's sum in a fixed order, so any
 * split gives the same bits); then the epilogue. */
static void FN(gemv_run)(fnn_ctx ctx, int nth, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                         const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc,
                         const fnn_epilogue *ep)
{
#if FNN_X86_SIMD
    const int simd = ctx.isa >= FNN_ISA_AVX2 && !(trans_a && trans_b);
#else
    const int simd = 0;
#endif
    if (!simd) { /* one row on one thread (gemv_path) */
        FN(small_m)(ctx.isa, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep);
        return;
    }
    (void)nth;
#if FNN_X86_SIMD
    const int64_t per_unit = 64 / (int64_t)sizeof(T), units = (n + per_unit - 1) / per_unit;
    const FN(gemv_kernels_t) kern = FN(gemv_kernels)(ctx.isa);
    FNN_PARALLEL_FOR_ON(nth, , for (int t = 0; t < nth; t++) {
        const int64_t j0 = units * t / nth * per_unit, j1_ = units * (t + 1) / nth * per_unit;
        const int64_t j1 = j1_ < n ? j1_ : n;
        if (j0 >= j1)
            continue;
        if (!trans_b)
            kern.gemv_n(j1 - j0, k, alpha, a, trans_a ? lda : 1, b + j0, ldb, beta, c + j0);
        else
            kern.dots(m, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);
        if (FN(epilogue_active)(ep)) /* m <= FNN_GEMM_DOT_ROWS rows */
            for (int64_t j = j0; j < j1; j += 1024)
                FN(epilogue_tile)(ctx.isa, c + j, ldc, 0, j, (int)m, (int)(j1 - j < 1024 ? j1 - j : 1024), ep);
    });
#endif
}

/* ---- a few row panels, B = N: B read in place ---------------------------- */

/* Rows [i0, i0 + mrr) of the NR panel at column j0 of C, over the depth block
 * of kcur from the A panel ap and B's rows brow (both at the block's start),
 * in place into C (through `edge` where a kernel would write rows past mrr). */
static void FN(few_rows_panel)(const FN(gemm_job) *job, FN(ukri_fn) kern, FN(ukri_rows_fn) kern_rows, const T *ap,
                               const T *const *brow, int64_t i0, int mrr, int64_t j0, int64_t kcur, T beta_eff,
                               int last, T *edge)
{
    const int mr = job->mr, nr = job->nr;
    T *ct = job->c + i0 * job->ldc + j0;
    if (mrr == mr) {
        kern(kcur, ap, brow, j0, ct, job->ldc, job->alpha, beta_eff);
    } else if (kern_rows) {
        kern_rows(mrr, kcur, ap, brow, j0, ct, job->ldc, job->alpha, beta_eff);
    } else {
        kern(kcur, ap, brow, j0, edge, nr, job->alpha, (T)0);
        FN(tile_from_edge)(job->isa, ct, job->ldc, edge, nr, mrr, nr, beta_eff);
    }
    if (last && FN(epilogue_active)(job->ep))
        FN(epilogue_tile)(job->isa, ct, job->ldc, i0, j0, mrr, nr, job->ep);
}

/* Rows [i0, i0 + mrr) of the last part panel, columns [c0, n): the window of
 * w = NR (or NR/2, `half`) columns that ends at column n, inside B's rows, in
 * the same depth blocks as the whole panels (so the same sums as the driver's
 * edge tiles: the bits do not depend on the path), each block into `edge` and
 * added to the columns from c0. ap: the row panel's packed A, whole depth. */
static void FN(few_rows_tail)(const FN(gemm_job) *job, FN(ukri_fn) kern, FN(ukri_rows_fn) kern_rows, int w,
                              const T *ap, const T *const *brow, int64_t i0, int mrr, int64_t c0, T *edge)
{
    const int64_t n = job->n, k = job->k, j0 = n - w;
    const int mr = job->mr, nr = job->nr;
    T *ct = job->c + i0 * job->ldc + c0;
    for (int64_t pc = 0; pc < k; pc += job->kc) {
        const int64_t kcur = k - pc < job->kc ? k - pc : job->kc;
        if (mrr < mr && kern_rows)
            kern_rows(mrr, kcur, ap + pc * mr, brow + pc, j0, edge, nr, job->alpha, (T)0);
        else
            kern(kcur, ap + pc * mr, brow + pc, j0, edge, nr, job->alpha, (T)0);
        FN(tile_from_edge)(job->isa, ct, job->ldc, edge + (c0 - j0), nr, mrr, n - c0, pc == 0 ? job->beta : (T)1);
    }
    if (FN(epilogue_active)(job->ep))
        FN(epilogue_tile)(job->isa, ct, job->ldc, i0, c0, mrr, (int)(n - c0), job->ep);
}

/* The threads gemm_few_rows runs an m x n x k product on, or 0 where it does
 * not take the product: beyond FNN_GEMM_FEW_ROW_PANELS row panels (B's panels,
 * read in place, are used by that many row panels: sgemm 512 x 1024 x 1024
 * took 10.5 ms so, 10.1 packed). On several threads they split the columns
 * (up to FNN_GEMM_FEW_ROWS_THREADED_PANELS row panels, with two column panels
 * a thread) or else the rows (*by_rows; two row panels a thread at least),
 * each thread packing only its rows of op(A), where the driver's row split
 * packs all of B on every thread, and only where B fits in L2 (each row panel
 * reads all of it). 2 threads, us, driver -> by rows: 100 x 784 by 784 x 48
 * 47.5-50.6 -> 42.8-43.5; 32 x 784 by 784 x 50 23.7 -> 18.4; 100 x 4320 by
 * 4320 x 100 (1.7 MB of B) 484 -> 508-577, hence L2. Threads that share
 * every row of C, a cache line at their boundary, took 100 x 784 by 784 x 50
 * from 61 to 278 us, hence no column split of many rows. */
static int FN(few_rows_threads)(fnn_ctx ctx, int64_t m, int64_t n, int64_t k, int *by_rows)
{
    int mr, nr;
    fnn_gemm_tile_shape(ctx.isa, (int)sizeof(T), &mr, &nr);
    *by_rows = 0;
    /* AVX2's indirect-B kernel is bound by its loads (a depth step loads two B
     * vectors unaligned from B's rows, often across cache lines, and six
     * broadcasts for twelve FMAs), so the driver's packed B wins from 5 row
     * panels and wherever threads share the product (the AVX2 path on this Zen
     * 4, float32, us, few rows / driver: 1 thread 24 x 784 by 784 x 512 220 /
     * 229, 48 x 784 by 784 x 512 415 / 403, 96 x 784 by 784 x 50 110 / 96,
     * 90 x 4320 by 4320 x 100 1030 / 915; 2 threads 76 x 784 by 784 x 50 62.6
     * by rows / 47-55 shared B, 24 x 784 by 784 x 512 123-157 by columns / 119) */
    const int avx2 = ctx.isa == FNN_ISA_AVX2;
    /* AVX-512 on Intel cores (a Xeon with two 512-bit FMA pipes, float32, us,
     * 1 thread, few rows -> driver, medians of alternating processes): 100 x
     * 4320 by 4320 x 100 829-836 -> 660-675, 128 x 784 by 784 x 512 650-726
     * -> 595-636, 100 x 784 by 784 x 50 77-79 -> 66-71, 64 x 384 by 384 x 4096
     * 2124-3424 -> 1477-1790; 32 x 784 by 784 x 512 (4 panels) 170-194 ->
     * 204-211 stays. Zen 4, which splits a 512-bit load into two 256-bit
     * halves, measured the 16 panels. */
    const int load_bound = avx2 || (ctx.isa == FNN_ISA_AVX512 && fnn_cpu_is_intel());
    if (m > (load_bound ? FNN_GEMM_FEW_ROW_PANELS_LOAD_BOUND : FNN_GEMM_FEW_ROW_PANELS) * mr || n < nr)
        return 0;
    const double macs = (double)m * (double)n * (double)k;
    int nth = FN(threads_for)(ctx, macs);
    /* B read in place on one thread beats threads that each pack B until each
     * has twice the usual minimum: 1 / 2 threads, us: 16 x 784 by 784 x 50
     * 18.5 / 23 (grid), 48 x 256 by 256 x 64 17.2 / 20.3 (shared B); 32 x 784 by
     * 784 x 50 (1.25M multiply-adds) 33.6-37.2 / 29.8-31.8 */
    if (nth == 1 || macs < 2.0 * FNN_GEMM_MIN_MACS_PER_THREAD * nth)
        return 1;
    if (avx2)
        return 0;
    if (nth > FNN_SPANS_MAX)
        nth = FNN_SPANS_MAX;
    const int64_t col_units = (n + nr - 1) / nr, row_units = (m + mr - 1) / mr;
    if (m <= FNN_GEMM_FEW_ROWS_THREADED_PANELS * mr && col_units >= 4)
        return nth < col_units / 2 ? nth : (int)(col_units / 2);
    if (row_units < 4 || (double)k * (double)n * sizeof(T) > FNN_GEMM_SHARED_BYTES)
        return 0; /* each row panel reads all of B: only from L2 */
    *by_rows = 1;
    return nth < row_units / 2 ? nth : (int)(row_units / 2);
}

/* C (m x n, 2 <= m <= FNN_GEMM_FEW_ROW_PANELS * MR, n >= NR) = alpha * op(A) @ B
 * + beta * C with B = N (row p at b + p * ldb): each value of B is used by a
 * few row panels only, so packing B (all of it, as the driver does) would
 * mostly copy it. op(A) is packed, MR-row panels over the whole depth; the
 * indirect-B microkernel reads B's rows in place, whole NR panels in depth
 * blocks of KC (as the driver's: a panel's block stays in L1 across the row
 * panels); the last part panel is the NR (or NR/2) window that ends at column
 * n, inside B's rows, of which only the new columns are kept. On nth threads
 * (few_rows_threads's count) the units that work spans hand out are column
 * panels, or row panels where by_rows (each packed by its thread, then its
 * rows of the last columns `tail` too); each element is one thread's sum in
 * a fixed order. */
static int FN(gemm_few_rows)(fnn_ctx ctx, int nth, int by_rows, int trans_a, int64_t m, int64_t n, int64_t k,
                             T alpha, const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc,
                             const fnn_epilogue *ep, const FN(tail_job) *tail)
{
    FN(gemm_job) job;
    memset(&job, 0, sizeof(job));
    job.m = m; job.n = n; job.k = k;
    job.alpha = alpha; job.beta = beta;
    job.c = c; job.ldc = ldc; job.ep = ep;
    job.isa = ctx.isa;
    fnn_gemm_tile_shape(ctx.isa, (int)sizeof(T), &job.mr, &job.nr);
    fnn_gemm_block_sizes(ctx.isa, (int)sizeof(T), &job.mc, &job.kc, &job.nc);
    job.kc = FN(depth_block)(k, job.kc);
    FN(ukri_rows_fn) kern_rows;
    const FN(ukri_fn) kern = FN(select_ukri)(ctx.isa, &kern_rows);
    const FN(ukri_fn) half = FN(select_ukri_half)(ctx.isa);
    const int64_t m_panels = (m + job.mr - 1) / job.mr;
    const size_t a_bytes = ((size_t)(m_panels * job.mr * k) * sizeof(T) + 63) / 64 * 64;
    char *mem = (char *)fnn_scratch(FNN_SCRATCH_PACK_A, a_bytes + (size_t)k * sizeof(T *));
    if (mem == NULL)
        return -1;
    T *ap = (T *)mem;
    const T **brow = (const T **)(mem + a_bytes);
    const fnn_matrix_src as = {a, lda, trans_a, ctx.isa};
    if (!by_rows)
        FN(fnn_pack_matrix)(&as, 0, m, 0, k, job.mr, ap);
    for (int64_t p = 0; p < k; p++)
        brow[p] = b + p * ldb;
    const int64_t full = n / job.nr, rem = n - full * job.nr, col_units = full + (rem > 0);
    const int use_half = rem > 0 && rem <= job.nr / 2 && half != NULL;
    fnn_span spans[FNN_SPANS_MAX];
    fnn_spans_init(spans, nth, by_rows ? m_panels : col_units);
    FNN_PARALLEL_ON(nth, , {
        T FNN_ALIGNED(64) edge[32 * 32];
        const int t = FNN_THREAD_NUM;
        const T *const *rows = (const T *const *)brow;
        for (int64_t u; (u = fnn_spans_next(spans, nth, t)) >= 0;) {
            /* row panels [r0, r1) by column units [u0, u1) */
            const int64_t r0 = by_rows ? u : 0, r1 = by_rows ? u + 1 : m_panels;
            const int64_t u0 = by_rows ? 0 : u, u1 = by_rows ? col_units : u + 1;
            if (by_rows)
                FN(fnn_pack_matrix)(&as, u * job.mr, m - u * job.mr < job.mr ? m - u * job.mr : job.mr, 0, k, job.mr,
                                    ap + u * job.mr * k);
            for (int64_t cu = u0; cu < u1; cu++) {
                if (cu == full) {
                    for (int64_t r = r0; r < r1; r++)
                        FN(few_rows_tail)(&job, use_half ? half : kern, use_half ? NULL : kern_rows,
                                          use_half ? job.nr / 2 : job.nr, ap + r * job.mr * k, rows, r * job.mr,
                                          (int)(m - r * job.mr < job.mr ? m - r * job.mr : job.mr), full * job.nr,
                                          edge);
                    continue;
                }
                for (int64_t pc = 0; pc < k; pc += job.kc) {
                    const int64_t kcur = k - pc < job.kc ? k - pc : job.kc;
                    for (int64_t r = r0; r < r1; r++) {
                        const int mrr = (int)(m - r * job.mr < job.mr ? m - r * job.mr : job.mr);
                        FN(few_rows_panel)(&job, kern, kern_rows, ap + r * job.mr * k + pc * job.mr, rows + pc,
                                           r * job.mr, mrr, cu * job.nr, kcur, pc == 0 ? beta : (T)1,
                                           pc + job.kc >= k, edge);
                    }
                }
            }
            if (by_rows && tail)
                FN(tail_rows)(tail, r0 * job.mr, r1 * job.mr < m ? r1 * job.mr : m);
        }
    });
    if (tail && !by_rows)
        FN(tail_run)(ctx, tail);
    return 0;
}

/* The last r = n mod L columns of C (L: the lanes of a vector) that fnn_gemm
 * computes apart, or 0: a microkernel spends a whole vector on them (n = 50:
 * 64 lanes for 50 columns), where dot products of op(A)'s rows with those
 * columns of op(B) (A = N) or GEMVs through A (A = T) do r / L of that work
 * plus a sum across the lanes each (1 thread, us, without -> with: 100 x 784
 * by 784 x 50 99.8-102.1 -> 84.1; 784 x 32 by 32 x 34 27.0-28.8 -> 22.4-23.7;
 * 512 x 128 by 128 x 100 140.9-141.9 -> 127.7-133.7). Up to L/4 of them: 8 of
 * 16 cost more apart (4000 x 784 by 784 x 24: 2.59-3.29 -> 2.63-3.76 ms); with
 * A = T each column's GEMV reads all of A, so only where A fits in L2 (with 8
 * columns, a 12.5 MB A: 2.45-2.50 -> 3.82-4.55 ms) or where C has no other
 * columns: n <= L/4 (a binary classifier's output, say) wastes most of a
 * vector's lanes otherwise (1 thread, us: 1000 x 64 by 64 x 1 27.8 -> 4.9-7.0,
 * 5000 x 300 by 300 x 1 641 -> 85-88; with A = T and 6 MB of A 714-760 -> 89).
 * The GEMVs (A = T) end in no sum across the lanes, so they pay from a depth
 * of 8 (the weight gradient of a batch of 16 on 784 x 50: 20.1 -> 17.8-18.0;
 * depth 4: 9.0-9.3 -> 9.5-9.6). */
static int64_t FN(tail_columns)(fnn_ctx ctx, int trans_a, int64_t m, int64_t n, int64_t k)
{
#if FNN_X86_SIMD
    if (ctx.isa < FNN_ISA_AVX2 || m < 2 || k < (trans_a ? FNN_GEMM_TAIL_DEPTH_GEMV : FNN_GEMM_TAIL_DEPTH))
        return 0;
    const int64_t lanes = (ctx.isa >= FNN_ISA_AVX512 ? 64 : 32) / (int64_t)sizeof(T), r = n % lanes;
    if (trans_a && n > r && (double)m * (double)k * sizeof(T) > FNN_GEMM_SHARED_BYTES)
        return 0;
    return (n > lanes || n == r) && r >= 1 && 4 * r <= lanes ? r : 0;
#else
    (void)ctx;
    (void)trans_a;
    (void)m;
    (void)n;
    (void)k;
    return 0;
#endif
}

/* the threads of gemm_tail: whole runs of 16 rows at least */
static int FN(tail_threads)(fnn_ctx ctx, int64_t m, int64_t r, int64_t k)
{
    const int nth = FN(threads_for)(ctx, (double)m * (double)r * (double)k);
    return nth <= m / 16 ? nth : m / 16 < 1 ? 1 : (int)(m / 16);
}

/* The tail job of those columns; -1 where scratch memory could not be allocated. */
static int FN(tail_prepare)(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n0, int64_t r, int64_t k,
                            T alpha, const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc,
                            const fnn_epilogue *ep, FN(tail_job) *t)
{
    const int copy_b = !trans_a && !trans_b;
    /* the other columns take the depth split (by shape alone, gemm_plan):
     * with A = N its slices take these too (the GEMVs of A = T would need a
     * row of results per slice) */
    const int slices = !trans_a && n0 > 0 && FN(split_k_applies)(m, n0, k);
    const size_t elems = (size_t)(copy_b ? r * k : 0) + (size_t)(trans_a ? r * m : 0);
    T *mem = (T *)fnn_scratch(FNN_SCRATCH_GEMM_TAIL, elems * sizeof(T));
    if (!mem)
        return -1;
    *t = (FN(tail_job)){.trans_a = trans_a, .trans_b = trans_b, .isa = ctx.isa, .m = m, .n0 = n0, .r = r, .k = k,
                        .alpha = alpha, .beta = beta, .a = a, .b = b, .lda = lda, .ldb = ldb,
                        .res = trans_a ? mem + (copy_b ? r * k : 0) : NULL, .c = c, .ldc = ldc, .ep = ep,
                        .slices = slices, .bcopy = NULL};
    if (copy_b) {
        t->brows = mem;
        t->ldr = k;
        if (slices)
            t->bcopy = mem;
        else
            FN(tail_copy_b)(t, mem, 0, k);
    } else {
        t->brows = b + n0 * ldb;
        t->ldr = ldb;
    }
    return 0;
}

/* Rows [i0, i1) of the tail job's columns. */
static void FN(tail_rows)(const FN(tail_job) *t, int64_t i0, int64_t i1)
{
#if FNN_X86_SIMD
    const FN(gemv_kernels_t) kern = FN(gemv_kernels)(t->isa);
    const int64_t m = t->m, n0 = t->n0, r = t->r, ldc = t->ldc;
    T *c = t->c;
    if (!t->trans_a) {
        kern.dots(i1 - i0, 0, r, t->k, t->alpha, t->a + i0 * t->lda, t->lda, t->brows, t->ldr, t->beta,
                  c + i0 * ldc + n0, ldc);
    } else {
        T *res = t->res;
        for (int64_t j = 0; j < r; j++) {
            const T *col = t->trans_b ? t->b + (n0 + j) * t->ldb : t->b + n0 + j;
            kern.gemv_n(i1 - i0, t->k, t->alpha, col, t->trans_b ? 1 : t->ldb, t->a + i0, t->lda, (T)0,
                        res + j * m + i0);
        }
        for (int64_t i = i0; i < i1; i++)
            for (int64_t j = 0; j < r; j++) {
                T *cij = c + i * ldc + n0 + j;
                *cij = t->beta == 0 ? res[j * m + i] : res[j * m + i] + t->beta * *cij;
            }
    }
    if (FN(epilogue_active)(t->ep))
        for (int64_t i = i0; i < i1; i += 1 << 20)
            FN(epilogue_tile)(t->isa, c + i * ldc + n0, ldc, i, n0, (int)(i1 - i < (1 << 20) ? i1 - i : 1 << 20),
                              (int)r, t->ep);
#else
    (void)t; /* no tail without SIMD (tail_columns) */
    (void)i0;
    (void)i1;
#endif
}

/* Depth [k0, k0 + ks) of the tail job's columns (A = N), all rows, into c
 * (ldc; columns from n0) with beta, no epilogue: a slice of the depth split,
 * which sums them into C with the other columns. The slice first copies its
 * depth of B's columns (bcopy): B's rows it has just packed are in cache. */
static void FN(tail_slice)(const FN(tail_job) *t, int64_t k0, int64_t ks, T *c, int64_t ldc, T beta)
{
    if (t->bcopy)
        FN(tail_copy_b)(t, t->bcopy, k0, ks);
    FN(tail_job) part = *t;
    part.a = t->a + k0;
    part.brows = t->brows + k0;
    part.k = ks;
    part.c = c;
    part.ldc = ldc;
    part.beta = beta;
    part.ep = NULL;
    FN(tail_rows)(&part, 0, t->m);
}

/* Rows [k0, k0 + ks) of B's last columns (B = N) into dst, as r rows of k. */
static void FN(tail_copy_b)(const FN(tail_job) *t, T *FNN_RESTRICT dst, int64_t k0, int64_t ks)
{
    /* locals: the build may not assume that stores of T leave t alone */
    const int64_t r = t->r, k = t->k, ldb = t->ldb;
    const T *FNN_RESTRICT src = t->b + t->n0;
    for (int64_t p = k0; p < k0 + ks; p++)
        for (int64_t j = 0; j < r; j++)
            dst[j * k + p] = src[p * ldb + j];
}

/* All rows of the tail job's columns, split over tail_threads. */
static void FN(tail_run)(fnn_ctx ctx, const FN(tail_job) *t)
{
    const int nth = FN(tail_threads)(ctx, t->m, t->r, t->k);
    FNN_PARALLEL_FOR_ON(nth, , for (int th = 0; th < nth; th++) {
        FN(tail_rows)(t, t->m * th / nth, t->m * (th + 1) / nth);
    });
}

int FN(fnn_gemm_schedule)(fnn_ctx ctx, int trans_b, int64_t m, int64_t n, int64_t k, int *threads)
{
    *threads = 1;
    if (m <= 0 || n <= 0 || k <= 0)
        return FNN_GEMM_GRID;
    const int gemv = FN(gemv_path)(ctx, 0, trans_b, m, n, k, threads);
    if (gemv)
        return gemv;
    const int64_t tail = FN(tail_columns)(ctx, 0, m, n, k);
    if (tail == n) { /* all of C: dot products */
        *threads = FN(tail_threads)(ctx, m, n, k);
        return FNN_GEMM_DOTS;
    }
    n -= tail; /* the path of the columns before the tail */
    int by_rows;
    const int few = trans_b || FN(split_k_applies)(m, n, k) ? 0 : FN(few_rows_threads)(ctx, m, n, k, &by_rows);
    if (few > 0) {
        *threads = few;
        return by_rows ? FNN_GEMM_FEW_ROWS_BY_ROWS : FNN_GEMM_FEW_ROWS;
    }
    FN(gemm_job) job;
    *threads = FN(gemm_plan)(ctx, m, n, k, &job);
    return job.split_k ? FNN_GEMM_SPLIT_K : job.shared_mode ? job.shared_mode : FNN_GEMM_GRID;
}

int FN(fnn_gemm_packed_only)(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k)
{
    int threads, by_rows;
    if (m <= 0 || n <= 0 || k <= 0)
        return 1; /* no product: C is beta C whatever the flags */
    if (FN(gemv_path)(ctx, trans_a, trans_b, m, n, k, &threads) || FN(tail_columns)(ctx, trans_a, m, n, k) > 0)
        return 0;
    return trans_b || FN(split_k_applies)(m, n, k) || FN(few_rows_threads)(ctx, m, n, k, &by_rows) <= 0;
}

/* Square blocks of the transpose stay in L1 while one side is read and the other
 * written along rows; element by element a large matrix's columns are walked
 * through memory (NumPy's copy of a transposed 1024 x 1024 float32 view took 6.9
 * ms, each element of a column on another line of the same cache sets). The
 * threads take bands of columns of src, so each writes whole rows of dst. */
#define FNN_TRANSPOSE_COPY_BLOCK 32
#define FNN_TRANSPOSE_COPY_BAND 64

void FN(fnn_transpose_copy)(fnn_ctx ctx, const T *src, int64_t lds, int64_t rows, int64_t cols, T *dst)
{
    const int isa = fnn_isa_of(ctx);
    const int64_t simd_rows = sizeof(T) == 4 && isa >= FNN_ISA_AVX2 ? rows / 16 * 16 : 0;
    const int64_t bands = (cols + FNN_TRANSPOSE_COPY_BAND - 1) / FNN_TRANSPOSE_COPY_BAND;
    const int64_t par_work = rows * cols;
    FNN_PARALLEL_FOR(par_work,
    for (int64_t band = 0; band < bands; band++) {
        const int64_t c0 = band * FNN_TRANSPOSE_COPY_BAND;
        const int64_t c1 = cols - c0 < FNN_TRANSPOSE_COPY_BAND ? cols : c0 + FNN_TRANSPOSE_COPY_BAND;
        if (simd_rows > 0)
            FN(fnn_transpose)(isa, src + c0, lds, simd_rows, c1 - c0, simd_rows, dst + c0 * rows, rows);
        for (int64_t r0 = simd_rows; r0 < rows; r0 += FNN_TRANSPOSE_COPY_BLOCK) {
            const int64_t r1 = rows - r0 < FNN_TRANSPOSE_COPY_BLOCK ? rows : r0 + FNN_TRANSPOSE_COPY_BLOCK;
            for (int64_t cb = c0; cb < c1; cb += FNN_TRANSPOSE_COPY_BLOCK) {
                const int64_t cb1 = c1 - cb < FNN_TRANSPOSE_COPY_BLOCK ? c1 : cb + FNN_TRANSPOSE_COPY_BLOCK;
                for (int64_t c = cb; c < cb1; c++)
                    for (int64_t r = r0; r < r1; r++)
                        dst[c * rows + r] = src[r * lds + c];
            }
        }
    });
}

/* C = alpha op(A) op(B) + beta C by gemm_few_rows or the packed driver, and
 * then or with them the last columns `tail` (NULL: none) */
static int FN(gemm_main)(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                         const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc,
                         const fnn_epilogue *ep, const FN(tail_job) *tail)
{
    int by_rows = 0;
    const int few = m > 0 && n > 0 && k > 0 && alpha != 0 && !trans_b && !FN(split_k_applies)(m, n, k)
                        ? FN(few_rows_threads)(ctx, m, n, k, &by_rows)
                        : 0;
    if (few > 0)
        return FN(gemm_few_rows)(ctx, few, by_rows, trans_a, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep, tail);
    fnn_matrix_src as = {a, lda, trans_a, ctx.isa}, bs = {b, ldb, trans_b, ctx.isa};
    return FN(gemm_packed)(ctx, m, n, k, alpha, FN(fnn_pack_matrix), &as, FN(fnn_pack_matrix_b), &bs, beta, c, ldc,
                           ep, tail, trans_a ? NULL : a, lda);
}

int FN(fnn_gemm)(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T *a,
                 int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc, const fnn_epilogue *ep)
{
    int nth;
    if (alpha != 0 && FN(gemv_path)(ctx, trans_a, trans_b, m, n, k, &nth)) {
        FN(gemv_run)(ctx, nth, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep);
        return 0;
    }
    const int64_t tail = alpha != 0 ? FN(tail_columns)(ctx, trans_a, m, n, k) : 0;
    if (tail > 0) {
        FN(tail_job) t;
        if (FN(tail_prepare)(ctx, trans_a, trans_b, m, n - tail, tail, k, alpha, a, lda, b, ldb, beta, c, ldc, ep,
                             &t))
            return -1;
        if (n == tail) {
            FN(tail_run)(ctx, &t);
            return 0;
        }
        return FN(gemm_main)(ctx, trans_a, trans_b, m, n - tail, k, alpha, a, lda, b, ldb, beta, c, ldc, ep, &t);
    }
    return FN(gemm_main)(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep, NULL);
}

#undef FN
#undef CAT2
#undef CAT2_
