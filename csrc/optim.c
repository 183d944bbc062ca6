/* In-place optimizer updates (the book's common/optimizer.py rules), one pass
 * over each parameter with weight decay and L1 folded into the gradient read.
 *
 * The scalars are combined in double first, as the Python expressions of the
 * reference do (e.g. (1 + momentum) * lr), and then used in the array's dtype.
 * Each rule is written once as a loop body; it is compiled three times (portable,
 * AVX2, AVX-512 targets) and GCC vectorises each copy. No FMA contraction under
 * -std=c11, so the three copies round identically. Elements are independent:
 * results do not depend on the thread count. */
#include <math.h>

#include "kernels.h"

/* sqrt never sets errno here (its arguments are sums of squares): setup.py
 * builds with -fno-math-errno, so that GCC vectorises it into sqrtps/sqrtpd. */

#define OPTIM_CHUNK ((int64_t)16384)

/* np.sign: -1, 0 (keeping the zero) or 1; NaN stays NaN */
#define SIGN(T, v) ((v) > 0 ? (T)1 : ((v) < 0 ? (T)-1 : (v)))

/* the gradient with L2 and L1 terms added (the branches are loop-invariant) */
#define EFFECTIVE_GRAD(T, i) \
    T gi = g[i];             \
    if (has_wd) gi += wd * p[i]; \
    if (has_l1) gi += l1 * SIGN(T, p[i]);

/* One rule = one macro body over i, using p, g, s1, s2 and the scalars c0..c3. */
#define RULE_SGD(T, i) { EFFECTIVE_GRAD(T, i) p[i] -= c0 * gi; }
#define RULE_MOMENTUM(T, i) { EFFECTIVE_GRAD(T, i) s1[i] = c1 * s1[i] - c0 * gi; p[i] += s1[i]; }
/* c0 = lr, c1 = momentum, c2 = momentum*momentum, c3 = (1+momentum)*lr */
#define RULE_NESTEROV(T, i) \
    { EFFECTIVE_GRAD(T, i) s1[i] = c1 * s1[i] - c0 * gi; p[i] += c2 * s1[i] - c3 * gi; }
/* c0 = lr, c1 = eps */
#define RULE_ADAGRAD(T, i) \
    { EFFECTIVE_GRAD(T, i) s1[i] += gi * gi; p[i] -= c0 * gi / (SQRT(T, s1[i]) + c1); }
/* c0 = lr, c1 = decay, c2 = 1 - decay, c3 = eps */
#define RULE_RMSPROP(T, i)                                                                      \
    { EFFECTIVE_GRAD(T, i) s1[i] = c1 * s1[i] + c2 * gi * gi; p[i] -= c0 * gi / (SQRT(T, s1[i]) + c3); }
/* c0 = lr_t, c1 = 1 - beta1, c2 = 1 - beta2, c3 = eps */
#define RULE_ADAM(T, i)                                                                         \
    {                                                                                           \
        EFFECTIVE_GRAD(T, i) s1[i] += c1 * (gi - s1[i]);                                        \
        s2[i] += c2 * (gi * gi - s2[i]);                                                        \
        p[i] -= c0 * s1[i] / (SQRT(T, s2[i]) + c3);                                                \
    }

#define CHUNK_ARGS(T)                                                                              \
    T *FNN_RESTRICT p, const T *FNN_RESTRICT g, T *FNN_RESTRICT s1, T *FNN_RESTRICT s2, int64_t n, \
        T c0, T c1, T c2, T c3, T wd, T l1
#define CHUNK_PASS p, g, s1, s2, n, c0, c1, c2, c3, wd, l1

#define DEFINE_CHUNK(TARGET, NAME, T, RULE)                                  \
    TARGET static void NAME(CHUNK_ARGS(T))                                   \
    {                                                                        \
        const int has_wd = wd != 0, has_l1 = l1 != 0;                        \
        (void)s1; (void)s2; (void)c1; (void)c2; (void)c3;                     \
        for (int64_t i = 0; i < n; i++) RULE(T, i)                           \
    }

#define DEFINE_RULE(name, RULE)                                                                    \
    DEFINE_CHUNK(, name##_portable_f32, float, RULE)                                               \
    DEFINE_CHUNK(FNN_TARGET_AVX2, name##_avx2_f32, float, RULE)                                    \
    DEFINE_CHUNK(FNN_TARGET_AVX512, name##_avx512_f32, float, RULE)                                \
    DEFINE_CHUNK(, name##_portable_f64, double, RULE)                                              \
    DEFINE_CHUNK(FNN_TARGET_AVX2, name##_avx2_f64, double, RULE)                                   \
    DEFINE_CHUNK(FNN_TARGET_AVX512, name##_avx512_f64, double, RULE)                               \
    static void name##_run_f32(fnn_ctx ctx, CHUNK_ARGS(float))                                     \
    {                                                                                              \
        RUN_CHUNKS(name, f32)                                                                      \
    }                                                                                              \
    static void name##_run_f64(fnn_ctx ctx, CHUNK_ARGS(double))                                    \
    {                                                                                              \
        RUN_CHUNKS(name, f64)                                                                      \
    }

#define RUN_CHUNKS(name, SFX)                                                                      \
    const int isa = fnn_isa_of(ctx);                                                               \
    const int64_t nchunks = (n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;                                   \
    int64_t c;                                                                                     \
    FNN_PARALLEL_FOR_ON(nchunks > 2 ? fnn_threads_of(ctx) : 1, ,                                   \
    for (c = 0; c < nchunks; c++) {                                                                \
        const int64_t lo = c * OPTIM_CHUNK, len = n - lo < OPTIM_CHUNK ? n - lo : OPTIM_CHUNK;     \
        if (isa >= FNN_ISA_AVX512)                                                                 \
            name##_avx512_##SFX(p + lo, g + lo, s1 ? s1 + lo : s1, s2 ? s2 + lo : s2, len, c0, c1, \
                                c2, c3, wd, l1);                                                   \
        else if (isa >= FNN_ISA_AVX2)                                                              \
            name##_avx2_##SFX(p + lo, g + lo, s1 ? s1 + lo : s1, s2 ? s2 + lo : s2, len, c0, c1,   \
                              c2, c3, wd, l1);                                                     \
        else                                                                                       \
            name##_portable_##SFX(p + lo, g + lo, s1 ? s1 + lo : s1, s2 ? s2 + lo : s2, len, c0,   \
                                  c1, c2, c3, wd, l1);                                             \
    });

/* the rule bodies are shared by both dtypes: SQRT is the dtype's sqrt */
#define SQRT_float sqrtf
#define SQRT_double sqrt
#define SQRT(T, v) SQRT_##T(v)

DEFINE_RULE(sgd, RULE_SGD)
DEFINE_RULE(momentum, RULE_MOMENTUM)
DEFINE_RULE(nesterov, RULE_NESTEROV)
DEFINE_RULE(adagrad, RULE_ADAGRAD)
DEFINE_RULE(rmsprop, RULE_RMSPROP)
DEFINE_RULE(adam, RULE_ADAM)

#define DEFINE_PUBLIC(T, SFX)                                                                      \
    void fnn_sgd_update_##SFX(fnn_ctx ctx, T *p, const T *g, int64_t n, double lr, double wd,      \
                              double l1)                                                           \
    {                                                                                              \
        sgd_run_##SFX(ctx, p, g, NULL, NULL, n, (T)lr, 0, 0, 0, (T)wd, (T)l1);                     \
    }                                                                                              \
    void fnn_momentum_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *v, int64_t n, double lr,      \
                                   double momentum, double wd, double l1)                          \
    {                                                                                              \
        momentum_run_##SFX(ctx, p, g, v, NULL, n, (T)lr, (T)momentum, 0, 0, (T)wd, (T)l1);         \
    }                                                                                              \
    void fnn_nesterov_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *v, int64_t n, double lr,      \
                                   double momentum, double wd, double l1)                          \
    {                                                                                              \
        nesterov_run_##SFX(ctx, p, g, v, NULL, n, (T)lr, (T)momentum, (T)(momentum * momentum),    \
                           (T)((1 + momentum) * lr), (T)wd, (T)l1);                                \
    }                                                                                              \
    void fnn_adagrad_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *h, int64_t n, double lr,       \
                                  double eps, double wd, double l1)                                \
    {                                                                                              \
        adagrad_run_##SFX(ctx, p, g, h, NULL, n, (T)lr, (T)eps, 0, 0, (T)wd, (T)l1);               \
    }                                                                                              \
    void fnn_rmsprop_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *h, int64_t n, double lr,       \
                                  double decay, double eps, double wd, double l1)                  \
    {                                                                                              \
        rmsprop_run_##SFX(ctx, p, g, h, NULL, n, (T)lr, (T)decay, (T)(1 - decay), (T)eps, (T)wd,   \
                          (T)l1);                                                                  \
    }                                                                                              \
    void fnn_adam_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *m, T *v, int64_t n, double lr_t, \
                               double beta1, double beta2, double eps, double wd, double l1)       \
    {                                                                                              \
        adam_run_##SFX(ctx, p, g, m, v, n, (T)lr_t, (T)(1 - beta1), (T)(1 - beta2), (T)eps,        \
                       (T)wd, (T)l1);                                                              \
    }

DEFINE_PUBLIC(float, f32)
DEFINE_PUBLIC(double, f64)
