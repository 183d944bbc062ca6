# cython: language_level=3
"""GEMM, linear and convolution: the Cython side of csrc/gemm.c and csrc/conv.c.

The functions below follow docs/BACKEND.md exactly (inputs validated and
C-contiguous, one dtype, except the matrices the GEMM reads in place as op = N
or op = T); `gemm` is the raw BLAS-like entry point.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int32_t, int64_t

from fastnn._fastnn cimport fnn_ctx
from fastnn._validate import gemm_readable, rows_writable_in_place

include "_ctx.pxi"
include "_alloc.pxi"

cnp.import_array()

cdef extern from "gemm.h" nogil:
    void fnn_act_grad_from_y_mul_f32(fnn_ctx ctx, const float *dy, const float *y, float *out, int64_t n,
                                     int act, double alpha)
    void fnn_act_grad_from_y_mul_f64(fnn_ctx ctx, const double *dy, const double *y, double *out, int64_t n,
                                     int act, double alpha)
    ctypedef struct fnn_epilogue:
        int bias_mode
        const void *bias
        int act
        double act_alpha
    int FNN_BIAS_NONE, FNN_BIAS_COL, FNN_BIAS_ROW
    int fnn_gemm_f32(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                     int64_t ldc, const fnn_epilogue *ep)
    int fnn_gemm_f64(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                     const double *a, int64_t lda, const double *b, int64_t ldb, double beta, double *c,
                     int64_t ldc, const fnn_epilogue *ep)
    void fnn_gemm_tile_shape(int isa, int dtype_bytes, int *mr, int *nr)
    void fnn_gemm_block_sizes(int isa, int dtype_bytes, int64_t *mc, int64_t *kc, int64_t *nc)
    int fnn_gemm_schedule_f32(fnn_ctx ctx, int trans_b, int64_t m, int64_t n, int64_t k, int *threads)
    int fnn_gemm_schedule_f64(fnn_ctx ctx, int trans_b, int64_t m, int64_t n, int64_t k, int *threads)
    int FNN_GEMM_GRID, FNN_GEMM_SHARED_A, FNN_GEMM_SHARED_B, FNN_GEMM_FEW_ROWS, FNN_GEMM_ONE_ROW, FNN_GEMM_DOTS
    int FNN_GEMM_FEW_ROWS_BY_ROWS
    int fnn_gemm_packed_only_f32(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k)
    int fnn_gemm_packed_only_f64(fnn_ctx ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k)
    void fnn_transpose_copy_f32(fnn_ctx ctx, const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst)
    void fnn_transpose_copy_f64(fnn_ctx ctx, const double *src, int64_t lds, int64_t rows, int64_t cols,
                                double *dst)
    int FNN_GEMM_SPLIT_K

cdef extern from "conv.h" nogil:
    ctypedef struct fnn_pool_spec:
        int64_t ph, pw, sh, sw, padh, padw
    int FNN_CONV_POOL_SEPARATE, FNN_CONV_POOL_WINOGRAD, FNN_CONV_POOL_DIRECT
    int fnn_conv2d_max_pool_path_f32(fnn_ctx ctx, int64_t n, int64_t c, int64_t h, int64_t w, int64_t f,
                                     int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                     const fnn_pool_spec *pool)
    int fnn_conv2d_max_pool_path_f64(fnn_ctx ctx, int64_t n, int64_t c, int64_t h, int64_t w, int64_t f,
                                     int64_t fh, int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                     const fnn_pool_spec *pool)
    int fnn_conv2d_max_pool_f32(fnn_ctx ctx, const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                const float *wt, int64_t f, int64_t fh, int64_t fw, const float *bias,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw, int act, double act_alpha,
                                const fnn_pool_spec *pool, float *y, int32_t *argmax)
    int fnn_conv2d_max_pool_f64(fnn_ctx ctx, const double *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                const double *wt, int64_t f, int64_t fh, int64_t fw, const double *bias,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw, int act, double act_alpha,
                                const fnn_pool_spec *pool, double *y, int32_t *argmax)
    int fnn_conv2d_f32(fnn_ctx ctx, const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                       const float *wt, int64_t f, int64_t fh, int64_t fw, const float *bias,
                       int64_t sh, int64_t sw, int64_t ph, int64_t pw, int act, double act_alpha, float *y)
    int fnn_conv2d_f64(fnn_ctx ctx, const double *x, int64_t n, int64_t c, int64_t h, int64_t w,
                       const double *wt, int64_t f, int64_t fh, int64_t fw, const double *bias,
                       int64_t sh, int64_t sw, int64_t ph, int64_t pw, int act, double act_alpha, double *y)
    int fnn_conv2d_max_pool_backward_f32(fnn_ctx ctx, const float *dp, const float *yp, int act, double act_alpha,
                                         const int32_t *argmax, int64_t poh, int64_t pow_, const float *x, int64_t n,
                                         int64_t c, int64_t h, int64_t w, const float *wt, int64_t f, int64_t fh,
                                         int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, float *dx,
                                         float *dw, float *db)
    int fnn_conv2d_max_pool_backward_f64(fnn_ctx ctx, const double *dp, const double *yp, int act, double act_alpha,
                                         const int32_t *argmax, int64_t poh, int64_t pow_, const double *x, int64_t n,
                                         int64_t c, int64_t h, int64_t w, const double *wt, int64_t f, int64_t fh,
                                         int64_t fw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, double *dx,
                                         double *dw, double *db)
    int fnn_conv2d_backward_f32(fnn_ctx ctx, const float *dy, const float *x, int64_t n, int64_t c, int64_t h,
                                int64_t w, const float *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh,
                                int64_t sw, int64_t ph, int64_t pw, float *dx, float *dw, float *db)
    int fnn_conv2d_backward_f64(fnn_ctx ctx, const double *dy, const double *x, int64_t n, int64_t c, int64_t h,
                                int64_t w, const double *wt, int64_t f, int64_t fh, int64_t fw, int64_t sh,
                                int64_t sw, int64_t ph, int64_t pw, double *dx, double *dw, double *db)

# Order of enum fnn_act (csrc/activation.h) and fastnn._validate.ACTIVATIONS.
_ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus")


cdef int _act_code(activation) except -1:
    if activation is None:
        return 0
    try:
        return _ACTIVATIONS.index(activation)
    except ValueError:
        raise ValueError(f"unknown activation: expected one of {_ACTIVATIONS} or None, got {activation!r}")


def tile_shape(isa, dtype):
    """(MR, NR) of the microkernel for ISA number `isa` (0 portable, 1 AVX2, 2 AVX-512) and dtype."""
    cdef int mr = 0, nr = 0
    fnn_gemm_tile_shape(isa, np.dtype(dtype).itemsize, &mr, &nr)
    return mr, nr


def block_sizes(isa, dtype):
    """(MC, KC, NC) cache blocks for ISA number `isa` and dtype."""
    cdef int64_t mc = 0, kc = 0, nc = 0
    fnn_gemm_block_sizes(isa, np.dtype(dtype).itemsize, &mc, &kc, &nc)
    return mc, kc, nc


def schedule(m, n, k, dtype, trans_b=False):
    """(path, threads) that `gemm` takes for an m x n x k product (op(B) = B.T with
    trans_b) in the current settings: "one_row" (a GEMV, no packing), "dots" (B = T and
    a few rows: dot products of A's and B's rows, no packing), "few_rows" (B read in
    place; "few_rows_by_rows" where the threads split the rows, each packing its rows
    of A), or the packed driver's "grid" (a static split), "shared_a" or "shared_b"
    (every thread packs all of op(A) or op(B) and takes the other's panels as it goes),
    "split_k" (each thread a slice of the depth into its own partial C, added in thread
    order)."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int threads = 1, mode
    if np.dtype(dtype) == np.float32:
        mode = fnn_gemm_schedule_f32(ctx, bool(trans_b), m, n, k, &threads)
    else:
        mode = fnn_gemm_schedule_f64(ctx, bool(trans_b), m, n, k, &threads)
    names = {FNN_GEMM_GRID: "grid", FNN_GEMM_SHARED_A: "shared_a", FNN_GEMM_SHARED_B: "shared_b",
             FNN_GEMM_FEW_ROWS: "few_rows", FNN_GEMM_FEW_ROWS_BY_ROWS: "few_rows_by_rows",
             FNN_GEMM_ONE_ROW: "one_row", FNN_GEMM_DOTS: "dots", FNN_GEMM_SPLIT_K: "split_k"}
    return names[mode], threads


# Rows may be strided (the caller guarantees unit stride along a row). Raw
# pointers, not typed memoryviews: acquiring three memoryviews took about 1 us,
# most of a batch-1 linear layer's call.
cdef inline const void *_data_or_null(cnp.ndarray x):
    return cnp.PyArray_DATA(x) if cnp.PyArray_SIZE(x) > 0 else NULL


cdef inline int64_t _row_stride(cnp.ndarray x):
    # a single row's stride is never used, and NumPy may give it any value
    if cnp.PyArray_DIMS(x)[0] <= 1:
        return cnp.PyArray_DIMS(x)[1] if cnp.PyArray_DIMS(x)[1] > 0 else 1
    return cnp.PyArray_STRIDES(x)[0] // cnp.PyArray_ITEMSIZE(x)


cdef inline object _with_unit_rows(cnp.ndarray x, bint *trans):
    """x, a matrix the GEMM reads in place (_validate.gemm_readable), as one whose rows
    are contiguous: x itself (*trans = 0), or x.T (*trans = 1) where x's columns are"""
    if cnp.PyArray_DIMS(x)[1] <= 1 or cnp.PyArray_STRIDES(x)[1] == cnp.PyArray_ITEMSIZE(x):
        trans[0] = 0
        return x
    trans[0] = 1
    return x.T


cdef object _c_order_copy(fnn_ctx ctx, cnp.ndarray xt):
    """A C-order copy of xt.T, for xt with contiguous rows (a transposed view's base)."""
    cdef int64_t rows = cnp.PyArray_DIMS(xt)[0], cols = cnp.PyArray_DIMS(xt)[1], lds = _row_stride(xt)
    out = new_array((cols, rows), xt.dtype)
    cdef cnp.ndarray oa = out
    cdef const void *src = cnp.PyArray_DATA(xt)
    cdef void *dst = cnp.PyArray_DATA(oa)
    with nogil:
        if cnp.PyArray_TYPE(xt) == cnp.NPY_FLOAT:
            fnn_transpose_copy_f32(ctx, <const float *>src, lds, rows, cols, <float *>dst)
        else:
            fnn_transpose_copy_f64(ctx, <const double *>src, lds, rows, cols, <double *>dst)
    return out


cdef bint _packed_only(fnn_ctx ctx, int typ, bint ta, bint tb, int64_t m, int64_t n, int64_t k):
    if typ == cnp.NPY_FLOAT:
        return fnn_gemm_packed_only_f32(ctx, ta, tb, m, n, k)
    return fnn_gemm_packed_only_f64(ctx, ta, tb, m, n, k)


cdef tuple _gemm_operands(fnn_ctx ctx, a, bint ta, b, bint tb, int64_t m, int64_t n, int64_t k):
    """(A, trans_a, B, trans_b) for the GEMM of op(a) op(b), where (ta, tb) are the flags
    for a and b in C order and a, b may be any layout it reads in place
    (_validate.gemm_readable). A transposed view flips its flag and is read in place
    where both flag sets take the packed driver alone (fnn_gemm_packed_only: the same
    bits), else copied to C order: the layout never changes the result."""
    cdef bint fa, fb
    ar = _with_unit_rows(a, &fa)
    br = _with_unit_rows(b, &fb)
    if not (fa or fb):
        return ar, ta, br, tb
    cdef int typ = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if _packed_only(ctx, typ, ta != fa, tb != fb, m, n, k) and _packed_only(ctx, typ, ta, tb, m, n, k):
        return ar, ta != fa, br, tb != fb
    return (_c_order_copy(ctx, ar) if fa else ar), ta, (_c_order_copy(ctx, br) if fb else br), tb


cdef int _gemm_raw(fnn_ctx ctx, bint ta, bint tb, int64_t m, int64_t n, int64_t k, double alpha,
                   cnp.ndarray a, cnp.ndarray b, double beta, cnp.ndarray c, const fnn_epilogue *ep) except -1:
    if a is None or b is None or c is None:
        raise TypeError("gemm: expected three matrices, got None")
    cdef int rc, typ = cnp.PyArray_TYPE(c)
    if (cnp.PyArray_TYPE(a) != typ or cnp.PyArray_TYPE(b) != typ or (typ != cnp.NPY_FLOAT and typ != cnp.NPY_DOUBLE)
            or cnp.PyArray_NDIM(a) != 2 or cnp.PyArray_NDIM(b) != 2 or cnp.PyArray_NDIM(c) != 2):
        raise TypeError(f"gemm: expected 2-D float32 or float64 matrices of one dtype, got {a.dtype} {np.shape(a)}, "
                        f"{b.dtype} {np.shape(b)} and {c.dtype} {np.shape(c)}")
    if m == 0 or n == 0:
        return 0
    cdef int64_t lda = _row_stride(a), ldb = _row_stride(b), ldc = _row_stride(c)
    cdef const void *pa = _data_or_null(a)
    cdef const void *pb = _data_or_null(b)
    cdef void *pc = cnp.PyArray_DATA(c)
    with nogil:
        if typ == cnp.NPY_FLOAT:
            rc = fnn_gemm_f32(ctx, ta, tb, m, n, k, <float>alpha, <const float *>pa, lda, <const float *>pb, ldb,
                              <float>beta, <float *>pc, ldc, ep)
        else:
            rc = fnn_gemm_f64(ctx, ta, tb, m, n, k, alpha, <const double *>pa, lda, <const double *>pb, ldb, beta,
                              <double *>pc, ldc, ep)
    if rc != 0:
        raise MemoryError("gemm: could not allocate packing buffers")
    return 0


def _as_matrix(name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"gemm: expected {name} to be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"gemm: expected {name} to be 2-D, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm: expected {name} of dtype float32 or float64, got {x.dtype}")
    return x if gemm_readable(x) else np.ascontiguousarray(x)


def gemm(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """C = alpha * op(A) @ op(B) + beta * C, op(X) = X.T when trans_x.

    a and b are read without copies where their rows are contiguous (sub-matrix
    views), and so are transposed views where that gives the bits of their
    C-order copies (_gemm_operands); c's rows may be strided. When c is given it
    is updated in place and returned; otherwise a new array is returned (beta is
    then irrelevant).
    """
    a = _as_matrix("a", a)
    b = _as_matrix("b", b)
    if a.dtype != b.dtype:
        raise TypeError(f"gemm: expected a and b of one dtype, got {a.dtype} and {b.dtype}")
    m, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"gemm: inner dimensions differ: op(a) is {(m, ka)}, op(b) is {(kb, n)}")
    if c is None:
        c = new_array((m, n), a.dtype)
        beta = 0.0
    else:
        if not isinstance(c, np.ndarray) or c.dtype != a.dtype:
            raise TypeError(f"gemm: expected c to be a {a.dtype} ndarray, got {type(c).__name__}"
                            f"{'' if not isinstance(c, np.ndarray) else ' of ' + str(c.dtype)}")
        if c.shape != (m, n):
            raise ValueError(f"gemm: expected c of shape {(m, n)}, got {c.shape}")
        if not c.flags.writeable:
            raise TypeError("gemm: c is read-only, but it is written in place")
        if not rows_writable_in_place(c):
            raise ValueError("gemm: c must have contiguous rows (it is written in place)")
        for name, operand in (("a", a), ("b", b)):
            if np.may_share_memory(c, operand):  # c is written while a and b are still being read
                raise ValueError(f"gemm: c shares memory with {name}; the product needs its own output array")
    cdef fnn_ctx ctx = current_ctx()
    a, trans_a, b, trans_b = _gemm_operands(ctx, a, trans_a, b, trans_b, m, n, ka)
    _gemm_raw(ctx, trans_a, trans_b, m, n, ka, alpha, a, b, beta, c, NULL)
    return c


def matmul(a, b):
    """(M, K) @ (K, N) -> (M, N); a and b in any layout the GEMM reads in place (a
    transposed view is op = T)."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int64_t m = a.shape[0], n = b.shape[1], k = a.shape[1]
    a_rows, ta, b_rows, tb = _gemm_operands(ctx, a, False, b, False, m, n, k)
    c = new_array((m, n), a.dtype)
    _gemm_raw(ctx, ta, tb, m, n, k, 1.0, a_rows, b_rows, 0.0, c, NULL)
    return c


def linear(x, W, b, activation, alpha):
    """y = act(x @ W + b), bias and activation fused into the GEMM epilogue."""
    cdef fnn_ctx ctx = current_ctx()
    cdef fnn_epilogue ep
    ep.act = _act_code(activation)
    ep.act_alpha = alpha
    ep.bias_mode = FNN_BIAS_NONE
    ep.bias = NULL
    y = new_array((x.shape[0], W.shape[1]), x.dtype)
    cdef cnp.ndarray bias_arr
    if b is not None and b.shape[0] > 0:
        bias_arr = b
        ep.bias_mode = FNN_BIAS_COL
        ep.bias = cnp.PyArray_DATA(bias_arr)
    x_rows, tx, w_rows, tw = _gemm_operands(ctx, x, False, W, False, x.shape[0], W.shape[1], x.shape[1])
    _gemm_raw(ctx, tx, tw, x.shape[0], W.shape[1], x.shape[1], 1.0, x_rows, w_rows, 0.0, y, &ep)
    return y


cdef object _act_grad(dy, y, int act, double alpha):
    """dy * act'(z) from y = act(z), a new array (dy and y C-contiguous, one dtype)."""
    cdef fnn_ctx ctx = current_ctx()
    g = new_array(dy.shape, dy.dtype)
    cdef cnp.ndarray da = dy, ya = y, ga = g
    cdef int64_t n = dy.size
    cdef const void *dp = cnp.PyArray_DATA(da)
    cdef const void *yp = cnp.PyArray_DATA(ya)
    cdef void *gp = cnp.PyArray_DATA(ga)
    with nogil:
        if cnp.PyArray_TYPE(da) == cnp.NPY_FLOAT:
            fnn_act_grad_from_y_mul_f32(ctx, <const float *>dp, <const float *>yp, <float *>gp, n, act, alpha)
        else:
            fnn_act_grad_from_y_mul_f64(ctx, <const double *>dp, <const double *>yp, <double *>gp, n, act, alpha)
    return g


cdef void _column_sums(const floating *g, int64_t rows, int64_t cols, floating *out) noexcept nogil:
    # row by row, so the order of the additions is fixed
    cdef int64_t i, j
    for j in range(cols):
        out[j] = 0
    for i in range(rows):
        for j in range(cols):
            out[j] += g[i * cols + j]


def linear_backward(dy, x, W, activation, alpha, y):
    """(dx, dW, db) of y = act(x @ W + b); dy is the gradient of the activated output y."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int act = _act_code(activation)
    g = _act_grad(dy, y, act, alpha) if act != 0 else dy
    n, d = x.shape
    m = W.shape[1]
    dx = new_array((n, d), x.dtype)
    dW = new_array((d, m), x.dtype)
    db = new_array((m,), x.dtype)
    g_rows, tg, w_rows, tw = _gemm_operands(ctx, g, False, W, True, n, d, m)
    _gemm_raw(ctx, tg, tw, n, d, m, 1.0, g_rows, w_rows, 0.0, dx, NULL)
    _gemm_raw(ctx, True, False, d, m, n, 1.0, x, g, 0.0, dW, NULL)
    cdef cnp.ndarray ga = g, dba = db
    cdef int64_t rows = n, cols = m
    cdef const void *gp = cnp.PyArray_DATA(ga)
    cdef void *dbp = cnp.PyArray_DATA(dba)
    with nogil:
        if cnp.PyArray_TYPE(ga) == cnp.NPY_FLOAT:
            _column_sums[float](<const float *>gp, rows, cols, <float *>dbp)
        else:
            _column_sums[double](<const double *>gp, rows, cols, <double *>dbp)
    return dx, dW, db


def conv2d(x, W, b, stride, pad, activation, alpha):
    """NCHW convolution, y (N, F, oh, ow) = act(W * x + b), with implicit im2col (no col matrix)."""
    return _conv_forward("conv2d", x, W, b, stride, pad, activation, alpha, None)[0]


def conv_max_pool_path(x_shape, W_shape, stride, pad, pool_h, pool_w, pool_stride, pool_pad, dtype):
    """The path conv2d_max_pool2d takes for finite inputs in the current settings: "winograd"
    (each block's output rows pooled in cache), "direct" (each output plane pooled in L1)
    or "separate" (the convolution's output written, then pooled)."""
    cdef fnn_ctx ctx = current_ctx()
    cdef fnn_pool_spec pool
    pool.ph, pool.pw = pool_h, pool_w
    pool.sh, pool.sw = pool_stride
    pool.padh, pool.padw = pool_pad
    n, c, h, w = x_shape
    f, _, fh, fw = W_shape
    cdef int path
    if np.dtype(dtype) == np.float32:
        path = fnn_conv2d_max_pool_path_f32(ctx, n, c, h, w, f, fh, fw, stride[0], stride[1], pad[0], pad[1], &pool)
    else:
        path = fnn_conv2d_max_pool_path_f64(ctx, n, c, h, w, f, fh, fw, stride[0], stride[1], pad[0], pad[1], &pool)
    return {FNN_CONV_POOL_SEPARATE: "separate", FNN_CONV_POOL_WINOGRAD: "winograd", FNN_CONV_POOL_DIRECT: "direct"}[path]


def conv2d_max_pool2d(x, W, b, stride, pad, activation, alpha, pool_h, pool_w, pool_stride, pool_pad):
    """(y, argmax) of max_pool2d(conv2d(x, ...)), each conv output plane pooled while it is in cache."""
    return _conv_forward("conv2d_max_pool2d", x, W, b, stride, pad, activation, alpha,
                         (pool_h, pool_w, pool_stride, pool_pad))


cdef tuple _conv_forward(str op, x, W, b, stride, pad, activation, alpha, pooling):
    """(y, argmax or None): the convolution, followed by max pooling when `pooling` is
    (pool_h, pool_w, pool_stride, pool_pad)."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int act = _act_code(activation)
    cdef int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int64_t f = W.shape[0], fh = W.shape[2], fw = W.shape[3]
    cdef int64_t sh = stride[0], sw = stride[1], ph = pad[0], pw = pad[1]
    cdef int64_t oh = (h + 2 * ph - fh) // sh + 1, ow = (w + 2 * pw - fw) // sw + 1
    cdef fnn_pool_spec pool
    cdef bint pooled = pooling is not None
    argmax = None
    if pooled:
        pool.ph, pool.pw = pooling[0], pooling[1]
        pool.sh, pool.sw = pooling[2]
        pool.padh, pool.padw = pooling[3]
        oh, ow = (oh + 2 * pool.padh - pool.ph) // pool.sh + 1, (ow + 2 * pool.padw - pool.pw) // pool.sw + 1
        argmax = new_array((n, f, oh, ow), np.dtype(np.int32))
    y = new_array((n, f, oh, ow), x.dtype)
    if n == 0:
        return y, argmax
    cdef int rc = 0
    cdef double aa = alpha
    cdef cnp.ndarray xa = x, wa = W, ya = y, ba, ama
    cdef const void *bp = NULL
    cdef int32_t *ap = NULL
    if b is not None:
        ba = b
        bp = cnp.PyArray_DATA(ba)
    if pooled:
        ama = argmax
        ap = <int32_t *>cnp.PyArray_DATA(ama)
    cdef const void *xp = cnp.PyArray_DATA(xa)
    cdef const void *wp = cnp.PyArray_DATA(wa)
    cdef void *yp = cnp.PyArray_DATA(ya)
    with nogil:
        if cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
            if pooled:
                rc = fnn_conv2d_max_pool_f32(ctx, <const float *>xp, n, c, h, w, <const float *>wp, f, fh, fw,
                                             <const float *>bp, sh, sw, ph, pw, act, aa, &pool, <float *>yp, ap)
            else:
                rc = fnn_conv2d_f32(ctx, <const float *>xp, n, c, h, w, <const float *>wp, f, fh, fw,
                                    <const float *>bp, sh, sw, ph, pw, act, aa, <float *>yp)
        else:
            if pooled:
                rc = fnn_conv2d_max_pool_f64(ctx, <const double *>xp, n, c, h, w, <const double *>wp, f, fh, fw,
                                             <const double *>bp, sh, sw, ph, pw, act, aa, &pool, <double *>yp, ap)
            else:
                rc = fnn_conv2d_f64(ctx, <const double *>xp, n, c, h, w, <const double *>wp, f, fh, fw,
                                    <const double *>bp, sh, sw, ph, pw, act, aa, <double *>yp)
    if rc != 0:
        raise MemoryError(f"{op}: could not allocate scratch memory")
    return y, argmax


def conv2d_backward(dy, x, W, stride, pad, need_dx):
    """(dx or None, dW, db) of the convolution; dy is the gradient of the pre-activation output."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int64_t f = W.shape[0], fh = W.shape[2], fw = W.shape[3]
    cdef int64_t sh = stride[0], sw = stride[1], ph = pad[0], pw = pad[1]
    dW = new_array(W.shape, W.dtype)
    db = new_array((f,), W.dtype)
    dx = new_array(x.shape, x.dtype) if need_dx else None
    cdef cnp.ndarray dya = dy, xa = x, wa = W, dwa = dW, dba = db, dxa
    cdef void *dxp = NULL
    if need_dx:
        dxa = dx
        dxp = cnp.PyArray_DATA(dxa)
    cdef const void *dyp = cnp.PyArray_DATA(dya)
    cdef const void *xp = cnp.PyArray_DATA(xa)
    cdef const void *wp = cnp.PyArray_DATA(wa)
    cdef void *dwp = cnp.PyArray_DATA(dwa)
    cdef void *dbp = cnp.PyArray_DATA(dba)
    cdef int rc = 0
    with nogil:
        if cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
            rc = fnn_conv2d_backward_f32(ctx, <const float *>dyp, <const float *>xp, n, c, h, w,
                                         <const float *>wp, f, fh, fw, sh, sw, ph, pw,
                                         <float *>dxp, <float *>dwp, <float *>dbp)
        else:
            rc = fnn_conv2d_backward_f64(ctx, <const double *>dyp, <const double *>xp, n, c, h, w,
                                         <const double *>wp, f, fh, fw, sh, sw, ph, pw,
                                         <double *>dxp, <double *>dwp, <double *>dbp)
    if rc != 0:
        raise MemoryError("conv2d_backward: could not allocate scratch memory")
    return dx, dW, db


def conv2d_max_pool2d_backward(dy, argmax, y, x, W, stride, pad, activation, alpha, need_dx):
    """(dx or None, dW, db) of conv2d_max_pool2d from dy, the gradient of its pooled output y;
    each image's gradient is un-pooled in cache where the direct weight gradient runs."""
    cdef fnn_ctx ctx = current_ctx()
    cdef int act = _act_code(activation)
    cdef int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int64_t f = W.shape[0], fh = W.shape[2], fw = W.shape[3]
    cdef int64_t sh = stride[0], sw = stride[1], ph = pad[0], pw = pad[1]
    cdef int64_t poh = dy.shape[2], pow_ = dy.shape[3]
    cdef double act_alpha = alpha if act != 0 and alpha is not None else 0.0
    dx = new_array(x.shape, x.dtype) if need_dx else None
    dW = new_array(W.shape, x.dtype)
    db = new_array((f,), x.dtype)
    # the activation's derivative, taken from the pooled output y, is applied in C image by image
    cdef cnp.ndarray ga = dy, ya = y if act != 0 else dy, ama = argmax, xa = x, wa = W, dWa = dW, dba = db, dxa
    cdef void *dxp = NULL
    if need_dx:
        dxa = dx
        dxp = cnp.PyArray_DATA(dxa)
    cdef const void *gp = cnp.PyArray_DATA(ga)
    cdef const void *yp = cnp.PyArray_DATA(ya)
    cdef const int32_t *ap = <const int32_t *>cnp.PyArray_DATA(ama)
    cdef const void *xp = cnp.PyArray_DATA(xa)
    cdef const void *wp = cnp.PyArray_DATA(wa)
    cdef void *dWp = cnp.PyArray_DATA(dWa)
    cdef void *dbp = cnp.PyArray_DATA(dba)
    cdef int rc = 0
    with nogil:
        if cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
            rc = fnn_conv2d_max_pool_backward_f32(ctx, <const float *>gp, <const float *>yp, act, act_alpha, ap, poh, pow_,
                                                  <const float *>xp, n, c, h, w, <const float *>wp, f, fh, fw, sh, sw,
                                                  ph, pw, <float *>dxp, <float *>dWp, <float *>dbp)
        else:
            rc = fnn_conv2d_max_pool_backward_f64(ctx, <const double *>gp, <const double *>yp, act, act_alpha, ap, poh,
                                                  pow_, <const double *>xp, n, c, h, w, <const double *>wp, f, fh, fw,
                                                  sh, sw, ph, pw, <double *>dxp, <double *>dWp, <double *>dbp)
    if rc != 0:
        raise MemoryError("conv2d_max_pool2d_backward: could not allocate scratch memory")
    return dx, dW, db
