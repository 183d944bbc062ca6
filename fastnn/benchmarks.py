"""The benchmark workloads of `fastnn bench` and the bench/ pytest-benchmark suite.

Each workload (A..J of docs/BENCHMARKS.md) is defined once here, with the same
float32 data for every implementation:

- ``native``: ``fastnn.ops`` on the native (C) backend;
- ``numpy``: the same ``fastnn.ops`` calls under ``fastnn.backend("numpy")``,
  i.e. fastnn's vectorised NumPy reference backend;
- ``torch``: ``torch.nn.functional`` with autograd on the CPU, when torch is
  installed (torch is imported only when that implementation is asked for).

Inputs are made before timing; a timed call does the forward and the backward
pass (or one SGD step, or an inference pass) and returns the results in NumPy
layout, so the implementations can be checked against the NumPy reference
before they are timed.

This module is inside the package so that the installed ``fastnn bench`` can use
it; it depends on NumPy only.
"""
import contextlib
import gc
import importlib
import importlib.util
import inspect
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

import fastnn
from fastnn import _config

IMPLEMENTATIONS = ("native", "numpy", "torch")
IMPLEMENTATION_LABELS = {
    "native": "fastnn native",
    "numpy": "fastnn NumPy reference",
    "torch": "PyTorch CPU (autograd)",
}

DTYPE = np.float32

# The book's SimpleConvNet and DeepConvNet train and test in batches of 100.
INFERENCE_BATCH = 100
J_IMAGES = 1000
J_IMAGES_QUICK = 200


# ----------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One row of the table.

    ``kind`` is "compute" (GEMM-bound: GFLOP/s and % of FMA peak are shown) or
    "memory" (GB/s of compulsory traffic is shown). ``make_data(quick)`` builds
    the inputs; ``flops(data)``/``traffic_bytes(data)`` count the work of one
    call; ``fastnn_impl(ops, data)`` and ``torch_impl(torch, data)`` return the
    timed callable.
    """
    key: str
    name: str
    title: str
    kind: str
    tags: tuple
    make_data: object = field(repr=False)
    fastnn_impl: object = field(repr=False)
    torch_impl: object = field(repr=False)
    flops: object = field(repr=False, default=None)
    traffic_bytes: object = field(repr=False, default=None)

    @property
    def letter(self):
        return self.key[0]


def _rng(key):
    # A fixed seed per workload: the same data in every run and for every implementation.
    return np.random.default_rng([ord(c) for c in key] + [20261123])


def _normal(rng, shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=np.float64) * scale).astype(DTYPE)


def _he(rng, shape, fan_in):
    return _normal(rng, shape, math.sqrt(2.0 / fan_in))


def _out_hw(h, w, fh, fw, stride, pad):
    return (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1


def _conv_flops(x_shape, w_shape, stride, pad):
    n, c, h, w = x_shape
    f, _, fh, fw = w_shape
    oh, ow = _out_hw(h, w, fh, fw, stride, pad)
    return 2.0 * n * f * oh * ow * c * fh * fw


def _torch_tensor(torch, array, requires_grad=False):
    t = torch.from_numpy(np.ascontiguousarray(array))
    if requires_grad:
        t.requires_grad_(True)
    return t


def _to_numpy(t):
    return t.detach().numpy()


# --- A, B: Affine --------------------------------------------------------------------------------

def _affine_data(n, d, m, key):
    def make(quick=False):
        rng = _rng(key)
        return {"x": _normal(rng, (n, d)), "W": _he(rng, (d, m), d), "b": _normal(rng, (m,), 0.1),
                "dy": _normal(rng, (n, m))}
    return make


def _affine_fastnn(ops, data):
    x, W, b, dy = data["x"], data["W"], data["b"], data["dy"]

    def step():
        y = ops.linear(x, W, b)
        dx, dW, db = ops.linear_backward(dy, x, W)
        return y, dx, dW, db
    return step


def _affine_torch(torch, data):
    F = torch.nn.functional
    x = _torch_tensor(torch, data["x"], True)
    W = _torch_tensor(torch, data["W"].T, True)   # torch keeps (out, in)
    b = _torch_tensor(torch, data["b"], True)
    dy = _torch_tensor(torch, data["dy"])

    def step():
        y = F.linear(x, W, b)
        dx, dW, db = torch.autograd.grad(y, (x, W, b), dy)
        return _to_numpy(y), dx.numpy(), dW.numpy().T, db.numpy()
    return step


def _affine_flops(data):
    (n, d), m = data["x"].shape, data["W"].shape[1]
    return 6.0 * n * d * m   # y = xW, dx = dy W^T, dW = x^T dy


# --- C, D, E: Convolution ------------------------------------------------------------------------

def _conv_data(x_shape, w_shape, pad, key):
    def make(quick=False):
        rng = _rng(key)
        n, c, h, w = x_shape
        f, _, fh, fw = w_shape
        oh, ow = _out_hw(h, w, fh, fw, 1, pad)
        return {"x": _normal(rng, x_shape), "W": _he(rng, w_shape, c * fh * fw),
                "b": _normal(rng, (f,), 0.1), "dy": _normal(rng, (n, f, oh, ow)), "pad": pad}
    return make


def _conv_fastnn(ops, data):
    x, W, b, dy, pad = data["x"], data["W"], data["b"], data["dy"], data["pad"]

    def step():
        y = ops.conv2d(x, W, b, stride=1, pad=pad)
        dx, dW, db = ops.conv2d_backward(dy, x, W, stride=1, pad=pad)
        return y, dx, dW, db
    return step


def _conv_torch(torch, data):
    F = torch.nn.functional
    x = _torch_tensor(torch, data["x"], True)
    W = _torch_tensor(torch, data["W"], True)
    b = _torch_tensor(torch, data["b"], True)
    dy = _torch_tensor(torch, data["dy"])
    pad = data["pad"]

    def step():
        y = F.conv2d(x, W, b, stride=1, padding=pad)
        dx, dW, db = torch.autograd.grad(y, (x, W, b), dy)
        return _to_numpy(y), dx.numpy(), dW.numpy(), db.numpy()
    return step


def _conv_workload_flops(data):
    # forward, the input gradient and the weight gradient are one GEMM each
    return 3.0 * _conv_flops(data["x"].shape, data["W"].shape, 1, data["pad"])


# --- F: max pooling ------------------------------------------------------------------------------

def _pool_data(quick=False):
    rng = _rng("F")
    x = _normal(rng, (64, 32, 28, 28))
    return {"x": x, "dy": _normal(rng, (64, 32, 14, 14))}


def _pool_fastnn(ops, data):
    x, dy = data["x"], data["dy"]

    def step():
        y, argmax = ops.max_pool2d(x, 2, 2, stride=2)
        dx = ops.max_pool2d_backward(dy, argmax, x.shape, 2, 2, 2, 0)
        return y, dx
    return step


def _pool_torch(torch, data):
    F = torch.nn.functional
    x = _torch_tensor(torch, data["x"], True)
    dy = _torch_tensor(torch, data["dy"])

    def step():
        y = F.max_pool2d(x, 2, 2)
        (dx,) = torch.autograd.grad(y, (x,), dy)
        return _to_numpy(y), dx.numpy()
    return step


def _pool_bytes(data):
    x, dy = data["x"], data["dy"]
    # forward reads x, writes y and the int64 argmax; backward reads dy and argmax, writes dx
    return 2 * x.nbytes + 2 * dy.nbytes + 2 * dy.size * 8


# --- G: softmax cross-entropy --------------------------------------------------------------------

def _softmax_ce_data(k, key):
    def make(quick=False):
        rng = _rng(key)
        return {"z": _normal(rng, (256, k), 2.0), "t": rng.integers(0, k, size=256, dtype=np.int64)}
    return make


def _softmax_ce_fastnn(ops, data):
    z, t = data["z"], data["t"]

    def step():
        loss, dz = ops.softmax_cross_entropy(z, t)
        return np.float64(loss), dz
    return step


def _softmax_ce_torch(torch, data):
    F = torch.nn.functional
    z = _torch_tensor(torch, data["z"], True)
    t = _torch_tensor(torch, data["t"])

    def step():
        loss = F.cross_entropy(z, t)
        (dz,) = torch.autograd.grad(loss, (z,))
        return np.float64(loss.item()), dz.numpy()
    return step


def _softmax_ce_bytes(data):
    return 2 * data["z"].nbytes + data["t"].nbytes


# --- H: activations ------------------------------------------------------------------------------

H_SHAPE = (1024, 4096)   # 4,194,304 elements


def _activation_data(key):
    def make(quick=False):
        rng = _rng(key)
        return {"x": _normal(rng, H_SHAPE), "dy": _normal(rng, H_SHAPE)}
    return make


def _relu_fastnn(ops, data):
    x, dy = data["x"], data["dy"]

    def step():
        y = ops.relu(x)
        dx = ops.relu_backward(dy, x)
        return y, dx
    return step


def _relu_torch(torch, data):
    F = torch.nn.functional
    x = _torch_tensor(torch, data["x"], True)
    dy = _torch_tensor(torch, data["dy"])

    def step():
        y = F.relu(x)
        (dx,) = torch.autograd.grad(y, (x,), dy)
        return _to_numpy(y), dx.numpy()
    return step


def _sigmoid_fastnn(ops, data):
    x, dy = data["x"], data["dy"]

    def step():
        y = ops.sigmoid(x)
        dx = ops.sigmoid_backward(dy, y)
        return y, dx
    return step


def _sigmoid_torch(torch, data):
    x = _torch_tensor(torch, data["x"], True)
    dy = _torch_tensor(torch, data["dy"])

    def step():
        y = torch.sigmoid(x)
        (dx,) = torch.autograd.grad(y, (x,), dy)
        return _to_numpy(y), dx.numpy()
    return step


def _activation_bytes(data):
    # forward reads x, writes y; backward reads dy and x (or y), writes dx
    return 5 * data["x"].nbytes


# --- fused activations, when fastnn.ops has them -------------------------------------------------

def _accepts(func, name):
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _conv_relu(ops):
    """conv2d followed by ReLU: fused when ops.conv2d takes `activation` (the same result by contract)."""
    if _accepts(ops.conv2d, "activation"):
        return lambda x, W, b, pad: ops.conv2d(x, W, b, stride=1, pad=pad, activation="relu")
    return lambda x, W, b, pad: ops.relu(ops.conv2d(x, W, b, stride=1, pad=pad))


def _conv_relu_pool(ops):
    """(forward, backward) of conv2d, ReLU, 2x2 max pool: forward(x, W, b) -> (pooled,
    argmax), backward(dp, argmax, pooled, x, W) -> (None, dW, db). The fused ops where ops
    has them (the conv output and its gradient never leave the cache; the same numbers
    to float tolerance), else the separate ops, with ReLU's gradient taken on the pooled side
    (the pool routes each gradient to its window's maximum, which is > 0 exactly where
    the pooled value is: equal bit for bit, on a quarter of the elements)."""
    if hasattr(ops, "conv2d_max_pool2d_backward"):
        return (lambda x, W, b: ops.conv2d_max_pool2d(x, W, b, activation="relu", pool_h=2),
                lambda dp, arg, p, x, W: ops.conv2d_max_pool2d_backward(dp, arg, p, x, W, activation="relu",
                                                                        pool_h=2, need_dx=False))
    conv_relu = _conv_relu(ops)

    def backward(dp, arg, p, x, W):
        conv_shape = (x.shape[0], W.shape[0], x.shape[2] - W.shape[2] + 1, x.shape[3] - W.shape[3] + 1)
        dh = ops.max_pool2d_backward(ops.relu_backward(dp, p), arg, conv_shape, 2, 2, 2, 0)
        return ops.conv2d_backward(dh, x, W, stride=1, pad=0, need_dx=False)
    return lambda x, W, b: ops.max_pool2d(conv_relu(x, W, b, 0), 2, 2, stride=2), backward


def _sgd(ops):
    if hasattr(ops, "sgd_update"):
        return ops.sgd_update

    def update(p, g, lr):
        p -= lr * g
    return update


# --- I: one SGD step of the SimpleConvNet --------------------------------------------------------

I_LR = 0.01


def _simple_convnet_data(quick=False):
    rng = _rng("I")
    return {
        "x": _normal(rng, (100, 1, 28, 28)),
        "t": rng.integers(0, 10, size=100, dtype=np.int64),
        "params": {
            "W1": _he(rng, (30, 1, 5, 5), 25), "b1": np.zeros(30, DTYPE),
            "W2": _he(rng, (30 * 12 * 12, 100), 30 * 12 * 12), "b2": np.zeros(100, DTYPE),
            "W3": _he(rng, (100, 10), 100), "b3": np.zeros(10, DTYPE),
        },
    }


def _simple_convnet_fastnn(ops, data):
    x, t = data["x"], data["t"]
    p = {k: v.copy() for k, v in data["params"].items()}   # this implementation's own parameters
    conv_relu_pool, conv_relu_pool_backward = _conv_relu_pool(ops)
    sgd = _sgd(ops)
    n = x.shape[0]

    def step():
        p1, argmax = conv_relu_pool(x, p["W1"], p["b1"])         # (100, 30, 12, 12) of (100, 30, 24, 24)
        f = p1.reshape(n, -1)
        a2 = ops.linear(f, p["W2"], p["b2"], activation="relu")
        z = ops.linear(a2, p["W3"], p["b3"])
        loss, dz = ops.softmax_cross_entropy(z, t)
        da2, dW3, db3 = ops.linear_backward(dz, a2, p["W3"])
        df, dW2, db2 = ops.linear_backward(da2, f, p["W2"], activation="relu", y=a2)
        # The input gradient of the first layer is not needed (PyTorch skips it too).
        _, dW1, db1 = conv_relu_pool_backward(df.reshape(p1.shape), argmax, p1, x, p["W1"])
        grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}
        for k, g in grads.items():
            sgd(p[k], g, I_LR)
        return (np.float64(loss),) + tuple(grads[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    return step


def _simple_convnet_torch(torch, data):
    F = torch.nn.functional
    x = _torch_tensor(torch, data["x"])
    t = _torch_tensor(torch, data["t"])
    src = data["params"]
    p = {k: _torch_tensor(torch, (v.T if k in ("W2", "W3") else v).copy(), True) for k, v in src.items()}
    order = ("W1", "b1", "W2", "b2", "W3", "b3")
    params = tuple(p[k] for k in order)
    n = data["x"].shape[0]

    def step():
        a1 = F.relu(F.conv2d(x, p["W1"], p["b1"]))
        p1 = F.max_pool2d(a1, 2, 2)
        a2 = F.relu(F.linear(p1.reshape(n, -1), p["W2"], p["b2"]))
        z = F.linear(a2, p["W3"], p["b3"])
        loss = F.cross_entropy(z, t)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for param, g in zip(params, grads):
                param.add_(g, alpha=-I_LR)
        g = dict(zip(order, grads))
        return (np.float64(loss.item()), g["W1"].numpy(), g["b1"].numpy(), g["W2"].numpy().T,
                g["b2"].numpy(), g["W3"].numpy().T, g["b3"].numpy())
    return step


def _simple_convnet_flops(data):
    n = data["x"].shape[0]
    conv = _conv_flops(data["x"].shape, data["params"]["W1"].shape, 1, 0)
    affine1 = 2.0 * n * 4320 * 100
    affine2 = 2.0 * n * 100 * 10
    # conv: forward + weight gradient; affines: forward + both gradients
    return 2 * conv + 3 * affine1 + 3 * affine2


# --- J: DeepConvNet inference --------------------------------------------------------------------

# The book's DeepConvNet (ch08/deep_convnet.py): (filters, pad, pool after) of its six 3x3 convs.
DEEP_CONVS = ((16, 1, False), (16, 1, True), (32, 1, False), (32, 2, True), (64, 1, False), (64, 1, True))


def _deep_convnet_data(quick=False):
    rng = _rng("J")
    images = J_IMAGES_QUICK if quick else J_IMAGES
    convs = []
    c, h = 1, 28
    for filters, pad, pool in DEEP_CONVS:
        convs.append((_he(rng, (filters, c, 3, 3), c * 9), np.zeros(filters, DTYPE), pad, pool))
        c, h = filters, h + 2 * pad - 2
        if pool:
            h //= 2
    flat = c * h * h   # 64 * 4 * 4
    return {
        "x": rng.random((images, 1, 28, 28), dtype=np.float32),
        "convs": convs,
        "W7": _he(rng, (flat, 50), flat), "b7": np.zeros(50, DTYPE),
        "W8": _he(rng, (50, 10), 50), "b8": np.zeros(10, DTYPE),
    }


def _deep_convnet_fastnn(ops, data):
    x, convs = data["x"], data["convs"]
    W7, b7, W8, b8 = data["W7"], data["b7"], data["W8"], data["b8"]
    conv_relu = _conv_relu(ops)
    # conv, ReLU and 2x2 pool as one op where ops has it (as fastnn.nn runs a Conv2D and its
    # MaxPool2D): the same numbers, the convolution's output pooled while in cache
    fused = getattr(ops, "conv2d_max_pool2d", None)

    def infer():
        out = np.empty((x.shape[0], 10), DTYPE)
        for s in range(0, x.shape[0], INFERENCE_BATCH):
            h = x[s:s + INFERENCE_BATCH]
            for W, b, pad, pool in convs:
                if pool and fused is not None:
                    h, _ = fused(h, W, b, stride=1, pad=pad, activation="relu", pool_h=2)
                    continue
                h = conv_relu(h, W, b, pad)
                if pool:
                    h, _ = ops.max_pool2d(h, 2, 2, stride=2)
            h = ops.linear(h.reshape(h.shape[0], -1), W7, b7, activation="relu")
            out[s:s + INFERENCE_BATCH] = ops.linear(h, W8, b8)
        return (out,)
    return infer


def _deep_convnet_torch(torch, data):
    F = torch.nn.functional
    x = _torch_tensor(torch, data["x"])
    convs = [(_torch_tensor(torch, W), _torch_tensor(torch, b), pad, pool) for W, b, pad, pool in data["convs"]]
    W7, b7 = _torch_tensor(torch, data["W7"].T.copy()), _torch_tensor(torch, data["b7"])
    W8, b8 = _torch_tensor(torch, data["W8"].T.copy()), _torch_tensor(torch, data["b8"])

    def infer():
        out = np.empty((x.shape[0], 10), DTYPE)
        with torch.inference_mode():
            for s in range(0, x.shape[0], INFERENCE_BATCH):
                h = x[s:s + INFERENCE_BATCH]
                for W, b, pad, pool in convs:
                    h = F.relu(F.conv2d(h, W, b, padding=pad))
                    if pool:
                        h = F.max_pool2d(h, 2, 2)
                h = F.relu(F.linear(h.reshape(h.shape[0], -1), W7, b7))
                out[s:s + INFERENCE_BATCH] = F.linear(h, W8, b8).numpy()
        return (out,)
    return infer


def _deep_convnet_flops(data):
    n = data["x"].shape[0]
    total, c, h = 0.0, 1, 28
    for W, _, pad, pool in data["convs"]:
        total += _conv_flops((n, c, h, h), W.shape, 1, pad)
        c, h = W.shape[0], h + 2 * pad - 2
        if pool:
            h //= 2
    return total + 2.0 * n * data["W7"].size + 2.0 * n * data["W8"].size


# --- S: sgemm ------------------------------------------------------------------------------------

# issue 4's GEMM target: 2048^3 float32 against NumPy's BLAS (the reference backend's matmul is
# np.matmul) and torch.mm; --quick multiplies 512^3
S_SIZE = 2048
S_SIZE_QUICK = 512


def _sgemm_data(quick=False):
    rng = _rng("S")
    n = S_SIZE_QUICK if quick else S_SIZE
    return {"a": _normal(rng, (n, n)), "b": _normal(rng, (n, n))}


def _sgemm_fastnn(ops, data):
    a, b = data["a"], data["b"]

    def step():
        return (ops.matmul(a, b),)
    return step


def _sgemm_torch(torch, data):
    a, b = _torch_tensor(torch, data["a"]), _torch_tensor(torch, data["b"])

    def step():
        return (torch.mm(a, b).numpy(),)
    return step


def _sgemm_flops(data):
    (n, k), m = data["a"].shape, data["b"].shape[1]
    return 2.0 * n * k * m


WORKLOADS = (
    Workload("A", "affine-large", "Affine x(128,784) W(784,512)", "compute", ("affine", "linear"),
             _affine_data(128, 784, 512, "A"), _affine_fastnn, _affine_torch, flops=_affine_flops),
    Workload("B", "affine-small", "Affine x(100,784) W(784,50)", "compute", ("affine", "linear"),
             _affine_data(100, 784, 50, "B"), _affine_fastnn, _affine_torch, flops=_affine_flops),
    Workload("C", "conv-mnist", "Conv x(100,1,28,28) W(30,1,5,5)", "compute", ("conv",),
             _conv_data((100, 1, 28, 28), (30, 1, 5, 5), 0, "C"), _conv_fastnn, _conv_torch,
             flops=_conv_workload_flops),
    Workload("D", "conv-mid", "Conv x(64,16,28,28) W(32,16,3,3) pad 1", "compute", ("conv",),
             _conv_data((64, 16, 28, 28), (32, 16, 3, 3), 1, "D"), _conv_fastnn, _conv_torch,
             flops=_conv_workload_flops),
    Workload("E", "conv-large", "Conv x(32,64,32,32) W(64,64,3,3) pad 1", "compute", ("conv",),
             _conv_data((32, 64, 32, 32), (64, 64, 3, 3), 1, "E"), _conv_fastnn, _conv_torch,
             flops=_conv_workload_flops),
    Workload("F", "maxpool", "Max pool 2x2 s2 on (64,32,28,28)", "memory", ("pool",),
             _pool_data, _pool_fastnn, _pool_torch, traffic_bytes=_pool_bytes),
    Workload("G1", "softmax-ce-10", "Softmax-CE (256,10), int labels", "memory", ("softmax", "loss"),
             _softmax_ce_data(10, "G1"), _softmax_ce_fastnn, _softmax_ce_torch,
             traffic_bytes=_softmax_ce_bytes),
    Workload("G2", "softmax-ce-1000", "Softmax-CE (256,1000), int labels", "memory", ("softmax", "loss"),
             _softmax_ce_data(1000, "G2"), _softmax_ce_fastnn, _softmax_ce_torch,
             traffic_bytes=_softmax_ce_bytes),
    Workload("H1", "relu", "ReLU, 4,194,304 elements", "memory", ("activation",),
             _activation_data("H1"), _relu_fastnn, _relu_torch, traffic_bytes=_activation_bytes),
    Workload("H2", "sigmoid", "Sigmoid, 4,194,304 elements", "memory", ("activation",),
             _activation_data("H2"), _sigmoid_fastnn, _sigmoid_torch, traffic_bytes=_activation_bytes),
    Workload("I", "simpleconvnet-step", "SimpleConvNet SGD step, batch 100", "compute", ("train", "net"),
             _simple_convnet_data, _simple_convnet_fastnn, _simple_convnet_torch,
             flops=_simple_convnet_flops),
    Workload("J", "deepconvnet-inference", "DeepConvNet (6 conv) inference", "compute",
             ("inference", "net"), _deep_convnet_data, _deep_convnet_fastnn, _deep_convnet_torch,
             flops=_deep_convnet_flops),
    Workload("S", "sgemm", "sgemm (float32 matmul)", "compute", ("gemm",),
             _sgemm_data, _sgemm_fastnn, _sgemm_torch, flops=_sgemm_flops),
)

WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)

# The targets of issues 6 and 4 for fastnn native, at 1 and 2 threads: (workload keys, measure, at
# least). "numpy": speed-up over the NumPy reference; "torch": PyTorch ms / native ms; "copy": % of
# the copy bandwidth; "peak": % of the FMA peak.
TARGETS = (
    (("C", "D", "E", "F", "I"), "numpy", 10.0),
    (("G1", "G2", "H1", "H2"), "numpy", 5.0),
    (("A", "B"), "torch", 1.05),
    (("C",), "torch", 4.0),
    (("D", "E"), "torch", 1.3),
    (("F",), "torch", 4.0),
    (("G1", "G2"), "torch", 3.0),
    (("H1", "H2"), "torch", 1.3),
    (("I",), "torch", 2.5),
    (("F", "H1", "H2"), "copy", 70.0),
    (("S",), "numpy", 0.95),
    (("S",), "peak", 85.0),
)

# Issue 4's targets for the thread scaling of fastnn native (`fastnn bench --threads 1,2,...,16`):
# (workload keys or "compute" for every compute-bound one, thread count, at least this speed-up
# over 1 thread).
SCALING_TARGETS = (
    ("compute", 2, 1.85),
    (("S", "E"), 16, 12.0),
)


def evaluate_targets(results):
    """[{workload, against, target, measured, met}] for the targets whose workload and measure are in `results`."""
    rows = {r["key"]: r for r in results}
    out = []
    for keys, against, target in TARGETS:
        for key in keys:
            row = rows.get(key)
            if row is None:
                continue
            if against == "numpy":
                measured = row["speedup_vs_numpy"].get("native")
            elif against == "torch":
                measured = row["native_vs_torch"]
            else:
                measured = row["timings"].get("native", {}).get(f"{against}_pct")
            if measured is not None:
                out.append({"workload": key, "against": against, "target": target, "measured": measured,
                            "met": measured >= target})
    return out


def evaluate_scaling_targets(rows):
    """[{workload, threads, target, measured, met}] from fastnn native's rows of a sweep,
    [{key, kind, median_ms: {thread count: ms}}]: the speed-up at each count over 1 thread, for
    the SCALING_TARGETS whose counts were measured."""
    out = []
    for keys, n, target in SCALING_TARGETS:
        for row in rows:
            if row["kind"] != "compute" if keys == "compute" else row["key"] not in keys:
                continue
            one, many = row["median_ms"].get(1), row["median_ms"].get(n)
            if one and many:
                measured = one / many
                out.append({"workload": row["key"], "threads": n, "target": target, "measured": measured,
                            "met": measured >= target})
    return out


def workload_title(workload, data):
    """The title with the image count of J, which depends on --quick."""
    if workload.key == "J":
        return f"{workload.title}, {data['x'].shape[0]:,} images"
    if workload.key == "S":
        n = data["a"].shape[0]
        return f"sgemm {n}^3 (float32 matmul)"
    return workload.title


def selection_tokens():
    """Every token `--only` accepts, for error messages."""
    letters = sorted({w.letter for w in WORKLOADS})
    tags = sorted({t for w in WORKLOADS for t in w.tags})
    return letters + [w.key for w in WORKLOADS if w.key != w.letter] + [w.name for w in WORKLOADS] + tags


def select_workloads(spec):
    """Workloads named by a comma-separated list of letters (A, G), keys (G2), names (relu) or tags (conv).

    ``None`` or "" selects all. Raises ValueError naming the unknown tokens and the valid ones.
    """
    if spec is None or not str(spec).strip():
        return list(WORKLOADS)
    tokens = [tok.strip() for tok in str(spec).split(",") if tok.strip()]
    chosen, unknown = set(), []
    for tok in tokens:
        low = tok.lower()
        hits = {w.key for w in WORKLOADS
                if low in (w.key.lower(), w.letter.lower(), w.name) or low in w.tags}
        if not hits:
            unknown.append(tok)
        chosen |= hits
    if unknown or not chosen:
        raise ValueError(f"unknown workload(s) {', '.join(map(repr, unknown)) or repr(spec)}; "
                         f"choose from: {', '.join(selection_tokens())}")
    return [w for w in WORKLOADS if w.key in chosen]


def get_workload(key):
    for w in WORKLOADS:
        if w.key == key:
            return w
    raise KeyError(f"unknown workload {key!r}; known: {', '.join(WORKLOAD_KEYS)}")


# ----------------------------------------------------------------------------
# Implementations
# ----------------------------------------------------------------------------

def torch_installed():
    """Whether torch can be imported, without importing it."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def implementation_status(names=IMPLEMENTATIONS):
    """{name: (available, reason)}; torch is not imported here."""
    status = {}
    for name in names:
        if name == "native":
            ok = fastnn.config()["native_available"]
            status[name] = (ok, "" if ok else f"native extension not built ({fastnn.config()['native_error']})")
        elif name == "numpy":
            status[name] = (True, "")
        elif name == "torch":
            ok = torch_installed()
            status[name] = (ok, "" if ok else "torch is not installed")
        else:
            raise ValueError(f"unknown implementation {name!r}; choose from {', '.join(IMPLEMENTATIONS)}")
    return status


def import_torch():
    return importlib.import_module("torch")


def implementation_context(name):
    """The context a callable of implementation `name` is built and timed in."""
    if name in ("native", "numpy"):
        return fastnn.backend(name)
    return contextlib.nullcontext()


def prepare(workload, impl, data):
    """The timed callable of `workload` for implementation `impl`; call it inside implementation_context(impl)."""
    if impl in ("native", "numpy"):
        return workload.fastnn_impl(importlib.import_module("fastnn.ops"), data)
    if impl == "torch":
        return workload.torch_impl(import_torch(), data)
    raise ValueError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLEMENTATIONS)}")


def snapshot(outputs):
    """The results of one call as float64 NumPy copies (later calls may reuse or update buffers)."""
    return [np.array(o, dtype=np.float64, copy=True) for o in outputs]


def wrong_dtypes(outputs):
    """The dtypes of the results (arrays of one or more dimensions; the losses are 0-d float64
    everywhere) that are not the workloads' DTYPE: a row must time the float32 computation."""
    return [str(np.asarray(o).dtype) for o in outputs
            if np.ndim(o) >= 1 and np.asarray(o).dtype != DTYPE]


def compare_outputs(reference, got, rtol=2e-3):
    """Whether two lists of results agree to float32 accuracy, and the worst error relative to scale.

    The tolerance is a check that an implementation computes the same thing (a
    layout or transposition bug gives errors of order 1), not a precision test:
    float32 sums over up to ~30,000 terms differ by ~1e-4 relative between
    correct implementations.
    """
    if len(reference) != len(got):
        return False, math.inf
    worst = 0.0
    for ref, val in zip(reference, got):
        if ref.shape != val.shape:
            return False, math.inf
        if ref.size == 0:
            continue
        scale = max(float(np.max(np.abs(ref))), 1e-30)
        err = float(np.max(np.abs(ref - val))) / scale
        if not np.isfinite(err):
            return False, math.inf
        worst = max(worst, err)
    return worst <= rtol, worst


# ----------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------

# Idle worker threads of the implementation timed before (OpenBLAS, torch's OpenMP) spin for up
# to ~0.1 s after their last call and would compete with the next one's threads.
IDLE_THREADS_SETTLE_S = 0.3


def let_idle_threads_settle(threads):
    """Wait until other libraries' idle worker threads stop spinning (with more than one thread)."""
    if threads > 1:
        time.sleep(IDLE_THREADS_SETTLE_S)


@contextlib.contextmanager
def thread_limits(n, use_torch=False):
    """Run the block with `n` threads in fastnn, NumPy's BLAS (threadpoolctl) and torch.

    Environment variables are left alone (they are read once at library load);
    the previous settings are restored on exit. Yields a dict saying what was
    limited.
    """
    applied = {"fastnn": n, "blas": None, "torch": None}
    old_fastnn = fastnn.get_num_threads()
    fastnn.set_num_threads(n)
    torch = None
    old_torch = None
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            applied["blas"] = "not controlled (threadpoolctl not installed)"
        else:
            stack.enter_context(threadpool_limits(limits=n))
            applied["blas"] = n
        if use_torch:
            torch = import_torch()
            old_torch = torch.get_num_threads()
            torch.set_num_threads(n)
            applied["torch"] = n
        try:
            yield applied
        finally:
            fastnn.set_num_threads(old_fastnn)
            if torch is not None:
                torch.set_num_threads(old_torch)


# ----------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------

def _proc_cpuinfo():
    info = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break   # the first processor is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_info():
    raw = _proc_cpuinfo()
    cores = _config.usable_cores()
    try:
        family = int(raw.get("cpu family", ""))
    except ValueError:
        family = None
    try:
        mhz = float(raw.get("cpu MHz", ""))
    except ValueError:
        mhz = None
    return {
        "model": raw.get("model name") or platform.processor() or platform.machine(),
        "vendor": raw.get("vendor_id"),
        "family": family,
        "flags": sorted(raw.get("flags", "").split()),
        "mhz": mhz,
        "usable_cores": cores,
        "machine": platform.machine(),
    }


def fma_flops_per_cycle(cpu):
    """Peak fp32 flop per cycle and core, from the CPU flags (None when unknown).

    AVX2+FMA cores have two 256-bit FMA pipes: 2 x 8 lanes x 2 = 32. Cores with
    two 512-bit FMA pipes reach 64 with AVX-512; AMD Zen 4 (family 25) runs
    AVX-512 on its 256-bit pipes, so it stays at 32.
    """
    flags = set(cpu["flags"])
    if not flags:
        return None
    if "avx512f" in flags and not (cpu["vendor"] == "AuthenticAMD" and (cpu["family"] or 0) <= 25):
        return 64
    if "avx2" in flags and "fma" in flags:
        return 32
    if "avx" in flags:
        return 16
    return 8


def measure_fma_peak(threads):
    """fp32 GFLOP/s of `threads` cores running independent FMA chains at once on the vectors of the
    SIMD path fastnn uses (the native probe), or None where there is none (portable path, no
    extension). Best of five runs of about 20 ms after a warm-up run: the first runs also pay the
    threads' start and the clock's ramp."""
    cfg = fastnn.config()
    if not cfg["native_available"] or cfg.get("simd_selected") not in _config.ISA_NAMES[1:]:
        return None
    from fastnn import _info

    isa = _config.ISA_NAMES.index(cfg["simd_selected"])
    reps = 1_000_000
    first = _info.fma_probe_gflops(isa, threads, reps)
    if first <= 0:
        return None
    # a step of 12 FMAs takes about 12 / (FMA pipes per core) cycles; aim at 20 ms per run
    reps = max(reps, int(20e-3 * first * 1e9 / threads / (2.0 * 12 * (16 if isa == 2 else 8))))
    return max(_info.fma_probe_gflops(isa, threads, reps) for _ in range(5))


def fma_peak(cpu, threads, override=None, measured=None):
    """(peak GFLOP/s for `threads` cores, how it was obtained): the --peak-gflops override, else
    the probe's measurement (measure_fma_peak), else the CPU flags times the clock /proc/cpuinfo
    reports (which in a VM is often the base clock, below the running one)."""
    if override:
        return float(override), "given with --peak-gflops"
    cores = min(threads, cpu["usable_cores"])
    plural = "s" if cores > 1 else ""
    if measured:
        per_cycle = fma_flops_per_cycle(cpu)
        estimate = (f"; flags x cpu MHz would say {per_cycle * cpu['mhz'] / 1000.0 * cores:.1f}"
                    if per_cycle and cpu["mhz"] else "")
        return float(measured), (f"measured: independent FMA chains on {cores} core{plural} at once, "
                                 f"fastnn's SIMD path{estimate}")
    per_cycle = fma_flops_per_cycle(cpu)
    if per_cycle is None or not cpu["mhz"]:
        return None, "unknown (pass --peak-gflops)"
    peak = per_cycle * cpu["mhz"] / 1000.0 * cores
    return peak, (f"{per_cycle} fp32 flop/cycle x {cpu['mhz'] / 1000:.2f} GHz (cpu MHz of /proc/cpuinfo; "
                  f"in a VM often the base/TSC clock) x {cores} core{plural}")


def blas_info():
    """NumPy's BLAS libraries and their current thread counts, via threadpoolctl when installed."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    return [{k: lib.get(k) for k in ("internal_api", "version", "architecture", "threading_layer", "num_threads")}
            for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]


def _median_seconds(fn, repeat, clock="wall"):
    now = time.process_time if clock == "cpu" else time.perf_counter
    times = []
    for _ in range(repeat):
        t0 = now()
        fn()
        times.append(now() - t0)
    return statistics.median(times)


def measure_sgemm_gflops(n=1024, clock="wall"):
    """NumPy's float32 GEMM (n x n x n) in GFLOP/s: the BLAS's practical peak, for reference."""
    a = np.ones((n, n), DTYPE)
    b = np.ones((n, n), DTYPE)
    c = np.empty((n, n), DTYPE)
    np.matmul(a, b, out=c)
    return 2.0 * n ** 3 / _median_seconds(lambda: np.matmul(a, b, out=c), 5, clock) / 1e9


def copy_bytes_like(traffic_bytes):
    """The size of a copy that moves traffic_bytes (read + written), in whole float32 elements."""
    return max(4, int(traffic_bytes) // 2 // 4 * 4)


def measure_copy_gbps(nbytes=128 << 20, clock="wall"):
    """A single-threaded NumPy copy of nbytes, bytes read + written per second: the bandwidth
    yardstick (128 MiB: main memory; a memory-bound row's own size: the cache level its
    data stays in from call to call)."""
    src = np.ones(nbytes // 4, DTYPE)
    dst = np.empty_like(src)
    np.copyto(dst, src)   # page faults happen here, outside the timing
    return 2.0 * nbytes / _median_seconds(lambda: np.copyto(dst, src), 5, clock) / 1e9


def machine_info(threads, peak_override=None, applied=None, measure=True, clock="wall"):
    cfg = fastnn.config()
    cpu = cpu_info()
    measured = measure_fma_peak(min(threads, cpu["usable_cores"])) if measure and not peak_override else None
    peak, basis = fma_peak(cpu, threads, peak_override, measured)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    info = {
        "load_average": load,
        "cpu": cpu["model"],
        "cpu_vendor": cpu["vendor"],
        "cpu_family": cpu["family"],
        "usable_cores": cpu["usable_cores"],
        "isa_flags": [f for f in ("avx2", "fma", "avx512f") if f in cpu["flags"]],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastnn": fastnn.__version__,
        "native_available": cfg["native_available"],
        "native_error": cfg["native_error"],
        "simd": cfg.get("simd_selected") if cfg["native_available"] else None,
        "openmp": cfg.get("openmp") if cfg["native_available"] else None,
        "threads": threads,
        "threads_applied": applied,
        "blas": blas_info(),
        "peak_gflops": peak,
        "peak_basis": basis,
    }
    if measure:
        info["sgemm_gflops"] = measure_sgemm_gflops(clock=clock)
        info["copy_gbps"] = measure_copy_gbps(clock=clock)
    return info


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------

CLOCKS = ("wall", "cpu")


@dataclass
class Timing:
    wall_ms: list        # per-call wall-clock milliseconds, one per sample
    cpu_ms: list         # per-call process CPU milliseconds (all threads), one per sample
    number: int          # calls per sample
    cpu_util: float = None   # process CPU time / wall time while sampling (below ~1: other processes took the CPU)

    @classmethod
    def merge(cls, parts):
        """One Timing of several rounds: all their samples; the fewest calls per sample and the
        lowest CPU share of any round."""
        utils = [p.cpu_util for p in parts if p.cpu_util is not None]
        return cls([w for p in parts for w in p.wall_ms], [c for p in parts for c in p.cpu_ms],
                   min(p.number for p in parts), min(utils) if utils else None)

    def samples(self, clock="wall"):
        if clock not in CLOCKS:
            raise ValueError(f"unknown clock {clock!r}; choose from {CLOCKS}")
        return self.wall_ms if clock == "wall" else self.cpu_ms


def summarize(samples_ms):
    """Median, minimum and spread (interquartile range / median; max - min over median below 4 samples)."""
    s = sorted(samples_ms)
    median = statistics.median(s)
    if len(s) >= 4:
        q = statistics.quantiles(s, n=4)
        spread = (q[2] - q[0]) / median if median > 0 else 0.0
    else:
        spread = (s[-1] - s[0]) / median if median > 0 else 0.0
    return {"median_ms": median, "min_ms": s[0], "spread": spread}


def time_callable(fn, repeat, warmup=2, min_sample_s=0.005, max_seconds=None, first_call_s=None,
                  min_warmup_s=0.0):
    """Timings of fn(): `warmup` untimed calls (more, until they took `min_warmup_s`), then
    `repeat` samples of wall and process CPU time.

    A sample times `number` back-to-back calls, with `number` chosen so that a
    sample lasts at least `min_sample_s` (fast ops are otherwise below the timer's
    resolution). The garbage collector is off while timing, as in timeit. With
    `max_seconds`, sampling stops early once that much time was spent and at least
    three samples exist (the number of samples is reported).
    """
    per_call = first_call_s
    warm_start = time.perf_counter()
    calls = 0
    while calls < warmup or time.perf_counter() - warm_start < min_warmup_s:
        t0 = time.perf_counter()
        fn()
        per_call = time.perf_counter() - t0
        calls += 1
    if per_call is None:
        t0 = time.perf_counter()
        fn()
        per_call = time.perf_counter() - t0
    number = max(1, int(math.ceil(min_sample_s / max(per_call, 1e-9))))
    wall, cpu = [], []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(number):
                fn()
            t1, c1 = time.perf_counter(), time.process_time()
            wall.append((t1 - t0) / number * 1e3)
            cpu.append((c1 - c0) / number * 1e3)
            if max_seconds is not None and len(wall) >= 3 and t1 - start > max_seconds:
                break
        elapsed = time.perf_counter() - start
        cpu_util = (time.process_time() - cpu_start) / elapsed if elapsed > 0 else None
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(wall, cpu, number, cpu_util)


def derived_metrics(workload, data, ms, peak_gflops=None, copy_gbps=None):
    """GFLOP/s and % of peak (compute workloads) or GB/s and % of copy bandwidth (memory workloads)."""
    out = {"gflops": None, "peak_pct": None, "gbps": None, "copy_pct": None}
    if ms is None or ms <= 0:
        return out
    if workload.flops is not None:
        out["gflops"] = workload.flops(data) / (ms * 1e-3) / 1e9
        if peak_gflops:
            out["peak_pct"] = 100.0 * out["gflops"] / peak_gflops
    if workload.traffic_bytes is not None:
        out["gbps"] = workload.traffic_bytes(data) / (ms * 1e-3) / 1e9
        if copy_gbps:
            out["copy_pct"] = 100.0 * out["gbps"] / copy_gbps
    return out
