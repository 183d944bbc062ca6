"""Layers with the interface of "deep learning from scratch" (common/layers.py).

A script written against that book switches to these by changing its imports::

    from fastnn.layers import Affine, Relu, SoftmaxWithLoss, ...

Each layer has the book's class name, constructor arguments, attributes
(``W``, ``b``, ``dW``, ``db``, ``x``, ``original_x_shape``, ``loss``, ``y``,
``t``, ``mask``, ``dgamma``, ``dbeta``, ...) and ``forward``/``backward``
methods; the math runs in :mod:`fastnn.ops`, so it uses the native kernels
when they are built and the NumPy reference otherwise.

Layers hold the very parameter arrays they were given (no copy, no dtype
conversion): the book's training loops update ``network.params[key]`` in place
and assign ``layer.W = ...`` when loading weights, and a layer sees both.
Differences from the book are listed in docs/LAYERS.md.
"""
import math
import numbers

import numpy as np

from fastnn import _validate as V
from fastnn import ops
from fastnn.functions import (col2im, cross_entropy_error, identity_function, im2col, mean_squared_error, relu,
                              relu_grad, sigmoid, sigmoid_grad, softmax, softmax_loss, step_function,
                              sum_squared_error)

__all__ = [
    "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softplus", "Affine", "Flatten",
    "SoftmaxWithLoss", "IdentityWithLoss", "SigmoidWithLoss", "Dropout", "BatchNormalization",
    "Convolution", "Pooling", "AvgPooling", "MulLayer", "AddLayer",
    # What the book's `from common.layers import *` also brings, since common/layers.py has
    # no __all__: its `import numpy as np`, `from common.functions import *` and im2col,
    # col2im. Book scripts use them without importing them (ch06/optimizer_compare_mnist.py
    # uses np after `from common.optimizer import *` alone).
    "np", "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad", "softmax",
    "sum_squared_error", "mean_squared_error", "cross_entropy_error", "softmax_loss", "im2col", "col2im",
]

# The book's BatchNormalization writes its epsilon as 10e-7 (= 1e-6); keep it so
# running a book script through fastnn gives the book's numbers.
BOOK_BATCHNORM_EPS = 10e-7


def _require_forward(layer, value):
    if value is None:
        raise RuntimeError(f"{type(layer).__name__}.backward: call forward() first")


def _as_input(x):
    """x as an array the ops take: float32/float64 stay as they are; integer, bool or
    float16 data (raw uint8 images, say) become float64, the dtype NumPy gives the book."""
    x = np.asarray(x)
    if x.dtype.kind in "biu" or x.dtype == np.float16:
        x = x.astype(np.float64)
    return x      # anything else (complex, object, ...) is left for fastnn.ops to reject by name


def _as_param(p, x):
    """W or b as the ops take them: a float32/float64 array is used as it is (the very
    object); a number, or an integer or float16 array (the book's ch07 apply_filter.py
    passes b = 0), in the dtype the book's arithmetic with x gives."""
    if isinstance(p, np.ndarray) and p.dtype in V.FLOAT_DTYPES:
        return p
    p = np.asarray(p)
    if p.dtype.kind in "biuf" and p.dtype not in V.FLOAT_DTYPES:
        dtype = np.result_type(p.dtype, x.dtype)
        p = p.astype(dtype if dtype in V.FLOAT_DTYPES else np.float64)
    return p


def _bias(b, m, x, W):
    """The bias as the (m,) vector the ops take: a (1, m) row as a view, a number (the book
    adds it by broadcasting) repeated in the dtype of x and W."""
    if b is None:
        return None
    if np.ndim(b) == 0 and np.asarray(b).dtype.kind in "biuf":
        return np.full(m, b, dtype=np.result_type(x.dtype, W.dtype))
    b = _as_param(b, x)
    return b.reshape(-1) if b.ndim == 2 and b.shape[0] == 1 else b


def _flat(x):
    # (N, ...) -> (N, D); spelled out so that an empty batch (N = 0) reshapes too
    # (math.prod: np.prod of a shape took 3 us, most of a batch-1 Affine.forward's overhead)
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def _fresh_float(value):
    """A copy the op may update in place: float32 or float64 in the machine's byte order
    (big-endian ones converted), any other dtype as float64."""
    arr = np.array(value)
    if arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") in V.FLOAT_DTYPES:
        return arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return arr.astype(np.float64)


def _dout_like(dout, ref):
    """A number as dout (the book's element-wise layers broadcast it: Sigmoid().backward(1.0))
    as an array of the layer's output shape and dtype; arrays pass as they are, integer ones as float64."""
    if isinstance(dout, numbers.Real) and not isinstance(dout, (bool, np.bool_)) or (
            isinstance(dout, np.ndarray) and dout.ndim == 0 and dout.dtype.kind in "fiu"):
        return np.full(np.shape(ref), dout, dtype=ref.dtype)
    return _as_input(dout)  # integer gradients become float64, as integer inputs do in forward


def _scaled(layer, grad, dout):
    # Loss layers take the book's `dout=1`; any other number scales the gradient (chain rule).
    if type(dout) in (int, float) and dout == 1:
        return grad
    if (isinstance(dout, (bool, np.bool_, str, bytes)) or np.ndim(dout) != 0
            or np.asarray(dout).dtype.kind not in "fiu"):
        raise TypeError(f"{type(layer).__name__}.backward: expected dout to be a real number (the gradient of "
                        f"the scalar loss), got {V.describe(dout)}")
    return grad * dout


# ---------------------------------------------------------------- activations

class Relu:
    """max(0, x). ``mask`` (x <= 0) is computed on first access, as the kernels don't need it."""

    def __init__(self):
        self.x = None
        self._mask = None

    @property
    def mask(self):
        if self._mask is not None:
            return self._mask
        return None if self.x is None else self.x <= 0

    @mask.setter
    def mask(self, value):  # assignable, as in the book (a subclass's own forward may set it)
        self._mask = value

    def forward(self, x):
        self._mask = None
        self.x = x = _as_input(x)
        return ops.relu(x)

    def backward(self, dout):
        if self._mask is not None:
            # an assigned mask decides, as the book's backward (dout[self.mask] = 0) does
            dout = np.asarray(dout)
            return np.where(self._mask, dout.dtype.type(0) if dout.dtype.kind == "f" else 0.0, dout)
        _require_forward(self, self.x)
        return ops.relu_backward(_dout_like(dout, self.x), self.x)


class Sigmoid:
    """1 / (1 + exp(-x)), computed stably; ``out`` is the forward output."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = ops.sigmoid(_as_input(x))
        return self.out

    def backward(self, dout):
        _require_forward(self, self.out)
        return ops.sigmoid_backward(_dout_like(dout, self.out), self.out)


class Tanh:
    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = ops.tanh(_as_input(x))
        return self.out

    def backward(self, dout):
        _require_forward(self, self.out)
        return ops.tanh_backward(_dout_like(dout, self.out), self.out)


class LeakyRelu:
    """x for x > 0, else alpha * x."""

    def __init__(self, alpha=0.01):
        self.alpha = alpha
        self.x = None

    def forward(self, x):
        self.x = x = _as_input(x)
        return ops.leaky_relu(x, self.alpha)

    def backward(self, dout):
        _require_forward(self, self.x)
        return ops.leaky_relu_backward(_dout_like(dout, self.x), self.x, self.alpha)


class Elu:
    """x for x > 0, else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha
        self.x = None

    def forward(self, x):
        self.x = x = _as_input(x)
        return ops.elu(x, self.alpha)

    def backward(self, dout):
        _require_forward(self, self.x)
        return ops.elu_backward(_dout_like(dout, self.x), self.x, self.alpha)


class Softplus:
    """log(1 + exp(x)), computed stably."""

    def __init__(self):
        self.x = None

    def forward(self, x):
        self.x = x = _as_input(x)
        return ops.softplus(x)

    def backward(self, dout):
        _require_forward(self, self.x)
        return ops.softplus_backward(_dout_like(dout, self.x), self.x)


# ---------------------------------------------------------------- affine / reshape

class Affine:
    """out = x @ W + b, with x of any rank flattened to (N, -1) first (the book's "tensor" support)."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        x = _as_input(x)
        if x.ndim == 0:
            raise ValueError("Affine.forward: expected an input of shape (N, ...), got a scalar")
        self.original_x_shape = x.shape
        self.x = _flat(x)
        W = _as_param(self.W, self.x)
        return ops.linear(self.x, W, _bias(self.b, np.shape(W)[-1], self.x, W))

    def backward(self, dout):
        _require_forward(self, self.x)
        # the W of now, as the book's np.dot(dout, self.W.T)
        dx, self.dW, self.db = ops.linear_backward(dout, self.x, _as_param(self.W, self.x))
        if np.ndim(self.b) == 2:  # a (1, M) bias gets a gradient of its own shape, for the optimizers
            self.db = self.db.reshape(1, -1)
        return dx.reshape(self.original_x_shape)


class Flatten:
    """(N, ...) -> (N, -1); backward restores the shape."""

    def __init__(self):
        self.original_x_shape = None

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("Flatten.forward: expected an input of shape (N, ...), got a scalar")
        self.original_x_shape = x.shape
        return _flat(x)

    def backward(self, dout):
        _require_forward(self, self.original_x_shape)
        dout = np.asarray(dout)
        flat = self.original_x_shape[:1] + (math.prod(self.original_x_shape[1:]),)
        if dout.shape not in (flat, self.original_x_shape):
            raise ValueError(f"Flatten.backward: expected dout of shape {flat} (the forward's output), "
                             f"got {dout.shape}")
        return dout.reshape(self.original_x_shape)


# ---------------------------------------------------------------- losses

def _class_target(op, x, t):
    """The book's rule: t with as many elements as x is one-hot (or probability) rows, else labels."""
    t = np.asarray(t)
    if t.size == x.size:
        if not np.issubdtype(t.dtype, np.floating):
            t = t.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
        return t.reshape(x.shape)
    if not (np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_):
        raise TypeError(f"{op}: expected integer class labels of shape ({x.shape[0]},) or one-hot rows "
                        f"of shape {x.shape}, got {t.dtype} array of shape {t.shape}")
    return t.reshape(-1).astype(np.int64, copy=False)


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy loss (mean over the batch).

    ``t`` holds one-hot rows (as many elements as ``x``) or integer labels.
    The loss is the exact, stable log-softmax cross-entropy (the book adds 1e-7
    inside its log). ``backward()`` returns ``(softmax(x) - t) / batch_size`` as
    the book does for one-hot rows and labels (for rows that do not sum to 1, the
    gradient of the loss returned, ``(softmax(x) * sum(t) - t) / batch_size``);
    ``y`` (the softmax) is computed on first access.
    """

    def __init__(self):
        self.loss = None
        self.t = None
        self._x = None
        self._y = None
        self._dx = None

    @property
    def y(self):
        if self._y is None and self._x is not None:
            self._y = ops.softmax(self._x).reshape(self._x_shape)
        return self._y

    @y.setter
    def y(self, value):
        self._y = value

    def forward(self, x, t):
        self._dx = self._x = self._y = self.loss = None  # a forward that raises leaves nothing to backward
        x = _as_input(x)
        self.t = t
        self._x_shape = x.shape
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        if x2.ndim != 2:
            raise ValueError(f"SoftmaxWithLoss.forward: expected scores of shape (N, K) or (K,), got shape {x.shape}")
        self._x = x2
        self._y = None
        loss, self._dx = ops.softmax_cross_entropy(x2, _class_target("SoftmaxWithLoss.forward", x2, t))
        self.loss = self._dx.dtype.type(loss)  # a NumPy scalar of the scores' dtype, as the book's
        return self.loss

    def backward(self, dout=1):
        _require_forward(self, self._dx)
        return _scaled(self, self._dx.reshape(self._x_shape), dout)


class IdentityWithLoss:
    """Identity output with the mean squared error loss, mean((x - t)**2) over all elements."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None
        self._dx = None

    def forward(self, x, t):
        self._dx = self.y = self.loss = None  # a forward that raises leaves nothing to backward
        x = _as_input(x)
        t = _as_input(t)
        if t.shape != x.shape and t.size == x.size:
            t = t.reshape(x.shape)
        self.y, self.t = x, t
        loss, self._dx = ops.mean_squared_error(x, t)
        self.loss = self._dx.dtype.type(loss)
        return self.loss

    def backward(self, dout=1):
        _require_forward(self, self._dx)
        return _scaled(self, self._dx, dout)


class SigmoidWithLoss:
    """Sigmoid followed by the binary cross-entropy (mean over all elements), computed from the logits.

    ``t`` holds 0/1 (or probability) targets of the shape of ``x``; labels of
    shape (N,) for an (N, 1) output are accepted. ``y`` (the sigmoid) is
    computed on first access.
    """

    def __init__(self):
        self.loss = None
        self.t = None
        self._x = None
        self._y = None
        self._dx = None

    @property
    def y(self):
        if self._y is None and self._x is not None:
            self._y = ops.sigmoid(self._x)
        return self._y

    @y.setter
    def y(self, value):
        self._y = value

    def forward(self, x, t):
        self._dx = self._x = self._y = self.loss = None  # a forward that raises leaves nothing to backward
        x = _as_input(x)
        t = np.asarray(t)
        if t.shape != x.shape and t.size == x.size:
            t = t.reshape(x.shape)
        if not np.issubdtype(t.dtype, np.floating):
            t = t.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
        self._x, self.t, self._y = x, t, None
        loss, self._dx = ops.sigmoid_binary_cross_entropy(x, t)
        self.loss = self._dx.dtype.type(loss)
        return self.loss

    def backward(self, dout=1):
        _require_forward(self, self._dx)
        return _scaled(self, self._dx, dout)


# ---------------------------------------------------------------- regularisation

class Dropout:
    """Zeroes each input with probability ``dropout_ratio`` in training.

    The mask comes from ``np.random.rand`` exactly as in the book, so a script
    that seeds NumPy's global generator gets the same masks. At test time the
    output is scaled by ``1 - dropout_ratio`` (the book's non-inverted dropout).
    """

    def __init__(self, dropout_ratio=0.5):
        if not 0 <= V.as_real("Dropout", "dropout_ratio", dropout_ratio) < 1:
            raise ValueError(f"Dropout: expected dropout_ratio in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        x = _as_input(x)
        if x.dtype.kind != "f":
            raise TypeError(f"Dropout.forward: expected a real-valued array, got dtype {x.dtype}")
        if V.as_flag("Dropout.forward", "train_flg", train_flg):
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        _require_forward(self, self.mask)
        dout = np.asarray(dout)
        if dout.shape != self.mask.shape:
            raise ValueError(f"Dropout.backward: expected dout of shape {self.mask.shape} "
                             f"(the last training forward's output), got {dout.shape}")
        return dout * self.mask


class BatchNormalization:
    """Batch normalisation with the book's semantics.

    2-D input (N, D) is normalised per feature; any other input is flattened
    to (N, -1) first, so a 4-D (N, C, H, W) input is normalised per (c, h, w)
    element with ``gamma``/``beta`` of size C*H*W, as in the book. ``running_mean``
    and ``running_var`` start as zeros (float64) on the first forward when not
    given, and are replaced (not updated in place) by
    ``momentum * running + (1 - momentum) * batch_statistic``. The epsilon is
    the book's 10e-7. ``backward`` differentiates the last forward: after a
    ``train_flg=False`` forward, with the running statistics held fixed.
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.eps = BOOK_BATCHNORM_EPS
        self.batch_size = None
        self.dgamma = None
        self.dbeta = None
        self._cache = None

    def forward(self, x, train_flg=True):
        train_flg = V.as_flag("BatchNormalization.forward", "train_flg", train_flg)
        x = _as_input(x)
        if x.ndim == 0:
            raise ValueError("BatchNormalization.forward: expected an input of shape (N, ...), got a scalar")
        self.input_shape = x.shape
        x2 = _flat(x)
        if self.running_mean is None or self.running_var is None:
            V.check_size("BatchNormalization.forward", "the running statistics", x2.shape[1:], 8)
        if self.running_mean is None:
            self.running_mean = np.zeros(x2.shape[1])
        if self.running_var is None:
            self.running_var = np.zeros(x2.shape[1])
        # The op updates the running statistics in place; the book rebinds them,
        # so hand it copies and leave any array a caller holds untouched.
        running_mean, running_var = _fresh_float(self.running_mean), _fresh_float(self.running_var)
        out, cache = ops.batch_norm_forward(x2, self.gamma, self.beta, running_mean, running_var,
                                            momentum=self.momentum, eps=self.eps, train=train_flg)
        if train_flg:
            self.running_mean, self.running_var = running_mean, running_var
            self.batch_size = x2.shape[0]
        # backward differentiates the last forward, in the mode it ran (with the running
        # statistics after a test-mode forward, as PyTorch's eval mode does), never a mix
        self._cache = cache
        return out.reshape(self.input_shape)

    def backward(self, dout):
        _require_forward(self, self._cache)
        dout = np.asarray(dout)
        if dout.shape != self.input_shape:
            raise ValueError(f"BatchNormalization.backward: expected dout of shape {self.input_shape} "
                             f"(the last forward's output), got {dout.shape}")
        dx, self.dgamma, self.dbeta = ops.batch_norm_backward(_flat(dout), self._cache)
        return dx.reshape(self.input_shape)


# ---------------------------------------------------------------- convolution / pooling

class Convolution:
    """2-D convolution (cross-correlation) of x (N, C, H, W) with W (FN, C, FH, FW) plus b (FN,).

    The kernels don't materialise the book's im2col matrix; ``col`` is built
    on first access (an extra pass and N*OH*OW*C*FH*FW elements of memory) and
    ``col_W`` is a view of W.
    """

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.dW = None
        self.db = None
        self._col = None
        self._col_x = None
        self._col_W = None
        self._W_forward = None  # the filters of the last forward, which backward differentiates
        self._out_shape = None
        self._col_assigned = False

    # col and col_W are assignable, as in the book (a subclass's own forward may set them, or
    # code may clear them with None); what was assigned is read back, and backward computes
    # from it as the book's does, until the next forward.
    @property
    def col(self):
        if self.x is None or self._col_assigned:
            return self._col
        if self._col is None or self._col_x is not self.x:
            _, _, fh, fw = np.shape(self._filters())
            self._col = ops.im2col(self.x, fh, fw, stride=self.stride, pad=self.pad)
            self._col_x = self.x
        return self._col

    @col.setter
    def col(self, value):
        # None clears it (to free its memory): built again when read, as before any assignment
        self._col, self._col_x, self._col_assigned = value, self.x, value is not None

    @property
    def col_W(self):
        if self._col_W is not None:
            return self._col_W
        W = np.asarray(self._filters())
        return W.reshape(W.shape[0], -1).T

    @col_W.setter
    def col_W(self, value):
        self._col_W = value

    def _filters(self):
        # the book's col_W is taken in forward: rebinding self.W after it changes nothing
        return self.W if self._W_forward is None else self._W_forward

    def forward(self, x):
        self._col_W = None
        self._col = self._col_x = None  # the same array refilled is a new input
        self._col_assigned = False
        self.x = x = _as_input(x)
        self._W_forward = W = _as_param(self.W, x)
        out = ops.conv2d(x, W, _bias(self.b, np.shape(W)[0], x, W), stride=self.stride, pad=self.pad)
        self._out_shape = out.shape
        return out

    def backward(self, dout):
        _require_forward(self, self.x)
        if self._col_assigned or self._col_W is not None:
            return self._backward_from_cols(dout)
        dx, self.dW, self.db = ops.conv2d_backward(dout, self.x, self._W_forward, stride=self.stride,
                                                   pad=self.pad)
        return dx

    def _backward_from_cols(self, dout):
        """The book's backward, from the col and col_W that were assigned."""
        fn, c, fh, fw = np.shape(self._W_forward)
        dout = _as_input(dout)
        if dout.shape != self._out_shape:
            raise ValueError(f"Convolution.backward: expected dout of shape {self._out_shape} (the forward's "
                             f"output), got {dout.shape}")
        rows = dout.transpose(0, 2, 3, 1).reshape(-1, fn)
        self.db = np.sum(rows, axis=0)
        self.dW = np.dot(np.asarray(self.col).T, rows).T.reshape(fn, c, fh, fw)
        return col2im(np.dot(rows, np.asarray(self.col_W).T), self.x.shape, fh, fw, self.stride, self.pad)


class Pooling:
    """Max pooling over pool_h x pool_w windows (the book's defaults: stride=1, pad=0).

    ``arg_max`` holds, for each output, the index h*W + w of the winning input
    in its (H, W) plane (the book keeps the index inside the window instead).
    Padding never wins (it is -inf, where the book pads with zeros).
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self.arg_max = None

    def forward(self, x):
        x = _as_input(x)
        out, self.arg_max = ops.max_pool2d(x, self.pool_h, self.pool_w, stride=self.stride, pad=self.pad)
        self.x = x
        return out

    def backward(self, dout):
        _require_forward(self, self.arg_max)
        return ops.max_pool2d_backward(dout, self.arg_max, self.x.shape, self.pool_h, self.pool_w,
                                       stride=self.stride, pad=self.pad)


class AvgPooling:
    """Average pooling; the divisor is pool_h * pool_w (padding counts)."""

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None

    def forward(self, x):
        x = _as_input(x)
        out = ops.avg_pool2d(x, self.pool_h, self.pool_w, stride=self.stride, pad=self.pad)
        self.x = x
        return out

    def backward(self, dout):
        _require_forward(self, self.x)
        return ops.avg_pool2d_backward(dout, self.x.shape, self.pool_h, self.pool_w,
                                       stride=self.stride, pad=self.pad)


# ---------------------------------------------------------------- computational-graph examples (book ch. 5)

class MulLayer:
    """out = x * y for scalars or arrays; backward gives (dout * y, dout * x)."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dout):
        _require_forward(self, self.x)
        return dout * self.y, dout * self.x


class AddLayer:
    """out = x + y; backward passes dout to both inputs."""

    def __init__(self):
        pass

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout * 1, dout * 1
