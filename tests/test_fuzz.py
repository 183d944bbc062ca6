"""Property fuzzing of every op in fastnn.ops (issue 8).

Hypothesis draws shapes (batch 0 and 1, primes), strides, pads, float32/float64
(sometimes mixed), memory layouts (C-contiguous, Fortran, strided, negative
strides, read-only) and sprinkles NaN and +-Inf into the data. For every draw:

- on each backend, the op on the drawn view equals, bit for bit, the op on a
  C-contiguous copy of it; the inputs are not modified (except the arrays an
  optimizer update owns); no output aliases an input; the output dtype is the
  promoted float dtype; any exception is a ValueError, TypeError or MemoryError;
- on the native backend, the result agrees with the NumPy reference within the
  dtype's tolerance (NaN and Inf in the same places), or both raise the same
  exception type; on every SIMD path the CPU has (AVX-512, AVX2, portable C).

Tolerances: rtol 1e-5 (float32) / 1e-10 (float64), plus an absolute term of
4 * eps(dtype) * K where K is the reduction length behind that output (the
inputs lie in [-1, 1] or [-3, 3], so K bounds the magnitude of the sum).
"""
import contextlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import ops
from conftest import requires_native
from helpers import native_setting

BACKENDS = [pytest.param("numpy", id="numpy"), pytest.param("native", id="native", marks=requires_native)]
FUZZ = settings(max_examples=25, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
ACTS = [None, "identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"]
BATCH = st.sampled_from([0, 1, 2, 3, 5])
SMALL = st.sampled_from([1, 2, 3, 5, 7])
SIZE = st.sampled_from([1, 2, 3, 4, 5, 7, 11, 13])
LAYOUTS = ("c", "fortran", "strided", "reversed", "readonly")


# ---------------------------------------------------------------------------
# Drawing arrays

def draw_dtype(draw):
    return np.dtype(draw(st.sampled_from([np.float32, np.float64])))


def draw_array(draw, shape, dtype, lo=-1.0, hi=1.0, specials=True, layout=None):
    """An array of `shape` and `dtype` with values in [lo, hi], maybe some NaN/+-Inf,
    in a drawn memory layout (the values do not depend on the layout)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.uniform(lo, hi, size=shape).astype(dtype)
    size = values.size
    if specials and size and draw(st.integers(0, 3)) == 0:
        k = draw(st.integers(1, min(size, 3)))
        flat = values.reshape(-1)
        for idx in rng.choice(size, size=k, replace=False):
            flat[idx] = rng.choice([np.nan, np.inf, -np.inf])
    layout = layout or draw(st.sampled_from(LAYOUTS))
    return with_layout(values, layout)


def with_layout(values, layout):
    if layout == "fortran":
        return np.asfortranarray(values)
    if layout == "strided" and values.ndim:
        big = np.zeros(values.shape[:-1] + (2 * values.shape[-1] + 1,), dtype=values.dtype)
        big[..., 1::2] = values
        view = big[..., 1::2]
        assert view.shape == values.shape
        return view
    if layout == "readonly":
        out = np.ascontiguousarray(values).copy()
        out.flags.writeable = False
        return out
    if layout == "reversed" and values.ndim:
        rev = np.ascontiguousarray(values[(slice(None, None, -1),) * values.ndim])
        return rev[(slice(None, None, -1),) * values.ndim]
    return np.ascontiguousarray(values)


def maybe_pair(draw, lo, hi):
    if draw(st.booleans()):
        return draw(st.integers(lo, hi))
    return (draw(st.integers(lo, hi)), draw(st.integers(lo, hi)))


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


def out_size(h, f, s, p):
    return (h + 2 * p - f) // s + 1 if h + 2 * p >= f else 0


# ---------------------------------------------------------------------------
# One generator per op: returns (kwargs, K) where K maps each output position to
# its reduction length (an int for all outputs, or a tuple per output).

def gen_matmul(draw):
    dt = draw_dtype(draw)
    m, k, n = draw(BATCH), draw(st.sampled_from([0, 1, 3, 7, 13])), draw(st.sampled_from([1, 2, 5, 11]))
    return dict(a=draw_array(draw, (m, k), dt), b=draw_array(draw, (k, n), draw_dtype(draw), specials=False)), k


def gen_gemm(draw):
    # c is left out here (this harness checks that an op changes none of its inputs); its
    # layouts, beta and the in-place update are test_ops.py's test_gemm
    dt = draw_dtype(draw)
    m, k, n = draw(BATCH), draw(st.sampled_from([0, 1, 3, 7, 13])), draw(st.sampled_from([1, 2, 5, 11]))
    trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
    a = draw_array(draw, (k, m) if trans_a else (m, k), dt)
    b = draw_array(draw, (n, k) if trans_b else (k, n), draw_dtype(draw), specials=False)
    alpha = draw(st.sampled_from([1.0, 0.0, -2.5]))
    return dict(a=a, b=b, trans_a=trans_a, trans_b=trans_b, alpha=alpha), k


def _linear_inputs(draw):
    dt = draw_dtype(draw)
    n, m = draw(BATCH), draw(SIZE)
    xshape = draw(st.sampled_from([(n, 5), (n, 1), (n, 2, 3), (n, 13)]))
    d = math.prod(xshape[1:])
    act = draw(st.sampled_from(ACTS))
    alpha = draw(st.sampled_from([None, 0.0, 0.1, 1.0])) if act in ("leaky_relu", "elu") else None
    x = draw_array(draw, xshape, dt)
    W = draw_array(draw, (d, m), draw_dtype(draw), specials=False)
    return n, d, m, act, alpha, x, W


def gen_linear(draw):
    n, d, m, act, alpha, x, W = _linear_inputs(draw)
    b = None if draw(st.booleans()) else draw_array(draw, (m,), x.dtype, specials=False)
    return dict(x=x, W=W, b=b, activation=act, alpha=alpha), d + 1


def gen_linear_backward(draw):
    n, d, m, act, alpha, x, W = _linear_inputs(draw)
    dy = draw_array(draw, (n, m), x.dtype)
    kwargs = dict(dy=dy, x=x, W=W, activation=act, alpha=alpha)
    if act not in (None, "identity"):
        with fastnn.backend("numpy"):
            y = ops.linear(np.array(x), np.array(W), None, act, alpha)
        kwargs["y"] = with_layout(y, draw(st.sampled_from(LAYOUTS)))
    return kwargs, (m, max(n, 1), max(n, 1))


def gen_unary(name, lo=-3.0, hi=3.0, alpha=False):
    def gen(draw):
        shape = draw(st.sampled_from([(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (1, 2, 3, 5), (2, 0, 3)]))
        kwargs = dict(x=draw_array(draw, shape, draw_dtype(draw), lo, hi))
        if alpha:
            kwargs["alpha"] = draw(st.sampled_from([0.0, 0.01, 0.3, 1.0, 2.5, -0.5]))
        return kwargs, 1
    gen.__name__ = f"gen_{name}"
    return gen


def gen_binary(name, second="x", alpha=False, lo=-3.0, hi=3.0):
    def gen(draw):
        shape = draw(st.sampled_from([(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (1, 2, 3, 5)]))
        kwargs = dict(dy=draw_array(draw, shape, draw_dtype(draw)),
                      **{second: draw_array(draw, shape, draw_dtype(draw), lo, hi)})
        if alpha:
            kwargs["alpha"] = draw(st.sampled_from([0.0, 0.01, 0.3, 1.0, 2.5, -0.5]))
        return kwargs, 1
    gen.__name__ = f"gen_{name}"
    return gen


def _conv_geometry(draw, max_filter_extra=1):
    n, c = draw(BATCH), draw(st.sampled_from([1, 2, 3]))
    h, w = draw(SIZE), draw(SIZE)
    stride, pad = maybe_pair(draw, 1, 3), maybe_pair(draw, 0, 2)
    (sh, sw), (ph, pw) = pair(stride), pair(pad)
    # Up to one more than the padded input, so some draws are invalid (ValueError on both backends).
    fh = draw(st.integers(1, min(h + 2 * ph + max_filter_extra, 7)))
    fw = draw(st.integers(1, min(w + 2 * pw + max_filter_extra, 7)))
    oh, ow = out_size(h, fh, sh, ph), out_size(w, fw, sw, pw)
    return n, c, h, w, fh, fw, stride, pad, oh, ow


def gen_im2col(draw):
    n, c, h, w, fh, fw, stride, pad, oh, ow = _conv_geometry(draw)
    x = draw_array(draw, (n, c, h, w), draw_dtype(draw))
    return dict(x=x, filter_h=fh, filter_w=fw, stride=stride, pad=pad), 1


def gen_col2im(draw):
    n, c, h, w, fh, fw, stride, pad, oh, ow = _conv_geometry(draw)
    rows = n * max(oh, 1) * max(ow, 1)
    col = draw_array(draw, (rows, c * fh * fw), draw_dtype(draw))
    return dict(col=col, x_shape=(n, c, h, w), filter_h=fh, filter_w=fw, stride=stride, pad=pad), fh * fw


def gen_conv2d(draw):
    n, c, h, w, fh, fw, stride, pad, oh, ow = _conv_geometry(draw)
    f = draw(st.sampled_from([1, 2, 5]))
    act = draw(st.sampled_from(ACTS))
    alpha = draw(st.sampled_from([None, 0.0, 0.2, 1.0])) if act in ("leaky_relu", "elu") else None
    x = draw_array(draw, (n, c, h, w), draw_dtype(draw))
    W = draw_array(draw, (f, c, fh, fw), draw_dtype(draw), specials=False)
    b = None if draw(st.booleans()) else draw_array(draw, (f,), x.dtype, specials=False)
    return dict(x=x, W=W, b=b, stride=stride, pad=pad, activation=act, alpha=alpha), c * fh * fw + 1


def gen_conv2d_max_pool2d(draw):
    kwargs, reduction = gen_conv2d(draw)
    # pool windows up to one more than the convolution's output (ValueError on both backends)
    ph = draw(st.integers(1, 4))
    pw = draw(st.one_of(st.none(), st.integers(1, 4)))
    pool_stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pool_pad = draw(st.integers(0, ph // 2))
    return dict(kwargs, pool_h=ph, pool_w=pw, pool_stride=pool_stride, pool_pad=pool_pad), reduction


def gen_conv2d_max_pool2d_backward(draw):
    kwargs, _ = gen_conv2d_max_pool2d(draw)
    x, W, act = kwargs["x"], kwargs["W"], kwargs["activation"]
    pool = {k: kwargs[k] for k in ("pool_h", "pool_w", "pool_stride", "pool_pad")}
    try:
        with fastnn.backend("numpy"):
            y, argmax = ops.conv2d_max_pool2d(np.asarray(x, np.float64), np.asarray(W, np.float64), None,
                                              kwargs["stride"], kwargs["pad"], act, kwargs["alpha"], **pool)
    except ValueError:  # an invalid geometry: both backends must raise the same
        y = argmax = np.zeros((1, 1, 1, 1))
    dy = draw_array(draw, y.shape, draw_dtype(draw))
    y = np.asarray(y, dy.dtype)
    argmax = with_layout(argmax.astype(np.int64), draw(st.sampled_from(LAYOUTS)))
    (sh, sw), (ph, pw) = pair(kwargs["stride"]), pair(kwargs["pad"])
    f, _, fh, fw = W.shape
    rows = max(x.shape[0] * out_size(x.shape[2], fh, sh, ph) * out_size(x.shape[3], fw, sw, pw), 1)
    return dict(dy=dy, argmax=argmax, y=y, x=x, W=W, stride=kwargs["stride"], pad=kwargs["pad"],
                activation=act, alpha=kwargs["alpha"], need_dx=draw(st.booleans()), **pool), \
        (f * fh * fw, rows, rows)


def gen_conv2d_backward(draw):
    n, c, h, w, fh, fw, stride, pad, oh, ow = _conv_geometry(draw)
    f = draw(st.sampled_from([1, 2, 5]))
    x = draw_array(draw, (n, c, h, w), draw_dtype(draw))
    W = draw_array(draw, (f, c, fh, fw), draw_dtype(draw), specials=False)
    dy = draw_array(draw, (n, f, max(oh, 1), max(ow, 1)), draw_dtype(draw))
    need_dx = draw(st.booleans())
    rows = max(n * oh * ow, 1)
    return dict(dy=dy, x=x, W=W, stride=stride, pad=pad, need_dx=need_dx), (f * fh * fw, rows, rows)


def _pool_geometry(draw):
    n, c = draw(BATCH), draw(st.sampled_from([1, 2, 3]))
    h, w = draw(SIZE), draw(SIZE)
    ph = draw(st.integers(1, min(h + 1, 5)))
    pw = draw(st.one_of(st.none(), st.integers(1, min(w + 1, 5))))
    pw_ = ph if pw is None else pw
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    # 2*pad <= pool is the rule; one beyond it sometimes (ValueError on both backends).
    pad = draw(st.one_of(st.integers(0, ph // 2 + 1),
                         st.tuples(st.integers(0, ph // 2), st.integers(0, pw_ // 2))))
    sh, sw = (ph, pw_) if stride is None else pair(stride)
    pad_h, pad_w = pair(pad)
    oh, ow = out_size(h, ph, sh, pad_h), out_size(w, pw_, sw, pad_w)
    return n, c, h, w, ph, pw, stride, pad, oh, ow


def gen_max_pool2d(draw):
    n, c, h, w, ph, pw, stride, pad, oh, ow = _pool_geometry(draw)
    x = draw_array(draw, (n, c, h, w), draw_dtype(draw))
    if draw(st.integers(0, 3)) == 0:  # ties and all--inf windows
        x = with_layout(np.round(np.array(x) * 2) / 2, draw(st.sampled_from(LAYOUTS)))
        if x.size and draw(st.booleans()):
            x = np.full_like(x, -np.inf)
    return dict(x=x, pool_h=ph, pool_w=pw, stride=stride, pad=pad), 1


def gen_max_pool2d_backward(draw):
    n, c, h, w, ph, pw, stride, pad, oh, ow = _pool_geometry(draw)
    x = draw_array(draw, (n, c, h, w), np.float64, specials=False, layout="c")
    try:
        with fastnn.backend("numpy"):
            _, argmax = ops.max_pool2d(x, ph, pw, stride, pad)
    except ValueError:
        argmax = np.zeros((n, c, max(oh, 1), max(ow, 1)), dtype=np.int64)
    dy = draw_array(draw, argmax.shape, draw_dtype(draw))
    argmax = with_layout(argmax, draw(st.sampled_from(LAYOUTS)))
    if draw(st.booleans()):
        argmax = argmax.astype(np.int32)
    pw_ = ph if pw is None else pw
    return dict(dy=dy, argmax=argmax, x_shape=(n, c, h, w), pool_h=ph, pool_w=pw, stride=stride, pad=pad), \
        ph * pw_


def gen_avg_pool2d(draw):
    n, c, h, w, ph, pw, stride, pad, oh, ow = _pool_geometry(draw)
    x = draw_array(draw, (n, c, h, w), draw_dtype(draw))
    return dict(x=x, pool_h=ph, pool_w=pw, stride=stride, pad=pad), ph * (ph if pw is None else pw)


def gen_avg_pool2d_backward(draw):
    n, c, h, w, ph, pw, stride, pad, oh, ow = _pool_geometry(draw)
    dy = draw_array(draw, (n, c, max(oh, 1), max(ow, 1)), draw_dtype(draw))
    return dict(dy=dy, x_shape=(n, c, h, w), pool_h=ph, pool_w=pw, stride=stride, pad=pad), \
        ph * (ph if pw is None else pw)


def gen_softmax(draw):
    shape = draw(st.sampled_from([(1,), (7,), (0, 3), (3, 1), (4, 5), (2, 3, 13), (1, 1, 1)]))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    x = draw_array(draw, shape, draw_dtype(draw), -5.0, 5.0)
    return dict(x=x, axis=axis), shape[axis]


def gen_softmax_cross_entropy(draw):
    n, k = draw(BATCH), draw(st.sampled_from([1, 2, 3, 10, 13]))
    dt = draw_dtype(draw)
    logits = draw_array(draw, (n, k), dt, -5.0, 5.0)
    kind = draw(st.sampled_from(["labels", "labels32", "onehot", "probs"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, k, size=n)
    if kind == "labels":
        target = labels
    elif kind == "labels32":
        target = labels.astype(np.int32)[::-1].copy()[::-1]
    elif kind == "onehot":
        target = with_layout(np.eye(k, dtype=draw_dtype(draw))[labels], draw(st.sampled_from(LAYOUTS)))
    else:
        p = rng.uniform(size=(n, k))
        target = with_layout(p / p.sum(axis=1, keepdims=True), draw(st.sampled_from(LAYOUTS)))
    return dict(logits=logits, target=target), (max(n, 1) * k, k)


def gen_pairwise_loss(first, t_lo, t_hi):
    def gen(draw):
        shape = draw(st.sampled_from([(0,), (1,), (7,), (3, 5), (2, 3, 4), (5, 1)]))
        kwargs = {first: draw_array(draw, shape, draw_dtype(draw), -3.0, 3.0),
                  "t": draw_array(draw, shape, draw_dtype(draw), t_lo, t_hi, specials=False)}
        size = max(math.prod(shape), 1)
        return kwargs, (size * 9, 1)
    gen.__name__ = f"gen_loss_{first}"
    return gen


OPTIMIZERS = {
    "sgd_update": ([], dict(lr=st.floats(1e-4, 1.0))),
    "momentum_update": (["v"], dict(lr=st.floats(1e-4, 1.0), momentum=st.floats(0.0, 0.99))),
    "nesterov_update": (["v"], dict(lr=st.floats(1e-4, 1.0), momentum=st.floats(0.0, 0.99))),
    "adagrad_update": (["h"], dict(lr=st.floats(1e-4, 1.0), eps=st.sampled_from([1e-7, 1e-3]))),
    "rmsprop_update": (["h"], dict(lr=st.floats(1e-4, 1.0), decay=st.floats(0.0, 0.999),
                                   eps=st.sampled_from([1e-7, 1e-3]))),
    "adam_update": (["m", "v"], dict(lr_t=st.floats(1e-4, 1.0), beta1=st.floats(0.0, 0.99),
                                     beta2=st.floats(0.0, 0.9999), eps=st.sampled_from([1e-7, 1e-3]))),
}


def gen_optimizer(name):
    states, scalars = OPTIMIZERS[name]

    def gen(draw):
        shape = draw(st.sampled_from([(0,), (1,), (7,), (3, 5), (2, 3, 4), (1, 1, 3, 3)]))
        dt = draw_dtype(draw)
        # Same dtype and layout (C or not) for all, or a mix (the reference path).
        layout = draw(st.sampled_from(LAYOUTS))
        kwargs = dict(p=draw_array(draw, shape, dt, layout=layout),
                      g=draw_array(draw, shape, dt if draw(st.booleans()) else draw_dtype(draw), layout=layout))
        for s in states:
            lo = 0.0 if s in ("h",) or (name == "adam_update" and s == "v") else -1.0
            kwargs[s] = draw_array(draw, shape, dt, lo, 1.0, specials=False, layout=layout)
        for k, strat in scalars.items():
            kwargs[k] = draw(strat)
        kwargs["weight_decay"] = draw(st.sampled_from([0.0, 1e-3, 0.1]))
        kwargs["l1"] = draw(st.sampled_from([0.0, 1e-3]))
        return kwargs, 4
    gen.__name__ = f"gen_{name}"
    return gen


GENERATORS = {
    "matmul": gen_matmul,
    "gemm": gen_gemm,
    "linear": gen_linear,
    "linear_backward": gen_linear_backward,
    "relu": gen_unary("relu"),
    "leaky_relu": gen_unary("leaky_relu", alpha=True),
    "elu": gen_unary("elu", alpha=True),
    "sigmoid": gen_unary("sigmoid", -30.0, 30.0),
    "tanh": gen_unary("tanh", -10.0, 10.0),
    "softplus": gen_unary("softplus", -30.0, 30.0),
    "step": gen_unary("step"),
    "identity": gen_unary("identity"),
    "relu_backward": gen_binary("relu_backward"),
    "leaky_relu_backward": gen_binary("leaky_relu_backward", alpha=True),
    "elu_backward": gen_binary("elu_backward", alpha=True),
    "softplus_backward": gen_binary("softplus_backward", lo=-30.0, hi=30.0),
    "sigmoid_backward": gen_binary("sigmoid_backward", second="y", lo=0.0, hi=1.0),
    "tanh_backward": gen_binary("tanh_backward", second="y", lo=-1.0, hi=1.0),
    "im2col": gen_im2col,
    "col2im": gen_col2im,
    "conv2d": gen_conv2d,
    "conv2d_backward": gen_conv2d_backward,
    "conv2d_max_pool2d": gen_conv2d_max_pool2d,
    "conv2d_max_pool2d_backward": gen_conv2d_max_pool2d_backward,
    "max_pool2d": gen_max_pool2d,
    "max_pool2d_backward": gen_max_pool2d_backward,
    "avg_pool2d": gen_avg_pool2d,
    "avg_pool2d_backward": gen_avg_pool2d_backward,
    "softmax": gen_softmax,
    "log_softmax": gen_softmax,
    "softmax_cross_entropy": gen_softmax_cross_entropy,
    "mean_squared_error": gen_pairwise_loss("y", -3.0, 3.0),
    "sigmoid_binary_cross_entropy": gen_pairwise_loss("logits", 0.0, 1.0),
    **{name: gen_optimizer(name) for name in OPTIMIZERS},
}
IN_PLACE = {name: ["p"] + states for name, (states, _) in OPTIMIZERS.items()}


def test_every_backend_op_is_fuzzed():
    """A new op in the backend contract must get a generator here."""
    from fastnn import _reference
    contract = {name for name in dir(_reference) if not name.startswith("_") and callable(getattr(_reference, name))
                and getattr(getattr(_reference, name), "__module__", "") == _reference.__name__}
    contract -= {"batch_norm_forward", "batch_norm_backward"}  # one cache between them: test_batch_norm_fuzz
    assert contract <= set(GENERATORS), sorted(contract - set(GENERATORS))


# ---------------------------------------------------------------------------
# Running and comparing

def lower_simd_paths():
    best = fastnn.config().get("simd_cpu_best", "portable")
    names = list(fastnn._config.ISA_NAMES)
    return names[:names.index(best)]


@contextlib.contextmanager
def simd(isa):
    before = fastnn.get_simd()
    fastnn.set_simd(isa)
    try:
        yield
    finally:
        fastnn.set_simd(before)


def deep_copy(kwargs):
    return {k: (_copy(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}


def _copy(v):
    c = v.copy(order="K")
    c.flags.writeable = v.flags.writeable  # a read-only input stays read-only
    return c


def contiguous(kwargs):
    return {k: (np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}


def draw_case(data, name):
    return data.draw(st.composite(lambda draw: GENERATORS[name](draw))(), label=name)


def call(name, backend, kwargs):
    """('ok', result leaves) or ('raise', exception type, message). Runs on copies of the
    arguments and checks that the op modified none of them (but those it updates in place)."""
    args = deep_copy(kwargs)
    try:
        with fastnn.backend(backend):
            result = getattr(ops, name)(**args)
    except (ValueError, TypeError, MemoryError) as exc:
        outcome = ("raise", type(exc), str(exc))
    else:
        if name in IN_PLACE:
            assert result is None
            result = tuple(args[k] for k in IN_PLACE[name])
        outcome = ("ok", leaves(result))
    for key, value in kwargs.items():
        if isinstance(value, np.ndarray) and key not in IN_PLACE.get(name, ()):
            assert args[key].dtype == value.dtype
            np.testing.assert_array_equal(args[key], value, err_msg=f"{name} modified its input {key}")
    return outcome


def leaves(result):
    return list(result) if isinstance(result, tuple) else [result]


def expected_dtype(kwargs):
    floats = [v.dtype for v in kwargs.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    return np.result_type(*floats)


def assert_identical(a, b, what):
    assert len(a) == len(b), what
    for x, y in zip(a, b):
        if x is None or isinstance(x, float):
            assert (x is None and y is None) or (math.isnan(x) and math.isnan(y)) or x == y, (what, x, y)
            continue
        assert x.shape == y.shape and x.dtype == y.dtype, (what, x.shape, y.shape, x.dtype, y.dtype)
        np.testing.assert_array_equal(x, y, err_msg=what)


def assert_close(native, ref, k, what):
    ks = k if isinstance(k, tuple) else (k,) * len(ref)
    assert len(native) == len(ref), what
    for i, (x, y) in enumerate(zip(native, ref)):
        if y is None:
            assert x is None, what
            continue
        if isinstance(y, float):
            assert isinstance(x, float), (what, type(x))
            tol_dtype = np.dtype(np.float32) if ref[-1].dtype == np.float32 else np.dtype(np.float64)
            if math.isnan(y) or math.isinf(y):
                assert (math.isnan(x) and math.isnan(y)) or x == y, (what, x, y)
            else:
                atol = 4 * np.finfo(tol_dtype).eps * ks[i]
                assert abs(x - y) <= RTOL[tol_dtype] * abs(y) + atol, (what, i, x, y)
            continue
        assert x.shape == y.shape and x.dtype == y.dtype, (what, i, x.shape, y.shape, x.dtype, y.dtype)
        if y.dtype.kind != "f":
            np.testing.assert_array_equal(x, y, err_msg=f"{what} output {i}")
            continue
        atol = 4 * np.finfo(y.dtype).eps * ks[i]
        np.testing.assert_allclose(x, y, rtol=RTOL[y.dtype], atol=atol, equal_nan=True,
                                   err_msg=f"{what} output {i} (K={ks[i]})")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(GENERATORS))
@FUZZ
@given(data=st.data())
def test_op_fuzz(backend, name, data):
    kwargs, k = draw_case(data, name)
    got = call(name, backend, kwargs)

    # The same op on C-contiguous copies gives the same bits (only the layout differs).
    again = call(name, backend, contiguous(kwargs))
    assert got[0] == again[0], (got[:2], again[:2])
    if got[0] == "raise":
        assert got[1] is again[1]
        assert name in got[2], got[2]
    elif name not in IN_PLACE or backend == "numpy":
        assert_identical(got[1], again[1], f"{name} on {backend}: view vs contiguous copy")
    else:
        # A non-contiguous in-place update runs on the reference: agreement within tolerance.
        assert_close(got[1], again[1], k, f"{name} on {backend}: view vs contiguous copy")

    if got[0] == "ok" and name not in IN_PLACE:
        dtype = expected_dtype(kwargs)
        for i, out in enumerate(got[1]):
            if isinstance(out, np.ndarray):
                index = {"max_pool2d": np.int64, "conv2d_max_pool2d": np.int32}.get(name) if i == 1 else None
                want = index or dtype
                assert out.dtype == want, (name, i, out.dtype, want)
                assert out.flags.c_contiguous, (name, i)
                for v in kwargs.values():
                    if isinstance(v, np.ndarray):
                        assert not np.shares_memory(out, v), (name, i)
        if name == "max_pool2d" and got[1][1].size:
            h, w = kwargs["x"].shape[2:]
            assert 0 <= got[1][1].min() and got[1][1].max() < h * w

    if backend == "native":
        ref = call(name, "numpy", kwargs)
        assert got[0] == ref[0], (name, got[:2], ref[:2])
        if ref[0] == "raise":
            assert got[1] is ref[1], (name, got[1:], ref[1:])
        else:
            assert_close(got[1], ref[1], k, f"{name}: native vs numpy")
            # Deterministic for a given thread count.
            assert_identical(got[1], call(name, backend, kwargs)[1], f"{name}: native run twice")
        # Every SIMD path below the best one (down to portable C) agrees with the reference too.
        for isa in lower_simd_paths():
            with simd(isa):
                other = call(name, backend, kwargs)
            assert other[0] == ref[0], (name, isa, other[:2], ref[:2])
            if ref[0] == "ok":
                assert_close(other[1], ref[1], k, f"{name}: native ({isa}) vs numpy")
        if name.startswith("conv2d"):
            # Winograd wherever it can run (3x3, stride 1, pad <= 2; finite inputs): the same
            # answers within the same tolerance, and the same exceptions.
            with native_setting(conv_algorithm="winograd"):
                other = call(name, backend, kwargs)
            assert other[0] == ref[0], (name, "winograd", other[:2], ref[:2])
            if ref[0] == "ok":
                assert_close(other[1], ref[1], k, f"{name}: native (winograd) vs numpy")


BAD_VALUES = [
    None, "text", np.arange(6, dtype=np.int32).reshape(2, 3), np.zeros((2, 2), dtype=np.complex128),
    np.zeros((1, 1, 1, 1, 1)), -1, 0, 2.5, (1, 2, 3), [[1.0, 2.0], [3.0]], np.float64(np.nan),
    np.zeros((3,), dtype=bool), object(), 10**30,
]


def check_bad_argument(name, backend, kwargs, key, bad):
    """``kwargs[key]`` replaced by ``bad``: a ValueError or TypeError naming the op (or a
    result, where the replacement happens to be valid); the native backend answers
    exactly as the reference does."""
    kwargs = dict(kwargs)
    kwargs[key] = bad.copy() if name in IN_PLACE and isinstance(bad, np.ndarray) else bad
    got = call(name, backend, kwargs)
    if got[0] == "raise":
        assert got[1] in (ValueError, TypeError, MemoryError), (key, bad, got)
        assert name in got[2], (key, bad, got[2])
    if backend == "native":
        ref = call(name, "numpy", kwargs)
        assert got[0] == ref[0] and got[1] is ref[1] if got[0] == "raise" else got[0] == ref[0], (got, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_bad_argument_raises_value_or_type_error(backend, data):
    """Random ops, geometries and arguments, each replaced by one bad value."""
    name = data.draw(st.sampled_from(sorted(GENERATORS)), label="op")
    kwargs, _ = draw_case(data, name)
    key = data.draw(st.sampled_from(sorted(kwargs)), label="argument")
    check_bad_argument(name, backend, kwargs, key, data.draw(st.sampled_from(BAD_VALUES), label="bad value"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(GENERATORS))
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_argument_of_every_op_rejects_every_bad_value(backend, name, data):
    """The exhaustive, deterministic sweep behind the random test above: the random one
    once needed a lucky draw to find a ragged argmax list escaping as numpy's unnamed error."""
    kwargs, _ = draw_case(data, name)
    for key in sorted(kwargs):
        for bad in BAD_VALUES:
            check_bad_argument(name, backend, kwargs, key, bad)


# ---------------------------------------------------------------------------
# Batch normalisation: forward and backward share a cache, so they are fuzzed
# together here rather than through GENERATORS.

def gen_batch_norm(draw):
    n = draw(BATCH)
    shape = draw(st.sampled_from([(n, draw(SIZE)), (n, draw(SMALL), draw(SIZE), draw(SIZE))]))
    per_channel = draw(st.booleans())
    d = shape[1] if per_channel and len(shape) == 4 else math.prod(shape[1:])
    dt = draw_dtype(draw)
    stats_layout = st.sampled_from(["c", "strided", "reversed"])  # updated in place: writeable
    kwargs = dict(x=draw_array(draw, shape, dt, -3.0, 3.0),
                  gamma=draw_array(draw, (d,), draw_dtype(draw), 0.5, 2.0, specials=False),
                  beta=draw_array(draw, (d,), dt, specials=False),
                  running_mean=draw_array(draw, (d,), draw_dtype(draw), specials=False, layout=draw(stats_layout)),
                  running_var=draw_array(draw, (d,), draw_dtype(draw), 0.5, 2.0, specials=False,
                                         layout=draw(stats_layout)),
                  momentum=draw(st.floats(0.0, 1.0)), eps=draw(st.sampled_from([1e-7, 1e-5, 1e-3])),
                  train=n > 0 and draw(st.booleans()), per_channel=per_channel)
    return kwargs, draw_array(draw, shape, draw_dtype(draw))


def run_batch_norm(backend, kwargs, dout):
    """([y, running_mean, running_var, dx, dgamma, dbeta], cache) on copies of the arguments."""
    args = deep_copy(kwargs)
    with fastnn.backend(backend):
        y, cache = ops.batch_norm_forward(**args)
        dx, dgamma, dbeta = ops.batch_norm_backward(dout.copy(), cache)
    for key in ("x", "gamma", "beta"):
        np.testing.assert_array_equal(args[key], kwargs[key], err_msg=f"batch_norm_forward modified {key}")
    return [y, args["running_mean"], args["running_var"], dx, dgamma, dbeta], cache


def _finite_max(a):
    a = np.abs(np.asarray(a, np.float64))
    return a[np.isfinite(a)].max(initial=0.0)


@requires_native
@FUZZ
@given(data=st.data())
def test_batch_norm_fuzz(data):
    """Native against the reference within the dtype's tolerance of each output's own
    magnitude (y and dx: a few roundings of k = gamma * inv_std times terms of x or dy;
    dgamma and dbeta: sums of N * S terms), NaN and Inf in the same places; the same
    bits for a view as for a C-contiguous copy, run twice, on every SIMD path and at
    1 to 3 threads; the promoted dtypes; the running statistics updated alike."""
    kwargs, dout = data.draw(st.composite(gen_batch_norm)(), label="batch_norm")
    want, cache = run_batch_norm("numpy", kwargs, dout)
    got, _ = run_batch_norm("native", kwargs, dout)
    dtype = np.result_type(kwargs["x"], kwargs["gamma"], kwargs["beta"])
    grad_dtype = np.result_type(dtype, dout)
    for i, dt in enumerate([dtype, kwargs["running_mean"].dtype, kwargs["running_var"].dtype] + [grad_dtype] * 3):
        assert got[i].dtype == dt and want[i].dtype == dt, (i, got[i].dtype, want[i].dtype, dt)

    x3 = np.asarray(cache["x3"], np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: inf - inf in the scale, not an error
        k = _finite_max(cache["gamma"] * cache["inv_std"])
        xn = _finite_max((x3 - cache["mean"][:, None]) * cache["inv_std"][:, None])
        # The mean is stored rounded to the dtype, off by up to a rounding of the feature's
        # largest |x|; the backward's xn = (x - mean) inv_std inherits that times inv_std,
        # which outgrows xn itself where a feature's values sit far from 0 and close together.
        mean_error = _finite_max(np.abs(x3).max(axis=(0, 2), initial=0.0) * cache["inv_std"]) if x3.size else 0.0
    big_x, big_dy = _finite_max(x3), _finite_max(dout)
    terms = x3.shape[0] * x3.shape[2]
    scales = [k * 2 * big_x + _finite_max(kwargs["beta"]), big_x, big_x * big_x,
              k * big_dy * (2 + xn * (1 + 2 * mean_error)), terms * big_dy * (xn + mean_error), terms * big_dy]
    # A float32 forward's statistics carry float32 rounding into a float64 backward.
    tol_dtypes = [dtype, dtype, dtype] + [min(dtype, grad_dtype, key=lambda t: t.itemsize)] * 3
    for name, g, w, scale, tol in zip(["y", "running_mean", "running_var", "dx", "dgamma", "dbeta"], got, want,
                                      scales, tol_dtypes):
        np.testing.assert_allclose(g, w, rtol=RTOL[tol], atol=8 * np.finfo(tol).eps * scale,
                                   equal_nan=True, err_msg=f"batch_norm {name}: native vs numpy")

    for backend, first in (("numpy", want), ("native", got)):
        again, _ = run_batch_norm(backend, contiguous(kwargs), np.ascontiguousarray(dout))
        assert_identical(first, again, f"batch_norm on {backend}: view vs contiguous copy")
    for isa in lower_simd_paths() + [fastnn.get_simd()]:
        for threads in (1, 2, 3):
            with simd(isa), native_setting(threads=threads):
                other, _ = run_batch_norm("native", kwargs, dout)
            assert_identical(got, other, f"batch_norm native on {isa}, {threads} threads")


@pytest.mark.parametrize("shape, per_channel", [((3, 5), False), ((2, 3, 4, 4), False), ((2, 3, 4, 4), True)])
def test_batch_norm_rejects_every_bad_value(shape, per_channel):
    """batch_norm_forward's arguments get the same sweep as the ops of GENERATORS (the
    running statistics are updated in place)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    d = shape[1] if per_channel else math.prod(shape[1:])
    kwargs = dict(x=x, gamma=np.ones(d), beta=np.zeros(d), running_mean=np.zeros(d), running_var=np.ones(d),
                  momentum=0.9, eps=1e-7, train=True, per_channel=per_channel)
    for key in sorted(kwargs):
        for bad in BAD_VALUES:
            args = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
            args[key] = bad.copy() if isinstance(bad, np.ndarray) else bad
            try:
                out, _ = ops.batch_norm_forward(**args)
            except (ValueError, TypeError, MemoryError) as exc:
                assert "batch_norm_forward" in str(exc), (key, bad, exc)
            else:
                assert out.shape == shape, (key, bad)
