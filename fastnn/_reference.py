"""The NumPy reference backend: the definition of every op's math.

Signatures and guarantees are those of docs/BACKEND.md: fastnn.ops has already
validated and normalised the arguments (C-contiguous float32/float64 arrays of
one dtype, (h, w) tuples, consistent shapes), so nothing here checks them.
Everything is vectorised NumPy computed in the input dtype, and stable for
large |x| (no overflow warnings). NaN and Inf inputs propagate without warnings.
"""
import functools
import threading

import numpy as np


def _quiet(func):
    # inf - inf and 0 * inf from NaN/Inf inputs legitimately give NaN, and inputs near the
    # float range give inf (3e38 - (-3e38) in float32): that is propagation, as in the C
    # kernels, not a numerical problem worth a RuntimeWarning. Every op is wrapped (below).
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)
    return wrapper


# ---------------------------------------------------------------------------
# Activations

def relu(x):
    return np.maximum(x, x.dtype.type(0))


def leaky_relu(x, alpha):
    return np.where(x > 0, x, x * x.dtype.type(alpha))


def elu(x, alpha):
    # expm1 of min(x, 0): never overflows, and exact near 0.
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0)))


def sigmoid(x):
    # The classic 1 / (1 + exp(-x)), on one temporary. Where exp(-x) overflows (x below
    # -log(max float): -88.7 in float32) that gives 0 for a tiny or subnormal value: those
    # few are exp(x), since 1 + exp(x) is 1 there. (The overflow-free exp(min(x, 0)) /
    # (1 + exp(-|x|)) took 1.6-2x as long.)
    y = np.negative(x, out=np.empty_like(x))   # an array for out= below, 0-d ones too
    with np.errstate(over="ignore"):
        np.exp(y, out=y)
    y += 1
    np.reciprocal(y, out=y)
    tiny = x < -_LOG_MAX[x.dtype]
    if tiny.any():
        y[tiny] = np.exp(x[tiny])
    return y


_LOG_MAX = {np.dtype(t): float(np.log(np.finfo(t).max)) for t in (np.float32, np.float64)}


def tanh(x):
    return np.tanh(x)


def softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def step(x):
    return (x > 0).astype(x.dtype)


def identity(x):
    return x.copy()


def relu_backward(dy, x):
    # dy where x > 0, else +0: dy's bits AND a mask of all ones or all zeros (np.where on
    # random signs took 7 times as long); NaN and inf in dy pass only where x > 0
    ints = np.dtype(f"i{dy.dtype.itemsize}")
    mask = (x > 0).astype(ints)
    np.negative(mask, out=mask)
    return np.bitwise_and(dy.view(ints), mask).view(dy.dtype)


def leaky_relu_backward(dy, x, alpha):
    return np.where(x > 0, dy, dy * dy.dtype.type(alpha))


def elu_backward(dy, x, alpha):
    return np.where(x > 0, dy, dy * (dy.dtype.type(alpha) * np.exp(np.minimum(x, 0))))


def softplus_backward(dy, x):
    return dy * sigmoid(x)


def sigmoid_backward(dy, y):
    return dy * (y * (1 - y))


def tanh_backward(dy, y):
    return dy * (1 - y * y)


_FORWARD = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softplus": softplus}


def _activate(z, activation, alpha):
    """act(z) for a fused epilogue (activation already normalised: None = identity)."""
    if activation is None or activation == "identity":
        return z
    if activation == "leaky_relu":
        return leaky_relu(z, alpha)
    if activation == "elu":
        return elu(z, alpha)
    return _FORWARD[activation](z)


def _activation_grad_from_y(activation, y, alpha):
    """d act / d z written in terms of the output y = act(z), as csrc/activation.h
    does (alpha >= 0 for leaky_relu and elu, which fastnn.ops enforces)."""
    t = y.dtype.type
    if activation == "relu":
        return (y > 0).astype(y.dtype)
    if activation == "leaky_relu":
        return np.where(y > 0, t(1), t(alpha))
    if activation == "elu":
        return np.where(y > 0, t(1), y + t(alpha))
    if activation == "sigmoid":
        return y * (1 - y)
    if activation == "tanh":
        return 1 - y * y
    if activation == "softplus":
        return -np.expm1(-y)
    raise AssertionError(activation)


# ---------------------------------------------------------------------------
# Dense layers

# matmul's operands and linear's W may arrive in any layout the native GEMM reads in
# place (docs/BACKEND.md); NumPy's BLAS takes other kernels for a transposed view, so
# C-order copies keep the promise that the layout never changes the bits.
def matmul(a, b):
    return np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))


def gemm(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """c = alpha * op(a) @ op(b) + beta * c in place (a new array for c None), with BLAS's
    zeros: beta = 0 never reads c, alpha = 0 or an empty depth never forms the product."""
    op_a = np.ascontiguousarray(a.T if trans_a else a)
    op_b = np.ascontiguousarray(b.T if trans_b else b)
    if c is None:
        c = np.empty((op_a.shape[0], op_b.shape[1]), a.dtype)
        beta = 0.0
    product = None
    if alpha != 0 and op_a.shape[1] > 0:
        product = np.matmul(op_a, op_b)
        if alpha != 1:
            product *= alpha
    if beta == 0:
        c[...] = 0 if product is None else product
    else:
        c *= beta
        if product is not None:
            c += product
    return c


def linear(x, W, b, activation, alpha):
    y = x @ np.ascontiguousarray(W)
    if b is not None:
        y += b
    return _activate(y, activation, alpha)


def linear_backward(dy, x, W, activation, alpha, y):
    if activation is not None and activation != "identity":
        dy = dy * _activation_grad_from_y(activation, y, alpha)
    dx = dy @ np.ascontiguousarray(W).T
    dW = x.T @ dy
    db = dy.sum(axis=0)
    return dx, dW, db


# ---------------------------------------------------------------------------
# Convolution

def _pad_hw(x, pad, value=0.0):
    ph, pw = pad
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant", constant_values=value)


def _out_hw(h, w, fh, fw, stride, pad):
    return (h + 2 * pad[0] - fh) // stride[0] + 1, (w + 2 * pad[1] - fw) // stride[1] + 1


def im2col(x, fh, fw, stride, pad):
    n, c, h, w = x.shape
    (sh, sw) = stride
    oh, ow = _out_hw(h, w, fh, fw, stride, pad)
    xp = _pad_hw(x, pad)
    # Written straight into the layout of the book's common/util.py, rows
    # (n, oh, ow) and columns (c, fh, fw): one strided copy per filter offset.
    col = np.empty((n, oh, ow, c, fh, fw), dtype=x.dtype)
    for i in range(fh):
        for j in range(fw):
            col[:, :, :, :, i, j] = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw].transpose(0, 2, 3, 1)
    return col.reshape(n * oh * ow, c * fh * fw)


def col2im(col, x_shape, fh, fw, stride, pad):
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, pad
    oh, ow = _out_hw(h, w, fh, fw, stride, pad)
    cols = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * ph + sh - 1, w + 2 * pw + sw - 1), dtype=col.dtype)
    for i in range(fh):
        i_end = i + sh * oh
        for j in range(fw):
            j_end = j + sw * ow
            np.add(img[:, :, i:i_end:sh, j:j_end:sw], cols[:, :, i, j], out=img[:, :, i:i_end:sh, j:j_end:sw])
    return np.ascontiguousarray(img[:, :, ph:ph + h, pw:pw + w])


# The column matrix of this thread's last convolution forward, kept for its backward as the
# book's Convolution keeps self.col: without it the reference built it twice a training step
# (15-22% of conv C's and D's time), slower than the classic im2col code it stands for. It is
# reused only for an x with the same values (compared with a copy taken at the forward), and
# only one is kept, of at most _SAVED_COL_BYTES with the copy, so that inference does not hold
# large ones.
_saved_col = threading.local()
_SAVED_COL_BYTES = 128 << 20


def _conv_col(x, fh, fw, stride, pad, forward):
    key = (x.shape, x.dtype, fh, fw, stride, pad)
    saved = getattr(_saved_col, "entry", None)
    _saved_col.entry = None
    if not forward and saved is not None and saved[0] == key and np.array_equal(saved[1], x):
        return saved[2]
    col = im2col(x, fh, fw, stride, pad)
    if forward and col.nbytes + x.nbytes <= _SAVED_COL_BYTES:
        _saved_col.entry = (key, x.copy(), col)
    return col


def conv2d(x, W, b, stride, pad, activation, alpha):
    n = x.shape[0]
    f, c, fh, fw = W.shape
    oh, ow = _out_hw(x.shape[2], x.shape[3], fh, fw, stride, pad)
    col = _conv_col(x, fh, fw, stride, pad, forward=True)
    out = col @ W.reshape(f, -1).T
    if b is not None:
        out += b
    out = _activate(out, activation, alpha)
    return np.ascontiguousarray(out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2))


def conv2d_backward(dy, x, W, stride, pad, need_dx):
    f, c, fh, fw = W.shape
    dout = dy.transpose(0, 2, 3, 1).reshape(-1, f)
    db = dout.sum(axis=0)
    col = _conv_col(x, fh, fw, stride, pad, forward=False)
    dW = (dout.T @ col).reshape(f, c, fh, fw)
    dx = col2im(dout @ W.reshape(f, -1), x.shape, fh, fw, stride, pad) if need_dx else None
    return dx, dW, db


# ---------------------------------------------------------------------------
# Pooling

def max_pool2d(x, ph, pw, stride, pad):
    n, c, h, w = x.shape
    (sh, sw) = stride
    oh, ow = _out_hw(h, w, ph, pw, stride, pad)
    xp = _pad_hw(x, pad, -np.inf)
    views = [xp[:, :, di:di + sh * oh:sh, dj:dj + sw * ow:sw] for di in range(ph) for dj in range(pw)
             ] if ph * pw <= _SMALL_WINDOW else None
    row_start = (np.arange(oh, dtype=np.int64) * sh - pad[0])[:, None]
    col_start = (np.arange(ow, dtype=np.int64) * sw - pad[1])[None, :]
    if views is None:
        y, k = _window_argmax(xp, ph, pw, stride, oh, ow)
    elif np.isnan(x).any():
        y, k = _window_max_with_nan(views)
    else:
        # The maximum of the window's elements, then the first offset (row-major) that holds
        # it: ties keep the first maximum. (A running maximum whose later elements won by
        # masked copies took 4 times as long.)
        y = np.array(views[0])
        for v in views[1:]:
            np.maximum(v, y, out=y)
        k = np.zeros(y.shape, dtype=np.min_scalar_type(-len(views)))
        for offset in range(len(views) - 1, -1, -1):  # from the last, so the first match stays
            hit = (views[offset] == y).view(np.int8).astype(k.dtype, copy=False)
            k += (k.dtype.type(offset) - k) * hit
        if tuple(pad) == (0, 0):  # every window inside the image: the index from a table of offsets
            offsets = np.array([di * w + dj for di in range(ph) for dj in range(pw)], dtype=np.int64)
            return y, row_start * w + col_start + offsets[k]
    rows = row_start + k // pw
    cols = col_start + k % pw
    # Padding only ties for the maximum when every real element of the window is
    # -inf; the first real element then wins (padding never wins).
    in_padding = (rows < 0) | (rows >= h) | (cols < 0) | (cols >= w)
    if in_padding.any():
        rows = np.where(in_padding, np.maximum(row_start, 0), rows)
        cols = np.where(in_padding, np.maximum(col_start, 0), cols)
    return y, rows * w + cols


# Windows of more elements than this are gathered, a block at a time, and reduced by
# np.argmax: a Python loop over their offsets took seconds for a global pool.
_SMALL_WINDOW = 32
_WINDOW_BLOCK = 1 << 21   # elements of the windows gathered at once


def _window_argmax(xp, ph, pw, stride, oh, ow):
    """(maximum, first offset of it in row-major order) of each window of the padded xp,
    a NaN winning as in np.argmax."""
    n, c = xp.shape[:2]
    planes = xp.reshape((n * c,) + xp.shape[2:])
    windows = np.lib.stride_tricks.sliding_window_view(planes, (ph, pw), axis=(1, 2))[:, ::stride[0], ::stride[1]]
    y = np.empty((n * c, oh, ow), dtype=xp.dtype)
    k = np.empty((n * c, oh, ow), dtype=np.int64)
    block = max(1, _WINDOW_BLOCK // max(1, ow * ph * pw))
    for i in range(oh):
        for p0 in range(0, n * c, block):
            gathered = windows[p0:p0 + block, i].reshape(-1, ow, ph * pw)
            first = gathered.argmax(axis=-1)
            k[p0:p0 + block, i] = first
            y[p0:p0 + block, i] = np.take_along_axis(gathered, first[..., None], axis=-1)[..., 0]
    return y.reshape(n, c, oh, ow), k.reshape(n, c, oh, ow)


def _window_max_with_nan(views):
    """(maximum, first offset of it) over the views, where a NaN wins over any number and
    then stays, as np.argmax: a running maximum that a later element replaces only when
    strictly greater or a NaN."""
    y = np.array(views[0])
    k = np.zeros(y.shape, dtype=np.int64)
    wins = np.empty(y.shape, dtype=bool)
    for offset, v in enumerate(views[1:], 1):
        np.greater(v, y, out=wins)
        wins |= np.isnan(v) & ~np.isnan(y)
        np.copyto(y, v, where=wins)
        np.copyto(k, offset, where=wins)
    return y, k


def conv2d_max_pool2d(x, W, b, stride, pad, activation, alpha, pool_h, pool_w, pool_stride, pool_pad):
    y, argmax = max_pool2d(conv2d(x, W, b, stride, pad, activation, alpha), pool_h, pool_w, pool_stride, pool_pad)
    return y, argmax.astype(np.int32)


def conv2d_max_pool2d_backward(dy, argmax, y, x, W, stride, pad, activation, alpha, need_dx):
    if activation is not None and activation != "identity":
        dy = dy * _activation_grad_from_y(activation, y, alpha)
    f, _, fh, fw = W.shape
    conv_shape = (x.shape[0], f) + _out_hw(x.shape[2], x.shape[3], fh, fw, stride, pad)
    dz = max_pool2d_backward(dy, argmax, conv_shape, None, None, None, None)
    return conv2d_backward(dz, x, W, stride, pad, need_dx)


def max_pool2d_backward(dy, argmax, x_shape, ph, pw, stride, pad):
    n, c, h, w = x_shape
    dx = np.zeros(n * c * h * w, dtype=dy.dtype)
    plane = (np.arange(n * c, dtype=np.int64) * (h * w)).reshape(n, c, 1, 1)
    # Overlapping windows (stride < pool) may route several gradients to one input.
    np.add.at(dx, (argmax + plane).ravel(), dy.ravel())
    return dx.reshape(n, c, h, w)


def avg_pool2d(x, ph, pw, stride, pad):
    n, c, h, w = x.shape
    (sh, sw) = stride
    oh, ow = _out_hw(h, w, ph, pw, stride, pad)
    xp = _pad_hw(x, pad)
    # The window's sum one axis at a time: ph + pw slices, not ph * pw.
    rows = np.zeros((n, c, oh, xp.shape[3]), dtype=x.dtype)
    for i in range(ph):
        rows += xp[:, :, i:i + sh * oh:sh, :]
    total = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for j in range(pw):
        total += rows[:, :, :, j:j + sw * ow:sw]
    return total / x.dtype.type(ph * pw)


def avg_pool2d_backward(dy, x_shape, ph, pw, stride, pad):
    n, c, h, w = x_shape
    (sh, sw), (pad_h, pad_w) = stride, pad
    oh, ow = dy.shape[2], dy.shape[3]
    share = dy / dy.dtype.type(ph * pw)
    # spread along the rows, then the columns: ph + pw slices, not ph * pw
    cols = np.zeros((n, c, oh, w + 2 * pad_w + sw - 1), dtype=dy.dtype)
    for j in range(pw):
        cols[:, :, :, j:j + sw * ow:sw] += share
    dxp = np.zeros((n, c, h + 2 * pad_h + sh - 1, cols.shape[3]), dtype=dy.dtype)
    for i in range(ph):
        dxp[:, :, i:i + sh * oh:sh, :] += cols
    return np.ascontiguousarray(dxp[:, :, pad_h:pad_h + h, pad_w:pad_w + w])


# ---------------------------------------------------------------------------
# Softmax and losses

def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def log_softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def _mean_loss(per_element, count):
    # The loss is a Python float accumulated in float64; an empty batch gives nan.
    if count == 0:
        return float("nan")
    return float(per_element.sum(dtype=np.float64) / count)


def softmax_cross_entropy(logits, target):
    n, k = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    log_s = np.log(s)
    prob = e / s
    if target.ndim == 1:
        rows = np.arange(n)
        per_row = log_s[:, 0] - shifted[rows, target]
        prob[rows, target] -= 1
    else:
        # a class of weight 0 adds nothing, even where its log-probability is -inf
        per_row = np.sum(target * (log_s - shifted), axis=1, where=target != 0)
        # d/dz of -sum(t log p) is p * sum(t) - t, for rows that are not distributions too
        prob *= target.sum(axis=1, keepdims=True)
        prob -= target
    loss = _mean_loss(per_row, n)
    if n:
        prob /= logits.dtype.type(n)
    return loss, prob


def mean_squared_error(y, t):
    d = y - t
    loss = _mean_loss(d * d, d.size)
    return loss, d * (2 / d.dtype.type(max(d.size, 1)))


def _binary_cross_entropy_elements(z, t):
    """Each element's -t log sigmoid(z) - (1 - t) log(1 - sigmoid(z)), stably from the logits
    (also fastnn.nn's per-sample loss for sample weights)."""
    per_element = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    infinite = np.isinf(z)
    if infinite.any():  # -log p or -log(1 - p) at p = 0 or 1, weighted by t or 1 - t; 0 * inf is 0
        weight = np.where(z[infinite] > 0, 1 - t[infinite], t[infinite])
        per_element[infinite] = np.where(weight == 0, 0, weight * np.inf)
    return per_element


def sigmoid_binary_cross_entropy(logits, t):
    z = logits
    per_element = _binary_cross_entropy_elements(z, t)
    loss = _mean_loss(per_element, z.size)
    return loss, (sigmoid(z) - t) / z.dtype.type(max(z.size, 1))


# ---------------------------------------------------------------------------
# Optimizer updates (in place, in the parameter's dtype)

def _effective_grad(p, g, wd, l1):
    # The caller's gradient array is never modified.
    if wd:
        g = g + wd * p
    if l1:
        g = g + l1 * np.sign(p)
    return g


def sgd_update(p, g, lr, wd, l1):
    g = _effective_grad(p, g, wd, l1)
    p -= lr * g


def momentum_update(p, g, v, lr, momentum, wd, l1):
    g = _effective_grad(p, g, wd, l1)
    v[...] = momentum * v - lr * g
    p += v


def nesterov_update(p, g, v, lr, momentum, wd, l1):
    g = _effective_grad(p, g, wd, l1)
    v[...] = momentum * v - lr * g
    p += momentum * momentum * v - (1 + momentum) * lr * g


def adagrad_update(p, g, h, lr, eps, wd, l1):
    g = _effective_grad(p, g, wd, l1)
    h += g * g
    p -= lr * g / (np.sqrt(h) + eps)


def rmsprop_update(p, g, h, lr, decay, eps, wd, l1):
    g = _effective_grad(p, g, wd, l1)
    h[...] = decay * h + (1 - decay) * g * g
    p -= lr * g / (np.sqrt(h) + eps)


def adam_update(p, g, m, v, lr_t, beta1, beta2, eps, wd, l1):
    g = _effective_grad(p, g, wd, l1)
    m += (1 - beta1) * (g - m)
    v += (1 - beta2) * (g * g - v)
    p -= lr_t * m / (np.sqrt(v) + eps)


# ---------------------------------------------------------------------------
# Batch normalisation of x (N, C, S) per feature c, over N and S

def batch_norm_forward(x, gamma, beta, mean, var, eps):
    """(y, mean, var, inv_std); mean and var None: the batch statistics (biased
    variance), computed and returned; else those (C,) arrays normalise."""
    if mean is None:
        # Sums in float64 (a float32 sum of 10^4 values loses digits the variance needs), and the
        # corrected two-pass variance about the rounded mean (Chan, Golub and LeVeque), as native.
        m = x.shape[0] * x.shape[2]
        mean = (x.sum(axis=(0, 2), dtype=np.float64) / m).astype(x.dtype)
        xc = x - mean[:, None]
        s1 = xc.sum(axis=(0, 2), dtype=np.float64)
        var = (((xc * xc).sum(axis=(0, 2), dtype=np.float64) - s1 * s1 / m) / m).astype(x.dtype)
    else:
        xc = x - mean[:, None]
    inv_std = (1 / np.sqrt(var.astype(np.float64) + eps)).astype(x.dtype)
    y = xc * (gamma * inv_std)[:, None] + beta[:, None]
    return y, mean, var, inv_std


def batch_norm_backward(dy, x, gamma, mean, inv_std, train):
    """(dx, dgamma, dbeta); through the batch statistics when train:
    dx = gamma inv_std (dy - mean(dy) - xn mean(dy xn)) with xn = (x - mean) inv_std."""
    xc = x - mean[:, None]
    dbeta = dy.sum(axis=(0, 2))
    dyxc = (dy * xc).sum(axis=(0, 2))
    dgamma = dyxc * inv_std
    k = (gamma * inv_std)[:, None]
    if not train:
        return k * dy, dgamma, dbeta
    m = x.shape[0] * x.shape[2]
    return k * (dy - (dbeta / m)[:, None] - xc * (dyxc * inv_std * inv_std / m)[:, None]), dgamma, dbeta


for _name, _func in list(globals().items()):
    if not _name.startswith("_") and callable(_func) and getattr(_func, "__module__", None) == __name__:
        globals()[_name] = _quiet(_func)
