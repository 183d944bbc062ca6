"""Training Keras-style models: MLP and CNN on synthetic data, a CNN on real digits
(the shipped 8x8 set, and an MNIST subset when ../shared/data/mnist exists), every loss,
fit/evaluate/predict semantics, the progress bar and input validation."""
import io
import os
import weakref

import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.nn import (Activation, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D, MaxPool2D,
                       Sequential, callbacks, losses, metrics, regularizers)
from fastnn.nn.progress import Progbar
from conftest import MeanAbsoluteErrorLoss, requires_native

BACKENDS = ["numpy", pytest.param("native", marks=requires_native)]
MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.backend(request.param):
        yield request.param


def spirals(n_per_class, seed):
    """Three interleaved spiral arms in 2-D (not linearly separable)."""
    rng = np.random.default_rng(seed)
    xs, ts = [], []
    for k in range(3):
        r = np.linspace(0.05, 1.0, n_per_class)
        theta = k * 2 * np.pi / 3 + 4.0 * r + rng.normal(0, 0.08, n_per_class)
        xs.append(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))
        ts.append(np.full(n_per_class, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ts)


def bars(n, seed, size=8):
    """1x8x8 images of a horizontal, vertical or diagonal bar at a random place, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    t = rng.integers(0, 3, n)
    for i in range(n):
        p = rng.integers(1, size - 1)
        if t[i] == 0:
            x[i, 0, p, 1:-1] += 1.5
        elif t[i] == 1:
            x[i, 0, 1:-1, p] += 1.5
        else:
            idx = np.arange(size)
            x[i, 0, idx, idx] += 1.5
            x[i, 0, idx, (idx + p) % size] *= 0.5
    return x, t


def test_mlp_learns_spirals(backend):
    x, t = spirals(150, seed=0)
    model = Sequential([Dense(48, activation="relu", input_dim=2), Dense(48, activation="relu"),
                        Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer=optim.Adam(lr=0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, t, epochs=60, batch_size=32, verbose=0, seed=0)
    assert history.history["loss"][-1] < 0.25 * history.history["loss"][0]
    loss, acc = model.evaluate(x, t)
    assert acc > 0.95, acc
    x_new, t_new = spirals(100, seed=1)
    assert np.mean(np.argmax(model.predict(x_new), axis=1) == t_new) > 0.9


def test_cnn_learns_bars(backend):
    x, t = bars(900, seed=0)
    model = Sequential([Conv2D(6, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
                        MaxPool2D(2), BatchNorm(), Flatten(), Dropout(0.1), Dense(3, activation="softmax")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:600], t[:600], epochs=8, batch_size=32, validation_data=(x[600:], t[600:]), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["val_accuracy"]) == 8
    assert history.history["val_accuracy"][-1] > 0.95, history.history


def _load_mnist_subset(n_train, n_test):
    images = fastnn.datasets.read_idx(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
    labels = fastnn.datasets.read_idx(os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
    x = (images.astype(np.float32) / 255.0)[:, None]
    t = labels.astype(np.int64)
    return (x[:n_train], t[:n_train]), (x[n_train:n_train + n_test], t[n_train:n_train + n_test])


@pytest.mark.skipif(not os.path.exists(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")),
                    reason="MNIST not present in ../shared/data/mnist")
def test_cnn_on_mnist_subset(backend, capsys):
    # The t10k file is the one always present in the shared data; train on its first
    # 4000 images and test on the next 2000 (disjoint).
    (x, t), (x_test, t_test) = _load_mnist_subset(4000, 2000)
    model = Sequential([Conv2D(8, 3, strides=2, activation="relu", input_shape=(1, 28, 28)),
                        Flatten(), Dense(10, activation="softmax")], seed=0)
    model.compile(optim.Adam(lr=0.005), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, t, epochs=4, batch_size=32, verbose=1, seed=0)
    out = capsys.readouterr().out
    assert "Epoch 4/4" in out and "4000/4000 [" in out and "accuracy:" in out
    _, acc = model.evaluate(x_test, t_test, batch_size=250)
    assert acc > 0.9, acc


def test_cnn_on_shipped_digits(backend):
    (x, t), (x_test, t_test) = fastnn.datasets.load_digits(flatten=False)
    model = Sequential([Conv2D(8, 3, padding="same", activation="relu", input_shape=x.shape[1:]),
                        MaxPool2D(2), Flatten(), Dense(10, activation="softmax")], seed=0)
    model.compile(optim.Adam(lr=0.005), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, t, epochs=10, batch_size=32, verbose=0, seed=0)
    _, acc = model.evaluate(x_test, t_test)
    assert acc > 0.93, acc


@pytest.mark.parametrize("loss_name", ["categorical_crossentropy", "binary_crossentropy", "mse"])
def test_other_losses_train(backend, loss_name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5)).astype(np.float32)
    w = rng.standard_normal((5, 3))
    labels = np.argmax(x @ w, axis=1)
    if loss_name == "categorical_crossentropy":
        y, last = np.eye(3, dtype=np.float32)[labels], Dense(3, activation="softmax")
    elif loss_name == "binary_crossentropy":
        y, last = (x @ w[:, 0] > 0).astype(np.float32), Dense(1, activation="sigmoid")
    else:
        y, last = (x @ w).astype(np.float32), Dense(3)
    model = Sequential([Dense(16, activation="tanh", input_dim=5), last], seed=0)
    model.compile(optim.Adam(lr=0.02), loss_name, metrics=["accuracy"] if loss_name != "mse" else ["mae"])
    history = model.fit(x, y, epochs=15, batch_size=20, verbose=0)
    final = history.history["loss"][-1]
    assert final < 0.3 * history.history["loss"][0]
    if loss_name != "mse":
        assert history.history["accuracy"][-1] > 0.95
    else:
        assert history.history["mae"][-1] < 0.2


@pytest.mark.parametrize("conv", [
    dict(filters=5, kernel_size=3, activation="relu"),                           # fused
    dict(filters=4, kernel_size=5, padding="same", activation="sigmoid"),        # fused, symmetric pad
    dict(filters=3, kernel_size=2, padding="same", activation="tanh"),           # odd "same": not fused
    dict(filters=4, kernel_size=3, activation="elu"),                            # derivative needs z: not fused
])
def test_conv_pool_fusion_changes_no_number(backend, conv):
    # Sequential runs Conv2D + MaxPool2D as one op; switched off, every layer runs on its
    # own: the same training trajectory (up to float rounding of the summation order)
    x, t = bars(64, seed=2)
    runs = []
    for fuse in (True, False):
        model = Sequential([Conv2D(input_shape=(1, 8, 8), **conv), MaxPool2D(2), Conv2D(6, 3, padding=1,
                            activation="relu"), MaxPool2D(2, strides=1), Flatten(), Dense(3, activation="softmax")],
                           seed=7)
        model.fuse_conv_pool = fuse
        model.compile(optimizer=optim.SGD(lr=0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        losses_seen = [model.train_on_batch(x[i:i + 16], t[i:i + 16]) for i in range(0, 64, 16)]
        runs.append((losses_seen, model.get_weights(), model.predict(x[:8], verbose=0)))
        assert model._fused_last == ({0, 2} if fuse and conv["activation"] != "elu" and conv["kernel_size"] != 2
                                     else ({2} if fuse else set()))
    (l1, w1, p1), (l2, w2, p2) = runs
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p1, p2, rtol=1e-4, atol=1e-6)


def test_fused_cross_entropy_is_stable_for_huge_logits():
    model = Sequential([Dense(3, activation="softmax", input_dim=2, kernel_initializer="zeros")], dtype="float64")
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.layers[0].params["bias"][...] = [1e4, -1e4, 0.0]
    loss, acc = model.evaluate(np.zeros((2, 2)), np.array([1, 0]))
    # label 1 has logit -1e4 against a max of 1e4: loss 2e4 exactly; label 0 costs 0.
    assert np.isfinite(loss) and abs(loss - 1e4) < 1e-6
    assert acc == 0.5
    binary = Sequential([Dense(1, activation="sigmoid", input_dim=1, kernel_initializer="zeros")], dtype="float64")
    binary.compile("sgd", "binary_crossentropy")
    binary.layers[0].params["bias"][...] = 1000.0
    assert abs(binary.evaluate(np.zeros((1, 1)), np.zeros(1)) - 1000.0) < 1e-9


def test_loss_must_match_the_output_activation():
    model = Sequential([Dense(3, activation="relu", input_dim=2)])
    with pytest.raises(ValueError, match="activation='softmax'"):
        model.compile("adam", "sparse_categorical_crossentropy")
    model = Sequential([Dense(3, activation="softmax", input_dim=2)])
    with pytest.raises(ValueError, match="sigmoid"):
        model.compile("adam", "binary_crossentropy")
    with pytest.raises(ValueError, match="from_logits=True"):
        model.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="loss"):
        model.compile("adam", "hinge")


def test_a_failed_compile_leaves_the_model_as_it_was(rng):
    x = rng.standard_normal((6, 4)).astype(np.float32)
    t = np.array([0, 1, 2, 0, 1, 2])
    model = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3, activation="softmax")], seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, t)
    for loss, metric_names in (("binary_crossentropy", None), ("sparse_categorical_crossentropy", ["f1"]),
                          ("sparse_categorical_crossentropy", ["mae"])):
        with pytest.raises(ValueError, match="compile"):
            model.compile("adam", loss, metrics=metric_names)
        assert model.loss.name == "sparse_categorical_crossentropy" and type(model.optimizer).__name__ == "SGD"
        assert model.evaluate(x, t) == before
    # checked at compile even before the model is built
    unbuilt = Sequential([Dense(8), Dense(3, activation="softmax")])
    for loss, metric_names in (("binary_crossentropy", None), ("sparse_categorical_crossentropy", ["f1"])):
        with pytest.raises(ValueError, match="compile"):
            unbuilt.compile("adam", loss, metrics=metric_names)
    assert not unbuilt.compiled


def test_elementwise_metrics_need_targets_of_the_outputs_shape(rng):
    x = rng.standard_normal((9, 4))
    t = np.array([0, 1, 2] * 3)
    model = Sequential([Dense(3, activation="softmax", input_dim=4)], seed=0, dtype="float64")
    for metric in ("mae", "mse", metrics.MeanAbsoluteError()):
        with pytest.raises(ValueError, match="integer labels"):
            model.compile("sgd", "sparse_categorical_crossentropy", metrics=[metric])
    model.compile("sgd", "categorical_crossentropy", metrics=["mae", "mse"])
    onehot = np.eye(3)[t]
    p = model.predict(x)
    for batch_size in (3, 4, 9):
        _, mae, mse = model.evaluate(x, onehot, batch_size=batch_size)
        assert mae == pytest.approx(np.mean(np.abs(p - onehot)), rel=1e-12)
        assert mse == pytest.approx(np.mean((p - onehot) ** 2), rel=1e-12)
    binary = Sequential([Dense(1, activation="sigmoid", input_dim=4)], seed=0, dtype="float64")
    binary.compile("sgd", "binary_crossentropy", metrics=["mae"])
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1])
    assert binary.evaluate(x, labels, batch_size=4)[1] == pytest.approx(
        np.mean(np.abs(binary.predict(x)[:, 0] - labels)), rel=1e-12)


def test_from_logits_model_outputs_logits_and_trains(rng):
    x = rng.standard_normal((200, 4)).astype(np.float32)
    t = (x[:, 0] > 0).astype(np.int64)
    model = Sequential([Dense(2, input_dim=4)], seed=0)
    model.compile(optim.SGD(lr=0.5), losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, t, epochs=10, verbose=0)
    out = model.predict(x[:3])
    assert not np.allclose(out.sum(axis=1), 1.0)  # raw scores, not probabilities
    assert model.evaluate(x, t)[1] > 0.95


def test_final_activation_layer_is_fused():
    model = Sequential([Dense(3, input_dim=2), Activation("softmax")], dtype="float64")
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.layers[0].params["kernel"][...] = 0
    model.layers[0].params["bias"][...] = [800.0, -800.0, 0.0]
    assert abs(model.evaluate(np.zeros((1, 2)), np.array([1])) - 1600.0) < 1e-9
    np.testing.assert_allclose(model.predict(np.zeros((1, 2))), [[1.0, 0.0, 0.0]], atol=1e-300)


def test_fit_validation_split_and_shuffle_false(rng):
    x = rng.standard_normal((100, 3)).astype(np.float32)
    t = rng.integers(0, 2, 100)
    model = Sequential([Dense(2, activation="softmax", input_dim=3)], seed=0)
    model.compile(optim.SGD(lr=0.0), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, t, epochs=2, batch_size=10, validation_split=0.25, shuffle=False, verbose=0)
    # lr = 0: the reported losses are the fixed model's losses on each part.
    train = model.evaluate(x[:75], t[:75], return_dict=True)
    val = model.evaluate(x[75:], t[75:], return_dict=True)
    np.testing.assert_allclose(history.history["loss"], [train["loss"]] * 2, rtol=1e-6)
    np.testing.assert_allclose(history.history["val_loss"], [val["loss"]] * 2, rtol=1e-6)
    assert history.history["val_accuracy"] == [val["accuracy"]] * 2
    assert history.epoch == [0, 1]


def test_fit_with_seed_is_reproducible(rng):
    x, t = spirals(40, seed=2)

    def run():
        model = Sequential([Dense(8, activation="relu", input_dim=2), Dropout(0.3), Dense(3, activation="softmax")],
                           seed=5)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, t, epochs=3, batch_size=16, verbose=0, seed=11)
        return model.get_weights()

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_evaluate_and_predict_batching_do_not_change_results(rng):
    x = rng.standard_normal((37, 5)).astype(np.float32)
    t = rng.integers(0, 4, 37)
    model = Sequential([Dense(7, activation="relu", input_dim=5), BatchNorm(), Dense(4, activation="softmax")],
                       dtype="float64", seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    p1 = model.predict(x, batch_size=37)
    p2 = model.predict(x, batch_size=5)
    np.testing.assert_allclose(p1, p2, rtol=1e-12)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-12)
    r1 = model.evaluate(x, t, batch_size=37)
    r2 = model.evaluate(x, t, batch_size=4)
    np.testing.assert_allclose(r1, r2, rtol=1e-12)
    probs = p1[np.arange(37), t]
    np.testing.assert_allclose(r1[0], -np.mean(np.log(probs)), rtol=1e-10)
    assert r1[1] == np.mean(np.argmax(p1, axis=1) == t)
    assert model.predict(x[:0]).shape == (0, 4)


@pytest.mark.parametrize("call, message", [
    (lambda m, x, t: m.fit(x, t[:5], verbose=0), "samples"),
    (lambda m, x, t: m.fit(x, t + 3, verbose=0), r"\[0, 3\)"),
    (lambda m, x, t: m.fit(x, np.eye(3)[t], verbose=0), "one-hot"),
    (lambda m, x, t: m.fit(x[:, :2], t, verbose=0), r"\(N, 4\)"),
    (lambda m, x, t: m.fit(x, t, batch_size=0, verbose=0), "batch_size"),
    (lambda m, x, t: m.fit(x, t, epochs=-1, verbose=0), "epochs"),
    (lambda m, x, t: m.fit(x, t, validation_split=1.0, verbose=0), "validation_split"),
    (lambda m, x, t: m.fit(x, t, validation_data=(x,), verbose=0), "validation_data"),
    (lambda m, x, t: m.fit(x.astype(str), t, verbose=0), "numeric"),
    (lambda m, x, t: m.fit(x, t.astype(np.float64) + 0.5, verbose=0), "integer"),
    (lambda m, x, t: m.evaluate(x[:0], t[:0]), "no samples"),
    (lambda m, x, t: m.train_on_batch(x[:0], t[:0]), "train_on_batch: no samples"),
    (lambda m, x, t: m.fit(x, t, seed="a", verbose=0), "fit: seed must be an int, got 'a'"),
    (lambda m, x, t: m.fit(x, t, seed=-1, verbose=0), "fit: seed must be >= 0"),
    (lambda m, x, t: m.fit(x, t, callbacks=5, verbose=0), "fit: expected callbacks to be a Callback or a list"),
    (lambda m, x, t: m.fit(x, t, callbacks=[print], verbose=0), r"a list of them, got \['builtin_function"),
    (lambda m, x, t: m.compile({"name": "adam", "foo": 1}, "mse"), r"unknown argument\(s\) \['foo'\] for Adam"),
])
def test_fit_rejects_bad_input(rng, call, message):
    model = Sequential([Dense(3, activation="softmax", input_dim=4)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises((ValueError, TypeError), match=message):
        call(model, rng.standard_normal((10, 4)), rng.integers(0, 3, 10))


def test_an_empty_batch_takes_no_step(rng):
    model = Sequential([Dense(3, activation="softmax", input_dim=4)], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="train_on_batch: no samples"):
        model.train_on_batch(np.zeros((0, 4)), np.zeros(0, dtype=int))
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_dense_on_a_1d_input_says_how_to_shape_it():
    with pytest.raises(ValueError, match=r"got a 1-D input \(scalar samples\); reshape it to \(N, 1\)"):
        Dense(2)(np.ones(3))
    with pytest.raises(ValueError, match="add a Flatten layer"):
        Dense(2)(np.ones((2, 3, 4)))


def test_fit_before_compile_is_an_error(rng):
    model = Sequential([Dense(3, input_dim=4)])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(rng.standard_normal((4, 4)), np.zeros(4, dtype=int))


def test_verbose_progress_output(capsys, rng):
    x = rng.standard_normal((50, 3)).astype(np.float32)
    t = rng.integers(0, 2, 50)
    model = Sequential([Dense(2, activation="softmax", input_dim=3)])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, t, epochs=2, batch_size=16, validation_split=0.2, verbose=1)
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 2 and "Epoch 2/2" in out
    assert "40/40 [==============================]" in out
    assert "ms/sample" in out and "- loss: " in out and "- accuracy: " in out and "val_accuracy: " in out
    model.fit(x, t, epochs=2, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2: 50/50")
    model.fit(x, t, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_progbar_redraws_with_eta_on_a_terminal():
    stream = io.StringIO()
    bar = Progbar(100, stream=stream, dynamic=True, interval=0.0)
    bar.update(30, {"loss": 0.5})
    bar.update(60, {"loss": 0.25})
    bar.finish({"loss": 0.2, "accuracy": 0.9})
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert " 30/100 [=========>" in text and "ETA: " in text and "loss: 0.2500" in text
    assert "100/100 [==============================]" in text and "accuracy: 0.9000" in text


def test_train_on_batch_matches_a_manual_step(rng):
    x = rng.standard_normal((6, 3))
    t = rng.integers(0, 2, 6)
    model = Sequential([Dense(2, activation="softmax", input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    W0, b0 = (w.copy() for w in model.get_weights())
    logs = model.train_on_batch(x, t, return_dict=True)
    z = x @ W0 + b0
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert abs(logs["loss"] - -np.mean(np.log(p[np.arange(6), t]))) < 1e-12
    d = (p - np.eye(2)[t]) / 6
    np.testing.assert_allclose(model.get_weights()[0], W0 - 0.1 * x.T @ d, rtol=1e-12)
    np.testing.assert_allclose(model.get_weights()[1], b0 - 0.1 * d.sum(axis=0), rtol=1e-12)


@requires_native
def test_native_and_numpy_backends_train_the_same_model():
    x, t = bars(64, seed=3)
    x = x.astype(np.float64)
    results = {}
    for name in ("numpy", "native"):
        with fastnn.backend(name):
            model = Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
                                BatchNorm(), MaxPool2D(2), Conv2D(5, 2, activation="elu"), Flatten(),
                                Dropout(0.2), Dense(3, activation="softmax")], dtype="float64", seed=0)
            model.compile(optim.Momentum(lr=0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
            history = model.fit(x, t, epochs=2, batch_size=16, verbose=0, seed=1)
            results[name] = (history.history["loss"], model.get_weights(), model.predict(x))
    np.testing.assert_allclose(results["native"][0], results["numpy"][0], rtol=1e-9)
    for a, b in zip(results["native"][1], results["numpy"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(results["native"][2], results["numpy"][2], rtol=1e-8, atol=1e-12)


def test_a_loss_of_the_users_trains_and_evaluates(rng):
    x = rng.standard_normal((12, 3))
    t = x @ np.array([[1.0], [-2.0], [0.5]])
    model = Sequential([Dense(1, input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), MeanAbsoluteErrorLoss())
    W0, b0 = (w.copy() for w in model.get_weights())
    loss = model.train_on_batch(x, t)
    y = x @ W0 + b0
    assert loss == pytest.approx(np.abs(y - t).mean(), rel=1e-12)
    d = np.sign(y - t) / y.size
    np.testing.assert_allclose(model.get_weights()[0], W0 - 0.1 * x.T @ d, rtol=1e-12)
    history = model.fit(x, t, epochs=2, batch_size=5, verbose=0)
    assert len(history.history["loss"]) == 2
    assert model.evaluate(x, t) == pytest.approx(np.abs(model.predict(x) - t).mean(), rel=1e-12)


def test_train_on_batch_returns_what_evaluate_returns(rng):
    x = rng.standard_normal((8, 3))
    t = rng.integers(0, 2, 8)
    model = Sequential([Dense(2, activation="softmax", input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.0), "sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, t)
    assert isinstance(loss, float) and loss == model.evaluate(x, t)
    model.compile(optim.SGD(lr=0.0), "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.train_on_batch(x, t) == model.evaluate(x, t)
    assert model.train_on_batch(x, t, return_dict=True) == model.evaluate(x, t, return_dict=True)


def test_keras_defaults_batch_size_none_and_verbose_auto(rng, capsys):
    x = rng.standard_normal((70, 3))
    t = rng.integers(0, 2, 70)
    model = Sequential([Dense(2, activation="softmax", input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")

    class Steps(callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen = dict(self.params)
    steps = Steps()
    model.fit(x, t, epochs=2, batch_size=None, verbose="auto", callbacks=[steps])
    assert steps.seen == {"verbose": 1, "epochs": 2, "steps": 3}  # 70 samples in batches of 32
    assert "Epoch 2/2" in capsys.readouterr().out
    model.fit(x, t, epochs=1, batch_size=7, verbose=False, callbacks=[steps])
    assert steps.seen == {"verbose": 0, "epochs": 1, "steps": 10}
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(model.predict(x, batch_size=None), model.predict(x, batch_size=32))
    assert model.evaluate(x, t, batch_size=None) == model.evaluate(x, t)
    with pytest.raises(TypeError, match="fit: verbose must be an int"):
        model.fit(x, t, verbose="loud")


def test_the_loss_base_class_shows_the_signature_the_model_calls():
    # a loss of the user's is written to the base class: the model passes `what` too
    import inspect
    base = inspect.signature(losses.Loss.prepare_target)
    for cls in (losses.SparseCategoricalCrossentropy, losses.CategoricalCrossentropy, losses.BinaryCrossentropy,
                losses.MeanSquaredError):
        assert inspect.signature(cls.prepare_target) == base, cls


@pytest.mark.parametrize("loss, units, want", [
    ("binary_crossentropy", 1, "BinaryAccuracy"), ("mse", 1, "BinaryAccuracy"), ("mse", 3, "CategoricalAccuracy"),
    ("sparse_categorical_crossentropy", 3, "SparseCategoricalAccuracy"),
    ("categorical_crossentropy", 3, "CategoricalAccuracy")])
def test_accuracy_resolves_as_keras_resolves_it(loss, units, want):
    act = "sigmoid" if loss == "binary_crossentropy" else "softmax" if "categorical" in loss else None
    model = Sequential([Dense(units, activation=act, input_dim=2)])
    model.compile("sgd", loss, metrics=["accuracy"])
    model.evaluate(np.zeros((2, 2), np.float32), np.zeros((2,) if "sparse" in loss else (2, units), np.float32))
    assert [type(m).__name__ for m in model.metrics] == [want]


def test_binary_accuracy_threshold():
    assert metrics.BinaryAccuracy(threshold=0.7)(np.array([[0.6], [0.8]]), np.ones((2, 1))) == 0.5
    assert metrics.BinaryAccuracy()(np.array([[0.6], [0.8]]), np.ones((2, 1))) == 1.0


def test_binary_targets_outside_0_1_are_refused():
    model = Sequential([Dense(1, activation="sigmoid", input_dim=2)])
    model.compile("sgd", "binary_crossentropy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.fit(np.zeros((4, 2), np.float32), 2 * np.ones((4, 1), np.float32), verbose=0)


def _dropout_model(seed):
    model = Sequential([Dense(16, activation="relu", input_dim=4), Dropout(0.5), Dense(2, activation="softmax")],
                       seed=seed)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    return model


def test_fit_seed_fixes_the_shuffle_and_the_dropout_masks():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 2, 40)
    start = _dropout_model(0).get_weights()
    runs = []
    for model_seed, fit_seed, shuffle in ((1, 11, True), (2, 11, True), (1, 12, True), (1, 11, False)):
        model = _dropout_model(model_seed)          # another constructor seed, the same starting weights
        model.set_weights(start)
        model.fit(x, t, epochs=2, batch_size=8, verbose=0, seed=fit_seed, shuffle=shuffle)
        runs.append(model.get_weights())
    same = lambda a, b: all(np.array_equal(u, v) for u, v in zip(a, b))
    assert same(runs[0], runs[1])                   # fit's seed decides shuffling and dropout
    assert not same(runs[0], runs[2]) and not same(runs[0], runs[3])


def test_initial_epoch_numbers_the_epochs_from_there():
    model = Sequential([Dense(2, activation="softmax", input_dim=2)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(np.zeros((4, 2), np.float32), np.zeros(4, np.int64), epochs=3, initial_epoch=1, verbose=0)
    assert history.epoch == [1, 2] and len(history.history["loss"]) == 2


def test_summary_rows_count_every_weight_of_the_layer():
    model = Sequential([Dense(8, input_dim=3, name="dense"), BatchNorm(name="bn")])
    lines = []
    model.summary(print_fn=lines.append)
    assert next(line for line in lines if line.startswith("bn (BatchNorm)")).split()[-1] == "32"   # 4 x 8
    assert next(line for line in lines if line.startswith("dense (Dense)")).split()[-1] == "32"   # 3 x 8 + 8


def test_sparse_labels_outside_the_classes_are_refused_by_fit_and_evaluate(rng):
    x = rng.standard_normal((6, 4))
    model = Sequential([Dense(3, activation="softmax", input_dim=4)], seed=0, dtype="float64")
    model.compile("sgd", "sparse_categorical_crossentropy")
    for bad, got in (([0, 1, 2, 3, 0, 1], r"\[0, 3\]"), ([0, -1, 2, 1, 0, 1], r"\[-1, 2\]")):
        for call, what in ((model.fit, "fit"), (model.evaluate, "evaluate")):
            with pytest.raises(ValueError, match=rf"^{what}: labels must lie in \[0, 3\) for a 3-class "
                                                 rf"output, got values in {got}"):
                call(x, np.array(bad))
    model.fit(x, np.array([0, 1, 2, 2, 1, 0]), epochs=1, verbose=0)  # the largest class, 2, is in range


def test_accuracy_metrics_must_take_the_losses_targets(rng):
    x = rng.standard_normal((9, 4))
    t = np.array([0, 1, 2] * 3)
    onehot = np.eye(3)[t]
    model = Sequential([Dense(3, activation="softmax", input_dim=4)], seed=0, dtype="float64")
    for metric in ("categorical_accuracy", metrics.CategoricalAccuracy(), "binary_accuracy"):
        with pytest.raises(ValueError, match=r"compile: the metric .* a target of its shape, but "
                                             r"sparse_categorical_crossentropy's targets are integer labels"):
            model.compile("sgd", "sparse_categorical_crossentropy", metrics=[metric])
    for loss in ("categorical_crossentropy", "mse"):
        for metric in ("sparse_categorical_accuracy", metrics.SparseCategoricalAccuracy(name="sa")):
            with pytest.raises(ValueError, match=rf"compile: the metric .* integer labels \(N,\), but {loss}'s "
                                                 "targets have the output's shape"):
                model.compile("sgd", loss, metrics=[metric])
    assert not model.compiled                                      # every refused compile left it as it was
    # the matching pairs give the fraction of rows whose argmax is the label
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    want = np.mean(np.argmax(model.predict(x), axis=1) == t)
    assert model.evaluate(x, t)[1] == pytest.approx(want, rel=1e-15)
    model.compile("sgd", "categorical_crossentropy", metrics=["categorical_accuracy"])
    assert model.evaluate(x, onehot)[1] == pytest.approx(want, rel=1e-15)


@pytest.mark.parametrize("call", [
    lambda m, x, t: m.fit(x, t[:-1], verbose=0),                                   # lengths differ
    lambda m, x, t: m.fit(x, t + 5, verbose=0),                                    # labels outside the classes
    lambda m, x, t: m.fit(x, t, epochs=-1, verbose=0),
    lambda m, x, t: m.fit(x, t, validation_data=(x[:, :3], t), verbose=0),        # validation x of another shape
    lambda m, x, t: m.fit(x, t, validation_data=(x, t[:-1]), verbose=0),
    lambda m, x, t: m.fit(x, t, seed="a", verbose=0),
    lambda m, x, t: m.fit(x, t, callbacks=[print], verbose=0),
    lambda m, x, t: m.evaluate(x, t[:-1]),
    lambda m, x, t: m.evaluate(x, t, batch_size=0),
    lambda m, x, t: m.train_on_batch(x, t + 5),
])
def test_a_failed_fit_or_evaluate_leaves_an_unbuilt_model_unbuilt(rng, call):
    x = rng.standard_normal((12, 4))
    t = rng.integers(0, 3, 12)
    model = Sequential([Dense(5, activation="relu"), Dense(3, activation="softmax")], seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises((ValueError, TypeError)):
        call(model, x, t)
    assert not model.built and not any(layer.built for layer in model.layers)
    # built later for the right data, with the weights a model built at once draws
    model.fit(x[:, :2], t, epochs=1, verbose=0, shuffle=False)
    assert model.input_shape == (2,)
    fresh = Sequential([Dense(5, activation="relu"), Dense(3, activation="softmax")], seed=0)
    fresh.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    fresh.fit(x[:, :2], t, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_shuffle_must_be_a_bool(rng):
    x = rng.standard_normal((6, 4))
    t = rng.integers(0, 3, 6)
    model = Sequential([Dense(3, activation="softmax", input_dim=4)], seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = model.get_weights()
    for bad in ("no", 1, None, "True"):
        with pytest.raises(TypeError, match="fit: expected shuffle to be True or False, got"):
            model.fit(x, t, shuffle=bad, verbose=0)
    with pytest.raises(ValueError, match="fit: shuffle='batch' .* is not supported"):
        model.fit(x, t, shuffle="batch", verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    model.fit(x, t, shuffle=np.bool_(False), verbose=0)


def _image_model(fmt, fused):
    """Conv2D-BN-MaxPool-Conv2D-GlobalAveragePooling2D-Dense (fused: Conv2D-MaxPool-...), in
    format ``fmt``: "channels_first", "channels_last", or "global" (channels last through
    set_image_data_format and the layers' defaults)."""
    from fastnn.nn import GlobalAveragePooling2D, set_image_data_format
    if fmt == "global":
        set_image_data_format("channels_last")
        kw, bn = {}, {}
    else:
        kw, bn = {"data_format": fmt}, {"axis": 1 if fmt == "channels_first" else -1}
    shape = (3, 8, 8) if fmt == "channels_first" else (8, 8, 3)
    layers = [Conv2D(4, 3, padding="same", activation="relu", input_shape=shape, **kw)]
    layers += [MaxPool2D(2, **kw)] if fused else [BatchNorm(**bn), MaxPool2D(2, **kw)]
    layers += [Conv2D(6, 3, padding=1, activation="relu", **kw), GlobalAveragePooling2D(**kw),
               Dense(3, activation="softmax")]
    model = Sequential(layers, seed=4)
    model.compile(optim.Adam(lr=0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("fused", [False, True], ids=["conv_bn_pool", "conv_pool_fused"])
def test_a_channels_last_model_trains_to_the_channels_first_weights(backend, fused):
    # the same seed draws the same (F, C, kh, kw) kernels in both formats, and the channels_last
    # layers compute through the same NCHW ops: on transposed data, the same training, number for number
    x1, t = bars(96, seed=5)
    x = np.concatenate([x1, 0.5 * x1[:, :, ::-1], np.random.default_rng(0).normal(0, 0.3, x1.shape)], axis=1)
    x = x.astype(np.float32)                                                  # (96, 3, 8, 8)
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    runs = {}
    for fmt in ("channels_first", "channels_last", "global"):
        model = _image_model(fmt, fused)
        assert model.layers[0].data_format == ("channels_first" if fmt == "channels_first" else "channels_last")
        data = x if fmt == "channels_first" else x_last
        history = model.fit(data, t, epochs=3, batch_size=16, validation_split=0.25, seed=1, verbose=0)
        assert model._fused_last == ({0} if fused else set())   # a channels_last Conv2D + MaxPool2D fuses too
        runs[fmt] = history.history, model.get_weights(), model.predict(data), model
    h0, w0, p0, m0 = runs["channels_first"]
    assert h0["loss"][-1] < h0["loss"][0]          # it trains
    for fmt in ("channels_last", "global"):
        h, w, p, m = runs[fmt]
        assert h == h0
        assert [a.shape for a in w] == [a.shape for a in w0]
        for a, b in zip(w, w0):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(p, p0)
        assert [layer.output_shape for layer in m.layers][:3] == (
            [(8, 8, 4), (4, 4, 4), (4, 4, 6)] if fused else [(8, 8, 4), (8, 8, 4), (4, 4, 4)])


def _mixed_model(fmt, head, fused, act="elu", rate=0.25, dtype="float32", runs=True):
    """Conv2D -> BatchNorm -> Activation -> MaxPool2D -> Dropout -> Conv2D -> head -> Dense in
    format ``fmt`` (fused: Conv2D -> MaxPool2D -> BatchNorm -> Activation -> Dropout -> ...);
    head "gap": GlobalAveragePooling2D, "flatten": Flatten. ``runs``: Sequential._nchw_runs."""
    from fastnn.nn import GlobalAveragePooling2D
    kw, axis = {"data_format": fmt}, 1 if fmt == "channels_first" else -1
    shape = (3, 8, 8) if fmt == "channels_first" else (8, 8, 3)
    if fused:
        layers = [Conv2D(4, 3, padding=1, activation="relu", input_shape=shape, **kw), MaxPool2D(2, **kw),
                  BatchNorm(axis=axis), Activation(act), Dropout(rate, seed=7)]
    else:
        layers = [Conv2D(4, 3, padding="same", input_shape=shape, **kw), BatchNorm(axis=axis), Activation(act),
                  MaxPool2D(2, **kw), Dropout(rate, seed=7)]
    layers += [Conv2D(5, 3, padding=1, activation="tanh", **kw)]
    layers += [GlobalAveragePooling2D(**kw)] if head == "gap" else [Flatten()]
    layers += [Dense(3, activation="softmax")]
    model = Sequential(layers, seed=4, dtype=dtype)
    model._nchw_runs = runs
    model.compile(optim.Adam(lr=0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _image_data(dtype=np.float32):
    x1, t = bars(64, seed=6)
    x = np.concatenate([x1, 0.5 * x1[:, :, ::-1], np.random.default_rng(1).normal(0, 0.3, x1.shape)], axis=1)
    return x.astype(dtype), t                                               # (64, 3, 8, 8)


def _assert_same_run(a, b, x, t):
    """Fit (with validation), predict, evaluate and a train_on_batch give the same numbers, bit for bit."""
    ha = a.fit(x, t, epochs=2, batch_size=16, validation_split=0.25, seed=1, verbose=0)
    hb = b.fit(x, t, epochs=2, batch_size=16, validation_split=0.25, seed=1, verbose=0)
    assert ha.history == hb.history
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.predict(x, batch_size=24), b.predict(x, batch_size=24))
    assert a.evaluate(x, t, batch_size=24) == b.evaluate(x, t, batch_size=24)
    assert a.train_on_batch(x[:16], t[:16]) == b.train_on_batch(x[:16], t[:16])
    for ga, gb in zip(a.grads().values(), b.grads().values(), strict=True):
        np.testing.assert_array_equal(ga, gb)


@pytest.mark.parametrize("head", ["gap", "flatten"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("act, dtype", [("elu", "float32"), ("relu", "float32"), ("sigmoid", "float64")])
def test_nchw_runs_give_the_numbers_of_layers_transposing_each(backend, head, fused, act, dtype):
    # A channels_last model passes NCHW data from layer to layer (transposing only at the run's
    # ends); each layer transposing its own input and output computes the same NCHW ops on the same data
    x, t = _image_data(dtype)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    a = _mixed_model("channels_last", head, fused, act, dtype=dtype)
    b = _mixed_model("channels_last", head, fused, act, dtype=dtype, runs=False)
    _assert_same_run(a, b, x, t)
    assert a._fused_last == b._fused_last == ({0} if fused else set())
    # (a fused MaxPool2D runs inside its Conv2D's forward_max_pool)
    inner = a.layers[2:6] if head == "gap" else a.layers[2:5]
    assert all(layer._nchw_in and layer._nchw_out for layer in inner)
    assert not any(layer._nchw_in or layer._nchw_out for layer in b.layers)


def test_a_mixed_channels_last_model_trains_to_the_channels_first_weights(backend):
    # against channels_first on transposed data: the same numbers (dropout off: it draws its
    # mask in the layer's own order, so the two formats drop different elements)
    x, t = _image_data()
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for fused in (False, True):
        first = _mixed_model("channels_first", "gap", fused, rate=0.0)
        last = _mixed_model("channels_last", "gap", fused, rate=0.0)
        h0 = first.fit(x, t, epochs=2, batch_size=16, validation_split=0.25, seed=1, verbose=0)
        h1 = last.fit(x_last, t, epochs=2, batch_size=16, validation_split=0.25, seed=1, verbose=0)
        assert h0.history == h1.history
        for a, b in zip(first.get_weights(), last.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(first.predict(x), last.predict(x_last))
        assert first.evaluate(x, t) == last.evaluate(x_last, t)


@pytest.mark.parametrize("head, transposes", [("gap", 1), ("flatten", 3)])
def test_a_channels_last_train_step_transposes_only_at_the_ends_of_the_run(monkeypatch, head, transposes):
    # the data into the first Conv2D; with Flatten, the output before it and its gradient back
    # (the first layer's input gradient is never computed)
    from fastnn.nn import layers as nn_layers
    counts = []
    for name in ("_to_nchw", "_from_nchw"):
        original = getattr(nn_layers._NCHWTransposes, name)

        def counted(self, a, nchw=False, original=original):
            out = original(self, a, nchw)
            counts.append(out is not a)
            return out
        monkeypatch.setattr(nn_layers._NCHWTransposes, name, counted)
    x, t = _image_data()
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    model = _mixed_model("channels_last", head, False)
    model.train_on_batch(x[:16], t[:16])
    assert sum(counts) == transposes
    counts.clear()
    model._nchw_runs = False
    model.train_on_batch(x[:16], t[:16])
    assert sum(counts) > transposes


def test_nchw_runs_after_pop_add_freezing_saving_and_gradcheck(tmp_path):
    # a model changed after a fit (a new head, a frozen layer) runs as the same model with each
    # layer transposing; its file loads into a model that predicts the same; gradcheck agrees
    from fastnn.nn import GlobalAveragePooling2D, gradcheck, load_model
    x, t = _image_data()
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    a = _mixed_model("channels_last", "flatten", False)
    b = _mixed_model("channels_last", "flatten", False, runs=False)
    for model in (a, b):
        model.fit(x, t, epochs=1, batch_size=16, seed=1, verbose=0)
        model.pop()
        model.pop()
        model.add(GlobalAveragePooling2D(data_format="channels_last"))
        model.add(Dense(3, activation="softmax"))
        model.layers[1].trainable = False     # BatchNorm, frozen: its moving statistics normalise
        model.compile(optim.Adam(lr=0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    _assert_same_run(a, b, x, t)
    assert a.layers[5]._nchw_in and a.layers[5]._nchw_out    # the new GlobalAveragePooling2D ends the run
    assert a.layers[6]._nchw_in and not a.layers[6]._nchw_out
    path = str(tmp_path / "m.npz")
    a.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), a.predict(x))
    errors = gradcheck(a, x[:4].astype(np.float64), t[:4], max_checks=4, verbose=False)
    assert max(errors.values()) < 1e-5


# ---------------------------------------------------------------------- sample_weight and class_weight
def _weighted_case(kind, rng):
    """(model, x, targets, torch per-sample loss of the logits) for one loss, in float64."""
    x = rng.standard_normal((8, 3))
    if kind == "sparse":
        t = rng.integers(0, 3, 8)
        model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        loss = "sparse_categorical_crossentropy"
    elif kind == "categorical":
        t = rng.random((8, 3)) * (rng.random((8, 3)) < 0.7)   # rows with zero entries, not summing to 1
        t[:, 0] += 0.1
        model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        loss = "categorical_crossentropy"
    elif kind == "binary":
        t = rng.random((8, 2))
        model = Sequential([Dense(2, activation="sigmoid", input_dim=3)], dtype="float64", seed=0)
        loss = "binary_crossentropy"
    else:
        t = rng.standard_normal((8, 2))
        model = Sequential([Dense(2, input_dim=3)], dtype="float64", seed=0)
        loss = "mse"
    model.compile(optim.SGD(lr=0.1), loss)
    return model, x, t


def _torch_per_sample(kind, z, t):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if kind == "sparse":
        return F.cross_entropy(z, torch.as_tensor(t), reduction="none")
    if kind == "categorical":
        return F.cross_entropy(z, torch.as_tensor(t), reduction="none")
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(z, torch.as_tensor(t), reduction="none").mean(1)
    return ((z - torch.as_tensor(t)) ** 2).mean(1)


@pytest.mark.parametrize("kind", ["sparse", "categorical", "binary", "mse"])
def test_weighted_loss_and_step_match_torch(rng, kind):
    torch = pytest.importorskip("torch")
    model, x, t = _weighted_case(kind, rng)
    w = rng.random(8) * 3
    w[2] = 0.0
    W0, b0 = (v.copy() for v in model.get_weights())
    Wt = torch.tensor(W0, requires_grad=True)
    bt = torch.tensor(b0, requires_grad=True)
    z = torch.as_tensor(x) @ Wt + bt
    want = (_torch_per_sample(kind, z, t) * torch.as_tensor(w)).sum() / 8
    want.backward()
    assert model.evaluate(x, t, sample_weight=w, batch_size=3) == pytest.approx(want.item(), rel=1e-12)
    assert model.train_on_batch(x, t, sample_weight=w) == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(model.get_weights()[0], W0 - 0.1 * Wt.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.get_weights()[1], b0 - 0.1 * bt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_weighted_sparse_cross_entropy_by_hand(rng):
    x = rng.standard_normal((5, 3))
    t = np.array([0, 1, 1, 0, 1])
    w = np.array([1.0, 0.5, 2.0, 0.0, 3.0])
    model = Sequential([Dense(2, activation="softmax", input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    W0, b0 = (v.copy() for v in model.get_weights())
    z = x @ W0 + b0
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert model.train_on_batch(x, t, sample_weight=w) == pytest.approx(
        -np.sum(w * np.log(p[np.arange(5), t])) / 5, rel=1e-13)
    d = w[:, None] * (p - np.eye(2)[t]) / 5
    np.testing.assert_allclose(model.get_weights()[0], W0 - 0.1 * x.T @ d, rtol=1e-13)
    np.testing.assert_allclose(model.get_weights()[1], b0 - 0.1 * d.sum(axis=0), rtol=1e-13)


@pytest.mark.parametrize("kind", ["sparse", "categorical", "binary", "mse"])
def test_all_ones_weights_give_the_unweighted_bits(rng, kind):
    _, x, t = _weighted_case(kind, rng)
    x = np.concatenate([x, x * 0.5, -x])
    t = np.concatenate([t, t, t])
    results = []
    for weights in ({}, {"sample_weight": np.ones(len(x))}, {"sample_weight": [1] * len(x)}):
        model, _, _ = _weighted_case(kind, np.random.default_rng(0))
        model.compile("adam", model.loss)
        history = model.fit(x, t, epochs=2, batch_size=5, seed=3, verbose=0, validation_split=0.25,
                            **weights)
        results.append((history.history, model.get_weights(), model.evaluate(x, t, **weights)))
    for history, weights, evaluated in results[1:]:
        assert history == results[0][0] and evaluated == results[0][2]
        for a, b in zip(weights, results[0][1]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss, targets, class_weight", [
    ("sparse_categorical_crossentropy", lambda t: t, {0: 2.0, 2: 0.5}),
    ("categorical_crossentropy", lambda t: np.eye(3)[t], {1: 0.0, 2: 3}),
    ("mse", lambda t: np.eye(3)[t], {0: 0.25, 1: 4.0}),
])
def test_class_weight_is_the_sample_weight_of_each_samples_class(rng, loss, targets, class_weight):
    x = rng.standard_normal((20, 3))
    labels = rng.integers(0, 3, 20)
    table = np.array([class_weight.get(k, 1.0) for k in range(3)], dtype=float)
    results = []
    for weights in ({"class_weight": class_weight}, {"sample_weight": table[labels]}):
        model = Sequential([Dense(3, activation=None if loss == "mse" else "softmax", input_dim=3)],
                           dtype="float64", seed=0)
        model.compile(optim.SGD(lr=0.1), loss)
        history = model.fit(x, targets(labels), epochs=2, batch_size=6, seed=1, verbose=0, **weights)
        results.append((history.history, model.get_weights()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


def test_class_weight_of_binary_targets_is_by_the_0_1_target(rng):
    x = rng.standard_normal((10, 3))
    t = rng.integers(0, 2, 10).astype(float)
    for shape in ((10,), (10, 1)):
        a = Sequential([Dense(1, activation="sigmoid", input_dim=3)], dtype="float64", seed=0)
        b = Sequential([Dense(1, activation="sigmoid", input_dim=3)], dtype="float64", seed=0)
        for m in (a, b):
            m.compile(optim.SGD(lr=0.1), "binary_crossentropy")
        la = a.train_on_batch(x, t.reshape(shape), class_weight={1: 5.0})
        lb = b.train_on_batch(x, t.reshape(shape), sample_weight=np.where(t == 1, 5.0, 1.0))
        assert la == lb
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v)


def test_a_zero_weight_removes_the_samples_effect(rng):
    x = rng.standard_normal((6, 3))
    t = rng.integers(0, 3, 6)
    w = rng.random(6) + 0.5
    w[0] = 0.0
    results = []
    for x0, t0 in ((x[0], t[0]), (x[0] * 100 + 7, (t[0] + 1) % 3)):
        xx, tt = x.copy(), t.copy()
        xx[0], tt[0] = x0, t0
        model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
        results.append((model.train_on_batch(xx, tt, sample_weight=w), model.get_weights()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)
    # the same step as on the other samples alone, the mean taken over the 6
    model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    assert model.train_on_batch(x[1:], t[1:], sample_weight=w[1:] * 5 / 6) == pytest.approx(results[0][0], rel=1e-13)
    for a, b in zip(model.get_weights(), results[0][1]):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def test_validation_data_with_weights_and_validation_split_splits_them(rng):
    x = rng.standard_normal((20, 3))
    t = rng.integers(0, 3, 20)
    w = rng.random(20) * 2
    xv, tv, wv = rng.standard_normal((7, 3)), rng.integers(0, 3, 7), rng.random(7)

    def model():
        m = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        m.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return m
    m = model()
    history = m.fit(x, t, epochs=1, batch_size=4, verbose=0, validation_data=(xv, tv, wv), sample_weight=w)
    loss, acc = m.evaluate(xv, tv, sample_weight=wv, batch_size=4)
    assert history.history["val_loss"] == [loss] and history.history["val_accuracy"] == [acc]
    assert loss != m.evaluate(xv, tv, batch_size=4)[0]
    assert acc == m.evaluate(xv, tv, batch_size=4)[1]   # metrics are not weighted
    # validation_split: the last 5 samples and their weights are held out, before shuffling
    a, b = model(), model()
    ha = a.fit(x, t, epochs=2, batch_size=4, verbose=0, seed=2, validation_split=0.25, sample_weight=w)
    hb = b.fit(x[:15], t[:15], epochs=2, batch_size=4, verbose=0, seed=2, sample_weight=w[:15])
    assert ha.history["loss"] == hb.history["loss"]
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert ha.history["val_loss"][-1] == a.evaluate(x[15:], t[15:], sample_weight=w[15:], batch_size=4)[0]
    # class_weight weights the training samples only, as in Keras
    c = model()
    hc = c.fit(x, t, epochs=1, batch_size=4, verbose=0, validation_split=0.25, class_weight={0: 3.0})
    assert hc.history["val_loss"] == [c.evaluate(x[15:], t[15:], batch_size=4)[0]]


def test_shuffling_keeps_each_weight_with_its_sample(rng):
    x = rng.standard_normal((11, 3))
    t = rng.integers(0, 3, 11)
    w = rng.random(11) * 2

    def model():
        m = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        m.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
        return m
    fitted, manual = model(), model()
    history = fitted.fit(x, t, epochs=1, batch_size=4, shuffle=True, seed=5, verbose=0, sample_weight=w)
    order = np.random.default_rng(5).permutation(11)
    total = 0.0
    for lo in range(0, 11, 4):
        idx = order[lo:lo + 4]
        total += manual.train_on_batch(x[idx], t[idx], sample_weight=w[idx]) * len(idx)
    assert history.history["loss"] == [pytest.approx(total / 11, rel=1e-14)]
    for a, b in zip(fitted.get_weights(), manual.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(order, np.arange(11))


def test_the_epoch_loss_is_the_exact_mean_of_the_weighted_batch_losses(rng):
    x = rng.standard_normal((10, 3))
    t = rng.integers(0, 3, 10)
    w = rng.random(10)
    model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.0), "sparse_categorical_crossentropy")
    history = model.fit(x, t, epochs=1, batch_size=4, shuffle=False, verbose=0, sample_weight=w)
    z = model.predict(x)
    want = -np.sum(w * np.log(z[np.arange(10), t])) / 10
    assert history.history["loss"][0] == pytest.approx(want, rel=1e-12)
    assert model.evaluate(x, t, sample_weight=w, batch_size=3) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("call, error, message", [
    (lambda m, x, t: m.fit(x, t, sample_weight=np.ones(9), verbose=0), ValueError,
     "fit: sample_weight has 9 weights but there are 10 samples"),
    (lambda m, x, t: m.fit(x, t, sample_weight=-np.ones(10), verbose=0), ValueError, "fit: sample_weight must be >= 0"),
    (lambda m, x, t: m.fit(x, t, sample_weight=np.full(10, np.nan), verbose=0), ValueError, "fit: .*NaN or Inf"),
    (lambda m, x, t: m.fit(x, t, sample_weight=np.full(10, np.inf), verbose=0), ValueError, "fit: .*NaN or Inf"),
    (lambda m, x, t: m.fit(x, t, sample_weight=np.ones((10, 2)), verbose=0), ValueError,
     r"fit: sample_weight must be 1-D.*\(10,\), or \(10, 1\)\), got shape \(10, 2\)"),
    (lambda m, x, t: m.evaluate(x, t, sample_weight=np.ones((1, 10))), ValueError,
     r"evaluate: sample_weight must be 1-D.*got shape \(1, 10\)"),
    (lambda m, x, t: m.train_on_batch(x, t, sample_weight=np.ones((10, 1, 1))), ValueError,
     r"train_on_batch: sample_weight must be 1-D.*got shape \(10, 1, 1\)"),
    (lambda m, x, t: m.fit(x, t, validation_data=(x, t, np.ones((10, 2))), verbose=0), ValueError,
     r"fit \(validation_data\): sample_weight must be 1-D.*got shape \(10, 2\)"),
    (lambda m, x, t: m.fit(x, t, sample_weight=["a"] * 10, verbose=0), TypeError, "fit: sample_weight must be numbers"),
    (lambda m, x, t: m.evaluate(x, t, sample_weight=np.ones(3)), ValueError, "evaluate: sample_weight has 3"),
    (lambda m, x, t: m.train_on_batch(x, t, sample_weight=-np.ones(10)), ValueError, "train_on_batch: sample_weight"),
    (lambda m, x, t: m.fit(x, t, validation_data=(x, t, np.ones(4)), verbose=0), ValueError,
     r"fit \(validation_data\): sample_weight has 4"),
    (lambda m, x, t: m.fit(x, t, validation_data=(x, t, 1, 2), verbose=0), ValueError, "val_sample_weight"),
    (lambda m, x, t: m.fit(x, t, class_weight={3: 1.0}, verbose=0), ValueError,
     r"fit: class_weight has class 3.*\[0, 3\)"),
    (lambda m, x, t: m.fit(x, t, class_weight={-1: 1.0}, verbose=0), ValueError, "fit: class_weight has class -1"),
    (lambda m, x, t: m.fit(x, t, class_weight={"0": 1.0}, verbose=0), TypeError,
     "fit: class_weight's keys must be int"),
    (lambda m, x, t: m.fit(x, t, class_weight={1.0: 1.0}, verbose=0), TypeError, "keys must be int"),
    (lambda m, x, t: m.fit(x, t, class_weight={0: -1.0}, verbose=0), ValueError,
     r"class_weight\[0\] must be finite and >= 0"),
    (lambda m, x, t: m.fit(x, t, class_weight=[1.0, 2.0], verbose=0), TypeError, "fit: class_weight must be a dict"),
    (lambda m, x, t: m.fit(x, t, class_weight={0: 1.0}, sample_weight=np.ones(10), verbose=0), ValueError,
     "not both"),
    (lambda m, x, t: m.train_on_batch(x, t, class_weight={0: 1.0}, sample_weight=np.ones(10)), ValueError,
     "train_on_batch: give sample_weight or class_weight, not both"),
])
def test_bad_weights_are_refused(rng, call, error, message):
    model = Sequential([Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(error, match=message):
        call(model, rng.standard_normal((10, 4)), rng.integers(0, 3, 10))
    assert not model.built   # refused before the model was built


def test_a_column_of_weights_n_by_1_is_the_same_as_n_weights(rng):
    # Keras takes sample_weight of shape (N,) or (N, 1) alike
    x = rng.standard_normal((12, 3))
    t = rng.integers(0, 3, 12)
    w = rng.random(12) * 2
    w[3] = 0.0
    xv, tv, wv = rng.standard_normal((5, 3)), rng.integers(0, 3, 5), rng.random(5)
    results = []
    for shape in ((-1,), (-1, 1)):
        model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, t, epochs=2, batch_size=5, seed=1, verbose=0, sample_weight=w.reshape(shape),
                            validation_data=(xv, tv, wv.reshape(shape)))
        step = model.train_on_batch(x, t, sample_weight=w.reshape(shape))
        evaluated = model.evaluate(x, t, sample_weight=w.reshape(shape), batch_size=4)
        results.append((history.history, step, evaluated, model.get_weights()))
    assert results[0][:3] == results[1][:3]
    for a, b in zip(results[0][3], results[1][3]):
        np.testing.assert_array_equal(a, b)
    # the column weights each sample's loss: sum_i w_i l_i / N
    p = model.predict(x)
    assert model.evaluate(x, t, sample_weight=w[:, None]) == pytest.approx(
        [-np.sum(w * np.log(p[np.arange(12), t])) / 12, np.mean(np.argmax(p, axis=1) == t)], rel=1e-12)


def test_class_weight_needs_class_targets(rng):
    x = rng.standard_normal((6, 3))
    model = Sequential([Dense(2, input_dim=3)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="fit: class_weight with mse needs class targets.*not one-hot"):
        model.fit(x, rng.standard_normal((6, 2)), class_weight={0: 2.0}, verbose=0)
    model = Sequential([Dense(1, input_dim=3)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="fit: class_weight with mse needs class targets, 0 or 1"):
        model.fit(x, rng.standard_normal(6), class_weight={0: 2.0}, verbose=0)
    model.fit(x, rng.integers(0, 2, 6), class_weight={0: 2.0}, verbose=0)
    model = Sequential([Dense(2, activation="sigmoid", input_dim=3)])
    model.compile("sgd", "binary_crossentropy")
    with pytest.raises(ValueError, match="fit: class_weight with binary_crossentropy needs a one-unit output"):
        model.fit(x, rng.integers(0, 2, (6, 2)), class_weight={0: 2.0}, verbose=0)


def test_a_loss_of_the_users_without_per_sample_refuses_weights(rng):
    x = rng.standard_normal((6, 3))
    t = rng.standard_normal((6, 1))
    model = Sequential([Dense(1, input_dim=3)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), MeanAbsoluteErrorLoss())
    for call in (lambda: model.fit(x, t, sample_weight=np.ones(6), verbose=0),
                 lambda: model.evaluate(x, t, sample_weight=np.full(6, 2.0)),
                 lambda: model.train_on_batch(x, t, class_weight={0: 1.0})):
        with pytest.raises(TypeError, match="MeanAbsoluteErrorLoss does not implement per_sample"):
            call()

    class WithPerSample(MeanAbsoluteErrorLoss):
        def per_sample(self, y, t):
            return np.abs(y - t).reshape(len(y), -1).mean(axis=1)
    model.compile(optim.SGD(lr=0.1), WithPerSample())
    w = np.array([0.0, 1.0, 2.0, 0.5, 1.0, 3.0])
    y = model.predict(x)
    assert model.evaluate(x, t, sample_weight=w) == pytest.approx(np.sum(w * np.abs(y - t)[:, 0]) / 6, rel=1e-12)
    with pytest.raises(TypeError, match="class_weight needs class targets; the loss WithPerSample"):
        model.fit(x, t, class_weight={0: 1.0}, verbose=0)


@pytest.mark.parametrize("loss, y, t", [
    (losses.SparseCategoricalCrossentropy(), [[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], [2, 0]),
    (losses.CategoricalCrossentropy(), [[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], [[0.2, 0.0, 0.9], [1.0, 0.0, 0.0]]),
    (losses.BinaryCrossentropy(), [[1.0, -2.0], [40.0, -0.3]], [[0.2, 1.0], [0.0, 0.5]]),
    (losses.MeanSquaredError(), [[1.0, -2.0], [4.0, -0.3]], [[0.2, 1.0], [0.0, 0.5]]),
])
def test_per_sample_losses_average_to_the_loss(loss, y, t):
    y = np.array(y)
    t = np.array(t) if isinstance(t[0], int) else np.array(t, dtype=float)
    per = loss.per_sample(y, t)
    assert per.shape == (2,) and per.mean() == pytest.approx(loss(y, t)[0], rel=1e-14)
    w = np.array([0.5, 3.0])
    value, grad = loss.weighted(y, t, w)
    assert value == pytest.approx(np.sum(w * per) / 2, rel=1e-14)
    np.testing.assert_array_equal(grad, loss(y, t)[1] * w[:, None])


def test_a_zero_weight_skips_an_infinite_loss():
    y = np.array([[-np.inf, 0.0], [0.0, 0.0]])   # log p of class 0 is -inf in row 0
    loss = losses.SparseCategoricalCrossentropy()
    assert loss(y, np.array([0, 0]))[0] == np.inf
    value, grad = loss.weighted(y, np.array([0, 0]), np.array([0.0, 1.0]))
    assert value == pytest.approx(np.log(2) / 2, rel=1e-6)
    assert np.all(grad[0] == 0) and np.all(np.isfinite(grad))


# ---------------------------------------------------------------------- weighted_metrics
def _identity_model(**compile_args):
    """Dense(2) with an identity kernel and no bias: the output is x, so metrics are easy by hand."""
    model = Sequential([Dense(2, input_dim=2, kernel_initializer="zeros")], dtype="float64", seed=0)
    model.set_weights([np.eye(2), np.zeros(2)])
    model.compile(optim.SGD(lr=0.0), "mse", **compile_args)
    return model


# y = x; |y - t| rows [0, 2], [1, 1], [3, 1]: mae per sample 1, 1, 2; mse per sample 2, 1, 5
X_HAND = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
T_HAND = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
W_HAND = np.array([1.0, 0.0, 3.0])


def test_weighted_metrics_are_weighted_means_by_hand():
    model = _identity_model(metrics=["mae"], weighted_metrics=["mae", "mse"])
    logs = model.evaluate(X_HAND, T_HAND, sample_weight=W_HAND, batch_size=2, return_dict=True)
    # mae: (1*1 + 0*1 + 3*2) / (1 + 0 + 3); mse: (1*2 + 0*1 + 3*5) / 4; the loss: sum_i w_i l_i / N
    assert logs == {"loss": pytest.approx(17 / 3, rel=1e-15), "mae": pytest.approx(4 / 3, rel=1e-15),
                    "weighted_mae": pytest.approx(7 / 4, rel=1e-15), "mse": pytest.approx(17 / 4, rel=1e-15)}
    assert model.evaluate(X_HAND, T_HAND, sample_weight=W_HAND, batch_size=2) == pytest.approx(
        [17 / 3, 4 / 3, 7 / 4, 17 / 4], rel=1e-15)
    # the epoch's value is over its samples (not a mean of the batches' weighted means: (1 * 2 + 2 * 1) / 3)
    history = model.fit(X_HAND, T_HAND, batch_size=2, shuffle=False, verbose=0, sample_weight=W_HAND,
                        validation_data=(X_HAND, T_HAND, W_HAND[::-1]))
    assert history.history["weighted_mae"] == [pytest.approx(7 / 4, rel=1e-15)]
    assert history.history["mse"] == [pytest.approx(17 / 4, rel=1e-15)]
    # validation weights: 3, 0, 1: mae (3 + 0 + 2) / 4, mse (6 + 0 + 5) / 4
    assert history.history["val_weighted_mae"] == [pytest.approx(5 / 4, rel=1e-15)]
    assert history.history["val_mse"] == [pytest.approx(11 / 4, rel=1e-15)]
    assert history.history["val_mae"] == [pytest.approx(4 / 3, rel=1e-15)]   # metrics= stays unweighted
    assert model.train_on_batch(X_HAND, T_HAND, sample_weight=W_HAND, return_dict=True)["mse"] == pytest.approx(
        17 / 4, rel=1e-15)


def test_weighted_accuracies_against_numpy(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((30, 4))
    labels = rng.integers(0, 3, 30)
    w = rng.random(30) * 2
    w[:4] = 0.0
    model = Sequential([Dense(3, activation="softmax", input_dim=4)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.0), "categorical_crossentropy", metrics=["accuracy"],
                  weighted_metrics=["accuracy"])
    t = np.eye(3)[labels]
    logs = model.evaluate(x, t, sample_weight=w, batch_size=7, return_dict=True)
    hit = torch.argmax(torch.as_tensor(model.predict(x)), dim=1) == torch.as_tensor(labels)
    assert logs["weighted_accuracy"] == pytest.approx(float((torch.as_tensor(w) * hit).sum() / w.sum()), rel=1e-14)
    assert logs["accuracy"] == pytest.approx(float(hit.double().mean()), rel=1e-14)
    # binary accuracy of a 2-unit output: each sample's fraction of matching units, weighted
    model = Sequential([Dense(2, activation="sigmoid", input_dim=4)], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.0), "binary_crossentropy", weighted_metrics=["binary_accuracy"])
    t = rng.integers(0, 2, (30, 2)).astype(float)
    per = ((model.predict(x) > 0.5) == (t > 0.5)).mean(axis=1)
    assert model.evaluate(x, t, sample_weight=w, batch_size=8, return_dict=True)["binary_accuracy"] == \
        pytest.approx(np.sum(w * per) / np.sum(w), rel=1e-14)


def test_weighted_metrics_without_weights_or_with_ones_are_the_unweighted_bits(rng):
    x = rng.standard_normal((23, 3))
    t = rng.integers(0, 3, 23)
    runs = []
    for weights in ({}, {"sample_weight": np.ones(23)}):
        model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], weighted_metrics=["acc"])
        history = model.fit(x, t, epochs=2, batch_size=5, seed=3, verbose=0, validation_split=0.2, **weights)
        runs.append((history.history, model.evaluate(x, t, batch_size=4, return_dict=True, **weights)))
        assert history.history["acc"] == history.history["accuracy"]
        assert history.history["val_acc"] == history.history["val_accuracy"]
        assert runs[-1][1]["acc"] == runs[-1][1]["accuracy"]
    assert runs[0] == runs[1]


def test_a_zero_weight_removes_the_sample_from_the_weighted_metrics():
    model = _identity_model(weighted_metrics=["mae"])
    far = T_HAND.copy()
    far[1] = [1e6, -1e6]   # the sample of weight 0
    assert model.evaluate(X_HAND, far, sample_weight=W_HAND, return_dict=True)["mae"] == pytest.approx(7 / 4,
                                                                                                       rel=1e-15)
    # weights that are all 0: 0, as Keras's divide_no_nan gives (the loss is 0 too)
    assert model.evaluate(X_HAND, T_HAND, sample_weight=np.zeros(3), return_dict=True) == {"loss": 0.0, "mae": 0.0}
    # a batch of weights all 0 counts for nothing in the epoch
    history = model.fit(X_HAND, T_HAND, batch_size=2, shuffle=False, verbose=0, sample_weight=[0, 0, 2])
    assert history.history["mae"] == [2.0]


def test_class_weight_weights_the_weighted_metrics_as_sample_weight_does(rng):
    x = rng.standard_normal((20, 3))
    labels = rng.integers(0, 3, 20)
    histories = []
    for weights in ({"class_weight": {0: 3.0, 2: 0.0}}, {"sample_weight": np.array([3.0, 1.0, 0.0])[labels]}):
        model = Sequential([Dense(3, activation="softmax", input_dim=3)], dtype="float64", seed=0)
        model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
        histories.append(model.fit(x, labels, epochs=2, batch_size=6, seed=1, verbose=0, **weights).history)
    assert histories[0] == histories[1]
    model.compile(optim.SGD(lr=0.0), "sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    hit = np.argmax(model.predict(x), axis=1) == labels
    history = model.fit(x, labels, batch_size=6, verbose=0, class_weight={0: 3.0, 2: 0.0})
    want = np.array([3.0, 1.0, 0.0])[labels]
    assert history.history["accuracy"] == [pytest.approx(np.sum(want * hit) / np.sum(want), rel=1e-14)]


def test_weighted_metric_names_follow_keras():
    # a name that metrics= has already takes the prefix weighted_ (Keras 3's CompileMetrics)
    model = _identity_model(metrics=["mse"], weighted_metrics=["mae", "mse"])
    assert list(model.evaluate(X_HAND, T_HAND, return_dict=True)) == ["loss", "mse", "mae", "weighted_mse"]
    model = _identity_model(metrics=[metrics.MeanAbsoluteError(name="err")],
                            weighted_metrics=[metrics.MeanAbsoluteError(name="err")])
    assert list(model.evaluate(X_HAND, T_HAND, return_dict=True)) == ["loss", "err", "weighted_err"]
    for compile_args in ({"weighted_metrics": ["mae", "mae"]},
                         {"metrics": ["mae", metrics.MeanSquaredErrorMetric(name="weighted_mae")],
                          "weighted_metrics": ["mae"]},
                         {"weighted_metrics": [metrics.MeanAbsoluteError(name="loss")]}):
        with pytest.raises(ValueError, match="compile: metric names must be distinct and not 'loss'"):
            _identity_model(**compile_args)


def test_a_lone_metric_is_a_list_of_one_for_metrics_and_weighted_metrics_alike():
    listed = _identity_model(metrics=["mse"], weighted_metrics=["mae"])
    lone = _identity_model(metrics="mse", weighted_metrics=metrics.MeanAbsoluteError())
    want = listed.evaluate(X_HAND, T_HAND, sample_weight=W_HAND, return_dict=True)
    assert list(want) == ["loss", "mse", "mae"]
    assert lone.evaluate(X_HAND, T_HAND, sample_weight=W_HAND, return_dict=True) == want
    with pytest.raises(TypeError, match="compile: metrics must be a list of metrics .*got dict"):
        _identity_model(metrics={"out": "mae"})


class _MetricWithoutPerSample(metrics.Metric):
    name = "max_error"

    def __call__(self, y, t):
        return float(np.max(np.abs(y - t)))


@pytest.mark.parametrize("weighted_metrics, error, message", [
    ({"out": "mae"}, TypeError, "compile: weighted_metrics must be a list of metrics .*got dict {'out': 'mae'}"),
    ({"mae"}, TypeError, "compile: weighted_metrics must be a list of metrics .*got set"),
    (["nope"], ValueError, "compile: unknown metric 'nope'"),
    ([3], TypeError, "compile: a metric must be a name or a fastnn.nn.metrics.Metric, got 3"),
    (["sparse_categorical_accuracy"], ValueError, "compile: the metric 'sparse_categorical_accuracy' compares"),
    ([_MetricWithoutPerSample()], TypeError,
     "compile: the weighted metric 'max_error' needs .* _MetricWithoutPerSample does not implement per_sample"),
])
def test_bad_weighted_metrics_are_refused(weighted_metrics, error, message):
    model = _identity_model(metrics=["mae"])
    with pytest.raises(error, match=message):
        model.compile("adam", "mse", weighted_metrics=weighted_metrics)
    assert isinstance(model.optimizer, optim.SGD) and model.weighted_metrics == []   # compiled as it was
    # a metric of the user's own is unweighted where it has no per_sample
    model.compile("sgd", "mse", metrics=[_MetricWithoutPerSample()])
    assert model.evaluate(X_HAND, T_HAND, sample_weight=W_HAND, return_dict=True)["max_error"] == 3.0


# ---------------------------------------------------------------------- kernel_regularizer, bias_regularizer
def _torch_penalty(w, factors):
    l1, l2 = factors
    return l1 * w.abs().sum() + l2 * w.pow(2).sum()


REGULARIZERS = [   # (regularizer, its (l1, l2) written out)
    (regularizers.L1(0.03), (0.03, 0.0)),
    (regularizers.L2(0.05), (0.0, 0.05)),
    (regularizers.L1L2(l1=0.02, l2=0.04), (0.02, 0.04)),
]


@pytest.mark.parametrize("regularizer, factors", REGULARIZERS)
def test_dense_regularized_loss_and_step_match_torch(rng, regularizer, factors):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 4))
    t = rng.integers(0, 3, 6)
    model = Sequential([Dense(3, activation="softmax", input_dim=4, kernel_regularizer=regularizer,
                              bias_regularizer="l1", bias_initializer="normal")], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    W0, b0 = model.get_weights()
    W0[0, 0] = 0.0    # |w|'s gradient at 0 is 0, as TensorFlow's and torch's sign
    model.set_weights([W0, b0])
    Wt = torch.tensor(W0, requires_grad=True)
    bt = torch.tensor(b0, requires_grad=True)
    loss = (torch.nn.functional.cross_entropy(torch.as_tensor(x) @ Wt + bt, torch.as_tensor(t))
            + _torch_penalty(Wt, factors) + _torch_penalty(bt, (0.01, 0.0)))
    loss.backward()
    assert model.evaluate(x, t, batch_size=4) == pytest.approx(loss.item(), rel=1e-13)
    assert model.train_on_batch(x, t) == pytest.approx(loss.item(), rel=1e-13)
    W1, b1 = model.get_weights()
    np.testing.assert_allclose(W1, W0 - 0.1 * Wt.grad.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(b1, b0 - 0.1 * bt.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("regularizer, factors", REGULARIZERS)
def test_conv_regularized_loss_and_step_match_torch(rng, regularizer, factors):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((5, 2, 6, 6))
    t = rng.integers(0, 3, 5)
    model = Sequential([
        Conv2D(3, 3, padding="same", activation="relu", input_shape=(2, 6, 6), kernel_regularizer=regularizer,
               bias_regularizer=regularizers.L2(0.2), bias_initializer="normal"),
        MaxPool2D(2),   # runs fused with the convolution
        Conv2D(2, 2, kernel_regularizer=regularizer),
        Flatten(),
        Dense(3, activation="softmax", kernel_regularizer="l2"),
    ], dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    before = model.get_weights()
    k1, c1, k2, c2, W, b = (torch.tensor(v, requires_grad=True) for v in before)
    h = F.max_pool2d(F.relu(F.conv2d(torch.as_tensor(x), k1, c1, padding=1)), 2)
    z = F.conv2d(h, k2, c2).flatten(1) @ W + b
    loss = (F.cross_entropy(z, torch.as_tensor(t)) + _torch_penalty(k1, factors) + _torch_penalty(c1, (0.0, 0.2))
            + _torch_penalty(k2, factors) + _torch_penalty(W, (0.0, 0.01)))
    loss.backward()
    assert model.evaluate(x, t) == pytest.approx(loss.item(), rel=1e-13)
    assert model.train_on_batch(x, t) == pytest.approx(loss.item(), rel=1e-13)
    for after, start, p in zip(model.get_weights(), before, (k1, c1, k2, c2, W, b)):
        np.testing.assert_allclose(after, start - 0.1 * p.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_a_float32_model_is_regularized_in_float32(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 4)).astype(np.float32)
    t = rng.integers(0, 3, 6)
    model = Sequential([Dense(3, activation="softmax", input_dim=4, kernel_regularizer=regularizers.L1L2(0.02, 0.04))],
                       seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    W0, b0 = model.get_weights()
    Wt = torch.tensor(W0.astype(np.float64), requires_grad=True)
    loss = (torch.nn.functional.cross_entropy(torch.as_tensor(x, dtype=torch.float64) @ Wt + torch.as_tensor(b0),
                                              torch.as_tensor(t)) + _torch_penalty(Wt, (0.02, 0.04)))
    loss.backward()
    assert model.train_on_batch(x, t) == pytest.approx(loss.item(), rel=1e-6)
    W1 = model.get_weights()[0]
    assert W1.dtype == np.float32 and model.grads()["dense/kernel"].dtype == np.float32
    np.testing.assert_allclose(W1, W0 - 0.1 * Wt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_the_penalty_is_in_the_reported_loss_and_not_weighted(rng):
    x = rng.standard_normal((10, 3))
    t = rng.integers(0, 2, 10)
    w = rng.random(10) * 2

    def model(**regularizer):
        m = Sequential([Dense(2, activation="softmax", input_dim=3, **regularizer)], dtype="float64", seed=0)
        m.compile(optim.SGD(lr=0.0), "sparse_categorical_crossentropy")
        return m
    plain, regularized = model(), model(kernel_regularizer=regularizers.L1L2(l1=0.3, l2=0.5))
    W = plain.get_weights()[0]
    penalty = 0.3 * np.abs(W).sum() + 0.5 * (W ** 2).sum()
    assert regularized.losses == [pytest.approx(penalty, rel=1e-14)]
    for weights in ({}, {"sample_weight": w}):
        data = plain.evaluate(x, t, **weights)
        assert regularized.evaluate(x, t, batch_size=3, **weights) == pytest.approx(data + penalty, rel=1e-13)
        history = regularized.fit(x, t, batch_size=4, verbose=0, validation_data=(x, t), **weights)
        assert history.history["loss"] == [pytest.approx(data + penalty, rel=1e-13)]
        assert history.history["val_loss"] == [pytest.approx(plain.evaluate(x, t) + penalty, rel=1e-13)]


def test_a_frozen_layers_regularizer_adds_nothing_as_in_keras_3(rng):
    # Keras 3 adds the penalties of trainable weights only (Layer._get_regularization_losses)
    x = rng.standard_normal((8, 3))
    t = rng.integers(0, 2, 8)
    model = Sequential([Dense(4, input_dim=3, kernel_regularizer=regularizers.L2(1.0), name="base"),
                        Dense(2, activation="softmax", kernel_regularizer=regularizers.L1(0.5), name="head")],
                       dtype="float64", seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    base, head = model.layers
    base.trainable = False
    assert base.losses == [] and model.losses == [pytest.approx(0.5 * np.abs(head.get_weights()[0]).sum())]
    unregularized = Sequential([Dense(4, input_dim=3, name="base"), Dense(2, activation="softmax", name="head")],
                               dtype="float64", seed=0)
    unregularized.compile(optim.SGD(lr=0.0), "sparse_categorical_crossentropy")
    before, penalty = base.get_weights(), model.losses[0]
    assert model.train_on_batch(x, t) == pytest.approx(unregularized.evaluate(x, t) + penalty, rel=1e-13)
    for a, b in zip(base.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    base.trainable = True
    assert len(model.losses) == 2


def test_regularizer_names_classes_and_keras_aliases():
    assert regularizers.l2 is regularizers.L2 and isinstance(regularizers.l2(0.001), regularizers.L2)
    assert regularizers.l1 is regularizers.L1 and regularizers.l1_l2 is regularizers.L1L2
    for name, cls, config in (("l1", regularizers.L1, {"l1": 0.01}), ("l2", regularizers.L2, {"l2": 0.01}),
                              ("l1_l2", regularizers.L1L2, {"l1": 0.01, "l2": 0.01})):
        layer = Dense(2, kernel_regularizer=name, bias_regularizer=name.upper())
        assert type(layer.kernel_regularizer) is cls and layer.kernel_regularizer.get_config() == config
        assert layer.bias_regularizer.get_config() == config
    assert regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}   # Keras 3's defaults
    assert Conv2D(2, 3, kernel_regularizer=regularizers.L2).kernel_regularizer.get_config() == {"l2": 0.01}
    w = np.array([[-2.0, 0.0], [0.5, 3.0]])
    reg = regularizers.L1L2(l1=0.1, l2=0.25)
    assert reg(w) == pytest.approx(0.1 * 5.5 + 0.25 * 13.25, rel=1e-15)
    np.testing.assert_allclose(reg.gradient(w), [[-0.1 - 1.0, 0.0], [0.1 + 0.25, 0.1 + 1.5]], rtol=1e-15)
    assert reg.gradient(w.astype(np.float32)).dtype == np.float32
    # use_bias=False: a bias_regularizer has no bias to act on (Keras ignores it too)
    layer = Dense(2, use_bias=False, bias_regularizer="l2")
    layer.build((3,))
    assert layer.losses == []


@pytest.mark.parametrize("make, error, message", [
    (lambda: regularizers.L1(-0.1), ValueError, r"L1: expected l1 >= 0.0, got -0.1"),
    (lambda: regularizers.L2(float("inf")), ValueError, "L2: expected a finite l2, got inf"),
    (lambda: regularizers.L1L2(l2=float("nan")), ValueError, "L1L2: expected a finite l2, got nan"),
    (lambda: regularizers.L1L2(l1=-1), ValueError, r"L1L2: expected l1 >= 0.0, got -1.0"),
    (lambda: regularizers.L2("0.1"), TypeError, "L2: expected l2 to be a real number, got str"),
    (lambda: Dense(2, kernel_regularizer=lambda w: 0.01 * np.sum(w ** 2)), TypeError,
     r"Dense: kernel_regularizer must be None, one of \['l1', 'l1_l2', 'l2'\] or a fastnn.nn.regularizers object "
     r"\(L1, L2, L1L2\); fastnn also needs the penalty's gradient, so other callables are not supported"),
    (lambda: Conv2D(2, 3, bias_regularizer=0.01), TypeError, "Conv2D: bias_regularizer must be None"),
    (lambda: Dense(2, kernel_regularizer="l3"), ValueError, "Dense: unknown kernel_regularizer 'l3'"),
    (lambda: Dense(2, kernel_regularizer={"class_name": "L2", "config": {"l2": 0.1, "x": 1}}), ValueError,
     "Dense: invalid kernel_regularizer config"),
])
def test_bad_regularizers_are_refused(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("call", ["fit", "evaluate", "predict"])
def test_no_layer_keeps_a_batch_once_a_call_returns(rng, call):
    """The forward passes keep their inputs for the backward; after fit, evaluate or predict
    nothing holds the caller's data, the fused conv + pool pair included."""
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(1, 8, 8)), MaxPool2D(2), Flatten(),
                        Dense(3, activation="softmax")], seed=0)
    model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
    assert model._fused_pairs() == {0}
    x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    t = np.arange(6) % 3
    data = weakref.ref(x)
    if call == "fit":
        model.fit(x, t, epochs=1, batch_size=6, shuffle=False, verbose=0)
    elif call == "evaluate":
        model.evaluate(x, t, batch_size=6)
    else:
        model.predict(x, batch_size=6)
    del x
    assert data() is None


class _OwnConv2D(Conv2D):
    """A subclass with the fused pass's signature of before the NCHW runs."""

    def forward_max_pool(self, x, pool, training=False):
        return super().forward_max_pool(x, pool, training=training)

    def backward_max_pool(self, dy, need_dx=True):
        return super().backward_max_pool(dy, need_dx=need_dx)


def test_a_subclassed_convolution_fused_with_its_pool_keeps_the_pair_out_of_a_run(rng):
    # the pair runs as one layer: its MaxPool2D does not start a run that the subclass (outside
    # runs, as every subclass) would have to hand NCHW data to
    x = rng.standard_normal((4, 8, 8, 3))
    t = rng.integers(0, 3, 4)
    last = dict(data_format="channels_last")
    results = []
    for runs in (True, False):
        model = Sequential([_OwnConv2D(4, 3, activation="relu", input_shape=(8, 8, 3), **last), MaxPool2D(2, **last),
                            Conv2D(5, 1, **last), GlobalAveragePooling2D(**last), Dense(3, activation="softmax")],
                           dtype="float64", seed=0)
        model._nchw_runs = runs
        model.compile(optim.SGD(lr=0.1), "sparse_categorical_crossentropy")
        assert model._fused_pairs() == {0}
        results.append([model.train_on_batch(x, t), model.train_on_batch(x, t)] + model.get_weights())
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)
