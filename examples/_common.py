"""Shared plumbing for the examples: argument parsing, data loading, book-style networks, plots.

Not an example itself. The networks below only wire fastnn.layers together
(the math is in fastnn.ops); they follow the book's common/multi_layer_net*.py.
"""
import argparse
import importlib.util
import os
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

if importlib.util.find_spec("fastnn") is None:
    # Run from a source checkout without installing: use the checkout's package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastnn import datasets  # noqa: E402
from fastnn.layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid, SoftmaxWithLoss  # noqa: E402

# examples/ sits in the repository; a shared data directory may sit beside the repository.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def fast_mode_requested(argv_fast):
    return bool(argv_fast) or os.environ.get("FASTNN_EXAMPLES_FAST", "") not in ("", "0")


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--fast", action="store_true",
                   help="a quick, smaller run (also FASTNN_EXAMPLES_FAST=1); used by the tests")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def add_data_dir(p):
    p.add_argument("--data-dir", default=None,
                   help="a directory of MNIST IDX files (default: ../shared/data/mnist, then the fastnn cache, "
                        "then the shipped 8x8 digits set)")


def _mnist_files_in(directory):
    if directory is None or not Path(directory).is_dir():
        return False
    names = [name for name, _ in datasets.MNIST_FILES.values()]
    return any((Path(directory) / n).is_file() or (Path(directory) / n[:-3]).is_file() for n in names)


def load_images(data_dir=None, flatten=True, max_train=None, max_test=None, seed=0):
    """MNIST when it can be found locally, else the shipped digits set; says which it uses.

    Returns (x_train, t_train), (x_test, t_test), name. When the directory holds
    only the MNIST test set (as ../shared/data/mnist does), its 10,000 images are
    split 8,000 for training and 2,000 for testing.
    """
    candidates = [data_dir] if data_dir is not None else [SHARED_MNIST, datasets.data_home() / "mnist"]
    for directory in candidates:
        if not _mnist_files_in(directory):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # only one split present: handled below
            (x_train, t_train), (x_test, t_test) = datasets.load_mnist(directory, flatten=flatten)
        name = "MNIST"
        if x_train is None:
            try:
                (x_train, t_train), (x_test, t_test) = datasets.split_test_set(x_test, t_test, "load_images", directory)
            except ValueError as exc:
                raise SystemExit(str(exc)) from None
            name = f"MNIST (t10k only: {len(x_train):,} train / {len(x_test):,} test)"
        elif x_test is None:
            raise SystemExit(f"{directory} holds no MNIST test set")
        print(f"data: {name} from {directory}")
        break
    else:
        if data_dir is not None:
            raise SystemExit(f"no MNIST files in {data_dir}")
        (x_train, t_train), (x_test, t_test) = datasets.load_digits(flatten=flatten)
        name = "digits 8x8"
        print("data: MNIST not found (looked in ../shared/data/mnist and the fastnn cache); "
              "falling back to the shipped 8x8 digits set")
    if max_train is not None:
        x_train, t_train = x_train[:max_train], t_train[:max_train]
    if max_test is not None:
        x_test, t_test = x_test[:max_test], t_test[:max_test]
    return (x_train, t_train), (x_test, t_test), name


def weight_scale(init, n_in):
    """The book's weight_init_std: a number, or 'relu'/'he' (sqrt(2/n)), 'sigmoid'/'xavier' (sqrt(1/n))."""
    if isinstance(init, str):
        key = init.lower()
        if key in ("relu", "he"):
            return np.sqrt(2.0 / n_in)
        if key in ("sigmoid", "xavier"):
            return np.sqrt(1.0 / n_in)
        raise ValueError(f"unknown weight init {init!r}")
    return float(init)


class MultiLayerNet:
    """Fully connected net: (Affine [BatchNorm] act [Dropout]) x len(hidden) then Affine, SoftmaxWithLoss.

    ``params`` and ``grads`` are dicts W1, b1, ... (plus gamma/beta with batch
    norm), ready for any fastnn.optim optimizer's ``update(params, grads)``.
    """

    def __init__(self, input_size, hidden_sizes, output_size, activation="relu", weight_init_std="relu",
                 use_batchnorm=False, use_dropout=False, dropout_ratio=0.5, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        sizes = [input_size] + list(hidden_sizes) + [output_size]
        self.params = {}
        self.layers = OrderedDict()
        act = {"relu": Relu, "sigmoid": Sigmoid}[activation]
        n_hidden = len(hidden_sizes)
        for i in range(1, len(sizes)):
            W = weight_scale(weight_init_std, sizes[i - 1]) * rng.standard_normal((sizes[i - 1], sizes[i]))
            self.params[f"W{i}"] = W.astype(dtype)
            self.params[f"b{i}"] = np.zeros(sizes[i], dtype=dtype)
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i <= n_hidden:
                if use_batchnorm:
                    self.params[f"gamma{i}"] = np.ones(sizes[i], dtype=dtype)
                    self.params[f"beta{i}"] = np.zeros(sizes[i], dtype=dtype)
                    self.layers[f"BatchNorm{i}"] = BatchNormalization(self.params[f"gamma{i}"],
                                                                      self.params[f"beta{i}"])
                self.layers[f"Activation{i}"] = act()
                if use_dropout:
                    self.layers[f"Dropout{i}"] = Dropout(dropout_ratio)
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for layer in self.layers.values():
            x = layer.forward(x, train_flg) if isinstance(layer, (Dropout, BatchNormalization)) else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        return self.last_layer.forward(self.predict(x, train_flg), t)

    def accuracy(self, x, t, batch_size=1000):
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            y = self.predict(x[i:i + batch_size])
            correct += int(np.sum(np.argmax(y, axis=1) == t[i:i + batch_size]))
        return correct / x.shape[0]

    def gradient(self, x, t):
        loss = self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {}
        for name, layer in self.layers.items():
            if name.startswith("Affine"):
                i = name[len("Affine"):]
                grads[f"W{i}"], grads[f"b{i}"] = layer.dW, layer.db
            elif name.startswith("BatchNorm"):
                i = name[len("BatchNorm"):]
                grads[f"gamma{i}"], grads[f"beta{i}"] = layer.dgamma, layer.dbeta
        return loss, grads


def save_plot(path, title, xlabel, ylabel, curves, ylim=None):
    """Plot {label: ys} to ``path`` when matplotlib is installed; say what happened either way."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"plot: matplotlib is not installed, so {path} was not written (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in curves.items():
        ax.plot(np.arange(len(ys)), ys, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"plot: saved {path}")
    return True


def smooth(values, window=20):
    """Moving average, for readable loss curves."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")
