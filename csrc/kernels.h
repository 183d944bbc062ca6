/* fastnn: the non-GEMM kernels (element-wise activations, im2col/col2im,
 * pooling, softmax and losses, optimizer updates).
 *
 * Every function follows csrc/fastnn.h: C-contiguous arrays validated by the
 * Python side, int64_t sizes, an fnn_ctx by value (threads, ISA), _f32 and _f64
 * variants, no global mutable state. The math is defined by fastnn/_reference.py
 * (docs/BACKEND.md); see docs/KERNELS.md for how each kernel is organised.
 */
#ifndef FASTNN_KERNELS_H
#define FASTNN_KERNELS_H

#include "fastnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element-wise operations. The forward ones read x and write y = f(x); the
 * backward ones read (dy, a) and write dx, where a is the forward input x or the
 * forward output y as noted. */
enum fnn_eltwise_op {
    FNN_OP_IDENTITY = 0, /* these first seven match enum fnn_act */
    FNN_OP_RELU = 1,
    FNN_OP_LEAKY_RELU = 2,
    FNN_OP_ELU = 3,
    FNN_OP_SIGMOID = 4,
    FNN_OP_TANH = 5,
    FNN_OP_SOFTPLUS = 6,
    FNN_OP_STEP = 7,
    FNN_OP_RELU_BACKWARD = 16,       /* a = x */
    FNN_OP_LEAKY_RELU_BACKWARD = 17, /* a = x */
    FNN_OP_ELU_BACKWARD = 18,        /* a = x */
    FNN_OP_SOFTPLUS_BACKWARD = 19,   /* a = x */
    FNN_OP_SIGMOID_BACKWARD = 20,    /* a = y */
    FNN_OP_TANH_BACKWARD = 21        /* a = y */
};

#define FNN_DECLARE_KERNELS(T, SFX)                                                              \
    void fnn_eltwise_##SFX(fnn_ctx ctx, int op, const T *x, T *y, int64_t n, T alpha);          \
    void fnn_eltwise_backward_##SFX(fnn_ctx ctx, int op, const T *dy, const T *a, T *dx,        \
                                    int64_t n, T alpha);                                        \
                                                                                                 \
    /* col (N*oh*ow, C*fh*fw), the layout of the book's common/util.py */                       \
    void fnn_im2col_##SFX(fnn_ctx ctx, const T *x, T *col, int64_t N, int64_t C, int64_t H,     \
                          int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw,            \
                          int64_t padh, int64_t padw);                                          \
    void fnn_col2im_##SFX(fnn_ctx ctx, const T *col, T *x, int64_t N, int64_t C, int64_t H,     \
                          int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw,            \
                          int64_t padh, int64_t padw);                                          \
                                                                                                 \
    /* planes = N*C; argmax is h*W + w in the unpadded plane */                                 \
    void fnn_max_pool2d_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t *argmax, int64_t planes,   \
                              int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t sh,         \
                              int64_t sw, int64_t padh, int64_t padw);                          \
    /* one (H, W) plane on the calling thread (no OpenMP region): the fused conv + pool */      \
    void fnn_max_pool2d_plane_##SFX(int isa, const T *x, T *y, int64_t *argmax, int64_t H,       \
                                    int64_t W, int64_t ph, int64_t pw, int64_t sh, int64_t sw,   \
                                    int64_t padh, int64_t padw);                                 \
    void fnn_max_pool2d_backward_plane_##SFX(int isa, const T *dy, const int64_t *argmax, T *dx,  \
                                             int64_t H, int64_t W, int64_t oh, int64_t ow);      \
    /* the same two with an int32 argmax (the fused convolution + pooling's); wide:          \
     * scratch of oh * ow int64 for the planes no int32 kernel takes; with relu_y (else      \
     * NULL) the backward takes dy times ReLU's derivative at relu_y (the pooled output),    \
     * in gbuf (oh * ow) where no vector kernel takes the plane */                           \
    void fnn_max_pool2d_plane_i32_##SFX(int isa, const T *x, T *y, int32_t *argmax, int64_t *wide, \
                                        int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t sh,  \
                                        int64_t sw, int64_t padh, int64_t padw);                   \
    void fnn_max_pool2d_backward_plane_i32_##SFX(int isa, const T *dy, const T *relu_y,           \
                                                 const int32_t *argmax, int64_t *wide, T *gbuf,   \
                                                 T *dx, int64_t H, int64_t W, int64_t oh,         \
                                                 int64_t ow);                                     \
    void fnn_max_pool2d_backward_##SFX(fnn_ctx ctx, const T *dy, const int64_t *argmax, T *dx,  \
                                       int64_t planes, int64_t H, int64_t W, int64_t oh,        \
                                       int64_t ow);                                             \
    void fnn_avg_pool2d_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t planes, int64_t H,         \
                              int64_t W, int64_t ph, int64_t pw, int64_t sh, int64_t sw,        \
                              int64_t padh, int64_t padw);                                      \
    void fnn_avg_pool2d_backward_##SFX(fnn_ctx ctx, const T *dy, T *dx, int64_t planes,         \
                                       int64_t H, int64_t W, int64_t ph, int64_t pw,            \
                                       int64_t sh, int64_t sw, int64_t padh, int64_t padw);     \
                                                                                                 \
    /* rows of length K, along the last axis */                                                 \
    void fnn_softmax_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t R, int64_t K);                \
    void fnn_log_softmax_##SFX(fnn_ctx ctx, const T *x, T *y, int64_t R, int64_t K);            \
    /* Write the mean loss to *loss and dlogits; 0, or -1 when scratch memory could not be    \
     * allocated (no result). labels (N,) or probs (N,K): exactly one is set. */               \
    int fnn_softmax_cross_entropy_##SFX(fnn_ctx ctx, const T *z, const int64_t *labels,         \
                                        const T *probs, T *dz, int64_t N, int64_t K,            \
                                        double *loss);                                          \
    int fnn_mean_squared_error_##SFX(fnn_ctx ctx, const T *y, const T *t, T *grad, int64_t n,   \
                                     double *loss);                                             \
    int fnn_sigmoid_bce_##SFX(fnn_ctx ctx, const T *z, const T *t, T *grad, int64_t n,          \
                              double *loss);                                                    \
                                                                                                 \
    /* In place, one pass; wd adds wd*p and l1 adds l1*sign(p) to the gradient first. */        \
    void fnn_sgd_update_##SFX(fnn_ctx ctx, T *p, const T *g, int64_t n, double lr, double wd,   \
                              double l1);                                                       \
    void fnn_momentum_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *v, int64_t n, double lr,   \
                                   double momentum, double wd, double l1);                      \
    void fnn_nesterov_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *v, int64_t n, double lr,   \
                                   double momentum, double wd, double l1);                      \
    void fnn_adagrad_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *h, int64_t n, double lr,    \
                                  double eps, double wd, double l1);                            \
    void fnn_rmsprop_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *h, int64_t n, double lr,    \
                                  double decay, double eps, double wd, double l1);              \
    void fnn_adam_update_##SFX(fnn_ctx ctx, T *p, const T *g, T *m, T *v, int64_t n,            \
                               double lr_t, double beta1, double beta2, double eps, double wd,  \
                               double l1);                                                      \
                                                                                                 \
    /* Batch normalisation of x (N, C, S) per feature c, over N and S (csrc/batchnorm.c).       \
     * train: take mean and var (biased) from the batch and write them, else read them; both    \
     * write inv_std = 1/sqrt(var + eps). Backward: dx, dgamma, dbeta from dy, through the      \
     * batch statistics when train. */                                                          \
    void fnn_batch_norm_forward_##SFX(fnn_ctx ctx, const T *x, int64_t N, int64_t C, int64_t S, \
                                      const T *gamma, const T *beta, int train, T *mean,        \
                                      T *var, T *inv_std, double eps, T *y);                    \
    void fnn_batch_norm_backward_##SFX(fnn_ctx ctx, const T *dy, const T *x, int64_t N,         \
                                       int64_t C, int64_t S, const T *gamma, const T *mean,     \
                                       const T *inv_std, int train, T *dx, T *dgamma,           \
                                       T *dbeta);

FNN_DECLARE_KERNELS(float, f32)
FNN_DECLARE_KERNELS(double, f64)

/* ---- internal: the SIMD halves of the element-wise and softmax kernels ----
 * Each processes one contiguous chunk on the calling thread. The eltwise ones
 * return 0 when they have no vector version of `op` (the caller then runs the
 * portable loop). b is NULL for forward ops. stream: the whole output is large,
 * use non-temporal stores where the op has them. */
int fnn_eltwise_chunk_avx2_f32(int op, const float *a, const float *b, float *y, int64_t n, float alpha,
                                 int stream);
int fnn_eltwise_chunk_avx2_f64(int op, const double *a, const double *b, double *y, int64_t n, double alpha,
                                 int stream);
int fnn_eltwise_chunk_avx512_f32(int op, const float *a, const float *b, float *y, int64_t n, float alpha,
                                 int stream);
int fnn_eltwise_chunk_avx512_f64(int op, const double *a, const double *b, double *y, int64_t n, double alpha,
                                 int stream);
/* max of x[0..n) (n >= 1), NaN when any element is NaN */
float fnn_row_max_avx2_f32(const float *x, int64_t n);
float fnn_row_max_avx512_f32(const float *x, int64_t n);
/* e[i] = exp(x[i] - shift) for x[i] <= shift; returns the sum of e */
float fnn_exp_shift_sum_avx2_f32(const float *x, float *e, int64_t n, float shift);
float fnn_exp_shift_sum_avx512_f32(const float *x, float *e, int64_t n, float shift);
/* softmax cross-entropy rows against labels in [0, K) (loss.c's fast path): writes
 * dz = (softmax - onehot) * inv_N, s[r] = sum(exp(z_r - max)), shifted[r] = z_r[lab[r]] - max */
void fnn_sce_rows_avx512_f32(const float *z, const int64_t *lab, float *dz, int64_t R, int64_t K, double inv_N,
                             float *s, float *shifted);
void fnn_sce_rows_avx2_f32(const float *z, const int64_t *lab, float *dz, int64_t R, int64_t K, double inv_N,
                           float *s, float *shifted);

/* row pairs [r_begin, r_end) of many (2 oh, 2 ow) planes (ow <= 8, r_begin a multiple of
 * 16 / ow) of 2x2 stride-2 unpadded max pooling and its backward (pool_simd.c) */
void fnn_max_pool_2x2s2_small_avx512_f32(const float *x, float *y, int64_t *am, int64_t r_begin, int64_t r_end,
                                         int64_t oh, int64_t ow);
int fnn_max_unpool_2x2s2_small_avx512_f32(const float *g, const int64_t *am, float *dx, int64_t r_begin,
                                          int64_t r_end, int64_t oh, int64_t ow);
void fnn_max_pool_2x2s2_small_avx2_f32(const float *x, float *y, int64_t *am, int64_t r_begin, int64_t r_end,
                                       int64_t oh, int64_t ow); /* ow <= 4, blocks of 8 / ow */
/* one (H, W) plane of 2x2 stride-2 unpadded max pooling (pool_simd.c); _i32:
 * with the argmax as int32 (the fused convolution + pooling's) */
void fnn_max_pool_2x2s2_plane_avx512_f32(const float *x, float *y, int64_t *am, int64_t W,
                                         int64_t oh, int64_t ow);
void fnn_max_pool_2x2s2_plane_avx2_f32(const float *x, float *y, int64_t *am, int64_t W,
                                       int64_t oh, int64_t ow);
void fnn_max_pool_2x2s2_plane_i32_avx512_f32(const float *x, float *y, int32_t *am, int64_t W, int64_t oh,
                                             int64_t ow);
void fnn_max_pool_2x2s2_plane_i32_avx2_f32(const float *x, float *y, int32_t *am, int64_t W, int64_t oh,
                                           int64_t ow);
/* the fused convolution + pooling's plane of raw sums, rows ldx apart, plus *bias
 * (NULL: none), then ReLU where relu is set, pooled: the same values and argmax
 * (into planes W wide) as fnn_bias_act and then the _i32 kernel on the plane it
 * writes */
void fnn_max_pool_2x2s2_bias_act_i32_avx512_f32(const float *x, int64_t ldx, const float *bias, int relu, float *y,
                                                int32_t *am, int64_t W, int64_t oh, int64_t ow);
void fnn_max_pool_2x2s2_bias_act_i32_avx2_f32(const float *x, int64_t ldx, const float *bias, int relu, float *y,
                                              int32_t *am, int64_t W, int64_t oh, int64_t ow);
/* its backward for rows [0, 2*oh) of a dx plane; 0 when an argmax lies outside its
 * 2x2 block (the plane is then partly written and must be redone); with relu_y
 * (else NULL), g times ReLU's derivative at relu_y (the pooled output) */
int fnn_max_unpool_2x2s2_plane_avx512_f32(const float *g, const float *relu_y, const int64_t *am, float *dx,
                                          int64_t W, int64_t oh, int64_t ow);
int fnn_max_unpool_2x2s2_plane_avx512_f64(const double *g, const int64_t *am, double *dx, int64_t W,
                                          int64_t oh, int64_t ow);
int fnn_max_unpool_2x2s2_plane_avx2_f32(const float *g, const float *relu_y, const int64_t *am, float *dx,
                                        int64_t W, int64_t oh, int64_t ow);
int fnn_max_unpool_2x2s2_plane_i32_avx512_f32(const float *g, const float *relu_y, const int32_t *am, float *dx,
                                              int64_t W, int64_t oh, int64_t ow);
int fnn_max_unpool_2x2s2_plane_i32_avx2_f32(const float *g, const float *relu_y, const int32_t *am, float *dx,
                                            int64_t W, int64_t oh, int64_t ow);

/* ---- internal: fixed-order sums ---- */
/* lanes[l] += row[q] for q = l (mod 16): sums whose order does not depend on
 * the compiler or the thread count; fnn_lane_total_* then adds the 16 lanes. */
#define FNN_DEFINE_LANE_SUM(T, SFX)                                                  \
    static inline void fnn_lane_acc_##SFX(T lanes[16], const T *row, int64_t len)   \
    {                                                                                \
        int64_t q = 0;                                                               \
        for (; q + 16 <= len; q += 16)                                               \
            for (int l = 0; l < 16; l++)                                             \
                lanes[l] += row[q + l];                                              \
        for (; q < len; q++)                                                         \
            lanes[q % 16] += row[q];                                                 \
    }                                                                                \
    static inline T fnn_lane_total_##SFX(const T lanes[16])                          \
    {                                                                                \
        T s = 0;                                                                     \
        for (int l = 0; l < 16; l++)                                                 \
            s += lanes[l];                                                           \
        return s;                                                                    \
    }
FNN_DEFINE_LANE_SUM(float, f32)
FNN_DEFINE_LANE_SUM(double, f64)
#undef FNN_DEFINE_LANE_SUM

/* ---- internal: threading helpers ---- */
/* The ISA a kernel actually uses: ctx.isa, capped by what this build has. */
/* The fused convolution + pooling keeps its argmax as int32 (half the memory
 * traffic of int64; a plane's indices are below 2^31, checked in Python): its
 * planes are pooled into an int64 plane in L1 and narrowed, or widened back
 * for the pooling kernels' backward. */
static inline void fnn_index_narrow(const int64_t *src, int32_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = (int32_t)src[i];
}
static inline void fnn_index_widen(const int32_t *src, int64_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = src[i];
}

static inline int fnn_isa_of(fnn_ctx ctx)
{
#if FNN_X86_SIMD
    return ctx.isa < 0 ? 0 : (ctx.isa > FNN_ISA_AVX512 ? FNN_ISA_AVX512 : ctx.isa);
#else
    (void)ctx;
    return FNN_ISA_PORTABLE;
#endif
}

static inline int fnn_threads_of(fnn_ctx ctx) { return ctx.nthreads < 1 ? 1 : ctx.nthreads; }
/* the threads a kernel's own loops may take: ctx's count, or 1 in a build without OpenMP */
static inline int fnn_team_of(fnn_ctx ctx)
{
#ifdef FASTNN_HAVE_OPENMP
    return fnn_threads_of(ctx);
#else
    (void)ctx;
    return 1;
#endif
}

/* Below this many elements of work a kernel stays on one thread: starting the
 * OpenMP team costs more than it saves. */
#define FNN_PARALLEL_MIN_WORK ((int64_t)32768)
/* the threads for a loop touching `work` elements: ctx's, or 1 below FNN_PARALLEL_MIN_WORK */
static inline int fnn_team_for_work(fnn_ctx ctx, int64_t work)
{
    return work >= FNN_PARALLEL_MIN_WORK ? fnn_threads_of(ctx) : 1;
}

#if !defined(FASTNN_HAVE_OPENMP)
#define FNN_PRAGMA(x) /* every FNN_PRAGMA is an OpenMP one */
#elif defined(_MSC_VER) && !defined(__clang__)
#define FNN_PRAGMA(x) __pragma(x)
#else
#define FNN_PRAGMA(x) _Pragma(#x)
#endif

/* FNN_PARALLEL_FOR_ON(nth, clauses, loop): the for statement `loop` as a
 * "parallel for" (with `clauses`, say reduction(&:ok), or nothing) on nth
 * threads, or where nth is 1 on the calling thread outside any parallel
 * construct. An OpenMP `if` clause would still open a region, a team of one,
 * and libgomp closes every region with a futex system call: 0.3 us on this
 * project's machine, a fifth of a batch-1 linear layer's time in C.
 * FNN_PARALLEL_ON is the same for a parallel region, whose block reads its
 * thread's number and the team's size as FNN_THREAD_NUM and FNN_TEAM_SIZE (0
 * and 1 when it runs alone, even inside another team's region, where
 * omp_get_thread_num() would name the outer thread). FNN_PARALLEL_FOR(work,
 * loop) takes ctx's threads where `work` (elements touched) is worth a team. */
#define FNN_THREAD_NUM fnn_thread_
#define FNN_TEAM_SIZE fnn_threads_
#ifdef FASTNN_HAVE_OPENMP
#define FNN_PARALLEL_FOR_ON(nth, clauses, ...)                                                    \
    do {                                                                                          \
        const int fnn_team_ = (nth);                                                              \
        if (fnn_team_ > 1) {                                                                      \
            FNN_PRAGMA(omp parallel for num_threads(fnn_team_) schedule(static) clauses)          \
            __VA_ARGS__                                                                           \
        } else {                                                                                  \
            __VA_ARGS__                                                                           \
        }                                                                                         \
    } while (0)
#define FNN_PARALLEL_ON(nth, clauses, ...)                                                        \
    do {                                                                                          \
        const int fnn_team_ = (nth);                                                              \
        if (fnn_team_ > 1) {                                                                      \
            FNN_PRAGMA(omp parallel num_threads(fnn_team_) clauses)                               \
            {                                                                                     \
                const int fnn_thread_ = omp_get_thread_num(), fnn_threads_ = omp_get_num_threads(); \
                (void)fnn_thread_;                                                                \
                (void)fnn_threads_;                                                               \
                __VA_ARGS__                                                                       \
            }                                                                                     \
        } else {                                                                                  \
            const int fnn_thread_ = 0, fnn_threads_ = 1;                                          \
            (void)fnn_thread_;                                                                    \
            (void)fnn_threads_;                                                                   \
            __VA_ARGS__                                                                           \
        }                                                                                         \
    } while (0)
#else
#define FNN_PARALLEL_FOR_ON(nth, clauses, ...)                                                    \
    do {                                                                                          \
        (void)(nth);                                                                              \
        __VA_ARGS__                                                                               \
    } while (0)
#define FNN_PARALLEL_ON(nth, clauses, ...)                                                        \
    do {                                                                                          \
        const int fnn_thread_ = 0, fnn_threads_ = 1;                                              \
        (void)(nth);                                                                              \
        (void)fnn_thread_;                                                                        \
        (void)fnn_threads_;                                                                       \
        __VA_ARGS__                                                                               \
    } while (0)
#endif
#define FNN_PARALLEL_FOR(work, ...)                                                               \
    FNN_PARALLEL_FOR_ON(fnn_team_for_work(ctx, (work)), , __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_KERNELS_H */
