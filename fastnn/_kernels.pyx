# The non-GEMM native kernels: thin Cython wrappers over csrc/ (kernels.h), with
# exactly the signatures and semantics of docs/BACKEND.md. fastnn.ops has already
# validated everything: arrays are C-contiguous, of one float dtype (labels and
# argmax int64), with consistent shapes. Each wrapper allocates the outputs,
# reads the thread count and ISA (current_ctx) and calls the C kernel for the
# dtype (a fused float/double specialisation) with the GIL released. Arrays are
# passed as data pointers (the optimizers as flat typed memoryviews): the kernels
# take the shapes separately.
from cython cimport floating
from libc.stdint cimport int64_t, uint64_t

import numpy as np

cimport numpy as cnp
from fastnn._fastnn cimport fnn_ctx

include "_ctx.pxi"
include "_alloc.pxi"

cnp.import_array()

cdef extern from "kernels.h" nogil:
    int FNN_OP_IDENTITY, FNN_OP_RELU, FNN_OP_LEAKY_RELU, FNN_OP_ELU, FNN_OP_SIGMOID
    int FNN_OP_TANH, FNN_OP_SOFTPLUS, FNN_OP_STEP
    int FNN_OP_RELU_BACKWARD, FNN_OP_LEAKY_RELU_BACKWARD, FNN_OP_ELU_BACKWARD
    int FNN_OP_SOFTPLUS_BACKWARD, FNN_OP_SIGMOID_BACKWARD, FNN_OP_TANH_BACKWARD

    void fnn_eltwise_f32(fnn_ctx ctx, int op, const float *x, float *y, int64_t n, float alpha)
    void fnn_eltwise_f64(fnn_ctx ctx, int op, const double *x, double *y, int64_t n, double alpha)
    void fnn_eltwise_backward_f32(fnn_ctx ctx, int op, const float *dy, const float *a, float *dx,
                                  int64_t n, float alpha)
    void fnn_eltwise_backward_f64(fnn_ctx ctx, int op, const double *dy, const double *a, double *dx,
                                  int64_t n, double alpha)

    void fnn_im2col_f32(fnn_ctx ctx, const float *x, float *col, int64_t N, int64_t C, int64_t H,
                        int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t padh, int64_t padw)
    void fnn_im2col_f64(fnn_ctx ctx, const double *x, double *col, int64_t N, int64_t C, int64_t H,
                        int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t padh, int64_t padw)
    void fnn_col2im_f32(fnn_ctx ctx, const float *col, float *x, int64_t N, int64_t C, int64_t H,
                        int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t padh, int64_t padw)
    void fnn_col2im_f64(fnn_ctx ctx, const double *col, double *x, int64_t N, int64_t C, int64_t H,
                        int64_t W, int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t padh, int64_t padw)

    void fnn_max_pool2d_f32(fnn_ctx ctx, const float *x, float *y, int64_t *argmax, int64_t planes,
                            int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t sh, int64_t sw,
                            int64_t padh, int64_t padw)
    void fnn_max_pool2d_f64(fnn_ctx ctx, const double *x, double *y, int64_t *argmax, int64_t planes,
                            int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t sh, int64_t sw,
                            int64_t padh, int64_t padw)
    void fnn_max_pool2d_backward_f32(fnn_ctx ctx, const float *dy, const int64_t *argmax, float *dx,
                                     int64_t planes, int64_t H, int64_t W, int64_t oh, int64_t ow)
    void fnn_max_pool2d_backward_f64(fnn_ctx ctx, const double *dy, const int64_t *argmax, double *dx,
                                     int64_t planes, int64_t H, int64_t W, int64_t oh, int64_t ow)
    void fnn_avg_pool2d_f32(fnn_ctx ctx, const float *x, float *y, int64_t planes, int64_t H, int64_t W,
                            int64_t ph, int64_t pw, int64_t sh, int64_t sw, int64_t padh, int64_t padw)
    void fnn_avg_pool2d_f64(fnn_ctx ctx, const double *x, double *y, int64_t planes, int64_t H, int64_t W,
                            int64_t ph, int64_t pw, int64_t sh, int64_t sw, int64_t padh, int64_t padw)
    void fnn_avg_pool2d_backward_f32(fnn_ctx ctx, const float *dy, float *dx, int64_t planes, int64_t H,
                                     int64_t W, int64_t ph, int64_t pw, int64_t sh, int64_t sw,
                                     int64_t padh, int64_t padw)
    void fnn_avg_pool2d_backward_f64(fnn_ctx ctx, const double *dy, double *dx, int64_t planes, int64_t H,
                                     int64_t W, int64_t ph, int64_t pw, int64_t sh, int64_t sw,
                                     int64_t padh, int64_t padw)

    void fnn_softmax_f32(fnn_ctx ctx, const float *x, float *y, int64_t R, int64_t K)
    void fnn_softmax_f64(fnn_ctx ctx, const double *x, double *y, int64_t R, int64_t K)
    void fnn_log_softmax_f32(fnn_ctx ctx, const float *x, float *y, int64_t R, int64_t K)
    void fnn_log_softmax_f64(fnn_ctx ctx, const double *x, double *y, int64_t R, int64_t K)
    int fnn_softmax_cross_entropy_f32(fnn_ctx ctx, const float *z, const int64_t *labels,
                                      const float *probs, float *dz, int64_t N, int64_t K, double *loss)
    int fnn_softmax_cross_entropy_f64(fnn_ctx ctx, const double *z, const int64_t *labels,
                                      const double *probs, double *dz, int64_t N, int64_t K, double *loss)
    int fnn_mean_squared_error_f32(fnn_ctx ctx, const float *y, const float *t, float *grad, int64_t n,
                                   double *loss)
    int fnn_mean_squared_error_f64(fnn_ctx ctx, const double *y, const double *t, double *grad, int64_t n,
                                   double *loss)
    int fnn_sigmoid_bce_f32(fnn_ctx ctx, const float *z, const float *t, float *grad, int64_t n, double *loss)
    int fnn_sigmoid_bce_f64(fnn_ctx ctx, const double *z, const double *t, double *grad, int64_t n,
                            double *loss)

    void fnn_sgd_update_f32(fnn_ctx ctx, float *p, const float *g, int64_t n, double lr, double wd, double l1)
    void fnn_sgd_update_f64(fnn_ctx ctx, double *p, const double *g, int64_t n, double lr, double wd, double l1)
    void fnn_momentum_update_f32(fnn_ctx ctx, float *p, const float *g, float *v, int64_t n, double lr,
                                 double momentum, double wd, double l1)
    void fnn_momentum_update_f64(fnn_ctx ctx, double *p, const double *g, double *v, int64_t n, double lr,
                                 double momentum, double wd, double l1)
    void fnn_nesterov_update_f32(fnn_ctx ctx, float *p, const float *g, float *v, int64_t n, double lr,
                                 double momentum, double wd, double l1)
    void fnn_nesterov_update_f64(fnn_ctx ctx, double *p, const double *g, double *v, int64_t n, double lr,
                                 double momentum, double wd, double l1)
    void fnn_adagrad_update_f32(fnn_ctx ctx, float *p, const float *g, float *h, int64_t n, double lr,
                                double eps, double wd, double l1)
    void fnn_adagrad_update_f64(fnn_ctx ctx, double *p, const double *g, double *h, int64_t n, double lr,
                                double eps, double wd, double l1)
    void fnn_rmsprop_update_f32(fnn_ctx ctx, float *p, const float *g, float *h, int64_t n, double lr,
                                double decay, double eps, double wd, double l1)
    void fnn_rmsprop_update_f64(fnn_ctx ctx, double *p, const double *g, double *h, int64_t n, double lr,
                                double decay, double eps, double wd, double l1)
    void fnn_adam_update_f32(fnn_ctx ctx, float *p, const float *g, float *m, float *v, int64_t n,
                             double lr_t, double beta1, double beta2, double eps, double wd, double l1)
    void fnn_adam_update_f64(fnn_ctx ctx, double *p, const double *g, double *m, double *v, int64_t n,
                             double lr_t, double beta1, double beta2, double eps, double wd, double l1)

    void fnn_batch_norm_forward_f32(fnn_ctx ctx, const float *x, int64_t N, int64_t C, int64_t S,
                                    const float *gamma, const float *beta, int train, float *mean,
                                    float *var, float *inv_std, double eps, float *y)
    void fnn_batch_norm_forward_f64(fnn_ctx ctx, const double *x, int64_t N, int64_t C, int64_t S,
                                    const double *gamma, const double *beta, int train, double *mean,
                                    double *var, double *inv_std, double eps, double *y)
    void fnn_batch_norm_backward_f32(fnn_ctx ctx, const float *dy, const float *x, int64_t N, int64_t C,
                                     int64_t S, const float *gamma, const float *mean, const float *inv_std,
                                     int train, float *dx, float *dgamma, float *dbeta)
    void fnn_batch_norm_backward_f64(fnn_ctx ctx, const double *dy, const double *x, int64_t N, int64_t C,
                                     int64_t S, const double *gamma, const double *mean,
                                     const double *inv_std, int train, double *dx, double *dgamma,
                                     double *dbeta)


cdef inline bint _is_f32(x):
    return cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_FLOAT


# ---------------------------------------------------------------- element-wise

# Fused helpers take raw pointers: one call site per dtype, and no typed
# memoryview to build per argument (about 0.3 us each, the whole cost of a
# small op). _ptr reads the data pointer of an array ops.py has validated.

cdef inline void *_ptr(a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef void _eltwise(fnn_ctx ctx, int op, const floating *x, floating *y, int64_t n,
                   double alpha) noexcept nogil:
    if floating is float:
        fnn_eltwise_f32(ctx, op, x, y, n, <float>alpha)
    else:
        fnn_eltwise_f64(ctx, op, x, y, n, alpha)


cdef void _eltwise_backward(fnn_ctx ctx, int op, const floating *dy, const floating *a, floating *dx,
                            int64_t n, double alpha) noexcept nogil:
    if floating is float:
        fnn_eltwise_backward_f32(ctx, op, dy, a, dx, n, <float>alpha)
    else:
        fnn_eltwise_backward_f64(ctx, op, dy, a, dx, n, alpha)


cdef object _forward(x, int op, double alpha):
    cdef fnn_ctx ctx = current_ctx()
    y = new_array(x.shape, x.dtype)
    cdef void *xp = _ptr(x)
    cdef void *yp = _ptr(y)
    cdef int64_t n = x.size
    cdef bint f32 = _is_f32(x)
    with nogil:
        if f32:
            _eltwise(ctx, op, <const float *>xp, <float *>yp, n, alpha)
        else:
            _eltwise(ctx, op, <const double *>xp, <double *>yp, n, alpha)
    return y


cdef object _backward(dy, a, int op, double alpha):
    cdef fnn_ctx ctx = current_ctx()
    dx = new_array(dy.shape, dy.dtype)
    cdef void *gp = _ptr(dy)
    cdef void *ap = _ptr(a)
    cdef void *dp = _ptr(dx)
    cdef int64_t n = dy.size
    cdef bint f32 = _is_f32(dy)
    with nogil:
        if f32:
            _eltwise_backward(ctx, op, <const float *>gp, <const float *>ap, <float *>dp, n, alpha)
        else:
            _eltwise_backward(ctx, op, <const double *>gp, <const double *>ap, <double *>dp, n, alpha)
    return dx


def identity(x):
    return _forward(x, FNN_OP_IDENTITY, 0.0)


def relu(x):
    return _forward(x, FNN_OP_RELU, 0.0)


def leaky_relu(x, alpha):
    return _forward(x, FNN_OP_LEAKY_RELU, alpha)


def elu(x, alpha):
    return _forward(x, FNN_OP_ELU, alpha)


def sigmoid(x):
    return _forward(x, FNN_OP_SIGMOID, 0.0)


def tanh(x):
    return _forward(x, FNN_OP_TANH, 0.0)


def softplus(x):
    return _forward(x, FNN_OP_SOFTPLUS, 0.0)


def step(x):
    return _forward(x, FNN_OP_STEP, 0.0)


def relu_backward(dy, x):
    return _backward(dy, x, FNN_OP_RELU_BACKWARD, 0.0)


def leaky_relu_backward(dy, x, alpha):
    return _backward(dy, x, FNN_OP_LEAKY_RELU_BACKWARD, alpha)


def elu_backward(dy, x, alpha):
    return _backward(dy, x, FNN_OP_ELU_BACKWARD, alpha)


def softplus_backward(dy, x):
    return _backward(dy, x, FNN_OP_SOFTPLUS_BACKWARD, 0.0)


def sigmoid_backward(dy, y):
    return _backward(dy, y, FNN_OP_SIGMOID_BACKWARD, 0.0)


def tanh_backward(dy, y):
    return _backward(dy, y, FNN_OP_TANH_BACKWARD, 0.0)


# ------------------------------------------------------ im2col/col2im, pooling

# One dispatcher for the kernels that map one array to another over (n, c)
# planes, with their geometry in d (int64):
#   IM2COL, COL2IM:             N, C, H, W, fh, fw, sh, sw, padh, padw
#   MAX_POOL, AVG_POOL(_BW):    planes, H, W, ph, pw, sh, sw, padh, padw
#   MAX_POOL_BW:                planes, H, W, oh, ow
cdef enum:
    IM2COL, COL2IM, MAX_POOL, MAX_POOL_BW, AVG_POOL, AVG_POOL_BW


cdef void _planes(int kind, fnn_ctx ctx, const floating *a, floating *b, int64_t *am,
                  const int64_t *d) noexcept nogil:
    if floating is float:
        if kind == IM2COL:
            fnn_im2col_f32(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9])
        elif kind == COL2IM:
            fnn_col2im_f32(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9])
        elif kind == MAX_POOL:
            fnn_max_pool2d_f32(ctx, a, b, am, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
        elif kind == MAX_POOL_BW:
            fnn_max_pool2d_backward_f32(ctx, a, am, b, d[0], d[1], d[2], d[3], d[4])
        elif kind == AVG_POOL:
            fnn_avg_pool2d_f32(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
        else:
            fnn_avg_pool2d_backward_f32(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
    else:
        if kind == IM2COL:
            fnn_im2col_f64(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9])
        elif kind == COL2IM:
            fnn_col2im_f64(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9])
        elif kind == MAX_POOL:
            fnn_max_pool2d_f64(ctx, a, b, am, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
        elif kind == MAX_POOL_BW:
            fnn_max_pool2d_backward_f64(ctx, a, am, b, d[0], d[1], d[2], d[3], d[4])
        elif kind == AVG_POOL:
            fnn_avg_pool2d_f64(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
        else:
            fnn_avg_pool2d_backward_f64(ctx, a, b, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])


cdef object _run_planes(int kind, a, out, dims, argmax=None):
    """out (and argmax) from a by kernel `kind`, with the GIL released; returns out."""
    cdef fnn_ctx ctx = current_ctx()
    a = np.ascontiguousarray(a)  # a no-op for what ops passes; direct callers may pass views
    if argmax is not None:
        argmax = np.ascontiguousarray(argmax, np.int64)
    cdef int64_t d[10]   # the most any kernel takes (im2col, col2im)
    cdef Py_ssize_t i
    if len(dims) > 10:
        raise ValueError(f"_run_planes: at most 10 dimensions, got {len(dims)}")
    for i in range(len(dims)):
        d[i] = dims[i]
    cdef int64_t *am = <int64_t *>_ptr(argmax) if argmax is not None else NULL
    cdef void *ap = _ptr(a)
    cdef void *op = _ptr(out)
    if _is_f32(a):
        with nogil:
            _planes[float](kind, ctx, <const float *>ap, <float *>op, am, &d[0])
    else:
        with nogil:
            _planes[double](kind, ctx, <const double *>ap, <double *>op, am, &d[0])
    return out


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def im2col(x, fh, fw, stride, pad):
    N, C, H, W = x.shape
    oh = _out_size(H, fh, stride[0], pad[0])
    ow = _out_size(W, fw, stride[1], pad[1])
    col = new_array((N * oh * ow, C * fh * fw), x.dtype)
    return _run_planes(IM2COL, x, col, [N, C, H, W, fh, fw, stride[0], stride[1], pad[0], pad[1]])


def col2im(col, x_shape, fh, fw, stride, pad):
    N, C, H, W = x_shape
    x = new_array((N, C, H, W), col.dtype)
    return _run_planes(COL2IM, col, x, [N, C, H, W, fh, fw, stride[0], stride[1], pad[0], pad[1]])


def _pool_dims(x_shape, ph, pw, stride, pad):
    N, C, H, W = x_shape
    oh = _out_size(H, ph, stride[0], pad[0])
    ow = _out_size(W, pw, stride[1], pad[1])
    return (N, C, oh, ow), [N * C, H, W, ph, pw, stride[0], stride[1], pad[0], pad[1]]


def max_pool2d(x, ph, pw, stride, pad):
    out_shape, dims = _pool_dims(x.shape, ph, pw, stride, pad)
    argmax = new_array(out_shape, np.dtype(np.int64))
    return _run_planes(MAX_POOL, x, new_array(out_shape, x.dtype), dims, argmax), argmax


def max_pool2d_backward(dy, argmax, x_shape, ph, pw, stride, pad):
    N, C, H, W = x_shape
    _, _, oh, ow = dy.shape
    dx = new_array((N, C, H, W), dy.dtype)
    return _run_planes(MAX_POOL_BW, dy, dx, [N * C, H, W, oh, ow], argmax)


def avg_pool2d(x, ph, pw, stride, pad):
    out_shape, dims = _pool_dims(x.shape, ph, pw, stride, pad)
    return _run_planes(AVG_POOL, x, new_array(out_shape, x.dtype), dims)


def avg_pool2d_backward(dy, x_shape, ph, pw, stride, pad):
    _, dims = _pool_dims(x_shape, ph, pw, stride, pad)
    return _run_planes(AVG_POOL_BW, dy, new_array(tuple(x_shape), dy.dtype), dims)


# ------------------------------------------------------------ softmax, losses

cdef void _softmax(fnn_ctx ctx, const floating *x, floating *y, int64_t R, int64_t K, bint log) noexcept nogil:
    if floating is float:
        if log:
            fnn_log_softmax_f32(ctx, x, y, R, K)
        else:
            fnn_softmax_f32(ctx, x, y, R, K)
    else:
        if log:
            fnn_log_softmax_f64(ctx, x, y, R, K)
        else:
            fnn_softmax_f64(ctx, x, y, R, K)


cdef object _softmax_any(x, bint log):
    cdef fnn_ctx ctx = current_ctx()
    cdef int64_t R = x.shape[0], K = x.shape[1]
    y = new_array(x.shape, x.dtype)
    cdef void *xp = _ptr(x)
    cdef void *yp = _ptr(y)
    cdef bint f32 = _is_f32(x)
    with nogil:
        if f32:
            _softmax(ctx, <const float *>xp, <float *>yp, R, K, log)
        else:
            _softmax(ctx, <const double *>xp, <double *>yp, R, K, log)
    return y


def softmax(x):
    return _softmax_any(x, False)


def log_softmax(x):
    return _softmax_any(x, True)


def labels_in_range(cnp.ndarray labels, int64_t k):
    """Whether every label of a C-contiguous int64 array lies in [0, k): the check
    of fastnn._validate.int_labels, where a NumPy reduction would cost more than
    the softmax cross-entropy of a small batch."""
    cdef const int64_t *p = <const int64_t *>cnp.PyArray_DATA(labels)
    cdef int64_t i, n = cnp.PyArray_SIZE(labels)
    cdef bint ok = True
    with nogil:
        for i in range(n):
            ok &= <uint64_t>p[i] < <uint64_t>k  # a negative label is a huge unsigned one
    return ok


def softmax_cross_entropy(cnp.ndarray logits, cnp.ndarray target):
    cdef fnn_ctx ctx = current_ctx()
    cdef int64_t N = logits.shape[0], K = logits.shape[1]
    cdef cnp.ndarray dz = cnp.PyArray_EMPTY(2, logits.shape, cnp.PyArray_TYPE(logits), 0)
    if N == 0:
        return float("nan"), dz
    cdef bint f32 = cnp.PyArray_TYPE(logits) == cnp.NPY_FLOAT32
    cdef const int64_t *labels = NULL
    cdef const void *probs = NULL
    if cnp.PyArray_NDIM(target) == 1:
        labels = <const int64_t *>cnp.PyArray_DATA(target)
    else:
        probs = cnp.PyArray_DATA(target)
    cdef const void *z = cnp.PyArray_DATA(logits)
    cdef void *d = cnp.PyArray_DATA(dz)
    cdef double loss
    cdef int rc
    with nogil:
        if f32:
            rc = fnn_softmax_cross_entropy_f32(ctx, <const float *>z, labels, <const float *>probs,
                                               <float *>d, N, K, &loss)
        else:
            rc = fnn_softmax_cross_entropy_f64(ctx, <const double *>z, labels, <const double *>probs,
                                               <double *>d, N, K, &loss)
    if rc < 0:
        raise MemoryError("softmax_cross_entropy: could not allocate scratch memory")
    return loss, dz


cdef int _pair_loss(fnn_ctx ctx, const floating *a, const floating *b, floating *g, int64_t n,
                    bint bce, double *loss) noexcept nogil:
    if floating is float:
        if bce:
            return fnn_sigmoid_bce_f32(ctx, a, b, g, n, loss)
        return fnn_mean_squared_error_f32(ctx, a, b, g, n, loss)
    else:
        if bce:
            return fnn_sigmoid_bce_f64(ctx, a, b, g, n, loss)
        return fnn_mean_squared_error_f64(ctx, a, b, g, n, loss)


cdef tuple _pair_loss_any(a, b, bint bce):
    cdef fnn_ctx ctx = current_ctx()
    grad = new_array(a.shape, a.dtype)
    cdef void *ap = _ptr(a)
    cdef void *bp = _ptr(b)
    cdef void *gp = _ptr(grad)
    cdef int64_t n = a.size
    cdef bint f32 = _is_f32(a)
    cdef double loss
    cdef int rc
    with nogil:
        if f32:
            rc = _pair_loss(ctx, <const float *>ap, <const float *>bp, <float *>gp, n, bce, &loss)
        else:
            rc = _pair_loss(ctx, <const double *>ap, <const double *>bp, <double *>gp, n, bce, &loss)
    if rc < 0:
        raise MemoryError(f"{'sigmoid_binary_cross_entropy' if bce else 'mean_squared_error'}: "
                          "could not allocate scratch memory")
    return loss, grad


def mean_squared_error(y, t):
    return _pair_loss_any(y, t, False)


def sigmoid_binary_cross_entropy(logits, t):
    return _pair_loss_any(logits, t, True)


# ------------------------------------------------------------------ optimizers

cdef enum:  # the rule run by _update
    SGD, MOMENTUM, NESTEROV, ADAGRAD, RMSPROP, ADAM


cdef void _update(fnn_ctx ctx, int kind, floating *p, const floating *g, floating *s1, floating *s2, int64_t n,
                  double a, double b, double c, double d, double wd, double l1) noexcept nogil:
    if floating is float:
        if kind == SGD:
            fnn_sgd_update_f32(ctx, p, g, n, a, wd, l1)
        elif kind == MOMENTUM:
            fnn_momentum_update_f32(ctx, p, g, s1, n, a, b, wd, l1)
        elif kind == NESTEROV:
            fnn_nesterov_update_f32(ctx, p, g, s1, n, a, b, wd, l1)
        elif kind == ADAGRAD:
            fnn_adagrad_update_f32(ctx, p, g, s1, n, a, b, wd, l1)
        elif kind == RMSPROP:
            fnn_rmsprop_update_f32(ctx, p, g, s1, n, a, b, c, wd, l1)
        else:
            fnn_adam_update_f32(ctx, p, g, s1, s2, n, a, b, c, d, wd, l1)
    else:
        if kind == SGD:
            fnn_sgd_update_f64(ctx, p, g, n, a, wd, l1)
        elif kind == MOMENTUM:
            fnn_momentum_update_f64(ctx, p, g, s1, n, a, b, wd, l1)
        elif kind == NESTEROV:
            fnn_nesterov_update_f64(ctx, p, g, s1, n, a, b, wd, l1)
        elif kind == ADAGRAD:
            fnn_adagrad_update_f64(ctx, p, g, s1, n, a, b, wd, l1)
        elif kind == RMSPROP:
            fnn_rmsprop_update_f64(ctx, p, g, s1, n, a, b, c, wd, l1)
        else:
            fnn_adam_update_f64(ctx, p, g, s1, s2, n, a, b, c, d, wd, l1)


cdef _update_any(int kind, p, g, s1, s2, double a, double b, double c, double d, double wd, double l1):
    # Raw pointers (the arrays are validated, C-contiguous, of one dtype): four typed
    # memoryviews and reshapes cost as much as a bias's whole update, and the first
    # update after a large op paid twice that with its code out of cache.
    cdef fnn_ctx ctx = current_ctx()
    cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>p)
    cdef void *pp = _ptr(p)
    cdef const void *gp = _ptr(g)
    # unused state arrays alias p: the kernels never touch them
    cdef void *s1p = pp if s1 is None else _ptr(s1)
    cdef void *s2p = pp if s2 is None else _ptr(s2)
    cdef bint f32 = cnp.PyArray_TYPE(<cnp.ndarray>p) == cnp.NPY_FLOAT
    with nogil:
        if f32:
            _update(ctx, kind, <float *>pp, <const float *>gp, <float *>s1p, <float *>s2p, n, a, b, c, d, wd, l1)
        else:
            _update(ctx, kind, <double *>pp, <const double *>gp, <double *>s1p, <double *>s2p, n, a, b, c, d, wd,
                    l1)


def sgd_update(p, g, lr, wd=0.0, l1=0.0):
    _update_any(SGD, p, g, None, None, lr, 0.0, 0.0, 0.0, wd, l1)


def momentum_update(p, g, v, lr, momentum, wd=0.0, l1=0.0):
    _update_any(MOMENTUM, p, g, v, None, lr, momentum, 0.0, 0.0, wd, l1)


def nesterov_update(p, g, v, lr, momentum, wd=0.0, l1=0.0):
    _update_any(NESTEROV, p, g, v, None, lr, momentum, 0.0, 0.0, wd, l1)


def adagrad_update(p, g, h, lr, eps, wd=0.0, l1=0.0):
    _update_any(ADAGRAD, p, g, h, None, lr, eps, 0.0, 0.0, wd, l1)


def rmsprop_update(p, g, h, lr, decay, eps, wd=0.0, l1=0.0):
    _update_any(RMSPROP, p, g, h, None, lr, decay, eps, 0.0, wd, l1)


def adam_update(p, g, m, v, lr_t, beta1, beta2, eps, wd=0.0, l1=0.0):
    _update_any(ADAM, p, g, m, v, lr_t, beta1, beta2, eps, wd, l1)


# ------------------------------------------------------------ batch normalisation

def batch_norm_forward(x, gamma, beta, mean, var, eps):
    """(y, mean, var, inv_std) of x (N, C, S) normalised per feature c; mean and var
    None: the batch statistics (computed and returned), else those (C,) arrays."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef bint train = mean is None
    y = new_array(x.shape, x.dtype)
    if train:
        mean, var = new_array(gamma.shape, gamma.dtype), new_array(gamma.shape, gamma.dtype)
    inv_std = new_array(gamma.shape, gamma.dtype)
    cdef void *xp = _ptr(x)
    cdef void *yp = _ptr(y)
    cdef void *gp = _ptr(gamma)
    cdef void *bp = _ptr(beta)
    cdef void *mp = _ptr(mean)
    cdef void *vp = _ptr(var)
    cdef void *ip = _ptr(inv_std)
    cdef double e = eps
    cdef bint f32 = _is_f32(x)
    with nogil:
        if f32:
            fnn_batch_norm_forward_f32(ctx, <const float *>xp, N, C, S, <const float *>gp, <const float *>bp,
                                       train, <float *>mp, <float *>vp, <float *>ip, e, <float *>yp)
        else:
            fnn_batch_norm_forward_f64(ctx, <const double *>xp, N, C, S, <const double *>gp,
                                       <const double *>bp, train, <double *>mp, <double *>vp, <double *>ip,
                                       e, <double *>yp)
    return y, mean, var, inv_std


def batch_norm_backward(dy, x, gamma, mean, inv_std, train):
    """(dx, dgamma, dbeta) of batch_norm_forward, through the batch statistics when train."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    dx = new_array(x.shape, x.dtype)
    dgamma, dbeta = new_array(gamma.shape, gamma.dtype), new_array(gamma.shape, gamma.dtype)
    cdef void *dyp = _ptr(dy)
    cdef void *xp = _ptr(x)
    cdef void *gp = _ptr(gamma)
    cdef void *mp = _ptr(mean)
    cdef void *ip = _ptr(inv_std)
    cdef void *dxp = _ptr(dx)
    cdef void *dgp = _ptr(dgamma)
    cdef void *dbp = _ptr(dbeta)
    cdef bint tr = train
    cdef bint f32 = _is_f32(x)
    with nogil:
        if f32:
            fnn_batch_norm_backward_f32(ctx, <const float *>dyp, <const float *>xp, N, C, S, <const float *>gp,
                                        <const float *>mp, <const float *>ip, tr, <float *>dxp, <float *>dgp,
                                        <float *>dbp)
        else:
            fnn_batch_norm_backward_f64(ctx, <const double *>dyp, <const double *>xp, N, C, S,
                                        <const double *>gp, <const double *>mp, <const double *>ip, tr,
                                        <double *>dxp, <double *>dgp, <double *>dbp)
    return dx, dgamma, dbeta
