import gzip
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import _cli_train
from fastnn._config import usable_cores
from fastnn.cli import main
from conftest import optional_module
from helpers import idx_bytes

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def accuracy_from(output):
    match = re.search(r"test accuracy: ([0-9.]+) \((\d+)/(\d+)\)", output)
    assert match, output
    accuracy, correct, total = float(match.group(1)), int(match.group(2)), int(match.group(3))
    assert abs(accuracy - correct / total) < 1e-3
    return accuracy, total


def seconds_per_epoch_from(output):
    match = re.search(r"time per epoch: ([0-9.]+) s", output)
    assert match, output
    return float(match.group(1))


def train(capsys, *argv):
    rc = main(["train", "--threads", "1", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_default_run_reaches_97_percent_on_digits(capsys):
    # The main job with its defaults (only --threads 1 to keep a busy test machine's BLAS calm).
    rc, out, _ = train(capsys, "--quiet")
    assert rc == 0
    accuracy, total = accuracy_from(out)
    assert total == 359
    assert accuracy >= 0.97
    assert "cnn on digits" in out and "10 epochs" in out
    assert seconds_per_epoch_from(out) > 0


def test_one_epoch_with_progress_bar(capsys):
    rc, out, _ = train(capsys, "--epochs", "1")
    assert rc == 0
    assert "Epoch 1/1" in out
    assert re.search(r"1438/1438 \[=+\]", out)          # the progress bar's final line
    assert "test_accuracy:" in out                        # test accuracy reported per epoch
    assert "Total params" in out                          # the model summary
    accuracy, _ = accuracy_from(out)
    assert accuracy > 0.8


@pytest.mark.parametrize("model", ["mlp", "lenet", "simple-convnet"])
def test_other_models_learn(capsys, model):
    rc, out, _ = train(capsys, "--quiet", "--model", model, "--epochs", "3", "--batch-size", "16")
    assert rc == 0, out
    accuracy, _ = accuracy_from(out)
    assert accuracy > 0.8, out


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop"])
def test_optimizers_and_lr(capsys, optimizer):
    rc, out, _ = train(capsys, "--quiet", "--model", "mlp", "--epochs", "3", "--optimizer", optimizer)
    assert rc == 0
    assert optimizer in out
    assert accuracy_from(out)[0] > 0.7
    rc, out, _ = train(capsys, "--quiet", "--model", "mlp", "--epochs", "1", "--optimizer", optimizer,
                       "--lr", "1e-9")
    assert rc == 0 and "lr 1e-09" in out
    assert accuracy_from(out)[0] < 0.5  # a learning rate of 1e-9 leaves the network untrained


def test_seed_makes_runs_repeatable(capsys):
    outs = [train(capsys, "--quiet", "--model", "mlp", "--epochs", "1", "--seed", "7")[1] for _ in range(2)]
    other = train(capsys, "--quiet", "--model", "mlp", "--epochs", "1", "--seed", "8")[1]
    assert accuracy_from(outs[0]) == accuracy_from(outs[1])
    line = [ln for ln in outs[0].splitlines() if ln.startswith("test accuracy")][0]
    assert line in outs[1]
    assert re.search(r"test loss ([0-9.]+)", other).group(1) != re.search(r"test loss ([0-9.]+)", outs[0]).group(1)


def test_save_and_plot(capsys, tmp_path):
    model_path = tmp_path / "model.npz"
    plot_path = tmp_path / "curves.png"
    rc, out, err = train(capsys, "--quiet", "--model", "mlp", "--epochs", "2", "--save", str(model_path),
                         "--plot", str(plot_path))
    assert rc == 0
    assert model_path.is_file()
    accuracy, _ = accuracy_from(out)
    model = fastnn.nn.load_model(str(model_path))
    (_, _), (x_test, t_test) = fastnn.datasets.load_digits(flatten=False)
    predicted = np.argmax(model.predict(x_test), axis=1)
    assert abs(np.mean(predicted == t_test) - accuracy) < 1e-3
    if importlib.util.find_spec("matplotlib") is None:
        assert "needs matplotlib" in err and not plot_path.exists()
    else:
        assert plot_path.is_file() and plot_path.stat().st_size > 1000


def idx(array):
    return gzip.compress(idx_bytes(array))


def test_mnist_from_a_data_dir(capsys, tmp_path):
    # A learnable toy set in MNIST format: class k is a bright bar at row 2k.
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 50)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 * k:2 * k + 2, 4:24] = 255
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(idx(images))
        (tmp_path / f"{split}-labels-idx1-ubyte.gz").write_bytes(idx(labels))
    rc, out, _ = train(capsys, "--quiet", "--dataset", "mnist", "--data-dir", str(tmp_path), "--model", "mlp",
                       "--epochs", "5")
    assert rc == 0, out
    accuracy, total = accuracy_from(out)
    assert total == 50 and accuracy >= 0.9
    assert "200 train / 50 test" in out


def test_a_small_test_set_only_is_split_in_proportion(capsys, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 45)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(idx(rng.integers(0, 255, (45, 28, 28))))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(labels))
    (x_train, t_train), (x_test, t_test), name = _cli_train.load_data("mnist", str(tmp_path))
    assert len(x_train) == 36 and len(x_test) == 9 and name == "mnist (t10k split 36/9)"
    np.testing.assert_array_equal(np.concatenate([t_train, t_test]), labels)
    assert "training on its first 36 images and testing on the last 9" in capsys.readouterr().out
    for n in (1, 0):
        (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(idx(np.zeros((n, 28, 28))))
        (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(np.zeros(n)))
        rc, _, err = train(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path))
        assert rc == 2 and "too few to split" in err


def test_an_empty_training_set_is_refused(capsys, tmp_path):
    for split, n in (("train", 0), ("t10k", 5)):
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(idx(np.zeros((n, 28, 28))))
        (tmp_path / f"{split}-labels-idx1-ubyte.gz").write_bytes(idx(np.zeros(n)))
    rc, _, err = train(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert rc == 2 and "the mnist training set has no images" in err


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared/data/mnist not present")
def test_shared_mnist_test_set_only_is_split():
    from fastnn import _cli_train
    (x_train, t_train), (x_test, t_test), name = _cli_train.load_data("mnist", str(SHARED_MNIST))
    assert x_train.shape == (8000, 1, 28, 28) and x_test.shape == (2000, 1, 28, 28)
    assert "8000/2000" in name


def test_user_errors_exit_2_with_a_message(capsys, tmp_path):
    for argv, message in [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
        (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--threads", str(4 * usable_cores() + 1)], f"--threads must be between 1 and {4 * usable_cores()}"),
        (["--save", str(tmp_path)], "is a directory"),
        (["--data-dir", str(tmp_path)], "--data-dir applies to mnist"),
        (["--dataset", "mnist", "--data-dir", str(tmp_path)], "no mnist files"),
        (["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "absent")], "not a directory"),
        (["--save", str(tmp_path / "no" / "m.npz")], "does not exist"),
    ]:
        rc, _, err = train(capsys, *argv)
        assert rc == 2, argv
        assert message in err, (argv, err)
    rc = main(["train", "--threads", "0"])
    assert rc == 2 and "--threads must be between 1 and" in capsys.readouterr().err


def test_plot_paths_are_checked_before_training(capsys, tmp_path):
    optional_module("matplotlib")
    for where, message in ((tmp_path, "is a directory"), (tmp_path / "c.xyz", "matplotlib cannot write .xyz"),
                           (tmp_path / "no" / "c.png", "does not exist")):
        rc, out, err = train(capsys, "--quiet", "--model", "mlp", "--plot", str(where))
        assert rc == 2 and out == "" and message in err
    rc, out, _ = train(capsys, "--quiet", "--model", "mlp", "--epochs", "1", "--plot", str(tmp_path / "curves"))
    assert rc == 0 and f"curves saved to {tmp_path / 'curves.png'}" in out
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_native_backend_request(capsys):
    if fastnn.config()["native_available"]:
        rc, out, _ = train(capsys, "--quiet", "--backend", "native", "--model", "mlp", "--epochs", "1")
        assert rc == 0 and "backend native" in out
    else:
        rc, _, err = train(capsys, "--backend", "native")
        assert rc == 2 and "native backend is not available" in err
    previous = fastnn.get_backend(), fastnn.get_num_threads()
    rc, out, _ = train(capsys, "--quiet", "--backend", "numpy", "--model", "mlp", "--epochs", "1")
    assert rc == 0 and "backend numpy" in out and "1 thread," in out
    assert (fastnn.get_backend(), fastnn.get_num_threads()) == previous  # the caller's settings are kept


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--dataset", "--data-dir", "--model", "--epochs", "--batch-size", "--optimizer", "--lr",
                   "--backend", "--threads", "--seed", "--save", "--plot"):
        assert option in out
    flat = " ".join(out.split())
    assert "(default: None)" not in flat                   # options without one say what happens instead
    for shown in (f"(default: {_cli_train.DEFAULT_EPOCHS})", f"(default: {_cli_train.DEFAULT_BATCH_SIZE})",
                  "(default: adam)", "adam 0.001", "$OMP_NUM_THREADS, else every usable core"):
        assert shown in flat


def test_curves_figure_plots_train_and_test_per_epoch():
    optional_module("matplotlib")
    history = {"loss": [0.9, 0.5, 0.3], "test_loss": [1.0, 0.6, 0.4],
               "accuracy": [0.7, 0.85, 0.9], "test_accuracy": [0.65, 0.8, 0.88]}
    loss_ax, accuracy_ax = _cli_train.curves_figure(history).axes

    def curves(ax):
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert curves(loss_ax) == {"train": ([1, 2, 3], [0.9, 0.5, 0.3]), "test": ([1, 2, 3], [1.0, 0.6, 0.4])}
    assert curves(accuracy_ax) == {"train": ([1, 2, 3], [0.7, 0.85, 0.9]), "test": ([1, 2, 3], [0.65, 0.8, 0.88])}
    # a single epoch is a point, visible only with a marker
    assert all(line.get_marker() not in (None, "None", "", " ") for line in loss_ax.get_lines())
    assert (loss_ax.get_ylabel(), accuracy_ax.get_ylabel()) == ("loss", "accuracy")


def test_plot_without_matplotlib_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    plot_path = tmp_path / "curves.png"
    rc, out, err = train(capsys, "--quiet", "--model", "mlp", "--epochs", "1", "--plot", str(plot_path))
    assert rc == 0
    assert "--plot needs matplotlib" in err and not plot_path.exists()
    assert "test accuracy:" in out


def test_a_home_relative_save_path_is_written_where_it_was_checked(capsys, tmp_path, monkeypatch):
    # the shell does not expand ~ in --save=~/m.npz, nor does a call from Python
    monkeypatch.setenv("HOME", str(tmp_path))
    rc, out, _ = train(capsys, "--quiet", "--model", "mlp", "--epochs", "1", "--save=~/m.npz")
    assert rc == 0 and (tmp_path / "m.npz").is_file()
    assert f"model saved to {tmp_path / 'm.npz'}" in out


@pytest.mark.parametrize("stop_epoch", [0, 1])
def test_ctrl_c_reports_saves_and_exits_130(capsys, tmp_path, monkeypatch, stop_epoch):
    import signal
    make_reporter = _cli_train._epoch_reporter

    def pressing_ctrl_c(*args):
        reporter = make_reporter(*args)

        def on_train_batch_end(batch, logs=None):
            if batch == 2 and len(reporter.epoch_seconds) == stop_epoch:
                signal.raise_signal(signal.SIGINT)      # what a press does, caught by fit
        reporter.on_train_batch_end = on_train_batch_end
        return reporter
    monkeypatch.setattr(_cli_train, "_epoch_reporter", pressing_ctrl_c)
    saved, plot = tmp_path / "m.npz", tmp_path / "curves.png"
    rc, out, err = train(capsys, "--quiet", "--model", "mlp", "--epochs", "3", "--save", str(saved),
                         "--plot", str(plot))
    assert rc == 130
    assert "interrupted" in err and saved.is_file()
    accuracy_from(out)                                   # the model as it is, evaluated
    if stop_epoch == 0:
        assert "time: no epoch completed" in out and "time per epoch" not in out
        assert not plot.exists()
        assert ("needs matplotlib" in err if importlib.util.find_spec("matplotlib") is None
                else f"--plot {plot} not written: no epoch completed" in err), err
    else:
        assert re.search(r"time per epoch: [0-9.]+ s \(.*, 1 epoch\)", out), out
        assert plot.exists() or "needs matplotlib" in err


def test_an_empty_data_dir_is_refused_not_read_as_the_working_directory(capsys):
    rc, _, err = train(capsys, "--dataset", "mnist", "--data-dir", "")
    assert rc == 2 and "path is empty" in err



def test_optimizer_batch_size_and_seed_options_take_effect(capsys, tmp_path, monkeypatch):
    make_reporter, steps = _cli_train._epoch_reporter, []

    def recording(*args):
        reporter = make_reporter(*args)
        reporter.on_train_begin = lambda logs=None: steps.append(reporter.params["steps"])
        return reporter
    monkeypatch.setattr(_cli_train, "_epoch_reporter", recording)
    path = tmp_path / "m.npz"
    rc, out, _ = train(capsys, "--model", "mlp", "--epochs", "1", "--batch-size", "100", "--optimizer", "sgd",
                       "--lr", "1e-9", "--seed", "7", "--save", str(path))
    assert rc == 0
    assert steps == [15]                                  # ceil(1438 / 100) batches of the digits' training set
    config = fastnn.nn.load_model(path).optimizer.get_config()
    assert config["name"] == "SGD" and config["lr"] == 1e-9
    # One epoch's test accuracy in the progress line is the one reported at the end.
    per_epoch = re.search(r"test_accuracy: ([0-9.]+)", out).group(1)
    assert float(per_epoch) == pytest.approx(accuracy_from(out)[0], abs=1e-4)
    losses = {}
    for seed in ("7", "8"):                               # lr 1e-9: the test loss is the initial weights'
        rc, out, _ = train(capsys, "--quiet", "--model", "mlp", "--epochs", "1", "--optimizer", "sgd",
                           "--lr", "1e-9", "--seed", seed)
        losses[seed] = re.search(r"test loss ([0-9.]+)", out).group(1)
    assert losses["7"] != losses["8"]
