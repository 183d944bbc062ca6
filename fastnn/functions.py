"""Functions of "deep learning from scratch" (common/functions.py, common/util.py, common/gradient.py).

Same names, arguments and results, computed by :mod:`fastnn.ops` where it has
the math. Inputs may be scalars, lists or arrays of any numeric dtype; integer
and boolean inputs are computed in float64 (as NumPy would). Differences from
the book are listed in docs/LAYERS.md.
"""
import numpy as np

from fastnn import ops

__all__ = [
    "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad", "softmax",
    "sum_squared_error", "mean_squared_error", "cross_entropy_error", "softmax_loss", "numerical_diff",
    "numerical_gradient", "numerical_gradient_2d", "im2col", "col2im", "conv_output_size", "smooth_curve",
    "shuffle_dataset",
    "np",  # as the book's modules (no __all__ there): `from common.functions import *` brings np
]


def _as_float(value):
    arr = np.asarray(value)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        arr = arr.astype(np.float64)
    return arr


def _elementwise(op, x):
    """Apply an any-shape op to x, returning a NumPy scalar for a scalar input as NumPy does."""
    arr = _as_float(x)
    out = op(arr)
    return out.reshape(())[()] if arr.ndim == 0 else out


def identity_function(x):
    return x


def step_function(x):
    """1 where x > 0, else 0, as an int array (the book's dtype)."""
    return np.array(np.asarray(x) > 0, dtype=int)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    return _elementwise(ops.sigmoid, x)


def sigmoid_grad(x):
    """The derivative of sigmoid at x: sigmoid(x) * (1 - sigmoid(x))."""
    arr = _as_float(x)
    y = ops.sigmoid(arr)
    out = ops.sigmoid_backward(np.ones_like(y), y)
    return out.reshape(())[()] if arr.ndim == 0 else out


def relu(x):
    return _elementwise(ops.relu, x)


def relu_grad(x):
    """1 where x >= 0, else 0, in x's dtype: the book's convention (1 at 0, where fastnn's
    Relu layer, like most libraries, uses 0 at 0)."""
    arr = np.asarray(x)
    grad = np.zeros_like(arr)
    grad[arr >= 0] = 1
    return grad


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis`` (the last by default), shifted by the maximum for stability."""
    return ops.softmax(_as_float(x), axis=axis)


def sum_squared_error(y, t):
    """0.5 * sum((y - t)**2) over all elements."""
    y, t = _as_float(y), _as_float(t)
    if y.shape != t.shape:
        y, t = np.broadcast_arrays(y, t)
    mean_loss, grad = ops.mean_squared_error(y, t)
    return grad.dtype.type(0.5 * y.size * mean_loss)  # a NumPy scalar, as the book's np.sum gives


# The book's chapter 4 calls this function mean_squared_error (0.5 * sum, no mean).
mean_squared_error = sum_squared_error


def cross_entropy_error(y, t, delta=0.0):
    """Mean over the batch of -log(y[label]) for probabilities y (N, K) or (K,).

    ``t`` holds integer labels, or one-hot rows (as many elements as ``y``),
    which are turned into labels with argmax, as in the book. The book adds
    1e-7 inside the log; this is exact by default (``delta=0``), and
    ``delta=1e-7`` gives the book's numbers. A zero probability of the correct
    class gives inf with ``delta=0``.
    """
    y = _as_float(y)
    t = np.asarray(t)
    if y.ndim == 1:
        y = y.reshape(1, y.size)
        t = t.reshape(1, t.size)
    if y.ndim != 2:
        raise ValueError(f"cross_entropy_error: expected probabilities of shape (N, K) or (K,), got {y.shape}")
    if t.size == y.size:
        t = t.reshape(y.shape).argmax(axis=1)
    t = t.reshape(-1)
    if t.dtype.kind not in "iub":
        raise TypeError(f"cross_entropy_error: expected integer labels or one-hot rows, got dtype {t.dtype}")
    if t.shape[0] != y.shape[0]:
        raise ValueError(f"cross_entropy_error: expected {y.shape[0]} labels for y of shape {y.shape}, "
                         f"got {t.shape[0]}")
    batch_size = y.shape[0]
    picked = y[np.arange(batch_size), t]
    with np.errstate(divide="ignore"):
        return -np.sum(np.log(picked + delta)) / batch_size


def softmax_loss(X, t):
    """cross_entropy_error(softmax(X), t), the book's composition."""
    return cross_entropy_error(softmax(X), t)


def numerical_diff(f, x, h=1e-4):
    """Central difference (f(x + h) - f(x - h)) / (2h) of a scalar function."""
    return (f(x + h) - f(x - h)) / (2 * h)


def numerical_gradient(f, x, h=1e-4):
    """Gradient of the scalar ``f`` at the array ``x`` by central differences, element by element.

    As in the book, ``f`` is called with ``x`` itself, each element of which
    is moved by +h and -h in place and then restored, so ``f`` may ignore its
    argument and read parameters that alias ``x`` (``lambda W: net.loss(x, t)``).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"numerical_gradient: expected x to be an ndarray (changed in place), got "
                        f"{type(x).__name__}")
    if not x.flags.writeable:
        raise TypeError("numerical_gradient: x is read-only, but it is changed in place")
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = float(saved) + h
        f_plus = f(x)
        x[idx] = saved - h
        f_minus = f(x)
        grad[idx] = (f_plus - f_minus) / (2 * h)
        x[idx] = saved
    return grad


def numerical_gradient_2d(f, X, h=1e-4):
    """The book's per-point form (common/gradient.py, ch04's gradient plots): for 2-D ``X``,
    row i of the result is the gradient of ``f`` at row i, ``f`` being called with that row
    alone; for 1-D ``X``, ``numerical_gradient(f, X)``."""
    if isinstance(X, np.ndarray) and X.ndim not in (1, 2):
        raise ValueError(f"numerical_gradient_2d: expected X of 1 or 2 dimensions (a point or rows of points), "
                         f"got shape {X.shape}")
    if not isinstance(X, np.ndarray) or X.ndim == 1:
        return numerical_gradient(f, X, h)
    grad = np.zeros_like(X)
    for i, point in enumerate(X):
        grad[i] = numerical_gradient(f, point, h)
    return grad


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """(input_size + 2*pad - filter_size) / stride + 1, with the book's true division
    (a non-integer result means the filter doesn't tile the input)."""
    return (input_size + 2 * pad - filter_size) / stride + 1


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """(N, C, H, W) -> (N*out_h*out_w, C*filter_h*filter_w): each row is one receptive field,
    in the book's layout. Float32 input stays float32 (the book always returns float64)."""
    return ops.im2col(_as_float(input_data), filter_h, filter_w, stride=stride, pad=pad)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The adjoint of im2col: scatter the rows back into (N, C, H, W), summing overlaps."""
    return ops.col2im(_as_float(col), tuple(input_shape), filter_h, filter_w, stride=stride, pad=pad)


def smooth_curve(x, window_len=11):
    """Smooth a 1-D curve (e.g. a loss history) with a normalised Kaiser window (beta 2).

    The ends are extended with reflected values (window_len - 1 on each side,
    the book's exact padding) so the output has the input's length."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size < window_len:
        raise ValueError(f"smooth_curve: expected a 1-D array of at least {window_len} values, got shape {x.shape}")
    half = window_len // 2
    mirrored = np.concatenate([x[window_len - 1:0:-1], x, x[-1:-window_len:-1]])
    window = np.kaiser(window_len, 2)
    smoothed = np.convolve(window / window.sum(), mirrored, mode="valid")
    return smoothed[half:len(smoothed) - half]


def shuffle_dataset(x, t):
    """x and t reordered by one permutation from NumPy's global generator (as the book, so
    a seeded script gets the same order)."""
    x = np.asarray(x)
    t = np.asarray(t)
    if x.shape[:1] != t.shape[:1]:
        raise ValueError(f"shuffle_dataset: x and t must have the same length, got {x.shape[0]} and {t.shape[0]}")
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]
