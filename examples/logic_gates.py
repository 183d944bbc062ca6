"""Perceptrons as logic gates, and XOR learned by a two-layer network.

A single perceptron (step(x @ w + b)) computes AND, NAND and OR: the
perceptron learning rule finds weights for each. No single perceptron
computes XOR (it is not linearly separable); the rule never converges. A
two-layer network (2-8-2, tanh, softmax) trained with SGD learns it, and so
does the hand-wired two-layer perceptron XOR(x) = AND(NAND(x), OR(x)).

    python examples/logic_gates.py [--fast]
"""
import numpy as np

from _common import fast_mode_requested, parser
from fastnn import datasets, ops
from fastnn.layers import Affine, SoftmaxWithLoss, Tanh
from fastnn.optim import SGD


def perceptron(x, w, b):
    return ops.step(x @ w + b).astype(np.int64)


def train_perceptron(x, t, epochs=20):
    """Rosenblatt's rule: w += (t - y) * x on each mistake. Returns (w, b, converged)."""
    w = np.zeros(2, dtype=np.float32)
    b = np.float32(0.0)
    for _ in range(epochs):
        mistakes = 0
        for xi, ti in zip(x, t):
            error = ti - perceptron(xi[None, :], w, b)[0]
            if error:
                mistakes += 1
                w += error * xi
                b += error
        if mistakes == 0:
            return w, b, True
    return w, b, False


def train_xor_network(seed, steps, hidden=8, lr=0.5):
    x, t = datasets.logic_gate("XOR")
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((2, hidden)).astype(np.float32),
              "b1": np.zeros(hidden, dtype=np.float32),
              "W2": (rng.standard_normal((hidden, 2)) / np.sqrt(hidden)).astype(np.float32),
              "b2": np.zeros(2, dtype=np.float32)}
    layers = [Affine(params["W1"], params["b1"]), Tanh(), Affine(params["W2"], params["b2"])]
    loss_layer = SoftmaxWithLoss()
    optimizer = SGD(lr=lr)
    for step in range(steps):
        h = x
        for layer in layers:
            h = layer.forward(h)
        loss = loss_layer.forward(h, t)
        dout = loss_layer.backward()
        for layer in reversed(layers):
            dout = layer.backward(dout)
        optimizer.update(params, {"W1": layers[0].dW, "b1": layers[0].db, "W2": layers[2].dW, "b2": layers[2].db})
        if step % max(1, steps // 5) == 0:
            print(f"  step {step:5d}  loss {loss:.4f}")
    h = x
    for layer in layers:
        h = layer.forward(h)
    return np.argmax(h, axis=1), float(loss_layer.forward(h, t))


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    fast = fast_mode_requested(args.fast)
    results = {}
    for gate in ("AND", "NAND", "OR", "XOR"):
        x, t = datasets.logic_gate(gate)
        w, b, converged = train_perceptron(x, t)
        y = perceptron(x, w, b)
        results[gate] = bool(converged and np.array_equal(y, t))
        status = f"learned, w={w.tolist()} b={float(b):+.0f}" if converged else "did not converge (not linearly separable)"
        print(f"perceptron {gate:4s}: {y.tolist()} target {t.tolist()}  {status}")

    x, t = datasets.logic_gate("XOR")
    nand = perceptron(x, np.array([-0.5, -0.5]), 0.7)
    or_ = perceptron(x, np.array([0.5, 0.5]), -0.2)
    wired = perceptron(np.stack([nand, or_], axis=1).astype(np.float32), np.array([0.5, 0.5]), -0.7)
    print(f"two-layer perceptron XOR = AND(NAND, OR): {wired.tolist()}")
    results["wired_xor"] = bool(np.array_equal(wired, t))

    print("two-layer network 2-8-2 (tanh, softmax) learning XOR with SGD:")
    predicted, loss = train_xor_network(args.seed, steps=300 if fast else 2000)
    accuracy = float(np.mean(predicted == t))
    print(f"XOR network predictions {predicted.tolist()} target {t.tolist()}  "
          f"accuracy {accuracy:.0%}  final loss {loss:.4f}")
    results["xor_network_accuracy"] = accuracy
    results["xor_network_loss"] = loss
    return results


if __name__ == "__main__":
    main()
