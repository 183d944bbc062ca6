/* The scalar activation functions, the one C definition of their math: the
 * element-wise kernels and the fused GEMM/convolution epilogues both use these.
 * Stable for large |x|: no overflow in sigmoid, softplus or elu. */
#ifndef FASTNN_ACTIVATION_H
#define FASTNN_ACTIVATION_H

#include <math.h>

/* Order matches fastnn._validate.ACTIVATIONS. */
enum fnn_act {
    FNN_ACT_IDENTITY = 0,
    FNN_ACT_RELU = 1,
    FNN_ACT_LEAKY_RELU = 2,
    FNN_ACT_ELU = 3,
    FNN_ACT_SIGMOID = 4,
    FNN_ACT_TANH = 5,
    FNN_ACT_SOFTPLUS = 6
};

#define FNN_DEFINE_ACTIVATIONS(T, SFX, EXP, EXPM1, LOG1P, TANH, FABS)                    \
    static inline T fnn_sigmoid_##SFX(T x)                                               \
    {                                                                                    \
        T e = EXP(-FABS(x)); /* in (0, 1]: never overflows */                            \
        return x >= 0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);                             \
    }                                                                                    \
    static inline T fnn_softplus_##SFX(T x)                                              \
    {                                                                                    \
        return (x > 0 ? x : (T)0) + LOG1P(EXP(-FABS(x)));                                \
    }                                                                                    \
    static inline T fnn_act_##SFX(int act, T x, T alpha)                                 \
    {                                                                                    \
        switch (act) {                                                                   \
        case FNN_ACT_RELU: return x < 0 ? (T)0 : x; /* NaN stays NaN */                 \
        case FNN_ACT_LEAKY_RELU: return x > 0 ? x : alpha * x;                           \
        case FNN_ACT_ELU: return x > 0 ? x : alpha * EXPM1(x);                           \
        case FNN_ACT_SIGMOID: return fnn_sigmoid_##SFX(x);                               \
        case FNN_ACT_TANH: return TANH(x);                                               \
        case FNN_ACT_SOFTPLUS: return fnn_softplus_##SFX(x);                             \
        default: return x;                                                               \
        }                                                                                \
    }                                                                                    \
    /* d act / d x written in terms of the output y = act(x), so a backward pass      */ \
    /* needs only the saved output (alpha > 0 assumed for leaky_relu and elu).        */ \
    static inline T fnn_act_grad_from_y_##SFX(int act, T y, T alpha)                     \
    {                                                                                    \
        switch (act) {                                                                   \
        case FNN_ACT_RELU: return y > 0 ? (T)1 : (T)0;                                   \
        case FNN_ACT_LEAKY_RELU: return y > 0 ? (T)1 : alpha;                            \
        case FNN_ACT_ELU: return y > 0 ? (T)1 : y + alpha;                               \
        case FNN_ACT_SIGMOID: return y * ((T)1 - y);                                     \
        case FNN_ACT_TANH: return (T)1 - y * y;                                          \
        case FNN_ACT_SOFTPLUS: return -EXPM1(-y);                                        \
        default: return (T)1;                                                            \
        }                                                                                \
    }

FNN_DEFINE_ACTIVATIONS(float, f32, expf, expm1f, log1pf, tanhf, fabsf)
FNN_DEFINE_ACTIVATIONS(double, f64, exp, expm1, log1p, tanh, fabs)

#endif /* FASTNN_ACTIVATION_H */
