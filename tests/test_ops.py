"""Every op of fastnn.ops, forward and backward, in float32 and float64, on shapes
hypothesis draws (batch 0 and 1, primes, non-square kernels, strides 1-3, pads 0-2,
non-contiguous and negative-stride views).

Each test runs on both backends. On "numpy" the reference is checked against
straightforward loop implementations written here (tiny shapes, float64 math),
which proves the reference; on "native" the C kernels are checked against the
reference.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import ops as F
from helpers import (BACKENDS, FLOAT_DTYPES, assert_close, conv_geometries, float_dtypes, layouts,
                     naive_avg_pool, naive_avg_pool_backward, naive_max_pool, naive_max_pool_backward, naive_pool2d,
                     matmul_shapes, native_setting, out_size, pool_geometries, random_array, run_on,
                     with_layout)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def expected(backend, naive, op, *args, **kwargs):
    """What backend must produce: the loop implementation when testing the reference,
    the reference when testing the native kernels."""
    if backend == "numpy":
        return naive()
    return run_on("numpy", op, *args, **kwargs)


# ---------------------------------------------------------------------------
# Straightforward loop implementations, in float64 Python arithmetic

def naive_matmul(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = math.fsum(a[i, k] * b[k, j] for k in range(a.shape[1]))
    return out


def _elementwise(func, *arrays):
    arrays = [np.asarray(a, np.float64) for a in arrays]
    out = np.empty(arrays[0].shape)
    for idx in np.ndindex(out.shape):
        out[idx] = func(*(float(a[idx]) for a in arrays))
    return out


def _relu(v):
    return v if (v > 0 or v != v) else 0.0


def _sigmoid(v):
    if v == math.inf:
        return 1.0
    if v == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0


def _softplus(v):
    if v > 30:
        return v + math.log1p(math.exp(-v))
    return math.log1p(math.exp(v)) if v == v else v


SCALAR_ACT = {
    "identity": lambda v, a: v,
    "relu": lambda v, a: _relu(v),
    "leaky_relu": lambda v, a: v if v > 0 else a * v,
    "elu": lambda v, a: v if v > 0 else a * math.expm1(v),
    "sigmoid": lambda v, a: _sigmoid(v),
    "tanh": lambda v, a: math.tanh(v),
    "softplus": lambda v, a: _softplus(v),
}
# Derivative with respect to the pre-activation input v.
SCALAR_ACT_GRAD = {
    "identity": lambda v, a: 1.0,
    "relu": lambda v, a: 1.0 if v > 0 else 0.0,
    "leaky_relu": lambda v, a: 1.0 if v > 0 else a,
    "elu": lambda v, a: 1.0 if v > 0 else a * math.exp(v),
    "sigmoid": lambda v, a: _sigmoid(v) * (1 - _sigmoid(v)),
    "tanh": lambda v, a: 1 - math.tanh(v) ** 2,
    "softplus": lambda v, a: _sigmoid(v),
}


def naive_act(z, name, alpha=0.0):
    return _elementwise(lambda v: SCALAR_ACT[name or "identity"](v, alpha), z)


def naive_linear(x, W, b, act, alpha):
    z = naive_matmul(np.asarray(x).reshape(x.shape[0], math.prod(x.shape[1:])), W)
    if b is not None:
        z = z + np.asarray(b, np.float64)
    return naive_act(z, act, alpha), z


def naive_im2col(x, fh, fw, stride, pad):
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, pad
    oh, ow = out_size(h, fh, sh, ph), out_size(w, fw, sw, pw)
    col = np.zeros((n * oh * ow, c * fh * fw))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                row = (b * oh + i) * ow + j
                for ch in range(c):
                    for di in range(fh):
                        for dj in range(fw):
                            hh, ww = i * sh - ph + di, j * sw - pw + dj
                            if 0 <= hh < h and 0 <= ww < w:
                                col[row, (ch * fh + di) * fw + dj] = x[b, ch, hh, ww]
    return col


def naive_col2im(col, x_shape, fh, fw, stride, pad):
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, pad
    oh, ow = out_size(h, fh, sh, ph), out_size(w, fw, sw, pw)
    img = np.zeros(x_shape)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                row = (b * oh + i) * ow + j
                for ch in range(c):
                    for di in range(fh):
                        for dj in range(fw):
                            hh, ww = i * sh - ph + di, j * sw - pw + dj
                            if 0 <= hh < h and 0 <= ww < w:
                                img[b, ch, hh, ww] += col[row, (ch * fh + di) * fw + dj]
    return img


def _padded(x, pad, value=0.0):
    ph, pw = pad
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), value)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def naive_conv2d(x, W, b, stride, pad, act=None, alpha=0.0):
    n = x.shape[0]
    f, c, fh, fw = W.shape
    (sh, sw) = stride
    oh, ow = out_size(x.shape[2], fh, sh, pad[0]), out_size(x.shape[3], fw, sw, pad[1])
    xp = _padded(np.asarray(x, np.float64), pad)
    Wd = np.asarray(W, np.float64)
    z = np.zeros((n, f, oh, ow))
    for bi in range(n):
        for fi in range(f):
            for i in range(oh):
                for j in range(ow):
                    window = xp[bi, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
                    z[bi, fi, i, j] = math.fsum((window * Wd[fi]).ravel()) + (0.0 if b is None else float(b[fi]))
    return naive_act(z, act, alpha)


def naive_conv2d_backward(dy, x, W, stride, pad):
    n, c, h, w = x.shape
    f, _, fh, fw = W.shape
    (sh, sw), (ph, pw) = stride, pad
    xp = _padded(np.asarray(x, np.float64), pad)
    dxp = np.zeros_like(xp)
    dW = np.zeros(W.shape)
    dy = np.asarray(dy, np.float64)
    Wd = np.asarray(W, np.float64)
    for bi in range(n):
        for fi in range(f):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    g = dy[bi, fi, i, j]
                    dW[fi] += g * xp[bi, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
                    dxp[bi, :, i * sh:i * sh + fh, j * sw:j * sw + fw] += g * Wd[fi]
    return dxp[:, :, ph:ph + h, pw:pw + w], dW, dy.sum(axis=(0, 2, 3))


def naive_log_softmax_rows(x):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        m = max(x[r])
        log_s = math.log(math.fsum(math.exp(v - m) for v in x[r]))
        out[r] = [v - m - log_s for v in x[r]]
    return out


def naive_cross_entropy(logits, target):
    logp = naive_log_softmax_rows(logits)
    n, k = logits.shape
    t = np.zeros((n, k))
    if np.asarray(target).ndim == 1:
        t[np.arange(n), target] = 1.0
    else:
        t[...] = target
    loss = -math.fsum((t * logp).ravel()) / n if n else math.nan
    return loss, (np.exp(logp) - t) / max(n, 1)


# ---------------------------------------------------------------------------
# matmul and linear

@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(shape=matmul_shapes(), dtype=float_dtypes, la=layouts, lb=layouts, seed=seeds)
def test_matmul(backend, shape, dtype, la, lb, seed):
    rng = np.random.default_rng(seed)
    m, k, n = shape
    a = random_array(rng, (m, k), dtype, la)
    b = random_array(rng, (k, n), dtype, lb)
    got = run_on(backend, F.matmul, a, b)
    assert_close(got, expected(backend, lambda: naive_matmul(a, b), F.matmul, a, b), dtype, reduction=k)


def naive_gemm(a, b, c, trans_a, trans_b, alpha, beta):
    """alpha * op(a) @ op(b) + beta * c in float64, with BLAS's zeros: no product where
    alpha is 0, c unread where beta is 0."""
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    out = alpha * naive_matmul(op_a, op_b) if alpha != 0 else np.zeros((op_a.shape[0], op_b.shape[1]))
    return out + beta * np.asarray(c, np.float64) if beta != 0 else out


GEMM_C_LAYOUTS = ("c", "fortran", "sliced", "strided", "reversed")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(m=st.sampled_from([0, 1, 2, 3, 5, 8, 13]), k=st.sampled_from([0, 1, 2, 7, 13]),
       n=st.sampled_from([1, 2, 5, 11, 17]), dtype=float_dtypes, trans_a=st.booleans(), trans_b=st.booleans(),
       la=layouts, lb=layouts, c_layout=st.sampled_from((None,) + GEMM_C_LAYOUTS),
       alpha=st.sampled_from([1.0, 0.0, -0.5, 2.0]), beta=st.sampled_from([0.0, 1.0, 0.5, -2.0]), seed=seeds)
def test_gemm(backend, m, k, n, dtype, trans_a, trans_b, la, lb, c_layout, alpha, beta, seed):
    """alpha * op(a) @ op(b) + beta * c for every op pair, operand layout and layout of c
    (updated in place and returned; without c a new array, beta 0); the layout of c never
    changes the bits."""
    rng = np.random.default_rng(seed)
    a = random_array(rng, (k, m) if trans_a else (m, k), dtype, la)
    b = random_array(rng, (n, k) if trans_b else (k, n), dtype, lb)
    c0 = None if c_layout is None else random_array(rng, (m, n), dtype)
    if c0 is None:
        beta = 0.0
    kwargs = dict(trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta)
    c = None if c0 is None else with_layout(c0.copy(), c_layout)   # c0 kept: "c" is no copy
    got = run_on(backend, F.gemm, a, b, c, **kwargs)
    if c is not None:
        assert got is c
    assert got.shape == (m, n) and got.dtype == dtype
    if backend == "numpy":
        want = naive_gemm(a, b, c0, trans_a, trans_b, alpha, beta)
    else:
        want = run_on("numpy", F.gemm, a, b, None if c0 is None else c0.copy(), **kwargs)
    assert_close(got, want, dtype, reduction=k + 1, scale=2.0)
    again = run_on(backend, F.gemm, np.ascontiguousarray(a), np.ascontiguousarray(b),
                   None if c0 is None else c0.copy(), **kwargs)
    np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gemm_leaves_out_what_a_zero_alpha_or_beta_scales(backend, dtype):
    """As BLAS: beta = 0 writes c without reading it, alpha = 0 or an empty depth never forms
    the product, so the NaN and Inf there do not reach the result."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((9, 37)).astype(dtype)
    b = rng.standard_normal((37, 20)).astype(dtype)
    c0 = rng.standard_normal((9, 20)).astype(dtype)
    with fastnn.backend(backend):
        c = np.full((9, 20), np.nan, dtype)
        F.gemm(a, b, c, alpha=2.0, beta=0.0)
        assert_close(c, 2.0 * naive_matmul(a, b), dtype, reduction=37, scale=2.0)
        poisoned = a.copy()
        poisoned[4, 5], poisoned[0, 0] = np.nan, np.inf
        c = c0.copy()
        F.gemm(poisoned, b, c, alpha=0.0, beta=0.5)
        np.testing.assert_array_equal(c, c0 * dtype(0.5))
        c = np.full((9, 20), np.inf, dtype)
        F.gemm(poisoned, b, c, alpha=0.0, beta=0.0)
        np.testing.assert_array_equal(c, np.zeros((9, 20), dtype))
        c = c0.copy()
        F.gemm(np.empty((9, 0), dtype), np.empty((0, 20), dtype), c, alpha=3.0, beta=-2.0)
        np.testing.assert_array_equal(c, c0 * dtype(-2.0))
        np.testing.assert_array_equal(F.gemm(np.empty((0, 9), dtype), np.empty((0, 20), dtype), trans_a=True),
                                      np.zeros((9, 20), dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gemm_into_a_c_that_overlaps_a_or_b_reads_them_first(backend, dtype):
    """c may be a or b, or overlap them: the result is that of separate arrays, as NumPy's
    matmul with out= gives."""
    rng = np.random.default_rng(6)
    with fastnn.backend(backend):
        s = rng.standard_normal((6, 6)).astype(dtype)
        want = F.gemm(s.copy(), s.copy(), s.copy(), trans_b=True, alpha=0.5, beta=2.0)
        assert_close(want, 0.5 * naive_matmul(s, s.T) + 2.0 * s.astype(np.float64), dtype, reduction=7, scale=2.0)
        got = F.gemm(s, s, s, trans_b=True, alpha=0.5, beta=2.0)
        np.testing.assert_array_equal(got, want)
        buf = rng.standard_normal((9, 9)).astype(dtype)
        a, b, c = buf[:6, :5], buf[1:6, 2:7], buf[3:9, 4:9]    # c overlaps both
        want = F.gemm(a.copy(), b.copy(), c.copy(), alpha=-1.0, beta=0.5)
        got = F.gemm(a, b, c, alpha=-1.0, beta=0.5)
        assert got is c
        np.testing.assert_array_equal(c, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gemm_computes_in_the_dtype_of_a_wider_c_and_refuses_a_narrower_one(backend):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((5, 8)).astype(np.float32)
    b = rng.standard_normal((8, 3)).astype(np.float32)
    c0 = rng.standard_normal((5, 3))
    with fastnn.backend(backend):
        c = c0.copy()
        F.gemm(a, b, c, alpha=1.5, beta=-1.0)
        want = F.gemm(a.astype(np.float64), b.astype(np.float64), c0.copy(), alpha=1.5, beta=-1.0)
        np.testing.assert_array_equal(c, want)
        with pytest.raises(TypeError, match=r"^gemm: a and b compute in float64, which c \(float32\) cannot hold"):
            F.gemm(a.astype(np.float64), b, np.zeros((5, 3), np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(shape=matmul_shapes(), extra=st.sampled_from([(), (2,), (1, 3)]), dtype=float_dtypes,
       act=st.sampled_from([None, *F.ACTIVATIONS]), use_bias=st.booleans(), layout=layouts, seed=seeds)
def test_linear_forward_and_backward(backend, shape, extra, dtype, act, use_bias, layout, seed):
    rng = np.random.default_rng(seed)
    n, d, m = shape
    x_shape = (n, d) + extra
    d_flat = math.prod(x_shape[1:])
    x = random_array(rng, x_shape, dtype, layout)
    W = random_array(rng, (d_flat, m), dtype, layout, scale=1 / math.sqrt(d_flat))
    b = random_array(rng, (m,), dtype) if use_bias else None
    alpha = 0.2 if act in ("leaky_relu", "elu") else None
    y = run_on(backend, F.linear, x, W, b, activation=act, alpha=alpha)
    a = alpha or 0.0
    want_y, z = naive_linear(x, W, b, act, a)
    if backend != "numpy":
        want_y = run_on("numpy", F.linear, x, W, b, activation=act, alpha=alpha)
    assert_close(y, want_y, dtype, reduction=d_flat)

    dy = random_array(rng, (n, m), dtype, layout)
    y_ref = run_on("numpy", F.linear, x, W, b, activation=act, alpha=alpha)
    dx, dW, db = run_on(backend, F.linear_backward, dy, x, W, activation=act, y=y_ref, alpha=alpha)
    if backend == "numpy":
        dz = np.asarray(dy, np.float64) * _elementwise(lambda v: SCALAR_ACT_GRAD[act or "identity"](v, a), z)
        x2 = np.asarray(x, np.float64).reshape(n, d_flat)
        want = (naive_matmul(dz, np.asarray(W, np.float64).T).reshape(x_shape), naive_matmul(x2.T, dz),
                dz.sum(axis=0))
    else:
        want = run_on("numpy", F.linear_backward, dy, x, W, activation=act, y=y_ref, alpha=alpha)
    # float32: y rounds before the derivative is recomputed from it, hence scale 4.
    assert_close(dx, want[0], dtype, reduction=m, scale=4)
    assert_close(dW, want[1], dtype, reduction=n, scale=4)
    assert_close(db, want[2], dtype, reduction=n, scale=4)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "native"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("m,k,n", [(67, 131, 45), (1, 257, 1), (129, 1, 97), (200, 300, 70)])
def test_matmul_and_linear_large_native(backend, dtype, m, k, n, rng):
    # Shapes past the register and cache blocks of the GEMM, including edge tiles.
    a = random_array(rng, (m, k), dtype)
    b = random_array(rng, (k, n), dtype)
    assert_close(run_on(backend, F.matmul, a, b), run_on("numpy", F.matmul, a, b), dtype, reduction=k)
    assert_close(run_on(backend, F.matmul, np.asfortranarray(a[::-1]), b[:, ::-1]),
                 run_on("numpy", F.matmul, a[::-1], b[:, ::-1]), dtype, reduction=k)
    bias = random_array(rng, (n,), dtype)
    for act in F.ACTIVATIONS:
        assert_close(run_on(backend, F.linear, a, b, bias, activation=act),
                     run_on("numpy", F.linear, a, b, bias, activation=act), dtype, reduction=k,
                     err_msg=act)


MATRIX_LAYOUTS = ("c", "fortran", "sliced", "fortran_sliced", "strided", "reversed")


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "native"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("m,k,n", [(0, 5, 3), (4, 0, 3), (1, 1, 1), (1, 9, 1), (7, 1, 5), (1, 33, 17),
                                   (67, 131, 45), (129, 257, 97)])
def test_matmul_and_linear_every_operand_layout(backend, dtype, m, k, n, rng):
    """matmul with each operand, and linear / linear_backward with W, in each layout: a
    transposed view (Fortran), a block of columns or of rows of a larger matrix (read in
    place as op = T or with a leading dimension), or a copied layout (strided, reversed),
    give the reference's results for the same values."""
    a0 = random_array(rng, (m, k), dtype)
    b0 = random_array(rng, (k, n), dtype, scale=1 / math.sqrt(max(k, 1)))
    want = run_on("numpy", F.matmul, a0, b0)
    for la in MATRIX_LAYOUTS:
        for lb in MATRIX_LAYOUTS:
            got = run_on(backend, F.matmul, with_layout(a0, la), with_layout(b0, lb))
            assert_close(got, want, dtype, reduction=k, err_msg=f"a {la}, b {lb}")
    if k == 0:
        return   # linear takes D >= 1 features
    bias = random_array(rng, (n,), dtype)
    y_want = run_on("numpy", F.linear, a0, b0, bias, activation="relu")
    dy = random_array(rng, (m, n), dtype)
    grads_want = run_on("numpy", F.linear_backward, dy, a0, b0, activation="relu", y=y_want)
    for lw in MATRIX_LAYOUTS:
        W = with_layout(b0, lw)
        assert_close(run_on(backend, F.linear, a0, W, bias, activation="relu"), y_want, dtype, reduction=k,
                     err_msg=lw)
        grads = run_on(backend, F.linear_backward, dy, a0, W, activation="relu", y=y_want)
        for name, got, exp, red in zip(("dx", "dW", "db"), grads, grads_want, (n, m, m)):
            assert_close(got, exp, dtype, reduction=max(red, 1), err_msg=f"{name}, W {lw}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_big_endian_arrays_give_the_native_order_bits(backend, dtype, rng):
    # as NumPy computes on them: data read from FITS, HDF5 or a .npy written on another machine
    def swapped(a):
        return a.astype(a.dtype.newbyteorder(">" if a.dtype.isnative and np.little_endian else "<"))

    x = rng.standard_normal((3, 2, 6, 5)).astype(dtype)
    W = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    A = rng.standard_normal((7, 5)).astype(dtype)
    B = rng.standard_normal((5, 3)).astype(dtype)
    labels = np.array([0, 2, 1])
    calls = [(F.relu, (x,)), (F.conv2d, (x, W)), (F.matmul, (A, B)), (F.max_pool2d, (x, 2)),
             (F.softmax_cross_entropy, (A[:3], labels)), (F.linear_backward, (A @ B, A, B))]
    for op, args in calls:
        expected = run_on(backend, op, *args)
        got = run_on(backend, op, *[swapped(a) if isinstance(a, np.ndarray) else a for a in args])
        for e, g in zip(expected if isinstance(expected, tuple) else (expected,),
                        got if isinstance(got, tuple) else (got,)):
            if isinstance(e, np.ndarray):
                assert g.dtype == e.dtype and g.dtype.isnative, op.__name__
            np.testing.assert_array_equal(g, e, err_msg=op.__name__)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "native"])
def test_matmul_reads_transposed_operands_without_copying_them(backend):
    """The book's backward products, x.T @ dout and dout @ W.T, on a batch of 256 read
    the transposed view in place: no copy of it is allocated (NumPy's transposing copy
    of a 1024 x 1024 float32 W takes longer than the product)."""
    import tracemalloc
    rng = np.random.default_rng(3)
    W = rng.standard_normal((1024, 1024)).astype(np.float32)
    dout = rng.standard_normal((256, 1024)).astype(np.float32)
    x = rng.standard_normal((1024, 256)).astype(np.float32)
    cases = {"dout @ W.T": (dout, W.T), "x.T @ W": (x.T, W), "x.T @ W[:, :512]": (x.T, W[:, :512])}
    for name, (a, b) in cases.items():
        with native_setting(threads=1):
            run_on(backend, F.matmul, a, b)   # scratch allocated before measuring
            tracemalloc.start()
            try:
                got = run_on(backend, F.matmul, a, b)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak < 2 * got.nbytes, f"{name}: {peak} bytes allocated for a {got.nbytes}-byte result"
        assert_close(got, np.asarray(a, np.float64) @ np.asarray(b, np.float64), np.float32,
                     reduction=a.shape[1], err_msg=name)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "native"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("m,k,n", [(1, 300, 40), (3, 300, 50), (12, 64, 37), (12, 300, 70), (40, 90, 100),
                                   (70, 40, 36), (129, 257, 97), (200, 1100, 48), (96, 300, 160),
                                   (100, 2000, 96)])
def test_matmul_and_linear_layout_never_changes_the_bits(backend, dtype, m, k, n, rng):
    """A transposed view (read in place where both layouts take the packed driver alone,
    else copied to C order first) or a block of a larger matrix gives the bits of the C
    copy, on each thread count; the shapes take each route of the GEMM: one row, dot
    products, few rows with B in place, tail columns, and the packed driver (on its
    grid, its shared schedules and the depth split), where op(A) = A is read in place
    by the indirect-A kernel and op(A) = A^T packed."""
    a0 = random_array(rng, (m, k), dtype)
    b0 = random_array(rng, (k, n), dtype)
    dy = random_array(rng, (m, n), dtype)
    for threads in (1, 2, 3):
        with native_setting(threads=threads):
            want = run_on(backend, F.matmul, a0, b0)
            y_want = run_on(backend, F.linear, a0, b0)
            grads_want = run_on(backend, F.linear_backward, dy, a0, b0)
            for la in ("c", "fortran", "sliced", "fortran_sliced"):
                for lb in ("c", "fortran", "sliced", "fortran_sliced"):
                    got = run_on(backend, F.matmul, with_layout(a0, la), with_layout(b0, lb))
                    np.testing.assert_array_equal(got, want, err_msg=f"a {la}, b {lb}, {threads} threads")
                W = with_layout(b0, lb)
                np.testing.assert_array_equal(run_on(backend, F.linear, a0, W), y_want, err_msg=f"W {lb}")
                for got, exp in zip(run_on(backend, F.linear_backward, dy, a0, W), grads_want):
                    np.testing.assert_array_equal(got, exp, err_msg=f"backward, W {lb}, {threads} threads")


def test_gemm_readable_layouts():
    """Which 2-D layouts the GEMM reads in place: a unit stride along rows or columns,
    the other stride keeping rows (columns) apart; anything else is copied first."""
    from fastnn._validate import gemm_readable
    from numpy.lib.stride_tricks import as_strided
    base = np.zeros((6, 8), np.float32)
    readable = {"C": base, "transposed": base.T, "column block": base[:, 2:5], "row block of F": base.T[1:4],
                "one row, any stride": as_strided(base, (1, 8), (0, 4)),
                "one column, row stride 2": base.reshape(-1)[::2].reshape(24, 1),
                "empty": base[:0], "empty, odd strides": as_strided(base, (0, 5), (4, 64))}
    copied = {"every other column": base[:, ::2], "reversed rows": base[::-1], "reversed columns": base[:, ::-1],
              "overlapping rows": as_strided(base, (4, 8), (4, 4)), "broadcast rows": np.broadcast_to(base[0], (6, 8)),
              "strides not whole items": as_strided(base.view(np.uint8)[2:].view(np.float32)[:, :7], (5, 7), (34, 4))}
    for name, arr in readable.items():
        assert gemm_readable(arr), name
    for name, arr in copied.items():
        assert not gemm_readable(arr), name


# ---------------------------------------------------------------------------
# Activations

ACT_CASES = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "step", "identity"]


def _call_forward(name, x, alpha):
    func = getattr(F, name)
    return func(x, alpha) if name in ("leaky_relu", "elu") else func(x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ACT_CASES)
@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(), (0,), (1,), (7,), (3, 5), (2, 0, 3), (2, 3, 4, 5)]), dtype=float_dtypes,
       layout=layouts, alpha=st.sampled_from([0.01, 0.3, 1.0, 2.5]), seed=seeds)
def test_activation_forward_and_backward(backend, name, shape, dtype, layout, alpha, seed):
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape, dtype, layout, scale=4.0)
    y = run_on(backend, _call_forward, name, x, alpha)
    if name == "step":
        want = _elementwise(lambda v: 1.0 if v > 0 else 0.0, x)
    else:
        want = naive_act(x, name, alpha)
    if backend != "numpy":
        want = run_on("numpy", _call_forward, name, x, alpha)
    assert_close(y, want, dtype)
    assert not np.shares_memory(y, x)
    if name == "step":
        return
    dy = random_array(rng, shape, dtype, layout)
    if name in ("sigmoid", "tanh"):
        y_in = np.asarray(want, dtype)
        got = run_on(backend, getattr(F, name + "_backward"), dy, y_in)
        grad = _elementwise(lambda g, v: g * SCALAR_ACT_GRAD[name](v, alpha), dy, x)
    elif name == "identity":
        got = run_on(backend, F.identity_backward, dy)
        grad = np.asarray(dy, np.float64)
    elif name in ("leaky_relu", "elu"):
        got = run_on(backend, getattr(F, name + "_backward"), dy, x, alpha)
        grad = _elementwise(lambda g, v: g * SCALAR_ACT_GRAD[name](v, alpha), dy, x)
    else:
        got = run_on(backend, getattr(F, name + "_backward"), dy, x)
        grad = _elementwise(lambda g, v: g * SCALAR_ACT_GRAD[name](v, alpha), dy, x)
    if backend != "numpy":
        grad = run_on("numpy", F.activation_backward, dy, name, x=x, y=np.asarray(want, dtype), alpha=alpha)
    assert_close(got, grad, dtype, scale=2)
    # The generic entry points give the same answers as the named ops.
    assert_close(run_on(backend, F.activation, x, None if name == "identity" else name, alpha),
                 y, dtype) if name != "step" else None
    assert_close(run_on(backend, F.activation_backward, dy, name, x=x, y=y, alpha=alpha), got, dtype)


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e4, -1e4, 1e-30, -1e-30, 88.8, -88.8, 710.0, -710.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_activations_special_values(backend, dtype):
    """Known values at NaN, +-inf, +-0 and huge |x|, without any floating-point warning."""
    x = SPECIAL.astype(dtype) if dtype == np.float64 else SPECIAL[np.abs(np.nan_to_num(SPECIAL)) < 3e38].astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fastnn.backend(backend):
            out = {name: _call_forward(name, x, 0.5) for name in ACT_CASES}
            grads = {
                "relu": F.relu_backward(np.ones_like(x), x), "leaky_relu": F.leaky_relu_backward(np.ones_like(x), x, 0.5),
                "elu": F.elu_backward(np.ones_like(x), x, 0.5), "softplus": F.softplus_backward(np.ones_like(x), x),
            }
    xs = x.astype(np.float64)
    nan = np.isnan(xs)
    for name in ACT_CASES:
        assert out[name].dtype == dtype
        if name != "step":
            assert np.all(np.isnan(out[name][nan])), name  # NaN propagates
    big, small = xs == 1e4, xs == -1e4
    assert np.all(out["sigmoid"][big] == 1) and np.all(out["sigmoid"][small] == 0)
    assert np.all(out["sigmoid"][xs == np.inf] == 1) and np.all(out["sigmoid"][xs == -np.inf] == 0)
    assert np.all(out["tanh"][xs == np.inf] == 1) and np.all(out["tanh"][xs == -np.inf] == -1)
    assert np.all(out["softplus"][big] == 1e4) and np.all(out["softplus"][small] == 0)
    assert np.all(out["softplus"][xs == np.inf] == np.inf) and np.all(out["softplus"][xs == -np.inf] == 0)
    assert np.all(out["elu"][small] == -0.5) and np.all(out["elu"][xs == -np.inf] == -0.5)
    assert np.all(out["relu"][small] == 0) and np.all(out["relu"][big] == 1e4)
    assert np.all(out["leaky_relu"][small] == -5e3)
    assert out["step"][nan].tolist() == [0.0] and np.all(out["step"][xs == 0] == 0)
    assert np.all(out["relu"][xs == 0] == 0)
    assert np.all(grads["relu"][xs == 0] == 0) and np.all(grads["leaky_relu"][xs == 0] == 0.5)
    assert np.all(grads["softplus"][big] == 1) and np.all(grads["softplus"][small] == 0)
    assert np.all(grads["elu"][small] == 0) and np.all(grads["elu"][big] == 1)
    finite = ~nan
    for name in ("sigmoid", "tanh", "softplus", "elu"):
        assert not np.any(np.isnan(out[name][finite])), name


# ---------------------------------------------------------------------------
# im2col / col2im / conv2d

def _conv_inputs(rng, g, dtype, layout):
    x = random_array(rng, (g["n"], g["c"], g["h"], g["w"]), dtype, layout)
    W = random_array(rng, (g["f"], g["c"], g["fh"], g["fw"]), dtype, layout)
    b = random_array(rng, (g["f"],), dtype)
    oh = out_size(g["h"], g["fh"], g["stride"][0], g["pad"][0])
    ow = out_size(g["w"], g["fw"], g["stride"][1], g["pad"][1])
    return x, W, b, oh, ow


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(g=conv_geometries(max_batch=3, max_hw=11), dtype=float_dtypes, layout=layouts, use_bias=st.booleans(),
       act=st.sampled_from([None, "relu", "tanh"]), data=st.data(), seed=seeds)
def test_conv2d_max_pool2d_is_conv_then_pool(backend, g, dtype, layout, use_bias, act, data, seed):
    rng = np.random.default_rng(seed)
    x, W, b, oh, ow = _conv_inputs(rng, g, dtype, layout)
    b = b if use_bias else None
    ph, pw = data.draw(st.integers(1, min(oh, 3))), data.draw(st.integers(1, min(ow, 3)))
    pool_stride = data.draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pool_pad = (data.draw(st.integers(0, ph // 2)), data.draw(st.integers(0, pw // 2)))
    if data.draw(st.booleans()) and x.size:
        x = np.array(x)
        x.flat[rng.integers(0, x.size)] = np.nan  # a NaN window wins, as in max_pool2d
    kw = dict(stride=g["stride"], pad=g["pad"], activation=act)
    pool = dict(pool_h=ph, pool_w=pw, pool_stride=pool_stride, pool_pad=pool_pad)
    y, argmax = run_on(backend, F.conv2d_max_pool2d, x, W, b, **kw, **pool)
    # the same backend's two ops one after the other: the same arithmetic, so equal
    conv = run_on(backend, F.conv2d, x, W, b, **kw)
    want_y, want_arg = run_on(backend, F.max_pool2d, conv, ph, pw, stride=pool_stride, pad=pool_pad)
    assert y.dtype == dtype and argmax.dtype == np.int32  # max_pool2d's int64 halved
    np.testing.assert_array_equal(argmax, want_arg)
    np.testing.assert_array_equal(y, want_y)
    if backend == "native":
        ref_y, _ = run_on("numpy", F.conv2d_max_pool2d, x, W, b, **kw, **pool)
        assert_close(y, ref_y, dtype, reduction=g["c"] * g["fh"] * g["fw"])


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(g=conv_geometries(max_batch=3, max_hw=11), dtype=float_dtypes, layout=layouts,
       act=st.sampled_from([None, "relu", "leaky_relu", "sigmoid"]), need_dx=st.booleans(), data=st.data(),
       seed=seeds)
def test_conv2d_max_pool2d_backward_is_the_chain(backend, g, dtype, layout, act, need_dx, data, seed):
    rng = np.random.default_rng(seed)
    x, W, b, oh, ow = _conv_inputs(rng, g, dtype, layout)
    ph, pw = data.draw(st.integers(1, min(oh, 3))), data.draw(st.integers(1, min(ow, 3)))
    pool_stride = data.draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pool_pad = (data.draw(st.integers(0, ph // 2)), data.draw(st.integers(0, pw // 2)))
    kw = dict(stride=g["stride"], pad=g["pad"])
    pool = dict(pool_h=ph, pool_w=pw, pool_stride=pool_stride, pool_pad=pool_pad)
    y, argmax = run_on(backend, F.conv2d_max_pool2d, x, W, b, activation=act, **kw, **pool)
    dy = random_array(rng, y.shape, dtype, layout)
    got = run_on(backend, F.conv2d_max_pool2d_backward, dy, argmax, y, x, W, activation=act, need_dx=need_dx,
                 **kw, **pool)
    # the chain of separate ops on the same backend: the activation's derivative from
    # the pooled output (as linear_backward takes it), the un-pooling, the convolution's
    # backward; for the native backend also against the reference
    alpha = {"leaky_relu": 0.01}.get(act)
    dz = run_on(backend, F.activation_backward, dy, act, x=y, y=y, alpha=alpha) if act else dy
    dh = run_on(backend, F.max_pool2d_backward, dz, argmax, (g["n"], g["f"], oh, ow), ph, pw, pool_stride, pool_pad)
    want = run_on(backend, F.conv2d_backward, dh, x, W, need_dx=need_dx, **kw)
    k = g["n"] * oh * ow
    assert (got[0] is None) == (not need_dx)
    # max_pool2d's int64 argmax of the same indices gives the same bits
    again = run_on(backend, F.conv2d_max_pool2d_backward, dy, argmax.astype(np.int64), y, x, W, activation=act,
                   need_dx=need_dx, **kw, **pool)
    for a, b2 in zip(got, again):
        assert (a is None and b2 is None) or np.array_equal(a, b2, equal_nan=True)
    if need_dx:
        assert_close(got[0], want[0], dtype, reduction=g["f"] * g["fh"] * g["fw"])
    assert_close(got[1], want[1], dtype, reduction=k)
    assert_close(got[2], want[2], dtype, reduction=k)
    if backend == "native":
        ref = run_on("numpy", F.conv2d_max_pool2d_backward, dy, argmax, y, x, W, activation=act, need_dx=need_dx,
                     **kw, **pool)
        for a, r in zip(got[1:], ref[1:]):
            assert_close(a, r, dtype, reduction=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_max_pool2d_int32_argmax_limit(backend):
    # The fused op's argmax is int32: output planes past 2**31 - 1 elements are refused
    # (an empty batch holds the shapes without the memory), and 46340 x 46340 is not.
    W = np.ones((2, 1, 5, 5), np.float32)
    for op in ("conv2d_max_pool2d", "conv2d_max_pool2d_backward"):
        for side, ok in ((46345, False), (46344, True)):
            x = np.zeros((0, 1, side, side), np.float32)
            pooled = (0, 2, (side - 4) // 2, (side - 4) // 2)
            call = (lambda: run_on(backend, F.conv2d_max_pool2d, x, W)) if op == "conv2d_max_pool2d" else (
                lambda: run_on(backend, F.conv2d_max_pool2d_backward, np.zeros(pooled, np.float32),
                               np.zeros(pooled, np.int32), None, x, W))
            if ok:
                out = call()
                assert out[1].shape == ((0, 2, 23170, 23170) if op == "conv2d_max_pool2d" else (2, 1, 5, 5))
            else:
                with pytest.raises(ValueError, match=f"{op}: its int32 argmax"):
                    call()


def test_conv2d_max_pool2d_validation():
    x, W = np.zeros((2, 1, 6, 6)), np.zeros((3, 1, 3, 3))
    with pytest.raises(ValueError, match="conv2d_max_pool2d"):
        F.conv2d_max_pool2d(x, W, pool_h=5)  # the 4x4 convolution output cannot hold a 5x5 window
    with pytest.raises(ValueError, match="conv2d_max_pool2d"):
        F.conv2d_max_pool2d(x, np.zeros((3, 2, 3, 3)))
    with pytest.raises(TypeError, match="conv2d_max_pool2d"):
        F.conv2d_max_pool2d(x.astype(np.int32), W)
    y, arg = F.conv2d_max_pool2d(x, W, activation="relu")
    with pytest.raises(ValueError, match="conv2d_max_pool2d_backward.*needs y"):
        F.conv2d_max_pool2d_backward(np.ones_like(y), arg, None, x, W, activation="relu")
    with pytest.raises(ValueError, match="conv2d_max_pool2d_backward.*dy of shape"):
        F.conv2d_max_pool2d_backward(np.ones((2, 3, 1, 1)), arg, y, x, W)
    with pytest.raises(ValueError, match="conv2d_max_pool2d_backward.*argmax values"):
        F.conv2d_max_pool2d_backward(np.ones_like(y), arg + 16, y, x, W)
    with pytest.raises(TypeError, match="conv2d_max_pool2d_backward.*integer"):
        F.conv2d_max_pool2d_backward(np.ones_like(y), arg.astype(float), y, x, W)
    # A ragged list cannot become an array: numpy's own ValueError must not escape unnamed.
    with pytest.raises(TypeError, match="conv2d_max_pool2d_backward.*convert argmax"):
        F.conv2d_max_pool2d_backward(np.ones_like(y), [[1, 2], [3]], y, x, W)
    with pytest.raises(TypeError, match="max_pool2d_backward.*convert argmax"):
        F.max_pool2d_backward(np.ones((1, 1, 2, 2)), [[1, 2], [3]], (1, 1, 4, 4), 2)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(g=conv_geometries(), dtype=float_dtypes, layout=layouts, seed=seeds)
def test_im2col_col2im(backend, g, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    x, W, b, oh, ow = _conv_inputs(rng, g, dtype, layout)
    fh, fw, stride, pad = g["fh"], g["fw"], g["stride"], g["pad"]
    # Mixed int/pair forms of stride and pad are the same thing.
    stride_arg = stride[0] if stride[0] == stride[1] else stride
    col = run_on(backend, F.im2col, x, fh, fw, stride=stride_arg, pad=pad)
    assert col.shape == (g["n"] * oh * ow, g["c"] * fh * fw)
    want = expected(backend, lambda: naive_im2col(x, fh, fw, stride, pad), F.im2col, x, fh, fw, stride, pad)
    assert_close(col, want, dtype)  # a pure gather: exact in fact
    assert np.array_equal(col, np.asarray(want, dtype))

    dcol = random_array(rng, col.shape, dtype, layout)
    img = run_on(backend, F.col2im, dcol, x.shape, fh, fw, stride=stride, pad=pad)
    want = expected(backend, lambda: naive_col2im(dcol, x.shape, fh, fw, stride, pad),
                    F.col2im, dcol, x.shape, fh, fw, stride, pad)
    assert_close(img, want, dtype, reduction=fh * fw)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(g=conv_geometries(), dtype=float_dtypes, layout=layouts, use_bias=st.booleans(),
       act=st.sampled_from([None, "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"]), seed=seeds)
def test_conv2d_forward_and_backward(backend, g, dtype, layout, use_bias, act, seed):
    rng = np.random.default_rng(seed)
    x, W, b, oh, ow = _conv_inputs(rng, g, dtype, layout)
    b = b if use_bias else None
    stride, pad = g["stride"], g["pad"]
    k = g["c"] * g["fh"] * g["fw"]
    y = run_on(backend, F.conv2d, x, W, b, stride=stride, pad=pad, activation=act)
    assert y.shape == (g["n"], g["f"], oh, ow)
    alpha = {"leaky_relu": 0.01, "elu": 1.0}.get(act, 0.0)  # the documented defaults
    want = expected(backend, lambda: naive_conv2d(x, W, b, stride, pad, act, alpha),
                    F.conv2d, x, W, b, stride=stride, pad=pad, activation=act)
    assert_close(y, want, dtype, reduction=k)

    dy = random_array(rng, y.shape, dtype, layout)
    dx, dW, db = run_on(backend, F.conv2d_backward, dy, x, W, stride=stride, pad=pad)
    want = expected(backend, lambda: naive_conv2d_backward(dy, x, W, stride, pad),
                    F.conv2d_backward, dy, x, W, stride=stride, pad=pad)
    assert_close(dx, want[0], dtype, reduction=g["f"] * g["fh"] * g["fw"])
    assert_close(dW, want[1], dtype, reduction=g["n"] * oh * ow)
    assert_close(db, want[2], dtype, reduction=g["n"] * oh * ow)
    none_dx, dW2, db2 = run_on(backend, F.conv2d_backward, dy, x, W, stride=stride, pad=pad, need_dx=False)
    assert none_dx is None
    assert np.array_equal(dW2, dW) and np.array_equal(db2, db)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "native"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,stride,pad", [
    ((4, 3, 28, 28, 16, 5, 5), 1, 2), ((3, 16, 13, 11, 32, 3, 3), 2, 1), ((2, 5, 17, 19, 7, 7, 1), (3, 1), (3, 0)),
    ((1, 64, 8, 8, 64, 3, 3), 1, 1)])
def test_conv2d_large_native(backend, dtype, shape, stride, pad, rng):
    n, c, h, w, f, fh, fw = shape
    x = random_array(rng, (n, c, h, w), dtype)
    W = random_array(rng, (f, c, fh, fw), dtype)
    b = random_array(rng, (f,), dtype)
    k = c * fh * fw
    for act in (None, "relu", "tanh"):
        assert_close(run_on(backend, F.conv2d, x, W, b, stride, pad, act),
                     run_on("numpy", F.conv2d, x, W, b, stride, pad, act), dtype, reduction=k)
    y = run_on("numpy", F.conv2d, x, W, b, stride, pad)
    dy = random_array(rng, y.shape, dtype)
    got = run_on(backend, F.conv2d_backward, dy, x, W, stride, pad)
    want = run_on("numpy", F.conv2d_backward, dy, x, W, stride, pad)
    red = n * y.shape[2] * y.shape[3]
    assert_close(got[0], want[0], dtype, reduction=f * fh * fw)
    assert_close(got[1], want[1], dtype, reduction=red)
    assert_close(got[2], want[2], dtype, reduction=red)


def test_im2col_matches_the_book_layout():
    """The column layout of common/util.py's im2col, written out for one tiny case."""
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float64).reshape(2, 1, 3, 3)
    col = F.im2col(x, 2, 2, stride=1, pad=0)
    assert col.shape == (8, 4)
    assert col[0].tolist() == [0, 1, 3, 4]
    assert col[1].tolist() == [1, 2, 4, 5]
    assert col[3].tolist() == [4, 5, 7, 8]
    assert col[4].tolist() == [9, 10, 12, 13]
    padded = F.im2col(x[:1], 3, 3, stride=2, pad=1)
    assert padded.shape == (4, 9)
    assert padded[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 3, 4]


# ---------------------------------------------------------------------------
# Pooling

def _pool_args(g):
    stride = g["stride"] if g["stride"] is not None else (g["ph"], g["pw"])
    oh = out_size(g["h"], g["ph"], stride[0], g["pad"][0])
    ow = out_size(g["w"], g["pw"], stride[1], g["pad"][1])
    return stride, oh, ow


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(g=pool_geometries(), dtype=float_dtypes, layout=layouts, ties=st.booleans(),
       specials=st.booleans(), seed=seeds)
def test_max_pool2d(backend, g, dtype, layout, ties, specials, seed):
    rng = np.random.default_rng(seed)
    shape = (g["n"], g["c"], g["h"], g["w"])
    values = rng.integers(-2, 3, size=shape).astype(np.float64) if ties else rng.standard_normal(shape)
    if specials and values.size:
        flat = values.reshape(-1)
        idx = rng.choice(flat.size, size=min(3, flat.size), replace=False)
        flat[idx] = rng.choice([np.nan, -np.inf, np.inf], size=idx.size)
    x = with_layout(values.astype(dtype), layout)
    stride, oh, ow = _pool_args(g)
    y, arg = run_on(backend, F.max_pool2d, x, g["ph"], g["pw"], stride=g["stride"], pad=g["pad"])
    assert y.shape == arg.shape == (g["n"], g["c"], oh, ow)
    assert arg.dtype == np.int64
    want_y, want_arg = expected(backend, lambda: naive_max_pool(x, g["ph"], g["pw"], stride, g["pad"]),
                                F.max_pool2d, x, g["ph"], g["pw"], stride=g["stride"], pad=g["pad"])
    assert np.array_equal(arg, want_arg)
    assert np.array_equal(y, np.asarray(want_y, dtype), equal_nan=True)

    dy = random_array(rng, y.shape, dtype, layout)
    dx = run_on(backend, F.max_pool2d_backward, dy, arg, x.shape, g["ph"], g["pw"], stride=g["stride"],
                pad=g["pad"])
    want = expected(backend, lambda: naive_max_pool_backward(dy, arg, x.shape), F.max_pool2d_backward,
                    dy, arg, x.shape, g["ph"], g["pw"], stride=g["stride"], pad=g["pad"])
    overlap = math.ceil(g["ph"] / stride[0]) * math.ceil(g["pw"] / stride[1])
    assert_close(dx, want, dtype, reduction=overlap)


def test_max_pool2d_ties_nan_and_padding():
    x = np.array([[[[1.0, 3.0, 3.0],
                    [3.0, 2.0, np.nan],
                    [0.0, np.nan, 5.0]]]])
    y, arg = F.max_pool2d(x, 2, stride=1)
    # first maximum in row-major window order (the 3 at index 1, not those at 2 or 3);
    # a NaN wins, the first one in window order
    assert arg.tolist() == [[[[1, 5], [7, 5]]]]
    assert y[0, 0, 0, 0] == 3 and np.isnan(y[0, 0, 0, 1]) and np.isnan(y[0, 0, 1, 0]) and np.isnan(y[0, 0, 1, 1])
    y, arg = F.max_pool2d(np.full((1, 1, 2, 3), -np.inf), 2, pad=1)
    assert arg.tolist() == [[[[0, 1], [3, 4]]]]  # all -inf: the first real element, never padding
    y, arg = F.max_pool2d(-np.ones((1, 1, 2, 2)), 2, pad=1, stride=1)
    assert np.all(y == -1)  # padding never wins, even over negative values


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_relu_gradient_commutes_with_non_overlapping_max_pool(backend, dtype):
    # benchmark I takes ReLU's gradient on the pooled side; that is exact (bit for
    # bit) because each window routes its gradient to its maximum, and that input
    # is > 0 exactly where the pooled value is; zeros and ties included here
    rng = np.random.default_rng(5)
    a = np.maximum(rng.integers(-2, 3, size=(3, 4, 10, 10)), 0).astype(dtype)
    a[0, 0] = 0
    df = rng.standard_normal((3, 4, 5, 5)).astype(dtype)
    with fastnn.backend(backend):
        p, arg = F.max_pool2d(a, 2, stride=2)
        unpooled_first = F.relu_backward(F.max_pool2d_backward(df, arg, a.shape, 2, 2, 2, 0), a)
        pooled_first = F.max_pool2d_backward(F.relu_backward(df, p), arg, a.shape, 2, 2, 2, 0)
    assert np.count_nonzero(unpooled_first) > 0 and np.count_nonzero(p == 0) > 0
    np.testing.assert_array_equal(pooled_first, unpooled_first)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(g=pool_geometries(), dtype=float_dtypes, layout=layouts, seed=seeds)
def test_avg_pool2d(backend, g, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    x = random_array(rng, (g["n"], g["c"], g["h"], g["w"]), dtype, layout)
    stride, oh, ow = _pool_args(g)
    y = run_on(backend, F.avg_pool2d, x, g["ph"], g["pw"], stride=g["stride"], pad=g["pad"])
    want = expected(backend, lambda: naive_avg_pool(x, g["ph"], g["pw"], stride, g["pad"]),
                    F.avg_pool2d, x, g["ph"], g["pw"], stride=g["stride"], pad=g["pad"])
    assert_close(y, want, dtype, reduction=g["ph"] * g["pw"])
    dy = random_array(rng, y.shape, dtype, layout)
    dx = run_on(backend, F.avg_pool2d_backward, dy, x.shape, g["ph"], g["pw"], stride=g["stride"], pad=g["pad"])
    want = expected(backend, lambda: naive_avg_pool_backward(dy, x.shape, g["ph"], g["pw"], stride, g["pad"]),
                    F.avg_pool2d_backward, dy, x.shape, g["ph"], g["pw"], stride=g["stride"], pad=g["pad"])
    assert_close(dx, want, dtype, reduction=g["ph"] * g["pw"])


def test_pool_defaults():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, _ = F.max_pool2d(x, 2)  # pool_w = pool_h, stride = pool size
    assert y.tolist() == [[[[5.0, 7.0], [13.0, 15.0]]]]
    assert F.avg_pool2d(x, 2).tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]]
    # padding counts in the divisor
    assert F.avg_pool2d(np.ones((1, 1, 2, 2)), 2, stride=2, pad=1).tolist() == [[[[0.25, 0.25], [0.25, 0.25]]]]


# ---------------------------------------------------------------------------
# Softmax and losses

@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(shape=st.sampled_from([(1, 1), (0, 5), (3, 1), (4, 7), (2, 3, 5), (13, 10)]), dtype=float_dtypes,
       layout=layouts, scale=st.sampled_from([1.0, 30.0, 1e4]), seed=seeds)
def test_softmax_log_softmax(backend, shape, dtype, layout, scale, seed):
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape, dtype, layout, scale=scale)
    for axis in range(-x.ndim, x.ndim):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sm = run_on(backend, F.softmax, x, axis=axis)
            lsm = run_on(backend, F.log_softmax, x, axis=axis)
        if x.size == 0:
            assert sm.shape == lsm.shape == x.shape and sm.dtype == lsm.dtype == dtype
            continue
        moved = np.moveaxis(np.asarray(x, np.float64), axis, -1)
        want_l = np.moveaxis(naive_log_softmax_rows(moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])).reshape(moved.shape),
                             -1, axis)
        want_s = np.exp(want_l)
        if backend != "numpy":
            want_s = run_on("numpy", F.softmax, x, axis=axis)
            want_l = run_on("numpy", F.log_softmax, x, axis=axis)
        assert_close(sm, want_s, dtype, reduction=x.shape[axis])
        assert_close(lsm, want_l, dtype, reduction=x.shape[axis], scale=scale)
        assert np.all(np.isfinite(lsm))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(n=st.sampled_from([0, 1, 2, 7, 16]), k=st.sampled_from([1, 2, 3, 10]), dtype=float_dtypes,
       labels=st.booleans(), layout=layouts, scale=st.sampled_from([1.0, 1e4]), seed=seeds)
def test_softmax_cross_entropy(backend, n, k, dtype, labels, layout, scale, seed):
    rng = np.random.default_rng(seed)
    logits = random_array(rng, (n, k), dtype, layout, scale=scale)
    if labels:
        target = rng.integers(0, k, size=n)
        target = target.astype(rng.choice([np.int64, np.int32, np.uint8]))
    else:
        target = with_layout(rng.dirichlet(np.ones(k), size=n).astype(dtype).reshape(n, k), layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = run_on(backend, F.softmax_cross_entropy, logits, target)
    assert isinstance(loss, float)
    want_loss, want_grad = expected(backend, lambda: naive_cross_entropy(logits, target),
                                    F.softmax_cross_entropy, logits, target)
    if n == 0:
        assert math.isnan(loss) and grad.shape == (0, k)
        return
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    assert loss == pytest.approx(want_loss, rel=rtol, abs=float(8 * np.finfo(dtype).eps * k * scale))
    assert_close(grad, want_grad, dtype, reduction=k)


def test_softmax_cross_entropy_one_hot_equals_labels():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    one_hot = np.eye(4)[labels]
    a, ga = F.softmax_cross_entropy(logits, labels)
    b, gb = F.softmax_cross_entropy(logits, one_hot)
    assert a == pytest.approx(b, rel=1e-12)
    np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-15)


def _naive_mse(y, t):
    d = np.asarray(y, np.float64) - np.asarray(t, np.float64)
    loss = math.fsum((d * d).ravel()) / d.size if d.size else math.nan
    return loss, 2 * d / max(d.size, 1)


def _naive_bce(z, t):
    z = np.asarray(z, np.float64)
    t = np.asarray(t, np.float64)
    per = _elementwise(lambda v, tv: -(tv * math.log(_sigmoid(v)) + (1 - tv) * math.log(1 - _sigmoid(v))), z, t)
    loss = math.fsum(per.ravel()) / z.size if z.size else math.nan
    return loss, (_elementwise(lambda v: _sigmoid(v), z) - t) / max(z.size, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_name", ["mean_squared_error", "sigmoid_binary_cross_entropy"])
@SETTINGS
@given(shape=st.sampled_from([(0,), (1,), (5,), (3, 4), (2, 3, 5)]), dtype=float_dtypes, layout=layouts,
       seed=seeds)
def test_elementwise_losses(backend, loss_name, shape, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    y = random_array(rng, shape, dtype, layout, scale=3.0)
    t = with_layout(rng.uniform(0, 1, size=shape).astype(dtype), layout)
    func = getattr(F, loss_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = run_on(backend, func, y, t)
    assert isinstance(loss, float)
    naive = _naive_mse if loss_name == "mean_squared_error" else _naive_bce
    want_loss, want_grad = expected(backend, lambda: naive(y, t), func, y, t)
    if y.size == 0:
        assert math.isnan(loss) and grad.shape == shape
        return
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    assert loss == pytest.approx(want_loss, rel=rtol, abs=float(8 * np.finfo(dtype).eps * 10))
    assert_close(grad, want_grad, dtype, scale=2)


def test_sigmoid_bce_extreme_logits():
    z = np.array([1e4, -1e4, 50.0, -50.0])
    t = np.array([1.0, 0.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = F.sigmoid_binary_cross_entropy(z, t)
    assert loss == pytest.approx((0 + 0 + 50 + 50) / 4, rel=1e-12)
    np.testing.assert_allclose(grad, [0, 0, 0.25, -0.25], atol=1e-15)


# ---------------------------------------------------------------------------
# Optimizer updates

def _naive_update(kind, p, g, states, hp):
    """Per-element Python-float implementation of docs/BACKEND.md's update rules."""
    p = np.asarray(p, np.float64).copy()
    g = np.asarray(g, np.float64)
    states = [np.asarray(s, np.float64).copy() for s in states]
    for i in np.ndindex(p.shape):
        gi = g[i] + hp["wd"] * p[i] + hp["l1"] * (1.0 if p[i] > 0 else (-1.0 if p[i] < 0 else 0.0))
        if kind == "sgd":
            p[i] -= hp["lr"] * gi
        elif kind in ("momentum", "nesterov"):
            v = states[0][i] * hp["momentum"] - hp["lr"] * gi
            states[0][i] = v
            p[i] += v if kind == "momentum" else hp["momentum"] ** 2 * v - (1 + hp["momentum"]) * hp["lr"] * gi
        elif kind == "adagrad":
            states[0][i] += gi * gi
            p[i] -= hp["lr"] * gi / (math.sqrt(states[0][i]) + hp["eps"])
        elif kind == "rmsprop":
            states[0][i] = hp["decay"] * states[0][i] + (1 - hp["decay"]) * gi * gi
            p[i] -= hp["lr"] * gi / (math.sqrt(states[0][i]) + hp["eps"])
        elif kind == "adam":
            states[0][i] += (1 - hp["beta1"]) * (gi - states[0][i])
            states[1][i] += (1 - hp["beta2"]) * (gi * gi - states[1][i])
            p[i] -= hp["lr"] * states[0][i] / (math.sqrt(states[1][i]) + hp["eps"])
    return p, states


def _call_update(kind, p, g, states, hp):
    common = dict(weight_decay=hp["wd"], l1=hp["l1"])
    if kind == "sgd":
        F.sgd_update(p, g, hp["lr"], **common)
    elif kind == "momentum":
        F.momentum_update(p, g, states[0], hp["lr"], momentum=hp["momentum"], **common)
    elif kind == "nesterov":
        F.nesterov_update(p, g, states[0], hp["lr"], momentum=hp["momentum"], **common)
    elif kind == "adagrad":
        F.adagrad_update(p, g, states[0], hp["lr"], eps=hp["eps"], **common)
    elif kind == "rmsprop":
        F.rmsprop_update(p, g, states[0], hp["lr"], decay=hp["decay"], eps=hp["eps"], **common)
    elif kind == "adam":
        F.adam_update(p, g, states[0], states[1], hp["lr"], beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"],
                      **common)


N_STATES = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 2}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(N_STATES))
@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from([(0,), (1,), (7,), (3, 5), (2, 3, 4)]), dtype=float_dtypes, layout=layouts,
       wd=st.sampled_from([0.0, 0.01]), l1=st.sampled_from([0.0, 0.003]), seed=seeds)
def test_optimizer_updates(backend, kind, shape, dtype, layout, wd, l1, seed):
    rng = np.random.default_rng(seed)
    p = random_array(rng, shape, dtype, layout)
    g = random_array(rng, shape, dtype, layout)
    states = [with_layout(np.abs(rng.standard_normal(shape)).astype(dtype), layout) for _ in range(N_STATES[kind])]
    hp = dict(lr=0.05, momentum=0.8, eps=1e-7, decay=0.9, beta1=0.9, beta2=0.999, wd=wd, l1=l1)
    g_before = g.copy()
    if backend == "numpy":
        want_p, want_states = _naive_update(kind, p, g, states, hp)
    else:
        ref_p, ref_states = p.copy(), [s.copy() for s in states]
        run_on("numpy", _call_update, kind, ref_p, g, ref_states, hp)
        want_p, want_states = ref_p, ref_states
    p_id = p.ctypes.data
    for _ in range(1):
        run_on(backend, _call_update, kind, p, g, states, hp)
    assert p.ctypes.data == p_id and p.dtype == dtype  # updated in place
    assert np.array_equal(g, g_before)  # the gradient is never modified
    assert_close(p, want_p, dtype, scale=4)
    for s, w in zip(states, want_states):
        assert_close(s, w, dtype, scale=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_mixed_dtypes_fall_back(backend):
    p = np.ones(4, np.float32)
    g = np.full(4, 0.5)  # float64 gradient: the reference updates p in place, in float32
    run_on(backend, F.sgd_update, p, g, 0.1)
    assert p.dtype == np.float32 and np.allclose(p, 0.95)
    v = np.zeros(4)
    run_on(backend, F.momentum_update, p, [0.5, 0.5, 0.5, 0.5], v, 0.1, momentum=0.5)
    assert np.allclose(v, -0.05) and np.allclose(p, 0.9)


# ---------------------------------------------------------------------------
# Batch normalisation (NumPy on both backends)

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,per_channel", [((5, 3), False), ((1, 4), False), ((4, 2, 3, 3), False),
                                               ((4, 2, 3, 3), True), ((1, 3, 1, 2), True)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_batch_norm(backend, shape, per_channel, dtype, rng):
    x = random_array(rng, shape, dtype, "strided", scale=3.0) + 1.5
    if len(shape) == 4 and per_channel:
        rows = np.asarray(x, np.float64).transpose(0, 2, 3, 1).reshape(-1, shape[1])
    else:
        rows = np.asarray(x, np.float64).reshape(shape[0], -1)
    d = rows.shape[1]
    gamma = rng.uniform(0.5, 2, d).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    rm, rv = np.zeros(d, dtype), np.ones(d, dtype)
    eps, mom = 1e-5, 0.8
    out, cache = run_on(backend, F.batch_norm_forward, x, gamma, beta, rm, rv, momentum=mom, eps=eps,
                        per_channel=per_channel)
    assert out.shape == shape and out.dtype == dtype
    # loops: per feature mean and biased variance
    mu = np.array([math.fsum(rows[:, j]) / rows.shape[0] for j in range(d)])
    var = np.array([math.fsum((rows[:, j] - mu[j]) ** 2) / rows.shape[0] for j in range(d)])
    want_rows = (rows - mu) / np.sqrt(var + eps) * gamma + beta
    got_rows = (np.asarray(out, np.float64).transpose(0, 2, 3, 1).reshape(-1, d) if len(shape) == 4 and per_channel
                else np.asarray(out, np.float64).reshape(shape[0], -1))
    # Within the dtype's rounding of each output's own magnitude: k = gamma * inv_std times x
    # (y), sums of N*S terms (the statistics, dgamma, dbeta); the stored mean's rounding
    # (of |x|) times inv_std enters xn.
    eps_t, rtol = np.finfo(dtype).eps, (1e-5 if dtype == np.float32 else 1e-10)
    big_x, k = np.abs(rows).max(), np.max(np.abs(gamma) / np.sqrt(var + eps))
    mean_error = np.max(np.abs(rows).max(0) / np.sqrt(var + eps))

    def tol(scale):
        return dict(rtol=rtol, atol=8 * eps_t * scale)
    np.testing.assert_allclose(got_rows, want_rows, **tol(2 * k * big_x + np.abs(beta).max()))
    np.testing.assert_allclose(rm, (1 - mom) * mu, **tol(big_x))
    np.testing.assert_allclose(rv, mom + (1 - mom) * var, **tol(big_x ** 2))

    # backward: the closed form dx = gamma/std * (dout - mean(dout) - xn * mean(dout * xn))
    dout = random_array(rng, shape, dtype)
    dx, dgamma, dbeta = run_on(backend, F.batch_norm_backward, dout, cache)
    drows = (np.asarray(dout, np.float64).transpose(0, 2, 3, 1).reshape(-1, d) if len(shape) == 4 and per_channel
             else np.asarray(dout, np.float64).reshape(shape[0], -1))
    std = np.sqrt(var + eps)
    xn = (rows - mu) / std
    want_dx = gamma / std * (drows - drows.mean(0) - xn * (drows * xn).mean(0))
    got_dx = (np.asarray(dx, np.float64).transpose(0, 2, 3, 1).reshape(-1, d) if len(shape) == 4 and per_channel
              else np.asarray(dx, np.float64).reshape(shape[0], -1))
    big_dy, big_xn, terms = np.abs(drows).max(), np.abs(xn).max(), rows.shape[0]
    np.testing.assert_allclose(got_dx, want_dx, **tol(k * big_dy * (2 + big_xn * (1 + 2 * mean_error))))
    np.testing.assert_allclose(dgamma, (drows * xn).sum(0), **tol(terms * big_dy * (big_xn + mean_error)))
    np.testing.assert_allclose(dbeta, drows.sum(0), **tol(terms * big_dy))

    # inference uses the running statistics and leaves them alone
    rm_before, rv_before = rm.copy(), rv.copy()
    out_eval, cache_eval = run_on(backend, F.batch_norm_forward, x, gamma, beta, rm, rv, eps=eps, train=False,
                                  per_channel=per_channel)
    assert np.array_equal(rm, rm_before) and np.array_equal(rv, rv_before)
    want_eval = (rows - rm.astype(np.float64)) / np.sqrt(rv.astype(np.float64) + eps) * gamma + beta
    got_eval = (np.asarray(out_eval, np.float64).transpose(0, 2, 3, 1).reshape(-1, d)
                if len(shape) == 4 and per_channel else np.asarray(out_eval, np.float64).reshape(shape[0], -1))
    k_eval = np.max(np.abs(gamma) / np.sqrt(rv.astype(np.float64) + eps))
    np.testing.assert_allclose(got_eval, want_eval, **tol(2 * k_eval * big_x + np.abs(beta).max()))


# ---------------------------------------------------------------------------
# dtype promotion and array-likes

@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_promote_to_float64(backend, rng):
    x32 = rng.standard_normal((3, 4)).astype(np.float32)
    W64 = rng.standard_normal((4, 2))
    with fastnn.backend(backend):
        assert F.matmul(x32, W64).dtype == np.float64
        assert F.linear(x32, W64.astype(np.float32), W64[0]).dtype == np.float64
        assert F.relu_backward(x32, x32.astype(np.float64)).dtype == np.float64
        xi = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
        assert F.conv2d(xi, rng.standard_normal((3, 2, 3, 3))).dtype == np.float64
        assert F.conv2d(xi, rng.standard_normal((3, 2, 3, 3)).astype(np.float32)).dtype == np.float32
        loss, g = F.softmax_cross_entropy(x32, np.eye(4)[[0, 1, 2]])
        assert g.dtype == np.float64
        loss, g = F.softmax_cross_entropy(x32, [0, 1, 2])
        assert g.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_lists_are_accepted(backend):
    with fastnn.backend(backend):
        assert F.relu([-1.0, 2.0]).tolist() == [0.0, 2.0]
        assert F.matmul([[1.0, 2.0]], [[3.0], [4.0]]).tolist() == [[11.0]]
        loss, g = F.mean_squared_error([1.0, 3.0], [1.0, 1.0])
        assert loss == 2.0 and g.tolist() == [0.0, 2.0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"])
def test_fused_activation_equals_separate_op_on_special_values(backend, dtype, act, rng):
    """NaN, +-inf and huge pre-activations go through a fused epilogue exactly as
    through the separate op (docs/BACKEND.md), with no floating-point warning."""
    x = rng.standard_normal((6, 3)).astype(dtype)
    x[0, 0], x[1, 1], x[2, 2], x[3, 0] = np.nan, np.inf, -np.inf, 1e30 if dtype == np.float64 else 1e20
    W = np.eye(3, 4, dtype=dtype)
    b = np.zeros(4, dtype)
    xi = rng.standard_normal((1, 2, 3, 3)).astype(dtype)
    xi[0, 0, 0, 0], xi[0, 1, 1, 1], xi[0, 0, 2, 2] = np.nan, np.inf, -np.inf
    Wi = np.zeros((2, 2, 1, 1), dtype)
    Wi[0, 0], Wi[1, 1] = 1, 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fastnn.backend(backend):
            fused = F.linear(x, W, b, activation=act)
            separate = F.activation(F.linear(x, W, b), act)
            fused_conv = F.conv2d(xi, Wi, None, activation=act)
            separate_conv = F.activation(F.conv2d(xi, Wi, None), act)
    # (NaN * 0 and inf * 0 in the products spread NaN along rows and channels, identically.)
    assert_close(fused, separate, dtype)
    assert_close(fused_conv, separate_conv, dtype)
    assert np.isnan(fused[0, 0]) and np.isnan(fused_conv[0, 0, 0, 0])  # NaN propagates through every activation


@pytest.mark.parametrize("backend", BACKENDS)
def test_elementwise_inf_times_zero_gives_nan_quietly(backend):
    x = np.array([np.inf, -np.inf, 1.0, -1.0])
    dy = np.array([np.inf, np.inf, -np.inf, np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fastnn.backend(backend):
            leaky = F.leaky_relu(x, 0.0)  # 0 * -inf is NaN: the slope times x, as defined
            assert leaky[0] == np.inf and np.isnan(leaky[1]) and leaky[2] == 1 and leaky[3] == 0
            assert np.isnan(F.sigmoid_backward(dy, np.array([1.0, 0.0, 0.5, 0.5]))[:2]).all()
            assert F.relu_backward(dy, x).tolist() == [np.inf, 0.0, -np.inf, 0.0]
            assert np.isnan(F.tanh_backward(np.zeros(1), np.array([np.inf]))).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_updates_on_0d_parameters(backend):
    p, g, m, v = np.array(1.0), np.array(0.5), np.array(0.0), np.array(0.0)
    with fastnn.backend(backend):
        F.sgd_update(p, g, 0.1)
        assert p.shape == () and p == pytest.approx(0.95)
        F.adam_update(p, g, m, v, 0.1)
    assert m == pytest.approx(0.05) and v == pytest.approx(0.00025)
    assert p == pytest.approx(0.95 - 0.1 * 0.05 / (math.sqrt(0.00025) + 1e-7))


def _frozen(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_read_only_inputs(backend, dtype, rng):
    """Inputs are only read: read-only arrays (memory maps, frozen datasets) work everywhere."""
    def r(*shape):
        return _frozen(rng.standard_normal(shape).astype(dtype))

    x, W, b = r(2, 3, 5, 5), r(4, 3, 3, 3), r(4)
    results = {}
    with fastnn.backend(backend):
        results["matmul"] = F.matmul(r(3, 4), r(4, 2))
        h = F.linear(r(3, 4), r(4, 2), r(2), activation="tanh")
        results["linear"] = h
        results["linear_backward"] = F.linear_backward(r(3, 2), r(3, 4), r(4, 2), activation="tanh", y=_frozen(h))
        for name in ("relu", "sigmoid", "tanh", "softplus", "step", "identity"):
            results[name] = getattr(F, name)(r(7))
        for name in ("relu_backward", "softplus_backward", "sigmoid_backward", "tanh_backward"):
            results[name] = getattr(F, name)(r(7), r(7))
        results["elu_backward"] = F.elu_backward(r(7), r(7), 0.5)
        y = F.conv2d(x, W, b, stride=2, pad=1, activation="relu")
        results["conv2d"] = y
        results["conv2d_backward"] = F.conv2d_backward(_frozen(y), x, W, stride=2, pad=1)
        col = F.im2col(x, 3, 3, 2, 1)
        results["col2im"] = F.col2im(_frozen(col), x.shape, 3, 3, 2, 1)
        yp, arg = F.max_pool2d(x, 2)
        results["max_pool2d_backward"] = F.max_pool2d_backward(_frozen(yp), _frozen(arg), x.shape, 2)
        results["avg_pool2d_backward"] = F.avg_pool2d_backward(_frozen(F.avg_pool2d(x, 2)), x.shape, 2)
        results["softmax"] = F.softmax(r(3, 4))
        results["softmax_cross_entropy"] = F.softmax_cross_entropy(r(3, 4), _frozen(np.array([0, 3, 1])))
        results["mean_squared_error"] = F.mean_squared_error(r(5), r(5))
        p, m, v = (np.abs(rng.standard_normal(5)).astype(dtype) for _ in range(3))
        F.adam_update(p, r(5), m, v, 0.1)
        F.sgd_update(p, r(5), 0.1)
    for name, value in results.items():
        for part in value if isinstance(value, tuple) else (value,):
            if isinstance(part, np.ndarray):
                assert part.dtype == dtype and part.flags.writeable, name  # fresh outputs


def _isas():
    if not fastnn.config()["native_available"]:
        return ["portable"]
    from fastnn._config import ISA_NAMES
    best = ISA_NAMES.index(fastnn.config()["simd_cpu_best"])
    return [name for name in ISA_NAMES[:best + 1] if name in fastnn.config()["simd_compiled"]]


def _op_battery(rng, dtype):
    """(name, callable, reduction length) for a representative call of every op family;
    the data are drawn once, so each callable computes the same thing every time."""
    def r(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    x, W, b = r(3, 5, 11, 9), r(7, 5, 3, 2), r(7)
    y = run_on("numpy", F.conv2d, x, W, b, (2, 1), (1, 0))
    dy, col = r(*y.shape), r(3 * 6 * 5, 30)
    xl, Wl, bl, dyl = r(37, 29), r(29, 19), r(19), r(37, 19)
    yl = run_on("numpy", F.linear, xl, Wl, bl, "softplus")
    a, bm = r(65, 70), r(70, 33)
    xp = r(2, 3, 9, 8)
    yp, arg = run_on("numpy", F.max_pool2d, xp, 3, 2, (2, 1), (1, 1))
    dyp = r(*yp.shape)
    v, dv = r(1000, scale=5), r(1000)
    logits, labels = r(33, 10, scale=3), rng.integers(0, 10, 33)
    return [
        ("conv2d", lambda: F.conv2d(x, W, b, (2, 1), (1, 0), "elu"), 30),
        ("conv2d_backward", lambda: F.conv2d_backward(dy, x, W, (2, 1), (1, 0)), 3 * y.shape[2] * y.shape[3]),
        ("im2col", lambda: F.im2col(x, 3, 2, 2, 1), 1),
        ("col2im", lambda: F.col2im(col, x.shape, 3, 2, 2, 1), 6),
        ("linear", lambda: F.linear(xl, Wl, bl, "softplus"), 29),
        ("linear_backward", lambda: F.linear_backward(dyl, xl, Wl, "softplus", yl), 37),
        ("matmul", lambda: F.matmul(a, bm), 70),
        ("max_pool2d", lambda: F.max_pool2d(xp, 3, 2, (2, 1), (1, 1)), 1),
        ("max_pool2d_backward", lambda: F.max_pool2d_backward(dyp, arg, xp.shape, 3, 2, (2, 1), (1, 1)), 4),
        ("avg_pool2d", lambda: F.avg_pool2d(xp, 3, 2, (2, 1), (1, 1)), 6),
        ("avg_pool2d_backward", lambda: F.avg_pool2d_backward(dyp, xp.shape, 3, 2, (2, 1), (1, 1)), 6),
        *[(name, (lambda name=name: getattr(F, name)(v)), 1)
          for name in ("relu", "sigmoid", "tanh", "softplus", "step", "identity")],
        ("leaky_relu", lambda: F.leaky_relu(v, 0.1), 1),
        ("elu", lambda: F.elu(v, 0.7), 1),
        *[(name, (lambda name=name: getattr(F, name)(dv, v)), 1)
          for name in ("relu_backward", "softplus_backward", "sigmoid_backward", "tanh_backward")],
        ("leaky_relu_backward", lambda: F.leaky_relu_backward(dv, v, 0.1), 1),
        ("elu_backward", lambda: F.elu_backward(dv, v, 0.7), 1),
        ("softmax", lambda: F.softmax(logits), 10),
        ("log_softmax", lambda: F.log_softmax(logits), 10),
        ("softmax_cross_entropy", lambda: F.softmax_cross_entropy(logits, labels), 10),
        ("mean_squared_error", lambda: F.mean_squared_error(v, dv), 1),
        ("sigmoid_binary_cross_entropy", lambda: F.sigmoid_binary_cross_entropy(v, np.abs(np.tanh(dv))), 1),
    ]


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "native"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_every_simd_path_and_thread_count_matches_the_reference(backend, dtype):
    old_isa, old_threads = fastnn.get_simd(), fastnn.get_num_threads()
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    try:
        for isa in _isas():
            for threads in (1, 3):
                fastnn.set_simd(isa)
                fastnn.set_num_threads(threads)
                for name, call, k in _op_battery(np.random.default_rng(7), dtype):
                    got, want = run_on(backend, call), run_on("numpy", call)
                    got = got if isinstance(got, tuple) else (got,)
                    want = want if isinstance(want, tuple) else (want,)
                    where = f"{name} on {isa}, {threads} threads"
                    for g, w in zip(got, want):
                        if isinstance(w, float):
                            assert g == pytest.approx(w, rel=rtol), where
                        else:
                            assert_close(g, w, dtype, reduction=k, scale=4, err_msg=where)
    finally:
        fastnn.set_simd(old_isa)
        fastnn.set_num_threads(old_threads)


def test_reference_reuses_the_forwards_column_matrix_only_for_the_same_x(rng):
    # the NumPy reference keeps its last conv2d forward's im2col for the backward (as the book's
    # Convolution keeps self.col); an x changed in place, or another x, gets its own
    x = rng.standard_normal((2, 3, 7, 6))
    W = rng.standard_normal((4, 3, 3, 2))
    dy = rng.standard_normal((2, 4, 7, 7))
    with fastnn.backend("numpy"):
        fresh = F.conv2d_backward(dy, x, W, stride=1, pad=1)
        F.conv2d(x, W, None, stride=1, pad=1)
        for a, b in zip(F.conv2d_backward(dy, x, W, stride=1, pad=1), fresh):
            np.testing.assert_array_equal(a, b)
        F.conv2d(x, W, None, stride=1, pad=1)
        x[0, 1, 2, 3] += 1.0                                  # changed between forward and backward
        changed = F.conv2d_backward(dy, x, W, stride=1, pad=1)
        F.conv2d(x + 0, W, None, stride=1, pad=1)             # a forward of other memory, equal values
        again = F.conv2d_backward(dy, x, W, stride=1, pad=1)
    from test_layers import conv_direct_backward
    want = conv_direct_backward(dy, x, W, 1, 1)
    for got in (changed, again):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_reference_keeps_no_column_matrix_past_its_budget_with_the_copy_of_x(monkeypatch, rng):
    from fastnn import _reference
    monkeypatch.setattr(_reference, "_SAVED_COL_BYTES", 2 << 20)
    x = rng.standard_normal((1, 1, 512, 512))           # 2 MiB of x for a 128 KiB column matrix (1x1, stride 4)
    W = rng.standard_normal((2, 1, 1, 1))
    with fastnn.backend("numpy"):
        F.conv2d(x, W, None, stride=4)
        assert _reference._saved_col.entry is None
        F.conv2d(x[:, :, :256, :256], W, None, stride=4)  # 512 KiB with its column matrix: kept
        assert _reference._saved_col.entry is not None
        F.conv2d_backward(np.ones((1, 2, 64, 64)), x[:, :, :256, :256], W, stride=4)
        assert _reference._saved_col.entry is None       # used once, then dropped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_activation_backward_recomputes_y_from_x(backend, name, dtype):
    # documented: sigmoid and tanh take y, or x from which y is recomputed
    rng = np.random.default_rng(7)
    x = (4 * rng.standard_normal((3, 5))).astype(dtype)
    dy = rng.standard_normal((3, 5)).astype(dtype)
    got = run_on(backend, F.activation_backward, dy, name, x=x)
    assert got.dtype == dtype
    assert_close(got, _elementwise(lambda g, v: g * SCALAR_ACT_GRAD[name](v, 0.0), dy, x), dtype, scale=2)


def _sensitive_defaults(call, documented, other):
    """call() with the op's defaults gives the bits of call(**documented), and the data is
    such that another value of each default changes the result."""
    results = lambda out: [np.array(v, copy=True) for v in (out if isinstance(out, (tuple, list)) else [out])]
    by_default, explicit = results(call()), results(call(**documented))
    for a, b in zip(by_default, explicit):
        np.testing.assert_array_equal(a, b)
    for key, value in other.items():
        changed = results(call(**{**documented, key: value}))
        assert any(not np.array_equal(a, b) for a, b in zip(changed, explicit)), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_documented_defaults(backend):
    """The defaults docs/OPS.md gives, written here as literals (a wrong default would be
    shared by both backends, so the native-vs-reference checks cannot see it)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6))
    dy = rng.standard_normal((4, 6))
    g = np.full(6, 1e-6)   # small enough that eps moves the step
    with fastnn.backend(backend):
        for op in (F.leaky_relu, F.elu):
            alpha = 0.01 if op is F.leaky_relu else 1.0
            _sensitive_defaults(lambda **kw: op(x, **kw), dict(alpha=alpha), dict(alpha=2 * alpha))
            backward = getattr(F, op.__name__ + "_backward")
            _sensitive_defaults(lambda **kw: backward(dy, x, **kw), dict(alpha=alpha), dict(alpha=2 * alpha))

        def update(op, states, **kw):
            p = np.ones(6)
            copies = [s.copy() for s in states]
            op(p, g, *copies, 0.1, **kw)
            return [p, *copies]
        _sensitive_defaults(lambda **kw: update(F.momentum_update, [np.full(6, 0.5)], **kw),
                            dict(momentum=0.9), dict(momentum=0.8))
        _sensitive_defaults(lambda **kw: update(F.nesterov_update, [np.full(6, 0.5)], **kw),
                            dict(momentum=0.9), dict(momentum=0.8))
        _sensitive_defaults(lambda **kw: update(F.adagrad_update, [np.zeros(6)], **kw),
                            dict(eps=1e-7), dict(eps=1e-5))
        _sensitive_defaults(lambda **kw: update(F.rmsprop_update, [np.full(6, 4e-12)], **kw),
                            dict(decay=0.99, eps=1e-7), dict(decay=0.9, eps=1e-5))
        def adam(**kw):
            p, m, v = np.ones(6), np.full(6, 3e-6), np.full(6, 4e-12)
            F.adam_update(p, g, m, v, 0.1, **kw)
            return [p, m, v]
        _sensitive_defaults(adam, dict(beta1=0.9, beta2=0.999, eps=1e-7), dict(beta1=0.8, beta2=0.99, eps=1e-5))

        def batch_norm(**kw):
            mean, var = np.full(6, 0.5), np.full(6, 2.0)
            y, _ = F.batch_norm_forward(x * 1e-3, np.ones(6), np.zeros(6), mean, var, **kw)
            return [y, mean, var]
        _sensitive_defaults(batch_norm, dict(momentum=0.9, eps=1e-7), dict(momentum=0.99, eps=1e-5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool, stride, pad", [((9, 7), (2, 3), (4, 3)), ((12, 12), (12, 12), (0, 0)),
                                               ((6, 8), (1, 1), (0, 4))])
def test_pools_of_large_windows_against_loops(backend, pool, stride, pad):
    # windows past the reference's gathered-window size (32 elements): ties, -inf, padding
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 2, (2, 3, 14, 12)).astype(np.float64)
    x[0, 0] = -np.inf                                   # a plane whose windows hold only -inf and padding
    y, argmax = run_on(backend, F.max_pool2d, x, *pool, stride=stride, pad=pad)
    dy = rng.standard_normal(y.shape)
    want_y, want_dx = naive_pool2d(x, dy, *pool, stride, pad, "max")
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(run_on(backend, F.max_pool2d_backward, dy, argmax, x.shape, *pool, stride=stride,
                                         pad=pad), want_dx)
    finite = np.where(np.isinf(x), 0.5, x)
    want_avg, want_avg_dx = naive_pool2d(finite, dy, *pool, stride, pad, "avg")
    np.testing.assert_allclose(run_on(backend, F.avg_pool2d, finite, *pool, stride=stride, pad=pad), want_avg,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(run_on(backend, F.avg_pool2d_backward, dy, x.shape, *pool, stride=stride, pad=pad),
                               want_avg_dx, rtol=1e-12, atol=1e-14)
    x[1, 2, 3, 4] = x[1, 2, 5, 5] = np.nan                # a NaN wins, the first one in its window
    y, argmax = run_on(backend, F.max_pool2d, x, *pool, stride=stride, pad=pad)
    hit = np.isnan(y[1, 2])
    assert hit.any() and set(argmax[1, 2][hit].tolist()) <= {3 * 12 + 4, 5 * 12 + 5}
    assert not np.isnan(y[0]).any() and not np.isnan(y[1, :2]).any()
