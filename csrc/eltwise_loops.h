/* The simple element-wise loops, written once and compiled for each ISA:
 * eltwise.c instantiates them for the portable path, eltwise_simd.c under the
 * AVX2 and AVX-512 target attributes, and GCC vectorises every copy. Each op
 * is its own small function with both select operands computed unconditionally,
 * which is what lets GCC turn the select into a vector blend. There is no FMA
 * contraction under -std=c11, so all copies round identically.
 *
 * FNN_DEFINE_SIMPLE_LOOPS(TARGET, PREFIX, T) defines
 *   static int PREFIX(int op, const T *a, const T *b, T *y, int64_t n, T alpha)
 * returning 0 for an op it does not have. a = x (forward) or dy (backward),
 * b = the forward x or y (backward ops only). */
#ifndef FASTNN_ELTWISE_LOOPS_H
#define FASTNN_ELTWISE_LOOPS_H

#include "kernels.h"

#define FNN_LOOP1(TARGET, NAME, T, EXPR)                                                       \
    TARGET static void NAME(const T *FNN_RESTRICT a, T *FNN_RESTRICT y, int64_t n, T alpha)    \
    {                                                                                          \
        (void)alpha;                                                                           \
        for (int64_t i = 0; i < n; i++) {                                                      \
            const T x = a[i];                                                                  \
            y[i] = EXPR;                                                                       \
        }                                                                                      \
    }
#define FNN_LOOP2(TARGET, NAME, T, EXPR)                                                       \
    TARGET static void NAME(const T *FNN_RESTRICT a, const T *FNN_RESTRICT b, T *FNN_RESTRICT y, \
                            int64_t n, T alpha)                                                \
    {                                                                                          \
        (void)alpha;                                                                           \
        for (int64_t i = 0; i < n; i++) {                                                      \
            const T g = a[i], v = b[i];                                                        \
            y[i] = EXPR;                                                                       \
        }                                                                                      \
    }

#define FNN_DEFINE_SIMPLE_LOOPS(TARGET, PREFIX, T)                                                 \
    FNN_LOOP1(TARGET, PREFIX##_relu, T, x < 0 ? (T)0 : x) /* np.maximum(x, 0): NaN stays */       \
    FNN_LOOP1(TARGET, PREFIX##_leaky, T, x > 0 ? x : alpha * x)                                   \
    FNN_LOOP1(TARGET, PREFIX##_step, T, x > 0 ? (T)1 : (T)0)                                      \
    FNN_LOOP2(TARGET, PREFIX##_relu_bw, T, v > 0 ? g : (T)0)                                      \
    FNN_LOOP2(TARGET, PREFIX##_leaky_bw, T, v > 0 ? g : alpha * g)                                \
    FNN_LOOP2(TARGET, PREFIX##_sigmoid_bw, T, g * (v * ((T)1 - v)))                               \
    FNN_LOOP2(TARGET, PREFIX##_tanh_bw, T, g * ((T)1 - v * v))                                    \
    TARGET static int PREFIX(int op, const T *a, const T *b, T *y, int64_t n, T alpha)            \
    {                                                                                             \
        switch (op) {                                                                             \
        case FNN_OP_RELU: PREFIX##_relu(a, y, n, alpha); return 1;                                \
        case FNN_OP_LEAKY_RELU: PREFIX##_leaky(a, y, n, alpha); return 1;                         \
        case FNN_OP_STEP: PREFIX##_step(a, y, n, alpha); return 1;                                \
        case FNN_OP_RELU_BACKWARD: PREFIX##_relu_bw(a, b, y, n, alpha); return 1;                 \
        case FNN_OP_LEAKY_RELU_BACKWARD: PREFIX##_leaky_bw(a, b, y, n, alpha); return 1;          \
        case FNN_OP_SIGMOID_BACKWARD: PREFIX##_sigmoid_bw(a, b, y, n, alpha); return 1;           \
        case FNN_OP_TANH_BACKWARD: PREFIX##_tanh_bw(a, b, y, n, alpha); return 1;                 \
        default: return 0;                                                                        \
        }                                                                                         \
    }

#endif /* FASTNN_ELTWISE_LOOPS_H */
