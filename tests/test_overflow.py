"""Sizes that overflow 32-bit (or 64-bit) indexing (issue 8).

An op whose output, or im2col column buffer, would have more than 2^31 elements (or
more than int64 can count) either computes the right answer or raises MemoryError /
ValueError before allocating it; it never wraps around, crashes or raises anything
else (an OverflowError from converting a Python int to a C integer is a bug).

The cases run in a child interpreter, so a crash is reported as a failure instead
of killing the test session, with its allocations capped at 8 GiB (RLIMIT_AS; under
AddressSanitizer, which reserves terabytes of shadow memory, ASan's own
max_allocation_size_mb): an allocation that slipped past the checks fails there
with MemoryError instead of swapping the machine.

Opt-in: FASTNN_TEST_HUGE=1 also runs computations that really have more than 2^31
elements (about 20 GB of RAM and a minute; see docs/GUARANTEES.md).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastnn
from fastnn import ops
from conftest import requires_native
from helpers import native_setting

BACKENDS = [pytest.param("numpy", id="numpy"), pytest.param("native", id="native", marks=requires_native)]
HUGE = os.environ.get("FASTNN_TEST_HUGE") == "1"
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")
ADDRESS_SPACE_LIMIT = 8 << 30
REFUSE_SECONDS = 5.0          # a refusal is a check, not a computation
REFUSE_PEAK_BYTES = 256 << 20  # growth of the peak RSS allowed while refusing

CHILD = r"""
import json, resource, sys, time
import numpy as np
import fastnn
from fastnn import ops

backend, limit, cases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
f32, f64 = np.float32, np.float64
x33 = np.arange(9, dtype=f64).reshape(1, 1, 3, 3)

def big(shape, dtype=f64):
    # A read-only zero-stride view: any shape, one element of memory.
    return np.broadcast_to(np.ones((), dtype), shape)

def summary(r):
    if isinstance(r, tuple):
        return [summary(v) for v in r]
    if r is None or isinstance(r, float):
        return {"float": None if r is None or r != r else r}
    return {"shape": list(r.shape), "dtype": str(r.dtype),
            "head": [float(v) for v in r.reshape(-1)[:16]]}

out = {}
for name, expr in cases.items():
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        with fastnn.backend(backend):
            result = eval(expr)
        res = {"ok": summary(result)}
    except Exception as exc:
        res = {"raise": type(exc).__name__, "message": str(exc)[:300]}
    res["seconds"] = time.perf_counter() - t0
    # Growth of the peak resident set (KiB on Linux): what was really allocated and touched.
    res["peak_growth"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
    out[name] = res
    print(json.dumps({name: res}), flush=True)
"""


def run_cases(backend, cases):
    """Run {name: expression} in a child interpreter on `backend`; returns {name: outcome}."""
    limit = 0 if UNDER_ASAN else ADDRESS_SPACE_LIMIT
    env = dict(os.environ)
    if UNDER_ASAN:
        # ASan caps each allocation, not the total: half the address-space cap is the
        # closer match (an 8 GiB array fails under RLIMIT_AS=8 GiB, with the interpreter).
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1"
                               f":max_allocation_size_mb={ADDRESS_SPACE_LIMIT >> 21}")
    # The child imports the very fastnn under test (installed, or a source tree on the path).
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", CHILD, backend, str(limit), json.dumps(cases)],
                          capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir(), env=env)
    outcomes = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            outcomes.update(json.loads(line))
    assert proc.returncode == 0 and set(outcomes) == set(cases), (
        f"the child crashed (exit {proc.returncode}) after {sorted(outcomes)}\n{proc.stderr[-3000:]}")
    return outcomes


# Outputs or column buffers far beyond any memory, or beyond int64: refused up front.
REFUSED = {
    "im2col_pad_1e5": "ops.im2col(np.ones((1, 1, 1, 1), f32), 1, 1, 1, 10**5)",  # 4e10 elements
    "im2col_pad_2_31": "ops.im2col(np.ones((1, 1, 1, 1), f32), 1, 1, 1, 2**31)",  # > int64 elements
    "im2col_pad_2_62": "ops.im2col(np.ones((1, 1, 1, 1)), 1, 1, 1, 2**62)",
    "im2col_wide_filter": "ops.im2col(np.ones((1, 2**12, 2**5, 2**5), f32), 2**5, 2**5, 1, 2**5)",
    "conv2d_pad_2_40": "ops.conv2d(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), None, 1, 2**40)",
    "conv2d_col_buffer": "ops.conv2d(np.ones((1, 1, 2**10, 2**10), f32), np.ones((1, 1, 2**9, 2**9), f32))",
    "conv2d_backward_col_buffer": "ops.conv2d_backward(np.ones((1, 1, 513, 513), f32), "
                                  "np.ones((1, 1, 2**10, 2**10), f32), np.ones((1, 1, 2**9, 2**9), f32))",
    "col2im_out_2_40": "ops.col2im(np.ones((1, 1)), (1, 1, 2**20, 2**20), 1, 1, 2**20)",
    "col2im_out_2_64": "ops.col2im(np.ones((1, 1)), (1, 1, 2**32, 2**32), 1, 1, 2**32)",
    "col2im_x_shape_2_63": "ops.col2im(np.ones((1, 1)), (1, 1, 2**63, 1), 1, 1, 2**63)",
    "max_pool2d_backward_out_2_40": "ops.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), "
                                    "np.int64), (1, 1, 2**20, 2**20), 2**20)",
    "avg_pool2d_backward_out_2_40": "ops.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2**20, 2**20), 2**20)",
    "avg_pool2d_backward_out_2_64": "ops.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2**32, 2**32), 2**32)",
    "matmul_out_2_40": "ops.matmul(big((2**20, 1)), big((1, 2**20)))",
    "linear_out_2_40": "ops.linear(big((2**20, 1)), big((1, 2**20)))",
    "linear_input_2_50": "ops.linear(big((2**50, 1)), np.ones((1, 1)))",
    "relu_input_2_50": "ops.relu(big((2**25, 2**25)))",
    "softmax_input_2_50": "ops.softmax(big((2**25, 2**25), f32))",
}

# Batch 0 with dimensions whose products pass 2^31 (or 2^60): nothing to compute, so an
# empty result of the right shape (a kernel must not size buffers from the other
# dimensions and crash), or MemoryError.
EMPTY = {
    "conv2d_batch0": ("ops.conv2d(big((0, 2**16, 2**16, 2**16)), np.ones((1, 2**16, 1, 1)))",
                      [0, 1, 2**16, 2**16]),
    "conv2d_batch0_big_plane": ("ops.conv2d(big((0, 1, 2**31 + 1, 4)), np.ones((2, 1, 2, 2)), None, 1, 1)",
                                [0, 2, 2**31 + 2, 5]),
    "conv2d_backward_batch0": ("ops.conv2d_backward(big((0, 1, 2**31, 3)), big((0, 1, 2**31 + 1, 4)), "
                               "np.ones((1, 1, 2, 2)))", None),
    "im2col_batch0": ("ops.im2col(big((0, 3, 2**31 + 1, 2)), 2, 2)", [0, 12]),
    "col2im_batch0": ("ops.col2im(np.ones((0, 4)), (0, 1, 2**31 + 1, 2), 2, 2)", [0, 1, 2**31 + 1, 2]),
    "max_pool2d_batch0": ("ops.max_pool2d(big((0, 1, 2**31 + 1, 4)), 2)", None),
    "avg_pool2d_batch0": ("ops.avg_pool2d(big((0, 2**16, 2**16, 2**16)), 2)", [0, 2**16, 2**15, 2**15]),
    "linear_batch0": ("ops.linear(np.ones((0, 2**22)), np.ones((2**22, 1)))", [0, 1]),
    "matmul_batch0": ("ops.matmul(np.ones((0, 2**22), f32), np.ones((2**22, 3), f32))", [0, 3]),
    "softmax_batch0": ("ops.softmax(big((0, 2**40)))", [0, 2**40]),
    "relu_empty": ("ops.relu(big((2**20, 0, 2**20)))", [2**20, 0, 2**20]),
}

# Strides beyond any extent: one window; the result is that window, as for stride 1.
FAR = [2**31 + 1, 2**62, 2**63 - 1, 2**63, 2**64 + 3]
STRIDED = {}
for s in FAR:
    STRIDED[f"im2col_stride_{s}"] = (f"ops.im2col(x33, 3, 3, {s})", list(range(9)))
    STRIDED[f"conv2d_stride_{s}"] = (f"ops.conv2d(x33, np.ones((1, 1, 3, 3)), None, {s})", [36.0])
    STRIDED[f"max_pool2d_stride_{s}"] = (f"ops.max_pool2d(x33, 3, 3, {s})", [8.0])
    STRIDED[f"avg_pool2d_stride_{s}"] = (f"ops.avg_pool2d(x33, 3, 3, {s})", [4.0])
    STRIDED[f"col2im_stride_{s}"] = (f"ops.col2im(np.arange(9.0)[None], (1, 1, 3, 3), 3, 3, {s})",
                                     list(range(9)))
    STRIDED[f"max_pool2d_backward_stride_{s}"] = (
        f"ops.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 4), (1, 1, 3, 3), 3, 3, {s})",
        [0, 0, 0, 0, 1, 0, 0, 0, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_oversized_outputs_are_refused_before_allocation(backend):
    outcomes = run_cases(backend, REFUSED)
    for name, res in outcomes.items():
        assert res.get("raise") in ("MemoryError", "ValueError"), (name, res)
        assert res["seconds"] < REFUSE_SECONDS, (name, res)
        assert res["peak_growth"] < REFUSE_PEAK_BYTES, (name, res)
        # fastnn's refusals name the op; NumPy's own MemoryError (copying a huge input
        # view to contiguous memory) says "Unable to allocate".
        op = REFUSED[name].split("(")[0].replace("ops.", "")
        assert op in res["message"] or "Unable to allocate" in res["message"], (name, res)


def test_a_cgroup_memory_limit_below_the_machines_is_the_limit(tmp_path):
    from fastnn import _validate
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    files = (str(v2), str(v1))
    assert _validate._memory_limit_bytes(1 << 34, files) == 1 << 34            # neither file
    v2.write_text("max\n")
    v1.write_text(f"{(1 << 63) - 4096}\n")                                      # v1's "no limit"
    assert _validate._memory_limit_bytes(1 << 34, files) == 1 << 34
    v2.write_text(f"{1 << 31}\n")                                               # a 2 GiB container
    assert _validate._memory_limit_bytes(1 << 34, files) == 1 << 31
    v1.write_text(f"{1 << 30}\n")                                               # the lower of the two
    assert _validate._memory_limit_bytes(1 << 34, files) == 1 << 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_with_huge_dimensions(backend):
    outcomes = run_cases(backend, {k: v[0] for k, v in EMPTY.items()})
    for name, res in outcomes.items():
        if "raise" in res:
            assert res["raise"] == "MemoryError", (name, res)
            continue
        first = res["ok"][0] if isinstance(res["ok"], list) else res["ok"]
        want = EMPTY[name][1]
        if want is not None:
            assert first["shape"] == want, (name, res)
        leaves = res["ok"] if isinstance(res["ok"], list) else [res["ok"]]
        if name == "conv2d_backward_batch0":
            dx, dW, db = leaves
            assert dx["shape"] == [0, 1, 2**31 + 1, 4] and dW["shape"] == [1, 1, 2, 2] and db["shape"] == [1]
            assert dW["head"] == [0.0] * 4 and db["head"] == [0.0], (name, res)  # sums over no samples
        else:
            assert all(leaf.get("head") == [] for leaf in leaves), (name, res)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_whose_other_sizes_overflow_is_a_named_value_error(backend):
    # 0 elements passed the count; NumPy's allocation then failed with its own unnamed error.
    big = 2**21
    shape = (0, big, big, big)
    with fastnn.backend(backend):
        with pytest.raises(ValueError, match="max_pool2d_backward: .* more elements than int64 can index"):
            ops.max_pool2d_backward(np.ones((0, big, 1, 1)), np.zeros((0, big, 1, 1), np.int64), shape, big,
                                    stride=big)
        with pytest.raises(ValueError, match="avg_pool2d_backward: .* more elements than int64 can index"):
            ops.avg_pool2d_backward(np.ones((0, big, 1, 1)), shape, big)
        with pytest.raises(ValueError, match="col2im: .* more elements than int64 can index"):
            ops.col2im(np.ones((0, big)), shape, 1, 1, stride=big)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strides_beyond_int64_compute_or_raise_value_error(backend):
    outcomes = run_cases(backend, {k: v[0] for k, v in STRIDED.items()})
    bad = {}
    for name, res in outcomes.items():
        if "raise" in res:
            if res["raise"] != "ValueError":
                bad[name] = res
            continue
        first = res["ok"][0] if isinstance(res["ok"], list) else res["ok"]
        if first["head"] != [float(v) for v in STRIDED[name][1]]:
            bad[name] = res
    assert not bad, json.dumps(bad, indent=1)[:4000]


def test_child_cap_really_refuses_big_allocations():
    """The address-space cap of the child is what turns a missed check into a MemoryError
    (not a swapping machine): show that it is in force."""
    res = run_cases("numpy", {"alloc_16g": "np.ones(2 * 2**30, np.float64)"})["alloc_16g"]
    assert res.get("raise") == "MemoryError", res


# ---------------------------------------------------------------------------
# Opt-in: computations that really pass 2^31 elements (about 20 GB of RAM).

huge = pytest.mark.skipif(not HUGE, reason="set FASTNN_TEST_HUGE=1 (needs ~20 GB RAM)")


@huge
@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_elementwise_past_2_31(backend):
    n = 2**31 + 17
    x = np.full(n, -1.0, dtype=np.float32)
    x[-5:] = [1, 2, 3, 4, 5]
    x[:3] = [7, -2, 9]
    with fastnn.backend(backend):
        y = ops.relu(x)
    del x
    assert y.shape == (n,)
    np.testing.assert_array_equal(y[-6:], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(y[:4], [7, 0, 9, 0])
    assert np.count_nonzero(y) == 7


@huge
@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_im2col_past_2_31(backend):
    w = 2**30 + 5
    x = np.empty((1, 1, 1, w), dtype=np.float32)
    x[0, 0, 0, :] = np.arange(w, dtype=np.float64) % 1000  # exact in float32
    with fastnn.backend(backend):
        col = ops.im2col(x, 1, 2)                         # (w - 1, 2): 2^31 + 8 elements
    assert col.shape == (w - 1, 2)
    np.testing.assert_array_equal(col[-1], [(w - 2) % 1000, (w - 1) % 1000])
    np.testing.assert_array_equal(col[123456789], [123456789 % 1000, 123456790 % 1000])


@requires_native
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_max_pool_argmax_past_float32_exact_range(isa):
    """The vector max pool carries each winner's offset in the value type: offsets past
    2^24 are not exact in float32, so such planes must take the scalar loop."""
    h, w = 3, 2**23 + 1
    x = np.zeros((1, 1, h, w), dtype=np.float32)
    cols = np.array([2, 4, 12346, w - 1])
    x[0, 0, 2, cols] = 1.0   # in windows cols - 1 at offset 2 * w + 1 = 2^24 + 3: not a float32
    x[0, 0, 1, 9] = 1.0      # in window 9 at offset w = 2^23 + 1 (exact)
    with native_setting(isa):
        y, argmax = ops.max_pool2d(x, 3, 2, stride=(1, 1))
    assert y.shape == (1, 1, 1, w - 1)
    np.testing.assert_array_equal(argmax[0, 0, 0, cols - 1], 2 * w + cols)
    np.testing.assert_array_equal(argmax[0, 0, 0, cols[:3]], 2 * w + cols[:3])
    assert argmax[0, 0, 0, 8] == w + 9
    assert argmax[0, 0, 0, 10] == 10                       # ties: the window's first element
    assert y[0, 0, 0, cols - 1].tolist() == [1.0] * 4


@huge
@requires_native
def test_huge_max_pool_plane_past_2_31():
    """argmax indices h*W + w beyond 2^31 (native only: the NumPy reference needs ~40 GB here)."""
    h, w = 2**16 + 2, 2**15 + 1                             # a plane of more than 2^31 elements
    x = np.zeros((1, 1, h, w), dtype=np.float32)
    x[0, 0, -1, -2] = 1.0
    with fastnn.backend("native"):
        y, argmax = ops.max_pool2d(x, 2, 2, stride=2)
    assert y[0, 0, -1, -1] == 1
    assert argmax[0, 0, -1, -1] == (h - 1) * w + w - 2
    # Ties (all zeros) pick the window's first element.
    assert argmax[0, 0, -1, 0] == (h - 2) * w
    assert argmax[0, 0, -2, -1] == (h - 4) * w + w - 3


@huge
@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_matmul_output_past_2_31(backend):
    a = np.ones((2**16 + 1, 1), dtype=np.float32)
    b = np.arange(2**15 + 1, dtype=np.float32)[None, :] % 7
    a[-1, 0] = 2.0
    with fastnn.backend(backend):
        y = ops.matmul(a, b)
    assert y.shape == (2**16 + 1, 2**15 + 1)
    np.testing.assert_array_equal(y[-1, -3:], 2 * b[0, -3:])
    np.testing.assert_array_equal(y[0, :5], b[0, :5])


SCRATCH_CHILD = r"""
import resource, sys
import numpy as np
import fastnn
from fastnn import ops

target_kind = sys.argv[1]
fastnn.set_backend("native")
fastnn.set_simd("portable")   # AVX2's rows against labels need only a few blocks' sums
N, K = 1 << 20, 10
logits = np.random.default_rng(0).standard_normal((N, K)).astype(np.float32)
target = np.full((N, K), 0.1, np.float32) if target_kind == "probabilities" else np.arange(N) % K
# The OpenMP threads exist before the cap (libgomp aborts else); a quarter of the rows leaves the
# full call's scratch larger than any block malloc kept.
ops.softmax_cross_entropy(logits[:N // 4], target[:N // 4])

def address_space():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize"):
            return int(line.split()[1]) * 1024

# Room for dlogits and a little, not for the kernel's scratch of N doubles (8 MiB).
limit = address_space() + logits.nbytes + (3 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    loss, dz = ops.softmax_cross_entropy(logits, target)
    print("RESULT", loss)
except MemoryError as exc:
    print("MEMORYERROR", exc)
"""


@requires_native
@pytest.mark.skipif(UNDER_ASAN, reason="ASan reserves its shadow memory: an address-space cap cannot be set")
@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
def test_loss_scratch_that_cannot_be_allocated_is_a_memory_error(target_kind):
    # The kernel returned a NaN loss and left dlogits unwritten when its scratch malloc failed.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", SCRATCH_CHILD, target_kind], capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir(), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MEMORYERROR softmax_cross_entropy: could not allocate scratch memory" in proc.stdout, proc.stdout
