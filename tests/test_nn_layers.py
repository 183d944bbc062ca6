"""fastnn.nn layers and Sequential building: shape inference, summary numbers, the
"same" padding rule, argument validation, and gradcheck of every layer type in float64."""
import zlib

import numpy as np
import pytest

import fastnn
from fastnn import nn
from fastnn.nn import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                       Sequential, gradcheck, regularizers)
from conftest import optional_module, requires_native
from helpers import naive_pool2d

BACKENDS = ["numpy", pytest.param("native", marks=requires_native)]

# float64 central differences with eps=1e-6 reach ~1e-9 here; 1e-6 leaves room for
# unlucky kinks but still catches any real mistake (see test_gradcheck_detects_a_wrong_gradient).
GRADCHECK_TOL = 1e-6


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.backend(request.param):
        yield request.param


# ----------------------------------------------------------------------------- building
def test_mlp_shapes_and_summary_counts():
    model = Sequential([Dense(64, activation="relu", input_dim=784), Dropout(0.5), Dense(10, activation="softmax")])
    assert model.built
    assert model.input_shape == (784,) and model.output_shape == (10,)
    assert [layer.name for layer in model.layers] == ["dense", "dropout", "dense_1"]
    assert model.layers[0].params["kernel"].shape == (784, 64)
    assert model.layers[0].params["kernel"].dtype == np.float32
    assert model.count_params() == 784 * 64 + 64 + 64 * 10 + 10
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "dense (Dense)" in text and "(None, 64)" in text and "50240" in text
    assert "dropout (Dropout)" in text and "dense_1 (Dense)" in text and "650" in text
    assert "Total params: 50,890" in text and "Trainable params: 50,890" in text
    assert "Non-trainable params: 0" in text


def test_cnn_shapes_and_summary_counts():
    model = Sequential([
        Conv2D(8, 3, padding="same", activation="relu", input_shape=(1, 28, 28)),
        BatchNorm(),
        MaxPool2D(2),
        Conv2D(16, (3, 5), strides=2),
        AvgPool2D(2, strides=1),
        Flatten(),
        Dense(10, activation="softmax"),
    ])
    shapes = [layer.output_shape for layer in model.layers]
    # same: 28x28; pool: 14x14; valid stride 2: ((14-3)//2+1, (14-5)//2+1) = (6, 5); avg 2 stride 1: (5, 4)
    assert shapes == [(8, 28, 28), (8, 28, 28), (8, 14, 14), (16, 6, 5), (16, 5, 4), (320,), (10,)]
    assert model.layers[3].params["kernel"].shape == (16, 8, 3, 5)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    trainable = (8 * 9 + 8) + 16 + (16 * 8 * 15 + 16) + (320 * 10 + 10)
    assert f"Total params: {trainable + 16:,}" in text
    assert f"Trainable params: {trainable:,}" in text
    assert "Non-trainable params: 16" in text
    assert "(None, 16, 5, 4)" in text and "batch_norm (BatchNorm)" in text


def test_shapes_inferred_at_first_call():
    model = Sequential([Dense(5, activation="tanh"), Dense(2)])
    assert not model.built
    with pytest.raises(ValueError, match="not built"):
        model.summary()
    y = model.predict(np.ones((3, 7)))
    assert model.built and model.input_shape == (7,)
    assert y.shape == (3, 2) and y.dtype == np.float32
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 7\)"):
        model.predict(np.ones((3, 6)))


def test_add_names_and_errors():
    model = Sequential()
    model.add(Dense(4, input_dim=3))
    model.add(Dense(4))
    model.add(Dense(2, name="out"))
    assert [layer.name for layer in model.layers] == ["dense", "dense_1", "out"]
    assert model.output_shape == (2,)
    with pytest.raises(ValueError, match="already"):
        model.add(Dense(3, name="out"))
    with pytest.raises(TypeError):
        model.add("dense")
    with pytest.raises(ValueError, match="Flatten"):
        Sequential([Dense(3, input_shape=(2, 4, 4))])
    with pytest.raises(ValueError, match="NCHW"):
        Sequential([Conv2D(3, 3, input_shape=(8, 8))])
    with pytest.raises(ValueError, match="larger"):
        Sequential([Conv2D(3, 5, input_shape=(1, 4, 4))])


@pytest.mark.parametrize("make, message", [
    (lambda: Dense(0), ">= 1"),
    (lambda: Dense(3.5), "int"),
    (lambda: Dense(3, activation="swish"), "unknown activation"),
    (lambda: Conv2D(3, (3, 3, 3)), "pair"),
    (lambda: Conv2D(3, 3, padding="full"), "padding"),
    (lambda: Conv2D(3, 3, strides=0), ">= 1"),
    (lambda: MaxPool2D(2, padding=2), "half"),
    (lambda: Dropout(1.0), r"\[0, 1\)"),
    (lambda: Dropout(-0.1), r"\[0, 1\)"),
    (lambda: BatchNorm(momentum=1.5), "momentum"),
    (lambda: BatchNorm(momentum="a"), "BatchNorm: expected momentum"),
    (lambda: BatchNorm(momentum=None), "BatchNorm: expected momentum"),
    (lambda: BatchNorm(epsilon="x"), "BatchNorm: expected epsilon"),
    (lambda: BatchNorm(epsilon=0.0), "BatchNorm: expected epsilon > 0"),
    (lambda: Dense(3, kernel_initializer="glorious"), "unknown name"),
    (lambda: Dense(3, name="a b"), "name"),
])
def test_bad_arguments(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_dtype_option():
    model = Sequential([Dense(3, input_dim=2)], dtype="float64")
    assert model.layers[0].params["kernel"].dtype == np.float64
    assert model.predict(np.ones((2, 2), dtype=np.float32)).dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        Sequential(dtype="float16")


def test_seed_gives_identical_models_in_both_dtypes():
    a = Sequential([Dense(6, input_dim=4), Dense(2)], seed=7)
    b = Sequential([Dense(6, input_dim=4), Dense(2)], seed=7)
    c = Sequential([Dense(6, input_dim=4), Dense(2)], seed=7, dtype="float64")
    for wa, wb, wc in zip(a.get_weights(), b.get_weights(), c.get_weights()):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(wa, wc.astype(np.float32))
    d = Sequential([Dense(6, input_dim=4), Dense(2)], seed=8)
    assert not np.array_equal(a.get_weights()[0], d.get_weights()[0])


def test_set_weights_checks_shapes():
    model = Sequential([Dense(3, input_dim=2)])
    kernel = model.layers[0].params["kernel"]
    model.set_weights([np.ones((2, 3)), np.zeros(3)])
    assert model.layers[0].params["kernel"] is kernel and np.all(kernel == 1)
    with pytest.raises(ValueError, match="shape"):
        model.set_weights([np.ones((3, 2)), np.zeros(3)])
    with pytest.raises(ValueError, match="expected 2 arrays"):
        model.set_weights([np.ones((2, 3))])


# ----------------------------------------------------------------------------- layer semantics
def _naive_conv_same(x, w, b, stride):
    """Direct convolution with TensorFlow's "same" rule: output ceil(size/stride), the
    odd padding row/column at the bottom/right."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    sh, sw = stride
    oh, ow = -(-h // sh), -(-wd // sw)
    th, tw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - wd, 0)
    xp = np.zeros((n, c, h + th, wd + tw))
    xp[:, :, th // 2:th // 2 + h, tw // 2:tw // 2 + wd] = x
    y = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            y[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return y


@pytest.mark.parametrize("kernel, stride, size", [((3, 3), (1, 1), (7, 6)), ((2, 4), (1, 1), (5, 6)),
                                                  ((2, 3), (2, 2), (7, 6)), ((3, 3), (2, 3), (8, 9)),
                                                  ((5, 1), (3, 1), (4, 4))])
def test_conv_same_padding_matches_the_tensorflow_rule(backend, rng, kernel, stride, size):
    layer = Conv2D(3, kernel, strides=stride, padding="same", bias_initializer="normal")
    layer.build((2,) + size, np.float64, rng)
    x = rng.standard_normal((2, 2) + size)
    y = layer.forward(x)
    expected = _naive_conv_same(x, layer.params["kernel"], layer.params["bias"], stride)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind, make", [("max", MaxPool2D), ("avg", AvgPool2D)])
@pytest.mark.parametrize("pool, strides, padding", [((2, 3), (1, 2), (1, 0)), ((3, 2), (2, 1), (0, 1)),
                                                    ((2, 2), None, "valid")])
def test_pool_layers_against_loops(backend, rng, kind, make, pool, strides, padding):
    layer = make(pool, strides=strides, padding=padding)
    layer.build((3, 7, 8), np.float64)
    x = rng.standard_normal((2, 3, 7, 8))
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    pad = (0, 0) if padding == "valid" else padding
    want_y, want_dx = naive_pool2d(x, dy, *pool, strides or pool, pad, kind)
    assert y.shape[1:] == layer.compute_output_shape((3, 7, 8)) == want_y.shape[1:]
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.backward(dy), want_dx, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("padding", [(2, 1), (0, 2), 1])
def test_conv_int_padding_pads_each_axis_by_its_own_amount(backend, rng, padding):
    layer = Conv2D(3, (3, 2), strides=(1, 2), padding=padding, bias_initializer="normal")
    layer.build((2, 5, 6), np.float64, rng)
    x = rng.standard_normal((2, 2, 5, 6))
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    w, b = layer.params["kernel"], layer.params["bias"]
    oh, ow = xp.shape[2] - 3 + 1, (xp.shape[3] - 2) // 2 + 1
    want = np.zeros((2, 3, oh, ow))
    for i in range(oh):
        for j in range(ow):
            want[:, :, i, j] = np.tensordot(xp[:, :, i:i + 3, 2 * j:2 * j + 2], w, axes=([1, 2, 3], [1, 2, 3])) + b
    y = layer.forward(x)
    assert y.shape[1:] == layer.compute_output_shape((2, 5, 6)) == want.shape[1:]
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-12)


def test_dense_matches_numpy(backend, rng):
    layer = Dense(4, activation="relu")
    x = rng.standard_normal((5, 3))
    y = layer(x)
    W, b = layer.params["kernel"], layer.params["bias"]
    np.testing.assert_allclose(y, np.maximum(x @ W + b, 0), rtol=1e-12, atol=1e-14)


def test_dropout_train_and_inference(rng):
    layer = Dropout(0.25, seed=3)
    layer.build((1000,), np.float64)
    x = np.ones((20, 1000))
    assert layer.forward(x, training=False) is x
    y = layer.forward(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    dx = layer.backward(np.full_like(x, 2.0))
    np.testing.assert_allclose(dx, 2.0 * y)


def test_batchnorm_moving_statistics(rng):
    assert BatchNorm().momentum == 0.9 and BatchNorm().epsilon == 1e-5    # docs/NN.md's defaults
    layer = BatchNorm(momentum=0.5)
    layer.build((3, 2, 2), np.float64)
    x = rng.standard_normal((4, 3, 2, 2)) * 2 + 5
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    np.testing.assert_allclose(layer.state["moving_mean"], 0.5 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(layer.state["moving_variance"], 0.5 + 0.5 * x.var(axis=(0, 2, 3)), rtol=1e-12)
    y_inf = layer.forward(x, training=False)
    mm, mv = layer.state["moving_mean"], layer.state["moving_variance"]
    expected = (x - mm[:, None, None]) / np.sqrt(mv[:, None, None] + 1e-5)   # the documented default epsilon
    np.testing.assert_allclose(y_inf, expected, rtol=1e-10)


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 2)])
def test_softmax_activation_layer_runs_over_features_or_channels(rng, shape):
    x = rng.standard_normal(shape) * 50
    y = Activation("softmax")(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-300)


def test_backward_before_forward_is_an_error():
    layer = Dense(3, input_dim=2)
    layer.build((2,))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 3)))
    layer.forward(np.ones((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="gradient of shape"):
        layer.backward(np.ones((2, 4)))


# ----------------------------------------------------------------------------- gradcheck
LAYER_CASES = [
    ("dense", lambda: Dense(4), (5, 3)),
    ("dense_relu", lambda: Dense(4, activation="relu"), (5, 3)),
    ("dense_leaky", lambda: Dense(4, activation="leaky_relu", alpha=0.1), (5, 3)),
    ("dense_elu", lambda: Dense(4, activation="elu"), (5, 3)),
    ("dense_sigmoid", lambda: Dense(4, activation="sigmoid"), (5, 3)),
    ("dense_tanh", lambda: Dense(4, activation="tanh"), (5, 3)),
    ("dense_softplus", lambda: Dense(4, activation="softplus"), (5, 3)),
    ("dense_softmax", lambda: Dense(4, activation="softmax"), (5, 3)),
    ("dense_nobias", lambda: Dense(4, use_bias=False), (5, 3)),
    ("conv_valid", lambda: Conv2D(3, 3), (2, 2, 5, 6)),
    ("conv_same_stride2_even", lambda: Conv2D(3, (2, 3), strides=2, padding="same", activation="relu"), (2, 2, 7, 6)),
    ("conv_pad1_tanh", lambda: Conv2D(2, 3, padding=1, activation="tanh"), (2, 3, 4, 5)),
    ("conv_softplus", lambda: Conv2D(2, (1, 2), activation="softplus"), (3, 2, 3, 3)),
    ("conv_sigmoid", lambda: Conv2D(2, 2, strides=(1, 2), activation="sigmoid"), (2, 2, 4, 5)),
    ("conv_elu", lambda: Conv2D(2, 3, padding="same", activation="elu"), (2, 1, 4, 4)),
    ("maxpool", lambda: MaxPool2D(2), (2, 3, 4, 6)),
    ("maxpool_overlap_pad", lambda: MaxPool2D(3, strides=2, padding=1), (2, 2, 5, 5)),
    ("avgpool", lambda: AvgPool2D((2, 3), strides=1), (2, 2, 4, 5)),
    ("avgpool_pad", lambda: AvgPool2D(2, padding=1), (2, 2, 3, 3)),
    ("flatten", lambda: Flatten(), (3, 2, 3, 2)),
    ("dropout", lambda: Dropout(0.4), (4, 6)),
    ("batchnorm_2d", lambda: BatchNorm(), (6, 4)),
    ("batchnorm_4d", lambda: BatchNorm(), (3, 2, 3, 3)),
    ("act_relu", lambda: Activation("relu"), (4, 5)),
    ("act_leaky", lambda: Activation("leaky_relu", alpha=0.2), (4, 5)),
    ("act_elu", lambda: Activation("elu", alpha=0.7), (4, 5)),
    ("act_sigmoid", lambda: Activation("sigmoid"), (4, 5)),
    ("act_tanh", lambda: Activation("tanh"), (4, 5)),
    ("act_softplus", lambda: Activation("softplus"), (4, 5)),
    ("act_softmax", lambda: Activation("softmax"), (4, 5)),
    ("act_softmax_channels", lambda: Activation("softmax"), (2, 3, 2, 2)),
    ("conv_softmax", lambda: Conv2D(3, 2, activation="softmax"), (2, 2, 3, 3)),
    ("global_avgpool", lambda: nn.GlobalAveragePooling2D(), (2, 3, 4, 5)),
    ("global_maxpool", lambda: nn.GlobalMaxPooling2D(), (2, 3, 4, 5)),
    ("reshape", lambda: nn.Reshape((3, 4)), (2, 12)),
    ("reshape_inferred", lambda: nn.Reshape((-1, 2)), (2, 3, 2, 2)),
    # data_format="channels_last": NHWC input shapes
    ("conv_cl_same_odd_elu", lambda: Conv2D(3, (2, 3), strides=(2, 1), padding="same", activation="elu",
                                            data_format="channels_last"), (2, 5, 4, 2)),
    ("conv_cl_valid_relu", lambda: Conv2D(2, 3, activation="relu", data_format="channels_last"), (2, 5, 6, 3)),
    ("conv_cl_softmax", lambda: Conv2D(3, 2, activation="softmax", data_format="channels_last"), (2, 3, 3, 2)),
    ("maxpool_cl", lambda: MaxPool2D(3, strides=2, padding=1, data_format="channels_last"), (2, 5, 5, 2)),
    ("avgpool_cl", lambda: AvgPool2D((2, 3), strides=1, data_format="channels_last"), (2, 4, 5, 3)),
    ("global_avgpool_cl", lambda: nn.GlobalAveragePooling2D(data_format="channels_last"), (2, 4, 5, 3)),
    ("global_maxpool_cl", lambda: nn.GlobalMaxPooling2D(data_format="channels_last"), (2, 4, 5, 3)),
    ("batchnorm_4d_axis_last", lambda: BatchNorm(axis=-1), (3, 3, 2, 4)),
    ("batchnorm_4d_axis3", lambda: BatchNorm(axis=3), (3, 2, 3, 2)),
    ("batchnorm_2d_axis_last", lambda: BatchNorm(axis=-1), (6, 4)),
]


@pytest.mark.parametrize("name, make, shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_gradcheck_every_layer_type(backend, name, make, shape):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    layer = make()
    x = rng.standard_normal(shape)
    if name.startswith("batchnorm"):
        layer.build(shape[1:], np.float64, rng)
        layer.params["gamma"][...] = rng.uniform(0.5, 1.5, layer.params["gamma"].shape)
        layer.params["beta"][...] = rng.standard_normal(layer.params["beta"].shape)
    errors = gradcheck(layer, x, verbose=False)
    expected = {"kernel", "bias"} if name.startswith(("dense", "conv")) else set()
    if name == "dense_nobias":
        expected = {"kernel"}
    if name.startswith("batchnorm"):
        expected = {"gamma", "beta"}
    assert set(errors) == expected | {"input"}
    assert max(errors.values()) < GRADCHECK_TOL, errors


def _mlp(activation, units, loss_name):
    model = Sequential([Dense(6, activation="tanh", input_dim=4), BatchNorm(), Dropout(0.3),
                        Dense(5, activation="elu"), Dense(units, activation=activation)], seed=1)
    model.compile("sgd", loss=loss_name)
    return model


@pytest.mark.parametrize("activation, loss_name, make_target", [
    ("softmax", "sparse_categorical_crossentropy", lambda r: r.integers(0, 3, 8)),
    ("softmax", "categorical_crossentropy", lambda r: r.dirichlet(np.ones(3), 8)),
    ("sigmoid", "binary_crossentropy", lambda r: r.uniform(0, 1, (8, 3))),
    (None, "mse", lambda r: r.standard_normal((8, 3))),
    ("softmax", "mse", lambda r: r.dirichlet(np.ones(3), 8)),
])
def test_gradcheck_models_with_every_loss(backend, rng, activation, loss_name, make_target):
    model = _mlp(activation, 3, loss_name)
    errors = gradcheck(model, rng.standard_normal((8, 4)), make_target(rng), verbose=False)
    assert len(errors) == 8  # kernel+bias of three Dense layers, gamma+beta of BatchNorm
    assert max(errors.values()) < GRADCHECK_TOL, errors


def test_gradcheck_cnn_model(backend, rng):
    model = Sequential([
        Conv2D(3, 3, padding="same", activation="relu", input_shape=(2, 6, 6)),
        BatchNorm(),
        MaxPool2D(2),
        Conv2D(4, 2, activation="tanh"),
        AvgPool2D(2),
        Flatten(),
        Dropout(0.2),
        Dense(3, activation="softmax"),
    ], seed=3)
    model.compile("adam", "sparse_categorical_crossentropy")
    errors = gradcheck(model, rng.standard_normal((4, 2, 6, 6)), rng.integers(0, 3, 4), verbose=False)
    assert len(errors) == 8
    assert max(errors.values()) < GRADCHECK_TOL, errors


def test_gradcheck_checks_the_regularizers_penalties(backend, rng, monkeypatch):
    model = Sequential([
        Conv2D(3, 3, activation="tanh", input_shape=(1, 5, 5), kernel_regularizer=regularizers.L1L2(0.05, 0.1),
               bias_regularizer="l2", bias_initializer="normal"),
        MaxPool2D(2),
        Flatten(),
        Dense(2, activation="softmax", kernel_regularizer=regularizers.L1(0.2)),
    ], seed=2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, t = rng.standard_normal((4, 1, 5, 5)), rng.integers(0, 2, 4)
    errors = gradcheck(model, x, t, verbose=False)
    assert len(errors) == 4 and max(errors.values()) < GRADCHECK_TOL, errors
    # the penalty is in the function differentiated: a penalty gradient left out is caught
    monkeypatch.setattr(regularizers.L1, "gradient", lambda self, w: np.zeros_like(w))
    errors = gradcheck(model, x, t, verbose=False)
    assert errors["dense/kernel"] > 1e-2 and errors["conv2d/kernel"] < GRADCHECK_TOL, errors


def test_gradcheck_prints_a_table_and_is_reachable_from_fastnn(capsys, rng):
    assert fastnn.gradcheck is nn.gradcheck
    model = Sequential([Dense(2, activation="softmax", input_dim=3)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    fastnn.gradcheck(model, rng.standard_normal((4, 3)), np.array([0, 1, 1, 0]))
    out = capsys.readouterr().out
    assert "dense/kernel" in out and "dense/bias" in out and "rel. error" in out


def test_gradcheck_detects_a_wrong_gradient(rng, monkeypatch):
    layer = Dense(3)
    original = Dense.backward

    def slightly_wrong(self, dy):
        dx = original(self, dy)
        self.grads["kernel"] = self.grads["kernel"] * 1.001
        return dx

    monkeypatch.setattr(Dense, "backward", slightly_wrong)
    errors = gradcheck(layer, rng.standard_normal((4, 2)), verbose=False)
    assert errors["kernel"] > 1e-4
    assert errors["bias"] < GRADCHECK_TOL


def test_gradcheck_leaves_the_model_untouched(rng):
    model = Sequential([Dense(3, input_dim=2), BatchNorm(), Dense(2, activation="softmax")], seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = model.get_weights()
    gradcheck(model, rng.standard_normal((5, 2)), rng.integers(0, 2, 5), verbose=False)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.float32


def test_gradcheck_of_custom_initializers_and_of_an_unbuilt_model(rng):
    # the float64 copy is built from the config, which keeps a custom initializer only as a
    # placeholder that refuses to draw: gradcheck raised for any such model or layer
    def normal(shape, dtype, rng):
        return rng.standard_normal(shape)
    x, t = rng.standard_normal((5, 4)), rng.integers(0, 2, 5)
    built = Sequential([Dense(3, input_dim=4, kernel_initializer=normal), Dense(2, activation="softmax")], seed=0)
    unbuilt = Sequential([Dense(3, kernel_initializer=normal), Dense(2, activation="softmax")], seed=0)
    for model in (built, unbuilt):
        model.compile("sgd", "sparse_categorical_crossentropy")
        errors = gradcheck(model, x, t, verbose=False)
        assert sorted(errors) == ["dense/bias", "dense/kernel", "dense_1/bias", "dense_1/kernel"]
        assert max(errors.values()) < 1e-6
    assert not unbuilt.built                                  # the original is untouched: still unbuilt
    unseeded = Sequential([Dense(3, kernel_initializer=normal), Dense(2, activation="softmax")])
    unseeded.compile("sgd", "sparse_categorical_crossentropy")
    assert gradcheck(unseeded, x, t, verbose=False, seed=4) == gradcheck(unseeded, x, t, verbose=False, seed=4)
    errors = gradcheck(Conv2D(2, 3, kernel_initializer=normal), rng.standard_normal((2, 1, 5, 5)), verbose=False)
    assert sorted(errors) == ["bias", "input", "kernel"] and max(errors.values()) < 1e-6


def test_conv_pool_fusion_runs_apart_past_the_int32_argmax():
    # conv2d_max_pool2d's argmax is int32: a Conv2D whose output planes pass 2**31 - 1
    # elements runs forward_max_pool as the two layers one after the other (an empty
    # batch holds the shapes without the memory); one element fewer stays fused.
    for side, apart in ((46345, True), (46344, False)):
        conv, pool = Conv2D(2, 5, activation="relu"), MaxPool2D(2)
        conv.build((1, side, side))
        pool.build(conv.output_shape)
        x = np.zeros((0, 1, side, side), np.float32)
        y = conv.forward_max_pool(x, pool, training=True)
        assert y.shape == (0, 2, (side - 4) // 2, (side - 4) // 2)
        assert (conv._unfused_pool is pool) == apart and (conv._pooled_cache is None) == apart
        dx = conv.backward_max_pool(np.zeros_like(y))
        assert dx.shape == x.shape
        np.testing.assert_array_equal(conv.grads["kernel"], np.zeros((2, 1, 5, 5), np.float32))


def test_an_add_that_raises_leaves_the_model_as_it_was():
    model = Sequential([Conv2D(2, 3, input_shape=(1, 6, 6))])
    with pytest.raises(ValueError, match="Flatten"):
        model.add(Dense(3))
    with pytest.raises(ValueError, match="declares input_shape"):
        model.add(Flatten(input_shape=(7,)))
    assert [layer.name for layer in model.layers] == ["conv2d"]
    model.add(Flatten())
    model.add(Dense(2))
    assert model.predict(np.ones((1, 1, 6, 6))).shape == (1, 2)
    empty = Sequential()
    with pytest.raises(ValueError, match="larger"):
        empty.add(Conv2D(2, 5, input_shape=(1, 3, 3)))
    assert empty.layers == [] and not empty.built
    empty.add(Dense(2, input_dim=3))
    assert empty.output_shape == (2,)


def test_a_built_layer_keeps_its_weights_or_is_refused():
    d = Dense(2)
    d.build((3,))
    d.params["kernel"][:] = 1.0
    shared = Sequential([d])                               # same shape and dtype: the same arrays
    assert shared.layers[0].params["kernel"] is d.params["kernel"]
    np.testing.assert_array_equal(shared.predict(np.ones((1, 3))), [[3.0, 3.0]])
    for model in (Sequential(dtype="float64"), Sequential([Dense(4, input_dim=3, name="first")])):
        with pytest.raises(ValueError, match="is built for inputs"):
            model.add(d)
    with pytest.raises(ValueError, match="already in the model"):
        Sequential([Dense(2, input_dim=2, name="dense"), Dense(2)]).add(d)   # renaming would rename its weights
    np.testing.assert_array_equal(d.params["kernel"], 1.0)
    assert d.name == "dense" and d.dtype == np.float32


@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
def test_dense_with_a_negative_alpha_runs_unfused(activation, rng):
    # linear's fused leaky_relu/elu need alpha >= 0 (their backward works from y); Dense then
    # applies the activation to the pre-activation itself, as Conv2D and Activation do
    model = Sequential([Dense(4, activation=activation, alpha=-0.5, input_dim=3), Dense(2)], seed=0,
                       dtype="float64")
    x = rng.standard_normal((5, 3))
    z = x @ model.layers[0].params["kernel"] + model.layers[0].params["bias"]
    want = np.where(z > 0, z, -0.5 * z) if activation == "leaky_relu" else np.where(z > 0, z, -0.5 * np.expm1(z))
    np.testing.assert_allclose(model.layers[0](x), want, rtol=1e-12)
    model.compile("sgd", "mse")
    errors = gradcheck(model, x, rng.standard_normal((5, 2)), verbose=False)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("make", [lambda **k: Dense(2, **k), lambda **k: Conv2D(2, 3, **k),
                                  lambda **k: Activation(k.pop("activation"), **k)])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", None])
def test_alpha_with_an_activation_that_has_no_slope_is_refused(make, activation):
    with pytest.raises(ValueError, match=r"alpha is for the activations leaky_relu and elu, got alpha=0\.2 "
                                         rf"with activation {activation!r}"):
        make(activation=activation, alpha=0.2)
    assert make(activation="leaky_relu", alpha=0.2).alpha == 0.2


def test_a_frozen_layer_is_not_trained(rng, tmp_path):
    x = rng.standard_normal((40, 4)).astype(np.float32)
    t = rng.integers(0, 3, 40)
    model = Sequential([Dense(8, activation="relu", input_dim=4, name="base"), BatchNorm(name="bn"),
                        Dense(3, activation="softmax", name="head")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    base, bn, head = model.layers
    base.trainable = bn.trainable = False
    before = [w.copy() for layer in (base, bn) for w in layer.get_weights()]
    head_before = head.get_weights()
    model.fit(x, t, epochs=2, batch_size=8, verbose=0)
    for a, b in zip([w for layer in (base, bn) for w in layer.get_weights()], before):
        np.testing.assert_array_equal(a, b)          # frozen BatchNorm: moving statistics kept too (Keras)
    assert any(not np.array_equal(a, b) for a, b in zip(head.get_weights(), head_before))
    assert set(model.params()) == {"head/kernel", "head/bias"}
    trainable, total = head.count_params(), model.count_params()
    assert model.summary(print_fn=lambda line: None) is None
    assert base.count_params() == 0 and base.count_params(trainable=False) == 4 * 8 + 8
    assert total == sum(layer.count_params() + layer.count_params(trainable=False) for layer in model.layers)
    assert trainable == 8 * 3 + 3
    model.save(tmp_path / "frozen.npz")                # the flag survives a save and a load
    loaded = nn.load_model(tmp_path / "frozen.npz")
    assert [layer.trainable for layer in loaded.layers] == [False, False, True]


def test_weights_properties_are_the_arrays_split_as_keras_splits_them():
    model = Sequential([Dense(3, input_dim=2, name="a"), BatchNorm(name="bn"), Dense(2, name="b")], seed=0)
    a, bn, b = model.layers
    assert [w.shape for w in bn.trainable_weights] == [(3,), (3,)]          # gamma, beta
    assert [w.shape for w in bn.non_trainable_weights] == [(3,), (3,)]      # the moving statistics
    assert len(model.weights) == 8 and len(model.trainable_weights) == 6 and len(model.non_trainable_weights) == 2
    assert all(w is v for w, v in zip(model.weights, a.weights + bn.weights + b.weights))   # not copies
    model.weights[0][...] = 5.0
    np.testing.assert_array_equal(model.get_weights()[0], 5.0)
    a.trainable = False
    assert a.trainable_weights == [] and [w.shape for w in a.non_trainable_weights] == [(2, 3), (3,)]
    assert len(model.trainable_weights) == 4 and len(model.non_trainable_weights) == 4
    assert sum(w.size for w in model.trainable_weights) == model.count_params() - sum(
        layer.count_params(trainable=False) for layer in model.layers)
    with pytest.raises(ValueError, match="not built"):
        Sequential([Dense(3)]).weights


def test_layer_weights_get_set_and_model_get_layer_pop():
    model = Sequential([Dense(3, input_dim=2, name="a"), Dense(2, name="b")], seed=0)
    a = model.get_layer("a")
    assert a is model.get_layer(index=0) and model.get_layer(index=-1).name == "b"
    weights = a.get_weights()
    weights[0][...] = 7.0                             # copies, as Keras's: the model is unchanged
    assert not np.any(a.params["kernel"] == 7.0)
    a.set_weights([np.ones((2, 3)), np.zeros(3)])
    np.testing.assert_array_equal(a.params["kernel"], 1.0)
    with pytest.raises(ValueError, match="shape"):
        a.set_weights([np.ones((3, 2)), np.zeros(3)])
    with pytest.raises(ValueError, match="no layer named"):
        model.get_layer("c")
    with pytest.raises(ValueError, match="out of range"):
        model.get_layer(index=2)
    model.compile("sgd", "mse")
    assert model.pop().name == "b" and model.output_shape == (3,)
    assert model.predict(np.ones((1, 2))).shape == (1, 3)   # Keras's pop-then-predict: features
    model.add(Dense(4, name="c"))
    assert model.predict(np.ones((1, 2))).shape == (1, 4)
    classifier = Sequential([Dense(3, input_dim=2, activation="relu"), Dense(2, activation="softmax")])
    classifier.compile("sgd", "sparse_categorical_crossentropy")
    classifier.pop()
    assert classifier.predict(np.ones((1, 2))).shape == (1, 3)
    with pytest.raises(ValueError, match="softmax"):        # training still needs a fitting last layer
        classifier.evaluate(np.ones((1, 2)), np.zeros(1))


def test_custom_initializers_are_cast_and_checked_and_classes_instantiated():
    model = Sequential([Dense(3, input_dim=4, kernel_initializer=lambda shape, dtype, rng: np.ones(shape))])
    assert model.layers[0].params["kernel"].dtype == np.float32          # the model's dtype
    listed = Sequential([Dense(3, input_dim=4, kernel_initializer=lambda s, dtype, rng: [[1.0] * 3] * 4)])
    assert listed.count_params() == 15
    # called by position, so the names are the callable's own; Keras's f(shape, dtype=None) too
    for init in (lambda s, d, r: np.full(s, 2.0), lambda shape, dtype=None: np.full(shape, 2.0),
                 lambda shape, dtype=None, *, rng: np.full(shape, 2.0) + 0 * rng.random(),
                 lambda shape, dtype, generator=None: np.full(shape, 2.0 if generator is None else 3.0)):
        np.testing.assert_array_equal(Sequential([Dense(3, input_dim=4, kernel_initializer=init)]).get_weights()[0], 2)
    for numpy_function, value in ((np.zeros, 0), (np.ones, 1)):            # f(shape, dtype, order="C")
        model = Sequential([Dense(3, input_dim=4, kernel_initializer=numpy_function)])
        np.testing.assert_array_equal(model.get_weights()[0], value)
    drawn = Sequential([Dense(3, input_dim=4, kernel_initializer=lambda s, d, r: r.random(s))], seed=5)
    again = Sequential([Dense(3, input_dim=4, kernel_initializer=lambda s, d, r: r.random(s))], seed=5)
    np.testing.assert_array_equal(drawn.get_weights()[0], again.get_weights()[0])   # the model's generator
    kept = np.ones((4, 3), np.float32)
    shared = Sequential([Dense(3, input_dim=4, kernel_initializer=lambda s, dtype, rng: kept)])
    assert shared.layers[0].params["kernel"] is not kept                  # trained in place: our own copy
    with pytest.raises(ValueError, match=r"returned shape \(2, 2\), expected \(4, 3\)"):
        Sequential([Dense(3, input_dim=4, kernel_initializer=lambda s, dtype, rng: np.ones((2, 2)))])
    with pytest.raises(TypeError, match="not an array of numbers"):
        Sequential([Dense(3, input_dim=4, kernel_initializer=lambda s, dtype, rng: "ones")])
    from fastnn.nn import initializers
    cls_init = Sequential([Dense(3, input_dim=4, kernel_initializer=initializers.GlorotUniform)], seed=0)
    obj_init = Sequential([Dense(3, input_dim=4, kernel_initializer=initializers.GlorotUniform())], seed=0)
    np.testing.assert_array_equal(cls_init.get_weights()[0], obj_init.get_weights()[0])


@pytest.mark.parametrize("shape, error", [((None, 3), None), ((3.7,), TypeError), ("3", TypeError), ((), TypeError),
                                          ((3, 0), ValueError)])
def test_build_takes_a_per_sample_shape(shape, error):
    model = Sequential([Dense(2)])
    if error is None:
        assert model.build(shape).input_shape == (3,)       # Keras's leading batch axis is dropped
    else:
        with pytest.raises(error, match="Sequential.build"):
            model.build(shape)


def test_weights_too_big_to_allocate_are_refused_naming_the_layer():
    with pytest.raises(ValueError, match="Dense 'huge': the weight 'kernel' of shape .* more elements than int64"):
        Sequential([Dense(2**62, input_dim=4, name="huge")])
    with pytest.raises(MemoryError, match="Conv2D 'wide': the weight 'kernel' of shape .* would need"):
        Sequential([Conv2D(2**40, 3, input_shape=(1, 4, 4), name="wide")])


def test_model_trainable_sets_every_layers_flag(rng):
    x = rng.standard_normal((16, 4)).astype(np.float32)
    t = rng.integers(0, 3, 16)
    model = Sequential([Dense(8, activation="relu", input_dim=4), BatchNorm(), Dense(3, activation="softmax")],
                       seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert model.trainable is True
    model.trainable = False                            # Keras: freezes every layer
    assert [layer.trainable for layer in model.layers] == [False, False, False]
    assert model.trainable is False and model.params() == {} and model.trainable_weights == []
    before = model.get_weights()
    model.fit(x, t, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)            # BatchNorm's moving statistics too
    model.layers[2].trainable = True                   # one layer unfrozen: the model is trainable again
    assert model.trainable is True and set(model.params()) == {"dense_1/kernel", "dense_1/bias"}
    model.trainable = True
    assert [layer.trainable for layer in model.layers] == [True, True, True]
    for bad in (0, 1, "no", None, np.float32(0)):
        with pytest.raises(TypeError, match="Sequential.trainable: expected True or False"):
            model.trainable = bad
    assert model.trainable is True


def test_set_weights_errors_name_the_layer_and_the_weight():
    model = Sequential([Dense(4, input_dim=2), BatchNorm(), Dense(5)], seed=0)
    weights = model.get_weights()
    weights[7] = np.zeros(4)                                        # dense_1/bias has 5 entries
    with pytest.raises(ValueError, match=r"set_weights: array 7 \(dense_1/bias\) has shape \(4,\), expected \(5,\)"):
        model.set_weights(weights)
    weights[7] = np.array(["a"] * 5)
    with pytest.raises(TypeError, match=r"array 7 \(dense_1/bias\) has dtype <U1"):
        model.set_weights(weights)
    with pytest.raises(ValueError, match=r"expected 8 arrays \(dense/kernel, dense/bias, batch_norm/gamma, "
                                         r"batch_norm/beta, batch_norm/moving_mean, batch_norm/moving_variance, "
                                         r"dense_1/kernel, dense_1/bias\), got 7"):
        model.set_weights(weights[:7])
    with pytest.raises(ValueError, match=r"Dense 'dense': set_weights: array 0 \(kernel\) has shape \(3, 4\)"):
        model.layers[0].set_weights([np.zeros((3, 4)), np.zeros(4)])
    with pytest.raises(ValueError, match="Dense 'dense': set_weights needs a built layer"):
        Dense(3).set_weights([np.zeros((2, 3)), np.zeros(3)])


def test_input_as_the_first_element_of_a_sequential(tmp_path):
    model = Sequential([nn.Input(shape=(1, 8, 8)), Conv2D(2, 3), Flatten(), Dense(3)], seed=4)
    assert model.built and model.input_shape == (1, 8, 8) and model.output_shape == (3,)
    assert [type(layer).__name__ for layer in model.layers] == ["Conv2D", "Flatten", "Dense"]   # not a layer
    same = Sequential([Conv2D(2, 3, input_shape=(1, 8, 8)), Flatten(), Dense(3)], seed=4)
    for a, b in zip(model.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"Input: every size of the per-sample shape must be given .* got \(None, 4\)"):
        nn.Input((None, 4))                     # Keras's None is a size that varies, which fastnn does not do
    with pytest.raises(ValueError, match="Sequential.build: the model's Input has shape \\(4,\\); it cannot be built"):
        Sequential([nn.Input((4,)), Dense(2)]).build((5,))
    later = Sequential([nn.Input(shape=4)])
    assert not later.built
    later.add(Dense(2))
    assert later.built and later.layers[0].params["kernel"].shape == (4, 2)
    with pytest.raises(ValueError, match="an Input must be the model's first element"):
        later.add(nn.Input(shape=(2,)))
    with pytest.raises(ValueError, match=r"declares input_shape \(3,\) but the model's Input has shape \(4,\)"):
        Sequential([nn.Input(shape=(4,)), Dense(2, input_dim=3)])
    with pytest.raises(ValueError, match="Input: a shape is required"):
        nn.Input()
    with pytest.raises(TypeError, match="must be a tuple of ints"):
        nn.Input(shape=(4.0,))
    model.save(tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(nn.load_model(tmp_path / "m.npz").predict(x), model.predict(x))


@pytest.mark.parametrize("make, reduce", [(lambda: nn.GlobalAveragePooling2D(), np.mean),
                                          (lambda: nn.GlobalMaxPooling2D(), np.max)])
def test_global_pooling_is_the_mean_or_max_over_each_plane(backend, rng, make, reduce):
    x = rng.standard_normal((3, 4, 5, 6))
    layer = make()
    y = layer(x)
    assert y.shape == (3, 4) and layer.output_shape == (4,)
    np.testing.assert_allclose(y, reduce(x, axis=(2, 3)), rtol=1e-14, atol=1e-15)
    dy = rng.standard_normal((3, 4))
    dx = layer.backward(dy)
    if reduce is np.mean:
        np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 30, x.shape), rtol=1e-14)
    else:   # the gradient goes to each plane's maximum
        want = (x == x.max(axis=(2, 3), keepdims=True)) * dy[:, :, None, None]
        np.testing.assert_array_equal(dx, want)
    with pytest.raises(ValueError, match="expected NCHW input"):
        make().build((4,))


def test_reshape_layer():
    x = np.arange(24.0).reshape(2, 12)
    layer = nn.Reshape((3, 2, 2))
    np.testing.assert_array_equal(layer(x), x.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3, 2, 2)) * 2), np.full((2, 12), 2.0))
    assert nn.Reshape((-1, 4)).build((3, 2, 2)).output_shape == (3, 4)
    assert nn.Reshape(12).build((3, 4)).output_shape == (12,)
    with pytest.raises(ValueError, match=r"cannot reshape per-sample shape \(12,\) \(12 values\) to \(5, 2\)"):
        nn.Reshape((5, 2)).build((12,))
    with pytest.raises(ValueError, match="12 is not a multiple of 5"):
        nn.Reshape((-1, 5)).build((12,))
    with pytest.raises(ValueError, match="at most one -1"):
        nn.Reshape((-1, -1))
    with pytest.raises(TypeError, match="Reshape: target_shape must be a tuple of ints"):
        nn.Reshape("3x4")
    # in a model: Dense -> Reshape to images -> convolution -> global pooling
    model = Sequential([Dense(2 * 4 * 4, input_dim=5), nn.Reshape((2, 4, 4)), Conv2D(3, 3, padding="same"),
                        nn.GlobalAveragePooling2D(), Dense(2)], seed=0)
    assert [layer.output_shape for layer in model.layers] == [(32,), (2, 4, 4), (3, 4, 4), (3,), (2,)]


# ----------------------------------------------------------------------------- data_format
def _nhwc(a):
    return a.transpose(0, 2, 3, 1) if a is not None and a.ndim == 4 else a


# (name, make(data_format), per-sample NCHW input shape); BatchNorm's "data_format" is its axis
FORMAT_CASES = [
    ("conv_valid", lambda f: Conv2D(4, 3, data_format=f), (3, 7, 6)),
    ("conv_same_odd_stride", lambda f: Conv2D(3, (2, 3), strides=2, padding="same", data_format=f), (2, 7, 6)),
    ("conv_pad_relu", lambda f: Conv2D(3, 3, padding=(1, 2), activation="relu", data_format=f), (2, 5, 4)),
    ("conv_elu", lambda f: Conv2D(2, 2, activation="elu", use_bias=False, data_format=f), (3, 4, 5)),
    ("conv_softmax", lambda f: Conv2D(3, 2, activation="softmax", data_format=f), (2, 4, 4)),
    ("maxpool", lambda f: MaxPool2D(2, data_format=f), (3, 6, 5)),
    ("maxpool_overlap_pad", lambda f: nn.MaxPooling2D(3, strides=2, padding=1, data_format=f), (2, 7, 5)),
    ("avgpool", lambda f: nn.AveragePooling2D((2, 3), strides=1, data_format=f), (2, 5, 6)),
    ("avgpool_pad", lambda f: AvgPool2D(2, padding=1, data_format=f), (3, 3, 5)),
    ("global_avg", lambda f: nn.GlobalAvgPool2D(data_format=f), (3, 4, 5)),
    ("global_max", lambda f: nn.GlobalMaxPool2D(data_format=f), (3, 4, 5)),
    ("batchnorm", lambda f: nn.BatchNormalization(axis=1 if f == "channels_first" else -1), (3, 4, 5)),
    ("batchnorm_axis3", lambda f: BatchNorm(axis=1 if f == "channels_first" else 3), (2, 3, 3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, make, shape", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_channels_last_layers_give_the_channels_first_results_transposed(backend, name, make, shape, dtype):
    # A channels_last layer computes through the same NCHW ops: on transposed data its
    # outputs and input gradients are the channels_first ones transposed, bit for bit, and
    # its weight gradients (and BatchNorm's moving statistics) the same.
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    first, last = make("channels_first"), make("channels_last")
    c, h, w = shape
    first.build(shape, dtype, np.random.default_rng(1))
    last.build((h, w, c), dtype, np.random.default_rng(1))
    assert last.output_shape == (first.output_shape if len(first.output_shape) == 1
                                 else first.output_shape[1:] + first.output_shape[:1])
    if isinstance(first, BatchNorm):
        for layer in (first, last):
            layer.params["gamma"][...] = np.linspace(0.5, 1.5, c)
            layer.params["beta"][...] = np.linspace(-1, 1, c)
    for a, b in zip(first.weights, last.weights):
        np.testing.assert_array_equal(a, b)          # the same (F, C, kh, kw) kernels from the same seed
    x = rng.standard_normal((3,) + shape).astype(dtype)
    for training in (True, False):
        y_first = first.forward(x, training=training)
        y_last = last.forward(np.ascontiguousarray(_nhwc(x)), training=training)
        assert y_last.dtype == dtype and y_last.flags.c_contiguous
        np.testing.assert_array_equal(y_last, _nhwc(y_first))
    dy = rng.standard_normal(y_first.shape).astype(dtype)
    first.forward(x, training=True)
    last.forward(np.ascontiguousarray(_nhwc(x)), training=True)
    dx_first = first.backward(dy)
    dx_last = last.backward(np.ascontiguousarray(_nhwc(dy)))
    assert dx_last.shape == (3, h, w, c) and dx_last.dtype == dtype
    np.testing.assert_array_equal(dx_last, _nhwc(dx_first))
    assert first.grads.keys() == last.grads.keys()
    for key in first.grads:
        np.testing.assert_array_equal(last.grads[key], first.grads[key])
    for key in first.state:
        np.testing.assert_array_equal(last.state[key], first.state[key])
    with pytest.raises(ValueError, match=r"expected input of shape \(N, " + ", ".join(map(str, (h, w, c)))):
        last.forward(x if (h, w, c) != shape else x[:, :1], training=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_channels_last_conv_pool_fusion_gives_the_channels_first_results(backend, dtype, activation):
    rng = np.random.default_rng(3)
    pairs = {}
    for fmt in ("channels_first", "channels_last"):
        conv, pool = Conv2D(4, 3, padding=1, activation=activation, data_format=fmt), MaxPool2D(2, data_format=fmt)
        conv.build((2, 6, 7) if fmt == "channels_first" else (6, 7, 2), dtype, np.random.default_rng(5))
        pool.build(conv.output_shape, dtype)
        assert conv.fuses_with(pool)
        pairs[fmt] = conv, pool
    # a pair of different formats is not fused
    assert not pairs["channels_last"][0].fuses_with(MaxPool2D(2, data_format="channels_first"))
    x = rng.standard_normal((3, 2, 6, 7)).astype(dtype)
    y_first = pairs["channels_first"][0].forward_max_pool(x, pairs["channels_first"][1], training=True)
    y_last = pairs["channels_last"][0].forward_max_pool(np.ascontiguousarray(_nhwc(x)), pairs["channels_last"][1],
                                                         training=True)
    np.testing.assert_array_equal(y_last, _nhwc(y_first))
    dy = rng.standard_normal(y_first.shape).astype(dtype)
    dx_first = pairs["channels_first"][0].backward_max_pool(dy)
    dx_last = pairs["channels_last"][0].backward_max_pool(np.ascontiguousarray(_nhwc(dy)))
    np.testing.assert_array_equal(dx_last, _nhwc(dx_first))
    for key in ("kernel", "bias"):
        np.testing.assert_array_equal(pairs["channels_last"][0].grads[key], pairs["channels_first"][0].grads[key])


def test_flatten_after_channels_last_layers_is_keras_order(rng):
    # Flatten flattens what it gets: after channels_last layers, Keras's (H, W, C) order,
    # each pixel's channels together. Checked against torch's conv (NCHW), permuted to NHWC.
    torch = optional_module("torch")
    conv = Conv2D(3, 2, data_format="channels_last", input_shape=(4, 5, 2))
    model = Sequential([conv, Flatten()], seed=0, dtype="float64")
    x = rng.standard_normal((2, 4, 5, 2))
    kernel, bias = conv.params["kernel"], conv.params["bias"]   # (F, C, kh, kw): torch's layout too
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(kernel),
                                     torch.from_numpy(bias))
    keras_order = ref.permute(0, 2, 3, 1).reshape(2, -1).numpy()       # keras.layers.Flatten on NHWC
    np.testing.assert_allclose(model.predict(x), keras_order, rtol=1e-12, atol=1e-12)
    assert model.output_shape == (3 * 4 * 3,)
    # the channels_first model on NCHW data flattens (C, H, W): a permutation of the same values
    first = Sequential([Conv2D(3, 2, input_shape=(2, 4, 5)), Flatten()], seed=0, dtype="float64")
    y_first = first.predict(x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(y_first.reshape(2, 3, 3, 4).transpose(0, 2, 3, 1).reshape(2, -1), keras_order,
                               rtol=1e-12, atol=1e-12)


def test_nchw_runs_span_channels_last_image_layers_and_elementwise_ones_between_them():
    # {index: (input NCHW, output NCHW)}: what a Sequential hands its layers along a run
    from fastnn.nn.model import _nchw_layouts
    last = {"data_format": "channels_last"}

    class MyPool(MaxPool2D):
        pass

    def layouts(*layers):
        model = Sequential(list(layers), seed=0)
        return _nchw_layouts(model.layers)

    conv = lambda **kw: Conv2D(2, 3, padding=1, **last, **kw)   # noqa: E731
    shape = {"input_shape": (8, 8, 3)}
    assert layouts(conv(**shape), Flatten(), Dense(2)) == {}                  # one layer: nothing to skip
    assert layouts(conv(**shape), Activation("relu"), MaxPool2D(2, **last), Flatten(), Dense(2)) == {
        0: (False, True), 1: (True, True), 2: (True, False)}
    # elementwise layers at a run's ends stay out of it; the global pooling ends one
    assert layouts(Activation("relu", **shape), conv(), Dropout(0.5), BatchNorm(), Activation("tanh"),
                   nn.GlobalMaxPooling2D(**last), Dropout(0.5), Dense(2)) == {
        1: (False, True), 2: (True, True), 3: (True, True), 4: (True, True), 5: (True, False)}
    # a softmax over axis 1, a channels_first layer, Reshape, a subclass: the run ends before them
    for breaker in (Activation("softmax"), Conv2D(3, 1, data_format="channels_first"), nn.Reshape((8, 8, 2)),
                    MyPool(1, **last), BatchNorm(axis=1)):
        assert layouts(conv(**shape), breaker, conv(), conv()) == {2: (False, True), 3: (True, False)}, breaker
    # channels_first models have no runs
    assert layouts(Conv2D(2, 3, input_shape=(3, 8, 8)), BatchNorm(), MaxPool2D(2), Flatten(), Dense(2)) == {}


def test_a_layer_from_a_model_run_on_its_own_takes_and_gives_nhwc(rng):
    # after a model ran them on NCHW data, the layers called by a user take and give their own
    # (NHWC) shapes again: one after the other they compute what the model predicts
    x = rng.standard_normal((6, 8, 8, 3)).astype(np.float32)
    t = rng.integers(0, 2, 6)
    model = Sequential([Conv2D(4, 3, padding="same", data_format="channels_last", input_shape=(8, 8, 3)),
                        BatchNorm(), Activation("relu"), MaxPool2D(2, data_format="channels_last"), Dropout(0.5),
                        Conv2D(3, 3, data_format="channels_last"), nn.GlobalAveragePooling2D(
                            data_format="channels_last"), Dense(2, activation="softmax")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, t, epochs=1, batch_size=3, verbose=0)
    model.train_on_batch(x, t)   # leaves the layers' caches of NCHW data
    a = x
    for layer in model.layers:
        y = layer.forward(a, training=False)
        assert y.shape == (6,) + layer.output_shape and y.flags.c_contiguous
        dx = layer.backward(np.ones_like(y))
        assert dx.shape == a.shape
        a = y
    np.testing.assert_array_equal(a, model.predict(x))


@pytest.mark.parametrize("pooled", [False, True])
def test_a_layers_own_backward_after_a_model_pass_takes_and_gives_nhwc(rng, pooled):
    """A user's backward through the layers after model(x, training=True) (a hand-written
    backward loop, Grad-CAM, say) takes and gives NHWC, whatever layout the model's NCHW run gave
    the forward: the gradients are those of the model whose layers each transpose. Channels,
    height and width are all 6, so a layout mixed up would not show in the shapes."""
    x = rng.standard_normal((3, 6, 6, 6))

    def passes(runs):
        last = dict(data_format="channels_last")
        head = [MaxPool2D(2, **last)] if pooled else []
        model = Sequential([Conv2D(6, 1, input_shape=(6, 6, 6), **last), BatchNorm(), Activation("tanh"),
                            Dropout(0.5), Conv2D(6, 1, activation="relu", **last)] + head
                           + [nn.GlobalAveragePooling2D(**last), Dense(3)], dtype="float64", seed=0)
        model._nchw_runs = runs
        model(x, training=True)
        assert model._fused_pairs() == ({4} if pooled else set())
        grads = []
        for i, layer in enumerate(model.layers[:-2]):
            dy = np.random.default_rng(i).standard_normal((3,) + layer.output_shape)
            if pooled and i == 4:   # the fused pair's backward, from the gradient of the pooled output
                dy = np.random.default_rng(i).standard_normal((3,) + model.layers[5].output_shape)
                grads.append(layer.backward_max_pool(dy))
            elif not (pooled and i == 5):
                grads.append(layer.backward(dy))
            grads += [layer.grads[name].copy() for name in sorted(layer.grads)]
        return grads

    got, want = passes(True), passes(False)
    assert len(got) == len(want) == 11   # 5 input gradients, the kernels, biases, gamma and beta
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_refused_forward_leaves_a_layer_in_a_run_as_it_was():
    model = Sequential([Conv2D(2, 1, input_shape=(4, 4, 2), data_format="channels_last"), BatchNorm(),
                        Dropout(0.5), nn.GlobalAveragePooling2D(data_format="channels_last")], seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 2)).astype(np.float32)
    model(x, training=True)
    dropout = model.layers[2]
    cache = dropout._cache
    assert dropout._nchw_in and dropout._nchw_out
    with pytest.raises(ValueError, match="expected input of shape"):
        dropout.forward(np.zeros((2, 3, 3, 2), np.float32), training=True)
    assert dropout._nchw_in and dropout._nchw_out and dropout._cache is cache


def test_image_data_format_default_applies_to_layers_constructed_after_it():
    assert nn.image_data_format() == "channels_first"
    before = [Conv2D(2, 3), MaxPool2D(2), AvgPool2D(2), nn.GlobalAveragePooling2D(), nn.GlobalMaxPooling2D()]
    bn_before = BatchNorm()
    nn.set_image_data_format("channels_last")
    assert nn.image_data_format() == "channels_last"
    after = [Conv2D(2, 3), nn.MaxPooling2D(2), nn.AveragePooling2D(2), nn.GlobalAvgPool2D(), nn.GlobalMaxPool2D()]
    bn_after = BatchNorm()
    assert [layer.data_format for layer in before] == ["channels_first"] * 5
    assert [layer.data_format for layer in after] == ["channels_last"] * 5
    assert bn_before.axis == 1 and bn_after.axis == -1
    assert Conv2D(2, 3, data_format="channels_first").data_format == "channels_first"
    assert BatchNorm(axis=1).axis == 1
    # built where the other format would not fit
    model = Sequential([Conv2D(4, 3, padding="same", input_shape=(8, 8, 3)), BatchNorm(), MaxPool2D(2),
                        nn.GlobalAveragePooling2D()])
    assert [layer.output_shape for layer in model.layers] == [(8, 8, 4), (8, 8, 4), (4, 4, 4), (4,)]
    assert model.layers[0].params["kernel"].shape == (4, 3, 3, 3)   # (F, C, kh, kw) in both formats
    assert model.layers[1].params["gamma"].shape == (4,)
    nn.set_image_data_format("CHANNELS_FIRST")                       # Keras lowercases it too
    assert nn.image_data_format() == "channels_first" and after[0].data_format == "channels_last"
    for bad in ("nhwc", "channels-last", None, 1):
        with pytest.raises(ValueError, match="set_image_data_format: data_format must be 'channels_first' or"):
            nn.set_image_data_format(bad)
    assert nn.image_data_format() == "channels_first"


@pytest.mark.parametrize("make, name", [
    (lambda: Conv2D(2, 3, data_format="nhwc"), "Conv2D"),
    (lambda: MaxPool2D(2, data_format="NCHW"), "MaxPool2D"),
    (lambda: nn.AveragePooling2D(2, data_format=3), "AvgPool2D"),
    (lambda: nn.GlobalAveragePooling2D(data_format="last"), "GlobalAveragePooling2D"),
    (lambda: nn.GlobalMaxPooling2D(data_format=""), "GlobalMaxPooling2D"),
])
def test_a_bad_data_format_is_a_value_error_naming_the_layer(make, name):
    with pytest.raises(ValueError, match=f"^{name}: data_format must be 'channels_first' or 'channels_last'"):
        make()


@pytest.mark.parametrize("axis", [0, 2, -2, -4, 4, True, 1.0, "1", (1,)])
def test_batchnorm_axis_must_be_a_channel_or_feature_axis(axis):
    with pytest.raises(ValueError, match="BatchNorm: axis must be 1 or -1"):
        BatchNorm(axis=axis)


def test_batchnorm_axis_on_2d_and_4d_input(rng):
    x2 = rng.standard_normal((6, 4))
    ys = [BatchNorm(axis=a)(x2, training=True) for a in (None, 1, -1)]
    np.testing.assert_array_equal(ys[0], ys[1])
    np.testing.assert_array_equal(ys[0], ys[2])
    with pytest.raises(ValueError, match="axis 3 is for 4-D input"):
        BatchNorm(axis=3).build((4,))
    # channels last: the statistics of each last-axis channel over (N, H, W)
    x4 = rng.standard_normal((5, 3, 2, 4)) * np.arange(1, 5) + np.arange(4)
    layer = BatchNorm(axis=-1, epsilon=1e-12)
    y = layer(x4, training=True)
    assert layer.params["gamma"].shape == (4,) and layer.output_shape == (3, 2, 4)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1, rtol=1e-9)
    np.testing.assert_allclose(layer.state["moving_mean"], 0.1 * x4.mean(axis=(0, 1, 2)), rtol=1e-12)


HINT = (r'fastnn\.nn\.set_image_data_format\("channels_last"\).*x\.transpose\(0, 3, 1, 2\)')


def test_channels_first_conv_on_keras_shaped_input_warns_or_raises_with_the_fix(rng):
    # (32, 32, 3) builds as 32 channels of 32x3 images: a wrong model, so a warning says how to fix it
    with pytest.warns(UserWarning, match=r"input shape \(32, 32, 3\): this looks like channels-last.*channels "
                                         r"first.*data_format=\"channels_last\".*" + HINT):
        Sequential([Conv2D(32, 3, padding="same", input_shape=(32, 32, 3))])
    # (28, 28, 1): a 3x3 kernel does not fit 28x1; the error says the same
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) is larger than.*data_format=\"channels_last\".*" + HINT):
        Sequential([Conv2D(8, 3, input_shape=(28, 28, 1))])
    with pytest.raises(ValueError, match=HINT):
        Conv2D(8, 3)(np.zeros((2, 28, 28, 1)))
    # the data's shape, on a model built by fit/predict (checked before the model is built)
    model = Sequential([Conv2D(8, 3), Flatten(), Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=HINT):
        model.fit(np.zeros((4, 28, 28, 1)), np.zeros(4, int), verbose=0)
    assert not model.built
    with pytest.warns(UserWarning, match=HINT):
        Sequential([Conv2D(8, 3)]).predict(np.zeros((2, 16, 16, 4)))
    # pooling as the first layer
    with pytest.warns(UserWarning, match=HINT):
        Sequential([MaxPool2D(2, input_shape=(32, 32, 3))])
    with pytest.raises(ValueError, match=r"pool \(2, 2\) is larger.*" + HINT):
        Sequential([nn.Input(shape=(28, 28, 1)), nn.MaxPooling2D(2)])
    with pytest.warns(UserWarning, match=HINT):
        Sequential([nn.GlobalAveragePooling2D(input_shape=(32, 32, 3))])


def test_no_layout_warning_on_channels_first_data_or_inner_layers():
    import warnings
    with pytest.warns(UserWarning, match=HINT):   # (the check is on)
        Conv2D(4, 3)(np.zeros((1, 32, 32, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # inner layers are not checked: MaxPool2D's (64, 4, 4) output is normal
        Sequential([Conv2D(64, 3, padding="same", input_shape=(3, 8, 8)), MaxPool2D(2),
                    Conv2D(8, 3, padding="same"), AvgPool2D(2), Conv2D(16, 1), nn.GlobalMaxPooling2D()])
        Sequential([Conv2D(4, 3, padding="same", data_format="channels_last", input_shape=(32, 32, 3))])
        Sequential([Conv2D(4, 3, input_shape=(3, 32, 32))])
        Sequential([Conv2D(4, 1, input_shape=(4, 5, 3))])          # first axis not > 4: not flagged
        Conv2D(4, 3)(np.zeros((1, 3, 32, 32)))
        Sequential([Conv2D(4, (7, 1), input_shape=(12, 1000, 1))])  # 12 signals of 1000 samples
        Sequential([Conv2D(4, 3, padding="same", input_shape=(64, 4, 4))])   # feature maps as the data


def test_batch_norm_normalises_the_channels_of_the_image_layer_before_it(rng):
    # Keras code: a channels_last Conv2D, then BatchNormalization() with its default axis, under
    # fastnn's channels-first default: the statistics are the 4 channels', not the 10 rows'
    model = Sequential([Conv2D(4, 3, padding="same", data_format="channels_last", input_shape=(10, 6, 3)),
                        BatchNorm(), nn.GlobalAveragePooling2D(data_format="channels_last")], seed=0)
    norm = model.layers[1]
    assert norm.axis == -1 and norm.params["gamma"].shape == (4,)
    x = rng.standard_normal((5, 10, 6, 3))
    y = norm.forward(model.layers[0].forward(x, training=True), training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-6)        # per channel
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1, rtol=1e-3)
    assert norm.get_config()["axis"] == -1                                    # saved as resolved
    # the mirror: a global channels_last default, and an explicit channels_first Conv2D
    nn.set_image_data_format("channels_last")
    model = Sequential([Conv2D(4, 3, data_format="channels_first", input_shape=(3, 10, 6)), BatchNorm()])
    assert model.layers[1].axis == 1 and model.layers[1].params["gamma"].shape == (4,)
    assert Sequential([Dense(3, input_dim=2), BatchNorm(axis=1)]).layers[1].axis == 1   # given: kept


def test_a_layer_overriding_build_with_the_old_signature_still_builds_in_a_model():
    class Scale(nn.layers.Layer):
        def build(self, input_shape, dtype=np.float32, rng=None):
            return super().build(input_shape, dtype, rng)

        def forward(self, x, training=False):
            return 2 * x

    model = Sequential([Dense(3, input_dim=2), Scale()])
    np.testing.assert_allclose(model.predict(np.ones((1, 2))), 2 * model.layers[0](np.ones((1, 2))))
    with pytest.raises(ValueError, match=r"Dense: input_shape must have at least one size .* got \(\)"):
        Dense(2, input_shape=())
