"""Run-time configuration: version, threads, backend selection, SIMD path, show_config."""
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

import fastnn
from fastnn import _config, _reference
from conftest import NATIVE, requires_native


def run_python(code, **env):
    """Run code in a fresh interpreter (import-time behaviour), from a neutral directory so
    that the fastnn under test (installed, or on PYTHONPATH) is the one imported."""
    full_env = dict(os.environ)
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=full_env, cwd=tempfile.gettempdir(), timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_version_is_pep440_like():
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", fastnn.__version__)


def test_num_threads_roundtrip_and_validation():
    old = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(3)
        assert fastnn.get_num_threads() == 3
        with pytest.raises(ValueError, match="set_num_threads"):
            fastnn.set_num_threads(0)
        with pytest.raises(TypeError, match="set_num_threads"):
            fastnn.set_num_threads(2.5)
        with pytest.raises(TypeError, match="set_num_threads"):
            fastnn.set_num_threads(True)
        with pytest.raises(ValueError, match="set_num_threads: expected 1 <= n <= 1024, got 2147483648"):
            fastnn.set_num_threads(2**31)           # past a C int: every native call failed after
        assert fastnn.get_num_threads() == 3
        fastnn.set_num_threads(1024)
        assert fastnn.get_num_threads() == 1024
    finally:
        fastnn.set_num_threads(old)


def test_num_threads_default_follows_omp_num_threads():
    assert run_python("import fastnn; print(fastnn.get_num_threads())", OMP_NUM_THREADS="5") == "5"
    # An unparsable value falls back to the core count rather than failing the import.
    n = int(run_python("import fastnn; print(fastnn.get_num_threads())", OMP_NUM_THREADS="lots"))
    assert n == fastnn._config.usable_cores()
    # So does a count set_num_threads refuses, rather than one that breaks every native call.
    code = "import fastnn, numpy as np; fastnn.ops.relu(np.ones(3)); print(fastnn.get_num_threads())"
    assert run_python(code, OMP_NUM_THREADS="99999999999") == str(n)


def test_backend_validation_and_context_manager():
    start = fastnn.get_backend()
    with pytest.raises(ValueError, match="set_backend"):
        fastnn.set_backend("cuda")
    with fastnn.backend("numpy"):
        assert fastnn.get_backend() == "numpy"
    assert fastnn.get_backend() == start
    with pytest.raises(RuntimeError):
        with fastnn.backend("numpy"):
            raise RuntimeError("boom")
    assert fastnn.get_backend() == start


def test_backend_context_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def worker():
        with fastnn.backend("numpy"):
            inside.set()
            release.wait(10)
            seen["worker"] = fastnn.get_backend()
            seen["worker ops"] = _config.active_backend()   # the module fastnn.ops dispatches to

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(10)
    seen["main"] = fastnn.get_backend()
    seen["main ops"] = _config.active_backend()
    release.set()
    t.join()
    assert seen["worker"] == "numpy" and seen["worker ops"] is _reference
    assert seen["main"] == ("native" if NATIVE else "numpy")
    assert seen["main ops"] is (_config._state.native if NATIVE else _reference)
    # the ops skip the per-thread lookup while no block is open anywhere, and find one again
    assert _config._state.overrides == 0
    with fastnn.backend("numpy"):
        assert _config.active_backend() is _reference
    assert _config.active_backend() is (_config._state.native if NATIVE else _reference)


def test_environment_selects_numpy_backend_at_import():
    assert run_python("import fastnn; print(fastnn.get_backend())", FASTNN_BACKEND="numpy") == "numpy"


@pytest.mark.parametrize("variable", ["FASTNN_BACKEND", "FASTNN_CONV_ALGORITHM", "FASTNN_MEMORY_CACHE"]
                         + (["FASTNN_SIMD"] if NATIVE else []))
def test_a_bad_environment_value_fails_the_import_naming_the_variable(variable):
    out = subprocess.run([sys.executable, "-c", "import fastnn"], capture_output=True, text=True,
                         env=dict(os.environ, **{variable: "bogus"}), cwd=tempfile.gettempdir(), timeout=120)
    assert out.returncode != 0
    assert f"ValueError: the environment variable {variable}='bogus' is not valid" in out.stderr


def test_missing_extension_falls_back_with_reason():
    code = """
        import sys
        sys.modules['fastnn._gemm'] = None   # makes `import fastnn._gemm` fail
        import fastnn
        cfg = fastnn.config()
        print(cfg['native_available'], fastnn.get_backend())
        fastnn.show_config()
        try:
            fastnn.set_backend('native')
        except RuntimeError as exc:
            print('refused:', exc)
    """
    out = run_python(code)
    first = out.splitlines()[0]
    assert first == "False numpy"
    assert "NOT loaded" in out and "fastnn._gemm" in out
    assert "refused: set_backend: the native extension is not available" in out


def test_show_config_reports_build(capsys):
    fastnn.show_config()
    out = capsys.readouterr().out
    assert out.startswith(f"fastnn {fastnn.__version__}")
    assert "threads" in out and str(fastnn.get_num_threads()) in out
    if NATIVE:
        assert "native extension : loaded" in out
        assert "OpenMP" in out and "SIMD on this CPU" in out
        limit = fastnn.memory_cache_info()["limit"]
        assert f"memory cache     : {limit / 2**20:g} MiB" in out
        assert fastnn.config()["memory_cache_limit"] == limit


@requires_native
def test_simd_selection():
    cfg = fastnn.config()
    assert "portable" in cfg["simd_compiled"]
    best = cfg["simd_cpu_best"]
    old = fastnn.get_simd()
    try:
        fastnn.set_simd("portable")
        assert fastnn.get_simd() == "portable"
        fastnn.set_simd(best)
        assert fastnn.get_simd() == best
        with pytest.raises(ValueError, match="set_simd"):
            fastnn.set_simd("neon")
    finally:
        fastnn.set_simd(old)
    out = run_python("import fastnn; print(fastnn.get_simd())", FASTNN_SIMD="portable")
    assert out == "portable"


def test_cli_info(capsys):
    from fastnn.cli import main
    assert main(["info"]) == 0
    assert "fastnn" in capsys.readouterr().out


def test_keep_freed_memory_applies_on_glibc():
    import platform
    applied = run_python("import fastnn; print(fastnn.keep_freed_memory())")
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert applied == str(expected)


def test_a_package_without_its_extension_says_it_is_not_built(tmp_path):
    import shutil
    package = Path(fastnn.__file__).parent
    shutil.copytree(package, tmp_path / "fastnn",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    out = subprocess.run([sys.executable, "-c", "import fastnn; print(fastnn.config()['native_error']); "
                          "print(fastnn.get_backend())"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path)), cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    error, backend = out.stdout.strip().splitlines()
    assert error.startswith("the compiled extension is not built: no fastnn._info module in")
    assert "circular import" not in error and backend == "numpy"
