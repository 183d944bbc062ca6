/* Element-wise activations and their backward passes.
 *
 * The array is cut into fixed chunks; OpenMP shares the chunks among threads and
 * each chunk runs the SIMD version of the op for ctx's ISA when there is one
 * (eltwise_simd.c), else the portable loops (eltwise_loops.h, activation.h). Each output
 * element depends only on its own inputs, so results do not depend on the thread
 * count. The scalar math is activation.h's. */
#include <string.h>

#include "activation.h"
#include "eltwise_loops.h"
#include "kernels.h"

FNN_DEFINE_SIMPLE_LOOPS(, portable_simple_f32, float)
FNN_DEFINE_SIMPLE_LOOPS(, portable_simple_f64, double)

/* Elements per task: large enough to amortise scheduling, small enough that
 * two threads split 1e5-element arrays evenly. */
#define ELTWISE_CHUNK ((int64_t)16384)

/* Outputs of at least this many bytes are written with non-temporal stores
 * (where the SIMD path has them): skipping the read-for-ownership saves a third
 * of a unary op's traffic. Smaller outputs use normal stores, so that the next
 * layer can still find them in the L3 cache (typically 16-32 MiB, shared). */
#define ELTWISE_STREAM_BYTES (8.0 * 1024 * 1024)

#define DEFINE_ELTWISE(T, SFX, EXP, EXPM1)                                                         \
    static void eltwise_chunk_portable_##SFX(int op, const T *FNN_RESTRICT a,                      \
                                             const T *FNN_RESTRICT b, T *FNN_RESTRICT y,           \
                                             int64_t n, T alpha)                                   \
    {                                                                                              \
        int64_t i;                                                                                 \
        if (portable_simple_##SFX(op, a, b, y, n, alpha)) return;                                   \
        switch (op) {                                                                              \
        case FNN_OP_IDENTITY: memcpy(y, a, (size_t)n * sizeof(T)); break;                          \
        case FNN_OP_ELU:                                                                           \
        case FNN_OP_SIGMOID:                                                                       \
        case FNN_OP_TANH:                                                                          \
        case FNN_OP_SOFTPLUS:                                                                      \
            for (i = 0; i < n; i++) y[i] = fnn_act_##SFX(op, a[i], alpha);                         \
            break;                                                                                 \
        /* backward: a = dy, b = x or y */                                                         \
        case FNN_OP_ELU_BACKWARD:                                                                  \
            for (i = 0; i < n; i++) y[i] = b[i] > 0 ? a[i] : a[i] * (alpha * EXP(b[i]));           \
            break;                                                                                 \
        case FNN_OP_SOFTPLUS_BACKWARD:                                                             \
            for (i = 0; i < n; i++) y[i] = a[i] * fnn_sigmoid_##SFX(b[i]);                         \
            break;                                                                                 \
        default: break;                                                                            \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    static void eltwise_chunk_##SFX(int isa, int op, const T *a, const T *b, T *y, int64_t n,      \
                                    T alpha, int stream)                                           \
    {                                                                                              \
        if (isa >= FNN_ISA_AVX512 && fnn_eltwise_chunk_avx512_##SFX(op, a, b, y, n, alpha, stream)) \
            return;                                                                                \
        if (isa >= FNN_ISA_AVX2 && fnn_eltwise_chunk_avx2_##SFX(op, a, b, y, n, alpha, stream))    \
            return;                                                                                \
        eltwise_chunk_portable_##SFX(op, a, b, y, n, alpha);                                       \
    }                                                                                              \
                                                                                                   \
    static void eltwise_run_##SFX(fnn_ctx ctx, int op, const T *a, const T *b, T *y, int64_t n,    \
                                  T alpha)                                                         \
    {                                                                                              \
        const int isa = fnn_isa_of(ctx);                                                           \
        const int stream = (double)n * sizeof(T) >= ELTWISE_STREAM_BYTES;                          \
        int64_t nchunks = (n + ELTWISE_CHUNK - 1) / ELTWISE_CHUNK, c;                              \
        if (nchunks <= 1 || fnn_threads_of(ctx) == 1) {                                            \
            if (n > 0) eltwise_chunk_##SFX(isa, op, a, b, y, n, alpha, stream);                            \
            return;                                                                                \
        }                                                                                          \
        FNN_PRAGMA(omp parallel for num_threads(fnn_threads_of(ctx)) schedule(static))              \
        for (c = 0; c < nchunks; c++) {                                                            \
            int64_t lo = c * ELTWISE_CHUNK;                                                        \
            int64_t len = n - lo < ELTWISE_CHUNK ? n - lo : ELTWISE_CHUNK;                         \
            eltwise_chunk_##SFX(isa, op, a + lo, b ? b + lo : NULL, y + lo, len, alpha, stream);           \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    void fnn_eltwise_##SFX(fnn_ctx ctx, int op, const T *x, T *y, int64_t n, T alpha)              \
    {                                                                                              \
        eltwise_run_##SFX(ctx, op, x, NULL, y, n, alpha);                                          \
    }                                                                                              \
                                                                                                   \
    void fnn_eltwise_backward_##SFX(fnn_ctx ctx, int op, const T *dy, const T *a, T *dx,           \
                                    int64_t n, T alpha)                                            \
    {                                                                                              \
        eltwise_run_##SFX(ctx, op, dy, a, dx, n, alpha);                                           \
    }

DEFINE_ELTWISE(float, f32, expf, expm1f)
DEFINE_ELTWISE(double, f64, exp, expm1)
