"""No leaks (issue 8): tens of thousands of calls of each op, and of a training step,
keep memory flat.

Two measures, because they see different leaks:
- the resident set size (/proc/self/statm) sees everything, C allocations of the
  native kernels included: after a warm-up, up to 20,000 calls of an op (at most
  TIME_BUDGET seconds of them, but at least MIN_CALLS) may grow it by at most RSS_SLACK. Inputs are sized
  so that each call returns at least ~8 KB: a leaked output or workspace would add
  at least 4 MB (conv2d: 500 calls x 18 KB), far above the < 200 KiB measured without one;
- tracemalloc sees Python-level leaks (a growing cache, a reference cycle kept
  alive, a leaked NumPy array) precisely: a hundred or more calls may not grow the
  traced memory by more than TRACE_SLACK. Tracing starts before the warm-up calls, so
  that arrays a layer keeps from its last call (a cache that is replaced, not grown)
  are traced at both measurements.
"""
import gc
import os
import time
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import nn, ops
from conftest import requires_native
from helpers import with_layout

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")

BACKENDS = [pytest.param("numpy", id="numpy"), pytest.param("native", id="native", marks=requires_native)]
MAX_CALLS = 20_000
TIME_BUDGET = 0.2             # seconds of calls per op
MIN_CALLS = 500               # even a slow op is called this often
RSS_SLACK = 4 << 20           # measured growth without a leak: < 200 KiB
TRACE_CALLS = 60
TRACE_SLACK = 32 << 10        # measured growth without a leak: < 4 KiB
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def make_cases():
    rng = np.random.default_rng(7)
    x4 = rng.standard_normal((4, 3, 12, 12))
    W4 = rng.standard_normal((4, 3, 3, 3))
    b4 = rng.standard_normal(4)
    y4 = ops.conv2d(x4, W4, b4, 1, 1)
    dy4 = rng.standard_normal(y4.shape)
    col = ops.im2col(x4, 3, 3, 1, 1)
    pooled, argmax = ops.max_pool2d(x4, 2, 2, 2)
    dpool = rng.standard_normal(pooled.shape)
    a = rng.standard_normal((32, 32))
    b = rng.standard_normal((32, 32))
    v = rng.standard_normal(1024)
    pos = rng.uniform(0.01, 0.99, size=1024)
    labels = rng.integers(0, 32, size=32)
    rows = ops.softmax(b)
    gemm_out = with_layout(np.zeros((a.shape[1], b.shape[1])), "fortran")   # updated through a C-order copy
    gemm_square = rng.standard_normal((64, 64)) * 0.01
    yl = ops.linear(a, b, None, "sigmoid")
    state = {k: np.zeros(1024) for k in ("v", "h", "m", "s")}
    p = rng.standard_normal(1024)
    g = rng.standard_normal(1024) * 1e-3
    x_bn = rng.standard_normal((32, 64))
    bn_stats = (np.zeros(64), np.ones(64))
    _, bn_cache = ops.batch_norm_forward(x_bn, np.ones(64), np.zeros(64), *bn_stats)
    fused, fused_argmax = ops.conv2d_max_pool2d(x4, W4, b4, 1, 1, "relu", pool_h=2)
    dfused = rng.standard_normal(fused.shape)
    return {
        "matmul": lambda: ops.matmul(a, b),
        "gemm": lambda: ops.gemm(a, b, gemm_out, trans_a=True, alpha=0.5, beta=1.0),
        "gemm_new_array": lambda: ops.gemm(b, a, trans_a=True, trans_b=True),
        "gemm_overlapping": lambda: ops.gemm(gemm_square, gemm_square, gemm_square, trans_b=True, beta=-1.0),
        "linear": lambda: ops.linear(a, b, b[0], "relu"),
        "linear_backward": lambda: ops.linear_backward(a, a, b, "sigmoid", yl),
        "relu": lambda: ops.relu(v),
        "leaky_relu": lambda: ops.leaky_relu(v, 0.1),
        "elu": lambda: ops.elu(v),
        "sigmoid": lambda: ops.sigmoid(v),
        "tanh": lambda: ops.tanh(v),
        "softplus": lambda: ops.softplus(v),
        "step": lambda: ops.step(v),
        "identity": lambda: ops.identity(v),
        "relu_backward": lambda: ops.relu_backward(v, v),
        "leaky_relu_backward": lambda: ops.leaky_relu_backward(v, v, 0.1),
        "elu_backward": lambda: ops.elu_backward(v, v),
        "softplus_backward": lambda: ops.softplus_backward(v, v),
        "sigmoid_backward": lambda: ops.sigmoid_backward(v, pos),
        "tanh_backward": lambda: ops.tanh_backward(v, pos),
        "im2col": lambda: ops.im2col(x4, 3, 3, 1, 1),
        "col2im": lambda: ops.col2im(col, x4.shape, 3, 3, 1, 1),
        "conv2d": lambda: ops.conv2d(x4, W4, b4, 1, 1, "relu"),
        "conv2d_backward": lambda: ops.conv2d_backward(dy4, x4, W4, 1, 1),
        "max_pool2d": lambda: ops.max_pool2d(x4, 2, 2, 2),
        "max_pool2d_backward": lambda: ops.max_pool2d_backward(dpool, argmax, x4.shape, 2, 2, 2),
        "avg_pool2d": lambda: ops.avg_pool2d(x4, 2, 2, 1, 1),
        "avg_pool2d_backward": lambda: ops.avg_pool2d_backward(ops.avg_pool2d(x4, 2, 2, 1, 1), x4.shape,
                                                               2, 2, 1, 1),
        "softmax": lambda: ops.softmax(a),
        "log_softmax": lambda: ops.log_softmax(a),
        "softmax_cross_entropy": lambda: ops.softmax_cross_entropy(a, labels),
        "softmax_cross_entropy_rows": lambda: ops.softmax_cross_entropy(a, rows),
        "mean_squared_error": lambda: ops.mean_squared_error(v, pos),
        "sigmoid_binary_cross_entropy": lambda: ops.sigmoid_binary_cross_entropy(v, pos),
        "sgd_update": lambda: ops.sgd_update(p, g, 1e-3, 1e-4, 1e-5),
        "momentum_update": lambda: ops.momentum_update(p, g, state["v"], 1e-3),
        "nesterov_update": lambda: ops.nesterov_update(p, g, state["v"], 1e-3),
        "adagrad_update": lambda: ops.adagrad_update(p, g, state["h"], 1e-3),
        "rmsprop_update": lambda: ops.rmsprop_update(p, g, state["s"], 1e-3),
        "adam_update": lambda: ops.adam_update(p, g, state["m"], state["s"], 1e-3),
        "batch_norm_forward": lambda: ops.batch_norm_forward(x_bn, np.ones(64), np.zeros(64), *bn_stats),
        "batch_norm_backward": lambda: ops.batch_norm_backward(x_bn, bn_cache),
        "conv2d_max_pool2d": lambda: ops.conv2d_max_pool2d(x4, W4, b4, 1, 1, "relu", pool_h=2),
        "conv2d_max_pool2d_backward": lambda: ops.conv2d_max_pool2d_backward(dfused, fused_argmax, fused, x4, W4, 1, 1,
                                                                             "relu", pool_h=2),
        "invalid_argument": lambda: _raises(lambda: ops.conv2d(x4, W4[:, :2], b4)),
        "float32_promotion": lambda: ops.linear(a.astype(np.float32), b, None, "tanh"),
        "non_contiguous": lambda: ops.conv2d(x4[:, :, ::2, ::-1], W4, None, 1, 1),
    }


def _raises(fn):
    try:
        fn()
    except ValueError:
        return None
    raise AssertionError("expected ValueError")


CASES = make_cases()


def test_every_backend_op_is_called_for_leaks():
    """A new op in the backend contract must get a case here (GUARANTEES.md says "any op")."""
    from fastnn import _reference
    contract = {name for name in dir(_reference) if not name.startswith("_") and callable(getattr(_reference, name))
                and getattr(getattr(_reference, name), "__module__", "") == _reference.__name__}
    assert contract <= set(CASES), sorted(contract - set(CASES))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_keeps_rss_flat(backend, name):
    fn = CASES[name]
    with fastnn.backend(backend):
        for _ in range(200):  # warm-up: allocator pools, OpenMP threads, lazy imports
            fn()
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        calls = 0
        while calls < MAX_CALLS and (calls < MIN_CALLS or time.perf_counter() - start < TIME_BUDGET):
            fn()
            calls += 1
        gc.collect()
        growth = rss_bytes() - before
    assert growth <= RSS_SLACK, f"{name}: RSS grew by {growth / 2**20:.1f} MiB over {calls} calls"


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_leak_no_python_objects(backend):
    leaks = {}
    with fastnn.backend(backend):
        for name, fn in sorted(CASES.items()):
            tracemalloc.start()
            try:
                for _ in range(20):
                    fn()
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(TRACE_CALLS):
                    fn()
                gc.collect()
                growth = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            if growth > TRACE_SLACK:
                leaks[name] = growth
    assert not leaks, f"traced memory grew (bytes over {TRACE_CALLS} calls): {leaks}"


def _model(dtype="float64"):
    model = nn.Sequential([
        nn.Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.BatchNorm(),
        nn.Dense(16, activation="elu"),
        nn.Dropout(0.25),
        nn.Dense(3, activation="softmax"),
    ], dtype=dtype, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_steps_keep_memory_flat(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 1, 8, 8))
    t = rng.integers(0, 3, size=16)
    with fastnn.backend(backend):
        model = _model()
        tracemalloc.start()
        try:
            for _ in range(50):
                model.train_on_batch(x, t)
            gc.collect()
            before = rss_bytes()
            traced_before = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            steps = 0
            while steps < 10_000 and (steps < 150 or time.perf_counter() - start < 1.0):
                model.train_on_batch(x, t)
                steps += 1
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - traced_before
        finally:
            tracemalloc.stop()
        growth = rss_bytes() - before
    assert growth <= RSS_SLACK, f"RSS grew by {growth / 2**20:.1f} MiB over {steps} training steps"
    assert traced <= TRACE_SLACK, f"traced memory grew by {traced} bytes over {steps} training steps"


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_fit_keeps_memory_flat(backend):
    """fit itself (history, callbacks, progress bar, Ctrl-C handler) holds nothing per call."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 1, 8, 8))
    t = rng.integers(0, 3, size=32)
    with fastnn.backend(backend):
        model = _model()
        tracemalloc.start()
        try:
            for _ in range(5):
                model.fit(x, t, epochs=1, batch_size=8, verbose=0)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            rss_before = rss_bytes()
            for _ in range(30):
                model.fit(x, t, epochs=1, batch_size=8, verbose=0)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - before
            growth = rss_bytes() - rss_before
        finally:
            tracemalloc.stop()
    assert traced <= TRACE_SLACK, f"traced memory grew by {traced} bytes over 30 fits"
    assert growth <= RSS_SLACK, f"RSS grew by {growth / 2**20:.1f} MiB over 30 fits"


def test_failed_loads_leak_no_file_descriptors(tmp_path):
    """load_model on a bad file closes what it opened, every time."""
    good = tmp_path / "m.npz"
    _model().save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: len(data) // 2])
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(300):
        with pytest.raises(ValueError):
            nn.load_model(bad)
        nn.load_model(good)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds_before
