"""Concurrency (issue 8): many Python threads calling ops, and training separate models,
at the same time get exactly the results of running the same work one after another.

The native kernels release the GIL, so on the native backend these threads really
run kernels at once; a kernel with global mutable state (a shared scratch buffer, a
static cache, a non-thread-safe RNG) would corrupt a neighbour's result. Results
are compared bit for bit: the kernels are deterministic for a given thread count,
which no test here changes.
"""
import threading

import numpy as np
import pytest

import fastnn
from fastnn import nn, ops
from conftest import NATIVE, requires_native

BACKENDS = [pytest.param("numpy", id="numpy"), pytest.param("native", id="native", marks=requires_native)]
N_THREADS = 8
ROUNDS = 6


def workload(seed, dtype):
    """A mix of ops of one imaginary training step, with inputs drawn from `seed`;
    returns every result as a flat list of arrays and floats."""
    rng = np.random.default_rng(seed)
    n, c, h, w = 3, 2, 9 + seed % 3, 8
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((4, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out = []
    y = ops.conv2d(x, W, b, stride=1, pad=1, activation="relu")
    p, argmax = ops.max_pool2d(y, 2, 2, stride=2)
    flat = p.reshape(n, -1)
    W2 = rng.standard_normal((flat.shape[1], 5)).astype(dtype)
    z = ops.linear(flat, W2, None, "tanh")
    labels = rng.integers(0, 5, size=n)
    loss, dz = ops.softmax_cross_entropy(z, labels)
    dflat, dW2, db2 = ops.linear_backward(dz, flat, W2, "tanh", z)
    dp = dflat.reshape(p.shape)
    dy = ops.max_pool2d_backward(dp, argmax, y.shape, 2, 2, stride=2)
    dy = ops.relu_backward(dy, y)
    dx, dW, db = ops.conv2d_backward(dy, x, W, stride=1, pad=1)
    gamma, beta = rng.uniform(0.5, 2, 4).astype(dtype), rng.standard_normal(4).astype(dtype)
    running = [np.zeros(4, dtype), np.ones(4, dtype)]
    bn, cache = ops.batch_norm_forward(y, gamma, beta, *running, per_channel=True)
    dbn, dgamma, dbeta = ops.batch_norm_backward(y, cache)
    col = ops.im2col(x, 3, 2, stride=(2, 1), pad=(1, 0))
    back = ops.col2im(col, x.shape, 3, 2, stride=(2, 1), pad=(1, 0))
    a = ops.avg_pool2d(x, 3, 2, stride=1, pad=1)
    da = ops.avg_pool2d_backward(a, x.shape, 3, 2, stride=1, pad=1)
    m = ops.matmul(rng.standard_normal((17, 31)).astype(dtype), rng.standard_normal((31, 13)).astype(dtype))
    s = ops.log_softmax(m, axis=0)
    sm = ops.softmax(m)
    acts = [ops.sigmoid(m), ops.softplus(m), ops.elu(m, 0.5), ops.leaky_relu(m, 0.1)]
    params = W.copy()
    vel, mom, sq = np.zeros_like(W), np.zeros_like(W), np.zeros_like(W)
    for _ in range(3):
        ops.momentum_update(params, dW, vel, 0.01)
        ops.adam_update(params, dW, mom, sq, 0.001)
    out += [y, p, argmax, z, loss, dz, dflat, dW2, db2, dy, dx, dW, db, bn, *running, dbn, dgamma, dbeta, col,
            back, a, da, m, s, sm, *acts, params, vel, mom, sq]
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, float):
            assert u == v or (u != u and v != v)
        else:
            assert u.dtype == v.dtype and u.shape == v.shape
            np.testing.assert_array_equal(u, v)


def run_threads(targets):
    """Start every target at once (a barrier) and re-raise the first failure."""
    errors = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn):
        def run():
            try:
                barrier.wait()
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_calling_ops_match_serial_results(backend, dtype):
    seeds = list(range(N_THREADS))
    with fastnn.backend(backend):
        serial = {s: workload(s, dtype) for s in seeds}
    got = {s: [] for s in seeds}

    def worker(seed):
        def fn():
            with fastnn.backend(backend):
                for _ in range(ROUNDS):
                    got[seed].append(workload(seed, dtype))
        return fn

    run_threads([worker(s) for s in seeds])
    for s in seeds:
        assert len(got[s]) == ROUNDS
        for result in got[s]:
            assert_same(result, serial[s])


@requires_native
def test_threads_on_different_backends_at_once():
    """The backend choice of `with fastnn.backend(...)` belongs to the thread that made it."""
    serial = {}
    for backend in ("numpy", "native"):
        with fastnn.backend(backend):
            serial[backend] = workload(1, np.float64)
    got = {"numpy": [], "native": []}

    def worker(backend):
        def fn():
            for _ in range(ROUNDS):
                with fastnn.backend(backend):
                    assert fastnn.get_backend() == backend
                    got[backend].append(workload(1, np.float64))
        return fn

    run_threads([worker(b) for b in ("numpy", "native") * (N_THREADS // 2)])
    for backend, results in got.items():
        assert len(results) == ROUNDS * N_THREADS // 2
        for result in results:
            assert_same(result, serial[backend])


def test_backend_context_is_thread_local():
    """A thread inside `with fastnn.backend("numpy")` does not change what other threads use."""
    seen = []
    inside = threading.Event()
    release = threading.Event()

    def holder():
        with fastnn.backend("numpy"):
            inside.set()
            release.wait(10)

    def observer():
        inside.wait(10)
        seen.append(fastnn.get_backend())
        release.set()

    default = fastnn.get_backend()
    run_threads([holder, observer])
    assert seen == [default]


def make_model(seed, dtype):
    model = nn.Sequential([
        nn.Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(16, activation="tanh"),
        nn.Dropout(0.2),
        nn.Dense(3, activation="softmax"),
    ], dtype=dtype, seed=seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train(seed, dtype):
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((48, 1, 8, 8))
    t = rng.integers(0, 3, size=48)
    model = make_model(seed, dtype)
    history = model.fit(x, t, epochs=2, batch_size=8, verbose=0, seed=seed)
    return model.get_weights(), history.history["loss"], model.predict(x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_separate_models_in_threads_matches_serial(backend, dtype):
    seeds = list(range(4))
    with fastnn.backend(backend):
        serial = {s: train(s, dtype) for s in seeds}
    # Different seeds give different models: the comparison below can fail.
    assert not np.array_equal(serial[0][0][0], serial[1][0][0])
    got = {}

    def worker(seed):
        def fn():
            with fastnn.backend(backend):
                got[seed] = train(seed, dtype)
        return fn

    run_threads([worker(s) for s in seeds])
    for s in seeds:
        weights, losses, pred = got[s]
        assert_same(weights, serial[s][0])
        assert losses == serial[s][1]
        np.testing.assert_array_equal(pred, serial[s][2])


@pytest.mark.skipif(not NATIVE, reason="native extension not built")
def test_thread_count_setting_is_read_per_call():
    """set_num_threads between calls takes effect, and any thread count gives results
    equal to the reference within float tolerance (determinism is per thread count)."""
    before = fastnn.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3):
            fastnn.set_num_threads(n)
            with fastnn.backend("native"):
                results[n] = workload(3, np.float64)
                assert_same(results[n], workload(3, np.float64))
        with fastnn.backend("numpy"):
            ref = workload(3, np.float64)
        for n, res in results.items():
            for u, v in zip(res, ref):
                np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-10)
    finally:
        fastnn.set_num_threads(before)


FORK_CHILD = """
import os, signal, sys, warnings
import numpy as np
import fastnn
from fastnn import ops

fastnn.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 3, 30, 30))
W = rng.standard_normal((8, 3, 3, 3))
a, b = rng.standard_normal((200, 300)), rng.standard_normal((300, 100))
want = ops.conv2d(x, W, None, 1, 1, "relu"), ops.matmul(a, b), ops.relu(x)   # the parent's threads start
pid = os.fork()
if pid == 0:
    status = 1
    signal.alarm(60)   # a hung child dies (SIGALRM's default action) instead of holding the pipe open
    try:
        before = fastnn.get_num_threads()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastnn.set_num_threads(4)
        got = ops.conv2d(x, W, None, 1, 1, "relu"), ops.matmul(a, b), ops.relu(x)
        close = all(np.allclose(g, w, rtol=1e-12, atol=1e-12) for g, w in zip(got, want))
        warned = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
        print("child", before, fastnn.get_num_threads(), close, len(warned), "fork" in "".join(warned), flush=True)
        status = 0
    finally:
        os._exit(status)
_, code = os.waitpid(pid, 0)
print("parent", fastnn.get_num_threads(), os.waitstatus_to_exitcode(code), flush=True)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@requires_native
def test_a_forked_child_runs_the_kernels_on_one_thread():
    """GNU OpenMP's threads do not survive a fork: without care the child's first
    parallel region waits for them forever. The child runs on one thread, says so when
    asked for more, and gets the parent's results; the parent keeps its threads."""
    import subprocess
    import sys
    import tempfile

    out = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True,
                         cwd=tempfile.gettempdir(), timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    parent_threads, child_code = lines["parent"].split()
    assert (parent_threads, child_code) == ("2", "0")
    if fastnn.config()["compiler"].startswith("GCC") and fastnn.config()["openmp"]:
        assert lines["child"] == "1 1 True 1 True"
    else:   # runtimes that survive a fork keep the threads asked for
        assert lines["child"] == "2 4 True 0 False"


TEAM_CHILD = r"""
import sys, numpy as np, fastnn
from fastnn import ops
fastnn.set_num_threads(3)
fastnn.set_conv_algorithm(sys.argv[2])
rng = np.random.default_rng(7)
out = {}
for dtype in (np.float32, np.float64):
    x = rng.standard_normal((8, 16, 16, 16)).astype(dtype)
    W = (rng.standard_normal((32, 16, 3, 3)) * 0.2).astype(dtype)
    dy = rng.standard_normal((8, 32, 16, 16)).astype(dtype)
    tag = np.dtype(dtype).name
    for name, grads in (("dx", ops.conv2d_backward(dy, x, W, 1, 1)),
                        ("no_dx", ops.conv2d_backward(dy, x, W, 1, 1, need_dx=False))):
        for k, g in zip(("dx", "dW", "db"), grads):
            if g is not None:
                out[f"{tag}_{name}_{k}"] = g
    xn = x.copy()
    xn[0, 0, 0, 0] = np.nan  # a non-finite input: the GEMM path, its images split over the threads
    for k, g in zip(("dx", "dW", "db"), ops.conv2d_backward(dy, xn, W, 1, 1)):
        out[f"{tag}_nan_{k}"] = g
    y, am = ops.conv2d_max_pool2d(x, W, None, 1, 1, activation="relu")
    for k, g in zip(("dx", "dW", "db"), ops.conv2d_max_pool2d_backward(
            rng.standard_normal(y.shape).astype(dtype), am, y, x, W, 1, 1, activation="relu")):
        out[f"{tag}_pool_{k}"] = g
np.savez(sys.argv[1], **out)
"""


@requires_native
@pytest.mark.parametrize("algorithm", ["auto", "winograd", "gemm"])
def test_a_smaller_team_than_asked_gives_the_bits_of_the_threads_asked(tmp_path, algorithm):
    """OpenMP may run fewer threads than set_num_threads asks (OMP_THREAD_LIMIT, OMP_DYNAMIC
    on a loaded machine, a call from inside another parallel region). The reductions over
    the threads' partial sums are cut for the threads asked, so the bits do not change."""
    import os
    import subprocess
    import sys

    def run(limit):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_THREAD_LIMIT", "OMP_DYNAMIC")}
        if limit:
            env["OMP_THREAD_LIMIT"] = str(limit)
        path = tmp_path / f"team{limit}.npz"
        out = subprocess.run([sys.executable, "-c", TEAM_CHILD, str(path), algorithm], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    full = run(0)
    assert len(full) == 2 * (3 + 2 + 3 + 3)
    for limit in (1, 2):
        team = run(limit)
        for key, value in full.items():
            bits = value.view(np.uint32 if value.dtype == np.float32 else np.uint64)
            assert np.array_equal(team[key].view(bits.dtype), bits), (limit, key)
