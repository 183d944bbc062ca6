/* Softmax, log-softmax and the losses (softmax cross-entropy, mean squared
 * error, sigmoid binary cross-entropy).
 *
 * Rows are shared among threads; a row is always computed the same way whatever
 * thread runs it. Losses are reduced deterministically: each row (or each fixed
 * block of LOSS_BLOCK elements) has its partial sum in double, and those are
 * added serially in index order, so the loss is the same for every thread
 * count. float32 rows use the vector max and exp of eltwise_simd.c when the ISA
 * allows; float64 uses libm. */
#include <math.h>
#include <stdlib.h>

#include "activation.h"
#include "kernels.h"

#define LOSS_BLOCK ((int64_t)8192)


/* max of a row, NaN when the row has a NaN (as np.max) */
#define DEFINE_ROW_MAX_PORTABLE(T, SFX)                                                  \
    static T row_max_portable_##SFX(const T *x, int64_t n)                               \
    {                                                                                    \
        T m = x[0];                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                \
            if (x[i] != x[i]) return x[i];                                               \
            m = x[i] > m ? x[i] : m;                                                     \
        }                                                                                \
        return m;                                                                        \
    }
DEFINE_ROW_MAX_PORTABLE(float, f32)
DEFINE_ROW_MAX_PORTABLE(double, f64)

static float row_max_f32(int isa, const float *x, int64_t n)
{
    if (isa >= FNN_ISA_AVX512) return fnn_row_max_avx512_f32(x, n);
    if (isa >= FNN_ISA_AVX2) return fnn_row_max_avx2_f32(x, n);
    return row_max_portable_f32(x, n);
}

static double row_max_f64(int isa, const double *x, int64_t n)
{
    (void)isa;
    return row_max_portable_f64(x, n);
}

/* e = exp(x - m), returns sum(e) */
static double row_exp_sum_f32(int isa, const float *x, float *e, int64_t n, float m)
{
    if (isa >= FNN_ISA_AVX512) return fnn_exp_shift_sum_avx512_f32(x, e, n, m);
    if (isa >= FNN_ISA_AVX2) return fnn_exp_shift_sum_avx2_f32(x, e, n, m);
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        e[i] = expf(x[i] - m);
        s += e[i];
    }
    return (float)s;
}

static double row_exp_sum_f64(int isa, const double *x, double *e, int64_t n, double m)
{
    (void)isa;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        e[i] = exp(x[i] - m);
        s += e[i];
    }
    return s;
}

/* Rows per block of the vector softmax cross-entropy: the blocks are fixed, so
 * the loss (block sums added in order) does not depend on the thread count. */
#define SCE_BLOCK_ROWS ((int64_t)32)

/* One block of R <= 32 rows: dz from the ISA's row kernel (one sweep per row that
 * stays in L1), and the rows' summed loss, sum(log s - (z[label] - max)), in
 * double: the log of the product of the s (each in [1, K]) is one log per block
 * instead of one per row, which dominated short rows. A NaN anywhere in a row
 * makes its s, its dz and the loss NaN, as in the reference. */
static double sce_labels_block_f32(int isa, const float *z, const int64_t *labels, float *dz, int64_t R, int64_t K,
                                   double inv_N)
{
    float s[SCE_BLOCK_ROWS], shifted[SCE_BLOCK_ROWS];
    int64_t lab[SCE_BLOCK_ROWS];
    double shifted_sum = 0, prod = 1;
    int nan = 0, expo = 0;
    for (int64_t r = 0; r < R; r++) { /* validation keeps labels in range; a stray one never indexes astray */
        const int ok = (uint64_t)labels[r] < (uint64_t)K;
        nan |= !ok;
        lab[r] = ok ? labels[r] : 0;
    }
    if (isa >= FNN_ISA_AVX512)
        fnn_sce_rows_avx512_f32(z, lab, dz, R, K, inv_N, s, shifted);
    else
        fnn_sce_rows_avx2_f32(z, lab, dz, R, K, inv_N, s, shifted);
    for (int64_t r = 0; r < R; r++) {
        nan |= s[r] != s[r];
        shifted_sum += (double)shifted[r];
        prod *= (double)s[r];
        if (prod > 0x1p900) {
            int e;
            prod = frexp(prod, &e);
            expo += e;
        }
    }
    if (nan) return NAN;
    return (log(prod) + (double)expo * 0.693147180559945309417) - shifted_sum;
}

/* float32 rows against labels with AVX2 or AVX-512. Returns 0 (nothing done) on
 * other ISAs. */
static int sce_labels_fast_f32(fnn_ctx ctx, const float *z, const int64_t *labels, float *dz, int64_t N,
                               int64_t K, double *loss)
{
    const int64_t nblocks = (N + SCE_BLOCK_ROWS - 1) / SCE_BLOCK_ROWS;
    const double inv_N = 1.0 / (double)N;
    const int isa = fnn_isa_of(ctx);
    double part_small[16], *part = part_small, total = 0;
    int64_t b;
    if (isa < FNN_ISA_AVX2) return 0;
    if (nblocks > 16 && !(part = (double *)malloc((size_t)nblocks * sizeof(double)))) return 0;
    const int64_t par_work = N * K;
    FNN_PARALLEL_FOR(par_work,
    for (b = 0; b < nblocks; b++) {
        const int64_t lo = b * SCE_BLOCK_ROWS, rows = N - lo < SCE_BLOCK_ROWS ? N - lo : SCE_BLOCK_ROWS;
        part[b] = sce_labels_block_f32(isa, z + lo * K, labels + lo, dz + lo * K, rows, K, inv_N);
    });
    for (b = 0; b < nblocks; b++) total += part[b];
    if (part != part_small) free(part);
    *loss = total / (double)N;
    return 1;
}

static int sce_labels_fast_f64(fnn_ctx ctx, const double *z, const int64_t *labels, double *dz, int64_t N,
                               int64_t K, double *loss)
{
    (void)ctx; (void)z; (void)labels; (void)dz; (void)N; (void)K; (void)loss;
    return 0;
}

#define DEFINE_LOSS(T, SFX, LOG, LOG1P, EXP)                                                                    \
    void fnn_softmax_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t R, int64_t K)                     \
    {                                                                                               \
        const int isa = fnn_isa_of(ctx);                                                            \
        int64_t r;                                                                                  \
        if (K <= 0) return; /* empty rows: nothing to write, and no element to take a max of */   \
        const int64_t par_work = R * K;                                                                           \
        FNN_PARALLEL_FOR(par_work,                                                                 \
        for (r = 0; r < R; r++) {                                                                   \
            const T *xr = x + r * K;                                                                \
            T *yr = y + r * K;                                                                      \
            const T m = row_max_##SFX(isa, xr, K);                                                  \
            const T inv_s = (T)1 / (T)row_exp_sum_##SFX(isa, xr, yr, K, m);                         \
            for (int64_t k = 0; k < K; k++) yr[k] *= inv_s;                                         \
        });                                                                                         \
    }                                                                                               \
                                                                                                    \
    void fnn_log_softmax_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t R, int64_t K)                 \
    {                                                                                               \
        const int isa = fnn_isa_of(ctx);                                                            \
        int64_t r;                                                                                  \
        if (K <= 0) return; /* empty rows: nothing to write, and no element to take a max of */   \
        const int64_t par_work = R * K;                                                                           \
        FNN_PARALLEL_FOR(par_work,                                                                 \
        for (r = 0; r < R; r++) {                                                                   \
            const T *xr = x + r * K;                                                                \
            T *yr = y + r * K;                                                                      \
            const T m = row_max_##SFX(isa, xr, K);                                                  \
            const T ls = LOG((T)row_exp_sum_##SFX(isa, xr, yr, K, m));                              \
            for (int64_t k = 0; k < K; k++) yr[k] = (xr[k] - m) - ls;                               \
        });                                                                                         \
    }                                                                                               \
                                                                                                    \
    int fnn_softmax_cross_entropy_##SFX(fnn_ctx ctx, const T *z, const int64_t *labels,             \
                                        const T *probs, T *dz, int64_t N, int64_t K, double *loss)  \
    {                                                                                               \
        const int isa = fnn_isa_of(ctx);                                                            \
        const double inv_N = 1.0 / (double)N;                                                       \
        double *row_loss, total = 0;                                                                \
        int64_t r;                                                                                  \
        *loss = NAN;                                                                                \
        if (N <= 0 || K <= 0) return 0;                                                             \
        if (labels && sce_labels_fast_##SFX(ctx, z, labels, dz, N, K, loss)) return 0;             \
        row_loss = (double *)malloc((size_t)N * sizeof(double));                                    \
        if (!row_loss) return -1;                                                                   \
        const int64_t par_work = N * K;                                                                           \
        FNN_PARALLEL_FOR(par_work,                                                                 \
        for (r = 0; r < N; r++) {                                                                   \
            const T *zr = z + r * K;                                                                \
            T *dr = dz + r * K;                                                                     \
            const T m = row_max_##SFX(isa, zr, K);                                                  \
            const T s = (T)row_exp_sum_##SFX(isa, zr, dr, K, m);                                    \
            const T ls = LOG(s), inv_s = (T)1 / s;                                                  \
            /* (e/s - t)/N with reciprocals: within an ulp or two of the divisions,  */            \
            /* and a division per element would cost as much as the exponentials     */            \
            if (labels) {                                                                           \
                const int64_t l = labels[r];                                                        \
                const T scale = (T)((double)inv_s * inv_N);                                         \
                if (l >= 0 && l < K) {                                                              \
                    const T el = dr[l];                                                             \
                    row_loss[r] = -(double)((zr[l] - m) - ls);                                      \
                    for (int64_t k = 0; k < K; k++) dr[k] *= scale;                                 \
                    dr[l] = (el * inv_s - (T)1) * (T)inv_N;                                         \
                } else {                                                                            \
                    row_loss[r] = NAN; /* unreachable after validation; never index astray */      \
                    for (int64_t k = 0; k < K; k++) dr[k] *= scale;                                 \
                }                                                                                   \
            } else {                                                                                \
                const T *tr = probs + r * K;                                                        \
                const T tN = (T)inv_N;                                                              \
                double acc = 0, t_sum = 0;                                                          \
                for (int64_t k = 0; k < K; k++) t_sum += (double)tr[k];                             \
                /* d/dz of -sum(t log p) is p * sum(t) - t: rows that are not */                   \
                /* distributions get the gradient of the loss returned; one-hot rows */            \
                /* (sum exactly 1) get the bits of p - t */                                         \
                const T p_scale = (T)((double)inv_s * t_sum);                                       \
                for (int64_t k = 0; k < K; k++) {                                                   \
                    /* a class of weight 0 adds nothing, even at log p = -inf */                    \
                    if (tr[k] != 0) acc += (double)(tr[k] * (ls - (zr[k] - m)));                    \
                    dr[k] = (dr[k] * p_scale - tr[k]) * tN;                                         \
                }                                                                                   \
                row_loss[r] = acc;                                                                  \
            }                                                                                       \
        });                                                                                         \
        for (r = 0; r < N; r++) total += row_loss[r];                                               \
        free(row_loss);                                                                             \
        *loss = total / (double)N;                                                                  \
        return 0;                                                                                   \
    }                                                                                               \
                                                                                                    \
    /* fixed blocks; each block's partial sum in double, then a serial sum */                      \
    static int blocked_mean_##SFX(fnn_ctx ctx, const T *a, const T *b, T *grad, int64_t n,         \
                                  int kind, double *loss)                                           \
    {                                                                                               \
        const int64_t nblocks = (n + LOSS_BLOCK - 1) / LOSS_BLOCK;                                  \
        const T fn = (T)n, two_over_n = (T)2 / fn;                                                  \
        double *part, total = 0;                                                                    \
        int64_t blk;                                                                                \
        *loss = NAN;                                                                                \
        if (n <= 0) return 0;                                                                       \
        part = (double *)malloc((size_t)nblocks * sizeof(double));                                  \
        if (!part) return -1;                                                                       \
        const int64_t par_work = n;                                                                               \
        FNN_PARALLEL_FOR(par_work,                                                                 \
        for (blk = 0; blk < nblocks; blk++) {                                                       \
            const int64_t lo = blk * LOSS_BLOCK, hi = lo + LOSS_BLOCK < n ? lo + LOSS_BLOCK : n;   \
            double s = 0;                                                                           \
            if (kind == 0) { /* mean squared error: a = y, b = t */                                 \
                for (int64_t i = lo; i < hi; i++) {                                                 \
                    const T d = a[i] - b[i];                                                        \
                    s += (double)(d * d);                                                           \
                    grad[i] = d * two_over_n;                                                       \
                }                                                                                   \
            } else { /* sigmoid binary cross-entropy: a = z, b = t */                               \
                for (int64_t i = lo; i < hi; i++) {                                                 \
                    const T zi = a[i], ti = b[i];                                                   \
                    if (isinf(zi)) { /* -log of p = 0 or 1, weighted by t or 1 - t: 0 * inf is 0 */ \
                        const T w = zi > 0 ? (T)1 - ti : ti;                                        \
                        s += w == 0 ? 0.0 : (double)w * INFINITY;                                   \
                    } else {                                                                        \
                        const T e = LOG1P(EXP(-(zi > 0 ? zi : -zi)));                               \
                        s += (double)((zi > 0 ? zi : (T)0) - zi * ti + e);                          \
                    }                                                                               \
                    grad[i] = (fnn_sigmoid_##SFX(zi) - ti) / fn;                                    \
                }                                                                                   \
            }                                                                                       \
            part[blk] = s;                                                                          \
        });                                                                                         \
        for (blk = 0; blk < nblocks; blk++) total += part[blk];                                     \
        free(part);                                                                                 \
        *loss = total / (double)n;                                                                  \
        return 0;                                                                                   \
    }                                                                                               \
                                                                                                    \
    int fnn_mean_squared_error_##SFX(fnn_ctx ctx, const T *y, const T *t, T *grad, int64_t n,       \
                                     double *loss)                                                  \
    {                                                                                               \
        return blocked_mean_##SFX(ctx, y, t, grad, n, 0, loss);                                     \
    }                                                                                               \
                                                                                                    \
    int fnn_sigmoid_bce_##SFX(fnn_ctx ctx, const T *z, const T *t, T *grad, int64_t n, double *loss) \
    {                                                                                               \
        return blocked_mean_##SFX(ctx, z, t, grad, n, 1, loss);                                     \
    }

DEFINE_LOSS(float, f32, logf, log1pf, expf)
DEFINE_LOSS(double, f64, log, log1p, exp)
