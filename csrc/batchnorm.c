/* Batch normalisation over an (N, C, S) array: the statistics of each of the C
 * features are taken over the N samples and the S positions of each sample.
 * Per-feature normalisation of (N, D) (the book's BatchNormalization) is
 * (N, D, 1); per-channel normalisation of NCHW (BatchNorm2d) is (N, C, H*W),
 * read in place with no transposed copy.
 *
 * A unit of work is one feature (S > 1: its N rows of S values) or a block of
 * BN_COLS features (S = 1: a column block of the (N, C) matrix). A unit is
 * computed whole by one thread, in a fixed order, so the results do not depend
 * on the thread count, and its passes (the mean, then the squares about it, then
 * the output; or the two gradient sums, then dx) find its data in L2: a
 * feature of a 100 x 28 x 28 batch is 313 KB of float32.
 *
 * Sums: a feature's values go into 16 lanes of T, which are added into double
 * every 256 values or so (BN_FOLD_ROWS); where S = 1 each row goes straight into
 * the block's double sums. float32 sums of 10^5 values keep about float32
 * precision. The
 * variance is the corrected two-pass one (Chan, Golub and LeVeque 1983):
 * sum((x - m)^2) - sum(x - m)^2 / M about the rounded mean m, so a large mean
 * does not cancel it away. The loops are written once (BN_LOOPS) and compiled
 * for each ISA with its target attribute; GCC vectorises every copy, and
 * without FMA contraction (-std=c11) every copy rounds the same way. */
#include <math.h>
#include <string.h>

#include "kernels.h"

/* Features per unit where S = 1: a row's block (256 B of float32) and its
 * double sums stay in L1 while the unit walks down the N rows. */
#define BN_COLS 64

/* A feature's sums run over its N rows of S values (row n at x + n * ld) in 16
 * lanes of T (lane l takes the values at q = l mod 16 of each row), which are
 * added up in lane order and into double every BN_FOLD_ROWS(S) rows (about 256
 * values, 16 a lane): short rows (S = 64 in a 8x8 map) do not pay a sum across
 * the lanes each, and no lane sums more than a few dozen values in T. The fold
 * depends on S only, so the bits are the same on every ISA and thread count. */
#define BN_FOLD_ROWS(S) ((S) >= 256 ? (int64_t)1 : 256 / (S))
#if defined(__GNUC__) || defined(__clang__)
/* The lanes are one GCC/Clang vector: the loop over an array of 16 lanes, the
 * obvious C, GCC vectorised across q with permutes. Other compilers sum in one
 * lane. */
#define BN_LANES(T) T __attribute__((vector_size(16 * sizeof(T))))
#define BN_FEATURE_SUMS(TARGET, P, T)                                                                  \
    /* sum(a) and sum(a * (x - m)) of a feature, a = dy, or x - m where dy is NULL (the moments) */    \
    TARGET static void P##_feature_sums(const T *dy, const T *x, int64_t N, int64_t ld, int64_t S,     \
                                        T m, double *sa, double *sax)                                  \
    {                                                                                                  \
        typedef BN_LANES(T) lanes;                                                                     \
        const int64_t fold = BN_FOLD_ROWS(S);                                                          \
        for (int64_t n0 = 0; n0 < N; n0 += fold) {                                                     \
            lanes s1 = {0}, s2 = {0};                                                                  \
            for (int64_t n = n0; n < N && n < n0 + fold; n++) {                                        \
                const T *FNN_RESTRICT row = x + n * ld;                                                \
                const T *FNN_RESTRICT grow = dy ? dy + n * ld : NULL;                                  \
                int64_t q = 0;                                                                         \
                for (; q + 16 <= S; q += 16) {                                                         \
                    lanes v, a;                                                                        \
                    memcpy(&v, row + q, sizeof v);                                                     \
                    v -= m;                                                                            \
                    if (grow)                                                                          \
                        memcpy(&a, grow + q, sizeof a);                                                \
                    else                                                                               \
                        a = v;                                                                         \
                    s1 += a;                                                                           \
                    s2 += a * v;                                                                       \
                }                                                                                      \
                for (; q < S; q++) {                                                                   \
                    const T v = row[q] - m, a = grow ? grow[q] : v;                                    \
                    s1[q % 16] += a;                                                                   \
                    s2[q % 16] += a * v;                                                               \
                }                                                                                      \
            }                                                                                          \
            T t1 = 0, t2 = 0;                                                                          \
            for (int l = 0; l < 16; l++) {                                                             \
                t1 += s1[l];                                                                           \
                t2 += s2[l];                                                                           \
            }                                                                                          \
            *sa += t1;                                                                                 \
            *sax += t2;                                                                                \
        }                                                                                              \
    }
#else
#define BN_FEATURE_SUMS(TARGET, P, T)                                                                  \
    static void P##_feature_sums(const T *dy, const T *x, int64_t N, int64_t ld, int64_t S, T m,       \
                                 double *sa, double *sax)                                              \
    {                                                                                                  \
        for (int64_t n = 0; n < N; n++) {                                                              \
            T s1 = 0, s2 = 0;                                                                          \
            for (int64_t q = 0; q < S; q++) {                                                          \
                const T v = x[n * ld + q] - m, a = dy ? dy[n * ld + q] : v;                            \
                s1 += a;                                                                               \
                s2 += a * v;                                                                           \
            }                                                                                          \
            *sa += s1;                                                                                 \
            *sax += s2;                                                                                \
        }                                                                                              \
    }
#endif

#define BN_LOOPS(TARGET, P, T)                                                                         \
    BN_FEATURE_SUMS(TARGET, P, T)                                                                      \
    /* y = (x - m) * scale + shift */                                                                 \
    TARGET static void P##_row_affine(const T *FNN_RESTRICT x, T *FNN_RESTRICT y, int64_t len, T m,    \
                                      T scale, T shift)                                                \
    {                                                                                                  \
        for (int64_t q = 0; q < len; q++)                                                              \
            y[q] = (x[q] - m) * scale + shift;                                                         \
    }                                                                                                  \
    /* dx = k * (dy - a - (x - m) * b) */                                                             \
    TARGET static void P##_row_dx(const T *FNN_RESTRICT dy, const T *FNN_RESTRICT x, T *FNN_RESTRICT dx, \
                                  int64_t len, T m, T k, T a, T b)                                     \
    {                                                                                                  \
        for (int64_t q = 0; q < len; q++)                                                              \
            dx[q] = k * (dy[q] - a - (x[q] - m) * b);                                                  \
    }                                                                                                  \
    /* The same four over a row of a column block: per-column m, sums in double */                    \
    TARGET static void P##_cols_moments(const T *FNN_RESTRICT x, int64_t w, const T *FNN_RESTRICT m,   \
                                        double *FNN_RESTRICT s1, double *FNN_RESTRICT s2)              \
    {                                                                                                  \
        for (int64_t j = 0; j < w; j++) {                                                              \
            const T d = x[j] - m[j];                                                                   \
            s1[j] += d;                                                                                \
            s2[j] += d * d;                                                                            \
        }                                                                                              \
    }                                                                                                  \
    TARGET static void P##_cols_grad_sums(const T *FNN_RESTRICT dy, const T *FNN_RESTRICT x, int64_t w, \
                                          const T *FNN_RESTRICT m, double *FNN_RESTRICT sdy,           \
                                          double *FNN_RESTRICT sdyx)                                   \
    {                                                                                                  \
        for (int64_t j = 0; j < w; j++) {                                                              \
            sdy[j] += dy[j];                                                                           \
            sdyx[j] += dy[j] * (x[j] - m[j]);                                                          \
        }                                                                                              \
    }                                                                                                  \
    TARGET static void P##_cols_affine(const T *FNN_RESTRICT x, T *FNN_RESTRICT y, int64_t w,          \
                                       const T *FNN_RESTRICT m, const T *FNN_RESTRICT scale,           \
                                       const T *FNN_RESTRICT shift)                                    \
    {                                                                                                  \
        for (int64_t j = 0; j < w; j++)                                                                \
            y[j] = (x[j] - m[j]) * scale[j] + shift[j];                                                \
    }                                                                                                  \
    TARGET static void P##_cols_dx(const T *FNN_RESTRICT dy, const T *FNN_RESTRICT x, T *FNN_RESTRICT dx, \
                                   int64_t w, const T *FNN_RESTRICT m, const T *FNN_RESTRICT k,        \
                                   const T *FNN_RESTRICT a, const T *FNN_RESTRICT b)                   \
    {                                                                                                  \
        for (int64_t j = 0; j < w; j++)                                                                \
            dx[j] = k[j] * (dy[j] - a[j] - (x[j] - m[j]) * b[j]);                                      \
    }

/* The passes of one unit, on top of an ISA's loops (P). A feature's rows are
 * x + n * C * S, S values each; a column block's rows are x + n * C, w values. */
#define BN_UNITS(TARGET, P, T)                                                                         \
    BN_LOOPS(TARGET, P, T)                                                                             \
    TARGET static void P##_forward_feature(const T *x, T *y, int64_t N, int64_t ld, int64_t S,         \
                                           int train, T *mean, T *var, T *inv_std, double eps,         \
                                           T gamma, T beta)                                            \
    {                                                                                                  \
        if (train) {                                                                                   \
            double s = 0, unused = 0;                                                                  \
            P##_feature_sums(NULL, x, N, ld, S, (T)0, &s, &unused);                                       \
            const double M = (double)N * (double)S;                                                    \
            const T m = (T)(s / M);                                                                    \
            double s1 = 0, s2 = 0;                                                                     \
            P##_feature_sums(NULL, x, N, ld, S, m, &s1, &s2);                                             \
            *mean = m;                                                                                 \
            *var = (T)((s2 - s1 * s1 / M) / M);                                                        \
        }                                                                                              \
        const double is = 1.0 / sqrt((double)*var + eps);                                              \
        *inv_std = (T)is;                                                                              \
        const T scale = (T)(gamma * is);                                                               \
        for (int64_t n = 0; n < N; n++)                                                                \
            P##_row_affine(x + n * ld, y + n * ld, S, *mean, scale, beta);                             \
    }                                                                                                  \
    TARGET static void P##_forward_cols(const T *x, T *y, int64_t N, int64_t ld, int64_t w, int train, \
                                        T *mean, T *var, T *inv_std, double eps, const T *gamma,       \
                                        const T *beta)                                                 \
    {                                                                                                  \
        T m[BN_COLS], scale[BN_COLS];                                                                  \
        if (train) {                                                                                   \
            double s1[BN_COLS] = {0}, s2[BN_COLS] = {0};                                               \
            for (int64_t j = 0; j < w; j++)                                                            \
                m[j] = 0;                                                                              \
            for (int64_t n = 0; n < N; n++)                                                            \
                P##_cols_moments(x + n * ld, w, m, s1, s2);                                            \
            for (int64_t j = 0; j < w; j++) {                                                          \
                m[j] = (T)(s1[j] / (double)N);                                                         \
                s1[j] = s2[j] = 0;                                                                     \
            }                                                                                          \
            for (int64_t n = 0; n < N; n++)                                                            \
                P##_cols_moments(x + n * ld, w, m, s1, s2);                                            \
            for (int64_t j = 0; j < w; j++) {                                                          \
                mean[j] = m[j];                                                                        \
                var[j] = (T)((s2[j] - s1[j] * s1[j] / (double)N) / (double)N);                         \
            }                                                                                          \
        }                                                                                              \
        for (int64_t j = 0; j < w; j++) {                                                              \
            const double is = 1.0 / sqrt((double)var[j] + eps);                                        \
            inv_std[j] = (T)is;                                                                        \
            scale[j] = (T)(gamma[j] * is);                                                             \
            m[j] = mean[j];                                                                            \
        }                                                                                              \
        for (int64_t n = 0; n < N; n++)                                                                \
            P##_cols_affine(x + n * ld, y + n * ld, w, m, scale, beta);                                \
    }                                                                                                  \
    TARGET static void P##_backward_feature(const T *dy, const T *x, T *dx, int64_t N, int64_t ld,     \
                                            int64_t S, int train, T mean, T inv_std, T gamma,          \
                                            T *dgamma, T *dbeta)                                       \
    {                                                                                                  \
        double sdy = 0, sdyx = 0;                                                                      \
        P##_feature_sums(dy, x, N, ld, S, mean, &sdy, &sdyx);                                     \
        *dbeta = (T)sdy;                                                                               \
        *dgamma = (T)(sdyx * inv_std);                                                                 \
        const double M = (double)N * (double)S, k = (double)gamma * inv_std;                           \
        const T a = (T)(sdy / M), b = (T)(sdyx * inv_std * inv_std / M);                              \
        for (int64_t n = 0; n < N; n++) {                                                              \
            if (train)                                                                                 \
                P##_row_dx(dy + n * ld, x + n * ld, dx + n * ld, S, mean, (T)k, a, b);                 \
            else /* x does not enter: an inf in it leaves dx finite */                                 \
                P##_row_affine(dy + n * ld, dx + n * ld, S, (T)0, (T)k, (T)0);                         \
        }                                                                                              \
    }                                                                                                  \
    TARGET static void P##_backward_cols(const T *dy, const T *x, T *dx, int64_t N, int64_t ld,        \
                                         int64_t w, int train, const T *mean, const T *inv_std,        \
                                         const T *gamma, T *dgamma, T *dbeta)                          \
    {                                                                                                  \
        double sdy[BN_COLS] = {0}, sdyx[BN_COLS] = {0};                                                \
        T k[BN_COLS], a[BN_COLS], b[BN_COLS], zero[BN_COLS];                                           \
        for (int64_t n = 0; n < N; n++)                                                                \
            P##_cols_grad_sums(dy + n * ld, x + n * ld, w, mean, sdy, sdyx);                           \
        for (int64_t j = 0; j < w; j++) {                                                              \
            const double is = inv_std[j];                                                              \
            dbeta[j] = (T)sdy[j];                                                                      \
            dgamma[j] = (T)(sdyx[j] * is);                                                             \
            k[j] = (T)(gamma[j] * is);                                                                 \
            a[j] = (T)(sdy[j] / (double)N);                                                            \
            b[j] = (T)(sdyx[j] * is * is / (double)N);                                                 \
            zero[j] = 0;                                                                               \
        }                                                                                              \
        for (int64_t n = 0; n < N; n++) {                                                              \
            if (train)                                                                                 \
                P##_cols_dx(dy + n * ld, x + n * ld, dx + n * ld, w, mean, k, a, b);                   \
            else                                                                                       \
                P##_cols_affine(dy + n * ld, dx + n * ld, w, zero, k, zero);                           \
        }                                                                                              \
    }

BN_UNITS(, bn_portable_f32, float)
BN_UNITS(, bn_portable_f64, double)
#if FNN_X86_SIMD
BN_UNITS(FNN_TARGET_AVX2, bn_avx2_f32, float)
BN_UNITS(FNN_TARGET_AVX2, bn_avx2_f64, double)
BN_UNITS(FNN_TARGET_AVX512, bn_avx512_f32, float)
BN_UNITS(FNN_TARGET_AVX512, bn_avx512_f64, double)
#define BN_DISPATCH(ISA, SFX, FN, ARGS)                                                                \
    do {                                                                                               \
        if ((ISA) >= FNN_ISA_AVX512) bn_avx512_##SFX##_##FN ARGS;                                      \
        else if ((ISA) >= FNN_ISA_AVX2) bn_avx2_##SFX##_##FN ARGS;                                     \
        else bn_portable_##SFX##_##FN ARGS;                                                            \
    } while (0)
#else
#define BN_DISPATCH(ISA, SFX, FN, ARGS)                                                                \
    do {                                                                                               \
        (void)(ISA);                                                                                   \
        bn_portable_##SFX##_##FN ARGS;                                                                 \
    } while (0)
#endif

/* The units of an (N, C, S) problem, and the threads worth starting for them
 * (one feature, or one column block, is never split). */
static int64_t bn_units(int64_t C, int64_t S) { return S > 1 ? C : (C + BN_COLS - 1) / BN_COLS; }

static int bn_threads(fnn_ctx ctx, int64_t N, int64_t C, int64_t S)
{
    const int64_t units = bn_units(C, S);
    const double work = (double)N * (double)C * (double)S;
    int nth = fnn_threads_of(ctx);
    if (work < (double)FNN_PARALLEL_MIN_WORK)
        return 1;
    return units < nth ? (int)units : nth;
}

/* FEATURE for feature u (S > 1), else COLS for features [j0, j0 + w), for every
 * unit, on bn_threads's threads. */
#define BN_FOR_EACH_UNIT(ctx, N, C, S, FEATURE, COLS)                                                   \
    do {                                                                                               \
        const int nth_ = bn_threads(ctx, N, C, S);                                                     \
        const int64_t units_ = bn_units(C, S);                                                         \
        FNN_PARALLEL_FOR_ON(nth_, , for (int64_t u = 0; u < units_; u++) {                             \
            if (S > 1) {                                                                               \
                FEATURE;                                                                               \
            } else {                                                                                   \
                const int64_t j0 = u * BN_COLS, w = C - j0 < BN_COLS ? C - j0 : BN_COLS;               \
                COLS;                                                                                  \
            }                                                                                          \
        });                                                                                            \
    } while (0)

#define DEFINE_BATCH_NORM(T, SFX)                                                                      \
    void fnn_batch_norm_forward_##SFX(fnn_ctx ctx, const T *x, int64_t N, int64_t C, int64_t S,        \
                                      const T *gamma, const T *beta, int train, T *mean, T *var,       \
                                      T *inv_std, double eps, T *y)                                    \
    {                                                                                                  \
        const int isa = fnn_isa_of(ctx);                                                               \
        const int64_t ld = C * S;                                                                      \
        BN_FOR_EACH_UNIT(ctx, N, C, S,                                                                 \
                         BN_DISPATCH(isa, SFX, forward_feature,                                        \
                                     (x + u * S, y + u * S, N, ld, S, train, mean + u, var + u,        \
                                      inv_std + u, eps, gamma[u], beta[u])),                           \
                         BN_DISPATCH(isa, SFX, forward_cols,                                           \
                                     (x + j0, y + j0, N, ld, w, train, mean + j0, var + j0,            \
                                      inv_std + j0, eps, gamma + j0, beta + j0)));                     \
    }                                                                                                  \
    void fnn_batch_norm_backward_##SFX(fnn_ctx ctx, const T *dy, const T *x, int64_t N, int64_t C,     \
                                       int64_t S, const T *gamma, const T *mean, const T *inv_std,     \
                                       int train, T *dx, T *dgamma, T *dbeta)                          \
    {                                                                                                  \
        const int isa = fnn_isa_of(ctx);                                                               \
        const int64_t ld = C * S;                                                                      \
        BN_FOR_EACH_UNIT(ctx, N, C, S,                                                                 \
                         BN_DISPATCH(isa, SFX, backward_feature,                                       \
                                     (dy + u * S, x + u * S, dx + u * S, N, ld, S, train, mean[u],     \
                                      inv_std[u], gamma[u], dgamma + u, dbeta + u)),                   \
                         BN_DISPATCH(isa, SFX, backward_cols,                                          \
                                     (dy + j0, x + j0, dx + j0, N, ld, w, train, mean + j0,            \
                                      inv_std + j0, gamma + j0, dgamma + j0, dbeta + j0)));            \
    }

DEFINE_BATCH_NORM(float, f32)
DEFINE_BATCH_NORM(double, f64)
