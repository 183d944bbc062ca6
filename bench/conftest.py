"""pytest-benchmark suite of docs/BENCHMARKS.md: `pytest bench/ --benchmark-only`.

Options: `--threads N` (default: $FASTNN_BENCH_THREADS, else 1) fixes the thread
count of fastnn, NumPy's BLAS (threadpoolctl, when installed) and torch for the
whole session; `--quick` runs workload J on 200 images instead of 1,000.
Environment variables of the libraries are never changed here.
"""
import os

import pytest

import fastnn
from fastnn import benchmarks as B

THREADS_ENV = "FASTNN_BENCH_THREADS"


def pytest_addoption(parser):
    group = parser.getgroup("fastnn benchmarks")
    group.addoption("--threads", default=None, metavar="N",
                    help=f"threads for fastnn, NumPy's BLAS and torch (default: ${THREADS_ENV}, else 1)")
    group.addoption("--quick", action="store_true", default=False,
                    help=f"workload J on {B.J_IMAGES_QUICK} images instead of {B.J_IMAGES}")


def bench_threads_from(config):
    text = config.getoption("--threads")
    source = "--threads"
    if text is None:
        text, source = os.environ.get(THREADS_ENV, "1"), THREADS_ENV
    try:
        n = int(text)
    except ValueError:
        raise pytest.UsageError(f"{source} expects a whole number >= 1, got {text!r}") from None
    if n < 1:
        raise pytest.UsageError(f"{source} expects a whole number >= 1, got {n}")
    return n


def pytest_configure(config):
    config._fastnn_bench_threads = bench_threads_from(config)
    config._fastnn_bench_threads_given = (config.getoption("--threads") is not None
                                          or os.environ.get(THREADS_ENV) is not None)
    # As in `fastnn bench`: freed memory stays in the process for every implementation, so no
    # timing includes the page faults of re-allocated outputs.
    config._fastnn_malloc_kept = fastnn.keep_freed_memory()


def pytest_report_header(config):
    cfg = fastnn.config()
    status = B.implementation_status()
    native = (f"native kernels, SIMD {cfg.get('simd_selected')}" if cfg["native_available"]
              else f"native kernels NOT available ({cfg['native_error']})")
    counts = (f"threads fixed to {config._fastnn_bench_threads}" if config._fastnn_bench_threads_given
              else "1 thread (test_bench_gemm.py: 1 and 2 in turn; --threads N fixes one count)")
    return [f"fastnn {cfg['version']}: {native}; {counts} (fastnn, NumPy BLAS, torch)",
            "implementations: " + ", ".join(f"{k} ({'yes' if ok else why})" for k, (ok, why) in status.items())]


def pytest_benchmark_update_machine_info(config, machine_info):
    info = B.machine_info(config._fastnn_bench_threads, measure=False)
    machine_info["fastnn"] = {k: info[k] for k in ("fastnn", "native_available", "simd", "openmp", "threads",
                                                   "peak_gflops", "peak_basis", "cpu")}
    # The libraries only: this hook may run after the session fixture restored the thread counts.
    machine_info["fastnn"]["blas"] = [{k: v for k, v in lib.items() if k != "num_threads"}
                                      for lib in info["blas"] or []]


@pytest.fixture(scope="session", autouse=True)
def bench_threads(request):
    """The fixed thread count, applied for the whole session."""
    n = request.config._fastnn_bench_threads
    with B.thread_limits(n, use_torch=B.torch_installed()):
        yield n


@pytest.fixture(scope="session")
def bench_quick(request):
    return request.config.getoption("--quick")


@pytest.fixture(scope="session")
def workload_data(bench_quick):
    """workload_data(key): the inputs of a workload, made once per session and shared by every implementation."""
    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = B.get_workload(key).make_data(quick=bench_quick)
        return cache[key]
    return get


@pytest.fixture(scope="session")
def reference_outputs(workload_data):
    """reference_outputs(key): the NumPy reference backend's results for that workload."""
    cache = {}

    def get(key):
        if key not in cache:
            workload = B.get_workload(key)
            with B.implementation_context("numpy"):
                cache[key] = B.snapshot(B.prepare(workload, "numpy", workload_data(key))())
        return cache[key]
    return get
