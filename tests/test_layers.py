"""fastnn.layers against the book's semantics, written out here in plain NumPy,
on both backends and in float32 and float64, plus central-difference gradient
checks in float64 and the in-place parameter semantics the book relies on."""
import numpy as np
import pytest

import fastnn
from fastnn import layers as L
from conftest import requires_native
from helpers import naive_pool2d

BACKENDS = ["numpy", pytest.param("native", marks=requires_native)]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.backend(request.param):
        yield request.param


def tol(dtype, scale=1.0):
    if dtype == np.float32:
        return dict(rtol=2e-5 * scale, atol=2e-6 * scale)
    return dict(rtol=1e-10 * scale, atol=1e-12 * scale)


def close(actual, expected, dtype, scale=1.0):
    np.testing.assert_allclose(actual, expected, **tol(dtype, scale))


# ---------------------------------------------------------------- formulas (float64)

def sigmoid64(x):
    x = np.asarray(x, np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))       # an overflow-free form of 1 / (1 + e^-x)


def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def pad4(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def conv_direct(x, W, b, stride, pad):
    """Each output pixel as the sum over one receptive field."""
    x = pad4(np.asarray(x, np.float64), pad)
    W = np.asarray(W, np.float64)
    n, _, h, w = x.shape
    f, _, fh, fw = W.shape
    oh, ow = (h - fh) // stride + 1, (w - fw) // stride + 1
    out = np.empty((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            field = x[:, :, i * stride:i * stride + fh, j * stride:j * stride + fw]
            out[:, :, i, j] = np.tensordot(field, W, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def conv_direct_backward(dout, x, W, stride, pad):
    xp = pad4(np.asarray(x, np.float64), pad)
    W = np.asarray(W, np.float64)
    dout = np.asarray(dout, np.float64)
    f, _, fh, fw = W.shape
    dxp = np.zeros_like(xp)
    dW = np.zeros_like(W)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * stride, i * stride + fh), slice(j * stride, j * stride + fw)
            g = dout[:, :, i, j]                                   # (N, F)
            dW += np.tensordot(g, xp[:, :, rows, cols], axes=([0], [0]))
            dxp[:, :, rows, cols] += np.tensordot(g, W, axes=([1], [0]))
    h, w = x.shape[2], x.shape[3]
    return dxp[:, :, pad:pad + h, pad:pad + w], dW, dout.sum(axis=(0, 2, 3))


def pool_windows(x, ph, pw, stride):
    """(N, C, oh, ow, ph*pw) windows of an unpadded input, copied out by loops."""
    n, c, h, w = x.shape
    oh, ow = (h - ph) // stride + 1, (w - pw) // stride + 1
    out = np.empty((n, c, oh, ow, ph * pw), dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw].reshape(n, c, -1)
    return out


def book_batchnorm(x, gamma, beta, eps=10e-7):
    """Training-mode batch norm of the book on (N, D), with its backward as a closure."""
    x = np.asarray(x, np.float64)
    mu = x.mean(axis=0)
    xc = x - mu
    var = (xc ** 2).mean(axis=0)
    std = np.sqrt(var + eps)
    xn = xc / std
    out = gamma * xn + beta

    def backward(dout):
        dxn = gamma * dout
        # d/dx of the normalised value through mean and variance, the compact closed form
        dx = (dxn - dxn.mean(axis=0) - xn * (dxn * xn).mean(axis=0)) / std
        return dx, (dout * xn).sum(axis=0), dout.sum(axis=0)

    return out, mu, var, backward


# ---------------------------------------------------------------- activations

ACTIVATIONS = [
    (L.Relu, {}, lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    (L.Sigmoid, {}, sigmoid64, lambda x: sigmoid64(x) * (1 - sigmoid64(x))),
    (L.Tanh, {}, np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    (L.LeakyRelu, {"alpha": 0.1}, lambda x: np.where(x > 0, x, 0.1 * x), lambda x: np.where(x > 0, 1.0, 0.1)),
    (L.Elu, {"alpha": 1.5}, lambda x: np.where(x > 0, x, 1.5 * (np.exp(np.minimum(x, 0)) - 1)),
     lambda x: np.where(x > 0, 1.0, 1.5 * np.exp(np.minimum(x, 0)))),
    (L.Softplus, {}, lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0), sigmoid64),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,kwargs,f,df", ACTIVATIONS, ids=[a[0].__name__ for a in ACTIVATIONS])
def test_activation_forward_backward(backend, dtype, cls, kwargs, f, df, rng):
    x = (rng.standard_normal((4, 3, 5)) * 3).astype(dtype)
    x[0, 0, :2] = [40.0, -40.0]                     # far tails: no overflow, exact limits
    dout = rng.standard_normal(x.shape).astype(dtype)
    layer = cls(**kwargs)
    y = layer.forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    close(y, f(x.astype(np.float64)), dtype)
    dx = layer.backward(dout.copy())
    assert dx.dtype == dtype
    close(dx, dout.astype(np.float64) * df(x.astype(np.float64)), dtype)


def test_relu_mask_and_zero_input(backend):
    x = np.array([[-1.0, 0.0, 2.0]])
    layer = L.Relu()
    layer.forward(x)
    np.testing.assert_array_equal(layer.mask, [[True, True, False]])
    # gradient 0 at exactly 0, as the book's mask (x <= 0)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 0.0, 1.0]])


def test_relu_mask_is_assignable_as_in_the_book(backend):
    class BookRelu(L.Relu):  # chapter 5's Relu, written over fastnn's class
        def forward(self, x):
            self.mask = (x <= 0)
            out = x.copy()
            out[self.mask] = 0
            return out

        def backward(self, dout):
            dout = dout.copy()
            dout[self.mask] = 0
            return dout

    x = np.array([[-1.0, 0.0, 2.0]])
    layer = BookRelu()
    np.testing.assert_array_equal(layer.forward(x), [[0.0, 0.0, 2.0]])
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 0.0, 1.0]])
    plain = L.Relu()
    plain.forward(x)
    plain.mask = None              # cleared (e.g. before pickling): computed again when read
    np.testing.assert_array_equal(plain.mask, [[True, True, False]])
    plain.mask = np.array([[True, False, True]])  # an assigned mask decides the backward, as in the book
    np.testing.assert_array_equal(plain.backward(np.full((1, 3), 2.0)), [[0.0, 2.0, 0.0]])
    plain.forward(-x)              # a new forward drops what was assigned
    np.testing.assert_array_equal(plain.mask, [[False, True, True]])
    np.testing.assert_array_equal(plain.backward(np.ones((1, 3))), [[1.0, 0.0, 0.0]])

    class ForwardOnly(L.Relu):     # a book-style forward that sets only the mask; the inherited backward
        def forward(self, x):
            self.mask = (x <= 0)
            out = x.copy()
            out[self.mask] = 0
            return out

    layer = ForwardOnly()
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 0.0, 1.0]])


# ---------------------------------------------------------------- Affine / Flatten

@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_flattens_tensor_input(backend, dtype, rng):
    x = rng.standard_normal((5, 2, 3, 3)).astype(dtype)
    W = rng.standard_normal((18, 7)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    dout = rng.standard_normal((5, 7)).astype(dtype)
    layer = L.Affine(W, b)
    y = layer.forward(x)
    x2 = x.reshape(5, 18).astype(np.float64)
    close(y, x2 @ W.astype(np.float64) + b, dtype, scale=3)
    assert layer.original_x_shape == (5, 2, 3, 3) and layer.x.shape == (5, 18)
    dx = layer.backward(dout)
    assert dx.shape == x.shape
    close(dx, (dout.astype(np.float64) @ W.T.astype(np.float64)).reshape(x.shape), dtype, scale=3)
    close(layer.dW, x2.T @ dout.astype(np.float64), dtype, scale=3)
    close(layer.db, dout.astype(np.float64).sum(axis=0), dtype, scale=3)


def test_affine_keeps_the_given_arrays_and_sees_updates(backend, rng):
    W = rng.standard_normal((4, 3)).astype(np.float32)
    b = np.zeros(3, dtype=np.float32)
    layer = L.Affine(W, b)
    assert layer.W is W and layer.b is b          # no copy, no dtype conversion
    x = rng.standard_normal((2, 4)).astype(np.float32)
    W -= 0.5                                       # the book's optimizers update params in place
    b += 1.0
    close(layer.forward(x), x.astype(np.float64) @ W.astype(np.float64) + b, np.float32)
    W2 = rng.standard_normal((4, 3))
    layer.W = W2                                   # load_params assigns new arrays
    np.testing.assert_allclose(layer.forward(x), x @ W2 + b, rtol=1e-6)
    assert layer.W is W2


def test_integer_inputs_compute_in_float64_like_numpy(backend, rng):
    x = rng.integers(0, 256, (3, 1, 4, 4)).astype(np.uint8)     # raw image bytes
    W = rng.standard_normal((16, 2))
    y = L.Affine(W, np.zeros(2)).forward(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, x.reshape(3, -1).astype(np.float64) @ W, rtol=1e-12)
    K = rng.standard_normal((2, 1, 3, 3))
    np.testing.assert_allclose(L.Convolution(K, np.zeros(2)).forward(x), conv_direct(x, K, 0.0, 1, 0), rtol=1e-12)
    np.testing.assert_array_equal(L.Relu().forward(np.array([[-1, 2]])), [[0.0, 2.0]])
    assert L.IdentityWithLoss().forward(np.array([[1.0, 2.0]]), np.array([[1, 4]])) == 2.0


def test_flatten_round_trip(backend, rng):
    x = rng.standard_normal((3, 2, 4, 5))
    layer = L.Flatten()
    y = layer.forward(x)
    assert y.shape == (3, 40)
    np.testing.assert_array_equal(y, x.reshape(3, -1))
    np.testing.assert_array_equal(layer.backward(y * 2), x * 2)


# ---------------------------------------------------------------- losses

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_with_loss(backend, dtype, one_hot, rng):
    n, k = 6, 5
    x = (rng.standard_normal((n, k)) * 4).astype(dtype)
    labels = rng.integers(0, k, n)
    t = np.eye(k)[labels] if one_hot else labels
    layer = L.SoftmaxWithLoss()
    loss = layer.forward(x, t)
    p = softmax64(x)
    expected = -np.mean(np.log(p[np.arange(n), labels]))
    np.testing.assert_allclose(loss, expected, **tol(dtype))
    # the book's +1e-7 inside the log moves the loss by about 1e-7 / p per row
    book_loss = -np.mean(np.log(p[np.arange(n), labels] + 1e-7))
    assert abs(loss - book_loss) <= 1e-7 * np.mean(1 / p[np.arange(n), labels]) * 1.01
    close(layer.y, p, dtype)
    assert layer.t is t
    dx = layer.backward()
    close(dx, (p - np.eye(k)[labels]) / n, dtype)
    close(layer.backward(2.0), 2 * (p - np.eye(k)[labels]) / n, dtype)


def test_softmax_with_loss_extreme_logits_stay_finite(backend):
    x = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    layer = L.SoftmaxWithLoss()
    loss = layer.forward(x, np.array([1, 1]))
    np.testing.assert_allclose(loss, 1000.0)       # exact: (2000 + 0) / 2
    assert np.isfinite(layer.backward()).all()


def test_softmax_with_loss_single_sample_and_bad_labels(backend):
    layer = L.SoftmaxWithLoss()
    x = np.array([0.5, 1.5, -1.0])
    loss = layer.forward(x, np.array([0.0, 1.0, 0.0]))
    np.testing.assert_allclose(loss, -np.log(softmax64(x)[1]))
    assert layer.backward().shape == (3,)
    with pytest.raises(TypeError, match="SoftmaxWithLoss"):
        layer.forward(np.zeros((2, 3)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError):
        layer.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(RuntimeError, match="forward"):
        L.SoftmaxWithLoss().backward()


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_with_loss(backend, dtype, rng):
    y = rng.standard_normal((4, 3)).astype(dtype)
    t = rng.standard_normal((4, 3)).astype(dtype)
    layer = L.IdentityWithLoss()
    d = y.astype(np.float64) - t
    np.testing.assert_allclose(layer.forward(y, t), np.mean(d ** 2), **tol(dtype))
    close(layer.backward(), 2 * d / d.size, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_with_loss(backend, dtype, rng):
    z = (rng.standard_normal((5, 1)) * 5).astype(dtype)
    labels = rng.integers(0, 2, 5)
    layer = L.SigmoidWithLoss()
    loss = layer.forward(z, labels)                # (N,) labels for an (N, 1) output
    z64, t = z.astype(np.float64), labels.reshape(5, 1).astype(np.float64)
    p = sigmoid64(z64)
    np.testing.assert_allclose(loss, -np.mean(t * np.log(p) + (1 - t) * np.log1p(-p)), **tol(dtype, 10))
    close(layer.y, p, dtype)
    close(layer.backward(), (p - t) / 5, dtype)


# ---------------------------------------------------------------- Dropout

def test_dropout_uses_the_global_generator_like_the_book(backend, rng):
    x = rng.standard_normal((50, 8))
    np.random.seed(3)
    expected_mask = np.random.rand(*x.shape) > 0.3
    np.random.seed(3)
    layer = L.Dropout(0.3)
    y = layer.forward(x)
    np.testing.assert_array_equal(layer.mask, expected_mask)
    np.testing.assert_array_equal(y, x * expected_mask)
    dout = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(layer.backward(dout), dout * expected_mask)
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x * 0.7)


# ---------------------------------------------------------------- BatchNormalization

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 5), (4, 2, 3, 3)])
def test_batchnorm_train_eval_backward(backend, dtype, shape, rng):
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    d = int(np.prod(shape[1:]))
    gamma = (1 + 0.1 * rng.standard_normal(d)).astype(dtype)
    beta = (0.1 * rng.standard_normal(d)).astype(dtype)
    layer = L.BatchNormalization(gamma, beta, momentum=0.8)
    assert layer.gamma is gamma and layer.beta is beta
    y = layer.forward(x, train_flg=True)
    out, mu, var, ref_backward = book_batchnorm(x.reshape(shape[0], -1), gamma.astype(np.float64),
                                                beta.astype(np.float64))
    assert y.shape == shape
    # Within the dtype of each output's own magnitude: k = gamma * inv_std times x (y), sums
    # of N terms (statistics, dgamma, dbeta); the stored mean's rounding times inv_std in xn.
    rows = x.reshape(shape[0], -1).astype(np.float64)
    inv_std = 1 / np.sqrt(var + 10e-7)
    k, big_x = float(np.max(np.abs(gamma) * inv_std)), float(np.abs(rows).max())
    mean_error = float(np.max(np.abs(rows).max(0) * inv_std))
    big_xn = float(np.abs((rows - mu) * inv_std).max())

    def near(got, want, scale):
        rtol = 1e-5 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, want, rtol=rtol, atol=8 * np.finfo(dtype).eps * scale)
    near(y, out.reshape(shape), 2 * k * big_x + float(np.abs(beta).max()))
    near(layer.running_mean, 0.2 * mu, big_x)
    near(layer.running_var, 0.2 * var, big_x ** 2)
    dout = rng.standard_normal(shape).astype(dtype)
    dx, dgamma, dbeta = ref_backward(dout.reshape(shape[0], -1).astype(np.float64))
    got = layer.backward(dout)
    assert got.shape == shape
    big_dy, n = float(np.abs(dout).max()), shape[0]
    near(got, dx.reshape(shape), k * big_dy * (2 + big_xn * (1 + 2 * mean_error)))
    near(layer.dgamma, dgamma, n * big_dy * (big_xn + mean_error))
    near(layer.dbeta, dbeta, n * big_dy)
    # eval mode normalises with the running statistics
    y_eval = layer.forward(x, train_flg=False)
    x2 = x.reshape(shape[0], -1).astype(np.float64)
    expected = gamma * (x2 - 0.2 * mu) / np.sqrt(0.2 * var + 10e-7) + beta
    k_eval = float(np.max(np.abs(gamma) / np.sqrt(0.2 * var + 10e-7)))
    near(y_eval, expected.reshape(shape), 2 * k_eval * big_x + float(np.abs(beta).max()))


def test_batchnorm_backward_differentiates_the_last_forward_in_its_mode(backend, rng):
    # train, then a test-mode forward: backward is that forward's gradient, with the
    # running statistics held fixed (dx = dout * gamma / sqrt(running_var + eps)), not a
    # mix of the test-mode input and the training pass's cache
    d = 7
    gamma, beta = 1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d)
    layer = L.BatchNormalization(gamma, beta)
    layer.forward(rng.standard_normal((5, d)))
    x_eval = rng.standard_normal((2, d))
    layer.forward(x_eval, train_flg=False)
    dout = rng.standard_normal((2, d))
    dx = layer.backward(dout)
    std = np.sqrt(layer.running_var + 10e-7)
    np.testing.assert_allclose(dx, dout * gamma / std, rtol=1e-12)
    np.testing.assert_allclose(layer.dgamma, np.sum(dout * (x_eval - layer.running_mean) / std, axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.dbeta, dout.sum(axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match=r"BatchNormalization.backward: expected dout of shape \(2, 7\)"):
        layer.backward(np.ones((5, d)))  # the training batch's shape: not the last forward's
    # a 4-D training pass, then a test-mode pass on the same data flattened
    layer = L.BatchNormalization(np.ones(12), np.zeros(12))
    x = rng.standard_normal((4, 3, 2, 2))
    y = layer.forward(x)
    layer.forward(x.reshape(4, 12), train_flg=False)
    with pytest.raises(ValueError, match="expected dout of shape"):
        layer.backward(np.ones_like(y))
    with pytest.raises(TypeError, match="BatchNormalization.forward: expected train_flg to be True or False"):
        layer.forward(x, train_flg=np.array([1, 0]))


def test_dropout_checks_its_ratio_input_and_dout(backend, rng):
    for bad in (1.5, -0.5, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"Dropout: expected dropout_ratio in \[0, 1\)"):
            L.Dropout(bad)
    with pytest.raises(TypeError, match="Dropout: expected dropout_ratio to be a real number"):
        L.Dropout("0.5")
    layer = L.Dropout(0.5)
    with pytest.raises(TypeError, match="Dropout.forward: expected a real-valued array, got dtype object"):
        layer.forward(np.array([[1.0, 2.0]], dtype=object), train_flg=False)
    x = rng.standard_normal((2, 3))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"Dropout.backward: expected dout of shape \(2, 3\)"):
        layer.backward(np.ones((2, 1)))  # broadcastable, but not the output's shape
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3))), layer.mask)
    y = L.Dropout(0.25).forward(np.array([[4, 8]]), train_flg=False)  # integers, as Relu takes them
    assert y.dtype == np.float64 and np.array_equal(y, [[3.0, 6.0]])


@pytest.mark.parametrize("cls", [L.SoftmaxWithLoss, L.IdentityWithLoss, L.SigmoidWithLoss])
def test_loss_layers_check_dout_and_forget_a_forward_that_raised(backend, cls, rng):
    x = rng.standard_normal((5, 3))
    t = np.eye(3)[[0, 1, 2, 0, 1]] if cls is not L.SigmoidWithLoss else (x > 0).astype(float)
    layer = cls()
    layer.forward(x, t)
    grad = layer.backward()
    np.testing.assert_allclose(layer.backward(2.0), 2 * grad, rtol=1e-15)
    np.testing.assert_allclose(layer.backward(np.float32(0.5)), 0.5 * grad, rtol=1e-7)
    for bad in (np.ones(5), None, "a", True):
        with pytest.raises(TypeError, match=f"{cls.__name__}.backward: expected dout to be a real number"):
            layer.backward(bad)
    with pytest.raises((ValueError, TypeError)):
        layer.forward(x[:2], np.ones((3, 4)))  # targets that fit no reading of x
    with pytest.raises(RuntimeError, match=f"{cls.__name__}.backward: call forward"):
        layer.backward()


def test_flatten_backward_checks_the_shape_and_relu_takes_integer_dout(backend):
    layer = L.Flatten()
    layer.forward(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"Flatten.backward: expected dout of shape \(2, 12\)"):
        layer.backward(np.ones((2, 5)))
    assert layer.backward(np.arange(24.0).reshape(2, 12)).shape == (2, 3, 4)
    assert layer.backward(np.ones((2, 3, 4))).shape == (2, 3, 4)  # already unflattened
    relu = L.Relu()
    relu.forward(np.array([1, -2]))  # integer x is taken as float64, so integer dout is too
    np.testing.assert_array_equal(relu.backward(np.array([3, 3])), [3.0, 0.0])


def test_batchnorm_running_stats_are_rebound_not_mutated(backend, rng):
    mean0, var0 = np.ones(3), np.full(3, 2.0)
    layer = L.BatchNormalization(np.ones(3), np.zeros(3), running_mean=mean0, running_var=var0)
    layer.forward(rng.standard_normal((6, 3)))
    np.testing.assert_array_equal(mean0, 1.0)       # the book replaces the arrays
    np.testing.assert_array_equal(var0, 2.0)
    assert layer.running_mean is not mean0


def test_affine_takes_a_row_bias_and_gives_its_gradient_that_shape(backend, rng):
    # the book's broadcasting accepts b of shape (1, M); its gradient keeps b's shape so
    # that the optimizers (which check shapes) update it
    x = rng.standard_normal((4, 3))
    W = rng.standard_normal((3, 5))
    b = rng.standard_normal((1, 5))
    layer = L.Affine(W, b)
    np.testing.assert_allclose(layer.forward(x), x @ W + b, rtol=1e-12)
    dout = rng.standard_normal((4, 5))
    layer.backward(dout)
    assert layer.db.shape == (1, 5)
    np.testing.assert_allclose(layer.db, dout.sum(axis=0, keepdims=True), rtol=1e-12)
    fastnn.optim.SGD(lr=0.1).update({"b": b}, {"b": layer.db})
    assert layer.b is b and b.shape == (1, 5)


# ---------------------------------------------------------------- Convolution / pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1)])
def test_convolution(backend, dtype, stride, pad, rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    W = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    layer = L.Convolution(W, b, stride, pad)
    y = layer.forward(x)
    close(y, conv_direct(x, W, b, stride, pad), dtype, scale=5)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dout)
    dx_ref, dW_ref, db_ref = conv_direct_backward(dout, x, W, stride, pad)
    close(dx, dx_ref, dtype, scale=5)
    close(layer.dW, dW_ref, dtype, scale=10)
    close(layer.db, db_ref, dtype, scale=10)
    # the book's intermediates: col (one receptive field per row) and col_W
    col = layer.col
    assert col.shape == (y.shape[0] * y.shape[2] * y.shape[3], 3 * 3 * 2)
    close(col @ layer.col_W + b, y.transpose(0, 2, 3, 1).reshape(-1, 4), dtype, scale=5)


def test_convolution_col_is_the_current_input_when_one_array_is_refilled(backend, rng):
    layer = L.Convolution(rng.standard_normal((2, 1, 2, 2)), np.zeros(2))
    batch = rng.standard_normal((1, 1, 3, 3))
    layer.forward(batch)
    assert layer.col[0, 0] == batch[0, 0, 0, 0]
    batch[...] = rng.standard_normal(batch.shape)   # a loader's buffer, refilled in place
    layer.forward(batch)
    np.testing.assert_array_equal(layer.col[0], batch[0, 0, :2, :2].ravel())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_are_numpy_scalars_of_the_scores_dtype_as_the_books(backend, dtype):
    x = np.array([[0.0, np.log(3.0)], [0.0, 0.0]], dtype=dtype)
    cases = ((L.SoftmaxWithLoss(), np.array([1, 0]), (np.log(4 / 3) + np.log(2)) / 2),
             (L.IdentityWithLoss(), np.zeros_like(x), np.log(3.0) ** 2 / 4),
             (L.SigmoidWithLoss(), np.ones_like(x), (3 * np.log(2) + np.log(1 + 1 / 3)) / 4))
    for layer, t, expected in cases:
        loss = layer.forward(x, t)
        assert type(loss) is dtype and loss.item() == pytest.approx(expected, rel=4 * float(np.finfo(dtype).eps))
    sse = fastnn.functions.sum_squared_error(x, np.zeros_like(x))
    assert type(sse) is dtype and sse == pytest.approx(0.5 * np.log(3.0) ** 2, rel=4 * float(np.finfo(dtype).eps))


def test_convolution_col_and_col_w_are_assignable_as_in_the_book(backend, rng):
    class BookConvolution(L.Convolution):  # chapter 7's forward and backward, over fastnn's class
        def forward(self, x):
            FN, C, FH, FW = self.W.shape
            N, C, H, W = x.shape
            out_h = 1 + (H + 2 * self.pad - FH) // self.stride
            out_w = 1 + (W + 2 * self.pad - FW) // self.stride
            col = fastnn.functions.im2col(x, FH, FW, self.stride, self.pad)
            col_W = self.W.reshape(FN, -1).T
            self.x, self.col, self.col_W = x, col, col_W
            return (np.dot(col, col_W) + self.b).reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)

        def backward(self, dout):
            FN, C, FH, FW = self.W.shape
            dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
            self.db = np.sum(dout, axis=0)
            self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
            dcol = np.dot(dout, self.col_W.T)
            return fastnn.functions.col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)

    x = rng.standard_normal((2, 3, 6, 5))
    W = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    book, ours = BookConvolution(W, b, 2, 1), L.Convolution(W, b, 2, 1)
    np.testing.assert_allclose(book.forward(x), ours.forward(x), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(ours.forward(x).shape)
    np.testing.assert_allclose(book.backward(dout), ours.backward(dout), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(book.dW, ours.dW, rtol=1e-12, atol=1e-12)
    ours.col = None                # cleared: built again when read
    np.testing.assert_array_equal(ours.col, book.col)
    ours.col_W = "stale"
    ours.forward(x)                # a new forward drops what was assigned
    np.testing.assert_array_equal(ours.col_W, book.col_W)


def test_convolution_sees_in_place_and_reassigned_weights(backend, rng):
    x = rng.standard_normal((1, 1, 4, 4))
    W = rng.standard_normal((2, 1, 2, 2))
    b = np.zeros(2)
    layer = L.Convolution(W, b)
    W *= 2
    np.testing.assert_allclose(layer.forward(x), conv_direct(x, W, b, 1, 0), rtol=1e-12)
    layer.W = W[::-1].copy()
    np.testing.assert_allclose(layer.forward(x), conv_direct(x, W[::-1], b, 1, 0), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool,stride", [((2, 2), 2), ((3, 2), 1)])
def test_max_pooling(backend, dtype, pool, stride, rng):
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    layer = L.Pooling(pool[0], pool[1], stride=stride)
    y = layer.forward(x)
    windows = pool_windows(x, pool[0], pool[1], stride)
    np.testing.assert_array_equal(y, windows.max(axis=-1).astype(dtype))
    dout = rng.standard_normal(y.shape).astype(dtype)
    # gradient goes to the (first) maximum of each window; overlapping windows add up
    expected = np.zeros(x.shape)
    k = windows.argmax(axis=-1)
    for idx in np.ndindex(y.shape):
        n, c, i, j = idx
        r, s = divmod(k[idx], pool[1])
        expected[n, c, i * stride + r, j * stride + s] += dout[idx]
    close(layer.backward(dout), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, make", [("max", lambda: L.Pooling(3, 2, stride=2, pad=1)),
                                        ("avg", lambda: L.AvgPooling(3, 2, stride=2, pad=1))])
def test_pooling_layers_pad(backend, dtype, kind, make, rng):
    x = rng.standard_normal((2, 3, 7, 5)).astype(dtype)
    layer = make()
    y = layer.forward(x)
    dout = rng.standard_normal(y.shape).astype(dtype)
    want_y, want_dx = naive_pool2d(x, dout, 3, 2, (2, 2), (1, 1), kind)
    assert y.shape == want_y.shape == (2, 3, 4, 3)
    close(y, want_y, dtype)
    close(layer.backward(dout), want_dx, dtype)


def test_pooling_default_stride_is_the_books(backend, rng):
    x = rng.standard_normal((1, 1, 4, 4))
    assert L.Pooling(2, 2).forward(x).shape == (1, 1, 3, 3)     # book: stride=1


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pooling(backend, dtype, rng):
    x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
    layer = L.AvgPooling(2, 3, stride=2)
    y = layer.forward(x)
    windows = pool_windows(x, 2, 3, 2)
    close(y, windows.mean(axis=-1), dtype)
    dout = rng.standard_normal(y.shape).astype(dtype)
    expected = np.zeros(x.shape)
    for n, c, i, j in np.ndindex(y.shape):
        expected[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 3] += dout[n, c, i, j] / 6
    close(layer.backward(dout), expected, dtype)


# ---------------------------------------------------------------- computational-graph layers

def test_mul_and_add_layers_buy_apples_and_oranges():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = L.MulLayer(), L.MulLayer(), L.AddLayer(), L.MulLayer()
    price = mul_tax.forward(add.forward(mul_apple.forward(apple, apple_num),
                                        mul_orange.forward(orange, orange_num)), tax)
    assert price == pytest.approx(715.0)
    dall, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add.backward(dall)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert (dapple, dapple_num, dorange, dorange_num, dtax) == pytest.approx((2.2, 110, 3.3, 165, 650))


# ---------------------------------------------------------------- gradient checks (float64)

def numeric_grad(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        keep = x[idx]
        x[idx] = keep + h
        up = f()
        x[idx] = keep - h
        down = f()
        x[idx] = keep
        grad[idx] = (up - down) / (2 * h)
    return grad


def check_layer_gradients(layer, x, params=(), forward_kwargs=None, loss_target=None):
    """Backprop of sum(R * layer(x)) (or of the loss) against central differences, for x and params."""
    forward_kwargs = forward_kwargs or {}
    rng = np.random.default_rng(7)
    if loss_target is None:
        probe = rng.standard_normal(np.shape(layer.forward(x, **forward_kwargs)))

        def value():
            return float(np.sum(probe * layer.forward(x, **forward_kwargs)))
        value()
        dx = layer.backward(probe.copy())
    else:
        def value():
            return float(layer.forward(x, loss_target))
        value()
        dx = layer.backward()
    analytic = {"x": dx}
    for name, grad_name in params:
        analytic[name] = np.array(getattr(layer, grad_name))
    numeric = {"x": numeric_grad(value, x)}
    for name, _ in params:
        numeric[name] = numeric_grad(value, getattr(layer, name))
    for key in analytic:
        np.testing.assert_allclose(analytic[key], numeric[key], rtol=1e-6, atol=1e-8, err_msg=key)


def smooth_input(rng, shape):
    # keep clear of the kinks of relu / leaky relu / max at 0 and of ties
    x = rng.standard_normal(shape)
    return x + 0.1 * np.sign(x)


GRADCHECK_CASES = {
    "Relu": lambda rng: (L.Relu(), smooth_input(rng, (3, 4)), ()),
    "Sigmoid": lambda rng: (L.Sigmoid(), rng.standard_normal((3, 4)), ()),
    "Tanh": lambda rng: (L.Tanh(), rng.standard_normal((3, 4)), ()),
    "LeakyRelu": lambda rng: (L.LeakyRelu(0.2), smooth_input(rng, (3, 4)), ()),
    "Elu": lambda rng: (L.Elu(0.7), smooth_input(rng, (3, 4)), ()),
    "Softplus": lambda rng: (L.Softplus(), rng.standard_normal((3, 4)), ()),
    "Flatten": lambda rng: (L.Flatten(), rng.standard_normal((2, 2, 3)), ()),
    "Affine": lambda rng: (L.Affine(rng.standard_normal((12, 3)), rng.standard_normal(3)),
                           rng.standard_normal((2, 3, 4)), (("W", "dW"), ("b", "db"))),
    "Convolution": lambda rng: (L.Convolution(rng.standard_normal((2, 2, 3, 2)), rng.standard_normal(2), 2, 1),
                                rng.standard_normal((2, 2, 5, 4)), (("W", "dW"), ("b", "db"))),
    "Pooling": lambda rng: (L.Pooling(2, 2, stride=2), rng.permutation(32).reshape(1, 2, 4, 4) * 0.1, ()),
    "AvgPooling": lambda rng: (L.AvgPooling(3, 2, stride=1, pad=1), rng.standard_normal((1, 2, 4, 3)), ()),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradient_check(backend, name):
    layer, x, params = GRADCHECK_CASES[name](np.random.default_rng(11))
    check_layer_gradients(layer, x, params)


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 2, 2)])
def test_gradient_check_batchnorm(backend, shape):
    rng = np.random.default_rng(5)
    d = int(np.prod(shape[1:]))
    layer = L.BatchNormalization(1 + 0.2 * rng.standard_normal(d), 0.1 * rng.standard_normal(d))
    check_layer_gradients(layer, rng.standard_normal(shape), (("gamma", "dgamma"), ("beta", "dbeta")))


def test_gradient_check_dropout(backend):
    layer = L.Dropout(0.4)
    x = np.random.default_rng(2).standard_normal((4, 5))
    layer.forward(x)
    mask = layer.mask
    # with the mask frozen, dropout is linear: check backward against it
    probe = np.random.default_rng(3).standard_normal(x.shape)
    np.testing.assert_array_equal(layer.backward(probe), probe * mask)


@pytest.mark.parametrize("cls,target", [
    (L.SoftmaxWithLoss, np.array([2, 0, 1])),
    (L.SoftmaxWithLoss, np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.8, 0.1]])),
    (L.IdentityWithLoss, np.arange(9.0).reshape(3, 3) / 4),
    (L.SigmoidWithLoss, np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.3, 1.0, 0.0]])),
], ids=["softmax-labels", "softmax-soft", "identity", "sigmoid"])
def test_gradient_check_losses(backend, cls, target):
    x = np.random.default_rng(4).standard_normal((3, 3))
    check_layer_gradients(cls(), x, loss_target=target)


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_batches_flow_through_a_convnet(backend, n, rng):
    x = rng.standard_normal((n, 2, 5, 5))
    stack = [L.Convolution(rng.standard_normal((3, 2, 3, 3)), np.zeros(3), 1, 1), L.Relu(), L.Pooling(2, 2, stride=2),
             L.Flatten(), L.Affine(rng.standard_normal((12, 4)), np.zeros(4))]
    h = x
    for layer in stack:
        h = layer.forward(h)
    assert h.shape == (n, 4)
    loss_layer = L.SoftmaxWithLoss()
    loss = loss_layer.forward(h, np.zeros(n, dtype=int))
    assert np.isnan(loss) if n == 0 else np.isfinite(loss)
    d = loss_layer.backward()
    for layer in reversed(stack):
        d = layer.backward(d)
    assert d.shape == x.shape
    assert stack[0].dW.shape == (3, 2, 3, 3)
    if n == 0:
        np.testing.assert_array_equal(stack[0].dW, 0.0)
        with pytest.raises(ValueError, match="at least one sample"):
            L.BatchNormalization(np.ones(4), np.zeros(4)).forward(h)


def test_non_contiguous_inputs_and_float32_stays_float32(backend, rng):
    big = rng.standard_normal((3, 4, 12, 9)).astype(np.float32)
    x = big[:, ::2, ::2, 1:]                         # strided view (3, 2, 6, 8)
    W = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    conv = L.Convolution(W, b, stride=1, pad=1)
    y = conv.forward(x)
    assert y.dtype == np.float32
    close(y, conv_direct(x, W, b, 1, 1), np.float32, scale=5)
    dout = rng.standard_normal(y.shape).astype(np.float32)[:, :, :, ::-1]   # reversed view
    dx = conv.backward(dout)
    dx_ref, dW_ref, db_ref = conv_direct_backward(dout, x, W, 1, 1)
    assert dx.dtype == conv.dW.dtype == conv.db.dtype == np.float32
    close(dx, dx_ref, np.float32, scale=5)
    close(conv.dW, dW_ref, np.float32, scale=20)
    xf = np.asfortranarray(rng.standard_normal((4, 6)).astype(np.float32))
    Wt = rng.standard_normal((5, 6)).astype(np.float32).T           # a transposed weight view
    affine = L.Affine(Wt, np.zeros(5, np.float32))
    out = affine.forward(xf)
    assert out.dtype == np.float32 and affine.W is Wt
    close(out, xf.astype(np.float64) @ Wt.astype(np.float64), np.float32, scale=3)
    affine.backward(np.ones((4, 5), np.float32))
    assert affine.dW.dtype == np.float32
    close(affine.dW, xf.astype(np.float64).T @ np.ones((4, 5)), np.float32, scale=3)


@pytest.mark.parametrize("cls, derivative", [
    (L.Sigmoid, lambda x: 1 / (1 + np.exp(-x)) * (1 - 1 / (1 + np.exp(-x)))),
    (L.Tanh, lambda x: 1 - np.tanh(x) ** 2),
    (L.Relu, lambda x: (x > 0).astype(float)),
    (L.Softplus, lambda x: 1 / (1 + np.exp(-x))),
])
def test_a_number_as_dout_is_broadcast_as_the_book_does(backend, cls, derivative, rng):
    # the book's Sigmoid.backward computes dout * (1 - out) * out, so backward(1.0) is the derivative
    x = rng.standard_normal((3, 4))
    for dtype in (np.float32, np.float64):
        layer = cls()
        layer.forward(x.astype(dtype))
        for dout in (1, 2.0, np.float64(0.5)):
            dx = layer.backward(dout)
            assert dx.dtype == dtype and dx.shape == x.shape
            np.testing.assert_allclose(dx, float(dout) * derivative(x), rtol=2e-6 if dtype == np.float32 else 1e-12,
                                       atol=1e-7 if dtype == np.float32 else 0)


def test_mul_layer_backward_before_forward_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"MulLayer\.backward: call forward\(\) first"):
        L.MulLayer().backward(1.0)


def test_convolution_backward_computes_from_an_assigned_col_and_col_w(backend, rng):
    x = rng.standard_normal((2, 2, 5, 4))
    W = rng.standard_normal((3, 2, 2, 3))
    b = rng.standard_normal(3)
    plain, assigned = L.Convolution(W, b, 1, 1), L.Convolution(W, b, 1, 1)
    y = plain.forward(x)
    assigned.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = plain.backward(dout)
    assigned.col_W = 2 * assigned.col_W    # the book's backward: dx from col_W, dW from col
    assigned.col = 10 * assigned.col
    np.testing.assert_allclose(assigned.backward(dout), 2 * dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(assigned.dW, 10 * plain.dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(assigned.db, plain.db, rtol=1e-12)
    with pytest.raises(ValueError, match=r"Convolution\.backward: expected dout of shape \(2, 3, 6, 4\)"):
        assigned.backward(dout[:, :, :-1])
    assigned.forward(x)                    # a new forward drops the assignments
    np.testing.assert_allclose(assigned.backward(dout), dx, rtol=1e-12, atol=1e-12)


def test_backward_after_rebinding_w_differentiates_what_the_book_does(backend, rng):
    # Convolution takes col_W in forward; Affine's backward reads self.W
    x = rng.standard_normal((2, 1, 4, 4))
    W, W_new = rng.standard_normal((2, 1, 2, 2)), rng.standard_normal((2, 1, 2, 2))
    b = np.zeros(2)
    conv = L.Convolution(W, b)
    dout = rng.standard_normal(conv.forward(x).shape)
    conv.W = W_new
    np.testing.assert_allclose(conv.backward(dout), conv_direct_backward(dout, x, W, 1, 0)[0], rtol=1e-12)
    xa, Wa, Wa_new = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    affine = L.Affine(Wa, np.zeros(2))
    douta = rng.standard_normal(affine.forward(xa).shape)
    affine.W = Wa_new
    np.testing.assert_allclose(affine.backward(douta), douta @ Wa_new.T, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_number_or_integer_parameters_work_as_the_books_broadcasting(backend, dtype, rng):
    # ch07's apply_filter.py: Convolution(w, b) with b = 0
    x = rng.standard_normal((2, 1, 6, 5)).astype(dtype)
    w = rng.standard_normal((1, 1, 3, 3)).astype(dtype)
    y = L.Convolution(w, 0).forward(x)
    assert y.dtype == dtype
    close(y, conv_direct(x, w, np.zeros(1), 1, 0), dtype, scale=5)
    conv = L.Convolution(w, 0.5)
    close(conv.forward(x), conv_direct(x, w, np.full(1, 0.5), 1, 0), dtype, scale=5)
    dout = rng.standard_normal((2, 1, 4, 3)).astype(dtype)
    conv.backward(dout)
    close(conv.db, dout.sum(axis=(0, 2, 3)), dtype, scale=10)
    w_int = np.array([[[[1, 0], [0, -1]]]])
    y = L.Convolution(w_int, np.zeros(1, dtype)).forward(x)
    assert y.dtype == np.float64            # as np.dot of the book's float data with integer filters
    np.testing.assert_allclose(y, conv_direct(x.astype(np.float64), w_int.astype(np.float64), np.zeros(1), 1, 0),
                               rtol=1e-12, atol=1e-12)
    xa, Wa = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
    ya = L.Affine(Wa, 0).forward(xa)
    assert ya.dtype == dtype
    close(ya, xa.astype(np.float64) @ Wa, dtype, scale=5)


@pytest.mark.parametrize("stats_dtype", [">f8", "<f4", np.float16])
def test_book_batchnorm_takes_running_statistics_of_any_float_dtype(stats_dtype):
    # The layer hands the op fresh copies; a byte-swapped or float16 one was refused by the op.
    x = np.random.default_rng(0).standard_normal((4, 3))
    bn = L.BatchNormalization(np.ones(3), np.zeros(3), running_mean=np.zeros(3, stats_dtype),
                              running_var=np.ones(3, stats_dtype))
    bn.forward(x, train_flg=True)
    mu, var = x.mean(axis=0), x.var(axis=0)
    tol = 1e-3 if np.dtype(stats_dtype).itemsize == 2 else 1e-6
    np.testing.assert_allclose(bn.running_mean, 0.1 * mu, rtol=tol, atol=tol)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var, rtol=tol, atol=tol)

