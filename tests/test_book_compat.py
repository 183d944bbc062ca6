"""Networks written the way "deep learning from scratch" writes them (a params dict,
an OrderedDict of layers, loss / gradient / optimizer.update loops) run once with
fastnn.layers + fastnn.optim and once with plain-NumPy layers and update rules
written here; the losses, gradients and parameters must agree at every step."""
import math
import types
from collections import OrderedDict

import numpy as np
import pytest

import fastnn
from fastnn import functions as F
from fastnn import layers as FL
from fastnn import optim as FO
from conftest import requires_native

BACKENDS = ["numpy", pytest.param("native", marks=requires_native)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.backend(request.param):
        yield request.param


# ---------------------------------------------------------------- plain-NumPy layers (the book's semantics)

def _windows(x, fh, fw, stride, pad):
    """(N, OH, OW, C, FH, FW) receptive fields, gathered by loops over the output grid."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    oh, ow = (h - fh) // stride + 1, (w - fw) // stride + 1
    out = np.empty((n, oh, ow, c, fh, fw), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, :, i * stride:i * stride + fh, j * stride:j * stride + fw]
    return out


def _scatter_windows(d, x_shape, stride, pad):
    """Adjoint of _windows: add each field's gradient back into the (unpadded) input."""
    n, c, h, w = x_shape
    _, oh, ow, _, fh, fw = d.shape
    dx = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=d.dtype)
    for i in range(oh):
        for j in range(ow):
            dx[:, :, i * stride:i * stride + fh, j * stride:j * stride + fw] += d[:, i, j]
    return dx[:, :, pad:pad + h, pad:pad + w]


class RefAffine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, d):
        self.dW = self.x.T @ d
        self.db = d.sum(axis=0)
        return (d @ self.W.T).reshape(self.shape)


class RefRelu:
    def forward(self, x):
        self.off = x <= 0
        return np.where(self.off, 0.0, x)

    def backward(self, d):
        return np.where(self.off, 0.0, d)


class RefSoftmaxWithLoss:
    def forward(self, x, t):
        z = x - x.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        self.y = np.exp(log_p)
        self.t = np.eye(x.shape[1])[t] if t.ndim == 1 else t
        return -np.sum(self.t * log_p) / x.shape[0]

    def backward(self, dout=1):
        return (self.y - self.t) / self.t.shape[0]


class RefDropout:
    def __init__(self, ratio):
        self.ratio = ratio

    def forward(self, x, train_flg=True):
        if not train_flg:
            return x * (1 - self.ratio)
        self.keep = np.random.rand(*x.shape) > self.ratio
        return x * self.keep

    def backward(self, d):
        return d * self.keep


class RefBatchNormalization:
    def __init__(self, gamma, beta, momentum=0.9):
        self.gamma, self.beta, self.momentum = gamma, beta, momentum
        self.running_mean = self.running_var = None

    def forward(self, x, train_flg=True):
        self.shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if self.running_mean is None:
            self.running_mean, self.running_var = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        if train_flg:
            mu, var = x.mean(axis=0), x.var(axis=0)
            self.std = np.sqrt(var + 1e-6)
            self.xn = (x - mu) / self.std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
            xn = self.xn
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + 1e-6)
        return (self.gamma * xn + self.beta).reshape(self.shape)

    def backward(self, d):
        d = d.reshape(d.shape[0], -1)
        self.dbeta = d.sum(axis=0)
        self.dgamma = (d * self.xn).sum(axis=0)
        g = d * self.gamma
        dx = (g - g.mean(axis=0) - self.xn * (g * self.xn).mean(axis=0)) / self.std
        return dx.reshape(self.shape)


class RefConvolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        f, c, fh, fw = self.W.shape
        self.x_shape = x.shape
        fields = _windows(x, fh, fw, self.stride, self.pad)
        self.col = fields.reshape(-1, c * fh * fw)
        out = self.col @ self.W.reshape(f, -1).T + self.b
        return out.reshape(fields.shape[:3] + (f,)).transpose(0, 3, 1, 2)

    def backward(self, d):
        f, c, fh, fw = self.W.shape
        n, _, oh, ow = d.shape
        d = d.transpose(0, 2, 3, 1).reshape(-1, f)
        self.db = d.sum(axis=0)
        self.dW = (d.T @ self.col).reshape(self.W.shape)
        dfields = (d @ self.W.reshape(f, -1)).reshape(n, oh, ow, c, fh, fw)
        return _scatter_windows(dfields, self.x_shape, self.stride, self.pad)


class RefPooling:
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.ph, self.pw, self.stride = pool_h, pool_w, stride

    def forward(self, x):
        self.x_shape = x.shape
        fields = _windows(x, self.ph, self.pw, self.stride, 0)
        self.fields_shape = fields.shape
        flat = fields.reshape(fields.shape[:4] + (-1,))
        self.best = flat.argmax(axis=-1)
        return flat.max(axis=-1).transpose(0, 3, 1, 2)

    def backward(self, d):
        n, oh, ow, c = self.best.shape
        dflat = np.zeros((n, oh, ow, c, self.ph * self.pw))
        np.put_along_axis(dflat, self.best[..., None], d.transpose(0, 2, 3, 1)[..., None], axis=-1)
        return _scatter_windows(dflat.reshape(self.fields_shape), self.x_shape, self.stride, 0)


REF = types.SimpleNamespace(Affine=RefAffine, Relu=RefRelu, SoftmaxWithLoss=RefSoftmaxWithLoss,
                            Dropout=RefDropout, BatchNormalization=RefBatchNormalization,
                            Convolution=RefConvolution, Pooling=RefPooling)


class RefOptimizer:
    """The book's SGD / Momentum / Adam on a params dict."""

    def __init__(self, kind, lr, **hyper):
        self.kind, self.lr, self.hyper, self.state, self.iter = kind, lr, hyper, {}, 0

    def update(self, params, grads):
        self.iter += 1
        for key, p in params.items():
            g = grads[key]
            if self.kind == "SGD":
                p -= self.lr * g
            elif self.kind == "Momentum":
                v = self.state.get(key, 0.0) * self.hyper["momentum"] - self.lr * g
                self.state[key] = v
                p += v
            else:
                b1, b2 = 0.9, 0.999
                m, v = self.state.get(key, (0.0, 0.0))
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                self.state[key] = (m, v)
                p -= self.lr * math.sqrt(1 - b2 ** self.iter) / (1 - b1 ** self.iter) * m / (np.sqrt(v) + 1e-7)


# ---------------------------------------------------------------- networks written the book's way

class TwoLayerNet:
    def __init__(self, lib, input_size, hidden_size, output_size, seed, dtype=np.float64):
        rs = np.random.RandomState(seed)
        self.params = {
            "W1": (0.5 * rs.randn(input_size, hidden_size)).astype(dtype), "b1": np.zeros(hidden_size, dtype),
            "W2": (0.5 * rs.randn(hidden_size, output_size)).astype(dtype), "b2": np.zeros(output_size, dtype),
        }
        self.layers = OrderedDict()
        self.layers["Affine1"] = lib.Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = lib.Relu()
        self.layers["Affine2"] = lib.Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = lib.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}


class SimpleConvNet:
    """conv - relu - pool - affine - relu - affine - softmax"""

    def __init__(self, lib, input_dim, filter_num, filter_size, pad, stride, hidden_size, output_size, seed,
                 dtype=np.float64):
        rs = np.random.RandomState(seed)
        conv_out = (input_dim[1] - filter_size + 2 * pad) // stride + 1
        pool_out = filter_num * (conv_out // 2) ** 2
        self.params = {
            "W1": 0.3 * rs.randn(filter_num, input_dim[0], filter_size, filter_size), "b1": np.zeros(filter_num),
            "W2": 0.3 * rs.randn(pool_out, hidden_size), "b2": np.zeros(hidden_size),
            "W3": 0.3 * rs.randn(hidden_size, output_size), "b3": np.zeros(output_size),
        }
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        self.layers = OrderedDict()
        self.layers["Conv1"] = lib.Convolution(self.params["W1"], self.params["b1"], stride, pad)
        self.layers["Relu1"] = lib.Relu()
        self.layers["Pool1"] = lib.Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = lib.Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = lib.Relu()
        self.layers["Affine2"] = lib.Affine(self.params["W3"], self.params["b3"])
        self.last_layer = lib.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for i, name in enumerate(("Conv1", "Affine1", "Affine2"), start=1):
            grads[f"W{i}"], grads[f"b{i}"] = self.layers[name].dW, self.layers[name].db
        return grads


class MultiLayerNetExtend:
    """affine - batchnorm - relu - dropout, repeated, then affine - softmax; L2 weight decay in the loss."""

    def __init__(self, lib, sizes, seed, weight_decay_lambda=0.01, dropout_ratio=0.3):
        rs = np.random.RandomState(seed)
        self.wd = weight_decay_lambda
        self.hidden = len(sizes) - 2
        self.params = {}
        self.layers = OrderedDict()
        for i in range(1, len(sizes)):
            self.params[f"W{i}"] = np.sqrt(2.0 / sizes[i - 1]) * rs.randn(sizes[i - 1], sizes[i])
            self.params[f"b{i}"] = np.zeros(sizes[i])
        for i in range(1, self.hidden + 1):
            self.layers[f"Affine{i}"] = lib.Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            self.params[f"gamma{i}"] = np.ones(sizes[i])
            self.params[f"beta{i}"] = np.zeros(sizes[i])
            self.layers[f"BatchNorm{i}"] = lib.BatchNormalization(self.params[f"gamma{i}"], self.params[f"beta{i}"])
            self.layers[f"Activation_function{i}"] = lib.Relu()
            self.layers[f"Dropout{i}"] = lib.Dropout(dropout_ratio)
        last = self.hidden + 1
        self.layers[f"Affine{last}"] = lib.Affine(self.params[f"W{last}"], self.params[f"b{last}"])
        self.last_layer = lib.SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for key, layer in self.layers.items():
            x = layer.forward(x, train_flg) if ("Dropout" in key or "BatchNorm" in key) else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        decay = sum(0.5 * self.wd * np.sum(self.params[f"W{i}"] ** 2) for i in range(1, self.hidden + 2))
        return self.last_layer.forward(self.predict(x, train_flg), t) + decay

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for i in range(1, self.hidden + 2):
            grads[f"W{i}"] = self.layers[f"Affine{i}"].dW + self.wd * self.params[f"W{i}"]
            grads[f"b{i}"] = self.layers[f"Affine{i}"].db
            if i <= self.hidden:
                grads[f"gamma{i}"] = self.layers[f"BatchNorm{i}"].dgamma
                grads[f"beta{i}"] = self.layers[f"BatchNorm{i}"].dbeta
        return grads


# ---------------------------------------------------------------- the comparisons

def assert_same(got, expected, rtol, atol, what):
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=rtol, atol=atol, err_msg=f"{what} {key}")


def train_side_by_side(net, ref, optimizer, ref_optimizer, x, t, steps, rtol, atol, seed_dropout=False):
    losses = []
    for step in range(steps):
        if seed_dropout:
            np.random.seed(100 + step)
        grads = net.gradient(x, t)
        if seed_dropout:
            np.random.seed(100 + step)
        ref_grads = ref.gradient(x, t)
        assert_same(grads, ref_grads, rtol, atol, f"step {step} gradient")
        optimizer.update(net.params, grads)
        ref_optimizer.update(ref.params, ref_grads)
        assert_same(net.params, ref.params, rtol, atol, f"step {step} param")
        loss, ref_loss = net.loss(x, t), ref.loss(x, t)
        assert loss == pytest.approx(ref_loss, rel=rtol, abs=atol)
        losses.append(loss)
    return losses


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "one-hot"])
def test_two_layer_net(backend, labels):
    rs = np.random.RandomState(0)
    x = rs.randn(8, 6)
    t = rs.randint(0, 3, 8)
    if not labels:
        t = np.eye(3)[t]
    net, ref = TwoLayerNet(FL, 6, 5, 3, seed=1), TwoLayerNet(REF, 6, 5, 3, seed=1)
    losses = train_side_by_side(net, ref, FO.SGD(lr=0.5), RefOptimizer("SGD", 0.5), x, t, 5, 1e-10, 1e-12)
    assert losses[-1] < losses[0]


def test_two_layer_net_float32_params(backend):
    rs = np.random.RandomState(0)
    x = rs.randn(8, 6).astype(np.float32)
    t = rs.randint(0, 3, 8)
    net = TwoLayerNet(FL, 6, 5, 3, seed=1, dtype=np.float32)
    ref = TwoLayerNet(REF, 6, 5, 3, seed=1, dtype=np.float32)
    for key in ref.params:                      # reference in float64 from the same float32 start
        ref.params[key] = ref.params[key].astype(np.float64)
    ref.layers["Affine1"].W, ref.layers["Affine1"].b = ref.params["W1"], ref.params["b1"]
    ref.layers["Affine2"].W, ref.layers["Affine2"].b = ref.params["W2"], ref.params["b2"]
    train_side_by_side(net, ref, FO.Momentum(lr=0.2), RefOptimizer("Momentum", 0.2, momentum=0.9),
                       x, t, 3, 2e-4, 2e-5)
    assert all(p.dtype == np.float32 for p in net.params.values())


def test_two_layer_net_gradient_check_with_functions(backend):
    # the book's gradient_check.py: backprop against fastnn.functions.numerical_gradient
    rs = np.random.RandomState(3)
    x, t = rs.randn(4, 5), rs.randint(0, 3, 4)
    net = TwoLayerNet(FL, 5, 4, 3, seed=2)
    grads = net.gradient(x, t)
    for key, p in net.params.items():
        numeric = F.numerical_gradient(lambda _: net.loss(x, t), p)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-8, err_msg=key)


def test_simple_convnet(backend):
    rs = np.random.RandomState(4)
    x = rs.randn(5, 1, 10, 10)
    t = rs.randint(0, 3, 5)
    args = dict(input_dim=(1, 10, 10), filter_num=4, filter_size=5, pad=0, stride=1, hidden_size=10,
                output_size=3, seed=5)
    net, ref = SimpleConvNet(FL, **args), SimpleConvNet(REF, **args)
    losses = train_side_by_side(net, ref, FO.Adam(lr=0.01), RefOptimizer("Adam", 0.01), x, t, 3, 1e-9, 1e-12)
    assert losses[-1] < losses[0]


def test_simple_convnet_padded_float32(backend):
    rs = np.random.RandomState(6)
    x = rs.randn(3, 2, 8, 8).astype(np.float32)
    t = rs.randint(0, 4, 3)
    args = dict(input_dim=(2, 8, 8), filter_num=3, filter_size=3, pad=1, stride=1, hidden_size=6,
                output_size=4, seed=7)
    net = SimpleConvNet(FL, dtype=np.float32, **args)
    ref = SimpleConvNet(REF, dtype=np.float32, **args)
    assert net.loss(x, t) == pytest.approx(ref.loss(x.astype(np.float64), t), rel=1e-5)
    assert_same(net.gradient(x, t), ref.gradient(x.astype(np.float64), t), 1e-4, 1e-6, "gradient")


def test_batchnorm_dropout_net(backend):
    rs = np.random.RandomState(8)
    x = rs.randn(10, 7)
    t = rs.randint(0, 4, 10)
    net = MultiLayerNetExtend(FL, [7, 6, 5, 4], seed=9)
    ref = MultiLayerNetExtend(REF, [7, 6, 5, 4], seed=9)
    train_side_by_side(net, ref, FO.Momentum(lr=0.1, momentum=0.9), RefOptimizer("Momentum", 0.1, momentum=0.9),
                       x, t, 4, 1e-9, 1e-12, seed_dropout=True)
    # inference uses the running statistics and the test-time dropout scaling
    np.testing.assert_allclose(net.predict(x, train_flg=False), ref.predict(x, train_flg=False),
                               rtol=1e-9, atol=1e-12)


def test_loading_weights_by_assignment(backend):
    # the book's load_params: replace params and assign layer.W / layer.b
    rs = np.random.RandomState(10)
    x = rs.randn(2, 1, 10, 10)
    args = dict(input_dim=(1, 10, 10), filter_num=2, filter_size=3, pad=0, stride=1, hidden_size=4,
                output_size=3)
    trained, fresh = SimpleConvNet(FL, seed=11, **args), SimpleConvNet(FL, seed=12, **args)
    for key, val in trained.params.items():
        fresh.params[key] = val.copy()
    for i, name in enumerate(("Conv1", "Affine1", "Affine2"), start=1):
        fresh.layers[name].W = fresh.params[f"W{i}"]
        fresh.layers[name].b = fresh.params[f"b{i}"]
    np.testing.assert_array_equal(fresh.predict(x), trained.predict(x))


@pytest.mark.parametrize("module, names", [
    ("fastnn.layers", ["np", "softmax", "cross_entropy_error", "sigmoid", "relu", "im2col", "col2im", "Affine"]),
    ("fastnn.optim", ["np", "SGD", "Adam"]),
    ("fastnn.functions", ["np", "softmax", "numerical_gradient", "im2col"]),
])
def test_star_imports_bring_what_the_books_bring(module, names):
    # the book's common/*.py have no __all__: `from common.layers import *` also brings np and
    # common.functions' functions, and book scripts use them without importing them
    # (ch06/optimizer_compare_mnist.py uses np after `from common.optimizer import *` alone)
    namespace = {}
    exec(f"from {module} import *", namespace)  # noqa: S102
    assert set(names) <= set(namespace)
    assert namespace["np"] is np
    if module == "fastnn.layers":
        assert namespace["softmax"] is fastnn.functions.softmax and namespace["im2col"] is fastnn.functions.im2col
