"""`fastnn bench` and fastnn.benchmarks: options, JSON structure, checks. No timing assertions."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import _cli_bench, _cli_train
from fastnn import benchmarks as B
from fastnn.cli import main
from conftest import optional_module

TORCH = B.torch_installed()


def run_bench(argv, capsys):
    rc = main(["bench", "--no-progress"] + argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_bench_only_g_writes_json(tmp_path, capsys):
    out = tmp_path / "out.json"
    rc = main(["bench", "--only", "G", "--repeat", "2", "--warmup", "3", "--quick", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    report = json.loads(out.read_text())

    assert report["schema"] == "fastnn-bench/1"
    assert report["settings"]["threads"] == 1
    assert report["settings"]["repeat"] == 2 and report["settings"]["warmup"] == 3
    assert report["settings"]["quick"] is True
    assert report["settings"]["workloads"] == ["G1", "G2"]
    assert "--only G1,G2" in report["command"] and "--quick" in report["command"]
    machine = report["machine"]
    assert machine["threads"] == 1 and machine["native_available"] == fastnn.config()["native_available"]
    assert machine["copy_gbps"] > 0 and machine["sgemm_gflops"] > 0

    expected_impls = ["numpy"] + [i for i, ok in (("native", fastnn.config()["native_available"]),
                                                  ("torch", TORCH)) if ok]
    assert sorted(report["settings"]["implementations"]) == sorted(expected_impls)
    assert report["implementations"]["torch"]["available"] == TORCH
    assert report["primary"] == ("native" if fastnn.config()["native_available"] else "numpy")

    rows = {r["key"]: r for r in report["results"]}
    assert list(rows) == ["G1", "G2"]
    for key, k in (("G1", 10), ("G2", 1000)):
        row = rows[key]
        assert row["kind"] == "memory" and row["flops"] is None
        assert row["copy_gbps"] > 0 and row["copy_gbps"] != machine["copy_gbps"]
        # logits read, gradient written (float32), int64 labels read
        assert row["bytes"] == 2 * 256 * k * 4 + 256 * 8
        assert set(row["timings"]) == set(expected_impls)
        for impl, cell in row["timings"].items():
            assert "error" not in cell, cell
            assert len(cell["samples_ms"]) == 2 and all(s > 0 for s in cell["samples_ms"])
            assert cell["median_ms"] == pytest.approx(float(np.median(cell["samples_ms"])))
            assert cell["min_ms"] == min(cell["samples_ms"]) and cell["calls_per_sample"] >= 1
            assert cell["cpu_util"] > 0 and cell["median_ms"] == cell["wall_median_ms"]
            assert cell["cpu_median_ms"] > 0
            assert cell["gbps"] == pytest.approx(row["bytes"] / (cell["median_ms"] * 1e-3) / 1e9)
            # %copy against a copy moving the row's own bytes, not the machine's 128 MiB one
            assert cell["copy_pct"] == pytest.approx(100 * cell["gbps"] / row["copy_gbps"])
            assert cell["check"] == ("reference" if impl == "numpy" else "ok")
        for impl, speedup in row["speedup_vs_numpy"].items():
            assert speedup == pytest.approx(row["timings"]["numpy"]["median_ms"] / row["timings"][impl]["median_ms"])
        assert set(row["speedup_vs_numpy"]) == set(expected_impls) - {"numpy"}

    table = captured.out
    assert "G1 Softmax-CE (256,10)" in table and "G2 Softmax-CE (256,1000)" in table
    assert "threads  : 1 for fastnn" in table and "PROBLEM" not in table
    assert f"wrote {out}" in table


def test_bench_numpy_only_table_and_threads(tmp_path, capsys):
    out = tmp_path / "b.json"
    threads_before = fastnn.get_num_threads()
    fastnn.set_num_threads(3)
    try:
        rc, stdout, _ = run_bench(["--only", "b,relu", "--impl", "numpy", "--repeat", "1", "--warmup", "1",
                                   "--quick", "--threads", "2", "--peak-gflops", "100", "--json", str(out)], capsys)
        assert fastnn.get_num_threads() == 3   # restored after the run
    finally:
        fastnn.set_num_threads(threads_before)
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["settings"]["workloads"] == ["B", "H1"]
    assert report["settings"]["threads"] == 2 and report["machine"]["peak_gflops"] == 100.0
    b = report["results"][0]
    assert b["flops"] == 6.0 * 100 * 784 * 50 and b["bytes"] is None
    cell = b["timings"]["numpy"]
    assert cell["peak_pct"] == pytest.approx(cell["gflops"])   # peak 100 GFLOP/s: % equals GFLOP/s
    h = report["results"][1]
    assert h["bytes"] == 5 * 4 * 4_194_304
    assert "B  Affine x(100,784) W(784,50)" in stdout and "FMA peak : 100.0 GFLOP/s" in stdout


def test_markdown_table(tmp_path, capsys):
    md = tmp_path / "t.md"
    rc, _, _ = run_bench(["--only", "G1,H2", "--impl", "numpy", "--repeat", "1", "--quick",
                          "--markdown", str(md)], capsys)
    assert rc == 0
    lines = md.read_text().splitlines()
    assert "`fastnn bench --threads 1 --only G1,H2 --impl numpy --repeat 1 --quick`" in lines[0]
    header = lines.index("| workload | numpy ms | GFLOP/s | %peak | GB/s | %copy | spread | cpu |")
    rows = lines[header + 2:header + 4]
    assert rows[0].startswith("| G1 Softmax-CE (256,10)") and rows[1].startswith("| H2 Sigmoid")
    assert all(row.count("|") == 9 for row in rows)


def test_thread_limits_apply_and_restore():
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(3)
    try:
        with B.thread_limits(1) as applied:
            assert fastnn.get_num_threads() == 1
            assert applied["fastnn"] == 1
            blas = B.blas_info()
            if blas is not None:
                assert applied["blas"] == 1
                assert all(lib["num_threads"] == 1 for lib in blas)
        assert fastnn.get_num_threads() == 3
    finally:
        fastnn.set_num_threads(before)


def test_idle_threads_settle_only_with_several_threads(monkeypatch):
    slept = []
    monkeypatch.setattr(B.time, "sleep", slept.append)
    B.let_idle_threads_settle(1)
    assert slept == []
    B.let_idle_threads_settle(2)
    assert slept == [B.IDLE_THREADS_SETTLE_S] and slept[0] > 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--threads", "0"], "--threads expects a whole number >= 1 and <= 1024, got 0"),
    (["--threads", "two"], "--threads expects a whole number >= 1 and <= 1024, got 'two'"),
    (["--threads", "1,0"], "--threads expects a whole number >= 1 and <= 1024, got 0"),
    (["--threads", "2147483648"], "--threads expects a whole number >= 1 and <= 1024, got 2147483648"),
    (["--threads", ","], "--threads expects N or a comma-separated list such as 1,2,4, got ','"),
    (["--repeat", "0"], "--repeat expects a whole number >= 1"),
    (["--only", "Z"], "unknown workload(s) 'Z'; choose from: A, B, C"),
    (["--only", "conv,nope"], "unknown workload(s) 'nope'"),
    (["--only", ""], "--only: expected a comma-separated list of workloads, got ''; choose from: A, B, C"),
    (["--only", ","], "--only: expected a comma-separated list of workloads, got ','"),
    (["--only", " , "], "--only: expected a comma-separated list of workloads, got ' , '"),
    (["--impl", "cuda"], "--impl: unknown implementation(s) 'cuda'; choose from: native, numpy, torch"),
    (["--peak-gflops", "-5"], "--peak-gflops expects a number > 0"),
    (["--peak-gflops", "nan"], "--peak-gflops expects a number > 0"),
    (["--clock", "tsc"], "invalid choice: 'tsc'"),
])
def test_bad_options_exit_2_with_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench"] + argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cpu_clock_needs_one_thread(capsys):
    rc, stdout, stderr = run_bench(["--only", "G1", "--clock", "cpu", "--threads", "2"], capsys)
    assert rc == 2 and "--clock cpu needs --threads 1" in stderr and stdout == ""


def test_cpu_clock(tmp_path, capsys):
    out = tmp_path / "c.json"
    rc, stdout, _ = run_bench(["--only", "H1", "--impl", "numpy", "--repeat", "2", "--quick", "--clock", "cpu",
                               "--json", str(out)], capsys)
    assert rc == 0
    report = json.loads(out.read_text())
    cell = report["results"][0]["timings"]["numpy"]
    assert report["settings"]["clock"] == "cpu" and "--clock cpu" in report["command"]
    assert cell["median_ms"] == cell["cpu_median_ms"] > 0 and cell["wall_median_ms"] > 0
    assert "numpy cpu ms" in stdout


@pytest.mark.parametrize("option, where, message", [
    ("--json", "no/such/dir/out.json", "does not exist"),
    ("--markdown", "a_file/out.md", "does not exist"),
    ("--json", ".", "is a directory"),
    ("--markdown", ".", "is a directory"),
    ("--plot", ".", "is a directory"),
    ("--plot", "b.xyz", "matplotlib cannot write .xyz files"),
])
def test_output_paths_checked_before_running(tmp_path, capsys, option, where, message):
    if option == "--plot":
        optional_module("matplotlib")
    (tmp_path / "a_file").write_text("")
    rc, stdout, stderr = run_bench(["--only", "G1", option, str(tmp_path / where)], capsys)
    assert rc == 2 and stdout == ""
    assert f"fastnn bench: error: {option} " in stderr and message in stderr


def test_plot_with_a_broken_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    # installed but failing to import (find_spec alone would not see it)
    (tmp_path / "shim" / "matplotlib").mkdir(parents=True)
    (tmp_path / "shim" / "matplotlib" / "__init__.py").write_text("raise RuntimeError('broken install')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "shim"))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    rc, stdout, stderr = run_bench(["--only", "G1", "--plot", str(tmp_path / "b.png")], capsys)
    assert rc == 2 and stdout == ""
    assert "--plot needs matplotlib, which could not be imported (RuntimeError: broken install" in stderr


def test_plot_without_an_extension_says_where_it_went(tmp_path, capsys):
    optional_module("matplotlib")
    rc, stdout, _ = run_bench(["--only", "G1", "--repeat", "1", "--quick", "--plot", str(tmp_path / "bars")], capsys)
    assert rc == 0 and f"wrote {tmp_path / 'bars.png'}" in stdout
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib now fails
    rc, stdout, stderr = run_bench(["--only", "G1", "--plot", str(tmp_path / "b.png")], capsys)
    assert rc == 2 and "--plot needs matplotlib" in stderr and stdout == ""


def test_plot_with_matplotlib(tmp_path, capsys):
    optional_module("matplotlib")
    png = tmp_path / "b.png"
    rc, _, _ = run_bench(["--only", "G1", "--repeat", "1", "--quick", "--plot", str(png)], capsys)
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _result(key, name, **speedups):
    return {"key": key, "name": name, "speedup_vs_numpy": speedups}


def test_speedup_figure_draws_one_bar_per_implementation_and_workload():
    optional_module("matplotlib")
    results = [_result("A", "affine", native=3.0, torch=0.5), _result("B", "conv", native=12.0)]
    fig = _cli_bench.speedup_figure(results, ["numpy", "native", "torch"], "(note)")
    ax = fig.axes[0]
    # two series share each workload's row: native 0.2 above its centre, torch 0.2 below
    bars = sorted((round(p.get_y() + p.get_height() / 2, 6), p.get_x(), p.get_x() + p.get_width())
                  for p in ax.patches)
    assert bars == [(-0.2, 1.0, 3.0), (0.2, 1.0, 0.5), (0.8, 1.0, 12.0)]
    assert sorted(t.get_text() for t in ax.texts) == ["0.50x", "12.00x", "3.00x"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A affine", "B conv"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fastnn native", "PyTorch CPU (autograd)"]
    lo, hi = ax.get_xlim()
    assert lo == pytest.approx(0.25) and hi == pytest.approx(24.0)
    assert ax.get_title() == "fastnn bench (note)"


def test_scaling_figure_draws_the_implementations_curves_and_linear():
    optional_module("matplotlib")
    rows = [{"impl": "native", "key": "A", "title": "affine", "speedup": {1: 1.0, 2: 1.9, 4: 3.5}},
            {"impl": "numpy", "key": "A", "title": "affine", "speedup": {1: 1.0, 2: 1.2, 4: 1.3}},
            {"impl": "native", "key": "C", "title": "conv", "speedup": {1: 1.0, 2: 1.7}}]
    fig = _cli_bench.scaling_figure(rows, [1, 2, 4], "native", "(note)")
    ax = fig.axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines == {"A affine": ([1, 2, 4], [1.0, 1.9, 3.5]), "C conv": ([1, 2], [1.0, 1.7]),
                     "linear": ([1, 2, 4], [1.0, 2.0, 4.0])}
    assert ax.get_xlabel() == "threads" and ax.get_ylabel() == "speed-up over 1 thread"


def test_plotting_leaves_the_callers_matplotlib_state_alone(tmp_path):
    matplotlib = optional_module("matplotlib")
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        import matplotlib.pyplot as plt
        figures = plt.get_fignums()
        _cli_bench.write_plot(tmp_path / "b.png", [_result("A", "affine", native=2.0)], ["native"], "(note)")
        _cli_bench.write_scaling_plot(tmp_path / "s.png", [{"impl": "native", "key": "A", "title": "affine",
                                                            "speedup": {1: 1.0, 2: 2.0}}], [1, 2], "native", "")
        _cli_train._plot_curves(tmp_path / "t.png", {"loss": [1.0], "test_loss": [1.0], "accuracy": [0.5],
                                                     "test_accuracy": [0.5]})
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures
        for name in ("b.png", "s.png", "t.png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(previous)


def test_runs_without_torch(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # as if torch were not installed
    out = tmp_path / "b.json"
    rc, stdout, _ = run_bench(["--only", "G1", "--repeat", "1", "--quick", "--json", str(out)], capsys)
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["implementations"]["torch"] == {"label": "PyTorch CPU (autograd)", "available": False,
                                                  "reason": "torch is not installed"}
    assert "torch" not in report["results"][0]["timings"]
    assert "skipped  : PyTorch CPU (autograd): torch is not installed" in stdout


def test_runs_without_threadpoolctl(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)   # as if it were not installed
    out = tmp_path / "b.json"
    rc, stdout, _ = run_bench(["--only", "G1", "--impl", "numpy", "--repeat", "1", "--quick",
                               "--json", str(out)], capsys)
    assert rc == 0
    machine = json.loads(out.read_text())["machine"]
    assert machine["blas"] is None
    assert machine["threads_applied"]["blas"] == "not controlled (threadpoolctl not installed)"
    assert "NumPy BLAS not controlled (threadpoolctl not installed)" in stdout


def test_only_unavailable_implementation_is_an_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    rc, _, stderr = run_bench(["--only", "G1", "--impl", "torch"], capsys)
    assert rc == 2 and "none of the implementations asked for is available" in stderr


def test_native_column_path(tmp_path, capsys, monkeypatch):
    """The native column, speed-ups and 'vs torch' with the reference module standing in for the native backend.

    This exercises the harness (not the kernels) where the extension is not built.
    """
    from fastnn import _config, _reference
    real_config = fastnn.config()
    fake = dict(real_config, native_available=True, native_error=None, simd_selected="stand-in", openmp=False)
    monkeypatch.setattr(_config._state, "native", _reference)
    monkeypatch.setattr(fastnn, "config", lambda: dict(fake))
    out = tmp_path / "n.json"
    impls = "native,numpy,torch" if TORCH else "native,numpy"
    rc, stdout, _ = run_bench(["--only", "G2,A", "--impl", impls, "--repeat", "2", "--quick",
                               "--json", str(out)], capsys)
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["primary"] == "native"
    for row in report["results"]:
        native, numpy_ = row["timings"]["native"], row["timings"]["numpy"]
        assert native["check"] == "ok" and numpy_["check"] == "reference"
        assert row["speedup_vs_numpy"]["native"] == pytest.approx(numpy_["median_ms"] / native["median_ms"])
        if TORCH:
            assert row["native_vs_torch"] == pytest.approx(row["timings"]["torch"]["median_ms"] / native["median_ms"])
        else:
            assert row["native_vs_torch"] is None
    header = next(line for line in stdout.splitlines() if line.startswith("workload"))
    assert header.index("native ms") < header.index("numpy ms") and "native/np" in header
    assert ("vs torch" in header) == TORCH
    assert "SIMD path stand-in" in stdout


def test_python_dash_m_fastnn_bench(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastnn.__file__)))
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "fastnn", "bench", "--only", "G1", "--impl", "numpy",
                           "--repeat", "1", "--quick", "--no-progress", "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["results"][0]["key"] == "G1"


# --- fastnn.benchmarks ---------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "keys"), [
    (None, list(B.WORKLOAD_KEYS)),
    ("conv,pool", ["C", "D", "E", "F"]),
    ("G", ["G1", "G2"]),
    ("h2, a", ["A", "H2"]),
    ("relu,affine-small", ["B", "H1"]),
    ("net", ["I", "J"]),
    ("activation", ["H1", "H2"]),
])
def test_select_workloads(spec, keys):
    assert [w.key for w in B.select_workloads(spec)] == keys


def test_select_workloads_rejects_unknown():
    with pytest.raises(ValueError, match="unknown workload"):
        B.select_workloads("A,K")


def test_workload_work_counts():
    # forward + input gradient + weight gradient: three GEMMs of 2*M*N*K flops each
    a = B.get_workload("A")
    assert a.flops(a.make_data()) == 3 * 2 * 128 * 784 * 512
    d = B.get_workload("D")
    assert d.flops(d.make_data()) == 3 * 2 * (64 * 28 * 28) * 32 * (16 * 3 * 3)
    s = B.get_workload("S")
    assert s.flops(s.make_data()) == 2 * 2048 ** 3
    assert s.flops(s.make_data(quick=True)) == 2 * 512 ** 3
    f = B.get_workload("F")
    x_bytes = 64 * 32 * 28 * 28 * 4
    y_elems = 64 * 32 * 14 * 14
    assert f.traffic_bytes(f.make_data()) == 2 * x_bytes + 2 * y_elems * 4 + 2 * y_elems * 8


def test_workload_data_is_deterministic_float32():
    for w in B.WORKLOADS[:3]:
        first, second = w.make_data(), w.make_data()
        for name, arr in first.items():
            if isinstance(arr, np.ndarray):
                assert arr.dtype in (np.float32, np.int64)
                np.testing.assert_array_equal(arr, second[name])
    j = B.get_workload("J")
    assert j.make_data(quick=True)["x"].shape[0] == B.J_IMAGES_QUICK
    assert j.make_data(quick=False)["x"].shape[0] == B.J_IMAGES


def test_compare_outputs_catches_layout_bugs():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((50, 50))
    ok, err = B.compare_outputs([g], [g.T.copy()])
    assert not ok and err > 0.1
    ok, err = B.compare_outputs([g], [g.astype(np.float32).astype(np.float64)])
    assert ok and err < 1e-6
    assert not B.compare_outputs([g], [g[:49]])[0]
    assert not B.compare_outputs([g], [np.full_like(g, np.nan)])[0]


def test_a_row_timing_another_dtype_fails_the_run(capsys, monkeypatch):
    # a closure that reads float64 copies of the data times another computation with the
    # same values: the value check passes it, the dtype check does not
    prepare = B.prepare

    def float64_numpy(workload, impl, data):
        fn = prepare(workload, impl, data)
        if impl != "numpy":
            return fn
        return lambda: [np.asarray(o, np.float64) for o in fn()]
    monkeypatch.setattr(B, "prepare", float64_numpy)
    rc, stdout, stderr = run_bench(["--only", "H1", "--impl", "numpy", "--repeat", "1", "--quick"], capsys)
    assert rc == 1
    assert "H1 numpy: results in float64, float64, not float32" in stdout + stderr
    assert B.wrong_dtypes([np.zeros(3, np.float32), np.float64(1.0)]) == []
    assert B.wrong_dtypes([np.zeros(3, np.float64)]) == ["float64"]


def test_an_implementation_failing_every_row_keeps_its_column_and_says_why(capsys, monkeypatch):
    prepare = B.prepare

    def broken_native(workload, impl, data):
        if impl != "native":
            return prepare(workload, impl, data)

        def fail():
            raise RuntimeError("the kernel broke")
        return fail
    monkeypatch.setattr(B, "prepare", broken_native)
    rc, stdout, stderr = run_bench(["--only", "H1,G1", "--impl", "native,numpy", "--repeat", "1", "--quick"], capsys)
    assert rc == 1
    header = next(line for line in stdout.splitlines() if line.lstrip().startswith("workload"))
    assert "native ms" in header and "numpy ms" in header
    assert "H1 native: RuntimeError: the kernel broke" in stdout + stderr
    assert "G1 native: RuntimeError: the kernel broke" in stdout + stderr


@pytest.mark.skipif(not TORCH, reason="torch not installed")
@pytest.mark.parametrize("key", ["A", "D", "F", "H2", "I", "S"])
def test_torch_matches_numpy_reference(key):
    workload = B.get_workload(key)
    data = workload.make_data(quick=True)
    with B.implementation_context("numpy"):
        ref = B.snapshot(B.prepare(workload, "numpy", data)())
    got = B.snapshot(B.prepare(workload, "torch", data)())
    ok, err = B.compare_outputs(ref, got)
    assert ok, err


@pytest.mark.parametrize(("cpu", "per_cycle"), [
    ({"flags": ["avx2", "fma", "avx512f"], "vendor": "GenuineIntel", "family": 6}, 64),
    ({"flags": ["avx2", "fma", "avx512f"], "vendor": "AuthenticAMD", "family": 25}, 32),
    ({"flags": ["avx2", "fma"], "vendor": "AuthenticAMD", "family": 25}, 32),
    ({"flags": ["avx"], "vendor": "GenuineIntel", "family": 6}, 16),
    ({"flags": [], "vendor": None, "family": None}, None),
])
def test_fma_flops_per_cycle(cpu, per_cycle):
    assert B.fma_flops_per_cycle(cpu) == per_cycle


def test_fma_peak_scales_with_cores_used():
    cpu = {"flags": ["avx2", "fma"], "vendor": "AuthenticAMD", "family": 25, "mhz": 3000.0, "usable_cores": 2}
    assert B.fma_peak(cpu, 1)[0] == pytest.approx(96.0)
    assert B.fma_peak(cpu, 4)[0] == pytest.approx(192.0)   # capped at the usable cores
    assert B.fma_peak(cpu, 1, override=50.0) == (50.0, "given with --peak-gflops")


def test_fma_peak_prefers_the_override_then_the_measurement():
    cpu = {"flags": ["avx2", "fma"], "vendor": "AuthenticAMD", "family": 25, "mhz": 3000.0, "usable_cores": 2}
    peak, basis = B.fma_peak(cpu, 2, measured=250.0)
    assert peak == 250.0 and basis.startswith("measured: independent FMA chains on 2 cores")
    assert "would say 192.0" in basis
    assert B.fma_peak(cpu, 2, override=50.0, measured=250.0)[0] == 50.0


def _simd_isas():
    if not fastnn.config()["native_available"]:
        return []
    from fastnn import _config, _info
    return [i for i in _info.compiled_isas() if 0 < i <= _config.ISA_NAMES.index(fastnn.config()["simd_cpu_best"])]


@pytest.mark.parametrize("isa", _simd_isas())
def test_fma_probe_counts_real_work(isa):
    from fastnn import _info
    lanes = 16 if isa == 2 else 8
    # a loop the compiler had removed, or a miscounted one, would give far more than two FMA pipes
    # of any core could (upper bound: 4 pipes at 6 GHz), or nothing
    ceiling = 4 * lanes * 2 * 6.0
    for threads in (1, 2):
        g = _info.fma_probe_gflops(isa, threads, 200_000)
        assert 0.5 < g < ceiling * threads, (isa, threads, g)
    assert _info.fma_probe_gflops(0, 1, 200_000) == 0.0        # the portable path has no probe
    assert _info.fma_probe_gflops(isa, 1, 0) == 0.0


@pytest.mark.skipif(not _simd_isas(), reason="needs the native extension with a SIMD path")
def test_machine_info_measures_the_peak_on_the_simd_path():
    # on the CPU's best path (FASTNN_SIMD may have chosen another for the run)
    before = fastnn.get_simd()
    try:
        fastnn.set_simd(fastnn.config()["simd_cpu_best"])
        info = B.machine_info(1, measure=True)
        assert info["peak_basis"].startswith("measured: independent FMA chains on 1 core ")
        assert info["peak_gflops"] > 0.5
        assert not B.machine_info(1, measure=False)["peak_basis"].startswith("measured")
        fastnn.set_simd("portable")
        assert B.measure_fma_peak(1) is None
    finally:
        fastnn.set_simd(before)


@pytest.mark.parametrize("key", ["A", "C", "F", "G2", "H2", "I", "S"])
def test_fastnn_workloads_stay_float32(key):
    # A fair NumPy baseline passes float32 through (the book's code silently computes in float64).
    workload = B.get_workload(key)
    with B.implementation_context("numpy"):
        outputs = B.prepare(workload, "numpy", workload.make_data(quick=True))()
    arrays = [o for o in outputs if isinstance(o, np.ndarray) and o.ndim > 0]
    assert arrays and all(a.dtype == np.float32 for a in arrays)


def test_evaluate_targets():
    results = [
        {"key": "C", "speedup_vs_numpy": {"native": 12.0, "torch": 1.0}, "native_vs_torch": 3.0,
         "timings": {"native": {}}},
        {"key": "H1", "speedup_vs_numpy": {"native": 4.0}, "native_vs_torch": None,
         "timings": {"native": {"copy_pct": 75.0}}},
        {"key": "S", "speedup_vs_numpy": {"native": 0.9}, "native_vs_torch": 1.1,
         "timings": {"native": {"peak_pct": 90.0}}},
    ]
    got = {(t["workload"], t["against"]): (t["target"], t["met"]) for t in B.evaluate_targets(results)}
    assert got == {("C", "numpy"): (10.0, True), ("C", "torch"): (4.0, False),
                   ("H1", "numpy"): (5.0, False), ("H1", "copy"): (70.0, True),
                   ("S", "numpy"): (0.95, False), ("S", "peak"): (85.0, True)}
    text = __import__("fastnn._cli_bench", fromlist=["format_targets"]).format_targets(B.evaluate_targets(results))
    assert text.splitlines()[0] == "targets (fastnn native): 3 of 6 met"
    assert "MISSED by 1.33x" in text and "MISSED by 1.25x" in text and "MISSED by 1.06x" in text
    assert "S  % of FMA peak" in text and "90.00%  (target 85%)  met" in text


def _scaling_row(key, kind, ms):
    return {"key": key, "kind": kind, "title": key, "impl": "native", "median_ms": ms}


def test_evaluate_scaling_targets():
    rows = [_scaling_row("A", "compute", {1: 4.0, 2: 2.0, 16: 1.0}),
            _scaling_row("E", "compute", {1: 32.0, 2: 20.0, 16: 2.5}),
            _scaling_row("F", "memory", {1: 1.0, 2: 1.0, 16: 0.5}),
            _scaling_row("S", "compute", {1: 160.0, 2: 85.0, 16: 14.0})]
    got = {(t["workload"], t["threads"]): (t["measured"], t["met"]) for t in B.evaluate_scaling_targets(rows)}
    # 2 threads: every compute-bound workload (F is memory-bound); 16 threads: S and E only
    assert got == {("A", 2): (2.0, True), ("E", 2): (1.6, False), ("S", 2): (pytest.approx(160 / 85), True),
                   ("E", 16): (12.8, True), ("S", 16): (pytest.approx(160 / 14), False)}
    without_one = [dict(r, median_ms={n: v for n, v in r["median_ms"].items() if n != 1}) for r in rows]
    assert B.evaluate_scaling_targets(without_one) == []   # no 1-thread timing to compare with
    text = __import__("fastnn._cli_bench", fromlist=["f"]).format_scaling_targets(B.evaluate_scaling_targets(rows))
    assert text.splitlines()[0] == "scaling targets (fastnn native, speed-up over 1 thread): 3 of 5 met"
    assert "MISSED by 1.16x" in text and "MISSED by 1.05x" in text


def test_a_sweep_times_native_at_the_thread_counts_in_turns(tmp_path, capsys, monkeypatch):
    """The scaling of fastnn native (and its targets) comes from a pass of its own in which the
    thread counts alternate within every round, not from the per-count tables minutes apart."""
    order = []
    real = B.time_callable

    def recording(fn, repeat, *args, **kwargs):
        timing = real(fn, repeat, *args, **kwargs)
        if fastnn.get_backend() == "native":
            order.append(fastnn.get_num_threads())
            # a machine on which each count's native time is fixed: 12 ms on 1 thread, 4 on 2
            timing.wall_ms = [{1: 12.0, 2: 4.0}[order[-1]]] * len(timing.wall_ms)
        return timing
    monkeypatch.setattr(B, "time_callable", recording)
    out = tmp_path / "s.json"
    rc, stdout, _ = run_bench(["--only", "G1,B", "--impl", "native,numpy", "--repeat", "4", "--rounds", "2",
                               "--quick", "--threads", "1,2", "--json", str(out)], capsys)
    assert rc == 0
    # the tables: 2 rounds of each workload at 1 thread, then at 2; the turns: 1, 2, 1, 2 per workload
    assert order == [1, 1, 1, 1, 2, 2, 2, 2] + [1, 2, 1, 2] * 2
    report = json.loads(out.read_text())
    native = {r["key"]: r for r in report["scaling"] if r["impl"] == "native"}
    assert {r["method"] for r in native.values()} == {"turns"}
    assert {r["method"] for r in report["scaling"] if r["impl"] == "numpy"} == {"tables"}
    for row in native.values():
        assert row["median_ms"] == {"1": 12.0, "2": 4.0} and row["speedup"]["2"] == pytest.approx(3.0)
        assert row["spread"] == {"1": 0.0, "2": 0.0}
    # G1 is memory-bound: B's is the one 2-thread target
    assert report["scaling_targets"] == [{"workload": "B", "threads": 2, "target": 1.85, "measured": 3.0,
                                          "met": True}]
    assert "==== fastnn native at 1, 2 threads in turns ====" in stdout
    assert "native: timed again after the tables, the thread counts taking turns in each round" in stdout
    assert "B    2 threads     3.00x  (target 1.85x)  met" in stdout


def test_a_sweep_times_in_turns_only_sound_native_cells_and_survives_a_failure(tmp_path, capsys, monkeypatch):
    """A workload whose native cell failed in a table is not timed again in turns; one whose
    timing in turns fails is left out with a line saying why, and the report is still written."""
    real_check, real_turns = _cli_bench.check_cell, _cli_bench.time_counts_in_turns
    timed = []

    def check(workload, impl, data, reference):
        if impl == "native" and workload.key == "G1" and fastnn.get_num_threads() == 2:
            raise RuntimeError("broken at 2 threads")
        return real_check(workload, impl, data, reference)

    def turns(fn, counts, settings, progress, label):
        timed.append(label.split()[0])
        if label.startswith("B "):
            raise RuntimeError("turns went wrong")
        return real_turns(fn, counts, settings, progress, label)
    monkeypatch.setattr(_cli_bench, "check_cell", check)
    monkeypatch.setattr(_cli_bench, "time_counts_in_turns", turns)
    out = tmp_path / "s.json"
    rc, stdout, _ = run_bench(["--only", "G1,B,G2", "--impl", "native,numpy", "--repeat", "1", "--quick",
                               "--threads", "1,2", "--json", str(out)], capsys)
    assert timed == ["B", "G2"]          # G1's native cell failed in the 2-thread table
    assert "B: native not timed in turns (RuntimeError: turns went wrong)" in stdout
    report = json.loads(out.read_text())
    assert [r["key"] for r in report["scaling"] if r["impl"] == "native" and r["method"] == "turns"] == ["G2"]
    assert rc != 0                       # the failed table cell still fails the run


def test_thread_sweep(tmp_path, capsys):
    out, md = tmp_path / "s.json", tmp_path / "s.md"
    rc, stdout, _ = run_bench(["--only", "G1,S", "--impl", "numpy", "--repeat", "1", "--quick", "--threads", "2,1",
                               "--peak-gflops", "50", "--json", str(out), "--markdown", str(md)], capsys)
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "fastnn-bench-scaling/1" and report["threads"] == [1, 2]
    assert "--threads 1,2 " in report["command"]
    assert [r["settings"]["threads"] for r in report["runs"]] == [1, 2]
    for r, n in zip(report["runs"], (1, 2)):
        assert r["schema"] == "fastnn-bench/1" and f"--threads {n} " in r["command"]
        assert r["machine"]["threads"] == n and r["machine"]["peak_gflops"] == pytest.approx(50.0 * n)
        assert [row["key"] for row in r["results"]] == ["G1", "S"]
    ms = {(r["settings"]["threads"], row["key"]): row["timings"]["numpy"]["median_ms"]
          for r in report["runs"] for row in r["results"]}
    rows = {row["key"]: row for row in report["scaling"]}
    assert set(rows) == {"G1", "S"} and all(row["impl"] == "numpy" for row in rows.values())
    for key, row in rows.items():
        assert row["median_ms"] == {"1": ms[(1, key)], "2": ms[(2, key)]}
        assert row["speedup"]["2"] == pytest.approx(ms[(1, key)] / ms[(2, key)])
        assert row["speedup"]["1"] == pytest.approx(1.0)
    assert report["scaling_targets"] == []   # they are fastnn native's
    assert "==== 1 thread ====" in stdout and "==== 2 threads ====" in stdout
    assert "scaling: median ms at each thread count (speed-up over 1 thread)" in stdout
    text = md.read_text()
    assert "### 1 thread(s)" in text and "### 2 thread(s)" in text and "### Scaling" in text


def test_thread_sweep_plot(tmp_path, capsys):
    optional_module("matplotlib")
    png = tmp_path / "s.png"
    rc, _, _ = run_bench(["--only", "G1", "--repeat", "1", "--quick", "--threads", "1,2", "--plot", str(png)],
                         capsys)
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_targets_without_native(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc, stdout, _ = run_bench(["--only", "G1", "--impl", "numpy", "--repeat", "1", "--quick", "--json", str(out)],
                              capsys)
    assert rc == 0 and json.loads(out.read_text())["targets"] == [] and "targets (fastnn native)" not in stdout


def test_a_home_relative_output_path_is_written_where_it_was_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    rc, stdout, _ = run_bench(["--only", "G1", "--impl", "numpy", "--repeat", "1", "--quick", "--json", "~/b.json"],
                              capsys)
    assert rc == 0 and json.loads((tmp_path / "b.json").read_text())["results"]
    assert f"wrote {tmp_path / 'b.json'}" in stdout


def test_copy_bytes_like_moves_the_rows_bytes():
    assert B.copy_bytes_like(22478848) == 11239424      # F: half read, half written
    assert B.copy_bytes_like(10) == 4 and B.copy_bytes_like(7) % 4 == 0


def test_samples_are_split_over_the_rounds_without_losing_any():
    from fastnn._cli_bench import _round_sizes
    assert _round_sizes(5, 2) == [3, 2] and _round_sizes(12, 3) == [4, 4, 4] and _round_sizes(2, 3) == [1, 1]



def test_only_help_names_every_letter_and_tag(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert "letters (A, B, C, D, E, F, G, H, I, J, S)" in flat
    for tag in ("gemm", "linear", "loss", "conv", "pool"):
        assert tag in flat.split("or tags (")[1].split(")")[0]
