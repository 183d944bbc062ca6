"""Shared test utilities: backend parametrisation, tolerances per dtype, central
differences, and hypothesis strategies for awkward conv/pool geometries and
non-contiguous array layouts.

Import as ``from helpers import ...`` (pytest puts tests/ on sys.path).
"""
import contextlib
import gzip
import math
import struct

import numpy as np
import pytest
from hypothesis import strategies as st

import fastnn
from conftest import NATIVE, requires_native  # noqa: F401 - re-exported

# Parametrise a test over both backends; the native case skips where the
# extension is not built (it runs in CI, where the wheel is).
BACKENDS = [pytest.param("numpy", id="numpy"), pytest.param("native", id="native", marks=requires_native)]
FLOAT_DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


@contextlib.contextmanager
def on_backend(name):
    with fastnn.backend(name):
        yield


@contextlib.contextmanager
def native_setting(isa=None, threads=None, conv_algorithm=None):
    """Run the block with this SIMD path, native thread count and convolution algorithm,
    restoring all after; skips the test when the CPU or build lacks the SIMD path."""
    old_isa, old_threads, old_algo = fastnn.get_simd(), fastnn.get_num_threads(), fastnn.get_conv_algorithm()
    try:
        if conv_algorithm is not None:
            fastnn.set_conv_algorithm(conv_algorithm)
        if isa is not None:
            if fastnn._config.ISA_NAMES.index(isa) > fastnn._config._state.best_isa:
                pytest.skip(f"{isa} not available on this CPU/build")
            fastnn.set_simd(isa)
        if threads is not None:
            fastnn.set_num_threads(threads)
        yield
    finally:
        fastnn.set_simd(old_isa)
        fastnn.set_num_threads(old_threads)
        fastnn.set_conv_algorithm(old_algo)


def run_on(name, func, *args, **kwargs):
    """func(*args, **kwargs) with the ops running on backend ``name``."""
    with fastnn.backend(name):
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------
# Tolerances

def tolerance(dtype, reduction=1, scale=1.0):
    """(rtol, atol) for comparing two implementations of one op in ``dtype``.

    rtol is ~1e-5 for float32 and ~1e-10 for float64; atol covers values that
    cancel to about zero: a few ulps of the typical magnitude ``scale`` times the
    reduction length (the number of terms summed into one output)."""
    dtype = np.dtype(dtype)
    eps = np.finfo(dtype).eps
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    atol = float(8 * eps * max(1, reduction) * scale)
    return rtol, atol


def assert_close(got, want, dtype=None, reduction=1, scale=1.0, err_msg=""):
    """Values, shape and dtype of got match want within the tolerance of dtype."""
    got = np.asarray(got)
    want = np.asarray(want)
    dtype = np.dtype(dtype or want.dtype)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape} {err_msg}"
    if want.dtype.kind == "f":
        assert got.dtype == dtype, f"dtype {got.dtype} != {dtype} {err_msg}"
    rtol, atol = tolerance(dtype, reduction, scale)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=err_msg)


# ---------------------------------------------------------------------------
# Numerical gradients

def numerical_gradient(f, x, h=1e-6):
    """Central-difference gradient of the scalar function f at x (float64), one
    element at a time; x is restored afterwards."""
    x = np.asarray(x)
    assert x.dtype == np.float64, "numerical gradients are taken in float64"
    grad = np.zeros_like(x)
    flat = x.reshape(-1)  # a view: x must be contiguous
    assert np.shares_memory(flat, x) or x.size == 0
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + h
        f_plus = f()
        flat[i] = orig - h
        f_minus = f()
        flat[i] = orig
        gflat[i] = (f_plus - f_minus) / (2 * h)
    return grad


def assert_gradient(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=""):
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol, err_msg=err_msg)


# ---------------------------------------------------------------------------
# Array layouts: the same values, laid out in memory in different ways

LAYOUTS = ("c", "fortran", "strided", "reversed")


def with_layout(a, layout):
    """An array equal to ``a`` (values and shape) with the given memory layout:
    'c' (contiguous), 'fortran', 'strided' (every other element of a larger array),
    'reversed' (negative strides on every axis), 'sliced' (a block of a larger
    C-contiguous array: unit stride along the last axis only, the others wider than
    the block), 'fortran_sliced' (the same of a Fortran array: unit stride along the
    first axis only). For a matrix, 'fortran' is a transposed view and the two
    slices are the column and row blocks the GEMM reads in place."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a.copy()  # a 0-d array has one layout
    if layout == "c":
        out = np.ascontiguousarray(a)
    elif layout == "fortran":
        out = np.asfortranarray(a)
    elif layout == "strided":
        big = np.full(tuple(2 * d for d in a.shape), np.nan, dtype=a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        out = view
    elif layout in ("sliced", "fortran_sliced"):
        order = "C" if layout == "sliced" else "F"
        big = np.full(tuple(d + 3 for d in a.shape), np.nan, dtype=a.dtype, order=order)
        view = big[tuple(slice(1, 1 + d) for d in a.shape)]
        view[...] = a
        out = view
    elif layout == "reversed":
        rev = tuple(slice(None, None, -1) for _ in a.shape)
        out = np.ascontiguousarray(a[rev])[rev]
    else:
        raise ValueError(layout)
    assert out.shape == a.shape and np.array_equal(out, a, equal_nan=True)
    return out


layouts = st.sampled_from(LAYOUTS)
float_dtypes = st.sampled_from([np.float32, np.float64])


def random_array(rng, shape, dtype=np.float64, layout="c", scale=1.0):
    return with_layout(np.asarray(rng.standard_normal(shape) * scale).astype(dtype), layout)


# ---------------------------------------------------------------------------
# Hypothesis strategies for shapes

PRIMES = (2, 3, 5, 7, 11, 13)


@st.composite
def conv_geometries(draw, max_batch=3, max_channels=3, max_hw=9, max_filter=4, max_stride=3, max_pad=2):
    """A valid convolution: dict(n, c, h, w, f, fh, fw, stride=(sh, sw), pad=(ph, pw)).
    Batch 0 and 1, non-square kernels, strides 1-3 and pads 0-2 (pads up to larger
    than half the kernel) all occur; the filter always fits the padded input."""
    n = draw(st.sampled_from([0, 1, 2, 3][:max_batch + 1]))
    c = draw(st.integers(1, max_channels))
    f = draw(st.integers(1, max_channels + 1))
    fh = draw(st.integers(1, max_filter))
    fw = draw(st.integers(1, max_filter))
    pad = (draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    h = draw(st.integers(max(1, fh - 2 * pad[0]), max_hw))
    w = draw(st.integers(max(1, fw - 2 * pad[1]), max_hw))
    return dict(n=n, c=c, h=h, w=w, f=f, fh=fh, fw=fw, stride=stride, pad=pad)


@st.composite
def pool_geometries(draw, max_batch=3, max_channels=3, max_hw=9, max_pool=4, max_stride=3):
    """A valid pooling: dict(n, c, h, w, ph, pw, stride (pair or None), pad=(ph, pw)),
    with 2*pad <= pool and the window fitting the padded input."""
    n = draw(st.sampled_from([0, 1, 2, 3][:max_batch + 1]))
    c = draw(st.integers(1, max_channels))
    ph = draw(st.integers(1, max_pool))
    pw = draw(st.integers(1, max_pool))
    pad = (draw(st.integers(0, ph // 2)), draw(st.integers(0, pw // 2)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, max_stride), st.integers(1, max_stride))))
    h = draw(st.integers(max(1, ph - 2 * pad[0]), max_hw))
    w = draw(st.integers(max(1, pw - 2 * pad[1]), max_hw))
    return dict(n=n, c=c, h=h, w=w, ph=ph, pw=pw, stride=stride, pad=pad)


def out_size(size, window, stride, pad):
    return (size + 2 * pad - window) // stride + 1


@st.composite
def matmul_shapes(draw, max_dim=13):
    """(M, K, N) with 0 and 1 in M, primes and small sizes everywhere."""
    m = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 8, 13]))
    k = draw(st.integers(1, max_dim))
    n = draw(st.integers(1, max_dim))
    return m, k, n


# ---------------------------------------------------------------------------
# MNIST-format files

def idx_bytes(array, code=0x08):
    """An IDX file written independently of the reader: magic, type code, ndim, big-endian dims, data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.asarray(array, dtype=dtype).tobytes()


def write(path, payload, compress):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_mnist_dir(directory, n_train=7, n_test=5, compress=True, seed=0, splits=("train", "t10k")):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        if split not in splits:
            continue
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write(directory / f"{split}-images-idx3-ubyte{suffix}", idx_bytes(images), compress)
        write(directory / f"{split}-labels-idx1-ubyte{suffix}", idx_bytes(labels), compress)
        arrays[split] = (images, labels)
    return arrays


# ---------------------------------------------------------------------------
# Pooling written out element by element, independent of fastnn

def _window_cells(i, j, ph, pw, stride, pad, h, w):
    """The (row, column) of each element of output (i, j)'s window that lies in the image."""
    (sh, sw), (pad_h, pad_w) = stride, pad
    for di in range(ph):
        for dj in range(pw):
            hh, ww = i * sh - pad_h + di, j * sw - pad_w + dj
            if 0 <= hh < h and 0 <= ww < w:
                yield hh, ww


def naive_max_pool(x, ph, pw, stride, pad):
    n, c, h, w = x.shape
    (sh, sw), (pad_h, pad_w) = stride, pad
    oh, ow = out_size(h, ph, sh, pad_h), out_size(w, pw, sw, pad_w)
    y = np.zeros((n, c, oh, ow))
    arg = np.zeros((n, c, oh, ow), dtype=np.int64)
    for b, ch, i, j in np.ndindex(y.shape):
        best, where = None, None
        for hh, ww in _window_cells(i, j, ph, pw, stride, pad, h, w):   # padding never wins
            v = float(x[b, ch, hh, ww])
            if best is None or (best == best and (v != v or v > best)):
                best, where = v, hh * w + ww
        y[b, ch, i, j], arg[b, ch, i, j] = best, where
    return y, arg


def naive_max_pool_backward(dy, arg, x_shape):
    n, c, h, w = x_shape
    dx = np.zeros(x_shape)
    for idx in np.ndindex(dy.shape):
        k = int(arg[idx])
        dx[idx[0], idx[1], k // w, k % w] += dy[idx]
    return dx


def naive_avg_pool(x, ph, pw, stride, pad):
    n, c, h, w = x.shape
    (sh, sw), (pad_h, pad_w) = stride, pad
    oh, ow = out_size(h, ph, sh, pad_h), out_size(w, pw, sw, pad_w)
    y = np.zeros((n, c, oh, ow))
    for b, ch, i, j in np.ndindex(y.shape):
        total = [float(x[b, ch, hh, ww]) for hh, ww in _window_cells(i, j, ph, pw, stride, pad, h, w)]
        y[b, ch, i, j] = math.fsum(total) / (ph * pw)
    return y


def naive_avg_pool_backward(dy, x_shape, ph, pw, stride, pad):
    n, c, h, w = x_shape
    dx = np.zeros(x_shape)
    for b, ch, i, j in np.ndindex(dy.shape):
        for hh, ww in _window_cells(i, j, ph, pw, stride, pad, h, w):
            dx[b, ch, hh, ww] += dy[b, ch, i, j] / (ph * pw)
    return dx


def naive_pool2d(x, dy, ph, pw, stride, pad, kind):
    """(y, dx for dy) of max ("max") or average ("avg") pooling, from the loops above."""
    if kind == "max":
        y, arg = naive_max_pool(x, ph, pw, stride, pad)
        return y, naive_max_pool_backward(dy, arg, x.shape)
    return naive_avg_pool(x, ph, pw, stride, pad), naive_avg_pool_backward(dy, x.shape, ph, pw, stride, pad)
