"""Every workload x implementation, grouped by workload so the implementations sit side by side.

Run with `pytest bench/ --benchmark-only` (add `--threads 2`, `--quick`,
`--benchmark-json out.json` as needed). Before timing, each implementation's
results are checked against the NumPy reference backend, so a benchmark never
times something that computes a different answer.
"""
import pytest

from fastnn import benchmarks as B

CASES = [pytest.param(w.key, impl, id=f"{w.key}-{w.name}-{impl}")
         for w in B.WORKLOADS for impl in B.IMPLEMENTATIONS]


@pytest.mark.parametrize(("key", "impl"), CASES)
def test_workload(benchmark, key, impl, bench_threads, workload_data, reference_outputs):
    available, reason = B.implementation_status([impl])[impl]
    if not available:
        pytest.skip(reason)
    workload = B.get_workload(key)
    data = workload_data(key)
    benchmark.group = f"{key} {B.workload_title(workload, data)}"
    benchmark.extra_info.update({
        "workload": key, "implementation": impl, "label": B.IMPLEMENTATION_LABELS[impl],
        "threads": bench_threads, "kind": workload.kind,
        "flops": workload.flops(data) if workload.flops else None,
        "bytes": workload.traffic_bytes(data) if workload.traffic_bytes else None,
    })
    with B.implementation_context(impl):
        fn = B.prepare(workload, impl, data)
        outputs = fn()
        assert not B.wrong_dtypes(outputs), f"{impl} computes {key} in {B.wrong_dtypes(outputs)}, not float32"
        got = B.snapshot(outputs)
        if impl != "numpy":
            ok, err = B.compare_outputs(reference_outputs(key), got)
            assert ok, f"{impl} results of {key} differ from the NumPy reference (max error {err:.3g} of scale)"
        B.let_idle_threads_settle(bench_threads)
        benchmark(fn)
