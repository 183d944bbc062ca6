"""Bad input raises the documented exception, naming the op, on both backends;
and what fastnn.ops hands a backend always meets docs/BACKEND.md's guarantees."""
import re
import types

import numpy as np
import pytest

import fastnn
from fastnn import _config, _reference, _validate
from fastnn import ops as F
from helpers import BACKENDS, with_layout

X4 = np.zeros((2, 3, 5, 5))
W4 = np.zeros((4, 3, 3, 3))
X2 = np.zeros((4, 3))
W2 = np.zeros((3, 2))


def _readonly(a):
    a = np.array(a, dtype=np.float64)
    a.flags.writeable = False
    return a


def _bn(**overrides):
    args = dict(x=np.ones((4, 3)), gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3),
                running_var=np.ones(3))
    args.update(overrides)
    return lambda: F.batch_norm_forward(**args)


def _bn_edited_cache(**changes):
    """batch_norm_backward with a cache edited after batch_norm_forward made it (the kernel
    must never see arrays shorter than the features or of another dtype)."""
    def call():
        _, cache = _bn()()
        cache.update(changes)
        return F.batch_norm_backward(np.ones((4, 3)), cache)
    return call


# (op name expected in the message, exception type, call)
CASES = [
    # dtypes: integer, bool, complex, float16, object, strings -> TypeError
    ("matmul", TypeError, lambda: F.matmul(np.ones((2, 2), np.int64), np.ones((2, 2)))),
    ("matmul", TypeError, lambda: F.matmul(np.ones((2, 2), bool), np.ones((2, 2)))),
    ("matmul", TypeError, lambda: F.matmul(np.ones((2, 2), np.complex128), np.ones((2, 2)))),
    ("matmul", TypeError, lambda: F.matmul(np.ones((2, 2), np.float16), np.ones((2, 2)))),
    ("matmul", TypeError, lambda: F.matmul(np.array([[1.0, None]], dtype=object), np.ones((2, 2)))),
    ("matmul", TypeError, lambda: F.matmul([[1, 2]], [[1.0], [2.0]])),  # a list of ints is integer input
    ("relu", TypeError, lambda: F.relu(["a", "b"])),
    ("relu", TypeError, lambda: F.relu(None)),
    ("sigmoid", TypeError, lambda: F.sigmoid(np.arange(3))),
    ("conv2d", TypeError, lambda: F.conv2d(X4.astype(np.float16), W4)),
    ("softmax_cross_entropy", TypeError, lambda: F.softmax_cross_entropy(np.zeros((2, 3), np.int32), [0, 1])),
    # matmul / linear shapes
    ("matmul", ValueError, lambda: F.matmul(np.ones(3), np.ones((3, 2)))),
    ("matmul", ValueError, lambda: F.matmul(np.ones((2, 3)), np.ones((4, 2)))),
    # gemm: flags, scalars, shapes under op(), and c (written in place)
    ("gemm", TypeError, lambda: F.gemm(np.ones((2, 2), np.int64), np.ones((2, 2)))),
    ("gemm", ValueError, lambda: F.gemm(np.ones(3), np.ones((3, 2)))),
    ("gemm", ValueError, lambda: F.gemm(X2, np.ones((4, 2)))),
    ("gemm", ValueError, lambda: F.gemm(X2, np.ones((3, 4)), trans_a=True)),
    ("gemm", ValueError, lambda: F.gemm(X2, W2, trans_b=True)),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, trans_a="yes")),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, trans_b=None)),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, alpha="2")),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, alpha=1j)),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, np.zeros((4, 2)), beta=None)),
    ("gemm", ValueError, lambda: F.gemm(X2, W2, beta=0.5)),
    ("gemm", ValueError, lambda: F.gemm(X2, W2, np.zeros((4, 3)))),
    ("gemm", ValueError, lambda: F.gemm(X2, W2, np.zeros(8))),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, _readonly(np.zeros((4, 2))))),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, np.zeros((4, 2), np.int64))),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, [[0.0, 0.0]] * 4)),
    ("gemm", TypeError, lambda: F.gemm(X2, W2, np.zeros((4, 2), np.float32))),
    ("gemm", MemoryError, lambda: F.gemm(np.empty((1 << 21, 1)), np.empty((1 << 21, 1)), trans_b=True)),
    ("linear", ValueError, lambda: F.linear(np.ones(3), W2)),
    ("linear", ValueError, lambda: F.linear(X2, np.ones((3, 2, 1)))),
    ("linear", ValueError, lambda: F.linear(np.ones((4, 5)), W2)),
    ("linear", ValueError, lambda: F.linear(X2, W2, np.ones(3))),
    ("linear", ValueError, lambda: F.linear(X2, W2, activation="gelu")),
    ("linear", ValueError, lambda: F.linear(X2, W2, activation="leaky_relu", alpha=-0.1)),
    ("linear", TypeError, lambda: F.linear(X2, W2, activation="elu", alpha="1")),
    ("linear", ValueError, lambda: F.linear(X2, np.ones((3, 0)))),
    ("linear_backward", ValueError, lambda: F.linear_backward(np.ones((4, 2)), X2, W2, activation="relu")),
    ("linear_backward", ValueError, lambda: F.linear_backward(np.ones((4, 3)), X2, W2)),
    ("linear_backward", ValueError, lambda: F.linear_backward(np.ones((4, 2)), X2, W2, activation="tanh",
                                                              y=np.ones((2, 4)))),
    # activations
    ("relu_backward", ValueError, lambda: F.relu_backward(np.ones(3), np.ones(4))),
    ("sigmoid_backward", ValueError, lambda: F.sigmoid_backward(np.ones((2, 3)), np.ones((3, 2)))),
    ("leaky_relu", TypeError, lambda: F.leaky_relu(np.ones(3), alpha="0.1")),
    ("elu_backward", TypeError, lambda: F.elu_backward(np.ones(3), np.ones(3), alpha=None)),
    ("activation", ValueError, lambda: F.activation(np.ones(3), "swish")),
    ("activation_backward", ValueError, lambda: F.activation_backward(np.ones(3), "relu", y=np.ones(3))),
    ("activation_backward", ValueError, lambda: F.activation_backward(np.ones(3), "sigmoid")),
    # im2col / col2im
    ("im2col", ValueError, lambda: F.im2col(np.zeros((3, 5, 5)), 3, 3)),
    ("im2col", ValueError, lambda: F.im2col(X4, 6, 3)),               # filter larger than the input
    ("im2col", ValueError, lambda: F.im2col(X4, 8, 3, pad=1)),        # ... than the padded input
    ("im2col", ValueError, lambda: F.im2col(X4, 3, 3, stride=0)),
    ("im2col", ValueError, lambda: F.im2col(X4, 3, 3, stride=(1, -1))),
    ("im2col", ValueError, lambda: F.im2col(X4, 3, 3, pad=-1)),
    ("im2col", ValueError, lambda: F.im2col(X4, 3, 3, pad=(1, 1, 1))),
    ("im2col", TypeError, lambda: F.im2col(X4, 3, 3, stride=1.5)),
    ("im2col", TypeError, lambda: F.im2col(X4, 3, 3, stride=True)),
    ("im2col", TypeError, lambda: F.im2col(X4, 3.0, 3)),
    ("im2col", ValueError, lambda: F.im2col(X4, 0, 3)),
    ("im2col", ValueError, lambda: F.im2col(np.zeros((2, 0, 5, 5)), 3, 3)),
    ("col2im", ValueError, lambda: F.col2im(np.zeros((17, 27)), (2, 3, 5, 5), 3, 3)),
    ("col2im", ValueError, lambda: F.col2im(np.zeros((18, 27)), (2, 3, 5), 3, 3)),
    ("col2im", ValueError, lambda: F.col2im(np.zeros((18, 27)), (2, -3, 5, 5), 3, 3)),
    ("col2im", ValueError, lambda: F.col2im(np.zeros((18, 27)), (2, 3, 2, 2), 3, 3)),
    # conv2d
    ("conv2d", ValueError, lambda: F.conv2d(X4, np.zeros((4, 2, 3, 3)))),         # channels differ
    ("conv2d", ValueError, lambda: F.conv2d(X4, np.zeros((4, 3, 3)))),
    ("conv2d", ValueError, lambda: F.conv2d(X4[0], W4)),
    ("conv2d", ValueError, lambda: F.conv2d(X4, W4, np.zeros(3))),
    ("conv2d", ValueError, lambda: F.conv2d(X4, np.zeros((4, 3, 7, 1)))),
    ("conv2d", ValueError, lambda: F.conv2d(X4, W4, stride=0)),
    ("conv2d", ValueError, lambda: F.conv2d(X4, W4, pad=-2)),
    ("conv2d", ValueError, lambda: F.conv2d(X4, np.zeros((0, 3, 3, 3)))),
    ("conv2d", ValueError, lambda: F.conv2d(X4, W4, activation="max")),
    ("conv2d_backward", ValueError, lambda: F.conv2d_backward(np.zeros((2, 4, 5, 5)), X4, W4)),
    ("conv2d_backward", ValueError, lambda: F.conv2d_backward(np.zeros((2, 4, 3, 3)), X4, np.zeros((4, 2, 3, 3)))),
    # pooling
    ("max_pool2d", ValueError, lambda: F.max_pool2d(X4, 2, pad=2)),               # 2*pad > pool
    ("max_pool2d", ValueError, lambda: F.max_pool2d(X4, 3, 2, pad=(1, 2))),
    ("max_pool2d", ValueError, lambda: F.max_pool2d(X4, 0)),
    ("max_pool2d", ValueError, lambda: F.max_pool2d(X4, 6)),
    ("max_pool2d", ValueError, lambda: F.max_pool2d(X4, 2, stride=0)),
    ("max_pool2d", ValueError, lambda: F.max_pool2d(X4[0], 2)),
    ("max_pool2d", TypeError, lambda: F.max_pool2d(X4, 2.5)),
    ("max_pool2d_backward", TypeError,
     lambda: F.max_pool2d_backward(np.zeros((2, 3, 2, 2)), np.zeros((2, 3, 2, 2)), X4.shape, 2)),
    ("max_pool2d_backward", ValueError,
     lambda: F.max_pool2d_backward(np.zeros((2, 3, 2, 2)), np.full((2, 3, 2, 2), 25), X4.shape, 2)),
    ("max_pool2d_backward", ValueError,
     lambda: F.max_pool2d_backward(np.zeros((2, 3, 2, 2)), np.full((2, 3, 2, 2), -1), X4.shape, 2)),
    ("max_pool2d_backward", ValueError,
     lambda: F.max_pool2d_backward(np.zeros((2, 3, 2, 2)), np.zeros((2, 3, 2, 1), np.int64), X4.shape, 2)),
    ("max_pool2d_backward", ValueError,
     lambda: F.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.int64), X4.shape, 2)),
    ("avg_pool2d", ValueError, lambda: F.avg_pool2d(X4, 2, pad=(0, 2))),
    ("avg_pool2d", ValueError, lambda: F.avg_pool2d(X4, 2, stride=(1, 0))),
    ("avg_pool2d_backward", ValueError, lambda: F.avg_pool2d_backward(np.zeros((2, 3, 3, 2)), X4.shape, 2)),
    ("avg_pool2d_backward", ValueError, lambda: F.avg_pool2d_backward(np.zeros((2, 3, 2, 2)), (2, 3, 5), 2)),
    # softmax and losses
    ("softmax", ValueError, lambda: F.softmax(np.ones((2, 3)), axis=2)),
    ("log_softmax", ValueError, lambda: F.log_softmax(np.ones((2, 3)), axis=-3)),
    ("softmax", ValueError, lambda: F.softmax(np.float64(1.0))),
    ("softmax", TypeError, lambda: F.softmax(np.ones(3), axis=0.5)),
    ("softmax_cross_entropy", ValueError, lambda: F.softmax_cross_entropy(np.zeros((2, 3)), [0, 3])),
    ("softmax_cross_entropy", ValueError, lambda: F.softmax_cross_entropy(np.zeros((2, 3)), [-1, 0])),
    ("softmax_cross_entropy", TypeError, lambda: F.softmax_cross_entropy(np.zeros((2, 3)), [0.0, 1.5])),
    ("softmax_cross_entropy", TypeError, lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([True, False]))),
    ("softmax_cross_entropy", ValueError, lambda: F.softmax_cross_entropy(np.zeros((2, 3)), [0, 1, 2])),
    ("softmax_cross_entropy", ValueError, lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.zeros((2, 4)))),
    ("softmax_cross_entropy", ValueError, lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3, 1)))),
    ("softmax_cross_entropy", ValueError, lambda: F.softmax_cross_entropy(np.zeros(3), [0])),
    ("softmax_cross_entropy", ValueError, lambda: F.softmax_cross_entropy(np.zeros((2, 0)), [0, 0])),
    ("mean_squared_error", ValueError, lambda: F.mean_squared_error(np.ones(3), np.ones(4))),
    ("mean_squared_error", TypeError, lambda: F.mean_squared_error(np.ones(3), np.ones(3, np.int64))),
    ("sigmoid_binary_cross_entropy", ValueError,
     lambda: F.sigmoid_binary_cross_entropy(np.ones((2, 1)), np.ones(2))),
    # optimizer updates
    ("sgd_update", ValueError, lambda: F.sgd_update(np.ones(3), np.ones(4), 0.1)),
    ("sgd_update", TypeError, lambda: F.sgd_update(np.ones(3, np.int64), np.ones(3), 0.1)),
    ("sgd_update", TypeError, lambda: F.sgd_update(_readonly([1.0, 2.0]), np.ones(2), 0.1)),
    ("sgd_update", TypeError, lambda: F.sgd_update([1.0, 2.0], np.ones(2), 0.1)),
    ("sgd_update", TypeError, lambda: F.sgd_update(np.ones(2), np.ones(2), "0.1")),
    ("momentum_update", ValueError, lambda: F.momentum_update(np.ones(3), np.ones(3), np.ones(2), 0.1)),
    ("momentum_update", TypeError, lambda: F.momentum_update(np.ones(3), np.ones(3), _readonly(np.ones(3)), 0.1)),
    ("nesterov_update", TypeError, lambda: F.nesterov_update(np.ones(3), np.ones(3, np.complex64), np.ones(3), 0.1)),
    ("adagrad_update", ValueError, lambda: F.adagrad_update(np.ones(3), np.ones(3), np.ones((3, 1)), 0.1)),
    ("rmsprop_update", TypeError, lambda: F.rmsprop_update(np.ones(3), np.ones(3), np.ones(3, np.float16), 0.1)),
    ("adam_update", ValueError, lambda: F.adam_update(np.ones(3), np.ones(3), np.ones(3), np.ones(4), 0.1)),
    ("adam_update", TypeError, lambda: F.adam_update(np.ones(3), np.ones(3), np.ones(3), None, 0.1)),
    # batch normalisation
    ("batch_norm_forward", ValueError, _bn(gamma=np.ones(4))),
    ("batch_norm_forward", ValueError, _bn(x=np.ones((4, 3, 2)))),
    ("batch_norm_forward", ValueError, _bn(x=np.ones((0, 3)))),
    ("batch_norm_forward", ValueError, _bn(running_var=np.ones(2))),
    ("batch_norm_forward", TypeError, _bn(running_mean=_readonly(np.zeros(3)))),
    ("batch_norm_forward", TypeError, _bn(x=np.ones((4, 3), np.int32))),
    ("batch_norm_forward", ValueError, _bn(x=np.ones((2, 3, 2, 2)))),    # gamma (3,) but C*H*W = 12
    ("batch_norm_forward", ValueError, _bn(eps=float("nan"))),
    ("batch_norm_forward", ValueError, _bn(eps=-1e-5)),
    ("batch_norm_backward", TypeError, lambda: F.batch_norm_backward(np.ones((4, 3)), None)),
    ("batch_norm_backward", ValueError, lambda: F.batch_norm_backward(np.ones((3, 3)), _bn()()[1])),
    ("batch_norm_backward", TypeError, _bn_edited_cache(mean=None)),
    ("batch_norm_backward", TypeError, _bn_edited_cache(inv_std=None)),
    ("batch_norm_backward", TypeError, _bn_edited_cache(gamma=np.ones(3, np.float32))),
    ("batch_norm_backward", ValueError, _bn_edited_cache(gamma=np.ones(1))),
    ("batch_norm_backward", ValueError, _bn_edited_cache(mean=np.zeros((3, 1)))),
    ("batch_norm_backward", TypeError, _bn_edited_cache(x3=[[1.0]])),
    ("batch_norm_backward", ValueError, _bn_edited_cache(x3=np.ones((4, 2, 1)))),
    ("batch_norm_backward", ValueError, _bn_edited_cache(x_shape=(4, 2))),
    ("batch_norm_backward", TypeError, _bn_edited_cache(train="yes")),
    # sizes that overflow int64 or cannot fit in memory are refused before allocating
    ("matmul", MemoryError, lambda: F.matmul(np.empty((1 << 21, 1)), np.empty((1, 1 << 21)))),
    ("conv2d", MemoryError, lambda: F.conv2d(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), pad=10**6)),
    ("conv2d", ValueError, lambda: F.conv2d(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), pad=10**10)),
    ("im2col", MemoryError, lambda: F.im2col(np.ones((1, 1, 1, 1)), 1, 1, pad=(10**6, 10**6))),
    ("avg_pool2d_backward", ValueError,
     lambda: F.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 10**10, 10**10), 10**10)),
    ("avg_pool2d_backward", ValueError, lambda: F.avg_pool2d_backward(np.ones((1, 1, 2, 2)), np.array(5), 2)),
    ("avg_pool2d_backward", ValueError,
     lambda: F.avg_pool2d_backward(np.ones((1, 1, 2, 2)), np.ones((2, 2), np.int64), 2)),
    # a legal pad of half a 2^33 window: the padded input the reference would copy is refused on both backends
    ("avg_pool2d", MemoryError, lambda: F.avg_pool2d(np.ones((1, 1, 3, 3)), 2**33, 1, stride=1, pad=(2**32, 0))),
    ("avg_pool2d_backward", MemoryError,
     lambda: F.avg_pool2d_backward(np.ones((1, 1, 1, 3)), (1, 1, 3, 3), 2**33, 1, stride=1, pad=(2**32, 0))),
    ("max_pool2d_backward", MemoryError,
     lambda: F.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), (1, 1, 10**6, 10**6),
                                   10**6)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,exc,call", CASES, ids=[f"{i}-{c[0]}-{c[1].__name__}" for i, c in enumerate(CASES)])
def test_bad_input_raises(backend, op, exc, call):
    with fastnn.backend(backend):
        with pytest.raises(exc, match=rf"^{re.escape(op)}: ") as info:
            call()
    assert type(info.value) is exc  # not a subclass standing in (e.g. numpy's AxisError)


def test_messages_say_what_was_expected_and_got():
    with pytest.raises(TypeError, match=r"softmax_cross_entropy: expected integer labels of shape \(2,\) or "
                                        r"float32/float64 rows of shape \(2, 3\), got int64 target of shape \(2, 1\)"):
        F.softmax_cross_entropy(np.zeros((2, 3)), np.array([[0], [2]]))
    with pytest.raises(ValueError, match=r"conv2d: x has 3 channels \(shape \(2, 3, 5, 5\)\) but W expects 2"):
        F.conv2d(X4, np.zeros((4, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*got values in \[0, 3\]"):
        F.softmax_cross_entropy(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match=r"filter \(6, 3\) is larger than the padded input \(5, 5\)"):
        F.im2col(X4, 6, 3)
    with pytest.raises(TypeError, match=r"float32 or float64.*got dtype int64"):
        F.relu(np.arange(3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_is_modified_when_validation_fails(backend):
    p = np.ones(3)
    v = np.ones(3)
    with fastnn.backend(backend), pytest.raises(ValueError):
        F.momentum_update(p, np.ones(3), np.ones(4), 0.1)
    assert np.array_equal(p, v)
    rm = np.zeros(3)
    with pytest.raises(ValueError):
        F.batch_norm_forward(np.ones((4, 3)), np.ones(3), np.zeros(3), rm, np.ones(2))
    assert np.array_equal(rm, np.zeros(3))


# ---------------------------------------------------------------------------
# What a backend receives

class _SpyBackend:
    """Wraps the reference and checks, on every call, what docs/BACKEND.md promises."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        target = getattr(_reference, name)

        def spy(*args):
            arrays = [a for a in args if isinstance(a, np.ndarray)]
            floats = [a for a in arrays if a.dtype.kind == "f"]
            ints = [a for a in arrays if a.dtype.kind != "f"]
            assert all(a.flags.c_contiguous for a in arrays), name
            assert all(a.dtype in (np.float32, np.float64) for a in floats), name
            assert len({a.dtype for a in floats}) <= 1, f"{name}: mixed dtypes {[a.dtype for a in floats]}"
            assert all(a.dtype == np.int64 for a in ints), name
            for a in args:
                if isinstance(a, tuple):
                    assert len(a) in (2, 4) and all(type(v) is int for v in a), (name, a)
                if isinstance(a, str) or a is None:
                    assert a is None or a in F.ACTIVATIONS, (name, a)
                if isinstance(a, (float, np.floating)):
                    assert type(a) is float, (name, a)
            self.calls.append(name)
            out = target(*args)
            for o in out if isinstance(out, tuple) else (out,):
                if isinstance(o, np.ndarray):
                    assert not any(np.shares_memory(o, a) for a in arrays), f"{name} returned a view of an input"
            return out

        return spy


def test_ops_hand_backends_what_the_contract_promises(monkeypatch, rng):
    spy = _SpyBackend()
    monkeypatch.setattr(_config, "active_backend", lambda: spy)

    def odd(shape, dtype=np.float32):
        return with_layout(rng.standard_normal(shape).astype(dtype), "reversed")

    x, W, b = odd((3, 2, 7, 6)), odd((4, 2, 3, 2), np.float64), odd((4,))
    y = F.conv2d(x, W, b, stride=(2, 1), pad=1, activation="leaky_relu")
    F.conv2d_backward(with_layout(y, "fortran"), x, W, stride=(2, 1), pad=1)
    col = F.im2col(x, 3, 2, 2, 1)
    F.col2im(with_layout(col, "strided"), x.shape, 3, 2, 2, 1)
    yp, arg = F.max_pool2d(x, 3, 2, stride=(2, 1), pad=(1, 1))
    F.max_pool2d_backward(with_layout(yp, "strided"), arg.astype(np.int32), x.shape, 3, 2, stride=(2, 1), pad=(1, 1))
    F.avg_pool2d_backward(F.avg_pool2d(x, 2), x.shape, 2)
    h = F.linear(x, odd((84, 5), np.float64), odd((5,)), activation="elu")
    F.linear_backward(odd((3, 5)), x, odd((84, 5)), activation="elu", y=h)
    F.matmul(odd((3, 4)), odd((4, 2)))
    for name in ("relu", "sigmoid", "tanh", "softplus", "step", "identity"):
        getattr(F, name)(odd((2, 3)))
    F.leaky_relu(odd((2, 3)), 0.1)
    F.elu(odd((2, 3)), np.float32(0.5))
    for name in ("relu_backward", "softplus_backward", "sigmoid_backward", "tanh_backward"):
        getattr(F, name)(odd((2, 3)), odd((2, 3), np.float64))
    F.leaky_relu_backward(odd((2, 3)), odd((2, 3)), 1)
    F.elu_backward(odd((2, 3)), odd((2, 3)), 1)
    F.softmax(odd((2, 3, 4)), axis=1)
    F.log_softmax(odd((2, 3, 4)), axis=0)
    F.softmax_cross_entropy(odd((3, 4)), np.array([0, 3, 1], np.uint8)[::-1])
    F.softmax_cross_entropy(odd((3, 4)), odd((3, 4), np.float64))
    F.mean_squared_error(odd((3,)), odd((3,), np.float64))
    F.sigmoid_binary_cross_entropy(odd((3,)), odd((3,)))
    p, g, m, v = (np.ones(5, np.float32) for _ in range(4))
    F.adam_update(p, g, m, v, 0.1)
    F.sgd_update(p, g, np.float64(0.1), weight_decay=1)
    called = set(spy.calls)
    assert {"conv2d", "conv2d_backward", "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
            "avg_pool2d_backward", "linear", "linear_backward", "matmul", "softmax", "log_softmax",
            "softmax_cross_entropy", "mean_squared_error", "sigmoid_binary_cross_entropy", "adam_update",
            "sgd_update", "leaky_relu_backward", "elu_backward"} <= called


def test_optimizer_layouts_route_to_the_reference(monkeypatch):
    """Only all-C-contiguous, one-dtype arrays reach the active backend's kernel."""
    spy = _SpyBackend()
    monkeypatch.setattr(_config, "active_backend", lambda: spy)
    p = np.ones((4, 4))
    F.sgd_update(p, np.ones((4, 4)), 0.5)
    F.sgd_update(p[:, ::2], np.ones((4, 2)), 0.5)        # a strided view: updated by the reference
    F.sgd_update(p, np.ones((4, 4), np.float32), 0.5)    # mixed dtypes: the reference
    assert spy.calls == ["sgd_update"]
    assert np.all(p[:, ::2] == -0.5) and np.all(p[:, 1::2] == 0.0)


def test_gemm_hands_its_backend_a_c_it_can_write_in_place(monkeypatch, rng):
    """c reaches the backend itself where the GEMM writes its rows in place and it shares no
    memory with a or b; any other c goes as a C-order copy whose values are copied back."""
    seen = []

    def spy_gemm(a, b, c, trans_a, trans_b, alpha, beta):
        assert _validate.gemm_readable(a) and _validate.gemm_readable(b)
        assert a.dtype == b.dtype and (c is None or c.dtype == a.dtype)
        assert type(trans_a) is bool and type(trans_b) is bool and type(alpha) is float and type(beta) is float
        if c is not None:
            assert _validate.rows_writable_in_place(c)
            assert not (np.may_share_memory(c, a) or np.may_share_memory(c, b))
        seen.append(c)
        return _reference.gemm(a, b, c, trans_a, trans_b, alpha, beta)

    monkeypatch.setattr(_config, "active_backend", lambda: types.SimpleNamespace(gemm=spy_gemm))
    a = rng.standard_normal((4, 4))
    b = with_layout(rng.standard_normal((4, 3)), "fortran")
    want = a @ b
    assert F.gemm(a, b, trans_a=np.bool_(False), alpha=np.float32(1)) is not None and seen[-1] is None
    for layout, in_place in (("c", True), ("sliced", True), ("fortran", False), ("strided", False),
                             ("reversed", False)):
        c = with_layout(np.zeros((4, 3)), layout)
        assert F.gemm(a, b, c) is c
        assert (seen[-1] is c) == in_place, layout
        np.testing.assert_array_equal(c, want)
    c = with_layout(np.zeros((4, 1)), "strided")   # (4, 1) with a column stride of two items
    F.gemm(a, b[:, :1], c)
    assert seen[-1] is not c
    np.testing.assert_allclose(c, want[:, :1])
    s = a.copy()
    F.gemm(s, a, s, trans_b=1, beta=1)       # c is a: the product reads the copy's old values
    assert seen[-1] is not s
    np.testing.assert_allclose(s, a @ a.T + a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_dimensional_integer_arrays_are_ints(backend):
    x = np.arange(50.0).reshape(1, 2, 5, 5)
    W = np.ones((1, 2, 3, 3))
    with fastnn.backend(backend):
        np.testing.assert_array_equal(F.conv2d(x, W, stride=np.array(2), pad=np.array(1)),
                                      F.conv2d(x, W, stride=2, pad=1))
        for a, b in zip(F.max_pool2d(x, np.array(2), pad=np.array(1)), F.max_pool2d(x, 2, pad=1)):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(TypeError, match=r"^conv2d: expected stride to be an int"):
            F.conv2d(x, W, stride=np.array(2.0))


def test_an_empty_weight_dimension_is_named_without_a_batch():
    # W has no batch axis: the message names every dimension of it
    with pytest.raises(ValueError, match=r"linear: expected every dimension of W to be >= 1, got shape \(4, 0\)"):
        F.linear(np.ones((2, 4), np.float32), np.ones((4, 0), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: expected every dimension of W to be >= 1"):
        F.conv2d(np.ones((2, 1, 4, 4), np.float32), np.ones((0, 1, 3, 3), np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_arrays_that_are_written_may_not_share_memory(backend):
    # Each of p and the states is read and written in one pass: overlapping, the two backends
    # gave different answers (adagrad with h = buf[1:] and p = buf[:16]; adam with m is v).
    with fastnn.backend(backend):
        buf = np.arange(1.0, 18.0)
        with pytest.raises(ValueError, match="adagrad_update: p and h share memory"):
            F.adagrad_update(buf[:16], np.ones(16), buf[1:], 0.1)
        m = np.zeros(4)
        with pytest.raises(ValueError, match="adam_update: m and v share memory"):
            F.adam_update(np.ones(4), np.ones(4), m, m, 0.1)
        np.testing.assert_array_equal(buf, np.arange(1.0, 18.0))       # refused before any write
        p, v = buf[0:16:2], buf[1:16:2]                                # interleaved: no element in common
        F.momentum_update(p, np.ones(8), v, 0.5)
        np.testing.assert_array_equal(p, np.arange(1.0, 16.0, 2) + (0.9 * np.arange(2.0, 17.0, 2) - 0.5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_running_statistics_may_not_share_memory(backend):
    # Updated in place after the kernel reads x, gamma and beta; aliased, running_var took the
    # mean's update too, and a running statistic inside x changed what the backward reads.
    x = np.arange(12.0).reshape(4, 3)
    stats = np.zeros(3)
    with fastnn.backend(backend):
        with pytest.raises(ValueError, match="batch_norm_forward: running_mean and running_var share memory"):
            F.batch_norm_forward(x, np.ones(3), np.zeros(3), stats, stats)
        with pytest.raises(ValueError, match="batch_norm_forward: running_var and x share memory"):
            F.batch_norm_forward(x, np.ones(3), np.zeros(3), np.zeros(3), x[0])
        np.testing.assert_array_equal(x, np.arange(12.0).reshape(4, 3))
        ones = np.ones(3)                                              # inference writes nothing: allowed
        out, _ = F.batch_norm_forward(x, np.ones(3), np.zeros(3), ones, ones, train=False)
        np.testing.assert_allclose(out, (x - 1) / np.sqrt(1 + 1e-7))
        mean_var = np.zeros(6)                                         # one buffer, disjoint halves
        F.batch_norm_forward(x, np.ones(3), np.zeros(3), mean_var[:3], mean_var[3:], momentum=0.0)
        np.testing.assert_allclose(mean_var, [4.5, 5.5, 6.5, 11.25, 11.25, 11.25])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_convolution_padding_that_memory_cannot_hold_is_refused(backend, monkeypatch):
    # pad = stride = p: a 3 x 3 output of a 1 x 1 image, but both backends pad the image to
    # (2p + 1)^2 (p = 16000 took 8.8 GB, and past memory an OOM kill could follow)
    from fastnn import _validate
    x, W = np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1))
    monkeypatch.setattr(_validate, "MAX_BYTES", 8 * 101 ** 2)
    with fastnn.backend(backend):
        y = F.conv2d(x, W, stride=50, pad=50)                      # 101 x 101 padded: it fits
        np.testing.assert_array_equal(y[0, 0], [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
        for call in (lambda: F.conv2d(x, W, stride=51, pad=51),
                     lambda: F.conv2d_backward(np.ones((1, 1, 3, 3)), x, W, stride=51, pad=51),
                     lambda: F.conv2d_max_pool2d(x, W, stride=51, pad=51, pool_h=1),
                     lambda: F.im2col(x, 1, 1, stride=51, pad=51),
                     lambda: F.col2im(np.ones((9, 1)), x.shape, 1, 1, stride=51, pad=51)):
            with pytest.raises(MemoryError, match=r"^(conv2d|conv2d_backward|conv2d_max_pool2d|im2col|col2im): "
                                                  r"the padded input of shape \(1, 1, 103, 103\)"):
                call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_pool_windows_are_not_counted_as_memory(backend, monkeypatch):
    # The windows (output x window elements) are visited, never stored: with more of them than
    # the machine has bytes, max_pool2d raised MemoryError where avg_pool2d ran.
    from fastnn import _validate
    x = np.random.default_rng(0).standard_normal((1, 2, 40, 40))
    monkeypatch.setattr(_validate, "MAX_BYTES", 2 * x.nbytes)
    with fastnn.backend(backend):
        y, _ = F.max_pool2d(x, 16, 16, stride=1)                  # 25 x 25 windows of 256: 1.3 MB
        z, _ = F.conv2d_max_pool2d(x, np.ones((1, 2, 1, 1)), pool_h=16, pool_stride=1)
        monkeypatch.setattr(_validate, "MAX_BYTES", x.nbytes)
        with pytest.raises(MemoryError, match="max_pool2d: the padded input"):
            F.max_pool2d(x, 2, pad=1)                             # what is stored still counts
    def window_max(a):
        return np.lib.stride_tricks.sliding_window_view(a, (16, 16), axis=(2, 3)).max(axis=(-2, -1))
    np.testing.assert_array_equal(y, window_max(x))
    np.testing.assert_allclose(z, window_max(x.sum(axis=1, keepdims=True)), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_byte_swapped_array_updated_in_place_is_refused_by_name(backend):
    p = np.ones(3, dtype=">f4")
    with fastnn.backend(backend), pytest.raises(TypeError, match=r"sgd_update: p is float32 in the other byte "
                                                                 r"order \(>f4\).*newbyteorder"):
        F.sgd_update(p, np.ones(3, np.float32), 0.1)
    np.testing.assert_array_equal(p, 1.0)
