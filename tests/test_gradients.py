"""Every backward op against central differences of its forward op, in float64,
on both backends.

Each check projects the output onto a fixed random direction R, so the scalar
L = sum(R * forward(...)) has gradient backward(R, ...) with respect to each input.
"""
import numpy as np
import pytest

import fastnn
from fastnn import ops as F
from helpers import BACKENDS, assert_gradient, numerical_gradient, out_size


def _projection(rng, shape):
    return rng.standard_normal(shape)


def _check(name, analytic, numeric):
    assert analytic.shape == numeric.shape, name
    assert_gradient(analytic, numeric, err_msg=name)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.backend(request.param):
        yield request.param


# ---------------------------------------------------------------------------
# linear, with each fused activation

@pytest.mark.parametrize("act", [None, "identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"])
@pytest.mark.parametrize("x_shape", [(4, 5), (3, 2, 3), (1, 7)])
def test_linear_gradient(backend, act, x_shape, rng):
    d = int(np.prod(x_shape[1:]))
    x = rng.standard_normal(x_shape)
    W = rng.standard_normal((d, 3)) / np.sqrt(d)
    b = rng.standard_normal(3)
    alpha = 0.3 if act in ("leaky_relu", "elu") else None
    R = _projection(rng, (x_shape[0], 3))

    def loss():
        return float(np.sum(R * F.linear(x, W, b, activation=act, alpha=alpha)))

    y = F.linear(x, W, b, activation=act, alpha=alpha)
    dx, dW, db = F.linear_backward(R, x, W, activation=act, y=y, alpha=alpha)
    _check("dx", dx, numerical_gradient(loss, x))
    _check("dW", dW, numerical_gradient(loss, W))
    _check("db", db, numerical_gradient(loss, b))


def test_matmul_gradient(backend, rng):
    a = rng.standard_normal((3, 4))
    b = rng.standard_normal((4, 5))
    R = _projection(rng, (3, 5))

    def loss():
        return float(np.sum(R * F.matmul(a, b)))

    # d/da = R @ b.T and d/db = a.T @ R, in plain NumPy float64 (not the op under test)
    _check("da", R @ b.T, numerical_gradient(loss, a))
    _check("db", a.T @ R, numerical_gradient(loss, b))


# ---------------------------------------------------------------------------
# Activations

ACTIVATION_CASES = [("relu", None), ("softplus", None), ("sigmoid", None), ("tanh", None), ("identity", None)] + [
    (name, alpha) for name in ("leaky_relu", "elu") for alpha in (0.01, 0.7, 1.0, 1.8)]


@pytest.mark.parametrize("name,alpha", ACTIVATION_CASES)
def test_activation_gradient(backend, name, alpha, rng):
    x = rng.standard_normal((3, 7)) * 3
    R = _projection(rng, x.shape)

    def loss():
        return float(np.sum(R * F.activation(x, name, alpha)))

    y = F.activation(x, name, alpha)
    if name in ("sigmoid", "tanh"):
        analytic = getattr(F, name + "_backward")(R, y)
    elif name in ("leaky_relu", "elu"):
        analytic = getattr(F, name + "_backward")(R, x, alpha)
    elif name == "identity":
        analytic = F.identity_backward(R)
    else:
        analytic = getattr(F, name + "_backward")(R, x)
    _check(name, analytic, numerical_gradient(loss, x))


# ---------------------------------------------------------------------------
# Convolution

CONV_CASES = [
    # (n, c, h, w, f, fh, fw, stride, pad)
    (2, 3, 5, 5, 2, 3, 3, 1, 0),
    (2, 2, 6, 7, 3, 3, 2, 2, 1),
    (1, 2, 5, 4, 2, 2, 3, (1, 2), (2, 1)),
    (2, 1, 7, 7, 2, 3, 3, 3, 2),   # pad larger than half the kernel
    (1, 2, 3, 3, 2, 5, 5, 1, 1),   # filter larger than the input, fits with padding; 1x1 output
]


@pytest.mark.parametrize("act", [None, "relu", "tanh", "sigmoid", "leaky_relu", "elu", "softplus"])
@pytest.mark.parametrize("c, stride, pad, pool", [
    (1, 1, 0, (2, None, 0)),      # the fused native path, dx by col2im inside it
    (5, 1, 1, (3, 2, 1)),         # overlapping windows; dx on the direct path (un-fused backward)
    (2, 2, 1, (2, 1, 0)),         # stride 2: the ops one after the other
])
def test_conv2d_max_pool2d_gradient(backend, act, c, stride, pad, pool, rng):
    pool_h, pool_stride, pool_pad = pool
    x = rng.standard_normal((4, c, 9, 8))
    W = rng.standard_normal((3, c, 3, 2)) / np.sqrt(c * 6)
    b = rng.standard_normal(3)
    kw = dict(stride=stride, pad=pad, activation=act, pool_h=pool_h, pool_stride=pool_stride, pool_pad=pool_pad)
    y, argmax = F.conv2d_max_pool2d(x, W, b, **kw)
    R = _projection(rng, y.shape)

    def loss():
        return float(np.sum(R * F.conv2d_max_pool2d(x, W, b, **kw)[0]))

    dx, dW, db = F.conv2d_max_pool2d_backward(R, argmax, y, x, W, **kw)
    _check("dx", dx, numerical_gradient(loss, x))
    _check("dW", dW, numerical_gradient(loss, W))
    _check("db", db, numerical_gradient(loss, b))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradient(backend, case, rng):
    n, c, h, w, f, fh, fw, stride, pad = case
    x = rng.standard_normal((n, c, h, w))
    W = rng.standard_normal((f, c, fh, fw)) / np.sqrt(c * fh * fw)
    b = rng.standard_normal(f)
    y = F.conv2d(x, W, b, stride=stride, pad=pad)
    R = _projection(rng, y.shape)

    def loss():
        return float(np.sum(R * F.conv2d(x, W, b, stride=stride, pad=pad)))

    dx, dW, db = F.conv2d_backward(R, x, W, stride=stride, pad=pad)
    _check("dx", dx, numerical_gradient(loss, x))
    _check("dW", dW, numerical_gradient(loss, W))
    _check("db", db, numerical_gradient(loss, b))


@pytest.mark.parametrize("act", ["relu", "tanh", "softplus"])
def test_conv2d_fused_activation_gradient(backend, act, rng):
    """The layers' route: dz from the fused output with activation_backward, then conv2d_backward."""
    x = rng.standard_normal((2, 2, 5, 5))
    W = rng.standard_normal((3, 2, 3, 3)) / 4
    b = rng.standard_normal(3)
    z = F.conv2d(x, W, b, stride=2, pad=1)
    y = F.conv2d(x, W, b, stride=2, pad=1, activation=act)
    R = _projection(rng, y.shape)

    def loss():
        return float(np.sum(R * F.conv2d(x, W, b, stride=2, pad=1, activation=act)))

    dz = F.activation_backward(R, act, x=z, y=y)
    dx, dW, db = F.conv2d_backward(dz, x, W, stride=2, pad=1)
    _check("dx", dx, numerical_gradient(loss, x))
    _check("dW", dW, numerical_gradient(loss, W))


@pytest.mark.parametrize("case", CONV_CASES)
def test_col2im_is_the_gradient_of_im2col(backend, case, rng):
    n, c, h, w, f, fh, fw, stride, pad = case
    x = rng.standard_normal((n, c, h, w))
    col = F.im2col(x, fh, fw, stride=stride, pad=pad)
    R = _projection(rng, col.shape)

    def loss():
        return float(np.sum(R * F.im2col(x, fh, fw, stride=stride, pad=pad)))

    _check("dx", F.col2im(R, x.shape, fh, fw, stride=stride, pad=pad), numerical_gradient(loss, x))


# ---------------------------------------------------------------------------
# Pooling

POOL_CASES = [
    # (n, c, h, w, ph, pw, stride, pad)
    (2, 2, 4, 4, 2, 2, None, 0),
    (1, 2, 5, 7, 3, 2, 1, 0),          # overlapping windows
    (2, 1, 5, 5, 3, 3, 2, 1),
    (1, 2, 6, 5, 2, 4, (1, 3), (1, 2)),
    (1, 1, 1, 1, 1, 1, None, 0),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_gradient(backend, case, rng):
    n, c, h, w, ph, pw, stride, pad = case
    # distinct values spaced well beyond the difference step: no ties, no kinks
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w) * 0.1 + rng.uniform(0, 0.01, (n, c, h, w))
    y, argmax = F.max_pool2d(x, ph, pw, stride=stride, pad=pad)
    R = _projection(rng, y.shape)

    def loss():
        return float(np.sum(R * F.max_pool2d(x, ph, pw, stride=stride, pad=pad)[0]))

    dx = F.max_pool2d_backward(R, argmax, x.shape, ph, pw, stride=stride, pad=pad)
    _check("dx", dx, numerical_gradient(loss, x))


@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d_gradient(backend, case, rng):
    n, c, h, w, ph, pw, stride, pad = case
    x = rng.standard_normal((n, c, h, w))
    y = F.avg_pool2d(x, ph, pw, stride=stride, pad=pad)
    sh = stride if stride is not None else ph
    assert y.shape[2] == out_size(h, ph, sh if isinstance(sh, int) else sh[0], pad if isinstance(pad, int) else pad[0])
    R = _projection(rng, y.shape)

    def loss():
        return float(np.sum(R * F.avg_pool2d(x, ph, pw, stride=stride, pad=pad)))

    dx = F.avg_pool2d_backward(R, x.shape, ph, pw, stride=stride, pad=pad)
    _check("dx", dx, numerical_gradient(loss, x))


# ---------------------------------------------------------------------------
# Losses

@pytest.mark.parametrize("target_kind", ["labels", "one_hot", "probabilities", "unnormalised", "signed"])
def test_softmax_cross_entropy_gradient(backend, target_kind, rng):
    logits = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, size=5)
    # rows that are not distributions (multi-hot, sums of 0.3-2, negative entries): the
    # gradient is still that of the loss returned, -sum(t log p)
    target = {"labels": labels, "one_hot": np.eye(4)[labels],
              "probabilities": rng.dirichlet(np.ones(4), size=5),
              "unnormalised": rng.uniform(0.0, 0.5, size=(5, 4)) + np.eye(4)[labels],
              "signed": rng.standard_normal((5, 4))}[target_kind]
    _, grad = F.softmax_cross_entropy(logits, target)
    _check("dlogits", grad, numerical_gradient(lambda: F.softmax_cross_entropy(logits, target)[0], logits))


@pytest.mark.parametrize("shape", [(6,), (3, 4), (2, 2, 3)])
def test_mean_squared_error_gradient(backend, shape, rng):
    y = rng.standard_normal(shape)
    t = rng.standard_normal(shape)
    _, grad = F.mean_squared_error(y, t)
    _check("dy", grad, numerical_gradient(lambda: F.mean_squared_error(y, t)[0], y))


@pytest.mark.parametrize("shape", [(6,), (3, 4), (2, 2, 3)])
def test_sigmoid_binary_cross_entropy_gradient(backend, shape, rng):
    z = rng.standard_normal(shape) * 3
    t = rng.uniform(0, 1, shape)
    _, grad = F.sigmoid_binary_cross_entropy(z, t)
    _check("dz", grad, numerical_gradient(lambda: F.sigmoid_binary_cross_entropy(z, t)[0], z))


# ---------------------------------------------------------------------------
# Batch normalisation

@pytest.mark.parametrize("shape,per_channel", [((6, 4), False), ((3, 2, 2, 3), False), ((3, 2, 2, 3), True)])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_gradient(backend, shape, per_channel, train, rng):
    x = rng.standard_normal(shape) * 2 + 1
    d = shape[1] if per_channel else int(np.prod(shape[1:]))
    gamma = rng.uniform(0.5, 1.5, d)
    beta = rng.standard_normal(d)
    running = (rng.standard_normal(d), rng.uniform(0.5, 2, d))

    def forward():
        # fresh running statistics each call: the forward pass updates them in place
        return F.batch_norm_forward(x, gamma, beta, running[0].copy(), running[1].copy(), eps=1e-5,
                                    train=train, per_channel=per_channel)

    out, cache = forward()
    R = _projection(rng, out.shape)

    def loss():
        return float(np.sum(R * forward()[0]))

    dx, dgamma, dbeta = F.batch_norm_backward(R, cache)
    _check("dx", dx, numerical_gradient(loss, x))
    _check("dgamma", dgamma, numerical_gradient(loss, gamma))
    _check("dbeta", dbeta, numerical_gradient(loss, beta))
