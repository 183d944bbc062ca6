"""fastnn.functions against the book's definitions (common/functions.py, util.py,
gradient.py and the chapter examples), on both backends."""
import numpy as np
import pytest

import fastnn
from fastnn import functions as F
from conftest import requires_native

BACKENDS = ["numpy", pytest.param("native", marks=requires_native)]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.backend(request.param):
        yield request.param


def tol(dtype):
    return dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- activations

@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_relu_softmax_values(backend, dtype, rng):
    x = (rng.standard_normal((3, 4, 5)) * 5).astype(dtype)
    x64 = x.astype(np.float64)
    s = F.sigmoid(x)
    assert s.dtype == dtype
    np.testing.assert_allclose(s, 0.5 * (1 + np.tanh(x64 / 2)), **tol(dtype))
    np.testing.assert_allclose(F.sigmoid_grad(x), s.astype(np.float64) * (1 - s), **tol(dtype))
    np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
    p = F.softmax(x)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=-1, keepdims=True), **tol(dtype))


def test_scalars_lists_and_integers_like_numpy(backend):
    assert F.sigmoid(0) == 0.5 and np.ndim(F.sigmoid(0.0)) == 0
    np.testing.assert_allclose(F.sigmoid([-1.0, 1.0, 2.0]), 1 / (1 + np.exp(-np.array([-1.0, 1.0, 2.0]))))
    np.testing.assert_array_equal(F.relu(np.array([-2, 0, 3])), [0.0, 0.0, 3.0])
    assert F.sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]   # no overflow warning
    np.testing.assert_allclose(F.softmax([1000.0, 1000.0]), [0.5, 0.5])
    np.testing.assert_allclose(F.softmax(np.array([0.3, 2.9, 4.0])), [0.01821127, 0.24519181, 0.73659691],
                               rtol=0, atol=5e-9)            # the book's chapter 3 example, printed to 8 places


def test_step_identity_relu_grad_follow_the_book():
    step = F.step_function(np.array([-1.0, 0.0, 2.0]))
    assert step.dtype.kind == "i"
    np.testing.assert_array_equal(step, [0, 0, 1])
    x = np.array([1.0, 2.0])
    assert F.identity_function(x) is x
    np.testing.assert_array_equal(F.relu_grad(np.array([-1.0, 0.0, 3.0])), [0.0, 1.0, 1.0])   # 1 at 0


# ---------------------------------------------------------------- losses

BOOK_Y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
BOOK_T = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])


def test_mean_squared_error_is_half_the_sum(backend):
    # the book's chapter 4 example
    assert F.mean_squared_error(BOOK_Y, BOOK_T) == pytest.approx(0.0975, rel=1e-12)
    assert F.sum_squared_error(BOOK_Y, BOOK_T) == pytest.approx(0.0975, rel=1e-12)


def test_cross_entropy_error_exact_and_with_the_books_delta():
    assert F.cross_entropy_error(BOOK_Y, BOOK_T) == pytest.approx(-np.log(0.6), rel=1e-15)
    assert F.cross_entropy_error(BOOK_Y, BOOK_T, delta=1e-7) == pytest.approx(-np.log(0.6 + 1e-7), rel=1e-15)
    # the difference the book's 1e-7 makes: about 1e-7 / p
    diff = F.cross_entropy_error(BOOK_Y, BOOK_T) - F.cross_entropy_error(BOOK_Y, BOOK_T, delta=1e-7)
    assert 0 < diff < 1.7e-7


def test_cross_entropy_error_batch_labels_and_one_hot(rng):
    y = rng.dirichlet(np.ones(4), size=6)
    labels = rng.integers(0, 4, 6)
    expected = -np.mean(np.log(y[np.arange(6), labels]))
    assert F.cross_entropy_error(y, labels) == pytest.approx(expected, rel=1e-14)
    assert F.cross_entropy_error(y, np.eye(4)[labels]) == pytest.approx(expected, rel=1e-14)
    assert F.softmax_loss(np.log(y), labels) == pytest.approx(expected, rel=1e-12)
    assert F.cross_entropy_error(np.array([0.0, 1.0]), np.array([1, 0])) == np.inf
    with pytest.raises(TypeError, match="cross_entropy_error"):
        F.cross_entropy_error(y, np.full(6, 0.5))


# ---------------------------------------------------------------- numerical differentiation

def test_numerical_gradient_of_the_books_function_2():
    x = np.array([3.0, 4.0])
    grad = F.numerical_gradient(lambda v: np.sum(v ** 2), x)
    np.testing.assert_allclose(grad, [6.0, 8.0], rtol=1e-9)
    np.testing.assert_array_equal(x, [3.0, 4.0])           # restored
    assert F.numerical_diff(lambda v: 0.01 * v ** 2 + 0.1 * v, 5.0) == pytest.approx(0.2, rel=1e-9)


def test_numerical_gradient_any_shape_through_an_alias(rng):
    W = rng.standard_normal((2, 3, 2))
    A = rng.standard_normal(W.shape)
    params = {"W": W}
    # f ignores its argument and reads the parameter, as the book's loss lambdas do
    grad = F.numerical_gradient(lambda _: float(np.sum(A * np.sin(params["W"]))), W)
    np.testing.assert_allclose(grad, A * np.cos(W), rtol=1e-7, atol=1e-9)
    with pytest.raises(TypeError, match="numerical_gradient"):
        F.numerical_gradient(lambda v: v, [1.0])
    frozen = np.ones(2)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match="numerical_gradient: x is read-only"):
        F.numerical_gradient(lambda v: float(np.sum(v)), frozen)


# ---------------------------------------------------------------- im2col / col2im

def im2col_loops(x, fh, fw, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    oh, ow = (h - fh) // stride + 1, (w - fw) // stride + 1
    rows = []
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                rows.append(x[b, :, i * stride:i * stride + fh, j * stride:j * stride + fw].ravel())
    return np.array(rows)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fh,fw,stride,pad", [(5, 5, 1, 0), (3, 2, 2, 1)])
def test_im2col_and_its_adjoint(backend, dtype, fh, fw, stride, pad, rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    col = F.im2col(x, fh, fw, stride, pad)
    np.testing.assert_array_equal(col, im2col_loops(x, fh, fw, stride, pad))
    c = rng.standard_normal(col.shape).astype(dtype)
    back = F.col2im(c, x.shape, fh, fw, stride, pad)
    assert back.shape == x.shape
    # col2im is the transpose of im2col: <im2col(x), c> == <x, col2im(c)>
    lhs = np.sum(col.astype(np.float64) * c)
    rhs = np.sum(x.astype(np.float64) * back)
    assert lhs == pytest.approx(rhs, rel=1e-5 if dtype == np.float32 else 1e-12)


def test_im2col_book_shapes_and_integer_input(backend):
    assert F.im2col(np.random.rand(1, 3, 7, 7), 5, 5, stride=1, pad=0).shape == (9, 75)
    assert F.im2col(np.random.rand(10, 3, 7, 7), 5, 5, stride=1, pad=0).shape == (90, 75)
    col = F.im2col(np.arange(16).reshape(1, 1, 4, 4), 2, 2, stride=2)
    assert col.dtype == np.float64
    np.testing.assert_array_equal(col[0], [0, 1, 4, 5])
    assert F.conv_output_size(28, 5) == 24.0
    assert F.conv_output_size(7, 3, stride=2, pad=1) == 4.0
    assert F.conv_output_size(6, 3, stride=2) == 2.5        # the book's true division


# ---------------------------------------------------------------- util

def test_smooth_curve_keeps_length_and_matches_the_kaiser_average(rng):
    x = rng.standard_normal(40)
    y = F.smooth_curve(x)
    assert y.shape == x.shape
    w = np.kaiser(11, 2)
    w /= w.sum()
    # the book extends the start with x[10..1] and the end with x[-1..-10]
    extended = list(x[10:0:-1]) + list(x) + list(x[::-1][:10])
    for i in (0, 3, 17, 39):
        window = extended[i + 5:i + 16]
        assert y[i] == pytest.approx(float(np.dot(w, window[::-1])), rel=1e-12)
    np.testing.assert_allclose(F.smooth_curve(np.full(20, 3.0)), 3.0)


def test_shuffle_dataset_uses_the_global_generator(rng):
    x = rng.standard_normal((12, 2, 3, 3))
    t = np.arange(12)
    np.random.seed(0)
    expected = np.random.permutation(12)
    np.random.seed(0)
    xs, ts = F.shuffle_dataset(x, t)
    np.testing.assert_array_equal(ts, expected)
    np.testing.assert_array_equal(xs, x[expected])
    xs2, ts2 = F.shuffle_dataset(x.reshape(12, -1), t)
    np.testing.assert_array_equal(xs2, x.reshape(12, -1)[ts2])
    with pytest.raises(ValueError, match="shuffle_dataset"):
        F.shuffle_dataset(x, t[:5])


def test_numerical_gradient_2d_is_the_gradient_at_each_row():
    # the book's ch04 plots: f of one point, its gradient at many points
    def f(point):
        assert point.shape == (2,)
        return point[0] ** 2 + 3 * point[1] ** 3
    X = np.array([[1.0, 2.0], [-3.0, 0.5], [0.25, -1.0]])
    want = np.stack([2 * X[:, 0], 9 * X[:, 1] ** 2], axis=1)
    np.testing.assert_allclose(F.numerical_gradient_2d(f, X), want, rtol=1e-6)
    np.testing.assert_allclose(F.numerical_gradient_2d(f, X[1].copy()), want[1], rtol=1e-6)
    with pytest.raises(ValueError, match=r"numerical_gradient_2d: expected X of 1 or 2 dimensions.*\(1, 3, 2\)"):
        F.numerical_gradient_2d(f, X[None])
