"""Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution (csrc/winograd.c), forced with
fastnn.set_conv_algorithm("winograd") and ("winograd4x4"), against a float64 im2col computation:
odd and prime sizes, padding 0-2 and asymmetric, batch 0 and 1, blocks that
span images, every SIMD path, 1-3 threads; its fallback for non-finite inputs,
its numerical gradient, reproducibility, and the algorithm switch itself."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import ops as F

from conftest import NATIVE, requires_native
from helpers import native_setting, numerical_gradient
from test_conv_native import check, conv_backward64, conv_forward64
from test_fuzz import assert_close, call, draw_array, draw_dtype

pytestmark = requires_native

if NATIVE:
    from fastnn import _gemm

# the two tile sizes, as fastnn.set_conv_algorithm names them
WINOGRADS = ["winograd", "winograd4x4"]

# (N, C, H, W, F, pad): 3x3 filters, stride 1
GEOMETRIES = [
    (0, 3, 5, 5, 2, (1, 1)),        # empty batch
    (1, 1, 3, 3, 1, (0, 0)),        # one output, one channel
    (2, 3, 7, 6, 5, (1, 1)),        # odd output height: a half tile row
    (3, 17, 9, 11, 19, (0, 2)),     # primes, asymmetric padding
    (2, 5, 4, 4, 3, (2, 2)),        # padding 2 (the data gradient's padding is 0)
    (1, 33, 13, 8, 40, (1, 0)),     # F not a multiple of the microkernel's rows
    (9, 4, 5, 6, 3, (1, 1)),        # 3 tile rows per image: blocks span images
    (2, 150, 10, 9, 130, (1, 1)),   # wide channels: blocks of a few tile rows
    (1, 16, 33, 35, 16, (1, 1)),    # 17 x 18 tiles: rows longer than 16 lanes
    (2, 7, 11, 14, 9, (1, 2)),      # 11 x 16 outputs: a part 4x4 tile row
    (1, 6, 30, 9, 5, (0, 1)),       # 28 x 9 outputs: a part 4x4 tile column
    (3, 2, 3, 4, 4, (0, 0)),        # 1 x 2 outputs: no tile lies inside the image
    (1, 4, 6, 32, 3, (1, 1)),       # 32 outputs a row: 8 4x4 tiles, the most AVX2's gather takes
    (2, 3, 7, 31, 2, (0, 0)),       # 29 outputs a row: 8 tiles, the last one part
    (1, 3, 9, 62, 2, (1, 0)),       # 60 outputs a row: 15 4x4 tiles, the most AVX-512's gather takes
    (1, 3, 6, 63, 2, (1, 1)),       # 63 outputs a row: 16 4x4 tiles, the generic gather
    (3, 5, 9, 32, 4, (1, 1)),       # 3 tile rows of 8 a image: AVX-512 gathers pairs of rows across images
    (2, 3, 28, 28, 4, (1, 1)),      # 7 tile rows of 7 4x4 tiles (conv D's planes), an odd one left
    (9, 64, 16, 16, 64, (1, 1)),    # 36 tile rows of 4 over 1.25 MiB: several blocks, the last one short
]


def every_path(test):
    """Parametrize a test over both tiles, every SIMD path, 1-3 threads and both dtypes."""
    for name, values in (("dtype", [np.float32, np.float64]), ("threads", [1, 2, 3]),
                         ("isa", ["portable", "avx2", "avx512"]), ("algorithm", WINOGRADS)):
        test = pytest.mark.parametrize(name, values)(test)
    return test


def _inputs(rng, geometry, dtype):
    n, c, h, w, f, pad = geometry
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c, 3, 3)).astype(dtype)
    b = rng.standard_normal((f,)).astype(dtype)
    return x, wt, b, pad


@every_path
def test_winograd_against_im2col(algorithm, isa, threads, dtype, rng):
    with native_setting(isa, threads, conv_algorithm=algorithm):
        for geometry in GEOMETRIES:
            x, wt, b, pad = _inputs(rng, geometry, dtype)
            n, c, f = x.shape[0], x.shape[1], wt.shape[0]
            y = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
            want, mag = conv_forward64(x, wt, b, (1, 1), pad)
            assert y.dtype == dtype
            check(y, want, np.abs(want).max(initial=0) + mag.max(initial=0), dtype, 9 * c)
            dy = rng.standard_normal(y.shape).astype(dtype)
            dx, dw, db = _gemm.conv2d_backward(dy, x, wt, (1, 1), pad, True)
            rdx, rdw, rdb = conv_backward64(dy, x, wt, (1, 1), pad)
            p = y.shape[2] * y.shape[3]
            check(dw, rdw, np.abs(rdw).max(initial=0) + 3 * n * p, dtype, n * p)
            check(db, rdb, n * p, dtype, n * p)
            check(dx, rdx, np.abs(rdx).max(initial=0) + 3 * f * 9 * c, dtype, 9 * f)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_width_of_a_block_last_panel(isa, threads, dtype, rng):
    """One 4x4 tile an image, so a thread's block holds as many tiles as it has
    images: batches of 1 to 40 leave every width of the last product panel, from one
    tile to a full one, including those of at most NR/2 tiles that take the
    half-width microkernel (8, 16 or 32 lanes a panel, by ISA and dtype)."""
    c, f = 3, 5
    wt = rng.standard_normal((f, c, 3, 3)).astype(dtype)
    b = rng.standard_normal((f,)).astype(dtype)
    with native_setting(isa, threads, conv_algorithm="winograd4x4"):
        for n in range(1, 41):
            x = rng.standard_normal((n, c, 4, 4)).astype(dtype)
            y = _gemm.conv2d(x, wt, b, (1, 1), (1, 1), None, 0.0)
            want, mag = conv_forward64(x, wt, b, (1, 1), (1, 1))
            check(y, want, np.abs(want).max() + mag.max(), dtype, 9 * c)
            dy = rng.standard_normal(y.shape).astype(dtype)
            dx, dw, db = _gemm.conv2d_backward(dy, x, wt, (1, 1), (1, 1), True)
            rdx, rdw, rdb = conv_backward64(dy, x, wt, (1, 1), (1, 1))
            check(dx, rdx, np.abs(rdx).max() + 3 * f * 9 * c, dtype, 9 * f)
            check(dw, rdw, np.abs(rdw).max() + 3 * n * 16, dtype, n * 16)
            check(db, rdb, n * 16, dtype, n * 16)


def test_switch_selects_a_different_path(rng):
    """The three algorithms round differently: the switch really changes the path, and
    'auto' takes Winograd F(4x4, 3x3) on a 16 -> 32 channel layer."""
    x, wt, b, pad = _inputs(rng, (8, 16, 12, 12, 32, (1, 1)), np.float32)  # 288 2x2 tiles
    out = {}
    for algorithm in ["gemm", "auto"] + WINOGRADS:
        with native_setting(threads=1, conv_algorithm=algorithm):
            out[algorithm] = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
    assert not np.array_equal(out["gemm"], out["winograd"])
    assert not np.array_equal(out["gemm"], out["winograd4x4"])
    assert not np.array_equal(out["winograd"], out["winograd4x4"])
    np.testing.assert_array_equal(out["auto"], out["winograd4x4"])
    want, mag = conv_forward64(x, wt, b, (1, 1), pad)
    for algorithm in WINOGRADS:
        check(out[algorithm], want, np.abs(want).max() + mag.max(), np.float32, 9 * 16)


@pytest.mark.parametrize("geometry, threads", [
    ((1, 32, 7, 7, 64, (1, 1)), 1),      # 16 tiles: the filter transform would cost more than it saves
    ((4, 32, 8, 8, 32, (1, 1)), 1),      # 64 tiles, under 128 a thread
    ((8, 32, 8, 8, 32, (1, 1)), 2),      # 128 tiles: Winograd on 1 thread, not on 2
    ((4, 16, 12, 12, 16, (1, 1)), 1),    # 16 -> 16 channels, 144 tiles: under 256
    ((8, 16, 12, 12, 16, (1, 1)), 2),    # 288 tiles into 16 channels: Winograd on 1 thread, not on 2
    ((16, 16, 14, 14, 16, (1, 1)), 1),   # 16 -> 16, 784 tiles, but 14x14 fills 77% of the 4x4 tiles
    ((4, 32, 14, 14, 16, (1, 1)), 1),    # 16 output channels from 32, 196 tiles
    ((8, 16, 12, 12, 32, (3, 3)), 1),    # padding 3
    ((8, 32, 24, 24, 8, (1, 1)), 1),     # 8 output channels
])
def test_auto_keeps_unprofitable_shapes_on_the_gemm_path(geometry, threads, rng):
    x, wt, b, pad = _inputs(rng, geometry, np.float32)
    with native_setting(threads=threads, conv_algorithm="gemm"):
        gemm = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
    with native_setting(threads=threads, conv_algorithm="auto"):
        auto = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
    np.testing.assert_array_equal(auto, gemm)


@pytest.mark.parametrize("geometry, threads", [
    ((8, 16, 12, 12, 32, (1, 1)), 1),    # 16 -> 32 channels, 288 tiles
    ((4, 16, 12, 12, 32, (1, 1)), 1),    # 144 tiles: at least 128
    ((8, 16, 12, 12, 32, (1, 1)), 2),    # 288 tiles: at least 128 for each of 2 threads
    ((8, 32, 32, 32, 16, (1, 1)), 1),    # 32 -> 16 channels (a data gradient's shape), 2048 tiles
    ((8, 32, 32, 32, 16, (1, 1)), 2),    # the same on 2 threads
    ((8, 16, 12, 12, 16, (1, 1)), 1),    # 16 -> 16 channels, 288 tiles, 12x12 fills its 4x4 tiles
    ((8, 8, 12, 12, 32, (1, 1)), 1),     # 8 -> 32 channels, 288 tiles
    ((16, 8, 24, 24, 32, (1, 1)), 1),    # 8 -> 32 channels, 2304 tiles
])
def test_auto_takes_winograd_where_it_pays(geometry, threads, rng):
    x, wt, b, pad = _inputs(rng, geometry, np.float32)
    with native_setting(threads=threads, conv_algorithm="winograd4x4"):
        wino = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
    with native_setting(threads=threads, conv_algorithm="auto"):
        auto = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
    with native_setting(threads=threads, conv_algorithm="gemm"):
        gemm = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
    assert not np.array_equal(gemm, wino)
    np.testing.assert_array_equal(auto, wino)


@pytest.mark.parametrize("algorithm", WINOGRADS)
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"])
def test_fused_bias_and_activation(algorithm, act, rng):
    from fastnn import _reference as R
    x, wt, b, pad = _inputs(rng, (3, 16, 9, 8, 18, (1, 1)), np.float64)
    with native_setting(conv_algorithm=algorithm):
        fused = _gemm.conv2d(x, wt, b, (1, 1), pad, act, 0.3)
        pre = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
    separate = getattr(R, act)(pre, 0.3) if act in ("leaky_relu", "elu") else getattr(R, act)(pre)
    np.testing.assert_allclose(fused, separate, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("algorithm", WINOGRADS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_repeats_exactly_at_fixed_thread_count(algorithm, threads, rng):
    x, wt, b, pad = _inputs(rng, (7, 20, 12, 13, 24, (1, 1)), np.float32)
    dy = rng.standard_normal((7, 24, 12, 13)).astype(np.float32)
    with native_setting(threads=threads, conv_algorithm=algorithm):
        runs = [(_gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0),) +
                tuple(_gemm.conv2d_backward(dy, x, wt, (1, 1), pad, True)) for _ in range(2)]
    for a, b_ in zip(*runs):
        np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("algorithm", WINOGRADS)
def test_forward_does_not_depend_on_thread_count(algorithm, rng):
    x, wt, b, pad = _inputs(rng, (6, 16, 10, 10, 16, (1, 1)), np.float32)
    outs = []
    for threads in (1, 2, 3):
        with native_setting(threads=threads, conv_algorithm=algorithm):
            outs.append(_gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0))
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("algorithm", WINOGRADS)
def test_data_gradient_does_not_depend_on_thread_count(algorithm, rng):
    """dx's input tiles overlap by 2 rows, and a thread's first tile row shares
    them with the thread before: at 4-7 threads 6 images of 6 (F(4x4)) or 11
    (F(2x2)) tile rows are cut inside images, and every value must still be the
    1-thread sum, bit for bit."""
    x, wt, _, pad = _inputs(rng, (6, 16, 21, 10, 16, (1, 1)), np.float32)
    dy = rng.standard_normal((6, 16, 21, 10)).astype(np.float32)
    outs = []
    for threads in (1, 2, 3, 4, 5, 7):
        with native_setting(threads=threads, conv_algorithm=algorithm):
            outs.append(_gemm.conv2d_backward(dy, x, wt, (1, 1), pad, True)[0])
    rdx = conv_backward64(dy, x, wt, (1, 1), pad)[0]
    check(outs[0], rdx, np.abs(rdx).max() + 3 * 16 * 9 * 16, np.float32, 9 * 16)
    for dx in outs[1:]:
        np.testing.assert_array_equal(dx, outs[0])


@pytest.mark.parametrize("algorithm", WINOGRADS)
def test_numerical_gradient_float64(algorithm, rng):
    x, wt, b, pad = _inputs(rng, (2, 3, 6, 5, 2, (1, 2)), np.float64)
    with native_setting(conv_algorithm=algorithm):
        y = _gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0)
        dy = rng.standard_normal(y.shape)
        dx, dw, db = _gemm.conv2d_backward(dy, x, wt, (1, 1), pad, True)

        def loss():
            return float((_gemm.conv2d(x, wt, b, (1, 1), pad, None, 0.0) * dy).sum())

        for arr, grad in ((x, dx), (wt, dw), (b, db)):
            np.testing.assert_allclose(grad, numerical_gradient(loss, arr), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("algorithm", WINOGRADS + ["auto"])
@pytest.mark.parametrize("where", ["x", "w", "dy"])
@pytest.mark.parametrize("position, threads", [("first", 1), ("last", 1), ("last", 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_inputs_fall_back_to_the_reference_pattern(algorithm, where, position, threads, dtype, rng):
    # Inside a Winograd tile inf - inf = NaN where the direct sum gives inf: such
    # inputs take the GEMM path and keep the reference's NaN/inf pattern, wherever
    # they lie (the first or the last image, one or two threads); "auto" takes
    # F(4x4) on this shape (16 -> 32 channels, 288 2x2 tiles a thread).
    from fastnn import _reference as R
    x, wt, _, pad = _inputs(rng, (8 * threads, 16, 12, 12, 32, (1, 1)), dtype)
    dy = rng.standard_normal((8 * threads, 32, 12, 12)).astype(dtype)
    target = {"x": x, "w": wt, "dy": dy}[where]
    spots = [5, 6, 40] if position == "first" else [-5, -6, -40]
    target.flat[spots[0]] = np.inf
    target.flat[spots[1]] = np.inf
    target.flat[spots[2]] = -np.inf
    with native_setting(threads=threads, conv_algorithm=algorithm), np.errstate(invalid="ignore", over="ignore"):
        got = (_gemm.conv2d(x, wt, None, (1, 1), pad, None, 0.0),) + tuple(
            _gemm.conv2d_backward(dy, x, wt, (1, 1), pad, True))
        want = (R.conv2d(x, wt, None, (1, 1), pad, None, 0.0),) + tuple(
            R.conv2d_backward(dy, x, wt, (1, 1), pad, True))
    # the finite entries within the op fuzz's tolerance (K: the longest sum, dW's)
    rtol, atol = (1e-10, 1e-10) if dtype == np.float64 else (1e-5, 4 * np.finfo(dtype).eps * x.shape[0] * 144)
    for g, r in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(r))
        fin = np.isfinite(r)
        np.testing.assert_allclose(g[fin], r[fin], rtol=rtol, atol=atol)


def _same_pattern_and_values(got, want, rtol, atol):
    for g, r in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(r))
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(r))
        fin = np.isfinite(r)
        np.testing.assert_allclose(g[fin], r[fin], rtol=rtol, atol=atol)


@pytest.mark.parametrize("algorithm", WINOGRADS)
@pytest.mark.parametrize("size", [(13, 11), (10, 14)])
@pytest.mark.parametrize("pad", [(0, 0), (1, 1), (2, 1)])
@pytest.mark.parametrize("where", ["x", "dy"])
def test_one_inf_anywhere_in_part_tiles_is_caught(algorithm, size, pad, where, rng):
    # The Winograd paths check their outputs, not their inputs: an inf must reach
    # an output they keep wherever it lies. 13 x 11 inputs: the last tiles stick
    # out of the image in both directions. 10 x 14 without padding: the image's
    # last row and column are the last of a tile's window, and such a value
    # reaches only the tile's last output row (or column). One inf gives the
    # direct sum +-inf and no NaN, which inf - inf inside a tile would break.
    from fastnn import _reference as R
    h, w = size
    x = rng.standard_normal((2, 3, h, w))
    wt = rng.standard_normal((4, 3, 3, 3))
    oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    dy = rng.standard_normal((2, 4, oh, ow))
    target = x if where == "x" else dy
    _, _, th, tw = target.shape
    for i, j in [(0, 0), (th - 1, tw - 1), (th - 1, 0), (0, tw - 1), (th - 2, tw - 2), (th // 2, tw - 1)]:
        spot = target.copy()
        spot[1, 2, i, j] = np.inf
        xs, dys = (spot, dy) if where == "x" else (x, spot)
        with native_setting(conv_algorithm=algorithm), np.errstate(invalid="ignore", over="ignore"):
            got = (_gemm.conv2d(xs, wt, None, (1, 1), pad, None, 0.0),) + tuple(
                _gemm.conv2d_backward(dys, xs, wt, (1, 1), pad, True))
            want = (R.conv2d(xs, wt, None, (1, 1), pad, None, 0.0),) + tuple(
                R.conv2d_backward(dys, xs, wt, (1, 1), pad, True))
        assert not np.isfinite(want[0] if where == "x" else want[1]).all()
        _same_pattern_and_values(got, want, 1e-10, 1e-10)


@pytest.mark.parametrize("algorithm", WINOGRADS + ["auto"])
@pytest.mark.parametrize("activation", [None, "sigmoid"])
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_transforms_that_overflow_take_another_path(algorithm, activation, isa, rng):
    # Finite float32 inputs near the top of the range: the input transforms add
    # up to 4 (F(2x2)) or scale by up to 25 (F(4x4)) and overflow to inf, where
    # the direct sums (small weights, small dy) stay below 1e38. The outputs are
    # checked before the activation, which would turn an inf into a finite 1.
    big = (rng.uniform(0.5, 1.0, (8, 16, 12, 12)) * 2e38).astype(np.float32)
    wt = (rng.standard_normal((32, 16, 3, 3)) * 1e-2).astype(np.float32)
    big_dy = (rng.uniform(0.5, 1.0, (8, 32, 12, 12)) * 2e38).astype(np.float32)
    small_dy = (rng.standard_normal((8, 32, 12, 12)) * 1e-4).astype(np.float32)
    # +-1.2e38 in a checkerboard: each tile of dy sums to 0 with no partial sum
    # past 2.4e38, so Winograd's db (the check that catches an inf in dy) is 0,
    # while the gradient's transform A dY A^T overflows (its alternating rows
    # add 4 values of one sign): only the check of dx itself sends the data
    # gradient elsewhere
    signs = np.where(np.add.outer(np.arange(12), np.arange(12)) % 2 == 0, 1, -1)
    checker_dy = np.ascontiguousarray(np.broadcast_to(1.2e38 * signs, (8, 32, 12, 12)), dtype=np.float32)
    small_x = rng.standard_normal((8, 16, 12, 12)).astype(np.float32)

    def run():
        return (_gemm.conv2d(big, wt, None, (1, 1), (1, 1), activation, 0.0),
                _gemm.conv2d_backward(big_dy, big * np.float32(1e-3), wt, (1, 1), (1, 1), True)[0],
                _gemm.conv2d_backward(small_dy, big, wt, (1, 1), (1, 1), False)[1],
                _gemm.conv2d_backward(checker_dy, small_x, wt, (1, 1), (1, 1), True)[0])

    with native_setting(isa, conv_algorithm=algorithm), np.errstate(over="ignore", invalid="ignore"):
        got = run()
    with native_setting(isa, conv_algorithm="gemm"):
        want = run()
    for i, (g, r) in enumerate(zip(got, want)):
        assert np.isfinite(r).all() and (np.abs(r).max() > 1e36 or i == 0 and activation)
        np.testing.assert_array_equal(g, r)


def test_auto_matches_the_numpy_backend_through_ops(rng):
    x = rng.standard_normal((5, 32, 11, 10)).astype(np.float32)
    wt = (rng.standard_normal((24, 32, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    dy = rng.standard_normal((5, 24, 11, 10)).astype(np.float32)
    y64, mag = conv_forward64(x, wt, b, (1, 1), (1, 1))
    rdx, rdw, rdb = conv_backward64(dy, x, wt, (1, 1), (1, 1))
    n, c, f, p = 5, 32, 24, 11 * 10
    for backend in ("native", "numpy"):
        with native_setting(conv_algorithm="auto"), fastnn.backend(backend):
            y = F.conv2d(x, wt, b, pad=1, activation="relu")
            dx, dw, db = F.conv2d_backward(dy, x, wt, pad=1)
        # each within float32's rounding of the terms summed (as the im2col tests above)
        check(y, np.maximum(y64, 0), np.abs(y64).max() + mag.max(), np.float32, 9 * c)
        check(dw, rdw, np.abs(rdw).max() + 3 * n * p, np.float32, n * p)
        check(db, rdb, n * p, np.float32, n * p)
        check(dx, rdx, np.abs(rdx).max() + 3 * f * 9 * c * 0.1, np.float32, 9 * f)


def test_set_conv_algorithm_validates_and_round_trips():
    old = fastnn.get_conv_algorithm()
    try:
        for name in ("gemm", "WINOGRAD", "Winograd4x4", "auto"):
            fastnn.set_conv_algorithm(name)
            assert fastnn.get_conv_algorithm() == name.lower()
            assert fastnn.config()["conv_algorithm"] == name.lower()
        with pytest.raises(ValueError, match="set_conv_algorithm.*'fft'"):
            fastnn.set_conv_algorithm("fft")
        with pytest.raises(ValueError, match="set_conv_algorithm"):
            fastnn.set_conv_algorithm(2)
    finally:
        fastnn.set_conv_algorithm(old)


def test_environment_variable_selects_the_algorithm():
    env = dict(os.environ, FASTNN_CONV_ALGORITHM="gemm")
    out = subprocess.run([sys.executable, "-c", "import fastnn; print(fastnn.get_conv_algorithm())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "gemm"


@pytest.mark.parametrize("algorithm", WINOGRADS)
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_conv_pool_on_winograd_equals_the_chain(algorithm, threads, rng):
    x = rng.standard_normal((6, 16, 10, 11)).astype(np.float32)
    wt = (rng.standard_normal((33, 16, 3, 3)) * 0.2).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    with native_setting(threads=threads, conv_algorithm=algorithm):
        y, arg = F.conv2d_max_pool2d(x, wt, b, pad=1, activation="relu")
        conv = F.conv2d(x, wt, b, pad=1, activation="relu")
        want_y, want_arg = F.max_pool2d(conv, 2, stride=2)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        got = F.conv2d_max_pool2d_backward(dy, arg, y, x, wt, pad=1, activation="relu")
        dh = F.max_pool2d_backward(F.relu_backward(dy, y), arg, conv.shape, 2)
        want = F.conv2d_backward(dh, x, wt, pad=1)
    np.testing.assert_array_equal(arg, want_arg)
    np.testing.assert_array_equal(y, want_y)
    for name, g, r in zip(("dx", "dW", "db"), got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6 * np.abs(r).max(), err_msg=name)


@st.composite
def winograd_cases(draw):
    """conv2d or conv2d_backward kwargs on a 3x3, stride-1 geometry (the rare case of the
    general fuzzing in test_fuzz.py), with NaN/Inf and memory layouts drawn as there."""
    n, c, f = draw(st.sampled_from([0, 1, 2, 3, 5])), draw(st.integers(1, 20)), draw(st.integers(1, 20))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h, w = draw(st.integers(max(1, 3 - 2 * ph), 13)), draw(st.integers(max(1, 3 - 2 * pw), 13))
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    x = draw_array(draw, (n, c, h, w), draw_dtype(draw))
    W = draw_array(draw, (f, c, 3, 3), draw_dtype(draw), specials=draw(st.booleans()))
    if draw(st.booleans()):
        b = draw_array(draw, (f,), x.dtype, specials=False)
        act = draw(st.sampled_from([None, "relu", "tanh", "elu"]))
        return "conv2d", dict(x=x, W=W, b=b, stride=1, pad=(ph, pw), activation=act), 9 * c
    dy = draw_array(draw, (n, f, oh, ow), draw_dtype(draw))
    rows = max(n * oh * ow, 1)
    return "conv2d_backward", dict(dy=dy, x=x, W=W, stride=1, pad=(ph, pw), need_dx=draw(st.booleans())), \
        (9 * f, rows, rows)


@pytest.mark.parametrize("algorithm", WINOGRADS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=winograd_cases())
def test_winograd_fuzz_against_the_numpy_backend(algorithm, case):
    name, kwargs, k = case
    with native_setting(conv_algorithm=algorithm):
        got = call(name, "native", kwargs)
    ref = call(name, "numpy", kwargs)
    assert got[0] == ref[0], (got[:2], ref[:2])
    if ref[0] != "ok":
        return
    ks = k if isinstance(k, tuple) else (k,) * len(ref[1])
    # The inputs each output is computed from: conv2d_backward's dx from dy and W
    # only (so its Winograd path runs even when x is not finite), dW from dy and x.
    sources = (("x", "W", "b"),) if name == "conv2d" else (("dy", "W"), ("dy", "x"), ("dy",))
    finite = [all(np.isfinite(kwargs[key]).all() for key in keys if isinstance(kwargs.get(key), np.ndarray))
              for keys in sources]
    mag = None
    for i, (g, r, kk) in enumerate(zip(got[1], ref[1], ks)):
        if r is None:
            assert g is None
            continue
        if algorithm == "winograd" or not finite[i]:
            # F(2x2, 3x3) stays within the elementwise tolerance of the direct sum;
            # outputs of non-finite inputs come from the GEMM paths
            assert_close((g,), (r,), kk, f"{name}: native ({algorithm}) vs numpy, output {i}")
            continue
        # F(4x4, 3x3) multiplies by up to 8 and 5 inside the transforms, so a float32
        # output near zero amid large terms carries more rounding than the direct sum:
        # bound it as the im2col tests above do, by the size of the terms summed
        if mag is None:
            absolute = {key: np.abs(v) if isinstance(v, np.ndarray) else v for key, v in kwargs.items()}
            if name == "conv2d":
                absolute["activation"] = None
            with np.errstate(invalid="ignore", over="ignore"):
                mag = call(name, "numpy", absolute)[1]
        assert g.shape == r.shape and g.dtype == r.dtype
        check(g, r.astype(np.float64), np.abs(r).max(initial=0) + np.abs(mag[i]).max(initial=0), r.dtype, kk)


@every_path
def test_conv_max_pool_pools_winograds_output_rows_in_cache(algorithm, isa, threads, dtype, rng):
    # conv2d_max_pool2d with 2x2 windows of stride 2 pools each block's output rows of
    # Winograd's (never writing the convolution's output): the same values and indices,
    # bit for bit, as max_pool2d of conv2d (the same convolution and window kernel), with
    # tile rows split between images and threads, odd output sizes (the last row or
    # column left out) and ReLU's ties (the first maximum of a window wins).
    with native_setting(isa, threads, conv_algorithm=algorithm):
        for geometry in GEOMETRIES:
            x, wt, b, pad = _inputs(rng, geometry, dtype)
            oh, ow = x.shape[2] + 2 * pad[0] - 2, x.shape[3] + 2 * pad[1] - 2
            if oh < 2 or ow < 2:
                continue
            assert _gemm.conv_max_pool_path(x.shape, wt.shape, (1, 1), pad, 2, 2, (2, 2), (0, 0), dtype) == "winograd"
            for act in (None, "relu"):
                pooled, argmax = F.conv2d_max_pool2d(x, wt, b, stride=1, pad=pad, activation=act, pool_h=2)
                want, want_argmax = F.max_pool2d(F.conv2d(x, wt, b, stride=1, pad=pad, activation=act), 2, 2, stride=2)
                assert pooled.dtype == dtype and argmax.dtype == np.int32
                np.testing.assert_array_equal(pooled, want)
                np.testing.assert_array_equal(argmax, want_argmax)


@pytest.mark.parametrize("pool, path", [((2, 2, (2, 2), (0, 0)), "winograd"), ((3, 3, (2, 2), (0, 0)), "separate"),
                                        ((2, 2, (1, 1), (0, 0)), "separate"), ((2, 2, (2, 2), (1, 1)), "separate")])
def test_conv_max_pool_takes_winograds_pooling_only_for_its_windows(pool, path, rng):
    # other windows: the convolution's output written, then pooled; the same answers
    x, wt, b, pad = _inputs(rng, (3, 8, 13, 11, 12, (1, 1)), np.float32)
    ph, pw, stride, ppad = pool
    with native_setting(threads=2, conv_algorithm="winograd4x4"):
        assert _gemm.conv_max_pool_path(x.shape, wt.shape, (1, 1), pad, ph, pw, stride, ppad, np.float32) == path
        pooled, argmax = F.conv2d_max_pool2d(x, wt, b, stride=1, pad=pad, activation="relu", pool_h=ph, pool_w=pw,
                                             pool_stride=stride, pool_pad=ppad)
        want, want_argmax = F.max_pool2d(F.conv2d(x, wt, b, stride=1, pad=pad, activation="relu"), ph, pw,
                                         stride=stride, pad=ppad)
    np.testing.assert_array_equal(pooled, want)
    np.testing.assert_array_equal(argmax, want_argmax)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_max_pool_with_non_finite_inputs_takes_the_direct_sum(threads, dtype, rng):
    # inf - inf inside a tile: the pooled Winograd path gives way to the ops one after the
    # other on the GEMM path, which keep the direct sum's inf and NaN
    x, wt, b, pad = _inputs(rng, (4 * threads, 16, 12, 12, 32, (1, 1)), dtype)
    x.flat[[7, 8]] = np.inf
    x.flat[-30] = -np.inf
    with native_setting(threads=threads, conv_algorithm="winograd4x4"), np.errstate(invalid="ignore", over="ignore"):
        pooled, argmax = F.conv2d_max_pool2d(x, wt, b, stride=1, pad=pad, pool_h=2)
        fastnn.set_conv_algorithm("gemm")
        want, want_argmax = F.max_pool2d(F.conv2d(x, wt, b, stride=1, pad=pad), 2, 2, stride=2)
    assert np.isinf(want).any() and np.isnan(want).any()
    np.testing.assert_array_equal(pooled, want)
    np.testing.assert_array_equal(argmax, want_argmax)


@every_path
def test_outputs_whose_window_is_all_zeros_are_exactly_the_directs(algorithm, isa, threads, dtype, rng):
    # the direct sum gives exactly 0 (then the bias and activation) where a 3x3 window is zero
    # in every channel; the transforms leave a residue there that a ReLU lets through (the
    # book's DeepConvNet on MNIST's empty borders took other bias gradients). Empty columns
    # and rows at the image edges, a zero image, zero patches inside tiles, one channel
    # nonzero at a single pixel.
    with native_setting(isa, threads, conv_algorithm=algorithm):
        for n, c, h, w, f, pad in [(3, 16, 14, 14, 8, (1, 1)), (2, 5, 11, 9, 7, (0, 2)), (4, 33, 8, 8, 40, (1, 1))]:
            x = rng.random((n, c, h, w)).astype(dtype)
            x[:, :, :, : w // 2] = 0
            x[:, :, : h // 3] = 0
            x[1] = 0
            x[-1, :, 2:6, 3:7] = 0
            x[0, :, h - 2, w - 2] = 0
            x[0, c // 2, h - 2, w - 2] = 1
            wt = rng.standard_normal((f, c, 3, 3)).astype(dtype)
            window_any = conv_forward64((x != 0).astype(np.float64), np.ones((1, c, 3, 3)), None, (1, 1), pad)[0] > 0
            b = rng.standard_normal(f).astype(dtype)
            for bias, act in ((None, None), (b, None), (b, "relu")):
                y = _gemm.conv2d(x, wt, bias, (1, 1), pad, act, 0.0)
                want = np.broadcast_to(np.zeros(f, dtype) if bias is None else bias, (n, *y.shape[2:], f))
                want = np.moveaxis(want, -1, 1)
                if act == "relu":
                    want = np.maximum(want, 0)
                empty = np.broadcast_to(~window_any, y.shape)
                assert empty.any() and (~empty).any()
                np.testing.assert_array_equal(y[empty], want[empty])
                # the pooled path too: zero windows tie, and the first element wins as in the direct sum
                pooled, argmax = F.conv2d_max_pool2d(x, wt, bias, stride=1, pad=pad, activation=act, pool_h=2)
                fastnn.set_conv_algorithm("gemm")
                direct_pooled, direct_argmax = F.max_pool2d(F.conv2d(x, wt, bias, stride=1, pad=pad,
                                                                     activation=act), 2, 2, stride=2)
                fastnn.set_conv_algorithm(algorithm)
                tied = np.broadcast_to(~(conv_forward64(window_any.astype(np.float64), np.ones((1, 1, 2, 2)), None,
                                                        (2, 2), (0, 0))[0] > 0), pooled.shape)
                np.testing.assert_array_equal(pooled[tied], direct_pooled[tied])
                np.testing.assert_array_equal(argmax[tied], direct_argmax[tied])
