"""The native non-GEMM kernels (fastnn/_kernels.pyx, csrc/) called directly, with
the arguments fastnn.ops would pass: against the NumPy reference on awkward
shapes in float32 and float64, on every SIMD path this CPU has, for several
thread counts (results must not depend on them), run to run (bit-identical),
on NaN/Inf/large-value edges, and the optimizer kernels against the book's
update formulas written out here in NumPy."""
import math
import warnings

import numpy as np
import pytest

import fastnn
from conftest import NATIVE, requires_native
from fastnn import _reference as ref
from helpers import assert_close, native_setting

pytestmark = requires_native

if NATIVE:
    from fastnn import _kernels as K

ISAS = [name for name in ("portable", "avx2", "avx512")
        if NATIVE and fastnn.config()["simd_cpu_best"] in {"portable": ("portable", "avx2", "avx512"),
                                                           "avx2": ("avx2", "avx512"),
                                                           "avx512": ("avx512",)}[name]]
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


configured = native_setting


def _randn(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------------------
# The cases: (name, function name, argument builder). Each builder takes
# (rng, dtype, size) with size "small" (awkward shapes, including empty ones)
# or "large" (big enough that the kernels go parallel and use several chunks).

ELTWISE_SHAPES = {"small": [(0,), (1,), (7,), (3, 5), (2, 3, 13), (1, 1, 1, 31)],
                  "large": [(70001,)]}


def _eltwise_cases():
    unary = [("identity", ()), ("relu", ()), ("leaky_relu", (0.07,)), ("elu", (1.3,)),
             ("sigmoid", ()), ("tanh", ()), ("softplus", ()), ("step", ())]
    for name, extra in unary:
        yield name, name, lambda rng, dt, shape, extra=extra: (_randn(rng, shape, dt, 4.0),) + extra
    for name, extra in [("relu", ()), ("leaky_relu", (0.07,)), ("elu", (1.3,)), ("softplus", ())]:
        yield (name + "_backward", name + "_backward",
               lambda rng, dt, shape, extra=extra: (_randn(rng, shape, dt), _randn(rng, shape, dt, 4.0)) + extra)
    for name in ("sigmoid", "tanh"):
        yield (name + "_backward", name + "_backward",
               lambda rng, dt, shape, name=name: (_randn(rng, shape, dt),
                                                  getattr(ref, name)(_randn(rng, shape, dt, 3.0))))


ELTWISE_CASES = list(_eltwise_cases())

# (N, C, H, W, fh, fw, stride, pad)
GEOMETRIES = {"small": [(0, 2, 5, 5, 2, 2, (2, 2), (0, 0)), (1, 1, 1, 1, 1, 1, (1, 1), (0, 0)),
                        (2, 3, 7, 5, 3, 2, (2, 1), (1, 1)), (1, 2, 11, 13, 5, 3, (3, 2), (2, 1)),
                        (3, 2, 28, 28, 2, 2, (2, 2), (0, 0)), (2, 3, 9, 33, 2, 2, (2, 2), (0, 0)),
                        (1, 2, 6, 6, 3, 3, (1, 1), (1, 1)), (2, 1, 5, 4, 4, 4, (1, 3), (2, 2))],
              "large": [(4, 8, 28, 30, 2, 2, (2, 2), (0, 0)), (3, 5, 17, 19, 3, 3, (2, 1), (1, 1))]}


def _pool_ok(g):
    # fastnn.ops requires 2*pad <= pool, so every window holds a real element
    _, _, _, _, fh, fw, _, (ph, pw) = g
    return 2 * ph <= fh and 2 * pw <= fw


def _out_hw(g):
    _, _, H, W, fh, fw, (sh, sw), (ph, pw) = g
    return (H + 2 * ph - fh) // sh + 1, (W + 2 * pw - fw) // sw + 1


def _geometry_cases():
    def im2col_args(rng, dt, g):
        N, C, H, W, fh, fw, s, p = g
        return _randn(rng, (N, C, H, W), dt), fh, fw, s, p

    def col2im_args(rng, dt, g):
        N, C, H, W, fh, fw, s, p = g
        oh, ow = _out_hw(g)
        return _randn(rng, (N * oh * ow, C * fh * fw), dt), (N, C, H, W), fh, fw, s, p

    def pool_args(rng, dt, g):
        N, C, H, W, fh, fw, s, p = g
        x = _randn(rng, (N, C, H, W), dt)
        x[..., ::3, ::2] = np.round(x[..., ::3, ::2])  # ties inside windows
        return x, fh, fw, s, p

    def max_bw_args(rng, dt, g):
        N, C, H, W, fh, fw, s, p = g
        x = _randn(rng, (N, C, H, W), dt)
        _, argmax = ref.max_pool2d(x, fh, fw, s, p)
        return _randn(rng, argmax.shape, dt), argmax, (N, C, H, W), fh, fw, s, p

    def avg_bw_args(rng, dt, g):
        N, C, H, W, fh, fw, s, p = g
        oh, ow = _out_hw(g)
        return _randn(rng, (N, C, oh, ow), dt), (N, C, H, W), fh, fw, s, p

    yield "im2col", "im2col", im2col_args, False
    yield "col2im", "col2im", col2im_args, False
    yield "max_pool2d", "max_pool2d", pool_args, True
    yield "max_pool2d_backward", "max_pool2d_backward", max_bw_args, True
    yield "avg_pool2d", "avg_pool2d", pool_args, True
    yield "avg_pool2d_backward", "avg_pool2d_backward", avg_bw_args, True


GEOMETRY_CASES = list(_geometry_cases())

ROW_SHAPES = {"small": [(0, 5), (1, 1), (1, 7), (3, 10), (5, 17), (2, 1000), (4, 33)],
              "large": [(257, 1000), (64, 701)]}


def _row_cases():
    def logits(rng, dt, shape):
        return (_randn(rng, shape, dt, 5.0),)

    def labels(rng, dt, shape):
        return _randn(rng, shape, dt, 5.0), rng.integers(0, shape[1], shape[0]).astype(np.int64)

    def probs(rng, dt, shape):
        t = rng.random(shape).astype(dt)
        t /= np.maximum(t.sum(axis=1, keepdims=True), 1e-3).astype(dt)
        return _randn(rng, shape, dt, 5.0), t

    def pair(rng, dt, shape):
        return _randn(rng, shape, dt, 3.0), _randn(rng, shape, dt)

    def bce_pair(rng, dt, shape):
        return _randn(rng, shape, dt, 3.0), rng.random(shape).astype(dt)

    yield "softmax", "softmax", logits
    yield "log_softmax", "log_softmax", logits
    yield "softmax_cross_entropy_labels", "softmax_cross_entropy", labels
    yield "softmax_cross_entropy_probs", "softmax_cross_entropy", probs
    yield "mean_squared_error", "mean_squared_error", pair
    yield "sigmoid_binary_cross_entropy", "sigmoid_binary_cross_entropy", bce_pair


ROW_CASES = list(_row_cases())


def all_calls(size):
    """(case id, function name, builder taking (rng, dtype)) for every kernel and shape."""
    for name, fn, build in ELTWISE_CASES:
        for shape in ELTWISE_SHAPES[size]:
            yield f"{name}-{shape}", fn, (lambda rng, dt, b=build, s=shape: b(rng, dt, s))
    for name, fn, build, pooling in GEOMETRY_CASES:
        for g in GEOMETRIES[size]:
            if pooling and not _pool_ok(g):
                continue
            yield f"{name}-{g}", fn, (lambda rng, dt, b=build, g=g: b(rng, dt, g))
    for name, fn, build in ROW_CASES:
        for shape in ROW_SHAPES[size]:
            yield f"{name}-{shape}", fn, (lambda rng, dt, b=build, s=shape: b(rng, dt, s))


SMALL_CALLS = list(all_calls("small"))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_of_empty_rows(fn):
    for isa in ISAS:
        with configured(isa=isa):
            y = getattr(K, fn)(np.zeros((3, 0), np.float32))
        assert y.shape == (3, 0) and y.dtype == np.float32
LARGE_CALLS = list(all_calls("large"))


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _reduction(fn, args):
    """How many terms are summed into one output (for the absolute tolerance)."""
    if fn == "col2im":
        return args[2] * args[3]
    if fn in ("softmax", "log_softmax", "softmax_cross_entropy"):
        return args[0].shape[1]
    if fn in ("avg_pool2d", "avg_pool2d_backward", "max_pool2d_backward"):
        return 16
    return 1


def check_against_reference(fn, args, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from the native side
        got = _as_tuple(getattr(K, fn)(*args))
    want = _as_tuple(getattr(ref, fn)(*args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, float):  # a loss
            assert isinstance(g, float)
            if np.isnan(w):
                assert np.isnan(g)
            else:
                rtol = 1e-5 if dtype == np.float32 else 1e-10
                assert abs(g - w) <= rtol * max(1.0, abs(w)), (g, w)
        elif w.dtype == np.int64:
            assert g.dtype == np.int64 and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
        else:
            assert g.flags.c_contiguous
            assert_close(g, w, dtype, reduction=_reduction(fn, args))


# ---------------------------------------------------------------------------
# Against the reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SMALL_CALLS, ids=[c[0] for c in SMALL_CALLS])
def test_kernel_matches_reference(case, dtype):
    _, fn, build = case
    args = build(np.random.default_rng(7), dtype)
    for isa in ISAS:
        with configured(isa=isa):
            check_against_reference(fn, args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LARGE_CALLS, ids=[c[0] for c in LARGE_CALLS])
def test_large_kernel_matches_reference_on_every_isa(case, dtype):
    _, fn, build = case
    args = build(np.random.default_rng(11), dtype)
    for isa in ISAS:
        with configured(isa=isa, threads=2):
            check_against_reference(fn, args, dtype)


def _outputs(fn, args, isa=None, threads=None):
    with configured(isa=isa, threads=threads):
        return [np.asarray(o) for o in _as_tuple(getattr(K, fn)(*args))]


def _assert_identical(a, b, what):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape, what
        assert x.tobytes() == y.tobytes(), what  # bit for bit, NaNs included


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LARGE_CALLS + SMALL_CALLS[::7], ids=lambda c: c[0])
def test_thread_count_and_reruns_do_not_change_results(case, dtype):
    _, fn, build = case
    args = build(np.random.default_rng(3), dtype)
    for isa in sorted({ISAS[0], ISAS[-1]}):  # the portable loops and the best vector ones
        first = _outputs(fn, args, isa, 1)
        _assert_identical(first, _outputs(fn, args, isa, 1), f"{fn} rerun, {isa}")
        for threads in (2, 3):
            out = _outputs(fn, args, isa, threads)
            _assert_identical(first, out, f"{fn} threads={threads}, {isa}")
            _assert_identical(out, _outputs(fn, args, isa, threads), f"{fn} rerun threads={threads}")


SIMPLE_OPS = {"identity", "relu", "leaky_relu", "step", "relu_backward", "leaky_relu_backward",
              "sigmoid_backward", "tanh_backward", "im2col", "col2im", "max_pool2d",
              "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "mean_squared_error"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LARGE_CALLS, ids=[c[0] for c in LARGE_CALLS])
def test_simd_paths_agree(case, dtype):
    """Every ISA within tolerance of the portable path; bit-identical where no
    transcendental function is involved (the loops round the same way)."""
    _, fn, build = case
    args = build(np.random.default_rng(5), dtype)
    base = _outputs(fn, args, "portable", 2)
    for isa in ISAS[1:]:
        out = _outputs(fn, args, isa, 2)
        if fn in SIMPLE_OPS or dtype == np.float64:
            _assert_identical(base, out, f"{fn} {isa} vs portable")
        else:
            for b, o in zip(base, out):
                if b.dtype == np.int64:
                    np.testing.assert_array_equal(o, b)
                elif b.ndim == 0:  # a loss (a Python float)
                    assert abs(float(o) - float(b)) <= 1e-5 * max(1.0, abs(float(b)))
                else:
                    assert_close(o, b, dtype, reduction=_reduction(fn, args))


# ---------------------------------------------------------------------------
# Edges: NaN, Inf, large values

EDGE_VALUES = [0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 20.0, -20.0, 88.0, -88.0, 100.0, -100.0,
               1000.0, -1000.0, 1e4, -1e4, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_eltwise_edges_match_reference(dtype, isa):
    x = np.array(EDGE_VALUES * 3, dtype=dtype)  # 57 elements: vector body and tail
    dy = np.ones_like(x)
    with configured(isa=isa), warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, extra in [("relu", ()), ("leaky_relu", (0.1,)), ("elu", (1.0,)), ("sigmoid", ()),
                            ("tanh", ()), ("softplus", ()), ("step", ()), ("identity", ())]:
            got = getattr(K, name)(x, *extra)
            with np.errstate(all="ignore"):
                want = getattr(ref, name)(x, *extra)
            np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=0,
                                       err_msg=name)
        for name, extra in [("relu", ()), ("leaky_relu", (0.1,)), ("elu", (1.0,)), ("softplus", ())]:
            got = getattr(K, name + "_backward")(dy, x, *extra)
            with np.errstate(all="ignore"):
                want = getattr(ref, name + "_backward")(dy, x, *extra)
            np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=0,
                                       err_msg=name)
        # exact at 0 and in saturation on every path (AVX2's reciprocal once gave 1 - 2^-24, 0.5 - 2^-25)
        sig = K.sigmoid(x)
        assert sig[EDGE_VALUES.index(1000.0)] == 1 and sig[EDGE_VALUES.index(88.0)] == 1
        assert sig[EDGE_VALUES.index(-1000.0)] == 0 and sig[EDGE_VALUES.index(0.0)] == 0.5
        assert np.isnan(sig[EDGE_VALUES.index(np.nan)])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_family_edges(dtype, isa):
    rows = np.array([[1e4, 0.0, -1e4, 3.0],
                     [-1e4, -1e4, -1e4, -1e4],
                     [np.nan, 1.0, 2.0, 3.0],
                     [np.inf, 1.0, 2.0, 3.0],
                     [-np.inf, 1.0, 2.0, 3.0],
                     [-np.inf, -np.inf, -np.inf, -np.inf]], dtype=dtype)
    rows = np.repeat(rows, [1, 1, 1, 1, 1, 1], axis=0)
    wide = np.tile(rows, (1, 9))  # 36 columns: vector body and tail
    labels = np.array([0, 1, 1, 2, 3, 0], dtype=np.int64)
    with configured(isa=isa), warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (rows, wide):
            for fn in ("softmax", "log_softmax"):
                np.testing.assert_allclose(getattr(K, fn)(x), getattr(ref, fn)(x), rtol=1e-6, atol=1e-30,
                                           err_msg=fn)
            loss, d = K.softmax_cross_entropy(x[:2], labels[:2])
            want_loss, want_d = ref.softmax_cross_entropy(x[:2], labels[:2])
            assert np.isfinite(loss) and abs(loss - want_loss) <= 1e-6 * abs(want_loss)
            np.testing.assert_allclose(d, want_d, rtol=1e-6, atol=1e-30)
            loss, d = K.softmax_cross_entropy(x, labels)
            assert np.isnan(loss)  # the NaN and Inf rows poison the mean, as in the reference
            np.testing.assert_allclose(d, ref.softmax_cross_entropy(x, labels)[1], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_empty_batch_is_nan_without_warning(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for target in (np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=dtype)):
            loss, d = K.softmax_cross_entropy(np.zeros((0, 4), dtype=dtype), target)
            assert isinstance(loss, float) and np.isnan(loss)
            assert d.shape == (0, 4) and d.dtype == dtype
        for fn in ("mean_squared_error", "sigmoid_binary_cross_entropy"):
            loss, g = getattr(K, fn)(np.zeros((0, 3), dtype=dtype), np.zeros((0, 3), dtype=dtype))
            assert np.isnan(loss) and g.shape == (0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_and_mse_stable_at_large_logits(dtype):
    z = np.array([[1000.0, -1000.0, 0.0, 50.0, -50.0, np.inf]], dtype=dtype)
    t = np.array([[1.0, 0.0, 0.5, 0.0, 1.0, 1.0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, g = K.sigmoid_binary_cross_entropy(z[:, :5], t[:, :5])
    want_loss, want_g = ref.sigmoid_binary_cross_entropy(z[:, :5], t[:, :5])
    assert np.isfinite(loss) and abs(loss - want_loss) <= 1e-6 * want_loss
    np.testing.assert_allclose(g, want_g, rtol=1e-6, atol=0)
    loss, _ = K.sigmoid_binary_cross_entropy(z, t)
    assert np.isnan(loss) == np.isnan(ref.sigmoid_binary_cross_entropy(z, t)[0])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_nan_and_padding(dtype, isa):
    x = np.array([[[[1.0, 1.0, 0.0, 5.0, 2.0],
                    [1.0, 0.0, 5.0, 5.0, 2.0],
                    [np.nan, 3.0, 7.0, np.nan, 9.0],
                    [4.0, np.nan, 7.0, 7.0, 9.0]]]], dtype=dtype)
    with configured(isa=isa):
        y, am = K.max_pool2d(x, 2, 2, (2, 2), (0, 0))
        # ties: the first maximum in row-major window order; a NaN: the first NaN
        np.testing.assert_array_equal(am[0, 0], [[0, 3], [10, 13]])
        np.testing.assert_array_equal(y[0, 0], np.array([[1.0, 5.0], [np.nan, np.nan]], dtype=dtype))
        # padding never wins, even against -inf
        neg = np.full((1, 1, 3, 3), -np.inf, dtype=dtype)
        y, am = K.max_pool2d(neg, 2, 2, (2, 2), (1, 1))
        np.testing.assert_array_equal(am[0, 0], [[0, 1], [3, 4]])
        assert np.all(y == -np.inf)
        # a 16+ wide row exercises the vector body of the 2x2 path with NaN and ties
        wide = np.tile(x, (1, 1, 1, 8))[..., :37]
        for got, want in zip(K.max_pool2d(wide, 2, 2, (2, 2), (0, 0)), ref.max_pool2d(wide, 2, 2, (2, 2), (0, 0))):
            np.testing.assert_array_equal(got, want)


# Windows other than 2x2 stride 2: each row's unclipped windows run window offset by
# window offset over the row (vectorised per ISA), the clipped ones at the ends alone.
# (N, C, H, W, ph, pw, stride, pad): overlapping and not, strides 1-3, pads on one side
# or both, rows of more than one 256-output chunk, a window past the 1024-element table,
# planes smaller than a vector of windows.
GENERAL_POOLS = [(2, 3, 56, 56, 3, 3, (2, 2), (1, 1)), (1, 2, 55, 55, 3, 3, (2, 2), (0, 0)),
                 (2, 2, 17, 19, 3, 3, (1, 1), (1, 1)), (1, 3, 13, 29, 2, 3, (1, 3), (1, 1)),
                 (2, 1, 9, 41, 4, 2, (3, 2), (2, 0)), (1, 1, 5, 600, 1, 3, (1, 2), (0, 1)),
                 (1, 2, 7, 7, 7, 7, (1, 1), (0, 0)), (1, 1, 34, 35, 33, 33, (1, 1), (0, 0)),
                 (3, 2, 8, 8, 2, 2, (1, 1), (0, 0)), (1, 1, 3, 40, 3, 5, (2, 4), (1, 2)),
                 (2, 3, 3, 4, 2, 2, (1, 1), (0, 0)), (1, 2, 2, 9, 2, 3, (1, 1), (0, 1))]  # tiny planes


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GENERAL_POOLS, ids=str)
def test_max_pool_general_windows_match_reference(case, dtype, isa, rng):
    n, c, h, w, ph, pw, stride, pad = case
    for kind in ("normal", "ties", "specials"):
        if kind == "ties":
            x = rng.integers(-2, 3, size=(n, c, h, w)).astype(dtype)
        else:
            x = rng.standard_normal((n, c, h, w)).astype(dtype)
        if kind == "specials":
            flat = x.reshape(-1)
            idx = rng.choice(flat.size, size=max(3, flat.size // 50), replace=False)
            flat[idx] = rng.choice([np.nan, -np.inf, np.inf], size=idx.size)
            x[0, 0, :2] = -np.inf  # whole windows of -inf: the first real element wins
        with configured(isa=isa):
            y, am = K.max_pool2d(x, ph, pw, stride, pad)
        want_y, want_am = ref.max_pool2d(x, ph, pw, stride, pad)
        np.testing.assert_array_equal(am, want_am, err_msg=kind)
        np.testing.assert_array_equal(y, want_y, err_msg=kind)


# Average pooling whose windows do not overlap (each element takes at most one share):
# global pooling (also with the stride clamped to 1), 2x2 stride 2 with an uncovered last
# row and column, padding, gaps between windows.
NON_OVERLAPPING_AVG = [(2, 3, 7, 7, 7, 7, (7, 7), (0, 0)), (2, 3, 7, 7, 7, 7, (1, 1), (0, 0)),
                       (1, 2, 9, 11, 2, 2, (2, 2), (0, 0)), (2, 2, 8, 9, 3, 2, (3, 2), (1, 1)),
                       (1, 1, 6, 6, 2, 2, (3, 3), (0, 0))]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NON_OVERLAPPING_AVG, ids=str)
def test_avg_pool_backward_without_overlap_is_the_reference_bit_for_bit(case, dtype, isa, rng):
    n, c, h, w, ph, pw, stride, pad = case
    oh = (h + 2 * pad[0] - ph) // stride[0] + 1
    ow = (w + 2 * pad[1] - pw) // stride[1] + 1
    dy = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    dy.flat[::3] = -0.0  # the reference's sum gives +0 for a -0 share
    with configured(isa=isa):
        got = K.avg_pool2d_backward(dy, (n, c, h, w), ph, pw, stride, pad)
    want = ref.avg_pool2d_backward(dy, (n, c, h, w), ph, pw, stride, pad)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


# (N, C, H, W): the 2x2 stride-2 backward writes dx in one pass when every argmax lies in
# its own block; odd H/W leave a last row/column no window covers; ow 1..33 exercises
# full vectors, tails and the AVX2 length rule. Even planes of ow <= 8 take the AVX-512
# path that pools many planes at once in blocks of 16 // ow row pairs: ow 1 to 8, blocks
# that straddle planes (oh < 16 // ow) or end part-filled (planes * oh not a multiple),
# and enough work for 2 and 3 threads to split the blocks.
UNPOOL_SHAPES = [(0, 2, 4, 4), (1, 1, 2, 2), (1, 1, 3, 3), (2, 3, 5, 7), (3, 2, 24, 24), (2, 2, 28, 29),
                 (1, 2, 9, 33), (1, 1, 2, 35), (2, 1, 7, 48), (1, 2, 66, 67),
                 (3, 7, 4, 4), (5, 3, 2, 2), (1, 3, 6, 6), (2, 5, 8, 8), (2, 3, 16, 16), (4, 3, 14, 14),
                 (7, 11, 10, 10), (1, 1, 2, 16), (2, 3, 12, 6), (64, 33, 4, 4), (60, 13, 8, 6), (9, 40, 14, 14)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", UNPOOL_SHAPES, ids=str)
def test_max_pool_2x2s2_forward_bit_identical(shape, dtype, isa):
    """y and argmax exactly as the reference (ties to the first maximum, the first NaN
    wins, -inf), at 1 to 3 threads."""
    rng = np.random.default_rng(4)
    x = _randn(rng, shape, dtype)
    x[..., ::3, ::2] = np.round(x[..., ::3, ::2])  # ties
    x[..., 1::5, 1::4] = np.nan
    x[..., 2::7, ::3] = -np.inf
    want = ref.max_pool2d(x, 2, 2, (2, 2), (0, 0))
    for threads in (1, 2, 3):
        with configured(isa=isa, threads=threads):
            got = K.max_pool2d(x, 2, 2, (2, 2), (0, 0))
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert g.tobytes() == w.tobytes(), threads


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", UNPOOL_SHAPES, ids=str)
def test_max_pool_2x2s2_backward_bit_identical(shape, dtype, isa):
    rng = np.random.default_rng(5)
    x = _randn(rng, shape, dtype)
    x[..., ::3, ::2] = np.round(x[..., ::3, ::2])  # ties
    x[..., 1::5, 1::4] = np.nan
    _, am = ref.max_pool2d(x, 2, 2, (2, 2), (0, 0))
    dy = _randn(rng, am.shape, dtype)
    dy.reshape(-1)[::5] = -0.0  # 0 + -0.0 is +0.0 in the reference's scatter
    dy.reshape(-1)[1::7] = np.nan
    dy.reshape(-1)[2::11] = np.inf
    # the forward's argmax; a foreign one (any index in the plane: must scatter, adding
    # where indices repeat); one from 3x3 stride 2 pad 1, which has the same output size
    # on even planes, and one with a single index outside its block
    foreign = rng.integers(0, shape[2] * shape[3], am.shape) if am.size else am
    cases = [(am, 2, 2, (2, 2), (0, 0)), (foreign, 2, 2, (2, 2), (0, 0))]
    if am.size:
        off = am.copy()
        off.reshape(-1)[-1] = 0 if off.reshape(-1)[-1] != 0 else shape[3] * shape[2] - 1
        cases.append((off, 2, 2, (2, 2), (0, 0)))
    if shape[2] % 2 == 0 and shape[3] % 2 == 0:
        _, am3 = ref.max_pool2d(x, 3, 3, (2, 2), (1, 1))
        cases.append((am3, 3, 3, (2, 2), (1, 1)))
    for a, fh, fw, s, p in cases:
        want = ref.max_pool2d_backward(dy, a, shape, fh, fw, s, p)
        for threads in (1, 2, 3):
            with configured(isa=isa, threads=threads):
                got = K.max_pool2d_backward(dy, a, shape, fh, fw, s, p)
            assert got.dtype == dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), (fh, s, p, threads)  # -0.0 and NaNs included


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2s2_backward_through_ops_non_contiguous(dtype, isa):
    from fastnn import ops
    rng = np.random.default_rng(9)
    x = _randn(rng, (3, 4, 13, 18), dtype)
    with configured(isa=isa):
        y, am = ops.max_pool2d(x[:, ::2], 2, 2, stride=2)
        dy = _randn(rng, (y.shape[0], y.shape[1], y.shape[2], 2 * y.shape[3]), dtype)[..., ::2]
        am_f = np.asfortranarray(am)
        got = ops.max_pool2d_backward(dy, am_f, (3, 2, 13, 18), 2, 2, 2, 0)
    want = ref.max_pool2d_backward(np.ascontiguousarray(dy), am, (3, 2, 13, 18), 2, 2, (2, 2), (0, 0))
    assert got.tobytes() == want.tobytes()


# ---------------------------------------------------------------------------
# Optimizer kernels against the book's formulas (common/optimizer.py), with L2
# weight decay and L1 added to the gradient first.

def _book_grad(p, g, wd, l1):
    return g + wd * p + l1 * np.sign(p)


def book_sgd(p, g, lr, wd, l1):
    p -= lr * _book_grad(p, g, wd, l1)


def book_momentum(p, g, v, lr, momentum, wd, l1):
    g = _book_grad(p, g, wd, l1)
    v *= momentum
    v -= lr * g
    p += v


def book_nesterov(p, g, v, lr, momentum, wd, l1):
    g = _book_grad(p, g, wd, l1)
    v *= momentum
    v -= lr * g
    p += momentum * momentum * v
    p -= (1 + momentum) * lr * g


def book_adagrad(p, g, h, lr, eps, wd, l1):
    g = _book_grad(p, g, wd, l1)
    h += g * g
    p -= lr * g / (np.sqrt(h) + eps)


def book_rmsprop(p, g, h, lr, decay, eps, wd, l1):
    g = _book_grad(p, g, wd, l1)
    h *= decay
    h += (1 - decay) * g * g
    p -= lr * g / (np.sqrt(h) + eps)


def book_adam(p, g, m, v, lr_t, beta1, beta2, eps, wd, l1):
    g = _book_grad(p, g, wd, l1)
    m += (1 - beta1) * (g - m)
    v += (1 - beta2) * (g ** 2 - v)
    p -= lr_t * m / (np.sqrt(v) + eps)


OPTIMIZERS = [
    ("sgd_update", book_sgd, 0, (0.1,)),
    ("momentum_update", book_momentum, 1, (0.05, 0.9)),
    ("nesterov_update", book_nesterov, 1, (0.05, 0.9)),
    ("adagrad_update", book_adagrad, 1, (0.1, 1e-7)),
    ("rmsprop_update", book_rmsprop, 1, (0.01, 0.99, 1e-7)),
    ("adam_update", book_adam, 2, (0.001 * np.sqrt(1 - 0.999 ** 3) / (1 - 0.9 ** 3), 0.9, 0.999, 1e-7)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [0, 1, 17, 20011])
@pytest.mark.parametrize("wd,l1", [(0.0, 0.0), (1e-2, 0.0), (5e-3, 2e-3)])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_kernels_follow_the_book(opt, wd, l1, size, dtype):
    for isa in ISAS:
        _check_optimizer_against_book(opt, wd, l1, size, dtype, isa)


def _check_optimizer_against_book(opt, wd, l1, size, dtype, isa):
    name, book, nstate, hyper = opt
    rng = np.random.default_rng(size)
    p = _randn(rng, size, dtype)
    if size:
        p[0] = 0.0  # sign(0) = 0: L1 leaves it alone
    states = [np.abs(_randn(rng, size, dtype)) * dtype(0.1) for _ in range(nstate)]
    p_want, states_want = p.copy(), [s.copy() for s in states]
    with configured(isa=isa, threads=2):
        for step in range(3):  # a few steps, so the state feeds back
            g = _randn(np.random.default_rng(step), size, dtype)
            g_before = g.copy()
            getattr(K, name)(p, g, *states, *hyper, wd, l1)
            with np.errstate(all="ignore"):
                book(p_want, g, *states_want, *hyper, wd, l1)
            np.testing.assert_array_equal(g, g_before)  # the gradient is never modified
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(p, p_want, rtol=rtol, atol=rtol * 1e-2, err_msg=f"{name} {isa}")
    for s, w in zip(states, states_want):
        np.testing.assert_allclose(s, w, rtol=rtol, atol=rtol * 1e-2, err_msg=f"{name} {isa}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_kernels_match_reference_and_threads(dtype):
    rng = np.random.default_rng(0)
    n = 100003
    for name, _, nstate, hyper in OPTIMIZERS:
        p0 = _randn(rng, n, dtype)
        g = _randn(rng, n, dtype)
        s0 = [np.abs(_randn(rng, n, dtype)) for _ in range(nstate)]
        p_ref, s_ref = p0.copy(), [s.copy() for s in s0]
        getattr(ref, name)(p_ref, g, *s_ref, *hyper, 1e-3, 1e-4)
        results = []
        for isa in ISAS:
            for threads in (1, 2, 3):
                p, s = p0.copy(), [x.copy() for x in s0]
                with configured(isa=isa, threads=threads):
                    getattr(K, name)(p, g, *s, *hyper, 1e-3, 1e-4)
                results.append([p] + s)
                assert_close(p, p_ref, dtype)
                for a, b in zip(s, s_ref):
                    assert_close(a, b, dtype)
        for r in results[1:]:
            _assert_identical(results[0], r, name)


@pytest.mark.parametrize("offset", [0, 3])
def test_big_float32_activations_stream_their_output_correctly(offset):
    """Outputs of 8 MiB and more take the non-temporal-store path; an odd length
    (and an input not starting on a vector boundary) covers its head and tail."""
    rng = np.random.default_rng(1)
    n = (1 << 21) + 4099
    buf = _randn(rng, n + offset, np.float32, 4.0)
    x = buf[offset:]  # still C-contiguous
    x[::1001] = np.nan
    dy = _randn(rng, n, np.float32)
    y = ref.sigmoid(x)
    calls = [("relu", (x,)), ("sigmoid", (x,)), ("relu_backward", (dy, x)), ("sigmoid_backward", (dy, y))]
    for name, args in calls:
        want = getattr(ref, name)(*args)
        first = None
        for isa in ISAS:
            for threads in (1, 2):
                with configured(isa=isa, threads=threads):
                    got = getattr(K, name)(*args)
                assert_close(got, want, np.float32, err_msg=f"{name} {isa} {threads}")
                if first is None or isa != first[0]:
                    first = (isa, got)
                else:
                    _assert_identical([first[1]], [got], f"{name} {isa} threads")


def test_softmax_cross_entropy_rows_of_every_length_and_special_values():
    # the vector row kernels (AVX-512: rows of up to 16 in registers, longer ones in
    # 16-lane steps; AVX2: 8-lane steps with a masked tail) on every length 1-40
    # and across a 32-row block, with NaN, Inf and hugely negative rows, per ISA
    rng = np.random.default_rng(12)
    n = 37
    for k in list(range(1, 41)) + [1003]:
        z = (rng.standard_normal((n, k)) * 5).astype(np.float32)
        t = rng.integers(0, k, n).astype(np.int64)
        if k > 3:
            z[1, 2], z[3, 0], z[4] = np.nan, np.inf, -1e30
        want_loss, want_d = ref.softmax_cross_entropy(z, t)
        ok = ~np.isnan(want_d)
        for isa in ISAS:
            with configured(isa=isa):
                loss, d = K.softmax_cross_entropy(z, t)
            assert (np.isnan(loss) and np.isnan(want_loss)) or abs(loss - want_loss) <= 1e-5 * max(1.0, abs(want_loss))
            np.testing.assert_array_equal(np.isnan(d), np.isnan(want_d), err_msg=f"{isa} K={k}")
            # dz = (softmax - onehot) / n: a few float32 roundings of values of at most 1 / n
            np.testing.assert_allclose(d[ok], want_d[ok], rtol=0, atol=8 * np.finfo(np.float32).eps / n,
                                       err_msg=f"{isa} K={k}")


# ---------------------------------------------------------------------------
# Batch normalisation: x (N, C, S), statistics per feature c over N and S. S = 1
# takes column blocks of 64 features (C around 64 and 131 cross them), S > 1 one
# feature's rows of S values (S around the 16 lanes of the row sums).

BN_SHAPES = [(1, 1, 1), (2, 3, 1), (7, 5, 1), (5, 63, 1), (3, 64, 1), (4, 65, 1), (3, 131, 1), (2, 3, 5),
             (1, 2, 16), (3, 2, 17), (5, 3, 35), (2, 1, 576), (0, 3, 7), (0, 70, 1),
             (64, 700, 1), (100, 30, 576)]  # the last two go parallel (several units, enough work)


def _bn_case(shape, dtype, train, seed=0):
    """(forward args, backward args but for mean and inv_std, which come from the forward)."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = _randn(rng, shape, dtype, 3.0) + dtype(1.5)
    gamma, beta = rng.uniform(0.5, 2, c).astype(dtype), _randn(rng, c, dtype)
    stats = (None, None) if train else (_randn(rng, c, dtype, 0.5), rng.uniform(0.5, 2, c).astype(dtype))
    return (x, gamma, beta, *stats, 1e-5), (_randn(rng, shape, dtype), x, gamma)


def _bn_both(shape, dtype, train, isa=None, threads=None, backend=K):
    fwd, (dy, x, gamma) = _bn_case(shape, dtype, train)
    with configured(isa=isa, threads=threads):
        y, mean, var, inv_std = backend.batch_norm_forward(*fwd)
        dx, dgamma, dbeta = backend.batch_norm_backward(dy, x, gamma, mean, inv_std, train)
    return [np.asarray(a) for a in (y, mean, var, inv_std, dx, dgamma, dbeta)]


BN_CASES = [pytest.param(shape, train, id=f"{shape}-{'train' if train else 'eval'}")
            for shape in BN_SHAPES for train in (True, False) if shape[0] or not train]  # N = 0: eval only


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, train", BN_CASES)
def test_batch_norm_matches_reference(shape, dtype, train):
    """Forward (batch or given statistics) and backward (through them or not) against
    the reference, each output within the dtype's tolerance of its own magnitude: dx
    and y are a few roundings of k * (terms of dy or x), with k = gamma * inv_std;
    dgamma and dbeta sum N * S terms."""
    n, c, s = shape
    want = _bn_both(shape, dtype, train, backend=ref)
    y, mean, var, inv_std, dx, dgamma, dbeta = want
    fwd, (dy, x, gamma) = _bn_case(shape, dtype, train)
    k = np.abs(gamma * inv_std).max()
    xn = np.abs((x - mean[:, None]) * inv_std[:, None]).max(initial=0)
    big_x, big_dy = np.abs(x).max(initial=0), np.abs(dy).max(initial=0)
    scales = [k * big_x + np.abs(fwd[2]).max(), big_x, big_x * big_x, inv_std.max(),
              k * big_dy * (2 + xn), big_dy * xn, big_dy]
    reductions = [1, 1, 1, 1, 1, n * s, n * s]
    names = ["y", "mean", "var", "inv_std", "dx", "dgamma", "dbeta"]
    for isa in ISAS:
        got = _bn_both(shape, dtype, train, isa=isa, threads=2)
        for name, g, w, r, sc in zip(names, got, want, reductions, scales):
            assert g.dtype == dtype and g.flags.c_contiguous, name
            assert_close(g, w, dtype, reduction=r, scale=sc, err_msg=f"{name} on {isa}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(64, 700, 1), (100, 30, 576), (7, 5, 1), (3, 2, 17)], ids=str)
def test_batch_norm_same_bits_on_every_isa_and_thread_count(shape, dtype):
    """Each feature is computed whole by one thread, its row sums in 16 lanes added in
    lane order, and no FMA is contracted: the bits depend on neither."""
    for train in (True, False):
        first = _bn_both(shape, dtype, train, isa=ISAS[0], threads=1)
        for isa in ISAS:
            for threads in (1, 2, 3):
                _assert_identical(first, _bn_both(shape, dtype, train, isa=isa, threads=threads),
                                  f"train={train} {isa} threads={threads}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(50, 3, 97), (500, 70, 1)], ids=str)
def test_batch_norm_variance_survives_a_large_mean(shape, dtype):
    """x = 1e4 + N(0, 1): the squares about the mean, not E[x^2] - E[x]^2 (which loses
    every digit of a float32 variance here). Against the variance in float64 fsum."""
    rng = np.random.default_rng(1)
    x = (1e4 + rng.standard_normal(shape)).astype(dtype)
    c = shape[1]
    rows = np.asarray(x, np.float64).transpose(1, 0, 2).reshape(c, -1)
    mu = np.array([math.fsum(r) / r.size for r in rows])
    var = np.array([math.fsum((r - m) ** 2) / r.size for r, m in zip(rows, mu)])
    for isa in ISAS:
        with configured(isa=isa):
            _, mean, got_var, _ = K.batch_norm_forward(x, np.ones(c, dtype), np.zeros(c, dtype), None, None, 0.0)
        np.testing.assert_allclose(mean, mu, rtol=1e-6 if dtype == np.float32 else 1e-14)
        np.testing.assert_allclose(got_var, var, rtol=1e-5 if dtype == np.float32 else 1e-10)
