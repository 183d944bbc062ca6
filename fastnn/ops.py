"""fastnn.ops: the public functional API (stateless).

Each op validates its arguments here, once (see fastnn._validate), normalises
them (float32/float64 promoted to one dtype by np.result_type, C-contiguous,
stride/pad as (h, w) tuples) and calls the function of the same name on the
active backend: the C kernels (``fastnn.set_backend("native")``) or the NumPy
reference (``"numpy"``). docs/OPS.md documents every op; docs/BACKEND.md is the
contract the two backends implement.
"""
import itertools
import math

import numpy as np

from fastnn import _config
from fastnn import _reference
from fastnn import _validate as V

__all__ = [
    "matmul", "gemm", "linear", "linear_backward",
    "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "step", "identity",
    "relu_backward", "leaky_relu_backward", "elu_backward", "softplus_backward",
    "sigmoid_backward", "tanh_backward", "identity_backward", "activation", "activation_backward",
    "im2col", "col2im", "conv2d", "conv2d_backward", "conv2d_max_pool2d", "conv2d_max_pool2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "softmax", "log_softmax", "softmax_cross_entropy", "mean_squared_error",
    "sigmoid_binary_cross_entropy",
    "sgd_update", "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update",
    "adam_update", "batch_norm_forward", "batch_norm_backward", "ACTIVATIONS",
]

ACTIVATIONS = V.ACTIVATIONS


def _backend():
    return _config.active_backend()


# ---------------------------------------------------------------------------
# Dense layers

def matmul(a, b):
    """(M, K) @ (K, N) -> (M, N)."""
    op = "matmul"
    dtype, arrs = V.float_arrays(op, matrices=("a", "b"), a=a, b=b)
    a, b = arrs["a"], arrs["b"]
    V.check_ndim(op, "a", a, 2)
    V.check_ndim(op, "b", b, 2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"{op}: inner dimensions differ: a {a.shape} @ b {b.shape}")
    V.check_size(op, "the output", (a.shape[0], b.shape[1]), dtype.itemsize)
    return _backend().matmul(a, b)


def gemm(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """alpha * op(a) @ op(b) + beta * c, BLAS's xGEMM, where op(x) is x.T when trans_x is True.

    Without c, a new (M, N) array (beta must then be 0). With c, c is updated in place and
    returned: a writeable (M, N) array in any layout, of the dtype the product computes in
    (a float64 c makes float32 a and b compute in float64; a float32 c refuses float64 a
    or b). As in BLAS, beta = 0 writes c without reading it and alpha = 0 (or K = 0) leaves
    the product out, so NaN or Inf there do not pass on."""
    op = "gemm"
    trans_a = V.as_flag(op, "trans_a", trans_a)
    trans_b = V.as_flag(op, "trans_b", trans_b)
    alpha = V.as_real(op, "alpha", alpha)
    beta = V.as_real(op, "beta", beta)
    dtype, arrs = V.float_arrays(op, matrices=("a", "b"), a=a, b=b)
    a, b = arrs["a"], arrs["b"]
    V.check_ndim(op, "a", a, 2)
    V.check_ndim(op, "b", b, 2)
    m, ka = a.shape[::-1] if trans_a else a.shape
    kb, n = b.shape[::-1] if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"{op}: inner dimensions differ: op(a) is {(m, ka)} and op(b) is {(kb, n)} "
                         f"(a {a.shape}, trans_a={trans_a}; b {b.shape}, trans_b={trans_b})")
    if c is None:
        if beta != 0:
            raise ValueError(f"{op}: beta={beta} scales c, but no c was given")
        V.check_size(op, "the output", (m, n), dtype.itemsize)
        return _backend().gemm(a, b, None, trans_a, trans_b, alpha, 0.0)
    c = V.writeable_float_array(op, "c", c, (m, n))
    if c.dtype != dtype:
        if np.result_type(dtype, c.dtype) != c.dtype:
            raise TypeError(f"{op}: a and b compute in {dtype}, which c ({c.dtype}) cannot hold; "
                            f"pass c of dtype {dtype}, or a and b of dtype {c.dtype}")
        a, b = a.astype(c.dtype), b.astype(c.dtype)   # order "K": the GEMM still reads them in place
    if V.rows_writable_in_place(c) and not (np.may_share_memory(c, a) or np.may_share_memory(c, b)):
        return _backend().gemm(a, b, c, trans_a, trans_b, alpha, beta)
    # The kernels write whole rows, and c must not change while a or b are read: a C-order
    # copy (of c's values only where beta reads them) is computed and copied back.
    work = np.array(c, order="C") if beta != 0 else np.empty((m, n), c.dtype)
    c[...] = _backend().gemm(a, b, work, trans_a, trans_b, alpha, beta)
    return c


def _flatten_batch(x):
    return x if x.ndim == 2 else x.reshape(x.shape[0], math.prod(x.shape[1:]))


def _check_linear(op, x, W, b=None):
    if x.ndim < 2:
        raise ValueError(f"{op}: expected x of shape (N, D) or (N, ...), got shape {x.shape}")
    if W.ndim != 2:
        V.check_ndim(op, "W", W, 2, " (D, M)")
    if W.shape[0] < 1 or W.shape[1] < 1:
        V.check_nonempty_dims(op, "W", W, first_dim=0)
    d = x.shape[1] if x.ndim == 2 else math.prod(x.shape[1:])
    if W.shape[0] != d:
        raise ValueError(f"{op}: x of shape {x.shape} has {d} features per sample, "
                         f"but W of shape {W.shape} expects {W.shape[0]}")
    if b is not None and b.shape != (W.shape[1],):
        raise ValueError(f"{op}: expected b of shape ({W.shape[1]},) for W {W.shape}, got {b.shape}")


def linear(x, W, b=None, activation=None, alpha=None):
    """act(x @ W + b) for x (N, D) or (N, ...) (flattened to (N, D)), W (D, M), b (M,)."""
    op = "linear"
    dtype, arrs = V.float_arrays(op, optional=("b",), matrices=("W",), x=x, W=W, b=b)
    x, W, b = arrs["x"], arrs["W"], arrs["b"]
    _check_linear(op, x, W, b)
    act = V.activation_name(op, activation)
    alpha = V.activation_alpha(op, act, alpha, fused=True)
    V.check_size(op, "the output", (x.shape[0], W.shape[1]), dtype.itemsize)
    return _backend().linear(_flatten_batch(x), W, b, act, alpha)


def linear_backward(dy, x, W, activation=None, y=None, alpha=None):
    """(dx shaped like x, dW, db) of linear. With an activation, dy is the gradient of the
    post-activation output and y (that output) is required."""
    op = "linear_backward"
    act = V.activation_name(op, activation)
    if act is not None and y is None:
        raise ValueError(f"{op}: activation {act!r} needs y, the output of the forward pass")
    alpha = V.activation_alpha(op, act, alpha, fused=True)
    dtype, arrs = V.float_arrays(op, optional=("y",), matrices=("W",), dy=dy, x=x, W=W,
                                 y=y if act is not None else None)
    dy, x, W, y = arrs["dy"], arrs["x"], arrs["W"], arrs["y"]
    _check_linear(op, x, W)
    want = (x.shape[0], W.shape[1])
    if dy.shape != want:
        raise ValueError(f"{op}: expected dy of shape {want} for x {x.shape} and W {W.shape}, got {dy.shape}")
    if y is not None and y.shape != want:
        raise ValueError(f"{op}: expected y of shape {want} (the forward output), got {y.shape}")
    dx, dW, db = _backend().linear_backward(dy, _flatten_batch(x), W, act, alpha, y)
    return dx.reshape(x.shape), dW, db


# ---------------------------------------------------------------------------
# Activations (any shape)

def _unary(op, x):
    if type(x) is np.ndarray and x.dtype in V.FLOAT_DTYPES and x.flags.c_contiguous:
        return x  # the common case, without the general machinery
    return V.float_arrays(op, x=x)[1]["x"]


def _binary(op, name_a, a, name_b, b):
    arrs = V.float_arrays(op, **{name_a: a, name_b: b})[1]
    a, b = arrs[name_a], arrs[name_b]
    V.check_same_shape(op, name_a, a, name_b, b)
    return a, b


def _apply(kernel, *arrays_and_scalars):
    """backend.kernel(...) for an element-wise op; a 0-d array travels as shape (1,),
    so that backends always get and return real arrays."""
    args = list(arrays_and_scalars)
    scalar = isinstance(args[0], np.ndarray) and args[0].ndim == 0
    if scalar:
        args = [a.reshape(1) if isinstance(a, np.ndarray) else a for a in args]
    out = getattr(_backend(), kernel)(*args)
    if not scalar:
        return out
    if isinstance(out, tuple):  # a loss: (value, gradient)
        return out[0], out[1].reshape(())
    return out.reshape(())


def relu(x):
    return _apply("relu", _unary("relu", x))


def leaky_relu(x, alpha=0.01):
    return _apply("leaky_relu", _unary("leaky_relu", x), V.as_real("leaky_relu", "alpha", alpha))


def elu(x, alpha=1.0):
    return _apply("elu", _unary("elu", x), V.as_real("elu", "alpha", alpha))


def sigmoid(x):
    return _apply("sigmoid", _unary("sigmoid", x))


def tanh(x):
    return _apply("tanh", _unary("tanh", x))


def softplus(x):
    """log(1 + exp(x)), computed stably as max(x, 0) + log1p(exp(-|x|))."""
    return _apply("softplus", _unary("softplus", x))


def step(x):
    """(x > 0) in the dtype of x."""
    return _apply("step", _unary("step", x))


def identity(x):
    """A copy of x."""
    return _apply("identity", _unary("identity", x))


def relu_backward(dy, x):
    return _apply("relu_backward", *_binary("relu_backward", "dy", dy, "x", x))


def leaky_relu_backward(dy, x, alpha=0.01):
    op = "leaky_relu_backward"
    return _apply(op, *_binary(op, "dy", dy, "x", x), V.as_real(op, "alpha", alpha))


def elu_backward(dy, x, alpha=1.0):
    op = "elu_backward"
    return _apply(op, *_binary(op, "dy", dy, "x", x), V.as_real(op, "alpha", alpha))


def softplus_backward(dy, x):
    return _apply("softplus_backward", *_binary("softplus_backward", "dy", dy, "x", x))


def sigmoid_backward(dy, y):
    """dy * y * (1 - y), y being the output of sigmoid."""
    return _apply("sigmoid_backward", *_binary("sigmoid_backward", "dy", dy, "y", y))


def tanh_backward(dy, y):
    """dy * (1 - y**2), y being the output of tanh."""
    return _apply("tanh_backward", *_binary("tanh_backward", "dy", dy, "y", y))


def identity_backward(dy):
    return _apply("identity", _unary("identity_backward", dy))


_NEEDS_Y = ("sigmoid", "tanh")


def activation(x, name, alpha=None):
    """The activation called ``name`` (one of ACTIVATIONS, or None for identity)."""
    op = "activation"
    act = V.activation_name(op, name)
    alpha = V.activation_alpha(op, act, alpha)
    if act is None:
        return identity(x)
    if act in V.DEFAULT_ALPHA:
        return globals()[act](x, alpha)
    return globals()[act](x)


def activation_backward(dy, name, x=None, y=None, alpha=None):
    """Backward of activation(x, name): relu, leaky_relu, elu and softplus need x;
    sigmoid and tanh need y (or x, from which y is recomputed)."""
    op = "activation_backward"
    act = V.activation_name(op, name)
    alpha = V.activation_alpha(op, act, alpha)
    if act is None:
        return identity_backward(dy)
    if act in _NEEDS_Y:
        if y is None:
            if x is None:
                raise ValueError(f"{op}: {act!r} needs y (the forward output) or x")
            y = globals()[act](x)
        return globals()[act + "_backward"](dy, y)
    if x is None:
        raise ValueError(f"{op}: {act!r} needs x (the forward input)")
    if act in V.DEFAULT_ALPHA:
        return globals()[act + "_backward"](dy, x, alpha)
    return globals()[act + "_backward"](dy, x)


# ---------------------------------------------------------------------------
# Convolution

def _check_image(op, name, x):
    V.check_ndim(op, name, x, 4, " (N, C, H, W)")
    V.check_nonempty_dims(op, name, x)


def _conv_geometry(op, x_shape, filter_hw, stride, pad, itemsize, what="filter"):
    stride = V.as_pair(op, "stride", stride, 1)
    pad = V.as_pair(op, "pad", pad, 0)
    (oh, ow), stride = V.conv_output_size(op, x_shape[2:], filter_hw, stride, pad, what)
    padded = (x_shape[0], x_shape[1], x_shape[2] + 2 * pad[0], x_shape[3] + 2 * pad[1])
    V.check_geometry_fits(op, *x_shape, *filter_hw, *pad, *padded[2:])
    # The reference pads a copy of the batch (the native direct path, of an image): a pad as
    # large as the stride leaves a tiny output and a padded input that may not fit in memory.
    V.check_size(op, "the padded input", padded, itemsize)
    return stride, pad, oh, ow


def im2col(x, filter_h, filter_w, stride=1, pad=0):
    """(N, C, H, W) -> (N*oh*ow, C*filter_h*filter_w), the layout of the book's common/util.py."""
    op = "im2col"
    dtype, arrs = V.float_arrays(op, x=x)
    x = arrs["x"]
    _check_image(op, "x", x)
    fh = V.as_int(op, "filter_h", filter_h, minimum=1)
    fw = V.as_int(op, "filter_w", filter_w, minimum=1)
    stride, pad, oh, ow = _conv_geometry(op, x.shape, (fh, fw), stride, pad, dtype.itemsize)
    n, c = x.shape[:2]
    V.check_size(op, "the column matrix", (n * oh * ow, c * fh * fw), dtype.itemsize)
    return _backend().im2col(x, fh, fw, stride, pad)


def col2im(col, x_shape, filter_h, filter_w, stride=1, pad=0):
    """Inverse layout of im2col, summing overlapping entries, -> array of shape x_shape."""
    op = "col2im"
    dtype, arrs = V.float_arrays(op, col=col)
    col = arrs["col"]
    x_shape = V.x_shape4(op, x_shape)
    fh = V.as_int(op, "filter_h", filter_h, minimum=1)
    fw = V.as_int(op, "filter_w", filter_w, minimum=1)
    stride, pad, oh, ow = _conv_geometry(op, x_shape, (fh, fw), stride, pad, dtype.itemsize)
    n, c = x_shape[:2]
    want = (n * oh * ow, c * fh * fw)
    if col.shape != want:
        raise ValueError(f"{op}: expected col of shape {want} for x_shape {x_shape}, filter ({fh}, {fw}), "
                         f"stride {stride}, pad {pad}; got {col.shape}")
    V.check_size(op, "the output", x_shape, dtype.itemsize)
    return _backend().col2im(col, x_shape, fh, fw, stride, pad)


def _check_conv(op, x, W, b, stride, pad):
    _check_image(op, "x", x)
    V.check_ndim(op, "W", W, 4, " (F, C, FH, FW)")
    V.check_nonempty_dims(op, "W", W, first_dim=0)
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: x has {x.shape[1]} channels (shape {x.shape}) but W expects "
                         f"{W.shape[1]} (shape {W.shape})")
    if b is not None and b.shape != (W.shape[0],):
        raise ValueError(f"{op}: expected b of shape ({W.shape[0]},) for W {W.shape}, got {b.shape}")
    return _conv_geometry(op, x.shape, W.shape[2:], stride, pad, x.dtype.itemsize)


def conv2d(x, W, b=None, stride=1, pad=0, activation=None, alpha=None):
    """act(conv(x, W) + b): x (N, C, H, W), W (F, C, FH, FW), b (F,) -> (N, F, oh, ow)."""
    _, x, W, b, stride, pad, act, alpha, _ = _conv_forward_args("conv2d", x, W, b, stride, pad, activation, alpha,
                                                                "the output")
    return _backend().conv2d(x, W, b, stride, pad, act, alpha)


def _conv_forward_args(op, x, W, b, stride, pad, activation, alpha, output="the convolution's output"):
    """The checked arguments of a convolution forward: (dtype, x, W, b, stride, pad,
    activation, alpha, the convolution's output shape)."""
    dtype, arrs = V.float_arrays(op, optional=("b",), x=x, W=W, b=b)
    x, W, b = arrs["x"], arrs["W"], arrs["b"]
    stride, pad, oh, ow = _check_conv(op, x, W, b, stride, pad)
    act = V.activation_name(op, activation)
    alpha = V.activation_alpha(op, act, alpha, fused=True)
    out_shape = (x.shape[0], W.shape[0], oh, ow)
    V.check_size(op, output, out_shape, dtype.itemsize)
    V.check_size(op, "the column matrix", (x.shape[0] * oh * ow, math.prod(W.shape[1:])), dtype.itemsize)
    return dtype, x, W, b, stride, pad, act, alpha, out_shape


def conv2d_backward(dy, x, W, stride=1, pad=0, need_dx=True):
    """(dx or None, dW, db); dy is the gradient of the pre-activation output (N, F, oh, ow)."""
    op = "conv2d_backward"
    dtype, arrs = V.float_arrays(op, dy=dy, x=x, W=W)
    dy, x, W = arrs["dy"], arrs["x"], arrs["W"]
    stride, pad, oh, ow = _check_conv(op, x, W, None, stride, pad)
    want = (x.shape[0], W.shape[0], oh, ow)
    if dy.shape != want:
        raise ValueError(f"{op}: expected dy of shape {want} for x {x.shape}, W {W.shape}, "
                         f"stride {stride}, pad {pad}; got {dy.shape}")
    V.check_size(op, "the column matrix", (x.shape[0] * oh * ow, math.prod(W.shape[1:])), dtype.itemsize)
    return _backend().conv2d_backward(dy, x, W, stride, pad, V.as_flag(op, "need_dx", need_dx))


# ---------------------------------------------------------------------------
# Pooling

def _pool_geometry(op, x_shape, pool_h, pool_w, stride, pad, itemsize):
    pool, stride, pad = V.pool_params(op, pool_h, pool_w, stride, pad)
    (oh, ow), stride = V.conv_output_size(op, x_shape[2:], pool, stride, pad, what="pool window")
    V.check_geometry_fits(op, *x_shape, *pool, *pad, x_shape[2] + 2 * pad[0], x_shape[3] + 2 * pad[1])
    # The reference pads a copy of the input, so both backends refuse a padding it cannot hold.
    V.check_size(op, "the padded input", (x_shape[0], x_shape[1], x_shape[2] + 2 * pad[0],
                                          x_shape[3] + 2 * pad[1]), itemsize)
    return pool, stride, pad, (x_shape[0], x_shape[1], oh, ow)


def max_pool2d(x, pool_h, pool_w=None, stride=None, pad=0):
    """(y, argmax): the window maxima (padding never wins) and their index h*W + w in each
    (n, c) plane of x, int64; ties go to the first maximum, a NaN wins."""
    op = "max_pool2d"
    dtype, arrs = V.float_arrays(op, x=x)
    x = arrs["x"]
    _check_image(op, "x", x)
    (ph, pw), stride, pad, out_shape = _pool_geometry(op, x.shape, pool_h, pool_w, stride, pad, dtype.itemsize)
    V.check_count(op, "the output's windows", out_shape + (ph * pw,))   # visited, never stored
    return _backend().max_pool2d(x, ph, pw, stride, pad)


def conv2d_max_pool2d(x, W, b=None, stride=1, pad=0, activation=None, alpha=None, pool_h=2, pool_w=None,
                      pool_stride=None, pool_pad=0):
    """(y, argmax) = max_pool2d(conv2d(x, W, b, stride, pad, activation, alpha), pool_h, pool_w,
    pool_stride, pool_pad), the same numbers and indices (argmax indexes the convolution's
    output planes, for conv2d_max_pool2d_backward or max_pool2d_backward), with argmax as
    int32, not int64: half the memory and traffic of the state a training step keeps.
    Natively each output plane is pooled while it is in cache (on the direct path, at any
    stride; where Winograd takes it, 2x2 windows of stride 2 from each block's output rows),
    so the full output is never written."""
    op = "conv2d_max_pool2d"
    dtype, x, W, b, stride, pad, act, alpha, conv_shape = _conv_forward_args(op, x, W, b, stride, pad, activation,
                                                                            alpha)
    (ph, pw), pool_stride, pool_pad, out_shape = _pool_geometry(op, conv_shape, pool_h, pool_w, pool_stride,
                                                                pool_pad, dtype.itemsize)
    _check_int32_plane(op, conv_shape)
    V.check_count(op, "the output's windows", out_shape + (ph * pw,))   # visited, never stored
    return _backend().conv2d_max_pool2d(x, W, b, stride, pad, act, alpha, ph, pw, pool_stride, pool_pad)


def conv2d_max_pool2d_backward(dy, argmax, y, x, W, stride=1, pad=0, activation=None, alpha=None, pool_h=2,
                               pool_w=None, pool_stride=None, pool_pad=0, need_dx=True):
    """(dx or None, dW, db) of conv2d_max_pool2d, from dy, the gradient of its pooled output
    y, and its argmax; the same as activation_backward, max_pool2d_backward and
    conv2d_backward in turn, with the activation's derivative taken at the pooled
    positions from y (exact: each window passes its gradient to its maximum only).
    Natively each image's un-pooled gradient stays in cache; without dx the SIMD paths
    sum the weight gradient over the pooled values only (equal to float tolerance)."""
    op = "conv2d_max_pool2d_backward"
    act = V.activation_name(op, activation)
    alpha = V.activation_alpha(op, act, alpha, fused=True)
    dtype, arrs = V.float_arrays(op, optional=("y",), dy=dy, x=x, W=W, y=y if act is not None else None)
    dy, x, W, y = arrs["dy"], arrs["x"], arrs["W"], arrs["y"]
    if act is not None and y is None:
        raise ValueError(f"{op}: activation {act!r} needs y, the pooled output of the forward pass")
    stride, pad, oh, ow = _check_conv(op, x, W, None, stride, pad)
    conv_shape = (x.shape[0], W.shape[0], oh, ow)
    V.check_size(op, "the convolution's gradient", conv_shape, dtype.itemsize)
    V.check_size(op, "the column matrix", (x.shape[0] * oh * ow, math.prod(W.shape[1:])), dtype.itemsize)
    (ph, pw), pool_stride, pool_pad, out_shape = _pool_geometry(op, conv_shape, pool_h, pool_w, pool_stride,
                                                                pool_pad, dtype.itemsize)
    for name, arr in (("dy", dy), ("y", y)):
        if arr is not None and arr.shape != out_shape:
            raise ValueError(f"{op}: expected {name} of shape {out_shape} (the pooled output) for x {x.shape}, "
                             f"W {W.shape}, pool ({ph}, {pw}); got {arr.shape}")
    _check_int32_plane(op, conv_shape)
    argmax = _check_argmax(op, argmax, out_shape, conv_shape, np.int32)
    return _backend().conv2d_max_pool2d_backward(dy, argmax, y, x, W, stride, pad, act, alpha, V.as_flag(op, "need_dx", need_dx))


def max_pool2d_backward(dy, argmax, x_shape, pool_h, pool_w=None, stride=None, pad=0):
    op = "max_pool2d_backward"
    dtype, arrs = V.float_arrays(op, dy=dy)
    dy = arrs["dy"]
    x_shape = V.x_shape4(op, x_shape)
    (ph, pw), stride, pad, out_shape = _pool_geometry(op, x_shape, pool_h, pool_w, stride, pad, dtype.itemsize)
    if dy.shape != out_shape:
        raise ValueError(f"{op}: expected dy of shape {out_shape} for x_shape {x_shape}, pool ({ph}, {pw}), "
                         f"stride {stride}, pad {pad}; got {dy.shape}")
    argmax = _check_argmax(op, argmax, out_shape, x_shape)
    V.check_size(op, "the output", x_shape, dtype.itemsize)
    return _backend().max_pool2d_backward(dy, argmax, x_shape, ph, pw, stride, pad)


def _check_int32_plane(op, conv_shape):
    """The fused convolution + pooling's int32 argmax can index its output planes."""
    plane = conv_shape[2] * conv_shape[3]
    if plane > 2**31 - 1:
        raise ValueError(f"{op}: its int32 argmax indexes planes of at most 2**31 - 1 elements; the convolution's "
                         f"output planes {conv_shape[2:]} have {plane} (use conv2d, then max_pool2d)")


def _check_argmax(op, argmax, out_shape, x_shape, dtype=np.int64):
    """argmax as C-contiguous `dtype`, after checking it indexes the (H, W) planes of x_shape."""
    argmax = V.as_array(op, "argmax", argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected argmax to be an integer array (from max_pool2d), got dtype {argmax.dtype}")
    if argmax.shape != out_shape:
        raise ValueError(f"{op}: expected argmax of shape {out_shape}, got {argmax.shape}")
    plane = x_shape[2] * x_shape[3]
    # One pass over argmax: seen as unsigned, a negative index is huge (two passes of min
    # and max cost ~10% of the backward on a (100,30,12,12) argmax).
    unsigned = argmax.view(argmax.dtype.str.replace("i", "u")) if argmax.dtype.kind == "i" else argmax
    if argmax.size and unsigned.max() >= plane:
        raise ValueError(f"{op}: argmax values must lie in [0, {plane}) for x_shape {x_shape}, "
                         f"got values in [{argmax.min()}, {argmax.max()}]")
    return np.ascontiguousarray(argmax, dtype=dtype)


def avg_pool2d(x, pool_h, pool_w=None, stride=None, pad=0):
    """Window means; padding counts as zeros and the divisor is pool_h*pool_w."""
    op = "avg_pool2d"
    dtype, arrs = V.float_arrays(op, x=x)
    x = arrs["x"]
    _check_image(op, "x", x)
    (ph, pw), stride, pad, out_shape = _pool_geometry(op, x.shape, pool_h, pool_w, stride, pad, dtype.itemsize)
    V.check_size(op, "the output", out_shape, dtype.itemsize)
    return _backend().avg_pool2d(x, ph, pw, stride, pad)


def avg_pool2d_backward(dy, x_shape, pool_h, pool_w=None, stride=None, pad=0):
    op = "avg_pool2d_backward"
    dtype, arrs = V.float_arrays(op, dy=dy)
    dy = arrs["dy"]
    x_shape = V.x_shape4(op, x_shape)
    (ph, pw), stride, pad, out_shape = _pool_geometry(op, x_shape, pool_h, pool_w, stride, pad, dtype.itemsize)
    if dy.shape != out_shape:
        raise ValueError(f"{op}: expected dy of shape {out_shape} for x_shape {x_shape}, pool ({ph}, {pw}), "
                         f"stride {stride}, pad {pad}; got {dy.shape}")
    V.check_size(op, "the output", x_shape, dtype.itemsize)
    return _backend().avg_pool2d_backward(dy, x_shape, ph, pw, stride, pad)


# ---------------------------------------------------------------------------
# Softmax and losses

def _along_last_axis(op, x, axis, kernel_name):
    dtype, arrs = V.float_arrays(op, x=x)
    x = arrs["x"]
    if x.ndim == 0:
        raise ValueError(f"{op}: expected an array of at least 1 dimension, got a scalar")
    ax = V.as_int(op, "axis", axis)
    if not -x.ndim <= ax < x.ndim:
        raise ValueError(f"{op}: axis {ax} is out of range for an array of shape {x.shape}")
    if x.size == 0:
        return np.empty(x.shape, dtype=dtype)
    if ax == -1 or ax == x.ndim - 1:   # rows already: np.moveaxis costs more than a small softmax
        return getattr(_backend(), kernel_name)(x.reshape(-1, x.shape[-1])).reshape(x.shape)
    moved = np.moveaxis(x, ax, -1)
    rows = np.ascontiguousarray(moved).reshape(-1, moved.shape[-1])
    out = getattr(_backend(), kernel_name)(rows).reshape(moved.shape)
    return np.ascontiguousarray(np.moveaxis(out, -1, ax))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, stable for any finite logits."""
    return _along_last_axis("softmax", x, axis, "softmax")


def log_softmax(x, axis=-1):
    return _along_last_axis("log_softmax", x, axis, "log_softmax")


def softmax_cross_entropy(logits, target):
    """(mean cross-entropy loss as a Python float, dlogits). target: integer labels (N,)
    in [0, K) or float rows (N, K) (one-hot or probabilities; the loss is -sum(t log p)
    over a row and dlogits its gradient, (p * sum(t) - t) / N, for any rows)."""
    op = "softmax_cross_entropy"
    logits = V.as_float_array(op, "logits", logits)
    if logits.ndim != 2:
        V.check_ndim(op, "logits", logits, 2, " (N, K)")
    n, k = logits.shape
    if k < 1:
        raise ValueError(f"{op}: expected at least one class, got logits of shape {logits.shape}")
    target = V.as_array(op, "target", target)
    if target.ndim == 1:
        labels = V.int_labels(op, target, n, k)
        return _backend().softmax_cross_entropy(np.ascontiguousarray(logits), labels)
    if target.ndim != 2:
        raise ValueError(f"{op}: expected target of shape ({n},) (labels) or {logits.shape} (rows), "
                         f"got {target.shape}")
    if target.dtype.kind in "iub":
        raise TypeError(f"{op}: expected integer labels of shape ({n},) or float32/float64 rows of shape "
                        f"{logits.shape}, got {target.dtype} target of shape {target.shape}")
    dtype, arrs = V.float_arrays(op, logits=logits, target=target)
    V.check_same_shape(op, "logits", arrs["logits"], "target", arrs["target"])
    return _backend().softmax_cross_entropy(arrs["logits"], arrs["target"])


def mean_squared_error(y, t):
    """(mean((y - t)**2) as a Python float, its gradient 2*(y - t)/y.size)."""
    return _apply("mean_squared_error", *_binary("mean_squared_error", "y", y, "t", t))


def sigmoid_binary_cross_entropy(logits, t):
    """(mean binary cross-entropy of sigmoid(logits) against t, (sigmoid(logits) - t)/size)."""
    return _apply("sigmoid_binary_cross_entropy", *_binary("sigmoid_binary_cross_entropy",
                                                          "logits", logits, "t", t))


# ---------------------------------------------------------------------------
# Optimizer updates (in place)

def _overlap(a, b):
    """Whether a and b share an element (bounds alone would refuse interleaved views)."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return np.shares_memory(a, b, max_work=1 << 20)
    except RuntimeError:  # numpy.exceptions.TooHardError (numpy.TooHardError before 1.25)
        return True


def _update(op, kernel, p, g, states, scalars):
    p = V.writeable_float_array(op, "p", p)
    g = V.as_float_array(op, "g", g)
    if g.shape != p.shape:
        raise ValueError(f"{op}: g of shape {g.shape} does not match p of shape {p.shape}")
    names = ["p"] + [name for name, _ in states]
    states = [V.writeable_float_array(op, name, s, p.shape) for name, s in states]
    scalars = [V.as_real(op, name, s) for name, s in scalars]
    written = [p, *states]
    for i, j in itertools.combinations(range(len(written)), 2):
        if _overlap(written[i], written[j]):  # each is read and written: no order makes one answer
            raise ValueError(f"{op}: {names[i]} and {names[j]} share memory; each needs its own array")
    if any(np.may_share_memory(g, a) for a in (p, *states)):
        g = g.copy()  # the kernel writes p as it reads g: NumPy's p -= lr * g reads all of g first
    arrays = [p, g, *states]
    if p.ndim == 0:  # 0-d arrays travel as (1,) views, still updated in place
        arrays = [a.reshape(1) for a in arrays]
    # The native kernel needs one dtype and C-contiguous memory; any other layout is
    # updated in place by the NumPy reference (which works on views and mixed dtypes).
    fast = all(a.flags.c_contiguous and a.dtype == p.dtype for a in arrays)
    backend = _backend() if fast else _reference
    getattr(backend, kernel)(*arrays, *scalars)


def sgd_update(p, g, lr, weight_decay=0.0, l1=0.0):
    """p -= lr * g (g plus weight_decay*p plus l1*sign(p)), in place."""
    _update("sgd_update", "sgd_update", p, g, [],
            [("lr", lr), ("weight_decay", weight_decay), ("l1", l1)])


def momentum_update(p, g, v, lr, momentum=0.9, weight_decay=0.0, l1=0.0):
    """v = momentum*v - lr*g; p += v, in place."""
    _update("momentum_update", "momentum_update", p, g, [("v", v)],
            [("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay), ("l1", l1)])


def nesterov_update(p, g, v, lr, momentum=0.9, weight_decay=0.0, l1=0.0):
    """v = momentum*v - lr*g; p += momentum**2*v - (1 + momentum)*lr*g, in place."""
    _update("nesterov_update", "nesterov_update", p, g, [("v", v)],
            [("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay), ("l1", l1)])


def adagrad_update(p, g, h, lr, eps=1e-7, weight_decay=0.0, l1=0.0):
    """h += g*g; p -= lr*g/(sqrt(h) + eps), in place."""
    _update("adagrad_update", "adagrad_update", p, g, [("h", h)],
            [("lr", lr), ("eps", eps), ("weight_decay", weight_decay), ("l1", l1)])


def rmsprop_update(p, g, h, lr, decay=0.99, eps=1e-7, weight_decay=0.0, l1=0.0):
    """h = decay*h + (1 - decay)*g*g; p -= lr*g/(sqrt(h) + eps), in place."""
    _update("rmsprop_update", "rmsprop_update", p, g, [("h", h)],
            [("lr", lr), ("decay", decay), ("eps", eps), ("weight_decay", weight_decay), ("l1", l1)])


def adam_update(p, g, m, v, lr_t, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0, l1=0.0):
    """m += (1-beta1)*(g-m); v += (1-beta2)*(g*g-v); p -= lr_t*m/(sqrt(v)+eps), in place.
    lr_t is the bias-corrected step the caller computes."""
    _update("adam_update", "adam_update", p, g, [("m", m), ("v", v)],
            [("lr_t", lr_t), ("beta1", beta1), ("beta2", beta2), ("eps", eps),
             ("weight_decay", weight_decay), ("l1", l1)])


# ---------------------------------------------------------------------------
# Batch normalisation

def _features_view(x, per_channel):
    """x as (N, C, S), the layout of the backends: per feature (N, D, 1), or per
    channel of NCHW (N, C, H*W). A view, never a copy (x is C-contiguous)."""
    if per_channel:
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w)
    return x.reshape(x.shape[0], math.prod(x.shape[1:]), 1)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, momentum=0.9, eps=1e-7, train=True,
                       per_channel=False):
    """(out, cache). x is (N, D) or (N, C, H, W). 4-D input is normalised per C*H*W feature
    as the book's BatchNormalization does, or per channel C with per_channel=True.
    gamma, beta, running_mean and running_var have shape (D,) (D = C*H*W, or C).
    In training the batch statistics normalise and the running ones are updated in place
    (running = momentum*running + (1-momentum)*batch); otherwise the running ones normalise.
    The cache keeps x: x must not change before batch_norm_backward."""
    op = "batch_norm_forward"
    dtype, arrs = V.float_arrays(op, x=x, gamma=gamma, beta=beta)
    x, gamma, beta = arrs["x"], arrs["gamma"], arrs["beta"]
    per_channel = V.as_flag(op, "per_channel", per_channel)
    V.check_ndim(op, "x", x, (2, 4))
    V.check_nonempty_dims(op, "x", x)
    x3 = _features_view(x, per_channel and x.ndim == 4)
    d = x3.shape[1]
    for name, arr in (("gamma", gamma), ("beta", beta)):
        if arr.shape != (d,):
            raise ValueError(f"{op}: expected {name} of shape ({d},) for x {x.shape}"
                             f"{' per channel' if per_channel and x.ndim == 4 else ''}, got {arr.shape}")
    running_mean = V.writeable_float_array(op, "running_mean", running_mean, (d,))
    running_var = V.writeable_float_array(op, "running_var", running_var, (d,))
    momentum = V.as_real(op, "momentum", momentum)
    eps = V.as_real(op, "eps", eps)
    if not eps >= 0:  # NaN too
        raise ValueError(f"{op}: expected eps >= 0, got {eps}")
    train = V.as_flag(op, "train", train)
    if train and x.shape[0] == 0:
        raise ValueError(f"{op}: training needs at least one sample to compute batch statistics, "
                         f"got x of shape {x.shape}")
    if train:  # the running statistics are updated in place, and x is kept for the backward
        arrays = {"running_mean": running_mean, "running_var": running_var, "x": x, "gamma": gamma, "beta": beta}
        for name, other in itertools.combinations(arrays, 2):
            if name.startswith("running_") and _overlap(arrays[name], arrays[other]):
                raise ValueError(f"{op}: {name} and {other} share memory; each needs its own array")
    if train:
        out3, mean, var, inv_std = _backend().batch_norm_forward(x3, gamma, beta, None, None, eps)
        with np.errstate(invalid="ignore", over="ignore"):  # inf statistics (inf inputs) propagate quietly
            running_mean *= momentum
            running_mean += (1 - momentum) * mean
            running_var *= momentum
            running_var += (1 - momentum) * var
    else:
        mean = np.ascontiguousarray(running_mean, dtype=dtype)
        var = np.ascontiguousarray(running_var, dtype=dtype)
        out3, mean, var, inv_std = _backend().batch_norm_forward(x3, gamma, beta, mean, var, eps)
    cache = {"x_shape": x.shape, "x3": x3, "gamma": gamma, "mean": mean, "inv_std": inv_std, "train": train}
    return out3.reshape(x.shape), cache


_BATCH_NORM_CACHE = ("x_shape", "x3", "gamma", "mean", "inv_std", "train")


def batch_norm_backward(dout, cache):
    """(dx, dgamma, dbeta) from the gradient of the output and the cache of batch_norm_forward."""
    op = "batch_norm_backward"
    if not isinstance(cache, dict) or any(key not in cache for key in _BATCH_NORM_CACHE):
        raise TypeError(f"{op}: expected the cache returned by batch_norm_forward, got {type(cache).__name__}")
    dout = V.as_float_array(op, "dout", dout)
    x_shape, x3, gamma, mean, inv_std, train = _checked_batch_norm_cache(op, cache)
    if dout.shape != x_shape:
        raise ValueError(f"{op}: expected dout of shape {x_shape} (the forward input's), got {dout.shape}")
    dtype = np.result_type(dout.dtype, x3.dtype)
    if dtype != x3.dtype:
        x3, gamma, mean, inv_std = (a.astype(dtype) for a in (x3, gamma, mean, inv_std))
    dy3 = np.ascontiguousarray(dout, dtype=dtype).reshape(x3.shape)
    dx3, dgamma, dbeta = _backend().batch_norm_backward(dy3, x3, gamma, mean, inv_std, train)
    return dx3.reshape(x_shape), dgamma, dbeta


def _checked_batch_norm_cache(op, cache):
    """The cache's entries, checked against each other as batch_norm_forward made them: the
    kernel reads gamma, mean and inv_std for every feature of x3, so an edited cache must
    not reach it."""
    x_shape, x3, train = cache["x_shape"], cache["x3"], cache["train"]
    if not (isinstance(x3, np.ndarray) and x3.ndim == 3 and x3.dtype in (np.float32, np.float64)):
        raise TypeError(f"{op}: the cache's x3 is not the (N, D, S) float array batch_norm_forward stored, "
                        f"got {V.describe(x3)}")
    if not (isinstance(x_shape, tuple) and all(isinstance(n, int) for n in x_shape)
            and math.prod(x_shape) == x3.size and x_shape[:1] == x3.shape[:1]):
        raise ValueError(f"{op}: the cache's x_shape {x_shape!r} does not match its x3 of shape {x3.shape}")
    d = x3.shape[1]
    arrays = []
    for name in ("gamma", "mean", "inv_std"):
        arr = cache[name]
        if not (isinstance(arr, np.ndarray) and arr.dtype == x3.dtype):
            raise TypeError(f"{op}: expected the cache's {name} to be a {x3.dtype} array like its x3, "
                            f"got {V.describe(arr)}")
        if arr.shape != (d,):
            raise ValueError(f"{op}: expected the cache's {name} of shape ({d},) for its x3 of shape {x3.shape}, "
                             f"got {arr.shape}")
        arrays.append(np.ascontiguousarray(arr))
    return (x_shape, np.ascontiguousarray(x3), *arrays, V.as_flag(op, "the cache's train", train))
