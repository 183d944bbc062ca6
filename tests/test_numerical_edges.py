"""Numerical edges (issue 8): huge logits, saturated activations, all-equal logits and
one-class problems give finite results wherever the exact math is finite, and no
warnings. Every test runs with warnings as errors and NumPy's floating-point
errors raising (overflow, invalid, divide by zero; underflow to 0 is the correct
answer for exp(-1000) and is allowed)."""
import math
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import ops
from conftest import requires_native

BACKENDS = [pytest.param("numpy", id="numpy"), pytest.param("native", id="native", marks=requires_native)]
DTYPES = [np.float32, np.float64]
BIG = [-1e4, -1000.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1000.0, 1e4]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs the test on one backend, with warnings and floating-point errors as exceptions."""
    with fastnn.backend(request.param), warnings.catch_warnings(), \
            np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        warnings.simplefilter("error")
        yield request.param


def big(dtype):
    return np.array(BIG, dtype=dtype)


def assert_finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(a)), a


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_saturates_without_overflow(backend, dtype):
    x = big(dtype)
    y = ops.sigmoid(x)
    assert y.dtype == dtype
    assert_finite(y)
    assert np.all((y >= 0) & (y <= 1))
    assert y[0] == 0 or y[0] < 1e-30          # sigmoid(-1e4): exp(-1e4) underflows
    assert y[-1] == 1 and y[-2] == 1          # sigmoid(1e4), sigmoid(1000)
    assert y[5] == dtype(0.5)
    np.testing.assert_allclose(y + ops.sigmoid(-x), 1, rtol=0, atol=np.finfo(dtype).eps)
    # The output is monotone in x even where it saturates.
    assert np.all(np.diff(y) >= 0)
    dx = ops.sigmoid_backward(np.ones_like(x), y)
    assert_finite(dx)
    assert dx[0] == 0 and dx[-1] == 0 and dx[5] == dtype(0.25)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_of_very_negative_x_is_the_subnormal_exp(backend, dtype):
    # Past -log(max float) exp(-x) overflows; the value is exp(x) (1 + exp(x) is 1 there),
    # down to the subnormals, not 0.
    xs = [-88.0, -89.0, -95.0, -100.0, -103.0, -200.0] if dtype == np.float32 else [-708.0, -710.0, -720.0,
                                                                                  -744.0, -800.0]
    want = np.array([math.exp(v) / (1 + math.exp(v)) for v in xs]).astype(dtype)
    y = ops.sigmoid(np.array(xs, dtype))
    assert want[-2] > 0 and want[-1] == 0 and y.dtype == dtype
    # a few roundings of exp and the division, in units of the spacing at the value
    error = np.abs(y.astype(np.float64) - want) / np.spacing(want).astype(np.float64)
    assert np.all(error <= 4), (y, want, error)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_at_inf(backend, dtype):
    y = ops.sigmoid(np.array([-np.inf, np.inf], dtype=dtype))
    np.testing.assert_array_equal(y, [0, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_saturates(backend, dtype):
    x = big(dtype)
    y = ops.tanh(x)
    assert_finite(y)
    assert y[0] == -1 and y[-1] == 1 and y[5] == 0
    dx = ops.tanh_backward(np.ones_like(x), y)
    assert_finite(dx)
    assert dx[0] == 0 and dx[-1] == 0 and dx[5] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_large_abs(backend, dtype):
    x = big(dtype)
    y = ops.softplus(x)
    assert y.dtype == dtype
    assert_finite(y)
    assert np.all(y >= 0)
    # softplus(x) = x + log1p(exp(-x)) -> x exactly (to the dtype) for x >= 100.
    np.testing.assert_array_equal(y[-3:], x[-3:])
    assert y[0] == 0 or y[0] < 1e-30
    assert abs(y[5] - math.log(2)) <= 4 * np.finfo(dtype).eps
    dx = ops.softplus_backward(np.ones_like(x), x)
    assert_finite(dx)
    np.testing.assert_allclose(dx, ops.sigmoid(x), rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_elu_large_abs(backend, dtype, alpha):
    x = big(dtype)
    y = ops.elu(x, alpha)
    assert_finite(y)
    np.testing.assert_array_equal(y[x > 0], x[x > 0])
    # elu(x) = alpha * expm1(x) = -alpha (to the dtype) for x <= -100
    np.testing.assert_allclose(y[:3], -alpha, rtol=4 * np.finfo(dtype).eps)
    dx = ops.elu_backward(np.ones_like(x), x, alpha)
    assert_finite(dx)
    np.testing.assert_array_equal(dx[x > 0], 1)
    assert dx[0] == 0 or dx[0] < 1e-30


@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_and_relu_large(backend, dtype):
    x = big(dtype)
    np.testing.assert_array_equal(ops.relu(x), np.maximum(x, 0))
    y = ops.leaky_relu(x, 0.01)
    assert_finite(y)
    assert y[0] == dtype(-100.0) and y[-1] == dtype(1e4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_huge_logits(backend, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4 + 1], [1e4, 1e4, 1e4]], dtype=dtype)
    p = ops.softmax(x)
    assert_finite(p)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(p[0], [1, 0, 0])
    e = np.e
    np.testing.assert_allclose(p[1], [1 / (2 + e), 1 / (2 + e), e / (2 + e)], rtol=1e-5)
    np.testing.assert_allclose(p[2], 1 / 3, rtol=4 * np.finfo(dtype).eps)
    lp = ops.log_softmax(x)
    assert_finite(lp)
    np.testing.assert_allclose(lp[0], [0, -2e4, -1e4], rtol=1e-6, atol=0)
    np.testing.assert_allclose(lp[2], -math.log(3), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 7, 1000])
def test_all_equal_logits_are_uniform(backend, dtype, k):
    for value in (0.0, -1e4, 1e4, 123.25):
        x = np.full((3, k), value, dtype=dtype)
        np.testing.assert_allclose(ops.softmax(x), 1 / k, rtol=8 * np.finfo(dtype).eps)
        np.testing.assert_allclose(ops.log_softmax(x), -math.log(k), rtol=8 * np.finfo(dtype).eps,
                                   atol=8 * np.finfo(dtype).eps)
        loss, grad = ops.softmax_cross_entropy(x, np.zeros(3, dtype=np.int64))
        assert math.isfinite(loss)
        assert abs(loss - math.log(k)) <= 1e-5 * max(1, math.log(k))
        expected = np.full((3, k), 1 / k) - np.eye(k)[np.zeros(3, dtype=int)]
        np.testing.assert_allclose(grad, expected / 3, rtol=1e-5, atol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_huge_logits(backend, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=dtype)
    labels = np.array([0, 1, 2])
    loss, grad = ops.softmax_cross_entropy(logits, labels)
    assert math.isfinite(loss)
    # Row 0 and 2 are right with certainty (loss 0); row 1 is wrong by 2e4.
    assert abs(loss - 2e4 / 3) <= 1e-3 * 2e4 / 3
    assert_finite(grad)
    np.testing.assert_allclose(grad, np.array([[0, 0, 0], [1, -1, 0], [0, 0, 0]]) / 3, atol=1e-6)
    onehot = np.eye(3, dtype=dtype)[labels]
    loss2, grad2 = ops.softmax_cross_entropy(logits, onehot)
    assert abs(loss2 - loss) <= 1e-6 * abs(loss)
    np.testing.assert_allclose(grad2, grad, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_class_problem(backend, dtype):
    """K = 1: the only class has probability 1 whatever the logit, loss 0, gradient 0."""
    logits = big(dtype)[:, None]
    np.testing.assert_array_equal(ops.softmax(logits), 1)
    np.testing.assert_array_equal(ops.log_softmax(logits), 0)
    loss, grad = ops.softmax_cross_entropy(logits, np.zeros(len(logits), dtype=np.int64))
    assert loss == 0
    np.testing.assert_array_equal(grad, 0)
    loss, grad = ops.softmax_cross_entropy(logits, np.ones_like(logits))
    assert loss == 0
    np.testing.assert_array_equal(grad, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_huge_logits(backend, dtype):
    z = big(dtype)
    for target in (0.0, 1.0):
        t = np.full_like(z, target)
        loss, grad = ops.sigmoid_binary_cross_entropy(z, t)
        assert math.isfinite(loss)
        assert_finite(grad)
        # Exact: mean of softplus(z) (t = 0) or softplus(-z) (t = 1).
        sp = np.logaddexp(0, (z if target == 0 else -z).astype(np.float64))
        assert abs(loss - sp.mean()) <= 1e-5 * sp.mean()
        np.testing.assert_allclose(grad, (ops.sigmoid(z) - t) / z.size, atol=4 * np.finfo(dtype).eps)
    # One-class data set: every target is 1 and the model is confident: loss ~ 0.
    loss, _ = ops.sigmoid_binary_cross_entropy(np.full(5, 1e4, dtype=dtype), np.ones(5, dtype=dtype))
    assert loss == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_at_infinite_logits(backend, dtype):
    """-log of p = sigmoid(z) in {0, 1} weighted by t or 1 - t: 0 where the weight is 0
    (0 * inf is 0 here, as in the limit z -> +-inf), inf where it is not."""
    for z, t, loss in ((np.inf, 1.0, 0.0), (np.inf, 0.0, np.inf), (np.inf, 0.5, np.inf),
                       (-np.inf, 0.0, 0.0), (-np.inf, 1.0, np.inf), (-np.inf, 0.25, np.inf)):
        got, grad = ops.sigmoid_binary_cross_entropy(np.array([z], dtype=dtype), np.array([t], dtype=dtype))
        assert got == loss, (z, t, got)
        assert grad[0] == (1.0 if z > 0 else 0.0) - t
    # a finite element beside them keeps its own loss: (0 + log 2) / 2
    got, _ = ops.sigmoid_binary_cross_entropy(np.array([np.inf, 0.0], dtype=dtype), np.array([1, 0], dtype=dtype))
    assert got == pytest.approx(math.log(2) / 2, rel=4 * float(np.finfo(dtype).eps))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_one_hot_rows_ignores_classes_of_weight_0(backend, dtype):
    """A masked class (logit -inf) or a float32 logit at the range's end: the one-hot row's
    loss is the integer label's, not 0 * -inf = NaN."""
    huge = np.finfo(dtype).max / 1.5
    logits = np.array([[0.0, -np.inf, 1.0], [huge, -huge, 0.0]], dtype=dtype)
    labels = np.array([0, 0])
    by_label, grad = ops.softmax_cross_entropy(logits, labels)
    by_row, grad_rows = ops.softmax_cross_entropy(logits, np.eye(3, dtype=dtype)[labels])
    # row 0: log(1 + e) - 0; row 1: certain and right, 0
    assert by_label == pytest.approx(math.log1p(math.e) / 2, rel=4 * float(np.finfo(dtype).eps))
    assert by_row == pytest.approx(by_label, rel=4 * float(np.finfo(dtype).eps))
    np.testing.assert_array_equal(grad_rows, grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_of_features_with_a_large_mean(backend, dtype):
    """1e6 + N(0, 1) per feature: the variance is 1, not the float32 sum's rounding error
    squared (a plain float32 mean of 20000 values is off by about 100)."""
    rng = np.random.default_rng(0)
    x = (1e6 + rng.standard_normal((20000, 3))).astype(dtype)
    gamma, beta = np.ones(3, dtype=dtype), np.zeros(3, dtype=dtype)
    mean, var = np.zeros(3, dtype=dtype), np.zeros(3, dtype=dtype)
    y, _ = ops.batch_norm_forward(x, gamma, beta, mean, var, momentum=0.0, eps=0.0)  # running = batch
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=np.finfo(dtype).eps)
    # the mean stored in float32 is off by up to eps * 1e6 / 2 = 0.03, which adds its square
    np.testing.assert_allclose(var, exact.var(0), rtol=2e-3 if dtype == np.float32 else 1e-9)
    np.testing.assert_allclose(y.std(0, dtype=np.float64), 1, rtol=2e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softplus", "elu", "relu", "leaky_relu"])
def test_fused_activation_at_large_preactivations(backend, dtype, act):
    x = np.array([[1.0], [-1.0], [0.5]], dtype=dtype)
    W = np.array([[1000.0, -1e4, 30.0]], dtype=dtype)
    y = ops.linear(x, W, None, act)
    assert_finite(y)
    np.testing.assert_allclose(y, ops.activation(x @ W, act), rtol=1e-6)
    dx, dW, db = ops.linear_backward(np.ones_like(y), x, W, act, y)
    assert_finite(dx, dW, db)
    xc = np.full((1, 1, 2, 2), 10.0, dtype=dtype)
    Wc = np.full((2, 1, 2, 2), 250.0, dtype=dtype) * np.array([1, -1], dtype=dtype)[:, None, None, None]
    yc = ops.conv2d(xc, Wc, None, 1, 0, act)
    assert_finite(yc)
    np.testing.assert_allclose(yc[0, :, 0, 0], ops.activation(np.array([1e4, -1e4], dtype=dtype), act),
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_loss_is_nan_without_warning(backend, dtype):
    loss, grad = ops.softmax_cross_entropy(np.zeros((0, 4), dtype=dtype), np.zeros(0, dtype=np.int64))
    assert math.isnan(loss) and grad.shape == (0, 4)
    loss, grad = ops.mean_squared_error(np.zeros(0, dtype=dtype), np.zeros(0, dtype=dtype))
    assert math.isnan(loss) and grad.shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_of_all_minus_inf_picks_a_real_element(backend, dtype):
    x = np.full((1, 1, 3, 3), -np.inf, dtype=dtype)
    y, argmax = ops.max_pool2d(x, 2, 2, stride=2, pad=1)
    assert np.all(y == -np.inf)
    # Padding never wins: each index points into the (unpadded) 3x3 plane, to the
    # first real element of its window.
    np.testing.assert_array_equal(argmax[0, 0], [[0, 1], [3, 4]])


def test_optimizer_updates_with_huge_and_tiny_gradients(backend):
    for dtype in DTYPES:
        p = np.ones(4, dtype=dtype)
        g = np.array([1e30 if dtype == np.float64 else 1e18, -1e-30, 0.0, 1.0], dtype=dtype)
        m, v = np.zeros_like(p), np.zeros_like(p)
        ops.adam_update(p, g, m, v, 1e-3)
        assert_finite(p, m, v)
        h = np.zeros_like(p)
        ops.adagrad_update(p, g, h, 1e-2)
        assert_finite(p, h)
        # A zero gradient with zero history never divides 0 by 0: that parameter stays put.
        assert p[2] == 1 and m[2] == 0 and v[2] == 0 and h[2] == 0


def test_training_a_one_class_problem_stays_finite(backend):
    """A Keras-style model fitted on data with a single class, binary and categorical."""
    from fastnn import nn
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4))
    model = nn.Sequential([nn.Dense(8, activation="relu", input_dim=4), nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    hist = model.fit(x, np.ones((32, 1)), epochs=30, batch_size=8, verbose=0)
    losses = hist.history["loss"]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert np.all(np.isfinite(model.predict(x)))

    model = nn.Sequential([nn.Dense(3, activation="softmax", input_dim=4)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    hist = model.fit(x * 1e3, np.zeros(32, dtype=np.int64), epochs=3, batch_size=8, verbose=0)
    losses = hist.history["loss"]
    assert all(math.isfinite(v) for v in losses)


def test_inputs_at_the_float_range_and_non_finite_inputs_warn_nowhere(backend):
    # results that are finite stay exact; inf/NaN propagate as the kernels propagate them
    z = np.array([[3e38, 3e38, -3e38]], dtype=np.float32)
    np.testing.assert_allclose(ops.softmax(z), [[0.5, 0.5, 0.0]], rtol=1e-6)
    assert ops.softmax_cross_entropy(z, np.array([0]))[0] == pytest.approx(math.log(2), rel=1e-6)
    x = np.array([[-1.0, np.inf], [1.0, 0.0]])
    y, _ = ops.batch_norm_forward(x, np.ones(2), np.zeros(2), np.zeros(2), np.ones(2))
    np.testing.assert_allclose(y[:, 0], [-1, 1], rtol=1e-6)
    assert np.isnan(y[:, 1]).all()
    assert ops.tanh_backward(np.array([1e30], np.float32), np.array([1e30], np.float32))[0] == -np.inf
    assert ops.leaky_relu(np.array([-1e300]), alpha=1e10)[0] == -np.inf
    for p in (np.ones(3), np.ones(6)[::2]):        # strided: updated by the reference on either backend
        ops.adagrad_update(p, np.array([1.0, np.inf, 0.0]), np.zeros(3), 0.1)
        assert p[0] == pytest.approx(0.9, rel=1e-6) and np.isnan(p[1]) and p[2] == 1.0


def test_batch_norm_running_statistics_of_infinite_inputs_warn_nowhere(backend):
    # momentum 1 keeps the running statistics: (1 - momentum) * inf must not warn either
    x = np.array([[np.inf, 1.0], [1.0, 2.0]])
    for momentum in (0.9, 1.0, 0.0):
        running_mean, running_var = np.zeros(2), np.ones(2)
        ops.batch_norm_forward(x, np.ones(2), np.zeros(2), running_mean, running_var, momentum=momentum)
        assert running_mean[1] == pytest.approx((1 - momentum) * 1.5)
        assert np.isnan(running_mean[0]) or np.isinf(running_mean[0]) or momentum == 1.0
