"""The GEMM engine (fastnn._gemm) against NumPy: every op/trans combination,
alpha/beta, strided sub-matrices, sizes around every register and cache block,
float32/float64, every compiled SIMD path, 1-3 threads; fused epilogues."""
import itertools

import numpy as np
import pytest

import fastnn
from fastnn import benchmarks as B
from fastnn import ops as F

from conftest import NATIVE, requires_native, requires_openmp
from helpers import native_setting

pytestmark = requires_native

if NATIVE:
    from fastnn import _gemm

ISAS = ("portable", "avx2", "avx512")
DTYPES = (np.float32, np.float64)
# the row panels the few-rows path (B read in place) takes, and whether on several
# threads: AVX2's indirect-B kernel is bound by its loads, so there only a few and on one;
# AVX-512's on Intel cores by its unaligned loads of B, so there as few (still threaded)
INTEL = B.cpu_info()["vendor"] == "GenuineIntel"
FEW_ROW_PANELS = {"portable": 16, "avx2": 4, "avx512": 4 if INTEL else 16}
FEW_ROWS_THREADED = {"portable": True, "avx2": False, "avx512": True}


def few_rows_split_by_rows(isa, m, mr):
    """whether several threads split m rows of a few-rows product (B in L2) by row panels"""
    return FEW_ROWS_THREADED[isa] and m <= FEW_ROW_PANELS[isa] * mr




def op(x, trans):
    return x.T if trans else x


def expected_and_bound(a, b, c0, ta, tb, alpha, beta):
    """float64 result and an elementwise forward-error bound of the float computation."""
    a64, b64 = op(a, ta).astype(np.float64), op(b, tb).astype(np.float64)
    k = a64.shape[1]
    eps = np.finfo(a.dtype).eps
    exact = alpha * (a64 @ b64)
    mag = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if c0 is not None and beta != 0:
        exact = exact + beta * c0.astype(np.float64)
        mag = mag + abs(beta) * np.abs(c0.astype(np.float64))
    return exact, 2 * (k + 3) * eps * mag + np.finfo(a.dtype).tiny


def assert_gemm_close(got, exact, bound):
    assert got.shape == exact.shape
    err = np.abs(got.astype(np.float64) - exact)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert np.all(err <= bound), f"error {err[worst]} > bound {bound[worst]} at {worst}"


def gemm_on_threads(isa, thread_counts, a, b, c0, ta, tb, alpha, beta):
    """_gemm.gemm on each thread count in turn (a NaN-filled C where beta = 0, which
    must not be read), each result within the forward-error bound, all the same bits."""
    m, n = c0.shape
    exact, bound = expected_and_bound(a, b, c0 if beta else None, ta, tb, alpha, beta)
    results = []
    for threads in thread_counts:
        c = c0.copy() if beta else np.full((m, n), np.nan, a.dtype)
        with native_setting(isa, threads):
            results.append(_gemm.gemm(a, b, c, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta))
        assert_gemm_close(results[-1], exact, bound)
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0], err_msg=f"{(m, n, ta, tb)} on {thread_counts} threads")


def strided(rng, shape, dtype, pad=3):
    """A random matrix that is a sub-matrix view: rows further apart than their length."""
    big = rng.standard_normal((shape[0] + 2, shape[1] + pad)).astype(dtype)
    return big[1:1 + shape[0], 2:2 + shape[1]]


def block_edge_sizes(isa, dtype):
    mr, nr = _gemm.tile_shape(ISAS.index(isa), dtype)
    mc, kc, nc = _gemm.block_sizes(ISAS.index(isa), dtype)
    return mr, nr, mc, kc, nc


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_transposes_alpha_beta_strided(isa, dtype, rng):
    mr, nr, _, _, _ = block_edge_sizes(isa, dtype)
    shapes = [(1, 1, 1), (3, 70, 40), (4, 300, 17), (5, 2 * nr + 1, 33), (mr + 1, nr - 1, 7),
              (2 * mr - 1, 2 * nr + 3, 13), (17, 29, 31),
              # right-edge tiles exactly at and just past half a tile (the half-width kernels)
              (mr + 3, nr + nr // 2, 19), (2 * mr, nr // 2 + 1, 23)]
    with native_setting(isa, 1):
        for (m, n, k), ta, tb, (alpha, beta) in itertools.product(
                shapes, (False, True), (False, True), [(1.0, 0.0), (-0.5, 1.0), (2.0, -3.0)]):
            a = strided(rng, (k, m) if ta else (m, k), dtype)
            b = strided(rng, (n, k) if tb else (k, n), dtype)
            c = strided(rng, (m, n), dtype)
            c0 = c.copy()
            exact, bound = expected_and_bound(a, b, c0, ta, tb, alpha, beta)
            out = _gemm.gemm(a, b, c, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
            assert out is c
            assert_gemm_close(c, exact, bound)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sizes_around_every_block(isa, dtype, rng):
    mr, nr, mc, kc, nc = block_edge_sizes(isa, dtype)
    ms = sorted({1, mr - 1, mr, mr + 1, 3 * mr + 2, mc - 1, mc + 1})
    ns = sorted({1, nr - 1, nr, nr + 1, nc - 1, nc + 1, 2 * nc + 5})
    ks = sorted({1, 2, 5, kc - 1, kc, kc + 1, 2 * kc + 3})
    cases = [(m, 3, 5) for m in ms] + [(5, n, 7) for n in ns] + [(mr + 1, nr + 1, k) for k in ks]
    cases += [(mc + 1, nc + 1, kc + 1), (0, 5, 3), (5, 0, 3), (4, 6, 0), (0, 0, 0)]
    with native_setting(isa, 1):
        for (m, n, k) in cases:
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            exact, bound = expected_and_bound(a, b, None, False, False, 1.0, 0.0)
            assert_gemm_close(_gemm.gemm(a, b), exact, bound)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_agree_and_repeat_exactly(threads, dtype, rng):
    # Each element of C is one thread's fixed-order sum, so the result is the
    # same bits at any thread count, and from run to run.
    # (100, 100, 500): split by rows, which balance better than 32-wide column panels
    # With B = N, up to 16 row panels read B in place on one thread (gemm_few_rows),
    # while more threads may take the driver's schedules: the same depth blocks,
    # edge columns included, so the same bits (100 x 50 by 784, 40 x 77, 33 x 20).
    shapes = [(301, 257, 413), (5, 1201, 97), (900, 7, 300), (64, 64, 64), (1100, 70, 45), (100, 100, 500),
              (100, 50, 784), (40, 77, 1000), (33, 20, 2000), (9, 40, 900)]
    for (m, n, k), tb in itertools.product(shapes, (True, False)):
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
        c0 = rng.standard_normal((m, n)).astype(dtype)
        with native_setting(threads=1):
            one = _gemm.gemm(a, b, c0.copy(), trans_b=tb, alpha=0.5, beta=-2.0)
        with native_setting(threads=threads):
            first = _gemm.gemm(a, b, c0.copy(), trans_b=tb, alpha=0.5, beta=-2.0)
            again = _gemm.gemm(a, b, c0.copy(), trans_b=tb, alpha=0.5, beta=-2.0)
        exact, bound = expected_and_bound(a, b, c0, False, tb, 0.5, -2.0)
        assert_gemm_close(first, exact, bound)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, one)


@requires_openmp
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_operand_schedule_is_exact_at_any_thread_count(isa, dtype, rng):
    # Products with one small operand run the shared-operand schedule on several
    # threads: each thread packs that operand whole and takes panels of the other
    # as it goes (from the back of another thread's share once its own is done).
    # Every tile is still one thread's fixed-order sum over all depth blocks, so
    # the bits equal one thread's however the panels fall; 8 threads on a small
    # machine make the threads run unevenly, so panels change hands.
    mr, nr, _, kc, _ = block_edge_sizes(isa, dtype)
    cases = [  # (m, n, k), the schedule on 2-4 threads
        ((24 * mr + 3, 2 * nr + 5, kc + 13), "shared_b"),  # rows; two depth blocks; edge tiles both ways
        ((3 * mr + 1, 30 * nr + 5, kc + 13), "shared_a"),  # columns (more rows than dot products take)
        ((100, 784, 50), "shared_a"),                      # both fit: the smaller copy (A)
        ((784, 50, 100), "shared_b"),
        ((3 * mr + 1, 24 * nr + nr // 2, 2 * kc + 50), "shared_a"),  # a half-width last panel; three blocks
    ]
    for (m, n, k), schedule in cases:
        for ta, tb, (alpha, beta) in [(False, False, (1.0, 0.0)), (True, True, (-0.5, 2.0)), (True, False, (2.0, -1.0))]:
            a = strided(rng, (k, m) if ta else (m, k), dtype)
            b = strided(rng, (n, k) if tb else (k, n), dtype)
            c0 = rng.standard_normal((m, n)).astype(dtype)
            with native_setting(isa, 1):
                one = _gemm.gemm(a, b, c0.copy(), trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
            exact, bound = expected_and_bound(a, b, c0, ta, tb, alpha, beta)
            assert_gemm_close(one, exact, bound)
            for threads in (2, 3, 4, 8):
                with native_setting(isa, threads):
                    if threads <= 4:   # with B = N and few rows, B is read in place instead
                        taken, on = _gemm.schedule(m, n, k, dtype, trans_b=True)
                        assert taken == schedule and 2 <= on <= threads, (m, n, k, threads, taken, on)
                    for _ in range(3):
                        got = _gemm.gemm(a, b, c0.copy(), trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
                        np.testing.assert_array_equal(got, one, err_msg=f"{(m, n, k)} on {threads} threads")
    # the fused epilogue (bias, activation) runs once per tile, after its last depth block
    x = rng.standard_normal((24 * mr + 3, kc + 13)).astype(dtype)
    W = rng.standard_normal((kc + 13, 2 * nr + 5)).astype(dtype)
    bias = rng.standard_normal(2 * nr + 5).astype(dtype)
    with native_setting(isa, 1):
        one = F.linear(x, W, bias, activation="tanh")
    with native_setting(isa, 3):
        assert _gemm.schedule(x.shape[0], W.shape[1], x.shape[1], dtype)[0] == "shared_b"
        np.testing.assert_array_equal(F.linear(x, W, bias, activation="tanh"), one)


@requires_openmp
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depth_split_gives_the_same_bits_at_every_thread_count(isa, dtype, rng):
    # A small C over a long depth, with neither operand small enough to share, sums 4
    # fixed slices of the depth (each into C or a partial of its own, packing only its
    # slice) and adds them in slice order: threads take whole slices, so 1-8 threads
    # (more than the slices; on 2 cores, so they run unevenly) give the same bits, from
    # run to run. Every transpose, alpha/beta, a NaN-filled C that beta = 0 must not
    # read, edge tiles both ways, a prime depth, the fused epilogue after the sum.
    # On the SIMD paths, with A = N, each slice also takes its depth of the last
    # n mod L columns (1 to L/4 of them, L a vector's lanes) as dot products, summed
    # with the others.
    mr, nr, _, kc, _ = block_edge_sizes(isa, dtype)
    lanes = (64 if isa == "avx512" else 32) // np.dtype(dtype).itemsize
    tails = [(45, 2 * lanes + r, 30011) for r in sorted({1, lanes // 4})]
    for m, n, k in [(100, 100, 4320), (2 * mr + 3, nr + 5, 20011), (45, 7, 30011)] + tails:
        with native_setting(isa, 2):
            assert _gemm.schedule(m, n, k, dtype) == ("split_k", 2), (m, n, k)
        for ta, tb, (alpha, beta) in [(False, False, (1.0, 0.0)), (True, True, (-0.5, 2.0)), (True, False, (2.0, 0.0)),
                                      (False, True, (1.0, -1.0))]:
            a = strided(rng, (k, m) if ta else (m, k), dtype)
            b = strided(rng, (n, k) if tb else (k, n), dtype)
            c0 = rng.standard_normal((m, n)).astype(dtype)
            # most first: no partial is left from a call before
            gemm_on_threads(isa, (3, 2, 8, 4, 1, 2), a, b, c0, ta, tb, alpha, beta)
    # the SimpleConvNet's 4320 -> 100 layer, and one with the last columns on every path
    for k, n in ((4320, 100), (9000, 2 * lanes + lanes // 4)):
        x = rng.standard_normal((100, k)).astype(dtype)
        W = rng.standard_normal((k, n)).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        with native_setting(isa, 2):
            assert _gemm.schedule(100, n, k, dtype) == ("split_k", 2), (k, n)
        exact, bound = expected_and_bound(x, W, None, False, False, 1.0, 0.0)
        eps = np.finfo(dtype).eps
        results = []
        for threads in (1, 2, 3):
            with native_setting(isa, threads):
                results.append(F.linear(x, W, bias, activation="relu"))
        assert_gemm_close(results[0], np.maximum(exact + bias, 0), bound + 4 * eps * np.abs(exact + bias))
        for got in results[1:]:
            np.testing.assert_array_equal(got, results[0])


@requires_openmp
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_few_rows_read_b_in_place(isa, dtype, rng):
    # 2 to 16 (AVX2: 4) MR-row panels of C with B = N: B's rows are read in place (no packing),
    # whole NR-wide panels, then the NR or NR/2 window that ends at column n, of
    # which only the new columns are kept. Every remainder width, both layouts of A,
    # alpha/beta, a C that must not be read when beta = 0, the fused epilogue,
    # and threads (panels split by work spans) giving the bits of one thread.
    mr, nr, _, kc, _ = block_edge_sizes(isa, dtype)
    widths = sorted({nr, nr + 1, nr + nr // 2 - 1, nr + nr // 2, nr + nr // 2 + 1, 2 * nr - 1, 3 * nr + 5})
    rows = FEW_ROW_PANELS[isa] * mr
    for m in sorted(set(range(2, mr + 1)) | {mr + 1, 2 * mr + 3, 4 * mr, rows}):
        for n in widths:
            k = 37 if n % 2 else 2 * kc + 5 if m > mr else 300   # several depth blocks
            for ta, (alpha, beta) in [(False, (1.0, 0.0)), (True, (-0.5, 2.0))]:
                a = strided(rng, (k, m) if ta else (m, k), dtype)
                b = strided(rng, (k, n), dtype)
                c0 = rng.standard_normal((m, n)).astype(dtype)
                c = c0.copy() if beta else np.full((m, n), np.nan, dtype)
                exact, bound = expected_and_bound(a, b, c0 if beta else None, ta, False, alpha, beta)
                with native_setting(isa, 1):
                    assert _gemm.schedule(m, n, k, dtype) == ("few_rows", 1)
                    got = _gemm.gemm(a, b, c, trans_a=ta, alpha=alpha, beta=beta)
                assert_gemm_close(got, exact, bound)
    # the epilogue, and a product large enough for threads
    x = rng.standard_normal((mr, 900)).astype(dtype)
    W = rng.standard_normal((900, 9 * nr + nr // 2 + 3)).astype(dtype)
    bias = rng.standard_normal(W.shape[1]).astype(dtype)
    exact, bound = expected_and_bound(x, W, None, False, False, 1.0, 0.0)
    with native_setting(isa, 1):
        one = F.linear(x, W, bias, activation="tanh")
    # tanh is 1-Lipschitz: the product's bound, plus the bias add and tanh's rounding
    eps = np.finfo(dtype).eps
    assert_gemm_close(one, np.tanh(exact + bias), bound + 8 * eps * (1 + np.abs(exact + bias)))
    for threads in (2, 3):
        with native_setting(isa, threads):
            np.testing.assert_array_equal(F.linear(x, W, bias, activation="tanh"), one)
    # Many row panels on several threads: each thread takes whole row panels (packing
    # its rows of op(A); B, in L2, read in place by all; with its rows of the last
    # columns on the SIMD paths), the last panel part; the bits of one thread.
    m = 13 * mr - 3
    for n, ta in itertools.product((nr + nr // 2 + 1, 3 * nr + 5), (False, True)):
        k = max(2 * kc + 5, 2_000_000 // (m * n))   # several depth blocks; enough work for 3
        assert k * n * np.dtype(dtype).itemsize <= 512 * 1024   # B in L2
        a = strided(rng, (k, m) if ta else (m, k), dtype)
        b = strided(rng, (k, n), dtype)
        c0 = rng.standard_normal((m, n)).astype(dtype)
        exact, bound = expected_and_bound(a, b, c0, ta, False, -0.5, 2.0)
        results = []
        for threads in (3, 2, 1):
            with native_setting(isa, threads):
                if few_rows_split_by_rows(isa, m, mr):   # (AVX2, and AVX-512 on Intel: the driver)
                    assert _gemm.schedule(m, n, k, dtype) == ("few_rows_by_rows" if threads > 1 else "few_rows",
                                                              threads)
                results.append(_gemm.gemm(a, b, c0.copy(), trans_a=ta, alpha=-0.5, beta=2.0))
            assert_gemm_close(results[-1], exact, bound)
        for got in results[1:]:
            np.testing.assert_array_equal(got, results[0], err_msg=f"{(m, n, k, ta)}")


@requires_openmp
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_row_products(isa, dtype, rng):
    # One row of C with B = N (batch-1 inference) keeps up to 8 (AVX-512) or 4
    # (AVX2) vectors of columns in registers per sweep over B's rows, even and odd
    # depth steps apart; the last vector is masked where n is not a whole number
    # of vectors. Every width around 1-9 vectors, odd and even depths, both
    # layouts of A, alpha/beta, a NaN-filled C that beta = 0 must not read, the
    # fused epilogue.
    lanes = 64 // np.dtype(dtype).itemsize
    widths = sorted({lanes, lanes + 1, 2 * lanes - 1, 3 * lanes + 2, 4 * lanes, 4 * lanes + 1, 9 * lanes - 3})
    for n in widths:
        for k in (1, 7, 300):
            for ta, (alpha, beta) in [(False, (1.0, 0.0)), (True, (-0.5, 2.0))]:
                a = strided(rng, (k, 1) if ta else (1, k), dtype)
                b = strided(rng, (k, n), dtype)
                c0 = rng.standard_normal((1, n)).astype(dtype)
                c = c0.copy() if beta else np.full((1, n), np.nan, dtype)
                exact, bound = expected_and_bound(a, b, c0 if beta else None, ta, False, alpha, beta)
                with native_setting(isa, 2):
                    assert _gemm.schedule(1, n, k, dtype) == ("one_row", 1)
                    got = _gemm.gemm(a, b, c, trans_a=ta, alpha=alpha, beta=beta)
                assert_gemm_close(got, exact, bound)
    # a wide row is split over the threads in 64-byte runs of columns: the same bits
    a = strided(rng, (1, 701), dtype)
    b = strided(rng, (701, 2003), dtype)
    exact, bound = expected_and_bound(a, b, None, False, False, 1.0, 0.0)
    results = []
    for threads in (1, 2, 3):
        with native_setting(isa, threads):
            assert _gemm.schedule(1, 2003, 701, dtype) == ("one_row", threads if isa != "portable" else 1)
            results.append(_gemm.gemm(a, b))
        assert_gemm_close(results[-1], exact, bound)
        np.testing.assert_array_equal(results[-1], results[0])
    x = rng.standard_normal((1, 784)).astype(dtype)
    W = rng.standard_normal((784, 50)).astype(dtype)
    bias = rng.standard_normal(50).astype(dtype)
    exact, bound = expected_and_bound(x, W, None, False, False, 1.0, 0.0)
    with native_setting(isa, 1):
        got = F.linear(x, W, bias, activation="relu")
    eps = np.finfo(dtype).eps
    assert_gemm_close(got, np.maximum(exact + bias, 0), bound + 4 * eps * np.abs(exact + bias))



@requires_openmp
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dot_products_of_few_rows(isa, dtype, rng):
    # With B = T, 1-16 rows of C on the SIMD paths are dot products of A's and B's
    # rows in tiles of up to 4 x 4 (AVX2: 2 x 4), each summed over L-lane partial
    # sums with a masked last part: every row count around the tile, column counts
    # around 4 and 64-byte runs, depths around the lanes, strided operands,
    # alpha/beta, a NaN-filled C that beta = 0 must not read; 1-3 threads (the
    # columns split in 64-byte runs) give the same bits.
    lanes = 64 // np.dtype(dtype).itemsize
    simd = isa != "portable"
    cases = [(1, 3, 5), (1, 37, 1), (2, 5, 96 + lanes + 3), (3, 21, 96), (4, 4, 100), (5, 19, 256),
             (7, 33, 2 * lanes + 1 + 256), (9, 70, 300), (16, 131, 257), (13, 1000, 333)]
    for (m, n, k) in cases:
        for alpha, beta in [(1.0, 0.0), (-0.5, 2.0)]:
            a = strided(rng, (m, k), dtype)
            b = strided(rng, (n, k), dtype)
            c0 = rng.standard_normal((m, n)).astype(dtype)
            exact, bound = expected_and_bound(a, b, c0 if beta else None, False, True, alpha, beta)
            results = []
            for threads in (1, 2, 3):
                c = c0.copy() if beta else np.full((m, n), np.nan, dtype)
                with native_setting(isa, threads):
                    path, on = _gemm.schedule(m, n, k, dtype, trans_b=True)
                    if simd:
                        assert path == "dots", (m, n, k, path)
                        units = -(-n * np.dtype(dtype).itemsize // 64)   # 64-byte runs of a row
                        assert on == max(1, min(threads, m * n * k // 2 ** 18, units // 2)), (m, n, k, threads, on)
                    got = _gemm.gemm(a, b, c, trans_b=True, alpha=alpha, beta=beta)
                assert_gemm_close(got, exact, bound)
                results.append(got)
            for got in results[1:]:
                np.testing.assert_array_equal(got, results[0])
    if simd:   # shallow products of more rows keep the packed driver
        with native_setting(isa, 1):
            assert _gemm.schedule(5, 64, 255, dtype, trans_b=True)[0] == "grid"
            assert _gemm.schedule(17, 64, 1000, dtype, trans_b=True)[0] == "grid"
            assert _gemm.schedule(4, 64, 95, dtype, trans_b=True)[0] == "grid"


@requires_openmp
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_last_columns_apart(isa, dtype, rng):
    # On the SIMD paths the last n mod L columns of C (L: a vector's lanes, up to L/4 of
    # them) are dot products of op(A)'s rows with those columns (A = N, from a depth of
    # 32) or GEMVs through A's rows (A = T, from a depth of 8, where A fits in L2 or C
    # has no other columns), the rest the usual paths. Every transpose, 1 to L/4 + 1
    # last columns after whole vectors or alone, depths around the thresholds, A above
    # L2, strided operands, alpha/beta, a NaN-filled C that beta = 0 must not read, the
    # fused epilogue; 1-3 threads give the same bits (the rows split over them; where
    # the threads take row panels, each its rows of the last columns too).
    lanes = (64 if isa == "avx512" else 32) // np.dtype(dtype).itemsize
    shapes = [(64, 7), (64, 8), (37, 31), (37, 32), (100, 300), (301, 70),
              (2003, 300), (512, 256), (91, 1500)]   # the last four: on 2-3 threads
    for r, (m, k), whole in itertools.product(sorted({1, 2, lanes // 4, lanes // 4 + 1}), shapes, (2, 0)):
        n = whole * lanes + r   # after whole vectors, or all of C
        if isa != "portable" and whole == 0 and 4 * r <= lanes and k >= 32:
            with native_setting(isa, 1):
                assert _gemm.schedule(m, n, k, dtype)[0] == "dots"
        if isa != "portable" and whole and (m, k) in ((91, 1500), (2003, 300)):
            with native_setting(isa, 2):   # row panels as the threads' units
                by_rows = m == 91 and few_rows_split_by_rows(isa, m, _gemm.tile_shape(ISAS.index(isa), dtype)[0])
                assert _gemm.schedule(m, n, k, dtype) == ("few_rows_by_rows" if by_rows else "shared_b", 2)
        for ta, tb in itertools.product((False, True), repeat=2):
            alpha, beta = (1.0, 0.0) if (ta + tb) % 2 == 0 else (-0.5, 2.0)
            a = strided(rng, (k, m) if ta else (m, k), dtype)
            b = strided(rng, (n, k) if tb else (k, n), dtype)
            c0 = rng.standard_normal((m, n)).astype(dtype)
            gemm_on_threads(isa, (3, 2, 1), a, b, c0, ta, tb, alpha, beta)   # most first: no part is left
    # the fused epilogue on the last columns: after the others (one thread), with each
    # row panel of the row split, with each unit of the shared-B schedule
    eps = np.finfo(dtype).eps
    for m, k in ((100, 300), (91, 1500), (600, 300)):
        x = rng.standard_normal((m, k)).astype(dtype)
        W = rng.standard_normal((k, 2 * lanes + lanes // 4)).astype(dtype)
        bias = rng.standard_normal(W.shape[1]).astype(dtype)
        exact, bound = expected_and_bound(x, W, None, False, False, 1.0, 0.0)
        results = []
        for threads in (3, 2, 1):
            with native_setting(isa, threads):
                results.append(F.linear(x, W, bias, activation="relu"))
            assert_gemm_close(results[-1], np.maximum(exact + bias, 0), bound + 4 * eps * np.abs(exact + bias))
        for got in results[1:]:
            np.testing.assert_array_equal(got, results[0])


@requires_openmp
@pytest.mark.parametrize("isa", ISAS)
def test_each_product_takes_its_path(isa):
    mr, nr = _gemm.tile_shape(ISAS.index(isa), np.float32)
    threaded = FEW_ROWS_THREADED[isa]
    most = FEW_ROW_PANELS[isa] * mr   # rows of the few-rows path
    panels13 = 12 * mr + 4   # 13 row panels (100 rows on AVX-512)
    with native_setting(isa, 2):
        assert _gemm.schedule(1024, 1024, 1024, np.float32) == ("grid", 2)   # no operand small enough
        # B in L2, read in place, the row panels split (AVX2: beyond its few rows)
        assert _gemm.schedule(panels13, 50, 784, np.float32) == (
            "few_rows_by_rows" if few_rows_split_by_rows(isa, panels13, mr) else "shared_b", 2)
        # B beyond L2 and a depth 43 times C's side: the depth split in 4 slices
        assert _gemm.schedule(100, 100, 4320, np.float32) == ("split_k", 2)
        assert _gemm.schedule(most + 1, 50, 784, np.float32) == ("shared_b", 2)
        assert _gemm.schedule(100, 784, 50, np.float32, trans_b=True) == ("shared_a", 2)
        assert _gemm.schedule(64, 64, 64, np.float32, trans_b=True) == ("grid", 1)   # too little for two
        # the columns split
        assert _gemm.schedule(4 * mr, 16 * nr, 512, np.float32) == ("few_rows" if threaded else "shared_a", 2)
        assert _gemm.schedule(4 * mr + 1, 16 * nr, 1024, np.float32) == ("shared_a", 2)   # rows: B beyond L2
        assert _gemm.schedule(1, 512, 784, np.float32) == ("one_row", 1)
    with native_setting(isa, 1):
        assert _gemm.schedule(100, 100, 4320, np.float32) == ("split_k", 1)   # the same slices, in turn
        assert _gemm.schedule(min(panels13, most), 50, 784, np.float32) == ("few_rows", 1)
        assert _gemm.schedule(most + 1, 50, 784, np.float32) == ("grid", 1)
        assert _gemm.schedule(100, 50, 784, np.float32, trans_b=True) == ("grid", 1)
        assert _gemm.schedule(100, nr - 1, 784, np.float32) == ("grid", 1)   # narrower than a panel
    with native_setting(isa, 65):   # more threads than the schedule keeps spans for
        assert _gemm.schedule(8000, 48, 64, np.float32) == ("grid", 65)


@pytest.mark.parametrize("isa", ISAS)
def test_beta_zero_never_reads_c_and_k_zero_scales(isa, rng):
    with native_setting(isa, 2):
        a = rng.standard_normal((9, 11)).astype(np.float32)
        b = rng.standard_normal((11, 37)).astype(np.float32)
        c = np.full((9, 37), np.nan, dtype=np.float32)
        _gemm.gemm(a, b, c, beta=0.0)
        assert np.all(np.isfinite(c))
        # k == 0: C = beta * C
        c = rng.standard_normal((4, 6))
        expected = 0.5 * c
        _gemm.gemm(np.empty((4, 0)), np.empty((0, 6)), c, alpha=3.0, beta=0.5)
        np.testing.assert_array_equal(c, expected)
        c = np.full((4, 6), np.nan)
        _gemm.gemm(np.empty((4, 0)), np.empty((0, 6)), c, beta=0.0)
        np.testing.assert_array_equal(c, np.zeros((4, 6)))


def test_nan_and_inf_propagate(rng):
    a = rng.standard_normal((20, 40))
    b = rng.standard_normal((40, 50))
    a[3, 7] = np.nan
    b[5, 11] = np.inf
    got = _gemm.gemm(a, b)
    with np.errstate(invalid="ignore"):
        want = a @ b
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_raw_gemm_rejects_bad_arguments():
    a32 = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="gemm"):
        _gemm.gemm(a32, np.ones((4, 2), np.float64))
    with pytest.raises(ValueError, match="gemm: inner dimensions"):
        _gemm.gemm(a32, np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="gemm"):
        _gemm.gemm(a32, np.ones((4, 2), np.float32), np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="gemm"):
        _gemm.gemm(np.ones((3, 4), np.int64), np.ones((4, 2), np.int64))
    with pytest.raises(ValueError, match="gemm"):
        _gemm.gemm(np.ones(3, np.float32), a32)
    with pytest.raises(TypeError, match="gemm"):
        _gemm.gemm(a32, np.ones((4, 2), np.float32), [[0.0] * 2] * 3)
    # a read-only c, and one over immutable bytes, are refused and left as they were
    c = np.zeros((3, 2), np.float32)
    c.setflags(write=False)
    blob = bytes(24)
    for ro in (c, np.frombuffer(blob, np.float32).reshape(3, 2)):
        with pytest.raises(TypeError, match="gemm: c is read-only"):
            _gemm.gemm(a32, np.ones((4, 2), np.float32), ro)
    assert not c.any() and blob == bytes(24)
    # c written while a or b is read gave a wrong product from 64 x 64 on
    square = np.ones((64, 64), np.float32)
    for a, b in ((square, square.copy()), (square.copy(), square)):
        with pytest.raises(ValueError, match="gemm: c shares memory with " + ("a" if a is square else "b")):
            _gemm.gemm(a, b, square)
    np.testing.assert_array_equal(square, 1)


def test_column_strided_inputs_are_copied_correctly(rng):
    a = rng.standard_normal((30, 40))[:, ::2]
    b = rng.standard_normal((20, 9))
    exact, bound = expected_and_bound(a, b, None, False, False, 1.0, 0.0)
    assert_gemm_close(_gemm.gemm(a, b), exact, bound)


# ---------------------------------------------------------------------------
# matmul / linear / linear_backward (the backend functions of docs/BACKEND.md)

ACTS = (None, "identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus")


def reference_activation(name, z, alpha):
    from fastnn import _reference as R
    if name in (None, "identity"):
        return z
    if name in ("leaky_relu", "elu"):
        return getattr(R, name)(z, alpha)
    return getattr(R, name)(z)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_fused_linear_equals_separate_ops(isa, dtype, act, rng):
    n, d, m = 37, 53, 70
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, m)).astype(dtype)
    b = rng.standard_normal((m,)).astype(dtype)
    with native_setting(isa, 2):
        fused = _gemm.linear(x, w, b, act, 0.2)
        pre = _gemm.matmul(x, w) + b
        nobias = _gemm.linear(x, w, None, act, 0.2)
    separate = reference_activation(act, pre, 0.2)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fused, separate, rtol=tol, atol=tol)
    np.testing.assert_allclose(nobias, reference_activation(act, _gemm.matmul(x, w), 0.2), rtol=tol, atol=tol)
    assert fused.dtype == dtype


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "elu", None])
def test_fused_activation_without_bias_keeps_a_minus_zero_sum(isa, dtype, act):
    # products that underflow leave sums of -0.0; with no bias nothing is added to
    # them (+0 would make them +0), so linear, conv2d and conv2d_max_pool2d with
    # a fused activation give the separate ops' bits
    small = np.sqrt(np.finfo(dtype).tiny) * np.finfo(dtype).eps   # small * small rounds to 0
    x = np.full((3, 2), -small, dtype)
    w = np.full((2, 5), small, dtype)
    img = np.full((2, 1, 6, 6), -small, dtype)
    filt = np.full((3, 1, 3, 3), small, dtype)
    def act_of(z):
        return z if act is None else F.activation(z, act)
    with native_setting(isa, 1, conv_algorithm="gemm"):
        z = F.linear(x, w)
        fused = F.linear(x, w, None, act)
        separate = act_of(z)
        conv = F.conv2d(img, filt)
        fused_conv = F.conv2d(img, filt, None, activation=act)
        pooled, arg = F.conv2d_max_pool2d(img, filt, None, activation=act)
        want_pooled, want_arg = F.max_pool2d(act_of(conv), 2)
    if isa != "portable":  # the SIMD paths' FMAs round each sum to -0.0
        assert np.signbit(z).all() and np.signbit(conv).all()
    np.testing.assert_array_equal(fused.view(f"i{fused.itemsize}"), separate.view(f"i{fused.itemsize}"))
    np.testing.assert_array_equal(fused_conv.view(f"i{fused.itemsize}"), act_of(conv).view(f"i{fused.itemsize}"))
    np.testing.assert_array_equal(pooled.view(f"i{fused.itemsize}"), want_pooled.view(f"i{fused.itemsize}"))
    np.testing.assert_array_equal(arg, want_arg)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "elu", "softplus", "leaky_relu"])
def test_fused_exp_activations_are_the_elementwise_ones(isa, act, rng):
    # float32 sigmoid, tanh, elu and softplus epilogues (linear and conv2d) run the
    # element-wise kernel on the biased rows, so fused and separate give the same
    # bits on every ISA; a NaN stays NaN, and the edges of an odd-sized tile go
    # through it too
    x = rng.standard_normal((37, 53)).astype(np.float32) * 4
    w = rng.standard_normal((53, 70)).astype(np.float32)
    b = rng.standard_normal((70,)).astype(np.float32)
    x[3, 5] = np.nan
    img = rng.standard_normal((3, 5, 9, 11)).astype(np.float32)
    wt = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    cb = rng.standard_normal((7,)).astype(np.float32)
    def separate_op(z):
        return getattr(F, act)(z, 0.7) if act in ("elu", "leaky_relu") else getattr(F, act)(z)
    with native_setting(isa, 2):
        fused = _gemm.linear(x, w, b, act, 0.7)
        separate = separate_op(_gemm.linear(x, w, b, None, 0.0))
        conv_fused = _gemm.conv2d(img, wt, cb, (1, 1), (1, 1), act, 0.7)
        conv_separate = separate_op(_gemm.conv2d(img, wt, cb, (1, 1), (1, 1), None, 0.0))
    np.testing.assert_array_equal(fused, separate)
    np.testing.assert_array_equal(conv_fused, conv_separate)
    assert np.isnan(fused[3]).all() and np.isfinite(np.delete(fused, 3, axis=0)).all()


@pytest.mark.parametrize("isa", ISAS)
def test_float32_tanh_within_3_ulp_of_float64(isa):
    # the vector tanh (AVX2, AVX-512): Taylor series under |x| = 0.5, (1 - e) / (1 + e)
    # with e = exp(-2|x|) above; both sides of the switch, tiny and subnormal
    # inputs, saturation, and the special values
    x = np.concatenate([np.linspace(-10, 10, 400001), np.geomspace(1e-30, 12, 20001),
                        -np.geomspace(1e-30, 12, 20001), [0.49999997, 0.5, 0.50000006, 1e-45, 9.0]]).astype(np.float32)
    with native_setting(isa, 1):
        got = F.tanh(x).astype(np.float64)
        special = F.tanh(np.array([np.inf, -np.inf, 0.0, -0.0, np.nan], np.float32))
    want = np.tanh(x.astype(np.float64))
    ulp = np.maximum(np.spacing(np.abs(want).astype(np.float32)).astype(np.float64),
                     np.finfo(np.float32).smallest_subnormal)
    assert np.max(np.abs(got - want) / ulp) <= 3.0
    np.testing.assert_array_equal(special[:4], [1.0, -1.0, 0.0, -0.0])
    assert not np.signbit(special[2]) and np.signbit(special[3]) and np.isnan(special[4])


@pytest.mark.parametrize("isa", ISAS)
def test_float32_elu_and_softplus_within_a_few_ulp_of_float64(isa, rng):
    # the vector expm1 (Taylor above -0.5, exp - 1 below) and log1p (2 atanh) of
    # AVX2 and AVX-512 against float64; softplus of x < -30 is exp(x) itself, where
    # the vector exp's range reduction costs up to 2.5 ulp more, as sigmoid's
    x = np.concatenate([np.linspace(-25, 25, 400001), -np.geomspace(1e-30, 100, 20001),
                        np.geomspace(1e-30, 80, 20001), [-0.5, -0.49999997, -0.50000006, -1e-45]]).astype(np.float32)
    x64 = x.astype(np.float64)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    with native_setting(isa, 1):
        got = {"elu": F.elu(x, 0.7), "softplus": F.softplus(x),
               "elu_backward": F.elu_backward(dy, x, 0.7), "softplus_backward": F.softplus_backward(dy, x)}
        special_x = np.array([np.inf, -np.inf, 0.0, -0.0, np.nan], np.float32)
        elu_special, softplus_special = F.elu(special_x, 0.7), F.softplus(special_x)
    want = {"elu": np.where(x64 > 0, x64, 0.7 * np.expm1(np.minimum(x64, 0))),
            "softplus": np.maximum(x64, 0) + np.log1p(np.exp(-np.abs(x64)))}
    for name, bound in (("elu", 3.0), ("softplus", 3.0)):
        ulp = np.maximum(np.spacing(np.abs(want[name]).astype(np.float32)).astype(np.float64),
                         np.finfo(np.float32).smallest_subnormal)
        err = np.abs(got[name].astype(np.float64) - want[name]) / ulp
        assert err[x > -30].max() <= bound, name
        assert err.max() <= bound + 2.5, name
    dy64 = dy.astype(np.float64)
    np.testing.assert_allclose(got["elu_backward"], np.where(x64 > 0, dy64, dy64 * 0.7 * np.exp(np.minimum(x64, 0))),
                               rtol=4e-7, atol=1e-37)
    np.testing.assert_allclose(got["softplus_backward"], dy64 / (1 + np.exp(-x64)), rtol=4e-7, atol=1e-37)
    np.testing.assert_array_equal(elu_special[:4], np.array([np.inf, -0.7, 0.0, -0.0], np.float32))
    np.testing.assert_array_equal(softplus_special[:2], [np.inf, 0.0])
    assert np.signbit(elu_special[3]) and np.isnan(elu_special[4]) and np.isnan(softplus_special[4])
    assert softplus_special[2] == softplus_special[3] == np.float32(np.log(2))


def _linear_grad_scales(dy, x, w):
    """The size of the terms linear_backward's dx, dW and db each sum: dz = dy times the
    activation's derivative (at most 1 for these activations) times w or x."""
    n, m = x.shape[0], w.shape[1]
    big_dz = float(np.abs(dy).max())
    return [m * big_dz * float(np.abs(w).max()), n * big_dz * float(np.abs(x).max()), n * big_dz]


def _close_to_reference(got, want, scale, dtype):
    """Within the dtype (rtol 1e-5 or 1e-10) and a few roundings of the terms summed."""
    rtol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=rtol, atol=4 * np.finfo(dtype).eps * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_linear_backward_against_formulas(dtype, act, rng):
    from fastnn import _reference as R
    n, d, m = 19, 41, 23
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, m)).astype(dtype)
    b = rng.standard_normal((m,)).astype(dtype)
    y = _gemm.linear(x, w, b, act, 0.1)
    dy = rng.standard_normal((n, m)).astype(dtype)
    yy = None if act in (None, "identity") else y
    dx, dw, db = _gemm.linear_backward(dy, x, w, act, 0.1, yy)
    rdx, rdw, rdb = R.linear_backward(dy, x, w, act, 0.1, yy)
    for got, want, scale in zip((dx, dw, db), (rdx, rdw, rdb), _linear_grad_scales(dy, x, w)):
        assert got.dtype == dtype
        _close_to_reference(got, want, scale, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", [a for a in ACTS if a not in (None, "identity")])
def test_fused_activation_gradient_in_pieces_over_threads(isa, act, rng):
    # 41 x 1601 outputs: past the size where the activation's derivative is split
    # over the threads, and not a multiple of its pieces (16384 elements)
    from fastnn import _reference as R
    n, d, m = 41, 7, 1601
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, m)).astype(np.float32)
    dy = rng.standard_normal((n, m)).astype(np.float32)
    y = _gemm.linear(x, w, None, act, 0.1)
    with native_setting(isa, 1):
        one = _gemm.linear_backward(dy, x, w, act, 0.1, y)
    with native_setting(isa, 3):
        three = _gemm.linear_backward(dy, x, w, act, 0.1, y)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)
    want = R.linear_backward(dy, x, w, act, 0.1, y)
    for got, ref, scale in zip(three, want, _linear_grad_scales(dy, x, w)):
        _close_to_reference(got, ref, scale, np.float32)


def test_linear_backward_numerical_gradient(rng):
    n, d, m = 4, 5, 3
    x = rng.standard_normal((n, d))
    w = rng.standard_normal((d, m))
    b = rng.standard_normal((m,))
    dy = rng.standard_normal((n, m))

    def loss(x_, w_, b_):
        return float((_gemm.linear(x_, w_, b_, "tanh", 0.0) * dy).sum())

    y = _gemm.linear(x, w, b, "tanh", 0.0)
    dx, dw, db = _gemm.linear_backward(dy, x, w, "tanh", 0.0, y)
    h = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + h
            up = loss(x, w, b)
            arr[idx] = old - h
            down = loss(x, w, b)
            arr[idx] = old
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_matmul_empty_and_vector_shapes(rng):
    for m, k, n in [(0, 3, 4), (3, 0, 4), (1, 1, 1), (1, 300, 1)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        got = _gemm.matmul(a, b)
        assert got.shape == (m, n) and got.dtype == np.float32
        exact, bound = expected_and_bound(a, b, None, False, False, 1.0, 0.0)
        assert_gemm_close(got, exact, bound)


def test_ops_route_to_native_gemm(rng):
    from fastnn import ops as F
    x = rng.standard_normal((8, 12)).astype(np.float32)
    w = rng.standard_normal((12, 5)).astype(np.float32)
    with fastnn.backend("native"):
        got = F.linear(x, w, None, activation="relu")
    np.testing.assert_allclose(got, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)


def test_read_only_inputs_and_nan_through_fused_relu(rng):
    x = rng.standard_normal((6, 5)).astype(np.float32)
    w = rng.standard_normal((5, 40)).astype(np.float32)
    x[2, 3] = np.nan
    x.setflags(write=False)
    w.setflags(write=False)
    y = _gemm.linear(x, w, None, "relu", 0.0)
    assert np.all(np.isnan(y[2])) and not np.any(np.isnan(np.delete(y, 2, axis=0)))
    dx, dw, db = _gemm.linear_backward(np.ones_like(y), x, w, "relu", 0.0, y)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (40,)
    c = _gemm.gemm(x, w)
    assert np.isnan(c[2]).all()
