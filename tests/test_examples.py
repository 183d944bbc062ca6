"""Every example runs in its fast mode and its printed result meets a real threshold."""
import contextlib
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn
from helpers import make_mnist_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def example(monkeypatch):
    """Import an example module by name (examples/ on sys.path), with NumPy's BLAS on one thread."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            # The examples' matrices are small: BLAS threads only contend on a busy 2-core machine.
            stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        # Likewise the native kernels: these tests check results, not speed.
        threads = fastnn.get_num_threads()
        fastnn.set_num_threads(1)
        stack.callback(fastnn.set_num_threads, threads)

        def load(name):
            module = importlib.import_module(name)
            return importlib.reload(module)
        yield load


def is_mnist(result):
    return result["dataset"].startswith("MNIST")


def test_logic_gates(example, capsys):
    result = example("logic_gates").main(["--fast"])
    out = capsys.readouterr().out
    assert result["AND"] and result["NAND"] and result["OR"]      # one perceptron each
    assert not result["XOR"]                                      # no single perceptron computes XOR
    assert "XOR : [" in out and "did not converge" in out
    assert result["wired_xor"]                                    # AND(NAND, OR)
    assert result["xor_network_accuracy"] == 1.0
    assert result["xor_network_loss"] < 0.1
    assert "XOR network predictions [0, 1, 1, 0]" in out


def test_parabola_regression(example, capsys):
    result = example("parabola_regression").main(["--fast"])
    out = capsys.readouterr().out
    assert out.count("mse") >= 11                                  # the loss curve, every 100 steps
    assert result["initial_loss"] > 0.1
    assert result["final_loss"] < 0.02                             # the noise (std 0.1) floor is 0.01
    assert result["fit_error"] < 0.01                              # close to the noiseless parabola


def test_mnist_two_layer(example, capsys):
    result = example("mnist_two_layer").main(["--fast"])
    out = capsys.readouterr().out
    assert "data:" in out
    assert result["test_accuracy"] >= (0.88 if is_mnist(result) else 0.9)


def test_mnist_two_layer_falls_back_to_digits(example, capsys, monkeypatch, tmp_path):
    common = example("_common")
    monkeypatch.setattr(common, "SHARED_MNIST", tmp_path / "absent")
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    module = importlib.import_module("mnist_two_layer")
    result = module.main(["--fast"])
    out = capsys.readouterr().out
    assert "falling back to the shipped 8x8 digits set" in out
    assert result["dataset"] == "digits 8x8"
    assert result["test_accuracy"] >= 0.9


def test_a_small_t10k_directory_is_split_as_the_cli_splits_it(example, capsys, tmp_path):
    make_mnist_dir(tmp_path, n_test=50, splits=("t10k",))
    (x_train, t_train), (x_test, t_test), name = example("_common").load_images(str(tmp_path))
    assert len(x_train) == 40 and len(x_test) == 10 and name == "MNIST (t10k only: 40 train / 10 test)"
    make_mnist_dir(tmp_path, n_test=1, splits=("t10k",))
    with pytest.raises(SystemExit, match="too few to split"):
        example("_common").load_images(str(tmp_path))


def test_simple_convnet(example, capsys):
    result = example("simple_convnet").main(["--fast"])
    out = capsys.readouterr().out
    assert "epoch   1" in out
    assert result["test_accuracy"] >= (0.78 if is_mnist(result) else 0.85)


def test_keras_binary_classifier(example, capsys):
    result = example("keras_binary_classifier").main(["--fast"])
    out = capsys.readouterr().out
    assert "Total params: 289" in out                              # 8*16+16 + 16*8+8 + 8+1
    assert result["baseline"] < 0.6
    assert result["test_accuracy"] >= 0.72
    assert result["reload_identical"]


def test_optimizer_comparison(example, capsys, tmp_path):
    plot = tmp_path / "optimizers.png"
    result = example("optimizer_comparison").main(["--fast", "--plot", str(plot)])
    out = capsys.readouterr().out
    final = result["final_loss"]
    assert set(final) == {"SGD", "Momentum", "AdaGrad", "Adam"}
    for name in ("Momentum", "AdaGrad", "Adam"):
        assert final[name] < 0.5 * final["SGD"], final             # the book's finding
    assert final["SGD"] < 2.0                                       # SGD learns too, only slower
    assert plot.is_file() or "matplotlib is not installed" in out


def test_weight_init_comparison(example, capsys, tmp_path):
    plot = tmp_path / "init.png"
    result = example("weight_init_comparison").main(["--fast", "--plot", str(plot)])
    out = capsys.readouterr().out
    final = result["final_loss"]
    assert final["std=0.01"] > 2.2                                  # barely moves from ln(10) = 2.303
    assert final["He"] < final["Xavier"] < final["std=0.01"]
    assert final["He"] < 1.0
    assert plot.is_file() or "matplotlib is not installed" in out


def test_overfitting(example, capsys):
    result = example("overfitting").main(["--fast"])
    out = capsys.readouterr().out
    runs = result["results"]
    plain = runs["no regularisation"]
    assert plain["train_accuracy"] >= 0.99                          # memorised the 300 images

    def loss_ratio(run):
        return run["test_loss"] / run["train_loss"]

    for name in ("weight decay 0.1", "dropout 0.5"):
        assert loss_ratio(runs[name]) < 0.5 * loss_ratio(plain), (name, runs)
        if is_mnist(result):
            assert runs[name]["gap"] < plain["gap"] - 0.03, (name, runs)
    assert "train - test accuracy gap" in out


def test_batch_norm(example, capsys):
    result = example("batch_norm").main(["--fast"])
    capsys.readouterr()
    assert result["wins"] == len(result["results"]) == 3
    # At the scale where the plain network is stuck (0.01), batch norm learns the training set.
    assert result["results"][0.01]["plain"] < 0.3
    assert result["results"][0.01]["batchnorm"] > 0.9


def test_backend_speedup(example, capsys):
    previous = fastnn.get_backend()
    result = example("backend_speedup").main(["--fast"])
    out = capsys.readouterr().out
    assert fastnn.get_backend() == previous
    if not fastnn.config()["native_available"]:
        assert result == {"native_available": False}
        assert "native backend is not available" in out
    else:
        assert result["losses_agree"]
        # the printed ratio is the one of the printed times (a timing itself is never asserted)
        native_ms, numpy_ms, printed = map(float, re.search(
            r"train step: native +([0-9.]+) ms +numpy +([0-9.]+) ms +speed-up ([0-9.]+)x", out).groups())
        assert printed == pytest.approx(numpy_ms / native_ms, abs=0.01 + 0.01 * printed)
        assert printed == pytest.approx(result["train_speedup"], abs=0.006)


def test_examples_run_as_scripts_from_a_checkout(tmp_path):
    # As a user would run them: `python examples/<name>.py`, fast mode from the environment,
    # from any directory, without fastnn installed (the checkout is found next to examples/).
    env = dict(os.environ, FASTNN_EXAMPLES_FAST="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    for name, expected in (("logic_gates.py", "accuracy 100%"), ("backend_speedup.py", "")):
        proc = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert expected in proc.stdout


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    assert scripts <= tested, scripts - tested


def test_plots_are_skipped_with_a_message_without_matplotlib(example, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    saved = example("_common").save_plot(str(tmp_path / "p.png"), "t", "x", "y", {"a": [1.0, 2.0]})
    assert saved is False and not (tmp_path / "p.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().out
