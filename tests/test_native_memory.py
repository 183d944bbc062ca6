"""The cache of freed native outputs (fastnn.set_memory_cache; csrc/memcache.c).

The native ops allocate outputs of at least 128 KiB through fastnn's NumPy memory
handler; a freed block is kept up to the limit and the next output of exactly its size
takes it. What must hold: a block is never handed out while an array still uses it,
a reused block carries the new result (no stale data), the limit and the slot count
bound what is held, arrays made this way behave as NumPy's own (resize, pickle,
views), and it works from many threads and after a fork.
"""
import gc
import multiprocessing
import os
import pickle
import threading

import numpy as np
import pytest

import fastnn
from fastnn import ops
from conftest import requires_native
from test_config import run_python

pytestmark = requires_native

MIN_BYTES = 128 * 1024          # csrc/memcache.h: FNN_MEMCACHE_MIN_BYTES
SLOTS = 64                      # csrc/memcache.h: FNN_MEMCACHE_SLOTS
DEFAULT_LIMIT = 256 * 1024 * 1024
BIG = MIN_BYTES // 4            # float32 elements in one smallest cached block
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")   # .ci/extra's sanitizer run


try:
    from numpy._core.multiarray import get_handler_name as handler_name
except ImportError:                 # NumPy 1.x
    from numpy.core.multiarray import get_handler_name as handler_name


@pytest.fixture(autouse=True)
def fresh_cache():
    gc.collect()
    fastnn.set_memory_cache(DEFAULT_LIMIT)
    fastnn.empty_memory_cache()
    yield
    gc.collect()
    fastnn.set_memory_cache(DEFAULT_LIMIT)
    fastnn.empty_memory_cache()


def vector(n, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)


def address(arr):
    return arr.__array_interface__["data"][0]


def test_a_freed_output_is_reused_with_the_new_result():
    x1, x2 = vector(BIG * 3, 1), vector(BIG * 3, 2)
    y1 = ops.relu(x1)
    assert handler_name(y1) == "fastnn_memory_cache"
    first = address(y1)
    before = fastnn.memory_cache_info()
    del y1
    held = fastnn.memory_cache_info()
    assert held["blocks"] == before["blocks"] + 1
    assert held["bytes"] == before["bytes"] + x1.nbytes
    y2 = ops.sigmoid(x2)
    after = fastnn.memory_cache_info()
    assert address(y2) == first
    assert after["hits"] == held["hits"] + 1
    assert after["blocks"] == held["blocks"] - 1
    np.testing.assert_allclose(y2, 1 / (1 + np.exp(-x2.astype(np.float64))), rtol=1e-6, atol=0)


def test_a_live_output_is_never_handed_out_again():
    x = vector(BIG * 2, 3)
    outputs = [ops.relu(x * (i + 1)) for i in range(5)]
    addresses = {address(y) for y in outputs}
    assert len(addresses) == len(outputs)
    for i, y in enumerate(outputs):
        np.testing.assert_array_equal(y, np.maximum(x * (i + 1), 0))
    outputs[2][:] = -7.0     # writing one changes no other
    for i, y in enumerate(outputs):
        if i != 2:
            np.testing.assert_array_equal(y, np.maximum(x * (i + 1), 0))


def test_only_exact_sizes_match():
    y = ops.relu(vector(BIG * 4))
    del y
    info = fastnn.memory_cache_info()
    z = ops.relu(vector(BIG * 4 - 1))        # 4 bytes shorter: not the cached block
    assert fastnn.memory_cache_info()["hits"] == info["hits"]
    assert fastnn.memory_cache_info()["misses"] == info["misses"] + 1
    assert fastnn.memory_cache_info()["blocks"] == info["blocks"]
    del z


def test_small_outputs_use_numpys_handler():
    y = ops.relu(vector(BIG - 1))
    assert handler_name(y) != "fastnn_memory_cache"
    info = fastnn.memory_cache_info()
    del y
    assert fastnn.memory_cache_info() == info


@pytest.mark.skipif(os.name == "nt", reason="Windows blocks come from malloc: _aligned_malloc's need _aligned_free")
def test_outputs_start_on_a_cache_line_fresh_or_reused():
    # rows of a multiple of 16 floats are then aligned for the kernels' 64-byte vectors;
    # malloc's blocks start 16 bytes past a line, as NumPy's own arrays do here
    sizes = [BIG * k + 1 for k in (1, 2, 3)] + [BIG * 5]
    fresh = [ops.relu(vector(n, n)) for n in sizes]
    assert [address(y) % 64 for y in fresh] == [0] * len(sizes)
    del fresh
    hits = fastnn.memory_cache_info()["hits"]
    reused = [ops.relu(vector(n, n + 1)) for n in sizes]
    assert fastnn.memory_cache_info()["hits"] == hits + len(sizes)
    assert [address(y) % 64 for y in reused] == [0] * len(sizes)
    # a block realloc'ed by resize, off the line where the C library moved it (it may also
    # keep it), is not handed to the next output of its size
    for n in sizes:
        for start in (n // 2, n // 3, BIG):
            y = ops.relu(vector(start, n))
            y.resize(n, refcheck=False)
            del y
            assert address(ops.relu(vector(n, n + 2))) % 64 == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kind_of_output_reuses_blocks(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 3, 40, 40)).astype(dtype)
    W = rng.standard_normal((16, 3, 3, 3)).astype(dtype)
    a = rng.standard_normal((300, 200)).astype(dtype)
    b = rng.standard_normal((200, 300)).astype(dtype)

    def run():
        y = ops.conv2d(x, W, None, 1, 1, "relu")
        dx, dW, db = ops.conv2d_backward(y, x, W, 1, 1)
        p, am = ops.max_pool2d(y, 2, 2, 2)
        dp = ops.max_pool2d_backward(p, am, y.shape, 2, 2, 2)
        c = ops.matmul(a, b)
        col = ops.im2col(x, 3, 3, 1, 1)
        return y, dx, p, am, dp, c, col

    first = run()
    expected = [r.copy() for r in first]
    del first
    hits = fastnn.memory_cache_info()["hits"]
    second = run()
    assert fastnn.memory_cache_info()["hits"] >= hits + len(second)
    for got, want in zip(second, expected):
        np.testing.assert_array_equal(got, want)


def test_the_limit_bounds_what_is_held_and_the_oldest_go_first():
    sizes = [BIG * k for k in (2, 3, 4, 5, 6)]
    limit = 4 * (BIG * 6) * 4 // 2          # room for about two or three of them
    fastnn.set_memory_cache(limit)
    for n in sizes:
        y = ops.relu(vector(n))
        del y
        info = fastnn.memory_cache_info()
        assert info["bytes"] <= limit
    assert info["limit"] == limit
    kept_before = fastnn.memory_cache_info()
    y = ops.relu(vector(sizes[-1]))             # the newest is still held
    assert fastnn.memory_cache_info()["hits"] == kept_before["hits"] + 1
    z = ops.relu(vector(sizes[0]))              # the oldest was freed to make room
    assert fastnn.memory_cache_info()["misses"] == kept_before["misses"] + 1
    del y, z


def test_lowering_the_limit_frees_blocks_and_zero_turns_it_off():
    ys = [ops.relu(vector(BIG * k)) for k in range(2, 6)]
    del ys
    assert fastnn.memory_cache_info()["blocks"] == 4
    fastnn.set_memory_cache(BIG * 4 * 4)
    assert fastnn.memory_cache_info()["bytes"] <= BIG * 4 * 4
    fastnn.set_memory_cache(0)
    assert fastnn.memory_cache_info()["bytes"] == 0
    assert fastnn.memory_cache_info()["blocks"] == 0
    y = ops.relu(vector(BIG * 2))
    del y
    assert fastnn.memory_cache_info()["blocks"] == 0


def test_empty_memory_cache_keeps_the_limit():
    fastnn.set_memory_cache(DEFAULT_LIMIT // 2)
    y = ops.relu(vector(BIG * 2))
    del y
    assert fastnn.memory_cache_info()["blocks"] == 1
    fastnn.empty_memory_cache()
    info = fastnn.memory_cache_info()
    assert (info["blocks"], info["bytes"], info["limit"]) == (0, 0, DEFAULT_LIMIT // 2)


def test_at_most_the_slot_count_of_blocks_is_held():
    for k in range(SLOTS + 10):
        y = ops.relu(vector(BIG + k))
        del y
    info = fastnn.memory_cache_info()
    assert info["blocks"] == SLOTS
    assert info["bytes"] == sum((BIG + k) * 4 for k in range(10, SLOTS + 10))


def test_outputs_behave_as_numpys_own_arrays():
    x = vector(BIG * 2, 4)
    y = ops.relu(x)
    assert y.flags.owndata and y.flags.writeable and y.flags.c_contiguous
    view = y[::2]
    del y
    gc.collect()
    np.testing.assert_array_equal(view, np.maximum(x, 0)[::2])   # the view keeps the block alive
    del view
    y = ops.relu(x)
    y.resize(BIG * 5, refcheck=False)           # realloc through the handler
    np.testing.assert_array_equal(y[:BIG * 2], np.maximum(x, 0))
    y.resize(BIG // 2, refcheck=False)          # below the cached sizes
    np.testing.assert_array_equal(y, np.maximum(x, 0)[:BIG // 2])
    del y
    y = ops.relu(x)
    z = pickle.loads(pickle.dumps(y))
    np.testing.assert_array_equal(z, y)


def test_the_reference_backend_does_not_use_it():
    with fastnn.backend("numpy"):
        y = ops.relu(vector(BIG * 2))
    assert handler_name(y) != "fastnn_memory_cache"


def test_many_threads_take_and_give_blocks():
    errors = []
    sizes = [BIG * k for k in (2, 3, 5)]

    def work(seed):
        try:
            rng = np.random.default_rng(seed)
            for i in range(60):
                x = rng.standard_normal(sizes[i % 3]).astype(np.float32)
                y = ops.relu(x)
                if not np.array_equal(y, np.maximum(x, 0)):
                    errors.append(f"thread {seed} call {i}: wrong result")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    info = fastnn.memory_cache_info()
    assert info["bytes"] <= info["limit"] and info["blocks"] <= SLOTS
    assert info["hits"] > 0


def _relu_in_child(queue):
    x = vector(BIG * 3, 9)
    queue.put(bool(np.array_equal(ops.relu(x), np.maximum(x, 0))))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_allocates_and_frees():
    keep = [ops.relu(vector(BIG * 3))]
    del keep
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_relu_in_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) is True


@pytest.mark.skipif(UNDER_ASAN, reason="AddressSanitizer's quarantine holds freed blocks (up to 256 MB): the "
                                       "resident set then depends on what the tests before freed")
def test_memory_stays_bounded_over_many_sizes():
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs Linux /proc")
    page = os.sysconf("SC_PAGE_SIZE")
    fastnn.set_memory_cache(8 << 20)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    for k in range(40):                      # warm up: fill the cache to its limit
        del_me = ops.relu(vector(BIG * (2 + k % 7) + k))
        del del_me
    start = rss()
    for k in range(400):                     # 400 distinct sizes of 0.25-1 MB
        y = ops.relu(vector(BIG * (2 + k % 7) + 40 + k))
        del y
    assert fastnn.memory_cache_info()["bytes"] <= 8 << 20
    assert rss() - start < 16 << 20


@pytest.mark.parametrize("bad, exc", [("1", TypeError), (1.5, TypeError), (True, TypeError), (None, TypeError),
                                      (-1, ValueError)])
def test_set_memory_cache_rejects_bad_values(bad, exc):
    with pytest.raises(exc, match="set_memory_cache"):
        fastnn.set_memory_cache(bad)


def test_the_environment_sets_the_limit():
    assert run_python("import fastnn; print(fastnn.memory_cache_info()['limit'])",
                      FASTNN_MEMORY_CACHE="1048576") == "1048576"
    assert run_python("import fastnn; print(fastnn.memory_cache_info()['limit'])",
                      FASTNN_MEMORY_CACHE="0") == "0"
    assert run_python("import fastnn; print(fastnn.memory_cache_info()['limit'])") == str(DEFAULT_LIMIT)


def test_a_bad_environment_value_is_named():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import fastnn"], capture_output=True, text=True,
                         env=dict(os.environ, FASTNN_MEMORY_CACHE="lots"), timeout=120)
    assert out.returncode != 0
    assert "FASTNN_MEMORY_CACHE" in out.stderr and "lots" in out.stderr


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def _smaps_field(address, field):
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and all(ch in "0123456789abcdef-" for ch in head):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == field + ":":
                return int(line.split()[1])
    return None


@pytest.mark.skipif(_thp_mode() != "madvise", reason="needs Linux transparent huge pages in 'madvise' mode")
@pytest.mark.skipif(UNDER_ASAN, reason="AddressSanitizer's allocator maps memory itself")
def test_large_outputs_are_advised_to_use_huge_pages():
    # as NumPy's own handler does for blocks of 4 MiB or more: without the advice a GEMM
    # writing a large output goes through 4 KiB pages
    y = ops.relu(vector(3 << 20))               # 12 MiB
    inside = address(y) + (6 << 20)             # past the block's first, unadvised page
    assert _smaps_field(inside, "THPeligible") == 1
