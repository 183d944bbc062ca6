/* The AVX2+FMA and AVX-512 halves of the element-wise and softmax kernels.
 *
 * Built without -march flags: each function carries its own target attribute
 * and is only called when fnn_ctx.isa selects it (the CPU was checked by
 * fnn_cpu_best_isa). Simple ops are the loops of eltwise_loops.h compiled for
 * the wider ISA. Sigmoid, tanh, ELU, softplus and the softmax exponentials use
 * a vector exp for arguments <= 0 (Cephes expf: range reduction by ln 2 in two
 * parts, degree-6 polynomial, about 1 ulp), which is all these kernels need:
 * they only ever take exp(-|x|) or exp(x - max). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "activation.h"
#include "eltwise_loops.h"
#include "kernels.h"

#if FNN_X86_SIMD
#include <immintrin.h>

FNN_DEFINE_SIMPLE_LOOPS(FNN_TARGET_AVX2, simple_avx2_f32, float)
FNN_DEFINE_SIMPLE_LOOPS(FNN_TARGET_AVX2, simple_avx2_f64, double)
FNN_DEFINE_SIMPLE_LOOPS(FNN_TARGET_AVX512, simple_avx512_f32, float)
FNN_DEFINE_SIMPLE_LOOPS(FNN_TARGET_AVX512, simple_avx512_f64, double)

/* exp: range reduction x = fx ln2 + r */
#define EXP_LO -104.0f /* exp(x) < half the smallest subnormal: the result is 0 */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2 0.693147182464599609375f /* ln 2 rounded to float */
/* exp(r) ~ 1 + H1 r + ... + H6 r^6 on [-ln2/2, ln2/2]: fitted for the least
 * maximum relative error (2e-9, under the float rounding) */
#define EXP_H1 1.0f
#define EXP_H2 0.4999999403953552f
#define EXP_H3 0.16666431725025177f
#define EXP_H4 0.04166800156235695f
#define EXP_H5 0.00837415549904108f
#define EXP_H6 0.0013843652559444308f
/* tanh(x) = x + x^3 (T1 + T2 x^2 + ... + T7 x^12) for |x| < TANH_SMALL: its Taylor
 * series, whose next term is under 1e-8 of tanh there; above, sign(x) (1 - e) /
 * (1 + e) with e = exp(-2|x|) <= e^-1, so 1 - e does not cancel. About 2 ulp;
 * NaN stays NaN, +-inf give +-1, -0 stays -0. */
#define TANH_SMALL 0.5f
#define TANH_T1 -0.33333333333333333f
#define TANH_T2 0.13333333333333333f
#define TANH_T3 -0.053968253968253968f
#define TANH_T4 0.021869488536155203f
#define TANH_T5 -0.0088632355299021966f
#define TANH_T6 0.0035921280365724810f
#define TANH_T7 -0.0014558343870513183f
/* expm1(x) = x (1 + x/2 + ... + x^7/8!) for -0.5 < x <= 0 (Taylor: the next term
 * is under 2e-8 of expm1 there), exp(x) - 1 below; and log1p(u) for u in [0, 1]
 * as 2 atanh(s) = 2 s (1 + s^2/3 + ... + s^16/17), s = u / (2 + u) <= 1/3 (the
 * next term under 4e-10), and u itself below 2^-24. ELU and softplus need no more: they only take
 * expm1(min(x, 0)) and log1p(exp(-|x|)). About 2 ulp. */
#define EXPM1_SMALL -0.5f

/* ---------------------------------------------------------------- AVX2 ---- */

/* exp(x) for x <= 0 or NaN (NaN in, NaN out; -inf and x < EXP_LO give 0). */
FNN_TARGET_AVX2 static inline __m256 exp_nonpos_avx2(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(EXP_LO);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(lo, x); /* the second operand wins for NaN: NaN survives */
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* the reduction and polynomial of exp_nonpos_avx512 (see there) */
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(EXP_LN2), x);
    __m256 p = _mm256_set1_ps(EXP_H6);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_H5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_H4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_H3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_H2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_H1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i bias = _mm256_set1_epi32(127);
    __m256i k = _mm256_cvtps_epi32(fx);
    if (!_mm256_movemask_ps(_mm256_cmp_ps(fx, _mm256_set1_ps(-126.0f), _CMP_LT_OQ)))
        /* the usual case: 2^fx is a normal float, build its bits directly */
        return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, bias), 23)));
    /* times 2^fx, fx in [-150, 0], as 2^(fx/2) * 2^(fx - fx/2): both factors are
     * normal floats and only the last product rounds, into the subnormals
     * where exp(x) is subnormal (as libm's and NumPy's expf) */
    __m256i k1 = _mm256_srai_epi32(k, 1), k2 = _mm256_sub_epi32(k, k1);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23)));
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23)));
    return _mm256_andnot_ps(under, p);
}

FNN_TARGET_AVX2 static inline __m256 sigmoid_avx2(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 e = exp_nonpos_avx2(_mm256_or_ps(x, sign)); /* exp(-|x|) */
    __m256 nonneg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
    __m256 num = _mm256_blendv_ps(e, one, nonneg); /* x >= 0: 1/(1+e), else e/(1+e) */
    /* A division: sigmoid(0) is 0.5 and sigmoid(x > 17) is 1 exactly, and it runs on
     * the divider beside the FMAs of the exp. The 12-bit reciprocal estimate with a
     * Newton step that it replaces left 0.5 - 2^-25 and 1 - 2^-24 there; fixing
     * those two made it 10-15% slower in cache, where this is 10-15% faster. */
    return _mm256_div_ps(num, _mm256_add_ps(one, e));
}

FNN_TARGET_AVX2 static inline __m256 tanh_avx2(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 e = exp_nonpos_avx2(_mm256_mul_ps(ax, _mm256_set1_ps(-2.0f)));
    const __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(TANH_T7);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(TANH_T6));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(TANH_T5));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(TANH_T4));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(TANH_T3));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(TANH_T2));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(TANH_T1));
    const __m256 s = _mm256_fmadd_ps(_mm256_mul_ps(ax, x2), p, ax);
    /* tanh(|x|), then x's sign (so -0 stays -0) */
    const __m256 r = _mm256_blendv_ps(t, s, _mm256_cmp_ps(ax, _mm256_set1_ps(TANH_SMALL), _CMP_LT_OQ));
    return _mm256_or_ps(r, _mm256_and_ps(sign, x));
}

/* expm1(x) for x <= 0 (or NaN) */
FNN_TARGET_AVX2 static inline __m256 expm1_nonpos_avx2(__m256 x)
{
    __m256 p = _mm256_set1_ps(1.0f / 40320.0f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 5040.0f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f));
    const __m256 small = _mm256_mul_ps(p, x);
    const __m256 big = _mm256_sub_ps(exp_nonpos_avx2(x), _mm256_set1_ps(1.0f));
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(x, _mm256_set1_ps(EXPM1_SMALL), _CMP_GT_OQ));
}

/* log1p(u) for u in [0, 1] (or NaN) */
FNN_TARGET_AVX2 static inline __m256 log1p_unit_avx2(__m256 u)
{
    const __m256 s = _mm256_div_ps(u, _mm256_add_ps(_mm256_set1_ps(2.0f), u)), s2 = _mm256_mul_ps(s, s);
    __m256 p = _mm256_set1_ps(1.0f / 17.0f);
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 15.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 13.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 11.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 9.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 7.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 5.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 3.0f));
    const __m256 l = _mm256_mul_ps(_mm256_set1_ps(2.0f), _mm256_fmadd_ps(_mm256_mul_ps(s, s2), p, s));
    /* log1p(u) = u to the last bit below 2^-24; in the subnormals u / (2 + u)
     * would drop u's last bit */
    return _mm256_blendv_ps(l, u, _mm256_cmp_ps(u, _mm256_set1_ps(0x1p-24f), _CMP_LT_OQ));
}

/* max(x, 0) + log1p(exp(-|x|)), as activation.h; NaN stays NaN */
FNN_TARGET_AVX2 static inline __m256 softplus_avx2(__m256 x)
{
    const __m256 negabs = _mm256_or_ps(x, _mm256_set1_ps(-0.0f));
    return _mm256_add_ps(_mm256_max_ps(_mm256_setzero_ps(), x), log1p_unit_avx2(exp_nonpos_avx2(negabs)));
}

FNN_TARGET_AVX2 static inline __m256i tail_mask_avx2(int64_t left)
{
    /* lanes [0, left) set, left in [1, 7] */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), idx);
}

/* The ops with a hand-written vector body, one function per op so that the
 * loop holds no dispatch: a = x (forward) or dy, b = the forward x or y (NULL
 * for forward ops, never read). Bitwise the same as the loops of
 * eltwise_loops.h (relu keeps NaN and -0, no FMA in sigmoid_backward).
 *
 * With stream set (outputs too big to stay in cache), the aligned body uses
 * non-temporal stores: no read-for-ownership of the output, a third less
 * memory traffic for a unary op. */
#define DEFINE_VECTOR_OP_AVX2(NAME, LOAD_B, BODY)                                                 \
    FNN_TARGET_AVX2 static void NAME(const float *a, const float *b, float *y, int64_t n,         \
                                     float alpha, int stream)                                     \
    {                                                                                             \
        const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);                      \
        const __m256 alpha_v = _mm256_set1_ps(alpha);                                             \
        int64_t i = 0;                                                                            \
        (void)zero; (void)one; (void)b; (void)alpha_v;                                            \
        if (stream) {                                                                             \
            int64_t head = (int64_t)(((32 - ((uintptr_t)y & 31)) & 31) / sizeof(float));          \
            head = head > n ? n : head;                                                           \
            if (head) {                                                                           \
                __m256i m = tail_mask_avx2(head);                                                 \
                __m256 va = _mm256_maskload_ps(a, m), vb = LOAD_B(_mm256_maskload_ps(b, m));      \
                _mm256_maskstore_ps(y, m, BODY);                                                  \
                i = head;                                                                         \
            }                                                                                     \
            for (; i + 8 <= n; i += 8) {                                                          \
                __m256 va = _mm256_loadu_ps(a + i), vb = LOAD_B(_mm256_loadu_ps(b + i));          \
                _mm256_stream_ps(y + i, BODY);                                                    \
            }                                                                                     \
            _mm_sfence();                                                                         \
        }                                                                                         \
        for (; i + 8 <= n; i += 8) {                                                              \
            __m256 va = _mm256_loadu_ps(a + i), vb = LOAD_B(_mm256_loadu_ps(b + i));              \
            _mm256_storeu_ps(y + i, BODY);                                                        \
        }                                                                                         \
        if (i < n) {                                                                              \
            __m256i m = tail_mask_avx2(n - i);                                                    \
            __m256 va = _mm256_maskload_ps(a + i, m), vb = LOAD_B(_mm256_maskload_ps(b + i, m));  \
            _mm256_maskstore_ps(y + i, m, BODY);                                                  \
        }                                                                                         \
    }

#define LOAD_NOTHING(expr) zero
#define LOAD_IT(expr) (expr)

DEFINE_VECTOR_OP_AVX2(relu_avx2, LOAD_NOTHING,
                      ((void)vb, _mm256_andnot_ps(_mm256_cmp_ps(va, zero, _CMP_LT_OQ), va)))
DEFINE_VECTOR_OP_AVX2(relu_backward_avx2, LOAD_IT, _mm256_and_ps(_mm256_cmp_ps(vb, zero, _CMP_GT_OQ), va))
DEFINE_VECTOR_OP_AVX2(sigmoid_fwd_avx2, LOAD_NOTHING, ((void)vb, sigmoid_avx2(va)))
DEFINE_VECTOR_OP_AVX2(tanh_fwd_avx2, LOAD_NOTHING, ((void)vb, tanh_avx2(va)))
/* leaky ReLU by hand on AVX2: from the loop of eltwise_loops.h GCC puts alpha * x
 * in a branch (the multiply may trap) and leaves it scalar without AVX-512's
 * masks (4M elements: 19.6 ms, against 0.6 on AVX-512); the same bits */
DEFINE_VECTOR_OP_AVX2(leaky_fwd_avx2, LOAD_NOTHING,
                      ((void)vb, _mm256_blendv_ps(_mm256_mul_ps(alpha_v, va), va, _mm256_cmp_ps(va, zero, _CMP_GT_OQ))))
DEFINE_VECTOR_OP_AVX2(leaky_backward_avx2, LOAD_IT,
                      _mm256_blendv_ps(_mm256_mul_ps(alpha_v, va), va, _mm256_cmp_ps(vb, zero, _CMP_GT_OQ)))
DEFINE_VECTOR_OP_AVX2(elu_fwd_avx2, LOAD_NOTHING,
                      ((void)vb, _mm256_blendv_ps(_mm256_mul_ps(alpha_v, expm1_nonpos_avx2(_mm256_min_ps(zero, va))),
                                                  va, _mm256_cmp_ps(va, zero, _CMP_GT_OQ))))
DEFINE_VECTOR_OP_AVX2(elu_backward_avx2, LOAD_IT,
                      _mm256_blendv_ps(_mm256_mul_ps(va, _mm256_mul_ps(alpha_v, exp_nonpos_avx2(_mm256_min_ps(zero, vb)))),
                                       va, _mm256_cmp_ps(vb, zero, _CMP_GT_OQ)))
DEFINE_VECTOR_OP_AVX2(softplus_fwd_avx2, LOAD_NOTHING, ((void)vb, softplus_avx2(va)))
DEFINE_VECTOR_OP_AVX2(softplus_backward_avx2, LOAD_IT, _mm256_mul_ps(va, sigmoid_avx2(vb)))
DEFINE_VECTOR_OP_AVX2(sigmoid_backward_avx2, LOAD_IT,
                      _mm256_mul_ps(va, _mm256_mul_ps(vb, _mm256_sub_ps(one, vb))))

FNN_TARGET_AVX2 int fnn_eltwise_chunk_avx2_f32(int op, const float *a, const float *b, float *y,
                                               int64_t n, float alpha, int stream)
{
    switch (op) {
    case FNN_OP_RELU: relu_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_RELU_BACKWARD: relu_backward_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SIGMOID: sigmoid_fwd_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_TANH: tanh_fwd_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_LEAKY_RELU: leaky_fwd_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_LEAKY_RELU_BACKWARD: leaky_backward_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_ELU: elu_fwd_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_ELU_BACKWARD: elu_backward_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SOFTPLUS: softplus_fwd_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SOFTPLUS_BACKWARD: softplus_backward_avx2(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SIGMOID_BACKWARD: sigmoid_backward_avx2(a, b, y, n, alpha, stream); return 1;
    default: return simple_avx2_f32(op, a, b, y, n, alpha);
    }
}

FNN_TARGET_AVX2 int fnn_eltwise_chunk_avx2_f64(int op, const double *a, const double *b, double *y,
                                               int64_t n, double alpha, int stream)
{
    (void)stream;
    return simple_avx2_f64(op, a, b, y, n, alpha);
}

FNN_TARGET_AVX2 float fnn_row_max_avx2_f32(const float *x, int64_t n)
{
    int64_t i = 0;
    float m;
    if (n >= 8) {
        __m256 vm = _mm256_loadu_ps(x), nan = _mm256_cmp_ps(vm, vm, _CMP_UNORD_Q);
        for (i = 8; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            vm = _mm256_max_ps(vm, v);
        }
        if (_mm256_movemask_ps(nan)) return NAN;
        float lanes[8];
        _mm256_storeu_ps(lanes, vm);
        m = lanes[0];
        for (int k = 1; k < 8; k++) m = lanes[k] > m ? lanes[k] : m;
    } else {
        m = x[0];
        i = 1;
    }
    for (; i < n; i++) {
        if (x[i] != x[i]) return NAN;
        m = x[i] > m ? x[i] : m;
    }
    return m;
}

FNN_TARGET_AVX2 float fnn_exp_shift_sum_avx2_f32(const float *x, float *e, int64_t n, float shift)
{
    __m256 vs = _mm256_set1_ps(shift), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = exp_nonpos_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
        _mm256_storeu_ps(e + i, v);
        acc = _mm256_add_ps(acc, v);
    }
    if (i < n) {
        __m256i m = tail_mask_avx2(n - i);
        __m256 v = exp_nonpos_avx2(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vs));
        v = _mm256_and_ps(v, _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(e + i, m, v);
        acc = _mm256_add_ps(acc, v);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ------------------------------------------------------------- AVX-512 ---- */

/* No mask for x < EXP_LO is needed: clamped there, the scalef below rounds to
 * exactly 0 (exp(EXP_LO) is under half the smallest subnormal). */
FNN_TARGET_AVX512 static inline __m512 exp_nonpos_avx512(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(EXP_LO);
    x = _mm512_max_ps(lo, x); /* the second operand wins for NaN: NaN survives */
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* one fma: it rounds fx * ln2 once, so the reduction's error is fx times the
     * error of ln2 as a float (2e-9): under 0.5 ulp for x > -30, where the
     * results that matter lie, and at most 2.5 ulp near EXP_LO (one operation
     * fewer than Cody-Waite's two-part ln2, which cost 7% of a softmax) */
    __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(EXP_LN2), x);
    /* a plain Horner polynomial: two operations fewer than Cephes' p*r^2 + r + 1
     * (the exp is bound by the vector units' throughput here), about 1.2 ulp */
    __m512 p = _mm512_set1_ps(EXP_H6);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_H5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_H4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_H3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_H2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_H1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fx); /* rounds once, into the subnormals where exp(x) is subnormal */
}

FNN_TARGET_AVX512 static inline __m512 sigmoid_avx512(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 negabs = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
    __m512 e = exp_nonpos_avx512(negabs);
    __mmask16 nonneg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    __m512 num = _mm512_mask_mov_ps(e, nonneg, one);
    /* a division, as on AVX2 (same speed here as the 14-bit estimate with a Newton
     * step it replaced, and correctly rounded) */
    return _mm512_div_ps(num, _mm512_add_ps(one, e));
}

FNN_TARGET_AVX512 static inline __m512 tanh_avx512(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512 ax = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x)));
    const __m512 e = exp_nonpos_avx512(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
    const __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    const __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(TANH_T7);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(TANH_T6));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(TANH_T5));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(TANH_T4));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(TANH_T3));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(TANH_T2));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(TANH_T1));
    const __m512 s = _mm512_fmadd_ps(_mm512_mul_ps(ax, x2), p, ax);
    /* tanh(|x|), then x's sign (so -0 stays -0) */
    const __m512 r = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(ax, _mm512_set1_ps(TANH_SMALL), _CMP_LT_OQ), s);
    return _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(r), _mm512_and_si512(sign, _mm512_castps_si512(x))));
}

FNN_TARGET_AVX512 static inline __m512 expm1_nonpos_avx512(__m512 x)
{
    __m512 p = _mm512_set1_ps(1.0f / 40320.0f);
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 5040.0f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f));
    const __m512 small = _mm512_mul_ps(p, x);
    const __m512 big = _mm512_sub_ps(exp_nonpos_avx512(x), _mm512_set1_ps(1.0f));
    return _mm512_mask_mov_ps(big, _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXPM1_SMALL), _CMP_GT_OQ), small);
}

FNN_TARGET_AVX512 static inline __m512 log1p_unit_avx512(__m512 u)
{
    const __m512 s = _mm512_div_ps(u, _mm512_add_ps(_mm512_set1_ps(2.0f), u)), s2 = _mm512_mul_ps(s, s);
    __m512 p = _mm512_set1_ps(1.0f / 17.0f);
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 15.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 13.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 11.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 9.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 7.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 5.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 3.0f));
    const __m512 l = _mm512_mul_ps(_mm512_set1_ps(2.0f), _mm512_fmadd_ps(_mm512_mul_ps(s, s2), p, s));
    return _mm512_mask_mov_ps(l, _mm512_cmp_ps_mask(u, _mm512_set1_ps(0x1p-24f), _CMP_LT_OQ), u);
}

FNN_TARGET_AVX512 static inline __m512 softplus_avx512(__m512 x)
{
    const __m512 negabs = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
    return _mm512_add_ps(_mm512_max_ps(_mm512_setzero_ps(), x), log1p_unit_avx512(exp_nonpos_avx512(negabs)));
}

#define DEFINE_VECTOR_OP_AVX512(NAME, LOAD_B, BODY)                                               \
    FNN_TARGET_AVX512 static void NAME(const float *a, const float *b, float *y, int64_t n,       \
                                       float alpha, int stream)                                   \
    {                                                                                             \
        const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);                      \
        const __m512 alpha_v = _mm512_set1_ps(alpha);                                             \
        int64_t i = 0;                                                                            \
        (void)zero; (void)one; (void)b; (void)alpha_v;                                            \
        if (stream) {                                                                             \
            int64_t head = (int64_t)(((64 - ((uintptr_t)y & 63)) & 63) / sizeof(float));          \
            head = head > n ? n : head;                                                           \
            if (head) {                                                                           \
                __mmask16 m = (__mmask16)((1u << head) - 1u);                                     \
                __m512 va = _mm512_maskz_loadu_ps(m, a), vb = LOAD_B(_mm512_maskz_loadu_ps(m, b)); \
                _mm512_mask_storeu_ps(y, m, BODY);                                                \
                i = head;                                                                         \
            }                                                                                     \
            for (; i + 16 <= n; i += 16) {                                                        \
                __m512 va = _mm512_loadu_ps(a + i), vb = LOAD_B(_mm512_loadu_ps(b + i));          \
                _mm512_stream_ps(y + i, BODY);                                                    \
            }                                                                                     \
            _mm_sfence();                                                                         \
        }                                                                                         \
        for (; i + 16 <= n; i += 16) {                                                            \
            __m512 va = _mm512_loadu_ps(a + i), vb = LOAD_B(_mm512_loadu_ps(b + i));              \
            _mm512_storeu_ps(y + i, BODY);                                                        \
        }                                                                                         \
        if (i < n) {                                                                              \
            __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);                                      \
            __m512 va = _mm512_maskz_loadu_ps(m, a + i), vb = LOAD_B(_mm512_maskz_loadu_ps(m, b + i)); \
            _mm512_mask_storeu_ps(y + i, m, BODY);                                                \
        }                                                                                         \
    }

DEFINE_VECTOR_OP_AVX512(relu_avx512, LOAD_NOTHING,
                        ((void)vb, _mm512_mask_mov_ps(va, _mm512_cmp_ps_mask(va, zero, _CMP_LT_OQ), zero)))
DEFINE_VECTOR_OP_AVX512(relu_backward_avx512, LOAD_IT,
                        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(vb, zero, _CMP_GT_OQ), va))
DEFINE_VECTOR_OP_AVX512(sigmoid_fwd_avx512, LOAD_NOTHING, ((void)vb, sigmoid_avx512(va)))
DEFINE_VECTOR_OP_AVX512(tanh_fwd_avx512, LOAD_NOTHING, ((void)vb, tanh_avx512(va)))
DEFINE_VECTOR_OP_AVX512(elu_fwd_avx512, LOAD_NOTHING,
                        ((void)vb, _mm512_mask_mov_ps(_mm512_mul_ps(alpha_v, expm1_nonpos_avx512(_mm512_min_ps(zero, va))),
                                                      _mm512_cmp_ps_mask(va, zero, _CMP_GT_OQ), va)))
DEFINE_VECTOR_OP_AVX512(elu_backward_avx512, LOAD_IT,
                        _mm512_mask_mov_ps(_mm512_mul_ps(va, _mm512_mul_ps(alpha_v, exp_nonpos_avx512(_mm512_min_ps(zero, vb)))),
                                           _mm512_cmp_ps_mask(vb, zero, _CMP_GT_OQ), va))
DEFINE_VECTOR_OP_AVX512(softplus_fwd_avx512, LOAD_NOTHING, ((void)vb, softplus_avx512(va)))
DEFINE_VECTOR_OP_AVX512(softplus_backward_avx512, LOAD_IT, _mm512_mul_ps(va, sigmoid_avx512(vb)))
DEFINE_VECTOR_OP_AVX512(sigmoid_backward_avx512, LOAD_IT,
                        _mm512_mul_ps(va, _mm512_mul_ps(vb, _mm512_sub_ps(one, vb))))

FNN_TARGET_AVX512 int fnn_eltwise_chunk_avx512_f32(int op, const float *a, const float *b, float *y,
                                                   int64_t n, float alpha, int stream)
{
    switch (op) {
    case FNN_OP_RELU: relu_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_RELU_BACKWARD: relu_backward_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SIGMOID: sigmoid_fwd_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_TANH: tanh_fwd_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_ELU: elu_fwd_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_ELU_BACKWARD: elu_backward_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SOFTPLUS: softplus_fwd_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SOFTPLUS_BACKWARD: softplus_backward_avx512(a, b, y, n, alpha, stream); return 1;
    case FNN_OP_SIGMOID_BACKWARD: sigmoid_backward_avx512(a, b, y, n, alpha, stream); return 1;
    default: return simple_avx512_f32(op, a, b, y, n, alpha);
    }
}

FNN_TARGET_AVX512 int fnn_eltwise_chunk_avx512_f64(int op, const double *a, const double *b,
                                                   double *y, int64_t n, double alpha, int stream)
{
    (void)stream;
    return simple_avx512_f64(op, a, b, y, n, alpha);
}

FNN_TARGET_AVX512 float fnn_row_max_avx512_f32(const float *x, int64_t n)
{
    if (n < 16) return fnn_row_max_avx2_f32(x, n);
    __m512 vm = _mm512_loadu_ps(x);
    __mmask16 nan = _mm512_cmp_ps_mask(vm, vm, _CMP_UNORD_Q);
    int64_t i = 16;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        vm = _mm512_max_ps(vm, v);
    }
    if (i < n) {
        /* the last 16 elements again: overlapping is harmless for a max */
        __m512 v = _mm512_loadu_ps(x + n - 16);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        vm = _mm512_max_ps(vm, v);
    }
    if (nan) return NAN;
    return _mm512_reduce_max_ps(vm);
}

FNN_TARGET_AVX512 float fnn_exp_shift_sum_avx512_f32(const float *x, float *e, int64_t n, float shift)
{
    __m512 vs = _mm512_set1_ps(shift), acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = exp_nonpos_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
        _mm512_storeu_ps(e + i, v);
        acc = _mm512_add_ps(acc, v);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = exp_nonpos_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
        _mm512_mask_storeu_ps(e + i, m, v);
        acc = _mm512_mask_add_ps(acc, m, acc, v);
    }
    return _mm512_reduce_add_ps(acc);
}

/* One row of K <= 16 softmax cross-entropy, all in registers: writes dz, returns
 * s = sum(exp(z - max)) and sets *shifted = z[l] - max. */
FNN_TARGET_AVX512 static inline float sce_short_row_avx512(const float *zr, float *dr, __mmask16 msk,
                                                          int64_t l, double inv_N, float *shifted)
{
    const __m512 z = _mm512_maskz_loadu_ps(msk, zr);
    const float m = _mm512_mask_reduce_max_ps(msk, z);
    const __m512 e = _mm512_maskz_mov_ps(msk, exp_nonpos_avx512(_mm512_sub_ps(z, _mm512_set1_ps(m))));
    const float s = _mm512_reduce_add_ps(e), inv_s = 1.0f / s;
    const __m512i vl = _mm512_set1_epi32((int)l);
    const float el = _mm512_cvtss_f32(_mm512_permutexvar_ps(vl, e));
    __m512 d = _mm512_mul_ps(e, _mm512_set1_ps((float)((double)inv_s * inv_N)));
    d = _mm512_mask_mov_ps(d, (__mmask16)(1u << l), _mm512_set1_ps((el * inv_s - 1.0f) * (float)inv_N));
    _mm512_mask_storeu_ps(dr, msk, d);
    *shifted = _mm512_cvtss_f32(_mm512_permutexvar_ps(vl, z)) - m;
    return s;
}

/* A row of K > 16 whose e = exp(z - max) is in dz, waiting to be scaled: the
 * next row's exp loop scales it (pending.dr NULL: none). */
typedef struct {
    float *dr;
    __m512 scale, et; /* its scale, and its tail's e (kept in a register) */
    float fix;        /* its dz[l] */
    int64_t l;
} sce_pending_avx512;

/* the pending row's scaling from column `from` on, its tail and its dz[l] */
FNN_TARGET_AVX512 static inline void sce_finish_avx512(const sce_pending_avx512 *p, int64_t from, int64_t body,
                                                       __mmask16 tail)
{
    for (int64_t i = from; i < body; i += 16)
        _mm512_storeu_ps(p->dr + i, _mm512_mul_ps(_mm512_loadu_ps(p->dr + i), p->scale));
    if (tail)
        _mm512_mask_storeu_ps(p->dr + body, tail, _mm512_mul_ps(p->et, p->scale));
    p->dr[p->l] = p->fix;
}

/* One row of K > 16: the max, then e = exp(z - max) written to dz while the
 * previous row's e are scaled in the same loop (the exp's FMA chains and the
 * scaling's loads and stores overlap: a pass of its own was 18% of a 256 x 1000
 * softmax cross-entropy); this row is left pending in *prev. The tail's e stays
 * in a register (a load from a masked store is not forwarded: it would wait for
 * the store to retire). The exp loop also prefetches the row `ahead` elements
 * on (0 for the last row): the rows stream from L3, and the next row's max pass
 * would otherwise wait on every line. */
FNN_TARGET_AVX512 static inline float sce_long_row_avx512(const float *zr, float *dr, int64_t K, int64_t l,
                                                         double inv_N, float *shifted, int64_t ahead,
                                                         sce_pending_avx512 *prev)
{
    const int64_t body = K & ~(int64_t)15;
    const __mmask16 tail = (__mmask16)((1u << (K & 15)) - 1u);
    /* two chains: the latency of max, not its throughput, bounds one chain */
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    int64_t i = 0;
    for (; i + 32 <= body; i += 32) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(zr + i));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(zr + i + 16));
    }
    if (i < body) m0 = _mm512_max_ps(m0, _mm512_loadu_ps(zr + i));
    if (tail) m1 = _mm512_mask_max_ps(m1, tail, m1, _mm512_maskz_loadu_ps(tail, zr + body));
    const float m = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    const __m512 vm = _mm512_set1_ps(m);
    /* two vectors an iteration: the exp's polynomial is a chain of dependent
     * FMAs, and two independent chains keep the FMA units busier */
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, et = s0;
    float *pd = prev->dr;
    const __m512 ps = prev->scale;
    for (i = 0; i + 32 <= body; i += 32) {
        _mm_prefetch((const char *)(zr + ahead + i), _MM_HINT_T0);
        _mm_prefetch((const char *)(zr + ahead + i + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(dr + ahead + i), _MM_HINT_T0);
        _mm_prefetch((const char *)(dr + ahead + i + 16), _MM_HINT_T0);
        const __m512 e0 = exp_nonpos_avx512(_mm512_sub_ps(_mm512_loadu_ps(zr + i), vm));
        const __m512 e1 = exp_nonpos_avx512(_mm512_sub_ps(_mm512_loadu_ps(zr + i + 16), vm));
        _mm512_storeu_ps(dr + i, e0);
        _mm512_storeu_ps(dr + i + 16, e1);
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
        if (pd) {
            _mm512_storeu_ps(pd + i, _mm512_mul_ps(_mm512_loadu_ps(pd + i), ps));
            _mm512_storeu_ps(pd + i + 16, _mm512_mul_ps(_mm512_loadu_ps(pd + i + 16), ps));
        }
    }
    if (pd)
        sce_finish_avx512(prev, i, body, tail);
    if (i < body) {
        const __m512 e = exp_nonpos_avx512(_mm512_sub_ps(_mm512_loadu_ps(zr + i), vm));
        _mm512_storeu_ps(dr + i, e);
        s1 = _mm512_add_ps(s1, e);
    }
    s0 = _mm512_add_ps(s0, s1);
    if (tail)
        et = _mm512_maskz_mov_ps(tail, exp_nonpos_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, zr + body), vm)));
    const float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, et)), inv_s = 1.0f / s;
    const float el = l < body ? dr[l] : _mm512_cvtss_f32(_mm512_permutexvar_ps(_mm512_set1_epi32((int)(l - body)), et));
    prev->dr = dr;
    prev->scale = _mm512_set1_ps((float)((double)inv_s * inv_N));
    prev->et = et;
    prev->fix = (el * inv_s - 1.0f) * (float)inv_N;
    prev->l = l;
    *shifted = zr[l] - m;
    return s;
}

/* s[r] = sum(exp(z_r - max)) and shifted[r] = z_r[lab[r]] - max for R rows of
 * K logits, writing dz_r = (softmax(z_r) - onehot) * inv_N; labels in [0, K).
 * Short rows go four at a time: their dependency chains are long and each
 * row's is independent, so the core overlaps them. */
FNN_TARGET_AVX512 void fnn_sce_rows_avx512_f32(const float *z, const int64_t *lab, float *dz, int64_t R, int64_t K,
                                              double inv_N, float *s, float *shifted)
{
    int64_t r = 0;
    if (K <= 16) {
        const __mmask16 msk = (__mmask16)((1u << K) - 1u);
        for (; r + 4 <= R; r += 4)
            for (int j = 0; j < 4; j++)
                s[r + j] = sce_short_row_avx512(z + (r + j) * K, dz + (r + j) * K, msk, lab[r + j], inv_N,
                                                 &shifted[r + j]);
        for (; r < R; r++)
            s[r] = sce_short_row_avx512(z + r * K, dz + r * K, msk, lab[r], inv_N, &shifted[r]);
    } else {
        sce_pending_avx512 pending;
        pending.dr = NULL;
        pending.scale = pending.et = _mm512_setzero_ps();
        pending.fix = 0;
        pending.l = 0;
        for (; r < R; r++)
            s[r] = sce_long_row_avx512(z + r * K, dz + r * K, K, lab[r], inv_N, &shifted[r], r + 1 < R ? K : 0,
                                       &pending);
        if (pending.dr)
            sce_finish_avx512(&pending, 0, K & ~(int64_t)15, (__mmask16)((1u << (K & 15)) - 1u));
    }
}

/* ------------------------------------------------- AVX2 softmax-CE rows ---- */

FNN_TARGET_AVX2 static inline float hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

FNN_TARGET_AVX2 static inline float hmax_avx2(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* One row as sce_long_row_avx512 does it, 8 lanes wide; the tail's e stays in a
 * register (a masked store is not forwarded to a load). */
FNN_TARGET_AVX2 static inline float sce_row_avx2(const float *zr, float *dr, int64_t K, int64_t l, double inv_N,
                                                 float *shifted)
{
    const int64_t body = K & ~(int64_t)7;
    const int64_t nt = K & 7;
    const __m256i tm = nt ? tail_mask_avx2(nt) : _mm256_setzero_si256();
    const __m256 tmf = _mm256_castsi256_ps(tm), ninf = _mm256_set1_ps(-INFINITY);
    __m256 m0 = ninf, m1 = ninf;
    int64_t i = 0;
    for (; i + 16 <= body; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(zr + i));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(zr + i + 8));
    }
    if (i < body) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(zr + i));
    const __m256 zt = nt ? _mm256_maskload_ps(zr + body, tm) : _mm256_setzero_ps();
    if (nt) m1 = _mm256_max_ps(m1, _mm256_blendv_ps(ninf, zt, tmf));
    const float m = hmax_avx2(_mm256_max_ps(m0, m1));
    const __m256 vm = _mm256_set1_ps(m);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, et = s0;
    for (i = 0; i + 16 <= body; i += 16) {
        const __m256 e0 = exp_nonpos_avx2(_mm256_sub_ps(_mm256_loadu_ps(zr + i), vm));
        const __m256 e1 = exp_nonpos_avx2(_mm256_sub_ps(_mm256_loadu_ps(zr + i + 8), vm));
        _mm256_storeu_ps(dr + i, e0);
        _mm256_storeu_ps(dr + i + 8, e1);
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
    }
    if (i < body) {
        const __m256 e0 = exp_nonpos_avx2(_mm256_sub_ps(_mm256_loadu_ps(zr + i), vm));
        _mm256_storeu_ps(dr + i, e0);
        s0 = _mm256_add_ps(s0, e0);
    }
    if (nt) et = _mm256_and_ps(exp_nonpos_avx2(_mm256_sub_ps(_mm256_blendv_ps(vm, zt, tmf), vm)), tmf);
    const float s = hsum_avx2(_mm256_add_ps(_mm256_add_ps(s0, s1), et)), inv_s = 1.0f / s;
    float tail[8];
    _mm256_storeu_ps(tail, et);
    const float el = l < body ? dr[l] : tail[l - body];
    const __m256 scale = _mm256_set1_ps((float)((double)inv_s * inv_N));
    for (i = 0; i < body; i += 8) _mm256_storeu_ps(dr + i, _mm256_mul_ps(_mm256_loadu_ps(dr + i), scale));
    if (nt) _mm256_maskstore_ps(dr + body, tm, _mm256_mul_ps(et, scale));
    dr[l] = (el * inv_s - 1.0f) * (float)inv_N;
    *shifted = zr[l] - m;
    return s;
}

FNN_TARGET_AVX2 void fnn_sce_rows_avx2_f32(const float *z, const int64_t *lab, float *dz, int64_t R, int64_t K,
                                          double inv_N, float *s, float *shifted)
{
    for (int64_t r = 0; r < R; r++)
        s[r] = sce_row_avx2(z + r * K, dz + r * K, K, lab[r], inv_N, &shifted[r]);
}

#else /* no x86 SIMD in this build: the portable path does everything */

int fnn_eltwise_chunk_avx2_f32(int op, const float *a, const float *b, float *y, int64_t n, float alpha, int stream)
{ (void)stream; (void)op; (void)a; (void)b; (void)y; (void)n; (void)alpha; return 0; }
int fnn_eltwise_chunk_avx2_f64(int op, const double *a, const double *b, double *y, int64_t n, double alpha, int stream)
{ (void)stream; (void)op; (void)a; (void)b; (void)y; (void)n; (void)alpha; return 0; }
int fnn_eltwise_chunk_avx512_f32(int op, const float *a, const float *b, float *y, int64_t n, float alpha, int stream)
{ (void)stream; (void)op; (void)a; (void)b; (void)y; (void)n; (void)alpha; return 0; }
int fnn_eltwise_chunk_avx512_f64(int op, const double *a, const double *b, double *y, int64_t n, double alpha, int stream)
{ (void)stream; (void)op; (void)a; (void)b; (void)y; (void)n; (void)alpha; return 0; }
float fnn_row_max_avx2_f32(const float *x, int64_t n) { (void)x; (void)n; return 0; }
float fnn_row_max_avx512_f32(const float *x, int64_t n) { (void)x; (void)n; return 0; }
float fnn_exp_shift_sum_avx2_f32(const float *x, float *e, int64_t n, float shift)
{ (void)x; (void)e; (void)n; (void)shift; return 0; }
float fnn_exp_shift_sum_avx512_f32(const float *x, float *e, int64_t n, float shift)
{ (void)x; (void)e; (void)n; (void)shift; return 0; }
void fnn_sce_rows_avx512_f32(const float *z, const int64_t *lab, float *dz, int64_t R, int64_t K, double inv_N,
                             float *s, float *shifted)
{ (void)z; (void)lab; (void)dz; (void)R; (void)K; (void)inv_N; (void)s; (void)shifted; }
void fnn_sce_rows_avx2_f32(const float *z, const int64_t *lab, float *dz, int64_t R, int64_t K, double inv_N,
                           float *s, float *shifted)
{ (void)z; (void)lab; (void)dz; (void)R; (void)K; (void)inv_N; (void)s; (void)shifted; }

#endif
