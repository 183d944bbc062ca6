"""Native convolution (implicit im2col on the GEMM engine) against a plain
NumPy im2col computation in float64 and against fastnn._reference: strides,
padding, non-square kernels, batch 0 and 1, every SIMD path, 1-3 threads
(batch-parallel and GEMM-parallel paths), fused activations, reproducibility."""

import numpy as np
import pytest

import fastnn

from conftest import NATIVE, requires_native
from helpers import assert_close, native_setting, numerical_gradient

pytestmark = requires_native

if NATIVE:
    from fastnn import _gemm

ISAS = ("portable", "avx2", "avx512")
DTYPES = (np.float32, np.float64)




def im2col64(x, fh, fw, stride, pad):
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, pad
    oh, ow = (h + 2 * ph - fh) // sh + 1, (w + 2 * pw - fw) // sw + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    col = np.zeros((n, c, fh, fw, oh, ow))
    for i in range(fh):
        for j in range(fw):
            col[:, :, i, j] = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * fh * fw), oh, ow


def conv_forward64(x, w, b, stride, pad):
    f = w.shape[0]
    col, oh, ow = im2col64(x, w.shape[2], w.shape[3], stride, pad)
    y = col @ w.reshape(f, -1).T.astype(np.float64)
    if b is not None:
        y = y + b
    return y.reshape(x.shape[0], oh, ow, f).transpose(0, 3, 1, 2), np.abs(col) @ np.abs(w.reshape(f, -1).T)


def conv_backward64(dy, x, w, stride, pad):
    n, c, h, wd = x.shape
    f, _, fh, fw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    col, oh, ow = im2col64(x, fh, fw, stride, pad)
    d = dy.astype(np.float64).transpose(0, 2, 3, 1).reshape(n * oh * ow, f)
    db = d.sum(0)
    dw = (d.T @ col).reshape(w.shape)
    dcol = (d @ w.reshape(f, -1).astype(np.float64)).reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    for i in range(fh):
        for j in range(fw):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += dcol[:, :, i, j]
    return dxp[:, :, ph:ph + h, pw:pw + wd], dw, db


# (N, C, H, W, F, fh, fw, stride, pad)
GEOMETRIES = [
    (2, 3, 7, 6, 4, 3, 2, (1, 1), (0, 0)),       # non-square kernel
    (1, 1, 5, 5, 2, 5, 5, (1, 1), (0, 0)),       # output 1x1, batch 1
    (3, 2, 9, 11, 5, 3, 3, (2, 3), (1, 2)),      # strides differ, pads differ
    (5, 4, 8, 8, 7, 3, 3, (1, 1), (1, 1)),
    (6, 3, 10, 9, 8, 4, 2, (3, 1), (2, 0)),      # stride 3, pad > kernel/2 in h
    (2, 2, 4, 4, 3, 3, 3, (1, 1), (2, 2)),       # pad larger than half the kernel
    (0, 2, 5, 5, 3, 3, 3, (1, 1), (1, 1)),       # empty batch
    (2, 48, 9, 10, 9, 3, 3, (1, 1), (1, 1)),     # C*fh*fw = 432 > KC: several depth blocks
    (1, 3, 31, 30, 35, 2, 2, (1, 1), (0, 0)),    # P = 870 > KC for the weight gradient
    (3, 8, 5, 6, 4, 2, 2, (1, 1), (2, 1)),       # stride 1 but pad > kernel - 1: dx not direct
    (4, 10, 6, 5, 12, 1, 1, (1, 1), (0, 0)),     # 1x1 kernel
    # strides > 1 on the direct path (the image split into stride phases)
    (3, 16, 12, 11, 9, 3, 3, (2, 2), (1, 1)),    # a ResNet downsampling layer, odd width
    (2, 5, 13, 9, 6, 1, 1, (2, 2), (0, 0)),      # 1x1 stride 2: three of four phases unread
    (2, 3, 17, 15, 4, 7, 7, (2, 2), (3, 3)),     # a 7x7 stride-2 stem
    (3, 2, 10, 10, 3, 2, 2, (2, 2), (0, 0)),     # kernel = stride: windows do not overlap
    (2, 3, 11, 13, 5, 3, 3, (4, 3), (1, 0)),     # stride above the kernel in h
    (2, 48, 9, 10, 7, 3, 3, (2, 2), (1, 1)),     # C*fh*fw = 432 > KC, stride 2
    # and dx by stride phases (C >= MR/2, stride <= kernel): strides that differ, pad
    # above half the kernel, stride = kernel with a last row no window reaches, a 5x5
    # kernel padded by 4, batch 1; and stride above the kernel (dx by col2im)
    (2, 8, 11, 13, 6, 3, 3, (2, 3), (1, 2)),
    (3, 12, 10, 9, 5, 4, 2, (3, 1), (2, 0)),
    (2, 8, 9, 11, 5, 2, 3, (2, 3), (0, 1)),
    (2, 8, 9, 9, 5, 2, 2, (4, 4), (0, 0)),
    (2, 9, 12, 12, 7, 5, 5, (2, 2), (4, 4)),
    (1, 8, 5, 5, 3, 3, 3, (2, 2), (0, 0)),
    # the weight gradient as dot products (c * fh * fw <= 32): filters over several
    # blocks with a part block, positions not a multiple of the vector (masked tail),
    # a first layer of RGB images at stride 2, every tap's row a different base
    (3, 1, 28, 27, 13, 5, 5, (1, 1), (0, 0)),
    (2, 3, 15, 14, 17, 3, 3, (2, 2), (1, 1)),
    (2, 2, 9, 10, 7, 4, 4, (1, 2), (2, 1)),
    # and the forward's compact layout (at most f / 2 copies of the image) at strides above 1
    (2, 1, 17, 19, 12, 3, 3, (2, 2), (1, 1)),
    (2, 1, 15, 16, 10, 4, 4, (1, 2), (2, 1)),
    (3, 1, 16, 13, 14, 2, 5, (3, 2), (0, 2)),
]


def check(got, want, scale, dtype, k):
    eps = np.finfo(dtype).eps
    tol = 4 * (k + 3) * eps * (scale + 1.0)
    assert got.shape == want.shape
    np.testing.assert_array_less(np.abs(got.astype(np.float64) - want), tol + np.finfo(dtype).tiny)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_forward_backward_against_im2col(isa, dtype, threads, rng):
    with native_setting(isa, threads):
        for (n, c, h, wd, f, fh, fw, stride, pad) in GEOMETRIES:
            x = rng.standard_normal((n, c, h, wd)).astype(dtype)
            w = rng.standard_normal((f, c, fh, fw)).astype(dtype)
            b = rng.standard_normal((f,)).astype(dtype)
            y = _gemm.conv2d(x, w, b, stride, pad, None, 0.0)
            want, mag = conv_forward64(x, w, b, stride, pad)
            ck = c * fh * fw
            assert y.dtype == dtype
            check(y, want, np.abs(want).max(initial=0) + mag.max(initial=0), dtype, ck)
            dy = rng.standard_normal(y.shape).astype(dtype)
            for need_dx in (True, False):
                dx, dw, db = _gemm.conv2d_backward(dy, x, w, stride, pad, need_dx)
                rdx, rdw, rdb = conv_backward64(dy, x, w, stride, pad)
                p = y.shape[2] * y.shape[3]
                check(dw, rdw, np.abs(rdw).max(initial=0) + 3 * n * p, dtype, n * p)
                check(db, rdb, n * p, dtype, n * p)
                if need_dx:
                    assert dx.dtype == dtype
                    check(dx, rdx, np.abs(rdx).max(initial=0) + 3 * f * ck, dtype, f * ck)
                else:
                    assert dx is None


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", [
    (1, 3, 96, 96, 32, 7, 7, (2, 2), (3, 3)),    # batch-1 inference of a stem
    (2, 8, 64, 64, 16, 5, 5, (1, 1), (2, 2)),    # 2 images on 3 threads
    (1, 3, 90, 61, 19, 7, 5, (2, 1), (3, 0)),    # 19 filters (a part panel), rows not a multiple
    # c * fh * fw <= 32 (the compact layout: y written in place, a part panel last)
    (1, 1, 150, 141, 27, 5, 5, (1, 1), (2, 2)),
    (1, 3, 230, 199, 37, 3, 3, (2, 2), (1, 1)),
])
def test_fewer_images_than_threads_share_the_output_rows(isa, dtype, geometry, rng):
    """With fewer images than threads and small filters, the threads take each image's
    output rows apart on the direct path: the same bits at every thread count."""
    n, c, h, w, f, fh, fw, stride, pad = geometry
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c, fh, fw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    outs = []
    for threads in (1, 2, 3):
        with native_setting(isa, threads):
            outs.append(_gemm.conv2d(x, wt, b, stride, pad, "relu", 0.0))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    want, mag = conv_forward64(x, wt, b, stride, pad)
    check(outs[0], np.maximum(want, 0), np.abs(want).max() + mag.max(), dtype, c * fh * fw)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", [
    (3, 1, 28, 28, 30, 5, 5, (0, 0)),     # conv C's shape: one input channel, 5x5
    (2, 3, 9, 11, 4, 3, 5, (1, 2)),       # non-square filter, padding differs
    (2, 2, 12, 37, 3, 7, 3, (3, 1)),      # 37 columns: a full and a part 32-column chunk
    (1, 1, 5, 5, 2, 5, 5, (4, 4)),        # padding = filter - 1: every tap at an edge
    (2, 4, 6, 70, 5, 3, 3, (1, 1)),       # three chunks of columns
    (1, 2, 3, 4, 3, 1, 1, (0, 0)),        # 1x1 filter
])
def test_stride1_data_gradient_is_exact_on_small_integers(isa, dtype, geometry, rng):
    """Small integers make every product and sum exact in float32, so dx must equal the
    float64 col2im exactly: a tap added twice, dropped, or read one column off shows."""
    n, c, h, w, f, fh, fw, pad = geometry
    x = rng.integers(-3, 4, (n, c, h, w)).astype(dtype)
    wt = rng.integers(-3, 4, (f, c, fh, fw)).astype(dtype)
    oh, ow = h + 2 * pad[0] - fh + 1, w + 2 * pad[1] - fw + 1
    dy = rng.integers(-3, 4, (n, f, oh, ow)).astype(dtype)
    with native_setting(isa, 1, conv_algorithm="gemm"):
        dx, _, _ = _gemm.conv2d_backward(dy, x, wt, (1, 1), pad, True)
    want, _, _ = conv_backward64(dy, x, wt, (1, 1), pad)
    np.testing.assert_array_equal(dx, want.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_backend(dtype, rng):
    from fastnn import _reference as R
    for (n, c, h, wd, f, fh, fw, stride, pad) in GEOMETRIES[:6]:
        x = rng.standard_normal((n, c, h, wd)).astype(dtype)
        w = rng.standard_normal((f, c, fh, fw)).astype(dtype)
        b = rng.standard_normal((f,)).astype(dtype)
        # Both within the dtype's rounding of the terms summed of the float64 result.
        want_y, mag = conv_forward64(x, w, b, stride, pad)
        want_y = np.maximum(want_y, 0)
        dy = rng.standard_normal(want_y.shape).astype(dtype)
        rdx, rdw, rdb = conv_backward64(dy, x, w, stride, pad)
        p = want_y.shape[2] * want_y.shape[3]
        for y, grads in ((_gemm.conv2d(x, w, b, stride, pad, "relu", 0.0), _gemm.conv2d_backward(dy, x, w, stride,
                                                                                                  pad, True)),
                         (R.conv2d(x, w, b, stride, pad, "relu", 0.0), R.conv2d_backward(dy, x, w, stride, pad, True))):
            check(y, want_y, np.abs(want_y).max(initial=0) + mag.max(initial=0), dtype, c * fh * fw)
            dx, dw, db = grads
            check(dw, rdw, np.abs(rdw).max(initial=0) + 3 * n * p, dtype, n * p)
            check(db, rdb, n * p, dtype, n * p)
            check(dx, rdx, np.abs(rdx).max(initial=0) + 3 * f * fh * fw * c, dtype, f * fh * fw)


@pytest.mark.parametrize("act", ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"])
def test_fused_activation_equals_separate_op(act, rng):
    from fastnn import _reference as R
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal((6,)).astype(np.float32)
    fused = _gemm.conv2d(x, w, b, (1, 1), (1, 1), act, 0.3)
    pre = _gemm.conv2d(x, w, b, (1, 1), (1, 1), None, 0.0)
    if act == "identity":
        separate = pre
    elif act in ("leaky_relu", "elu"):
        separate = getattr(R, act)(pre, 0.3)
    else:
        separate = getattr(R, act)(pre)
    np.testing.assert_allclose(fused, separate, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_repeats_exactly_at_fixed_thread_count(threads, rng):
    x = rng.standard_normal((7, 5, 12, 12)).astype(np.float32)
    w = rng.standard_normal((9, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal((9,)).astype(np.float32)
    with native_setting(threads=threads):
        y1 = _gemm.conv2d(x, w, b, (1, 1), (1, 1), None, 0.0)
        y2 = _gemm.conv2d(x, w, b, (1, 1), (1, 1), None, 0.0)
        dy = rng.standard_normal(y1.shape).astype(np.float32)
        g1 = _gemm.conv2d_backward(dy, x, w, (1, 1), (1, 1), True)
        g2 = _gemm.conv2d_backward(dy, x, w, (1, 1), (1, 1), True)
    np.testing.assert_array_equal(y1, y2)
    for a, b_ in zip(g1, g2):
        np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_few_tap_paths_repeat_exactly_at_fixed_thread_count(dtype, threads, rng):
    # 25 taps, 13 filters: the dot-product weight gradient (its lane sums kept per
    # image group, added in a fixed order) and the compact forward; 8 threads on a
    # small machine make the groups change hands between runs
    from fastnn import ops
    x = rng.standard_normal((37, 1, 20, 19)).astype(dtype)
    w = rng.standard_normal((13, 1, 5, 5)).astype(dtype)
    b = rng.standard_normal((13,)).astype(dtype)
    with native_setting(threads=threads):
        y = _gemm.conv2d(x, w, b, (1, 1), (0, 0), None, 0.0)
        dy = rng.standard_normal(y.shape).astype(dtype)
        runs = [_gemm.conv2d_backward(dy, x, w, (1, 1), (0, 0), True) for _ in range(3)]
        p, arg = ops.conv2d_max_pool2d(x, w, b, activation="relu")
        dp = rng.standard_normal(p.shape).astype(dtype)
        pooled = [ops.conv2d_max_pool2d_backward(dp, arg, p, x, w, activation="relu", need_dx=False)
                  for _ in range(3)]
    for run in runs[1:]:
        for a, b_ in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b_)
    for run in pooled[1:]:
        for a, b_ in zip(run[1:], pooled[0][1:]):
            np.testing.assert_array_equal(a, b_)
    rdx, rdw, rdb = conv_backward64(dy, x, w, (1, 1), (0, 0))
    npos = x.shape[0] * y.shape[2] * y.shape[3]
    check(runs[0][1], rdw, np.abs(rdw).max() + 3 * npos, dtype, npos)
    check(runs[0][2], rdb, npos, dtype, npos)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_path_with_more_threads_than_cores(dtype, rng):
    # The direct path's images (forward) and image groups (weight gradient) are
    # taken by work spans: each thread its even share, then the back of the share
    # with the most left. 8 threads on a small machine fall behind each other, so
    # images change hands; the forward is each image's own sum (the bits of one
    # thread), the weight gradient the partials of fixed groups added in order
    # (the same bits on every run at 8 threads), the fused pool likewise.
    n, c, h, wd, f = 37, 3, 14, 13, 6
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((f, c, 5, 3)).astype(dtype)
    b = rng.standard_normal((f,)).astype(dtype)
    with native_setting(threads=1):
        y1 = _gemm.conv2d(x, w, b, (1, 1), (1, 1), "relu", 0.0)
        p1, a1 = _gemm.conv2d_max_pool2d(x, w, b, (1, 1), (1, 1), "relu", 0.0, 2, 2, (2, 2), (0, 0))
    want, mag = conv_forward64(x, w, b, (1, 1), (1, 1))
    check(y1, np.maximum(want, 0), np.abs(want).max() + mag.max(), dtype, c * 15)
    dy = rng.standard_normal(y1.shape).astype(dtype)
    rdx, rdw, rdb = conv_backward64(dy, x, w, (1, 1), (1, 1))
    p = y1.shape[2] * y1.shape[3]
    with native_setting(threads=8):
        runs = [(_gemm.conv2d(x, w, b, (1, 1), (1, 1), "relu", 0.0),
                 _gemm.conv2d_max_pool2d(x, w, b, (1, 1), (1, 1), "relu", 0.0, 2, 2, (2, 2), (0, 0)),
                 _gemm.conv2d_backward(dy, x, w, (1, 1), (1, 1), True)) for _ in range(4)]
    for y8, (p8, a8), (dx, dw, db) in runs:
        np.testing.assert_array_equal(y8, y1)
        np.testing.assert_array_equal(p8, p1)
        np.testing.assert_array_equal(a8, a1)
        check(dw, rdw, np.abs(rdw).max() + 3 * n * p, dtype, n * p)
        check(db, rdb, n * p, dtype, n * p)
        check(dx, rdx, np.abs(rdx).max() + 3 * f * c * 15, dtype, f * c * 15)
        for got, first in zip((dx, dw, db), runs[0][2]):
            np.testing.assert_array_equal(got, first)


def test_numerical_gradient_float64(rng):
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((3, 2, 3, 2))
    b = rng.standard_normal((3,))
    stride, pad = (2, 1), (1, 1)
    y = _gemm.conv2d(x, w, b, stride, pad, None, 0.0)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = _gemm.conv2d_backward(dy, x, w, stride, pad, True)

    def loss():
        return float((_gemm.conv2d(x, w, b, stride, pad, None, 0.0) * dy).sum())

    for arr, grad in ((x, dx), (w, dw), (b, db)):
        np.testing.assert_allclose(grad, numerical_gradient(loss, arr), rtol=1e-6, atol=1e-8)


def test_ops_route_to_native_conv(rng):
    from fastnn import ops as F
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with fastnn.backend("native"):
        got = F.conv2d(x, w, None, stride=1, pad=1)
    want, _ = conv_forward64(x, w, None, (1, 1), (1, 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("c", [3, 8])
def test_nan_and_inf_propagate_like_the_reference(threads, stride, c, rng):
    # The direct paths insert zeros (padding, wide-grid columns, the stride
    # phases' padding); a non-finite image or filter must still give the
    # reference's NaN/Inf pattern.
    from fastnn import _reference as R
    x = rng.standard_normal((4, c, 7, 7))
    w = rng.standard_normal((5, c, 3, 3))
    x[1, 2, 0, 6] = np.inf
    x[2, 0, 3, 3] = np.nan
    w[4, 1, 0, 0] = np.inf
    with native_setting(threads=threads), np.errstate(invalid="ignore", over="ignore"):
        y = _gemm.conv2d(x, w, None, stride, (1, 1), None, 0.0)
        ry = R.conv2d(x, w, None, stride, (1, 1), None, 0.0)
        dy = rng.standard_normal(y.shape)
        got = _gemm.conv2d_backward(dy, x, w, stride, (1, 1), True)
        want = R.conv2d_backward(dy, x, w, stride, (1, 1), True)
    for g, r in [(y, ry), *zip(got, want)]:
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(r))
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(r))
        fin = np.isfinite(r)
        np.testing.assert_allclose(g[fin], r[fin], rtol=1e-10, atol=1e-10)


@requires_native
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_max_pool2d_fused_equals_separate_ops(isa, threads, dtype):
    # batches large enough for the direct (fused) path at every thread count, odd
    # output sizes (the last row and column fall outside the 2x2 windows), filter
    # counts that are not a multiple of any MR, NaN and ties in the input
    from fastnn import ops
    rng = np.random.default_rng(3)
    for n, c, hw, f, k, pad, stride in [(7, 1, 28, 30, 5, 0, 1), (5, 3, 12, 13, 3, 1, 1), (4, 2, 9, 5, 2, 0, 1),
                                        (5, 4, 23, 11, 3, 1, 2)]:
        x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
        x[0, 0, 3, 3] = np.nan
        x[-1, :, :4, :4] = 0.5  # ties
        W = rng.standard_normal((f, c, k, k)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype)
        with native_setting(isa, threads):
            y, arg = ops.conv2d_max_pool2d(x, W, b, stride=stride, pad=pad, activation="relu")
            conv = ops.conv2d(x, W, b, stride=stride, pad=pad, activation="relu")
            want_y, want_arg = ops.max_pool2d(conv, 2, stride=2)
            y3, arg3 = ops.conv2d_max_pool2d(x, W, b, stride=stride, pad=pad, activation="relu", pool_h=3,
                                             pool_stride=2, pool_pad=1)
            want_y3, want_arg3 = ops.max_pool2d(conv, 3, stride=2, pad=1)
        np.testing.assert_array_equal(arg, want_arg)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(arg3, want_arg3)
        np.testing.assert_array_equal(y3, want_y3)
        assert np.isnan(y[0]).any()


@requires_native
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("act", [None, "relu"])
@pytest.mark.parametrize("bias", ["none", "random", "minus_zero"])
def test_conv2d_max_pool2d_bias_and_relu_in_the_pooling_pass(isa, threads, act, bias):
    # On AVX-512 float32 the 2x2 pooling adds the bias and applies ReLU itself (after
    # the window's max): the bits and argmax of conv2d then max_pool2d wherever ReLU
    # makes ties of zeros (all-negative windows: the first element, -0.0 kept), where
    # a NaN or an infinity wins, and where positive values tie. Compact rows (up to 32
    # taps) and the wide grid (more), odd sizes, filters past any MR.
    from fastnn import ops
    rng = np.random.default_rng(11)
    for n, c, hw, f, k, pad in [(6, 1, 28, 30, 5, 0), (5, 1, 13, 9, 3, 1), (4, 4, 17, 11, 5, 2), (3, 2, 40, 17, 5, 0)]:
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        x[0, :, :8, :8] = 0.0        # windows of exact zeros
        x[1, 0, 5, 5] = np.nan
        x[1, 0, 9, 2] = np.inf
        x[2, :, 6:, 6:] = 0.25        # windows of equal positive sums
        W = rng.standard_normal((f, c, k, k)).astype(np.float32)
        W[0] = -np.abs(W[0])
        b = {"none": None, "random": rng.standard_normal(f).astype(np.float32),
             "minus_zero": np.full(f, -0.0, np.float32)}[bias]
        with native_setting(isa, threads, conv_algorithm="gemm"):
            y, arg = ops.conv2d_max_pool2d(x, W, b, pad=pad, activation=act)
            conv = ops.conv2d(x, W, b, pad=pad, activation=act)
        want_y, want_arg = ops.max_pool2d(conv, 2, stride=2)
        np.testing.assert_array_equal(arg, want_arg)
        np.testing.assert_array_equal(y.view(np.int32), want_y.view(np.int32))  # -0.0 and NaN payloads too
        assert np.isnan(y).any() and np.isposinf(y).any()
        if act == "relu":
            assert ((y == 0) & (arg % conv.shape[3] % 2 == 0)).any()
    # a NaN bias on a NaN sum (inf - inf): of two NaNs the bias's, as bias_act gives it
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, :2] = np.inf, -np.inf
    b = np.array([np.nan], np.float32) if bias != "none" else None
    with native_setting(isa, threads, conv_algorithm="gemm"):
        y, arg = ops.conv2d_max_pool2d(x, np.ones((1, 1, 1, 2), np.float32), b, activation=act)
        want_y, want_arg = ops.max_pool2d(ops.conv2d(x, np.ones((1, 1, 1, 2), np.float32), b, activation=act), 2)
    np.testing.assert_array_equal(y.view(np.int32), want_y.view(np.int32))
    np.testing.assert_array_equal(arg, want_arg)


@requires_native
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_max_pool2d_backward_fused_equals_chain(isa, threads, dtype):
    # the fused backward (each image un-pooled in cache) against the chain of ops it
    # replaces, on the same kernels: the same numbers, and repeatable
    from fastnn import ops
    rng = np.random.default_rng(4)
    # pooled widths 12, 5, 4 and 5, and 8, 8 and 25: the 2x2 un-pooling's vector kernels
    # (int32 argmax, ReLU's derivative inside) take rows of 8k and from 24 windows (a
    # scalar tail past the vectors) on AVX2, any on AVX-512
    for n, c, hw, f, k, pad, act, stride in [(7, 1, 28, 30, 5, 0, "relu", 1), (5, 2, 11, 13, 3, 1, "tanh", 1),
                                             (4, 6, 9, 5, 2, 0, None, 1), (5, 3, 21, 7, 3, 1, "relu", 2),
                                             (3, 1, 16, 9, 5, 2, "relu", 1), (2, 1, 16, 4, 5, 2, None, 1),
                                             (2, 2, 50, 3, 5, 2, "relu", 1)]:
        x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
        W = rng.standard_normal((f, c, k, k)).astype(dtype)
        with native_setting(isa, threads):
            y, arg = ops.conv2d_max_pool2d(x, W, None, stride=stride, pad=pad, activation=act)
            dy = rng.standard_normal(y.shape).astype(dtype)
            # an Inf where the activation's slope is not 0 (Inf * 0 is NaN in the fused
            # derivative, while relu_backward drops the gradient there)
            dy.flat[int(np.argmax(y.ravel() > 0))] = np.inf
            got = ops.conv2d_max_pool2d_backward(dy, arg, y, x, W, stride=stride, pad=pad, activation=act)
            again = ops.conv2d_max_pool2d_backward(dy, arg, y, x, W, stride=stride, pad=pad, activation=act)
            dz = ops.activation_backward(dy, act, x=y, y=y) if act else dy
            dh = ops.max_pool2d_backward(dz, arg, (n, f) + ops.conv2d(x, W, stride=stride, pad=pad).shape[2:], 2)
            want = ops.conv2d_backward(dh, x, W, stride=stride, pad=pad)
        for name, a, b, r in zip(("dx", "dW", "db"), got, want, again):
            np.testing.assert_array_equal(a, r, err_msg=name)  # run to run
            np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0, err_msg=name)
        assert not np.isfinite(got[2]).all()


@requires_native
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_max_pool2d_weight_gradient_without_dx(isa, threads, dtype):
    # need_dx=False (a first layer): on the SIMD paths dW and db are summed over the
    # pooled values only, each times the taps of its window's winner (the gathered
    # path), not over the un-pooled gradient; against the float64 reference and the
    # chain of separate ops, repeatable, and no dx. Geometries: conv C's; an odd plane
    # and 2 channels; a stride-2 convolution under overlapping padded 3x3 windows; a
    # 3 x 10 filter (runs of taps longer than a copy); 1x1 over 20 channels under 2 x 3
    # windows; batch 1 with 9 taps (AVX2's float64 kernel has room for few taps); a
    # 4x4 pool of a 6x6 plane.
    from fastnn import ops
    rng = np.random.default_rng(5)
    cases = [(7, 1, (28, 28), 30, (5, 5), 1, 0, "relu", (2, 2, None, 0)),
             (5, 2, (11, 11), 13, (3, 3), 1, 1, "tanh", (2, 2, None, 0)),
             (4, 3, (13, 12), 6, (3, 3), 2, 1, "relu", (3, 3, 2, 1)),
             (3, 1, (20, 23), 5, (3, 10), 1, 0, None, (2, 2, None, 0)),
             (2, 20, (9, 9), 7, (1, 1), 1, 0, "leaky_relu", (2, 3, (2, 3), 0)),
             (1, 1, (16, 16), 4, (3, 3), 1, 1, "relu", (2, 2, None, 0)),
             (6, 1, (7, 7), 3, (2, 2), 1, 0, "sigmoid", (4, 4, None, 0))]
    for n, c, (h, w), f, (fh, fw), stride, pad, act, (ph, pw, pstride, ppad) in cases:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        W = rng.standard_normal((f, c, fh, fw)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype)
        kw = dict(stride=stride, pad=pad, activation=act)
        pool = dict(pool_h=ph, pool_w=pw, pool_stride=pstride, pool_pad=ppad)
        with native_setting(isa, threads):
            y, arg = ops.conv2d_max_pool2d(x, W, b, **kw, **pool)
            dy = rng.standard_normal(y.shape).astype(dtype)
            got = ops.conv2d_max_pool2d_backward(dy, arg, y, x, W, **kw, **pool, need_dx=False)
            again = ops.conv2d_max_pool2d_backward(dy, arg, y, x, W, **kw, **pool, need_dx=False)
            dz = ops.activation_backward(dy, act, x=y, y=y) if act else dy
            conv_shape = (n, f) + ops.conv2d(x, W, stride=stride, pad=pad).shape[2:]
            dh = ops.max_pool2d_backward(dz, arg, conv_shape, ph, pw, pstride, ppad)
            chain = ops.conv2d_backward(dh, x, W, stride=stride, pad=pad, need_dx=False)
        with fastnn.backend("numpy"):
            truth = ops.conv2d_max_pool2d_backward(dy.astype(np.float64), arg, y.astype(np.float64),
                                                   x.astype(np.float64), W.astype(np.float64), **kw, **pool,
                                                   need_dx=False)
        assert got[0] is None and again[0] is None
        terms = n * y.shape[2] * y.shape[3]  # the pooled values summed into each element
        for name, a, r, ch, t in zip(("dW", "db"), got[1:], again[1:], chain[1:], truth[1:]):
            np.testing.assert_array_equal(a, r, err_msg=name)  # run to run
            assert_close(a, t, dtype, reduction=terms, err_msg=f"{name} vs float64 {isa} {threads}")
            assert_close(a, ch, dtype, reduction=terms, err_msg=f"{name} vs the chain {isa} {threads}")
