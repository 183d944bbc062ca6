"""GEMM, linear, convolution, batch-normalisation and pooling benchmarks: fastnn against
NumPy (its BLAS, or the reference backend) and (when installed) PyTorch, at the
same thread count, in one run.

    PYTHONPATH=$PWD python3 -m pytest bench/test_bench_gemm.py --benchmark-columns=min,median,rounds
    ... -k "sgemm and t1"            # a subset

Each pytest-benchmark group is one workload at one thread count, so the table
of a group gives the ratios between implementations measured side by side. Every
case runs at 1 and at 2 threads, or only at the count --threads N (or
$FASTNN_BENCH_THREADS) gives.
NumPy's BLAS is limited with threadpoolctl, PyTorch with torch.set_num_threads.
"""
import numpy as np
import pytest

import fastnn
from fastnn import _reference as R
from fastnn import benchmarks as B

pytest.importorskip("pytest_benchmark")
threadpoolctl = pytest.importorskip("threadpoolctl")

try:
    import torch
except ImportError:  # optional
    torch = None

NATIVE = fastnn.config()["native_available"]
pytestmark = pytest.mark.skipif(not NATIVE, reason="native extension not built")
if NATIVE:
    from fastnn import _gemm

IMPLS = ("fastnn", "numpy", "torch")

GEMMS = {
    "sgemm1024": (np.float32, 1024),
    "sgemm2048": (np.float32, 2048),
    "dgemm1024": (np.float64, 1024),
    "dgemm2048": (np.float64, 2048),
}
# (x shape, W shape, stride, pad): the convolutions of docs/GEMM.md (C, D, E), and two
# stride-2 layers of ResNet-style networks (a downsampling 3x3 and the 7x7 stem)
CONVS = {
    "convC": ((100, 1, 28, 28), (30, 1, 5, 5), 1, 0),
    "convD": ((64, 16, 28, 28), (32, 16, 3, 3), 1, 1),
    "convE": ((32, 64, 32, 32), (64, 64, 3, 3), 1, 1),
    "conv3x3s2": ((32, 64, 56, 56), (128, 64, 3, 3), 2, 1),
    "conv7x7s2": ((32, 3, 112, 112), (64, 3, 7, 7), 2, 3),
}
SLOW_CONVS = ("convE", "conv3x3s2", "conv7x7s2")


def pytest_generate_tests(metafunc):
    # 1 and 2 threads in turn, or the one count given with --threads / $FASTNN_BENCH_THREADS
    if "threads" in metafunc.fixturenames:
        config = metafunc.config
        counts = [config._fastnn_bench_threads] if config._fastnn_bench_threads_given else [1, 2]
        metafunc.parametrize("threads", counts, ids=lambda n: f"t{n}", indirect=True)


@pytest.fixture
def threads(request):
    old = fastnn.get_num_threads()
    fastnn.set_num_threads(request.param)
    if torch is not None:
        old_torch = torch.get_num_threads()
        torch.set_num_threads(request.param)
    with threadpoolctl.threadpool_limits(request.param):
        yield request.param
    fastnn.set_num_threads(old)
    if torch is not None:
        torch.set_num_threads(old_torch)


def check(fn, want, dtype=np.float32):
    """Run fn once and compare its results with ``want`` (float64, computed by the test) before
    anything is timed: a benchmark of a wrong answer, or of another dtype than the row's,
    fails. float32 tolerance, relative to each result's largest magnitude (sums of up to a
    few thousand terms)."""
    got = fn()
    got = got if isinstance(got, (tuple, list)) else (got,)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g = g.detach().numpy() if hasattr(g, "detach") else np.asarray(g)
        assert g.shape == w.shape, (i, g.shape, w.shape)
        assert g.dtype == dtype, (i, g.dtype, dtype)
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(w).max(initial=0))),
                                   err_msg=f"result {i}")


def run(benchmark, group, fn, rounds, want=None, dtype=np.float32):
    if want is not None:
        check(fn, want, dtype)
    benchmark.group = group
    # the implementation timed before may leave spinning threads (a 2-thread dgemm 1024 took
    # 26.6 ms right after torch's turn, 24.4 alone)
    B.let_idle_threads_settle(fastnn.get_num_threads())
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def need(impl):
    if impl == "torch" and torch is None:
        pytest.skip("PyTorch not installed")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(GEMMS))
def test_gemm(benchmark, threads, impl, name):
    need(impl)
    dtype, n = GEMMS[name]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    if impl == "fastnn":
        fn = lambda: _gemm.matmul(a, b)  # noqa: E731
    elif impl == "numpy":
        fn = lambda: a @ b  # noqa: E731
    else:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        fn = lambda: torch.mm(ta, tb)  # noqa: E731
    run(benchmark, f"{name} t{threads}", fn, rounds=7 if n <= 1024 else 4,
        want=(a.astype(np.float64) @ b.astype(np.float64),), dtype=dtype)
    if benchmark.stats is not None:  # None with --benchmark-disable (a run that only checks the results)
        benchmark.extra_info["gflops"] = 2 * n**3 / benchmark.stats.stats.min / 1e9


def affine_step(impl, n, d, m):
    """One forward + backward of an Affine layer x (n, d) @ W (d, m) + b, float32, for
    `impl`: fastnn.ops (its Python overhead included, as a user sees it), NumPy on its
    BLAS, or torch autograd; and the float64 (dx, dW, db) it must give."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = (rng.standard_normal((d, m)) * 0.05).astype(np.float32)
    b = np.zeros(m, np.float32)
    dy = rng.standard_normal((n, m)).astype(np.float32)
    if impl == "fastnn":
        def fn():
            fastnn.ops.linear(x, w, b)
            return fastnn.ops.linear_backward(dy, x, w)
    elif impl == "numpy":
        def fn():
            x @ w + b
            return dy @ w.T, x.T @ dy, dy.sum(axis=0)
    else:
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tb = torch.from_numpy(b).requires_grad_()
        tdy = torch.from_numpy(dy)

        def fn():
            tx.grad = tw.grad = tb.grad = None
            (tx @ tw + tb).backward(tdy)
            return tx.grad, tw.grad, tb.grad
    # other names: fn reads x, w and dy when it runs, so rebinding them would time float64
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    return fn, (dy64 @ w64.T, x64.T @ dy64, dy64.sum(axis=0))


@pytest.mark.parametrize("impl", IMPLS)
def test_affine_forward_backward(benchmark, threads, impl):
    need(impl)
    fn, want = affine_step(impl, 128, 784, 512)
    run(benchmark, f"affine128x784x512 t{threads}", fn, rounds=30, want=want)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(100, 4320, 100), (256, 1024, 1024)], ids=lambda s: "x".join(map(str, s)))
def test_transposed_view_products(benchmark, threads, impl, shape):
    """The book's Affine.backward written with fastnn.ops.matmul on transposed views,
    dout @ W.T and x.T @ dout: read in place (op = T) where that gives the C copy's
    bits, else copied to C order by a blocked transpose (NumPy's strided copy of a
    1024 x 1024 transposed view took twice the product)."""
    need(impl)
    n, d, m = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, m)).astype(np.float32)
    dout = rng.standard_normal((n, m)).astype(np.float32)
    if impl == "fastnn":
        fn = lambda: (fastnn.ops.matmul(dout, w.T), fastnn.ops.matmul(x.T, dout))  # noqa: E731
    elif impl == "numpy":
        fn = lambda: (dout @ w.T, x.T @ dout)  # noqa: E731
    else:
        tx, tw, tdout = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(dout)
        fn = lambda: (tdout @ tw.T, tx.T @ tdout)  # noqa: E731
    x64, w64, dout64 = (a.astype(np.float64) for a in (x, w, dout))  # fn reads x, w and dout when it runs
    run(benchmark, f"transposed views {n}x{d}x{m} t{threads}", fn, rounds=15, want=(dout64 @ w64.T, x64.T @ dout64))


# Small batches (issue 4: batch 1-16 inference without packing overhead dominating):
# the forward runs the one-row GEMV (batch 1) or reads W in place (few rows), the
# input gradient dy @ W^T the dot-product path.
SMALL_BATCHES = (1, 4, 16)
SMALL_LAYERS = {"784x50": (784, 50), "784x512": (784, 512)}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layer", list(SMALL_LAYERS))
@pytest.mark.parametrize("batch", SMALL_BATCHES, ids=lambda n: f"batch{n}")
def test_affine_small_batch(benchmark, threads, impl, layer, batch):
    need(impl)
    d, m = SMALL_LAYERS[layer]
    fn, want = affine_step(impl, batch, d, m)
    run(benchmark, f"affine batch {batch} x {layer} t{threads}", fn, rounds=200, want=want)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CONVS))
def test_conv_forward_backward(benchmark, threads, impl, name):
    """Forward + backward including the input gradient (as the book's layer computes it)."""
    need(impl)
    xs, ws, step, pad = CONVS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
    b = np.zeros(ws[0], np.float32)
    stride, padding = (step, step), (pad, pad)
    y = _gemm.conv2d(x, w, b, stride, padding, None, 0.0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    if impl == "fastnn":
        def fn():
            _gemm.conv2d(x, w, b, stride, padding, None, 0.0)
            return _gemm.conv2d_backward(dy, x, w, stride, padding, True)
    elif impl == "numpy":
        def fn():
            R.conv2d(x, w, b, stride, padding, None, 0.0)
            return R.conv2d_backward(dy, x, w, stride, padding, True)
    else:
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tb = torch.from_numpy(b).requires_grad_()
        tdy = torch.from_numpy(dy)

        def fn():
            tx.grad = tw.grad = tb.grad = None
            torch.nn.functional.conv2d(tx, tw, tb, stride=step, padding=pad).backward(tdy)
            return tx.grad, tw.grad, tb.grad
    want = R.conv2d_backward(*(a.astype(np.float64) for a in (dy, x, w)), stride, padding, True)
    run(benchmark, f"{name} t{threads}", fn, rounds=5 if name in SLOW_CONVS or impl == "numpy" else 10, want=want)


# Batch normalisation, forward + backward in training, float32: per channel after
# conv C of the SimpleConvNet and after the `fastnn train` CNN's first convolution
# (BatchNorm2d), per feature on the book's hidden layer (BatchNormalization).
BATCH_NORMS = {
    "bn2d100x30x24x24": ((100, 30, 24, 24), True),
    "bn2d32x32x8x8": ((32, 32, 8, 8), True),
    "bn100x100": ((100, 100), False),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(BATCH_NORMS))
def test_batch_norm_forward_backward(benchmark, threads, impl, name):
    need(impl)
    shape, per_channel = BATCH_NORMS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    d = shape[1] if per_channel else int(np.prod(shape[1:]))
    gamma, beta = np.ones(d, np.float32), np.zeros(d, np.float32)
    running_mean, running_var = np.zeros(d, np.float32), np.ones(d, np.float32)
    if impl == "torch":
        tx = torch.from_numpy(x).requires_grad_()
        tg = torch.from_numpy(gamma).requires_grad_()
        tb = torch.from_numpy(beta).requires_grad_()
        tm, tv, tdy = torch.from_numpy(running_mean), torch.from_numpy(running_var), torch.from_numpy(dy)

        def fn():
            tx.grad = tg.grad = tb.grad = None
            torch.nn.functional.batch_norm(tx, tm, tv, tg, tb, training=True, momentum=0.1,
                                           eps=1e-7).backward(tdy)
            return tx.grad, tg.grad, tb.grad
    else:
        backend = "native" if impl == "fastnn" else "numpy"

        def fn():
            with fastnn.backend(backend):
                out, cache = fastnn.ops.batch_norm_forward(x, gamma, beta, running_mean, running_var,
                                                           per_channel=per_channel)
                return fastnn.ops.batch_norm_backward(dy, cache)
    with fastnn.backend("numpy"):
        _, cache = fastnn.ops.batch_norm_forward(x.astype(np.float64), gamma.astype(np.float64),
                                                 beta.astype(np.float64), np.zeros(d), np.ones(d),
                                                 per_channel=per_channel)
        want = fastnn.ops.batch_norm_backward(dy.astype(np.float64), cache)
    run(benchmark, f"{name} t{threads}", fn, rounds=30, want=want)


# Max pooling windows other than 2x2 stride 2 (workload F), forward + backward: the
# ResNet stem's 3x3 stride 2 pad 1, and a 3x3 stride-1 pad-1 one (Inception-style)
POOLS = {
    "pool3x3s2p1": ((32, 64, 56, 56), 3, 2, 1),
    "pool3x3s1p1": ((32, 64, 28, 28), 3, 1, 1),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(POOLS))
def test_max_pool_forward_backward(benchmark, threads, impl, name):
    need(impl)
    shape, k, step, pad = POOLS[name]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if impl == "torch":
        tx = torch.from_numpy(x).requires_grad_()

        def fn():
            tx.grad = None
            y = torch.nn.functional.max_pool2d(tx, k, step, pad)
            y.backward(y.detach())
            return tx.grad
    else:
        backend = "native" if impl == "fastnn" else "numpy"

        def fn():
            with fastnn.backend(backend):
                y, argmax = fastnn.ops.max_pool2d(x, k, stride=step, pad=pad)
                return fastnn.ops.max_pool2d_backward(y, argmax, x.shape, k, stride=step, pad=pad)
    with fastnn.backend("numpy"):
        y, argmax = fastnn.ops.max_pool2d(x.astype(np.float64), k, stride=step, pad=pad)
        want = (fastnn.ops.max_pool2d_backward(y, argmax, x.shape, k, stride=step, pad=pad),)
    run(benchmark, f"{name} t{threads}", fn, rounds=5 if impl == "numpy" else 20, want=want)
